//! Where imgadm keeps its state, and its configuration file.
//!
//! By default everything is where the real imgadm keeps it (`/var/imgadm`,
//! downloads in `/var/tmp/.imgadm-downloads`, image locks
//! `/var/run/img.UUID.import.lock`), so the two tools share a host and exclude
//! each other. `IMGADM_STATE_DIR=D` moves all of it under `D` (tests,
//! non-root use).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::ids::{ImageUuid, PoolName};
use crate::pool::DriverKind;

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
    downloads: PathBuf,
    /// Where `create -p` writes the image it publishes.
    temp: PathBuf,
    image_locks: PathBuf,
    /// The real tool's lock file names (`img.UUID.import.lock`) only where
    /// they are the real tool's files.
    real_lock_names: bool,
}

impl StateDir {
    /// From `IMGADM_STATE_DIR`, else the real imgadm's paths.
    pub fn from_env() -> StateDir {
        match std::env::var_os("IMGADM_STATE_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => StateDir::under(PathBuf::from(dir)),
            None => StateDir {
                root: PathBuf::from("/var/imgadm"),
                downloads: PathBuf::from("/var/tmp/.imgadm-downloads"),
                temp: PathBuf::from("/var/tmp"),
                image_locks: PathBuf::from("/var/run"),
                real_lock_names: true,
            },
        }
    }

    /// Everything under one directory.
    pub fn under(root: PathBuf) -> StateDir {
        StateDir {
            downloads: root.join("downloads"),
            temp: root.join("tmp"),
            image_locks: root.join("locks"),
            real_lock_names: false,
            root,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("imgadm.conf")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn cache_path(&self, pool: &PoolName, uuid: ImageUuid) -> PathBuf {
        self.images_dir().join(format!("{pool}-{uuid}.json"))
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    pub fn downloads_dir(&self) -> &Path {
        &self.downloads
    }

    pub fn temp_dir(&self) -> PathBuf {
        self.temp.clone()
    }

    pub fn download_path(&self, uuid: ImageUuid) -> PathBuf {
        self.downloads.join(format!("{uuid}.file"))
    }

    pub fn download_partial_path(&self, uuid: ImageUuid) -> PathBuf {
        self.downloads.join(format!("{uuid}.file.partial"))
    }

    pub fn image_lock_path(&self, uuid: ImageUuid) -> PathBuf {
        if self.real_lock_names {
            self.image_locks.join(format!("img.{uuid}.import.lock"))
        } else {
            self.image_locks.join(format!("img.{uuid}.lock"))
        }
    }

    /// Operation locks always live under the state directory.
    pub fn op_lock_path(&self, op: &str) -> PathBuf {
        self.root.join("locks").join(format!("op-{op}.lock"))
    }

    pub fn dir_pools_root(&self) -> PathBuf {
        self.root.join("pools")
    }
}

/// `imgadm.conf`: a JSON object. Keys this tool does not know are kept as
/// they are, so a config the real imgadm wrote survives a round trip.
#[derive(Clone, Debug, Default)]
pub struct Config {
    fields: Map<String, Value>,
}

pub const DEFAULT_SOURCE_URL: &str = "https://images.smartos.org";

impl Config {
    pub fn load(state: &StateDir) -> Result<Config> {
        let path = state.config_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(Error::io_path("cannot read config file", &path, e)),
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(fields)) => {
                let config = Config { fields };
                config.check()?;
                Ok(config)
            }
            _ => Err(Error::ConfigError(format!(
                "config file \"{}\" is not valid JSON: fix or remove it",
                path.display()
            ))),
        }
    }

    fn check(&self) -> Result<()> {
        if let Some(extra) = self.fields.get("userAgentExtra") {
            if !extra.is_string() {
                return Err(Error::ConfigError(
                    "\"userAgentExtra\" in the config file is not a string".to_string(),
                ));
            }
        }
        if let Some(driver) = self.fields.get("driver") {
            if driver.as_str().and_then(DriverKind::parse).is_none() {
                return Err(Error::ConfigError(format!(
                    "\"driver\" in the config file must be \"zfs\" or \"dir\", not {driver}"
                )));
            }
        }
        Ok(())
    }

    /// Written 2-space indented without a trailing newline, as the real
    /// imgadm writes it; durably (temp file, fsync, rename).
    pub fn save(&self, state: &StateDir) -> Result<()> {
        let mut fields = self.fields.clone();
        fields.entry("dockerImportSkipUuids").or_insert(Value::Bool(true));
        fields.entry("upgradedToVer").or_insert(Value::String("3.0.0".to_string()));
        let text = serde_json::to_string_pretty(&Value::Object(fields))
            .map_err(|e| Error::internal(format!("cannot serialise config: {e}")))?;
        fsutil::create_dir_durable(state.root())?;
        fsutil::write_file_atomic(&state.config_path(), text.as_bytes())
    }

    pub fn driver(&self) -> Option<DriverKind> {
        self.fields.get("driver").and_then(Value::as_str).and_then(DriverKind::parse)
    }

    pub fn user_agent_extra(&self) -> Option<&str> {
        self.fields.get("userAgentExtra").and_then(Value::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.fields.insert(key.to_string(), value);
    }
}

/// The driver for this command: `IMGADM_DRIVER`, else `driver` in the
/// config, else `zfs` when a `zfs` command exists, else `dir`. Never a
/// silent fallback from zfs to dir.
pub fn choose_driver(config: &Config) -> Result<DriverKind> {
    if let Some(value) = std::env::var("IMGADM_DRIVER").ok().filter(|v| !v.is_empty()) {
        return DriverKind::parse(&value).ok_or_else(|| {
            Error::ConfigError(format!("IMGADM_DRIVER must be \"zfs\" or \"dir\", not \"{value}\""))
        });
    }
    if let Some(driver) = config.driver() {
        return Ok(driver);
    }
    Ok(if crate::pool::zfs::zfs_available() { DriverKind::Zfs } else { DriverKind::Dir })
}
