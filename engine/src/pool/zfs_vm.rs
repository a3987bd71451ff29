//! What `create` needs of a zpool beyond the `Pool` seam: finding a VM's
//! dataset and its origin, snapshotting it and sending the snapshot. Only
//! the zfs driver has VMs; the dir pool holds images only, so `create`
//! refuses it before it gets here.
//!
//! Without vmadm (any host but SmartOS) a VM is the dataset `POOL/VM-UUID`
//! and its image is the one its ZFS `origin` names (`POOL/IMAGE@final`).

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Stdio};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::ids::{DatasetName, ImageUuid, SnapName};
use crate::pool::zfs::{read_stderr, spawn_error, status_text, ZfsCommand, ZfsPool};
use crate::pool::Pool;

/// Where a dataset was cloned from, when that is a snapshot of an image
/// dataset (`POOL/UUID@SNAP`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneOrigin {
    pub dataset: DatasetName,
    pub snapshot: SnapName,
}

impl ZfsPool {
    /// Every imported pool's `POOL/VM`, for the pools that have one.
    pub fn find_vm(vm: ImageUuid) -> Result<Vec<DatasetName>> {
        let mut found = Vec::new();
        for name in ZfsPool::imported()? {
            let pool = match ZfsPool::open(&name) {
                Ok(pool) => pool,
                // Exported or destroyed since it was listed: no VM there.
                Err(Error::PoolNotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let dataset = DatasetName::image(&name, vm);
            if pool.dataset_exists(&dataset)? {
                found.push(dataset);
            }
        }
        Ok(found)
    }

    /// The image snapshot `dataset` is a clone of; `None` when it is not a
    /// clone, or a clone of something that is not an image's snapshot.
    pub fn image_origin(&self, dataset: &DatasetName) -> Result<Option<CloneOrigin>> {
        let Some(origin) = self.clone_origin(dataset)? else {
            return Ok(None);
        };
        let parsed = origin.split_once('@').and_then(|(ds, snap)| {
            let dataset = DatasetName::parse(ds).ok().filter(|d| !d.partial)?;
            Some(CloneOrigin { dataset, snapshot: SnapName::parse(snap).ok()? })
        });
        if parsed.is_none() {
            tracing::debug!(%dataset, origin, "clone of a snapshot that is not an image's");
        }
        Ok(parsed)
    }

    /// Whether `dataset` is a volume (a zvol image is written `.zvol`).
    pub fn is_volume(&self, dataset: &DatasetName) -> Result<bool> {
        let value = ZfsCommand::zfs(["get", "-H", "-o", "value", "type", &dataset.to_string()]).run()?;
        Ok(value.trim() == "volume")
    }

    /// `zfs snapshot DATASET@SNAP`. zfs-fuse may call a dataset written
    /// through its mount busy; it is then unmounted for the snapshot and
    /// mounted again.
    pub fn snapshot(&self, dataset: &DatasetName, snap: &SnapName) -> Result<()> {
        let command = ZfsCommand::zfs(["snapshot", &dataset.snapshot(snap)]);
        self.remount_after(dataset, self.run_unmounting_if_busy(dataset, &command)?);
        Ok(())
    }

    /// `zfs destroy DATASET@SNAP` (the snapshot only; refused if it has
    /// clones).
    pub fn destroy_snapshot(&self, dataset: &DatasetName, snap: &SnapName) -> Result<()> {
        let command = ZfsCommand::zfs(["destroy", &dataset.snapshot(snap)]);
        self.remount_after(dataset, self.run_unmounting_if_busy(dataset, &command)?);
        Ok(())
    }

    /// `zfs rollback DATASET@SNAP` (without `-r`: refused when a later
    /// snapshot exists, so nothing this create did not make is destroyed).
    pub fn rollback(&self, dataset: &DatasetName, snap: &SnapName) -> Result<()> {
        let command = ZfsCommand::zfs(["rollback", &dataset.snapshot(snap)]);
        self.remount_after(dataset, self.run_unmounting_if_busy(dataset, &command)?);
        Ok(())
    }

    /// The dataset's `quota` in bytes as `zfs get -Hp` prints it (`0` is
    /// none).
    pub fn quota(&self, dataset: &DatasetName) -> Result<String> {
        let value = ZfsCommand::zfs(["get", "-Hp", "-o", "value", "quota", &dataset.to_string()]).run()?;
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::internal(format!("zfs gives \"{value}\" as the quota of {dataset}")));
        }
        Ok(value.to_string())
    }

    /// `zfs set quota=BYTES DATASET` (`0` or `none` lifts it).
    pub fn set_quota(&self, dataset: &DatasetName, bytes: &str) -> Result<()> {
        let value = if bytes == "0" { "none" } else { bytes };
        ZfsCommand::zfs(["set", &format!("quota={value}"), &dataset.to_string()]).run().map(drop)
    }

    fn remount_after(&self, dataset: &DatasetName, unmounted: bool) {
        if unmounted {
            // The change is done; a dataset left unmounted is still whole.
            if let Err(e) = ZfsCommand::zfs(["mount", &dataset.to_string()]).run() {
                tracing::warn!(%dataset, error = %e, "could not mount the dataset again");
            }
        }
    }

    /// Starts `zfs send [-i FROM] DATASET@SNAP` (never `-p` or `-R`: an
    /// image is one snapshot, as the real imgadm sends it).
    pub fn send(&self, dataset: &DatasetName, snap: &SnapName, from: Option<&CloneOrigin>) -> Result<SendStream> {
        let mut args = vec!["send".to_string()];
        if let Some(from) = from {
            args.push("-i".to_string());
            args.push(from.dataset.snapshot(&from.snapshot));
        }
        args.push(dataset.snapshot(snap));
        let command = ZfsCommand::zfs(args);
        let mut child = command
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error("zfs", e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::internal("zfs send was started without its pipes"));
        };
        Ok(SendStream { argv: command.argv(), child: Some(child), stdout, stderr: Some(read_stderr(stderr)) })
    }
}

/// A running `zfs send`: its stream is read from it; `finish` says whether
/// the send succeeded. Dropped unfinished, the child is killed and reaped.
pub struct SendStream {
    argv: String,
    child: Option<Child>,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
}

impl SendStream {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for the send to exit (after its stream was read to the end);
    /// a non-zero exit is an error naming the command and its stderr.
    pub fn finish(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::internal("zfs send finished twice"));
        };
        let status = child.wait().map_err(|e| Error::internal(format!("waiting for \"{}\": {e}", self.argv)))?;
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "exec error: argv \"{}\", exit status {}, stderr: {}",
                self.argv,
                status_text(status),
                stderr.trim()
            )))
        }
    }
}

impl Read for SendStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killing an exited child fails harmlessly; wait reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
