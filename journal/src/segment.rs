//! Sealed segments: the events of ended operations, moved out of sled.
//!
//! `DIR/segments/NNNNNN.jsonl` holds stored events, one per line, whole
//! operations one after another (in the order they ended, so seqs are not
//! monotonic across or within files). Next to each, `NNNNNN.idx` holds one
//! JSON line per operation: where its bytes are and which images it names.
//!
//! An operation is committed to a segment when its index line is complete
//! (newline included) and fsynced; data beyond the last indexed operation
//! is the remains of a move a crash interrupted, which the next move cuts
//! off before appending (the events are still in sled until the index line
//! is durable). Readers take no lock: they only ever read what an index
//! line covers, and an index line is written after the bytes it points at.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::{sync_dir, sync_file};
use crate::error::{corrupt, io, Result};
use crate::event::{Event, EventKind, OpId};

/// Rotate to a new segment file when the current one would pass this size.
pub(crate) const DEFAULT_SEGMENT_LIMIT: u64 = 64 << 20;

/// One line of a segment index: one whole operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    pub op: OpId,
    /// Seq of its first and last event, and how many events it has.
    pub first: u64,
    pub last: u64,
    pub count: u64,
    /// Byte range of its lines in the segment file (newlines included).
    pub offset: u64,
    pub len: u64,
    /// Every image its events name, in first-seen order.
    pub images: Vec<String>,
}

/// An ended operation on its way into a segment: its stored events in seq order.
pub(crate) struct SealedOp {
    pub op: OpId,
    pub events: Vec<(u64, Vec<u8>)>,
    pub images: Vec<String>,
}

/// A located segment: its number and its committed index entries.
pub(crate) struct Segment {
    pub number: u32,
    pub entries: Vec<IndexEntry>,
}

pub(crate) struct Segments {
    dir: PathBuf,
    limit: u64,
}

impl Segments {
    pub(crate) fn new(journal_dir: &Path, limit: u64) -> Segments {
        Segments {
            dir: journal_dir.join("segments"),
            limit,
        }
    }

    pub(crate) fn data_path(&self, number: u32) -> PathBuf {
        self.dir.join(format!("{number:06}.jsonl"))
    }

    fn index_path(&self, number: u32) -> PathBuf {
        self.dir.join(format!("{number:06}.idx"))
    }

    /// The segment numbers present, ascending.
    pub(crate) fn numbers(&self) -> Result<Vec<u32>> {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &self.dir)(e)),
        };
        let mut numbers = Vec::new();
        for entry in listing {
            let name = entry.map_err(io("list", &self.dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".jsonl").and_then(|n| n.parse::<u32>().ok()) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Appends whole operations, rotating as needed: data, fsync, index
    /// lines, fsync, and the directory when a file was created. Safe to
    /// repeat after a crash (see the module doc).
    pub(crate) fn append(&self, ops: &[SealedOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        if !self.dir.exists() {
            fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
            if let Some(parent) = self.dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut number = self.numbers()?.last().copied().unwrap_or(1);
        let mut target = Target::open(self, number)?;
        let mut created = target.created;
        for op in ops {
            let op_len: u64 = op.events.iter().map(|(_, b)| b.len() as u64 + 1).sum();
            if target.data_end() > 0 && target.data_end() + op_len > self.limit {
                target.write(self)?;
                number += 1;
                target = Target::open(self, number)?;
                created = true;
            }
            let offset = target.data_end();
            for (_, stored) in &op.events {
                target.data.extend_from_slice(stored);
                target.data.push(b'\n');
            }
            let entry = IndexEntry {
                op: op.op.clone(),
                first: op.events.first().map_or(0, |(s, _)| *s),
                last: op.events.last().map_or(0, |(s, _)| *s),
                count: op.events.len() as u64,
                offset,
                len: op_len,
                images: op.images.clone(),
            };
            // An index entry is strings and numbers: always serialisable.
            let line = serde_json::to_vec(&entry).expect("index entry serialises");
            target.index.extend_from_slice(&line);
            target.index.push(b'\n');
        }
        target.write(self)?;
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The committed bytes of one segment's index (up to its last
    /// newline), and its path; empty when it has no index yet.
    fn committed_index(&self, number: u32) -> Result<(PathBuf, Vec<u8>)> {
        let path = self.index_path(number);
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read", &path)(e)),
        };
        bytes.truncate(bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
        Ok((path, bytes))
    }

    /// The committed index entries of one segment.
    pub(crate) fn read_index(&self, number: u32) -> Result<Vec<IndexEntry>> {
        let (path, bytes) = self.committed_index(number)?;
        complete_lines(&bytes)
            .map(|(at, line)| parse_entry(line, &path, at))
            .collect()
    }

    /// All segments with their index entries, ascending.
    pub(crate) fn all(&self) -> Result<Vec<Segment>> {
        self.numbers()?
            .into_iter()
            .map(|number| {
                Ok(Segment {
                    number,
                    entries: self.read_index(number)?,
                })
            })
            .collect()
    }

    /// The stored events of one indexed operation, in seq order.
    pub(crate) fn read_op(&self, number: u32, entry: &IndexEntry) -> Result<Vec<Vec<u8>>> {
        let path = self.data_path(number);
        let file = File::open(&path).map_err(io("open", &path))?;
        let mut buf = vec![0u8; entry.len as usize];
        file.read_exact_at(&mut buf, entry.offset)
            .map_err(io("read", &path))?;
        let lines: Vec<Vec<u8>> = complete_lines(&buf).map(|(_, l)| l.to_vec()).collect();
        if lines.len() as u64 != entry.count {
            return Err(corrupt(
                &path,
                format!(
                    "operation {} at offset {}: index says {} events, found {}",
                    entry.op,
                    entry.offset,
                    entry.count,
                    lines.len()
                ),
            ));
        }
        Ok(lines)
    }

    /// Reads a whole segment file (at most about `limit` bytes).
    pub(crate) fn read_data(&self, number: u32) -> Result<Vec<u8>> {
        let path = self.data_path(number);
        fs::read(&path).map_err(io("read", &path))
    }

    /// Which of `pending` (ended operations still in sled) are indexed
    /// already: a move that a crash interrupted after some index lines were
    /// durable. Only the last move can have been interrupted (every call
    /// finishes earlier ones before appending), so its operations are the
    /// last lines of the newest indexes: read index lines from the end,
    /// newest segment first, and stop at the first line of another
    /// operation. The cost follows the number of pending operations, not
    /// the length of the history.
    pub(crate) fn indexed_among(&self, pending: &HashSet<OpId>) -> Result<HashSet<OpId>> {
        let mut found = HashSet::new();
        for number in self.numbers()?.into_iter().rev() {
            let (path, bytes) = self.committed_index(number)?;
            let mut end = bytes.len().saturating_sub(1);
            while end > 0 {
                let start = memchr::memrchr(b'\n', &bytes[..end]).map_or(0, |i| i + 1);
                let entry = parse_entry(&bytes[start..end], &path, start)?;
                if !pending.contains(&entry.op) {
                    return Ok(found);
                }
                found.insert(entry.op);
                end = start.saturating_sub(1);
            }
        }
        Ok(found)
    }

    /// Where an ended operation's events are, if it is in a segment.
    pub(crate) fn find_op(&self, op: &OpId) -> Result<Option<(u32, IndexEntry)>> {
        let needle = format!("{{\"op\":\"{op}\"");
        let mut found = self.search(needle.as_bytes(), |e| &e.op == op)?;
        Ok(found.pop())
    }

    /// Every indexed operation that names `image`.
    pub(crate) fn find_image(&self, image: &str) -> Result<Vec<(u32, IndexEntry)>> {
        // The image as it appears inside the JSON index line.
        let needle = serde_json::to_string(image).expect("a string serialises");
        self.search(needle.as_bytes(), |e| e.images.iter().any(|i| i == image))
    }

    /// Scans the index files for `needle` (no JSON parsing of lines that
    /// do not contain it) and keeps the entries `keep` accepts.
    fn search(
        &self,
        needle: &[u8],
        keep: impl Fn(&IndexEntry) -> bool,
    ) -> Result<Vec<(u32, IndexEntry)>> {
        let finder = memchr::memmem::Finder::new(needle);
        let mut out = Vec::new();
        for number in self.numbers()? {
            let (path, bytes) = self.committed_index(number)?;
            let bytes = &bytes[..];
            let mut last_line_start = None;
            for hit in finder.find_iter(bytes) {
                let start = memchr::memrchr(b'\n', &bytes[..hit]).map_or(0, |i| i + 1);
                if last_line_start == Some(start) {
                    continue;
                }
                last_line_start = Some(start);
                let end = memchr::memchr(b'\n', &bytes[hit..]).map_or(bytes.len(), |i| hit + i);
                let entry = parse_entry(&bytes[start..end], &path, start)?;
                if keep(&entry) {
                    out.push((number, entry));
                }
            }
        }
        Ok(out)
    }

    /// Rewrites every index from its segment's data (`journal rebuild`).
    /// Data after the last ended operation is an interrupted move and is
    /// left out; anything else that does not parse is an error, because an
    /// index that skipped it would hide damage.
    pub(crate) fn rebuild_indexes(&self) -> Result<()> {
        let numbers = self.numbers()?;
        for &number in &numbers {
            let path = self.data_path(number);
            let data = self.read_data(number)?;
            let mut index = Vec::new();
            let mut current: Option<(IndexEntry, bool)> = None;
            for (at, line) in complete_lines(&data) {
                let event = Event::decode(line, &|| format!("offset {at}"))
                    .map_err(|what| corrupt(&path, what))?;
                match &mut current {
                    Some((entry, ended)) if entry.op == event.op && !*ended => {
                        entry.last = event.seq;
                        entry.count += 1;
                        entry.len = at as u64 + line.len() as u64 + 1 - entry.offset;
                        add_images(&mut entry.images, &event);
                        *ended = event.kind == EventKind::OperationEnded;
                    }
                    _ => {
                        if let Some((entry, ended)) = current.take() {
                            if !ended {
                                return Err(corrupt(
                                    &path,
                                    format!("operation {} at offset {} has no end but is followed by another", entry.op, entry.offset),
                                ));
                            }
                            push_line(&mut index, &entry);
                        }
                        let mut entry = IndexEntry {
                            op: event.op.clone(),
                            first: event.seq,
                            last: event.seq,
                            count: 1,
                            offset: at as u64,
                            len: line.len() as u64 + 1,
                            images: Vec::new(),
                        };
                        add_images(&mut entry.images, &event);
                        current = Some((entry, event.kind == EventKind::OperationEnded));
                    }
                }
            }
            if let Some((entry, true)) = current {
                push_line(&mut index, &entry);
            }
            write_replacing(&self.index_path(number), &index)?;
        }
        if !numbers.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The files of the segment being appended to, with what is to be added.
struct Target {
    number: u32,
    data_file: File,
    index_file: File,
    /// Committed lengths (what the index covers), where the new bytes go.
    data_len: u64,
    index_len: u64,
    data: Vec<u8>,
    index: Vec<u8>,
    created: bool,
}

impl Target {
    fn open(segments: &Segments, number: u32) -> Result<Target> {
        let data_path = segments.data_path(number);
        let index_path = segments.index_path(number);
        let created = !data_path.exists() || !index_path.exists();
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io("open", path))
        };
        let data_file = open(&data_path)?;
        let index_file = open(&index_path)?;
        let (index_len, last) = last_entry(&index_file, &index_path)?;
        let data_len = last.map_or(0, |e| e.offset + e.len);
        let actual = data_file.metadata().map_err(io("stat", &data_path))?.len();
        if actual < data_len {
            return Err(corrupt(
                &data_path,
                format!("is {actual} bytes but its index covers {data_len}"),
            ));
        }
        Ok(Target {
            number,
            data_file,
            index_file,
            data_len,
            index_len,
            data: Vec::new(),
            index: Vec::new(),
            created,
        })
    }

    fn data_end(&self) -> u64 {
        self.data_len + self.data.len() as u64
    }

    /// Data first, durable, then the index lines that commit it.
    fn write(&mut self, segments: &Segments) -> Result<()> {
        let data_path = segments.data_path(self.number);
        let index_path = segments.index_path(self.number);
        // Cut the remains of an interrupted move before writing over them.
        self.data_file
            .set_len(self.data_len)
            .and_then(|()| self.data_file.write_all_at(&self.data, self.data_len))
            .map_err(io("write", &data_path))?;
        sync_file(&self.data_file, &data_path)?;
        self.index_file
            .set_len(self.index_len)
            .and_then(|()| self.index_file.write_all_at(&self.index, self.index_len))
            .map_err(io("write", &index_path))?;
        sync_file(&self.index_file, &index_path)?;
        self.data_len += self.data.len() as u64;
        self.index_len += self.index.len() as u64;
        self.data.clear();
        self.index.clear();
        Ok(())
    }
}

/// The committed length of an index file and its last entry, reading only
/// its tail (an index line can be long: a vacuum names many images).
fn last_entry(file: &File, path: &Path) -> Result<(u64, Option<IndexEntry>)> {
    let size = file.metadata().map_err(io("stat", path))?.len();
    let mut window = 8192u64;
    loop {
        let start = size.saturating_sub(window);
        let mut buf = vec![0u8; (size - start) as usize];
        file.read_exact_at(&mut buf, start).map_err(io("read", path))?;
        let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                return Ok((0, None));
            }
            window *= 2;
            continue;
        };
        let committed = start + last_nl as u64 + 1;
        match buf[..last_nl].iter().rposition(|&b| b == b'\n') {
            Some(prev_nl) => {
                let line = &buf[prev_nl + 1..last_nl];
                let at = start as usize + prev_nl + 1;
                return Ok((committed, Some(parse_entry(line, path, at)?)));
            }
            None if start == 0 => {
                return Ok((committed, Some(parse_entry(&buf[..last_nl], path, 0)?)));
            }
            None => window *= 2,
        }
    }
}

fn parse_entry(line: &[u8], path: &Path, at: usize) -> Result<IndexEntry> {
    serde_json::from_slice(line).map_err(|e| {
        corrupt(
            path,
            format!("index line at offset {at} is damaged ({e}); run `imgadm journal rebuild`"),
        )
    })
}

/// The newline-terminated lines of `bytes` with their offsets; an
/// unterminated tail is not committed and is not returned.
pub(crate) fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let end = memchr::memchr(b'\n', &bytes[at..])? + at;
        let line = (at, &bytes[at..end]);
        at = end + 1;
        Some(line)
    })
}

pub(crate) fn add_images(images: &mut Vec<String>, event: &Event) {
    for image in event.images() {
        if !images.iter().any(|i| i == image) {
            images.push(image.to_string());
        }
    }
}

fn push_line(index: &mut Vec<u8>, entry: &IndexEntry) {
    index.extend_from_slice(&serde_json::to_vec(entry).expect("index entry serialises"));
    index.push(b'\n');
}

/// Temp file, fsync, rename over, (the caller fsyncs the directory).
pub(crate) fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all_at(bytes, 0).map_err(io("write", &tmp))?;
    sync_file(&file, &tmp)?;
    fs::rename(&tmp, path).map_err(io("rename into place", path))
}
