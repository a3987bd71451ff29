//! `imgadm journal verify [-j]`: the hash chain, then drift against the pools.

use imgadm_engine::context::Context;
use imgadm_engine::{Error, Result};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON output.
    #[arg(short = 'j', long = "json")]
    json: bool,
}

pub fn run(cx: &Context, args: Args) -> Result<()> {
    let report = cx.journal.verify()?;
    let drift = imgadm_replay::audit::drift(cx)?;
    if args.json {
        crate::commands::list::print_json(&json!({"chain": report, "drift": drift}))?;
    } else {
        let mut out = String::new();
        match report.first_bad_seq {
            None => out.push_str(&format!("Journal chain OK: {} events\n", report.events)),
            Some(seq) => out.push_str(&format!("Journal chain BROKEN at seq {seq}\n")),
        }
        for problem in &report.problems {
            out.push_str(&format!("  {problem}\n"));
        }
        for d in &drift {
            out.push_str(&format!("Drift: image {} on pool {}: {}\n", d.image, d.pool, d.kind));
        }
        crate::commands::list::write_stdout(out.as_bytes())?;
    }
    if let Some(seq) = report.first_bad_seq {
        return Err(Error::Journal(format!("the journal's hash chain is broken at seq {seq}")));
    }
    if !drift.is_empty() {
        return Err(Error::Journal(format!("{} image(s) drifted from the journal", drift.len())));
    }
    Ok(())
}
