//! `imgadm publish [-q] -m MANIFEST -f FILE IMGAPI-URL`

use imgadm_engine::context::Context;
use imgadm_engine::verbs::publish::{self, PublishArgs};
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: super::ImageFileArgs,
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
    let (manifest, file) = args.files.paths("publish")?;
    publish::publish(&cx, &PublishArgs { manifest, file, url: url.clone() })
}
