//! The upstream basics.test.js cases (reference section 14), plus the exit
//! statuses and error shapes every verb shares.

use imgadm_tests::harness::*;
use serde_json::Value;

fn world() -> World {
    World::new(Driver::Dir)
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

#[test]
fn no_args_prints_usage_and_fails_quietly() {
    let run = world().imgadm(&[]);
    assert_ne!(run.status, 0);
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
    assert!(run.stdout.contains("\nUsage:"), "{}", run.stdout);
}

#[test]
fn dash_e_without_a_command_is_a_json_no_command_error() {
    let run = world().imgadm(&["-E"]);
    assert_eq!(run.status, 1);
    let record: Value = serde_json::from_str(last_line(&run.stderr)).expect("last stderr line is JSON");
    assert_eq!(record["err"]["code"], "NoCommand");
    assert_eq!(record["name"], "imgadm");
    assert_eq!(record["level"], 50);
}

#[test]
fn version_prints_name_and_version() {
    let run = world().imgadm(&["--version"]).ok();
    assert!(run.stderr.is_empty());
    assert_eq!(run.stdout.trim(), format!("imgadm {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_forms_all_print_usage() {
    let w = world();
    for args in [&["--help"][..], &["-h"], &["help"], &["help", "install"], &["install", "-h"]] {
        let run = w.imgadm(args).ok();
        assert!(run.stderr.is_empty(), "{args:?}: {}", run.stderr);
        assert!(run.stdout.contains("\nUsage:") || run.stdout.starts_with("Usage:"), "{args:?}: {}", run.stdout);
    }
    let run = w.imgadm(&["help", "install"]).ok();
    assert!(run.stdout.contains("imgadm install"), "{}", run.stdout);
}

#[test]
fn verbose_logs_bunyan_records_on_stderr() {
    let w = world();
    let run = w.imgadm(&["-v", "list"]).ok();
    let first: Value = serde_json::from_str(run.stderr.lines().next().expect("a log line")).expect("bunyan JSON");
    assert_eq!(first["name"], "imgadm");
    assert!(first["src"]["line"].is_number(), "{first}");
}

#[test]
fn trace_log_level_adds_source_lines_to_records() {
    let w = world();
    let run = Run::from_output(w.command().env("IMGADM_LOG_LEVEL", "trace").arg("bogus").output().unwrap());
    assert_eq!(run.status, 1);
    assert!(run.stdout.is_empty());
    let first: Value = serde_json::from_str(run.stderr.lines().next().expect("a log line")).expect("bunyan JSON");
    assert!(first["src"]["line"].is_number(), "{first}");
}

#[test]
fn unknown_command_is_code_unknown_command_exit_1() {
    let w = world();
    let run = w.imgadm(&["bogus"]).fails_with(1, "UnknownCommand");
    assert!(run.stderr.contains("unknown command: \"bogus\""), "{}", run.stderr);
    let run = w.imgadm(&["-E", "-vv", "bogus"]);
    assert_eq!(run.status, 1);
    assert!(run.stdout.is_empty());
    let record: Value = serde_json::from_str(last_line(&run.stderr)).expect("last stderr line is JSON");
    assert_eq!(record["err"]["code"], "UnknownCommand");
}

#[test]
fn info_of_an_image_not_installed_exits_3() {
    let w = world();
    let run = w.imgadm(&["info", "00000000-1111-4222-8333-444444444444"]);
    assert_eq!(run.status, 3, "{}", run.stderr);
    assert!(run.stderr.contains("ImageNotInstalled"));
    assert!(run.stdout.is_empty());
}

#[test]
fn bad_options_are_usage_errors_exit_2() {
    let w = world();
    let run = w.imgadm(&["list", "-x"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.starts_with("imgadm list: error ("), "{}", run.stderr);
    let run = w.imgadm(&["list", "nofilter"]).fails_with(2, "Usage");
    assert!(run.stderr.contains("invalid filter"), "{}", run.stderr);
}

#[test]
fn error_lines_name_the_verb_and_code() {
    let w = world();
    let run = w.imgadm(&["get", "../etc"]).fails_with(1, "InvalidUUID");
    assert_eq!(run.stderr.trim(), "imgadm get: error (InvalidUUID): invalid uuid: \"../etc\"");
    let run = w.imgadm(&["-E", "get", "../etc"]);
    let record: Value = serde_json::from_str(last_line(&run.stderr)).expect("JSON error record");
    assert_eq!(record["err"]["code"], "InvalidUUID");
    assert!(!run.stderr.contains("imgadm get: error"), "-E replaces the human line");
}

#[test]
fn list_of_nothing_prints_nothing() {
    let w = world();
    let run = w.imgadm(&["list"]).ok();
    assert_eq!(run.stdout, "");
}
