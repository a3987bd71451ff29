//! `imgadm create [options] VM-UUID [field=value ...]`: an image from a
//! stopped VM's dataset.
//!
//! Steps: lock, check, (prepare), snapshot, send, compress, manifest,
//! cleanup, unlock. With vmadm (SmartOS) the VM, its brand, state, datasets
//! and image come from `vmadm get`, and `-s` runs the prepare-image flow:
//! the VM's datasets are snapshotted, the script is set as the VM's
//! operator-script, the VM is booted, and its `prepare-image:state`
//! metadata is polled until the script reports and shuts the VM down;
//! afterwards the VM is rolled back to how it was. Without vmadm (any host
//! but SmartOS) the VM is the dataset `POOL/VM-UUID` on whichever imported
//! zpool has it, it is stopped by definition, and its image is the one its
//! ZFS `origin` names; `-s` needs vmadm to boot the VM, so it is refused
//! before anything is touched, and so is the dir driver, which has no
//! datasets.
//!
//! Unlike the real imgadm, a crashed create needs no recovery script: every
//! step is journaled with what its undo needs, so a rollback gives the VM
//! its snapshots back (a `@final` moved aside included) and leaves no
//! output file, and a resume finishes the image.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

use crate::cache;
use crate::compression::{self, Compression};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::failpoint::{self, When};
use crate::fsutil;
use crate::ids::{DatasetName, ImageUuid, SnapName};
use crate::lock::{self, ImageLock, LockMode};
use crate::manifest::{Manifest, INHERITABLE_FIELDS, MANIFEST_V};
use crate::operation::{Operation, Outcome, StepState};
use crate::pool::zfs::ZfsPool;
use crate::pool::zfs_vm::CloneOrigin;
use crate::pool::{DriverKind, Pool};
use crate::recovery;
use crate::steps::{CLEANUP, COMPRESS, MANIFEST, PREPARE, SEND, SNAPSHOT};
use crate::vmadm::{VmInfo, Vmadm, PREPARE_ERROR, PREPARE_STATE};

/// How much of the send stream is read per chunk.
const SEND_BUFFER_BYTES: usize = 1 << 20;

/// Origin chains longer than this are refused as broken (a loop).
const ORIGIN_WALK_LIMIT: u32 = 10_000;

/// The snapshot a prepare-image run starts from and is rolled back to.
const PRE_PREPARE: &str = "imgadm-create-pre-prepare";

/// How the prepare-image run is watched (the real imgadm's intervals and
/// limits): the script must report that it started, then that it ended,
/// then the VM must stop, each within `PREPARE_STAGE_LIMIT`.
const PREPARE_START_POLL: Duration = Duration::from_secs(2);
const PREPARE_POLL: Duration = Duration::from_secs(1);
const PREPARE_STAGE_LIMIT: Duration = Duration::from_secs(300);

/// What the user asked for. Serialised into the journal's `lock` step, so a
/// resumed create (in another process, another directory) makes exactly the
/// image the first run was making.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateArgs {
    pub vm: ImageUuid,
    /// Manifest fields given by `-m` and `field=value` args (args win).
    pub fields: Map<String, Value>,
    pub output_template: Option<PathBuf>,
    pub compression: Compression,
    pub incremental: bool,
    pub max_origin_depth: Option<u32>,
    pub prepare_script: Option<PathBuf>,
}

/// The image the create made: its manifest (with `files`) and where its
/// two files are.
#[derive(Clone, Debug)]
pub struct Created {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    pub file_path: PathBuf,
}

/// `-c`: one of the four compressions, as the real imgadm words the error.
pub fn parse_compression(text: &str) -> Result<Compression> {
    Compression::parse(text).map_err(|_| {
        Error::Usage(format!(
            "invalid -c,--compression \"{text}\": must be one of \"none\", \"bzip2\", \"gzip\", \"xz\""
        ))
    })
}

/// `--max-origin-depth N`: at least 2 (a chain of one image has no depth
/// to limit).
pub fn check_max_origin_depth(depth: u32) -> Result<u32> {
    if depth < 2 {
        return Err(Error::Usage(format!("invalid max-origin-depth \"{depth}\": must be greater than 1")));
    }
    Ok(depth)
}

/// Where `-m` JSON came from, for its parse error.
#[derive(Clone, Copy, Debug)]
pub enum ManifestInput<'a> {
    File(&'a Path),
    Stdin,
}

/// The manifest fields the user gave: the `-m` JSON object, then each
/// `field=value` arg over it. A value is JSON when it parses as JSON
/// (`disabled=true` is a boolean), else the string itself.
pub fn user_fields(manifest: Option<(ManifestInput, &[u8])>, args: &[String]) -> Result<Map<String, Value>> {
    let mut fields = match manifest {
        None => Map::new(),
        Some((input, bytes)) => {
            let where_ = match input {
                ManifestInput::File(path) => format!("in \"{}\"", path.display()),
                ManifestInput::Stdin => "on stdin".to_string(),
            };
            match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(Error::Usage(format!("invalid manifest JSON {where_}: not a JSON object"))),
                Err(e) => return Err(Error::Usage(format!("invalid manifest JSON {where_}: {e}"))),
            }
        }
    };
    for arg in args {
        let Some((field, value)) = arg.split_once('=') else {
            return Err(Error::Usage(format!("invalid manifest field arg \"{arg}\": must match \"<field>=<value>\"")));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        fields.insert(field.to_string(), value);
    }
    Ok(fields)
}

/// The journaled request: the args, the image uuid chosen once, and the
/// directory relative output paths are taken from.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Request {
    args: CreateArgs,
    image: ImageUuid,
    cwd: PathBuf,
}

/// What `check` decided; recorded in its journal data so that a resumed
/// create does not decide again.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Plan {
    image: ImageUuid,
    vm_dataset: String,
    /// `POOL/IMAGE@SNAP` for `zfs send -i` (incremental creates only).
    send_from: Option<String>,
    compression: Compression,
    manifest: Map<String, Value>,
    manifest_path: PathBuf,
    file_path: PathBuf,
    /// `-s`: the prepare-image run.
    #[serde(default)]
    prepare: Option<PreparePlan>,
    /// bhyve: the zone dataset whose quota is lifted while the VM is
    /// snapshotted (a zvol's snapshot would not fit under it).
    #[serde(default)]
    quota_dataset: Option<String>,
}

/// What a prepare-image run needs: the script's text (read once, so a
/// resumed create runs the same script) and the VM's datasets.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PreparePlan {
    vm: ImageUuid,
    script: String,
    datasets: Vec<String>,
}

impl Plan {
    fn vm(&self) -> Result<DatasetName> {
        DatasetName::parse_vm(&self.vm_dataset)
    }

    fn send_from(&self) -> Result<Option<CloneOrigin>> {
        let Some(text) = &self.send_from else { return Ok(None) };
        let (dataset, snap) = text
            .split_once('@')
            .ok_or_else(|| Error::Journal(format!("journal create plan has a bad send origin \"{text}\"")))?;
        Ok(Some(CloneOrigin { dataset: DatasetName::parse(dataset)?, snapshot: SnapName::parse(snap)? }))
    }
}

pub fn create(cx: &Context, args: &CreateArgs) -> Result<Created> {
    let vm_text = args.vm.to_string();
    let refuse = |step: &str, e: Error| recovery::record_refusal(cx, "create", Path::new(&vm_text), step, e);
    if cx.driver == DriverKind::Dir {
        return Err(refuse(
            "check",
            Error::NotSupported(
                "create needs the VM's ZFS dataset to snapshot and send, and the dir driver has none: use the zfs driver"
                    .to_string(),
            ),
        ));
    }
    if args.prepare_script.is_some() && Vmadm::find().is_none() {
        return Err(refuse(
            "prepare",
            Error::NotSupported(
                "-s (prepare-image) needs vmadm to boot the VM and run the script, and this host has no vmadm: \
                 prepare and stop the VM yourself, then create without -s"
                    .to_string(),
            ),
        ));
    }
    let image = match args.fields.get("uuid") {
        Some(Value::String(text)) => ImageUuid::parse(text)?,
        Some(other) => return Err(Error::InvalidUuid(other.to_string())),
        None => ImageUuid::new_v4(),
    };
    if let Some(id) = recovery::interrupted_for(cx, "create", args.vm)? {
        cx.info(&format!("Resuming interrupted create {id} from VM {}", args.vm));
        let op = Operation::take_over(&cx.state, &cx.journal, &cx.invocation, &id, "resume")?;
        if let Some(created) = resume(cx, op)? {
            return Ok(created);
        }
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io("cannot read the current directory", e))?;
    let request = Request { args: args.clone(), image, cwd };
    let found = match find_vm(args.vm) {
        Ok(found) => found,
        Err(e) => return Err(refuse("check", e)),
    };
    let locks = lock::lock_images(&cx.state, &found.lock_wants(), cx.reporter.as_ref())?;
    let lock = json!({"image": image.to_string(), "vm": args.vm.to_string(), "locks": crate::verbs::install::lock_names(&locks), "request": request});
    let op = Operation::begin(&cx.state, &cx.journal, &cx.invocation, "create", &[vm_text, image.to_string()], vec![("lock", lock)])?;
    finish(op, cx, &request, locks)
}

/// The VM as create found it.
struct FoundVm {
    uuid: ImageUuid,
    /// The pool of the dataset the image is made of.
    pool: ZfsPool,
    /// That dataset.
    data: DatasetName,
    /// Its image's dataset `POOL/IMAGE`, when that image is installed.
    origin: Option<DatasetName>,
    /// What vmadm says of the VM (SmartOS only).
    info: Option<VmInfo>,
}

impl FoundVm {
    /// The VM exclusively (nothing else may snapshot or change it
    /// meanwhile), its origin image shared (it cannot be deleted while sent
    /// from).
    fn lock_wants(&self) -> Vec<(ImageUuid, LockMode)> {
        let mut wanted = vec![(self.uuid, LockMode::Exclusive)];
        if let Some(origin) = &self.origin {
            wanted.push((origin.uuid, LockMode::Shared));
        }
        wanted
    }
}

/// The VM through vmadm where there is one; else `POOL/VM` on the one
/// imported zpool that has it.
fn find_vm(vm: ImageUuid) -> Result<FoundVm> {
    if let Some(vmadm) = Vmadm::find() {
        let info = vmadm.get(vm)?;
        let pool = ZfsPool::open(&info.data.pool)?;
        let origin = match &info.image {
            Some((image_pool, image)) => installed_image(image_pool, *image)?,
            None => None,
        };
        return Ok(FoundVm { uuid: vm, pool, data: info.data.clone(), origin, info: Some(info) });
    }
    let mut found = ZfsPool::find_vm(vm)?;
    match found.len() {
        0 => Err(Error::VmNotFound(vm.to_string())),
        1 => {
            let data = found.remove(0);
            let pool = ZfsPool::open(&data.pool)?;
            let origin = pool.image_origin(&data)?.map(|o| o.dataset);
            Ok(FoundVm { uuid: vm, pool, data, origin, info: None })
        }
        _ => Err(Error::VmOnSeveralPools {
            vm: vm.to_string(),
            datasets: found.iter().map(DatasetName::to_string).collect(),
        }),
    }
}

/// `POOL/IMAGE` when that image is installed (a VM's image may have been
/// deleted since, or live on a pool that is not imported).
fn installed_image(pool: &crate::ids::PoolName, image: ImageUuid) -> Result<Option<DatasetName>> {
    let Ok(zpool) = ZfsPool::open(pool) else { return Ok(None) };
    let dataset = DatasetName::image(pool, image);
    Ok(zpool.dataset_exists(&dataset)?.then_some(dataset))
}

/// Runs the steps not yet done, then unlocks and ends the operation; a
/// failure undoes everything the operation did.
fn finish(mut op: Operation, cx: &Context, request: &Request, locks: Vec<ImageLock>) -> Result<Created> {
    match run_steps(&mut op, cx, request) {
        Ok(created) => {
            op.checked("unlock", json!({"image": request.image.to_string()}))?;
            op.end(Outcome::Succeeded, None)?;
            drop(locks);
            cx.info(&format!("Created image {}", created.manifest.title()));
            Ok(created)
        }
        Err(e) => Err(op.fail_and_roll_back(cx, e)),
    }
}

fn run_steps(op: &mut Operation, cx: &Context, request: &Request) -> Result<Created> {
    let plan = check_step(op, cx, request)?;
    let pool = ZfsPool::open(&plan.vm()?.pool)?;
    prepare_step(op, cx, &pool, &plan)?;
    let guid = snapshot_step(op, cx, &pool, &plan)?;
    let sent = send_and_compress(op, cx, &pool, &plan, guid)?;
    let created = manifest_step(op, cx, &plan, &sent, guid)?;
    cleanup_step(op, cx, &plan, guid)?;
    Ok(created)
}

/// check: the VM and its origin (under their locks), the origin depth, and
/// the manifest built and validated. No effect of its own.
fn check_step(op: &mut Operation, cx: &Context, request: &Request) -> Result<Plan> {
    let image = request.image.to_string();
    if let StepState::Done { done, .. } = op.step_state("check", Some(&image)) {
        let plan = done.get("plan").cloned().unwrap_or(Value::Null);
        return serde_json::from_value(plan).map_err(|e| Error::Journal(format!("journal create plan: {e}")));
    }
    let plan = plan(cx, request)?;
    op.checked("check", json!({"image": image, "plan": plan}))?;
    Ok(plan)
}

fn plan(cx: &Context, request: &Request) -> Result<Plan> {
    let args = &request.args;
    let found = find_vm(args.vm)?;
    if let (Some(info), None) = (&found.info, &args.prepare_script) {
        if !info.is_stopped() {
            return Err(Error::VmNotStopped(args.vm.to_string()));
        }
    }
    let origin = found.origin.clone();
    if args.incremental {
        if let (Some(origin), Some(max)) = (&origin, args.max_origin_depth) {
            check_origin_depth(origin, max)?;
        }
    }

    let mut fields = Map::new();
    fields.insert("v".to_string(), json!(MANIFEST_V));
    fields.insert("uuid".to_string(), json!(request.image.to_string()));
    for (field, value) in &args.fields {
        fields.insert(field.clone(), value.clone());
    }
    if let Some(origin) = &origin {
        inherit(cx, origin, &mut fields);
    }
    // Without vmadm there is no brand and no sysinfo: nothing to derive.
    if let Some(info) = &found.info {
        derive_requirements(info, &mut fields)?;
    }
    let send_from = match (&origin, args.incremental) {
        (_, false) => None,
        (None, true) => return Err(Error::VmHasNoOrigin(args.vm.to_string())),
        (Some(origin), true) => {
            fields.insert("origin".to_string(), json!(origin.uuid.to_string()));
            Some(origin)
        }
    };
    let manifest = Manifest::from_map(fields);
    manifest.validate_minimal()?;
    if let Some(origin) = send_from {
        let has_final = ZfsPool::open(&origin.pool)?.snapshots(origin)?.iter().any(|s| s.name == SnapName::final_());
        if !has_final {
            return Err(Error::OriginHasNoFinalSnapshot(origin.uuid.to_string()));
        }
    }
    let prepare = match (&args.prepare_script, &found.info) {
        (Some(script), Some(info)) => Some(prepare_plan(&found.pool, info, &request.cwd.join(script))?),
        (Some(_), None) => return Err(Error::NotSupported("-s (prepare-image) needs vmadm".to_string())),
        _ => None,
    };
    let quota_dataset = found.info.as_ref().filter(|i| i.brand == "bhyve").map(|i| i.zone.to_string());
    let pool = &found.pool;
    let vm = &found.data;
    let pretty = serde_json::to_string_pretty(&manifest.to_value()).unwrap_or_default();
    cx.info(&format!("Manifest:\n{}", indent(&pretty)));

    let prefix = output_prefix(args.output_template.as_deref(), &request.cwd, &manifest);
    let kind = if manifest.type_() == Some("zvol") || pool.is_volume(vm)? { "zvol" } else { "zfs" };
    let file_path = append(&prefix, &format!(".{kind}{}", args.compression.extension()));
    Ok(Plan {
        image: request.image,
        vm_dataset: vm.to_string(),
        send_from: send_from.map(|o| o.snapshot(&SnapName::final_())),
        compression: args.compression,
        manifest: manifest.into_map(),
        manifest_path: append(&prefix, ".imgmanifest"),
        file_path,
        prepare,
        quota_dataset,
    })
}

/// The `requirements` the real imgadm derives from the VM: a joyent zone's
/// image needs at least this platform, an lx, kvm or bhyve image its brand,
/// a bhyve image its bootrom. What the user (or the origin) gave wins; an
/// empty `brand` given says "no brand requirement".
fn derive_requirements(info: &VmInfo, fields: &mut Map<String, Value>) -> Result<()> {
    let given = fields.get("requirements").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut requirements = given.clone();
    match info.brand.as_str() {
        "joyent" | "joyent-minimal" if !given.contains_key("min_platform") => {
            let (version, live_image) = crate::vmadm::platform()?;
            requirements.insert("min_platform".to_string(), json!({ version: live_image }));
        }
        "lx" | "kvm" | "bhyve" => match given.get("brand") {
            None => {
                requirements.insert("brand".to_string(), json!(info.brand));
            }
            Some(Value::Null) => {
                requirements.remove("brand");
            }
            Some(Value::String(brand)) if brand.is_empty() => {
                requirements.remove("brand");
            }
            Some(_) => {}
        },
        _ => {}
    }
    if let (Some(bootrom), "bhyve", false) = (&info.bootrom, info.brand.as_str(), given.contains_key("bootrom")) {
        requirements.insert("bootrom".to_string(), json!(bootrom));
    }
    if requirements != given || fields.contains_key("requirements") {
        fields.insert("requirements".to_string(), Value::Object(requirements));
    }
    Ok(())
}

/// `-s`: the script read now (it runs in the VM later, perhaps in a
/// resumed create), and the VM's datasets, none of which may carry a
/// pre-prepare snapshot already (an earlier run that was not rolled back:
/// rolling back to it would lose what happened since).
fn prepare_plan(pool: &ZfsPool, info: &VmInfo, script: &Path) -> Result<PreparePlan> {
    let text = std::fs::read(script).map_err(|e| Error::io_path("cannot read the prepare-image script", script, e))?;
    let text = String::from_utf8(text)
        .map_err(|_| Error::Usage(format!("prepare-image script \"{}\" is not UTF-8 text", script.display())))?;
    let pre_prepare = SnapName::parse(PRE_PREPARE)?;
    for dataset in &info.datasets {
        if pool.snapshots(dataset)?.iter().any(|s| s.name == pre_prepare) {
            return Err(Error::PrepareImage {
                vm: info.uuid.to_string(),
                detail: format!(
                    "{} exists, left by an earlier create: roll the VM back to it or destroy it, then try again",
                    dataset.snapshot(&pre_prepare)
                ),
            });
        }
    }
    Ok(PreparePlan { vm: info.uuid, script: text, datasets: info.datasets.iter().map(DatasetName::to_string).collect() })
}

/// Walks the origin chain from the VM's image (depth 1); the image made
/// from it would be one deeper, which must not exceed `max`. Only
/// incremental creates are checked: a full image has no origin chain (the
/// real imgadm checks every create, which refuses full images for no gain).
fn check_origin_depth(vm_image: &DatasetName, max: u32) -> Result<()> {
    let pool = ZfsPool::open(&vm_image.pool)?;
    let mut depth = 1;
    let mut current = vm_image.clone();
    while let Some(origin) = pool.image_origin(&current)? {
        depth += 1;
        if depth >= max {
            return Err(Error::MaxOriginDepth(max));
        }
        if depth > ORIGIN_WALK_LIMIT {
            return Err(Error::internal(format!("the origin chain of {vm_image} does not end")));
        }
        current = origin.dataset;
    }
    Ok(())
}

/// Copies the inheritable fields the user did not give from the origin's
/// cached manifest (empty arrays are not worth inheriting).
fn inherit(cx: &Context, origin_dataset: &DatasetName, fields: &mut Map<String, Value>) {
    let origin = origin_dataset.uuid;
    let cached = cache::read(&cx.state, &origin_dataset.pool, origin).manifest;
    cx.info(&format!(
        "Inheriting from origin image {origin} ({} {})",
        cached.name().unwrap_or("-"),
        cached.version().unwrap_or("-")
    ));
    for field in INHERITABLE_FIELDS {
        if fields.contains_key(*field) {
            continue;
        }
        match cached.get(field) {
            None => {}
            Some(Value::Array(items)) if items.is_empty() => {}
            Some(value) => {
                fields.insert(field.to_string(), value.clone());
            }
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
}

fn append(prefix: &Path, suffix: &str) -> PathBuf {
    let mut text = prefix.as_os_str().to_os_string();
    text.push(suffix);
    PathBuf::from(text)
}

/// The output files' common prefix, as the real imgadm names them: no `-o`
/// is `NAME-VERSION` (slugs) in the current directory, an existing
/// directory gets that name inside it, anything else is the prefix itself.
fn output_prefix(template: Option<&Path>, cwd: &Path, manifest: &Manifest) -> PathBuf {
    let stem = format!("{}-{}", slug(manifest.name().unwrap_or("")), slug(manifest.version().unwrap_or("")));
    match template {
        None => cwd.join(stem),
        Some(template) => {
            let template = cwd.join(template);
            if template.is_dir() {
                template.join(stem)
            } else {
                template
            }
        }
    }
}

/// The real imgadm's slug: drop everything but word characters,
/// whitespace, `.`, `_` and `-`; trim; lower case; runs of whitespace and
/// hyphens become one `-`.
pub fn slug(text: &str) -> String {
    let kept: String = text
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || matches!(c, '_' | '.' | '-'))
        .collect();
    let mut out = String::new();
    let mut in_run = false;
    for c in kept.trim().to_lowercase().chars() {
        if c.is_whitespace() || c == '-' {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// prepare (`-s` only): the VM stopped if it runs, its quota lifted
/// (bhyve), every dataset of it snapshotted `@imgadm-create-pre-prepare`,
/// the script set as its operator-script, the VM booted and watched until
/// the script has reported success and shut it down. A prepare cut short
/// is rolled back and run again from the start.
fn prepare_step(op: &mut Operation, cx: &Context, pool: &ZfsPool, plan: &Plan) -> Result<()> {
    let Some(prepare) = &plan.prepare else { return Ok(()) };
    let image = plan.image.to_string();
    let vmadm = vmadm_for_prepare()?;
    match op.step_state(PREPARE, Some(&image)) {
        StepState::Done { .. } => return Ok(()),
        StepState::Begun { .. } if prepared(&vmadm, pool, prepare)? => {
            return op.done(PREPARE, json!({"image": image, "found": "prepared"}));
        }
        StepState::Begun { begun } => undo_prepare(cx, &begun)?,
        _ => {}
    }
    let vm = prepare.vm;
    let was_running = !vmadm.get(vm)?.is_stopped();
    let quota = quota_record(pool, plan)?;
    op.begun(
        PREPARE,
        json!({"image": image, "vm": vm.to_string(), "was_running": was_running, "datasets": prepare.datasets, "quota": quota}),
    )?;
    if was_running {
        cx.info(&format!("Stopping VM {vm} to snapshot it"));
        vmadm.stop(vm, false)?;
    }
    lift_quota(pool, &quota)?;
    cx.info(&format!("Snapshotting VM \"{vm}\" to @{PRE_PREPARE}"));
    let pre_prepare = SnapName::parse(PRE_PREPARE)?;
    for dataset in &prepare.datasets {
        pool.snapshot(&DatasetName::parse_vm(dataset)?, &pre_prepare)?;
    }
    vmadm.update(vm, &json!({"set_internal_metadata": {"operator-script": prepare.script}}))?;
    vmadm.update(vm, &json!({"remove_customer_metadata": [PREPARE_STATE, PREPARE_ERROR]}))?;
    cx.info(&format!("Preparing VM {vm} (starting it)"));
    vmadm.start(vm)?;
    failpoint::check(PREPARE, When::During);
    watch_prepare(cx, &vmadm, vm)?;
    op.done(PREPARE, json!({"image": image}))
}

/// prepare's probe: the script reported success and stopped the VM, and
/// every pre-prepare snapshot is there, so the run was whole (the journal
/// just did not hear of it) and the script need not run again.
fn prepared(vmadm: &Vmadm, pool: &ZfsPool, prepare: &PreparePlan) -> Result<bool> {
    let info = vmadm.get(prepare.vm)?;
    if info.metadata_text(PREPARE_STATE) != Some("success") || !info.is_stopped() {
        return Ok(false);
    }
    let pre_prepare = SnapName::parse(PRE_PREPARE)?;
    for dataset in &prepare.datasets {
        if !pool.snapshots(&DatasetName::parse_vm(dataset)?)?.iter().any(|s| s.name == pre_prepare) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn vmadm_for_prepare() -> Result<Vmadm> {
    Vmadm::find().ok_or_else(|| Error::NotSupported("-s (prepare-image) needs vmadm, and it is no longer on PATH".to_string()))
}

/// Waits for the three signs of a prepare-image run (the script started,
/// it ended well, it stopped the VM), as the real imgadm does.
fn watch_prepare(cx: &Context, vmadm: &Vmadm, vm: ImageUuid) -> Result<()> {
    let failed = |detail: &str| Error::PrepareImage { vm: vm.to_string(), detail: detail.to_string() };
    let started = poll(vmadm, vm, PREPARE_START_POLL, |info| info.metadata_text(PREPARE_STATE).is_some())?;
    if started.is_none() {
        cx.info("Timeout waiting for prepare-image script to signal it started");
        return Err(Error::PrepareImageDidNotRun(vm.to_string()));
    }
    cx.info("Prepare script is running");
    let ended = poll(vmadm, vm, PREPARE_POLL, |info| matches!(info.metadata_text(PREPARE_STATE), Some("success" | "error")))?
        .ok_or_else(|| failed("prepare-image script did not complete"))?;
    if ended.metadata_text(PREPARE_STATE) == Some("error") {
        let detail = ended.metadata_text(PREPARE_ERROR).unwrap_or("(the script set no prepare-image:error)");
        return Err(failed(&detail.replace('\n', "\n    ")));
    }
    cx.info("Prepare script succeeded");
    poll(vmadm, vm, PREPARE_POLL, VmInfo::is_stopped)?.ok_or_else(|| failed("VM did not shutdown"))?;
    cx.info(&format!("Prepare script stopped VM {vm}"));
    Ok(())
}

/// `vmadm get` every `interval` until `done` holds (that VM) or
/// `PREPARE_STAGE_LIMIT` has passed (`None`).
fn poll(vmadm: &Vmadm, vm: ImageUuid, interval: Duration, done: impl Fn(&VmInfo) -> bool) -> Result<Option<VmInfo>> {
    let deadline = Instant::now() + PREPARE_STAGE_LIMIT;
    loop {
        let info = vmadm.get(vm)?;
        if done(&info) {
            return Ok(Some(info));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(interval);
    }
}

/// bhyve: the zone dataset's quota as it is now, to lift it and put it
/// back afterwards; `null` for other brands.
fn quota_record(pool: &ZfsPool, plan: &Plan) -> Result<Value> {
    match &plan.quota_dataset {
        None => Ok(Value::Null),
        Some(dataset) => Ok(json!({"dataset": dataset, "bytes": pool.quota(&DatasetName::parse_vm(dataset)?)?})),
    }
}

fn lift_quota(pool: &ZfsPool, record: &Value) -> Result<()> {
    match record.get("dataset").and_then(Value::as_str) {
        Some(dataset) => pool.set_quota(&DatasetName::parse_vm(dataset)?, "0"),
        None => Ok(()),
    }
}

/// Puts back the quota a step's begun event recorded as it was.
fn restore_quota(begun: &Value) -> Result<()> {
    let record = begun.get("quota").unwrap_or(&Value::Null);
    let (Some(dataset), Some(bytes)) =
        (record.get("dataset").and_then(Value::as_str), record.get("bytes").and_then(Value::as_str))
    else {
        return Ok(());
    };
    let dataset = DatasetName::parse_vm(dataset)?;
    ZfsPool::open(&dataset.pool)?.set_quota(&dataset, bytes)
}

/// prepare's undo (and, after a create, its cleanup): the VM is stopped,
/// each dataset rolled back to its pre-prepare snapshot (which takes the
/// operator-script and the prepare-image metadata with it: vmadm keeps them
/// in the zone's dataset), the snapshots destroyed, the quota put back, and
/// a VM that was running started again. Doing it twice changes nothing.
pub fn undo_prepare(cx: &Context, begun: &Value) -> Result<()> {
    let vm = ImageUuid::parse(begun.get("vm").and_then(Value::as_str).unwrap_or_default())?;
    let datasets = begun
        .get("datasets")
        .and_then(Value::as_array)
        .map(|d| d.iter().filter_map(Value::as_str).map(DatasetName::parse_vm).collect::<Result<Vec<_>>>())
        .transpose()?
        .unwrap_or_default();
    let vmadm = vmadm_for_prepare()?;
    let pre_prepare = SnapName::parse(PRE_PREPARE)?;
    let mut rolled_back = false;
    for dataset in &datasets {
        let pool = ZfsPool::open(&dataset.pool)?;
        if !pool.dataset_exists(dataset)? || !pool.snapshots(dataset)?.iter().any(|s| s.name == pre_prepare) {
            continue;
        }
        if !rolled_back {
            cx.info(&format!("Rollback VM {vm} to pre-prepare snapshot (cleanup)"));
            if !vmadm.get(vm)?.is_stopped() {
                vmadm.stop(vm, true)?;
            }
            rolled_back = true;
        }
        pool.rollback(dataset, &pre_prepare)?;
        pool.destroy_snapshot(dataset, &pre_prepare)?;
    }
    restore_quota(begun)?;
    let was_running = begun.get("was_running").and_then(Value::as_bool).unwrap_or(false);
    if was_running && vmadm.get(vm)?.is_stopped() {
        cx.info(&format!("Restarting VM {vm} (cleanup)"));
        vmadm.start(vm)?;
    }
    Ok(())
}

/// snapshot: an existing `@final` of the VM is moved aside to
/// `@final-<ms>`, then `@final` is taken. The begun event records the
/// guids of the snapshots there before, so what this step made is told
/// from what it found. Returns the new `@final`'s guid.
fn snapshot_step(op: &mut Operation, cx: &Context, pool: &ZfsPool, plan: &Plan) -> Result<u64> {
    let image = plan.image.to_string();
    match op.step_state(SNAPSHOT, Some(&image)) {
        StepState::Done { done, .. } => return guid_of(&done),
        StepState::Begun { begun } => restore_vm(&begun, None)?,
        _ => {}
    }
    let vm = plan.vm()?;
    let final_ = SnapName::final_();
    let before = pool.snapshots(&vm)?;
    let aside = match before.iter().find(|s| s.name == final_) {
        None => None,
        Some(existing) => {
            let name = SnapName::parse(&format!("final-{}", chrono::Utc::now().timestamp_millis()))?;
            Some(json!({"name": name.as_str(), "guid": existing.guid.to_string()}))
        }
    };
    let before_guids: Vec<String> = before.iter().map(|s| s.guid.to_string()).collect();
    // With -s the quota was lifted by prepare already.
    let quota = if plan.prepare.is_some() { Value::Null } else { quota_record(pool, plan)? };
    op.begun(
        SNAPSHOT,
        json!({"image": image, "dataset": vm.to_string(), "before": before_guids, "aside": aside, "quota": quota}),
    )?;
    lift_quota(pool, &quota)?;
    if let Some(aside) = &aside {
        let name = SnapName::parse(aside["name"].as_str().unwrap_or_default())?;
        cx.info(&format!("Moving existing @final snapshot out of the way to \"{}\"", vm.snapshot(&name)));
        pool.rename_snapshot(&vm, &final_, &name)?;
    }
    cx.info(&format!("Snapshotting to \"{}\"", vm.snapshot(&final_)));
    pool.snapshot(&vm, &final_)?;
    let guid = pool
        .snapshots(&vm)?
        .into_iter()
        .find(|s| s.name == final_)
        .map(|s| s.guid)
        .ok_or_else(|| Error::internal(format!("{} is gone right after it was taken", vm.snapshot(&final_))))?;
    op.done(SNAPSHOT, json!({"image": image, "dataset": vm.to_string(), "guid": guid.to_string()}))?;
    Ok(guid)
}

fn guid_of(data: &Value) -> Result<u64> {
    data.get("guid")
        .and_then(Value::as_str)
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| Error::Journal(format!("journal step data lacks a \"guid\": {data}")))
}

/// Puts the VM's snapshots back as the snapshot step found them: the
/// `@final` this create took is destroyed (the one with `ours`, or, when
/// its guid was never recorded, any `@final` that was not there before),
/// and a `@final` moved aside gets its name back. Used by cleanup, by undo
/// and before a snapshot step is redone; doing it twice changes nothing.
fn restore_vm(begun: &Value, ours: Option<u64>) -> Result<()> {
    let dataset = DatasetName::parse_vm(begun.get("dataset").and_then(Value::as_str).unwrap_or_default())?;
    let pool = ZfsPool::open(&dataset.pool)?;
    if !pool.dataset_exists(&dataset)? {
        return Ok(());
    }
    let before: Vec<u64> = begun
        .get("before")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|g| g.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let final_ = SnapName::final_();
    let snapshots = pool.snapshots(&dataset)?;
    let made_here = |guid: u64| match ours {
        Some(ours) => guid == ours,
        None => !before.contains(&guid),
    };
    let mut final_present = false;
    if let Some(current) = snapshots.iter().find(|s| s.name == final_) {
        if made_here(current.guid) {
            pool.destroy_snapshot(&dataset, &final_)?;
        } else {
            final_present = true;
        }
    }
    let aside = begun.get("aside").filter(|a| !a.is_null());
    if let (Some(aside), false) = (aside, final_present) {
        let name = SnapName::parse(aside.get("name").and_then(Value::as_str).unwrap_or_default())?;
        let guid = guid_of(aside)?;
        if snapshots.iter().any(|s| s.name == name && s.guid == guid) {
            pool.rename_snapshot(&dataset, &name, &final_)?;
        }
    }
    Ok(())
}

/// snapshot's undo.
pub fn undo_snapshot(begun: &Value) -> Result<()> {
    restore_vm(begun, None)?;
    restore_quota(begun)
}

/// What send + compress produced.
struct Sent {
    size: u64,
    sha1: String,
}

/// The compressed bytes' count and sha1, kept where the encoder's writer
/// can update them and this side can read them once the encoder is done.
#[derive(Default)]
struct Tally {
    bytes: u64,
    hasher: Sha1,
}

/// Counts and hashes what the encoder writes to the temp file.
struct TallyingWriter {
    file: File,
    tally: Arc<Mutex<Tally>>,
}

impl Write for TallyingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.hasher.update(&buf[..n]);
        let first = tally.bytes == 0 && n > 0;
        tally.bytes += n as u64;
        drop(tally);
        if first {
            // The stream's total size is not known in advance (zfs send
            // does not say it portably): "during" is once the file has
            // its first compressed bytes and the stream is not finished.
            failpoint::check(COMPRESS, When::During);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The temp file the image file is written to, next to it (renamed into
/// place once whole and durable).
fn partial_path(file: &Path) -> PathBuf {
    append(file, ".partial")
}

/// send + compress, one streaming pass: `zfs send` is read, compressed,
/// counted and hashed on its way to a temp file next to the image file,
/// which is renamed into place once whole and durable.
fn send_and_compress(op: &mut Operation, cx: &Context, pool: &ZfsPool, plan: &Plan, guid: u64) -> Result<Sent> {
    let image = plan.image.to_string();
    match op.step_state(COMPRESS, Some(&image)) {
        StepState::Done { done, .. } => {
            let size = done.get("size").and_then(Value::as_u64);
            let sha1 = done.get("sha1").and_then(Value::as_str);
            return match (size, sha1) {
                (Some(size), Some(sha1)) => Ok(Sent { size, sha1: sha1.to_string() }),
                _ => Err(Error::Journal(format!("journal compress data lacks size or sha1: {done}"))),
            };
        }
        StepState::Begun { begun } => undo_output(&begun, false)?,
        _ => {}
    }
    let vm = plan.vm()?;
    let final_ = SnapName::final_();
    // The @final sent must be the one this create took.
    if !pool.snapshots(&vm)?.iter().any(|s| s.name == final_ && s.guid == guid) {
        return Err(Error::internal(format!("{} is not the snapshot this create took", vm.snapshot(&final_))));
    }
    let temp = partial_path(&plan.file_path);
    let existed = plan.file_path.exists();
    cx.info(&format!("Sending image file to \"{}\"", plan.file_path.display()));
    let from = plan.send_from()?;
    let mut stream = pool.send(&vm, &final_, from.as_ref())?;
    op.begun(
        SEND,
        json!({
            "image": image,
            "snapshot": vm.snapshot(&final_),
            "from": plan.send_from,
            "guid": guid.to_string(),
            "pid": stream.pid(),
        }),
    )?;
    op.begun(
        COMPRESS,
        json!({
            "image": image,
            "compression": plan.compression,
            "temp": temp,
            "path": plan.file_path,
            "existed": existed,
        }),
    )?;
    let file = File::create(&temp).map_err(|e| Error::io_path("cannot create image file", &temp, e))?;
    let sync_handle = file.try_clone().map_err(|e| Error::io_path("cannot write image file", &temp, e))?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let writer = TallyingWriter { file, tally: tally.clone() };
    let mut encoder = compression::encoder(plan.compression, Box::new(writer), None);
    let mut buffer = vec![0u8; SEND_BUFFER_BYTES];
    let mut sent = 0u64;
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read the zfs send stream", e)),
        };
        encoder.write_all(&buffer[..n]).map_err(|e| Error::io_path("cannot write image file", &temp, e))?;
        if sent == 0 {
            // As for compress: the first chunk moved, the stream not ended.
            failpoint::check(SEND, When::During);
        }
        sent += n as u64;
    }
    stream.finish()?;
    encoder.finish().map_err(|e| Error::io_path("cannot write image file", &temp, e))?;
    sync_handle.sync_all().map_err(|e| Error::io_path("cannot fsync image file", &temp, e))?;
    fsutil::rename_durable(&temp, &plan.file_path)?;
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let result = Sent { size: tally.bytes, sha1: hex::encode(tally.hasher.finalize()) };
    op.done_together(vec![
        (SEND, json!({"image": image, "bytes": sent})),
        (COMPRESS, json!({"image": image, "path": plan.file_path, "size": result.size, "sha1": result.sha1})),
    ])?;
    Ok(result)
}

/// The undo of an output file (the image file of compress, the manifest
/// of manifest): its temp file goes, and the file itself unless it was
/// there before and this step may not have replaced it yet.
pub fn undo_output(begun: &Value, done: bool) -> Result<()> {
    if let Some(temp) = begun.get("temp").and_then(Value::as_str) {
        fsutil::remove_durable(Path::new(temp))?;
    }
    let existed = begun.get("existed").and_then(Value::as_bool).unwrap_or(true);
    if let Some(path) = begun.get("path").and_then(Value::as_str) {
        if done || !existed {
            fsutil::remove_durable(Path::new(path))?;
        }
    }
    Ok(())
}

/// manifest: the image's manifest with `files[0]` (size, compression,
/// sha1, and the sent snapshot's guid as `dataset_guid`), written durably
/// as the real imgadm writes it (2-space JSON, no trailing newline).
fn manifest_step(op: &mut Operation, cx: &Context, plan: &Plan, sent: &Sent, guid: u64) -> Result<Created> {
    let image = plan.image.to_string();
    let mut manifest = Manifest::from_map(plan.manifest.clone());
    manifest.set(
        "files",
        json!([{
            "size": sent.size,
            "compression": plan.compression,
            "sha1": sent.sha1,
            "dataset_guid": guid.to_string(),
        }]),
    );
    let created =
        Created { manifest, manifest_path: plan.manifest_path.clone(), file_path: plan.file_path.clone() };
    if let StepState::Done { .. } = op.step_state(MANIFEST, Some(&image)) {
        return Ok(created);
    }
    let bytes = serde_json::to_vec_pretty(&created.manifest.to_value())
        .map_err(|e| Error::internal(format!("rendering the manifest: {e}")))?;
    cx.info(&format!("Saving manifest to \"{}\"", plan.manifest_path.display()));
    if !matches!(op.step_state(MANIFEST, Some(&image)), StepState::Begun { .. }) {
        op.begun(MANIFEST, json!({"image": image, "path": plan.manifest_path, "existed": plan.manifest_path.exists()}))?;
    }
    fsutil::write_file_atomic(&plan.manifest_path, &bytes)?;
    op.done(MANIFEST, json!({"image": image, "path": plan.manifest_path}))?;
    Ok(created)
}

/// cleanup: the VM's `@final` this create took is destroyed (the image is
/// whole in its file), a `@final` moved aside gets its name back, and a
/// prepared VM is rolled back to how it was before.
fn cleanup_step(op: &mut Operation, cx: &Context, plan: &Plan, guid: u64) -> Result<()> {
    let image = plan.image.to_string();
    if let StepState::Done { .. } = op.step_state(CLEANUP, Some(&image)) {
        return Ok(());
    }
    let snapshot = match op.step_state(SNAPSHOT, Some(&image)) {
        StepState::Done { begun, .. } => begun,
        _ => return Err(Error::Journal(format!("cleanup of create {image} before its snapshot is done"))),
    };
    let prepared = match op.step_state(PREPARE, Some(&image)) {
        StepState::Done { begun, .. } => Some(begun),
        _ => None,
    };
    op.begun(CLEANUP, json!({"image": image, "dataset": plan.vm_dataset, "guid": guid.to_string()}))?;
    restore_vm(&snapshot, Some(guid))?;
    restore_quota(&snapshot)?;
    if let Some(prepared) = prepared {
        undo_prepare(cx, &prepared)?;
    }
    op.done(CLEANUP, json!({"image": image}))
}

/// The request an interrupted create recorded in its `lock` step.
fn recorded_request(op: &Operation) -> Result<Option<Request>> {
    let Some(image) = op.images().get(1) else { return Ok(None) };
    let request = match op.step_state("lock", Some(image)) {
        StepState::Done { begun, .. } | StepState::Begun { begun } => begun.get("request").cloned(),
        _ => None,
    };
    request
        .map(|r| serde_json::from_value(r).map_err(|e| Error::Journal(format!("journal create request: {e}"))))
        .transpose()
}

/// Finishes an interrupted create from what its journal recorded: the
/// request in its `lock` step, the plan in its `check` step. One that had
/// not begun a step changed nothing: it is marked abandoned.
pub fn resume(cx: &Context, op: Operation) -> Result<Option<Created>> {
    let Some(request) = recorded_request(&op)? else {
        let id = op.id.clone();
        op.end(Outcome::Abandoned, None)?;
        cx.info(&format!("Create {id} had not started any step: marked abandoned, nothing was changed"));
        return Ok(None);
    };
    let locks = lock::try_lock_images(&cx.state, &find_vm(request.args.vm)?.lock_wants())?;
    finish(op, cx, &request, locks).map(Some)
}
