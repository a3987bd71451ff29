//! `imgadm vacuum [-n] [-f] [-P POOL]`: delete the images no VM and no
//! other image uses, on every imported pool of the driver (`-P`: one).
//!
//! "Unused" is found to a fixed point, as the real imgadm does: an image
//! with no clones is unused; once a round of unused images is marked, they
//! stop counting as uses of their origins, so a chain used only by doomed
//! children goes too. Deletion is leaves first.
//!
//! One vacuum operation per pool, with steps `plan` (the images it will
//! delete, in order), `lock` (all of them, exclusively), then for each
//! image the delete's own `check`, `destroy`, `uncache`, then `unlock`.
//! One operation rather than one delete operation each, so the journal
//! shows what one vacuum decided and did, and a crashed vacuum resumes its
//! own plan; each image is checked again under the lock, so an image that
//! got a clone after planning is refused, not destroyed.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::cache;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ids::{DatasetName, ImageUuid, PoolName};
use crate::images::PoolImages;
use crate::lock::{self, ImageLock, LockMode};
use crate::operation::{Operation, Outcome, StepState};
use crate::pool::Pool;
use crate::recovery;
use crate::verbs::delete;

/// An image vacuum will delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doomed {
    pub pool: PoolName,
    pub uuid: ImageUuid,
    /// `UUID (NAME@VERSION)`, from the manifest cache (gone once deleted).
    pub title: String,
}

/// The unused images of the pools, each pool's leaves first.
pub fn plan(cx: &Context, only: Option<&PoolName>) -> Result<Vec<Doomed>> {
    let mut doomed = Vec::new();
    for scan in cx.scan_pools(only)? {
        for uuid in unused(&scan) {
            let title = cache::read(&cx.state, &scan.pool, uuid).manifest.title();
            doomed.push(Doomed { pool: scan.pool.clone(), uuid, title });
        }
    }
    Ok(doomed)
}

/// The unused images of one pool, round by round to a fixed point.
fn unused(scan: &PoolImages) -> Vec<ImageUuid> {
    let mut remaining: Vec<(ImageUuid, &Vec<String>)> = scan.images.iter().map(|(u, c)| (*u, c)).collect();
    let mut doomed_datasets: HashSet<String> = HashSet::new();
    let mut order = Vec::new();
    loop {
        let (round, rest): (Vec<_>, Vec<_>) =
            remaining.into_iter().partition(|(_, clones)| clones.iter().all(|c| doomed_datasets.contains(c)));
        remaining = rest;
        if round.is_empty() {
            return order;
        }
        for (uuid, _) in round {
            doomed_datasets.insert(DatasetName::image(&scan.pool, uuid).to_string());
            order.push(uuid);
        }
    }
}

/// Deletes the planned images, one operation per pool, printing each as it
/// goes. Stops at the first error.
pub fn vacuum(cx: &Context, doomed: &[Doomed]) -> Result<()> {
    let mut pools: Vec<&PoolName> = doomed.iter().map(|d| &d.pool).collect();
    pools.dedup();
    for pool_name in pools {
        let in_pool: Vec<&Doomed> = doomed.iter().filter(|d| &d.pool == pool_name).collect();
        let pool = cx.open_pool(pool_name, false)?;
        let wanted: Vec<(ImageUuid, LockMode)> = in_pool.iter().map(|d| (d.uuid, LockMode::Exclusive)).collect();
        let locks = lock::lock_images(&cx.state, &wanted, cx.reporter.as_ref())?;
        let images: Vec<String> = in_pool.iter().map(|d| d.uuid.to_string()).collect();
        let planned: Vec<Value> = in_pool.iter().map(|d| json!({"uuid": d.uuid.to_string(), "title": d.title})).collect();
        let checked = vec![
            ("plan", json!({"pool": pool_name.as_str(), "images": planned})),
            ("lock", json!({"locks": crate::verbs::install::lock_names(&locks)})),
        ];
        let op = Operation::begin(&cx.state, &cx.journal, &cx.invocation, "vacuum", &images, checked)?;
        finish(op, cx, pool.as_ref(), &in_pool.into_iter().cloned().collect::<Vec<_>>(), locks)?;
    }
    Ok(())
}

fn finish(mut op: Operation, cx: &Context, pool: &dyn Pool, doomed: &[Doomed], locks: Vec<ImageLock>) -> Result<()> {
    for image in doomed {
        if let StepState::Done { .. } = op.step_state(crate::steps::UNCACHE, Some(&image.uuid.to_string())) {
            continue;
        }
        if let Err(e) = delete::delete_one(&mut op, cx, pool, image.uuid) {
            cx.warn(&format!("Error deleting image {}: {e}", image.title));
            return Err(op.fail_and_roll_back(cx, e));
        }
        cx.info(&format!("Deleted image {}", image.title));
    }
    op.checked("unlock", json!({}))?;
    op.end(Outcome::Succeeded, None)?;
    drop(locks);
    Ok(())
}

/// The plan an interrupted vacuum recorded.
fn recorded_plan(op: &Operation) -> Result<Option<(PoolName, Vec<Doomed>)>> {
    let StepState::Done { done, .. } = op.step_state("plan", None) else { return Ok(None) };
    let bad = || Error::Journal(format!("journal vacuum plan is malformed: {done}"));
    let pool = PoolName::parse(done.get("pool").and_then(Value::as_str).ok_or_else(bad)?)?;
    let mut doomed = Vec::new();
    for entry in done.get("images").and_then(Value::as_array).ok_or_else(bad)? {
        let uuid = ImageUuid::parse(entry.get("uuid").and_then(Value::as_str).ok_or_else(bad)?)?;
        let title = entry.get("title").and_then(Value::as_str).unwrap_or_default().to_string();
        doomed.push(Doomed { pool: pool.clone(), uuid, title });
    }
    Ok(Some((pool, doomed)))
}

/// Finishes an interrupted vacuum: the rest of its plan, each image checked
/// again (a destroy already begun is finished).
pub fn resume(cx: &Context, op: Operation) -> Result<()> {
    let Some((pool_name, doomed)) = recorded_plan(&op)? else {
        let id = op.id.clone();
        op.end(Outcome::Abandoned, None)?;
        cx.info(&format!("Vacuum {id} had not made its plan: marked abandoned, nothing was changed"));
        return Ok(());
    };
    let pool = cx.open_pool(&pool_name, false)?;
    let wanted: Vec<(ImageUuid, LockMode)> = doomed.iter().map(|d| (d.uuid, LockMode::Exclusive)).collect();
    let locks = lock::try_lock_images(&cx.state, &wanted)?;
    finish(op, cx, pool.as_ref(), &doomed, locks)
}

/// Whether an interrupted vacuum destroyed any image already: such a
/// vacuum cannot be undone, only finished (as a delete).
pub fn destroy_happened(cx: &Context, op: &Operation) -> Result<bool> {
    for image in op.images() {
        if delete::destroy_happened_to(cx, op, image)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Takes over and finishes every interrupted vacuum, so a vacuum run again
/// after a crash finishes the plan it had made before planning anew.
pub fn resume_interrupted(cx: &Context) -> Result<()> {
    recovery::resume_every(cx, "vacuum", resume)
}
