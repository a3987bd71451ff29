//! `imgadm history [-j] [UUID]`: what happened to an image (or to all),
//! when, from where and by whom.

use imgadm_engine::context::Context;
use imgadm_engine::ids::ImageUuid;
use imgadm_engine::Result;
use imgadm_replay::OperationView;
use serde_json::{json, Map, Value};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    output: super::OutputArgs,
    /// The image; every operation when not given.
    uuid: Option<String>,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let image = args.uuid.as_deref().map(ImageUuid::parse).transpose()?;
    let ops = imgadm_replay::history(&cx, image)?;
    if args.output.json {
        return super::list::print_json(&serde_json::to_value(&ops).unwrap_or(Value::Null));
    }
    let rows: Vec<Map<String, Value>> = ops.iter().map(history_row).collect();
    let columns = ["time", "op", "verb", "outcome", "user", "host", "pid", "source", "sha1", "argv"];
    super::journal::print_table(rows, &columns, !args.output.no_header)
}

fn history_row(view: &OperationView) -> Map<String, Value> {
    let op = &view.op;
    let mut row = Map::new();
    row.insert("time".into(), json!(op.started));
    row.insert("op".into(), json!(super::journal::short_id(op.id.as_str())));
    row.insert("verb".into(), json!(op.verb));
    row.insert("outcome".into(), json!(view.state));
    row.insert("user".into(), json!(op.user));
    row.insert("host".into(), json!(op.host));
    row.insert("pid".into(), json!(op.pid));
    row.insert("source".into(), view.step_value("url").map(Value::from).unwrap_or(Value::Null));
    row.insert("sha1".into(), view.step_value("sha1").map(Value::from).unwrap_or(Value::Null));
    row.insert("argv".into(), json!(op.argv.join(" ")));
    row
}
