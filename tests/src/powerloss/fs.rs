//! The FUSE side: a passthrough of the backing directory whose data writes
//! and metadata changes go through [`Volatile`] first.
//!
//! The kernel is told to cache nothing (zero attribute and entry TTLs,
//! `direct_io` on every open file, no writeback cache), so every read,
//! write and stat reaches this code and no process can see state the cut
//! took away. `sync_file_range(2)` reaches no FUSE operation at all: that is
//! exactly why sled's `flush()` alone does not make data durable here, as it
//! does not on a real disk.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nix::libc;

use super::volatile::{Volatile, GRAVEYARD};

/// Nothing is cached by the kernel: every lookup and stat asks again.
const NO_CACHE: Duration = Duration::ZERO;
const ROOT: u64 = 1;

/// One mount's state, shared with the [`super::PowerLossMount`] that cuts power.
pub(super) struct Shared {
    /// False once power is cut: every operation then fails with EIO, so
    /// nothing reaches the backing directory until the remount.
    pub(super) powered: bool,
    pub(super) volatile: Volatile,
    root: PathBuf,
    root_st_ino: u64,
    /// Where each inode the kernel knows of lives in the backing directory.
    paths: HashMap<u64, PathBuf>,
    handles: HashMap<u64, File>,
    next_handle: u64,
}

impl Shared {
    pub(super) fn new(root: &Path) -> io::Result<Shared> {
        let root_st_ino = fs::metadata(root)?.ino();
        Ok(Shared {
            powered: true,
            volatile: Volatile::new(root)?,
            root: root.to_path_buf(),
            root_st_ino,
            paths: HashMap::from([(ROOT, root.to_path_buf())]),
            handles: HashMap::new(),
            next_handle: 0,
        })
    }

    /// Files with unsynced writes (by their backing path, relative to the
    /// backing directory, as last seen) and how many bytes each.
    pub(super) fn unsynced_files(&self) -> Vec<(PathBuf, u64)> {
        let mut files: Vec<(PathBuf, u64)> = self
            .volatile
            .unsynced_inodes()
            .into_iter()
            .map(|(ino, bytes)| {
                let path = self.paths.get(&ino).and_then(|p| p.strip_prefix(&self.root).ok());
                (path.map_or_else(|| PathBuf::from(format!("inode {ino}")), Path::to_path_buf), bytes)
            })
            .collect();
        files.sort();
        files
    }

    /// FUSE's root is inode 1: the backing root's number and 1 swap places.
    fn fuse_ino(&self, st_ino: u64) -> u64 {
        match st_ino {
            n if n == self.root_st_ino => ROOT,
            ROOT => self.root_st_ino,
            n => n,
        }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ESTALE)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        if parent.0 == ROOT && name == GRAVEYARD {
            return Err(Errno::ENOENT);
        }
        Ok(self.path(parent)?.join(name))
    }

    fn handle(&self, fh: FileHandle) -> Result<&File, Errno> {
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }

    fn add_handle(&mut self, file: File) -> FileHandle {
        self.next_handle += 1;
        self.handles.insert(self.next_handle, file);
        FileHandle(self.next_handle)
    }

    /// Attributes of the entry at `path`, as a reader should see them, and
    /// the entry remembered under its inode number.
    fn attr(&mut self, path: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(path)?;
        let ino = self.fuse_ino(meta.ino());
        self.paths.insert(ino, path.to_path_buf());
        let size = if meta.is_file() { self.volatile.size(ino, meta.len()) } else { meta.len() };
        let time = |secs: i64, nsecs: i64| {
            UNIX_EPOCH + Duration::new(u64::try_from(secs).unwrap_or(0), u32::try_from(nsecs).unwrap_or(0))
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: FileType::from_std(meta.file_type()).ok_or(Errno::EIO)?,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Renames in the backing directory and in the inode table (an inode
    /// under a renamed directory moves with it).
    fn move_entry(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)?;
        for path in self.paths.values_mut() {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = to.join(rest);
            }
        }
        Ok(())
    }

    /// Moves an entry to the graveyard instead of removing it, so that a
    /// cut can bring it back; returns its grave.
    fn bury(&mut self, path: &Path) -> io::Result<PathBuf> {
        let grave = self.volatile.grave();
        self.move_entry(path, &grave)?;
        Ok(grave)
    }

    fn rename(&mut self, from: &Path, to: &Path, flags: RenameFlags) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let source = fs::symlink_metadata(from)?;
        let replaced = match fs::symlink_metadata(to) {
            Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => return Err(Errno::EEXIST),
            Ok(victim) => {
                // The checks rename(2) would make, since the victim is moved
                // away before the rename proper.
                match (source.is_dir(), victim.is_dir()) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    (true, true) if fs::read_dir(to)?.next().is_some() => return Err(Errno::ENOTEMPTY),
                    _ => {}
                }
                if source.ino() == victim.ino() {
                    return Ok(());
                }
                Some(self.bury(to)?)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = self.move_entry(from, to) {
            if let Some(grave) = &replaced {
                self.move_entry(grave, to)?;
            }
            return Err(e.into());
        }
        self.volatile.renamed(dir_ino(to)?, from.to_path_buf(), to.to_path_buf(), replaced);
        Ok(())
    }

    fn remove(&mut self, path: &Path, dir: bool) -> Result<(), Errno> {
        let meta = fs::symlink_metadata(path)?;
        match (dir, meta.is_dir()) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if fs::read_dir(path)?.next().is_some() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        let dir = dir_ino(path)?;
        let grave = self.bury(path)?;
        self.volatile.removed(dir, path.to_path_buf(), grave);
        Ok(())
    }

    fn setattr(&mut self, ino: INodeNo, change: AttrChange) -> Result<FileAttr, Errno> {
        let AttrChange { mode, uid, gid, size, atime, mtime } = change;
        let path = self.path(ino)?;
        if let Some(mode) = mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid)?;
        }
        if let Some(size) = size {
            OpenOptions::new().write(true).open(&path)?.set_len(size)?;
            self.volatile.truncate(ino.0, size);
        }
        if atime.is_some() || mtime.is_some() {
            let file = File::open(&path)?;
            let meta = file.metadata()?;
            let pick = |t: Option<TimeOrNow>, old: io::Result<SystemTime>| match t {
                None => old,
                Some(TimeOrNow::Now) => Ok(SystemTime::now()),
                Some(TimeOrNow::SpecificTime(t)) => Ok(t),
            };
            let times = fs::FileTimes::new()
                .set_accessed(pick(atime, meta.accessed())?)
                .set_modified(pick(mtime, meta.modified())?);
            file.set_times(times)?;
        }
        self.attr(&path)
    }

    fn read(&self, ino: INodeNo, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let file = self.handle(fh)?;
        let len = self.volatile.size(ino.0, file.metadata()?.len());
        let want = (size as u64).min(len.saturating_sub(offset)) as usize;
        let mut buf = vec![0; want];
        let mut done = 0;
        while done < want {
            match file.read_at(&mut buf[done..], offset + done as u64)? {
                0 => break, // past the backing file's end: zeros, unless pending writes say otherwise
                n => done += n,
            }
        }
        self.volatile.overlay(ino.0, offset, &mut buf);
        Ok(buf)
    }
}

/// The backing inode number of the directory that holds `path`.
fn dir_ino(path: &Path) -> io::Result<u64> {
    let parent = path.parent().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(fs::metadata(parent)?.ino())
}

/// What a setattr asks to change.
struct AttrChange {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

/// Opens backing files for the kernel's open and create: `O_APPEND` is left
/// out because writes come with their offset (and `pwrite` on an append
/// file would ignore it).
fn open_options(flags: i32) -> OpenOptions {
    let mut options = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => options.write(true),
        libc::O_RDWR => options.read(true).write(true),
        _ => options.read(true),
    };
    options.custom_flags(flags & !(libc::O_ACCMODE | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC));
    options
}

pub struct PowerLossFs {
    pub(super) shared: Arc<Mutex<Shared>>,
}

impl PowerLossFs {
    /// The state, or EIO once power is cut.
    fn powered(&self) -> Result<MutexGuard<'_, Shared>, Errno> {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if shared.powered {
            Ok(shared)
        } else {
            Err(Errno::EIO)
        }
    }
}

fn reply_entry(reply: ReplyEntry, attr: Result<FileAttr, Errno>) {
    match attr {
        Ok(attr) => reply.entry(&NO_CACHE, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, done: Result<(), Errno>) {
    match done {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerLossFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(
            reply,
            (|| {
                let mut s = self.powered()?;
                let path = s.child(parent, name)?;
                s.attr(&path)
            })(),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let attr = (|| {
            let mut s = self.powered()?;
            let path = s.path(ino)?;
            s.attr(&path)
        })();
        match attr {
            Ok(attr) => reply.attr(&NO_CACHE, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange { mode, uid, gid, size, atime, mtime };
        match self.powered().and_then(|mut s| s.setattr(ino, change)) {
            Ok(attr) => reply.attr(&NO_CACHE, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        reply_entry(
            reply,
            (|| {
                let mut s = self.powered()?;
                let path = s.child(parent, name)?;
                fs::DirBuilder::new().mode(mode & !umask).create(&path)?;
                s.volatile.created(dir_ino(&path)?, path.clone());
                s.attr(&path)
            })(),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            (|| {
                let mut s = self.powered()?;
                let path = s.child(parent, name)?;
                s.remove(&path, false)
            })(),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            (|| {
                let mut s = self.powered()?;
                let path = s.child(parent, name)?;
                s.remove(&path, true)
            })(),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            (|| {
                let mut s = self.powered()?;
                let (from, to) = (s.child(parent, name)?, s.child(newparent, newname)?);
                s.rename(&from, &to, flags)
            })(),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = (|| {
            let mut s = self.powered()?;
            let file = open_options(flags.0).open(s.path(ino)?)?;
            Ok(s.add_handle(file))
        })();
        match opened {
            Ok(fh) => reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let created = (|| {
            let mut s = self.powered()?;
            let path = s.child(parent, name)?;
            let existed = fs::symlink_metadata(&path).is_ok();
            let mut options = open_options(flags);
            options.create(true).mode(mode & !umask);
            if flags & libc::O_EXCL != 0 {
                options.create_new(true);
            }
            let file = options.open(&path)?;
            if !existed {
                s.volatile.created(dir_ino(&path)?, path.clone());
            }
            let attr = s.attr(&path)?;
            if flags & libc::O_TRUNC != 0 {
                file.set_len(0)?;
                s.volatile.truncate(attr.ino.0, 0);
            }
            let attr = s.attr(&path)?;
            Ok((attr, s.add_handle(file)))
        })();
        match created {
            Ok((attr, fh)) => reply.created(&NO_CACHE, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.powered().and_then(|s| s.read(ino, fh, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = (|| {
            let mut s = self.powered()?;
            let file = s.handle(fh)?.try_clone()?;
            s.volatile.write(ino.0, &file, offset, data)?;
            Ok(data.len() as u32)
        })();
        match written {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    /// A close is not a sync: nothing to do.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Released even after the cut, so the handle table does not leak.
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.powered().and_then(|mut s| Ok(s.volatile.sync_file(ino.0)?)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.powered().and_then(|s| s.path(ino)) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = (|| {
            let s = self.powered()?;
            let path = s.path(ino)?;
            let mut entries = vec![(ino.0, FileType::Directory, ".".into()), (ino.0, FileType::Directory, "..".into())];
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                let name = entry.file_name();
                if ino.0 == ROOT && name == GRAVEYARD {
                    continue;
                }
                let kind = FileType::from_std(entry.file_type()?).ok_or(Errno::EIO)?;
                entries.push((s.fuse_ino(std::os::unix::fs::DirEntryExt::ino(&entry)), kind, name));
            }
            Ok::<_, Errno>(entries)
        })();
        match entries {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    /// A directory fsync makes the changes of names in it durable.
    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.powered().and_then(|mut s| {
                let dir = fs::metadata(s.path(ino)?)?.ino();
                Ok(s.volatile.sync_dir(dir)?)
            }),
        );
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let stat =
            self.powered().and_then(|s| nix::sys::statvfs::statvfs(&s.root).map_err(|e| Errno::from_i32(e as i32)));
        match stat {
            Ok(st) => reply.statfs(
                st.blocks(),
                st.blocks_free(),
                st.blocks_available(),
                st.files(),
                st.files_free(),
                st.block_size() as u32,
                st.name_max() as u32,
                st.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }
}
