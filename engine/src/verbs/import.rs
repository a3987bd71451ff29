//! `imgadm import [-P pool] [-C channel] [-S URL]... UUID`: an image and the
//! origins it needs, from Images API sources.
//!
//! Steps: `resolve` (the first source with the image active), `ancestry`
//! (its origins, until one already installed on the pool), `lock`
//! (exclusive on each image to import, shared on the installed ancestor,
//! then every member re-checked), then per image, base first, `fetch`,
//! `verify`, `recv` as one streaming pass (download -> hash -> decompress
//! -> receive), `final`, `rename`, `cache`; then `unlock`.
//!
//! A failed transfer (connection, 5xx, cut, stall, after the retries)
//! rolls back everything but the partial download, which the next run
//! continues with a Range request. Any other failure (a wrong sha1, a bad
//! stream) rolls back everything. An import interrupted by a crash is taken
//! over by the next `imgadm import UUID` or by `imgadm journal resume OP`.

use std::path::Path;

use serde_json::{json, Value};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::ids::{DatasetName, ImageUuid, PoolName};
use crate::lock::{self, ImageLock, LockMode};
use crate::manifest::Manifest;
use crate::operation::{Operation, Outcome, StepState};
use crate::pipeline::StreamSource;
use crate::pool::{DriverKind, KeepMode, Pool};
use crate::recovery;
use crate::report::{human_size, SharedProgress};
use crate::source::download::{is_transfer_error, DownloadPlan, FetchingReader};
use crate::source::imgapi::{ClientOptions, ImgapiClient};
use crate::source::{self, SourceSpec};
use crate::steps::{self, ReceivePlan, FETCH, RECV};
use crate::verbs::install::{lock_names, origin_final};

pub const RESOLVE: &str = "resolve";
pub const ANCESTRY: &str = "ancestry";
pub const LOCK: &str = "lock";
pub const UNLOCK: &str = "unlock";

#[derive(Clone, Debug)]
pub struct ImportArgs {
    pub pool: PoolName,
    pub uuid: ImageUuid,
    /// `-S URL`s: only these sources.
    pub sources: Vec<String>,
    /// `-C CHANNEL`: this channel on every source.
    pub channel: Option<String>,
}

/// What to import: the images missing on the pool, base first, the source
/// they come from, and the installed image the chain builds on.
struct ImportPlan {
    client: ImgapiClient,
    chain: Vec<Manifest>,
    installed_ancestor: Option<ImageUuid>,
}

impl ImportPlan {
    fn lock_wants(&self) -> Result<Vec<(ImageUuid, LockMode)>> {
        let mut wants = Vec::new();
        for manifest in &self.chain {
            wants.push((manifest.uuid()?, LockMode::Exclusive));
        }
        wants.extend(self.installed_ancestor.map(|a| (a, LockMode::Shared)));
        Ok(wants)
    }
}

fn installed(pool: &dyn Pool, uuid: ImageUuid) -> Result<bool> {
    pool.dataset_exists(&DatasetName::image(pool.name(), uuid))
}

pub fn import(cx: &Context, args: &ImportArgs) -> Result<()> {
    let uuid = args.uuid;
    let pool = cx.open_pool(&args.pool, cx.driver == DriverKind::Dir)?;
    // An interrupted import of this image is finished first (it may have
    // put the image in place and not yet written its cache).
    if let Some(id) = recovery::interrupted_for(cx, "import", uuid)? {
        cx.info(&format!("Resuming interrupted import {id} of image {uuid}"));
        let op = Operation::take_over(&cx.state, &cx.journal, &cx.invocation, &id, "resume")?;
        if continue_interrupted(cx, op, true)? {
            return Ok(());
        }
    }
    if installed(pool.as_ref(), uuid)? {
        let cached = crate::cache::read(&cx.state, pool.name(), uuid).manifest;
        let known = match (cached.name(), cached.version()) {
            (Some(name), Some(version)) => format!(" ({name} {version})"),
            _ => String::new(),
        };
        cx.info(&format!("Image {uuid}{known} is already installed, skipping"));
        return Ok(());
    }
    let specs = source::effective(&cx.config, &args.sources, args.channel.as_deref())?;
    let clients = source::imgapi_clients(&cx.config, &specs)?;
    let mut op = Operation::begin(&cx.state, &cx.journal, &cx.invocation, "import", &[uuid.to_string()], Vec::new())?;
    let planned = resolve(&mut op, cx, pool.as_ref(), uuid, &clients)
        .and_then(|resolved| plan_and_lock(&mut op, cx, pool.as_ref(), uuid, resolved, true));
    match planned {
        Ok(Some((plan, locks))) => run(op, cx, pool.as_ref(), &plan, locks),
        Ok(None) => op.end(Outcome::Succeeded, None),
        Err(e) => Err(op.fail_and_roll_back(cx, e)),
    }
}

/// resolve: the first source with the image active, and its manifest.
fn resolve(
    op: &mut Operation,
    cx: &Context,
    pool: &dyn Pool,
    uuid: ImageUuid,
    clients: &[ImgapiClient],
) -> Result<(ImgapiClient, Manifest)> {
    let image = uuid.to_string();
    let (client, top) = source::find_image(clients, uuid, true)?.ok_or_else(|| Error::ActiveImageNotFound(image.clone()))?;
    let channel = client.spec.channel.as_ref().map(|c| format!(", channel \"{c}\"")).unwrap_or_default();
    cx.info(&format!("Importing {} from \"{}\"{channel}", top.title(), client.url()));
    op.checked(
        RESOLVE,
        json!({"image": image, "pool": pool.name().as_str(), "source": client.spec.to_value(), "manifest": top.to_value()}),
    )?;
    Ok((client.clone(), top))
}

/// The source and manifest a `resolve` step recorded, for a resume.
fn recorded_resolve(cx: &Context, resolved: &Value) -> Result<(ImgapiClient, Manifest)> {
    let spec = SourceSpec::from_value(resolved.get("source").unwrap_or(&Value::Null))?;
    let options = ClientOptions { user_agent_extra: cx.config.user_agent_extra().map(str::to_string) };
    let manifest = Manifest::from_value(resolved.get("manifest").cloned().unwrap_or(Value::Null))?;
    Ok((ImgapiClient::new(&spec, &options)?, manifest))
}

/// ancestry and lock, each taken from the journal when this operation did
/// it before it was interrupted. `None` when the image was imported by
/// another process while this one waited for its lock. `wait` says whether
/// to wait for the image locks (a run) or refuse at once (`journal resume`).
fn plan_and_lock(
    op: &mut Operation,
    cx: &Context,
    pool: &dyn Pool,
    uuid: ImageUuid,
    (client, top): (ImgapiClient, Manifest),
    wait: bool,
) -> Result<Option<(ImportPlan, Vec<ImageLock>)>> {
    let image = uuid.to_string();
    check_platform(&top)?;
    let mut plan = match op.step_state(ANCESTRY, Some(&image)) {
        StepState::Done { begun, .. } => recorded_ancestry(client, &begun)?,
        _ => {
            let plan = gather_ancestry(cx, pool, uuid, client, top)?;
            op.checked(ANCESTRY, ancestry_data(&image, &plan))?;
            plan
        }
    };

    let locks = if wait {
        lock::lock_images(&cx.state, &plan.lock_wants()?, cx.reporter.as_ref())?
    } else {
        lock::try_lock_images(&cx.state, &plan.lock_wants()?)?
    };
    let locked_before = matches!(op.step_state(LOCK, Some(&image)), StepState::Done { .. });
    let top_title = plan.chain.last().map(Manifest::title).unwrap_or_default();
    if !locked_before && installed(pool, uuid)? {
        op.checked(LOCK, json!({"image": image, "locks": lock_names(&locks), "installed_meanwhile": true}))?;
        cx.info(&format!("Image {top_title} was imported while waiting on lock"));
        return Ok(None);
    }
    // Unlike the real imgadm, the origins are re-checked too: another
    // process may have imported one while we waited. A member this
    // operation started on is finished by it.
    let mut still_missing = Vec::new();
    for manifest in std::mem::take(&mut plan.chain) {
        let member = manifest.uuid()?;
        let ours = op.step_state(FETCH, Some(&member.to_string())) != StepState::NotStarted;
        if ours || !installed(pool, member)? {
            still_missing.push(manifest);
        } else {
            cx.info(&format!("Image {} was imported while waiting on lock", manifest.title()));
        }
    }
    plan.chain = still_missing;
    if !locked_before {
        op.checked(LOCK, json!({"image": image, "locks": lock_names(&locks), "chain": uuids(&plan.chain)}))?;
    }
    Ok(Some((plan, locks)))
}

/// The origins of `top` up to the first one installed on the pool, base
/// first.
fn gather_ancestry(cx: &Context, pool: &dyn Pool, uuid: ImageUuid, client: ImgapiClient, top: Manifest) -> Result<ImportPlan> {
    cx.info(&format!("Gather image {uuid} ancestry"));
    let mut next = top.origin()?;
    let mut plan = ImportPlan { client, chain: vec![top], installed_ancestor: None };
    while let Some(origin) = next {
        if installed(pool, origin)? {
            cx.info(&format!("Image {origin} already installed"));
            plan.installed_ancestor = Some(origin);
            break;
        }
        if plan.chain.iter().any(|m| m.uuid().ok() == Some(origin)) {
            return Err(Error::InvalidManifest(format!("image {origin} is its own ancestor")));
        }
        let manifest = plan.client.get_image(origin)?.ok_or_else(|| {
            Error::ImageNotFound(format!("{origin}\" (origin of image {uuid}) on \"{}", plan.client.url()))
        })?;
        check_platform(&manifest)?;
        next = manifest.origin()?;
        plan.chain.push(manifest);
    }
    plan.chain.reverse();
    Ok(plan)
}

/// The plan an `ancestry` step recorded, for a resume: no source is asked
/// again.
fn recorded_ancestry(client: ImgapiClient, ancestry: &Value) -> Result<ImportPlan> {
    let mut chain = Vec::new();
    for manifest in ancestry.get("manifests").and_then(Value::as_array).into_iter().flatten() {
        chain.push(Manifest::from_value(manifest.clone())?);
    }
    let installed_ancestor = match ancestry.get("installed_ancestor").and_then(Value::as_str) {
        Some(text) => Some(ImageUuid::parse(text)?),
        None => None,
    };
    Ok(ImportPlan { client, chain, installed_ancestor })
}

fn uuids(chain: &[Manifest]) -> Vec<String> {
    chain.iter().filter_map(|m| m.uuid().ok()).map(|u| u.to_string()).collect()
}

/// What a resume needs to know without asking the sources again.
fn ancestry_data(image: &str, plan: &ImportPlan) -> Value {
    json!({
        "image": image,
        "chain": uuids(&plan.chain),
        "manifests": plan.chain.iter().map(Manifest::to_value).collect::<Vec<_>>(),
        "installed_ancestor": plan.installed_ancestor.map(|a| a.to_string()),
    })
}

/// Imports the chain, then unlocks and ends the operation. On a failed
/// transfer the partial download stays for the next run; on any other
/// failure everything is undone.
fn run(mut op: Operation, cx: &Context, pool: &dyn Pool, plan: &ImportPlan, locks: Vec<ImageLock>) -> Result<()> {
    let top = op.images().first().cloned().unwrap_or_default();
    match import_chain(&mut op, cx, pool, plan) {
        Ok(()) => {
            op.checked(UNLOCK, json!({"image": top}))?;
            op.end(Outcome::Succeeded, None)?;
            drop(locks);
            Ok(())
        }
        Err(e) if is_transfer_error(&e) => Err(op.fail_and_roll_back_keeping(cx, e, &[FETCH])),
        Err(e) => Err(op.fail_and_roll_back(cx, e)),
    }
}

fn import_chain(op: &mut Operation, cx: &Context, pool: &dyn Pool, plan: &ImportPlan) -> Result<()> {
    // Known only when every image's size is; a server's sizes can be
    // anything, so the sum saturates instead of overflowing.
    let total_bytes =
        plan.chain.iter().try_fold(0u64, |sum, m| m.files0().and_then(|f| f.size).map(|size| sum.saturating_add(size)));
    let count = plan.chain.len();
    let total = total_bytes.map(|bytes| format!(" ({})", human_size(bytes))).unwrap_or_default();
    let plural = if count == 1 { "" } else { "s" };
    cx.info(&format!("Must download and install {count} image{plural}{total}"));
    // One bar for the whole chain, sized by that total, as the real imgadm
    // draws it.
    let bar = SharedProgress::new(cx.reporter.progress(&format!("Download {count} image{plural}"), total_bytes));
    let imported = plan.chain.iter().try_for_each(|manifest| import_one(op, cx, pool, &plan.client, manifest, &bar));
    bar.finish();
    imported
}

fn import_one(
    op: &mut Operation,
    cx: &Context,
    pool: &dyn Pool,
    client: &ImgapiClient,
    manifest: &Manifest,
    bar: &SharedProgress,
) -> Result<()> {
    let uuid = manifest.uuid()?;
    let image = uuid.to_string();
    let files0 = manifest
        .files0()
        .ok_or_else(|| Error::ManifestValidation(vec!["files (MissingParameter)".to_string()]))?;
    let origin = match manifest.origin()? {
        Some(origin) => Some(origin_final(pool, uuid, origin)?),
        None => None,
    };
    let plan = ReceivePlan {
        pool,
        uuid,
        manifest,
        origin: origin.as_ref().map(|(d, _)| d.clone()),
        origin_guid: origin.as_ref().map(|(_, g)| *g),
        keep: KeepMode::Move,
        progress: Some(bar),
    };
    let complete = cx.state.download_path(uuid);
    let partial = cx.state.download_partial_path(uuid);
    if !matches!(op.step_state(RECV, Some(&image)), StepState::Done { .. }) {
        let resumed = std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0);
        let source = fetch(op, cx, client, manifest, uuid)?;
        match steps::verify_and_receive(op, cx, &plan, source, &complete) {
            // The bytes kept from an earlier attempt do not make the file
            // the manifest describes with the rest (the file changed on the
            // server: its size, ETag or sha1; or the kept bytes are bad):
            // start again from byte 0, once, in this same run.
            Err(e) if resumed && !is_transfer_error(&e) => {
                cx.warn(&format!("Image {uuid}: the partial download is of a file that changed ({e}); downloading it again from the start"));
                fsutil::remove_durable(&partial)?;
                let source = fetch(op, cx, client, manifest, uuid)?;
                steps::verify_and_receive(op, cx, &plan, source, &complete)?;
            }
            other => other?,
        }
    }
    if !matches!(op.step_state(FETCH, Some(&image)), StepState::Done { .. }) {
        // The verified file is in the dir pool now, or no longer needed.
        fsutil::remove_durable(&partial)?;
        fsutil::remove_durable(&complete)?;
        op.done(FETCH, json!({"image": image, "bytes": files0.size, "sha1": files0.sha1, "source": client.url()}))?;
    }
    cx.info(&format!("Downloaded image {uuid} ({})", human_size(files0.size.unwrap_or(0))));
    steps::final_snapshot(op, &plan)?;
    steps::rename_into_place(op, cx, &plan)?;
    steps::write_cache(op, cx, pool.name(), manifest, Some(client.url()))?;
    cx.info(&format!("Imported image {}", manifest.title()));
    Ok(())
}

/// fetch: begun (durable) before the first byte; the bytes come from a
/// valid pre-downloaded `UUID.file`, or from the source (continuing a
/// partial download).
fn fetch(op: &mut Operation, cx: &Context, client: &ImgapiClient, manifest: &Manifest, uuid: ImageUuid) -> Result<StreamSource> {
    let files0 = manifest.files0().unwrap_or_default();
    let complete = cx.state.download_path(uuid);
    let partial = cx.state.download_partial_path(uuid);
    let pre_downloaded = usable_pre_download(&complete, uuid, files0.size, files0.sha1.as_deref())?;
    let resume_from = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    op.begun(
        FETCH,
        json!({
            "image": uuid.to_string(),
            "source": client.url(),
            "file": partial.display().to_string(),
            "size": files0.size,
            "sha1": files0.sha1,
            "pre_downloaded": pre_downloaded,
            "resume_from": resume_from,
        }),
    )?;
    if pre_downloaded {
        return Ok(StreamSource::File(complete));
    }
    let reader = FetchingReader::open(DownloadPlan {
        client: client.clone(),
        uuid,
        partial,
        complete,
        expected_size: files0.size,
        expected_sha1: files0.sha1,
        journal: cx.journal.clone(),
        op: op.id.clone(),
    })?;
    Ok(StreamSource::Reader(Box::new(reader)))
}

/// A `UUID.file` already in the download directory is used when its size
/// and sha1 match the manifest, and removed otherwise (the log lines are
/// the real imgadm's).
fn usable_pre_download(path: &Path, uuid: ImageUuid, size: Option<u64>, sha1: Option<&str>) -> Result<bool> {
    let Ok(metadata) = std::fs::metadata(path) else { return Ok(false) };
    if let Some(size) = size.filter(|s| *s != metadata.len()) {
        tracing::info!(image = %uuid, expected = size, actual = metadata.len(), path = %path.display(),
            "unexpected size for pre-downloaded image {uuid} file, deleting it");
        fsutil::remove_durable(path)?;
        return Ok(false);
    }
    let Some(expected) = sha1 else {
        fsutil::remove_durable(path)?;
        return Ok(false);
    };
    let actual = sha1_of_file(path)?;
    if actual == expected {
        tracing::info!(image = %uuid, path = %path.display(), "using pre-downloaded image file (checksum match)");
        return Ok(true);
    }
    tracing::info!(image = %uuid, expected, actual, path = %path.display(),
        "unexpected checksum for pre-downloaded image {uuid} file, deleting it");
    fsutil::remove_durable(path)?;
    Ok(false)
}

fn sha1_of_file(path: &Path) -> Result<String> {
    use sha1::{Digest, Sha1};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io_path("cannot open", path, e))?;
    let mut hasher = Sha1::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io_path("cannot read", path, e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// `min_platform`/`max_platform` against `/usr/bin/sysinfo`, where it
/// exists (SmartOS); compared as strings, as the real imgadm does.
fn check_platform(manifest: &Manifest) -> Result<()> {
    const SYSINFO: &str = "/usr/bin/sysinfo";
    if !Path::new(SYSINFO).exists() {
        return Ok(());
    }
    let output = std::process::Command::new(SYSINFO)
        .output()
        .map_err(|e| Error::internal(format!("cannot run {SYSINFO}: {e}")))?;
    let sysinfo: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let version = sysinfo.get("SDC Version").and_then(Value::as_str).unwrap_or("6.5").to_string();
    let timestamp = sysinfo.get("Live Image").and_then(Value::as_str).unwrap_or("").to_string();
    let requirements = manifest.requirements();
    for (which, too_new) in [("min_platform", false), ("max_platform", true)] {
        let Some(map) = requirements.and_then(|r| r.get(which)).and_then(Value::as_object) else { continue };
        let fails = match map.get(&version).and_then(Value::as_str) {
            Some(bound) => if too_new { timestamp.as_str() > bound } else { timestamp.as_str() < bound },
            None if too_new => map.keys().max().is_some_and(|highest| version.as_str() > highest.as_str()),
            None => map.keys().min().is_some_and(|lowest| version.as_str() < lowest.as_str()),
        };
        if fails {
            return Err(Error::Platform { which, version, timestamp, requirement: Value::Object(map.clone()).to_string() });
        }
    }
    Ok(())
}

/// Continues an interrupted import from its last step done. Before its
/// `resolve` step it had changed nothing: it is marked abandoned and
/// `false` returned (a re-run then starts afresh). `wait` says whether to
/// wait for the image locks (a re-run) or refuse at once (`journal resume`):
/// a refused resume leaves the operation interrupted.
fn continue_interrupted(cx: &Context, mut op: Operation, wait: bool) -> Result<bool> {
    let top = recovery::op_image(&op).unwrap_or_default();
    let StepState::Done { begun: resolved, .. } = op.step_state(RESOLVE, Some(&top)) else {
        let id = op.id.clone();
        op.end(Outcome::Abandoned, None)?;
        cx.info(&format!("Operation {id} had not resolved its image: marked abandoned"));
        return Ok(false);
    };
    let pool_name = resolved.get("pool").and_then(Value::as_str).unwrap_or_default();
    let pool = cx.open_pool(&PoolName::parse(pool_name)?, false)?;
    let uuid = ImageUuid::parse(&top)?;
    let recorded = recorded_resolve(cx, &resolved)?;
    match plan_and_lock(&mut op, cx, pool.as_ref(), uuid, recorded, wait)? {
        Some((plan, locks)) => run(op, cx, pool.as_ref(), &plan, locks)?,
        None => op.end(Outcome::Succeeded, None)?,
    }
    Ok(true)
}

/// `imgadm journal resume OP` of an import.
pub fn resume(cx: &Context, op: Operation) -> Result<()> {
    continue_interrupted(cx, op, false).map(|_| ())
}
