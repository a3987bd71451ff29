//! `imgadm journal replay --onto POOL [--dry-run]`: the installed image set
//! rebuilt on another pool from what the journal recorded (install-sourced
//! and import-sourced images, origins first), on the dir pool and on zfs,
//! and an image whose file changed since its install listed as not
//! sourceable.

use std::path::PathBuf;

use imgadm_tests::harness::*;
use imgadm_tests::images::*;
use imgadm_tests::imgapi_server::{FileCompression, TestImgapi};
use imgadm_tests::zfs::TestZpool;
use serde_json::{json, Value};

const GRANDCHILD_UUID: &str = "d3f0a6b2-7c41-4e9a-8b15-2f6c9e0d4a13";

fn fixture(name: &str) -> Vec<u8> {
    let path = workspace_root().join("tests/fixtures/images").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// An Images API with the example child and grandchild (not the base:
/// the base is installed from a file).
fn child_server() -> TestImgapi {
    let server = TestImgapi::start();
    server.add_image(example_manifest(CHILD_MANIFEST), read_example(CHILD_FILE), FileCompression::Gzip);
    let grandchild: Value = serde_json::from_slice(&fixture("example-grandchild-1.0.0.imgmanifest")).expect("manifest JSON");
    server.add_image(grandchild, fixture("example-grandchild-1.0.0.zfs.gz"), FileCompression::Gzip);
    server
}

fn use_sources(w: &World, url: &str) {
    let config = json!({"sources": [{"type": "imgapi", "url": url}]});
    std::fs::write(w.state.path().join("imgadm.conf"), config.to_string()).expect("write imgadm.conf");
}

/// The example base installed from a copy of its file in the work dir
/// (which a test may change afterwards); returns the copy's path.
fn install_base_from_copy(w: &World) -> PathBuf {
    let file = w.write("base.zfs.gz", &read_example(BASE_FILE));
    w.install(&example(BASE_MANIFEST), &file).ok();
    file
}

fn on_pool(w: &World, pool: &str, image: &str) -> bool {
    w.imgadm(&["get", "-P", pool, image]).status == 0
}

/// Base installed from a file, child and grandchild imported: the dry run
/// says how each would be sourced, origins first, and changes nothing; the
/// replay brings all three over with the same sources; a second replay
/// skips them all.
fn replays_installed_and_imported_images(w: &World, onto: &str) {
    let server = child_server();
    use_sources(w, &server.url());
    let base_file = install_base_from_copy(w);
    w.imgadm(&["import", "-P", &w.pool, GRANDCHILD_UUID]).ok();
    let ops_before = w.imgadm(&["journal", "list", "-j"]).ok().json();

    let dry = w.imgadm(&["journal", "replay", "--onto", onto, "--dry-run"]).ok();
    let expected = [
        format!("install {BASE_UUID} (example-base@1.0.0) from {}", base_file.display()),
        format!("import {CHILD_UUID} (example-child@1.0.0) from {}", server.url()),
        format!("import {GRANDCHILD_UUID} (example-grandchild@1.0.0) from {}", server.url()),
    ];
    assert_eq!(dry.stdout.lines().collect::<Vec<_>>(), expected, "{}", dry.stdout);
    assert_eq!(w.imgadm(&["journal", "list", "-j"]).ok().json(), ops_before, "a dry run journaled something");
    assert!(!on_pool(w, onto, BASE_UUID), "a dry run installed something");

    w.imgadm(&["journal", "replay", "--onto", onto]).ok();
    for image in [BASE_UUID, CHILD_UUID, GRANDCHILD_UUID] {
        assert!(on_pool(w, onto, image), "{image} is not on {onto}");
        assert!(on_pool(w, &w.pool, image), "{image} left {}", w.pool);
    }
    let child = w.imgadm(&["get", "-P", onto, GRANDCHILD_UUID]).ok().json();
    assert_eq!(child["source"], server.url());
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let replayed: Vec<(&str, &str)> = ops.as_array().expect("ops")[ops_before.as_array().expect("ops").len()..]
        .iter()
        .map(|op| (op["verb"].as_str().unwrap_or_default(), op["state"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(replayed, [("install", "succeeded"), ("import", "succeeded"), ("import", "succeeded")]);
    assert_journal_verifies(w, &[&w.pool, onto]);

    let again = w.imgadm(&["journal", "replay", "--onto", onto, "--dry-run"]).ok();
    assert!(again.stdout.lines().all(|l| l.starts_with("skip ")), "{}", again.stdout);
    w.imgadm(&["journal", "replay", "--onto", onto]).ok();
}

/// `journal verify`: the chain is whole and the projection matches these
/// pools (verify looks at every pool of the driver, and other tests' zfs
/// pools come and go meanwhile).
fn assert_journal_verifies(w: &World, pools: &[&str]) {
    let report = w.imgadm(&["journal", "verify", "-j"]).json();
    assert!(report["chain"]["first_bad_seq"].is_null(), "{report}");
    let drift: Vec<&Value> = report["drift"]
        .as_array()
        .expect("drift")
        .iter()
        .filter(|d| pools.iter().any(|p| d["pool"] == *p))
        .collect();
    assert!(drift.is_empty(), "drift: {drift:?}");
}

#[test]
fn replay_from_dir_pool_onto_another_dir_pool() {
    let w = World::new(Driver::Dir);
    replays_installed_and_imported_images(&w, "rebuilt");
}

#[test]
fn replay_from_zfs_pool_onto_another_zfs_pool() {
    let w = World::new(Driver::Zfs);
    let other = TestZpool::create();
    replays_installed_and_imported_images(&w, other.name().as_str());
    let origin = other.zfs(&["get", "-H", "-o", "value", "origin", &format!("{}/{GRANDCHILD_UUID}", other.name())]);
    assert_eq!(origin.trim(), format!("{}/{CHILD_UUID}@final", other.name()));
}

/// The base's file changed after its install: it is listed as not
/// sourceable (dry run and real run), the other image is replayed anyway,
/// and the command exits 1.
#[test]
fn a_file_changed_since_install_is_not_sourceable() {
    let w = World::new(Driver::Dir);
    let base_file = install_base_from_copy(&w);
    let other_stream = TestZpool::create().make_stream(&[("etc/motd", b"another image\n")], None);
    let other_file = compress(&other_stream, "gzip");
    let other_manifest = describe(
        json!({"v": 2, "uuid": "2a7e4c1b-9d3f-4e8a-b6c5-1f0d2e3a4b5c", "name": "other", "version": "1.0.0",
               "type": "zone-dataset", "os": "smartos", "published_at": "2026-11-23T16:00:00.000Z"}),
        &other_file,
        "gzip",
    );
    let (manifest_path, file_path) = write_pair(w.work.path(), "other", &other_manifest, &other_file);
    w.install(&manifest_path, &file_path).ok();
    std::fs::write(&base_file, corrupt_middle(&read_example(BASE_FILE))).expect("change the base's file");

    let dry = w.imgadm(&["journal", "replay", "--onto", "rebuilt", "--dry-run"]).fails_with(1, "NotReplayed");
    let base_line = dry.stdout.lines().find(|l| l.contains(BASE_UUID)).unwrap_or_default().to_string();
    assert!(
        base_line.starts_with(&format!("cannot source {BASE_UUID} (example-base@1.0.0): {} changed", base_file.display())),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("install 2a7e4c1b-9d3f-4e8a-b6c5-1f0d2e3a4b5c (other@1.0.0) from "), "{}", dry.stdout);

    let run = w.imgadm(&["journal", "replay", "--onto", "rebuilt"]).fails_with(1, "NotReplayed");
    assert!(run.stderr.contains(&format!("image {BASE_UUID} (example-base@1.0.0) was not replayed onto rebuilt")), "{}", run.stderr);
    assert!(on_pool(&w, "rebuilt", "2a7e4c1b-9d3f-4e8a-b6c5-1f0d2e3a4b5c"), "the sourceable image was not replayed");
    assert!(!on_pool(&w, "rebuilt", BASE_UUID));
}
