//! What has not reached the "disk" (the backing directory) yet, and what a
//! power cut does to it.
//!
//! - File data: every write is kept in memory, per inode, in the order it
//!   was made, until that inode is fsynced (fsync or fdatasync of any of its
//!   handles, as on Linux). Reads see it; the backing file does not.
//! - Metadata (create, mkdir, rename, unlink, rmdir) is done on the backing
//!   directory at once, so later operations see it, but logged with what
//!   undoes it. Any fsync or fsyncdir commits the whole log, oldest first,
//!   as a journaling file system (ext4, XFS, ZFS's intent log) commits its
//!   metadata in order: a rename is durable once anything is fsynced after
//!   it, not before. Unlinked and replaced files wait in a graveyard inside
//!   the backing directory until then, so a cut can put them back.
//! - Not modelled: truncate, chmod, chown and timestamps are durable at
//!   once; a commit never persists other files' unsynced data (ext4's
//!   data=ordered would, for files whose size grew).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a power cut does to the writes that were not fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// They are gone, and so is every metadata change since the last fsync.
    Drop,
    /// They all reached the disk after all (a cut that lost nothing).
    Keep,
    /// Torn: each unsynced write is kept, dropped, half written or replaced
    /// by random bytes, and a random prefix of the uncommitted metadata
    /// changes survives. Chosen by a seed the cut prints.
    Garble,
}

/// Name of the directory, at the root of the backing directory, that holds
/// unlinked and replaced entries until the next commit. Hidden from the mount.
pub(super) const GRAVEYARD: &str = ".powerloss-graveyard";

struct PendingWrite {
    offset: u64,
    data: Vec<u8>,
}

/// An inode's unsynced writes, with a handle on its backing file: the handle
/// keeps the inode (and so its number) alive while writes are pending, and
/// applies them wherever the file has been renamed to.
struct PendingFile {
    backing: File,
    writes: Vec<PendingWrite>,
}

impl PendingFile {
    fn end(&self) -> u64 {
        self.writes.iter().map(|w| w.offset + w.data.len() as u64).max().unwrap_or(0)
    }

    fn apply(&self) -> io::Result<()> {
        for write in &self.writes {
            self.backing.write_all_at(&write.data, write.offset)?;
        }
        Ok(())
    }
}

/// A metadata change on the backing directory and how to undo it.
enum Change {
    Created(PathBuf),
    Renamed { from: PathBuf, to: PathBuf, replaced: Option<PathBuf> },
    Removed { path: PathBuf, grave: PathBuf },
}

impl Change {
    fn undo(&self) -> io::Result<()> {
        match self {
            Change::Created(path) => match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(path),
                Ok(_) => fs::remove_file(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
            Change::Renamed { from, to, replaced } => {
                fs::rename(to, from)?;
                match replaced {
                    Some(grave) => fs::rename(grave, to),
                    None => Ok(()),
                }
            }
            Change::Removed { path, grave } => fs::rename(grave, path),
        }
    }
}

/// Everything volatile in one mount's lifetime.
pub(super) struct Volatile {
    graveyard: PathBuf,
    next_grave: u64,
    files: HashMap<u64, PendingFile>,
    changes: Vec<Change>,
}

impl Volatile {
    pub(super) fn new(backing: &Path) -> io::Result<Volatile> {
        let graveyard = backing.join(GRAVEYARD);
        // A graveyard left by a process that died mid-mount holds entries
        // the last commit would have removed.
        match fs::remove_dir_all(&graveyard) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir(&graveyard)?;
        Ok(Volatile { graveyard, next_grave: 0, files: HashMap::new(), changes: Vec::new() })
    }

    pub(super) fn unsynced_bytes(&self) -> u64 {
        self.files.values().flat_map(|f| &f.writes).map(|w| w.data.len() as u64).sum()
    }

    /// Inodes with unsynced writes, and how many bytes each.
    pub(super) fn unsynced_inodes(&self) -> Vec<(u64, u64)> {
        self.files.iter().map(|(ino, f)| (*ino, f.writes.iter().map(|w| w.data.len() as u64).sum())).collect()
    }

    pub(super) fn unsynced_changes(&self) -> usize {
        self.changes.len()
    }

    /// Records a write; `backing` is a handle on the file, cloned if this is
    /// the inode's first pending write.
    pub(super) fn write(&mut self, ino: u64, backing: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let pending = match self.files.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(PendingFile { backing: backing.try_clone()?, writes: Vec::new() })
            }
        };
        // Appends (the common case) extend the last write, so that reads
        // overlay few pieces; a torn cut then tears the merged piece.
        match pending.writes.last_mut() {
            Some(last) if last.offset + last.data.len() as u64 == offset => last.data.extend_from_slice(data),
            _ => pending.writes.push(PendingWrite { offset, data: data.to_vec() }),
        }
        Ok(())
    }

    /// The size a reader sees: the backing file's, or further if pending
    /// writes reach further.
    pub(super) fn size(&self, ino: u64, backing_size: u64) -> u64 {
        self.files.get(&ino).map_or(backing_size, |f| f.end().max(backing_size))
    }

    /// Overlays the pending writes on `buf`, which holds the file's bytes
    /// from `offset` as the backing file has them.
    pub(super) fn overlay(&self, ino: u64, offset: u64, buf: &mut [u8]) {
        let Some(pending) = self.files.get(&ino) else { return };
        let end = offset + buf.len() as u64;
        for write in &pending.writes {
            let write_end = write.offset + write.data.len() as u64;
            let (from, to) = (write.offset.max(offset), write_end.min(end));
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&write.data[(from - write.offset) as usize..(to - write.offset) as usize]);
            }
        }
    }

    /// A truncate reached the backing file: pending writes past `size` go.
    pub(super) fn truncate(&mut self, ino: u64, size: u64) {
        let Some(pending) = self.files.get_mut(&ino) else { return };
        pending.writes.retain_mut(|w| {
            if w.offset >= size {
                return false;
            }
            w.data.truncate((size - w.offset).min(w.data.len() as u64) as usize);
            true
        });
    }

    /// fsync of one inode: its writes reach the backing file, and, as a
    /// journaling file system commits its log, every metadata change so far.
    pub(super) fn sync_file(&mut self, ino: u64) -> io::Result<()> {
        if let Some(pending) = self.files.remove(&ino) {
            pending.apply()?;
        }
        self.commit_changes()
    }

    /// Makes every logged metadata change durable: the graveyard is emptied.
    pub(super) fn commit_changes(&mut self) -> io::Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        self.changes.clear();
        for entry in fs::read_dir(&self.graveyard)? {
            let path = entry?.path();
            if path.is_dir() {
                fs::remove_dir_all(&path)?
            } else {
                fs::remove_file(&path)?
            }
        }
        // Pending writes to files that are now gone for good can never be read.
        self.files.retain(|_, f| f.backing.metadata().is_ok_and(|m| m.nlink() > 0));
        Ok(())
    }

    pub(super) fn created(&mut self, path: PathBuf) {
        self.changes.push(Change::Created(path));
    }

    /// A fresh name in the graveyard.
    pub(super) fn grave(&mut self) -> PathBuf {
        self.next_grave += 1;
        self.graveyard.join(self.next_grave.to_string())
    }

    pub(super) fn renamed(&mut self, from: PathBuf, to: PathBuf, replaced: Option<PathBuf>) {
        self.changes.push(Change::Renamed { from, to, replaced });
    }

    pub(super) fn removed(&mut self, path: PathBuf, grave: PathBuf) {
        self.changes.push(Change::Removed { path, grave });
    }

    /// The power cut. Returns a line saying what was lost.
    pub(super) fn cut(&mut self, lost: Lost, seed: u64) -> io::Result<String> {
        let bytes = self.unsynced_bytes();
        let changes = self.changes.len();
        let mut rng = fastrand::Rng::with_seed(seed);
        let kept_changes = match lost {
            Lost::Drop => 0,
            Lost::Keep => changes,
            Lost::Garble => rng.usize(0..=changes),
        };
        for (_, pending) in self.files.drain() {
            match lost {
                Lost::Drop => {}
                Lost::Keep => pending.apply()?,
                Lost::Garble => {
                    for write in &pending.writes {
                        let torn = match rng.u8(0..4) {
                            0 => continue,
                            1 => write.data.clone(),
                            2 => write.data[..write.data.len() / 2].to_vec(),
                            _ => (0..write.data.len()).map(|_| rng.u8(..)).collect(),
                        };
                        pending.backing.write_all_at(&torn, write.offset)?;
                    }
                }
            }
        }
        for change in self.changes.drain(kept_changes..).rev() {
            change.undo()?;
        }
        // What is left is the prefix that made it: its graves go for good.
        self.commit_changes()?;
        Ok(format!(
            "power cut ({lost:?}, seed {seed}): {bytes} unsynced bytes, {kept_changes} of {changes} uncommitted metadata changes kept"
        ))
    }
}
