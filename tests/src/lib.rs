//! Test support for imgadm-rs's end-to-end tests: a world per test (state
//! directory, pool, the real binary), a real zfs-fuse pool per test, a
//! test Images API server that behaves as the recorded real one, and a
//! power-loss file system that drops what was not fsynced.

pub mod harness;
pub mod images;
pub mod imgapi_server;
pub mod powerloss;
pub mod vms;
pub mod zfs;

/// Runs each named scenario (a `fn(Driver)` of the test file, with
/// `Driver` in scope) on both drivers, as two tests: `dir::NAME` and
/// `zfs::NAME`.
#[macro_export]
macro_rules! on_both_pools {
    ($($name:ident),* $(,)?) => {
        mod dir { $( #[test] fn $name() { super::$name(super::Driver::Dir) } )* }
        mod zfs { $( #[test] fn $name() { super::$name(super::Driver::Zfs) } )* }
    };
}
