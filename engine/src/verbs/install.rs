//! `imgadm install -m MANIFEST -f FILE`: an image from local files.
//!
//! Steps: validate, lock, verify, recv, final, rename, cache, unlock. The
//! file is read once (hashed, decompressed and received in one pass); the
//! manifest cache is written only once the image is in place; any failure
//! undoes what this operation did and nothing else.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::context::Context;
use crate::error::{missing_path, Error, Result};
use crate::ids::{DatasetName, ImageUuid, PoolName, SnapName};
use crate::lock::{self, LockMode};
use crate::manifest::Manifest;
use crate::operation::{Operation, Outcome};
use crate::pipeline::StreamSource;
use crate::pool::{DriverKind, KeepMode, Pool};
use crate::recovery;
use crate::steps::{self, ReceivePlan};

#[derive(Clone, Debug)]
pub struct InstallArgs {
    pub pool: PoolName,
    pub manifest: PathBuf,
    pub file: PathBuf,
}

/// A manifest that passed every check, with what the receive needs.
pub struct Validated {
    pub manifest: Manifest,
    pub uuid: ImageUuid,
    pub origin: Option<(DatasetName, u64)>,
}

impl Validated {
    /// The image itself exclusively; its origin shared, so the origin
    /// cannot be deleted while the child is received from it.
    pub fn lock_wants(&self) -> Vec<(ImageUuid, LockMode)> {
        let mut wanted = vec![(self.uuid, LockMode::Exclusive)];
        if let Some((origin, _)) = &self.origin {
            wanted.push((origin.uuid, LockMode::Shared));
        }
        wanted
    }
}

/// Reads, upgrades and validates the manifest; checks the file's size and
/// that the origin is installed with its `@final`. Nothing is received yet.
pub fn validate(pool: &dyn Pool, manifest_path: &Path, file: &Path) -> Result<Validated> {
    let manifest = read_manifest(manifest_path)?;
    let uuid = manifest.uuid()?;
    manifest.validate_minimal()?;
    let files0 = manifest
        .files0()
        .ok_or_else(|| Error::ManifestValidation(vec!["files (MissingParameter)".to_string()]))?;
    let metadata = std::fs::metadata(file).map_err(|e| Error::io_path("cannot read image file", file, e))?;
    // Only a regular file has a size to check up front; a FIFO's bytes are
    // counted as they flow, and the pipeline checks the size then.
    if let Some(size) = files0.size.filter(|_| metadata.is_file()) {
        if metadata.len() != size {
            return Err(Error::DownloadError(format!(
                "image file size error: manifest says {size} bytes, {} is {} bytes",
                file.display(),
                metadata.len()
            )));
        }
    }
    let origin = match manifest.origin()? {
        None => None,
        Some(origin) => Some(origin_final(pool, uuid, origin)?),
    };
    Ok(Validated { manifest, uuid, origin })
}

/// The origin's dataset and the guid of its `@final`, or why it cannot be
/// a clone source.
pub fn origin_final(pool: &dyn Pool, uuid: ImageUuid, origin: ImageUuid) -> Result<(DatasetName, u64)> {
    let dataset = DatasetName::image(pool.name(), origin);
    let not_installed =
        || Error::OriginNotInstalled { uuid: uuid.to_string(), origin: origin.to_string(), pool: pool.name().to_string() };
    if !pool.dataset_exists(&dataset)? {
        return Err(not_installed());
    }
    pool.snapshots(&dataset)?
        .into_iter()
        .find(|s| s.name == SnapName::final_())
        .map(|s| (dataset, s.guid))
        .ok_or_else(not_installed)
}

pub fn read_manifest(path: &Path) -> Result<Manifest> {
    if !path.exists() {
        return Err(missing_path("manifest", path));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io_path("cannot read manifest", path, e))?;
    let mut manifest = Manifest::from_json_bytes(&bytes)?.upgrade()?;
    manifest.ensure_published_at(chrono::Utc::now());
    Ok(manifest)
}

pub fn install(cx: &Context, args: &InstallArgs) -> Result<()> {
    if !args.file.exists() {
        return Err(missing_path("file", &args.file));
    }
    let pool = cx.open_pool(&args.pool, cx.driver == DriverKind::Dir)?;
    let validated = match validate(pool.as_ref(), &args.manifest, &args.file) {
        Ok(v) => v,
        Err(e) => return Err(recovery::record_refusal(cx, "install", &args.manifest, "validate", e)),
    };
    let uuid = validated.uuid;
    let title = validated.manifest.title();
    let image = DatasetName::image(pool.name(), uuid);
    // An install interrupted after its rename has the image in place but
    // not its cache entry or its end: re-running the command finishes it
    // rather than skipping an "already installed" image.
    if pool.dataset_exists(&image)? && recovery::interrupted_for(cx, "install", uuid)?.is_none() {
        cx.info(&format!("Image {title} is already installed, skipping"));
        return Ok(());
    }
    let locks = lock::lock_images(&cx.state, &validated.lock_wants(), cx.reporter.as_ref())?;
    let interrupted = recovery::interrupted_for(cx, "install", uuid)?;
    if pool.dataset_exists(&image)? && interrupted.is_none() {
        cx.info(&format!("Image {title} was installed while waiting on lock"));
        return Ok(());
    }
    // The origin may have gone while we waited for its lock.
    let validated = validate(pool.as_ref(), &args.manifest, &args.file)?;

    let op = match interrupted {
        Some(id) => {
            cx.info(&format!("Resuming interrupted install {id} of image {uuid}"));
            Operation::take_over(&cx.state, &cx.journal, &cx.invocation, &id, "resume")?
        }
        None => {
            let checked = vec![
                ("validate", validate_data(&validated, &args.manifest, &args.file, pool.as_ref())),
                ("lock", json!({"image": uuid.to_string(), "locks": lock_names(&locks)})),
            ];
            Operation::begin(&cx.state, &cx.journal, &cx.invocation, "install", &[uuid.to_string()], checked)?
        }
    };
    cx.info(&format!("Installing image {title}"));
    finish(op, cx, pool.as_ref(), &validated, &args.file, locks)
}

/// Runs the steps not yet done, then unlocks and ends the operation; on a
/// failure undoes everything the operation did.
fn finish(
    mut op: Operation,
    cx: &Context,
    pool: &dyn Pool,
    validated: &Validated,
    file: &Path,
    locks: Vec<lock::ImageLock>,
) -> Result<()> {
    match run_steps(&mut op, cx, pool, validated, file) {
        Ok(()) => {
            op.checked("unlock", json!({"image": validated.uuid.to_string()}))?;
            op.end(Outcome::Succeeded, None)?;
            drop(locks);
            cx.info(&format!("Installed image {}", validated.manifest.title()));
            Ok(())
        }
        Err(e) => Err(op.fail_and_roll_back(cx, e)),
    }
}

fn run_steps(op: &mut Operation, cx: &Context, pool: &dyn Pool, v: &Validated, file: &Path) -> Result<()> {
    let plan = ReceivePlan {
        pool,
        uuid: v.uuid,
        manifest: &v.manifest,
        origin: v.origin.as_ref().map(|(d, _)| d.clone()),
        origin_guid: v.origin.as_ref().map(|(_, g)| *g),
        keep: KeepMode::Copy,
        progress: None,
    };
    steps::verify_and_receive(op, cx, &plan, StreamSource::File(file.to_path_buf()), file)?;
    steps::final_snapshot(op, &plan)?;
    steps::rename_into_place(op, cx, &plan)?;
    steps::write_cache(op, cx, pool.name(), &v.manifest, None)
}

/// What `journal resume` needs to finish an install: the manifest as
/// validated, the file, the pool.
fn validate_data(v: &Validated, manifest_path: &Path, file: &Path, pool: &dyn Pool) -> Value {
    json!({
        "image": v.uuid.to_string(),
        "pool": pool.name().as_str(),
        "driver": pool.driver().as_str(),
        "manifest_path": manifest_path.display().to_string(),
        "file": file.display().to_string(),
        "manifest": v.manifest.to_value(),
        "origin": v.origin.as_ref().map(|(d, g)| json!({"dataset": d.to_string(), "guid": g.to_string()})),
    })
}

pub fn lock_names(locks: &[lock::ImageLock]) -> Vec<String> {
    locks
        .iter()
        .map(|l| format!("{}:{}", l.uuid, if l.mode == LockMode::Shared { "shared" } else { "exclusive" }))
        .collect()
}

/// Finishes an interrupted install from what its journal recorded.
pub fn resume(cx: &Context, op: Operation, validate_data: &Value) -> Result<()> {
    let field = |k: &str| validate_data.get(k).and_then(Value::as_str).map(str::to_string);
    let pool_name = PoolName::parse(&field("pool").unwrap_or_default())?;
    let file = PathBuf::from(field("file").unwrap_or_default());
    let manifest = Manifest::from_value(validate_data.get("manifest").cloned().unwrap_or(Value::Null))?;
    let pool = cx.open_pool(&pool_name, false)?;
    let uuid = manifest.uuid()?;
    let origin = match manifest.origin()? {
        Some(o) => Some(origin_final(pool.as_ref(), uuid, o)?),
        None => None,
    };
    let validated = Validated { manifest, uuid, origin };
    let locks = lock::try_lock_images(&cx.state, &validated.lock_wants())?;
    finish(op, cx, pool.as_ref(), &validated, &file, locks)
}
