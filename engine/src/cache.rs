//! The manifest cache, `STATE/images/POOL-UUID.json`, in the real imgadm's
//! format: `{"manifest": {...}, "zpool": "POOL", "source": "URL"}` (source
//! omitted for a local install), 2-space JSON and a newline. It is a cache:
//! the pool is the authority on whether an image exists.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::ids::{ImageUuid, PoolName};
use crate::manifest::Manifest;
use crate::state::StateDir;

#[derive(Clone, Debug)]
pub struct CachedInfo {
    pub manifest: Manifest,
    pub source: Option<String>,
}

/// The cache file's bytes for an image: what `cache` writes and what its
/// probe compares.
pub fn render(manifest: &Manifest, pool: &PoolName, source: Option<&str>) -> Vec<u8> {
    let mut record = Map::new();
    record.insert("manifest".to_string(), manifest.to_value());
    record.insert("zpool".to_string(), json!(pool.as_str()));
    if let Some(source) = source {
        record.insert("source".to_string(), json!(source));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(record)).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

/// Reads the cached manifest of an installed image. A missing, unreadable
/// or mismatched cache file is not an error: the image then shows with its
/// uuid only, as in the real imgadm.
pub fn read(state: &StateDir, pool: &PoolName, uuid: ImageUuid) -> CachedInfo {
    let minimal = || CachedInfo { manifest: minimal_manifest(uuid), source: None };
    let path = state.cache_path(pool, uuid);
    let Ok(bytes) = std::fs::read(&path) else { return minimal() };
    let Ok(Value::Object(mut record)) = serde_json::from_slice::<Value>(&bytes) else {
        tracing::warn!(path = %path.display(), "ignoring corrupt manifest cache file");
        return minimal();
    };
    let source = record.get("source").and_then(Value::as_str).map(str::to_string);
    let Some(manifest) = record.remove("manifest").and_then(|m| Manifest::from_value(m).ok()) else {
        return minimal();
    };
    if manifest.uuid().ok() != Some(uuid) {
        tracing::warn!(path = %path.display(), "ignoring manifest cache file for another uuid");
        return minimal();
    }
    CachedInfo { manifest, source }
}

/// The current bytes of the cache file, if any (kept by `cache` so its undo
/// can put them back).
pub fn read_raw(state: &StateDir, pool: &PoolName, uuid: ImageUuid) -> Result<Option<Vec<u8>>> {
    let path = state.cache_path(pool, uuid);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_path("cannot read manifest cache", &path, e)),
    }
}

pub fn write_raw(state: &StateDir, pool: &PoolName, uuid: ImageUuid, bytes: &[u8]) -> Result<()> {
    // The directory's own entry must be durable too, or a power cut takes
    // the cache file with it after `cache` was reported done.
    fsutil::create_dir_durable(&state.images_dir())?;
    fsutil::write_file_atomic(&state.cache_path(pool, uuid), bytes)
}

pub fn remove(state: &StateDir, pool: &PoolName, uuid: ImageUuid) -> Result<()> {
    fsutil::remove_durable(&state.cache_path(pool, uuid))
}

/// What is known of an image without its cache file: its uuid.
fn minimal_manifest(uuid: ImageUuid) -> Manifest {
    let mut fields = Map::new();
    fields.insert("uuid".to_string(), json!(uuid.to_string()));
    Manifest::from_map(fields)
}
