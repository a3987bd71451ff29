//! `journal verify`: recompute the hash chain over every event.

use serde::Serialize;

use crate::event::{Event, FORMAT_VERSION};
use crate::segment::{complete_lines, Segments};
use crate::store::Head;

/// What verify found. `first_bad_seq` is the earliest event that was
/// changed, is missing, or cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Events read (sled and segments, each seq counted once).
    pub events: u64,
    pub first_bad_seq: Option<u64>,
    pub problems: Vec<String>,
}

/// What was read from sled under the lock.
pub(crate) struct SledSnapshot {
    pub sled_head: Option<Head>,
    pub file_head: Option<Head>,
    pub events: Vec<(u64, Vec<u8>)>,
}

/// One event as the chain sees it.
struct Link {
    seq: u64,
    hash: [u8; 32],
    /// `None` when the prev field is not 64 hex digits.
    prev: Option<[u8; 32]>,
}

#[derive(Default)]
struct Findings {
    first_bad_seq: Option<u64>,
    problems: Vec<String>,
}

impl Findings {
    fn bad(&mut self, seq: Option<u64>, problem: String) {
        if let Some(seq) = seq {
            self.first_bad_seq = Some(self.first_bad_seq.map_or(seq, |s| s.min(seq)));
        }
        self.problems.push(problem);
    }
}

fn link(seq: u64, bytes: &[u8], event: &Event) -> Link {
    use sha2::{Digest, Sha256};
    let mut prev = [0u8; 32];
    Link {
        seq,
        hash: Sha256::digest(bytes).into(),
        prev: hex::decode_to_slice(&event.prev, &mut prev).ok().map(|()| prev),
    }
}

pub(crate) fn verify(snapshot: SledSnapshot, segments: &Segments) -> crate::Result<VerifyReport> {
    let mut found = Findings::default();
    let sled_seq = snapshot.sled_head.as_ref().map_or(0, |h| h.seq);
    let file_seq = snapshot.file_head.as_ref().map_or(0, |h| h.seq);
    // Events appended after the snapshot may already sit in segments; they
    // are not judged against a head that predates them.
    let last = sled_seq.max(file_seq);
    let mut links = Vec::new();

    for (seq, bytes) in &snapshot.events {
        match Event::decode(bytes, &|| format!("database seq {seq}")) {
            Err(what) => found.bad(Some(*seq), what),
            Ok(event) => {
                if event.seq != *seq {
                    found.bad(Some(*seq), format!("database key seq {seq} holds an event that says seq {}", event.seq));
                }
                if event.v != FORMAT_VERSION {
                    found.bad(Some(*seq), format!("seq {seq} has format version {}", event.v));
                }
                links.push(link(*seq, bytes, &event));
            }
        }
    }

    for number in segments.numbers()? {
        let path = segments.data_path(number);
        let name = path.display();
        let entries = match segments.read_index(number) {
            Ok(entries) => entries,
            Err(e) => {
                found.bad(None, e.to_string());
                continue;
            }
        };
        let data = segments.read_data(number)?;
        for entry in entries {
            // Read what is there even if the file was cut short: the chain
            // check below then names exactly the missing seqs.
            let from = usize::try_from(entry.offset).unwrap_or(usize::MAX).min(data.len());
            let to = usize::try_from(entry.offset.saturating_add(entry.len))
                .unwrap_or(usize::MAX)
                .min(data.len());
            let bytes = &data[from..to];
            let mut count = 0;
            for (at, line) in complete_lines(bytes) {
                count += 1;
                let at = entry.offset + at as u64;
                match Event::decode(line, &|| format!("{name} offset {at}")) {
                    Err(what) => found.bad(None, what),
                    Ok(event) if event.seq > last => {}
                    Ok(event) => {
                        if event.op != entry.op {
                            found.bad(Some(event.seq), format!("{name} offset {at}: seq {} belongs to {} but is filed under {}", event.seq, event.op, entry.op));
                        }
                        links.push(link(event.seq, line, &event));
                    }
                }
            }
            if count != entry.count {
                found.bad(None, format!("{name}: operation {} should have {} events, has {count}", entry.op, entry.count));
            }
        }
    }

    links.sort_by_key(|l| l.seq);
    // An operation moving to a segment while verify runs is read twice.
    links.dedup_by(|later, earlier| later.seq == earlier.seq && later.hash == earlier.hash);

    let mut expected = 1u64;
    let mut prev_hash = Some([0u8; 32]);
    for (i, l) in links.iter().enumerate() {
        if i > 0 && links[i - 1].seq == l.seq {
            found.bad(Some(l.seq), format!("seq {} is stored twice, with different bytes", l.seq));
            continue;
        }
        if l.seq > expected {
            found.bad(Some(expected), format!("{} missing", crate::error::seq_range(expected, l.seq - 1)));
            prev_hash = None;
        }
        if let Some(h) = prev_hash {
            if l.prev != Some(h) {
                if l.seq == 1 {
                    found.bad(Some(1), "seq 1 does not start the chain (its prev is not all zeros)".into());
                } else {
                    found.bad(Some(l.seq - 1), format!("seq {} was changed: seq {}'s prev does not match its hash", l.seq - 1, l.seq));
                }
            }
        }
        prev_hash = Some(l.hash);
        expected = l.seq + 1;
    }
    if expected <= last {
        found.bad(Some(expected), format!("{} missing: the head says the journal ends at seq {last}", crate::error::seq_range(expected, last)));
    }
    if expected > last + 1 {
        found.bad(Some(last + 1), format!("events after the head (seq {last}) are stored: seq {} is the last", expected - 1));
    }

    if sled_seq < file_seq {
        found.bad(Some(sled_seq + 1), format!(
            "the database ends at seq {sled_seq} but the head file says {file_seq}: events were lost or cut"
        ));
    }
    for (name, head) in [("head file", &snapshot.file_head), ("database head", &snapshot.sled_head)] {
        let Some(head) = head else { continue };
        if head.seq == 0 {
            continue;
        }
        if let Some(l) = links.iter().rev().find(|l| l.seq == head.seq) {
            if hex::encode(l.hash) != head.hash {
                found.bad(Some(head.seq), format!("seq {} does not match the {name}: it was changed", head.seq));
            }
        }
    }

    Ok(VerifyReport {
        events: links.len() as u64,
        first_bad_seq: found.first_bad_seq,
        problems: found.problems,
    })
}
