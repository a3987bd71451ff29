//! The journal's behaviour on a real directory: appends, reads, segments,
//! projections, verify against tampering, the lock.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use imgadm_journal::{EventKind, Journal, JournalError, GENESIS_PREV};
use serde_json::json;

fn journal() -> (tempfile::TempDir, Journal) {
    let tmp = tempfile::tempdir().unwrap();
    let journal = Journal::new(tmp.path().join("journal"));
    (tmp, journal)
}

/// Checks that seqs are 1..=n and each prev is the hash of the stored bytes before it.
fn assert_chained(lines: &[Vec<u8>]) {
    let mut prev = GENESIS_PREV.to_string();
    for (i, line) in lines.iter().enumerate() {
        let event: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(event["seq"], json!(i as u64 + 1), "seqs are dense");
        assert_eq!(event["prev"], json!(prev), "seq {} chains to the one before", i + 1);
        prev = sha256_hex(line);
    }
}

/// The journal's sled, opened behind its back to tamper with it. sled's
/// own lock can outlive the journal's last handle by a moment: retry.
fn sled_db(journal: &Journal) -> sled::Db {
    let started = Instant::now();
    loop {
        match sled::open(journal.dir().join("sled")) {
            Ok(db) => return db,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn event_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'e'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[test]
fn append_and_read_back() {
    let (_tmp, journal) = journal();
    let op = Journal::new_op_id();
    assert_eq!(op.as_str().len(), 26);
    let first = journal.append(vec![begun(&op, "import", &[IMG_A])]).unwrap();
    let second = journal
        .append(vec![
            step(&op, EventKind::StepBegun, "fetch", json!({"image": IMG_A})),
            step(&op, EventKind::StepDone, "fetch", json!({"image": IMG_A, "bytes": 10})),
        ])
        .unwrap();
    assert_eq!(first[0].seq, 1);
    assert_eq!(first[0].prev, GENESIS_PREV);
    assert_eq!(second.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert!(first[0].ts.ends_with('Z') && first[0].ts.len() == 24, "RFC 3339 UTC ms: {}", first[0].ts);

    let read = journal.operation_events(&op).unwrap();
    assert_eq!(read, [first, second].concat());
    assert_chained(&export_lines(&journal));
}

#[test]
fn ended_operation_moves_to_a_segment_byte_for_byte_and_the_chain_continues() {
    let (_tmp, journal) = journal();
    let a = import(&journal, "zones", IMG_A);
    let before = export_lines(&journal);
    let b = Journal::new_op_id();
    journal.append(vec![begun(&b, "import", &[IMG_B])]).unwrap();

    let segment = fs::read(journal.dir().join("segments/000001.jsonl")).unwrap();
    let joined: Vec<u8> = before.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    assert_eq!(segment, joined, "the ended operation's stored bytes, unchanged");
    // Its events left sled.
    {
        let db = sled_db(&journal);
        assert_eq!(db.scan_prefix(b"e").count(), 1, "only b's begun event is still in sled");
    }

    assert_eq!(journal.operation_events(&a).unwrap().len(), before.len());
    let all = export_lines(&journal);
    assert_eq!(all.len(), before.len() + 1);
    assert_chained(&all);
    let report = journal.verify().unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.events, all.len() as u64);
}

#[test]
fn segments_rotate_and_stay_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = Journal::new(tmp.path().join("j")).with_segment_limit(2000);
    let ops: Vec<_> = (0..6).map(|i| import(&journal, "zones", if i % 2 == 0 { IMG_A } else { IMG_B })).collect();
    let files = fs::read_dir(journal.dir().join("segments")).unwrap().count();
    assert!(files >= 6, "several segment files (data + index), found {files}");
    assert_eq!(journal.operations_for_image(IMG_A).unwrap().len(), 3);
    for op in &ops {
        assert_eq!(journal.operation_events(op).unwrap().len(), 9);
    }
    assert_chained(&export_lines(&journal));
    assert!(journal.verify().unwrap().problems.is_empty());
}

#[test]
fn resolve_by_prefix() {
    let (_tmp, journal) = journal();
    let ended_op = import(&journal, "zones", IMG_A);
    let open_op = Journal::new_op_id();
    journal.append(vec![begun(&open_op, "import", &[IMG_B])]).unwrap();

    let lower = ended_op.as_str()[..20].to_lowercase();
    assert_eq!(journal.resolve(&lower).unwrap(), ended_op, "a unique prefix, in any case");
    assert_eq!(journal.resolve(open_op.as_str()).unwrap(), open_op, "a whole id, of an open operation");

    // Every ULID of this century starts with "01".
    let err = journal.resolve("01").unwrap_err();
    assert!(matches!(err, JournalError::Ambiguous { count: 2, .. }));
    assert_eq!(err.to_string(), "ambiguous: 2 operations start with 01");

    let err = journal.resolve("ZZZZ").unwrap_err();
    assert_eq!(err.to_string(), "no such operation: ZZZZ");
}

#[test]
fn summaries_read_the_begun_event_and_keep_repeated_steps_apart() {
    let (_tmp, journal) = journal();
    let op = Journal::new_op_id();
    journal.append(vec![begun(&op, "import", &[IMG_A, IMG_B])]).unwrap();
    for image in [IMG_A, IMG_B] {
        journal
            .append(vec![step(&op, EventKind::StepBegun, "fetch", json!({"image": image}))])
            .unwrap();
    }
    // Done in the other order: each closes its own image's run.
    journal.append(vec![step(&op, EventKind::StepDone, "fetch", json!({"image": IMG_B, "bytes": 2}))]).unwrap();
    journal.append(vec![step(&op, EventKind::StepFailed, "fetch", json!({"image": IMG_A, "code": "EIO"}))]).unwrap();

    let listed = journal.operations().unwrap();
    assert_eq!(listed.len(), 1);
    let s = &listed[0];
    assert_eq!((s.verb.as_str(), s.user.as_str(), s.host.as_str(), s.pid, s.uid), ("import", "root", "cn7", 4321, 0));
    assert_eq!(s.images, vec![IMG_A, IMG_B]);
    assert_eq!(s.argv[..2], ["imgadm", "import"]);
    assert_eq!(s.ended, None);
    let steps: Vec<_> = s.steps.iter().map(|st| (st.step.as_str(), st.state.as_str(), st.data["image"].as_str().unwrap())).collect();
    assert_eq!(steps, vec![("fetch", "failed", IMG_A), ("fetch", "done", IMG_B)]);
    assert_eq!(s.steps[0].data["code"], "EIO");
    assert_eq!(s.steps[1].data["bytes"], 2);

    journal.append(vec![ended(&op, "failed")]).unwrap();
    let s = &journal.operations().unwrap()[0];
    assert_eq!(s.outcome.as_deref(), Some("failed"));
    assert!(s.ended.is_some());
}

#[test]
fn readers_see_an_open_operation_alongside_ended_ones() {
    let (_tmp, journal) = journal();
    let done = import(&journal, "zones", IMG_A);
    let running = Journal::new_op_id();
    journal
        .append(vec![begun(&running, "import", &[IMG_A]), step(&running, EventKind::StepBegun, "fetch", json!({"image": IMG_A}))])
        .unwrap();

    let all: Vec<_> = journal.operations().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(all, vec![done.clone(), running.clone()], "oldest first");
    let open: Vec<_> = journal.open_operations().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(open, vec![running.clone()]);
    let history: Vec<_> = journal.operations_for_image(IMG_A).unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(history, vec![done, running.clone()]);
    assert!(journal.operations_for_image(IMG_C).unwrap().is_empty());

    journal.append(vec![ended(&running, "abandoned")]).unwrap();
    assert!(journal.open_operations().unwrap().is_empty());
}

#[test]
fn refuses_events_outside_an_operations_life() {
    let (_tmp, journal) = journal();
    let op = Journal::new_op_id();
    let err = journal.append(vec![step(&op, EventKind::StepBegun, "fetch", json!({}))]).unwrap_err();
    assert!(err.to_string().contains("has not begun"), "{err}");
    journal.append(vec![begun(&op, "delete", &[IMG_A]), ended(&op, "succeeded")]).unwrap();
    let err = journal.append(vec![step(&op, EventKind::StepBegun, "destroy", json!({}))]).unwrap_err();
    assert!(err.to_string().contains("has not begun, or has already ended"), "{err}");
    let other = Journal::new_op_id();
    let err = journal
        .append(vec![begun(&other, "delete", &[]), NewEventNoStep::make(&other)])
        .unwrap_err();
    assert!(err.to_string().contains("needs a step name"), "{err}");
    let huge = Journal::new_op_id();
    let err = journal
        .append(vec![begun(&huge, "create", &[]), step(&huge, EventKind::StepDone, "manifest", json!({"blob": "x".repeat(100_000)}))])
        .unwrap_err();
    assert!(err.to_string().contains("the limit is"), "{err}");
    // Nothing of the refused batches was stored.
    assert_eq!(export_lines(&journal).len(), 2);
}

struct NewEventNoStep;
impl NewEventNoStep {
    fn make(op: &imgadm_journal::OpId) -> imgadm_journal::NewEvent {
        imgadm_journal::NewEvent { op: op.clone(), kind: EventKind::StepDone, step: None, data: json!({}) }
    }
}

#[test]
fn installed_projection_follows_installs_and_removals() {
    let (_tmp, journal) = journal();
    import(&journal, "zones", IMG_A);
    let b = import(&journal, "zones", IMG_B);
    import(&journal, "data", IMG_A);
    delete(&journal, "zones", IMG_A);
    let installed: Vec<_> = journal.installed().unwrap().into_iter().map(|i| (i.pool, i.image, i.op)).collect();
    assert_eq!(installed.len(), 2);
    assert_eq!(installed[0].0, "data");
    assert_eq!(installed[1], ("zones".to_string(), IMG_B.to_string(), b));
}

#[test]
fn rebuild_produces_what_live_appends_produced() {
    let (_tmp, journal) = journal();
    import(&journal, "zones", IMG_A);
    import(&journal, "zones", IMG_B);
    delete(&journal, "zones", IMG_A);
    import(&journal, "zones", IMG_A);
    import(&journal, "data", IMG_C);
    delete(&journal, "data", IMG_C);
    let running = Journal::new_op_id();
    journal
        .append(vec![begun(&running, "install", &[IMG_C]), step(&running, EventKind::StepDone, "recv",
            json!({"image": IMG_C, "installed": {"pool": "data", "driver": "zfs", "image": IMG_C}}))])
        .unwrap();

    let snapshot = |j: &Journal| {
        (
            j.installed().unwrap(),
            j.open_operations().unwrap(),
            j.operations().unwrap(),
            j.operations_for_image(IMG_A).unwrap(),
        )
    };
    let live = snapshot(&journal);
    assert_eq!(live.0.len(), 3);

    journal.rebuild().unwrap();
    assert_eq!(snapshot(&journal), live, "rebuild over intact projections");

    // Throw the projections away: the sled records and the segment indexes.
    {
        let db = sled_db(&journal);
        for prefix in [b"i", b"o"] {
            for key in db.scan_prefix(prefix).keys() {
                db.remove(key.unwrap()).unwrap();
            }
        }
        db.flush().unwrap();
    }
    fs::remove_file(journal.dir().join("segments/000001.idx")).unwrap();
    journal.rebuild().unwrap();
    assert_eq!(snapshot(&journal), live, "rebuild from the events alone");
    assert!(journal.verify().unwrap().problems.is_empty());
}

/// Replaces the first occurrence of `from` in `bytes` by `to` (same length).
fn replace_once(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    bytes[at..at + from.len()].copy_from_slice(to);
}

#[test]
fn verify_names_an_event_changed_in_sled() {
    let (_tmp, journal) = journal();
    import(&journal, "zones", IMG_A); // seqs 1..=9, in a segment
    let op = Journal::new_op_id();
    journal
        .append(vec![begun(&op, "import", &[IMG_B]), step(&op, EventKind::StepBegun, "fetch", json!({"image": IMG_B}))])
        .unwrap();
    journal.append(vec![step(&op, EventKind::StepDone, "fetch", json!({"image": IMG_B}))]).unwrap(); // 12
    assert!(journal.verify().unwrap().problems.is_empty());
    {
        let db = sled_db(&journal);
        let mut value = db.get(event_key(11)).unwrap().unwrap().to_vec();
        replace_once(&mut value, b"fetch", b"fetcH");
        db.insert(event_key(11), value).unwrap();
        db.flush().unwrap();
    }
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad_seq, Some(11), "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.contains("seq 11 was changed")), "{:?}", report.problems);
}

#[test]
fn verify_names_an_event_changed_in_a_segment() {
    let (_tmp, journal) = journal();
    import(&journal, "zones", IMG_A);
    import(&journal, "zones", IMG_B);
    let path = journal.dir().join("segments/000001.jsonl");
    let mut data = fs::read(&path).unwrap();
    // Seq 4 is the first fetch begun; change one byte of its URL.
    let line_start = data.windows(9).position(|w| w == b"\"seq\":4,\"").unwrap();
    let url = data[line_start..].windows(6).position(|w| w == b"images").unwrap() + line_start;
    data[url] = b'I';
    fs::write(&path, &data).unwrap();
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad_seq, Some(4), "{:?}", report.problems);

    // The last event changed: nothing follows it, the head catches it.
    let (_tmp2, journal) = self::journal();
    import(&journal, "zones", IMG_A);
    let path = journal.dir().join("segments/000001.jsonl");
    let mut data = fs::read(&path).unwrap();
    replace_once(&mut data, b"succeeded", b"succeedeD");
    fs::write(&path, &data).unwrap();
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad_seq, Some(9), "{:?}", report.problems);
}

#[test]
fn verify_names_a_deleted_event() {
    // In sled.
    let (_tmp, journal) = journal();
    let op = Journal::new_op_id();
    journal.append(vec![begun(&op, "import", &[IMG_A])]).unwrap();
    for _ in 0..3 {
        journal.append(vec![step(&op, EventKind::StepBegun, "fetch", json!({"image": IMG_A}))]).unwrap();
    }
    sled_db(&journal).remove(event_key(2)).unwrap();
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad_seq, Some(2), "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p == "seq 2 missing"), "{:?}", report.problems);

    // In a segment: a line cut out, and the index rebuilt to match.
    let (_tmp2, journal) = self::journal();
    import(&journal, "zones", IMG_A);
    import(&journal, "zones", IMG_B);
    let path = journal.dir().join("segments/000001.jsonl");
    let data = fs::read(&path).unwrap();
    let kept: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').filter(|l| !l.starts_with(b"{\"v\":1,\"seq\":13,")).collect();
    fs::write(&path, kept.concat()).unwrap();
    journal.rebuild().unwrap();
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad_seq, Some(13), "{:?}", report.problems);
}

#[test]
fn a_cut_at_the_end_is_caught_by_the_head() {
    // sled cuts its log: the last event and the head record it carried vanish.
    let (_tmp, journal) = journal();
    let op = Journal::new_op_id();
    journal.append(vec![begun(&op, "import", &[IMG_A])]).unwrap();
    journal.append(vec![step(&op, EventKind::StepBegun, "fetch", json!({"image": IMG_A}))]).unwrap();
    let third = journal.append(vec![step(&op, EventKind::StepDone, "fetch", json!({"image": IMG_A}))]).unwrap();
    {
        let db = sled_db(&journal);
        db.remove(event_key(3)).unwrap();
        let head = json!({"seq": 2, "hash": third[0].prev});
        db.insert(b"h", serde_json::to_vec(&head).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let err = journal.operations().unwrap_err();
    assert!(matches!(err, JournalError::Lost { known: 2, head: 3, .. }), "{err}");
    assert!(err.to_string().contains("events seq 3 are missing"), "{err}");
    let err = journal.append(vec![step(&op, EventKind::StepBegun, "recv", json!({}))]).unwrap_err();
    assert!(matches!(err, JournalError::Lost { .. }), "appends refuse too: {err}");
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad_seq, Some(3), "{:?}", report.problems);

    // The last event cut from the end of a segment file.
    let (_tmp2, journal) = self::journal();
    import(&journal, "zones", IMG_A);
    let path = journal.dir().join("segments/000001.jsonl");
    let data = fs::read(&path).unwrap();
    let cut = data[..data.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    fs::write(&path, &data[..cut]).unwrap();
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad_seq, Some(9), "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.contains("seq 9 missing")), "{:?}", report.problems);
}

#[test]
fn a_head_file_left_behind_by_a_crash_catches_up() {
    let (_tmp, journal) = journal();
    let op = Journal::new_op_id();
    journal.append(vec![begun(&op, "import", &[IMG_A])]).unwrap();
    let old_head = fs::read(journal.dir().join("head")).unwrap();
    journal.append(vec![step(&op, EventKind::StepBegun, "fetch", json!({}))]).unwrap();
    // As if the process died after sled's fsync and before the head file's rename.
    fs::write(journal.dir().join("head"), &old_head).unwrap();
    assert_eq!(journal.operations().unwrap().len(), 1);
    let head: serde_json::Value = serde_json::from_slice(&fs::read(journal.dir().join("head")).unwrap()).unwrap();
    assert_eq!(head["seq"], 2);
}

#[test]
fn an_interrupted_move_is_finished_by_the_next_call() {
    let (_tmp, journal) = journal();
    import(&journal, "zones", IMG_A);
    let head_path = journal.dir().join("head");
    let mut head_after_a: serde_json::Value = serde_json::from_slice(&fs::read(&head_path).unwrap()).unwrap();
    let b = import(&journal, "zones", IMG_B);
    let b_lines: Vec<Vec<u8>> = export_lines(&journal).split_off(9);
    // The head file as that append left it: marked unsettled before b's
    // events went into sled, never rewritten after.
    head_after_a["settled"] = json!(false);
    fs::write(&head_path, serde_json::to_vec(&head_after_a).unwrap()).unwrap();
    // Put b back as if the process died after writing its bytes but before
    // its index line: events still in sled, marked pending, data unindexed.
    let index = journal.dir().join("segments/000001.idx");
    let idx = fs::read(&index).unwrap();
    let first_line = idx.iter().position(|&b| b == b'\n').unwrap() + 1;
    fs::write(&index, &idx[..first_line]).unwrap();
    {
        let db = sled_db(&journal);
        for (i, line) in b_lines.iter().enumerate() {
            db.insert(event_key(10 + i as u64), line.clone()).unwrap();
        }
        let mut pending = vec![b'p'];
        pending.extend_from_slice(b.as_str().as_bytes());
        db.insert(pending, b"".to_vec()).unwrap();
        db.flush().unwrap();
    }
    // Garbage of a half-written line after the data makes it worse.
    let data_path = journal.dir().join("segments/000001.jsonl");
    let mut data = fs::read(&data_path).unwrap();
    data.extend_from_slice(b"{\"v\":1,\"seq\":1");
    fs::write(&data_path, &data).unwrap();

    assert_eq!(journal.operation_events(&b).unwrap().len(), 9);
    assert!(sled_db(&journal).scan_prefix(b"e").next().is_none(), "moved out of sled");
    let all = export_lines(&journal);
    assert_eq!(all.len(), 18);
    assert_chained(&all);
    assert!(journal.verify().unwrap().problems.is_empty());
}

fn head_file(journal: &Journal) -> serde_json::Value {
    serde_json::from_slice(&fs::read(journal.dir().join("head")).unwrap()).unwrap()
}

#[test]
fn a_settled_journal_is_read_without_the_lock_and_unsettles_before_sled_gets_events() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = Journal::new(tmp.path().join("j")).with_lock_timeout(Duration::from_millis(100));
    let a = import(&journal, "zones", IMG_A);
    assert_eq!(head_file(&journal)["settled"], json!(true), "nothing open, all in segments");

    // Readers of a settled journal need neither the lock nor sled.
    let held = hold_lock(journal.dir(), "pid 1: test");
    assert_eq!(journal.operations_for_image(IMG_A).unwrap().len(), 1);
    assert_eq!(journal.operations().unwrap().len(), 1);
    assert!(journal.open_operations().unwrap().is_empty());
    assert_eq!(journal.resolve(&a.as_str()[..16]).unwrap(), a);
    assert_eq!(journal.operation_events(&a).unwrap().len(), 9);
    drop(held);

    // A refused append puts nothing into sled and leaves it settled.
    assert!(journal.append(vec![ended(&a, "succeeded")]).is_err());
    assert_eq!(head_file(&journal)["settled"], json!(true));

    // An operation begins: the head file says unsettled before its events
    // are in sled, so readers open sled and see it (and wait for the lock).
    let b = Journal::new_op_id();
    journal.append(vec![begun(&b, "import", &[IMG_B])]).unwrap();
    assert_eq!(head_file(&journal)["settled"], json!(false));
    assert_eq!(journal.open_operations().unwrap().len(), 1);
    let held = hold_lock(journal.dir(), "pid 1: test");
    assert!(matches!(journal.open_operations().unwrap_err(), JournalError::Locked { .. }));
    drop(held);

    // Still unsettled while another operation is open after one ends.
    let c = import(&journal, "zones", IMG_A);
    assert_eq!(head_file(&journal)["settled"], json!(false));
    assert_eq!(journal.operation_events(&c).unwrap().len(), 9);
    journal.append(vec![ended(&b, "failed")]).unwrap();
    assert_eq!(head_file(&journal)["settled"], json!(true));
    assert_eq!(journal.operations().unwrap().len(), 3);
    assert!(journal.verify().unwrap().problems.is_empty());
}

#[test]
fn export_filters_by_operation_and_time() {
    let (_tmp, journal) = journal();
    let a = import(&journal, "zones", IMG_A);
    std::thread::sleep(Duration::from_millis(5));
    let cutoff = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(5));
    import(&journal, "zones", IMG_B);
    let mut out = Vec::new();
    assert_eq!(journal.export(None, Some(&a), &mut out).unwrap(), 9);
    assert_eq!(journal.export(Some(&cutoff), None, &mut Vec::new()).unwrap(), 9);
    assert_eq!(journal.export(None, None, &mut Vec::new()).unwrap(), 18);
    assert!(journal.export(Some("yesterday"), None, &mut Vec::new()).is_err());
}

fn hold_lock(dir: &Path, holder: &str) -> nix::fcntl::Flock<fs::File> {
    use std::io::Write;
    fs::create_dir_all(dir).unwrap();
    let mut file = fs::OpenOptions::new().create(true).truncate(true).write(true).open(dir.join("lock")).unwrap();
    file.write_all(holder.as_bytes()).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).unwrap()
}

#[test]
fn the_lock_timeout_names_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = Journal::new(tmp.path().join("j")).with_lock_timeout(Duration::from_millis(200));
    let _held = hold_lock(journal.dir(), "pid 4242: imgadm import 01b2c898 (append)\n");
    let started = Instant::now();
    let err = journal.append(vec![begun(&Journal::new_op_id(), "import", &[])]).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(matches!(err, JournalError::Locked { .. }));
    assert!(err.to_string().contains("locked by pid 4242: imgadm import 01b2c898 (append)"), "{err}");
}

#[test]
fn a_caller_waits_for_the_lock_and_writes_its_own_holder_record() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = Journal::new(tmp.path().join("j")).with_lock_timeout(Duration::from_secs(5));
    let held = hold_lock(journal.dir(), "pid 1: test");
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let started = Instant::now();
    journal.append(vec![begun(&Journal::new_op_id(), "import", &[])]).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");
    releaser.join().unwrap();
    let holder = fs::read_to_string(journal.dir().join("lock")).unwrap();
    assert!(holder.starts_with(&format!("pid {}: ", std::process::id())), "{holder}");
}

#[test]
fn threads_appending_at_once_keep_seqs_dense() {
    let (_tmp, journal) = journal();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let journal = journal.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    import(&journal, &format!("pool{t}"), &format!("image-{t}-{i}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let lines = export_lines(&journal);
    assert_eq!(lines.len(), 4 * 5 * 9);
    assert_chained(&lines);
    assert_eq!(journal.installed().unwrap().len(), 20);
    assert!(journal.verify().unwrap().problems.is_empty());
}
