//! Measures the journal at a given size.
//!
//! `cargo run --release -p imgadm-journal --example journal_bench -- N [DIR] [--engine-batches] [--fill-only]`
//!
//! Fills a journal (in DIR, or a temporary directory) with about N events,
//! as imports of 18 events each, written in batches of 50 imports (fast,
//! and sled stays the size normal use gives it: a batch passes through
//! sled on its way to a segment, sled's file grows to a few times the
//! largest batch and never shrinks, and every open zeroes its free space,
//! so batches of 9000 events left a 24 MB file that made each open
//! 17 ms), or
//! with `--engine-batches` as the engine writes them, 5 appends per import
//! (slow: one open/close cycle each, but it churns sled as real use does).
//! Then it times: single-event appends (each a full
//! lock/open/append/flush/fsync/close cycle), the history of one image,
//! one operation's events, resolve, verify, export and rebuild.
//! `--fill-only` stops after filling (`bench/run` fills its journals so).

use std::time::{Duration, Instant};

use imgadm_journal::{EventKind, Journal, NewEvent, OpId};
use serde_json::json;

const STEPS: [&str; 8] = ["resolve", "lock", "fetch", "verify", "recv", "final", "rename", "cache"];

fn import_events(op: &OpId, image: &str) -> Vec<NewEvent> {
    let mut events = vec![NewEvent {
        op: op.clone(),
        kind: EventKind::OperationBegun,
        step: None,
        data: json!({"verb": "import", "argv": ["imgadm", "import", image], "user": "root",
                     "sudo_user": null, "uid": 0, "pid": 4321, "host": "cn7", "images": [image]}),
    }];
    for name in STEPS {
        let step = |kind, data| NewEvent { op: op.clone(), kind, step: Some(name.to_string()), data };
        events.push(step(EventKind::StepBegun, json!({"image": image})));
        let mut done = json!({"image": image, "bytes": 123456789, "sha1": "0123456789abcdef0123456789abcdef01234567"});
        if name == "final" {
            done["installed"] = json!({"pool": "zones", "driver": "zfs", "image": image});
        }
        events.push(step(EventKind::StepDone, done));
    }
    events.push(NewEvent { op: op.clone(), kind: EventKind::OperationEnded, step: None, data: json!({"outcome": "succeeded"}) });
    events
}

fn image_name(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

fn stats(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{label:<44} median {:>9.3} ms   p90 {:>9.3} ms   max {:>9.3} ms   (n={})",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.9).as_secs_f64() * 1e3,
        pick(1.0).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine_batches = std::env::args().any(|a| a == "--engine-batches");
    let fill_only = std::env::args().any(|a| a == "--fill-only");
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let n: usize = args.next().ok_or("usage: journal_bench N [DIR] [--engine-batches] [--fill-only]")?.parse()?;
    let tmp;
    let dir = match args.next() {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("journal")
        }
    };
    let journal = Journal::new(&dir);
    let ops = n / 18;
    // About four imports per image, so a history has a few entries.
    let images = (ops / 4).max(1);

    let (ids, fill) = time(|| -> Result<Vec<OpId>, imgadm_journal::JournalError> {
        let mut ids = Vec::with_capacity(ops);
        let mut batch = Vec::new();
        for i in 0..ops {
            let op = Journal::new_op_id();
            let events = import_events(&op, &image_name(i % images));
            ids.push(op);
            if engine_batches {
                // begun + resolve; lock; fetch, verify; recv, final; rename, cache, ended
                let mut events = events.into_iter();
                for size in [3, 4, 4, 4, 3] {
                    journal.append(events.by_ref().take(size).collect())?;
                }
                continue;
            }
            batch.extend(events);
            if batch.len() >= 50 * 18 {
                journal.append(std::mem::take(&mut batch))?;
            }
        }
        journal.append(batch)?;
        Ok(ids)
    });
    let ids = ids?;
    println!("filled {} events ({} operations, {} images) in {:.1} s", ops * 18, ops, images, fill.as_secs_f64());
    if fill_only {
        return Ok(());
    }

    let open = Journal::new_op_id();
    journal.append(import_events(&open, "bench-open").into_iter().take(1).collect())?;
    let mut appends = Vec::new();
    for _ in 0..200 {
        let event = NewEvent { op: open.clone(), kind: EventKind::StepBegun, step: Some("fetch".into()), data: json!({"image": "bench-open"}) };
        let (r, d) = time(|| journal.append(vec![event]));
        r?;
        appends.push(d);
    }
    stats("append 1 event (open+append+fsync+close)", appends);

    let mut reads = Vec::new();
    for _ in 0..50 {
        let (r, d) = time(|| journal.installed());
        r?;
        reads.push(d);
    }
    stats("installed() (lock+open+read+close)", reads);

    let mut history = Vec::new();
    for i in 0..50 {
        let image = image_name(i * 7919 % images);
        let (r, d) = time(|| journal.operations_for_image(&image));
        assert!(!r?.is_empty());
        history.push(d);
    }
    stats("operations_for_image (history of one image)", history);

    let mut events = Vec::new();
    for i in 0..50 {
        let op = &ids[i * 7919 % ids.len()];
        let (r, d) = time(|| journal.operation_events(op));
        assert_eq!(r?.len(), 18);
        events.push(d);
    }
    stats("operation_events (an ended operation)", events);

    let mut resolves = Vec::new();
    for i in 0..10 {
        let prefix = &ids[i * 7919 % ids.len()].as_str()[..16];
        let (r, d) = time(|| journal.resolve(prefix));
        r?;
        resolves.push(d);
    }
    stats("resolve (16-char prefix)", resolves);

    let (r, d) = time(|| journal.operations());
    println!("operations() (all, summarised)              {:>9.3} ms  ({} operations)", d.as_secs_f64() * 1e3, r?.len());
    let (r, d) = time(|| journal.verify());
    let report = r?;
    println!("verify                                      {:>9.3} ms  ({} events, problems: {})", d.as_secs_f64() * 1e3, report.events, report.problems.len());
    let (r, d) = time(|| journal.export(None, None, &mut std::io::sink()));
    println!("export (all, seq order)                     {:>9.3} ms  ({} events)", d.as_secs_f64() * 1e3, r?);
    let (r, d) = time(|| journal.rebuild());
    r?;
    println!("rebuild                                     {:>9.3} ms", d.as_secs_f64() * 1e3);
    Ok(())
}
