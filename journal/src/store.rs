//! The sled side of the journal, opened for one call under the journal lock.
//!
//! Keys (one tree, so one `apply_batch` is atomic across all of them):
//!
//! | key                         | value                                   |
//! |-----------------------------|-----------------------------------------|
//! | `h`                         | head: `{"seq":N,"hash":"..."}`          |
//! | `e` + seq (u64 big-endian)  | stored event (operations not yet moved) |
//! | `o` + op id                 | seq of its operation-begun (open ops)   |
//! | `p` + op id                 | empty: ended, still to move to segments |
//! | `i` + pool NUL driver NUL image | op id (installed-image projection)  |

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::{create_dir_durable, sync_dir, sync_path};
use crate::error::{corrupt, io, JournalError, Result};
use crate::event::{Event, OpId, GENESIS_PREV};
use crate::lock::JournalLock;
use crate::projection::{InstalledImage, InstalledKey};
use crate::segment::{add_images, write_replacing, SealedOp, Segments};

pub(crate) const HEAD_KEY: &[u8] = b"h";
pub(crate) const EVENT: u8 = b'e';
pub(crate) const OPEN: u8 = b'o';
pub(crate) const PENDING: u8 = b'p';
pub(crate) const INSTALLED: u8 = b'i';

/// The last event: its seq and the hash of its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    pub(crate) fn empty() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_PREV.to_string(),
        }
    }
}

/// `DIR/head`: the head, and whether the journal was settled when it was
/// written: no operation open and every event in a segment, so sled held
/// no event. Readers that find it settled read the segments alone and
/// never open sled (an open costs milliseconds). An append that is about
/// to put events into sled first rewrites the file unsettled, so that a
/// crash can never leave events in sled behind a settled head file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HeadFile {
    #[serde(flatten)]
    pub head: Head,
    /// Absent (a head file from before this field) reads as unsettled.
    #[serde(default)]
    pub settled: bool,
}

impl HeadFile {
    /// Reads `DIR/head`; `None` when there is none yet.
    pub(crate) fn read(dir: &Path) -> Result<Option<HeadFile>> {
        let path = dir.join("head");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| corrupt(&path, format!("is damaged: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }
}

pub(crate) fn event_key(seq: u64) -> [u8; 9] {
    let mut key = [EVENT; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn op_key(prefix: u8, op: &OpId) -> Vec<u8> {
    let mut key = vec![prefix];
    key.extend_from_slice(op.as_str().as_bytes());
    key
}

/// sled, open, with the journal lock held. Fields drop in order: sled is
/// closed before the lock is released.
pub(crate) struct Store {
    pub db: sled::Db,
    dir: PathBuf,
    sled_dir: PathBuf,
    /// The head as sled has it, and as the head file has it.
    pub sled_head: Option<Head>,
    pub file_head: Option<Head>,
    /// What the head file says of sled's events (see [`HeadFile`]).
    pub file_settled: bool,
    _lock: JournalLock,
}

impl Store {
    /// Lock and open, without judging what is found (verify reports instead).
    pub(crate) fn open_unchecked(
        dir: &Path,
        lock_timeout: std::time::Duration,
        purpose: &str,
    ) -> Result<Store> {
        create_dir_durable(dir)?;
        let lock = JournalLock::acquire(dir, lock_timeout, purpose)?;
        let sled_dir = dir.join("sled");
        let creating = !sled_dir.exists();
        let db = open_sled(&sled_dir, lock_timeout)?;
        // sled writes its `conf` file (when it finds none, or one of 8
        // bytes or less) and never fsyncs it; a torn or zeroed `conf` after
        // a power cut makes sled refuse to open the database at all. An
        // fsync of the unchanged file costs next to nothing.
        sync_path(&sled_dir.join("conf"))?;
        if creating {
            sync_dir(&sled_dir)?;
            sync_dir(dir)?;
        }
        let sled_head = match db.get(HEAD_KEY).map_err(db_error(&sled_dir))? {
            Some(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(&sled_dir, format!("head record is damaged: {e}")))?,
            ),
            None => None,
        };
        let file = HeadFile::read(dir)?;
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
            sled_dir,
            sled_head,
            file_settled: file.as_ref().is_some_and(|f| f.settled),
            file_head: file.map(|f| f.head),
            _lock: lock,
        })
    }

    /// Lock, open, and refuse to go on if the database is behind the head
    /// file (or disagrees with it about the last event).
    pub(crate) fn open(
        dir: &Path,
        lock_timeout: std::time::Duration,
        purpose: &str,
    ) -> Result<Store> {
        let mut store = Store::open_unchecked(dir, lock_timeout, purpose)?;
        let sled_seq = store.sled_head.as_ref().map_or(0, |h| h.seq);
        match &store.file_head {
            Some(file) if file.seq > sled_seq => {
                return Err(JournalError::Lost {
                    dir: dir.to_path_buf(),
                    known: sled_seq,
                    head: file.seq,
                })
            }
            Some(file) if Some(file) != store.sled_head.as_ref() && file.seq == sled_seq => {
                return Err(corrupt(
                    &store.dir.join("head"),
                    format!("seq {} has hash {} but the database says otherwise; run `imgadm journal verify`", file.seq, file.hash),
                ))
            }
            // Equal, or sled is ahead: a crash came between the sled flush
            // and the head file write. The events are durable; catch up.
            _ => {
                if let Some(head) = &store.sled_head {
                    if store.file_head.as_ref() != Some(head) {
                        store.write_head_file(head, false)?;
                        store.file_settled = false;
                    }
                }
            }
        }
        Ok(store)
    }

    pub(crate) fn head(&self) -> Head {
        self.sled_head.clone().unwrap_or_else(Head::empty)
    }

    /// Applies a batch atomically and makes it durable: sled's flush, then
    /// an fsync of sled's `db` file (flush alone is `sync_file_range` on
    /// Linux, which neither flushes the device cache nor the file size).
    pub(crate) fn commit(&self, batch: sled::Batch) -> Result<()> {
        self.db.apply_batch(batch).map_err(db_error(&self.sled_dir))?;
        self.db.flush().map_err(db_error(&self.sled_dir))?;
        sync_path(&self.sled_dir.join("db"))
    }

    /// `DIR/head`: temp file, fsync, rename, fsync the directory. Written
    /// only after the batch it describes is durable in sled, so after a
    /// crash it is never ahead of sled unless sled lost data.
    pub(crate) fn write_head_file(&self, head: &Head, settled: bool) -> Result<()> {
        let file = HeadFile {
            head: head.clone(),
            settled,
        };
        let bytes = serde_json::to_vec(&file).expect("head serialises");
        write_replacing(&self.dir.join("head"), &bytes)?;
        sync_dir(&self.dir)
    }

    /// Whether sled holds no event and no open or pending operation: what
    /// a settled head file promises.
    pub(crate) fn holds_no_events(&self) -> Result<bool> {
        for prefix in [EVENT, OPEN, PENDING] {
            if let Some(item) = self.db.scan_prefix([prefix]).next() {
                item.map_err(db_error(&self.sled_dir))?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The stored events in sled, by seq.
    pub(crate) fn events(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([EVENT]) {
            let (key, value) = item.map_err(db_error(&self.sled_dir))?;
            let seq = <[u8; 8]>::try_from(&key[1..])
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt(&self.sled_dir, format!("event key {key:?} is not a seq")))?;
            out.push((seq, value.to_vec()));
        }
        Ok(out)
    }

    /// The parsed events in sled, by seq.
    pub(crate) fn parsed_events(&self) -> Result<Vec<(Event, Vec<u8>)>> {
        self.events()?
            .into_iter()
            .map(|(seq, bytes)| {
                let event = Event::decode(&bytes, &|| format!("seq {seq}"))
                    .map_err(|what| corrupt(&self.sled_dir, what))?;
                Ok((event, bytes))
            })
            .collect()
    }

    /// Op ids stored under a one-byte prefix (`OPEN` or `PENDING`).
    pub(crate) fn op_ids(&self, prefix: u8) -> Result<Vec<OpId>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([prefix]) {
            let (key, _) = item.map_err(db_error(&self.sled_dir))?;
            let id = std::str::from_utf8(&key[1..])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(&self.sled_dir, format!("key {key:?} names no operation")))?;
            out.push(id);
        }
        Ok(out)
    }

    pub(crate) fn contains(&self, key: &[u8]) -> Result<bool> {
        self.db.contains_key(key).map_err(db_error(&self.sled_dir))
    }

    pub(crate) fn installed(&self) -> Result<Vec<InstalledImage>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([INSTALLED]) {
            let (key, value) = item.map_err(db_error(&self.sled_dir))?;
            let bad = || corrupt(&self.sled_dir, format!("installed record {key:?} is damaged"));
            let k = InstalledKey::decode(&key[1..]).ok_or_else(bad)?;
            let op = std::str::from_utf8(&value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?;
            out.push(InstalledImage {
                pool: k.pool,
                driver: k.driver,
                image: k.image,
                op,
            });
        }
        Ok(out)
    }

    /// Moves every ended operation still in sled into the segments: write
    /// and fsync the segment and its index, then delete the events from
    /// sled. A crash in between leaves the operation in both places; the
    /// next open sees the `p` key, finds it indexed, and only deletes.
    pub(crate) fn finish_moves(&self, segments: &Segments) -> Result<()> {
        let pending = self.op_ids(PENDING)?;
        if pending.is_empty() {
            return Ok(());
        }
        let events = self.parsed_events()?;
        let indexed = segments.indexed_among(&pending.iter().cloned().collect())?;
        let mut to_write = Vec::new();
        let mut done = sled::Batch::default();
        for op in pending {
            let mine: Vec<&(Event, Vec<u8>)> = events.iter().filter(|(e, _)| e.op == op).collect();
            for (event, _) in &mine {
                done.remove(&event_key(event.seq));
            }
            done.remove(op_key(PENDING, &op));
            if indexed.contains(&op) {
                continue;
            }
            let mut images = Vec::new();
            for (event, _) in &mine {
                add_images(&mut images, event);
            }
            to_write.push(SealedOp {
                op,
                events: mine.iter().map(|(e, b)| (e.seq, b.clone())).collect(),
                images,
            });
        }
        segments.append(&to_write)?;
        // No fsync needed: if this deletion is lost, the next open redoes it.
        self.db.apply_batch(done).map_err(db_error(&self.sled_dir))?;
        self.db.flush().map_err(db_error(&self.sled_dir))?;
        Ok(())
    }
}

/// Opens sled. Its own lock on `db` is released when the last of its
/// threads lets go of the file, which can be a moment after the previous
/// handle in this process was dropped; since the journal lock is held,
/// nobody else can be opening it, so a busy `db` is waited for (bounded).
fn open_sled(sled_dir: &Path, patience: std::time::Duration) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(sled_dir)
            // The journal flushes (and fsyncs) itself at the end of every
            // batch, and closes sled right after: no background flusher.
            .flush_every_ms(None)
            .cache_capacity(16 << 20)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            // sled reports its busy lock only as text (config.rs, 0.34.7).
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock") && started.elapsed() < patience =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(source) => {
                return Err(JournalError::Database {
                    path: sled_dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

pub(crate) fn db_error(path: &Path) -> impl Fn(sled::Error) -> JournalError + '_ {
    move |source| JournalError::Database {
        path: path.to_path_buf(),
        source,
    }
}
