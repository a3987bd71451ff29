//! create on a SmartOS-like host: the VM comes from vmadm (a fake one over
//! real zfs-fuse datasets, tests/src/bin/fake-vmadm.rs), and `-s` runs the
//! prepare-image flow: snapshot, operator-script, the script's
//! `prepare-image:state` polled, the VM rolled back afterwards, whether the
//! script succeeded, failed, or imgadm was killed on the way.

use imgadm_tests::harness::*;
use imgadm_tests::vms::*;
use serde_json::json;

const PRE_PREPARE: &str = "imgadm-create-pre-prepare";

fn fake() -> FakeVmadm {
    FakeVmadm::new(env!("CARGO_BIN_EXE_fake-vmadm"))
}

/// A joyent-minimal zone over a fresh dataset holding `etc/secret` and
/// `etc/motd`, in `state`.
fn zone(w: &World, vmadm: &FakeVmadm, state: &str) -> String {
    let vm = make_vm(w, None, &[("etc/secret", b"key\n"), ("etc/motd", b"hi\n")]);
    vmadm.add(&vm, zone_record(w, &vm, "joyent-minimal", state));
    vm
}

const GOOD_SCRIPT: &[u8] = b"mdata-put prepare-image:state running
rm -f \"$VM_ROOT/etc/secret\"
echo prepared > \"$VM_ROOT/prepared.txt\"
mdata-put prepare-image:state success
halt
";

/// What the VM's dataset holds now (through its mount).
fn vm_files(w: &World, vm: &str) -> Vec<String> {
    let z = w.zpool().unwrap();
    let dataset = format!("{}/{vm}", w.pool);
    if z.zfs(&["get", "-H", "-o", "value", "mounted", &dataset]).trim() != "yes" {
        z.zfs(&["mount", &dataset]);
    }
    let mountpoint = z.zfs(&["get", "-H", "-o", "value", "mountpoint", &dataset]).trim().to_string();
    let mut names: Vec<String> = walk(std::path::Path::new(&mountpoint));
    names.retain(|n| !n.starts_with("config/"));
    names.sort();
    names
}

fn walk(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().is_dir() {
                dirs.push(entry.path());
            } else {
                found.push(entry.path().strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found
}

fn lines_in_order(text: &str, expected: &[String]) {
    let mut rest = text;
    for line in expected {
        let at = rest.find(line.as_str()).unwrap_or_else(|| panic!("\"{line}\" missing or out of order in:\n{text}"));
        rest = &rest[at + line.len()..];
    }
}

#[test]
fn prepare_image_runs_the_script_and_gives_the_vm_back() {
    let w = World::new(Driver::Zfs);
    let vmadm = fake();
    let vm = zone(&w, &vmadm, "running");
    let dataset = format!("{}/{vm}", w.pool);
    let script = w.write("prepare.sh", GOOD_SCRIPT);
    let out = out_dir(&w, "prepared");
    let prefix = out.join("img");
    let run = vmadm
        .imgadm(&w, &[
            "create", "-s", script.to_str().unwrap(), "-c", "gzip", "-o", prefix.to_str().unwrap(), &vm,
            "name=prepared", "version=1.0.0", "type=zone-dataset", "os=smartos",
        ])
        .ok();
    lines_in_order(&run.stdout, &[
        format!("Stopping VM {vm} to snapshot it"),
        format!("Snapshotting VM \"{vm}\" to @{PRE_PREPARE}"),
        format!("Preparing VM {vm} (starting it)"),
        "Prepare script is running".to_string(),
        "Prepare script succeeded".to_string(),
        format!("Prepare script stopped VM {vm}"),
        format!("Snapshotting to \"{dataset}@final\""),
        format!("Rollback VM {vm} to pre-prepare snapshot (cleanup)"),
        format!("Restarting VM {vm} (cleanup)"),
        "Created image".to_string(),
    ]);
    let manifest = manifest_at(&out.join("img.imgmanifest"));
    assert_eq!(manifest["requirements"]["min_platform"], json!({"7.0": "20261101T000000Z"}), "from sysinfo");

    // The image holds the prepared VM; the VM is as it was, running again.
    w.install(&out.join("img.imgmanifest"), &out.join("img.zfs.gz")).ok();
    let image = manifest["uuid"].as_str().unwrap();
    let in_image: Vec<String> = files_of(&w, &format!("{}/{image}@final", w.pool))
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| !n.starts_with("config/"))
        .collect();
    assert_eq!(in_image, ["etc/motd", "prepared.txt"]);
    assert_eq!(vm_files(&w, &vm), ["etc/motd", "etc/secret"]);
    assert!(snapshots(&w, &dataset).is_empty(), "{:?}", snapshots(&w, &dataset));
    assert_eq!(vmadm.get(&vm)["state"], "running");
    vmadm.assert_metadata_clean(&vm);

    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let steps: Vec<&str> = ops[0]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["lock", "check", "prepare", "snapshot", "send", "compress", "manifest", "cleanup", "unlock"]);
}

#[test]
fn a_script_that_reports_an_error_fails_the_create_and_leaves_nothing() {
    let w = World::new(Driver::Zfs);
    let vmadm = fake();
    let vm = zone(&w, &vmadm, "stopped");
    let dataset = format!("{}/{vm}", w.pool);
    let script = w.write(
        "bad.sh",
        b"mdata-put prepare-image:state running\nrm -f \"$VM_ROOT/etc/motd\"\n\
          mdata-put prepare-image:error 'cannot clean /var/log'\nmdata-put prepare-image:state error\nhalt\n",
    );
    let out = out_dir(&w, "failed");
    let run = vmadm
        .imgadm(&w, &[
            "create", "-s", script.to_str().unwrap(), "-o", out.join("x").to_str().unwrap(), &vm,
            "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos",
        ])
        .fails_with(1, "PrepareImageError");
    assert!(
        run.stderr.contains(&format!("prepare-image script error while preparing VM {vm}: cannot clean /var/log")),
        "{}",
        run.stderr
    );
    assert!(dir_listing(&out).is_empty());
    assert_eq!(vm_files(&w, &vm), ["etc/motd", "etc/secret"]);
    assert!(snapshots(&w, &dataset).is_empty());
    assert_eq!(vmadm.get(&vm)["state"], "stopped", "it was stopped before: not restarted");
    vmadm.assert_metadata_clean(&vm);
}

#[test]
fn without_s_the_vm_must_be_stopped_and_known_to_vmadm() {
    let w = World::new(Driver::Zfs);
    let vmadm = fake();
    let vm = zone(&w, &vmadm, "running");
    let out = out_dir(&w, "refused");
    let o = out.join("x");
    let args = ["create", "-o", o.to_str().unwrap(), &vm, "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos"];
    let run = vmadm.imgadm(&w, &args).fails_with(1, "VmNotStopped");
    assert!(run.stderr.contains(&format!("vm \"{vm}\" is not stopped")), "{}", run.stderr);
    assert!(snapshots(&w, &format!("{}/{vm}", w.pool)).is_empty());
    assert!(dir_listing(&out).is_empty());
    // A dataset vmadm does not know is no VM here, whatever its name.
    let stray = make_vm(&w, None, &[("a", b"a")]);
    vmadm
        .imgadm(&w, &["create", "-o", o.to_str().unwrap(), &stray, "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos"])
        .fails_with(1, "VmNotFound");
}

#[test]
fn a_kvm_vm_is_imaged_from_its_first_disk_with_its_brand_required() {
    let w = World::new(Driver::Zfs);
    let vmadm = fake();
    let vm = make_vm(&w, None, &[("zone-only", b"z")]);
    let z = w.zpool().unwrap();
    let disk = format!("{}/{vm}-disk0", w.pool);
    let disk_files: &[(&str, &[u8])] = &[("boot/disk", &[5u8; 4000])];
    z.create_mounted(&disk, disk_files);
    z.zfs(&["unmount", &disk]);
    let mut record = zone_record(&w, &vm, "kvm", "stopped");
    record["disks"] = json!([{"zfs_filesystem": disk, "zpool": w.pool, "boot": true}]);
    vmadm.add(&vm, record);
    let out = out_dir(&w, "kvm");
    // What a zvol image's manifest must have besides name and version.
    let fields = w.write(
        "zvol.json",
        br#"{"type": "zvol", "os": "linux", "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 10240}"#,
    );
    let fields = fields.to_str().unwrap();
    let run = vmadm
        .imgadm(&w, &["create", "-m", fields, "-o", out.join("k").to_str().unwrap(), &vm, "name=k", "version=1.0.0"])
        .ok();
    assert!(run.stdout.contains(&format!("Snapshotting to \"{disk}@final\"")), "{}", run.stdout);
    let manifest = manifest_at(&out.join("k.imgmanifest"));
    assert_eq!(manifest["requirements"]["brand"], "kvm");
    assert_eq!(dir_listing(&out), ["k.imgmanifest", "k.zvol"], "type zvol names the file .zvol");
    let image = manifest["uuid"].as_str().unwrap();
    w.install(&out.join("k.imgmanifest"), &out.join("k.zvol")).ok();
    assert_eq!(files_of(&w, &format!("{}/{image}@final", w.pool)), sorted(disk_files));
    // An explicit empty brand requirement says "none".
    let run = vmadm.imgadm(&w, &[
        "create", "-m", fields, "-o", out.join("k2").to_str().unwrap(), &vm, "name=k", "version=2.0.0",
        "requirements={\"brand\":\"\"}",
    ]);
    let manifest = manifest_at(&out.join("k2.imgmanifest"));
    assert_eq!(manifest["requirements"].get("brand"), None, "{}", run.ok().stdout);
}

#[test]
fn a_create_killed_while_preparing_rolls_back_or_resumes() {
    let w = World::new(Driver::Zfs);
    let vmadm = fake();
    let vm = zone(&w, &vmadm, "running");
    let dataset = format!("{}/{vm}", w.pool);
    let script = w.write("prepare.sh", GOOD_SCRIPT);
    let out = out_dir(&w, "killed");
    let o = out.join("x");
    let argv = [
        "create", "-s", script.to_str().unwrap(), "-o", o.to_str().unwrap(), &vm,
        "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos",
    ];
    for failpoint in ["prepare:during", "prepare:after", "snapshot:after"] {
        let killed = vmadm.on(w.command()).args(argv).env("IMGADM_FAILPOINT", failpoint).output().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed.status), Some(9), "{failpoint}");
        let left: Vec<String> = snapshots(&w, &dataset);
        assert!(left.iter().any(|s| s.contains(PRE_PREPARE)), "{failpoint}: the VM was left mid-prepare: {left:?}");
        let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
        let id = ops.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
        let run = vmadm.imgadm(&w, &["journal", "rollback", &id]).ok();
        assert!(run.stdout.contains("Rolled back"), "{failpoint}: {}", run.stdout);
        assert!(snapshots(&w, &dataset).is_empty(), "{failpoint}: {:?}", snapshots(&w, &dataset));
        assert_eq!(vm_files(&w, &vm), ["etc/motd", "etc/secret"], "{failpoint}");
        assert_eq!(vmadm.get(&vm)["state"], "running", "{failpoint}: restarted, as it was running");
        vmadm.assert_metadata_clean(&vm);
        assert!(dir_listing(&out).is_empty(), "{failpoint}");
    }
    // Killed after the script ran, then the same command: finished.
    let killed = vmadm.on(w.command()).args(argv).env("IMGADM_FAILPOINT", "prepare:after").output().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed.status), Some(9));
    let run = vmadm.imgadm(&w, &argv).ok();
    assert!(run.stdout.contains("Resuming interrupted create"), "{}", run.stdout);
    assert!(!run.stdout.contains("Preparing VM"), "the script ran once: {}", run.stdout);
    assert_eq!(dir_listing(&out), ["x.imgmanifest", "x.zfs"]);
    assert!(snapshots(&w, &dataset).is_empty());
    assert_eq!(vm_files(&w, &vm), ["etc/motd", "etc/secret"]);
    assert_eq!(vmadm.get(&vm)["state"], "running");
    vmadm.assert_metadata_clean(&vm);
}

#[test]
fn a_bhyve_vm_has_its_quota_lifted_for_the_snapshot_and_given_back() {
    let w = World::new(Driver::Zfs);
    let vmadm = fake();
    let vm = make_vm(&w, None, &[("zone-only", b"z")]);
    let z = w.zpool().unwrap();
    let zone_dataset = format!("{}/{vm}", w.pool);
    let disk = format!("{zone_dataset}/disk0");
    let disk_files: &[(&str, &[u8])] = &[("boot/loader", &[6u8; 3000])];
    z.create_mounted(&disk, disk_files);
    z.zfs(&["unmount", &disk]);
    z.zfs(&["set", "quota=1G", &zone_dataset]);
    let mut record = zone_record(&w, &vm, "bhyve", "stopped");
    record["bootrom"] = json!("uefi");
    record["disks"] = json!([{"zfs_filesystem": disk, "zpool": w.pool, "boot": true}]);
    vmadm.add(&vm, record);
    let out = out_dir(&w, "bhyve");
    let fields = w.write(
        "zvol.json",
        br#"{"type": "zvol", "os": "linux", "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 10240}"#,
    );
    vmadm
        .imgadm(&w, &["create", "-m", fields.to_str().unwrap(), "-o", out.join("b").to_str().unwrap(), &vm, "name=b", "version=1.0.0"])
        .ok();
    let manifest = manifest_at(&out.join("b.imgmanifest"));
    assert_eq!(manifest["requirements"]["brand"], "bhyve");
    assert_eq!(manifest["requirements"]["bootrom"], "uefi");
    assert_eq!(z.zfs(&["get", "-Hp", "-o", "value", "quota", &zone_dataset]).trim(), (1u64 << 30).to_string());
    assert!(snapshots(&w, &disk).is_empty());
    // The snapshot step recorded the quota it lifted (and cleanup put back).
    let export = w.imgadm(&["journal", "export"]).ok().stdout;
    let lifted = export.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).any(|e| {
        e["step"] == "snapshot" && e["data"]["quota"] == json!({"dataset": zone_dataset, "bytes": (1u64 << 30).to_string()})
    });
    assert!(lifted, "{export}");
    let image = manifest["uuid"].as_str().unwrap();
    w.install(&out.join("b.imgmanifest"), &out.join("b.zvol")).ok();
    assert_eq!(files_of(&w, &format!("{}/{image}@final", w.pool)), sorted(disk_files));
}
