//! Two imgadm processes at once: reads during an install, and a resume or
//! rollback refused at once while another process holds the operation or
//! the image.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use imgadm_engine::ids::ImageUuid;
use imgadm_engine::lock::{self, LockMode};
use imgadm_engine::state::StateDir;
use imgadm_tests::harness::*;
use imgadm_tests::images::read_example;
use serde_json::Value;

fn last_operation(w: &World) -> Value {
    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    ops.as_array().and_then(|a| a.last()).cloned().expect("an operation")
}

/// A refusal comes at once, not after a lock wait.
#[track_caller]
fn refused_at_once(w: &World, args: &[&str], code: &str) -> Run {
    let started = Instant::now();
    let run = w.imgadm(args).fails_with(1, code);
    assert!(started.elapsed() < Duration::from_secs(5), "`{}` waited {:?}", args.join(" "), started.elapsed());
    run
}

#[test]
fn resume_and_rollback_are_refused_while_another_process_holds_the_image_lock() {
    let w = World::new(Driver::Dir);
    let killed = w
        .command()
        .args(["install", "-P", &w.pool, "-m"])
        .arg(example(BASE_MANIFEST))
        .arg("-f")
        .arg(example(BASE_FILE))
        .env("IMGADM_FAILPOINT", "cache:before")
        .output()
        .expect("run imgadm");
    assert_eq!(killed.status.signal(), Some(9));
    let op = last_operation(&w)["id"].as_str().expect("id").to_string();

    // This test process holds the image's lock, as another imgadm would.
    let state = StateDir::under(w.state.path().to_path_buf());
    let uuid = ImageUuid::parse(BASE_UUID).expect("uuid");
    let held = lock::try_lock_images(&state, &[(uuid, LockMode::Exclusive)]).expect("take the image lock");
    let run = refused_at_once(&w, &["journal", "resume", &op], "ImageLocked");
    assert!(run.stderr.contains(BASE_UUID), "{}", run.stderr);
    refused_at_once(&w, &["journal", "rollback", &op], "ImageLocked");
    assert_eq!(last_operation(&w)["state"], "interrupted", "a refused resume changed the operation's state");

    drop(held);
    w.imgadm(&["journal", "resume", &op]).ok();
    assert_eq!(last_operation(&w)["state"], "succeeded");
    assert_eq!(w.listed(), vec![BASE_UUID.to_string()]);
}

/// An install fed from a FIFO waits for its bytes with its operation open:
/// meanwhile other imgadm processes read the journal, the history and the
/// image list, and a resume or rollback of it is refused at once.
#[test]
fn reads_during_an_install_and_busy_operation_refused() {
    let w = World::new(Driver::Zfs);
    let fifo = w.work.path().join("image.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let install = w
        .command()
        .args(["install", "-P", &w.pool, "-m"])
        .arg(example(BASE_MANIFEST))
        .arg("-f")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imgadm install");

    // The install is waiting on the FIFO once its verify step has begun.
    let deadline = Instant::now() + Duration::from_secs(30);
    let op = loop {
        let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
        let running = ops.as_array().and_then(|a| a.last()).filter(|o| {
            o["state"] == "running" && o["steps"].as_array().is_some_and(|s| s.iter().any(|s| s["step"] == "verify"))
        });
        if let Some(op) = running {
            break op.clone();
        }
        assert!(Instant::now() < deadline, "the install never reached its verify step: {ops}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = op["id"].as_str().expect("id");

    let history = w.imgadm(&["history", "-j", BASE_UUID]).ok();
    assert_eq!(history.json()[0]["state"], "running");
    let listed = w.imgadm(&["list", "-H", &format!("zpool={}", w.pool)]).ok();
    assert!(listed.stdout.is_empty(), "the image is listed before it is installed: {}", listed.stdout);
    assert!(!listed.stderr.contains("was interrupted"), "a running operation is not interrupted: {}", listed.stderr);

    let busy = refused_at_once(&w, &["journal", "resume", id], "OperationBusy");
    assert!(busy.stderr.contains(&install.id().to_string()), "the refusal names the holder's pid: {}", busy.stderr);
    refused_at_once(&w, &["journal", "rollback", id], "OperationBusy");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .and_then(|mut f| f.write_all(&read_example(BASE_FILE)))
        .expect("feed the FIFO");
    let out = install.wait_with_output().expect("wait for the install");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_operation(&w)["state"], "succeeded");
    assert_eq!(w.listed(), vec![BASE_UUID.to_string()]);
}
