//! The one error type of the engine. Every variant has a stable code name
//! (what `-E` prints as `err.code` and what the real imgadm calls it), an exit
//! status, and a message that says what to do about it.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid uuid: \"{0}\"")]
    InvalidUuid(String),

    #[error("{0}")]
    Usage(String),

    #[error("image \"{uuid}\" was not found on zpool \"{pool}\"")]
    ImageNotInstalled { uuid: String, pool: String },

    #[error("image \"{uuid}\" has dependent clones: {first}{}", if *.others > 0 { format!(" and {} others...", .others) } else { String::new() })]
    ImageHasDependentClones { uuid: String, first: String, others: usize },

    #[error("manifest is invalid: {0}")]
    InvalidManifest(String),

    #[error("invalid manifest: {}", .0.join(", "))]
    ManifestValidation(Vec<String>),

    #[error("origin image \"{origin}\" of image \"{uuid}\" is not installed on zpool \"{pool}\": install or import it first")]
    OriginNotInstalled { uuid: String, origin: String, pool: String },

    #[error("{0}")]
    DownloadError(String),

    #[error("{0}")]
    UploadError(String),

    #[error("{compression} uncompression error while importing: {detail}")]
    Uncompression { compression: String, detail: String },

    #[error("invalid ZFS send stream: {0}")]
    InvalidStream(String),

    #[error("image \"{uuid}\" has an unexpected number of snapshots ({count}): {names}")]
    UnexpectedNumberOfSnapshots { uuid: String, count: usize, names: String },

    #[error("image \"{uuid}\" is missing its original snapshot{}", .guid.as_ref().map(|g| format!(" (expected a snapshot with guid {g})")).unwrap_or_default())]
    ImageMissingOriginalSnapshot { uuid: String, guid: Option<String> },

    #[error("zpool \"{pool}\" does not exist ({driver} driver): name an existing pool with -P, or set IMGADM_DRIVER=dir to use the embedded dir pool")]
    PoolNotFound { pool: String, driver: String },

    #[error("{0}")]
    NotSupported(String),

    #[error("{count} image(s) could not be replayed onto \"{pool}\"")]
    NotReplayed { count: usize, pool: String },

    #[error("{0}")]
    ConfigError(String),

    #[error("imgadm has no configured sources")]
    NoSources,

    #[error("unexpected ping error with {source_desc}: {detail}")]
    SourcePing { source_desc: String, detail: String },

    #[error("image \"{0}\" was not found")]
    ImageNotFound(String),

    #[error("an active image \"{0}\" was not found in image sources")]
    ActiveImageNotFound(String),

    #[error("image \"{0}\" is not active")]
    ImageNotActive(String),

    /// An error answer from an Images API server: the code is the server's.
    #[error("{url}: {message}")]
    Api { code: String, url: String, message: String, status: u16 },

    /// A transport failure talking to a server (connect, TLS, reset).
    #[error("{url}: {detail}")]
    Client { url: String, detail: String },

    #[error("current platform version, {version}/{timestamp}, does not satisfy requirements.{which}={requirement}")]
    Platform { which: &'static str, version: String, timestamp: String, requirement: String },

    #[error("cannot create image: maximum origin depth \"{0}\" has been reached")]
    MaxOriginDepth(u32),

    #[error("vm \"{0}\" was not found")]
    VmNotFound(String),

    #[error("vm \"{vm}\" has a dataset on more than one zpool ({}): imgadm cannot tell which is the vm; rename or destroy the others", .datasets.join(", "))]
    VmOnSeveralPools { vm: String, datasets: Vec<String> },

    #[error("vm \"{0}\" is not stopped: stop it first (vmadm stop {0}), or let create prepare it with -s")]
    VmNotStopped(String),

    #[error("prepare-image script error while preparing VM {vm}: {detail}")]
    PrepareImage { vm: String, detail: String },

    #[error("prepare-image script did not run on VM {0} boot: check that the VM boots and runs its operator-script")]
    PrepareImageDidNotRun(String),

    #[error("cannot create an incremental image: vm \"{0}\" has no origin")]
    VmHasNoOrigin(String),

    #[error("cannot create an incremental image: origin image \"{0}\" has no \"@final\" snapshot (sometimes this can be fixed by \"imgadm update\")")]
    OriginHasNoFinalSnapshot(String),

    #[error("{0}")]
    Journal(String),

    /// The operation is held by another live process.
    #[error("operation {op} is held by process {pid} (at step \"{step}\"): wait for it to finish")]
    OperationBusy { op: String, pid: u32, step: String },

    #[error("image {uuid} is locked by another imgadm process: wait for it to finish, then try again")]
    ImageLocked { uuid: String },

    #[error("timed out after {seconds} s waiting for {what}{}", .holder.as_ref().map(|h| format!(" (held by {h})")).unwrap_or_default())]
    LockTimeout { what: String, seconds: u64, holder: Option<String> },

    #[error("{context}: {source}")]
    FileSystem { context: String, #[source] source: std::io::Error },

    #[error("{0}")]
    Internal(String),

    #[error("multiple ({}) errors{}", .0.len(), .0.iter().map(|e| format!("\n    error ({}): {}", e.code(), e)).collect::<String>())]
    Multi(Vec<Error>),
}

impl Error {
    /// The code name shown in `imgadm VERB: error (Code): ...` and `err.code`.
    pub fn code(&self) -> &str {
        match self {
            Error::InvalidUuid(_) => "InvalidUUID",
            Error::Usage(_) => "Usage",
            Error::ImageNotInstalled { .. } => "ImageNotInstalled",
            Error::ImageHasDependentClones { .. } => "ImageHasDependentClones",
            Error::InvalidManifest(_) => "InvalidManifest",
            Error::ManifestValidation(_) => "ManifestValidation",
            Error::OriginNotInstalled { .. } => "OriginNotInstalled",
            Error::DownloadError(_) => "DownloadError",
            Error::UploadError(_) => "UploadError",
            Error::Uncompression { .. } => "UncompressionError",
            Error::InvalidStream(_) => "InvalidStream",
            Error::UnexpectedNumberOfSnapshots { .. } => "UnexpectedNumberOfSnapshots",
            Error::ImageMissingOriginalSnapshot { .. } => "ImageMissingOriginalSnapshot",
            Error::PoolNotFound { .. } => "PoolNotFound",
            Error::NotSupported(_) => "NotSupported",
            Error::NotReplayed { .. } => "NotReplayed",
            Error::ConfigError(_) => "ConfigError",
            Error::NoSources => "NoSources",
            Error::SourcePing { .. } => "SourcePing",
            Error::ImageNotFound(_) => "ImageNotFound",
            Error::ActiveImageNotFound(_) => "ActiveImageNotFound",
            Error::ImageNotActive(_) => "ImageNotActive",
            Error::Api { code, .. } => code,
            Error::Client { .. } => "ClientError",
            Error::Platform { which, .. } => {
                if *which == "min_platform" {
                    "MinPlatform"
                } else {
                    "MaxPlatform"
                }
            }
            Error::MaxOriginDepth(_) => "MaxOriginDepth",
            Error::VmNotFound(_) => "VmNotFound",
            Error::VmOnSeveralPools { .. } => "VmOnSeveralPools",
            Error::VmHasNoOrigin(_) => "VmHasNoOrigin",
            Error::VmNotStopped(_) => "VmNotStopped",
            Error::PrepareImage { .. } => "PrepareImageError",
            Error::PrepareImageDidNotRun(_) => "PrepareImageDidNotRun",
            Error::OriginHasNoFinalSnapshot(_) => "OriginHasNoFinalSnapshot",
            Error::Journal(_) => "JournalError",
            Error::OperationBusy { .. } => "OperationBusy",
            Error::ImageLocked { .. } => "ImageLocked",
            Error::LockTimeout { .. } => "LockTimeout",
            Error::FileSystem { .. } => "FileSystem",
            Error::Internal(_) => "InternalError",
            Error::Multi(_) => "MultiError",
        }
    }

    /// Exit status: 3 for a missing image (as the real imgadm), 2 for usage
    /// errors (as its man page documents), 1 for everything else.
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::ImageNotInstalled { .. } | Error::OriginNotInstalled { .. } => 3,
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::FileSystem { context: context.into(), source }
    }

    pub fn io_path(what: &str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::io(format!("{what} \"{}\"", path.display()), source)
    }

    pub fn internal(msg: impl Into<String>) -> Error {
        Error::Internal(msg.into())
    }

    /// The engine error an `io::Error` carries (the validator, the
    /// decoders and the verifier report through `Read`), or a `FileSystem`
    /// error with `context`.
    pub fn from_io(e: std::io::Error, context: &str) -> Error {
        if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Error::io(context, e);
        }
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(engine_error)) => *engine_error,
            // The check above rules this out; say so rather than panic.
            _ => Error::internal(format!("{context}: an error lost its cause")),
        }
    }

    /// Several errors become one, or stay one when there is only one.
    pub fn combine(mut errors: Vec<Error>) -> Option<Error> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Error::Multi(errors)),
        }
    }
}

impl From<imgadm_journal::JournalError> for Error {
    fn from(e: imgadm_journal::JournalError) -> Self {
        Error::Journal(e.to_string())
    }
}

/// A path that was named on the command line but does not exist.
pub fn missing_path(what: &str, path: &std::path::Path) -> Error {
    Error::Usage(format!("{what} path does not exist: \"{}\"", path.display()))
}
