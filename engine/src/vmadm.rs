//! vmadm(1M), the SmartOS VM manager, as `create` needs it: look a VM up,
//! stop and start it, change its metadata; and sysinfo(1M) for the
//! platform version an image of a joyent zone requires. Where there is no
//! vmadm on PATH (any host but SmartOS), `create` takes the VM to be the
//! dataset `POOL/VM-UUID` instead (see `verbs::create`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::ids::{DatasetName, ImageUuid, PoolName};

const VMADM: &str = "vmadm";
const SYSINFO: &str = "sysinfo";

/// The customer metadata keys a prepare-image script signals through.
pub const PREPARE_STATE: &str = "prepare-image:state";
pub const PREPARE_ERROR: &str = "prepare-image:error";

/// The vmadm found on PATH.
pub struct Vmadm {
    program: PathBuf,
}

/// What `create` reads of `vmadm get`.
#[derive(Clone, Debug)]
pub struct VmInfo {
    pub uuid: ImageUuid,
    pub brand: String,
    pub state: String,
    /// The zone's dataset (`zfs_filesystem`).
    pub zone: DatasetName,
    /// The dataset the image is made of: the zone's, or for kvm and bhyve
    /// the first disk's.
    pub data: DatasetName,
    /// The zone's dataset and every disk's: what a prepare-image run
    /// snapshots first and rolls back after.
    pub datasets: Vec<DatasetName>,
    /// The image the data dataset was made from, and the pool vmadm says
    /// it is on.
    pub image: Option<(PoolName, ImageUuid)>,
    pub bootrom: Option<String>,
    pub customer_metadata: Map<String, Value>,
}

impl VmInfo {
    /// kvm and bhyve VMs boot from disks; their image is their first disk.
    pub fn is_hardware(&self) -> bool {
        is_hardware_brand(&self.brand)
    }

    pub fn is_stopped(&self) -> bool {
        self.state == "stopped"
    }

    pub fn metadata_text(&self, key: &str) -> Option<&str> {
        self.customer_metadata.get(key).and_then(Value::as_str)
    }
}

fn is_hardware_brand(brand: &str) -> bool {
    matches!(brand, "kvm" | "bhyve")
}

impl Vmadm {
    pub fn find() -> Option<Vmadm> {
        fsutil::find_program(VMADM).map(|program| Vmadm { program })
    }

    /// `vmadm get VM`; a VM vmadm does not know is `VmNotFound`.
    pub fn get(&self, vm: ImageUuid) -> Result<VmInfo> {
        let uuid = vm.to_string();
        let stdout = run(&self.program, &["get", &uuid], None).map_err(|e| {
            tracing::debug!(vm = %uuid, error = %e, "vmadm get failed");
            Error::VmNotFound(uuid.clone())
        })?;
        let value: Value = serde_json::from_str(&stdout)
            .map_err(|e| Error::internal(format!("\"vmadm get {uuid}\" printed something that is not JSON: {e}")))?;
        parse_vm(vm, &value)
    }

    /// `vmadm stop VM` (`-F`: forced, whatever the VM is doing).
    pub fn stop(&self, vm: ImageUuid, force: bool) -> Result<()> {
        let uuid = vm.to_string();
        let mut args = vec!["stop", uuid.as_str()];
        if force {
            args.push("-F");
        }
        run(&self.program, &args, None).map(drop)
    }

    pub fn start(&self, vm: ImageUuid) -> Result<()> {
        run(&self.program, &["start", &vm.to_string()], None).map(drop)
    }

    /// `vmadm update VM` with the changes as JSON on stdin.
    pub fn update(&self, vm: ImageUuid, changes: &Value) -> Result<()> {
        let payload = changes.to_string();
        run(&self.program, &["update", &vm.to_string()], Some(payload.as_bytes())).map(drop)
    }
}

/// `sysinfo`: the platform's `SDC Version` and `Live Image`, which a joyent
/// image requires as its minimum platform.
pub fn platform() -> Result<(String, String)> {
    let program = fsutil::find_program(SYSINFO)
        .ok_or_else(|| Error::internal("vmadm is here but sysinfo is not: cannot tell the platform version"))?;
    let stdout = run(&program, &[], None)?;
    let value: Value = serde_json::from_str(&stdout)
        .map_err(|e| Error::internal(format!("sysinfo printed something that is not JSON: {e}")))?;
    match (value.get("SDC Version").and_then(Value::as_str), value.get("Live Image").and_then(Value::as_str)) {
        (Some(version), Some(live)) => Ok((version.to_string(), live.to_string())),
        _ => Err(Error::internal("sysinfo gives no \"SDC Version\" and \"Live Image\"")),
    }
}

fn parse_vm(vm: ImageUuid, value: &Value) -> Result<VmInfo> {
    let bad = |what: &str| Error::internal(format!("\"vmadm get {vm}\" gives {what}"));
    let text = |field: &str| value.get(field).and_then(Value::as_str);
    let brand = text("brand").ok_or_else(|| bad("no brand"))?.to_string();
    let state = text("state").ok_or_else(|| bad("no state"))?.to_string();
    // Every dataset name comes from vmadm; each must be this VM's (its
    // uuid), so nothing else on the host can be snapshotted or rolled back.
    let own_dataset = |name: Option<&str>| -> Result<DatasetName> {
        let name = name.ok_or_else(|| bad("a dataset without a zfs_filesystem"))?;
        let dataset = DatasetName::parse_vm(name).map_err(|_| bad(&format!("the dataset \"{name}\", not one of the VM's")))?;
        if dataset.uuid != vm {
            return Err(bad(&format!("the dataset \"{name}\", which belongs to another VM")));
        }
        Ok(dataset)
    };
    let zone = own_dataset(text("zfs_filesystem"))?;
    let disks: Vec<&Value> = value.get("disks").and_then(Value::as_array).map(|d| d.iter().collect()).unwrap_or_default();
    let mut datasets = vec![zone.clone()];
    for disk in &disks {
        // A CD-ROM or a disk passed through from elsewhere has no dataset.
        if disk.get("zfs_filesystem").is_some() {
            datasets.push(own_dataset(disk.get("zfs_filesystem").and_then(Value::as_str))?);
        }
    }
    let image_of = |holder: &Value| -> Result<Option<(PoolName, ImageUuid)>> {
        match (holder.get("zpool").and_then(Value::as_str), holder.get("image_uuid").and_then(Value::as_str)) {
            (Some(pool), Some(image)) => Ok(Some((PoolName::parse(pool)?, ImageUuid::parse(image)?))),
            _ => Ok(None),
        }
    };
    let (data, image) = if is_hardware_brand(&brand) {
        let first = disks.first().ok_or_else(|| bad(&format!("a {brand} VM without disks")))?;
        (own_dataset(first.get("zfs_filesystem").and_then(Value::as_str))?, image_of(first)?)
    } else {
        (zone.clone(), image_of(value)?)
    };
    Ok(VmInfo {
        uuid: vm,
        brand,
        state,
        zone,
        data,
        datasets,
        image,
        bootrom: text("bootrom").map(str::to_string),
        customer_metadata: value.get("customer_metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
    })
}

/// Runs `program args` (stdin from `input`, or nothing) to its end; a
/// non-zero exit is an error naming the command and its stderr.
fn run(program: &Path, args: &[&str], input: Option<&[u8]>) -> Result<String> {
    let argv = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::internal(format!("cannot run \"{argv}\": {e}")))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that exits without reading its input is judged by its
        // exit status below, not by the broken pipe.
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().map_err(|e| Error::internal(format!("waiting for \"{argv}\": {e}")))?;
    tracing::debug!(%argv, status = ?out.status.code(), "ran command");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Internal(format!(
            "exec error: argv \"{argv}\", exit status {}, stderr: {}",
            out.status.code().map_or_else(|| "killed by a signal".to_string(), |c| c.to_string()),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VM: &str = "0a4b2c6e-8d1f-4e3a-9b5c-7d6e5f4a3b21";
    const IMAGE: &str = "5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01";

    fn vm() -> ImageUuid {
        ImageUuid::parse(VM).unwrap()
    }

    #[test]
    fn a_zone_is_its_own_data_and_a_kvm_vm_its_first_disk() {
        let zone = parse_vm(
            vm(),
            &json!({"brand": "joyent", "state": "stopped", "zpool": "zones", "image_uuid": IMAGE,
                    "zfs_filesystem": format!("zones/{VM}")}),
        )
        .unwrap();
        assert_eq!(zone.data.to_string(), format!("zones/{VM}"));
        assert_eq!(zone.image.unwrap().1.to_string(), IMAGE);
        let kvm = parse_vm(
            vm(),
            &json!({"brand": "kvm", "state": "running", "zfs_filesystem": format!("zones/{VM}"),
                    "disks": [{"zpool": "zones", "image_uuid": IMAGE, "zfs_filesystem": format!("zones/{VM}-disk0")},
                              {"zfs_filesystem": format!("zones/{VM}-disk1")}]}),
        )
        .unwrap();
        assert_eq!(kvm.data.to_string(), format!("zones/{VM}-disk0"));
        assert_eq!(kvm.datasets.len(), 3);
        assert!(!kvm.is_stopped());
    }

    #[test]
    fn datasets_that_are_not_the_vms_are_refused() {
        for name in [format!("zones/{IMAGE}"), "zones/../etc".to_string(), format!("zones/{VM}/../x"), "zones".to_string()] {
            let err = parse_vm(vm(), &json!({"brand": "joyent", "state": "stopped", "zfs_filesystem": name})).unwrap_err();
            assert_eq!(err.code(), "InternalError", "{name}");
        }
        let err = parse_vm(vm(), &json!({"brand": "bhyve", "state": "stopped", "zfs_filesystem": format!("zones/{VM}")}))
            .unwrap_err();
        assert!(err.to_string().contains("without disks"), "{err}");
    }
}
