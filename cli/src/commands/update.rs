//! `imgadm update [-n] [-P POOL] [UUID...]`

use imgadm_engine::context::Context;
use imgadm_engine::ids::{ImageUuid, PoolName};
use imgadm_engine::verbs::update::{self, UpdateArgs};
use imgadm_engine::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dry run: say what would change, change nothing.
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Only this zpool (or dir pool); every imported pool when not given.
    #[arg(short = 'P', value_name = "POOL")]
    pool: Option<String>,
    /// The installed images to update (all when none are named).
    #[arg(value_name = "UUID")]
    images: Vec<String>,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let images = args.images.iter().map(|u| ImageUuid::parse(u)).collect::<Result<Vec<_>>>()?;
    let pool = args.pool.as_deref().map(PoolName::parse).transpose()?;
    update::update(&cx, &UpdateArgs { images, pool, dry_run: args.dry_run })
}
