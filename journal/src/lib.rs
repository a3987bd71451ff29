//! The imgadm journal: an append-only, hash-chained log of operations.
//!
//! Every imgadm operation (an import, an install, a delete ...) is recorded
//! as a sequence of [`Event`]s: `operation-begun`, then `step-begun` /
//! `step-done` / `step-failed` / `step-undone` for each step, maybe
//! `operation-resumed`, and finally `operation-ended`. Events are never
//! changed or deleted; everything else ([`OperationSummary`], the
//! [`InstalledImage`] projection) is derived from them and can be rebuilt
//! ([`Journal::rebuild`]).
//!
//! Each event has a dense sequence number (`seq`, 1, 2, 3 ... across all
//! operations) and carries the SHA-256 of the previous event's stored bytes
//! (`prev`), so [`Journal::verify`] can tell which event was changed or is
//! missing.
//!
//! Where things live, in the journal directory `DIR` (see docs/journal.md):
//!
//! - `DIR/sled/`: a sled database with the events of operations that have
//!   not ended, the projections and the head (last seq and hash);
//! - `DIR/segments/NNNNNN.jsonl` + `.idx`: events of ended operations,
//!   moved there byte for byte, with an index by operation and by image;
//! - `DIR/head`: the head again, outside sled, to notice when sled loses
//!   the end of its log (it does so silently), and whether the journal is
//!   settled (sled holds no event), when readers need not open sled;
//! - `DIR/lock`: the journal lock; its content names the holder.
//!
//! A [`Journal`] is only a path: every call takes the lock, opens sled, does
//! its work, makes it durable and closes sled again, because sled allows one
//! process at a time and imgadm processes run side by side. That cycle costs
//! a few milliseconds, so callers append events that happen together in one
//! [`Journal::append`]. Reading ended operations needs no lock, and reading
//! a settled journal opens no sled.
//!
//! The crate knows nothing of ZFS, HTTP or image manifests: images are
//! strings, event data is JSON the engine chooses.

mod durable;
mod error;
mod event;
mod lock;
mod projection;
mod segment;
mod store;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use durable::UNSAFE_SKIP_FSYNC_ENV;
pub use error::JournalError;
pub use event::{Event, EventKind, NewEvent, OpId, FORMAT_VERSION, GENESIS_PREV, MAX_EVENT_BYTES};
pub use projection::{InstalledImage, OperationSummary, StepSummary};
pub use verify::VerifyReport;

use error::{corrupt, Result};
use event::{hash_hex, now_ts, peek_seq_ts};
use projection::{installed_changes, summarize, InstalledChange};
use segment::{complete_lines, IndexEntry, Segments, DEFAULT_SEGMENT_LIMIT};
use store::{event_key, op_key, Head, HeadFile, Store, HEAD_KEY, INSTALLED, OPEN, PENDING};

/// How long a call waits for the journal lock before naming its holder.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on the journal in one directory. Cheap: it holds the path and
/// two settings, and opens nothing until a call needs it.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    lock_timeout: Duration,
    segment_limit: u64,
}

impl Journal {
    pub fn new(dir: impl Into<PathBuf>) -> Journal {
        Journal {
            dir: dir.into(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            segment_limit: DEFAULT_SEGMENT_LIMIT,
        }
    }

    /// Waits at most `timeout` for the journal lock (default 10 s).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Journal {
        self.lock_timeout = timeout;
        self
    }

    /// Starts a new segment file when the current one would grow past
    /// `bytes` (default 64 MiB). Small values are for tests.
    pub fn with_segment_limit(mut self, bytes: u64) -> Journal {
        self.segment_limit = bytes;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn new_op_id() -> OpId {
        OpId::new()
    }

    fn segments(&self) -> Segments {
        Segments::new(&self.dir, self.segment_limit)
    }

    /// Whether the head file says sled holds no event (see `HeadFile`):
    /// then readers need neither the lock nor sled. Read before the
    /// segments, so what they find covers every event up to that head.
    fn settled(&self) -> Result<bool> {
        Ok(HeadFile::read(&self.dir)?.is_some_and(|f| f.settled))
    }

    /// Lock, open sled, check it against the head file, finish any move to
    /// segments that a crash interrupted.
    fn open(&self, purpose: &str, segments: &Segments) -> Result<Store> {
        let store = Store::open(&self.dir, self.lock_timeout, purpose)?;
        store.finish_moves(segments)?;
        Ok(store)
    }

    /// Appends a batch of events in one lock/open/append/flush/fsync/close
    /// cycle, assigning dense seqs. Durable when it returns. The events of
    /// an operation that ends in this batch move to a segment before it
    /// returns.
    ///
    /// Refused: events for an operation that has not begun (or has ended),
    /// a second `operation-begun`, step events without a step name, and
    /// events whose stored form exceeds [`MAX_EVENT_BYTES`].
    pub fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let segments = self.segments();
        let store = self.open("append", &segments)?;
        let mut head = store.head();
        // Open operations this batch touches: true once it ended in the batch.
        let mut touched: HashMap<OpId, bool> = HashMap::new();
        let mut batch = sled::Batch::default();
        let mut stored = Vec::with_capacity(events.len());
        for new in events {
            check_new(&store, &mut touched, &new)?;
            let event = Event {
                v: FORMAT_VERSION,
                seq: head.seq + 1,
                ts: now_ts(),
                op: new.op,
                kind: new.kind,
                step: new.step,
                data: new.data,
                prev: head.hash.clone(),
            };
            let bytes = event.encode();
            if bytes.len() > MAX_EVENT_BYTES {
                return Err(JournalError::Invalid(format!(
                    "an event of operation {} is {} bytes; the limit is {MAX_EVENT_BYTES}: keep large data out of the journal",
                    event.op,
                    bytes.len()
                )));
            }
            head = Head {
                seq: event.seq,
                hash: hash_hex(&bytes),
            };
            batch.insert(&event_key(event.seq), bytes);
            match event.kind {
                EventKind::OperationBegun => batch.insert(op_key(OPEN, &event.op), &event.seq.to_be_bytes()),
                EventKind::OperationEnded => {
                    batch.remove(op_key(OPEN, &event.op));
                    batch.insert(op_key(PENDING, &event.op), &[]);
                }
                _ => {}
            }
            for change in installed_changes(&event) {
                match change {
                    InstalledChange::Add(k) => batch.insert(installed_key(&k.encode()), event.op.as_str()),
                    InstalledChange::Remove(k) => batch.remove(installed_key(&k.encode())),
                }
            }
            stored.push(event);
        }
        batch.insert(HEAD_KEY, serde_json::to_vec(&head).expect("head serialises"));
        // Events are about to enter sled: the head file stops saying that
        // readers may leave sled closed before they do.
        if store.file_settled {
            store.write_head_file(&store.head(), false)?;
        }
        store.commit(batch)?;
        let ended = touched.values().any(|&ended| ended);
        if ended {
            store.finish_moves(&segments)?;
        }
        let settled = ended && store.holds_no_events()?;
        store.write_head_file(&head, settled)?;
        Ok(stored)
    }

    /// The events of one operation, in seq order.
    pub fn operation_events(&self, op: &OpId) -> Result<Vec<Event>> {
        let (lines, path) = self.stored_events_of(op)?;
        lines.iter().map(|line| decode(line, &path)).collect()
    }

    /// The stored bytes of one operation's events, and where they were read.
    fn stored_events_of(&self, op: &OpId) -> Result<(Vec<Vec<u8>>, PathBuf)> {
        let segments = self.segments();
        let in_segment = |segments: &Segments| -> Result<Option<(Vec<Vec<u8>>, PathBuf)>> {
            match segments.find_op(op)? {
                Some((number, entry)) => Ok(Some((segments.read_op(number, &entry)?, segments.data_path(number)))),
                None => Ok(None),
            }
        };
        if let Some(found) = in_segment(&segments)? {
            return Ok(found);
        }
        if self.settled()? {
            // It may have ended and moved since the first look.
            return in_segment(&segments)?.ok_or_else(|| JournalError::NoSuchOperation(op.to_string()));
        }
        let store = self.open("read", &segments)?;
        let lines: Vec<Vec<u8>> = store
            .parsed_events()?
            .into_iter()
            .filter(|(e, _)| &e.op == op)
            .map(|(_, bytes)| bytes)
            .collect();
        drop(store);
        if !lines.is_empty() {
            return Ok((lines, self.dir.join("sled")));
        }
        // It may have ended and moved between the two looks.
        in_segment(&segments)?.ok_or_else(|| JournalError::NoSuchOperation(op.to_string()))
    }

    /// The operation whose id starts with `prefix` (any case).
    pub fn resolve(&self, prefix: &str) -> Result<OpId> {
        let wanted = prefix.trim().to_ascii_uppercase();
        if wanted.is_empty() {
            return Err(JournalError::NoSuchOperation(String::from("(empty id)")));
        }
        let segments = self.segments();
        let mut ids: BTreeSet<OpId> = BTreeSet::new();
        if !self.settled()? {
            let store = self.open("read", &segments)?;
            ids.extend(store.op_ids(OPEN)?);
            ids.extend(store.op_ids(PENDING)?);
        }
        for segment in segments.all()? {
            ids.extend(segment.entries.into_iter().map(|e| e.op));
        }
        let mut matching = ids.into_iter().filter(|id| id.as_str().starts_with(&wanted));
        match (matching.next(), matching.count()) {
            (None, _) => Err(JournalError::NoSuchOperation(prefix.to_string())),
            (Some(id), 0) => Ok(id),
            (Some(_), more) => Err(JournalError::Ambiguous {
                prefix: prefix.to_string(),
                count: more + 1,
            }),
        }
    }

    /// Every operation, oldest first (by the seq of its first event).
    pub fn operations(&self) -> Result<Vec<OperationSummary>> {
        let segments = self.segments();
        let mut found = self.sled_operations(&segments, |_| true)?;
        for segment in segments.all()? {
            let path = segments.data_path(segment.number);
            let data = segments.read_data(segment.number)?;
            for entry in &segment.entries {
                let events = entry_events(&path, &data, entry)?;
                found.insert(entry.op.clone(), (entry.first, summarize(&entry.op, &events)));
            }
        }
        Ok(oldest_first(found))
    }

    /// Operations with no operation-ended event (running or interrupted).
    pub fn open_operations(&self) -> Result<Vec<OperationSummary>> {
        if self.settled()? {
            return Ok(Vec::new());
        }
        let segments = self.segments();
        let store = self.open("read", &segments)?;
        let open: HashSet<OpId> = store.op_ids(OPEN)?.into_iter().collect();
        let events = store.parsed_events()?;
        drop(store);
        Ok(oldest_first(group(
            events.into_iter().map(|(e, _)| e),
            |events| events.first().is_some_and(|e| open.contains(&e.op)),
        )))
    }

    /// Every operation that names `image` (in its begun event's `images`,
    /// a step's `data.image`, or an installed/removed record), oldest first.
    pub fn operations_for_image(&self, image: &str) -> Result<Vec<OperationSummary>> {
        let segments = self.segments();
        let mut found = self.sled_operations(&segments, |events| {
            events.iter().any(|e| e.images().contains(&image))
        })?;
        for (number, entry) in segments.find_image(image)? {
            let path = segments.data_path(number);
            let events = segments
                .read_op(number, &entry)?
                .iter()
                .map(|line| decode(line, &path))
                .collect::<Result<Vec<_>>>()?;
            found.insert(entry.op.clone(), (entry.first, summarize(&entry.op, &events)));
        }
        Ok(oldest_first(found))
    }

    /// Summaries of the operations whose events are in sled and pass
    /// `keep`, with the seq of their first event. Read before the segments
    /// so that an operation moving meanwhile is found in one or the other.
    fn sled_operations(
        &self,
        segments: &Segments,
        keep: impl Fn(&[Event]) -> bool,
    ) -> Result<HashMap<OpId, (u64, OperationSummary)>> {
        if self.settled()? {
            return Ok(HashMap::new());
        }
        let store = self.open("read", segments)?;
        let events = store.parsed_events()?;
        drop(store);
        Ok(group(events.into_iter().map(|(e, _)| e), keep))
    }

    /// The installed-image projection, by pool, driver, image.
    pub fn installed(&self) -> Result<Vec<InstalledImage>> {
        let segments = self.segments();
        self.open("read", &segments)?.installed()
    }

    /// Recomputes the hash chain over every event; see [`VerifyReport`].
    /// Unlike every other call it does not refuse a journal whose database
    /// is behind its head file: it reports that, with the rest.
    pub fn verify(&self) -> Result<VerifyReport> {
        let store = Store::open_unchecked(&self.dir, self.lock_timeout, "verify")?;
        let snapshot = verify::SledSnapshot {
            sled_head: store.sled_head.clone(),
            file_head: store.file_head.clone(),
            events: store.events()?,
        };
        drop(store);
        verify::verify(snapshot, &self.segments())
    }

    /// Writes events as JSON Lines (the stored bytes, one per line) in seq
    /// order: all, those at or after `since` (RFC 3339), and/or one
    /// operation's. Returns how many were written.
    pub fn export(&self, since: Option<&str>, op: Option<&OpId>, out: &mut dyn Write) -> Result<u64> {
        let since = since
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| JournalError::Invalid(format!("--since {s:?} is not an RFC 3339 time: {e}")))
            })
            .transpose()?;
        let recent = |ts: &str| match since {
            None => true,
            Some(since) => chrono::DateTime::parse_from_rfc3339(ts).is_ok_and(|t| t >= since),
        };
        let write = |out: &mut dyn Write, bytes: &[u8]| {
            out.write_all(bytes)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|source| JournalError::Io {
                    what: "write export to",
                    path: PathBuf::from("(output)"),
                    source,
                })
        };
        let mut written = 0;
        if let Some(op) = op {
            for line in self.stored_events_of(op)?.0 {
                if peek_seq_ts(&line).is_some_and(|(_, ts)| recent(&ts)) {
                    write(out, &line)?;
                    written += 1;
                }
            }
            return Ok(written);
        }
        // Where each event is; read in seq order afterwards.
        enum Place {
            Sled(Vec<u8>),
            Segment { number: u32, offset: u64, len: usize },
        }
        let segments = self.segments();
        let store = self.open("export", &segments)?;
        let last = store.head().seq;
        let mut places: BTreeMap<u64, Place> = BTreeMap::new();
        for (seq, bytes) in store.events()? {
            places.insert(seq, Place::Sled(bytes));
        }
        drop(store);
        let mut files = HashMap::new();
        for segment in segments.all()? {
            let path = segments.data_path(segment.number);
            let data = segments.read_data(segment.number)?;
            for entry in &segment.entries {
                let bytes = entry_bytes(&path, &data, entry)?;
                for (at, line) in complete_lines(bytes) {
                    let (seq, ts) = peek_seq_ts(line)
                        .ok_or_else(|| corrupt(&path, format!("offset {}: not a journal event", entry.offset + at as u64)))?;
                    if seq <= last && recent(&ts) {
                        places.entry(seq).or_insert(Place::Segment {
                            number: segment.number,
                            offset: entry.offset + at as u64,
                            len: line.len(),
                        });
                    }
                }
            }
            files.insert(segment.number, (File::open(&path).map_err(error::io("open", &path))?, path));
        }
        let mut buf = Vec::new();
        for place in places.values() {
            let bytes = match place {
                Place::Sled(bytes) => {
                    if !peek_seq_ts(bytes).is_some_and(|(_, ts)| recent(&ts)) {
                        continue;
                    }
                    bytes
                }
                Place::Segment { number, offset, len } => {
                    let (file, path) = &files[number];
                    buf.resize(*len, 0);
                    file.read_exact_at(&mut buf, *offset).map_err(error::io("read", path))?;
                    &buf
                }
            };
            write(out, bytes)?;
            written += 1;
        }
        Ok(written)
    }

    /// Rebuilds every projection from the events: the segment indexes, the
    /// open-operation set and the installed-image projection.
    pub fn rebuild(&self) -> Result<()> {
        let segments = self.segments();
        // Indexes first: finishing an interrupted move consults them.
        let store = Store::open(&self.dir, self.lock_timeout, "rebuild")?;
        segments.rebuild_indexes()?;
        store.finish_moves(&segments)?;

        let mut changes: Vec<(u64, OpId, InstalledChange)> = Vec::new();
        // Only events that mention one of these can change the projection;
        // skipping the others keeps rebuild from parsing every event twice.
        let installed = memchr::memmem::Finder::new(b"\"installed\"");
        let removed = memchr::memmem::Finder::new(b"\"removed\"");
        for segment in segments.all()? {
            let path = segments.data_path(segment.number);
            let data = segments.read_data(segment.number)?;
            for entry in &segment.entries {
                for (_, line) in complete_lines(entry_bytes(&path, &data, entry)?) {
                    if installed.find(line).is_none() && removed.find(line).is_none() {
                        continue;
                    }
                    let event = decode(line, &path)?;
                    changes.extend(installed_changes(&event).into_iter().map(|c| (event.seq, event.op.clone(), c)));
                }
            }
        }
        let mut batch = sled::Batch::default();
        for (event, _) in store.parsed_events()? {
            changes.extend(installed_changes(&event).into_iter().map(|c| (event.seq, event.op.clone(), c)));
        }
        // Open operations: those in sled with no ended event (moves are done).
        let mut open: BTreeMap<OpId, (u64, bool)> = BTreeMap::new();
        for (event, _) in store.parsed_events()? {
            let slot = open.entry(event.op.clone()).or_insert((event.seq, false));
            slot.1 |= event.kind == EventKind::OperationEnded;
        }
        // Stable sort: one event's removal comes before its installation.
        changes.sort_by_key(|(seq, _, _)| *seq);
        let mut projection: BTreeMap<Vec<u8>, OpId> = BTreeMap::new();
        for (_, op, change) in changes {
            match change {
                InstalledChange::Add(k) => projection.insert(k.encode(), op),
                InstalledChange::Remove(k) => projection.remove(&k.encode()),
            };
        }
        for prefix in [INSTALLED, OPEN, PENDING] {
            for key in store.db.scan_prefix([prefix]).keys() {
                batch.remove(key.map_err(store::db_error(&self.dir))?);
            }
        }
        for (key, op) in projection {
            batch.insert(installed_key(&key), op.as_str());
        }
        for (op, (first, ended)) in open {
            let prefix = if ended { PENDING } else { OPEN };
            let value: &[u8] = if ended { &[] } else { &first.to_be_bytes() };
            batch.insert(op_key(prefix, &op), value);
        }
        store.commit(batch)
    }
}

/// Refuses an event that does not fit the operation's life cycle.
fn check_new(store: &Store, touched: &mut HashMap<OpId, bool>, new: &NewEvent) -> Result<()> {
    let op = &new.op;
    let state = match touched.get(op) {
        Some(&ended) => Some(ended),
        None if store.contains(&op_key(OPEN, op))? => Some(false),
        None => None,
    };
    let kind = serde_json::to_value(new.kind).unwrap_or_default();
    let refuse = |why: &str| Err(JournalError::Invalid(format!("{kind} event for operation {op}: {why}")));
    match (new.kind, state) {
        (EventKind::OperationBegun, Some(_)) => return refuse("it has already begun"),
        (EventKind::OperationBegun, None) => {}
        (_, None) => return refuse("it has not begun, or has already ended"),
        (_, Some(true)) => return refuse("it has already ended"),
        (_, Some(false)) => {}
    }
    let is_step = matches!(
        new.kind,
        EventKind::StepBegun
            | EventKind::StepDone
            | EventKind::StepFailed
            | EventKind::StepUndone
            | EventKind::StepProgress
    );
    if is_step && new.step.is_none() {
        return refuse("a step event needs a step name");
    }
    touched.insert(op.clone(), new.kind == EventKind::OperationEnded);
    Ok(())
}

fn installed_key(encoded: &[u8]) -> Vec<u8> {
    let mut key = vec![INSTALLED];
    key.extend_from_slice(encoded);
    key
}

fn decode(line: &[u8], path: &Path) -> Result<Event> {
    Event::decode(line, &|| String::from("event")).map_err(|what| corrupt(path, what))
}

/// The bytes an index entry points at, checked against the file's size.
fn entry_bytes<'a>(path: &Path, data: &'a [u8], entry: &IndexEntry) -> Result<&'a [u8]> {
    usize::try_from(entry.offset)
        .ok()
        .zip(usize::try_from(entry.offset.saturating_add(entry.len)).ok())
        .and_then(|(from, to)| data.get(from..to))
        .ok_or_else(|| corrupt(path, format!("operation {} lies beyond the end of the file", entry.op)))
}

fn entry_events(path: &Path, data: &[u8], entry: &IndexEntry) -> Result<Vec<Event>> {
    complete_lines(entry_bytes(path, data, entry)?)
        .map(|(_, line)| decode(line, path))
        .collect()
}

/// Groups events (in seq order) by operation, keeps the operations whose
/// events pass `keep`, and summarises them, with the seq of their first event.
fn group(
    events: impl Iterator<Item = Event>,
    keep: impl Fn(&[Event]) -> bool,
) -> HashMap<OpId, (u64, OperationSummary)> {
    let mut by_op: BTreeMap<OpId, Vec<Event>> = BTreeMap::new();
    for event in events {
        by_op.entry(event.op.clone()).or_default().push(event);
    }
    by_op
        .into_iter()
        .filter(|(_, events)| keep(events))
        .map(|(op, events)| {
            let first = events.first().map_or(0, |e| e.seq);
            let summary = summarize(&op, &events);
            (op, (first, summary))
        })
        .collect()
}

fn oldest_first(found: HashMap<OpId, (u64, OperationSummary)>) -> Vec<OperationSummary> {
    let mut list: Vec<(u64, OperationSummary)> = found.into_values().collect();
    list.sort_by_key(|(first, _)| *first);
    list.into_iter().map(|(_, s)| s).collect()
}
