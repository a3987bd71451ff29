//! The zfs driver: a real zpool, driven through `zfs(8)` and `zpool(8)` child
//! processes. Every command is an argv (never a shell) whose dataset names
//! come only from `PoolName`, `DatasetName` and `SnapName`; every failure
//! names the command, its exit status and its stderr, as the real imgadm's
//! `exec error` does.
//!
//! Installed ZFS flavours differ (illumos, OpenZFS, zfs-fuse): what matters
//! here is probed once per process (`Features`), and where a flavour lacks a
//! fast path the portable one is used. zfs-fuse also refuses to rename or
//! destroy a dataset for a while (15-30 s) after files were written through
//! its mount ("dataset is busy"); unmounting makes it work (within ~100 ms),
//! so that is what a busy answer leads to, never a wait for the busy spell.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::ids::{DatasetName, PoolName, SnapName};
use crate::pool::{DatasetEntry, DriverKind, EntryKind, KeepMode, Pool, Received, Snapshot};

pub const ZFS: &str = "zfs";
const ZPOOL: &str = "zpool";

/// How much of the stream is handed to `zfs receive` per write.
const RECEIVE_BUFFER_BYTES: usize = 1 << 20;

/// zfs-fuse finishes an unmount after `zfs unmount` has exited: a rename or
/// destroy right after it can still be refused as busy (measured: up to
/// ~100 ms under load). It is retried at this interval, up to
/// `SETTLE_LIMIT`. Illumos and OpenZFS never get here.
const SETTLE_POLL: Duration = Duration::from_millis(50);
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// The host-wide lock file of [`MountLock`].
const MOUNT_LOCK_PATH: &str = "/var/run/imgadm.zfs-mount.lock";

/// Held while a `zfs`/`zpool` command that can mount a file system runs.
///
/// zfs-fuse hangs every file system it serves when two mounts begin at
/// once: it announces a new mount to its FUSE listener in two writes on one
/// pipe, two announcements interleave, and the listener, reading part of a
/// path as a length, blocks on the pipe forever while holding the mutex
/// every FUSE request needs (seen in a test run: `read(fd, n=959865872)`).
/// One host-wide lock keeps mounts one at a time; with a kernel ZFS it
/// costs an flock. The tests' own zfs commands take it too.
pub struct MountLock {
    _lock: Option<Flock<File>>,
}

impl MountLock {
    /// Takes the lock if `program args` can mount, waiting for it. Best
    /// effort: where the lock file cannot be opened, nothing is held.
    pub fn for_command(program: &str, args: &[&str]) -> MountLock {
        if !can_mount(program, args) {
            return MountLock { _lock: None };
        }
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(MOUNT_LOCK_PATH);
        let lock = match file {
            Ok(file) => Flock::lock(file, FlockArg::LockExclusive).ok(),
            Err(e) => {
                tracing::debug!(path = MOUNT_LOCK_PATH, error = %e, "mount lock unavailable");
                None
            }
        };
        MountLock { _lock: lock }
    }
}

/// Whether the command can mount a file system: `zfs mount`, `create`,
/// `clone`, `rename` and `rollback` (a dataset may be remounted), `set` and
/// `inherit` (a mountpoint), `receive` without `-u`, `zpool create` and
/// `import`.
fn can_mount(program: &str, args: &[&str]) -> bool {
    let subcommand = args.first().copied().unwrap_or_default();
    match program {
        ZFS => match subcommand {
            "mount" | "create" | "clone" | "rename" | "rollback" | "promote" | "set" | "inherit" => true,
            "receive" | "recv" => !args.contains(&"-u"),
            _ => false,
        },
        ZPOOL => matches!(subcommand, "create" | "import"),
        _ => false,
    }
}

/// Whether a `zfs` command exists on PATH (the default driver is zfs then).
pub fn zfs_available() -> bool {
    crate::fsutil::find_program(ZFS).is_some()
}

/// What the installed ZFS supports beyond what every flavour has.
#[derive(Clone, Copy, Debug)]
struct Features {
    /// `zfs list -p` (illumos and OpenZFS; zfs-fuse answers "invalid option
    /// 'p'"). With it a dataset's snapshots and guids come from one sorted
    /// `zfs list`; without it from `zfs get -Hp`, sorted here.
    list_parsable: bool,
}

fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(|| {
        // `-d 0` with no dataset lists only the pools' root datasets: cheap.
        let probe = ZfsCommand::zfs(["list", "-Hp", "-d", "0", "-o", "name"]).output();
        let features = Features { list_parsable: probe.is_ok_and(|out| out.status.success()) };
        tracing::debug!(?features, "probed the installed zfs");
        features
    })
}

/// One `zfs`/`zpool` invocation.
pub(super) struct ZfsCommand {
    program: &'static str,
    args: Vec<String>,
}

/// A finished command; stdout and stderr are the command's text (zfs prints
/// names and numbers, so a lossy conversion loses nothing that is parsed).
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl ZfsCommand {
    pub(super) fn zfs<S: ToString>(args: impl IntoIterator<Item = S>) -> ZfsCommand {
        ZfsCommand { program: ZFS, args: args.into_iter().map(|a| a.to_string()).collect() }
    }

    fn zpool<S: ToString>(args: impl IntoIterator<Item = S>) -> ZfsCommand {
        ZfsCommand { program: ZPOOL, args: args.into_iter().map(|a| a.to_string()).collect() }
    }

    pub(super) fn argv(&self) -> String {
        std::iter::once(self.program).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }

    pub(super) fn command(&self) -> Command {
        let mut command = Command::new(self.program);
        command.args(&self.args);
        command
    }

    /// Runs the command to its end, whatever its exit status.
    fn output(&self) -> Result<Output> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let _mount_lock = MountLock::for_command(self.program, &args);
        let started = Instant::now();
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_error(self.program, e))?;
        let out = Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        tracing::debug!(
            argv = %self.argv(),
            status = %status_text(out.status),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ran command"
        );
        Ok(out)
    }

    /// Runs the command; a non-zero exit is an error. Returns stdout.
    pub(super) fn run(&self) -> Result<String> {
        let out = self.output()?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(self.failed(&out))
        }
    }

    fn failed(&self, out: &Output) -> Error {
        Error::Internal(format!(
            "exec error: argv \"{}\", exit status {}, stderr: {}",
            self.argv(),
            status_text(out.status),
            out.stderr.trim()
        ))
    }
}

pub(super) fn spawn_error(program: &str, e: io::Error) -> Error {
    Error::Internal(format!(
        "cannot run {program}: {e} (is ZFS installed? set IMGADM_DRIVER=dir to use the embedded dir pool)"
    ))
}

pub(super) fn status_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown".to_string(),
    }
}

fn is_busy(out: &Output) -> bool {
    out.stderr.contains("is busy")
}

fn does_not_exist(out: &Output) -> bool {
    out.stderr.contains("does not exist")
}

/// An imported zpool.
#[derive(Debug)]
pub struct ZfsPool {
    name: PoolName,
}

impl ZfsPool {
    /// The imported pool `name`; a pool that is not imported is
    /// `PoolNotFound`.
    pub fn open(name: &PoolName) -> Result<ZfsPool> {
        let command = ZfsCommand::zpool(["list", "-H", "-o", "name", name.as_str()]);
        let out = command.output()?;
        if out.status.success() {
            Ok(ZfsPool { name: name.clone() })
        } else if out.stderr.contains("no such pool") {
            Err(Error::PoolNotFound { pool: name.to_string(), driver: DriverKind::Zfs.to_string() })
        } else {
            Err(command.failed(&out))
        }
    }

    /// The names of all imported pools.
    pub fn imported() -> Result<Vec<PoolName>> {
        let stdout = ZfsCommand::zpool(["list", "-H", "-o", "name"]).run()?;
        Ok(stdout
            .lines()
            .filter(|line| !line.is_empty())
            .filter_map(|line| match PoolName::parse(line) {
                Ok(pool) => Some(pool),
                Err(_) => {
                    // zpool(8) allows a few names imgadm cannot address
                    // safely; such a pool is not one of ours to list.
                    tracing::warn!(pool = line, "skipping a zpool whose name imgadm does not support");
                    None
                }
            })
            .collect())
    }

    /// `zfs rename` or `zfs destroy` of `dataset`. On zfs-fuse these are
    /// refused as busy for a while after writes through the mount; then the
    /// dataset is unmounted (if it still is) and the command run again.
    /// Returns whether the dataset was mounted before, so a rename can mount
    /// it again under its new name.
    pub(super) fn run_unmounting_if_busy(&self, dataset: &DatasetName, command: &ZfsCommand) -> Result<bool> {
        let out = command.output()?;
        if out.status.success() {
            return Ok(false);
        }
        if !is_busy(&out) {
            return Err(command.failed(&out));
        }
        let mounted = self.is_mounted(dataset)?;
        if mounted {
            ZfsCommand::zfs(["unmount", &dataset.to_string()]).run()?;
        }
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let retry = command.output()?;
            if retry.status.success() {
                break;
            }
            if !is_busy(&retry) || Instant::now() >= deadline {
                return Err(command.failed(&retry));
            }
            thread::sleep(SETTLE_POLL);
        }
        // A refused `zfs rename` may have unmounted the dataset already and
        // then failed to mount it again ("cannot mount ..."): it was mounted.
        Ok(mounted || out.stderr.contains("cannot mount"))
    }

    /// After a receive this side aborted or refused because of `cause`,
    /// makes sure `target` (which did not exist before) is gone: a cut stream
    /// left nothing, but a stream that failed after its last byte (as a
    /// checksum over the whole file does) was received whole. Returns
    /// `cause`, with the clean-up's own error if that failed too.
    fn undo_receive(&self, target: &DatasetName, cause: Error) -> Error {
        let cleanup = self.dataset_exists(target).and_then(|exists| {
            if exists {
                tracing::debug!(dataset = %target, "destroying what a refused receive made");
                self.destroy(target)?;
            }
            Ok(())
        });
        match cleanup {
            Ok(()) => cause,
            Err(e) => Error::Multi(vec![cause, e]),
        }
    }

    fn is_mounted(&self, dataset: &DatasetName) -> Result<bool> {
        let value = ZfsCommand::zfs(["get", "-H", "-o", "value", "mounted", &dataset.to_string()]).run()?;
        Ok(value.trim() == "yes")
    }

    /// The snapshot `dataset` is a clone of, if it is one.
    pub(super) fn clone_origin(&self, dataset: &DatasetName) -> Result<Option<String>> {
        let value = ZfsCommand::zfs(["get", "-H", "-o", "value", "origin", &dataset.to_string()]).run()?;
        let value = value.trim();
        Ok((value != "-" && !value.is_empty()).then(|| value.to_string()))
    }

    /// After a receive: the one snapshot it created and the guid of the
    /// snapshot it was cloned from (0 for a full stream).
    fn received(&self, target: &DatasetName, origin: Option<&DatasetName>) -> Result<Received> {
        let mut snapshots = self.snapshots(target)?;
        if snapshots.len() != 1 {
            return Err(Error::UnexpectedNumberOfSnapshots {
                uuid: target.uuid.to_string(),
                count: snapshots.len(),
                names: snapshots.iter().map(|s| target.snapshot(&s.name)).collect::<Vec<_>>().join(", "),
            });
        }
        let fromguid = match self.clone_origin(target)? {
            None => 0,
            Some(clone_of) => {
                let expected = origin.ok_or_else(|| {
                    Error::internal(format!("{target} was received as a clone of {clone_of}, but no origin was expected"))
                })?;
                let snap = clone_of
                    .strip_prefix(&format!("{expected}@"))
                    .and_then(|name| SnapName::parse(name).ok())
                    .ok_or_else(|| {
                        Error::internal(format!(
                            "{target} was received as a clone of {clone_of}, not of a snapshot of {expected}"
                        ))
                    })?;
                self.snapshots(expected)?
                    .into_iter()
                    .find(|s| s.name == snap)
                    .map(|s| s.guid)
                    .ok_or_else(|| Error::internal(format!("origin snapshot {clone_of} of {target} is gone")))?
            }
        };
        let snapshot = snapshots.remove(0);
        Ok(Received { toguid: snapshot.guid, snapshot, fromguid })
    }
}

impl Pool for ZfsPool {
    fn name(&self) -> &PoolName {
        &self.name
    }

    fn driver(&self) -> DriverKind {
        DriverKind::Zfs
    }

    fn entries(&self) -> Result<Vec<DatasetEntry>> {
        let command = ZfsCommand::zfs([
            "list",
            "-H",
            "-t",
            "filesystem,volume,snapshot",
            "-r",
            "-o",
            "name,origin,mountpoint,imgadm:ignore,type",
            self.name.as_str(),
        ]);
        let out = command.output()?;
        if out.status.success() {
            parse_entries(&out.stdout)
        } else if does_not_exist(&out) {
            // The pool was exported or destroyed since it was listed: it
            // holds nothing any more (a `list` of every pool must not fail
            // because one went away meanwhile).
            Ok(Vec::new())
        } else {
            Err(command.failed(&out))
        }
    }

    fn dataset_exists(&self, dataset: &DatasetName) -> Result<bool> {
        let command = ZfsCommand::zfs(["list", "-H", "-o", "name", &dataset.to_string()]);
        let out = command.output()?;
        if out.status.success() {
            Ok(true)
        } else if does_not_exist(&out) {
            Ok(false)
        } else {
            Err(command.failed(&out))
        }
    }

    fn snapshots(&self, dataset: &DatasetName) -> Result<Vec<Snapshot>> {
        if features().list_parsable {
            let stdout = ZfsCommand::zfs([
                "list",
                "-Hp",
                "-t",
                "snapshot",
                "-d",
                "1",
                "-s",
                "createtxg",
                "-o",
                "name,guid",
                &dataset.to_string(),
            ])
            .run()?;
            parse_snapshot_list(dataset, &stdout)
        } else {
            let stdout = ZfsCommand::zfs([
                "get",
                "-Hp",
                "-r",
                "-d",
                "1",
                "-o",
                "name,property,value",
                "createtxg,guid",
                &dataset.to_string(),
            ])
            .run()?;
            parse_snapshot_properties(dataset, &stdout)
        }
    }

    fn receive(
        &self,
        target: &DatasetName,
        origin: Option<&DatasetName>,
        stream: &mut dyn Read,
        started: &mut dyn FnMut(Option<u32>) -> Result<()>,
    ) -> Result<Received> {
        // The target must not exist (zfs would refuse it too); checked here
        // so that an aborted receive can be cleaned up without any risk of
        // destroying a dataset it did not create.
        if self.dataset_exists(target)? {
            return Err(Error::Internal(format!(
                "zfs receive error while importing: destination {target} exists"
            )));
        }
        // `-u`: a received image is never mounted (zfs-fuse keeps mounted
        // datasets busy). No `-F`, `-d`: an incremental stream becomes a
        // clone of the snapshot whose guid is its fromguid, as in the real
        // imgadm.
        let command = ZfsCommand::zfs(["receive", "-u", &target.to_string()]);
        let began = Instant::now();
        let mut child = command
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(ZFS, e))?;
        let Receiver { stdin, stderr } = Receiver::attach(&mut child)?;

        let outcome = match started(Some(child.id())) {
            Ok(()) => feed(stream, stdin),
            Err(e) => {
                drop(stdin);
                Err(FeedError::Aborted(e))
            }
        };
        // stdin is closed by now (`feed` owned it): the receiver sees the end
        // of the stream and exits.
        let (copied, abort, stopped) = match outcome {
            Ok(copied) => (Some(copied), None, None),
            Err(FeedError::ReceiverStopped(e)) => (None, None, Some(e)),
            Err(FeedError::Read(e)) => (None, Some(Error::from_io(e, "reading the image stream")), None),
            Err(FeedError::Aborted(e)) => (None, Some(e), None),
        };
        // No kill when aborting: with its stdin closed the receiver sees the
        // stream end, refuses a cut stream and cleans up before it exits, on
        // every ZFS (a killed zfs-fuse client leaves its daemon cleaning up
        // after the exit, and a complete stream would still be received).
        let status = child.wait().map_err(|e| Error::internal(format!("waiting for \"{}\": {e}", command.argv())))?;
        let stderr = stderr.join().unwrap_or_default();
        tracing::debug!(
            argv = %command.argv(),
            status = %status_text(status),
            bytes = copied,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "ran command"
        );
        if let Some(e) = abort {
            return Err(self.undo_receive(target, e));
        }
        if !status.success() {
            return Err(Error::Internal(format!(
                "zfs receive error while importing: exit code {}: {}",
                status_text(status),
                stderr.trim()
            )));
        }
        if let Some(e) = stopped {
            return Err(Error::Internal(format!(
                "zfs receive error while importing: it stopped reading the stream ({e}) yet exited 0"
            )));
        }
        // What the receive made is refused as a whole, as a bad stream is.
        self.received(target, origin).map_err(|e| self.undo_receive(target, e))
    }

    fn keep_file(&self, _dataset: &DatasetName, _file: &Path, _sha1: &str, _mode: KeepMode) -> Result<()> {
        // A received dataset holds everything; the file is not needed again.
        Ok(())
    }

    fn rename_snapshot(&self, dataset: &DatasetName, from: &SnapName, to: &SnapName) -> Result<()> {
        ZfsCommand::zfs(["rename", &dataset.snapshot(from), &dataset.snapshot(to)]).run()?;
        Ok(())
    }

    fn rename(&self, from: &DatasetName, to: &DatasetName) -> Result<()> {
        let command = ZfsCommand::zfs(["rename", &from.to_string(), &to.to_string()]);
        if self.run_unmounting_if_busy(from, &command)? {
            // The rename is done; a dataset left unmounted is still whole.
            if let Err(e) = ZfsCommand::zfs(["mount", &to.to_string()]).run() {
                tracing::warn!(dataset = %to, error = %e, "could not mount the renamed dataset again");
            }
        }
        Ok(())
    }

    fn destroy(&self, dataset: &DatasetName) -> Result<()> {
        let command = ZfsCommand::zfs(["destroy", "-r", &dataset.to_string()]);
        self.run_unmounting_if_busy(dataset, &command)?;
        Ok(())
    }
}

/// The child's ends of a running `zfs receive`.
struct Receiver {
    stdin: ChildStdin,
    /// Read on its own thread so a chatty child can never block on a full
    /// stderr pipe while this side blocks writing its stdin.
    stderr: JoinHandle<String>,
}

impl Receiver {
    fn attach(child: &mut Child) -> Result<Receiver> {
        let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::internal("zfs receive was started without its pipes"));
        };
        Ok(Receiver { stdin, stderr: read_stderr(stderr) })
    }
}

/// Reads a child's stderr to its end on a thread of its own, so the child
/// can never block on a full stderr pipe while this side is busy with its
/// stdin or stdout.
pub(super) fn read_stderr(mut stderr: ChildStderr) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = Vec::new();
        // A read error only truncates what is reported.
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    })
}

enum FeedError {
    /// Reading the stream failed: the engine's pipeline reports its own
    /// errors (checksum, decompression, validation) this way.
    Read(io::Error),
    /// The child stopped reading (it exited): its exit status says why.
    ReceiverStopped(io::Error),
    /// The `started` callback refused.
    Aborted(Error),
}

/// Copies the whole stream into the receiver's stdin and closes it.
/// Returns the number of bytes copied.
fn feed(stream: &mut dyn Read, mut stdin: ChildStdin) -> Result<u64, FeedError> {
    let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
    let mut copied = 0u64;
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FeedError::Read(e)),
        };
        stdin.write_all(&buffer[..n]).map_err(FeedError::ReceiverStopped)?;
        copied += n as u64;
    }
    stdin.flush().map_err(FeedError::ReceiverStopped)?;
    Ok(copied)
}

fn parse_entries(stdout: &str) -> Result<Vec<DatasetEntry>> {
    stdout
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let unexpected = || Error::internal(format!("unexpected line from zfs list: \"{line}\""));
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, origin, mountpoint, ignore, kind] = fields[..] else {
                return Err(unexpected());
            };
            let kind = match kind {
                "filesystem" => EntryKind::Filesystem,
                "volume" => EntryKind::Volume,
                "snapshot" => EntryKind::Snapshot,
                _ => return Err(unexpected()),
            };
            let value = |text: &str| (text != "-").then(|| text.to_string());
            Ok(DatasetEntry {
                name: name.to_string(),
                kind,
                origin: value(origin),
                mountpoint: value(mountpoint),
                ignore: value(ignore),
            })
        })
        .collect()
}

/// The part after `DATASET@` of a listed name; `None` for the dataset itself
/// or its children.
fn snapshot_of<'a>(dataset: &DatasetName, listed: &'a str) -> Option<&'a str> {
    listed.strip_prefix(dataset.to_string().as_str())?.strip_prefix('@')
}

fn snapshot_name(dataset: &DatasetName, name: &str) -> Result<SnapName> {
    SnapName::parse(name).map_err(|_| {
        Error::internal(format!("{dataset} has a snapshot imgadm does not support: \"{dataset}@{name}\""))
    })
}

fn parse_guid(line: &str, text: &str) -> Result<u64> {
    text.parse().map_err(|_| Error::internal(format!("unexpected number from zfs: \"{line}\"")))
}

/// `zfs list -Hp -t snapshot -d 1 -s createtxg -o name,guid DATASET`.
fn parse_snapshot_list(dataset: &DatasetName, stdout: &str) -> Result<Vec<Snapshot>> {
    let mut snapshots = Vec::new();
    for line in stdout.lines().filter(|line| !line.is_empty()) {
        let (name, guid) = line
            .split_once('\t')
            .ok_or_else(|| Error::internal(format!("unexpected line from zfs list: \"{line}\"")))?;
        if let Some(snap) = snapshot_of(dataset, name) {
            snapshots.push(Snapshot { name: snapshot_name(dataset, snap)?, guid: parse_guid(line, guid)? });
        }
    }
    Ok(snapshots)
}

/// `zfs get -Hp -r -d 1 -o name,property,value createtxg,guid DATASET`: two
/// lines per dataset and snapshot, in no promised order; sorted oldest
/// first here.
fn parse_snapshot_properties(dataset: &DatasetName, stdout: &str) -> Result<Vec<Snapshot>> {
    // (name, createtxg, guid) as the lines fill them in.
    let mut found: Vec<(String, Option<u64>, Option<u64>)> = Vec::new();
    for line in stdout.lines().filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, property, value] = fields[..] else {
            return Err(Error::internal(format!("unexpected line from zfs get: \"{line}\"")));
        };
        let Some(snap) = snapshot_of(dataset, name) else {
            continue;
        };
        let number = parse_guid(line, value)?;
        let index = match found.iter().position(|(known, _, _)| known == snap) {
            Some(index) => index,
            None => {
                found.push((snap.to_string(), None, None));
                found.len() - 1
            }
        };
        match property {
            "createtxg" => found[index].1 = Some(number),
            "guid" => found[index].2 = Some(number),
            _ => return Err(Error::internal(format!("unexpected line from zfs get: \"{line}\""))),
        }
    }
    let mut snapshots = Vec::with_capacity(found.len());
    for (snap, createtxg, guid) in found {
        let (Some(createtxg), Some(guid)) = (createtxg, guid) else {
            return Err(Error::internal(format!("zfs get did not give both createtxg and guid of {dataset}@{snap}")));
        };
        snapshots.push((createtxg, Snapshot { name: snapshot_name(dataset, &snap)?, guid }));
    }
    snapshots.sort_by_key(|(createtxg, _)| *createtxg);
    Ok(snapshots.into_iter().map(|(_, snapshot)| snapshot).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ImageUuid;

    #[test]
    fn only_commands_that_can_mount_take_the_mount_lock() {
        assert!(can_mount(ZFS, &["mount", "zones/a"]));
        assert!(can_mount(ZFS, &["clone", "-o", "mountpoint=/m", "zones/a@final", "zones/b"]));
        assert!(can_mount(ZFS, &["rollback", "zones/a@s"]));
        assert!(can_mount(ZFS, &["receive", "zones/a"]));
        assert!(can_mount(ZPOOL, &["import", "zones"]));
        assert!(!can_mount(ZFS, &["receive", "-u", "zones/a"]), "a long receive must not hold mounts up");
        assert!(!can_mount(ZFS, &["list", "-H"]));
        assert!(!can_mount(ZFS, &["destroy", "-r", "zones/a"]));
        assert!(!can_mount(ZPOOL, &["list"]));
        assert!(!can_mount(ZFS, &[]));
    }

    fn dataset() -> DatasetName {
        let pool = PoolName::parse("zones").unwrap();
        DatasetName::partial(&pool, ImageUuid::parse("5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01").unwrap())
    }

    #[test]
    fn entries_are_parsed_with_dashes_as_none() {
        let stdout = "zones\t-\t/zones\t-\tfilesystem\n\
                      zones/5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01\tzones/base@final\tnone\ttrue\tfilesystem\n\
                      zones/base@final\t-\t-\t-\tsnapshot\n";
        let entries = parse_entries(stdout).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].mountpoint.as_deref(), Some("/zones"));
        assert_eq!(entries[0].origin, None);
        assert_eq!(entries[1].origin.as_deref(), Some("zones/base@final"));
        assert_eq!(entries[1].ignore.as_deref(), Some("true"));
        assert_eq!(entries[2].kind, EntryKind::Snapshot);
        assert!(parse_entries("zones\t-\tfilesystem\n").is_err());
    }

    #[test]
    fn snapshot_list_keeps_order_and_skips_other_datasets() {
        let ds = dataset();
        let stdout = format!("{ds}@a\t11\n{ds}@final\t12345678901234567890\n{ds}x@b\t3\n");
        let snaps = parse_snapshot_list(&ds, &stdout).unwrap();
        assert_eq!(snaps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "final"]);
        assert_eq!(snaps[1].guid, 12345678901234567890);
    }

    #[test]
    fn snapshot_properties_are_paired_and_sorted_by_creation() {
        let ds = dataset();
        let stdout = format!(
            "{ds}\tcreatetxg\t5\n{ds}\tguid\t1\n{ds}@new\tcreatetxg\t90\n{ds}@new\tguid\t2\n\
             {ds}@old\tguid\t3\n{ds}@old\tcreatetxg\t10\n"
        );
        let snaps = parse_snapshot_properties(&ds, &stdout).unwrap();
        assert_eq!(snaps, [
            Snapshot { name: SnapName::parse("old").unwrap(), guid: 3 },
            Snapshot { name: SnapName::parse("new").unwrap(), guid: 2 },
        ]);
        assert!(parse_snapshot_properties(&ds, &format!("{ds}@x\tguid\t3\n")).is_err());
        assert!(parse_snapshot_properties(&ds, &format!("{ds}@x\tguid\t12.3E\n")).is_err());
    }

    #[test]
    fn stream_read_errors_give_back_the_engine_error() {
        let carried = io::Error::other(Error::InvalidStream("bad END checksum".into()));
        assert_eq!(Error::from_io(carried, "test").code(), "InvalidStream");
        let plain = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(Error::from_io(plain, "test").code(), "FileSystem");
    }
}
