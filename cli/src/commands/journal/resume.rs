//! `imgadm journal resume OP`

use imgadm_engine::context::Context;
use imgadm_engine::{recovery, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The interrupted operation: its id or any unique prefix of it.
    op: String,
}

pub fn run(cx: &Context, args: Args) -> Result<()> {
    let id = cx.journal.resolve(&args.op)?;
    recovery::resume(cx, &id)
}
