//! `imgadm get [-P pool] [-r] UUID` (alias `info`)

use imgadm_engine::context::Context;
use imgadm_engine::ids::{ImageUuid, PoolName};
use imgadm_engine::verbs::query;
use imgadm_engine::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the zpool (or dir pool); every imported pool when not given.
    #[arg(short = 'P', value_name = "POOL")]
    pool: Option<String>,
    /// Also list the image's child snapshots and datasets, and its clones.
    #[arg(short = 'r')]
    recursive: bool,
    /// The image.
    uuid: String,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let uuid = ImageUuid::parse(&args.uuid)?;
    let pool = args.pool.as_deref().map(PoolName::parse).transpose()?;
    let info = query::get(&cx, pool.as_ref(), uuid, args.recursive)?;
    super::list::print_json(&info)
}
