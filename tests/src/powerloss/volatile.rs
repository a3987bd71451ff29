//! What has not reached the "disk" (the backing directory) yet, and what a
//! power cut does to it.
//!
//! - File data: every write is kept in memory, per inode, in the order it
//!   was made, until that inode is fsynced (fsync or fdatasync of any of its
//!   handles, as on Linux). Reads see it; the backing file does not.
//! - Metadata (create, mkdir, rename, unlink, rmdir) is done on the backing
//!   directory at once, so later operations see it, but logged with what
//!   undoes it, until the directory that holds the new (or removed) name is
//!   fsynced: the minimum POSIX promises (fsync(2): "an explicit fsync() on
//!   a file descriptor for the directory is also needed"). Journaling file
//!   systems often keep more (ext4 commits every earlier change with any
//!   fsync); this model finds the code that relies on that. Unlinked and
//!   replaced entries wait in a graveyard inside the backing directory, so
//!   a cut can put them back.
//! - Not modelled: truncate, chmod, chown and timestamps are durable at
//!   once; an fsync never persists other files' unsynced data (ext4's
//!   data=ordered would, for files whose size grew).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a power cut does to the writes that were not fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// They are gone, and so is every metadata change whose directory was
    /// not fsynced since.
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
enum Undo {
    Created(PathBuf),
    Renamed { from: PathBuf, to: PathBuf, replaced: Option<PathBuf> },
    Removed { path: PathBuf, grave: PathBuf },
}

/// A metadata change not yet durable: `dir` (the backing inode number of
/// the directory holding the new or removed name) must be fsynced first.
struct Change {
    dir: u64,
    undo: Undo,
}

impl Undo {
    /// Undoes the change, as far as later changes left it possible: an
    /// entry already gone (removed, or under a directory whose creation was
    /// undone) stays gone, as it would on a disk.
    fn undo(&self) -> io::Result<()> {
        let done = match self {
            Undo::Created(path) => match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(path),
                Ok(_) => fs::remove_file(path),
                Err(e) => Err(e),
            },
            Undo::Renamed { from, to, replaced } => fs::rename(to, from).and_then(|()| match replaced {
                Some(grave) => fs::rename(grave, to),
                None => Ok(()),
            }),
            Undo::Removed { path, grave } => fs::rename(grave, path),
        };
        match done {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// One line for the cut report, paths relative to `root`.
    fn describe(&self, root: &Path) -> String {
        let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
        match self {
            Undo::Created(path) => format!("create {}", rel(path)),
            Undo::Renamed { from, to, .. } => format!("rename {} -> {}", rel(from), rel(to)),
            Undo::Removed { path, .. } => format!("remove {}", rel(path)),
        }
    }

    /// The change is durable: what it removed or replaced goes for good.
    fn forget(&self) -> io::Result<()> {
        let grave = match self {
            Undo::Renamed { replaced: Some(grave), .. } | Undo::Removed { grave, .. } => grave,
            _ => return Ok(()),
        };
        match fs::symlink_metadata(grave) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(grave),
            Ok(_) => fs::remove_file(grave),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
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

    /// fsync of one file: its writes reach the backing file. Its name, if
    /// new, is not made durable: that takes an fsync of its directory.
    pub(super) fn sync_file(&mut self, ino: u64) -> io::Result<()> {
        match self.files.remove(&ino) {
            Some(pending) => pending.apply(),
            None => Ok(()),
        }
    }

    /// fsync of a directory (`dir` is its backing inode number): the
    /// changes of names in it become durable.
    pub(super) fn sync_dir(&mut self, dir: u64) -> io::Result<()> {
        let (durable, pending): (Vec<Change>, Vec<Change>) =
            std::mem::take(&mut self.changes).into_iter().partition(|c| c.dir == dir);
        self.changes = pending;
        self.forget(durable)
    }

    fn forget(&mut self, durable: Vec<Change>) -> io::Result<()> {
        for change in &durable {
            change.undo.forget()?;
        }
        // Pending writes to files that are now gone for good can never be read.
        self.files.retain(|_, f| f.backing.metadata().is_ok_and(|m| m.nlink() > 0));
        Ok(())
    }

    /// A name was created in directory `dir`.
    pub(super) fn created(&mut self, dir: u64, path: PathBuf) {
        self.changes.push(Change { dir, undo: Undo::Created(path) });
    }

    /// A fresh name in the graveyard.
    pub(super) fn grave(&mut self) -> PathBuf {
        self.next_grave += 1;
        self.graveyard.join(self.next_grave.to_string())
    }

    /// An entry was renamed into directory `dir` (what it replaced, if
    /// anything, is in the graveyard).
    pub(super) fn renamed(&mut self, dir: u64, from: PathBuf, to: PathBuf, replaced: Option<PathBuf>) {
        self.changes.push(Change { dir, undo: Undo::Renamed { from, to, replaced } });
    }

    /// An entry of directory `dir` was removed (moved to the graveyard).
    pub(super) fn removed(&mut self, dir: u64, path: PathBuf, grave: PathBuf) {
        self.changes.push(Change { dir, undo: Undo::Removed { path, grave } });
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
        let mut uncommitted = std::mem::take(&mut self.changes);
        let root = self.graveyard.parent().unwrap_or(&self.graveyard).to_path_buf();
        let mut undone = Vec::new();
        for change in uncommitted.drain(kept_changes..).rev() {
            change.undo.undo()?;
            undone.push(change.undo.describe(&root));
        }
        undone.reverse();
        // What is left is the prefix that made it to the disk after all.
        self.forget(uncommitted)?;
        Ok(format!(
            "power cut ({lost:?}, seed {seed}): {bytes} unsynced bytes, {kept_changes} of {changes} uncommitted metadata changes kept; undone: [{}]",
            undone.join(", ")
        ))
    }
}
