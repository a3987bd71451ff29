//! `imgadm list [FILTER...] [-j] [-H] [-o FIELD,...] [-s FIELD,...]`

use std::io::Write;

use imgadm_engine::context::Context;
use imgadm_engine::images::ImageInfo;
use imgadm_engine::listing::{self, Filters, Row, RowExtras, SortKey, DOCKER_COLUMNS, LIST_COLUMNS, LIST_SORT};
use imgadm_engine::verbs::query;
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    listing: ListingArgs,
    /// Docker images only (the heads of their layer chains), a row per tag:
    /// UUID REPOSITORY TAG IMAGE_ID CREATED.
    #[arg(long = "docker")]
    docker: bool,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let rows = query::installed_images(&cx, None)?.into_iter().map(row).collect();
    if args.docker {
        args.listing.print_docker(rows)
    } else {
        args.listing.print(rows)
    }
}

/// What `list` and `avail` share: filters, `-o`, `-s`, `-j`, `-H`.
#[derive(Debug, clap::Args)]
pub struct ListingArgs {
    #[command(flatten)]
    output: super::OutputArgs,
    /// Fields (columns) to print, comma-separated. Default: uuid,name,version,os,type,pub.
    #[arg(short = 'o', value_name = "FIELD,...")]
    columns: Option<String>,
    /// Sort on these fields, comma-separated; `-FIELD` reverses. Default: published_at,name.
    #[arg(short = 's', value_name = "FIELD,...", allow_hyphen_values = true)]
    sort: Option<String>,
    /// Filters `FIELD=VALUE` (`FIELD=~SUBSTRING`, `FIELD=true|false`; dotted fields).
    filters: Vec<String>,
}

impl ListingArgs {
    /// Filters, sorts and prints `rows` as the arguments say.
    pub fn print(&self, rows: Vec<Row>) -> Result<()> {
        let filters = Filters::parse(&self.filters)?;
        let sort = SortKey::parse_list(self.sort.as_deref().unwrap_or(&LIST_SORT.join(",")))?;
        let mut rows = filters.apply(rows);
        listing::sort_rows(&mut rows, &sort);
        print_rows(&rows, self.output.json, self.output.no_header, self.columns.as_deref(), LIST_COLUMNS)
    }

    /// `list --docker`: the filters, then docker heads in fixed columns.
    fn print_docker(&self, rows: Vec<Row>) -> Result<()> {
        let rows = listing::docker_heads(Filters::parse(&self.filters)?.apply(rows));
        print_rows(&rows, self.output.json, self.output.no_header, None, DOCKER_COLUMNS)
    }
}

pub fn row(info: ImageInfo) -> Row {
    Row::new(
        info.parsed,
        RowExtras {
            zpool: Some(info.zpool),
            source: info.source,
            clone_names: Some(info.clone_names),
            driver: Some(info.driver.to_string()),
        },
    )
}

/// The table (or `-j` array) of rows, as list, avail and ancestry print it.
pub fn print_rows(rows: &[Row], json: bool, no_header: bool, columns: Option<&str>, default: &[&str]) -> Result<()> {
    if json {
        let infos: Vec<serde_json::Value> = rows.iter().map(Row::info_json).collect();
        return print_json(&serde_json::Value::Array(infos));
    }
    let columns = match columns {
        Some(text) => listing::parse_field_list("-o", text)?,
        None => default.iter().map(|c| c.to_string()).collect(),
    };
    write_stdout(listing::render_table(rows, &columns, !no_header).as_bytes())
}

pub fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::internal(e.to_string()))?;
    text.push('\n');
    write_stdout(text.as_bytes())
}

pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        // A closed pipe (`imgadm list | head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::io("cannot write to stdout", e)),
    }
}
