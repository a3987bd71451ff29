//! The explicit fsyncs of the durability protocol, in one place so that the
//! test-only switch can turn them all off.

use std::fs::File;
use std::path::Path;

use crate::error::{io, Result};

/// `Path::new("journal").parent()` is `""`: that is the current directory.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Test-only: when this variable is `1`, the explicit fsyncs are skipped and
/// only sled's `flush()` remains. It exists so a power-loss test can show
/// that the fsyncs matter. Never set it on a real host.
pub const UNSAFE_SKIP_FSYNC_ENV: &str = "IMGADM_JOURNAL_UNSAFE_SKIP_FSYNC";

fn skipped() -> bool {
    std::env::var_os(UNSAFE_SKIP_FSYNC_ENV).is_some_and(|v| v == "1")
}

/// fsync a file that is already open.
pub(crate) fn sync_file(file: &File, path: &Path) -> Result<()> {
    if skipped() {
        return Ok(());
    }
    file.sync_all().map_err(io("fsync", path))
}

/// Open and fsync a file by name (sled's `db`, whose handle sled keeps to itself).
pub(crate) fn sync_path(path: &Path) -> Result<()> {
    if skipped() {
        return Ok(());
    }
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", path))
}

/// fsync a directory, so that names created or renamed in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    sync_path(dir)
}

/// Creates `dir` and its missing ancestors, fsyncing the parent of each one
/// created: a new directory's name is durable only once its parent is.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir);
    create_dir_durable(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io("create", dir)(e)),
    }
}
