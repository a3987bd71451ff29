//! The codecs that use every core: parallel bzip2 decoding, liblzma's
//! threaded xz decoder and encoder, and parallel gzip compression.
//! [`crate::compression`] picks them; each falls back to its one-thread
//! counterpart there when no thread can be started.

pub mod bzip2;
pub mod gzip;
#[cfg(test)]
pub mod testdata;
pub mod workers;
pub mod xz;
