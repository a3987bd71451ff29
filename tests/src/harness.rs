//! A world for one end-to-end test: its own state directory, its own pool
//! (a fresh zfs-fuse pool, or the embedded dir pool), and the real `imgadm`
//! binary run as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tempfile::TempDir;

use crate::zfs::TestZpool;

/// The `imgadm` binary, built once per test process so it is never stale.
pub fn imgadm_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "imgadm", "--bin", "imgadm"])
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo to build the imgadm binary");
        assert!(status.success(), "building the imgadm binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug").join("imgadm")
    })
    .clone()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The example images shipped in the repo (real zfs-fuse send streams).
pub fn example(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

pub const BASE_UUID: &str = "5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01";
pub const CHILD_UUID: &str = "8c7a2d91-1e54-4b8f-a6c3-0d9e4f21b702";
pub const BASE_MANIFEST: &str = "example-base-1.0.0.imgmanifest";
pub const BASE_FILE: &str = "example-base-1.0.0.zfs.gz";
pub const CHILD_MANIFEST: &str = "example-child-1.0.0.imgmanifest";
pub const CHILD_FILE: &str = "example-child-1.0.0.zfs.gz";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Dir,
    Zfs,
}

impl Driver {
    pub fn name(&self) -> &'static str {
        match self {
            Driver::Dir => "dir",
            Driver::Zfs => "zfs",
        }
    }
}

/// What one run of `imgadm` did.
#[derive(Debug)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(output: Output) -> Run {
        Run {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with everything the run printed unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.status, 0, "imgadm failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    /// Panics unless the run failed with `status` and error code `code`.
    #[track_caller]
    pub fn fails_with(self, status: i32, code: &str) -> Run {
        assert_eq!(self.status, status, "wrong exit status:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(
            self.stderr.contains(&format!("({code})")),
            "stderr does not name error code {code}:\n{}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

pub struct World {
    pub driver: Driver,
    pub state: TempDir,
    /// Scratch space for manifests and files a test makes.
    pub work: TempDir,
    pub pool: String,
    zpool: Option<TestZpool>,
}

impl World {
    pub fn new(driver: Driver) -> World {
        World::with_state(driver, TempDir::new().expect("temp state dir"))
    }

    /// A world whose state directory is `state`: one made on a particular
    /// file system, such as a power-loss mount.
    pub fn with_state(driver: Driver, state: TempDir) -> World {
        let zpool = (driver == Driver::Zfs).then(TestZpool::create);
        let pool = match &zpool {
            Some(z) => z.name().to_string(),
            None => "zones".to_string(),
        };
        World {
            driver,
            state,
            work: TempDir::new().expect("temp work dir"),
            pool,
            zpool,
        }
    }

    pub fn zpool(&self) -> Option<&TestZpool> {
        self.zpool.as_ref()
    }

    /// `imgadm` with this world's state directory and driver.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(imgadm_bin());
        cmd.env("IMGADM_STATE_DIR", self.state.path())
            .env("IMGADM_DRIVER", self.driver.name())
            .env_remove("IMGADM_FAILPOINT")
            .env_remove("IMGADM_LOG_LEVEL");
        cmd
    }

    pub fn imgadm(&self, args: &[&str]) -> Run {
        Run::from_output(self.command().args(args).output().expect("cannot run imgadm"))
    }

    /// Only these IMGAPI sources, written as the real imgadm writes its config.
    pub fn use_sources(&self, urls: &[&str]) {
        let sources: Vec<serde_json::Value> =
            urls.iter().map(|u| serde_json::json!({"type": "imgapi", "url": u})).collect();
        let text = serde_json::to_string_pretty(&serde_json::json!({"sources": sources})).expect("json");
        std::fs::write(self.state.path().join("imgadm.conf"), text).expect("write config");
    }

    /// `imgadm install -P POOL -m MANIFEST -f FILE`
    pub fn install(&self, manifest: &Path, file: &Path) -> Run {
        self.imgadm(&[
            "install",
            "-P",
            &self.pool,
            "-m",
            manifest.to_str().expect("utf-8 path"),
            "-f",
            file.to_str().expect("utf-8 path"),
        ])
    }

    pub fn install_example_base(&self) -> Run {
        self.install(&example(BASE_MANIFEST), &example(BASE_FILE))
    }

    pub fn install_example_child(&self) -> Run {
        self.install(&example(CHILD_MANIFEST), &example(CHILD_FILE))
    }

    /// The uuids `list` shows on this world's pool.
    pub fn listed(&self) -> Vec<String> {
        let run = self.imgadm(&["list", "-H", "-o", "uuid", &format!("zpool={}", self.pool)]).ok();
        run.stdout.lines().map(str::to_string).collect()
    }

    /// Writes a file into the work directory and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, bytes).expect("write work file");
        path
    }

    /// Everything under the state directory except the journal and lock
    /// files: what "leaves nothing behind" is checked against.
    pub fn state_files(&self) -> Vec<String> {
        let mut found = Vec::new();
        collect_files(self.state.path(), self.state.path(), &mut found);
        found.retain(|f| !f.starts_with("journal/") && !f.starts_with("locks/"));
        found.sort();
        found
    }
}

fn collect_files(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, found);
        } else if let Ok(rel) = path.strip_prefix(root) {
            found.push(rel.display().to_string());
        }
    }
}
