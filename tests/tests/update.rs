//! `imgadm update`: an image installed by a plain `zfs recv` (no manifest
//! cache, its snapshot not called `@final`) gets its manifest and `@final`
//! from a source that knows its `dataset_guid`; `-n` changes nothing;
//! changed manifests are refreshed field by field; unknown uuids are a
//! usage error; the dir pool gets the cache part.

use std::io::Write;
use std::process::{Command, Stdio};

use imgadm_tests::harness::*;
use imgadm_tests::images::*;
use imgadm_tests::imgapi_server::{FileCompression, TestImgapi};
use imgadm_tests::zfs::stream_guids;
use serde_json::{json, Value};

/// `zfs recv -u POOL/UUID` of a fresh stream, its snapshot renamed `@orig`,
/// as an operator restoring an image by hand leaves it. Returns the
/// snapshot's guid.
fn recv_by_hand(w: &World, uuid: &str) -> u64 {
    let z = w.zpool().unwrap();
    let stream = z.make_stream(&[("etc/motd", uuid.as_bytes())], None);
    let dataset = format!("{}/{uuid}", w.pool);
    let mut recv = Command::new("zfs").args(["recv", "-u", &dataset]).stdin(Stdio::piped()).spawn().unwrap();
    recv.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(recv.wait().unwrap().success());
    z.zfs(&["rename", &format!("{dataset}@final"), &format!("{dataset}@orig")]);
    stream_guids(&stream).0
}

fn manifest(uuid: &str, guid: Option<u64>) -> Value {
    let mut file = json!({"sha1": "0", "size": 1, "compression": "none"});
    if let Some(guid) = guid {
        file["dataset_guid"] = json!(guid.to_string());
    }
    json!({
        "v": 2, "uuid": uuid, "name": "byhand", "version": "1.0.0", "type": "zone-dataset", "os": "smartos",
        "published_at": "2026-11-23T15:49:00.000Z", "files": [file],
    })
}

/// `NAME\tGUID` of the image's snapshots.
fn snapshots(w: &World, uuid: &str) -> String {
    let out = w.zpool().unwrap().zfs(&["get", "-Hp", "-r", "-d", "1", "-o", "name,value", "guid", &format!("{}/{uuid}", w.pool)]);
    out.lines().filter(|l| l.contains('@')).collect::<Vec<_>>().join("\n")
}

#[test]
fn an_image_received_by_hand_gets_its_manifest_and_final() {
    let server = TestImgapi::start();
    let w = World::new(Driver::Zfs);
    w.use_sources(&[&server.url()]);
    let image = uuid::Uuid::new_v4().to_string();
    let guid = recv_by_hand(&w, &image);
    server.add_image(manifest(&image, Some(guid)), b"x".to_vec(), FileCompression::Uncompressed);
    // One the source knows without a dataset_guid: warned about, left alone.
    let unknown_guid = uuid::Uuid::new_v4().to_string();
    recv_by_hand(&w, &unknown_guid);
    server.add_image(manifest(&unknown_guid, None), b"x".to_vec(), FileCompression::Uncompressed);
    let url = server.url();
    let before = (snapshots(&w, &image), w.state_files());

    let run = w.imgadm(&["update", "-n", &image]).ok();
    assert!(run.stdout.contains(&format!("[dry-run] Added manifest info for image {image} from \"{url}\"")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("[dry-run] Renamed image {image} original snapshot from {0}/{image}@orig to {0}/{image}@final", w.pool)), "{}", run.stdout);
    assert_eq!((snapshots(&w, &image), w.state_files()), before, "-n changed something");
    assert!(w.imgadm(&["journal", "list", "-j"]).ok().json().as_array().unwrap().is_empty());

    let run = w.imgadm(&["update"]).ok();
    assert!(run.stdout.contains(&format!("Added manifest info for image {image} from \"{url}\"")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("Renamed image {image} original snapshot from {0}/{image}@orig to {0}/{image}@final", w.pool)), "{}", run.stdout);
    assert!(run.stderr.contains(&format!("imgadm: warn: cannot determine original snapshot for image \"{unknown_guid}\" (source info has no \"dataset_guid\")")), "{}", run.stderr);
    assert_eq!(snapshots(&w, &image).trim(), format!("{0}/{image}@final\t{guid}", w.pool));
    let info = w.imgadm(&["get", "-P", &w.pool, &image]).ok().json();
    assert_eq!(info["manifest"]["name"], "byhand");
    assert_eq!(info["source"], url.as_str());

    // The source's manifest changes: the cache follows, field by field.
    let mut changed = manifest(&image, Some(guid));
    changed["description"] = json!("now described");
    changed["requirements"] = json!({"min_ram": 512});
    server.add_image(changed, b"x".to_vec(), FileCompression::Uncompressed);
    let run = w.imgadm(&["update", &image]).ok();
    assert_eq!(
        run.stdout.trim(),
        format!("Updated 2 manifest fields for image {image} from \"{url}\": description, requirements.min_ram")
    );
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let last = ops.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["verb"], "update");
    assert_eq!(last["state"], "succeeded");

    // Killed after its rename, rolled back: the snapshot and the cache are
    // as they were before.
    let third = uuid::Uuid::new_v4().to_string();
    let third_guid = recv_by_hand(&w, &third);
    server.add_image(manifest(&third, Some(third_guid)), b"x".to_vec(), FileCompression::Uncompressed);
    let before = (snapshots(&w, &third), w.state_files());
    let killed = w.command().args(["update", &third]).env("IMGADM_FAILPOINT", "final:after").output().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed.status), Some(9));
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let id = ops.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    w.imgadm(&["journal", "rollback", &id]).ok();
    assert_eq!((snapshots(&w, &third), w.state_files()), before);
}

#[test]
fn update_of_an_image_not_installed_is_a_usage_error() {
    let w = World::new(Driver::Dir);
    w.install_example_base().ok();
    let missing = uuid::Uuid::new_v4().to_string();
    let run = w.imgadm(&["update", &missing, BASE_UUID]).fails_with(2, "Usage");
    assert!(run.stderr.contains(&format!("no installed image with the given UUID(s): {missing}")), "{}", run.stderr);
}

#[test]
fn update_on_the_dir_pool_refreshes_the_cache() {
    let server = TestImgapi::start();
    let w = World::new(Driver::Dir);
    w.use_sources(&[&server.url()]);
    w.install_example_base().ok();
    let cache = w.state.path().join("images").join(format!("zones-{BASE_UUID}.json"));
    std::fs::remove_file(&cache).unwrap();
    let mut served = example_manifest(BASE_MANIFEST);
    served["description"] = json!("served");
    server.add_image(served, read_example(BASE_FILE), FileCompression::Gzip);
    let run = w.imgadm(&["update"]).ok();
    assert_eq!(run.stdout.trim(), format!("Added manifest info for image {BASE_UUID} from \"{}\"", server.url()));
    let info = w.imgadm(&["get", BASE_UUID]).ok().json();
    assert_eq!(info["manifest"]["description"], "served");
    // Nothing changed since: nothing to say, nothing written.
    let run = w.imgadm(&["update"]).ok();
    assert_eq!(run.stdout.trim(), "");
}
