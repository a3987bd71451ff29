//! Locks between imgadm processes.
//!
//! - Image locks: fcntl record locks on one file per image, as the real
//!   imgadm takes them (`/var/run/img.UUID.import.lock`), so the two tools
//!   exclude each other on a SmartOS host. Exclusive for a change of the
//!   image (install, import, delete); shared for an installed origin while a
//!   child is received from it, so a delete of the origin waits. Always
//!   taken in sorted uuid order, so two operations cannot deadlock.
//! - Operation locks: a flock held by the process running an operation from
//!   before its first journal event until after its last. A free lock on an
//!   operation that has not ended is what "interrupted" means.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::ids::ImageUuid;
use crate::report::Reporter;
use crate::state::StateDir;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// One held image lock; released when dropped (closing the only fd this
/// process has on the file releases its fcntl lock).
#[derive(Debug)]
pub struct ImageLock {
    pub uuid: ImageUuid,
    pub mode: LockMode,
    _file: File,
}

fn open_lock_file(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create lock directory", dir, e))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io_path("cannot open lock file", path, e))
}

fn try_fcntl_lock(file: &File, mode: LockMode) -> std::result::Result<bool, Errno> {
    let lock = nix::libc::flock {
        l_type: match mode {
            LockMode::Shared => nix::libc::F_RDLCK as i16,
            LockMode::Exclusive => nix::libc::F_WRLCK as i16,
        },
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_SETLK with a valid, initialised flock struct on an open fd.
    let rc = unsafe { nix::libc::fcntl(file.as_raw_fd(), nix::libc::F_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    match Errno::last() {
        Errno::EAGAIN | Errno::EACCES => Ok(false),
        other => Err(other),
    }
}

/// How long a lock wait may last before it is reported as an error.
pub const IMAGE_LOCK_WAIT: Duration = Duration::from_secs(600);

/// Takes the locks for `wanted` in sorted uuid order. After a second of
/// waiting on one, says so ("Waiting for image UUID import lock").
pub fn lock_images(
    state: &StateDir,
    wanted: &[(ImageUuid, LockMode)],
    reporter: &dyn Reporter,
) -> Result<Vec<ImageLock>> {
    let mut sorted: Vec<(ImageUuid, LockMode)> = wanted.to_vec();
    sorted.sort_by_key(|(uuid, _)| *uuid);
    sorted.dedup_by_key(|(uuid, _)| *uuid);
    let mut held = Vec::with_capacity(sorted.len());
    for (uuid, mode) in sorted {
        held.push(lock_image(state, uuid, mode, reporter)?);
    }
    Ok(held)
}

/// Takes the locks for `wanted` without waiting: a resume or rollback is
/// refused at once while another process works on one of the images.
pub fn try_lock_images(state: &StateDir, wanted: &[(ImageUuid, LockMode)]) -> Result<Vec<ImageLock>> {
    let mut sorted: Vec<(ImageUuid, LockMode)> = wanted.to_vec();
    sorted.sort_by_key(|(uuid, _)| *uuid);
    sorted.dedup_by_key(|(uuid, _)| *uuid);
    let mut held = Vec::with_capacity(sorted.len());
    for (uuid, mode) in sorted {
        let path = state.image_lock_path(uuid);
        let file = open_lock_file(&path)?;
        match try_fcntl_lock(&file, mode) {
            Ok(true) => held.push(ImageLock { uuid, mode, _file: file }),
            Ok(false) => return Err(Error::ImageLocked { uuid: uuid.to_string() }),
            Err(errno) => return Err(Error::internal(format!("cannot lock \"{}\": {errno}", path.display()))),
        }
    }
    Ok(held)
}

fn lock_image(state: &StateDir, uuid: ImageUuid, mode: LockMode, reporter: &dyn Reporter) -> Result<ImageLock> {
    let path = state.image_lock_path(uuid);
    let file = open_lock_file(&path)?;
    let start = Instant::now();
    let mut announced = false;
    loop {
        match try_fcntl_lock(&file, mode) {
            Ok(true) => return Ok(ImageLock { uuid, mode, _file: file }),
            Ok(false) => {}
            Err(errno) => {
                return Err(Error::internal(format!("cannot lock \"{}\": {errno}", path.display())));
            }
        }
        let waited = start.elapsed();
        if !announced && waited >= Duration::from_secs(1) {
            reporter.info(&format!("Waiting for image {uuid} import lock"));
            announced = true;
        }
        if waited >= IMAGE_LOCK_WAIT {
            return Err(Error::LockTimeout {
                what: format!("the lock of image {uuid}"),
                seconds: waited.as_secs(),
                holder: None,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lock of one operation. Held by the process that runs (or resumes, or
/// rolls back) it; the kernel drops it when that process dies.
#[derive(Debug)]
pub struct OpLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl OpLock {
    /// Takes the lock without waiting; `Ok(None)` when another process has it.
    pub fn try_take(state: &StateDir, op: &str) -> Result<Option<OpLock>> {
        let path = state.op_lock_path(op);
        let file = open_lock_file(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(OpLock { path, _lock: lock })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(Error::internal(format!("cannot lock \"{}\": {errno}", path.display()))),
        }
    }

    /// Whether the operation's lock is held by a live process.
    pub fn is_held(state: &StateDir, op: &str) -> Result<bool> {
        if !state.op_lock_path(op).exists() {
            return Ok(false);
        }
        Ok(OpLock::try_take(state, op)?.is_none())
    }

    /// Removes the lock file of an ended operation (it is held, so no other
    /// process can be about to use it for this operation).
    pub fn release_and_remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
