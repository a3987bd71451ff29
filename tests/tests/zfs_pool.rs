//! The zfs driver on a real pool (zfs-fuse on Linux): each test makes its
//! own pool and its own streams.

use std::io::{self, Read};

use imgadm_engine::ids::{DatasetName, ImageUuid, PoolName, SnapName};
use imgadm_engine::pool::zfs::{zfs_available, ZfsPool};
use imgadm_engine::pool::{EntryKind, Pool, Received};
use imgadm_engine::Error;
use imgadm_tests::zfs::{stream_guids, TestZpool};

const BASE_FILES: &[(&str, &[u8])] = &[("etc/motd", b"base image\n"), ("bin/tool", b"\x7fELF not really")];

/// Receives `stream` into a new `-partial` dataset, checking that `started`
/// comes first, with the child's pid.
fn receive(pool: &ZfsPool, uuid: ImageUuid, origin: Option<&DatasetName>, stream: &[u8]) -> Result<Received, Error> {
    let target = DatasetName::partial(pool.name(), uuid);
    let mut pids = Vec::new();
    let result = pool.receive(&target, origin, &mut &stream[..], &mut |pid| {
        pids.push(pid);
        Ok(())
    });
    assert_eq!(pids.len(), 1, "started is called once");
    assert!(pids[0].is_some_and(|pid| pid > 0), "started gets the child's pid");
    result
}

/// Receives a full stream of `files` and renames it as the engine's `final`
/// and `rename` steps do; returns the image dataset.
fn install(zpool: &TestZpool, pool: &ZfsPool, files: &[(&str, &[u8])], origin: Option<&DatasetName>) -> DatasetName {
    let uuid = ImageUuid::new_v4();
    let stream = zpool.make_stream(files, origin);
    receive(pool, uuid, origin, &stream).expect("receive");
    let image = DatasetName::image(pool.name(), uuid);
    pool.rename(&DatasetName::partial(pool.name(), uuid), &image).expect("rename");
    image
}

fn names(pool: &ZfsPool) -> Vec<String> {
    pool.entries().expect("entries").into_iter().map(|e| e.name).collect()
}

#[test]
fn pools_are_found_by_name() {
    assert!(zfs_available(), "a zfs command is on PATH");
    let zpool = TestZpool::create();
    assert!(ZfsPool::imported().expect("imported").contains(&zpool.name()));
    assert_eq!(zpool.pool().name(), &zpool.name());

    let missing = PoolName::parse("imgadmtestnosuchpool").unwrap();
    let err = ZfsPool::open(&missing).expect_err("a pool that is not imported");
    assert_eq!(err.code(), "PoolNotFound");
    assert!(err.to_string().contains("IMGADM_DRIVER=dir"), "{err}");
}

#[test]
fn full_stream_is_received_unmounted_and_renamed() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let uuid = ImageUuid::new_v4();
    let stream = zpool.make_stream(BASE_FILES, None);
    let (stream_toguid, stream_fromguid) = stream_guids(&stream);
    assert_eq!(stream_fromguid, 0);

    let partial = DatasetName::partial(pool.name(), uuid);
    assert!(!pool.dataset_exists(&partial).unwrap());
    let received = receive(&pool, uuid, None, &stream).expect("receive");
    assert_eq!(received.snapshot.name, SnapName::final_());
    assert_eq!(received.toguid, stream_toguid);
    assert_eq!(received.snapshot.guid, stream_toguid);
    assert_eq!(received.fromguid, 0);
    assert!(pool.dataset_exists(&partial).unwrap());
    assert_eq!(zpool.zfs(&["get", "-H", "-o", "value", "mounted", &partial.to_string()]).trim(), "no");

    // The `final` step's rename, there and back: the guid stays.
    let other = SnapName::parse("imported").unwrap();
    pool.rename_snapshot(&partial, &SnapName::final_(), &other).expect("rename snapshot");
    assert_eq!(pool.snapshots(&partial).unwrap(), [imgadm_engine::pool::Snapshot { name: other.clone(), guid: stream_toguid }]);
    pool.rename_snapshot(&partial, &other, &SnapName::final_()).expect("rename snapshot back");

    let image = DatasetName::image(pool.name(), uuid);
    pool.rename(&partial, &image).expect("rename");
    assert!(!pool.dataset_exists(&partial).unwrap());
    assert!(pool.dataset_exists(&image).unwrap());
    pool.keep_file(&image, std::path::Path::new("/nonexistent"), "0", imgadm_engine::pool::KeepMode::Copy).expect("keep_file is a no-op");

    // Snapshots come oldest first.
    zpool.zfs(&["snapshot", &image.snapshot(&SnapName::parse("later").unwrap())]);
    let snaps: Vec<String> = pool.snapshots(&image).unwrap().into_iter().map(|s| s.name.to_string()).collect();
    assert_eq!(snaps, ["final", "later"]);

    // The data arrived: mount it and read it back.
    let mountpoint = zpool.mount_dir("check");
    // Setting a mountpoint mounts it.
    zpool.zfs(&["set", &format!("mountpoint={}", mountpoint.display()), &image.to_string()]);
    assert_eq!(std::fs::read(mountpoint.join("etc/motd")).unwrap(), b"base image\n");
    zpool.zfs(&["unmount", &image.to_string()]);
}

#[test]
fn incremental_stream_becomes_a_clone_that_holds_its_origin() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let base = install(&zpool, &pool, BASE_FILES, None);
    let base_final = pool.snapshots(&base).unwrap().remove(0);

    let child_uuid = ImageUuid::new_v4();
    let stream = zpool.make_stream(&[("etc/motd", b"child image\n")], Some(&base));
    let (stream_toguid, stream_fromguid) = stream_guids(&stream);
    assert_eq!(stream_fromguid, base_final.guid);
    let received = receive(&pool, child_uuid, Some(&base), &stream).expect("receive incremental");
    assert_eq!(received.toguid, stream_toguid);
    assert_eq!(received.fromguid, base_final.guid);

    let child = DatasetName::image(pool.name(), child_uuid);
    pool.rename(&DatasetName::partial(pool.name(), child_uuid), &child).expect("rename");
    let entries = pool.entries().unwrap();
    let child_entry = entries.iter().find(|e| e.name == child.to_string()).expect("child listed");
    assert_eq!(child_entry.kind, EntryKind::Filesystem);
    assert_eq!(child_entry.origin.as_deref(), Some(base.snapshot(&SnapName::final_()).as_str()));
    assert_eq!(child_entry.mountpoint.as_deref(), Some("none"));
    let base_entry = entries.iter().find(|e| e.name == base.to_string()).expect("base listed");
    assert_eq!(base_entry.origin, None);
    assert!(entries.iter().any(|e| e.name == child.snapshot(&SnapName::final_()) && e.kind == EntryKind::Snapshot));

    // The base cannot go while the child is a clone of it.
    let err = pool.destroy(&base).expect_err("destroy refused while a clone exists");
    assert_eq!(err.code(), "InternalError");
    assert!(err.to_string().contains("zfs destroy -r"), "{err}");
    assert!(pool.dataset_exists(&base).unwrap());

    pool.destroy(&child).expect("destroy child");
    pool.destroy(&base).expect("destroy base");
    assert_eq!(names(&pool), [pool.name().to_string()]);
}

#[test]
fn clone_of_an_unexpected_origin_is_refused_and_removed() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let base = install(&zpool, &pool, BASE_FILES, None);
    let other = install(&zpool, &pool, BASE_FILES, None);
    let stream = zpool.make_stream(&[("etc/motd", b"child image\n")], Some(&base));
    for (expected, what) in [(Some(&other), "another origin"), (None, "no origin")] {
        let uuid = ImageUuid::new_v4();
        let err = receive(&pool, uuid, expected, &stream).expect_err(what);
        assert_eq!(err.code(), "InternalError", "{what}");
        assert!(err.to_string().contains("received as a clone of"), "{what}: {err}");
        assert!(!pool.dataset_exists(&DatasetName::partial(pool.name(), uuid)).unwrap(), "{what}");
    }
    pool.destroy(&base).expect("nothing holds the base any more");
}

#[test]
fn ignore_property_is_listed() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let image = install(&zpool, &pool, BASE_FILES, None);
    zpool.zfs(&["set", "imgadm:ignore=true", &image.to_string()]);
    let entry = pool.entries().unwrap().into_iter().find(|e| e.name == image.to_string()).expect("listed");
    assert_eq!(entry.ignore.as_deref(), Some("true"));
}

#[test]
fn corrupt_streams_are_refused_and_leave_nothing() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let stream = zpool.make_stream(BASE_FILES, None);

    let truncated = &stream[..stream.len() / 2];
    let mut flipped = stream.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    for (what, bad) in [("truncated", truncated), ("flipped", &flipped[..])] {
        let uuid = ImageUuid::new_v4();
        let err = receive(&pool, uuid, None, bad).expect_err(what);
        assert_eq!(err.code(), "InternalError", "{what}");
        assert!(err.to_string().starts_with("zfs receive error while importing: exit code 1: "), "{what}: {err}");
        assert!(!pool.dataset_exists(&DatasetName::partial(pool.name(), uuid)).unwrap(), "{what}");
    }
    assert_eq!(names(&pool), [pool.name().to_string()]);
}

#[test]
fn receive_into_an_existing_dataset_is_refused() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let uuid = ImageUuid::new_v4();
    let first = zpool.make_stream(BASE_FILES, None);
    let received = receive(&pool, uuid, None, &first).expect("first receive");
    let second = zpool.make_stream(BASE_FILES, None);
    let partial = DatasetName::partial(pool.name(), uuid);
    let mut started = false;
    let err = pool
        .receive(&partial, None, &mut &second[..], &mut |_| {
            started = true;
            Ok(())
        })
        .expect_err("target exists");
    assert!(!started, "refused before any receiver starts");
    assert_eq!(err.code(), "InternalError");
    assert!(err.to_string().contains("exists"), "{err}");
    assert_eq!(pool.snapshots(&partial).unwrap(), [received.snapshot]);
}

/// Hands out `good` bytes of a stream, then fails as the engine's pipeline
/// does when a checksum or the decompressor fails.
struct FailingReader<'a> {
    stream: &'a [u8],
    good: usize,
}

impl Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.good == 0 {
            return Err(io::Error::other(Error::InvalidStream("checksum mismatch".into())));
        }
        // Small reads, so the receiver has taken bytes before the failure.
        let n = buf.len().min(self.good).min(16 * 1024);
        buf[..n].copy_from_slice(&self.stream[..n]);
        self.stream = &self.stream[n..];
        self.good -= n;
        Ok(n)
    }
}

#[test]
fn stream_read_error_ends_the_receiver_and_leaves_nothing() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let random: Vec<u8> = (0..400_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let stream = zpool.make_stream(&[("data", &random)], None);
    assert!(stream.len() > 300_000, "a stream that does not fit in a pipe: {} bytes", stream.len());

    // Mid-way (a bad download), and after the last byte (a checksum over
    // the whole file): either way nothing is left.
    for good in [stream.len() / 2, stream.len()] {
        let target = DatasetName::partial(pool.name(), ImageUuid::new_v4());
        let mut reader = FailingReader { stream: &stream, good };
        let mut child_pid = None;
        let err = pool
            .receive(&target, None, &mut reader, &mut |pid| {
                child_pid = pid;
                Ok(())
            })
            .expect_err("the stream failed");
        assert_eq!(err.code(), "InvalidStream", "the pipeline's own error comes back: {err}");
        let pid = nix::unistd::Pid::from_raw(child_pid.expect("a pid") as i32);
        assert_eq!(nix::sys::signal::kill(pid, None), Err(nix::errno::Errno::ESRCH), "the receiver is gone");
        assert!(!pool.dataset_exists(&target).unwrap(), "after {good} of {} bytes", stream.len());
        assert_eq!(names(&pool), [pool.name().to_string()]);
    }
}

#[test]
fn refusal_from_started_aborts_before_any_byte() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let stream = zpool.make_stream(BASE_FILES, None);
    let target = DatasetName::partial(pool.name(), ImageUuid::new_v4());
    let err = pool
        .receive(&target, None, &mut &stream[..], &mut |_| Err(Error::Journal("journal is full".into())))
        .expect_err("started refused");
    assert_eq!(err.code(), "JournalError");
    assert!(!pool.dataset_exists(&target).unwrap());
}

#[test]
fn mounted_dataset_just_written_can_be_renamed_and_destroyed() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let uuid = ImageUuid::new_v4();
    let partial = DatasetName::partial(pool.name(), uuid);
    let image = DatasetName::image(pool.name(), uuid);
    let payload = vec![7u8; 2 << 20];
    zpool.create_mounted(&partial.to_string(), &[("a", &payload), ("dir/b", b"b")]);

    pool.rename(&partial, &image).expect("rename of a busy-prone dataset");
    assert!(pool.dataset_exists(&image).unwrap());
    assert_eq!(zpool.zfs(&["get", "-H", "-o", "value", "mounted", &image.to_string()]).trim(), "yes");

    pool.destroy(&image).expect("destroy of a busy-prone dataset");
    assert!(!pool.dataset_exists(&image).unwrap());
}

#[test]
fn missing_dataset_is_not_an_error_to_ask_about() {
    let zpool = TestZpool::create();
    let pool = zpool.pool();
    let ds = DatasetName::image(pool.name(), ImageUuid::new_v4());
    assert!(!pool.dataset_exists(&ds).unwrap());
    let err = pool.destroy(&ds).expect_err("nothing to destroy");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
