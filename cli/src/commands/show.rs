//! `imgadm show UUID`

use imgadm_engine::context::Context;
use imgadm_engine::ids::ImageUuid;
use imgadm_engine::verbs::show;
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image (from the first source that has it).
    args: Vec<String>,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let [arg] = args.args.as_slice() else {
        return Err(Error::Usage(format!(
            "incorrect number of args ({}): \"{}\"",
            args.args.len(),
            args.args.join(" ")
        )));
    };
    let manifest = show::show(&cx, ImageUuid::parse(arg)?)?;
    super::list::print_json(&manifest.to_value())
}
