//! `imgadm avail` over two paging sources (2,500 images), its filters,
//! columns and sorting, a source that is down; and `imgadm show`.

use imgadm_tests::harness::*;
use imgadm_tests::imgapi_server::{FileCompression, TestImgapi};
use serde_json::{json, Value};

fn image_uuid(source: u32, n: u32) -> String {
    format!("{source:08x}-0000-4000-8000-{n:012x}")
}

/// `count` images named `NAME-N`, published a minute apart.
fn fill(server: &TestImgapi, source: u32, name: &str, count: u32) {
    server.default_page_limit(Some(1000));
    for n in 0..count {
        let manifest = json!({
            "uuid": image_uuid(source, n),
            "name": format!("{name}-{}", n % 7),
            "version": format!("1.{n}.0"),
            "type": if n % 2 == 0 { "zone-dataset" } else { "zvol" },
            "os": "smartos",
            "published_at": format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", 1 + n / 1000, 1 + (n / 40) % 25, (n / 60) % 24, n % 60),
        });
        server.add_image(manifest, b"not a real stream".to_vec(), FileCompression::Uncompressed);
    }
}

fn use_sources(w: &World, urls: &[String]) {
    let sources: Vec<Value> = urls.iter().map(|u| json!({"type": "imgapi", "url": u})).collect();
    std::fs::write(w.state.path().join("imgadm.conf"), json!({"sources": sources}).to_string()).unwrap();
}

#[test]
fn two_sources_page_dedup_filter_sort_and_one_down() {
    let first = TestImgapi::start();
    let second = TestImgapi::start();
    fill(&first, 1, "alpha", 1500);
    fill(&second, 2, "beta", 1000);
    // An image both sources have: listed once, from the first source.
    let shared = json!({"uuid": image_uuid(1, 0), "name": "alpha-0", "version": "1.0.0", "os": "smartos",
        "type": "zone-dataset", "published_at": "2026-01-01T00:00:00Z"});
    second.add_image(shared, b"x".to_vec(), FileCompression::Uncompressed);
    let w = World::new(Driver::Dir);
    use_sources(&w, &[first.url(), second.url()]);

    let uuids = w.imgadm(&["avail", "-H", "-o", "uuid"]).ok().stdout;
    assert_eq!(uuids.lines().count(), 2500);
    let paged: Vec<String> = first.requests().iter().map(|r| r.path_and_query.clone()).collect();
    assert_eq!(paged[0], "/images");
    assert!(paged[1].contains(&format!("marker={}", image_uuid(1, 999))) && paged[1].contains("limit=1000"), "{paged:?}");

    let filter = format!("uuid={}", image_uuid(1, 0));
    let json = w.imgadm(&["avail", "-j", &filter]).ok().json();
    assert_eq!(json.as_array().map(Vec::len), Some(1));
    assert_eq!(json[0]["source"], first.url());
    assert_eq!(json[0]["manifest"]["uuid"], image_uuid(1, 0));

    let table = w.imgadm(&["avail", "name=beta-3", "type=zvol", "-o", "version,name,source", "-s", "-version"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("VERSION") && lines[0].contains("NAME") && lines[0].ends_with("SOURCE"), "{table}");
    assert!(lines[1..].iter().all(|l| l.contains("beta-3") && l.ends_with(&second.url())), "{table}");
    let versions: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    let mut descending = versions.clone();
    descending.sort_by(|a, b| b.cmp(a));
    assert_eq!(versions, descending, "-s -version sorts in reverse");
    assert_eq!(lines.len() - 1, (0..1000u32).filter(|n| n % 7 == 3 && n % 2 == 1).count());
    assert!(w.imgadm(&["avail", "name=nothing-like-it"]).ok().stdout.is_empty());
    assert_eq!(w.imgadm(&["available", "-H", "-o", "uuid", "name=~beta"]).ok().stdout.lines().count(), 1000);

    second.down();
    let run = w.imgadm(&["avail", "-H", "-o", "uuid"]);
    assert_eq!(run.status, 1);
    assert_eq!(run.stdout.lines().count(), 1500, "the first source's images are still listed");
    assert!(run.stderr.contains(&second.url()), "the failing source is named: {}", run.stderr);
}

#[test]
fn show_searches_sources_in_order() {
    let down = TestImgapi::start();
    let server = TestImgapi::start();
    fill(&server, 3, "gamma", 3);
    down.down();
    let w = World::new(Driver::Dir);
    use_sources(&w, &[down.url(), server.url()]);
    let manifest = w.imgadm(&["show", &image_uuid(3, 1)]).ok();
    assert_eq!(manifest.json()["name"], "gamma-1");
    assert!(manifest.stdout.starts_with("{\n  \""), "2-space JSON: {}", manifest.stdout);

    // Not on the working source: the failing one is reported.
    let run = w.imgadm(&["show", &image_uuid(3, 99)]);
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains(&down.url()), "{}", run.stderr);
    use_sources(&w, &[server.url()]);
    w.imgadm(&["show", &image_uuid(3, 99)]).fails_with(1, "ImageNotFound");
    w.imgadm(&["show"]).fails_with(2, "Usage");
}
