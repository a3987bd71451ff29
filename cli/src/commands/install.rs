//! `imgadm install [-P pool] [-q] -m MANIFEST -f FILE`

use std::path::PathBuf;

use imgadm_engine::context::Context;
use imgadm_engine::verbs::install::{self, InstallArgs};
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the zpool (or dir pool) to install into.
    #[arg(short = 'P', value_name = "POOL")]
    pool: Option<String>,
    /// Disable progress bars.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The manifest file of the image to install.
    #[arg(short = 'm', value_name = "MANIFEST")]
    manifest: Option<PathBuf>,
    /// The image file (a ZFS send stream, compressed or not).
    #[arg(short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    if !args.extra.is_empty() {
        return Err(Error::Usage(format!("unexpected args ({}): {}", args.extra.len(), args.extra.join(" "))));
    }
    let (Some(manifest), Some(file)) = (args.manifest, args.file) else {
        return Err(Error::Usage("install needs both -m MANIFEST and -f FILE".to_string()));
    };
    install::install(&cx, &InstallArgs { pool: super::pool_arg(&args.pool)?, manifest, file })
}
