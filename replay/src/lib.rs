//! imgadm's recovery and audit views over the journal.
//!
//! The engine runs, resumes and rolls back one operation; this crate looks
//! across operations: what state each is in (`running` and `interrupted`
//! are derived when read, from the operation lock), the history of an
//! image, and (in [`audit`]) drift between the journal and the pools.
//!
//! ```no_run
//! use std::sync::Arc;
//! use imgadm_engine::{context::Context, report::Silent};
//! let cx = Context::from_env(vec!["imgadm".into()], Arc::new(Silent))?;
//! for op in imgadm_replay::operations(&cx)? {
//!     println!("{} {} {}", op.op.id, op.op.verb, op.state);
//! }
//! # Ok::<(), imgadm_engine::Error>(())
//! ```

pub mod audit;
pub mod onto;

use imgadm_engine::context::Context;
use imgadm_engine::ids::ImageUuid;
use imgadm_engine::lock::OpLock;
use imgadm_engine::Result;
use imgadm_journal::{OperationSummary, StepSummary};
use serde::Serialize;
use serde_json::Value;

/// An operation as `journal list -j` prints it: the journal's summary and
/// its state as of now.
#[derive(Clone, Debug, Serialize)]
pub struct OperationView {
    #[serde(flatten)]
    pub op: OperationSummary,
    pub state: String,
}

impl OperationView {
    /// The first value any step recorded for `key` (a source URL, a sha1).
    pub fn step_value(&self, key: &str) -> Option<String> {
        self.op.steps.iter().find_map(|s| s.data.get(key).and_then(Value::as_str).map(str::to_string))
    }

    /// The last step reached: where an interrupted operation stopped.
    pub fn last_step(&self) -> Option<&StepSummary> {
        self.op.steps.last()
    }
}

/// `running` or `interrupted` for an operation that has not ended (is its
/// lock held by a live process?); else how it ended.
pub fn state_of(cx: &Context, op: &OperationSummary) -> Result<String> {
    Ok(match &op.outcome {
        Some(outcome) => outcome.clone(),
        None if OpLock::is_held(&cx.state, &op.id.to_string())? => "running".to_string(),
        None => "interrupted".to_string(),
    })
}

fn view(cx: &Context, op: OperationSummary) -> Result<OperationView> {
    let state = state_of(cx, &op)?;
    Ok(OperationView { op, state })
}

/// Every operation, oldest first.
pub fn operations(cx: &Context) -> Result<Vec<OperationView>> {
    cx.journal.operations()?.into_iter().map(|op| view(cx, op)).collect()
}

/// One operation, named by a unique prefix of its id.
pub fn operation(cx: &Context, prefix: &str) -> Result<OperationView> {
    let id = cx.journal.resolve(prefix)?;
    let op = cx
        .journal
        .operations()?
        .into_iter()
        .find(|op| op.id == id)
        .ok_or_else(|| imgadm_engine::Error::Journal(format!("operation {id} not found")))?;
    view(cx, op)
}

/// Every operation that touched `image` (or every operation), oldest first.
pub fn history(cx: &Context, image: Option<ImageUuid>) -> Result<Vec<OperationView>> {
    let ops = match image {
        Some(uuid) => cx.journal.operations_for_image(&uuid.to_string())?,
        None => cx.journal.operations()?,
    };
    ops.into_iter().map(|op| view(cx, op)).collect()
}
