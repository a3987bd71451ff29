//! The storage seam. A `Pool` holds image datasets and their snapshots; the
//! engine decides what to do and a pool only does it. Two drivers:
//!
//! - `zfs`: a real zpool, driven through `zfs(8)`/`zpool(8)` child processes
//!   (argv, never a shell). The driver for real hosts and for the tests
//!   (zfs-fuse on Linux).
//! - `dir`: the embedded default where there is no zpool: datasets and
//!   snapshots are records under `STATE/pools/NAME/`, image files are kept as
//!   received, and every received stream is validated as `zfs recv` would.

pub mod dir;
pub mod zfs;
pub mod zfs_vm;

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{DatasetName, PoolName, SnapName};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Zfs,
    Dir,
}

impl DriverKind {
    pub fn parse(text: &str) -> Option<DriverKind> {
        match text {
            "zfs" => Some(DriverKind::Zfs),
            "dir" => Some(DriverKind::Dir),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            DriverKind::Zfs => "zfs",
            DriverKind::Dir => "dir",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Filesystem,
    Volume,
    Snapshot,
}

/// One line of a pool listing, as `zfs list -t filesystem,volume,snapshot -H
/// -o name,origin,mountpoint,imgadm:ignore` gives it. Names are the pool's
/// own strings: listing is the one place unparsed names come back, and they
/// are only compared, never passed back to a command unparsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetEntry {
    pub name: String,
    pub kind: EntryKind,
    /// `POOL/DS@SNAP` this dataset is a clone of.
    pub origin: Option<String>,
    pub mountpoint: Option<String>,
    /// The `imgadm:ignore` user property, as set.
    pub ignore: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: SnapName,
    pub guid: u64,
}

/// What a receive created: the dataset's one snapshot (the stream's) and the
/// stream's guids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub snapshot: Snapshot,
    pub toguid: u64,
    pub fromguid: u64,
}

/// How the dir pool takes an image file in: a download is moved, a file the
/// user named is copied (it stays theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepMode {
    Move,
    Copy,
}

/// A pool of one driver. Every method that changes the pool returns only
/// once its change is durable.
pub trait Pool: Send + Sync {
    fn name(&self) -> &PoolName;

    fn driver(&self) -> DriverKind;

    /// Every filesystem, volume and snapshot in the pool.
    fn entries(&self) -> Result<Vec<DatasetEntry>>;

    fn dataset_exists(&self, dataset: &DatasetName) -> Result<bool>;

    /// The snapshots of `dataset` (not of its children), oldest first.
    fn snapshots(&self, dataset: &DatasetName) -> Result<Vec<Snapshot>>;

    /// Receives the (decompressed) send stream into `target`, which must not
    /// exist. An incremental stream becomes a clone of the snapshot in this
    /// pool whose guid is the stream's fromguid; `origin` names the dataset
    /// that snapshot is expected on (the dir pool checks it, as the guid
    /// lookup of `zfs recv` does). `started` is called once the receive is
    /// ready to take bytes (with the child's pid, if there is one) and before
    /// any byte is written; an error from it aborts the receive.
    fn receive(
        &self,
        target: &DatasetName,
        origin: Option<&DatasetName>,
        stream: &mut dyn Read,
        started: &mut dyn FnMut(Option<u32>) -> Result<()>,
    ) -> Result<Received>;

    /// Keeps the verified image file with `dataset` where the driver needs it
    /// (the dir pool stores it as `files/SHA1`; zfs needs nothing).
    fn keep_file(&self, dataset: &DatasetName, file: &Path, sha1: &str, mode: KeepMode) -> Result<()>;

    fn rename_snapshot(&self, dataset: &DatasetName, from: &SnapName, to: &SnapName) -> Result<()>;

    /// Renames a dataset (`-partial` to its final name, and back in undo).
    fn rename(&self, from: &DatasetName, to: &DatasetName) -> Result<()>;

    /// Destroys `dataset` and its snapshots. Refuses (as `zfs destroy -r`
    /// does) while any snapshot of it has clones.
    fn destroy(&self, dataset: &DatasetName) -> Result<()>;
}
