//! The dir pool: the embedded pool for hosts without a zpool.
//!
//! Layout under `STATE/pools/NAME/`:
//!
//! - `files/SHA1`: an image file exactly as received (compressed);
//! - `datasets/DATASET.json`, `DATASET` being `UUID` or `UUID-partial` (the
//!   dataset name without the pool): `{name, origin, snapshots: [{name,
//!   guid}], file, toguid, fromguid}`. Guids are decimal strings, as in
//!   manifests (`dataset_guid`), so JSON tools that read numbers as doubles
//!   do not round them.
//!
//! A receive decodes and validates the whole send stream as `zfs recv`
//! would (see [`crate::zstream`]) but stores nothing of it: the image file
//! kept by `keep_file` is the data. Every record is written to a temp file,
//! fsynced, renamed into place and its directory fsynced, so each record is
//! old or new after a crash, never half written. A change that touches
//! several records (a rename fixing its clones' origins) writes them one by
//! one; a clone's origin is therefore also resolved by guid (its fromguid is
//! its origin snapshot's guid), so a crash between those writes never shows
//! a wrong origin.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::ids::{DatasetName, PoolName, SnapName};
use crate::pool::{DatasetEntry, DriverKind, EntryKind, KeepMode, Pool, Received, Snapshot};
use crate::zstream::{self, ValidatingReader, RECORD_LEN};

const FILES_DIR: &str = "files";
const DATASETS_DIR: &str = "datasets";
const RECORD_SUFFIX: &str = ".json";

/// One dataset, as stored in `datasets/DATASET.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DatasetRecord {
    /// `POOL/UUID[-partial]`. The file's name is the truth; this copy is
    /// for people reading the file.
    name: String,
    /// `POOL/UUID@SNAP` this dataset is a clone of (incremental images).
    origin: Option<String>,
    snapshots: Vec<SnapshotRecord>,
    /// The sha1 of the image file kept in `files/`.
    file: Option<String>,
    #[serde(with = "guid_text")]
    toguid: u64,
    #[serde(with = "guid_text")]
    fromguid: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotRecord {
    name: SnapName,
    #[serde(with = "guid_text")]
    guid: u64,
}

/// Guids as decimal strings (numbers are read too).
mod guid_text {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(guid: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(guid)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Guid {
            Text(String),
            Number(u64),
        }
        match Guid::deserialize(d)? {
            Guid::Text(text) => text.parse().map_err(|_| D::Error::custom(format!("invalid guid \"{text}\""))),
            Guid::Number(n) => Ok(n),
        }
    }
}

/// The embedded pool `NAME` under `STATE/pools/`.
pub struct DirPool {
    name: PoolName,
    root: PathBuf,
    /// Serialises this process's changes, so that two threads never
    /// read-modify-write the same record at once. Other processes are kept
    /// apart by the engine's image locks.
    changes: Mutex<()>,
}

impl DirPool {
    /// Opens pool `name` under `pools_root` (`STATE/pools`), creating it when
    /// `create` is set. Stale temp files of dead processes are removed.
    pub fn open(pools_root: &Path, name: &PoolName, create: bool) -> Result<DirPool> {
        let root = pools_root.join(name.as_str());
        let pool = DirPool { name: name.clone(), root, changes: Mutex::new(()) };
        if !pool.is_complete() {
            if !create {
                return Err(Error::PoolNotFound { pool: name.to_string(), driver: DriverKind::Dir.to_string() });
            }
            // files/ first: a pool is listed once datasets/ exists.
            fsutil::create_dir_durable(&pool.root.join(FILES_DIR))?;
            fsutil::create_dir_durable(&pool.root.join(DATASETS_DIR))?;
        }
        for dir in [DATASETS_DIR, FILES_DIR] {
            // Best effort: a reader without write access still gets a pool.
            if let Err(e) = fsutil::remove_stale_temp_files(&pool.root.join(dir)) {
                tracing::warn!(pool = %name, error = %e, "cannot remove stale temporary files");
            }
        }
        Ok(pool)
    }

    /// The dir pools under `pools_root`, sorted by name.
    pub fn list(pools_root: &Path) -> Result<Vec<PoolName>> {
        let entries = match fs::read_dir(pools_root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io_path("cannot read directory", pools_root, e)),
        };
        let mut pools = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io_path("cannot read directory", pools_root, e))?;
            let Some(name) = entry.file_name().to_str().and_then(|n| PoolName::parse(n).ok()) else { continue };
            let path = entry.path();
            if path.join(DATASETS_DIR).is_dir() && path.join(FILES_DIR).is_dir() {
                pools.push(name);
            }
        }
        pools.sort();
        Ok(pools)
    }

    /// `STATE/pools/NAME`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the image file with this sha1 is kept.
    pub fn file_path(&self, sha1: &str) -> Result<PathBuf> {
        check_sha1(sha1)?;
        Ok(self.root.join(FILES_DIR).join(sha1))
    }

    /// The kept image file of `dataset`, if it has one.
    pub fn kept_file(&self, dataset: &DatasetName) -> Result<Option<PathBuf>> {
        let record = self.load(dataset)?.ok_or_else(|| no_such_dataset(dataset))?;
        record.file.as_deref().map(|sha1| self.file_path(sha1)).transpose()
    }

    fn is_complete(&self) -> bool {
        self.root.join(DATASETS_DIR).is_dir() && self.root.join(FILES_DIR).is_dir()
    }

    fn record_path(&self, dataset: &DatasetName) -> PathBuf {
        self.root.join(DATASETS_DIR).join(format!("{}{RECORD_SUFFIX}", record_key(dataset)))
    }

    fn check_pool(&self, dataset: &DatasetName) -> Result<()> {
        if dataset.pool == self.name {
            Ok(())
        } else {
            Err(Error::internal(format!("dataset \"{dataset}\" is not in pool \"{}\"", self.name)))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding it leaves no half-done change on disk (each
        // write is atomic), so a poisoned lock is still usable.
        self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn load(&self, dataset: &DatasetName) -> Result<Option<DatasetRecord>> {
        let path = self.record_path(dataset);
        match fsutil::read_if_exists(&path)? {
            None => Ok(None),
            Some(bytes) => parse_record(&path, &bytes).map(Some),
        }
    }

    /// Every record, by dataset name.
    fn load_all(&self) -> Result<BTreeMap<DatasetName, DatasetRecord>> {
        let dir = self.root.join(DATASETS_DIR);
        let entries = fs::read_dir(&dir).map_err(|e| Error::io_path("cannot read directory", &dir, e))?;
        let mut records = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io_path("cannot read directory", &dir, e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            // Temp files (".NAME.tmp-PID-RAND") and anything not ours.
            if file_name.starts_with('.') {
                continue;
            }
            let Some(key) = file_name.strip_suffix(RECORD_SUFFIX) else { continue };
            let Ok(dataset) = DatasetName::parse(&format!("{}/{key}", self.name)) else {
                tracing::warn!(pool = %self.name, file = file_name, "ignoring a file that is not a dataset record");
                continue;
            };
            let path = entry.path();
            // A record removed since read_dir is simply gone.
            let Some(bytes) = fsutil::read_if_exists(&path)? else { continue };
            let mut record = parse_record(&path, &bytes)?;
            record.name = dataset.to_string();
            records.insert(dataset, record);
        }
        Ok(records)
    }

    fn write_record(&self, dataset: &DatasetName, record: &DatasetRecord) -> Result<()> {
        let mut record = record.clone();
        record.name = dataset.to_string();
        let mut json = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::internal(format!("cannot serialise the record of \"{dataset}\": {e}")))?;
        json.push(b'\n');
        fsutil::write_file_atomic(&self.record_path(dataset), &json)
    }

    /// Removes `files/SHA1` unless a record still uses it.
    fn release_file(&self, sha1: &str, records: &BTreeMap<DatasetName, DatasetRecord>) -> Result<()> {
        if records.values().any(|r| r.file.as_deref() == Some(sha1)) {
            return Ok(());
        }
        fsutil::remove_durable(&self.file_path(sha1)?)
    }
}

/// The dataset name without its pool: `UUID` or `UUID-partial`.
fn record_key(dataset: &DatasetName) -> String {
    format!("{}{}", dataset.uuid, if dataset.partial { "-partial" } else { "" })
}

fn parse_record(path: &Path, bytes: &[u8]) -> Result<DatasetRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::internal(format!("the dir pool record \"{}\" is not valid: {e}", path.display())))
}

fn check_sha1(sha1: &str) -> Result<()> {
    if sha1.len() == 40 && sha1.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::internal(format!("not a sha1 (40 lowercase hex digits): \"{sha1}\"")))
    }
}

/// As `zfs` says it.
fn no_such_dataset(dataset: &DatasetName) -> Error {
    Error::internal(format!("cannot open '{dataset}': dataset does not exist"))
}

fn already_exists(what: &str, name: &str) -> Error {
    Error::internal(format!("cannot {what} '{name}': dataset already exists"))
}

/// Every snapshot of a pool's records by full name and by guid, built once
/// so that resolving each record's origin is a lookup, not a pass over all
/// records (`list` resolves every record's).
struct SnapshotIndex {
    guid_of: HashMap<String, u64>,
    /// The first snapshot with each guid, in dataset order.
    named: HashMap<u64, String>,
}

impl SnapshotIndex {
    fn new(records: &BTreeMap<DatasetName, DatasetRecord>) -> SnapshotIndex {
        let mut index = SnapshotIndex { guid_of: HashMap::new(), named: HashMap::new() };
        for (dataset, record) in records {
            for snapshot in &record.snapshots {
                let name = dataset.snapshot(&snapshot.name);
                index.named.entry(snapshot.guid).or_insert_with(|| name.clone());
                index.guid_of.entry(name).or_insert(snapshot.guid);
            }
        }
        index
    }

    /// The origin of `record`: its recorded origin when that snapshot exists
    /// with the stream's fromguid, else the snapshot in the pool that has that
    /// guid (after a crash between record writes), else the recorded string.
    fn origin_of(&self, record: &DatasetRecord) -> Option<String> {
        if record.fromguid == 0 {
            return record.origin.clone();
        }
        if let Some(origin) = &record.origin {
            if self.guid_of.get(origin) == Some(&record.fromguid) {
                return Some(origin.clone());
            }
        }
        self.named.get(&record.fromguid).cloned().or_else(|| record.origin.clone())
    }
}

fn is_exdev(e: &Error) -> bool {
    matches!(e, Error::FileSystem { source, .. } if source.raw_os_error() == Some(nix::libc::EXDEV))
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

impl Pool for DirPool {
    fn name(&self) -> &PoolName {
        &self.name
    }

    fn driver(&self) -> DriverKind {
        DriverKind::Dir
    }

    fn entries(&self) -> Result<Vec<DatasetEntry>> {
        let records = self.load_all()?;
        let snapshots = SnapshotIndex::new(&records);
        let mut entries = Vec::new();
        for (dataset, record) in &records {
            entries.push(DatasetEntry {
                name: dataset.to_string(),
                kind: EntryKind::Filesystem,
                origin: snapshots.origin_of(record),
                mountpoint: None,
                ignore: None,
            });
            for snapshot in &record.snapshots {
                entries.push(DatasetEntry {
                    name: dataset.snapshot(&snapshot.name),
                    kind: EntryKind::Snapshot,
                    origin: None,
                    mountpoint: None,
                    ignore: None,
                });
            }
        }
        Ok(entries)
    }

    fn dataset_exists(&self, dataset: &DatasetName) -> Result<bool> {
        self.check_pool(dataset)?;
        Ok(self.load(dataset)?.is_some())
    }

    fn snapshots(&self, dataset: &DatasetName) -> Result<Vec<Snapshot>> {
        self.check_pool(dataset)?;
        let record = self.load(dataset)?.ok_or_else(|| no_such_dataset(dataset))?;
        Ok(record.snapshots.into_iter().map(|s| Snapshot { name: s.name, guid: s.guid }).collect())
    }

    fn receive(
        &self,
        target: &DatasetName,
        origin: Option<&DatasetName>,
        stream: &mut dyn Read,
        started: &mut dyn FnMut(Option<u32>) -> Result<()>,
    ) -> Result<Received> {
        self.check_pool(target)?;
        if let Some(origin) = origin {
            self.check_pool(origin)?;
        }
        let exists = || Error::internal(format!("cannot receive new filesystem stream: destination '{target}' exists"));
        if self.load(target)?.is_some() {
            return Err(exists());
        }

        let mut header = [0u8; RECORD_LEN];
        stream.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::InvalidStream(
                "record 0 (at byte offset 0): the stream ends early, inside its BEGIN record".to_string(),
            ),
            _ => Error::from_io(e, "reading the send stream"),
        })?;
        let begin = zstream::read_begin(&header)?;
        let snapshot = SnapName::parse(&begin.snapshot)?;

        // An incremental stream applies to the snapshot whose guid is its
        // fromguid; when the caller names the origin, that is its @final.
        let records = self.load_all()?;
        let no_origin = |why: String| {
            Error::InvalidStream(format!(
                "cannot receive incremental stream: local origin for clone {target} does not exist ({why})"
            ))
        };
        let (origin_snapshot, expected_fromguid) = match origin {
            Some(origin) => {
                let record = records.get(origin).ok_or_else(|| no_origin(format!("no dataset {origin}")))?;
                let final_ = SnapName::final_();
                let snap = record
                    .snapshots
                    .iter()
                    .find(|s| s.name == final_)
                    .ok_or_else(|| no_origin(format!("{origin} has no @final snapshot")))?;
                (Some(origin.snapshot(&final_)), Some(snap.guid))
            }
            None if begin.is_incremental() => {
                let found = SnapshotIndex::new(&records)
                    .named
                    .remove(&begin.fromguid)
                    .ok_or_else(|| no_origin(format!("no snapshot has guid {}", begin.fromguid)))?;
                (Some(found), Some(begin.fromguid))
            }
            None => (None, None),
        };

        let mut validator = ValidatingReader::with_begin(header, stream, expected_fromguid)?;
        started(None)?;
        let summary = zstream::drain(&mut validator)?;

        let record = DatasetRecord {
            name: target.to_string(),
            origin: origin_snapshot,
            snapshots: vec![SnapshotRecord { name: snapshot.clone(), guid: summary.begin.toguid }],
            file: None,
            toguid: summary.begin.toguid,
            fromguid: summary.begin.fromguid,
        };
        let _changing = self.lock();
        if self.load(target)?.is_some() {
            return Err(exists());
        }
        self.write_record(target, &record)?;
        Ok(Received {
            snapshot: Snapshot { name: snapshot, guid: summary.begin.toguid },
            toguid: summary.begin.toguid,
            fromguid: summary.begin.fromguid,
        })
    }

    fn keep_file(&self, dataset: &DatasetName, file: &Path, sha1: &str, mode: KeepMode) -> Result<()> {
        self.check_pool(dataset)?;
        let kept = self.file_path(sha1)?;
        let _changing = self.lock();
        let mut record = self.load(dataset)?.ok_or_else(|| no_such_dataset(dataset))?;
        if kept.exists() {
            // Kept already (another image with the same file, or a redo
            // after a crash): a moved-in source is no longer needed, unless
            // it is the kept file itself.
            if mode == KeepMode::Move && !same_file(file, &kept) {
                fsutil::remove_durable(file)?;
            }
        } else {
            match mode {
                KeepMode::Copy => {
                    fsutil::copy_durable(file, &kept)?;
                }
                KeepMode::Move => match fsutil::rename_durable(file, &kept) {
                    Ok(()) => {}
                    Err(e) if is_exdev(&e) => {
                        fsutil::copy_durable(file, &kept)?;
                        fsutil::remove_durable(file)?;
                    }
                    Err(e) => return Err(e),
                },
            }
        }
        let previous = record.file.replace(sha1.to_string());
        self.write_record(dataset, &record)?;
        if let Some(previous) = previous.filter(|p| p != sha1) {
            self.release_file(&previous, &self.load_all()?)?;
        }
        Ok(())
    }

    fn rename_snapshot(&self, dataset: &DatasetName, from: &SnapName, to: &SnapName) -> Result<()> {
        self.check_pool(dataset)?;
        let _changing = self.lock();
        let mut records = self.load_all()?;
        let record = records.get_mut(dataset).ok_or_else(|| no_such_dataset(dataset))?;
        if from == to && record.snapshots.iter().any(|s| &s.name == from) {
            return Ok(());
        }
        if record.snapshots.iter().any(|s| &s.name == to) {
            return Err(already_exists("rename to", &dataset.snapshot(to)));
        }
        let snap = record.snapshots.iter_mut().find(|s| &s.name == from).ok_or_else(|| {
            Error::internal(format!("cannot open '{}': dataset does not exist", dataset.snapshot(from)))
        })?;
        snap.name = to.clone();
        let record = record.clone();
        self.write_record(dataset, &record)?;

        let (old_name, new_name) = (dataset.snapshot(from), dataset.snapshot(to));
        for (clone, mut clone_record) in records {
            if clone_record.origin.as_deref() == Some(old_name.as_str()) {
                clone_record.origin = Some(new_name.clone());
                self.write_record(&clone, &clone_record)?;
            }
        }
        Ok(())
    }

    fn rename(&self, from: &DatasetName, to: &DatasetName) -> Result<()> {
        self.check_pool(from)?;
        self.check_pool(to)?;
        if from == to {
            return if self.load(from)?.is_some() { Ok(()) } else { Err(no_such_dataset(from)) };
        }
        let _changing = self.lock();
        let records = self.load_all()?;
        let mut record = records.get(from).cloned().ok_or_else(|| no_such_dataset(from))?;
        if records.contains_key(to) {
            return Err(already_exists("rename to", &to.to_string()));
        }
        // The rename is the commit point; the name inside is then fixed up
        // (the loader goes by the file name, so a crash between is harmless).
        fsutil::rename_durable(&self.record_path(from), &self.record_path(to))?;
        record.name = to.to_string();
        self.write_record(to, &record)?;

        let old_prefix = format!("{from}@");
        for (clone, mut clone_record) in records {
            if clone == *from {
                continue;
            }
            let Some(snap) = clone_record.origin.as_deref().and_then(|o| o.strip_prefix(&old_prefix)) else {
                continue;
            };
            clone_record.origin = Some(format!("{to}@{snap}"));
            self.write_record(&clone, &clone_record)?;
        }
        Ok(())
    }

    fn destroy(&self, dataset: &DatasetName) -> Result<()> {
        self.check_pool(dataset)?;
        let _changing = self.lock();
        let mut records = self.load_all()?;
        let record = records.get(dataset).cloned().ok_or_else(|| no_such_dataset(dataset))?;
        let own: Vec<String> = record.snapshots.iter().map(|s| dataset.snapshot(&s.name)).collect();
        let snapshots = SnapshotIndex::new(&records);
        let clones: Vec<String> = records
            .iter()
            .filter(|(name, _)| *name != dataset)
            .filter(|(_, r)| snapshots.origin_of(r).is_some_and(|o| own.contains(&o)))
            .map(|(name, _)| name.to_string())
            .collect();
        if !clones.is_empty() {
            return Err(Error::internal(format!(
                "cannot destroy '{dataset}': filesystem has dependent clones\nuse '-R' to destroy the following datasets:\n{}",
                clones.join("\n")
            )));
        }
        fsutil::remove_durable(&self.record_path(dataset))?;
        records.remove(dataset);
        if let Some(sha1) = &record.file {
            self.release_file(sha1, &records)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_guids_as_text() {
        let record = DatasetRecord {
            name: "zones/5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01".to_string(),
            origin: None,
            snapshots: vec![SnapshotRecord { name: SnapName::final_(), guid: u64::MAX }],
            file: Some("5c187902c5243a1f91e661d9ca21bad01baea7e4".to_string()),
            toguid: u64::MAX,
            fromguid: 0,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"toguid\":\"18446744073709551615\""), "{json}");
        assert!(json.contains("\"fromguid\":\"0\""), "{json}");
        assert_eq!(serde_json::from_str::<DatasetRecord>(&json).unwrap(), record);
        let numeric = json.replace("\"18446744073709551615\"", "18446744073709551615");
        assert_eq!(serde_json::from_str::<DatasetRecord>(&numeric).unwrap(), record);
        assert!(serde_json::from_str::<DatasetRecord>(&json.replace("\"0\"", "\"x\"")).is_err());
    }

    #[test]
    fn sha1_names_are_checked_before_they_become_paths() {
        assert!(check_sha1("5c187902c5243a1f91e661d9ca21bad01baea7e4").is_ok());
        for bad in ["../../etc/passwd", "5C187902C5243A1F91E661D9CA21BAD01BAEA7E4", "", "5c18"] {
            assert!(check_sha1(bad).is_err(), "{bad}");
        }
    }
}
