//! The journal lock: `DIR/lock`, an exclusive `flock`.
//!
//! sled lets one process open a database at a time (and on illumos does not
//! even check), so every call that opens sled takes this lock first and
//! releases it when it closes sled. Waiting is bounded; on time-out the error
//! names the holder, which each holder writes into the lock file itself.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{io, JournalError, Result};

/// Held while it lives; dropping it closes the file, which releases the flock.
pub(crate) struct JournalLock {
    _flock: Flock<File>,
}

impl JournalLock {
    /// Takes the lock, polling until `timeout` has passed. `purpose` goes
    /// into the holder record ("append", "verify", ...).
    pub(crate) fn acquire(dir: &Path, timeout: Duration, purpose: &str) -> Result<JournalLock> {
        let path = dir.join("lock");
        // std opens with O_CLOEXEC, so children (zfs recv, ...) never inherit it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(flock) => {
                    write_holder(&flock, &path, purpose)?;
                    return Ok(JournalLock { _flock: flock });
                }
                Err((back, Errno::EWOULDBLOCK)) => {
                    file = back;
                    if started.elapsed() >= timeout {
                        return Err(locked(path, &mut file, started.elapsed()));
                    }
                    std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err((_, errno)) => {
                    return Err(JournalError::Io {
                        what: "flock",
                        path,
                        source: errno.into(),
                    })
                }
            }
        }
    }
}

/// `pid 1234: imgadm import 0b5a... (append)`
fn write_holder(file: &File, path: &Path, purpose: &str) -> Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let mut command = command.join(" ");
    command.truncate(
        (0..=200.min(command.len()))
            .rev()
            .find(|&i| command.is_char_boundary(i))
            .unwrap_or(0),
    );
    let record = format!("pid {}: {} ({purpose})\n", std::process::id(), command);
    file.set_len(0)
        .and_then(|()| file.write_all_at(record.as_bytes(), 0))
        .map_err(io("write holder to", path))
}

fn locked(path: PathBuf, file: &mut File, waited: Duration) -> JournalError {
    let mut holder = String::new();
    // The holder record is a courtesy: if it cannot be read, say so.
    if file.read_to_string(&mut holder).is_err() || holder.trim().is_empty() {
        holder = "an unknown process (no holder record)".to_string();
    }
    JournalError::Locked {
        path,
        holder: holder.trim().to_string(),
        waited,
    }
}
