//! The event format: what is stored, how it is encoded and chained.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{JournalError, Result};

/// Version of the stored event format (the `v` field).
pub const FORMAT_VERSION: u32 = 1;

/// The `prev` of seq 1: there is no previous event.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Stored events larger than this are refused: sled writes values above
/// about 128 KiB to separate blob files without fsync (anchors.md 5.2), and
/// an event is meant to be a small record, not a manifest.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// An operation id: a ULID (26 characters of Crockford base32, upper case,
/// time-ordered), so it is never mistaken for an image UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpId(String);

impl OpId {
    /// A fresh id for a new operation.
    pub fn new() -> OpId {
        OpId(ulid::Ulid::new().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for OpId {
    fn default() -> Self {
        OpId::new()
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for OpId {
    type Err = JournalError;

    /// Accepts a whole id in either case; a prefix is `Journal::resolve`'s job.
    fn from_str(s: &str) -> Result<OpId> {
        ulid::Ulid::from_string(s)
            .map(|id| OpId(id.to_string()))
            .map_err(|e| JournalError::Invalid(format!("not an operation id: {s:?} ({e})")))
    }
}

/// What an event records. The serde names are the stored names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    OperationBegun,
    StepBegun,
    StepDone,
    StepFailed,
    StepUndone,
    /// Progress inside a step that does not change where it stands: a
    /// download's byte checkpoint, a retried transfer.
    StepProgress,
    OperationResumed,
    OperationEnded,
}

/// An event as the caller hands it in: the journal adds `v`, `seq`, `ts`
/// and `prev`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub op: OpId,
    pub kind: EventKind,
    pub step: Option<String>,
    pub data: serde_json::Value,
}

/// A stored event. Field order is the stored order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    pub op: OpId,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    /// Hex SHA-256 of the previous event's stored bytes.
    pub prev: String,
}

impl Event {
    /// The stored bytes: one line of compact JSON, without the newline.
    /// They are written once and only ever copied afterwards; the hash chain
    /// is over these bytes, never over a re-serialisation.
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self)
            .expect("an event is strings, numbers and a JSON value with string keys: always serialisable")
    }

    /// Parses stored bytes; `where_` says where they came from, for the error.
    pub(crate) fn decode(bytes: &[u8], where_: &dyn Fn() -> String) -> Result<Event, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("{}: not a journal event: {e}", where_()))
    }

    /// Every image this event names: `data.images[]`, `data.image`,
    /// `data.installed.image`, `data.removed.image`. The segment index by
    /// image is built from these.
    pub fn images(&self) -> Vec<&str> {
        let data = &self.data;
        let mut out: Vec<&str> = Vec::new();
        if let Some(list) = data.get("images").and_then(|v| v.as_array()) {
            out.extend(list.iter().filter_map(|v| v.as_str()));
        }
        for named in [
            data.get("image"),
            data.get("installed").and_then(|v| v.get("image")),
            data.get("removed").and_then(|v| v.get("image")),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(s) = named.as_str() {
                out.push(s);
            }
        }
        out
    }
}

/// SHA-256 of stored bytes, hex.
pub(crate) fn hash_hex(stored: &[u8]) -> String {
    hex::encode(Sha256::digest(stored))
}

/// Now, as the `ts` field spells it.
pub(crate) fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Just the seq of a stored event, without building its `data`.
pub(crate) fn peek_seq_ts(stored: &[u8]) -> Option<(u64, String)> {
    #[derive(Deserialize)]
    struct SeqTs {
        seq: u64,
        ts: String,
    }
    serde_json::from_slice::<SeqTs>(stored).ok().map(|e| (e.seq, e.ts))
}
