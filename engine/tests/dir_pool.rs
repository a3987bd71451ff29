//! The dir pool with real zfs-fuse send streams and real files.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use imgadm_engine::compression::{self, Compression};
use imgadm_engine::ids::{DatasetName, ImageUuid, PoolName, SnapName};
use imgadm_engine::pool::dir::DirPool;
use imgadm_engine::pool::{EntryKind, KeepMode, Pool};
use imgadm_engine::zstream::{Fletcher4, RECORD_LEN};
use imgadm_engine::Error;

const BASE_UUID: &str = "5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01";
const CHILD_UUID: &str = "8c7a2d91-1e54-4b8f-a6c3-0d9e4f21b702";
const BASE_SHA1: &str = "5c187902c5243a1f91e661d9ca21bad01baea7e4";
const CHILD_SHA1: &str = "a77b649133a421557dfb130366672b64ae49e673";
const BASE_TOGUID: u64 = 11363198826342852693;
const CHILD_TOGUID: u64 = 6306372232744026684;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

/// The decompressed stream, through the engine's own decoder.
fn stream(name: &str) -> Vec<u8> {
    let file = fs::File::open(example(name)).unwrap();
    let mut out = Vec::new();
    compression::decoder(Compression::Gzip, Box::new(file)).read_to_end(&mut out).unwrap();
    out
}

fn base_stream() -> Vec<u8> {
    stream("example-base-1.0.0.zfs.gz")
}

fn child_stream() -> Vec<u8> {
    stream("example-child-1.0.0.zfs.gz")
}

/// Renames the stream's snapshot (BEGIN's toname) and re-seals its END
/// checksum, as a sender that had named the snapshot so would have written
/// it. These zfs-fuse streams carry no per-record checksums, so END's is the
/// only one to recompute.
fn with_snapshot_name(data: &[u8], snap: &str) -> Vec<u8> {
    let mut out = data.to_vec();
    let name_field = &mut out[56..RECORD_LEN];
    let len = name_field.iter().position(|b| *b == 0).unwrap();
    let at = name_field[..len].iter().position(|b| *b == b'@').unwrap() + 1;
    name_field[at..].fill(0);
    name_field[at..at + snap.len()].copy_from_slice(snap.as_bytes());
    resealed(out)
}

/// The stream of another snapshot: same content, another guid (in BEGIN and
/// END), re-sealed.
fn with_toguid(data: &[u8], toguid: u64) -> Vec<u8> {
    let mut out = data.to_vec();
    let end = out.len() - RECORD_LEN;
    out[40..48].copy_from_slice(&toguid.to_le_bytes());
    out[end + 40..end + 48].copy_from_slice(&toguid.to_le_bytes());
    resealed(out)
}

fn resealed(mut out: Vec<u8>) -> Vec<u8> {
    let end = out.len() - RECORD_LEN;
    let mut sum = Fletcher4::default();
    sum.update(&out[..end], false);
    for (i, s) in sum.sums.iter().enumerate() {
        out[end + 8 + 8 * i..end + 16 + 8 * i].copy_from_slice(&s.to_le_bytes());
    }
    out
}

struct Fixture {
    _dir: tempfile::TempDir,
    pools_root: PathBuf,
    scratch: PathBuf,
    pool: DirPool,
    name: PoolName,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pools_root = dir.path().join("pools");
        let scratch = dir.path().join("downloads");
        fs::create_dir_all(&scratch).unwrap();
        let name = PoolName::parse("zones").unwrap();
        let pool = DirPool::open(&pools_root, &name, true).unwrap();
        Fixture { _dir: dir, pools_root, scratch, pool, name }
    }

    fn ds(&self, uuid: &str, partial: bool) -> DatasetName {
        let uuid = ImageUuid::parse(uuid).unwrap();
        if partial {
            DatasetName::partial(&self.name, uuid)
        } else {
            DatasetName::image(&self.name, uuid)
        }
    }

    /// A downloaded copy of an example file, as `fetch` leaves it.
    fn download(&self, name: &str) -> PathBuf {
        let path = self.scratch.join(name);
        fs::copy(example(name), &path).unwrap();
        path
    }

    fn receive(&self, target: &DatasetName, origin: Option<&DatasetName>, data: &[u8]) -> imgadm_engine::Result<u64> {
        let mut started = 0;
        let mut reader = data;
        let result = self.pool.receive(target, origin, &mut reader, &mut |pid| {
            assert_eq!(pid, None);
            started += 1;
            Ok(())
        });
        assert!(started <= 1);
        result.map(|r| r.toguid)
    }

    /// receive into -partial, keep the file, snapshot to @final, rename:
    /// the steps of `install`.
    fn install_base(&self) -> DatasetName {
        let partial = self.ds(BASE_UUID, true);
        let data = with_snapshot_name(&base_stream(), "sent-2026");
        let received = self.pool.receive(&partial, None, &mut &data[..], &mut |_| Ok(())).unwrap();
        assert_eq!(received.snapshot.name.as_str(), "sent-2026");
        assert_eq!(received.snapshot.guid, BASE_TOGUID);
        assert_eq!((received.toguid, received.fromguid), (BASE_TOGUID, 0));
        let download = self.download("example-base-1.0.0.zfs.gz");
        self.pool.keep_file(&partial, &download, BASE_SHA1, KeepMode::Move).unwrap();
        assert!(!download.exists(), "a download is moved in");
        self.pool.rename_snapshot(&partial, &SnapName::parse("sent-2026").unwrap(), &SnapName::final_()).unwrap();
        let base = self.ds(BASE_UUID, false);
        self.pool.rename(&partial, &base).unwrap();
        base
    }

    fn install_child(&self, base: &DatasetName) -> DatasetName {
        let partial = self.ds(CHILD_UUID, true);
        assert_eq!(self.receive(&partial, Some(base), &child_stream()).unwrap(), CHILD_TOGUID);
        let file = example("example-child-1.0.0.zfs.gz");
        self.pool.keep_file(&partial, &file, CHILD_SHA1, KeepMode::Copy).unwrap();
        assert!(file.exists(), "a user's file is copied, never moved");
        let child = self.ds(CHILD_UUID, false);
        self.pool.rename(&partial, &child).unwrap();
        child
    }

    fn root(&self) -> PathBuf {
        self.pools_root.join("zones")
    }

    fn names_in(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn record(&self, key: &str) -> serde_json::Value {
        let bytes = fs::read(self.root().join("datasets").join(format!("{key}.json"))).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}

fn sha1_of(path: &Path) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(fs::read(path).unwrap()))
}

#[test]
fn install_base_then_child_then_delete_in_order() {
    let fx = Fixture::new();
    let base = fx.install_base();
    assert_eq!(sha1_of(&fx.root().join("files").join(BASE_SHA1)), BASE_SHA1);
    assert_eq!(fx.pool.snapshots(&base).unwrap().len(), 1);
    assert_eq!(fx.pool.snapshots(&base).unwrap()[0].guid, BASE_TOGUID);
    assert_eq!(fx.pool.snapshots(&base).unwrap()[0].name, SnapName::final_());
    assert!(!fx.pool.dataset_exists(&fx.ds(BASE_UUID, true)).unwrap());
    assert!(fx.pool.dataset_exists(&base).unwrap());

    let child = fx.install_child(&base);
    assert_eq!(fx.pool.kept_file(&child).unwrap().unwrap(), fx.root().join("files").join(CHILD_SHA1));
    let record = fx.record(CHILD_UUID);
    assert_eq!(record["name"], format!("zones/{CHILD_UUID}"));
    assert_eq!(record["origin"], format!("zones/{BASE_UUID}@final"));
    assert_eq!(record["snapshots"][0]["name"], "final");
    assert_eq!(record["snapshots"][0]["guid"], CHILD_TOGUID.to_string());
    assert_eq!(record["file"], CHILD_SHA1);
    assert_eq!(record["toguid"], CHILD_TOGUID.to_string());
    assert_eq!(record["fromguid"], BASE_TOGUID.to_string());

    // As zfs destroy does: not while a clone depends on a snapshot.
    let err = fx.pool.destroy(&base).unwrap_err();
    assert_eq!(err.code(), "InternalError");
    assert!(err.to_string().contains("dependent clones"), "{err}");
    assert!(err.to_string().contains(&child.to_string()), "{err}");
    assert!(fx.pool.dataset_exists(&base).unwrap());

    fx.pool.destroy(&child).unwrap();
    assert_eq!(fx.names_in("files"), vec![BASE_SHA1]);
    fx.pool.destroy(&base).unwrap();
    assert!(fx.names_in("files").is_empty());
    assert!(fx.names_in("datasets").is_empty());
    assert!(fx.pool.entries().unwrap().is_empty());
}

#[test]
fn entries_list_filesystems_snapshots_and_origins_and_survive_reopening() {
    let fx = Fixture::new();
    let base = fx.install_base();
    let child = fx.install_child(&base);
    let expected = vec![
        (base.to_string(), EntryKind::Filesystem, None),
        (format!("{base}@final"), EntryKind::Snapshot, None),
        (child.to_string(), EntryKind::Filesystem, Some(format!("{base}@final"))),
        (format!("{child}@final"), EntryKind::Snapshot, None),
    ];
    let listed = |pool: &DirPool| -> Vec<(String, EntryKind, Option<String>)> {
        pool.entries().unwrap().into_iter().map(|e| (e.name, e.kind, e.origin)).collect()
    };
    assert_eq!(listed(&fx.pool), expected);
    assert!(fx.pool.entries().unwrap().iter().all(|e| e.mountpoint.is_none() && e.ignore.is_none()));

    let reopened = DirPool::open(&fx.pools_root, &fx.name, false).unwrap();
    assert_eq!(listed(&reopened), expected);
    assert_eq!(reopened.snapshots(&child).unwrap(), fx.pool.snapshots(&child).unwrap());
}

#[test]
fn renames_carry_the_origin_of_clones_along() {
    let fx = Fixture::new();
    let base = fx.install_base();
    let child = fx.install_child(&base);
    let origin_of_child =
        |pool: &DirPool| pool.entries().unwrap().into_iter().find(|e| e.name == child.to_string()).unwrap().origin;

    fx.pool.rename_snapshot(&base, &SnapName::final_(), &SnapName::parse("renamed").unwrap()).unwrap();
    assert_eq!(fx.record(CHILD_UUID)["origin"], format!("{base}@renamed"));
    assert_eq!(origin_of_child(&fx.pool), Some(format!("{base}@renamed")));
    fx.pool.rename_snapshot(&base, &SnapName::parse("renamed").unwrap(), &SnapName::final_()).unwrap();

    // Renaming the base (as an undo of `rename` would) moves the clone's origin too.
    let base_partial = fx.ds(BASE_UUID, true);
    fx.pool.rename(&base, &base_partial).unwrap();
    assert_eq!(fx.record(CHILD_UUID)["origin"], format!("{base_partial}@final"));
    assert_eq!(fx.record(&format!("{BASE_UUID}-partial"))["name"], base_partial.to_string());
    assert!(!fx.pool.dataset_exists(&base).unwrap());

    // Renaming onto an existing dataset or snapshot is refused.
    let err = fx.pool.rename(&child, &base_partial).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    fx.pool.rename(&base_partial, &base).unwrap();

    // After a crash between the writes of a rename, the clone's stale
    // origin string is resolved by guid.
    let path = fx.root().join("datasets").join(format!("{CHILD_UUID}.json"));
    let stale = fs::read_to_string(&path).unwrap().replace(&format!("{base}@final"), &format!("{base_partial}@final"));
    fs::write(&path, stale).unwrap();
    assert_eq!(origin_of_child(&fx.pool), Some(format!("{base}@final")));
    assert!(fx.pool.destroy(&base).unwrap_err().to_string().contains("dependent clones"));
}

#[test]
fn a_child_for_another_origin_is_refused_and_leaves_nothing() {
    let fx = Fixture::new();
    let partial = fx.ds(CHILD_UUID, true);

    // Origin not in the pool, named or not.
    let err = fx.receive(&partial, None, &child_stream()).unwrap_err();
    assert_eq!(err.code(), "InvalidStream");
    assert!(err.to_string().contains("local origin for clone"), "{err}");
    let err = fx.receive(&partial, Some(&fx.ds(BASE_UUID, false)), &child_stream()).unwrap_err();
    assert!(err.to_string().contains("local origin for clone"), "{err}");

    // An origin whose @final is another snapshot (another image's base).
    let other = fx.ds("11111111-2222-4333-8444-555555555555", false);
    let other_stream = with_toguid(&base_stream(), 4242);
    fx.pool.receive(&other, None, &mut &other_stream[..], &mut |_| Ok(())).unwrap();
    let err = fx.receive(&partial, Some(&other), &child_stream()).unwrap_err();
    assert_eq!(err.code(), "InvalidStream");
    assert!(err.to_string().contains("does not apply to this origin"), "{err}");

    // A full stream where an incremental one is expected.
    let err = fx.receive(&partial, Some(&other), &base_stream()).unwrap_err();
    assert!(err.to_string().contains("full stream"), "{err}");

    assert!(!fx.pool.dataset_exists(&partial).unwrap());
    assert_eq!(fx.names_in("datasets"), vec!["11111111-2222-4333-8444-555555555555.json"]);

    // Without a named origin, the stream finds its origin by guid.
    fx.pool.destroy(&other).unwrap();
    let base = fx.install_base();
    fx.receive(&partial, None, &child_stream()).unwrap();
    assert_eq!(fx.record(&format!("{CHILD_UUID}-partial"))["origin"], format!("{base}@final"));
}

#[test]
fn corrupt_and_truncated_streams_leave_no_record_and_no_temp_file() {
    let fx = Fixture::new();
    let target = fx.ds(BASE_UUID, true);
    let good = base_stream();
    let mut corrupt = good.clone();
    corrupt[good.len() / 2] ^= 0x20;
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0u8; 312]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("corrupt", corrupt),
        ("truncated in a payload", good[..good.len() / 2].to_vec()),
        ("truncated before END", good[..good.len() - RECORD_LEN].to_vec()),
        ("truncated in BEGIN", good[..100].to_vec()),
        ("empty", Vec::new()),
        ("trailing zeros", trailing),
        ("gzip, not decompressed", fs::read(example("example-base-1.0.0.zfs.gz")).unwrap()),
    ];
    for (what, data) in cases {
        let err = fx.receive(&target, None, &data).unwrap_err();
        assert_eq!(err.code(), "InvalidStream", "{what}: {err}");
        assert!(fx.names_in("datasets").is_empty(), "{what}");
        assert!(fx.names_in("files").is_empty(), "{what}");
    }
    // Then the good stream is received.
    fx.receive(&target, None, &good).unwrap();
    assert_eq!(fx.names_in("datasets"), vec![format!("{BASE_UUID}-partial.json")]);
}

#[test]
fn a_receive_refused_at_start_or_onto_an_existing_dataset_changes_nothing() {
    let fx = Fixture::new();
    let target = fx.ds(BASE_UUID, true);
    let data = base_stream();
    let err =
        fx.pool.receive(&target, None, &mut &data[..], &mut |_| Err(Error::internal("journal is full"))).unwrap_err();
    assert!(err.to_string().contains("journal is full"));
    assert!(fx.names_in("datasets").is_empty());

    fx.receive(&target, None, &data).unwrap();
    let err = fx.receive(&target, None, &data).unwrap_err();
    assert!(err.to_string().contains("destination"), "{err}");
    assert!(err.to_string().contains("exists"), "{err}");
    // The stream was not even read: destination checks come first.
    let err = fx.receive(&target, None, &[]).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
}

#[test]
fn keeping_a_file_is_idempotent_and_shared_files_are_kept_while_used() {
    let fx = Fixture::new();
    let a = fx.ds(BASE_UUID, false);
    let b = fx.ds("11111111-2222-4333-8444-555555555555", false);
    let data = base_stream();
    fx.receive(&a, None, &data).unwrap();
    fx.receive(&b, None, &data).unwrap();
    let kept = fx.root().join("files").join(BASE_SHA1);

    fx.pool.keep_file(&a, &fx.download("example-base-1.0.0.zfs.gz"), BASE_SHA1, KeepMode::Move).unwrap();
    // A redo after a crash between the move and the record write: the
    // source is the kept file itself, which must stay.
    fx.pool.keep_file(&a, &kept, BASE_SHA1, KeepMode::Move).unwrap();
    assert!(kept.exists());
    // A second image with the same file: the new download is dropped.
    let second = fx.download("example-base-1.0.0.zfs.gz");
    fx.pool.keep_file(&b, &second, BASE_SHA1, KeepMode::Move).unwrap();
    assert!(!second.exists());
    assert_eq!(fx.names_in("files"), vec![BASE_SHA1]);

    fx.pool.destroy(&a).unwrap();
    assert!(kept.exists(), "still used by b");
    fx.pool.destroy(&b).unwrap();
    assert!(!kept.exists());

    let err = fx.pool.keep_file(&a, &second, "../../x", KeepMode::Copy).unwrap_err();
    assert!(err.to_string().contains("sha1"), "{err}");
    let err = fx.pool.keep_file(&a, &example("example-base-1.0.0.zfs.gz"), BASE_SHA1, KeepMode::Copy).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn pools_are_found_created_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pools");
    let tank = PoolName::parse("tank").unwrap();
    assert!(DirPool::list(&root).unwrap().is_empty());
    let err = DirPool::open(&root, &tank, false).err().unwrap();
    assert_eq!(err.code(), "PoolNotFound");
    assert!(err.to_string().contains("dir driver"), "{err}");

    DirPool::open(&root, &tank, true).unwrap();
    DirPool::open(&root, &PoolName::parse("zones").unwrap(), true).unwrap();
    fs::create_dir_all(root.join("not-a-pool")).unwrap();
    fs::create_dir_all(root.join("9bad")).unwrap();
    assert_eq!(DirPool::list(&root).unwrap(), vec![tank.clone(), PoolName::parse("zones").unwrap()]);

    // A temp file of a dead process is ignored by listings and removed by
    // the next open; one of a live process (ours) is left alone.
    let datasets = root.join("tank/datasets");
    let stale = datasets.join(format!(".{BASE_UUID}.json.tmp-{}-abcdef", 0x7fff_fff0u32));
    let live = datasets.join(format!(".{BASE_UUID}.json.tmp-{}-abcdef", std::process::id()));
    fs::write(&stale, b"{").unwrap();
    fs::write(&live, b"{").unwrap();
    fs::write(datasets.join("README"), b"not a record").unwrap();
    let pool = DirPool::open(&root, &tank, false).unwrap();
    assert!(!stale.exists());
    assert!(live.exists());
    assert!(pool.entries().unwrap().is_empty());

    // Datasets of another pool are refused.
    let foreign = DatasetName::image(&PoolName::parse("zones").unwrap(), ImageUuid::parse(BASE_UUID).unwrap());
    assert!(pool.dataset_exists(&foreign).is_err());
}

#[test]
fn a_damaged_compressed_file_is_an_uncompression_error_even_at_its_very_end() {
    let fx = Fixture::new();
    let target = fx.ds(BASE_UUID, true);
    let mut gz = fs::read(example("example-base-1.0.0.zfs.gz")).unwrap();
    // The gzip trailer's CRC: the stream inside is whole and valid, only
    // the decoder can tell.
    let crc_at = gz.len() - 8;
    gz[crc_at] ^= 0xff;
    let mut decoded = compression::decoder(Compression::Gzip, Box::new(std::io::Cursor::new(gz)));
    let err = fx.pool.receive(&target, None, &mut decoded, &mut |_| Ok(())).unwrap_err();
    assert_eq!(err.code(), "UncompressionError", "{err}");
    assert!(fx.names_in("datasets").is_empty());
}
