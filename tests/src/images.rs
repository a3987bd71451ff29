//! Image files and manifests for tests: the repo's example images, turned
//! into other compressions, truncated, corrupted, or paired with a manifest
//! that lies about them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::harness::example;

pub fn read_example(name: &str) -> Vec<u8> {
    std::fs::read(example(name)).unwrap_or_else(|e| panic!("cannot read example {name}: {e}"))
}

pub fn example_manifest(name: &str) -> Value {
    serde_json::from_slice(&read_example(name)).expect("example manifest is JSON")
}

/// The uncompressed ZFS send stream of a gzip example.
pub fn raw_stream(gz_name: &str) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(read_example(gz_name).as_slice())
        .read_to_end(&mut raw)
        .expect("example is valid gzip");
    raw
}

pub fn compress(raw: &[u8], compression: &str) -> Vec<u8> {
    match compression {
        "none" => raw.to_vec(),
        "gzip" => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(raw).expect("gzip");
            enc.finish().expect("gzip")
        }
        "bzip2" => {
            let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            enc.write_all(raw).expect("bzip2");
            enc.finish().expect("bzip2")
        }
        "xz" => {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
            enc.write_all(raw).expect("xz");
            enc.finish().expect("xz")
        }
        other => panic!("unknown compression {other}"),
    }
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// `manifest` with `files[0]` describing `file` truthfully.
pub fn describe(mut manifest: Value, file: &[u8], compression: &str) -> Value {
    manifest["files"] = json!([{"sha1": sha1_hex(file), "size": file.len(), "compression": compression}]);
    manifest
}

/// Writes a manifest and a file into `dir`; returns their paths.
pub fn write_pair(dir: &Path, stem: &str, manifest: &Value, file: &[u8]) -> (PathBuf, PathBuf) {
    let manifest_path = dir.join(format!("{stem}.imgmanifest"));
    let file_path = dir.join(format!("{stem}.zfs"));
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(manifest).expect("json")).expect("write manifest");
    std::fs::write(&file_path, file).expect("write file");
    (manifest_path, file_path)
}

/// Flips one byte in the middle of `bytes`.
pub fn corrupt_middle(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let middle = out.len() / 2;
    out[middle] ^= 0x5a;
    out
}
