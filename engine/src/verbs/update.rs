//! `imgadm update [-n] [-P POOL] [UUID...]`: refresh the cached manifests
//! of installed images from the image sources, and give an image installed
//! without imgadm (a plain `zfs recv`) its `@final`, found by the
//! `dataset_guid` the source records.
//!
//! For each image, serially: `lookup` (in the sources, inactive images
//! too), `cache` (the manifest cache rewritten with the source's manifest
//! and URL, when that changes it), `final` (the original snapshot renamed
//! `@final`, when the image has none). Every imported pool of the driver,
//! or only `-P`'s. One operation per pool, as vacuum: its per-image steps
//! are keyed by image uuid, which is unique within a pool only.
//!
//! A failure stops the update and keeps what was already done (every step
//! done is a correct fix of its own); `journal rollback` undoes all of it
//! (the previous cache put back, the snapshot renamed back). Unlike the
//! real imgadm, `-n` changes nothing at all: it prints what it would do,
//! takes no lock and writes no journal.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::cache;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ids::{DatasetName, ImageUuid, PoolName, SnapName};
use crate::lock::{self, ImageLock, LockMode};
use crate::manifest::Manifest;
use crate::operation::{Operation, Outcome, StepState};
use crate::pool::Pool;
use crate::source::{self, imgapi::ImgapiClient};
use crate::steps::{self, CACHE, FINAL, LOOKUP};

#[derive(Clone, Debug)]
pub struct UpdateArgs {
    /// Only these images (every installed image when empty).
    pub images: Vec<ImageUuid>,
    pub pool: Option<PoolName>,
    pub dry_run: bool,
}

/// What the sources say of an image: the source's URL and its manifest.
#[derive(Clone, Debug)]
struct Found {
    url: String,
    manifest: Manifest,
}

pub fn update(cx: &Context, args: &UpdateArgs) -> Result<()> {
    if !args.dry_run {
        crate::recovery::resume_every(cx, "update", resume)?;
    }
    let targets = targets(cx, args)?;
    if targets.is_empty() {
        return Ok(());
    }
    let clients = source_clients(cx)?;
    for (pool_name, images) in targets {
        let pool = cx.open_pool(&pool_name, false)?;
        if args.dry_run {
            for uuid in images {
                let found = lookup(&clients, uuid)?;
                update_image(cx, None, pool.as_ref(), uuid, found.as_ref())?;
            }
            continue;
        }
        let wanted: Vec<(ImageUuid, LockMode)> = images.iter().map(|u| (*u, LockMode::Exclusive)).collect();
        let locks = lock::lock_images(&cx.state, &wanted, cx.reporter.as_ref())?;
        let names: Vec<String> = images.iter().map(ImageUuid::to_string).collect();
        let lock = json!({"pool": pool_name.as_str(), "images": names, "locks": crate::verbs::install::lock_names(&locks)});
        let op = Operation::begin(&cx.state, &cx.journal, &cx.invocation, "update", &names, vec![("lock", lock)])?;
        finish(op, cx, pool.as_ref(), &images, &clients, locks)?;
    }
    Ok(())
}

/// The installed images to update, by pool: the named ones (each must be
/// installed on one of the pools), or all.
fn targets(cx: &Context, args: &UpdateArgs) -> Result<Vec<(PoolName, Vec<ImageUuid>)>> {
    let wanted: BTreeSet<ImageUuid> = args.images.iter().copied().collect();
    let mut seen = BTreeSet::new();
    let mut targets = Vec::new();
    for scan in cx.scan_pools(args.pool.as_ref())? {
        let images: Vec<ImageUuid> =
            scan.images.keys().copied().filter(|u| wanted.is_empty() || wanted.contains(u)).collect();
        seen.extend(images.iter().copied());
        if !images.is_empty() {
            targets.push((scan.pool.clone(), images));
        }
    }
    let unknown: Vec<String> = wanted.difference(&seen).map(ImageUuid::to_string).collect();
    if !unknown.is_empty() {
        return Err(Error::Usage(format!("no installed image with the given UUID(s): {}", unknown.join(", "))));
    }
    Ok(targets)
}

/// The first source that has the image, active or not.
fn lookup(clients: &[ImgapiClient], uuid: ImageUuid) -> Result<Option<Found>> {
    Ok(source::find_image(clients, uuid, false)?
        .map(|(client, manifest)| Found { url: client.url().to_string(), manifest }))
}

/// Runs each image's steps not yet done, then unlocks and ends the
/// operation.
fn finish(
    mut op: Operation,
    cx: &Context,
    pool: &dyn Pool,
    images: &[ImageUuid],
    clients: &[ImgapiClient],
    locks: Vec<ImageLock>,
) -> Result<()> {
    for uuid in images {
        let step = (|| {
            let found = match op.step_state(LOOKUP, Some(&uuid.to_string())) {
                StepState::Done { done, .. } => recorded_lookup(&done)?,
                _ => {
                    let found = lookup(clients, *uuid)?;
                    op.checked(
                        LOOKUP,
                        json!({
                            "image": uuid.to_string(),
                            "source": found.as_ref().map(|f| &f.url),
                            "manifest": found.as_ref().map(|f| f.manifest.to_value()),
                        }),
                    )?;
                    found
                }
            };
            update_image(cx, Some(&mut op), pool, *uuid, found.as_ref())
        })();
        if let Err(e) = step {
            return Err(op.fail_and_roll_back_keeping(cx, e, &[LOOKUP, CACHE, FINAL]));
        }
    }
    op.checked("unlock", json!({}))?;
    op.end(Outcome::Succeeded, None)?;
    drop(locks);
    Ok(())
}

/// The clients of the configured image sources.
fn source_clients(cx: &Context) -> Result<Vec<ImgapiClient>> {
    source::imgapi_clients(&cx.config, &source::effective(&cx.config, &[], None)?)
}

fn recorded_lookup(done: &Value) -> Result<Option<Found>> {
    let (Some(url), Some(manifest)) = (done.get("source").and_then(Value::as_str), done.get("manifest")) else {
        return Ok(None);
    };
    if manifest.is_null() {
        return Ok(None);
    }
    Ok(Some(Found { url: url.to_string(), manifest: Manifest::from_value(manifest.clone())? }))
}

/// One image's cache and `@final`. Without an operation (`-n`) it only
/// says what it would do.
fn update_image(
    cx: &Context,
    mut op: Option<&mut Operation>,
    pool: &dyn Pool,
    uuid: ImageUuid,
    found: Option<&Found>,
) -> Result<()> {
    let Some(found) = found else {
        cx.info(&format!("warning: Could not find image {uuid} in image sources (skipping)"));
        return Ok(());
    };
    update_cache(cx, op.as_deref_mut(), pool.name(), uuid, found)?;
    ensure_final(cx, op, pool, uuid, &found.manifest)
}

fn dry_run_prefix(op: &Option<&mut Operation>) -> &'static str {
    if op.is_some() {
        ""
    } else {
        "[dry-run] "
    }
}

/// cache: the source's manifest and URL, written when they change what is
/// cached (a resumed `cache` step is always finished).
fn update_cache(cx: &Context, op: Option<&mut Operation>, pool: &PoolName, uuid: ImageUuid, found: &Found) -> Result<()> {
    let cached = cache::read(&cx.state, pool, uuid).manifest;
    let message = if cached.name().is_none() {
        Some(format!("Added manifest info for image {uuid} from \"{}\"", found.url))
    } else {
        let changed = changed_fields(&cached, &found.manifest);
        (!changed.is_empty()).then(|| {
            format!(
                "Updated {} manifest field{} for image {uuid} from \"{}\": {}",
                changed.len(),
                if changed.len() == 1 { "" } else { "s" },
                found.url,
                changed.join(", ")
            )
        })
    };
    let started = op.as_ref().is_some_and(|op| op.step_state(CACHE, Some(&uuid.to_string())) != StepState::NotStarted);
    let current = cache::read_raw(&cx.state, pool, uuid)?;
    let wanted = cache::render(&found.manifest, pool, Some(&found.url));
    if !started && current.as_deref() == Some(wanted.as_slice()) {
        return Ok(());
    }
    let prefix = dry_run_prefix(&op);
    if let Some(op) = op {
        steps::write_cache(op, cx, pool, &found.manifest, Some(&found.url))?;
    }
    if let Some(message) = message {
        cx.info(&format!("{prefix}{message}"));
    }
    Ok(())
}

/// The fields whose values differ (or that only one side has), sorted;
/// `requirements` is compared field by field (`requirements.min_ram`).
fn changed_fields(cached: &Manifest, server: &Manifest) -> Vec<String> {
    fn diff(prefix: &str, a: &Map<String, Value>, b: &Map<String, Value>, out: &mut Vec<String>) {
        let none = Map::new();
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            match (a.get(key), b.get(key)) {
                // Descended into even when one side has none (all its fields are new).
                (x @ (None | Some(Value::Object(_))), y @ (None | Some(Value::Object(_))))
                    if prefix.is_empty() && key == "requirements" =>
                {
                    let fields = |v: Option<&Value>| v.and_then(Value::as_object).unwrap_or(&none).clone();
                    diff("requirements.", &fields(x), &fields(y), out)
                }
                (x, y) if x != y => out.push(format!("{prefix}{key}")),
                _ => {}
            }
        }
    }
    let mut changed = Vec::new();
    diff("", cached.as_map(), server.as_map(), &mut changed);
    changed
}

/// final: an image without `@final` gets its original snapshot (the one
/// whose guid is the source's `files[0].dataset_guid`) renamed to it.
fn ensure_final(cx: &Context, op: Option<&mut Operation>, pool: &dyn Pool, uuid: ImageUuid, server: &Manifest) -> Result<()> {
    let image = uuid.to_string();
    let dataset = DatasetName::image(pool.name(), uuid);
    let final_ = SnapName::final_();
    let state = op.as_ref().map_or(StepState::NotStarted, |op| op.step_state(FINAL, Some(&image)));
    if let StepState::Done { .. } = state {
        return Ok(());
    }
    let snapshots = pool.snapshots(&dataset)?;
    if let Some(current) = snapshots.iter().find(|s| s.name == final_) {
        // Already there, or renamed by this step before a crash took its "done".
        if let (Some(op), StepState::Begun { .. }) = (op, state) {
            op.done(FINAL, json!({"image": image, "guid": current.guid.to_string()}))?;
        }
        return Ok(());
    }
    if snapshots.is_empty() {
        return Err(Error::ImageMissingOriginalSnapshot { uuid: image, guid: None });
    }
    let Some(guid_text) = server.files0().and_then(|f| f.dataset_guid) else {
        cx.warn(&format!(
            "imgadm: warn: cannot determine original snapshot for image \"{uuid}\" (source info has no \"dataset_guid\")"
        ));
        return Ok(());
    };
    let original = guid_text
        .parse::<u64>()
        .ok()
        .and_then(|guid| snapshots.iter().find(|s| s.guid == guid))
        .ok_or_else(|| Error::ImageMissingOriginalSnapshot { uuid: image.clone(), guid: Some(guid_text.clone()) })?;
    let message = format!(
        "Renamed image {uuid} original snapshot from {} to {}",
        dataset.snapshot(&original.name),
        dataset.snapshot(&final_)
    );
    let prefix = dry_run_prefix(&op);
    if let Some(op) = op {
        if state == StepState::NotStarted {
            op.begun(
                FINAL,
                json!({
                    "image": image,
                    "pool": pool.name().as_str(),
                    "dataset": dataset.to_string(),
                    "from": original.name.as_str(),
                    "guid": original.guid.to_string(),
                }),
            )?;
        }
        pool.rename_snapshot(&dataset, &original.name, &final_)?;
        op.done(FINAL, json!({"image": image, "guid": original.guid.to_string()}))?;
    }
    cx.info(&format!("{prefix}{message}"));
    Ok(())
}

/// final's undo: `@final` (if it is the recorded snapshot) gets its old
/// name back.
pub fn undo_final(cx: &Context, begun: &Value) -> Result<()> {
    let field = |key: &str| {
        begun
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Journal(format!("journal update final data lacks \"{key}\": {begun}")))
    };
    let dataset = DatasetName::parse(field("dataset")?)?;
    let from = SnapName::parse(field("from")?)?;
    let guid: u64 = field("guid")?.parse().map_err(|_| Error::Journal(format!("journal update final data: {begun}")))?;
    let pool = cx.open_pool(&dataset.pool, false)?;
    let final_ = SnapName::final_();
    if pool.snapshots(&dataset)?.iter().any(|s| s.name == final_ && s.guid == guid) {
        pool.rename_snapshot(&dataset, &final_, &from)?;
    }
    Ok(())
}

/// Finishes an interrupted update: the images its `lock` step recorded,
/// each from where it stood.
pub fn resume(cx: &Context, op: Operation) -> Result<()> {
    let StepState::Done { done, .. } = op.step_state("lock", None) else {
        let id = op.id.clone();
        op.end(Outcome::Abandoned, None)?;
        cx.info(&format!("Update {id} had not started: marked abandoned, nothing was changed"));
        return Ok(());
    };
    let bad = || Error::Journal(format!("journal update lock data is malformed: {done}"));
    let pool_name = PoolName::parse(done.get("pool").and_then(Value::as_str).ok_or_else(bad)?)?;
    let images = done
        .get("images")
        .and_then(Value::as_array)
        .ok_or_else(bad)?
        .iter()
        .map(|u| ImageUuid::parse(u.as_str().unwrap_or_default()))
        .collect::<Result<Vec<_>>>()?;
    let pool = cx.open_pool(&pool_name, false)?;
    let wanted: Vec<(ImageUuid, LockMode)> = images.iter().map(|u| (*u, LockMode::Exclusive)).collect();
    let locks = lock::try_lock_images(&cx.state, &wanted)?;
    finish(op, cx, pool.as_ref(), &images, &source_clients(cx)?, locks)
}
