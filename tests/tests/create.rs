//! create -> install round trips on a real zfs-fuse pool (full and
//! incremental, every compression), and every way a create is refused:
//! each refusal leaves the VM's dataset and the output directory as they
//! were.

use imgadm_tests::harness::*;
use imgadm_tests::vms::*;

#[test]
fn create_then_install_full_and_incremental_for_every_compression() {
    let w = World::new(Driver::Zfs);
    for (compression, ext) in [("none", ""), ("gzip", ".gz"), ("bzip2", ".bz2"), ("xz", ".xz")] {
        let base_files: &[(&str, &[u8])] = &[("etc/motd", b"hello base\n"), ("bin/tool", &[7u8; 5000])];
        let vm = make_vm(&w, None, base_files);
        let out = out_dir(&w, &format!("base-{compression}"));
        let run = create(&w, &[
            "-c", compression, "-o", out.to_str().unwrap(), &vm,
            "name=My Base", "version=1.0.0", "type=zone-dataset", "os=smartos", "requirements={\"min_ram\":512}",
        ])
        .ok();
        assert!(run.stdout.contains(&format!("Snapshotting to \"{}/{vm}@final\"", w.pool)), "{}", run.stdout);
        assert!(run.stdout.contains("Manifest:"), "{}", run.stdout);
        let manifest_path = out.join("my-base-1.0.0.imgmanifest");
        let file_path = out.join(format!("my-base-1.0.0.zfs{ext}"));
        assert_eq!(dir_listing(&out), ["my-base-1.0.0.imgmanifest".to_string(), format!("my-base-1.0.0.zfs{ext}")]);
        let manifest = manifest_at(&manifest_path);
        let base = manifest["uuid"].as_str().unwrap().to_string();
        let file = std::fs::read(&file_path).unwrap();
        assert_eq!(manifest["files"][0]["size"], file.len());
        assert_eq!(manifest["files"][0]["compression"], compression);
        assert_eq!(manifest["files"][0]["sha1"], imgadm_tests::images::sha1_hex(&file));
        assert!(manifest.get("origin").is_none());
        assert!(run.stdout.contains(&format!("Created image {base} (My Base@1.0.0)")), "{}", run.stdout);
        // The VM's @final is gone again: the image lives in its file.
        assert!(snapshots(&w, &format!("{}/{vm}", w.pool)).is_empty());

        w.install(&manifest_path, &file_path).ok();
        let installed = snapshots(&w, &format!("{}/{base}", w.pool));
        assert_eq!(installed, [format!("{}/{base}@final\t{}", w.pool, manifest["files"][0]["dataset_guid"].as_str().unwrap())]);
        assert_eq!(files_of(&w, &format!("{}/{base}@final", w.pool)), sorted(base_files));

        // Incremental: a VM cloned from the installed image, changed.
        let child_files: &[(&str, &[u8])] = &[("etc/motd", b"hello child\n"), ("var/data", &[9u8; 3000])];
        let vm2 = make_vm(&w, Some(&base), child_files);
        let out2 = out_dir(&w, &format!("child-{compression}"));
        let prefix = out2.join("child");
        let run = create(&w, &["-i", "-c", compression, "-o", prefix.to_str().unwrap(), &vm2, "name=child", "version=2.0.0"]).ok();
        assert!(run.stdout.contains(&format!("Inheriting from origin image {base} (My Base 1.0.0)")), "{}", run.stdout);
        let child_manifest = manifest_at(&out2.join("child.imgmanifest"));
        let child = child_manifest["uuid"].as_str().unwrap().to_string();
        assert_eq!(child_manifest["origin"], base.as_str());
        assert_eq!(child_manifest["type"], "zone-dataset");
        assert_eq!(child_manifest["os"], "smartos");
        assert_eq!(child_manifest["requirements"]["min_ram"], 512);
        w.install(&out2.join("child.imgmanifest"), &out2.join(format!("child.zfs{ext}"))).ok();
        let expected = sorted(&[base_files[1], child_files[0], child_files[1]]);
        assert_eq!(files_of(&w, &format!("{}/{child}@final", w.pool)), expected);

        let ancestry = w.imgadm(&["ancestry", "-H", "-o", "uuid", "-P", &w.pool, &child]).ok().stdout;
        assert_eq!(ancestry.lines().collect::<Vec<_>>(), [child.as_str(), base.as_str()]);
    }
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let create_op = ops.as_array().unwrap().iter().find(|o| o["verb"] == "create").unwrap();
    let steps: Vec<&str> = create_op["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["lock", "check", "snapshot", "send", "compress", "manifest", "cleanup", "unlock"]);
}


/// Installs a two-image chain made by create; returns (base, child).
fn chain(w: &World) -> (String, String) {
    let vm = make_vm(w, None, &[("a", b"a")]);
    let out = out_dir(w, "chain");
    create(w, &["-o", out.join("base").to_str().unwrap(), &vm, "name=base", "version=1.0.0", "type=zone-dataset", "os=smartos"]).ok();
    let base = manifest_at(&out.join("base.imgmanifest"))["uuid"].as_str().unwrap().to_string();
    w.install(&out.join("base.imgmanifest"), &out.join("base.zfs")).ok();
    let vm2 = make_vm(w, Some(&base), &[("b", b"b")]);
    create(w, &["-i", "-o", out.join("child").to_str().unwrap(), &vm2, "name=child", "version=1.0.0"]).ok();
    let child = manifest_at(&out.join("child.imgmanifest"))["uuid"].as_str().unwrap().to_string();
    w.install(&out.join("child.imgmanifest"), &out.join("child.zfs")).ok();
    (base, child)
}

#[test]
fn max_origin_depth_refuses_a_too_deep_chain_and_an_existing_final_is_restored() {
    let w = World::new(Driver::Zfs);
    let (_, child) = chain(&w);
    let vm = make_vm(&w, Some(&child), &[("c", b"c")]);
    let dataset = format!("{}/{vm}", w.pool);
    // A @final the VM already had is moved aside and given back.
    w.zpool().unwrap().zfs(&["snapshot", &format!("{dataset}@final")]);
    let before = snapshots(&w, &dataset);
    let out = out_dir(&w, "deep");
    let template = out.join("x");
    create(&w, &["-i", "--max-origin-depth", "2", "-o", template.to_str().unwrap(), &vm, "name=x", "version=1.0.0"])
        .fails_with(1, "MaxOriginDepth");
    assert_eq!(snapshots(&w, &dataset), before);
    assert!(dir_listing(&out).is_empty());
    create(&w, &["-i", "--max-origin-depth", "1", &vm]).fails_with(2, "Usage");

    let run = create(&w, &["-i", "--max-origin-depth", "3", "-o", template.to_str().unwrap(), &vm, "name=x", "version=1.0.0"]).ok();
    assert!(run.stdout.contains("Moving existing @final snapshot out of the way"), "{}", run.stdout);
    assert_eq!(snapshots(&w, &dataset), before, "the VM's own @final is back, nothing else left");
    assert_eq!(dir_listing(&out), ["x.imgmanifest", "x.zfs"]);
}

#[test]
fn refusals_touch_nothing() {
    let w = World::new(Driver::Zfs);
    let vm = make_vm(&w, None, &[("a", b"a")]);
    let dataset = format!("{}/{vm}", w.pool);
    let out = out_dir(&w, "refused");
    let o = out.join("x");
    let o = o.to_str().unwrap();
    let script = w.write("prep.sh", b"#!/bin/sh\n");
    let run = create(&w, &["-s", script.to_str().unwrap(), "-o", o, &vm, "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos"])
        .fails_with(1, "NotSupported");
    assert!(run.stderr.contains("vmadm"), "{}", run.stderr);
    create(&w, &["-i", "-o", o, &vm, "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos"]).fails_with(1, "VmHasNoOrigin");
    create(&w, &["-o", o, &vm, "name=x"]).fails_with(1, "ManifestValidation");
    let missing = uuid::Uuid::new_v4().to_string();
    create(&w, &["-o", o, &missing, "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos"]).fails_with(1, "VmNotFound");
    let run = create(&w, &["-c", "lz4", &vm]).fails_with(2, "Usage");
    assert!(run.stderr.contains(r#"invalid -c,--compression "lz4": must be one of "none", "bzip2", "gzip", "xz""#), "{}", run.stderr);
    let run = create(&w, &[&vm, "name"]).fails_with(2, "Usage");
    assert!(run.stderr.contains(r#"invalid manifest field arg "name": must match "<field>=<value>""#), "{}", run.stderr);
    let bad = w.write("bad.json", b"{not json");
    let run = create(&w, &["-m", bad.to_str().unwrap(), &vm]).fails_with(2, "Usage");
    assert!(run.stderr.contains("invalid manifest JSON in"), "{}", run.stderr);
    create(&w, &["-o", o, "-p", "http://127.0.0.1:1", &vm]).fails_with(2, "Usage");
    create(&w, &["NOT-A-UUID"]).fails_with(1, "InvalidUUID");
    // An output directory that does not exist fails the send: rolled back.
    let nowhere = out.join("no/such/dir/x");
    create(&w, &["-o", nowhere.to_str().unwrap(), &vm, "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos"])
        .fails_with(1, "FileSystem");
    assert!(snapshots(&w, &dataset).is_empty());
    assert!(dir_listing(&out).is_empty());
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    assert!(ops.as_array().unwrap().iter().all(|o| o["verb"] == "create" && o["state"] == "failed"), "{ops}");
}

#[test]
fn create_on_the_dir_driver_is_refused() {
    let w = World::new(Driver::Dir);
    let vm = uuid::Uuid::new_v4().to_string();
    let run = create(&w, &[&vm, "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos"]).fails_with(1, "NotSupported");
    assert!(run.stderr.contains("dir driver"), "{}", run.stderr);
    assert!(dir_listing(w.work.path()).is_empty());
}

#[test]
fn a_create_killed_mid_send_rolls_back_or_resumes() {
    let w = World::new(Driver::Zfs);
    let vm = make_vm(&w, None, &[("big", &vec![3u8; 2 << 20])]);
    let dataset = format!("{}/{vm}", w.pool);
    w.zpool().unwrap().zfs(&["snapshot", &format!("{dataset}@final")]);
    let before = snapshots(&w, &dataset);
    let out = out_dir(&w, "killed");
    let o = out.join("x");
    let argv = ["create", "-c", "gzip", "-o", o.to_str().unwrap(), &vm, "name=x", "version=1.0.0", "type=zone-dataset", "os=smartos"];
    for failpoint in ["send:during", "compress:after"] {
        let killed = w.command().args(argv).env("IMGADM_FAILPOINT", failpoint).output().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed.status), Some(9), "{failpoint}");
        let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
        let id = ops.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
        let run = w.imgadm(&["journal", "rollback", &id]).ok();
        assert!(run.stdout.contains("Rolled back"), "{}", run.stdout);
        assert_eq!(snapshots(&w, &dataset), before, "{failpoint}");
        assert!(dir_listing(&out).is_empty(), "{failpoint}: {:?}", dir_listing(&out));
    }
    // Killed, then the same command again: the create is finished.
    let killed = w.command().args(argv).env("IMGADM_FAILPOINT", "send:during").output().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed.status), Some(9));
    let run = w.imgadm(&argv).ok();
    assert!(run.stdout.contains("Resuming interrupted create"), "{}", run.stdout);
    assert_eq!(snapshots(&w, &dataset), before);
    assert_eq!(dir_listing(&out), ["x.imgmanifest", "x.zfs.gz"]);
    let manifest = manifest_at(&out.join("x.imgmanifest"));
    assert_eq!(manifest["files"][0]["sha1"], imgadm_tests::images::sha1_hex(&std::fs::read(out.join("x.zfs.gz")).unwrap()));
}
