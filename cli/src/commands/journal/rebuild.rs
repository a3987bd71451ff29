//! `imgadm journal rebuild`

use imgadm_engine::context::Context;
use imgadm_engine::Result;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(cx: &Context, _args: Args) -> Result<()> {
    cx.journal.rebuild()?;
    cx.info("Rebuilt the journal's projections from its events");
    Ok(())
}
