//! Interrupted operations: finding them, resuming them, rolling them back.
//!
//! An operation is interrupted when the journal has no "operation ended"
//! for it and its operation lock is free (its process is gone: pids are
//! recorded, never trusted). Resume continues from the last step done;
//! rollback undoes the steps begun, latest first, and never touches what
//! the operation did not create.

use std::path::Path;

use imgadm_journal::{OpId, OperationSummary};
use serde_json::Value;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ids::ImageUuid;
use crate::lock::{self, LockMode, OpLock};
use crate::operation::{Operation, Outcome, StepState};
use crate::steps;

/// Every interrupted operation, oldest first.
pub fn interrupted(cx: &Context) -> Result<Vec<OperationSummary>> {
    let mut found = Vec::new();
    for op in cx.journal.open_operations()? {
        if !OpLock::is_held(&cx.state, &op.id.to_string())? {
            found.push(op);
        }
    }
    Ok(found)
}

/// The interrupted `verb` operation on `image`, if there is one: re-running
/// the same command takes it over.
pub fn interrupted_for(cx: &Context, verb: &str, image: ImageUuid) -> Result<Option<OpId>> {
    let image = image.to_string();
    Ok(interrupted(cx)?
        .into_iter()
        .find(|op| op.verb == verb && op.images.first() == Some(&image))
        .map(|op| op.id))
}

/// Journals a command refused before it changed anything (bad manifest,
/// bad uuid, missing origin): an operation with one failed step.
pub fn record_refusal(cx: &Context, verb: &str, input: &Path, step: &str, error: Error) -> Error {
    let recorded = (|| -> Result<()> {
        let mut op = Operation::begin(&cx.state, &cx.journal, &cx.invocation, verb, &[], Vec::new())?;
        op.begun(step, serde_json::json!({"input": input.display().to_string()}))?;
        op.failed(step, None, &error)?;
        op.end(Outcome::Failed, Some(&error))
    })();
    match recorded {
        Ok(()) => error,
        Err(journal_error) => Error::Multi(vec![error, journal_error]),
    }
}

fn step_begun_data(op: &Operation, step: &str, image: Option<&str>) -> Option<Value> {
    match op.step_state(step, image) {
        StepState::Begun { begun } | StepState::Done { begun, .. } => Some(begun),
        _ => None,
    }
}

/// `imgadm journal resume OP`.
pub fn resume(cx: &Context, id: &OpId) -> Result<()> {
    let op = Operation::take_over(&cx.state, &cx.journal, &cx.invocation, id, "resume")?;
    match op.verb.as_str() {
        "install" => {
            let Some(data) = step_begun_data(&op, "validate", op_image(&op).as_deref()) else {
                return abandon_unstarted(cx, op);
            };
            crate::verbs::install::resume(cx, op, &data)
        }
        "delete" => crate::verbs::delete::resume(cx, op),
        "create" => crate::verbs::create::resume(cx, op).map(|_| ()),
        "vacuum" => crate::verbs::vacuum::resume(cx, op),
        "import" => crate::verbs::import::resume(cx, op),
        "publish" => crate::verbs::publish::resume(cx, op),
        "update" => crate::verbs::update::resume(cx, op),
        verb => Err(Error::NotSupported(format!(
            "resuming a \"{verb}\" operation is not supported: roll it back with `imgadm journal rollback {id}`"
        ))),
    }
}

/// Takes over and finishes every interrupted `verb` operation with
/// `resume`: a vacuum or update run again after a crash finishes what the
/// interrupted one had planned before it plans anew.
pub fn resume_every(cx: &Context, verb: &str, resume: fn(&Context, Operation) -> Result<()>) -> Result<()> {
    for summary in interrupted(cx)?.into_iter().filter(|op| op.verb == verb) {
        cx.info(&format!("Resuming interrupted {verb} {}", summary.id));
        resume(cx, Operation::take_over(&cx.state, &cx.journal, &cx.invocation, &summary.id, "resume")?)?;
    }
    Ok(())
}

/// The image an operation is about (the first it names).
pub fn op_image(op: &Operation) -> Option<String> {
    op.images().first().cloned()
}

/// An operation interrupted before it did anything has nothing to resume.
fn abandon_unstarted(cx: &Context, op: Operation) -> Result<()> {
    let id = op.id.clone();
    op.end(Outcome::Abandoned, None)?;
    cx.info(&format!("Operation {id} had not started any step: marked abandoned"));
    Ok(())
}

/// `imgadm journal rollback OP`: undo every step begun, latest first. A
/// delete whose destroy is done cannot be undone; it is finished instead.
pub fn rollback(cx: &Context, id: &OpId) -> Result<()> {
    let mut op = Operation::take_over(&cx.state, &cx.journal, &cx.invocation, id, "rollback")?;
    if op.verb == "vacuum" && crate::verbs::vacuum::destroy_happened(cx, &op)? {
        cx.info(&format!("Operation {id} already destroyed images: it cannot be undone, finishing the vacuum instead"));
        return crate::verbs::vacuum::resume(cx, op);
    }
    if op.verb == "delete" && crate::verbs::delete::destroy_happened(cx, &op)? {
        let image = op_image(&op).unwrap_or_default();
        cx.info(&format!(
            "Operation {id} already destroyed image {image}: it cannot be undone, finishing the delete instead"
        ));
        return crate::verbs::delete::resume(cx, op);
    }
    let wanted: Vec<(ImageUuid, LockMode)> = op
        .images()
        .iter()
        .filter_map(|i| ImageUuid::parse(i).ok())
        .map(|u| (u, LockMode::Exclusive))
        .collect();
    let locks = lock::try_lock_images(&cx.state, &wanted)?;
    steps::roll_back(&mut op, cx)?;
    op.end(Outcome::RolledBack, None)?;
    drop(locks);
    cx.info(&format!("Rolled back operation {id}"));
    Ok(())
}
