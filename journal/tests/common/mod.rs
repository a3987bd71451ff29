//! Builders for realistic operations, shared by the tests.
#![allow(dead_code)] // each test binary uses a different subset

use imgadm_journal::{EventKind, Journal, NewEvent, OpId};
use serde_json::{json, Value};

pub fn begun(op: &OpId, verb: &str, images: &[&str]) -> NewEvent {
    let mut argv = vec!["imgadm".to_string(), verb.to_string()];
    argv.extend(images.iter().map(|s| s.to_string()));
    NewEvent {
        op: op.clone(),
        kind: EventKind::OperationBegun,
        step: None,
        data: json!({"verb": verb, "argv": argv, "user": "root", "sudo_user": null,
                     "uid": 0, "pid": 4321, "host": "cn7", "images": images}),
    }
}

pub fn step(op: &OpId, kind: EventKind, name: &str, data: Value) -> NewEvent {
    NewEvent { op: op.clone(), kind, step: Some(name.to_string()), data }
}

pub fn ended(op: &OpId, outcome: &str) -> NewEvent {
    NewEvent { op: op.clone(), kind: EventKind::OperationEnded, step: None, data: json!({"outcome": outcome}) }
}

/// An import of one image in the batches the engine would use; the last
/// step records it installed on `pool`.
pub fn import(journal: &Journal, pool: &str, image: &str) -> OpId {
    let op = Journal::new_op_id();
    journal.append(vec![begun(&op, "import", &[image]), step(&op, EventKind::StepBegun, "lock", json!({}))]).unwrap();
    journal.append(vec![
        step(&op, EventKind::StepDone, "lock", json!({})),
        step(&op, EventKind::StepBegun, "fetch", json!({"image": image, "url": "https://images.example/x"})),
    ]).unwrap();
    journal.append(vec![
        step(&op, EventKind::StepDone, "fetch", json!({"image": image, "bytes": 1234, "sha1": "ab12"})),
        step(&op, EventKind::StepBegun, "recv", json!({"image": image})),
        step(&op, EventKind::StepDone, "recv", json!({"image": image, "dataset": format!("{pool}/{image}")})),
    ]).unwrap();
    journal.append(vec![
        step(&op, EventKind::StepDone, "final", json!({"image": image,
            "installed": {"pool": pool, "driver": "zfs", "image": image}})),
        ended(&op, "succeeded"),
    ]).unwrap();
    op
}

/// A delete of one image, recording it removed.
pub fn delete(journal: &Journal, pool: &str, image: &str) -> OpId {
    let op = Journal::new_op_id();
    journal.append(vec![begun(&op, "delete", &[image]), step(&op, EventKind::StepBegun, "destroy", json!({"image": image}))]).unwrap();
    journal.append(vec![
        step(&op, EventKind::StepDone, "destroy", json!({"image": image,
            "removed": {"pool": pool, "driver": "zfs", "image": image}})),
        ended(&op, "succeeded"),
    ]).unwrap();
    op
}

/// Every stored event line, in seq order.
pub fn export_lines(journal: &Journal) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    journal.export(None, None, &mut out).unwrap();
    out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| l.to_vec()).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

pub const IMG_A: &str = "01b2c898-945f-11e1-a523-af1afbe22822";
pub const IMG_B: &str = "5fd0c5a2-a7e6-4b5e-9fb2-5a9b3ac3a9a3";
pub const IMG_C: &str = "c02a2044-c1bd-11e4-bd8c-dfc1db8b0182";
