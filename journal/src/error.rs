//! The one error type of the crate.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything that can go wrong in the journal. The engine only ever prints
/// it (`Display`), so each message names what was being done and where.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file system call failed.
    #[error("journal: {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// sled itself failed (open, read, write, flush).
    #[error("journal database {}: {source}", path.display())]
    Database { path: PathBuf, source: sled::Error },

    /// Another process (or thread) held the journal lock for too long.
    #[error("journal {} is locked by {holder}; gave up after {} s", path.display(), waited.as_secs_f32())]
    Locked {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },

    /// The database is behind the head file: events were lost (power loss
    /// with a lying disk) or sled cut its log at a damaged record. The
    /// journal refuses to carry on with a shorter history.
    #[error(
        "journal {}: events {} are missing: the database ends at seq {known} but the head file says {head}; \
         run `imgadm journal verify` and restore the journal from a backup",
        dir.display(), seq_range(*known + 1, *head)
    )]
    Lost { dir: PathBuf, known: u64, head: u64 },

    /// Something read from disk is not what the journal wrote.
    #[error("journal {}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },

    /// No operation id starts with the given prefix.
    #[error("no such operation: {0}")]
    NoSuchOperation(String),

    /// Several operation ids start with the given prefix.
    #[error("ambiguous: {count} operations start with {prefix}")]
    Ambiguous { prefix: String, count: usize },

    /// The caller asked for something the journal does not accept (an event
    /// for an operation that has ended, a malformed time, ...).
    #[error("journal: {0}")]
    Invalid(String),
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// `"seq 7"` or `"seqs 7..=9"`: how error messages and verify name missing events.
pub(crate) fn seq_range(from: u64, to: u64) -> String {
    if from == to {
        format!("seq {from}")
    } else {
        format!("seqs {from}..={to}")
    }
}

/// Shorthand for wrapping an `io::Error` with what was being done and where.
pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io { what, path, source }
}

pub(crate) fn corrupt(path: &Path, what: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        path: path.to_path_buf(),
        what: what.into(),
    }
}
