//! `list --docker`: docker images only, the heads of their layer chains,
//! one row per tag, in the real imgadm's fixed columns.

use imgadm_tests::harness::*;
use serde_json::{json, Value};

/// An example image's manifest made a docker layer with these tags.
fn docker_manifest(w: &World, name: &str, published_at: &str, tags: Value) -> std::path::PathBuf {
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(example(name)).unwrap()).unwrap();
    manifest["type"] = json!("docker");
    manifest["os"] = json!("linux");
    manifest["published_at"] = json!(published_at);
    manifest["tags"] = tags;
    w.write(name, manifest.to_string().as_bytes())
}

fn docker_layers_list_as_their_heads(driver: Driver) {
    let w = World::new(driver);
    let base = docker_manifest(&w, BASE_MANIFEST, "2026-01-02T03:04:05.678Z", json!({
        "docker:repo": "library/busybox", "docker:id": "sha256:0123456789abcdef0123", "docker:tag:old": true,
    }));
    w.install(&base, &example(BASE_FILE)).ok();
    // A zone image beside them is no docker image.
    let none = w.imgadm(&["list", "--docker", "-H"]).ok().stdout;
    assert_eq!(none.lines().count(), 1, "the base is a head while it has no child: {none}");
    let child = docker_manifest(&w, CHILD_MANIFEST, "2026-02-03T04:05:06Z", json!({
        "docker:repo": "library/busybox", "docker:id": "sha256:fedcba9876543210fedc",
        "docker:tag:latest": true, "docker:tag:1.36": true,
    }));
    w.install(&child, &example(CHILD_FILE)).ok();
    let listed = w.imgadm(&["list", "--docker"]).ok().stdout;
    let lines: Vec<Vec<&str>> = listed.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["UUID", "REPOSITORY", "TAG", "IMAGE_ID", "CREATED"], "{listed}");
    let mut rows = lines[1..].to_vec();
    rows.sort();
    assert_eq!(rows, [
        vec![CHILD_UUID, "library/busybox", "1.36", "fedcba987654", "2026-02-03T04:05:06Z"],
        vec![CHILD_UUID, "library/busybox", "latest", "fedcba987654", "2026-02-03T04:05:06Z"],
    ], "the base layer is the child's origin: not a head\n{listed}");
    // Filters still apply, -H drops the header; plain list shows both layers.
    assert_eq!(w.imgadm(&["list", "--docker", "-H", "name=nomatch"]).ok().stdout, "");
    assert_eq!(w.imgadm(&["list", "-H", "type=docker"]).ok().stdout.lines().count(), 2);
}

imgadm_tests::on_both_pools!(docker_layers_list_as_their_heads);
