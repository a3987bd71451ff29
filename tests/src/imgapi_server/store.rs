//! What the server holds: each image's manifest (kept in the field order the
//! real server prints) and its file bytes with the checksums it advertises.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use imgadm_engine::ids::ImageUuid;
use md5::Md5;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

use super::FileCompression;

/// The order sdc-imgapi's API view prints manifest fields in
/// (`imgapi.md` section 4); unknown fields follow in the order given.
const API_FIELD_ORDER: &[&str] = &[
    "v",
    "uuid",
    "owner",
    "name",
    "version",
    "state",
    "disabled",
    "public",
    "published_at",
    "type",
    "os",
    "files",
    "acl",
    "description",
    "homepage",
    "eula",
    "icon",
    "urn",
    "requirements",
    "users",
    "generate_passwords",
    "inherited_directories",
    "origin",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
    "tags",
    "billing_tags",
    "traits",
    "error",
    "channels",
];

/// Which API view a client negotiated with `Accept-Version`; the only
/// difference is that v1 leaves out `channels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ApiVersion {
    V1,
    V2,
}

#[derive(Default)]
pub(super) struct Store {
    images: HashMap<ImageUuid, StoredImage>,
    /// Insertion counter: breaks `published_at` ties so listings are stable.
    next_seq: u64,
}

pub(super) struct StoredImage {
    /// The manifest as the v2 view shows it, with `state`, `files` and
    /// (on a server with channels) `channels`; `billing_tags` and `traits`
    /// are kept but hidden by [`StoredImage::view`].
    pub manifest: Map<String, Value>,
    pub file: Option<StoredFile>,
    seq: u64,
}

#[derive(Clone)]
pub(super) struct StoredFile {
    pub bytes: Bytes,
    pub sha1: String,
    pub md5_base64: String,
    pub compression: FileCompression,
    pub dataset_guid: Option<String>,
    pub uploaded_at: DateTime<Utc>,
}

impl StoredFile {
    pub fn new(
        bytes: Bytes,
        compression: FileCompression,
        dataset_guid: Option<String>,
    ) -> StoredFile {
        StoredFile {
            sha1: hex::encode(Sha1::digest(&bytes)),
            md5_base64: base64(&Md5::digest(&bytes)),
            bytes,
            compression,
            dataset_guid,
            uploaded_at: Utc::now(),
        }
    }

    fn manifest_entry(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("sha1".into(), self.sha1.clone().into());
        entry.insert("size".into(), (self.bytes.len() as u64).into());
        entry.insert("compression".into(), self.compression.as_str().into());
        if let Some(guid) = &self.dataset_guid {
            entry.insert("dataset_guid".into(), guid.clone().into());
        }
        Value::Object(entry)
    }
}

impl Store {
    pub fn get(&self, uuid: &ImageUuid) -> Option<&StoredImage> {
        self.images.get(uuid)
    }

    pub fn get_mut(&mut self, uuid: &ImageUuid) -> Option<&mut StoredImage> {
        self.images.get_mut(uuid)
    }

    pub fn contains(&self, uuid: &ImageUuid) -> bool {
        self.images.contains_key(uuid)
    }

    pub fn remove(&mut self, uuid: &ImageUuid) {
        self.images.remove(uuid);
    }

    pub fn images(&self) -> impl Iterator<Item = &StoredImage> {
        self.images.values()
    }

    /// Stores `manifest` (already shaped by the caller: state, owner,
    /// channels) under `uuid`, replacing any image of that uuid.
    pub fn insert(
        &mut self,
        uuid: ImageUuid,
        manifest: Map<String, Value>,
        file: Option<StoredFile>,
    ) -> &mut StoredImage {
        self.next_seq += 1;
        let mut image = StoredImage {
            manifest: in_api_order(manifest),
            file: None,
            seq: self.next_seq,
        };
        image.set_file(file);
        self.images.insert(uuid, image);
        self.images.get_mut(&uuid).expect("just inserted")
    }

    /// Whether some image names `uuid` as its origin (DeleteImage refuses).
    pub fn has_dependents(&self, uuid: &ImageUuid) -> bool {
        let uuid = uuid.to_string();
        self.images
            .values()
            .any(|image| image.manifest.get("origin").and_then(Value::as_str) == Some(&uuid))
    }
}

impl StoredImage {
    pub fn state(&self) -> &str {
        self.manifest
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("unactivated")
    }

    pub fn is_activated(&self) -> bool {
        self.state() != "unactivated"
    }

    pub fn is_disabled(&self) -> bool {
        self.manifest
            .get("disabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub fn set_field(&mut self, name: &str, value: Value) {
        self.manifest.insert(name.into(), value);
        self.manifest = in_api_order(std::mem::take(&mut self.manifest));
    }

    /// Replaces the file and the manifest's `files` entry that describes it.
    pub fn set_file(&mut self, file: Option<StoredFile>) {
        let entries: Vec<Value> = file.iter().map(StoredFile::manifest_entry).collect();
        self.file = file;
        self.set_field("files", Value::Array(entries));
    }

    pub fn channels(&self) -> Vec<String> {
        self.manifest
            .get("channels")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn in_channel(&self, channel: &str) -> bool {
        self.channels().iter().any(|name| name == channel)
    }

    /// When the image was published, for sorting and markers; sdc-imgapi
    /// sorts images without one (unactivated) as time 0.
    pub fn published_at(&self) -> DateTime<Utc> {
        self.manifest
            .get("published_at")
            .and_then(Value::as_str)
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&Utc))
            .unwrap_or(DateTime::UNIX_EPOCH)
    }

    pub fn sort_key(&self) -> (DateTime<Utc>, u64) {
        (self.published_at(), self.seq)
    }

    /// The manifest as a client sees it: a public-mode server hides
    /// `billing_tags` and `traits`, and the v1 view has no `channels`.
    pub fn view(&self, version: ApiVersion) -> Value {
        let mut shown = self.manifest.clone();
        shown.remove("billing_tags");
        shown.remove("traits");
        if version == ApiVersion::V1 {
            shown.remove("channels");
        }
        Value::Object(shown)
    }
}

pub(super) fn in_api_order(mut manifest: Map<String, Value>) -> Map<String, Value> {
    let mut ordered = Map::new();
    for field in API_FIELD_ORDER {
        if let Some(value) = manifest.remove(*field) {
            ordered.insert((*field).to_string(), value);
        }
    }
    ordered.extend(manifest);
    ordered
}

/// `published_at` as sdc-imgapi writes it on activation.
pub(super) fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Standard base64 with padding, for the `Content-MD5` header (16 bytes, so
/// a dependency would be more code than this).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let padded = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let bits = u32::from_be_bytes([0, padded[0], padded[1], padded[2]]);
        for position in 0..4 {
            if position <= group.len() {
                out.push(ALPHABET[(bits >> (18 - 6 * position) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_recorded_content_md5() {
        // md5 of payload.gz as the real server advertised it in 20-getfile.
        let md5 = hex::decode("b5b582d718bfd3bb9816539004ce7f1f").unwrap();
        assert_eq!(super::base64(&md5), "tbWC1xi/07uYFlOQBM5/Hw==");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"a"), "YQ==");
    }
}
