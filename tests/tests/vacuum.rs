//! vacuum: unused images to a fixed point, leaves first; `-n` deletes
//! nothing and asks nothing; `-f` does not ask.

use imgadm_tests::harness::*;

/// `imgadm vacuum -P POOL ARGS`: without -P a vacuum acts on every imported
/// pool, other tests' pools included.
fn vacuum(w: &World, args: &[&str]) -> Run {
    let mut argv = vec!["vacuum", "-P", &w.pool];
    argv.extend_from_slice(args);
    w.imgadm(&argv)
}

fn base_line() -> String {
    format!("{BASE_UUID} (example-base@1.0.0)")
}

fn child_line() -> String {
    format!("{CHILD_UUID} (example-child@1.0.0)")
}

#[test]
fn only_the_unused_leaf_goes_then_the_rest_once_its_vm_is_gone() {
    let w = World::new(Driver::Zfs);
    let z = w.zpool().unwrap();
    w.install_example_base().ok();
    w.install_example_child().ok();
    // A "VM" using the base: a clone of its @final.
    let vm = format!("{}/{}", w.pool, uuid::Uuid::new_v4());
    z.zfs(&["clone", &format!("{}/{BASE_UUID}@final", w.pool), &vm]);

    let run = vacuum(&w, &["-n"]).ok();
    assert_eq!(run.stdout, format!("[dry-run] Deleted image {}\n", child_line()));
    assert_eq!(w.listed().len(), 2, "-n deleted something");

    let run = vacuum(&w, &["-f"]).ok();
    assert_eq!(run.stdout, format!("Deleted image {}\n", child_line()));
    assert_eq!(w.listed(), [BASE_UUID]);

    z.zfs(&["destroy", &vm]);
    let run = vacuum(&w, &["-f"]).ok();
    assert_eq!(run.stdout, format!("Deleted image {}\n", base_line()));
    assert!(w.listed().is_empty());
    // Nothing left to do: nothing printed.
    assert_eq!(vacuum(&w, &["-f"]).ok().stdout, "");

    let ops = w.imgadm(&["journal", "list", "-j"]).ok().json();
    let vacuums: Vec<_> = ops.as_array().unwrap().iter().filter(|o| o["verb"] == "vacuum").collect();
    assert_eq!(vacuums.len(), 2);
    let steps: Vec<&str> = vacuums[0]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["plan", "lock", "check", "destroy", "uncache", "unlock"]);
}

#[test]
fn a_whole_unused_chain_goes_leaves_first_on_the_dir_pool() {
    let w = World::new(Driver::Dir);
    w.install_example_base().ok();
    w.install_example_child().ok();
    let run = vacuum(&w, &["--dry-run"]).ok();
    assert_eq!(run.stdout, format!("[dry-run] Deleted image {}\n[dry-run] Deleted image {}\n", child_line(), base_line()));
    assert_eq!(w.listed().len(), 2);
    let run = vacuum(&w, &["--force"]).ok();
    assert_eq!(run.stdout, format!("Deleted image {}\nDeleted image {}\n", child_line(), base_line()));
    assert!(w.listed().is_empty());
    assert!(w.state_files().iter().all(|f| !f.starts_with("images/")), "{:?}", w.state_files());
}

#[test]
fn positional_args_are_a_usage_error_and_nothing_runs() {
    let w = World::new(Driver::Dir);
    w.install_example_base().ok();
    vacuum(&w, &["-f", BASE_UUID]).fails_with(2, "Usage");
    assert_eq!(w.listed(), [BASE_UUID]);
}
