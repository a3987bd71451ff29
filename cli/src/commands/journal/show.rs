//! `imgadm journal show [-j] OP`

use imgadm_engine::context::Context;
use imgadm_engine::Result;
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON output: the operation and its events.
    #[arg(short = 'j', long = "json")]
    json: bool,
    /// The operation: its id or any unique prefix of it.
    op: String,
}

pub fn run(cx: &Context, args: Args) -> Result<()> {
    let view = imgadm_replay::operation(cx, &args.op)?;
    let op = &view.op;
    if args.json {
        let events = cx.journal.operation_events(&op.id)?;
        let value = json!({"operation": view, "events": events});
        return crate::commands::list::print_json(&value);
    }
    let mut out = String::new();
    out.push_str(&format!("Operation {} ({})\n", op.id, view.state));
    out.push_str(&format!("  verb:     {}\n", op.verb));
    out.push_str(&format!("  command:  {}\n", op.argv.join(" ")));
    out.push_str(&format!("  by:       {} (uid {}) on {}, pid {}\n", op.user, op.uid, op.host, op.pid));
    out.push_str(&format!("  started:  {}\n", op.started));
    out.push_str(&format!("  ended:    {}\n", op.ended.as_deref().unwrap_or("-")));
    out.push_str(&format!("  images:   {}\n", if op.images.is_empty() { "-".to_string() } else { op.images.join(", ") }));
    out.push_str("Steps:\n");
    for step in &op.steps {
        let detail = step_detail(&step.data);
        out.push_str(&format!(
            "  {:<24}  {:<9} {:<7} {}\n",
            step.begun.as_deref().unwrap_or("-"),
            step.step,
            step.state,
            detail
        ));
    }
    crate::commands::list::write_stdout(out.as_bytes())
}

/// The recorded facts of a step worth a glance (not its whole data).
fn step_detail(data: &Value) -> String {
    let keys = ["image", "target", "dataset", "url", "bytes", "sha1", "toguid", "code", "message"];
    keys.iter()
        .filter_map(|k| match data.get(*k) {
            Some(Value::Null) | None => None,
            Some(Value::String(s)) => Some(format!("{k}={s}")),
            Some(other) => Some(format!("{k}={other}")),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
