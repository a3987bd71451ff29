//! A stand-in for SmartOS's `vmadm`, `sysinfo`, and the `mdata-put` and
//! `halt` a VM's operator-script calls, so `imgadm create` can be tested
//! through vmadm (and `-s`, the prepare-image flow) on a Linux host with
//! zfs-fuse. One binary, called by the name of the link it is run through.
//!
//! A VM is `$FAKE_VMADM_DIR/UUID.json` (brand, state, zpool,
//! zfs_filesystem, image_uuid, disks, ...) over a real dataset. As on
//! SmartOS, its metadata lives inside the zone's dataset
//! (`config/metadata.json`), so rolling the dataset back takes metadata
//! changes back too. `vmadm start` runs the operator-script, if one is set,
//! as `sh SCRIPT` with `VM_ROOT` (the dataset's mountpoint) and this
//! directory first on PATH; `mdata-put` sets customer metadata and `halt`
//! stops the VM, as they would inside the zone.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use imgadm_engine::pool::zfs::MountLock;
use serde_json::{json, Map, Value};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = Path::new(&args[0]).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let result = match name.as_str() {
        "vmadm" => vmadm(&args[1..]),
        "sysinfo" => {
            println!("{}", json!({"SDC Version": "7.0", "Live Image": "20261101T000000Z", "System Type": "SunOS"}));
            Ok(())
        }
        "mdata-put" => in_vm().and_then(|vm| match &args[1..] {
            [key, value] => vm.set_metadata("customer_metadata", key, Some(value.clone().into())),
            _ => Err("usage: mdata-put KEY VALUE".to_string()),
        }),
        "halt" => in_vm().and_then(|vm| vm.set("state", json!("stopped"))),
        other => Err(format!("fake-vmadm: called as \"{other}\"; link it as vmadm, sysinfo, mdata-put or halt")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn vmadm(args: &[String]) -> Result<(), String> {
    let (verb, uuid) = match args {
        [verb, uuid, ..] => (verb.as_str(), uuid.as_str()),
        _ => return Err("usage: vmadm get|start|stop|update UUID".to_string()),
    };
    let vm = Vm::open(uuid)?;
    match verb {
        "get" => {
            let mut record = vm.record()?;
            let metadata = vm.metadata()?;
            for key in ["customer_metadata", "internal_metadata"] {
                record.insert(key.to_string(), metadata.get(key).cloned().unwrap_or_else(|| json!({})));
            }
            println!("{}", Value::Object(record));
            Ok(())
        }
        "stop" => {
            if vm.record()?.get("state") == Some(&json!("stopped")) && !args.iter().any(|a| a == "-F") {
                return Err(format!("VM {uuid} is already stopped"));
            }
            vm.kill_script();
            vm.set("state", json!("stopped"))
        }
        "start" => {
            if vm.record()?.get("state") == Some(&json!("running")) {
                return Err(format!("VM {uuid} is already running"));
            }
            vm.set("state", json!("running"))?;
            vm.run_operator_script()
        }
        "update" => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input).map_err(|e| e.to_string())?;
            let changes: Value = serde_json::from_str(&input).map_err(|e| format!("bad JSON on stdin: {e}"))?;
            vm.update(&changes)
        }
        other => Err(format!("unknown command \"{other}\"")),
    }
}

/// The VM an operator-script runs in (`mdata-put`, `halt`).
fn in_vm() -> Result<Vm, String> {
    let uuid = std::env::var("FAKE_VMADM_VM").map_err(|_| "not inside a fake VM (no FAKE_VMADM_VM)".to_string())?;
    Vm::open(&uuid)
}

struct Vm {
    uuid: String,
    record_path: PathBuf,
}

impl Vm {
    fn open(uuid: &str) -> Result<Vm, String> {
        if uuid::Uuid::parse_str(uuid).is_err() {
            return Err(format!("invalid uuid \"{uuid}\""));
        }
        let dir = std::env::var("FAKE_VMADM_DIR").map_err(|_| "FAKE_VMADM_DIR is not set".to_string())?;
        let record_path = Path::new(&dir).join(format!("{uuid}.json"));
        if !record_path.exists() {
            return Err(format!("VM {uuid} not found"));
        }
        Ok(Vm { uuid: uuid.to_string(), record_path })
    }

    fn record(&self) -> Result<Map<String, Value>, String> {
        read_object(&self.record_path)
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        let mut record = self.record()?;
        record.insert(key.to_string(), value);
        write_object(&self.record_path, &record)
    }

    /// The zone dataset's mountpoint, mounted (zfs-fuse datasets are often
    /// left unmounted between writes).
    fn root(&self) -> Result<PathBuf, String> {
        let record = self.record()?;
        let dataset = record.get("zfs_filesystem").and_then(Value::as_str).ok_or("no zfs_filesystem")?.to_string();
        if zfs(&["get", "-H", "-o", "value", "mounted", &dataset])?.trim() != "yes" {
            zfs(&["mount", &dataset])?;
        }
        Ok(PathBuf::from(zfs(&["get", "-H", "-o", "value", "mountpoint", &dataset])?.trim()))
    }

    fn metadata_path(&self) -> Result<PathBuf, String> {
        Ok(self.root()?.join("config/metadata.json"))
    }

    fn metadata(&self) -> Result<Map<String, Value>, String> {
        let path = self.metadata_path()?;
        if path.exists() {
            read_object(&path)
        } else {
            Ok(Map::new())
        }
    }

    fn set_metadata(&self, kind: &str, key: &str, value: Option<Value>) -> Result<(), String> {
        let mut metadata = self.metadata()?;
        let section = metadata.entry(kind.to_string()).or_insert_with(|| json!({}));
        let section = section.as_object_mut().ok_or("metadata section is not an object")?;
        match value {
            Some(value) => section.insert(key.to_string(), value),
            None => section.remove(key),
        };
        let path = self.metadata_path()?;
        std::fs::create_dir_all(path.parent().ok_or("metadata path has no parent")?).map_err(|e| e.to_string())?;
        write_object(&path, &metadata)
    }

    /// The parts of `vmadm update`'s payload a prepare-image run uses.
    fn update(&self, changes: &Value) -> Result<(), String> {
        for (payload_key, kind) in [("set_internal_metadata", "internal_metadata"), ("set_customer_metadata", "customer_metadata")] {
            if let Some(set) = changes.get(payload_key).and_then(Value::as_object) {
                for (key, value) in set {
                    self.set_metadata(kind, key, Some(value.clone()))?;
                }
            }
        }
        if let Some(keys) = changes.get("remove_customer_metadata").and_then(Value::as_array) {
            for key in keys.iter().filter_map(Value::as_str) {
                self.set_metadata("customer_metadata", key, None)?;
            }
        }
        Ok(())
    }

    fn run_operator_script(&self) -> Result<(), String> {
        let metadata = self.metadata()?;
        let Some(script) = metadata.get("internal_metadata").and_then(|m| m.get("operator-script")).and_then(Value::as_str) else {
            return Ok(());
        };
        let dir = self.record_path.parent().ok_or("no state dir")?;
        let script_path = dir.join(format!("{}.operator-script", self.uuid));
        std::fs::write(&script_path, script).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join(format!("{}.log", self.uuid))).map_err(|e| e.to_string())?;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let links = std::env::args().next().map(PathBuf::from).and_then(|p| p.parent().map(Path::to_path_buf));
        let path = format!(
            "{}:{}",
            links.unwrap_or_else(|| me.parent().unwrap_or(Path::new("/")).to_path_buf()).display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("sh")
            .arg(&script_path)
            .env("PATH", path)
            .env("FAKE_VMADM_VM", &self.uuid)
            .env("VM_ROOT", self.root()?)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run the operator-script: {e}"))?;
        self.set("fake_script_pid", json!(child.id()))
    }

    fn kill_script(&self) {
        if let Some(pid) = self.record().ok().and_then(|r| r.get("fake_script_pid").and_then(Value::as_i64)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn zfs(args: &[&str]) -> Result<String, String> {
    let _mount_lock = MountLock::for_command("zfs", args);
    let out = Command::new("zfs").args(args).output().map_err(|e| format!("cannot run zfs: {e}"))?;
    if !out.status.success() {
        return Err(format!("zfs {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_object(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(format!("{} is not a JSON object", path.display())),
    }
}

/// Written whole or not at all: readers poll these files while the
/// script writes them.
fn write_object(path: &Path, object: &Map<String, Value>) -> Result<(), String> {
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, serde_json::to_vec_pretty(object).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    std::fs::rename(&temp, path).map_err(|e| e.to_string())
}
