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
use crate::steps::{DESTROY, UNCACHE};

pub fn delete(cx: &Context, pool_name: &PoolName, uuid: ImageUuid) -> Result<()> {
    let pool = cx.open_pool(pool_name, false)?;
    let not_installed = || Error::ImageNotInstalled { uuid: uuid.to_string(), pool: pool_name.to_string() };
    if !pool.dataset_exists(&DatasetName::image(pool_name, uuid))? {
        return Err(not_installed());
    }
    let locks = lock::lock_images(&cx.state, &[(uuid, LockMode::Exclusive)], cx.reporter.as_ref())?;
    let mut op = Operation::begin(&cx.state, &cx.journal, &cx.invocation, "delete", &[uuid.to_string()])?;
    op.checked("lock", json!({"image": uuid.to_string()}))?;
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
/// image of a vacuum). A destroy already begun (by a run that crashed) is
/// finished without checking again: its dataset may be half gone.
pub(crate) fn delete_one(op: &mut Operation, cx: &Context, pool: &dyn Pool, uuid: ImageUuid) -> Result<()> {
    let image = uuid.to_string();
    if !destroy_started(op, &image) {
        check(pool, uuid)?;
        let dataset = DatasetName::image(pool.name(), uuid);
        op.checked("check", json!({"image": image, "dataset": dataset.to_string()}))?;
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

/// Finishes an interrupted delete. Before its destroy nothing changed, so
/// the checks run again; after it, only the cache is left to remove.
pub fn resume(cx: &Context, mut op: Operation) -> Result<()> {
    let image = op.images().first().cloned().unwrap_or_default();
    let uuid = ImageUuid::parse(&image)?;
    let dataset = match op.step_state("check", Some(&image)) {
        StepState::Done { done, .. } | StepState::Begun { begun: done } => {
            done.get("dataset").and_then(Value::as_str).map(DatasetName::parse).transpose()?
        }
        _ => None,
    };
    let Some(dataset) = dataset else {
        op.end(Outcome::Abandoned, None)?;
        cx.info(&format!("Delete of image {image} had not passed its checks: marked abandoned, nothing was changed"));
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
