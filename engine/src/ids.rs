//! Parsed names. A `DatasetName` can only be built from a `PoolName` and a
//! parsed `ImageUuid`, so no string from the command line, a manifest or a
//! server ever reaches `zfs(8)` or a file path unparsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An image (or VM) uuid in the canonical lowercase 8-4-4-4-12 form the real
/// imgadm accepts; anything else (upper case, braces, `../x`) is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageUuid(uuid::Uuid);

impl ImageUuid {
    pub fn parse(text: &str) -> Result<ImageUuid, Error> {
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
            });
        if !shape_ok {
            return Err(Error::InvalidUuid(text.to_string()));
        }
        uuid::Uuid::parse_str(text)
            .map(ImageUuid)
            .map_err(|_| Error::InvalidUuid(text.to_string()))
    }

    pub fn new_v4() -> ImageUuid {
        ImageUuid(uuid::Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl fmt::Display for ImageUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl FromStr for ImageUuid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        ImageUuid::parse(s)
    }
}

impl TryFrom<String> for ImageUuid {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        ImageUuid::parse(&s)
    }
}

impl From<ImageUuid> for String {
    fn from(u: ImageUuid) -> String {
        u.to_string()
    }
}

/// A zpool name (or a dir pool's name): starts with a letter, then letters,
/// digits, `_`, `-`, `.`, `:` as zpool(8) allows; never a `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PoolName(String);

impl PoolName {
    pub fn parse(text: &str) -> Result<PoolName, Error> {
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if first_ok && rest_ok && text.len() <= 200 {
            Ok(PoolName(text.to_string()))
        } else {
            Err(Error::Usage(format!(
                "invalid zpool name: \"{text}\" (must start with a letter and hold only letters, digits, '_', '-', '.' and ':')"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PoolName {
    fn default() -> Self {
        PoolName("zones".to_string())
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PoolName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        PoolName::parse(&s)
    }
}

impl From<PoolName> for String {
    fn from(p: PoolName) -> String {
        p.0
    }
}

/// `POOL/UUID` or its temporary receive name `POOL/UUID-partial`; for a
/// VM, also one of its disks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName {
    pub pool: PoolName,
    pub uuid: ImageUuid,
    pub partial: bool,
    pub disk: Option<VmDisk>,
}

/// A disk dataset of a hardware VM, named after the VM as SmartOS names
/// it: KVM beside the zone dataset (`POOL/UUID-diskN`), bhyve inside it
/// (`POOL/UUID/diskN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VmDisk {
    Beside(u32),
    Inside(u32),
}

impl DatasetName {
    pub fn image(pool: &PoolName, uuid: ImageUuid) -> DatasetName {
        DatasetName { pool: pool.clone(), uuid, partial: false, disk: None }
    }

    pub fn partial(pool: &PoolName, uuid: ImageUuid) -> DatasetName {
        DatasetName { pool: pool.clone(), uuid, partial: true, disk: None }
    }

    /// Parses `POOL/UUID` or `POOL/UUID-partial` (as recorded in the journal).
    pub fn parse(text: &str) -> Result<DatasetName, Error> {
        let (pool, rest) = text
            .split_once('/')
            .ok_or_else(|| Error::internal(format!("not an image dataset name: \"{text}\"")))?;
        let (uuid, partial) = match rest.strip_suffix("-partial") {
            Some(u) => (u, true),
            None => (rest, false),
        };
        Ok(DatasetName { pool: PoolName::parse(pool)?, uuid: ImageUuid::parse(uuid)?, partial, disk: None })
    }

    /// Parses a VM's dataset as vmadm names it: `POOL/UUID`,
    /// `POOL/UUID-diskN` or `POOL/UUID/diskN`. Anything else (a path, a
    /// name vmadm would not give) is refused, so a dataset name handed to
    /// zfs is always built from a parsed uuid.
    pub fn parse_vm(text: &str) -> Result<DatasetName, Error> {
        let refuse = || Error::internal(format!("not a VM dataset name: \"{text}\""));
        let (pool, rest) = text.split_once('/').ok_or_else(refuse)?;
        let (uuid, disk) = match rest.split_at_checked(36) {
            Some((uuid, "")) => (uuid, None),
            Some((uuid, suffix)) => {
                let (index, make): (&str, fn(u32) -> VmDisk) = if let Some(n) = suffix.strip_prefix("-disk") {
                    (n, VmDisk::Beside)
                } else if let Some(n) = suffix.strip_prefix("/disk") {
                    (n, VmDisk::Inside)
                } else {
                    return Err(refuse());
                };
                // `disk01` would parse as disk 1 and name another dataset.
                let canonical = index == "0" || !index.starts_with('0');
                if index.is_empty() || !canonical || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refuse());
                }
                (uuid, Some(make(index.parse().map_err(|_| refuse())?)))
            }
            None => return Err(refuse()),
        };
        Ok(DatasetName { pool: PoolName::parse(pool)?, uuid: ImageUuid::parse(uuid)?, partial: false, disk })
    }

    pub fn snapshot(&self, snap: &SnapName) -> String {
        format!("{self}@{snap}")
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.pool, self.uuid, if self.partial { "-partial" } else { "" })?;
        match self.disk {
            None => Ok(()),
            Some(VmDisk::Beside(n)) => write!(f, "-disk{n}"),
            Some(VmDisk::Inside(n)) => write!(f, "/disk{n}"),
        }
    }
}

/// The part of a snapshot name after `@`: letters, digits, `_-.:` only.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapName(String);

impl SnapName {
    pub fn parse(text: &str) -> Result<SnapName, Error> {
        let ok = !text.is_empty()
            && text.len() <= 200
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if ok {
            Ok(SnapName(text.to_string()))
        } else {
            Err(Error::InvalidStream(format!("invalid snapshot name: \"{text}\"")))
        }
    }

    pub fn final_() -> SnapName {
        SnapName("final".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SnapName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        SnapName::parse(&s)
    }
}

impl From<SnapName> for String {
    fn from(s: SnapName) -> String {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_parsing_refuses_anything_but_canonical_lowercase() {
        assert!(ImageUuid::parse("5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01").is_ok());
        for bad in [
            "../x",
            "5B1E0C3E-6F43-4C1A-9D5E-3A0F2B7C8D01",
            "5b1e0c3e 6f43-4c1a-9d5e-3a0f2b7c8d01",
            "5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d0",
            "{5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01}",
            "5b1e0c3e6f434c1a9d5e3a0f2b7c8d01",
            "",
        ] {
            let err = ImageUuid::parse(bad).unwrap_err();
            assert_eq!(err.code(), "InvalidUUID", "{bad}");
        }
    }

    #[test]
    fn dataset_names_round_trip() {
        let pool = PoolName::parse("zones").unwrap();
        let uuid = ImageUuid::parse("5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01").unwrap();
        let partial = DatasetName::partial(&pool, uuid);
        assert_eq!(partial.to_string(), "zones/5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01-partial");
        assert_eq!(DatasetName::parse(&partial.to_string()).unwrap(), partial);
        assert!(DatasetName::parse("zones/../etc").is_err());
        assert!(PoolName::parse("a/b").is_err());
        assert!(PoolName::parse("1abc").is_err());
        assert!(PoolName::parse("tank2").is_ok());
    }

    #[test]
    fn vm_dataset_names_are_the_zone_or_its_disks() {
        let zone = "zones/5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01";
        for text in [zone.to_string(), format!("{zone}-disk0"), format!("{zone}/disk12")] {
            assert_eq!(DatasetName::parse_vm(&text).unwrap().to_string(), text);
        }
        assert!(DatasetName::parse(&format!("{zone}-disk0")).is_err(), "an image name is never a disk");
        for bad in ["-disk", "-disk1/x", "/disk", "/../x", "-partial", "-disk-1", "-disk01", "/disk007", "/disk1@snap", "x"] {
            assert!(DatasetName::parse_vm(&format!("{zone}{bad}")).is_err(), "{bad}");
        }
        assert!(DatasetName::parse_vm("zones/../etc").is_err());
    }
}
