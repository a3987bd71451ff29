//! `imgadm avail [FILTER...] [-j] [-H] [-o FIELD,...] [-s FIELD,...]` (alias `available`)

use imgadm_engine::context::Context;
use imgadm_engine::listing::{self, Filters, SortKey, LIST_COLUMNS, LIST_SORT};
use imgadm_engine::verbs::avail;
use imgadm_engine::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON output: `[{manifest, source}]`.
    #[arg(short = 'j', long = "json")]
    json: bool,
    /// Do not print the table header.
    #[arg(short = 'H')]
    no_header: bool,
    /// Fields (columns) to print, comma-separated. Default: uuid,name,version,os,type,pub.
    #[arg(short = 'o', value_name = "FIELD,...")]
    columns: Option<String>,
    /// Sort on these fields, comma-separated; `-FIELD` reverses. Default: published_at,name.
    #[arg(short = 's', value_name = "FIELD,...", allow_hyphen_values = true)]
    sort: Option<String>,
    /// Filters `FIELD=VALUE` (`FIELD=~SUBSTRING`, `FIELD=true|false`; dotted fields).
    filters: Vec<String>,
}

/// The images of the sources that answered are printed even when another
/// source failed; the command then fails naming it.
pub fn run(cx: Context, args: Args) -> Result<()> {
    let filters = Filters::parse(&args.filters)?;
    let sort = SortKey::parse_list(args.sort.as_deref().unwrap_or(&LIST_SORT.join(",")))?;
    let available = avail::avail(&cx)?;
    let mut rows = filters.apply(available.rows);
    listing::sort_rows(&mut rows, &sort);
    super::list::print_rows(&rows, args.json, args.no_header, args.columns.as_deref(), LIST_COLUMNS)?;
    match available.failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
