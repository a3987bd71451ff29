//! The journal as an auditor uses it: tampering is detected and named,
//! history says who did what from where, export feeds log pipelines,
//! rebuild reproduces the projections, show takes any unique prefix.

use std::path::PathBuf;

use imgadm_journal::Journal;
use imgadm_tests::harness::*;
use serde_json::Value;

/// A world with an install and a delete journaled (both sealed in a segment).
fn world_with_history() -> World {
    let w = World::new(Driver::Dir);
    w.install_example_base().ok();
    w.imgadm(&["delete", "-P", &w.pool, BASE_UUID]).ok();
    w
}

fn segment(w: &World) -> PathBuf {
    let dir = w.state.path().join("journal").join("segments");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("segments dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    segments.into_iter().next().expect("a sealed segment")
}

/// The segment's lines, and the index of the line holding event `seq`.
fn lines_and_index(w: &World, seq: u64) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(segment(w)).expect("read segment");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let needle = format!("\"seq\":{seq},");
    let index = lines.iter().position(|l| l.contains(&needle)).unwrap_or_else(|| panic!("no event {seq} in the segment"));
    (lines, index)
}

fn write_lines(w: &World, lines: &[String]) {
    std::fs::write(segment(w), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write segment");
}

#[track_caller]
fn verify_names_seq(w: &World, seq: u64) {
    let run = w.imgadm(&["journal", "verify"]);
    assert_eq!(run.status, 1, "verify passed a tampered journal: {}", run.stdout);
    assert!(run.stdout.contains(&format!("BROKEN at seq {seq}\n")), "{}", run.stdout);
    assert!(run.stderr.contains(&format!("broken at seq {seq}")), "{}", run.stderr);
}

#[test]
fn one_changed_byte_is_named_by_its_seq() {
    let w = world_with_history();
    w.imgadm(&["journal", "verify"]).ok();
    let (mut lines, index) = lines_and_index(&w, 5);
    // One byte inside the event's data: the event still parses.
    let at = lines[index].find("exclusive").expect("the lock step names its lock mode") + 1;
    lines[index].replace_range(at..at + 1, "X");
    write_lines(&w, &lines);
    verify_names_seq(&w, 5);
}

#[test]
fn one_removed_event_is_named_by_its_seq() {
    let w = world_with_history();
    let (mut lines, index) = lines_and_index(&w, 7);
    lines.remove(index);
    write_lines(&w, &lines);
    verify_names_seq(&w, 7);
}

#[test]
fn history_says_when_who_where_what_and_how_it_ended() {
    let w = world_with_history();
    let ops = w.imgadm(&["history", "-j", BASE_UUID]).ok().json();
    let ops = ops.as_array().expect("array");
    assert_eq!(ops.iter().map(|o| o["verb"].as_str().unwrap_or("")).collect::<Vec<_>>(), ["install", "delete"]);
    let install = &ops[0];
    for key in ["started", "user", "host"] {
        assert!(install[key].as_str().is_some_and(|v| !v.is_empty()), "{key} missing: {install}");
    }
    assert!(install["pid"].as_u64().is_some_and(|p| p > 0), "{install}");
    assert!(install["argv"].as_array().is_some_and(|a| a.iter().any(|v| v == "install")), "{install}");
    assert_eq!(install["state"], "succeeded");
    let sha1 = imgadm_tests::images::sha1_hex(&imgadm_tests::images::read_example(BASE_FILE));

    let table = w.imgadm(&["history", BASE_UUID]).ok().stdout;
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    for column in ["TIME", "USER", "HOST", "PID", "SHA1", "OUTCOME", "ARGV"] {
        assert!(header.contains(column), "no {column} column: {header}");
    }
    let install_row = lines.next().expect("install row");
    assert!(install_row.contains(&sha1) && install_row.contains("succeeded"), "{install_row}");
    assert!(install_row.contains(install["started"].as_str().unwrap_or("?")), "{install_row}");
}

#[test]
fn export_writes_json_lines_by_operation_and_by_time() {
    let w = world_with_history();
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let id = ops[0]["id"].as_str().expect("id");
    let events = |args: &[&str]| -> Vec<Value> {
        let run = w.imgadm(args).ok();
        run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
    };
    let of_op = events(&["journal", "export", "--op", &id[..16]]);
    assert!(!of_op.is_empty());
    assert!(of_op.iter().all(|e| e["op"] == id), "--op exported another operation's events");
    let all = events(&["journal", "export"]);
    assert!(all.len() > of_op.len());
    let seqs: Vec<u64> = all.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "events are exported in seq order, all of them");

    assert_eq!(events(&["journal", "export", "--since", "2000-01-01T00:00:00Z"]).len(), all.len());
    assert!(events(&["journal", "export", "--since", "2999-01-01T00:00:00Z"]).is_empty());
    let middle = all[all.len() / 2]["ts"].as_str().expect("ts");
    let since = events(&["journal", "export", "--since", middle]);
    assert!(since.iter().all(|e| e["ts"].as_str().is_some_and(|ts| ts >= middle)));
    assert!(since.len() < all.len() && !since.is_empty());
    w.imgadm(&["journal", "export", "--since", "yesterday"]).fails_with(2, "Usage");
}

#[test]
fn rebuild_leaves_the_projections_as_they_were() {
    let w = World::new(Driver::Dir);
    w.install_example_base().ok();
    w.install_example_child().ok();
    w.imgadm(&["delete", "-P", &w.pool, CHILD_UUID]).ok();
    let installed = || {
        let mut found: Vec<(String, String, String)> = Journal::new(w.state.path().join("journal"))
            .installed()
            .expect("projection")
            .into_iter()
            .map(|i| (i.pool, i.image, i.op.to_string()))
            .collect();
        found.sort();
        found
    };
    let ops_before = w.imgadm(&["journal", "list", "-j"]).ok().stdout;
    let installed_before = installed();
    assert_eq!(installed_before.len(), 1);
    w.imgadm(&["journal", "rebuild"]).ok();
    assert_eq!(w.imgadm(&["journal", "list", "-j"]).ok().stdout, ops_before);
    assert_eq!(installed(), installed_before);
    w.imgadm(&["journal", "verify"]).ok();
}

#[test]
fn show_takes_a_unique_prefix() {
    let w = world_with_history();
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let id = ops[1]["id"].as_str().expect("id");
    let shown = w.imgadm(&["journal", "show", &id[..14]]).ok().stdout;
    assert!(shown.starts_with(&format!("Operation {id} (succeeded)\n")), "{shown}");
    assert!(shown.contains("destroy"), "{shown}");
    let json = w.imgadm(&["journal", "show", "-j", &id[..14]]).ok().json();
    assert_eq!(json["operation"]["id"], id);
    // Both operations' ids start with the same time characters: a prefix
    // they share names neither.
    let common = id.chars().zip(ops[0]["id"].as_str().expect("id").chars()).take_while(|(a, b)| a == b).count();
    assert_ne!(w.imgadm(&["journal", "show", &id[..common]]).status, 0, "an ambiguous prefix was accepted");
}
