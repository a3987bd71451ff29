//! `imgadm publish [-q] -m MANIFEST -f FILE IMGAPI-URL`

use std::path::PathBuf;

use imgadm_engine::context::Context;
use imgadm_engine::verbs::publish::{self, PublishArgs};
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disable progress bars.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The manifest file of the image to publish.
    #[arg(short = 'm', value_name = "MANIFEST")]
    manifest: Option<PathBuf>,
    /// The image file.
    #[arg(short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// The Images API server to publish to (exactly one).
    #[arg(value_name = "IMGAPI-URL")]
    urls: Vec<String>,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let [url] = args.urls.as_slice() else {
        return Err(Error::Usage(format!(
            "incorrect number of args ({}): exactly one IMGAPI-URL is required",
            args.urls.len()
        )));
    };
    let (Some(manifest), Some(file)) = (args.manifest, args.file) else {
        return Err(Error::Usage("publish needs both -m MANIFEST and -f FILE".to_string()));
    };
    publish::publish(&cx, &PublishArgs { manifest, file, url: url.clone() })
}
