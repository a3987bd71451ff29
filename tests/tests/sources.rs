//! `imgadm sources`: add, delete, list (-j, -v), check, edit, and a config
//! written by the real imgadm read (and kept) as it is.

use imgadm_tests::harness::*;
use imgadm_tests::imgapi_server::TestImgapi;
use serde_json::{json, Value};

fn config(w: &World) -> Value {
    serde_json::from_slice(&std::fs::read(w.state.path().join("imgadm.conf")).expect("config written"))
        .expect("config is JSON")
}

#[test]
fn default_add_list_delete_round_trip() {
    let server = TestImgapi::start();
    let url = server.url();
    let w = World::new(Driver::Dir);
    assert_eq!(w.imgadm(&["sources"]).ok().stdout, "https://images.smartos.org\n");

    let run = w.imgadm(&["sources", "-a", &url]).ok();
    assert_eq!(run.stdout, format!("Added \"imgapi\" image source \"{url}\"\n"));
    assert!(server.requests().iter().any(|r| r.path_and_query == "/ping"), "added without a ping");
    let run = w.imgadm(&["sources", "-a", &format!("{url}/")]).ok();
    assert_eq!(run.stdout, format!("Already have \"imgapi\" image source \"{url}/\", no change\n"));
    assert_eq!(w.imgadm(&["sources"]).ok().stdout, format!("https://images.smartos.org\n{url}\n"));

    let text = std::fs::read_to_string(w.state.path().join("imgadm.conf")).unwrap();
    assert!(!text.ends_with('\n'), "written without a trailing newline, as the real imgadm does");
    assert!(text.contains("\n  \"sources\": ["), "2-space indented: {text}");
    assert_eq!(
        config(&w)["sources"],
        json!([{"type": "imgapi", "url": "https://images.smartos.org"}, {"type": "imgapi", "url": url}])
    );

    let listed = w.imgadm(&["sources", "-j"]).ok().json();
    assert_eq!(listed[1], json!({"url": url, "type": "imgapi"}));
    let table = w.imgadm(&["sources", "-v"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("URL ") && lines[0].ends_with("TYPE    INSECURE"), "{table}");
    assert_eq!(lines.len(), 3);

    let run = w.imgadm(&["sources", "-d", &url]).ok();
    assert_eq!(run.stdout, format!("Deleted \"imgapi\" image source \"{url}\"\n"));
    let run = w.imgadm(&["sources", "-d", &url]).ok();
    assert_eq!(run.stdout, format!("Do not have image source \"{url}\", no change\n"));
    w.imgadm(&["sources", "-d", "https://images.smartos.org"]).ok();
    assert_eq!(w.imgadm(&["sources"]).ok().stdout, "");
    assert_eq!(config(&w)["sources"], json!([]));
    w.imgadm(&["avail"]).fails_with(1, "NoSources");
}

#[test]
fn add_pings_unless_forced_and_types_and_insecure() {
    let server = TestImgapi::start();
    let url = server.url();
    server.down();
    let w = World::new(Driver::Dir);
    w.imgadm(&["sources", "-a", &url]).fails_with(1, "SourcePing");
    w.imgadm(&["sources", "-a", &url, "-f"]).ok();
    w.imgadm(&["sources", "-a", "https://docker.io", "-t", "docker"]).ok();
    w.imgadm(&["sources", "-a", "https://x.example.com", "-t", "bogus", "-f"]).fails_with(1, "ConfigError");
    let run = w.imgadm(&["sources", "-a", "https://self-signed.example.com", "-k", "-f"]).ok();
    assert_eq!(run.stdout, "Added \"imgapi\" image source \"https://self-signed.example.com\" (insecure)\n");
    let sources = config(&w)["sources"].clone();
    assert_eq!(sources[2], json!({"type": "docker", "url": "https://docker.io"}));
    assert_eq!(sources[3], json!({"type": "imgapi", "url": "https://self-signed.example.com", "insecure": true}));
    w.imgadm(&["sources", "-a", &url, "-d", &url]).fails_with(2, "Usage");
}

#[test]
fn check_pings_every_source() {
    let up = TestImgapi::start();
    let down = TestImgapi::start();
    down.down();
    let w = World::new(Driver::Dir);
    std::fs::write(
        w.state.path().join("imgadm.conf"),
        json!({"sources": [{"type": "imgapi", "url": up.url()}, {"type": "imgapi", "url": down.url()}]}).to_string(),
    )
    .unwrap();
    let table = w.imgadm(&["sources", "-c"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("URL") && lines[0].contains("OK") && lines[0].ends_with("ERROR"), "{table}");
    assert!(lines[1].starts_with(&up.url()) && lines[1].contains("  true  "), "{table}");
    assert!(lines[2].starts_with(&down.url()) && lines[2].contains("  false  "), "{table}");
}

#[test]
fn edit_through_editor() {
    let server = TestImgapi::start();
    let w = World::new(Driver::Dir);
    // The "editor" replaces the list with the test server and a docker source.
    let script = w.write(
        "editor.sh",
        format!("#!/bin/sh\nprintf '%s imgapi\\nhttps://docker.io docker insecure\\n# a comment\\n' '{}' > \"$1\"\n", server.url())
            .as_bytes(),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = w.command().env("EDITOR", &script).args(["sources", "-e"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(
        stdout,
        format!(
            "Added \"imgapi\" image source \"{}\"\nAdded \"docker\" image source \"https://docker.io\" (insecure)\n\
             Deleted \"imgapi\" image source \"https://images.smartos.org\"\n",
            server.url()
        )
    );
    assert_eq!(config(&w)["sources"][1], json!({"type": "docker", "url": "https://docker.io", "insecure": true}));

    // An editor that changes nothing, and one that fails.
    let run = w.command().env("EDITOR", "true").args(["sources", "-e"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "Image sources unchanged\n");
    let run = w.command().env("EDITOR", "false").args(["sources", "-e"]).output().unwrap();
    assert!(run.status.success());
    assert_eq!(config(&w)["sources"].as_array().map(Vec::len), Some(2));
}

/// A config as the real imgadm writes it is read as it is, and what this
/// imgadm does not know survives a change.
#[test]
fn real_imgadm_config_is_read_and_kept() {
    let w = World::new(Driver::Dir);
    let real = r#"{
  "sources": [
    {
      "type": "imgapi",
      "url": "https://images.smartos.org"
    },
    {
      "url": "https://datasets.example.com/datasets"
    },
    {
      "type": "imgapi",
      "url": "https://updates.tritondatacenter.com?channel=experimental"
    }
  ],
  "upgradedToVer": "3.0.0",
  "dockerImportSkipUuids": true,
  "userAgentExtra": "site/1"
}"#;
    std::fs::write(w.state.path().join("imgadm.conf"), real).unwrap();
    let listed = w.imgadm(&["sources", "-j"]).ok().json();
    assert_eq!(listed[1], json!({"url": "https://datasets.example.com/datasets", "type": "dsapi"}));
    assert_eq!(listed[2]["url"], "https://updates.tritondatacenter.com?channel=experimental");
    w.imgadm(&["sources", "-d", "https://images.smartos.org/"]).ok();
    let saved = config(&w);
    assert_eq!(saved["userAgentExtra"], "site/1");
    assert_eq!(saved["upgradedToVer"], "3.0.0");
    assert_eq!(saved["sources"].as_array().map(Vec::len), Some(2));
}
