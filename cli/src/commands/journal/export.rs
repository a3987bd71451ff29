//! `imgadm journal export [--since T] [--op OP]`: JSON Lines on stdout.

use imgadm_engine::context::Context;
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only events at or after this time (RFC 3339, e.g. 2026-11-23T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only the events of this operation (id or unique prefix).
    #[arg(long, value_name = "OP")]
    op: Option<String>,
}

pub fn run(cx: &Context, args: Args) -> Result<()> {
    if let Some(since) = &args.since {
        chrono::DateTime::parse_from_rfc3339(since)
            .map_err(|e| Error::Usage(format!("invalid --since \"{since}\": {e} (want RFC 3339)")))?;
    }
    let op = args.op.as_deref().map(|p| cx.journal.resolve(p)).transpose()?;
    let mut out = std::io::stdout().lock();
    cx.journal.export(args.since.as_deref(), op.as_ref(), &mut out)?;
    Ok(())
}
