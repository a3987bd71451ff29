//! A throw-away zpool for tests, on a sparse file, with helpers that make
//! real ZFS send streams in it (so tests build fresh images instead of
//! relying on checked-in ones).
//!
//! The pool is named `imgadmtest` plus random letters (no digits: the real
//! imgadm never lists images on pools whose names hold digits) and carries
//! the user property `imgadmtest:pid` of the test process, so that
//! `scripts/zfs-env` destroys only pools left over by dead runs and never
//! those of a run still going.

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

use imgadm_engine::ids::{DatasetName, PoolName, SnapName};
use imgadm_engine::pool::zfs::{MountLock, ZfsPool};
use tempfile::TempDir;

/// Every test pool's name starts with this; `scripts/zfs-env` knows it.
pub const POOL_PREFIX: &str = "imgadmtest";
/// The user property holding the pid of the process that made the pool.
pub const PID_PROPERTY: &str = "imgadmtest:pid";

const VDEV_BYTES: u64 = 1 << 30;
const HOW_TO_SET_UP: &str = "run `scripts/zfs-env up` (as root) first, or run every test with `scripts/test`";

pub struct TestZpool {
    name: PoolName,
    /// Holds the vdev file and the mountpoints of scratch datasets.
    dir: TempDir,
}

impl TestZpool {
    /// Creates a fresh 1 GiB pool. Panics (never skips) if the ZFS daemon is
    /// not reachable.
    pub fn create() -> TestZpool {
        let reachable = Command::new("zpool").args(["list", "-H", "-o", "name"]).output();
        match reachable {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "the ZFS daemon is not reachable (`zpool list`: {}): {HOW_TO_SET_UP}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot run `zpool` ({e}): {HOW_TO_SET_UP}"),
        }
        let dir = tempfile::Builder::new()
            .prefix("imgadmtest-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temp dir for a test pool: {e}"));
        let vdev = dir.path().join("vdev");
        std::fs::File::create(&vdev)
            .and_then(|file| file.set_len(VDEV_BYTES))
            .unwrap_or_else(|e| panic!("cannot make the sparse vdev {}: {e}", vdev.display()));
        let name = PoolName::parse(&format!("{POOL_PREFIX}{}", random_letters(10)))
            .unwrap_or_else(|e| panic!("test pool name: {e}"));
        // `-m none`: received images are never mounted (`zfs receive -u`);
        // only scratch datasets get a mountpoint, in `dir`.
        run(
            "zpool",
            &[
                "create",
                "-m",
                "none",
                "-O",
                &format!("{PID_PROPERTY}={}", std::process::id()),
                name.as_str(),
                &path_text(&vdev),
            ],
        );
        TestZpool { name, dir }
    }

    pub fn name(&self) -> PoolName {
        self.name.clone()
    }

    /// The engine's driver on this pool.
    pub fn pool(&self) -> ZfsPool {
        ZfsPool::open(&self.name).unwrap_or_else(|e| panic!("opening test pool {}: {e}", self.name))
    }

    /// Every filesystem, volume and snapshot of the pool, by name.
    pub fn datasets(&self) -> Vec<String> {
        self.zfs(&["list", "-H", "-r", "-t", "all", "-o", "name", self.name.as_str()])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Runs `zfs ARGS`, panicking with its stderr if it fails; returns stdout.
    pub fn zfs(&self, args: &[&str]) -> String {
        run("zfs", args)
    }

    /// A directory inside the pool's temp dir, for mountpoints.
    pub fn mount_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("mnt").join(name)
    }

    /// Creates `dataset` mounted under the temp dir and writes `files` into
    /// it (as an operator's VM dataset would be); returns the mountpoint.
    pub fn create_mounted(&self, dataset: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let mountpoint = self.mount_dir(&dataset.replace('/', "_"));
        self.zfs(&["create", "-o", &format!("mountpoint={}", path_text(&mountpoint)), dataset]);
        write_files(&mountpoint, files);
        mountpoint
    }

    /// A real send stream whose one snapshot is `@final` and holds `files`:
    /// a full stream, or with `origin` an incremental one from
    /// `ORIGIN@final` that `zfs receive` turns into a clone of it (as
    /// `imgadm create -i` makes). The dataset it is made from is destroyed.
    pub fn make_stream(&self, files: &[(&str, &[u8])], origin: Option<&DatasetName>) -> Vec<u8> {
        let scratch_leaf = format!("scratch-{}", random_letters(12));
        let scratch = format!("{}/{scratch_leaf}", self.name);
        let mountpoint = format!("mountpoint={}", path_text(&self.mount_dir(&scratch_leaf)));
        let final_ = SnapName::final_();
        let from = origin.map(|origin| origin.snapshot(&final_));
        match &from {
            None => self.zfs(&["create", "-o", &mountpoint, &scratch]),
            Some(from) => self.zfs(&["clone", "-o", &mountpoint, from, &scratch]),
        };
        write_files(&self.mount_dir(&scratch_leaf), files);
        // Unmounted, zfs-fuse takes the snapshot and the destroy at once
        // instead of calling the dataset busy.
        self.zfs(&["unmount", &scratch]);
        let snapshot = format!("{scratch}@{final_}");
        self.zfs(&["snapshot", &snapshot]);
        let mut send = vec!["send"];
        if let Some(from) = &from {
            send.extend(["-i", from]);
        }
        send.push(&snapshot);
        let stream = run_bytes("zfs", &send);
        self.zfs(&["destroy", "-r", &scratch]);
        stream
    }
}

impl Drop for TestZpool {
    fn drop(&mut self) {
        // zfs-fuse can call a pool busy for a while after writes through a
        // mount; a few tries with a pause cover it.
        let mut last_error = String::new();
        for attempt in 0..10 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            match Command::new("zpool").args(["destroy", "-f", self.name.as_str()]).output() {
                Ok(out) if out.status.success() => return,
                Ok(out) => last_error = String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => last_error = e.to_string(),
            }
        }
        // Not a panic: a panic in drop during a failing test aborts the run
        // and hides the test's own message. `scripts/zfs-env down` retries.
        eprintln!("could not destroy test pool {}: {last_error}", self.name);
    }
}

/// The toguid and fromguid of a send stream's BEGIN record (the first
/// record: `drr_type` 0, then `drr_magic` at byte 8, `drr_toguid` at 40 and
/// `drr_fromguid` at 48, in the sender's byte order: little-endian here).
pub fn stream_guids(stream: &[u8]) -> (u64, u64) {
    let word = |at: usize| {
        let bytes: [u8; 8] = stream
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_else(|| panic!("stream too short for a BEGIN record: {} bytes", stream.len()));
        u64::from_le_bytes(bytes)
    };
    assert_eq!(word(8), 0x0002_f5ba_cbac, "not a ZFS send stream (bad BEGIN magic)");
    (word(40), word(48))
}

fn write_files(root: &Path, files: &[(&str, &[u8])]) {
    for (relative, content) in files {
        let relative = Path::new(relative);
        assert!(
            relative.components().all(|c| matches!(c, Component::Normal(_))),
            "test file paths are relative and plain: {}",
            relative.display()
        );
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

fn random_letters(count: usize) -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes.iter().cycle().take(count).map(|b| char::from(b'a' + b % 26)).collect()
}

fn path_text(path: &Path) -> String {
    path.to_str().unwrap_or_else(|| panic!("temp paths are UTF-8: {}", path.display())).to_string()
}

fn output(program: &str, args: &[&str]) -> Output {
    let _mount_lock = MountLock::for_command(program, args);
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {HOW_TO_SET_UP}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn run(program: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&output(program, args).stdout).into_owned()
}

fn run_bytes(program: &str, args: &[&str]) -> Vec<u8> {
    output(program, args).stdout
}
