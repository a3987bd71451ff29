//! The steps that change a pool or the state directory, each with its run,
//! its probe (after a crash: did the effect happen?) and its undo (the
//! compensation, driven only by what the journal recorded). A step's journal
//! data always names the image it works on (`image`) and everything its undo
//! needs; undo never destroys anything the operation did not create: a
//! dataset is destroyed only if it has the recorded name and its snapshot
//! has the recorded guid.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::cache;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ids::{DatasetName, ImageUuid, PoolName, SnapName};
use crate::manifest::Manifest;
use crate::operation::{Operation, StepState};
use crate::pipeline::{self, StreamSource};
use crate::pool::{KeepMode, Pool};
use crate::report::SharedProgress;

pub const RECV: &str = "recv";
pub const VERIFY: &str = "verify";
pub const FINAL: &str = "final";
pub const RENAME: &str = "rename";
pub const CACHE: &str = "cache";
pub const FETCH: &str = "fetch";
pub const DESTROY: &str = "destroy";
pub const UNCACHE: &str = "uncache";
pub const PREPARE: &str = "prepare";
pub const SNAPSHOT: &str = "snapshot";
pub const SEND: &str = "send";
pub const COMPRESS: &str = "compress";
pub const MANIFEST: &str = "manifest";
pub const CLEANUP: &str = "cleanup";
pub const IMPORT: &str = "import";
pub const UPLOAD: &str = "upload";
pub const ACTIVATE: &str = "activate";
pub const LOOKUP: &str = "lookup";

fn str_field<'v>(data: &'v Value, key: &str) -> Result<&'v str> {
    data.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Journal(format!("journal step data lacks \"{key}\": {data}")))
}

fn guid_field(data: &Value, key: &str) -> Result<u64> {
    str_field(data, key)?.parse().map_err(|_| Error::Journal(format!("journal step data has a bad \"{key}\": {data}")))
}

/// Whether `dataset` exists and its one snapshot (or any, for a dataset
/// that has been renamed after receive) has `guid`: the proof that this
/// operation created it.
pub fn holds_guid(pool: &dyn Pool, dataset: &DatasetName, guid: u64) -> Result<bool> {
    if !pool.dataset_exists(dataset)? {
        return Ok(false);
    }
    match pool.snapshots(dataset) {
        Ok(snapshots) => Ok(snapshots.iter().any(|s| s.guid == guid)),
        // A failed receive's dataset can vanish between the two calls
        // (zfs-fuse cleans up after `zfs recv` has exited).
        Err(_) if !pool.dataset_exists(dataset)? => Ok(false),
        Err(e) => Err(e),
    }
}

/// What one image's receive needs: the pool, where the file comes from, and
/// what the manifest promises about it.
pub struct ReceivePlan<'p> {
    pub pool: &'p dyn Pool,
    pub uuid: ImageUuid,
    pub manifest: &'p Manifest,
    pub origin: Option<DatasetName>,
    pub origin_guid: Option<u64>,
    pub keep: KeepMode,
    /// The bar the transfer advances: import's one bar for the whole chain;
    /// without it the image gets a bar of its own.
    pub progress: Option<&'p SharedProgress>,
}

/// verify + recv as one streaming pass over the image file: the file is
/// read once, hashed and counted on the way to the decompressor and the
/// receive. "verify" and "recv" begun events are durable before their
/// effects; both "done" events are written together once the receive is
/// durable and the file checked.
pub fn verify_and_receive(
    op: &mut Operation,
    cx: &Context,
    plan: &ReceivePlan,
    source: StreamSource,
    file: &Path,
) -> Result<()> {
    let image = plan.uuid.to_string();
    let target = DatasetName::partial(plan.pool.name(), plan.uuid);
    if let StepState::Done { .. } = op.step_state(RECV, Some(&image)) {
        return Ok(());
    }
    // A receive never resumes mid-stream: whatever an earlier attempt of
    // this operation left is destroyed (it is ours: recorded name and guid).
    if let StepState::Begun { begun } = op.step_state(RECV, Some(&image)) {
        undo_recv(cx, &begun)?;
    }
    if plan.pool.dataset_exists(&target)? {
        cx.warn(&format!("Warning: deleting partial dataset left over from earlier import attempt: {target}"));
        plan.pool.destroy(&target)?;
    }
    let files0 = plan.manifest.files0().unwrap_or_default();
    op.begun(
        VERIFY,
        json!({"image": image, "file": file.display().to_string(), "size": files0.size, "sha1": files0.sha1}),
    )?;
    let outcome = pipeline::run(op, cx, plan, &target, source)?;
    plan.pool.keep_file(&target, file, &outcome.sha1, plan.keep)?;
    op.done_together(vec![
        (VERIFY, json!({"image": image, "bytes": outcome.bytes, "sha1": outcome.sha1})),
        (
            RECV,
            json!({
                "image": image,
                "target": target.to_string(),
                "snapshot": outcome.received.snapshot.name.as_str(),
                "toguid": outcome.received.toguid.to_string(),
            }),
        ),
    ])
}

/// recv's begun data, written once the stream's BEGIN record is decoded
/// and the receive is about to take bytes.
pub fn recv_begun_data(image: ImageUuid, target: &DatasetName, toguid: u64, fromguid: u64, pid: Option<u32>) -> Value {
    json!({
        "image": image.to_string(),
        "target": target.to_string(),
        "toguid": toguid.to_string(),
        "fromguid": fromguid.to_string(),
        "pid": pid,
    })
}

pub fn undo_recv(cx: &Context, begun: &Value) -> Result<()> {
    let target = DatasetName::parse(str_field(begun, "target")?)?;
    let toguid = guid_field(begun, "toguid")?;
    let pool = cx.open_pool(&target.pool, false)?;
    if holds_guid(pool.as_ref(), &target, toguid)? {
        pool.destroy(&target)?;
    }
    Ok(())
}

/// final: the one snapshot the stream created is renamed `@final`. No new
/// snapshot is ever taken: that snapshot's guid is the image's.
pub fn final_snapshot(op: &mut Operation, plan: &ReceivePlan) -> Result<()> {
    let image = plan.uuid.to_string();
    if let StepState::Done { .. } = op.step_state(FINAL, Some(&image)) {
        return Ok(());
    }
    let target = DatasetName::partial(plan.pool.name(), plan.uuid);
    let snapshots = plan.pool.snapshots(&target)?;
    let names = || snapshots.iter().map(|s| format!("@{}", s.name)).collect::<Vec<_>>().join(", ");
    let [snapshot] = snapshots.as_slice() else {
        return Err(Error::UnexpectedNumberOfSnapshots { uuid: image, count: snapshots.len(), names: names() });
    };
    let data = json!({"image": image, "dataset": target.to_string(), "from": snapshot.name.as_str(), "guid": snapshot.guid.to_string()});
    op.begun(FINAL, data.clone())?;
    if snapshot.name != SnapName::final_() {
        plan.pool.rename_snapshot(&target, &snapshot.name, &SnapName::final_())?;
    }
    op.done(FINAL, data)
}

/// rename: `POOL/UUID-partial` becomes `POOL/UUID`; from here the image
/// exists for everyone.
pub fn rename_into_place(op: &mut Operation, cx: &Context, plan: &ReceivePlan) -> Result<()> {
    let image = plan.uuid.to_string();
    let from = DatasetName::partial(plan.pool.name(), plan.uuid);
    let to = DatasetName::image(plan.pool.name(), plan.uuid);
    let guid = match op.step_state(RECV, Some(&image)) {
        StepState::Done { done, .. } => guid_field(&done, "toguid")?,
        _ => return Err(Error::Journal(format!("rename of {image} before its receive is done"))),
    };
    let installed = json!({"pool": plan.pool.name().as_str(), "driver": plan.pool.driver().as_str(), "image": image});
    match op.step_state(RENAME, Some(&image)) {
        StepState::Done { .. } => return Ok(()),
        StepState::Begun { .. } if holds_guid(plan.pool, &to, guid)? => {
            return op.done(RENAME, json!({"image": image, "installed": installed}));
        }
        _ => {}
    }
    op.begun(RENAME, json!({"image": image, "from": from.to_string(), "to": to.to_string(), "toguid": guid.to_string()}))?;
    plan.pool.rename(&from, &to).map_err(|e| Error::internal(format!("error importing: {e}")))?;
    let _ = cx;
    op.done(RENAME, json!({"image": image, "installed": installed}))
}

pub fn undo_rename(cx: &Context, begun: &Value) -> Result<Value> {
    let from = DatasetName::parse(str_field(begun, "from")?)?;
    let to = DatasetName::parse(str_field(begun, "to")?)?;
    let guid = guid_field(begun, "toguid")?;
    let pool = cx.open_pool(&to.pool, false)?;
    if holds_guid(pool.as_ref(), &to, guid)? {
        pool.rename(&to, &from)?;
    }
    Ok(json!({
        "image": to.uuid.to_string(),
        "removed": {"pool": to.pool.as_str(), "driver": pool.driver().as_str(), "image": to.uuid.to_string()},
    }))
}

/// cache: the manifest cache file, written once the image is in place. Its
/// begun event keeps what was there before, so undo can put it back.
pub fn write_cache(op: &mut Operation, cx: &Context, pool: &PoolName, manifest: &Manifest, source: Option<&str>) -> Result<()> {
    let uuid = manifest.uuid()?;
    let image = uuid.to_string();
    let bytes = cache::render(manifest, pool, source);
    if let StepState::Done { .. } = op.step_state(CACHE, Some(&image)) {
        return Ok(());
    }
    if let StepState::Begun { .. } = op.step_state(CACHE, Some(&image)) {
        if cache::read_raw(&cx.state, pool, uuid)?.as_deref() == Some(bytes.as_slice()) {
            return op.done(CACHE, json!({"image": image}));
        }
    } else {
        let previous = cache::read_raw(&cx.state, pool, uuid)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        op.begun(CACHE, json!({"image": image, "pool": pool.as_str(), "previous": previous}))?;
    }
    cache::write_raw(&cx.state, pool, uuid, &bytes)?;
    op.done(CACHE, json!({"image": image}))
}

pub fn undo_cache(cx: &Context, begun: &Value) -> Result<()> {
    let uuid = ImageUuid::parse(str_field(begun, "image")?)?;
    let pool = PoolName::parse(str_field(begun, "pool")?)?;
    match begun.get("previous").and_then(Value::as_str) {
        Some(previous) => cache::write_raw(&cx.state, &pool, uuid, previous.as_bytes()),
        None => cache::remove(&cx.state, &pool, uuid),
    }
}

/// fetch's undo: the download (partial or complete) of the image is removed.
pub fn undo_fetch(cx: &Context, begun: &Value) -> Result<()> {
    let uuid = ImageUuid::parse(str_field(begun, "image")?)?;
    crate::fsutil::remove_durable(&cx.state.download_partial_path(uuid))?;
    crate::fsutil::remove_durable(&cx.state.download_path(uuid))
}

/// Undoes one recorded step (rollback and failure cleanup). Steps without
/// a durable effect of their own have nothing to undo. A step name means
/// the same in every verb except `import` (publish's is on the server) and
/// `final` (update's renames a snapshot of an installed image). Returns
/// the data of the "step undone" event.
pub fn undo(cx: &Context, verb: &str, step: &str, state: &StepState) -> Result<Value> {
    let begun = match state {
        StepState::Begun { begun } | StepState::Done { begun, .. } => begun,
        _ => return Ok(Value::Null),
    };
    let image = begun.get("image").cloned().unwrap_or(Value::Null);
    match (verb, step) {
        ("publish", IMPORT) => crate::verbs::publish::undo_import(cx, begun, matches!(state, StepState::Done { .. }))?,
        ("update", FINAL) => crate::verbs::update::undo_final(cx, begun)?,
        (_, RECV) => undo_recv(cx, begun)?,
        (_, RENAME) => return undo_rename(cx, begun),
        (_, CACHE) => undo_cache(cx, begun)?,
        (_, FETCH) => undo_fetch(cx, begun)?,
        (_, PREPARE) => crate::verbs::create::undo_prepare(cx, begun)?,
        (_, SNAPSHOT) => crate::verbs::create::undo_snapshot(begun)?,
        (_, COMPRESS | MANIFEST) => crate::verbs::create::undo_output(begun, matches!(state, StepState::Done { .. }))?,
        _ => {}
    }
    Ok(json!({"image": image}))
}

/// Rolls back every step of `op` that began, latest first, recording each
/// undo; used after a failure (bad input leaves nothing behind) and by
/// `journal rollback`.
pub fn roll_back(op: &mut Operation, cx: &Context) -> Result<()> {
    roll_back_keeping(op, cx, &[])
}

/// Rolls back every step but those named in `keep` (a failed import keeps
/// its `fetch`: the partial download a later run resumes).
pub fn roll_back_keeping(op: &mut Operation, cx: &Context, keep: &[&str]) -> Result<()> {
    for (step, state) in op.steps_to_undo() {
        if keep.contains(&step.as_str()) {
            continue;
        }
        let data = undo(cx, &op.verb, &step, &state)?;
        op.undone(&step, data)?;
    }
    Ok(())
}

/// Reads the first bytes of a file, for magic sniffing.
pub fn read_head(path: &Path, n: usize) -> Result<Vec<u8>> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io_path("cannot open image file", path, e))?;
    let mut head = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) => return Err(Error::io_path("cannot read image file", path, e)),
        }
    }
    head.truncate(filled);
    Ok(head)
}
