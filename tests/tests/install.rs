//! install -> list -> get -> ancestry -> delete, and every way an install
//! can be refused, on both pool kinds: a real zfs-fuse pool and the dir pool.

use imgadm_tests::harness::*;
use imgadm_tests::images::*;
use imgadm_tests::on_both_pools;
use serde_json::{json, Value};

on_both_pools!(
    full_image_install_list_get_ancestry_delete,
    incremental_image_installs_as_clone_and_protects_its_origin,
    installing_twice_skips,
    wrong_sha1_is_refused_and_leaves_nothing,
    wrong_size_is_refused_and_leaves_nothing,
    truncated_stream_is_refused_and_leaves_nothing,
    corrupt_gzip_bzip2_xz_are_refused_and_leave_nothing,
    every_compression_installs,
    stream_from_another_origin_is_refused,
    manifest_for_another_file_is_refused,
    bad_manifests_are_refused_with_every_problem,
    bad_uuids_are_refused,
    missing_origin_is_refused_before_any_data,
    three_concurrent_installs_make_one_dataset,
    not_installed_image_exits_3,
);

fn full_image_install_list_get_ancestry_delete(driver: Driver) {
    let w = World::new(driver);
    let run = w.install_example_base().ok();
    assert!(run.stdout.contains(&format!("Installed image {BASE_UUID} (example-base@1.0.0)")), "{}", run.stdout);
    assert_eq!(w.listed(), vec![BASE_UUID.to_string()]);

    let table = w.imgadm(&["list", &format!("zpool={}", w.pool)]).ok().stdout;
    let mut lines = table.lines();
    assert_eq!(lines.next(), Some("UUID                                  NAME          VERSION  OS       TYPE          PUB"));
    assert_eq!(lines.next(), Some(&*format!("{BASE_UUID}  example-base  1.0.0    smartos  zone-dataset  2026-11-23")));

    let info = w.imgadm(&["get", "-P", &w.pool, BASE_UUID]).ok().json();
    assert_eq!(info["manifest"]["name"], "example-base");
    assert_eq!(info["zpool"], w.pool.as_str());
    assert_eq!(info["driver"], driver.name());
    assert!(info.get("source").is_none());

    let children = w.imgadm(&["get", "-r", "-P", &w.pool, BASE_UUID]).ok().json();
    assert_eq!(children["children"]["snapshots"], json!([format!("{}/{BASE_UUID}@final", w.pool)]));
    assert_eq!(children["children"]["clones"], json!([]));

    let ancestry = w.imgadm(&["ancestry", "-P", &w.pool, BASE_UUID]).ok().stdout;
    assert_eq!(ancestry.lines().count(), 2);
    assert!(ancestry.starts_with("UUID "));

    let listed = w.imgadm(&["list", "-j", &format!("zpool={}", w.pool)]).ok().json();
    assert_eq!(listed[0]["manifest"]["uuid"], BASE_UUID);
    assert_eq!(listed[0]["driver"], driver.name());
    assert!(listed[0]["manifest"].get("pub").is_none(), "computed fields leak into -j");

    let run = w.imgadm(&["delete", "-P", &w.pool, BASE_UUID]).ok();
    assert_eq!(run.stdout.trim(), format!("Deleted image {BASE_UUID}"));
    assert!(w.listed().is_empty());
    w.imgadm(&["get", "-P", &w.pool, BASE_UUID]).fails_with(3, "ImageNotInstalled");
    assert_nothing_left(&w);

    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let verbs: Vec<&str> = ops.as_array().unwrap().iter().map(|o| o["verb"].as_str().unwrap()).collect();
    assert_eq!(verbs, ["install", "delete"]);
    assert!(ops.as_array().unwrap().iter().all(|o| o["state"] == "succeeded"));
    let steps: Vec<&str> = ops[0]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["validate", "lock", "verify", "recv", "final", "rename", "cache", "unlock"]);
}

fn incremental_image_installs_as_clone_and_protects_its_origin(driver: Driver) {
    let w = World::new(driver);
    w.install_example_base().ok();
    w.install_example_child().ok();
    let mut listed = w.listed();
    listed.sort();
    assert_eq!(listed, vec![BASE_UUID.to_string(), CHILD_UUID.to_string()]);

    let ancestry = w.imgadm(&["ancestry", "-P", &w.pool, "-H", "-o", "uuid", CHILD_UUID]).ok().stdout;
    assert_eq!(ancestry, format!("{CHILD_UUID}\n{BASE_UUID}\n"));
    let chain = w.imgadm(&["ancestry", "-j", "-P", &w.pool, CHILD_UUID]).ok().json();
    assert_eq!(chain.as_array().unwrap().len(), 2);

    let base = w.imgadm(&["get", "-r", "-P", &w.pool, BASE_UUID]).ok().json();
    assert_eq!(base["children"]["clones"], json!([format!("{}/{CHILD_UUID}", w.pool)]));
    let clones = w.imgadm(&["list", "-H", "-o", "uuid,clones", &format!("zpool={}", w.pool), &format!("uuid={BASE_UUID}")]).ok();
    assert_eq!(clones.stdout.trim(), format!("{BASE_UUID}  1"));

    let refused = w.imgadm(&["delete", "-P", &w.pool, BASE_UUID]).fails_with(1, "ImageHasDependentClones");
    assert!(refused.stderr.contains(&format!("{}/{CHILD_UUID}", w.pool)), "{}", refused.stderr);
    assert_eq!(w.listed().len(), 2, "a refused delete deleted something");

    w.imgadm(&["delete", "-P", &w.pool, CHILD_UUID]).ok();
    w.imgadm(&["delete", "-P", &w.pool, BASE_UUID]).ok();
    assert!(w.listed().is_empty());
    assert_nothing_left(&w);
}

fn installing_twice_skips(driver: Driver) {
    let w = World::new(driver);
    w.install_example_base().ok();
    let again = w.install_example_base().ok();
    assert!(again.stdout.contains("is already installed, skipping"), "{}", again.stdout);
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    assert_eq!(ops.as_array().unwrap().len(), 1, "a skipped install is not an operation");
}

/// Installs `manifest` + `file`, expects `code`, then checks that nothing
/// of the attempt is left and the journal recorded the failure.
fn refused(w: &World, manifest: &Value, file: &[u8], status: i32, code: &str) -> Run {
    let (m, f) = write_pair(w.work.path(), "bad", manifest, file);
    let before = w.state_files();
    let images_before = w.listed();
    let run = w.install(&m, &f).fails_with(status, code);
    assert_eq!(w.state_files(), before, "the failed install left files behind");
    assert_eq!(w.listed(), images_before, "the failed install left an image");
    assert_no_partial(w);
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let last = ops.as_array().unwrap().last().expect("the failure is journaled").clone();
    assert_eq!(last["verb"], "install");
    assert_eq!(last["state"], "failed", "{last}");
    run
}

fn wrong_sha1_is_refused_and_leaves_nothing(driver: Driver) {
    let w = World::new(driver);
    let file = read_example(BASE_FILE);
    let mut manifest = describe(example_manifest(BASE_MANIFEST), &file, "gzip");
    manifest["files"][0]["sha1"] = json!("0000000000000000000000000000000000000000");
    let run = refused(&w, &manifest, &file, 1, "DownloadError");
    assert!(run.stderr.contains("checksum"), "{}", run.stderr);
}

fn wrong_size_is_refused_and_leaves_nothing(driver: Driver) {
    let w = World::new(driver);
    let file = read_example(BASE_FILE);
    let mut manifest = describe(example_manifest(BASE_MANIFEST), &file, "gzip");
    manifest["files"][0]["size"] = json!(file.len() + 10);
    let run = refused(&w, &manifest, &file, 1, "DownloadError");
    assert!(run.stderr.contains("size"), "{}", run.stderr);
}

fn truncated_stream_is_refused_and_leaves_nothing(driver: Driver) {
    let w = World::new(driver);
    let raw = raw_stream(BASE_FILE);
    for cut in [100, raw.len() / 2, raw.len() - 8] {
        let file = raw[..cut].to_vec();
        let manifest = describe(example_manifest(BASE_MANIFEST), &file, "none");
        let run = w.install(&write_pair(w.work.path(), "cut", &manifest, &file).0, &w.work.path().join("cut.zfs"));
        assert_ne!(run.status, 0, "a stream cut at {cut} installed");
        assert!(w.listed().is_empty());
        assert_no_partial(&w);
    }
}

fn corrupt_gzip_bzip2_xz_are_refused_and_leave_nothing(driver: Driver) {
    let w = World::new(driver);
    let raw = raw_stream(BASE_FILE);
    for compression in ["gzip", "bzip2", "xz"] {
        let file = corrupt_middle(&compress(&raw, compression));
        // The manifest describes the corrupt file truthfully: the decompressor must catch it.
        let manifest = describe(example_manifest(BASE_MANIFEST), &file, compression);
        let (m, f) = write_pair(w.work.path(), compression, &manifest, &file);
        let run = w.install(&m, &f);
        assert_eq!(run.status, 1, "corrupt {compression} was not refused: {}", run.stderr);
        assert!(
            run.stderr.contains("UncompressionError") || run.stderr.contains("InvalidStream"),
            "corrupt {compression}: {}",
            run.stderr
        );
        assert!(w.listed().is_empty());
        assert_no_partial(&w);
    }
}

fn every_compression_installs(driver: Driver) {
    let w = World::new(driver);
    let raw = raw_stream(BASE_FILE);
    for compression in ["none", "gzip", "bzip2", "xz"] {
        let file = compress(&raw, compression);
        let manifest = describe(example_manifest(BASE_MANIFEST), &file, compression);
        let (m, f) = write_pair(w.work.path(), compression, &manifest, &file);
        w.install(&m, &f).ok();
        assert_eq!(w.listed(), vec![BASE_UUID.to_string()], "{compression}");
        w.imgadm(&["delete", "-P", &w.pool, BASE_UUID]).ok();
    }
    // A manifest that says gzip for an xz file is refused before any data moves.
    let file = compress(&raw, "xz");
    let manifest = describe(example_manifest(BASE_MANIFEST), &file, "gzip");
    let run = refused(&w, &manifest, &file, 1, "UncompressionError");
    assert!(run.stderr.contains("xz"), "the error should say what the file is: {}", run.stderr);
}

fn stream_from_another_origin_is_refused(driver: Driver) {
    let w = World::new(driver);
    // The base installed under another uuid: its @final has the base's guid...
    let file = read_example(BASE_FILE);
    let mut other = describe(example_manifest(BASE_MANIFEST), &file, "gzip");
    other["uuid"] = json!("11111111-2222-4333-8444-555555555555");
    other["name"] = json!("other-base");
    let (m, f) = write_pair(w.work.path(), "other", &other, &file);
    w.install(&m, &f).ok();
    // ...but a child whose origin is a *different* image with another guid must fail:
    // a full stream presented as incremental, and an incremental whose fromguid differs.
    let raw = raw_stream(BASE_FILE);
    let mut child = describe(example_manifest(CHILD_MANIFEST), &raw, "none");
    child["origin"] = json!("11111111-2222-4333-8444-555555555555");
    let run = refused(&w, &child, &raw, 1, "InvalidStream");
    assert!(run.stderr.contains("guid"), "{}", run.stderr);
}

fn manifest_for_another_file_is_refused(driver: Driver) {
    let w = World::new(driver);
    w.install_example_base().ok();
    // The child's manifest (uuid, origin, sha1) with the base's file.
    let file = read_example(BASE_FILE);
    refused(&w, &example_manifest(CHILD_MANIFEST), &file, 1, "DownloadError");
}

fn bad_manifests_are_refused_with_every_problem(driver: Driver) {
    let w = World::new(driver);
    let file = read_example(BASE_FILE);
    let good = describe(example_manifest(BASE_MANIFEST), &file, "gzip");

    let mut no_name = good.clone();
    no_name.as_object_mut().unwrap().remove("name");
    let run = refused(&w, &no_name, &file, 1, "ManifestValidation");
    assert!(run.stderr.contains("name (MissingParameter)"), "{}", run.stderr);

    let mut bad_type_os = good.clone();
    bad_type_os["type"] = json!("floppy");
    bad_type_os["os"] = json!("amiga");
    let run = refused(&w, &bad_type_os, &file, 1, "ManifestValidation");
    assert!(run.stderr.contains("type") && run.stderr.contains("os"), "every problem at once: {}", run.stderr);

    let (m, f) = write_pair(w.work.path(), "notjson", &good, &file);
    std::fs::write(&m, b"{ not json").unwrap();
    w.install(&m, &f).fails_with(1, "InvalidManifest");

    let missing = w.work.path().join("does-not-exist.imgmanifest");
    let run = w.install(&missing, &f).fails_with(2, "Usage");
    assert!(run.stderr.contains("manifest path does not exist"), "{}", run.stderr);
    assert!(w.listed().is_empty());
}

fn bad_uuids_are_refused(driver: Driver) {
    let w = World::new(driver);
    let file = read_example(BASE_FILE);
    for bad in ["../x", "5b1e0c3e 6f43 4c1a 9d5e 3a0f2b7c8d01", "5B1E0C3E-6F43-4C1A-9D5E-3A0F2B7C8D01"] {
        let mut manifest = describe(example_manifest(BASE_MANIFEST), &file, "gzip");
        manifest["uuid"] = json!(bad);
        refused(&w, &manifest, &file, 1, "InvalidUUID");
        w.imgadm(&["get", "-P", &w.pool, bad]).fails_with(1, "InvalidUUID");
        w.imgadm(&["delete", "-P", &w.pool, bad]).fails_with(1, "InvalidUUID");
    }
    assert!(!w.state.path().parent().unwrap().join("x").exists());
}

fn missing_origin_is_refused_before_any_data(driver: Driver) {
    let w = World::new(driver);
    let run = w.install_example_child().fails_with(3, "OriginNotInstalled");
    assert!(run.stderr.contains(BASE_UUID), "{}", run.stderr);
    assert!(w.listed().is_empty());
    assert_no_partial(&w);
}

fn three_concurrent_installs_make_one_dataset(driver: Driver) {
    let w = World::new(driver);
    let children: Vec<_> = (0..3)
        .map(|_| {
            w.command()
                .args(["install", "-P", &w.pool, "-m"])
                .arg(example(BASE_MANIFEST))
                .arg("-f")
                .arg(example(BASE_FILE))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn imgadm")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(w.listed(), vec![BASE_UUID.to_string()]);
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let installs: Vec<&Value> = ops.as_array().unwrap().iter().filter(|o| o["verb"] == "install").collect();
    assert_eq!(installs.len(), 1, "one import in the journal: {ops}");
    assert_eq!(installs[0]["state"], "succeeded");
}

fn not_installed_image_exits_3(driver: Driver) {
    let w = World::new(driver);
    let bogus = "00000000-1111-4222-8333-444444444444";
    let run = w.imgadm(&["info", "-P", &w.pool, bogus]).fails_with(3, "ImageNotInstalled");
    assert!(run.stdout.is_empty());
    w.imgadm(&["delete", "-P", &w.pool, bogus]).fails_with(3, "ImageNotInstalled");
    w.imgadm(&["ancestry", "-P", &w.pool, bogus]).fails_with(3, "ImageNotInstalled");
}

/// No `-partial` dataset on the pool.
fn assert_no_partial(w: &World) {
    let datasets = match w.zpool() {
        Some(z) => z.datasets(),
        None => {
            let dir = w.state.path().join("pools").join(&w.pool).join("datasets");
            std::fs::read_dir(&dir)
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default()
        }
    };
    assert!(datasets.iter().all(|d| !d.contains("-partial")), "a -partial dataset is left: {datasets:?}");
}

/// No dataset, cache file, download or kept file of any image.
fn assert_nothing_left(w: &World) {
    assert_no_partial(w);
    let files: Vec<String> = w.state_files().into_iter().filter(|f| !f.ends_with("imgadm.conf")).collect();
    assert!(files.is_empty(), "files left behind: {files:?}");
    if let Some(z) = w.zpool() {
        let datasets = z.datasets();
        assert!(datasets.iter().all(|d| d == &w.pool), "datasets left behind: {datasets:?}");
    }
}
