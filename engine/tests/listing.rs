//! Listing rows: computed fields, filters, sorting and the table, on real
//! manifests and on small hand-made ones.

use std::path::PathBuf;

use imgadm_engine::listing::{
    parse_field_list, render_table, sort_rows, Filter, Filters, Row, RowExtras, SortKey, ANCESTRY_COLUMNS,
    LIST_COLUMNS, LIST_SORT,
};
use imgadm_engine::manifest::Manifest;
use serde_json::{json, Value};

fn fixture(name: &str) -> Manifest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Manifest::from_json_bytes(&bytes).expect("fixture is a JSON object")
}

fn row(value: Value) -> Row {
    Row::new(Manifest::from_value(value).expect("object"), RowExtras::default())
}

fn installed(name: &str) -> Row {
    Row::new(
        fixture(name),
        RowExtras {
            zpool: Some("zones".to_string()),
            source: Some("https://images.smartos.org".to_string()),
            clone_names: Some(vec!["zones/vm1".to_string(), "zones/vm2".to_string()]),
            driver: Some("zfs".to_string()),
        },
    )
}

fn fixture_rows() -> Vec<Row> {
    [
        "pkgbuild-18.1.0.zone-dataset.json",
        "ubuntu-16.04-20160601.lx-dataset.json",
        "ubuntu-certified-18.04-20180808.zvol.json",
        "docker-layer-62487cf6a7f6.docker.json",
        "example-base-1.0.0.imgmanifest",
        "example-child-1.0.0.imgmanifest",
    ]
    .into_iter()
    .map(installed)
    .collect()
}

fn names(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|r| r.field("name").and_then(Value::as_str).unwrap_or("?").to_string())
        .collect()
}

fn filtered(rows: Vec<Row>, args: &[&str]) -> Vec<String> {
    names(&Filters::parse(args).expect("filters").apply(rows))
}

fn sorted(rows: Vec<Row>, keys: &str) -> Vec<String> {
    let mut rows = rows;
    sort_rows(&mut rows, &SortKey::parse_list(keys).expect("keys"));
    names(&rows)
}

// ---- computed fields

#[test]
fn computed_fields_from_published_at_files_and_extras() {
    let zvol = installed("ubuntu-certified-18.04-20180808.zvol.json");
    assert_eq!(
        zvol.field("published_at"),
        Some(&json!("2018-10-11T12:45:24.804Z"))
    );
    assert_eq!(zvol.field("published"), Some(&json!("2018-10-11T12:45:24Z")));
    assert_eq!(zvol.field("published_date"), Some(&json!("2018-10-11")));
    assert_eq!(zvol.field("pub"), Some(&json!("2018-10-11")));
    assert_eq!(zvol.field("size"), Some(&json!(372276887)));
    assert_eq!(zvol.field("zpool"), Some(&json!("zones")));
    assert_eq!(zvol.field("source"), Some(&json!("https://images.smartos.org")));
    assert_eq!(zvol.field("clones"), Some(&json!(2)));
    assert_eq!(zvol.field("driver"), Some(&json!("zfs")));
    assert_eq!(zvol.field("docker_id"), None);

    let whole_seconds = installed("pkgbuild-18.1.0.zone-dataset.json");
    assert_eq!(
        whole_seconds.field("published"),
        Some(&json!("2018-04-09T08:25:52Z"))
    );

    let bare = row(json!({"uuid": "x"}));
    for computed in ["published", "pub", "size", "zpool", "source", "clones"] {
        assert_eq!(bare.field(computed), None, "{computed}");
    }
}

#[test]
fn docker_fields_for_docker_images() {
    let docker = installed("docker-layer-62487cf6a7f6.docker.json");
    assert_eq!(
        docker.field("docker_id"),
        Some(&json!(
            "sha256:62487cf6a7f698af4edc20707e14b1b3bba13b98bea3375f05af04859a30b222"
        ))
    );
    assert_eq!(docker.field("docker_short_id"), Some(&json!("62487cf6a7f6")));
    assert_eq!(
        docker.field("docker_repo"),
        Some(&json!("busybox42/zimbra-docker-centos"))
    );
    assert_eq!(docker.field("docker_tags"), Some(&json!(["latest"])));
}

#[test]
fn the_manifest_stays_untouched_for_json_output() {
    let manifest = fixture("ubuntu-certified-18.04-20180808.zvol.json");
    let rows = Filters::parse(["os=linux", "pub=2018-10-11"])
        .expect("filters")
        .apply(vec![installed("ubuntu-certified-18.04-20180808.zvol.json")]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].manifest(), &manifest);
    let info = rows[0].info_json();
    assert_eq!(info["manifest"], manifest.to_value());
    assert_eq!(info["manifest"].get("pub"), None);
    assert_eq!(info["manifest"].get("published"), None);
    let keys: Vec<&str> = info
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["manifest", "zpool", "driver", "source", "cloneNames", "clones"]
    );
    assert_eq!(info["cloneNames"], json!(["zones/vm1", "zones/vm2"]));
    assert_eq!(info["clones"], json!(2));

    let available = Row::new(
        manifest.clone(),
        RowExtras {
            source: Some("https://images.smartos.org".to_string()),
            ..RowExtras::default()
        },
    );
    assert_eq!(
        available.info_json(),
        json!({"manifest": manifest.to_value(), "source": "https://images.smartos.org"})
    );
}

// ---- filters

#[test]
fn a_filter_needs_an_equals_sign() {
    let err = Filter::parse("linux").unwrap_err();
    assert_eq!(err.code(), "Usage");
    assert_eq!(
        err.to_string(),
        "invalid filter: \"linux\" (must be of the form \"field=value\")"
    );
    assert_eq!(Filters::parse(["os=linux", "oops"]).unwrap_err().code(), "Usage");
    // Only the first `=` splits.
    let rows = vec![row(json!({"name": "a", "description": "x=y"}))];
    assert_eq!(filtered(rows, &["description=x=y"]), ["a"]);
}

#[test]
fn plain_filters_compare_the_string_form() {
    assert_eq!(
        filtered(fixture_rows(), &["os=linux"]),
        ["ubuntu-16.04", "ubuntu-certified-18.04", "docker-layer"]
    );
    assert_eq!(
        filtered(fixture_rows(), &["os=linux", "type=zvol"]),
        ["ubuntu-certified-18.04"]
    );
    assert_eq!(filtered(fixture_rows(), &["pub=2016-06-01"]), ["ubuntu-16.04"]);
    assert_eq!(filtered(fixture_rows(), &["clones=2"]).len(), 6);
    assert_eq!(
        filtered(fixture_rows(), &["zpool=zones", "name=example-base"]),
        ["example-base"]
    );
    assert!(filtered(fixture_rows(), &["os=Linux"]).is_empty());
}

#[test]
fn numbers_compare_as_javascript_prints_them() {
    let rows = || {
        vec![
            row(json!({"name": "int", "v": 2, "image_size": 10240})),
            row(json!({"name": "float", "v": 2.5})),
            row(json!({"name": "whole-float", "v": 3.0})),
        ]
    };
    assert_eq!(filtered(rows(), &["v=2"]), ["int"]);
    assert!(filtered(rows(), &["v=2.0"]).is_empty());
    assert_eq!(filtered(rows(), &["v=2.5"]), ["float"]);
    assert_eq!(filtered(rows(), &["v=3"]), ["whole-float"]);
    assert_eq!(filtered(rows(), &["image_size=10240"]), ["int"]);
    assert_eq!(filtered(fixture_rows(), &["size=465411979"]), ["pkgbuild"]);
}

#[test]
fn dotted_fields_look_inside_objects_and_arrays() {
    assert_eq!(
        filtered(fixture_rows(), &["requirements.brand=lx"]),
        ["ubuntu-16.04"]
    );
    assert_eq!(
        filtered(
            fixture_rows(),
            &["tags.docker:repo=busybox42/zimbra-docker-centos"]
        ),
        ["docker-layer"]
    );
    assert_eq!(
        filtered(fixture_rows(), &["tags.role=os"]),
        ["pkgbuild", "ubuntu-16.04", "ubuntu-certified-18.04"]
    );
    assert_eq!(
        filtered(
            fixture_rows(),
            &["files.0.compression=gzip", "requirements.ssh_key=true"]
        ),
        ["ubuntu-certified-18.04"]
    );
    assert!(filtered(fixture_rows(), &["requirements.brand.x=lx"]).is_empty());
}

#[test]
fn rows_without_the_field_are_excluded() {
    let rows = vec![
        row(json!({"name": "has", "origin": null})),
        row(json!({"name": "lacks"})),
    ];
    // A null is a value (String(null) is "null"); an absent field is not.
    assert_eq!(filtered(rows, &["origin=null"]), ["has"]);
    assert_eq!(
        filtered(fixture_rows(), &["origin=5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01"]),
        ["example-child"]
    );
}

#[test]
fn booleans_are_strict() {
    let rows = || {
        vec![
            row(json!({"name": "real", "public": true, "disabled": false})),
            row(json!({"name": "string", "public": "true", "disabled": "false"})),
            row(json!({"name": "number", "public": 1, "disabled": 0})),
        ]
    };
    assert_eq!(filtered(rows(), &["public=true"]), ["real"]);
    assert_eq!(filtered(rows(), &["disabled=false"]), ["real"]);
    assert!(filtered(vec![row(json!({"name": "true"}))], &["name=true"]).is_empty());
}

#[test]
fn tilde_is_substring_on_strings_and_membership_on_arrays() {
    assert_eq!(
        filtered(fixture_rows(), &["name=~ubuntu"]),
        ["ubuntu-16.04", "ubuntu-certified-18.04"]
    );
    assert_eq!(
        filtered(fixture_rows(), &["description=~Canonical"]),
        ["ubuntu-certified-18.04"]
    );
    assert_eq!(
        filtered(fixture_rows(), &["docker_tags=~latest"]),
        ["docker-layer"]
    );
    assert!(filtered(fixture_rows(), &["docker_tags=~late"]).is_empty());
    assert!(
        filtered(fixture_rows(), &["size=~4654"]).is_empty(),
        "numbers have no substrings"
    );
    let rows = vec![row(json!({"name": "a", "channels": ["dev", "release"]}))];
    assert_eq!(filtered(rows, &["channels=~dev"]), ["a"]);
    // `~` alone matches every string.
    assert_eq!(filtered(fixture_rows(), &["name=~"]).len(), 6);
}

#[test]
fn the_last_filter_on_a_field_wins() {
    assert_eq!(
        filtered(fixture_rows(), &["os=smartos", "os=linux", "type=zvol"]),
        ["ubuntu-certified-18.04"]
    );
    assert!(Filters::parse(Vec::<String>::new()).expect("none").is_empty());
    assert_eq!(filtered(fixture_rows(), &[]).len(), 6);
}

// ---- sorting

#[test]
fn default_sort_is_published_at_then_name() {
    let keys: Vec<SortKey> = LIST_SORT
        .iter()
        .map(|k| SortKey::parse(k).expect("key"))
        .collect();
    let mut rows = fixture_rows();
    sort_rows(&mut rows, &keys);
    assert_eq!(
        names(&rows),
        [
            "ubuntu-16.04",
            "pkgbuild",
            "ubuntu-certified-18.04",
            "docker-layer",
            "example-base",
            "example-child"
        ]
    );
    let mut same_date = vec![
        row(json!({"name": "b", "published_at": "2020-01-01T00:00:00Z"})),
        row(json!({"name": "a", "published_at": "2020-01-01T00:00:00Z"})),
    ];
    sort_rows(&mut same_date, &keys);
    assert_eq!(names(&same_date), ["a", "b"]);
}

#[test]
fn numbers_sort_numerically_and_words_as_strings() {
    let rows = || {
        vec![
            row(json!({"name": "ten", "n": "10", "w": "b"})),
            row(json!({"name": "nine", "n": 9, "w": "B"})),
            row(json!({"name": "hundred", "n": "100", "w": "a"})),
        ]
    };
    assert_eq!(sorted(rows(), "n"), ["nine", "ten", "hundred"]);
    assert_eq!(sorted(rows(), "-n"), ["hundred", "ten", "nine"]);
    assert_eq!(sorted(rows(), "w"), ["nine", "hundred", "ten"]);
    // "10" and "9x" are not both numbers: compared as strings.
    let mixed = vec![
        row(json!({"name": "9x", "n": "9x"})),
        row(json!({"name": "10", "n": "10"})),
    ];
    assert_eq!(sorted(mixed, "n"), ["10", "9x"]);
}

#[test]
fn missing_values_sort_first_and_last_when_reversed() {
    let rows = || {
        vec![
            row(json!({"name": "b", "size": "x"})),
            row(json!({"name": "none"})),
            row(json!({"name": "a", "size": "w"})),
        ]
    };
    assert_eq!(sorted(rows(), "size"), ["none", "a", "b"]);
    assert_eq!(sorted(rows(), "-size"), ["b", "a", "none"]);
}

#[test]
fn sorting_is_stable_and_keys_apply_in_order() {
    let rows = || {
        vec![
            row(json!({"name": "1", "os": "linux", "v": 2})),
            row(json!({"name": "2", "os": "smartos", "v": 1})),
            row(json!({"name": "3", "os": "linux", "v": 1})),
            row(json!({"name": "4", "os": "smartos", "v": 2})),
        ]
    };
    assert_eq!(sorted(rows(), "os"), ["1", "3", "2", "4"]);
    assert_eq!(sorted(rows(), "os,-v"), ["1", "3", "4", "2"]);
    assert_eq!(sorted(rows(), "v, os"), ["3", "2", "1", "4"]);
    assert_eq!(sorted(rows(), "nosuchfield"), ["1", "2", "3", "4"]);
}

#[test]
fn sort_keys_must_name_a_field() {
    assert_eq!(SortKey::parse("-").unwrap_err().code(), "Usage");
    assert_eq!(SortKey::parse_list("name,").unwrap_err().code(), "Usage");
}

// ---- table

#[test]
fn field_lists_split_on_commas_with_whitespace() {
    assert_eq!(
        parse_field_list("-o", "uuid, name ,version").expect("list"),
        ["uuid", "name", "version"]
    );
    assert_eq!(parse_field_list("-o", " pub ").expect("list"), ["pub"]);
    let err = parse_field_list("-o", "uuid,,name").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid -o field list: \"uuid,,name\" (empty field name)"
    );
}

#[test]
fn default_list_table_byte_for_byte() {
    let mut rows = fixture_rows();
    let keys: Vec<SortKey> = LIST_SORT
        .iter()
        .map(|k| SortKey::parse(k).expect("key"))
        .collect();
    sort_rows(&mut rows, &keys);
    let expected = "\
UUID                                  NAME                    VERSION       OS       TYPE          PUB
05140a7e-279f-11e6-aedf-47d4f69d2887  ubuntu-16.04            20160601      linux    lx-dataset    2016-06-01
9d91e334-3bcf-11e8-bb0b-e7b49eb01e38  pkgbuild                18.1.0        smartos  zone-dataset  2018-04-09
ac99517a-72ac-44c0-90e6-c7ce3d944a0a  ubuntu-certified-18.04  20180808      linux    zvol          2018-10-11
4a3db8cb-0e94-ae23-588c-ee7934088927  docker-layer            62487cf6a7f6  linux    docker        2019-03-23
5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01  example-base            1.0.0         smartos  zone-dataset  2026-11-23
8c7a2d91-1e54-4b8f-a6c3-0d9e4f21b702  example-child           1.0.0         smartos  zone-dataset  2026-11-23
";
    assert_eq!(render_table(&rows, LIST_COLUMNS, true), expected);
    let without_header = expected.split_once('\n').map(|(_, rest)| rest).unwrap_or("");
    assert_eq!(render_table(&rows, LIST_COLUMNS, false), without_header);
}

#[test]
fn ancestry_table_byte_for_byte() {
    let rows = vec![
        installed("example-child-1.0.0.imgmanifest"),
        installed("example-base-1.0.0.imgmanifest"),
    ];
    assert_eq!(
        render_table(&rows, ANCESTRY_COLUMNS, true),
        "\
UUID                                  NAME           VERSION  PUBLISHED
8c7a2d91-1e54-4b8f-a6c3-0d9e4f21b702  example-child  1.0.0    2026-11-23T15:49:00Z
5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01  example-base   1.0.0    2026-11-23T15:48:00Z
"
    );
}

#[test]
fn cells_render_by_type_and_widths_fit_the_widest() {
    let rows = vec![
        row(
            json!({"name": "a", "public": true, "channels": ["dev", "release"], "n": 1.5, "gone": null, "empty": ""}),
        ),
        row(json!({"name": "longer-name", "public": false, "n": 1e21})),
    ];
    let columns = parse_field_list("-o", "name,public,channels,n,gone,nosuch,empty").expect("columns");
    assert_eq!(
        render_table(&rows, &columns, true),
        "\
NAME         PUBLIC  CHANNELS           N      GONE  NOSUCH  EMPTY
a            true    [\"dev\",\"release\"]  1.5    -     -
longer-name  false   -                  1e+21  -     -       -
"
    );
}

#[test]
fn no_line_ends_in_whitespace() {
    let rows = vec![
        row(json!({"a": "x", "b": ""})),
        row(json!({"a": "much longer", "b": "y"})),
    ];
    let table = render_table(&rows, &["a", "b"], false);
    assert_eq!(table, "x\nmuch longer  y\n");
    assert!(table.lines().all(|line| !line.ends_with(' ')));
}

#[test]
fn no_rows_print_nothing_not_even_the_header() {
    assert_eq!(render_table(&[], LIST_COLUMNS, true), "");
    let none = Filters::parse(["os=plan9"])
        .expect("filter")
        .apply(fixture_rows());
    assert_eq!(render_table(&none, LIST_COLUMNS, true), "");
}
