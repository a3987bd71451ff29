//! `imgadm import` from a test Images API server into both pool kinds: a
//! 3-image origin chain, resume after kill -9, transfer failures and their
//! retries, concurrent imports, pre-downloaded files, channels.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use imgadm_engine::ids::ImageUuid;
use imgadm_tests::harness::*;
use imgadm_tests::images::*;
use imgadm_tests::imgapi_server::{Channel, FileCompression, TestImgapi};
use imgadm_tests::on_both_pools;
use imgadm_tests::zfs::TestZpool;
use serde_json::{json, Value};

on_both_pools!(
    three_image_chain_imports_base_first,
    a_chain_on_a_terminal_gets_one_download_bar,
    installed_origins_are_skipped,
    resume_after_kill_with_range,
    resume_after_kill_without_range,
    wrong_sha1_fails_and_leaves_nothing,
    cut_connection_is_retried_then_leaves_the_partial,
    a_file_changed_since_the_partial_restarts_from_zero_in_the_same_run,
    stalled_server_times_out_in_bounded_time,
    server_errors_are_retried_and_a_rerun_succeeds,
    concurrent_imports_download_each_image_once,
    pre_downloaded_files,
    channels_with_c_and_s_and_list_source,
    journal_resume_and_rollback_of_an_interrupted_import,
    rerun_after_a_kill_once_the_image_is_in_place_finishes_it,
);

const GRANDCHILD_UUID: &str = "d3f0a6b2-7c41-4e9a-8b15-2f6c9e0d4a13";

fn fixture(name: &str) -> Vec<u8> {
    let path = workspace_root().join("tests/fixtures/images").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn uuid(text: &str) -> ImageUuid {
    ImageUuid::parse(text).expect("uuid")
}

/// A server with example-base <- example-child <- example-grandchild.
fn chain_server() -> TestImgapi {
    let server = TestImgapi::start();
    server.add_image(example_manifest(BASE_MANIFEST), read_example(BASE_FILE), FileCompression::Gzip);
    server.add_image(example_manifest(CHILD_MANIFEST), read_example(CHILD_FILE), FileCompression::Gzip);
    let grandchild: Value =
        serde_json::from_slice(&fixture("example-grandchild-1.0.0.imgmanifest")).expect("manifest JSON");
    server.add_image(grandchild, fixture("example-grandchild-1.0.0.zfs.gz"), FileCompression::Gzip);
    server
}

/// Only these sources, written as the real imgadm writes its config.
fn use_sources(w: &World, urls: &[&str]) {
    let sources: Vec<Value> = urls.iter().map(|u| json!({"type": "imgapi", "url": u})).collect();
    let text = serde_json::to_string_pretty(&json!({"sources": sources})).expect("json");
    std::fs::write(w.state.path().join("imgadm.conf"), text).expect("write config");
}

fn import(w: &World, image: &str) -> Run {
    w.imgadm(&["import", "-P", &w.pool, image])
}

/// Whether the image is on this world's pool. (`list` scans every pool of
/// the driver, and other test binaries' pools come and go meanwhile.)
fn has(w: &World, image: &str) -> bool {
    w.imgadm(&["get", "-P", &w.pool, image]).status == 0
}

fn downloads(w: &World) -> Vec<String> {
    std::fs::read_dir(w.state.path().join("downloads"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Every journal event, in order.
fn events(w: &World) -> Vec<Value> {
    let run = w.imgadm(&["journal", "export"]).ok();
    let mut events: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    events.sort_by_key(|e| e["seq"].as_u64());
    events
}

fn retries(w: &World) -> Vec<Value> {
    events(w).into_iter().filter(|e| e["kind"] == "step-progress" && e["data"].get("attempt").is_some()).collect()
}

fn three_image_chain_imports_base_first(driver: Driver) {
    let server = chain_server();
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let run = import(&w, GRANDCHILD_UUID).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], format!("Importing {GRANDCHILD_UUID} (example-grandchild@1.0.0) from \"{}\"", server.url()));
    assert_eq!(lines[1], format!("Gather image {GRANDCHILD_UUID} ancestry"));
    assert!(lines[2].starts_with("Must download and install 3 images ("), "{}", run.stdout);
    let imported: Vec<&str> = lines.iter().filter(|l| l.starts_with("Imported image ")).copied().collect();
    assert_eq!(
        imported,
        [
            format!("Imported image {BASE_UUID} (example-base@1.0.0)"),
            format!("Imported image {CHILD_UUID} (example-child@1.0.0)"),
            format!("Imported image {GRANDCHILD_UUID} (example-grandchild@1.0.0)"),
        ]
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("Downloaded image ")).count(), 3);

    let ancestry = w.imgadm(&["ancestry", "-P", &w.pool, "-H", "-o", "uuid", GRANDCHILD_UUID]).ok().stdout;
    assert_eq!(ancestry.lines().collect::<Vec<_>>(), [GRANDCHILD_UUID, CHILD_UUID, BASE_UUID]);
    assert!(downloads(&w).is_empty(), "downloads left: {:?}", downloads(&w));
    let info = w.imgadm(&["get", "-P", &w.pool, GRANDCHILD_UUID]).ok().json();
    assert_eq!(info["source"], server.url());

    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    assert_eq!(ops[0]["verb"], "import");
    assert_eq!(ops[0]["state"], "succeeded");
    let steps: Vec<&str> = ops[0]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(&steps[..3], ["resolve", "ancestry", "lock"]);
    assert_eq!(steps.iter().filter(|s| **s == "fetch").count(), 3);
    assert_eq!(steps.last(), Some(&"unlock"));

    let again = import(&w, GRANDCHILD_UUID).ok();
    assert_eq!(
        again.stdout.trim(),
        format!("Image {GRANDCHILD_UUID} (example-grandchild 1.0.0) is already installed, skipping")
    );
    import(&w, "00000000-1111-4222-8333-444444444444").fails_with(1, "ActiveImageNotFound");
}

/// On a terminal the real imgadm draws one `Download N images` bar for a
/// whole chain, not one per image. Run under script(1) for a pty.
fn a_chain_on_a_terminal_gets_one_download_bar(driver: Driver) {
    let server = chain_server();
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let command = format!("{} import -P {} {GRANDCHILD_UUID}", imgadm_bin().display(), w.pool);
    let mut script = std::process::Command::new("script");
    script.args(["-q", "-e", "-c", &command, "/dev/null"]);
    for (key, value) in w.command().get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    let out = script.output().expect("run script(1)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "import on a pty failed: {screen}");
    assert!(has(&w, GRANDCHILD_UUID));
    assert!(screen.contains("Download 3 images"), "no chain bar: {screen}");
    for image in [BASE_UUID, CHILD_UUID, GRANDCHILD_UUID] {
        assert!(!screen.contains(&format!("Image {image}")), "a bar of its own for {image}: {screen}");
    }
}

fn installed_origins_are_skipped(driver: Driver) {
    let server = chain_server();
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    w.install_example_base().ok();
    let run = import(&w, CHILD_UUID).ok();
    assert!(run.stdout.contains(&format!("Image {BASE_UUID} already installed")), "{}", run.stdout);
    assert!(run.stdout.contains("Must download and install 1 image ("), "{}", run.stdout);
    assert_eq!(server.file_bytes_sent(&uuid(BASE_UUID)), 0);
}

/// A 64 MiB image: random data in a dataset of a scratch zfs-fuse pool,
/// sent as an uncompressed full stream. Made once per test process.
fn big_image() -> &'static (Value, Vec<u8>) {
    static BIG: OnceLock<(Value, Vec<u8>)> = OnceLock::new();
    BIG.get_or_init(|| {
        let mut data = vec![0u8; 64 << 20];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let stream = TestZpool::create().make_stream(&[("data", &data)], None);
        let manifest = json!({
            "v": 2, "uuid": "6b9d3c0e-2f5a-4d8b-9c71-a0e4f3b2d564", "name": "big", "version": "1.0.0",
            "type": "zone-dataset", "os": "smartos", "published_at": "2026-11-23T16:30:00.000Z",
        });
        (manifest, stream)
    })
}

/// Kills an import once `fraction` of the file is downloaded, re-runs it,
/// and (with Range honoured) checks that the server sent only the missing
/// bytes plus at most one chunk.
fn resume_after_kill(driver: Driver, honour_range: bool, fraction: f64) {
    let (manifest, stream) = big_image();
    let image = manifest["uuid"].as_str().unwrap();
    let server = TestImgapi::start();
    server.honour_range(honour_range);
    server.add_image(manifest.clone(), stream.clone(), FileCompression::Uncompressed);
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);

    let killed = w
        .command()
        .env("IMGADM_FAILPOINT", "fetch:during")
        .env("IMGADM_FAILPOINT_FRACTION", fraction.to_string())
        .args(["import", "-P", &w.pool, image])
        .output();
    assert!(!killed.expect("run imgadm").status.success(), "the failpoint did not fire");
    let partial = w.state.path().join("downloads").join(format!("{image}.file.partial"));
    let kept = std::fs::metadata(&partial).expect("a partial download is kept").len();
    let size = stream.len() as u64;
    let at = (size as f64 * fraction) as u64;
    assert!(kept >= at - (1 << 20) && kept < size, "partial has {kept} of {size} bytes, killed at {at}");

    let sent_before = server.file_bytes_sent(&uuid(image));
    let run = import(&w, image).ok();
    assert!(run.stdout.contains("Resuming interrupted import"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("Imported image {image} (big@1.0.0)")), "{}", run.stdout);
    let sent = server.file_bytes_sent(&uuid(image)) - sent_before;
    if honour_range {
        assert!(sent <= size - kept + (64 << 10), "sent {sent} bytes for {} missing", size - kept);
        let ranged = server.requests().iter().any(|r| r.header("range") == Some(&*format!("bytes={kept}-")));
        assert!(ranged, "no Range request from the partial's length");
    }
    assert!(downloads(&w).is_empty(), "downloads left: {:?}", downloads(&w));
    assert!(has(&w, image));
}

fn resume_after_kill_with_range(driver: Driver) {
    resume_after_kill(driver, true, 0.5)
}

/// At 90% (the Range request matters most when most of the file is there).
/// The dir pool is enough: what is checked is the transfer, not the pool.
#[test]
fn resume_at_90_percent_with_range_fetches_only_the_missing_bytes() {
    resume_after_kill(Driver::Dir, true, 0.9)
}

fn resume_after_kill_without_range(driver: Driver) {
    resume_after_kill(driver, false, 0.5)
}

fn wrong_sha1_fails_and_leaves_nothing(driver: Driver) {
    let server = chain_server();
    server.corrupt_file_byte(100);
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let run = import(&w, BASE_UUID);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("DownloadError") || run.stderr.contains("Uncompression"), "{}", run.stderr);
    assert!(downloads(&w).is_empty(), "downloads left: {:?}", downloads(&w));
    assert!(!has(&w, BASE_UUID));
    let files: Vec<String> = w.state_files().into_iter().filter(|f| !f.ends_with("imgadm.conf")).collect();
    assert!(files.is_empty(), "files left: {files:?}");
}

fn cut_connection_is_retried_then_leaves_the_partial(driver: Driver) {
    let server = chain_server();
    server.cut_file_at(1000);
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let run = import(&w, BASE_UUID);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("(ClientError)"), "{}", run.stderr);
    assert_eq!(downloads(&w), [format!("{BASE_UUID}.file.partial")]);
    assert_eq!(retries(&w).len(), 3, "each failed attempt is journaled");
    assert!(!has(&w, BASE_UUID));

    server.clear_faults();
    server.honour_range(true);
    import(&w, BASE_UUID).ok();
    assert!(has(&w, BASE_UUID));
    assert!(downloads(&w).is_empty());
}

/// A partial download, then the file (and its manifest's sha1 and size)
/// changes on the server: the next run finds the kept bytes wrong and
/// downloads the whole file again, in the same run.
fn a_file_changed_since_the_partial_restarts_from_zero_in_the_same_run(driver: Driver) {
    let server = chain_server();
    server.cut_file_at(1000);
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    assert_eq!(import(&w, BASE_UUID).status, 1);
    assert_eq!(downloads(&w), [format!("{BASE_UUID}.file.partial")]);

    // The same stream, compressed anew: other bytes, another sha1 and size.
    let recompressed = imgadm_tests::images::compress(&imgadm_tests::images::raw_stream(BASE_FILE), "gzip");
    assert_ne!(recompressed, fixture_example(BASE_FILE));
    server.clear_faults();
    server.honour_range(true);
    server.replace_file(&uuid(BASE_UUID), recompressed.clone());
    let run = import(&w, BASE_UUID).ok();
    assert!(run.stderr.contains("downloading it again from the start"), "{}", run.stderr);
    assert!(has(&w, BASE_UUID));
    assert!(downloads(&w).is_empty(), "downloads left: {:?}", downloads(&w));
}

fn fixture_example(name: &str) -> Vec<u8> {
    imgadm_tests::images::read_example(name)
}

fn stalled_server_times_out_in_bounded_time(driver: Driver) {
    let server = chain_server();
    server.stall_file_at(1000);
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let started = Instant::now();
    let run = w.command().env("IMGADM_READ_TIMEOUT_SECS", "1").args(["import", "-P", &w.pool, BASE_UUID]).output();
    let run = run.expect("run imgadm");
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("stalled"), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(downloads(&w), [format!("{BASE_UUID}.file.partial")]);
    assert_eq!(retries(&w).len(), 3);
    server.clear_faults();
}

fn server_errors_are_retried_and_a_rerun_succeeds(driver: Driver) {
    let server = chain_server();
    server.fail_next_file_requests(2, 500);
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    import(&w, BASE_UUID).ok();
    assert_eq!(retries(&w).len(), 2, "two 500s, then success");

    server.fail_next_file_requests(5, 503);
    let run = import(&w, CHILD_UUID);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("ServiceUnavailable") || run.stderr.contains("503"), "{}", run.stderr);
    server.clear_faults();
    import(&w, CHILD_UUID).ok();
    assert!(has(&w, CHILD_UUID));
}

fn concurrent_imports_download_each_image_once(driver: Driver) {
    let server = chain_server();
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let targets = [BASE_UUID, BASE_UUID, BASE_UUID, CHILD_UUID, GRANDCHILD_UUID];
    let children: Vec<_> = targets
        .iter()
        .map(|image| {
            w.command()
                .args(["-v", "import", "-q", "-P", &w.pool, image])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn imgadm")
        })
        .collect();
    // Each child's pipes are drained at once: a child blocked on a full
    // stderr pipe would hold up the others.
    let outputs: Vec<_> = children
        .into_iter()
        .map(|child| std::thread::spawn(move || child.wait_with_output().expect("wait")))
        .collect();
    for output in outputs {
        let out = output.join().expect("waiter thread");
        assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    for (image, file) in [(BASE_UUID, read_example(BASE_FILE)), (CHILD_UUID, read_example(CHILD_FILE))] {
        assert_eq!(server.file_bytes_sent(&uuid(image)), file.len() as u64, "{image} downloaded more than once");
    }
    assert!([BASE_UUID, CHILD_UUID, GRANDCHILD_UUID].iter().all(|image| has(&w, image)));
}

fn pre_downloaded_files(driver: Driver) {
    let server = chain_server();
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let downloads_dir = w.state.path().join("downloads");
    std::fs::create_dir_all(&downloads_dir).unwrap();
    let target = downloads_dir.join(format!("{BASE_UUID}.file"));
    let good = read_example(BASE_FILE);
    let cases: [(&[u8], &str, bool); 3] = [
        (&good, "using pre-downloaded image file", false),
        (&good[..good.len() - 10], "unexpected size for pre-downloaded image", true),
        (&corrupt_middle(&good), "unexpected checksum for pre-downloaded image", true),
    ];
    for (bytes, log, downloads_again) in cases {
        std::fs::write(&target, bytes).unwrap();
        let sent_before = server.file_bytes_sent(&uuid(BASE_UUID));
        let run = w.imgadm(&["-v", "import", "-P", &w.pool, BASE_UUID]).ok();
        assert!(run.stderr.contains(log), "no \"{log}\" in:\n{}", run.stderr);
        assert_eq!(server.file_bytes_sent(&uuid(BASE_UUID)) > sent_before, downloads_again);
        assert!(downloads(&w).is_empty(), "downloads left: {:?}", downloads(&w));
        assert!(has(&w, BASE_UUID));
        w.imgadm(&["delete", "-P", &w.pool, BASE_UUID]).ok();
    }
    // A partial download that is already whole (killed before its rename)
    // is used without a request.
    std::fs::write(downloads_dir.join(format!("{BASE_UUID}.file.partial")), &good).unwrap();
    let sent_before = server.file_bytes_sent(&uuid(BASE_UUID));
    import(&w, BASE_UUID).ok();
    assert_eq!(server.file_bytes_sent(&uuid(BASE_UUID)), sent_before);
    assert!(downloads(&w).is_empty(), "downloads left: {:?}", downloads(&w));
}

fn channels_with_c_and_s_and_list_source(driver: Driver) {
    let server = TestImgapi::start();
    server.set_channels(vec![Channel::new("release", "stable", true), Channel::new("experimental", "new", false)]);
    let mut manifest = example_manifest(BASE_MANIFEST);
    manifest["channels"] = json!(["experimental"]);
    server.add_image(manifest, read_example(BASE_FILE), FileCompression::Gzip);
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);

    import(&w, BASE_UUID).fails_with(1, "ActiveImageNotFound");
    w.imgadm(&["import", "-P", &w.pool, "-C", "experimental", BASE_UUID]).ok();
    w.imgadm(&["delete", "-P", &w.pool, BASE_UUID]).ok();

    let with_channel = format!("{}?channel=experimental", server.url());
    w.imgadm(&["import", "-P", &w.pool, "-S", &with_channel, BASE_UUID]).ok();
    w.imgadm(&["delete", "-P", &w.pool, BASE_UUID]).ok();

    use_sources(&w, &[&with_channel]);
    import(&w, BASE_UUID).ok();
    let listed = w.imgadm(&["list", "-H", "-o", "uuid,source", &format!("zpool={}", w.pool)]).ok().stdout;
    assert_eq!(listed, format!("{BASE_UUID}  {with_channel}\n"));
    let queried = server.requests().iter().any(|r| r.path_and_query.contains("channel=experimental"));
    assert!(queried);
}

/// The id of the one interrupted operation `journal list -j` shows.
fn interrupted_op(w: &World) -> String {
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let interrupted: Vec<&Value> = ops.as_array().unwrap().iter().filter(|o| o["state"] == "interrupted").collect();
    assert_eq!(interrupted.len(), 1, "{ops}");
    interrupted[0]["id"].as_str().unwrap().to_string()
}

fn journal_resume_and_rollback_of_an_interrupted_import(driver: Driver) {
    let server = chain_server();
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let kill_in_fetch = |image: &str, failpoint: &str| {
        let out = w.command().env("IMGADM_FAILPOINT", failpoint).args(["import", "-P", &w.pool, image]).output();
        let out = out.expect("run imgadm");
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "the failpoint did not fire: {printed}");
    };

    // Killed while fetching the child (the 2nd image): the base is in place.
    kill_in_fetch(CHILD_UUID, "fetch:during:2");
    assert!(has(&w, BASE_UUID) && !has(&w, CHILD_UUID));
    let op = interrupted_op(&w);
    w.imgadm(&["journal", "resume", &op]).ok();
    assert!(has(&w, CHILD_UUID));
    assert!(downloads(&w).is_empty(), "downloads left: {:?}", downloads(&w));

    // Killed again, fetching the grandchild; rolled back: nothing of it is left.
    kill_in_fetch(GRANDCHILD_UUID, "fetch:during");
    let run = w.imgadm(&["journal", "list", "-j"]).ok().json();
    assert!(run.as_array().unwrap().iter().any(|o| o["state"] == "interrupted"));
    let op = interrupted_op(&w);
    w.imgadm(&["journal", "rollback", &op]).ok();
    assert!(!has(&w, GRANDCHILD_UUID));
    assert!(has(&w, CHILD_UUID), "what the rolled-back import did not create stays");
    assert!(downloads(&w).is_empty(), "downloads left: {:?}", downloads(&w));
}

fn rerun_after_a_kill_once_the_image_is_in_place_finishes_it(driver: Driver) {
    let server = chain_server();
    let w = World::new(driver);
    use_sources(&w, &[&server.url()]);
    let out = w.command().env("IMGADM_FAILPOINT", "cache:before").args(["import", "-P", &w.pool, BASE_UUID]).output();
    assert!(!out.expect("run imgadm").status.success(), "the failpoint did not fire");
    assert!(has(&w, BASE_UUID), "renamed into place before the kill");
    let run = import(&w, BASE_UUID).ok();
    assert!(run.stdout.contains("Resuming interrupted import"), "{}", run.stdout);
    let info = w.imgadm(&["get", "-P", &w.pool, BASE_UUID]).ok().json();
    assert_eq!(info["source"], server.url(), "the cache is written by the resumed import");
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    assert!(ops.as_array().unwrap().iter().all(|o| o["state"] == "succeeded"), "{ops}");
    assert_eq!(server.file_bytes_sent(&uuid(BASE_UUID)), read_example(BASE_FILE).len() as u64);
}
