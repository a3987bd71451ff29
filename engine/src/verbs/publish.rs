//! `imgadm publish -m MANIFEST -f FILE IMGAPI-URL`: an image from local
//! files onto an Images API server, and `create -p`, which publishes what
//! create made.
//!
//! Steps: `import` (AdminImportImage: the image exists on the server,
//! unactivated, from here), `upload` (AddImageFile, streamed from disk; the
//! server's sha1 and size are checked against the manifest), `activate`.
//! Any failure after `import` deletes the half-published image (the undo of
//! `import`); if that fails too, a warning says so and the original error
//! is returned, as the real imgadm does. The server is the only thing a
//! publish changes, so it takes no image lock.
//!
//! Resume (re-running the command, or `journal resume`) probes the server:
//! an `import` begun is done if the image is there, an `activate` begun if
//! it is active; an `upload` begun is simply redone (before activation a
//! second upload replaces the file).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::context::Context;
use crate::error::{missing_path, Error, Result};
use crate::failpoint::{self, When};
use crate::ids::ImageUuid;
use crate::manifest::Manifest;
use crate::operation::{Operation, Outcome, StepState};
use crate::recovery;
use crate::source::imgapi::{FileUpload, ImgapiClient};
use crate::steps::{ACTIVATE, IMPORT, UPLOAD};
use crate::verbs::create::Created;

#[derive(Clone, Debug)]
pub struct PublishArgs {
    pub manifest: PathBuf,
    pub file: PathBuf,
    pub url: String,
}

/// What one publish does, recorded in its `import` step so that a resume
/// (in another process) publishes exactly this.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    url: String,
    manifest_path: PathBuf,
    file: PathBuf,
    manifest: Manifest,
}

impl Job {
    fn uuid(&self) -> Result<ImageUuid> {
        self.manifest.uuid()
    }
}

pub fn publish(cx: &Context, args: &PublishArgs) -> Result<()> {
    if !args.manifest.exists() {
        return Err(missing_path("manifest", &args.manifest));
    }
    if !args.file.exists() {
        return Err(missing_path("file", &args.file));
    }
    let manifest = match read_publishable(&args.manifest, &args.file) {
        Ok(manifest) => manifest,
        Err(e) => return Err(recovery::record_refusal(cx, "publish", &args.manifest, IMPORT, e)),
    };
    let uuid = manifest.uuid()?;
    let fresh = Job { url: args.url.clone(), manifest_path: args.manifest.clone(), file: args.file.clone(), manifest };
    let (op, job) = match recovery::interrupted_for(cx, "publish", uuid)? {
        Some(id) => {
            cx.info(&format!("Resuming interrupted publish {id} of image {uuid}"));
            let op = Operation::take_over(&cx.state, &cx.journal, &cx.invocation, &id, "resume")?;
            let job = recorded_job(&op, uuid)?.unwrap_or(fresh);
            (op, job)
        }
        None => (Operation::begin(&cx.state, &cx.journal, &cx.invocation, "publish", &[uuid.to_string()], Vec::new())?, fresh),
    };
    finish(op, cx, &job)
}

/// `create -p URL`: publishes the files create made, then removes them
/// whatever happened (they were only ever a temp copy of the image).
pub fn publish_created(cx: &Context, created: &Created, url: &str) -> Result<()> {
    let args = PublishArgs { manifest: created.manifest_path.clone(), file: created.file_path.clone(), url: url.to_string() };
    let published = publish(cx, &args);
    for path in [&created.file_path, &created.manifest_path] {
        if let Err(e) = crate::fsutil::remove_durable(path) {
            cx.warn(&format!("Error removing temporary created image file: {e}"));
        }
    }
    published
}

/// The temp prefix `create -p` writes its files under:
/// `TMP/.imgadm-create-<ms>-<pid>`, TMP being `/var/tmp` or, with
/// `IMGADM_STATE_DIR`, `STATE/tmp`.
pub fn create_temp_prefix(cx: &Context) -> Result<PathBuf> {
    let dir = cx.state.temp_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("cannot create the temp directory", &dir, e))?;
    let ms = chrono::Utc::now().timestamp_millis();
    Ok(dir.join(format!(".imgadm-create-{ms}-{}", std::process::id())))
}

/// The manifest as publish needs it: valid JSON, a uuid, and a `files[0]`
/// with the compression, sha1 and size of the file, whose size is checked
/// here (a wrong size would only fail half way through the upload).
fn read_publishable(manifest_path: &Path, file: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(manifest_path).map_err(|e| Error::io_path("cannot read manifest", manifest_path, e))?;
    let manifest = Manifest::from_json_bytes(&bytes)?.upgrade()?;
    manifest.uuid()?;
    let files0 = manifest.files0().unwrap_or_default();
    let missing: Vec<String> = [
        ("compression", files0.compression.is_none()),
        ("sha1", files0.sha1.is_none()),
        ("size", files0.size.is_none()),
    ]
    .iter()
    .filter(|(_, missing)| *missing)
    .map(|(field, _)| format!("files[0].{field} (MissingParameter)"))
    .collect();
    if !missing.is_empty() {
        return Err(Error::ManifestValidation(missing));
    }
    let metadata = std::fs::metadata(file).map_err(|e| Error::io_path("cannot read image file", file, e))?;
    if let Some(size) = files0.size.filter(|size| metadata.is_file() && metadata.len() != *size) {
        return Err(Error::UploadError(format!(
            "size expected to be {size}, but file \"{}\" is {} bytes",
            file.display(),
            metadata.len()
        )));
    }
    Ok(manifest)
}

/// A client for the server publish talks to (not one of the sources).
fn client(cx: &Context, url: &str) -> Result<ImgapiClient> {
    crate::source::client_for_url(&cx.config, url)
}

/// Runs the steps not yet done and ends the operation; a failure deletes
/// the half-published image (a failure of that is a warning).
fn finish(mut op: Operation, cx: &Context, job: &Job) -> Result<()> {
    let uuid = job.uuid()?;
    match run_steps(&mut op, cx, job) {
        Ok(()) => {
            op.end(Outcome::Succeeded, None)?;
            cx.info(&format!("Successfully published image {uuid} to {}", job.url));
            Ok(())
        }
        Err(e) => {
            let (error, cleanup) = op.fail_and_roll_back_apart(cx, e, &[]);
            for failure in cleanup {
                cx.warn(&format!("Warning: Could not delete partially published image {uuid}: {failure}"));
            }
            Err(error)
        }
    }
}

fn run_steps(op: &mut Operation, cx: &Context, job: &Job) -> Result<()> {
    let client = client(cx, &job.url)?;
    import_step(op, cx, &client, job)?;
    upload_step(op, cx, &client, job)?;
    activate_step(op, cx, &client, job)
}

/// import: AdminImportImage with the manifest.
fn import_step(op: &mut Operation, cx: &Context, client: &ImgapiClient, job: &Job) -> Result<()> {
    let uuid = job.uuid()?;
    let image = uuid.to_string();
    match op.step_state(IMPORT, Some(&image)) {
        StepState::Done { .. } => return Ok(()),
        StepState::Begun { .. } => {
            if let Some(there) = client.get_image(uuid)? {
                return op.done(IMPORT, json!({"image": image, "state": there.state()}));
            }
        }
        _ => op.begun(IMPORT, json!({"image": image, "job": job}))?,
    }
    let imported = match client.admin_import(&job.manifest) {
        Ok(imported) => imported,
        Err(e @ Error::Api { status: 409, .. }) => {
            // The server had this uuid before: not ours, never to be deleted.
            op.undone(IMPORT, json!({"image": image, "reason": "the server already has this image"}))?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    cx.info(&format!(
        "Imported image {uuid} ({}, {}, state={})",
        imported.name().unwrap_or("-"),
        imported.version().unwrap_or("-"),
        imported.state().unwrap_or("-")
    ));
    op.done(IMPORT, json!({"image": image, "state": imported.state()}))
}

/// upload: AddImageFile, streamed; the server's own sha1 and size of what
/// it received must be the manifest's.
fn upload_step(op: &mut Operation, cx: &Context, client: &ImgapiClient, job: &Job) -> Result<()> {
    let uuid = job.uuid()?;
    let image = uuid.to_string();
    let files0 = job.manifest.files0().unwrap_or_default();
    let upload = FileUpload {
        uuid,
        path: job.file.clone(),
        size: files0.size.unwrap_or(0),
        sha1: files0.sha1.unwrap_or_default(),
        compression: files0.compression.unwrap_or_default(),
        dataset_guid: files0.dataset_guid,
    };
    match op.step_state(UPLOAD, Some(&image)) {
        StepState::Done { .. } => return Ok(()),
        StepState::Begun { .. } => {}
        _ => op.begun(
            UPLOAD,
            json!({
                "image": image,
                "file": job.file,
                "size": upload.size,
                "sha1": upload.sha1,
                "compression": upload.compression,
                "dataset_guid": upload.dataset_guid,
            }),
        )?,
    }
    let progress = cx.reporter.progress(&format!("Uploading image {uuid}"), Some(upload.size));
    let size = upload.size;
    let half = (size / 2).max(1);
    let mut sent = 0u64;
    let answer = client.add_file(&upload, move |bytes| {
        if sent < half && sent + bytes >= half {
            failpoint::check(UPLOAD, When::During);
        }
        sent += bytes;
        progress.advance(bytes);
        if sent >= size {
            progress.finish();
        }
    })?;
    let served = answer.files0().unwrap_or_default();
    if served.sha1.as_deref() != Some(upload.sha1.as_str()) {
        return Err(Error::UploadError(format!(
            "sha1 expected to be {}, but was {}",
            upload.sha1,
            served.sha1.as_deref().unwrap_or("(none)")
        )));
    }
    if served.size != Some(upload.size) {
        return Err(Error::UploadError(format!(
            "size expected to be {}, but was {}",
            upload.size,
            served.size.map_or("(none)".to_string(), |s| s.to_string())
        )));
    }
    cx.info(&format!("Added file \"{}\" (compression \"{}\") to image {uuid}", job.file.display(), upload.compression));
    op.done(UPLOAD, json!({"image": image, "sha1": upload.sha1, "size": upload.size}))
}

/// activate: ActivateImage; from here the image is public on the server.
fn activate_step(op: &mut Operation, cx: &Context, client: &ImgapiClient, job: &Job) -> Result<()> {
    let uuid = job.uuid()?;
    let image = uuid.to_string();
    match op.step_state(ACTIVATE, Some(&image)) {
        StepState::Done { .. } => return Ok(()),
        StepState::Begun { .. } => {
            if client.get_image(uuid)?.is_some_and(|there| there.state() == Some("active")) {
                return op.done(ACTIVATE, json!({"image": image}));
            }
        }
        _ => op.begun(ACTIVATE, json!({"image": image}))?,
    }
    client.activate(uuid)?;
    cx.info(&format!("Activated image {uuid}"));
    op.done(ACTIVATE, json!({"image": image}))
}

/// import's undo: the image is deleted from the server if it is there. An
/// import whose "done" was never recorded may not have reached the server,
/// and the uuid might then be someone else's image: only an unactivated
/// one (as AdminImportImage leaves it) is deleted then.
pub fn undo_import(cx: &Context, begun: &Value, done: bool) -> Result<()> {
    let job: Job = serde_json::from_value(begun.get("job").cloned().unwrap_or(Value::Null))
        .map_err(|e| Error::Journal(format!("journal publish import data: {e}")))?;
    let uuid = job.uuid()?;
    let client = client(cx, &job.url)?;
    match client.get_image(uuid)? {
        Some(there) if done || there.state() == Some("unactivated") => client.delete_image(uuid),
        _ => Ok(()),
    }
}

/// The job an interrupted publish recorded in its `import` step.
fn recorded_job(op: &Operation, uuid: ImageUuid) -> Result<Option<Job>> {
    let data = match op.step_state(IMPORT, Some(&uuid.to_string())) {
        StepState::Begun { begun } | StepState::Done { begun, .. } => begun,
        _ => return Ok(None),
    };
    let Some(job) = data.get("job").cloned() else { return Ok(None) };
    serde_json::from_value(job).map(Some).map_err(|e| Error::Journal(format!("journal publish import data: {e}")))
}

/// Finishes an interrupted publish from what its journal recorded; one
/// that had not begun its import changed nothing and is marked abandoned.
pub fn resume(cx: &Context, op: Operation) -> Result<()> {
    let uuid = op.images().first().map(|u| ImageUuid::parse(u)).transpose()?;
    let job = match uuid {
        Some(uuid) => recorded_job(&op, uuid)?,
        None => None,
    };
    let Some(job) = job else {
        let id = op.id.clone();
        op.end(Outcome::Abandoned, None)?;
        cx.info(&format!("Publish {id} had not started its import: marked abandoned, nothing was changed"));
        return Ok(());
    };
    finish(op, cx, &job)
}
