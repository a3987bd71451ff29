//! Durable file operations. A change is durable once the file's data is
//! fsynced and the directory entry that names it is fsynced too: without the
//! directory fsync a rename or a new file can vanish on power loss even
//! though its data reached the disk.
//!
//! Temporary files are created in the destination directory (so the final
//! rename never crosses a file system) and named `.NAME.tmp-PID-RAND`: the
//! leading dot keeps them out of listings, the pid lets a later process tell
//! an abandoned temp file from one a live process is still writing
//! ([`remove_stale_temp_files`]).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The mode of files this crate writes: records and image files are not
/// secret, and other tools (and the real imgadm) read them.
const FILE_MODE: u32 = 0o644;

/// The directory a path lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name_str(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::internal(format!("not a file path: \"{}\"", path.display())))
}

/// Is `name` one of our temp files (`.NAME.tmp-PID-RAND`)? Returns the pid.
pub fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, rand) = tail.split_once('-')?;
    if rand.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// A new temp file next to `dest`, named `.NAME.tmp-PID-RAND`, mode 0644.
fn temp_file_for(dest: &Path) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(dest);
    let prefix = format!(".{}.tmp-{}-", file_name_str(dest)?, std::process::id());
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(8)
        .permissions(fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .map_err(|e| Error::io_path("cannot create a temporary file in", dir, e))?;
    Ok(tmp)
}

/// fsyncs a directory, making the creation, removal or renaming of its
/// entries durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io_path("cannot fsync directory", dir, e))
}

/// Writes `bytes` to `path` atomically and durably: readers see the old
/// content or the new, never a mix, and after return the new content
/// survives power loss.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_file_for(path)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io_path("cannot write", tmp.path(), e))?;
    // On error the NamedTempFile inside the PersistError is dropped, which
    // removes the temp file.
    tmp.persist(path).map_err(|e| Error::io_path("cannot rename a temporary file to", path, e.error))?;
    fsync_dir(parent_dir(path))
}

/// Renames durably: fsyncs the destination's directory, and the source's if
/// it is another one.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .map_err(|e| Error::io(format!("cannot rename \"{}\" to \"{}\"", from.display(), to.display()), e))?;
    let (from_dir, to_dir) = (parent_dir(from), parent_dir(to));
    fsync_dir(to_dir)?;
    if !same_dir(from_dir, to_dir) {
        fsync_dir(from_dir)?;
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Copies `from` to `to` durably: into a temp file next to `to`, fsync,
/// rename, fsync of the directory. `to` is replaced if it exists.
pub fn copy_durable(from: &Path, to: &Path) -> Result<u64> {
    let mut src = File::open(from).map_err(|e| Error::io_path("cannot open", from, e))?;
    let mut tmp = temp_file_for(to)?;
    let copied = copy_data(&mut src, tmp.as_file_mut())
        .map_err(|e| Error::io(format!("cannot copy \"{}\" to \"{}\"", from.display(), to.display()), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io_path("cannot fsync", tmp.path(), e))?;
    tmp.persist(to).map_err(|e| Error::io_path("cannot rename a temporary file to", to, e.error))?;
    fsync_dir(parent_dir(to))?;
    Ok(copied)
}

fn copy_data(src: &mut File, dst: &mut File) -> io::Result<u64> {
    // io::copy between two Files uses copy_file_range on Linux where it can.
    io::copy(src, dst)
}

/// Removes a file durably; a file that is already absent is fine.
pub fn remove_durable(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => fsync_dir(parent_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io_path("cannot remove", path, e)),
    }
}

/// Creates `dir` (and missing parents) durably: each directory created is
/// made durable by an fsync of its parent.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir);
    if !parent.is_dir() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fsync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io_path("cannot create directory", dir, e)),
    }
}

/// Removes the temp files in `dir` left by processes that no longer run
/// (a crash between create and rename). Temp files of live processes are
/// left alone: they may be about to be renamed into place. Returns the
/// removed paths.
pub fn remove_stale_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io_path("cannot read directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io_path("cannot read directory", dir, e))?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_file_pid) else { continue };
        if process_is_alive(pid) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io_path("cannot remove stale temporary file", &path, e)),
        }
    }
    if !removed.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

/// Whether a process with this pid exists (signal 0 probes without sending).
/// EPERM means it exists but is someone else's.
fn process_is_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = i32::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

/// The executable `name` in a directory of PATH, as a shell would find it.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| file.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0))
}

/// Reads a whole file, `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io_path("cannot open", path, e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| Error::io_path("cannot read", path, e))?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.json");
        write_file_atomic(&path, b"one").unwrap();
        write_file_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(names_in(dir.path()), vec!["rec.json"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, FILE_MODE);
    }

    #[test]
    fn copy_rename_remove() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let c = dir.path().join("sub/c");
        fs::write(&a, b"data").unwrap();
        assert_eq!(copy_durable(&a, &b).unwrap(), 4);
        create_dir_durable(&dir.path().join("sub")).unwrap();
        rename_durable(&b, &c).unwrap();
        assert_eq!(fs::read(&c).unwrap(), b"data");
        remove_durable(&c).unwrap();
        remove_durable(&c).unwrap();
        assert!(copy_durable(&dir.path().join("absent"), &b).is_err());
        assert_eq!(names_in(dir.path()), vec!["a", "sub"]);
    }

    #[test]
    fn temp_file_names_are_recognised_and_stale_ones_removed() {
        assert_eq!(temp_file_pid(".x.json.tmp-123-abcDEF"), Some(123));
        assert_eq!(temp_file_pid("x.json.tmp-123-abc"), None);
        assert_eq!(temp_file_pid(".x.json"), None);
        let dir = tempfile::tempdir().unwrap();
        // No process has pid 0x7fff_fff0 (above Linux's pid_max limit).
        let stale = format!(".r.json.tmp-{}-zz", 0x7fff_fff0u32);
        let live = format!(".r.json.tmp-{}-zz", std::process::id());
        fs::write(dir.path().join(&stale), b"").unwrap();
        fs::write(dir.path().join(&live), b"").unwrap();
        let removed = remove_stale_temp_files(dir.path()).unwrap();
        assert_eq!(removed, vec![dir.path().join(&stale)]);
        assert_eq!(names_in(dir.path()), vec![live]);
    }
}
