//! `imgadm import [-P pool] [-C channel] [-S URL]... [-q] UUID`

use imgadm_engine::context::Context;
use imgadm_engine::ids::ImageUuid;
use imgadm_engine::verbs::import::{self, ImportArgs};
use imgadm_engine::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the zpool (or dir pool) to import into.
    #[arg(short = 'P', value_name = "POOL")]
    pool: Option<String>,
    /// Use this channel on every source.
    #[arg(short = 'C', long = "channel", value_name = "CHANNEL")]
    channel: Option<String>,
    /// Use only these source URLs (repeatable), instead of the configured sources.
    #[arg(short = 'S', long = "source", value_name = "URL")]
    sources: Vec<String>,
    /// Disable progress bars.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The image to import.
    uuid: String,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let import_args = ImportArgs {
        pool: super::pool_arg(&args.pool)?,
        uuid: ImageUuid::parse(&args.uuid)?,
        sources: args.sources,
        channel: args.channel,
    };
    import::import(&cx, &import_args)
}
