//! `imgadm ancestry [-P pool] [-j] [-H] [-o FIELDS] UUID`

use imgadm_engine::context::Context;
use imgadm_engine::ids::{ImageUuid, PoolName};
use imgadm_engine::listing::{self, ANCESTRY_COLUMNS};
use imgadm_engine::verbs::query;
use imgadm_engine::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the zpool (or dir pool); every imported pool when not given.
    #[arg(short = 'P', value_name = "POOL")]
    pool: Option<String>,
    #[command(flatten)]
    output: super::OutputArgs,
    /// Fields (columns) to print, comma-separated. Default: uuid,name,version,published.
    #[arg(short = 'o', value_name = "FIELD,...")]
    columns: Option<String>,
    /// The image whose origin chain to show (the image first, its base last).
    uuid: String,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let uuid = ImageUuid::parse(&args.uuid)?;
    let pool = args.pool.as_deref().map(PoolName::parse).transpose()?;
    let rows: Vec<listing::Row> = query::ancestry(&cx, pool.as_ref(), uuid)?.into_iter().map(super::list::row).collect();
    super::list::print_rows(&rows, args.output.json, args.output.no_header, args.columns.as_deref(), ANCESTRY_COLUMNS)
}
