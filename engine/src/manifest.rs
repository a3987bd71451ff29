//! Image manifests (imgmanifest 3.1): the manifest kept exactly as given,
//! typed accessors for the fields the engine reads, the v1 -> v2 upgrade and
//! `validateMinimalManifest` (what `install` and `create` require).
//!
//! A manifest stays a JSON object rather than a struct: imgadm stores, caches,
//! prints and publishes manifests byte-for-byte as it got them (field order
//! included), and servers add fields this code does not know about.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::ids::ImageUuid;

/// The manifest spec version this code writes and validates.
pub const MANIFEST_V: u64 = 2;

/// Every top-level field validateMinimalManifest knows, in the order it
/// validates them (which is the order problems are reported in).
pub const KNOWN_FIELDS: &[&str] = &[
    "v",
    "uuid",
    "urn",
    "owner",
    "name",
    "version",
    "description",
    "homepage",
    "eula",
    "disabled",
    "activated",
    "published_at",
    "state",
    "public",
    "type",
    "os",
    "origin",
    "error",
    "files",
    "icon",
    "acl",
    "requirements",
    "users",
    "billing_tags",
    "traits",
    "tags",
    "generate_passwords",
    "inherited_directories",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
    "channels",
];

/// Fields `create` copies from the origin image into an incremental image's
/// manifest when the user did not give them.
pub const INHERITABLE_FIELDS: &[&str] = &[
    "type",
    "os",
    "requirements",
    "users",
    "billing_tags",
    "traits",
    "generate_passwords",
    "inherited_directories",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
];

/// Fields validateMinimalManifest requires.
const REQUIRED_FIELDS: &[&str] = &["v", "uuid", "name", "version", "type", "os"];

pub const VALID_TYPES: &[&str] = &["zone-dataset", "zvol", "lx-dataset", "docker", "other"];
pub const VALID_OSES: &[&str] = &["smartos", "linux", "windows", "bsd", "illumos", "other"];
pub const VALID_STATES: &[&str] = &["active", "unactivated", "disabled", "failed", "creating"];
pub const VALID_COMPRESSIONS: &[&str] = &["gzip", "bzip2", "xz", "none"];

const MAX_NAME_LENGTH: usize = 1024;
const MAX_VERSION_LENGTH: usize = 512;
const MAX_DESCRIPTION_LENGTH: usize = 10240;
const MAX_URL_LENGTH: usize = 1024;
const MAX_BILLING_TAG_LENGTH: usize = 128;
const MAX_TAGS_LENGTH: usize = 100 * 1024;
const MIN_PLATFORM_YEAR: u32 = 2012;

/// An image manifest: a JSON object, kept as given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Manifest(Map<String, Value>);

/// `files[0]` of a manifest: the one image file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestFile {
    pub sha1: Option<String>,
    pub size: Option<u64>,
    pub compression: Option<String>,
    /// The ZFS guid of the image's `@final` snapshot (used by `update`).
    /// Servers write it as a string; a number is accepted too.
    pub dataset_guid: Option<String>,
}

impl Manifest {
    pub fn from_map(map: Map<String, Value>) -> Manifest {
        Manifest(map)
    }

    /// Parses a manifest file's bytes: must be a JSON object.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Manifest> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest(e.to_string()))?;
        Manifest::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Manifest> {
        match value {
            Value::Object(map) => Ok(Manifest(map)),
            other => Err(Error::InvalidManifest(format!(
                "not a JSON object: {}",
                js::type_name(&other)
            ))),
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    /// Sets a field; an existing field keeps its place in the field order.
    pub fn set(&mut self, field: &str, value: Value) {
        self.0.insert(field.to_string(), value);
    }

    /// Removes a field, keeping the order of the others.
    pub fn remove(&mut self, field: &str) -> Option<Value> {
        self.0.shift_remove(field)
    }

    fn get_str(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(Value::as_str)
    }

    /// The image uuid; a missing or malformed one is `InvalidUUID` (as the
    /// real imgadm reports a bad `manifest.uuid` on install).
    pub fn uuid(&self) -> Result<ImageUuid> {
        match self.0.get("uuid") {
            Some(Value::String(text)) => ImageUuid::parse(text),
            Some(other) => Err(Error::InvalidUuid(js::to_js_string(other))),
            None => Err(Error::InvalidUuid("undefined".to_string())),
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.get_str("name")
    }

    pub fn version(&self) -> Option<&str> {
        self.get_str("version")
    }

    /// The origin image of an incremental image; a malformed one is
    /// `InvalidUUID` so that it never reaches a dataset name.
    pub fn origin(&self) -> Result<Option<ImageUuid>> {
        match self.0.get("origin") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => ImageUuid::parse(text).map(Some),
            Some(other) => Err(Error::InvalidUuid(js::to_js_string(other))),
        }
    }

    pub fn published_at(&self) -> Option<&str> {
        self.get_str("published_at")
    }

    pub fn state(&self) -> Option<&str> {
        self.get_str("state")
    }

    pub fn type_(&self) -> Option<&str> {
        self.get_str("type")
    }

    pub fn os(&self) -> Option<&str> {
        self.get_str("os")
    }

    pub fn requirements(&self) -> Option<&Map<String, Value>> {
        self.0.get("requirements").and_then(Value::as_object)
    }

    /// `files[0]`, if the manifest has a files array with an object in it.
    pub fn files0(&self) -> Option<ManifestFile> {
        let file = self.0.get("files")?.as_array()?.first()?.as_object()?;
        let text = |key: &str| file.get(key).and_then(Value::as_str).map(str::to_string);
        let dataset_guid = match file.get("dataset_guid") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Some(ManifestFile {
            sha1: text("sha1"),
            size: file.get("size").and_then(Value::as_u64),
            compression: text("compression"),
            dataset_guid,
        })
    }

    /// `UUID (NAME@VERSION)`, as imgadm names an image in its messages;
    /// just `UUID` when the manifest has no name.
    pub fn title(&self) -> String {
        let uuid = self.0.get("uuid").map(js::to_js_string).unwrap_or_default();
        match (self.name(), self.version()) {
            (Some(name), Some(version)) => format!("{uuid} ({name}@{version})"),
            (Some(name), None) => format!("{uuid} ({name})"),
            _ => uuid,
        }
    }

    /// What `install` does first: a manifest without a `published_at` (or
    /// with an empty or null one) is published now.
    pub fn ensure_published_at(&mut self, now: DateTime<Utc>) {
        let has_one = self.0.get("published_at").is_some_and(js::is_truthy);
        if !has_one {
            self.set(
                "published_at",
                Value::String(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
            );
        }
    }

    /// Upgrades a v1 (DSAPI-era) manifest to v2; a v2 manifest comes back
    /// unchanged. A manifest that is neither is `InvalidManifest`.
    pub fn upgrade(self) -> Result<Manifest> {
        let has_v = self.0.get("v").is_some_and(js::is_truthy);
        let has_creator = self.0.get("creator_uuid").is_some_and(js::is_truthy);
        let version = if has_v {
            let v = self.0.get("v").map(js::to_number).unwrap_or(f64::NAN);
            if v.is_nan() {
                return Err(Error::InvalidManifest(format!(
                    "manifest \"v\" field is not a number: {}",
                    self.0.get("v").map(js::to_json).unwrap_or_default()
                )));
            }
            v
        } else if has_creator {
            1.0
        } else {
            return Err(Error::InvalidManifest(
                "manifest does not have a \"v\" field".to_string(),
            ));
        };
        if version >= MANIFEST_V as f64 {
            return Ok(self);
        }
        if !has_creator {
            return Err(Error::InvalidManifest(
                "v1 manifest does not have a \"creator_uuid\" field".to_string(),
            ));
        }
        self.upgrade_v1_to_v2()
    }

    fn upgrade_v1_to_v2(mut self) -> Result<Manifest> {
        self.uuid()?;
        if let Some(creator) = self.remove("creator_uuid") {
            if self.0.contains_key("owner") {
                return Err(Error::InvalidManifest(
                    "v1 manifest has both \"owner\" and \"creator_uuid\"".to_string(),
                ));
            }
            self.set("owner", creator);
        }
        // "creator_admin" is a bogus field in some old DSAPI datasets.
        for dropped in ["vendor_uuid", "creator_name", "cloud_name", "creator_admin"] {
            self.remove(dropped);
        }

        match self.remove("restricted_to_uuid").filter(js::is_truthy) {
            Some(restricted_to) => {
                if self.0.contains_key("public") {
                    return Err(Error::InvalidManifest(
                        "v1 manifest has both \"public\" and \"restricted_to_uuid\"".to_string(),
                    ));
                }
                self.set("public", Value::Bool(false));
                self.set("acl", Value::Array(vec![restricted_to]));
            }
            None => self.set("public", Value::Bool(true)),
        }
        self.remove("owner_uuid");

        let disabled = self.0.get("disabled").is_some_and(js::is_truthy);
        self.set("disabled", Value::Bool(disabled));
        self.set(
            "state",
            Value::String(if disabled { "disabled" } else { "active" }.to_string()),
        );

        if !self.0.get("published_at").is_some_and(js::is_truthy) {
            if let Some(created_at) = self.0.get("created_at").filter(|v| js::is_truthy(v)).cloned() {
                self.set("published_at", created_at);
            }
        }
        // IMGAPI wants seconds: "YYYY-MM-DDTHH:MMZ" becomes "YYYY-MM-DDTHH:MM:00Z".
        if let Some(published_at) = self.published_at() {
            if contains_minutes_only_timestamp(published_at) {
                let fixed = format!("{}:00Z", &published_at[..published_at.len() - 1]);
                self.set("published_at", Value::String(fixed));
            }
        }

        if let Some(Value::Array(files)) = self.0.get_mut("files") {
            for file in files.iter_mut().filter_map(Value::as_object_mut) {
                if !file.get("compression").is_some_and(js::is_truthy) {
                    let location = ["path", "url"]
                        .iter()
                        .filter_map(|k| file.get(*k).and_then(Value::as_str))
                        .find(|s| !s.is_empty())
                        .unwrap_or("");
                    let compression = match file_extension(location) {
                        ".gz" => "gzip",
                        ".bz2" => "bzip2",
                        _ => "none",
                    };
                    file.insert("compression".to_string(), Value::String(compression.to_string()));
                }
                file.shift_remove("path");
                file.shift_remove("url");
            }
        }

        // IMGAPI-104: image_size is a number.
        if let Some(size) = self.0.get("image_size").filter(|v| js::is_truthy(v)) {
            if let Some(number) = js::number_value(js::to_number(size)) {
                self.set("image_size", number);
            }
        }

        // "_url" is data the pre-v2 imgadm stashed in its manifests.
        for dropped in ["platform_type", "created_at", "updated_at", "_url"] {
            self.remove(dropped);
        }
        self.set("v", Value::from(MANIFEST_V));
        Ok(self)
    }

    /// validateMinimalManifest: the required fields are there and every
    /// field present is valid. Reports every problem at once.
    pub fn validate_minimal(&self) -> Result<()> {
        let problems = self.minimal_problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::ManifestValidation(
                problems.iter().map(Problem::render).collect(),
            ))
        }
    }

    fn minimal_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for field in REQUIRED_FIELDS {
            match self.0.get(*field) {
                None => problems.push(Problem::missing(field)),
                Some(value) => self.check_field(field, value, &mut problems),
            }
        }
        for field in KNOWN_FIELDS.iter().filter(|f| !REQUIRED_FIELDS.contains(f)) {
            if let Some(value) = self.0.get(*field) {
                self.check_field(field, value, &mut problems);
            } else {
                self.check_absent_field(field, &mut problems);
            }
        }
        for field in self.0.keys().filter(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            problems.push(Problem::invalid(field));
        }
        problems
    }

    fn activated(&self) -> bool {
        matches!(self.0.get("activated").map(bool_like), Some(Some(true)))
    }

    fn is_zvol(&self) -> bool {
        self.type_() == Some("zvol")
    }

    /// Fields that are required only in some situations.
    fn check_absent_field(&self, field: &str, problems: &mut Vec<Problem>) {
        match field {
            "published_at" | "files" if self.activated() => problems.push(Problem::missing_with(
                field,
                format!("if activated is \"true\" {field} must be present"),
            )),
            "nic_driver" | "disk_driver" | "cpu_type" | "image_size" if self.is_zvol() => {
                problems.push(Problem::missing(field))
            }
            _ => {}
        }
    }

    fn check_field(&self, field: &str, value: &Value, problems: &mut Vec<Problem>) {
        let mut say = |message: String| problems.push(Problem::invalid_with(field, message));
        match field {
            "v" => {
                let v = js::to_number(value);
                if v.is_nan() || v < 0.0 {
                    say("\"v\" must be a positive integer".to_string());
                }
            }
            "uuid" | "owner" | "origin" if value.as_str().is_none_or(|s| ImageUuid::parse(s).is_err()) => {
                problems.push(Problem::invalid(field))
            }
            "urn" if !value.is_string() => problems.push(Problem::invalid(field)),
            "name" => match value.as_str() {
                None => say(not_a("name", "string", value)),
                Some(name) if js::length(name) > MAX_NAME_LENGTH => {
                    say(format!("image name is too long, max {MAX_NAME_LENGTH} characters"))
                }
                Some(name) if !all_chars(name, |c| c.is_ascii_alphanumeric() || "._/ -".contains(c)) => {
                    say("image name has invalid characters (only alpha-numeric characters and \" \", \".\", \"-\", \"_\" and \"/\" are allowed)".to_string())
                }
                Some(_) => {}
            },
            "version" => match value.as_str() {
                None => say(not_a("version", "string", value)),
                Some(version) if js::length(version) > MAX_VERSION_LENGTH => {
                    say(format!("image version is too long, max {MAX_VERSION_LENGTH} characters"))
                }
                Some(version) if !all_chars(version, |c| c.is_ascii_alphanumeric() || "._/+-".contains(c)) => {
                    say("image version has invalid characters (only alpha-numeric characters and \".\", \"-\", \"_\", \"/\" and \"+\" are allowed)".to_string())
                }
                Some(_) => {}
            },
            "description" => match value.as_str() {
                None => say(not_a("description", "string", value)),
                Some(text) if js::length(text) > MAX_DESCRIPTION_LENGTH => say(format!(
                    "image description is too long, max {MAX_DESCRIPTION_LENGTH} characters"
                )),
                Some(_) => {}
            },
            "homepage" | "eula" => {
                let label = if field == "eula" { "EULA" } else { "homepage" };
                match value.as_str() {
                    Some(url) if has_http_scheme(url) => {
                        if js::length(url) > MAX_URL_LENGTH {
                            say(format!("image {label} URL is too long (max {MAX_URL_LENGTH} characters)"));
                        }
                    }
                    _ => say(format!("invalid image {label} URL protocol")),
                }
            }
            "disabled" | "activated" if bool_like(value).is_none() => problems.push(Problem::invalid(field)),
            "public" | "icon" | "generate_passwords" if bool_like(value).is_none() => say(format!(
                "invalid image \"{field}\" (not an accepted boolean value): {}",
                js::to_json(value)
            )),
            "published_at" if js::is_truthy(value) && !value.as_str().is_some_and(is_published_at) => {
                say("published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format".to_string())
            }
            "state" if value.as_str().is_none_or(|s| !VALID_STATES.contains(&s)) => {
                problems.push(Problem::invalid(field))
            }
            "type" | "os" => {
                let valid = if field == "type" { VALID_TYPES } else { VALID_OSES };
                // "null" is what an image being created has until it is done.
                let creating = matches!(self.state(), Some("creating" | "failed"));
                match value.as_str() {
                    Some("null") if creating => {}
                    Some("null") => say(format!("invalid image {field}, \"null\"")),
                    Some(s) if valid.contains(&s) => {}
                    _ => say(format!(
                        "invalid image {field}, \"{}\", must be one of: {}",
                        js::to_js_string(value),
                        valid.join(", ")
                    )),
                }
            }
            "error" if !value.is_object() => say(not_a("error", "object", value)),
            "files" => check_files(value, &mut say),
            "acl" => match value.as_array() {
                None => say(not_a("acl", "array", value)),
                Some(acl) => {
                    let bad = acl
                        .iter()
                        .enumerate()
                        .find(|(_, uuid)| uuid.as_str().is_none_or(|s| ImageUuid::parse(s).is_err()));
                    if let Some((index, uuid)) = bad {
                        say(format!(
                            "invalid image \"acl\" (item {index} is not a UUID): {}",
                            js::to_js_string(uuid)
                        ));
                    }
                }
            },
            "requirements" => check_requirements(value, problems),
            "users" => match value.as_array() {
                None => say(not_a("users", "array", value)),
                Some(users) => {
                    for user in users {
                        let ok = user.as_object().is_some_and(|u| u.len() == 1 && u.contains_key("name"));
                        if !ok {
                            say(format!("invalid image \"users\" entry: {}", js::to_json(user)));
                        }
                    }
                }
            },
            "billing_tags" => match value.as_array() {
                None => say(not_a("billing_tags", "array", value)),
                Some(tags) => {
                    for tag in tags {
                        if tag.as_str().is_none_or(|t| js::length(t) > MAX_BILLING_TAG_LENGTH) {
                            say(format!("invalid image \"billing_tags\" entry: {}", js::to_json(tag)));
                        }
                    }
                }
            },
            "traits" => match value.as_object() {
                None => say(not_a("traits", "object", value)),
                Some(traits) => {
                    for (key, trait_value) in traits {
                        if !matches!(trait_value, Value::String(_) | Value::Bool(_) | Value::Array(_)) {
                            say(format!(
                                "invalid image \"traits\" entry: ({key}, {})",
                                js::to_json(trait_value)
                            ));
                        }
                    }
                }
            },
            "tags" => match value.as_object() {
                None => say(not_a("tags", "object", value)),
                Some(_) => {
                    if js::length(&js::to_json(value)) > MAX_TAGS_LENGTH {
                        say(format!(
                            "image \"tags\" string length is too long, max {MAX_TAGS_LENGTH} characters"
                        ));
                    }
                }
            },
            "inherited_directories" => {
                if self.type_() != Some("zone-dataset") {
                    say(format!(
                        "invalid image \"inherited_directories\" (only valid for a type:zone-dataset image): {}",
                        js::to_json(value)
                    ));
                } else if let Some(dirs) = value.as_array() {
                    for dir in dirs.iter().filter(|d| !d.is_string()) {
                        say(format!("invalid image \"inherited_directories\" entry: {}", js::to_json(dir)));
                    }
                } else {
                    say(not_a("inherited_directories", "array", value));
                }
            }
            "nic_driver" | "disk_driver" | "cpu_type" => {
                if js::is_truthy(value) && !self.is_zvol() {
                    say(format!(
                        "invalid image {field}: \"{}\" (can only have a value when image type is zvol)",
                        js::to_js_string(value)
                    ));
                } else if !value.is_string() {
                    say(format!(
                        "invalid image {field}: \"{}\" (must be a string)",
                        js::to_js_string(value)
                    ));
                }
            }
            "image_size" => {
                let size = js::to_number(value);
                if js::is_truthy(value) && !self.is_zvol() {
                    say(format!(
                        "invalid image image_size: \"{}\" (can only have a value when image type is zvol)",
                        js::to_js_string(value)
                    ));
                } else if !(size.fract() == 0.0 && size > 0.0) {
                    say(format!(
                        "invalid image image_size: \"{}\" (must be a positive integer)",
                        js::to_js_string(value)
                    ));
                }
            }
            "channels" => match value.as_array() {
                None => say(not_a("channels", "array", value)),
                Some(channels) => {
                    for channel in channels.iter().filter(|c| !c.is_string()) {
                        say(format!("invalid image \"channels\" entry: {}", js::to_json(channel)));
                    }
                }
            },
            _ => {}
        }
    }
}

fn check_files(value: &Value, say: &mut impl FnMut(String)) {
    let Some(files) = value.as_array() else {
        say(not_a("files", "array", value));
        return;
    };
    if files.len() > 1 {
        say("invalid image \"files\": too many files".to_string());
        return;
    }
    let Some(file) = files.first() else { return };
    let member = |key: &str| file.get(key).filter(|v| js::is_truthy(v));
    for key in ["sha1", "size"] {
        if member(key).is_none() {
            say(format!("invalid image \"files\": file missing \"{key}\" field"));
        }
    }
    match member("compression") {
        None => say("invalid image \"files\": file missing \"compression\" field".to_string()),
        Some(compression)
            if !compression
                .as_str()
                .is_some_and(|c| VALID_COMPRESSIONS.contains(&c)) =>
        {
            say(format!(
                "invalid image \"files\": invalid compression \"{}\" (must be one of {})",
                js::to_js_string(compression),
                VALID_COMPRESSIONS.join(", ")
            ))
        }
        Some(_) => {}
    }
}

/// `requirements`: each known key checked when it has a (truthy) value, as
/// imgmanifest does; an unknown key is reported under its own name.
fn check_requirements(value: &Value, problems: &mut Vec<Problem>) {
    let Some(reqs) = value.as_object() else {
        problems.push(Problem::invalid_with(
            "requirements",
            not_a("requirements", "object", value),
        ));
        return;
    };
    let mut say = |key: &str, message: String| {
        problems.push(Problem::invalid_with(&format!("requirements.{key}"), message))
    };
    let present = |key: &str| reqs.get(key).filter(|v| js::is_truthy(v));

    if let Some(networks) = present("networks") {
        match networks.as_array() {
            None => say("networks", not_a("requirements.networks", "array", networks)),
            Some(networks) => {
                for network in networks {
                    let ok = network.as_object().is_some_and(|n| {
                        n.len() == 2 && n.contains_key("name") && n.contains_key("description")
                    });
                    if !ok {
                        say(
                            "networks",
                            format!(
                                "invalid image \"requirements.networks\" entry: {}",
                                js::to_json(network)
                            ),
                        );
                    }
                }
            }
        }
    }
    if let Some(brand) = present("brand").filter(|b| !b.is_string()) {
        say("brand", not_a("requirements.brand", "string", brand));
    }
    if let Some(ssh_key) = present("ssh_key").filter(|k| !k.is_boolean()) {
        say("ssh_key", not_a("requirements.ssh_key", "boolean", ssh_key));
    }
    let mut ram = |key: &str| -> Option<u64> {
        let value = present(key)?;
        let amount = value.as_u64().filter(|n| *n > 0);
        if amount.is_none() {
            say(
                key,
                not_a(&format!("requirements.{key}"), "positive integer", value),
            );
        }
        amount
    };
    let (min_ram, max_ram) = (ram("min_ram"), ram("max_ram"));
    if let (Some(min), Some(max)) = (min_ram, max_ram) {
        if min > max {
            say(
                "max_ram",
                format!("min_ram must be <= max_ram, but: min_ram={min}, max_ram={max}"),
            );
        }
    }
    for key in ["min_platform", "max_platform"] {
        let Some(platform) = present(key) else { continue };
        match platform.as_object().filter(|p| !p.is_empty()) {
            None => say(key, not_a(&format!("requirements.{key}"), "object", platform)),
            Some(versions) => {
                for (sdc_version, timestamp) in versions {
                    if !timestamp.as_str().is_some_and(is_platform_timestamp) {
                        say(
                            key,
                            format!(
                                "invalid image \"requirements.{key}\" entry: \"{sdc_version}: {}\" not a valid platform version",
                                js::to_js_string(timestamp)
                            ),
                        );
                    }
                }
            }
        }
    }
    if let Some(bootrom) = present("bootrom") {
        if !matches!(bootrom.as_str(), Some("bios" | "uefi")) {
            say(
                "bootrom",
                format!(
                    "invalid image \"requirements.bootrom\" (must be \"bios\" or \"uefi\"): {}",
                    js::to_json(bootrom)
                ),
            );
        } else if reqs.get("brand").and_then(Value::as_str) != Some("bhyve") {
            say(
                "bootrom",
                "invalid image \"requirements.bootrom\" (only valid with requirements.brand \"bhyve\")"
                    .to_string(),
            );
        }
    }

    const KNOWN_REQUIREMENTS: &[&str] = &[
        "networks",
        "brand",
        "ssh_key",
        "min_ram",
        "max_ram",
        "min_platform",
        "max_platform",
        "bootrom",
    ];
    for key in reqs.keys().filter(|k| !KNOWN_REQUIREMENTS.contains(&k.as_str())) {
        problems.push(Problem::invalid_with(
            key,
            format!("unsupported requirement \"{key}\""),
        ));
    }
}

/// `invalid image "FIELD" (not a KIND): VALUE`, imgmanifest's wording for a
/// value of the wrong JSON type.
fn not_a(field: &str, kind: &str, value: &Value) -> String {
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!(
        "invalid image \"{field}\" (not {article} {kind}): {}",
        js::to_json(value)
    )
}

/// One validation problem, as imgmanifest reports it.
struct Problem {
    field: String,
    code: &'static str,
    message: Option<String>,
}

impl Problem {
    fn missing(field: &str) -> Problem {
        Problem {
            field: field.to_string(),
            code: "MissingParameter",
            message: None,
        }
    }

    fn missing_with(field: &str, message: String) -> Problem {
        Problem {
            field: field.to_string(),
            code: "MissingParameter",
            message: Some(message),
        }
    }

    fn invalid(field: &str) -> Problem {
        Problem {
            field: field.to_string(),
            code: "Invalid",
            message: None,
        }
    }

    fn invalid_with(field: &str, message: String) -> Problem {
        Problem {
            field: field.to_string(),
            code: "Invalid",
            message: Some(message),
        }
    }

    /// imgadm's rendering: `field (message)`, else a bare `field` for a plain
    /// Invalid, else `field (code)`.
    fn render(&self) -> String {
        match (&self.message, self.code) {
            (Some(message), _) => format!("{} ({message})", self.field),
            (None, "Invalid") => self.field.clone(),
            (None, code) => format!("{} ({code})", self.field),
        }
    }
}

/// imgmanifest's boolean fields take a boolean or one of these strings.
fn bool_like(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "true" | "yes" => Some(true),
            "false" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn all_chars(text: &str, allowed: impl Fn(char) -> bool) -> bool {
    !text.is_empty() && text.chars().all(allowed)
}

/// `http:` or `https:` (any case), as Node's url.parse reports the protocol.
fn has_http_scheme(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http:") || lower.starts_with("https:")
}

/// Fixed-width digit fields of a timestamp pattern: `d` is a digit, anything
/// else must match literally.
fn matches_shape(text: &str, shape: &str) -> bool {
    text.len() == shape.len()
        && text
            .bytes()
            .zip(shape.bytes())
            .all(|(t, s)| if s == b'd' { t.is_ascii_digit() } else { t == s })
}

/// `YYYY-MM-DDTHH:MM:SS(.sss)?Z`
fn is_published_at(text: &str) -> bool {
    matches_shape(text, "dddd-dd-ddTdd:dd:ddZ") || matches_shape(text, "dddd-dd-ddTdd:dd:dd.dddZ")
}

/// Whether a `YYYY-MM-DDTHH:MMZ` timestamp appears anywhere in the text (the
/// v1 upgrade's test is unanchored).
fn contains_minutes_only_timestamp(text: &str) -> bool {
    const SHAPE: &str = "dddd-dd-ddTdd:ddZ";
    text.ends_with('Z')
        && text.len() >= SHAPE.len()
        && text.char_indices().any(|(i, _)| {
            text.get(i..i + SHAPE.len())
                .is_some_and(|w| matches_shape(w, SHAPE))
        })
}

/// A platform build stamp `YYYYMMDDTHHMMSSZ` from 2012 on, with sane fields.
fn is_platform_timestamp(text: &str) -> bool {
    if !matches_shape(text, "ddddddddTddddddZ") {
        return false;
    }
    let field = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(u32::MAX);
    field(0..4) >= MIN_PLATFORM_YEAR
        && (1..=12).contains(&field(4..6))
        && (1..=31).contains(&field(6..8))
        && field(9..11) <= 23
        && field(11..13) <= 59
        && field(13..15) <= 59
}

/// Node's path.extname on the last path component: `.gz` for `a.zfs.gz`,
/// empty for `.profile` or a name without a dot.
fn file_extension(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.rfind('.') {
        Some(0) | None => "",
        Some(i) => &base[i..],
    }
}

/// The JavaScript value semantics that imgadm's manifest handling, filters
/// and sorting rely on (truthiness, `Number(x)`, `String(x)`), so that the
/// same inputs give the same answers.
pub(crate) mod js {
    use serde_json::{Number, Value};

    pub fn is_truthy(value: &Value) -> bool {
        match value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// `Number(value)`: NaN when it is not a number.
    pub fn to_number(value: &Value) -> f64 {
        match value {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::String(s) => string_to_number(s),
            Value::Array(items) => match items.as_slice() {
                [] => 0.0,
                [only] => string_to_number(&to_js_string(only)),
                _ => f64::NAN,
            },
            Value::Object(_) => f64::NAN,
        }
    }

    /// `Number("...")`: whitespace-trimmed decimal, `Infinity`, or hex/octal/
    /// binary integer literals; empty is 0.
    pub fn string_to_number(text: &str) -> f64 {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return 0.0;
        }
        let radix_literal = [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8), ("0b", 2), ("0B", 2)]
            .iter()
            .find_map(|(prefix, radix)| trimmed.strip_prefix(prefix).map(|digits| (digits, *radix)));
        if let Some((digits, radix)) = radix_literal {
            return u64::from_str_radix(digits, radix)
                .map(|n| n as f64)
                .unwrap_or(f64::NAN);
        }
        let unsigned = trimmed.trim_start_matches(['+', '-']);
        if unsigned == "Infinity" {
            return if trimmed.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
        }
        // Rust also accepts "inf", "nan" and "1e" forms JavaScript does not.
        let js_shaped = unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && unsigned
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
            && trimmed.len() - unsigned.len() <= 1;
        if !js_shaped {
            return f64::NAN;
        }
        trimmed.parse::<f64>().unwrap_or(f64::NAN)
    }

    /// A finite number as a JSON number (integers stay integers).
    pub fn number_value(n: f64) -> Option<Value> {
        if !n.is_finite() {
            return None;
        }
        if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
            return Some(Value::from(n as i64));
        }
        Number::from_f64(n).map(Value::Number)
    }

    /// How JavaScript prints a number: `1` not `1.0`, `1e+21`, `1e-7`.
    pub fn format_f64(n: f64) -> String {
        if n.is_nan() {
            return "NaN".to_string();
        }
        if n.is_infinite() {
            return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
        }
        if n == 0.0 {
            return "0".to_string();
        }
        let magnitude = n.abs();
        if (1e-6..1e21).contains(&magnitude) {
            return format!("{n}");
        }
        let exponential = format!("{n:e}");
        match exponential.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => format!("{mantissa}e+{exponent}"),
            _ => exponential,
        }
    }

    pub fn format_number(n: &Number) -> String {
        if n.is_f64() {
            n.as_f64().map(format_f64).unwrap_or_else(|| n.to_string())
        } else {
            n.to_string()
        }
    }

    /// `String(value)`: arrays join their elements with commas, objects are
    /// `[object Object]`.
    pub fn to_js_string(value: &Value) -> String {
        match value {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(n),
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    if item.is_null() {
                        String::new()
                    } else {
                        to_js_string(item)
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            Value::Object(_) => "[object Object]".to_string(),
        }
    }

    /// `JSON.stringify(value)`, compact.
    pub fn to_json(value: &Value) -> String {
        value.to_string()
    }

    /// `text.length`: JavaScript counts UTF-16 code units.
    pub fn length(text: &str) -> usize {
        text.encode_utf16().count()
    }

    pub fn type_name(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_extension_is_node_extname() {
        assert_eq!(file_extension("nodejs-1.4.0.zfs.bz2"), ".bz2");
        assert_eq!(file_extension("https://h/x/a.zfs.gz"), ".gz");
        assert_eq!(file_extension("/a.b/file"), "");
        assert_eq!(file_extension(".profile"), "");
        assert_eq!(file_extension(""), "");
    }

    #[test]
    fn platform_timestamps() {
        assert!(is_platform_timestamp("20141030T081701Z"));
        assert!(!is_platform_timestamp("20111030T081701Z"));
        assert!(!is_platform_timestamp("20141330T081701Z"));
        assert!(!is_platform_timestamp("20141000T081701Z"));
        assert!(!is_platform_timestamp("20141030T241701Z"));
        assert!(!is_platform_timestamp("20141030T086001Z"));
        assert!(!is_platform_timestamp("2014-10-30"));
    }

    #[test]
    fn js_numbers_parse_and_print_like_javascript() {
        use serde_json::json;
        assert_eq!(js::to_number(&json!("  42 ")), 42.0);
        assert_eq!(js::to_number(&json!("")), 0.0);
        assert_eq!(js::to_number(&json!(null)), 0.0);
        assert_eq!(js::to_number(&json!(true)), 1.0);
        assert_eq!(js::to_number(&json!("0x10")), 16.0);
        assert!(js::to_number(&json!("inf")).is_nan());
        assert!(js::to_number(&json!("1.2.3")).is_nan());
        assert!(js::to_number(&json!({})).is_nan());
        assert_eq!(js::to_number(&json!("-Infinity")), f64::NEG_INFINITY);
        assert_eq!(js::format_f64(1.0), "1");
        assert_eq!(js::format_f64(1.5), "1.5");
        assert_eq!(js::format_f64(1e21), "1e+21");
        assert_eq!(js::format_f64(1e-7), "1e-7");
        assert_eq!(js::to_js_string(&json!(2.0)), "2");
        assert_eq!(js::to_js_string(&json!(["a", null, 3])), "a,,3");
        assert_eq!(js::to_js_string(&json!({"a": 1})), "[object Object]");
    }
}
