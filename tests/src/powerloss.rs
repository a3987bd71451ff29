//! A power-loss file system for crash tests, after SQLite's crash VFS and
//! LazyFS: a FUSE passthrough of a backing directory that keeps every data
//! write in memory until the file is fsynced, and on command cuts power,
//! throwing away (or keeping, or tearing) whatever was not synced.
//!
//! `kill -9` cannot find durability bugs, because the page cache survives a
//! process kill; a cut here loses what a real power cut would lose. What is
//! modelled and what is not: the `volatile` module's documentation, and
//! docs/journal.md, "Power-loss testing".
//!
//! ```no_run
//! # use imgadm_tests::powerloss::{Lost, PowerLossFs};
//! # let (backing, mountpoint) = (std::path::Path::new("/b"), std::path::Path::new("/m"));
//! let mut mount = PowerLossFs::mount(backing, mountpoint).expect("mount");
//! std::fs::write(mount.path().join("f"), b"not synced").unwrap();
//! mount.cut_power(Lost::Drop).expect("cut");
//! // Neither the data nor the new name was synced.
//! assert!(!mount.path().join("f").exists());
//! ```

mod fs;
mod volatile;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

pub use fs::PowerLossFs;
pub use volatile::Lost;

use fs::Shared;

/// Set to a number to make [`Lost::Garble`] cuts repeat exactly.
pub const SEED_ENV: &str = "IMGADM_POWERLOSS_SEED";

/// A mounted [`PowerLossFs`]. Unmounted when dropped; whatever was not
/// synced then is lost, as in a cut with [`Lost::Drop`].
pub struct PowerLossMount {
    backing: PathBuf,
    mountpoint: PathBuf,
    shared: Arc<Mutex<Shared>>,
    session: Option<BackgroundSession>,
}

/// Fails unless this machine can mount FUSE file systems.
fn check_fuse_available() -> io::Result<()> {
    let fusermount = ["/bin/fusermount", "/usr/bin/fusermount", "/bin/fusermount3", "/usr/bin/fusermount3"];
    if !Path::new("/dev/fuse").exists() || !fusermount.iter().any(|p| Path::new(p).exists()) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "power-loss tests need /dev/fuse and fusermount: run `scripts/zfs-env up` (it installs the fuse package)",
        ));
    }
    Ok(())
}

impl PowerLossFs {
    /// Mounts a power-loss view of `backing` on `mountpoint` (both existing
    /// directories), served by a background thread of this process.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<PowerLossMount> {
        check_fuse_available()?;
        let shared = Arc::new(Mutex::new(Shared::new(backing)?));
        let mut mount = PowerLossMount {
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            shared,
            session: None,
        };
        mount.start()?;
        Ok(mount)
    }
}

impl PowerLossMount {
    /// Where processes see the file system.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Bytes written and not yet fsynced.
    pub fn unsynced_bytes(&self) -> u64 {
        self.lock().volatile.unsynced_bytes()
    }

    /// Files with unsynced writes (relative to the backing directory) and
    /// how many bytes each.
    pub fn unsynced_files(&self) -> Vec<(PathBuf, u64)> {
        self.lock().unsynced_files()
    }

    /// Metadata changes (create, rename, unlink ...) made since the last fsync.
    pub fn unsynced_changes(&self) -> usize {
        self.lock().volatile.unsynced_changes()
    }

    /// Cuts power: from this instant every operation on the mount fails;
    /// what was not synced is lost as `lost` says; then the file system is
    /// unmounted and mounted again, fresh, so no process sees stale state.
    /// Returns a line saying what was lost (with the seed of a torn cut).
    pub fn cut_power(&mut self, lost: Lost) -> io::Result<String> {
        let seed = match std::env::var(SEED_ENV) {
            Ok(s) => s
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{SEED_ENV}={s} is not a number")))?,
            Err(_) => fastrand::u64(..),
        };
        let report = {
            let mut shared = self.lock();
            shared.powered = false;
            let files = shared.unsynced_files();
            let report = shared.volatile.cut(lost, seed)?;
            let names: Vec<String> =
                files.iter().map(|(path, bytes)| format!("{} ({bytes} B)", path.display())).collect();
            format!("{report}; unsynced files: [{}]", names.join(", "))
        };
        self.stop()?;
        *self.lock() = Shared::new(&self.backing)?;
        self.start()?;
        Ok(report)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&mut self) -> io::Result<()> {
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("imgadm-powerloss".to_string()), MountOption::RW];
        let fs = PowerLossFs { shared: Arc::clone(&self.shared) };
        self.session = Some(fuser::spawn_mount(fs, &self.mountpoint, &config)?);
        Ok(())
    }

    /// Unmounts lazily (detached at once; a process still holding a file
    /// there keeps only a dead handle) and waits for the serving thread,
    /// which ends once the last such handle is closed.
    fn stop(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let mountpoint = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: umount2 only reads the NUL-terminated path it is given.
        if unsafe { nix::libc::umount2(mountpoint.as_ptr(), nix::libc::MNT_DETACH) } != 0 {
            return Err(io::Error::last_os_error());
        }
        session.join()
    }
}

impl Drop for PowerLossMount {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("power-loss mount {}: unmount failed: {e}", self.mountpoint.display());
        }
    }
}
