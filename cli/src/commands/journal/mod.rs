//! `imgadm journal ...`: the operation log, as jj's `op` commands show it.

mod export;
mod list;
mod rebuild;
mod replay;
mod resume;
mod rollback;
mod show;
mod verify;

use std::sync::Arc;

use clap::Subcommand;
use imgadm_engine::context::Context;
use imgadm_engine::listing::{self, Row, RowExtras};
use imgadm_engine::manifest::Manifest;
use imgadm_engine::recovery;
use imgadm_engine::Result;
use serde_json::{Map, Value};

use crate::reporter::CliReporter;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List operations, oldest first, with their state.
    List(list::Args),
    /// Show one operation step by step.
    Show(show::Args),
    /// Check the journal's hash chain and compare it with the pools (drift).
    Verify(verify::Args),
    /// Print events as JSON Lines, for log pipelines.
    Export(export::Args),
    /// Continue an interrupted operation from its last completed step.
    Resume(resume::Args),
    /// Undo what an interrupted operation did, latest step first.
    Rollback(rollback::Args),
    /// Rebuild the journal's projections from its events.
    Rebuild(rebuild::Args),
    /// Rebuild the installed image set on another pool, origins first,
    /// from the sources and files the journal recorded.
    Replay(replay::Args),
}

pub fn run(command: Command, argv: Vec<String>) -> Result<()> {
    let cx = Context::from_env(argv, Arc::new(CliReporter::new(false)))?;
    match command {
        Command::List(args) => list::run(&cx, args),
        Command::Show(args) => show::run(&cx, args),
        Command::Verify(args) => verify::run(&cx, args),
        Command::Export(args) => export::run(&cx, args),
        Command::Resume(args) => resume::run(&cx, args),
        Command::Rollback(args) => rollback::run(&cx, args),
        Command::Rebuild(args) => rebuild::run(&cx, args),
        Command::Replay(args) => replay::run(&cx, args),
    }
}

/// The first 12 characters of an operation id: enough to name it (the
/// first 10 are only its time).
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// One line on stderr per interrupted operation, naming the commands that
/// resume or roll it back. Never on stdout: `-H`/`-j` output stays clean.
pub fn warn_interrupted(cx: &Context) {
    let ops = match recovery::interrupted(cx) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("imgadm: warning: cannot read the journal: {e}");
            return;
        }
    };
    for op in ops {
        let step = op.steps.last().map(|s| s.step.as_str()).unwrap_or("start");
        let images = op.images.join(", ");
        eprintln!(
            "imgadm: warning: operation {} ({} {}) was interrupted at step \"{}\": resume it with `imgadm journal resume {}` or roll it back with `imgadm journal rollback {}`",
            short_id(&op.id.to_string()),
            op.verb,
            images,
            step,
            short_id(&op.id.to_string()),
            short_id(&op.id.to_string()),
        );
    }
}

/// A table of plain JSON rows, rendered as `list` renders images.
pub fn print_table(rows: Vec<Map<String, Value>>, columns: &[&str], header: bool) -> Result<()> {
    let rows: Vec<Row> = rows.into_iter().map(|r| Row::new(Manifest::from_map(r), RowExtras::default())).collect();
    super::list::write_stdout(listing::render_table(&rows, columns, header).as_bytes())
}
