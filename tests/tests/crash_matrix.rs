//! The crash matrix: every operation killed (SIGKILL, by its own failpoint)
//! before and after each of its steps and in the middle of its receive,
//! then recovered both ways:
//!
//! - resume (by re-running the same command, or `imgadm journal resume OP`,
//!   alternating): the world must equal that of a run never interrupted;
//! - rollback (`imgadm journal rollback OP`): the world must equal the one
//!   before the operation; except a delete whose destroy happened, which
//!   cannot be undone: its rollback finishes the delete and says so.
//!
//! "The world" is the pool (datasets, snapshot guids, origins; the dir
//! pool's records and kept files), the manifest cache, the downloads
//! directory and the journal's projection of installed images. Adding a
//! verb to the matrix is one `Scenario` in `scenarios()`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use imgadm_engine::ids::{DatasetName, ImageUuid, PoolName};
use imgadm_journal::Journal;
use imgadm_tests::harness::*;
use imgadm_tests::images::*;
use imgadm_tests::imgapi_server::{FileCompression, TestImgapi};
use imgadm_tests::zfs::{stream_guids, TestZpool};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use tempfile::TempDir;

const INSTALL_STEPS: &[&str] = &["validate", "lock", "verify", "recv", "final", "rename", "cache", "unlock"];
const DELETE_STEPS: &[&str] = &["lock", "check", "destroy", "uncache", "unlock"];
const VACUUM_STEPS: &[&str] = &["plan", "lock", "check", "destroy", "uncache", "unlock"];
const CREATE_STEPS: &[&str] = &["lock", "check", "snapshot", "send", "compress", "manifest", "cleanup", "unlock"];
/// An import of the child and its missing base: the per-image steps twice,
/// base first.
const IMPORT_STEPS: &[&str] = &[
    "resolve", "ancestry", "lock",
    "fetch", "verify", "recv", "final", "rename", "cache",
    "fetch", "verify", "recv", "final", "rename", "cache",
    "unlock",
];
const UPDATE_CACHE_STEPS: &[&str] = &["lock", "lookup", "cache", "unlock"];
const UPDATE_FINAL_STEPS: &[&str] = &["lock", "lookup", "cache", "final", "unlock"];
/// The "VM" create makes an image of: a clone of the base image.
const VM_UUID: &str = "0c4f1d2e-3a5b-4c6d-8e7f-9a0b1c2d3e4f";

/// One operation of the matrix: what is there before it, the command, and
/// the steps an uninterrupted run journals.
struct Scenario {
    name: &'static str,
    setup: fn(&World, &Images),
    argv: fn(&World, &Images) -> Vec<String>,
    steps: &'static [&'static str],
    /// Steps that move data, killed half way through as well (each
    /// occurrence of the step).
    during: &'static [&'static str],
    /// Failpoints after which the operation cannot be undone: rollback
    /// finishes it instead (a delete whose dataset is destroyed).
    rollback_finishes: &'static [&'static str],
    /// Needs a real ZFS dataset (create): not run on the dir pool.
    zfs_only: bool,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "install full image",
            setup: |_, _| {},
            argv: |w, i| install_argv(w, &i.base),
            steps: INSTALL_STEPS,
            during: &["recv"],
            rollback_finishes: &[],
            zfs_only: false,
        },
        Scenario {
            name: "install incremental image",
            setup: |w, i| install(w, &i.base),
            argv: |w, i| install_argv(w, &i.child),
            steps: INSTALL_STEPS,
            during: &["recv"],
            rollback_finishes: &[],
            zfs_only: false,
        },
        Scenario {
            name: "import 2-image origin chain",
            setup: |w, i| i.use_server(w),
            argv: |w, i| strings(&["import", "-P", &w.pool, &i.child.uuid]),
            steps: IMPORT_STEPS,
            during: &["fetch", "recv"],
            rollback_finishes: &[],
            zfs_only: false,
        },
        Scenario {
            name: "delete",
            setup: |w, i| install(w, &i.base),
            argv: |w, i| strings(&["delete", "-P", &w.pool, &i.base.uuid]),
            steps: DELETE_STEPS,
            during: &[],
            rollback_finishes: &["destroy:after", "uncache:before", "uncache:after", "unlock:before", "unlock:after"],
            zfs_only: false,
        },
        Scenario {
            name: "vacuum",
            setup: |w, i| install(w, &i.base),
            argv: |w, _| strings(&["vacuum", "-f", "-P", &w.pool]),
            steps: VACUUM_STEPS,
            during: &[],
            rollback_finishes: &["destroy:after", "uncache:before", "uncache:after", "unlock:before", "unlock:after"],
            zfs_only: false,
        },
        Scenario {
            name: "create incremental image",
            setup: |w, i| {
                install(w, &i.base);
                let zpool = w.zpool().expect("create runs on zfs only");
                let vm = format!("{}/{VM_UUID}", w.pool);
                // No @final of its own: a clone of an @final that has one
                // counts as an image (and its guid would differ per case);
                // moving a @final aside is tested in tests/create.rs.
                zpool.zfs(&["clone", &format!("{}/{}@final", w.pool, i.base.uuid), &vm]);
            },
            argv: |w, _| {
                let prefix = w.state.path().join("created");
                strings(&["create", "-i", "-c", "gzip", "-o", &path_text(&prefix), VM_UUID, "name=created", "version=1.0.0"])
            },
            steps: CREATE_STEPS,
            during: &["send", "compress"],
            rollback_finishes: &[],
            zfs_only: true,
        },
        Scenario {
            name: "update cache",
            setup: |w, i| installed_without_cache(w, i),
            argv: |w, _| strings(&["update", "-P", &w.pool]),
            steps: UPDATE_CACHE_STEPS,
            during: &[],
            rollback_finishes: &[],
            zfs_only: false,
        },
        Scenario {
            name: "update final",
            setup: |w, i| {
                installed_without_cache(w, i);
                // As a plain `zfs recv` leaves it: its snapshot not `@final`.
                let dataset = format!("{}/{}", w.pool, i.base.uuid);
                let zpool = w.zpool().expect("renaming a snapshot needs zfs");
                zpool.zfs(&["rename", &format!("{dataset}@final"), &format!("{dataset}@orig")]);
            },
            argv: |w, _| strings(&["update", "-P", &w.pool]),
            steps: UPDATE_FINAL_STEPS,
            during: &[],
            rollback_finishes: &[],
            zfs_only: true,
        },
    ]
}

/// The base installed, its manifest cache gone, and the matrix's Images
/// API as the source: what `update` has to repair.
fn installed_without_cache(w: &World, i: &Images) {
    install(w, &i.base);
    std::fs::remove_file(w.state.path().join("images").join(format!("{}-{}.json", w.pool, i.base.uuid)))
        .expect("remove the manifest cache");
    w.use_sources(&[&i.server.url()]);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    RerunCommand,
    JournalResume,
    Rollback,
}

/// One cell of the matrix.
struct Case<'s> {
    scenario: &'s Scenario,
    failpoint: String,
    recovery: Recovery,
}

impl Case<'_> {
    fn label(&self) -> String {
        format!("{} / {} / {:?}", self.scenario.name, self.failpoint, self.recovery)
    }
}

/// Every case of the matrix. Resume alternates between re-running the
/// command and `journal resume`, starting differently per driver so each
/// failpoint is resumed both ways across the two drivers.
fn cases(scenarios: &[Scenario], driver: Driver) -> Vec<Case<'_>> {
    let mut cases = Vec::new();
    let mut flip = driver == Driver::Zfs;
    for scenario in scenarios.iter().filter(|s| driver == Driver::Zfs || !s.zfs_only) {
        for failpoint in failpoints(scenario) {
            flip = !flip;
            let resume = if flip { Recovery::RerunCommand } else { Recovery::JournalResume };
            for recovery in [resume, Recovery::Rollback] {
                cases.push(Case { scenario, failpoint: failpoint.clone(), recovery });
            }
        }
    }
    cases
}

/// `STEP:before` and `STEP:after` of every step, then `STEP:during` of the
/// data-moving ones; a step that occurs more than once (one per image of
/// an import) is named by occurrence, `STEP:WHEN:N`.
fn failpoints(scenario: &Scenario) -> Vec<String> {
    let occurrences = |step: &str| scenario.steps.iter().filter(|s| **s == step).count();
    let named = |step: &str, when: &str, n: usize| match occurrences(step) {
        1 => format!("{step}:{when}"),
        _ => format!("{step}:{when}:{n}"),
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failpoints = Vec::new();
    for step in scenario.steps {
        let n = seen.entry(step).and_modify(|n| *n += 1).or_insert(1);
        failpoints.extend(["before", "after"].map(|when| named(step, when, *n)));
    }
    for step in scenario.during {
        failpoints.extend((1..=occurrences(step)).map(|n| named(step, "during", n)));
    }
    failpoints
}

#[test]
fn crash_matrix_on_dir_pool() {
    run_matrix(Driver::Dir);
}

#[test]
fn crash_matrix_on_zfs_pool() {
    run_matrix(Driver::Zfs);
}

fn run_matrix(driver: Driver) {
    let started = Instant::now();
    let scenarios = scenarios();
    let cases = cases(&scenarios, driver);
    let failures = Mutex::new(Vec::new());
    let passed = AtomicUsize::new(0);
    let record = |case: &Case, outcome: std::thread::Result<()>| match outcome {
        Ok(()) => {
            passed.fetch_add(1, Ordering::Relaxed);
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{}: {message}", case.label()));
        }
    };
    match driver {
        Driver::Dir => {
            let images = {
                let zpool = TestZpool::create();
                Images::make(&zpool)
            };
            let references: BTreeMap<_, _> =
                scenarios.iter().filter(|sc| !sc.zfs_only).map(|sc| (sc.name, reference(sc, &images, &World::new(Driver::Dir)))).collect();
            let next = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..8 {
                    scope.spawn(|| {
                        while let Some(case) = cases.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let world = World::new(Driver::Dir);
                            let reference = &references[case.scenario.name];
                            // The server's request log is shared and never checked here.
                            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                run_case(&world, &images, case, reference)
                            }));
                            record(case, outcome);
                        }
                    });
                }
            });
        }
        Driver::Zfs => {
            // One pool for every case, emptied between cases: the images'
            // guids are the same in every case, and zfs finds an
            // incremental stream's origin by guid, so cases cannot share
            // the pool at the same time.
            let mut world = World::new(Driver::Zfs);
            let images = Images::make(world.zpool().expect("zfs world has a pool"));
            let mut references = BTreeMap::new();
            for scenario in &scenarios {
                reset(&mut world);
                references.insert(scenario.name, reference(scenario, &images, &world));
            }
            for case in &cases {
                reset(&mut world);
                let reference = &references[case.scenario.name];
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&world, &images, case, reference)));
                record(case, outcome);
            }
            reset(&mut world);
        }
    }
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    println!(
        "crash matrix ({} pool): {} cases, {} passed, {:.1} s",
        driver.name(),
        cases.len(),
        passed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

/// The world after an uninterrupted run of `scenario`, checking that the
/// run journals exactly the scenario's steps.
fn reference(scenario: &Scenario, images: &Images, world: &World) -> WorldState {
    (scenario.setup)(world, images);
    imgadm(world, &(scenario.argv)(world, images)).ok();
    let op = last_operation(world);
    assert_eq!(op["state"], "succeeded", "{}: {op}", scenario.name);
    let steps: Vec<&str> = op["steps"].as_array().expect("steps").iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(steps, scenario.steps, "{}: the journaled steps are not the scenario's", scenario.name);
    WorldState::of(world)
}

fn run_case(world: &World, images: &Images, case: &Case, reference: &WorldState) {
    let scenario = case.scenario;
    (scenario.setup)(world, images);
    let before = WorldState::of(world);
    let argv = (scenario.argv)(world, images);

    let killed = world.command().args(&argv).env("IMGADM_FAILPOINT", &case.failpoint).output().expect("run imgadm");
    assert_eq!(killed.status.signal(), Some(9), "not killed by SIGKILL: {:?} {}", killed.status, String::from_utf8_lossy(&killed.stderr));
    let op = last_operation(world);
    assert_eq!(op["state"], "interrupted", "{op}");
    let id = op["id"].as_str().expect("op id").to_string();
    assert_warned(world, &id);

    let recovered = match case.recovery {
        Recovery::RerunCommand => imgadm(world, &argv),
        Recovery::JournalResume => world.imgadm(&["journal", "resume", &id]),
        Recovery::Rollback => world.imgadm(&["journal", "rollback", &id]),
    }
    .ok();
    let finishes = scenario.rollback_finishes.contains(&case.failpoint.as_str());
    let (expected_world, expected_state) = match case.recovery {
        Recovery::Rollback if finishes => {
            assert!(recovered.stdout.contains("cannot be undone"), "rollback does not say it finished instead: {}", recovered.stdout);
            (reference, "succeeded")
        }
        Recovery::Rollback => (&before, "rolled-back"),
        _ => (reference, "succeeded"),
    };
    let op = operation(world, &id);
    assert_eq!(op["state"], expected_state, "{op}");
    let after = WorldState::of(world);
    assert_eq!(&after, expected_world, "the world after recovery is not the expected one");
    assert!(!after.has_leftovers(), "leftovers after recovery: {after:?}");
    assert_journal_verifies(world);
    let listed = world.imgadm(&["list", "-j"]).ok();
    assert!(!listed.stderr.contains("was interrupted"), "still warned after recovery: {}", listed.stderr);
}

/// `journal verify`: the chain is whole and the projection matches this
/// world's pool (other tests' zfs pools may be imported meanwhile, and
/// verify looks at every pool of the driver).
fn assert_journal_verifies(world: &World) {
    let report = world.imgadm(&["journal", "verify", "-j"]).json();
    assert!(report["chain"]["first_bad_seq"].is_null(), "{report}");
    let drift: Vec<&Value> =
        report["drift"].as_array().expect("drift").iter().filter(|d| d["pool"] == world.pool.as_str()).collect();
    assert!(drift.is_empty(), "drift: {drift:?}");
}

/// Every command that reads or changes images warns, on stderr only, with
/// one line naming the operation and the commands that recover it.
fn assert_warned(world: &World, id: &str) {
    let short = &id[..12];
    for args in [&["list", "-j"][..], &["history", "-j"][..], &["list", "-H"][..]] {
        let run = world.imgadm(args).ok();
        let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.contains("was interrupted")).collect();
        assert_eq!(warnings.len(), 1, "`imgadm {}` stderr: {}", args.join(" "), run.stderr);
        assert!(
            warnings[0].contains(&format!("imgadm journal resume {short}"))
                && warnings[0].contains(&format!("imgadm journal rollback {short}")),
            "{}",
            warnings[0]
        );
        assert!(!run.stdout.contains("was interrupted"), "warning on stdout: {}", run.stdout);
        if args.contains(&"-j") {
            run.json();
        }
    }
}

/// What the matrix compares: the pool, the manifest cache, the downloads
/// and the journal's projection of installed images.
#[derive(Debug, PartialEq, Eq)]
struct WorldState {
    /// Dataset name -> origin, snapshot name -> "origin guid" (zfs); record or kept
    /// file path -> its content or size (dir).
    pool: BTreeMap<String, String>,
    cache: BTreeMap<String, String>,
    downloads: BTreeSet<String>,
    installed: BTreeSet<(String, String, String)>,
}

impl WorldState {
    fn of(world: &World) -> WorldState {
        let state = world.state.path();
        let pool = match world.zpool() {
            Some(zpool) => zfs_state(zpool),
            None => files_under(&state.join("pools").join(&world.pool)),
        };
        let journal = Journal::new(state.join("journal"));
        let installed = journal
            .installed()
            .expect("read the journal's projection")
            .into_iter()
            .map(|i| (i.pool, i.driver, i.image))
            .collect();
        WorldState {
            pool,
            cache: files_under(&state.join("images")),
            downloads: files_under(&state.join("downloads")).into_keys().collect(),
            installed,
        }
    }

    /// A `-partial` dataset, a zfs receive's `%recv`, or a temp file.
    fn has_leftovers(&self) -> bool {
        let names = self.pool.keys().chain(self.cache.keys()).chain(self.downloads.iter());
        names.into_iter().any(|n| n.contains("-partial") || n.contains('%') || n.contains(".tmp"))
    }
}

/// `zfs list` names and origins with `zfs get guid`, for the whole pool.
fn zfs_state(zpool: &TestZpool) -> BTreeMap<String, String> {
    let pool = zpool.name().to_string();
    let mut found: BTreeMap<String, String> = zpool
        .zfs(&["list", "-H", "-t", "filesystem,snapshot", "-o", "name,origin", "-r", &pool])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(name, origin)| (name.to_string(), origin.to_string()))
        .collect();
    // Only snapshot guids: a received filesystem gets a new guid on every
    // receive, a snapshot keeps the stream's (the image's dataset_guid).
    for line in zpool.zfs(&["get", "-Hp", "-r", "-o", "name,value", "guid", &pool]).lines() {
        if let Some((name, guid)) = line.split_once('\t').filter(|(name, _)| name.contains('@')) {
            if let Some(entry) = found.get_mut(name) {
                entry.push(' ');
                entry.push_str(guid);
            }
        }
    }
    found
}

/// Every file under `root`: JSON files by content, others by size.
fn files_under(root: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            let content = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => std::fs::read_to_string(&path).unwrap_or_default(),
                _ => format!("{} bytes", std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)),
            };
            found.insert(name, content);
        }
    }
    found
}

/// Empties the shared zfs pool and gives the world a fresh state directory.
fn reset(world: &mut World) {
    if let Some(zpool) = world.zpool() {
        let pool = zpool.name().to_string();
        let listed = zpool.zfs(&["list", "-H", "-t", "filesystem", "-o", "name,origin", "-r", &pool]);
        let mut datasets: Vec<(&str, &str)> =
            listed.lines().filter_map(|l| l.split_once('\t')).filter(|(name, _)| *name != pool).collect();
        // Clones first: their origins cannot go while they exist.
        datasets.sort_by_key(|(_, origin)| *origin == "-");
        for (name, _) in datasets {
            zpool.zfs(&["destroy", "-r", name]);
        }
    }
    world.state = TempDir::new().expect("temp state dir");
}

/// An image the matrix installs: its manifest and file on disk.
struct ImageFiles {
    uuid: String,
    manifest: PathBuf,
    file: PathBuf,
}

/// A full image and an incremental child of it, each with a few hundred KB
/// of incompressible data so that half way through the file is mid-stream;
/// both are files on disk (for install) and on an Images API (for import).
struct Images {
    _dir: TempDir,
    base: ImageFiles,
    child: ImageFiles,
    server: TestImgapi,
}

impl Images {
    fn make(zpool: &TestZpool) -> Images {
        let dir = TempDir::new().expect("temp dir for images");
        let base_stream = zpool.make_stream(&[("data", &noise(b"base", 300 << 10))], None);
        let base = write_image(dir.path(), BASE_MANIFEST, "base", &base_stream);
        // The child's stream is incremental from the base's @final, so the
        // base is received in the scratch pool for the time it takes.
        let base_dataset = DatasetName::image(
            &PoolName::parse(zpool.name().as_str()).expect("pool name"),
            ImageUuid::parse(BASE_UUID).expect("uuid"),
        );
        receive(zpool, &base_dataset, &base_stream);
        let child_stream = zpool.make_stream(&[("more", &noise(b"child", 200 << 10))], Some(&base_dataset));
        zpool.zfs(&["destroy", "-r", &base_dataset.to_string()]);
        let child = write_image(dir.path(), CHILD_MANIFEST, "child", &child_stream);
        // One Images API per matrix: import fetches both images from it,
        // update looks the base up in it (by its `dataset_guid`).
        let server = TestImgapi::start();
        for (image, stream) in [(&base, &base_stream), (&child, &child_stream)] {
            let mut manifest: Value = serde_json::from_slice(&read(&image.manifest)).expect("manifest JSON");
            manifest["files"][0]["dataset_guid"] = json!(stream_guids(stream).0.to_string());
            server.add_image(manifest, read(&image.file), FileCompression::Gzip);
        }
        Images { _dir: dir, base, child, server }
    }

    /// Makes the world's imgadm import from this Images API only.
    fn use_server(&self, world: &World) {
        let config = json!({"sources": [{"type": "imgapi", "url": self.server.url()}]});
        std::fs::write(world.state.path().join("imgadm.conf"), config.to_string()).expect("write imgadm.conf");
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn write_image(dir: &Path, example_manifest_name: &str, stem: &str, stream: &[u8]) -> ImageFiles {
    let file = compress(stream, "gzip");
    let manifest = describe(example_manifest(example_manifest_name), &file, "gzip");
    let (manifest_path, file_path) = write_pair(dir, stem, &manifest, &file);
    ImageFiles { uuid: manifest["uuid"].as_str().expect("uuid").to_string(), manifest: manifest_path, file: file_path }
}

fn receive(zpool: &TestZpool, dataset: &DatasetName, stream: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new("zfs")
        .args(["receive", "-u", &dataset.to_string()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run zfs receive");
    child.stdin.take().expect("stdin").write_all(stream).expect("feed zfs receive");
    assert!(child.wait().expect("zfs receive").success(), "zfs receive into {} failed", zpool.name());
}

/// Incompressible bytes, the same for the same seed.
fn noise(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 20);
    let mut block = Sha1::digest(seed).to_vec();
    while out.len() < len {
        block = Sha1::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

fn install_argv(world: &World, image: &ImageFiles) -> Vec<String> {
    strings(&["install", "-P", &world.pool, "-m", &path_text(&image.manifest), "-f", &path_text(&image.file)])
}

fn install(world: &World, image: &ImageFiles) {
    imgadm(world, &install_argv(world, image)).ok();
}

fn imgadm(world: &World, argv: &[String]) -> Run {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    world.imgadm(&args)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_string()
}

fn last_operation(world: &World) -> Value {
    let ops = world.imgadm(&["journal", "list", "-j"]).ok().json();
    ops.as_array().and_then(|a| a.last()).cloned().unwrap_or(json!(null))
}

fn operation(world: &World, id: &str) -> Value {
    let ops = world.imgadm(&["journal", "list", "-j"]).ok().json();
    ops.as_array().and_then(|a| a.iter().find(|o| o["id"] == id)).cloned().unwrap_or(json!(null))
}
