//! `imgadm journal replay --onto POOL [--dry-run]`

use imgadm_engine::context::Context;
use imgadm_engine::ids::PoolName;
use imgadm_engine::{Error, Result};
use imgadm_replay::onto;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pool to rebuild the installed image set on.
    #[arg(long = "onto", value_name = "POOL")]
    onto: String,
    /// Print the plan, one line per image, and change nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
}

pub fn run(cx: &Context, args: Args) -> Result<()> {
    let onto = PoolName::parse(&args.onto)?;
    let plan = onto::plan(cx, &onto)?;
    if args.dry_run {
        let lines: String = plan.iter().map(|image| format!("{image}\n")).collect();
        crate::commands::list::write_stdout(lines.as_bytes())?;
        let unsourceable = plan.iter().filter(|i| matches!(i.sourcing, onto::Sourcing::Unsourceable(_))).count();
        return match unsourceable {
            0 => Ok(()),
            count => Err(Error::NotReplayed { count, pool: onto.to_string() }),
        };
    }
    let replayed = onto::run(cx, &onto, plan)?;
    for (image, why) in &replayed.not_replayed {
        eprintln!("imgadm: image {} was not replayed onto {onto}: {why}", image.manifest.title());
    }
    match replayed.not_replayed.len() {
        0 => {
            cx.info(&format!("Replayed the installed image set onto {onto}"));
            Ok(())
        }
        count => Err(Error::NotReplayed { count, pool: onto.to_string() }),
    }
}
