//! `imgadm journal replay --onto POOL [--dry-run]`: rebuilds, on another
//! pool, the image set the journal's projection says is installed on the
//! command's driver. Each image is sourced from what the operation that
//! installed it recorded: an import's `resolve` step (the Images API and
//! channel) or an install's `validate` step (the manifest and the file,
//! used only while the file's sha1 still matches the manifest). Origins go
//! first; images already on the target pool are skipped. The work is done
//! by ordinary install and import operations, journaled as such.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use imgadm_engine::context::Context;
use imgadm_engine::ids::{DatasetName, ImageUuid, PoolName};
use imgadm_engine::manifest::Manifest;
use imgadm_engine::pool::DriverKind;
use imgadm_engine::source::SourceSpec;
use imgadm_engine::verbs::import::{self, ImportArgs};
use imgadm_engine::verbs::install::{self, InstallArgs};
use imgadm_engine::{Error, Result};
use imgadm_journal::OperationSummary;
use serde_json::Value;
use sha1::{Digest, Sha1};

/// How one image gets onto the target pool.
#[derive(Clone, Debug)]
pub enum Sourcing {
    /// Already there: nothing to do.
    AlreadyThere,
    /// `imgadm import` from the Images API the original import used.
    Import(SourceSpec),
    /// `imgadm install` of the recorded file (its sha1 was checked).
    Install(PathBuf),
    /// No recorded way to get it back, and why.
    Unsourceable(String),
}

/// One image of the plan, in the order it is replayed.
#[derive(Clone, Debug)]
pub struct PlannedImage {
    pub uuid: ImageUuid,
    pub manifest: Manifest,
    pub sourcing: Sourcing,
}

impl fmt::Display for PlannedImage {
    /// The `--dry-run` line: the image and how it would be sourced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = self.manifest.title();
        match &self.sourcing {
            Sourcing::AlreadyThere => write!(f, "skip {title}: already on the pool"),
            Sourcing::Import(spec) => {
                let channel = spec.channel.as_ref().map(|c| format!(" (channel \"{c}\")")).unwrap_or_default();
                write!(f, "import {title} from {}{channel}", spec.url)
            }
            Sourcing::Install(file) => write!(f, "install {title} from {}", file.display()),
            Sourcing::Unsourceable(why) => write!(f, "cannot source {title}: {why}"),
        }
    }
}

/// The plan: every image the projection says is installed on the driver
/// (on any pool), once, origins first.
pub fn plan(cx: &Context, onto: &PoolName) -> Result<Vec<PlannedImage>> {
    let driver = cx.driver.to_string();
    let ops: BTreeMap<String, OperationSummary> =
        cx.journal.operations()?.into_iter().map(|op| (op.id.to_string(), op)).collect();
    // A dir pool that does not exist yet holds nothing (and planning
    // creates nothing: the first install or import creates it).
    let target = match cx.open_pool(onto, false) {
        Ok(pool) => Some(pool),
        Err(Error::PoolNotFound { .. }) if cx.driver == DriverKind::Dir => None,
        Err(e) => return Err(e),
    };
    let mut planned: BTreeMap<ImageUuid, PlannedImage> = BTreeMap::new();
    for installed in cx.journal.installed()?.into_iter().filter(|i| i.driver == driver) {
        let uuid = ImageUuid::parse(&installed.image)?;
        if planned.contains_key(&uuid) {
            continue;
        }
        let Some(op) = ops.get(&installed.op.to_string()) else {
            return Err(Error::Journal(format!("image {uuid} was installed by operation {}, which the journal lacks", installed.op)));
        };
        let (manifest, mut sourcing) = recorded_sourcing(op, uuid)?;
        let on_target = match &target {
            Some(pool) => pool.dataset_exists(&DatasetName::image(onto, uuid))?,
            None => false,
        };
        if on_target {
            sourcing = Sourcing::AlreadyThere;
        }
        planned.insert(uuid, PlannedImage { uuid, manifest, sourcing });
    }
    origins_first(planned)
}

/// The manifest of `uuid` and how to get it again, from what `op` (the
/// operation that installed it) recorded.
fn recorded_sourcing(op: &OperationSummary, uuid: ImageUuid) -> Result<(Manifest, Sourcing)> {
    let step_data = |name: &str| op.steps.iter().find(|s| s.step == name).map(|s| &s.data);
    let lacks = |what: &str| Error::Journal(format!("operation {} ({}) lacks its {what}", op.id, op.verb));
    match op.verb.as_str() {
        "import" => {
            let resolved = step_data("resolve").ok_or_else(|| lacks("resolve step"))?;
            let spec = SourceSpec::from_value(resolved.get("source").unwrap_or(&Value::Null))?;
            // The image imported, or one of the origins it brought along.
            let manifests = step_data("ancestry").and_then(|a| a.get("manifests")).and_then(Value::as_array);
            let recorded = manifests
                .into_iter()
                .flatten()
                .chain(resolved.get("manifest"))
                .find(|m| m.get("uuid").and_then(Value::as_str) == Some(uuid.to_string().as_str()))
                .ok_or_else(|| lacks(&format!("manifest of image {uuid}")))?;
            Ok((Manifest::from_value(recorded.clone())?, Sourcing::Import(spec)))
        }
        "install" => {
            let validated = step_data("validate").ok_or_else(|| lacks("validate step"))?;
            let manifest = Manifest::from_value(validated.get("manifest").cloned().unwrap_or(Value::Null))?;
            let file = PathBuf::from(validated.get("file").and_then(Value::as_str).ok_or_else(|| lacks("file"))?);
            let sourcing = match file_unchanged(&file, &manifest) {
                Ok(()) => Sourcing::Install(file),
                Err(why) => Sourcing::Unsourceable(why),
            };
            Ok((manifest, sourcing))
        }
        verb => {
            let manifest = Manifest::from_value(serde_json::json!({"uuid": uuid.to_string()}))?;
            let why = format!("installed by a \"{verb}\" operation ({}), which records no source", op.id);
            Ok((manifest, Sourcing::Unsourceable(why)))
        }
    }
}

/// Whether `file` is still the one the manifest describes; why not if not.
fn file_unchanged(file: &Path, manifest: &Manifest) -> std::result::Result<(), String> {
    let expected = manifest.files0().and_then(|f| f.sha1).ok_or("its manifest records no sha1")?;
    let mut reader = std::fs::File::open(file).map_err(|e| format!("{} cannot be read: {e}", file.display()))?;
    let mut hasher = Sha1::new();
    std::io::copy(&mut reader, &mut hasher).map_err(|e| format!("{} cannot be read: {e}", file.display()))?;
    let actual = hex::encode(hasher.finalize());
    if actual == expected {
        Ok(())
    } else {
        Err(format!("{} changed since it was installed (sha1 {actual}, the manifest says {expected})", file.display()))
    }
}

/// Orders the plan so that every image comes after its origin (an origin
/// not in the plan is the target pool's business: the verb reports it).
fn origins_first(mut unordered: BTreeMap<ImageUuid, PlannedImage>) -> Result<Vec<PlannedImage>> {
    let mut ordered = Vec::with_capacity(unordered.len());
    while let Some(&start) = unordered.keys().next() {
        // Walk up to the first ancestor not yet placed, then place the
        // chain from there down.
        let mut chain = vec![start];
        let mut cursor = start;
        while let Some(origin) = unordered.get(&cursor).map(|p| p.manifest.origin()).transpose()?.flatten() {
            if !unordered.contains_key(&origin) || chain.contains(&origin) {
                break;
            }
            chain.push(origin);
            cursor = origin;
        }
        for uuid in chain.into_iter().rev() {
            ordered.extend(unordered.remove(&uuid));
        }
    }
    Ok(ordered)
}

/// What a replay did: the images it could not source or whose operation
/// failed, with why.
#[derive(Debug, Default)]
pub struct Replayed {
    pub not_replayed: Vec<(PlannedImage, String)>,
}

/// Runs the plan: one ordinary install or import operation per image to
/// bring over; a failure is recorded and the rest goes on.
pub fn run(cx: &Context, onto: &PoolName, plan: Vec<PlannedImage>) -> Result<Replayed> {
    let mut replayed = Replayed::default();
    for image in plan {
        let outcome = match &image.sourcing {
            Sourcing::AlreadyThere => Ok(()),
            Sourcing::Unsourceable(why) => Err(why.clone()),
            Sourcing::Import(spec) => {
                let args = ImportArgs {
                    pool: onto.clone(),
                    uuid: image.uuid,
                    sources: vec![spec.url.clone()],
                    channel: spec.channel.clone(),
                };
                import::import(cx, &args).map_err(|e| e.to_string())
            }
            Sourcing::Install(file) => install_recorded(cx, onto, &image.manifest, file).map_err(|e| e.to_string()),
        };
        if let Err(why) = outcome {
            replayed.not_replayed.push((image, why));
        }
    }
    Ok(replayed)
}

/// `imgadm install` with the manifest as the journal recorded it (the
/// manifest file given then may have changed or gone since).
fn install_recorded(cx: &Context, onto: &PoolName, manifest: &Manifest, file: &Path) -> Result<()> {
    let mut manifest_file = tempfile::Builder::new()
        .prefix("replay-")
        .suffix(".imgmanifest")
        .tempfile()
        .map_err(|e| Error::io("cannot create a temp manifest file", e))?;
    manifest_file
        .write_all(&serde_json::to_vec(&manifest.to_value()).map_err(|e| Error::internal(e.to_string()))?)
        .map_err(|e| Error::io("cannot write a temp manifest file", e))?;
    install::install(cx, &InstallArgs { pool: onto.clone(), manifest: manifest_file.path().to_path_buf(), file: file.to_path_buf() })
}
