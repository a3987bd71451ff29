//! `imgadm install [-P pool] [-q] -m MANIFEST -f FILE`

use imgadm_engine::context::Context;
use imgadm_engine::verbs::install::{self, InstallArgs};
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the zpool (or dir pool) to install into.
    #[arg(short = 'P', value_name = "POOL")]
    pool: Option<String>,
    #[command(flatten)]
    pub files: super::ImageFileArgs,
    #[arg(hide = true)]
    extra: Vec<String>,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    if !args.extra.is_empty() {
        return Err(Error::Usage(format!("unexpected args ({}): {}", args.extra.len(), args.extra.join(" "))));
    }
    let (manifest, file) = args.files.paths("install")?;
    install::install(&cx, &InstallArgs { pool: super::pool_arg(&args.pool)?, manifest, file })
}
