//! Manifest model: parsing, accessors, the v1 -> v2 upgrade and every rule
//! of validateMinimalManifest, against real manifests and hand-made ones.

use std::path::PathBuf;

use chrono::TimeZone;
use imgadm_engine::manifest::{Manifest, INHERITABLE_FIELDS};
use imgadm_engine::Error;
use serde_json::{json, Value};

const UUID: &str = "5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01";

fn fixture(name: &str) -> Manifest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Manifest::from_json_bytes(&bytes).expect("fixture is a JSON object")
}

fn manifest(value: Value) -> Manifest {
    Manifest::from_value(value).expect("test manifest is an object")
}

/// The smallest manifest validateMinimalManifest accepts.
fn minimal() -> Value {
    json!({"v": 2, "uuid": UUID, "name": "base", "version": "1.0.0", "type": "zone-dataset", "os": "smartos"})
}

/// `minimal()` with some fields set (null in `changes` removes the field).
fn minimal_with(changes: Value) -> Manifest {
    let mut value = minimal();
    for (key, new) in changes.as_object().expect("changes is an object") {
        let map = value.as_object_mut().expect("minimal is an object");
        if new.is_null() {
            map.shift_remove(key);
        } else {
            map.insert(key.clone(), new.clone());
        }
    }
    manifest(value)
}

/// The problems validate_minimal reports, rendered.
fn problems(m: &Manifest) -> Vec<String> {
    match m.validate_minimal() {
        Ok(()) => Vec::new(),
        Err(Error::ManifestValidation(problems)) => problems,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn problems_with(changes: Value) -> Vec<String> {
    problems(&minimal_with(changes))
}

fn assert_valid(changes: Value) {
    let found = problems_with(changes.clone());
    assert!(found.is_empty(), "{changes} should be valid, got {found:?}");
}

fn assert_problem(changes: Value, expected: &str) {
    assert_eq!(problems_with(changes), vec![expected.to_string()]);
}

// ---- parsing and accessors

#[test]
fn parsing_refuses_non_json_and_non_objects() {
    let err = Manifest::from_json_bytes(b"{not json").unwrap_err();
    assert_eq!(err.code(), "InvalidManifest");
    assert!(err.to_string().starts_with("manifest is invalid: "), "{err}");
    let err = Manifest::from_json_bytes(b"[1, 2]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest is invalid: not a JSON object: an array"
    );
}

#[test]
fn manifests_keep_their_field_order_and_values() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/manifests/pkgbuild-18.1.0.zone-dataset.json"),
    )
    .expect("fixture");
    let m = fixture("pkgbuild-18.1.0.zone-dataset.json");
    let original: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(m.to_value(), original);
    let keys: Vec<&String> = m.as_map().keys().collect();
    assert_eq!(keys.first().map(|k| k.as_str()), Some("v"));
    assert_eq!(keys.last().map(|k| k.as_str()), Some("tags"));
    assert_eq!(
        serde_json::to_string(&m).expect("serialize"),
        original.to_string()
    );
}

#[test]
fn accessors_read_the_typed_fields() {
    let m = fixture("example-child-1.0.0.imgmanifest");
    assert_eq!(
        m.uuid().expect("uuid").to_string(),
        "8c7a2d91-1e54-4b8f-a6c3-0d9e4f21b702"
    );
    assert_eq!(m.name(), Some("example-child"));
    assert_eq!(m.version(), Some("1.0.0"));
    assert_eq!(
        m.origin().expect("origin").map(|u| u.to_string()).as_deref(),
        Some(UUID)
    );
    assert_eq!(m.published_at(), Some("2026-11-23T15:49:00.000Z"));
    assert_eq!(m.state(), Some("active"));
    assert_eq!(m.type_(), Some("zone-dataset"));
    assert_eq!(m.os(), Some("smartos"));
    let file = m.files0().expect("files[0]");
    assert_eq!(
        file.sha1.as_deref(),
        Some("a77b649133a421557dfb130366672b64ae49e673")
    );
    assert_eq!(file.size, Some(784));
    assert_eq!(file.compression.as_deref(), Some("gzip"));
    assert_eq!(file.dataset_guid.as_deref(), Some("6306372232744026684"));
    assert_eq!(
        m.title(),
        "8c7a2d91-1e54-4b8f-a6c3-0d9e4f21b702 (example-child@1.0.0)"
    );

    let zvol = fixture("ubuntu-certified-18.04-20180808.zvol.json");
    assert_eq!(
        zvol.requirements().and_then(|r| r.get("ssh_key")),
        Some(&json!(true))
    );
    assert_eq!(zvol.origin().expect("no origin"), None);
    assert_eq!(fixture("docker-layer-62487cf6a7f6.docker.json").files0(), None);
}

#[test]
fn bad_uuids_are_invalid_uuid_errors() {
    let m = minimal_with(json!({"uuid": "../../etc"}));
    assert_eq!(m.uuid().unwrap_err().to_string(), "invalid uuid: \"../../etc\"");
    let m = minimal_with(json!({"uuid": null}));
    assert_eq!(m.uuid().unwrap_err().code(), "InvalidUUID");
    let m = minimal_with(json!({"origin": "ABC"}));
    assert_eq!(m.origin().unwrap_err().code(), "InvalidUUID");
}

#[test]
fn set_keeps_an_existing_fields_place() {
    let mut m = minimal_with(json!({}));
    m.set("name", json!("renamed"));
    m.set("extra", json!(1));
    let keys: Vec<&str> = m.as_map().keys().map(String::as_str).collect();
    assert_eq!(keys, ["v", "uuid", "name", "version", "type", "os", "extra"]);
    assert_eq!(m.get("name"), Some(&json!("renamed")));
}

#[test]
fn ensure_published_at_fills_only_a_missing_date() {
    let now = chrono::Utc
        .with_ymd_and_hms(2024, 3, 5, 7, 8, 9)
        .single()
        .expect("date")
        + chrono::Duration::milliseconds(42);
    let mut m = minimal_with(json!({}));
    m.ensure_published_at(now);
    assert_eq!(m.published_at(), Some("2024-03-05T07:08:09.042Z"));
    assert!(m.validate_minimal().is_ok());

    let mut m = minimal_with(json!({"published_at": "2012-01-01T00:00:00Z"}));
    m.ensure_published_at(now);
    assert_eq!(m.published_at(), Some("2012-01-01T00:00:00Z"));
}

#[test]
fn inheritable_fields_are_the_ones_create_copies() {
    assert_eq!(INHERITABLE_FIELDS.len(), 12);
    for field in [
        "type",
        "os",
        "requirements",
        "image_size",
        "inherited_directories",
    ] {
        assert!(INHERITABLE_FIELDS.contains(&field), "{field}");
    }
    for field in ["uuid", "name", "version", "files", "tags", "origin"] {
        assert!(!INHERITABLE_FIELDS.contains(&field), "{field}");
    }
}

// ---- upgrade

#[test]
fn v1_dsapi_manifest_upgrades_field_by_field() {
    let upgraded = fixture("fauxnodejs-1.4.0.v1-dsapi.dsmanifest.json")
        .upgrade()
        .expect("upgrade");
    let expected = json!({
        "name": "fauxnodejs",
        "version": "1.4.0",
        "type": "zone-dataset",
        "description": "Node.js Image with MongoDB",
        "published_at": "2012-10-11T14:40:57.936Z",
        "os": "smartos",
        "files": [{
            "sha1": "d2c40995ff693994e0343a661fb2279794546748",
            "size": 269634973,
            "compression": "bzip2"
        }],
        "requirements": {"networks": [{"name": "net0", "description": "public"}]},
        "users": [{"name": "root"}, {"name": "admin"}, {"name": "mongodb"}],
        "generate_passwords": true,
        "inherited_directories": ["/opt/node_service"],
        "uuid": "1fc068b0-13b0-11e2-9f4e-2f3f6a96d9bc",
        "urn": "sdc:sdc:nodejs:1.4.0",
        "owner": "91ba0e64-2547-11e2-a972-df579e5fddb3",
        "public": true,
        "disabled": false,
        "state": "active",
        "v": 2
    });
    // Field by field, so a failure names the field.
    let expected_map = expected.as_object().expect("object");
    for (key, value) in expected_map {
        assert_eq!(upgraded.get(key), Some(value), "field {key}");
    }
    for dropped in [
        "creator_uuid",
        "vendor_uuid",
        "creator_name",
        "platform_type",
        "cloud_name",
        "created_at",
        "updated_at",
    ] {
        assert_eq!(upgraded.get(dropped), None, "{dropped} should be dropped");
    }
    // And in this order: removed fields leave the others in place, new
    // fields come last.
    let keys: Vec<&String> = upgraded.as_map().keys().collect();
    let expected_keys: Vec<&String> = expected_map.keys().collect();
    assert_eq!(keys, expected_keys);
    let file_keys: Vec<&str> = upgraded.as_map()["files"][0]
        .as_object()
        .expect("file")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(file_keys, ["sha1", "size", "compression"]);
    assert!(upgraded.validate_minimal().is_ok());
}

#[test]
fn v1_upgrade_handles_restricted_disabled_dates_sizes_and_compression() {
    let upgraded = manifest(json!({
        "uuid": UUID,
        "creator_uuid": "91ba0e64-2547-11e2-a972-df579e5fddb3",
        "restricted_to_uuid": "aaaaaaaa-2547-11e2-a972-df579e5fddb3",
        "disabled": 1,
        "created_at": "2012-10-11T14:40Z",
        "image_size": "10240",
        "_url": "https://datasets.example.com/",
        "files": [{"url": "https://x/y/a.zfs.gz"}, {"path": "b.zfs"}, {"path": "c.gz", "compression": "xz"}]
    }))
    .upgrade()
    .expect("upgrade");
    assert_eq!(upgraded.get("public"), Some(&json!(false)));
    assert_eq!(
        upgraded.get("acl"),
        Some(&json!(["aaaaaaaa-2547-11e2-a972-df579e5fddb3"]))
    );
    assert_eq!(upgraded.get("restricted_to_uuid"), None);
    assert_eq!(upgraded.get("disabled"), Some(&json!(true)));
    assert_eq!(upgraded.state(), Some("disabled"));
    assert_eq!(upgraded.published_at(), Some("2012-10-11T14:40:00Z"));
    assert_eq!(upgraded.get("image_size"), Some(&json!(10240)));
    assert_eq!(upgraded.get("_url"), None);
    assert_eq!(
        upgraded.get("files"),
        Some(&json!([{"compression": "gzip"}, {"compression": "none"}, {"compression": "xz"}]))
    );
    assert_eq!(upgraded.get("v"), Some(&json!(2)));
}

#[test]
fn v2_manifests_come_back_unchanged() {
    for name in [
        "pkgbuild-18.1.0.zone-dataset.json",
        "docker-layer-62487cf6a7f6.docker.json",
    ] {
        let m = fixture(name);
        assert_eq!(m.clone().upgrade().expect("upgrade"), m, "{name}");
    }
    let m = minimal_with(json!({"v": "3"}));
    assert_eq!(m.clone().upgrade().expect("upgrade"), m);
}

#[test]
fn manifests_without_v_or_creator_do_not_upgrade() {
    let err = fixture("smartos-1.6.3.zone-dataset.json").upgrade().unwrap_err();
    assert_eq!(err.code(), "InvalidManifest");
    assert_eq!(
        err.to_string(),
        "manifest is invalid: manifest does not have a \"v\" field"
    );
    let err = minimal_with(json!({"v": 0})).upgrade().unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest is invalid: manifest does not have a \"v\" field"
    );
    assert_eq!(
        minimal_with(json!({"v": 1})).upgrade().unwrap_err().code(),
        "InvalidManifest"
    );
    assert_eq!(
        minimal_with(json!({"v": "two"})).upgrade().unwrap_err().code(),
        "InvalidManifest"
    );
    let bad_uuid = manifest(json!({"uuid": "nope", "creator_uuid": UUID}));
    assert_eq!(bad_uuid.upgrade().unwrap_err().code(), "InvalidUUID");
}

// ---- validation of the real fixtures

#[test]
fn real_manifests_validate() {
    for name in [
        "pkgbuild-18.1.0.zone-dataset.json",
        "ubuntu-16.04-20160601.lx-dataset.json",
        "ubuntu-certified-18.04-20180808.zvol.json",
        "docker-layer-62487cf6a7f6.docker.json",
        "fauxnodejs-1.4.0.v2-import.imgmanifest.json",
        "example-base-1.0.0.imgmanifest",
        "example-child-1.0.0.imgmanifest",
    ] {
        let m = fixture(name).upgrade().expect("upgrade");
        assert_eq!(problems(&m), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn real_manifests_that_are_not_minimal_manifests_say_why() {
    let err = fixture("smartos-1.6.3.zone-dataset.json")
        .validate_minimal()
        .unwrap_err();
    assert_eq!(err.code(), "ManifestValidation");
    assert_eq!(err.to_string(), "invalid manifest: v (MissingParameter)");
    // The server's storage record has an icon object instead of a boolean.
    let err = fixture("inmultichan-1.2.3.raw-db-record.json")
        .validate_minimal()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid manifest: icon (invalid image \"icon\" (not an accepted boolean value): \
         {\"sha1\":\"1b8961b8a349ed987f73d3c5117e970e006b5b7e\",\"size\":4,\"contentMD5\":\"uuxkYbDWnd4bhhrvvjddig==\",\
         \"contentType\":\"image/png\",\"mtime\":\"2013-08-22T20:41:09.978Z\",\"stor\":\"local\"})"
    );
}

// ---- every rule

#[test]
fn every_problem_is_reported_at_once_in_the_reference_format() {
    let m = manifest(json!({"v": 2, "uuid": UUID, "version": "1", "type": "zvol", "os": "x", "foo": 1}));
    let err = m.validate_minimal().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid manifest: name (MissingParameter), \
         os (invalid image os, \"x\", must be one of: smartos, linux, windows, bsd, illumos, other), \
         nic_driver (MissingParameter), disk_driver (MissingParameter), cpu_type (MissingParameter), \
         image_size (MissingParameter), foo"
    );

    let err = manifest(json!({})).validate_minimal().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid manifest: v (MissingParameter), uuid (MissingParameter), name (MissingParameter), \
         version (MissingParameter), type (MissingParameter), os (MissingParameter)"
    );
}

#[test]
fn required_fields() {
    assert_valid(json!({}));
    for field in ["v", "uuid", "name", "version", "type", "os"] {
        let mut changes = serde_json::Map::new();
        changes.insert(field.to_string(), Value::Null);
        assert_problem(Value::Object(changes), &format!("{field} (MissingParameter)"));
    }
}

#[test]
fn v_is_a_non_negative_number() {
    assert_valid(json!({"v": 0}));
    assert_valid(json!({"v": "2"}));
    assert_problem(json!({"v": -1}), "v (\"v\" must be a positive integer)");
    assert_problem(json!({"v": "two"}), "v (\"v\" must be a positive integer)");
}

#[test]
fn uuid_owner_and_origin_are_uuids() {
    assert_valid(json!({"owner": "00000000-0000-0000-0000-000000000000", "origin": UUID}));
    assert_problem(json!({"uuid": "5B1E0C3E-6F43-4C1A-9D5E-3A0F2B7C8D01"}), "uuid");
    assert_problem(json!({"owner": "root"}), "owner");
    assert_problem(json!({"origin": 5}), "origin");
}

#[test]
fn urn_is_a_string() {
    assert_valid(json!({"urn": "sdc:sdc:base:1.0.0"}));
    assert_problem(json!({"urn": 1}), "urn");
}

#[test]
fn name_length_and_characters() {
    assert_valid(json!({"name": "my image/x_1.0-a"}));
    assert_valid(json!({"name": "n".repeat(1024)}));
    assert_problem(
        json!({"name": "n".repeat(1025)}),
        "name (image name is too long, max 1024 characters)",
    );
    assert_problem(
        json!({"name": "a;b"}),
        "name (image name has invalid characters (only alpha-numeric characters and \" \", \".\", \"-\", \"_\" and \"/\" are allowed))",
    );
    assert_problem(json!({"name": ""}), "name (image name has invalid characters (only alpha-numeric characters and \" \", \".\", \"-\", \"_\" and \"/\" are allowed))");
    assert_problem(
        json!({"name": 7}),
        "name (invalid image \"name\" (not a string): 7)",
    );
}

#[test]
fn version_length_and_characters() {
    assert_valid(json!({"version": "1.0+build/2_a-b"}));
    assert_valid(json!({"version": "v".repeat(512)}));
    assert_problem(
        json!({"version": "v".repeat(513)}),
        "version (image version is too long, max 512 characters)",
    );
    assert_problem(
        json!({"version": "1.0 beta"}),
        "version (image version has invalid characters (only alpha-numeric characters and \".\", \"-\", \"_\", \"/\" and \"+\" are allowed))",
    );
}

#[test]
fn description_length() {
    assert_valid(json!({"description": "d".repeat(10240)}));
    assert_problem(
        json!({"description": "d".repeat(10241)}),
        "description (image description is too long, max 10240 characters)",
    );
    assert_problem(
        json!({"description": ["x"]}),
        "description (invalid image \"description\" (not a string): [\"x\"])",
    );
}

#[test]
fn homepage_and_eula_are_http_urls() {
    assert_valid(json!({"homepage": "https://example.com/", "eula": "HTTP://example.com/eula"}));
    assert_problem(
        json!({"homepage": "ftp://example.com/"}),
        "homepage (invalid image homepage URL protocol)",
    );
    assert_problem(
        json!({"eula": "example.com"}),
        "eula (invalid image EULA URL protocol)",
    );
    let long = format!("https://example.com/{}", "p".repeat(1010));
    assert_problem(
        json!({"homepage": long}),
        "homepage (image homepage URL is too long (max 1024 characters))",
    );
    let long = format!("https://example.com/{}", "p".repeat(1010));
    assert_problem(
        json!({"eula": long}),
        "eula (image EULA URL is too long (max 1024 characters))",
    );
}

#[test]
fn boolean_fields_take_booleans_or_boolean_words() {
    assert_valid(
        json!({"disabled": "yes", "activated": false, "public": "no", "icon": true, "generate_passwords": "true"}),
    );
    assert_problem(json!({"disabled": "maybe"}), "disabled");
    assert_problem(json!({"activated": 1}), "activated");
    assert_problem(
        json!({"public": 1}),
        "public (invalid image \"public\" (not an accepted boolean value): 1)",
    );
    assert_problem(
        json!({"icon": "on"}),
        "icon (invalid image \"icon\" (not an accepted boolean value): \"on\")",
    );
    // A present null is a value, and not a boolean one.
    let mut m = minimal_with(json!({}));
    m.set("generate_passwords", Value::Null);
    assert_eq!(
        problems(&m),
        ["generate_passwords (invalid image \"generate_passwords\" (not an accepted boolean value): null)"]
    );
}

#[test]
fn published_at_format_and_activation() {
    assert_valid(json!({"published_at": "2012-10-11T14:40:57.936Z"}));
    assert_valid(json!({"published_at": "2012-10-11T14:40:57Z"}));
    let wrong = "published_at (published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format)";
    assert_problem(json!({"published_at": "2012-10-11"}), wrong);
    assert_problem(json!({"published_at": "2012-10-11T14:40:57.9Z"}), wrong);
    assert_problem(json!({"published_at": "2012-10-11T14:40:57+00:00"}), wrong);
    assert_eq!(
        problems_with(json!({"activated": true})),
        [
            "published_at (if activated is \"true\" published_at must be present)",
            "files (if activated is \"true\" files must be present)"
        ]
    );
    assert_valid(json!({
        "activated": "true",
        "published_at": "2012-10-11T14:40:57Z",
        "files": [{"sha1": "abc", "size": 1, "compression": "none"}]
    }));
}

#[test]
fn state_is_one_of_the_known_states() {
    for state in ["active", "unactivated", "disabled", "failed", "creating"] {
        assert_valid(json!({"state": state}));
    }
    assert_problem(json!({"state": "deleted"}), "state");
}

#[test]
fn type_and_os_are_known_or_null_while_creating() {
    assert_valid(json!({"type": "lx-dataset", "os": "linux"}));
    assert_valid(json!({"type": "null", "os": "null", "state": "creating"}));
    assert_valid(json!({"type": "null", "os": "null", "state": "failed"}));
    assert_problem(
        json!({"type": "bogus"}),
        "type (invalid image type, \"bogus\", must be one of: zone-dataset, zvol, lx-dataset, docker, other)",
    );
    assert_eq!(
        problems_with(json!({"type": "null", "os": "null", "state": "active"})),
        [
            "type (invalid image type, \"null\")",
            "os (invalid image os, \"null\")"
        ]
    );
    assert_problem(
        json!({"os": "plan9"}),
        "os (invalid image os, \"plan9\", must be one of: smartos, linux, windows, bsd, illumos, other)",
    );
}

#[test]
fn error_is_an_object() {
    assert_valid(json!({"error": {"message": "boom"}}));
    assert_problem(
        json!({"error": "boom"}),
        "error (invalid image \"error\" (not an object): \"boom\")",
    );
}

#[test]
fn files_hold_one_complete_file() {
    assert_valid(json!({"files": []}));
    assert_valid(json!({"files": [{"sha1": "abc", "size": 5, "compression": "xz"}]}));
    assert_problem(
        json!({"files": {"sha1": "abc"}}),
        "files (invalid image \"files\" (not an array): {\"sha1\":\"abc\"})",
    );
    let one = json!({"sha1": "abc", "size": 5, "compression": "gzip"});
    assert_problem(
        json!({"files": [one, one]}),
        "files (invalid image \"files\": too many files)",
    );
    assert_eq!(
        problems_with(json!({"files": [{"size": 0}]})),
        [
            "files (invalid image \"files\": file missing \"sha1\" field)",
            "files (invalid image \"files\": file missing \"size\" field)",
            "files (invalid image \"files\": file missing \"compression\" field)"
        ]
    );
    assert_problem(
        json!({"files": [{"sha1": "abc", "size": 5, "compression": "lz4"}]}),
        "files (invalid image \"files\": invalid compression \"lz4\" (must be one of gzip, bzip2, xz, none))",
    );
}

#[test]
fn acl_is_an_array_of_uuids() {
    assert_valid(json!({"acl": [UUID]}));
    assert_problem(
        json!({"acl": UUID}),
        &format!("acl (invalid image \"acl\" (not an array): \"{UUID}\")"),
    );
    assert_problem(
        json!({"acl": [UUID, "nope", "again"]}),
        "acl (invalid image \"acl\" (item 1 is not a UUID): nope)",
    );
}

#[test]
fn requirements_keys_are_checked() {
    assert_valid(json!({"requirements": {
        "networks": [{"name": "net0", "description": "public"}],
        "brand": "bhyve",
        "ssh_key": true,
        "min_ram": 512,
        "max_ram": 512,
        "min_platform": {"7.0": "20141030T081701Z"},
        "max_platform": {"7.0": "20250101T000000Z"},
        "bootrom": "uefi"
    }}));
    assert_problem(
        json!({"requirements": []}),
        "requirements (invalid image \"requirements\" (not an object): [])",
    );
    assert_problem(
        json!({"requirements": {"networks": [{"name": "net0"}]}}),
        "requirements.networks (invalid image \"requirements.networks\" entry: {\"name\":\"net0\"})",
    );
    assert_problem(
        json!({"requirements": {"networks": "net0"}}),
        "requirements.networks (invalid image \"requirements.networks\" (not an array): \"net0\")",
    );
    assert_problem(
        json!({"requirements": {"brand": 5}}),
        "requirements.brand (invalid image \"requirements.brand\" (not a string): 5)",
    );
    assert_problem(
        json!({"requirements": {"ssh_key": "yes"}}),
        "requirements.ssh_key (invalid image \"requirements.ssh_key\" (not a boolean): \"yes\")",
    );
    assert_problem(
        json!({"requirements": {"min_ram": -1}}),
        "requirements.min_ram (invalid image \"requirements.min_ram\" (not a positive integer): -1)",
    );
    assert_problem(
        json!({"requirements": {"max_ram": 1.5}}),
        "requirements.max_ram (invalid image \"requirements.max_ram\" (not a positive integer): 1.5)",
    );
    assert_problem(
        json!({"requirements": {"min_ram": 1024, "max_ram": 512}}),
        "requirements.max_ram (min_ram must be <= max_ram, but: min_ram=1024, max_ram=512)",
    );
    assert_problem(
        json!({"requirements": {"min_platform": {}}}),
        "requirements.min_platform (invalid image \"requirements.min_platform\" (not an object): {})",
    );
    assert_problem(
        json!({"requirements": {"max_platform": {"7.0": "20111030T081701Z"}}}),
        "requirements.max_platform (invalid image \"requirements.max_platform\" entry: \"7.0: 20111030T081701Z\" not a valid platform version)",
    );
    assert_problem(
        json!({"requirements": {"brand": "bhyve", "bootrom": "coreboot"}}),
        "requirements.bootrom (invalid image \"requirements.bootrom\" (must be \"bios\" or \"uefi\"): \"coreboot\")",
    );
    assert_problem(
        json!({"requirements": {"brand": "kvm", "bootrom": "bios"}}),
        "requirements.bootrom (invalid image \"requirements.bootrom\" (only valid with requirements.brand \"bhyve\"))",
    );
    assert_problem(
        json!({"requirements": {"cpus": 4}}),
        "cpus (unsupported requirement \"cpus\")",
    );
}

#[test]
fn users_are_name_only_objects() {
    assert_valid(json!({"users": [{"name": "root"}]}));
    assert_problem(
        json!({"users": [{"name": "root", "uid": 0}]}),
        "users (invalid image \"users\" entry: {\"name\":\"root\",\"uid\":0})",
    );
    assert_problem(
        json!({"users": "root"}),
        "users (invalid image \"users\" (not an array): \"root\")",
    );
}

#[test]
fn billing_tags_are_short_strings() {
    assert_valid(json!({"billing_tags": ["promo", "b".repeat(128)]}));
    let long = "b".repeat(129);
    assert_problem(
        json!({"billing_tags": [long.clone()]}),
        &format!("billing_tags (invalid image \"billing_tags\" entry: \"{long}\")"),
    );
    assert_problem(
        json!({"billing_tags": "promo"}),
        "billing_tags (invalid image \"billing_tags\" (not an array): \"promo\")",
    );
}

#[test]
fn traits_hold_strings_booleans_and_arrays() {
    assert_valid(json!({"traits": {"ssd": true, "hw": "x", "list": ["a"]}}));
    assert_problem(
        json!({"traits": {"n": 1}}),
        "traits (invalid image \"traits\" entry: (n, 1))",
    );
    assert_problem(
        json!({"traits": ["ssd"]}),
        "traits (invalid image \"traits\" (not an object): [\"ssd\"])",
    );
}

#[test]
fn tags_are_an_object_of_bounded_size() {
    assert_valid(json!({"tags": {"role": "os", "nested": {"a": [1, 2]}}}));
    assert_problem(
        json!({"tags": ["os"]}),
        "tags (invalid image \"tags\" (not an object): [\"os\"])",
    );
    assert_problem(
        json!({"tags": {"big": "x".repeat(100 * 1024)}}),
        "tags (image \"tags\" string length is too long, max 102400 characters)",
    );
}

#[test]
fn inherited_directories_only_on_zone_datasets() {
    assert_valid(json!({"inherited_directories": ["/opt/x"]}));
    assert_problem(
        json!({"type": "lx-dataset", "inherited_directories": ["/opt/x"]}),
        "inherited_directories (invalid image \"inherited_directories\" (only valid for a type:zone-dataset image): [\"/opt/x\"])",
    );
    assert_problem(
        json!({"inherited_directories": ["/opt/x", 5]}),
        "inherited_directories (invalid image \"inherited_directories\" entry: 5)",
    );
    assert_problem(
        json!({"inherited_directories": "/opt/x"}),
        "inherited_directories (invalid image \"inherited_directories\" (not an array): \"/opt/x\")",
    );
}

#[test]
fn zvol_fields_are_required_for_zvols_only() {
    let zvol = json!({"type": "zvol", "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 10240});
    assert_valid(zvol.clone());
    assert_eq!(
        problems_with(json!({"type": "zvol"})),
        [
            "nic_driver (MissingParameter)",
            "disk_driver (MissingParameter)",
            "cpu_type (MissingParameter)",
            "image_size (MissingParameter)"
        ]
    );
    assert_problem(
        json!({"nic_driver": "virtio"}),
        "nic_driver (invalid image nic_driver: \"virtio\" (can only have a value when image type is zvol))",
    );
    assert_problem(
        json!({"type": "zvol", "nic_driver": "virtio", "disk_driver": 5, "cpu_type": "host", "image_size": 1}),
        "disk_driver (invalid image disk_driver: \"5\" (must be a string))",
    );
    assert_problem(
        json!({"cpu_type": "host"}),
        "cpu_type (invalid image cpu_type: \"host\" (can only have a value when image type is zvol))",
    );
    assert_problem(
        json!({"image_size": 10}),
        "image_size (invalid image image_size: \"10\" (can only have a value when image type is zvol))",
    );
    assert_valid(
        json!({"type": "zvol", "nic_driver": "e1000", "disk_driver": "ide", "cpu_type": "qemu64", "image_size": "2048"}),
    );
    assert_problem(
        json!({"type": "zvol", "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": "big"}),
        "image_size (invalid image image_size: \"big\" (must be a positive integer))",
    );
}

#[test]
fn channels_are_strings() {
    assert_valid(json!({"channels": ["dev", "release"]}));
    assert_problem(
        json!({"channels": "dev"}),
        "channels (invalid image \"channels\" (not an array): \"dev\")",
    );
    assert_problem(
        json!({"channels": ["dev", 1]}),
        "channels (invalid image \"channels\" entry: 1)",
    );
}

#[test]
fn unknown_fields_are_named() {
    assert_eq!(
        problems_with(json!({"creator_uuid": UUID, "zz": 1})),
        ["creator_uuid", "zz"]
    );
}
