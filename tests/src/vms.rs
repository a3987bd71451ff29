//! VMs for the create tests: a VM's dataset on a test pool, what its
//! snapshots hold, and a fake vmadm (tests/src/bin/fake-vmadm.rs) that
//! makes the dataset a SmartOS VM with a brand, a state and metadata.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::harness::{Run, World};

/// A "VM": the dataset `POOL/VM-UUID`, full or cloned from an image's
/// `@final`, holding `files`. Unmounted afterwards (zfs-fuse calls a
/// dataset just written through its mount busy).
pub fn make_vm(w: &World, origin: Option<&str>, files: &[(&str, &[u8])]) -> String {
    let z = w.zpool().expect("a zfs world");
    let vm = uuid::Uuid::new_v4().to_string();
    let dataset = format!("{}/{vm}", w.pool);
    match origin {
        None => {
            z.create_mounted(&dataset, files);
        }
        Some(image) => {
            let mountpoint = z.mount_dir(&vm);
            z.zfs(&["clone", "-o", &format!("mountpoint={}", mountpoint.display()), &format!("{}/{image}@final", w.pool), &dataset]);
            write_files(&mountpoint, files);
        }
    }
    z.zfs(&["unmount", &dataset]);
    vm
}

pub fn write_files(root: &Path, files: &[(&str, &[u8])]) {
    for (name, content) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// The files under a snapshot, read through a mounted clone of it.
pub fn files_of(w: &World, snapshot: &str) -> Vec<(String, Vec<u8>)> {
    let z = w.zpool().unwrap();
    let leaf = format!("check{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let clone = format!("{}/{leaf}", w.pool);
    let mountpoint = z.mount_dir(&leaf);
    z.zfs(&["clone", "-o", &format!("mountpoint={}", mountpoint.display()), snapshot, &clone]);
    let mut found = Vec::new();
    collect(&mountpoint, &mountpoint, &mut found);
    // Left in place, unmounted: zfs-fuse can call it busy for a while
    // after the reads, and a clone of an image changes nothing tested here.
    z.zfs(&["unmount", &clone]);
    found.sort();
    found
}

pub fn collect(root: &Path, dir: &Path, found: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, found);
        } else {
            found.push((path.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

/// `zfs list -t snapshot` names and guids of one dataset.
pub fn snapshots(w: &World, dataset: &str) -> Vec<String> {
    let z = w.zpool().unwrap();
    let out = z.zfs(&["get", "-Hp", "-r", "-d", "1", "-o", "name,value", "guid", dataset]);
    let mut lines: Vec<String> = out.lines().filter(|l| l.contains('@')).map(str::to_string).collect();
    lines.sort();
    lines
}

pub fn out_dir(w: &World, name: &str) -> PathBuf {
    let dir = w.work.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

pub fn create(w: &World, args: &[&str]) -> Run {
    let mut argv = vec!["create"];
    argv.extend_from_slice(args);
    w.imgadm(&argv)
}

pub fn manifest_at(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}


pub fn sorted(files: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = files.iter().map(|(n, c)| (n.to_string(), c.to_vec())).collect();
    v.sort();
    v
}

/// A fake SmartOS: `vmadm`, `sysinfo`, `mdata-put` and `halt` linked to
/// the fake-vmadm binary in a directory put first on PATH, and the VMs'
/// records in another.
pub struct FakeVmadm {
    bin: TempDir,
    vms: TempDir,
}

impl FakeVmadm {
    /// `fake_vmadm` is the binary (`env!("CARGO_BIN_EXE_fake-vmadm")` in a
    /// test of this package).
    pub fn new(fake_vmadm: &str) -> FakeVmadm {
        let bin = TempDir::new().expect("temp dir");
        for name in ["vmadm", "sysinfo", "mdata-put", "halt"] {
            std::os::unix::fs::symlink(fake_vmadm, bin.path().join(name)).expect("link the fake vmadm");
        }
        FakeVmadm { bin, vms: TempDir::new().expect("temp dir") }
    }

    /// Registers a VM over existing datasets: `fields` is what `vmadm get`
    /// shows (brand, state, zfs_filesystem, disks, ...) but metadata.
    pub fn add(&self, vm: &str, fields: Value) {
        std::fs::write(self.vms.path().join(format!("{vm}.json")), fields.to_string()).expect("write VM record");
    }

    /// `cmd` (imgadm, or the fake itself) on this fake SmartOS.
    pub fn on(&self, mut cmd: Command) -> Command {
        let path = format!("{}:{}", self.bin.path().display(), std::env::var("PATH").unwrap_or_default());
        cmd.env("PATH", path).env("FAKE_VMADM_DIR", self.vms.path());
        cmd
    }

    pub fn imgadm(&self, w: &World, args: &[&str]) -> Run {
        Run::from_output(self.on(w.command()).args(args).output().expect("cannot run imgadm"))
    }

    /// `vmadm get VM` as imgadm sees it.
    pub fn get(&self, vm: &str) -> Value {
        let out = self.on(Command::new(self.bin.path().join("vmadm"))).args(["get", vm]).output().expect("run vmadm");
        assert!(out.status.success(), "vmadm get {vm}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("vmadm get prints JSON")
    }

    /// The metadata a prepare-image run leaves while it runs, which a
    /// rolled-back VM must not have any more.
    pub fn assert_metadata_clean(&self, vm: &str) {
        let got = self.get(vm);
        assert_eq!(got["internal_metadata"].get("operator-script"), None, "{got}");
        assert_eq!(got["customer_metadata"].get("prepare-image:state"), None, "{got}");
        assert_eq!(got["customer_metadata"].get("prepare-image:error"), None, "{got}");
    }
}

/// A zone VM record for `FakeVmadm::add`.
pub fn zone_record(w: &World, vm: &str, brand: &str, state: &str) -> Value {
    json!({"uuid": vm, "brand": brand, "state": state, "zpool": w.pool, "zfs_filesystem": format!("{}/{vm}", w.pool)})
}
