//! Test support for imgadm: real ZFS pools (zfs-fuse) and, later, the dir pool
//! and a test Images API server.

pub mod zfs;
