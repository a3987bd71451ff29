//! `imgadm publish` and `create -p` against the test Images API server:
//! published images import on both pool kinds, a create -> publish ->
//! import round trip on zfs-fuse, a failed upload leaves no image on the
//! server, refusals reach no server, and a killed publish rolls back (the
//! image deleted from the server) or resumes.

use std::os::unix::process::ExitStatusExt;

use imgadm_engine::ids::ImageUuid;
use imgadm_tests::harness::*;
use imgadm_tests::images::*;
use imgadm_tests::imgapi_server::TestImgapi;
use imgadm_tests::on_both_pools;
use serde_json::Value;

on_both_pools!(published_examples_import);

fn publish(w: &World, manifest: &str, file: &str, url: &str) -> Run {
    w.imgadm(&["publish", "-q", "-m", &example(manifest).display().to_string(), "-f", &example(file).display().to_string(), url])
}

fn uuid(text: &str) -> ImageUuid {
    ImageUuid::parse(text).unwrap()
}

fn steps_of(op: &Value) -> Vec<String> {
    op["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_string()).collect()
}

fn published_examples_import(driver: Driver) {
    let server = TestImgapi::start();
    let w = World::new(driver);
    let url = server.url();
    let run = publish(&w, BASE_MANIFEST, BASE_FILE, &url).ok();
    let base_file = example(BASE_FILE).display().to_string();
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            format!("Imported image {BASE_UUID} (example-base, 1.0.0, state=unactivated)"),
            format!("Added file \"{base_file}\" (compression \"gzip\") to image {BASE_UUID}"),
            format!("Activated image {BASE_UUID}"),
            format!("Successfully published image {BASE_UUID} to {url}"),
        ]
    );
    publish(&w, CHILD_MANIFEST, CHILD_FILE, &url).ok();
    let served = server.manifest(&uuid(CHILD_UUID)).unwrap();
    let local = example_manifest(CHILD_MANIFEST);
    assert_eq!(served["state"], "active");
    assert_eq!(served["files"][0]["sha1"], local["files"][0]["sha1"]);
    assert_eq!(served["files"][0]["dataset_guid"], local["files"][0]["dataset_guid"]);

    w.use_sources(&[&url]);
    w.imgadm(&["import", "-q", "-P", &w.pool, CHILD_UUID]).ok();
    let mut listed = w.listed();
    listed.sort();
    assert_eq!(listed, [BASE_UUID, CHILD_UUID]);

    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let published: Vec<&Value> = ops.as_array().unwrap().iter().filter(|o| o["verb"] == "publish").collect();
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|o| o["state"] == "succeeded" && steps_of(o) == ["import", "upload", "activate"]));
}

#[test]
fn create_publish_import_round_trip() {
    let server = TestImgapi::start();
    let w = World::new(Driver::Zfs);
    let z = w.zpool().unwrap();
    let vm = uuid::Uuid::new_v4().to_string();
    let dataset = format!("{}/{vm}", w.pool);
    z.create_mounted(&dataset, &[("etc/motd", b"published\n"), ("bin/tool", &[5u8; 4000])]);
    z.zfs(&["unmount", &dataset]);
    // A server that cannot be reached: the publish fails, and the temp
    // files create made for it are removed all the same.
    let run = w
        .imgadm(&["create", "-q", "-p", "http://127.0.0.1:1", &vm, "name=pub", "version=1.0.0", "type=zone-dataset", "os=smartos"])
        .fails_with(1, "ClientError");
    assert!(run.stdout.contains("Saving manifest to"), "{}", run.stdout);
    assert!(std::fs::read_dir(w.state.path().join("tmp")).unwrap().next().is_none(), "temp files left after a failed publish");

    let url = server.url();
    let run = w
        .imgadm(&["create", "-q", "-c", "gzip", "-p", &url, &vm, "name=pub", "version=1.0.0", "type=zone-dataset", "os=smartos"])
        .ok();
    let image = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Successfully published image "))
        .and_then(|rest| rest.strip_suffix(&format!(" to {url}")))
        .unwrap_or_else(|| panic!("no publish line: {}", run.stdout))
        .to_string();
    assert!(run.stdout.contains(&format!("Activated image {image}")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("Sending image file to \"{}/tmp/.imgadm-create-", w.state.path().display())), "{}", run.stdout);
    let tmp: Vec<_> = std::fs::read_dir(w.state.path().join("tmp")).unwrap().flatten().collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    let served = server.manifest(&uuid(&image)).unwrap();
    assert_eq!(served["state"], "active");
    assert_eq!(served["files"][0]["compression"], "gzip");
    let guid = served["files"][0]["dataset_guid"].as_str().expect("create sends dataset_guid").to_string();

    // Imported into another pool, the image is the snapshot create sent:
    // a received snapshot keeps the sent one's guid.
    let other = World::new(Driver::Zfs);
    other.use_sources(&[&url]);
    other.imgadm(&["import", "-q", "-P", &other.pool, &image]).ok();
    let got = other.zpool().unwrap().zfs(&["get", "-Hp", "-o", "value", "guid", &format!("{}/{image}@final", other.pool)]);
    assert_eq!(got.trim(), guid);
    let info = other.imgadm(&["get", "-P", &other.pool, &image]).ok().json();
    assert_eq!(info["manifest"]["name"], "pub");
}

#[test]
fn a_failed_upload_leaves_no_image_on_the_server() {
    let server = TestImgapi::start();
    let w = World::new(Driver::Dir);
    let mut manifest = example_manifest(BASE_MANIFEST);
    manifest["files"][0]["sha1"] = Value::from("0000000000000000000000000000000000000000");
    let bad = w.write("bad-sha1.imgmanifest", &serde_json::to_vec(&manifest).unwrap());
    let run = w
        .imgadm(&["publish", "-q", "-m", bad.to_str().unwrap(), "-f", &example(BASE_FILE).display().to_string(), &server.url()])
        .fails_with(1, "Download");
    assert!(run.stdout.contains("Imported image"), "{}", run.stdout);
    assert!(!run.stderr.contains("Could not delete"), "{}", run.stderr);
    assert!(server.manifest(&uuid(BASE_UUID)).is_none(), "the half-published image is still on the server");
    let methods: Vec<String> = server.requests().iter().map(|r| format!("{} {}", r.method, r.path_and_query)).collect();
    assert!(methods.iter().any(|m| m == &format!("DELETE /images/{BASE_UUID}")), "{methods:?}");

    // An image already on the server is not ours: refused, and kept.
    publish(&w, BASE_MANIFEST, BASE_FILE, &server.url()).ok();
    publish(&w, BASE_MANIFEST, BASE_FILE, &server.url()).fails_with(1, "ImageUuidAlreadyExists");
    assert_eq!(server.manifest(&uuid(BASE_UUID)).unwrap()["state"], "active");
}

#[test]
fn refusals_reach_no_server() {
    let server = TestImgapi::start();
    let w = World::new(Driver::Dir);
    let url = server.url();
    let manifest = example(BASE_MANIFEST).display().to_string();
    let file = example(BASE_FILE).display().to_string();
    let run = w.imgadm(&["publish", "-m", "/no/such.imgmanifest", "-f", &file, &url]).fails_with(2, "Usage");
    assert!(run.stderr.contains("manifest path does not exist: \"/no/such.imgmanifest\""), "{}", run.stderr);
    let run = w.imgadm(&["publish", "-m", &manifest, "-f", "/no/such.zfs", &url]).fails_with(2, "Usage");
    assert!(run.stderr.contains("file path does not exist: \"/no/such.zfs\""), "{}", run.stderr);
    let bad = w.write("bad.json", b"{not json");
    w.imgadm(&["publish", "-m", bad.to_str().unwrap(), "-f", &file, &url]).fails_with(1, "InvalidManifest");
    let short = w.write("short.zfs.gz", b"too short");
    w.imgadm(&["publish", "-m", &manifest, "-f", short.to_str().unwrap(), &url]).fails_with(1, "UploadError");
    w.imgadm(&["publish", "-m", &manifest, "-f", &file, &url, "extra"]).fails_with(2, "Usage");
    w.imgadm(&["publish", "-m", &manifest, "-f", &file]).fails_with(2, "Usage");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn a_killed_publish_rolls_back_or_resumes() {
    let server = TestImgapi::start();
    let w = World::new(Driver::Dir);
    let url = server.url();
    let argv = ["publish", "-q", "-m", &example(BASE_MANIFEST).display().to_string(), "-f", &example(BASE_FILE).display().to_string(), &url]
        .map(str::to_string);
    let killed = w.command().args(&argv).env("IMGADM_FAILPOINT", "upload:during").output().unwrap();
    assert_eq!(killed.status.signal(), Some(9));
    assert_eq!(server.manifest(&uuid(BASE_UUID)).unwrap()["state"], "unactivated");
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let id = ops.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    w.imgadm(&["journal", "rollback", &id]).ok();
    assert!(server.manifest(&uuid(BASE_UUID)).is_none(), "rollback left the image on the server");

    let killed = w.command().args(&argv).env("IMGADM_FAILPOINT", "activate:before").output().unwrap();
    assert_eq!(killed.status.signal(), Some(9));
    let run = w.imgadm(&argv.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    assert!(run.stdout.contains("Resuming interrupted publish"), "{}", run.stdout);
    assert_eq!(server.manifest(&uuid(BASE_UUID)).unwrap()["state"], "active");
}

#[test]
fn an_upload_the_server_stops_taking_times_out_and_leaves_no_image() {
    let server = TestImgapi::start();
    server.stall_uploads();
    let w = World::new(Driver::Dir);
    let run = w
        .command()
        .env("IMGADM_READ_TIMEOUT_SECS", "2")
        .args(["publish", "-q", "-m", &example(BASE_MANIFEST).display().to_string(), "-f", &example(BASE_FILE).display().to_string(), &server.url()])
        .output()
        .unwrap();
    let run = Run::from_output(run).fails_with(1, "ClientError");
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(server.manifest(&uuid(BASE_UUID)).is_none(), "the half-published image is still on the server");
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    assert_eq!(ops[0]["state"], "failed", "{ops}");
}
