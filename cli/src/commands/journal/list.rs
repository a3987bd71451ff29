//! `imgadm journal list [-j] [-H]`

use imgadm_engine::context::Context;
use imgadm_engine::Result;
use serde_json::{json, Map, Value};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `-j`: an array of {id, verb, argv, images, user, uid, host, pid, started, ended, state, steps}.
    #[command(flatten)]
    output: crate::commands::OutputArgs,
}

pub fn run(cx: &Context, args: Args) -> Result<()> {
    let ops = imgadm_replay::operations(cx)?;
    if args.output.json {
        return crate::commands::list::print_json(&serde_json::to_value(&ops).unwrap_or(Value::Null));
    }
    let rows = ops
        .iter()
        .map(|view| {
            let op = &view.op;
            let mut row = Map::new();
            row.insert("id".into(), json!(super::short_id(op.id.as_str())));
            row.insert("started".into(), json!(op.started));
            row.insert("verb".into(), json!(op.verb));
            row.insert("state".into(), json!(view.state));
            row.insert("step".into(), json!(view.last_step().map(|s| s.step.as_str())));
            row.insert("images".into(), json!(op.images.join(",")));
            row.insert("user".into(), json!(op.user));
            row
        })
        .collect();
    super::print_table(rows, &["id", "started", "verb", "state", "step", "images", "user"], !args.output.no_header)
}
