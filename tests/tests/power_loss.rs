//! Power loss: the power-loss file system drops what was not fsynced, a
//! journal that relies on sled's flush() alone loses acknowledged events
//! there, the real one loses none, and an install cut at every step
//! boundary recovers by resume and by rollback.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use imgadm_tests::powerloss::{Lost, PowerLossFs, PowerLossMount};
use tempfile::TempDir;

/// A backing directory and a power-loss mount of it.
struct Disk {
    mount: PowerLossMount,
    _backing: TempDir,
    _mountpoint: TempDir,
}

impl Disk {
    fn new() -> Disk {
        let backing = TempDir::new().expect("backing dir");
        let mountpoint = TempDir::new().expect("mountpoint");
        let mount = PowerLossFs::mount(backing.path(), mountpoint.path()).expect("mount the power-loss file system");
        Disk { mount, _backing: backing, _mountpoint: mountpoint }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.mount.path().join(name)
    }

    fn cut(&mut self, lost: Lost) {
        let report = self.mount.cut_power(lost).expect("cut power");
        eprintln!("{report}");
    }
}

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("fsync");
}

fn fsync_dir(path: &Path) {
    File::open(path).and_then(|d| d.sync_all()).expect("fsync dir");
}

#[test]
fn fs_drops_unsynced_data_and_keeps_synced_data() {
    let mut disk = Disk::new();
    write_synced(&disk.path("synced"), b"durable");
    fsync_dir(disk.mount.path());
    let mut f = OpenOptions::new().append(true).open(disk.path("synced")).expect("open");
    f.write_all(b" and more").expect("write");
    drop(f);
    assert_eq!(fs::read(disk.path("synced")).unwrap(), b"durable and more", "reads see unsynced writes");
    assert_eq!(disk.mount.unsynced_bytes(), 9);
    disk.cut(Lost::Drop);
    assert_eq!(fs::read(disk.path("synced")).unwrap(), b"durable", "a close is not a sync");

    let mut f = OpenOptions::new().append(true).open(disk.path("synced")).expect("open");
    f.write_all(b"!").expect("write");
    f.sync_data().expect("fdatasync");
    drop(f);
    disk.cut(Lost::Drop);
    assert_eq!(fs::read(disk.path("synced")).unwrap(), b"durable!");
}

#[test]
fn fs_new_names_need_an_fsync_after_them() {
    let mut disk = Disk::new();
    fs::create_dir(disk.path("dir")).unwrap();
    write_synced(&disk.path("dir/old"), b"old");
    // The atomic-replace pattern without the directory fsync: the file's
    // fsync came before the rename, so the rename is not durable.
    write_synced(&disk.path("dir/tmp"), b"new");
    fs::rename(disk.path("dir/tmp"), disk.path("dir/old")).unwrap();
    fs::write(disk.path("dir/unsynced"), b"x").unwrap();
    assert_eq!(disk.mount.unsynced_changes(), 2);
    disk.cut(Lost::Drop);
    assert_eq!(fs::read(disk.path("dir/old")).unwrap(), b"old", "the unsynced rename survived");
    assert_eq!(fs::read(disk.path("dir/tmp")).unwrap(), b"new", "the rename's source did not come back");
    assert!(!disk.path("dir/unsynced").exists(), "an unsynced new file survived");

    fs::rename(disk.path("dir/tmp"), disk.path("dir/old")).unwrap();
    fsync_dir(&disk.path("dir"));
    fs::remove_file(disk.path("dir/old")).unwrap();
    disk.cut(Lost::Drop);
    assert_eq!(fs::read(disk.path("dir/old")).unwrap(), b"new", "an unsynced unlink was durable");
    assert!(!disk.path("dir/tmp").exists());
    let names: Vec<_> = fs::read_dir(disk.mount.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["dir"], "the graveyard shows");
}

#[test]
fn fs_keep_loses_nothing_and_garble_tears() {
    let mut disk = Disk::new();
    fs::write(disk.path("kept"), b"all of it").unwrap();
    disk.cut(Lost::Keep);
    assert_eq!(fs::read(disk.path("kept")).unwrap(), b"all of it");

    let original = vec![7u8; 64 << 10];
    write_synced(&disk.path("torn"), &original);
    fsync_dir(disk.mount.path());
    let mut torn_seen = false;
    for _ in 0..16 {
        let mut f = OpenOptions::new().write(true).open(disk.path("torn")).unwrap();
        f.write_all(&vec![9u8; 64 << 10]).unwrap();
        drop(f);
        disk.cut(Lost::Garble);
        let after = fs::read(disk.path("torn")).unwrap();
        assert_eq!(after.len(), original.len());
        torn_seen |= after.iter().any(|&b| b != 7 && b != 9) || (after.contains(&7) && after.contains(&9));
        write_synced(&disk.path("torn"), &original);
    }
    assert!(torn_seen, "16 torn cuts never tore a write");
}
