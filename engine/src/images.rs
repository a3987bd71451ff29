//! Which datasets of a pool are images, and what is known about each.
//!
//! A dataset is an image when it is `POOL/UUID` exactly, is not a zone's
//! root, has an `@final` snapshot whenever it is a clone of an `@final`
//! (a VM's root cloned from an image is not an image), and is not marked
//! `imgadm:ignore`. Unlike the real imgadm, pool names with digits count.
//! Every clone of any snapshot of an image counts as a use of it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::cache;
use crate::error::Result;
use crate::ids::{DatasetName, ImageUuid, PoolName, SnapName};
use crate::manifest::Manifest;
use crate::pool::{DatasetEntry, DriverKind, EntryKind, Pool};
use crate::state::StateDir;

/// An installed image: `get`, `list -j` and `ancestry -j` print this.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    pub manifest: Value,
    pub zpool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub driver: DriverKind,
    #[serde(rename = "cloneNames")]
    pub clone_names: Vec<String>,
    pub clones: usize,
    #[serde(skip)]
    pub uuid: ImageUuid,
    #[serde(skip)]
    pub parsed: Manifest,
}

/// What one pool holds, from one listing.
pub struct PoolImages {
    pub pool: PoolName,
    pub images: BTreeMap<ImageUuid, Vec<String>>,
    entries: Vec<DatasetEntry>,
}

impl PoolImages {
    pub fn scan(pool: &dyn Pool, zone_roots: &HashSet<String>) -> Result<PoolImages> {
        let entries = pool.entries()?;
        let prefix = format!("{}/", pool.name());
        let with_final: HashSet<&str> =
            entries.iter().filter_map(|e| e.name.strip_suffix("@final")).collect();
        let mut clones_of: HashMap<&str, Vec<String>> = HashMap::new();
        for entry in &entries {
            if let Some(origin) = &entry.origin {
                let origin_ds = origin.split('@').next().unwrap_or(origin);
                clones_of.entry(origin_ds).or_default().push(entry.name.clone());
            }
        }
        let mut images = BTreeMap::new();
        for entry in &entries {
            if entry.kind == EntryKind::Snapshot {
                continue;
            }
            let Some(rest) = entry.name.strip_prefix(&prefix) else { continue };
            let Ok(uuid) = ImageUuid::parse(rest) else { continue };
            if entry.mountpoint.as_deref().is_some_and(|m| zone_roots.contains(m)) {
                continue;
            }
            let is_final_clone = entry.origin.as_deref().is_some_and(|o| o.ends_with("@final"));
            if is_final_clone && !with_final.contains(entry.name.as_str()) {
                continue;
            }
            if ignored(entry.ignore.as_deref(), &entry.name) {
                continue;
            }
            let clones = clones_of.get(entry.name.as_str()).cloned().unwrap_or_default();
            images.insert(uuid, clones);
        }
        Ok(PoolImages { pool: pool.name().clone(), images, entries })
    }

    /// Every descendant of `POOL/UUID` (its snapshots and child datasets) and
    /// every dataset cloned from one of its snapshots, for `get -r`.
    pub fn children(&self, uuid: ImageUuid) -> (Vec<String>, Vec<String>) {
        let name = DatasetName::image(&self.pool, uuid).to_string();
        let snap_prefix = format!("{name}@");
        let child_prefix = format!("{name}/");
        let snapshots = self
            .entries
            .iter()
            .filter(|e| e.name.starts_with(&snap_prefix) || e.name.starts_with(&child_prefix))
            .map(|e| e.name.clone())
            .collect();
        let clones = self
            .entries
            .iter()
            .filter(|e| e.origin.as_deref().is_some_and(|o| o.starts_with(&snap_prefix)))
            .map(|e| e.name.clone())
            .collect();
        (snapshots, clones)
    }

    /// Whether `POOL/UUID` exists at all (an image or not: `get` and
    /// `delete` of a non-image dataset say it is not an image).
    pub fn dataset_exists(&self, uuid: ImageUuid) -> bool {
        let name = DatasetName::image(&self.pool, uuid).to_string();
        self.entries.iter().any(|e| e.name == name)
    }

    pub fn has_final(&self, uuid: ImageUuid) -> bool {
        let name = DatasetName::image(&self.pool, uuid).snapshot(&SnapName::final_());
        self.entries.iter().any(|e| e.name == name)
    }

    pub fn info(&self, state: &StateDir, driver: DriverKind, uuid: ImageUuid) -> ImageInfo {
        let cached = cache::read(state, &self.pool, uuid);
        let clone_names = self.images.get(&uuid).cloned().unwrap_or_default();
        ImageInfo {
            manifest: cached.manifest.to_value(),
            zpool: self.pool.to_string(),
            source: cached.source,
            driver,
            clones: clone_names.len(),
            clone_names,
            uuid,
            parsed: cached.manifest,
        }
    }
}

fn ignored(value: Option<&str>, name: &str) -> bool {
    match value {
        None | Some("-") | Some("") => false,
        Some(v) if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes") => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("no") => false,
        Some(v) => {
            tracing::warn!(dataset = name, value = v, "unexpected imgadm:ignore value, taken as false");
            false
        }
    }
}

/// Zone roots on SmartOS (`zoneadm list -pc`, 4th field); none elsewhere.
pub fn zone_roots() -> HashSet<String> {
    let Ok(output) = std::process::Command::new("zoneadm").args(["list", "-pc"]).output() else {
        return HashSet::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(':').nth(3).map(str::to_string))
        .collect()
}
