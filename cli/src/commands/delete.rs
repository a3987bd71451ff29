//! `imgadm delete [-P pool] UUID`

use imgadm_engine::context::Context;
use imgadm_engine::ids::ImageUuid;
use imgadm_engine::verbs::delete;
use imgadm_engine::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the zpool (or dir pool) the image is on.
    #[arg(short = 'P', value_name = "POOL")]
    pool: Option<String>,
    /// The image to delete.
    uuid: String,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let uuid = ImageUuid::parse(&args.uuid)?;
    delete::delete(&cx, &super::pool_arg(&args.pool)?, uuid)
}
