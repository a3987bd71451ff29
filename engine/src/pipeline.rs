//! The streaming pass that takes an image file into a pool: file bytes are
//! counted and hashed on their way to the decompressor, the decompressed
//! stream's BEGIN record is decoded (so the journal knows the guid it will
//! create before anything is received), and the stream goes to the pool's
//! receive. No second read of the file, no copy of the whole stream in
//! memory: memory stays flat whatever the image size. Reading and hashing,
//! decompressing and receiving run on three threads ([`ReadAhead`]), so
//! on a host with cores to spare the pass takes as long as its slowest
//! stage (usually the receive), not the sum of the three.

use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha1::{Digest, Sha1};

use crate::compression::{self, Compression};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::failpoint::{self, When};
use crate::ids::DatasetName;
use crate::operation::Operation;
use crate::pool::{DriverKind, Received};
use crate::readahead::ReadAhead;
use crate::report::Progress;
use crate::steps::{self, ReceivePlan, RECV};
use crate::zstream;

/// Where the compressed image bytes come from.
pub enum StreamSource {
    /// A local file (install, or a download already complete).
    File(PathBuf),
    /// Bytes arriving as they are fetched (import).
    Reader(Box<dyn Read + Send>),
}

pub struct PipelineOutcome {
    pub bytes: u64,
    pub sha1: String,
    pub received: Received,
}

/// What the verifier learned once the file's last byte went through.
#[derive(Default)]
struct Verified {
    bytes: u64,
    sha1: Option<String>,
}

/// Counts and hashes the compressed bytes; at the end checks them against
/// the manifest, so a wrong file fails the receive before it is committed.
struct VerifyingReader<R> {
    inner: R,
    hasher: Sha1,
    bytes: u64,
    expected_size: Option<u64>,
    expected_sha1: Option<String>,
    uuid: String,
    result: Arc<Mutex<Verified>>,
    progress: Box<dyn Progress>,
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            return self.finish().map(|()| 0);
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.progress.advance(n as u64);
        if let Some(expected) = self.expected_size {
            if self.bytes > expected {
                return Err(io::Error::other(self.size_error()));
            }
        }
        Ok(n)
    }
}

impl<R> VerifyingReader<R> {
    fn size_error(&self) -> Error {
        Error::DownloadError(format!(
            "image {} file size error: manifest says {} bytes, the file has {}{} bytes",
            self.uuid,
            self.expected_size.unwrap_or(0),
            if self.bytes > self.expected_size.unwrap_or(0) { "more than " } else { "" },
            self.bytes
        ))
    }

    fn finish(&mut self) -> io::Result<()> {
        let mut result = self.result.lock().unwrap_or_else(|p| p.into_inner());
        if result.sha1.is_some() {
            return Ok(());
        }
        if self.expected_size.is_some_and(|e| e != self.bytes) {
            return Err(io::Error::other(self.size_error()));
        }
        let sha1 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if let Some(expected) = &self.expected_sha1 {
            if *expected != sha1 {
                return Err(io::Error::other(Error::DownloadError(format!(
                    "image {} file checksum (sha1) error: manifest says \"{expected}\", the file's is \"{sha1}\"",
                    self.uuid
                ))));
            }
        }
        self.progress.finish();
        result.bytes = self.bytes;
        result.sha1 = Some(sha1);
        Ok(())
    }
}

/// Counts the stream bytes the receive has taken, for `recv:during`: it
/// fires on the receive's side of the read-ahead threads (which may have
/// read a small image whole before the receive starts), once the receive
/// itself has moved the bytes.
struct ReceiveCounter<R> {
    inner: R,
    passed: u64,
    during_at: Option<u64>,
}

impl<R: Read> Read for ReceiveCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.passed += n as u64;
        if self.during_at.is_some_and(|at| self.passed >= at) {
            failpoint::check(RECV, When::During);
        }
        Ok(n)
    }
}

/// Runs the pass for one image into `target`. "recv" begun is recorded by
/// the pool's `started` callback, after the BEGIN record is decoded and
/// before any byte is received. On failure whatever the receive left is
/// destroyed before returning.
pub fn run(
    op: &mut Operation,
    cx: &Context,
    plan: &ReceivePlan,
    target: &DatasetName,
    source: StreamSource,
) -> Result<PipelineOutcome> {
    let files0 = plan.manifest.files0().unwrap_or_default();
    let raw: Box<dyn Read + Send> = match source {
        StreamSource::File(path) => Box::new(
            std::fs::File::open(&path).map_err(|e| Error::io_path("cannot open image file", &path, e))?,
        ),
        StreamSource::Reader(reader) => reader,
    };
    let mut buffered = BufReader::with_capacity(1 << 20, raw);
    let head = buffered.fill_buf().map_err(|e| Error::from_io(e, "cannot read image file"))?.to_vec();
    let compression = match files0.compression.as_deref() {
        Some(declared) => {
            let declared = Compression::parse(declared)?;
            compression::check_magic(declared, &head)?;
            declared
        }
        None => compression::sniff(&head).unwrap_or(Compression::None),
    };
    let result = Arc::new(Mutex::new(Verified::default()));
    let title = format!("Image {}", plan.uuid);
    let verifier = VerifyingReader {
        inner: buffered,
        hasher: Sha1::new(),
        bytes: 0,
        expected_size: files0.size,
        expected_sha1: files0.sha1.clone(),
        uuid: plan.uuid.to_string(),
        result: result.clone(),
        progress: match plan.progress {
            Some(shared) => shared.part(),
            None => cx.reporter.progress(&title, files0.size),
        },
    };
    // Reading and hashing the file (and, for import, the download), and
    // decompressing it, each run on a thread of their own; the receive
    // stays on this one.
    let verified = ReadAhead::start("read", Box::new(verifier))?;
    let mut decoded: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(verified),
        _ => Box::new(ReadAhead::start("decompress", compression::decoder(compression, Box::new(verified)))?),
    };

    let mut header = [0u8; zstream::RECORD_LEN];
    decoded.read_exact(&mut header).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::InvalidStream("the stream ends before its BEGIN record".to_string()),
        _ => Error::from_io(e, "cannot read the stream's BEGIN record"),
    })?;
    let begin = zstream::read_begin(&header)?;
    match (plan.origin_guid, begin.fromguid) {
        (None, 0) => {}
        (None, from) => {
            return Err(Error::InvalidStream(format!(
                "the stream is incremental (from guid {from}) but the manifest has no origin"
            )))
        }
        (Some(expected), from) if expected != from => {
            return Err(Error::InvalidStream(format!(
                "the stream is incremental from guid {from}, but origin {}'s @final has guid {expected}",
                plan.origin.as_ref().map(|o| o.to_string()).unwrap_or_default()
            )))
        }
        _ => {}
    }
    // zfs gets a stream whose every record was checked first: corrupt or
    // misdirected records never reach the pool (zfs-fuse's daemon has been
    // seen to hang on the garbage a corrupt gzip decodes to). The dir pool's
    // receive validates the stream itself.
    let checked: Box<dyn Read + Send> = match plan.pool.driver() {
        DriverKind::Zfs => Box::new(zstream::ValidatingReader::with_begin(header, decoded, plan.origin_guid)?),
        DriverKind::Dir => Box::new(Cursor::new(header.to_vec()).chain(decoded)),
    };
    let mut stream = ReceiveCounter {
        inner: checked,
        passed: 0,
        // Half of the file's size in stream bytes: mid-stream whatever the
        // compression (a stream is never smaller than its compressed file).
        during_at: failpoint::during_at(RECV, files0.size.unwrap_or(0)),
    };
    let mut recv_recorded = false;
    let received = plan.pool.receive(target, plan.origin.as_ref(), &mut stream, &mut |pid| {
        recv_recorded = true;
        op.begun(RECV, steps::recv_begun_data(plan.uuid, target, begin.toguid, begin.fromguid, pid))
    });
    let outcome = received.and_then(|received| {
        // The receive may stop reading at the END record; the file's tail
        // (a compressor's trailer) must still be read and checked.
        io::copy(&mut stream, &mut io::sink()).map_err(|e| Error::from_io(e, "cannot read image file"))?;
        let verified = result.lock().unwrap_or_else(|p| p.into_inner());
        match &verified.sha1 {
            Some(sha1) => Ok(PipelineOutcome { bytes: verified.bytes, sha1: sha1.clone(), received }),
            None => Err(Error::internal("the image file was not read to its end")),
        }
    });
    // The stages stop (and the download thread with them) before anything
    // is cleaned up or retried.
    drop(stream);
    let error = match outcome {
        Ok(done) => return Ok(done),
        Err(error) => error,
    };
    if recv_recorded {
        if let crate::operation::StepState::Begun { begun } = op.step_state(RECV, Some(&plan.uuid.to_string())) {
            // The failure that stopped the receive stays the first error: a
            // cleanup problem is added to it, never put in its place.
            if let Err(cleanup) = steps::undo_recv(cx, &begun) {
                return Err(Error::Multi(vec![error, cleanup]));
            }
        }
    }
    Err(error)
}
