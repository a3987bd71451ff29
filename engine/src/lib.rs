//! imgadm's engine (being built).
//!
//! - `compression`: the manifest's file compressions, magic sniffing, streaming decoders and encoders.
//! - `fsutil`: durable file helpers (atomic write, rename, copy, remove, each followed by a directory fsync).
//! - `zstream`: a streaming ZFS send-stream validator (BEGIN, framing, Fletcher-4 checksums, END).
//! - `pool::dir`: the embedded dir pool, records and image files under `STATE/pools/NAME/`.

pub mod compression;
pub mod error;
pub mod fsutil;
pub mod ids;
pub mod pool;
pub mod zstream;

pub use error::{Error, Result};
