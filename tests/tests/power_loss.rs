//! Power loss: the power-loss file system drops what was not fsynced, a
//! journal that relies on sled's flush() alone loses acknowledged events
//! there, the real one loses none, and an install or an import cut at every
//! step boundary recovers by resume and by rollback.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use imgadm_journal::UNSAFE_SKIP_FSYNC_ENV;
use std::sync::OnceLock;

use imgadm_tests::harness::{example, Driver, Run, World, BASE_FILE, BASE_MANIFEST, BASE_UUID};
use imgadm_tests::images::{example_manifest, read_example};
use imgadm_tests::imgapi_server::{FileCompression, TestImgapi};
use imgadm_tests::powerloss::{Lost, PowerLossFs, PowerLossMount};
use serde_json::Value;
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
fn fs_new_names_need_an_fsync_of_their_directory() {
    let mut disk = Disk::new();
    fs::create_dir(disk.path("dir")).unwrap();
    fsync_dir(disk.mount.path());
    write_synced(&disk.path("dir/old"), b"old");
    fsync_dir(&disk.path("dir"));
    // The atomic-replace pattern without the directory fsync: the file's
    // fsync makes neither its name nor the rename durable, and neither
    // does an fsync of another directory.
    write_synced(&disk.path("dir/tmp"), b"new");
    fs::rename(disk.path("dir/tmp"), disk.path("dir/old")).unwrap();
    fs::write(disk.path("dir/unsynced"), b"x").unwrap();
    write_synced(&disk.path("elsewhere"), b"x");
    fsync_dir(disk.mount.path());
    assert_eq!(disk.mount.unsynced_changes(), 3);
    disk.cut(Lost::Drop);
    assert_eq!(fs::read(disk.path("dir/old")).unwrap(), b"old", "the unsynced rename survived");
    assert!(!disk.path("dir/tmp").exists(), "the unsynced new name survived");
    assert!(!disk.path("dir/unsynced").exists(), "an unsynced new file survived");

    write_synced(&disk.path("dir/tmp"), b"new");
    fs::rename(disk.path("dir/tmp"), disk.path("dir/old")).unwrap();
    fsync_dir(&disk.path("dir"));
    fs::remove_file(disk.path("dir/old")).unwrap();
    disk.cut(Lost::Drop);
    assert_eq!(fs::read(disk.path("dir/old")).unwrap(), b"new", "an unsynced unlink was durable");
    assert!(!disk.path("dir/tmp").exists());

    // A new directory needs its parent fsynced too, whatever is synced inside.
    fs::create_dir(disk.path("sub")).unwrap();
    write_synced(&disk.path("sub/f"), b"f");
    fsync_dir(&disk.path("sub"));
    disk.cut(Lost::Drop);
    assert!(!disk.path("sub").exists(), "a directory whose parent was not fsynced survived");
    let mut names: Vec<_> = fs::read_dir(disk.mount.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["dir", "elsewhere"], "the graveyard shows, or a cut left something");
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

/// A world whose state directory (journal, dir pool, cache) is on a fresh
/// power-loss mount. Fields drop in order: the world's files, then the mount.
struct PoweredWorld {
    world: World,
    disk: Disk,
}

impl PoweredWorld {
    fn new() -> PoweredWorld {
        let disk = Disk::new();
        let state = TempDir::new_in(disk.mount.path()).expect("state dir on the power-loss mount");
        // The state directory itself exists before the test begins.
        fsync_dir(disk.mount.path());
        PoweredWorld { world: World::with_state(Driver::Dir, state), disk }
    }

    /// `imgadm install` of the example base image, with extra environment.
    fn install(&self, env: &[(&str, &str)]) -> Run {
        let mut cmd = self.world.command();
        cmd.args(["install", "-P", &self.world.pool, "-m"])
            .arg(example(BASE_MANIFEST))
            .arg("-f")
            .arg(example(BASE_FILE))
            .envs(env.iter().copied());
        Run::from_output(cmd.output().expect("cannot run imgadm"))
    }

    /// `imgadm import` of the example base image from the test Images API,
    /// with extra environment. The config naming the server is synced
    /// first: it is the operator's, not the operation's, and no cut loses it.
    fn import(&self, env: &[(&str, &str)]) -> Run {
        let config = serde_json::json!({"sources": [{"type": "imgapi", "url": example_server().url()}]});
        write_synced(&self.world.state.path().join("imgadm.conf"), config.to_string().as_bytes());
        fsync_dir(self.world.state.path());
        let mut cmd = self.world.command();
        cmd.args(["import", "-P", &self.world.pool, BASE_UUID]).envs(env.iter().copied());
        Run::from_output(cmd.output().expect("cannot run imgadm"))
    }

    /// Every event in the journal, as `journal export` prints them.
    fn events(&self) -> Vec<String> {
        self.world.imgadm(&["journal", "export"]).ok().stdout.lines().map(str::to_string).collect()
    }
}

/// Cuts power right after an install returned; true if any event the
/// journal held before the cut is gone (or the journal no longer opens).
fn install_then_cut_loses_events(env: &[(&str, &str)]) -> bool {
    let mut w = PoweredWorld::new();
    w.install(env).ok();
    let acknowledged = w.events();
    assert!(acknowledged.len() >= 18, "an install writes at least 18 events: {acknowledged:?}");
    w.disk.cut(Lost::Drop);
    let list = w.world.imgadm(&["journal", "list", "-j"]);
    if list.status != 0 {
        eprintln!("after the cut, `journal list` fails: {}", list.stderr.trim());
        return true;
    }
    let export = w.world.imgadm(&["journal", "export"]);
    let survived: Vec<String> = export.stdout.lines().map(str::to_string).collect();
    let lost = acknowledged.iter().filter(|e| !survived.contains(e)).count();
    eprintln!(
        "after the cut: {lost} of {} acknowledged events gone (export exit {})",
        acknowledged.len(),
        export.status
    );
    lost > 0 || export.status != 0
}

const RUNS: usize = 3;

#[test]
fn journal_without_fsync_loses_acknowledged_events() {
    let losses = (0..RUNS).filter(|_| install_then_cut_loses_events(&[(UNSAFE_SKIP_FSYNC_ENV, "1")])).count();
    eprintln!("sled's flush() alone: acknowledged events lost in {losses} of {RUNS} runs");
    assert!(losses > 0, "the power-loss file system has no teeth: flush() alone lost nothing in {RUNS} runs");
}

#[test]
fn journal_with_fsync_keeps_every_acknowledged_event() {
    for run in 0..RUNS {
        assert!(!install_then_cut_loses_events(&[]), "run {run}: the journal lost acknowledged events");
    }
}

/// A verb whose every step boundary gets a power cut: how to run it (with
/// extra environment), its steps in order, and the image it installs.
struct Verb {
    name: &'static str,
    steps: &'static [&'static str],
    run: fn(&PoweredWorld, &[(&str, &str)]) -> Run,
    image: &'static str,
}

const VERBS: &[Verb] = &[
    Verb {
        name: "install",
        steps: &["validate", "lock", "verify", "recv", "final", "rename", "cache", "unlock"],
        run: PoweredWorld::install,
        image: BASE_UUID,
    },
    Verb {
        name: "import",
        steps: &["resolve", "ancestry", "lock", "fetch", "verify", "recv", "final", "rename", "cache", "unlock"],
        run: PoweredWorld::import,
        image: BASE_UUID,
    },
];

/// An Images API serving the example base image, shared by every import.
fn example_server() -> &'static TestImgapi {
    static SERVER: OnceLock<TestImgapi> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = TestImgapi::start();
        server.add_image(example_manifest(BASE_MANIFEST), read_example(BASE_FILE), FileCompression::Gzip);
        server
    })
}

#[derive(Clone, Copy, Debug)]
enum Recovery {
    Resume,
    Rollback,
}

/// Kills `verb` at `step:when`, cuts power, and checks that the journal
/// kept every event it had acknowledged and that `recovery` ends right.
/// `reference` is the state files of an uninterrupted run.
fn cut_at(verb: &Verb, step: &str, when: &str, lost: Lost, recovery: Recovery, reference: &[String]) {
    let case = format!("{} {step}:{when}, {lost:?}, {recovery:?}", verb.name);
    let mut w = PoweredWorld::new();
    let killed = (verb.run)(&w, &[("IMGADM_FAILPOINT", &format!("{step}:{when}"))]);
    assert_eq!(killed.status, -1, "{case}: the failpoint did not kill imgadm:\n{}", killed.stderr);
    // The failpoint fires only after the events before it were durable, so
    // everything in the journal now was acknowledged to the killed process.
    let acknowledged = w.events();
    eprintln!("{case}: {}", w.disk.mount.cut_power(lost).expect("cut power"));

    let export = w.world.imgadm(&["journal", "export"]);
    assert_eq!(export.status, 0, "{case}: the journal does not open after the cut:\n{}", export.stderr);
    let survived: Vec<String> = export.stdout.lines().map(str::to_string).collect();
    assert_eq!(survived, acknowledged, "{case}: the cut changed the journal's events");
    let events: Vec<Value> = survived.iter().map(|l| serde_json::from_str(l).expect("an event is JSON")).collect();
    let op = events[0]["op"].as_str().expect("events name their operation").to_string();
    assert!(
        events.iter().any(|e| e["kind"] == "step-begun" && e["step"] == step),
        "{case}: the durable \"{step}\" begun event is gone"
    );

    let (command, state) = match recovery {
        Recovery::Resume => ("resume", "succeeded"),
        Recovery::Rollback => ("rollback", "rolled-back"),
    };
    w.world.imgadm(&["journal", command, &op]).ok();
    let ops = w.world.imgadm(&["journal", "list", "-j"]).ok().json();
    assert_eq!(ops[0]["state"], state, "{case}: {ops}");
    w.world.imgadm(&["journal", "verify"]).ok();
    match recovery {
        Recovery::Resume => {
            assert_eq!(w.world.listed(), [verb.image], "{case}");
            assert_eq!(w.world.state_files(), reference, "{case}: the state differs from an uninterrupted run's");
        }
        Recovery::Rollback => {
            assert!(w.world.listed().is_empty(), "{case}: the image is still installed");
            let left: Vec<String> = w.world.state_files().into_iter().filter(|f| !f.ends_with("imgadm.conf")).collect();
            assert!(left.is_empty(), "{case}: files left behind: {left:?}");
        }
    }
}

/// Cuts power at every step boundary of every verb; `recovery_for` picks
/// the recovery of the Nth case.
fn cut_at_every_step_boundary(lost: Lost, recovery_for: impl Fn(usize) -> Recovery) {
    let mut cases = 0;
    for verb in VERBS {
        let uninterrupted = PoweredWorld::new();
        (verb.run)(&uninterrupted, &[]).ok();
        let reference = uninterrupted.world.state_files();
        for step in verb.steps {
            for when in ["before", "after"] {
                cut_at(verb, step, when, lost, recovery_for(cases), &reference);
                cases += 1;
            }
        }
    }
    eprintln!("power loss ({lost:?}): {cases} step boundaries, all recovered");
}

#[test]
fn cut_at_every_step_boundary_drop_then_resume() {
    cut_at_every_step_boundary(Lost::Drop, |_| Recovery::Resume);
}

#[test]
fn cut_at_every_step_boundary_drop_then_rollback() {
    cut_at_every_step_boundary(Lost::Drop, |_| Recovery::Rollback);
}

/// Torn cuts, half of them resumed and half rolled back, so that every step
/// gets both recoveries over its two boundaries (the whole test file stays
/// within its time budget).
#[test]
fn cut_at_every_step_boundary_garble_then_resume_or_rollback() {
    cut_at_every_step_boundary(
        Lost::Garble,
        |n| if (n + n / 2) % 2 == 0 { Recovery::Resume } else { Recovery::Rollback },
    );
}
