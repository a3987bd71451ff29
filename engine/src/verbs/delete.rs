//! `imgadm delete [-P pool] UUID`: steps lock, check, destroy, uncache,
//! unlock. Only a dataset that is an image is ever destroyed, and never one
//! that has clones.

use serde_json::{json, Value};

use crate::cache;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ids::{DatasetName, ImageUuid, PoolName};
use crate::images::{self, PoolImages};
use crate::lock::{self, LockMode};
use crate::operation::{Operation, Outcome, StepState};
use crate::pool::Pool;
use crate::recovery;
use crate::steps::{DESTROY, UNCACHE};

pub fn delete(cx: &Context, pool_name: &PoolName, uuid: ImageUuid) -> Result<()> {
    // A delete interrupted after its destroy has no image left to find:
    // re-running the command finishes it instead of failing "not installed".
    if let Some(id) = recovery::interrupted_for(cx, "delete", uuid)? {
        cx.info(&format!("Resuming interrupted delete {id} of image {uuid}"));
        return resume(cx, Operation::take_over(&cx.state, &cx.journal, &cx.invocation, &id, "resume")?);
    }
    let pool = cx.open_pool_holding(pool_name, uuid)?;
    let dataset = DatasetName::image(pool_name, uuid);
    if !pool.dataset_exists(&dataset)? {
        return Err(Error::ImageNotInstalled { uuid: uuid.to_string(), pool: pool_name.to_string() });
    }
    let locks = lock::lock_images(&cx.state, &[(uuid, LockMode::Exclusive)], cx.reporter.as_ref())?;
    // The dataset is recorded from the first step on, so a delete
    // interrupted before its check can still be resumed.
    let lock = json!({"image": uuid.to_string(), "dataset": dataset.to_string()});
    let mut op = Operation::begin(&cx.state, &cx.journal, &cx.invocation, "delete", &[uuid.to_string()], vec![("lock", lock)])?;
    match delete_one(&mut op, cx, pool.as_ref(), uuid) {
        Ok(()) => {
            op.checked("unlock", json!({"image": uuid.to_string()}))?;
            op.end(Outcome::Succeeded, None)?;
            drop(locks);
            cx.info(&format!("Deleted image {uuid}"));
            Ok(())
        }
        Err(e) => Err(op.fail_and_roll_back(cx, e)),
    }
}

/// The dataset must be an image (not a VM's) and have no clones; checked
/// under the image's lock, so no child can be received meanwhile.
fn check(pool: &dyn Pool, uuid: ImageUuid) -> Result<()> {
    let scan = PoolImages::scan(pool, &images::zone_roots())?;
    let Some(clones) = scan.images.get(&uuid) else {
        if scan.dataset_exists(uuid) {
            return Err(Error::NotSupported(format!(
                "dataset \"{}\" is not an image (a VM's dataset, or one marked imgadm:ignore): not deleting it",
                DatasetName::image(pool.name(), uuid)
            )));
        }
        return Err(Error::ImageNotInstalled { uuid: uuid.to_string(), pool: pool.name().to_string() });
    };
    let (_, dependents) = scan.children(uuid);
    let all: Vec<&String> = clones.iter().chain(dependents.iter()).collect();
    if let Some(first) = all.first() {
        let mut unique: Vec<&String> = all.clone();
        unique.sort();
        unique.dedup();
        return Err(Error::ImageHasDependentClones {
            uuid: uuid.to_string(),
            first: first.to_string(),
            others: unique.len() - 1,
        });
    }
    Ok(())
}

/// check, destroy and uncache of one image inside `op` (a delete, or one
/// image of a vacuum). Before its destroy nothing changed, so the check
/// runs (again); a destroy already begun is finished without it.
pub(crate) fn delete_one(op: &mut Operation, cx: &Context, pool: &dyn Pool, uuid: ImageUuid) -> Result<()> {
    if !destroy_started(op, &uuid.to_string()) {
        check_recorded(op, pool, uuid)?;
    }
    destroy(op, pool, uuid)?;
    uncache(op, cx, pool.name(), uuid)
}

pub(crate) fn destroy_started(op: &Operation, image: &str) -> bool {
    matches!(op.step_state(DESTROY, Some(image)), StepState::Begun { .. } | StepState::Done { .. })
}

fn destroy(op: &mut Operation, pool: &dyn Pool, uuid: ImageUuid) -> Result<()> {
    let image = uuid.to_string();
    let dataset = DatasetName::image(pool.name(), uuid);
    let removed = json!({"pool": pool.name().as_str(), "driver": pool.driver().as_str(), "image": image});
    match op.step_state(DESTROY, Some(&image)) {
        StepState::Done { .. } => return Ok(()),
        StepState::Begun { .. } if !pool.dataset_exists(&dataset)? => {
            return op.done(DESTROY, json!({"image": image, "removed": removed}));
        }
        _ => {}
    }
    op.begun(DESTROY, json!({"image": image, "dataset": dataset.to_string()}))?;
    pool.destroy(&dataset)?;
    op.done(DESTROY, json!({"image": image, "removed": removed}))
}

fn uncache(op: &mut Operation, cx: &Context, pool: &PoolName, uuid: ImageUuid) -> Result<()> {
    let image = uuid.to_string();
    if let StepState::Done { .. } = op.step_state(UNCACHE, Some(&image)) {
        return Ok(());
    }
    op.begun(UNCACHE, json!({"image": image, "pool": pool.as_str()}))?;
    cache::remove(&cx.state, pool, uuid)?;
    op.done(UNCACHE, json!({"image": image}))
}

/// The dataset an interrupted delete was about, from its first steps' data.
fn recorded_dataset(op: &Operation, image: &str) -> Result<Option<DatasetName>> {
    for step in ["check", "lock"] {
        if let StepState::Done { begun, .. } | StepState::Begun { begun } = op.step_state(step, Some(image)) {
            if let Some(name) = begun.get("dataset").and_then(Value::as_str) {
                return DatasetName::parse(name).map(Some);
            }
        }
    }
    Ok(None)
}

/// Whether an interrupted delete's destroy happened: done in the journal,
/// or begun and the dataset is gone (the process died before writing
/// "done"). Such a delete cannot be undone, only finished.
pub fn destroy_happened(cx: &Context, op: &Operation) -> Result<bool> {
    destroy_happened_to(cx, op, &op.images().first().cloned().unwrap_or_default())
}

/// Whether `image`'s destroy in `op` happened (see `destroy_happened`).
pub(crate) fn destroy_happened_to(cx: &Context, op: &Operation, image: &str) -> Result<bool> {
    match op.step_state(DESTROY, Some(image)) {
        StepState::Done { .. } => Ok(true),
        StepState::Begun { begun } => {
            let dataset = DatasetName::parse(
                begun.get("dataset").and_then(Value::as_str).unwrap_or_default(),
            )?;
            Ok(!cx.open_pool(&dataset.pool, false)?.dataset_exists(&dataset)?)
        }
        _ => Ok(false),
    }
}

/// Finishes an interrupted delete. Before its destroy nothing changed, so
/// the checks run again; after it, only the cache is left to remove.
pub fn resume(cx: &Context, mut op: Operation) -> Result<()> {
    let image = op.images().first().cloned().unwrap_or_default();
    let uuid = ImageUuid::parse(&image)?;
    let Some(dataset) = recorded_dataset(&op, &image)? else {
        op.end(Outcome::Abandoned, None)?;
        cx.info(&format!("Delete of image {image} had not started any step: marked abandoned, nothing was changed"));
        return Ok(());
    };
    let pool = cx.open_pool(&dataset.pool, false)?;
    let locks = lock::try_lock_images(&cx.state, &[(uuid, LockMode::Exclusive)])?;
    match delete_one(&mut op, cx, pool.as_ref(), uuid) {
        Ok(()) => {
            op.checked("unlock", json!({"image": image}))?;
            op.end(Outcome::Succeeded, None)?;
            drop(locks);
            cx.info(&format!("Deleted image {uuid}"));
            Ok(())
        }
        Err(e) => Err(op.fail_and_roll_back(cx, e)),
    }
}

/// The check again (the pool may have changed while the delete was
/// interrupted), recorded unless the journal already has it done.
fn check_recorded(op: &mut Operation, pool: &dyn Pool, uuid: ImageUuid) -> Result<()> {
    check(pool, uuid)?;
    let image = uuid.to_string();
    match op.step_state("check", Some(&image)) {
        StepState::Done { .. } => Ok(()),
        _ => op.checked("check", json!({"image": image, "dataset": DatasetName::image(pool.name(), uuid).to_string()})),
    }
}
