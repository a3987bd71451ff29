//! One image file's download, as a reader the receive pipeline pulls from.
//!
//! The bytes go to `downloads/UUID.file.partial` as they arrive and on to
//! the pipeline (hash, decompress, receive) at the same time. When a
//! `.partial` is already there (an interrupted earlier run), its bytes are
//! fed first, from byte 0 (the receive restarts anyway, and the hash must
//! cover the whole file), then the transfer continues from its length with
//! `Range: bytes=LEN-`; a server that answers 200 instead of 206 has its
//! first LEN bytes read and discarded. At the end the file is synced and
//! renamed to `UUID.file`.
//!
//! Connection errors, 5xx answers, cut bodies and stalls (no byte within
//! the read timeout) are retried with backoff, at most [`MAX_ATTEMPTS`]
//! attempts in all; each retry is a `step-progress` event of `fetch`. So is
//! a byte checkpoint, at most every [`CHECKPOINT_EVERY`], each after an
//! fdatasync of the file: the file's length, not the event, sets where a
//! resume starts.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use imgadm_journal::{EventKind, Journal, NewEvent, OpId};
use serde_json::json;

use super::imgapi::{BodyReader, ImgapiClient};
use crate::error::{Error, Result};
use crate::failpoint::{self, When};
use crate::fsutil;
use crate::ids::ImageUuid;
use crate::steps::FETCH;

pub const MAX_ATTEMPTS: u32 = 3;
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Whether a failed transfer may be retried (and its partial file kept
/// for a later resume): connection errors, stalls, cuts and 5xx answers.
pub fn is_transfer_error(error: &Error) -> bool {
    match error {
        Error::Client { .. } => true,
        Error::Api { status, .. } => *status >= 500,
        Error::Multi(errors) => errors.first().is_some_and(is_transfer_error),
        _ => false,
    }
}

/// What a download needs to know.
pub struct DownloadPlan {
    pub client: ImgapiClient,
    pub uuid: ImageUuid,
    pub partial: PathBuf,
    pub complete: PathBuf,
    pub expected_size: Option<u64>,
    pub expected_sha1: Option<String>,
    /// Where retries and checkpoints are journaled.
    pub journal: Journal,
    pub op: OpId,
}

pub struct FetchingReader {
    plan: DownloadPlan,
    /// The earlier run's bytes, fed again before the transfer continues.
    refeed: io::Take<File>,
    out: File,
    body: Option<BodyReader>,
    /// Bytes of a 200 answer still to discard (they are in the file already).
    skip: u64,
    /// The partial file's length.
    written: u64,
    /// Bytes handed to the pipeline (re-fed and new).
    delivered: u64,
    failures: u32,
    last_checkpoint: Instant,
    /// Where an armed `fetch:during` failpoint fires (bytes delivered).
    during_at: Option<u64>,
    finished: bool,
}

impl FetchingReader {
    /// Opens (or creates) the partial file. Its length is where the
    /// transfer resumes; a partial longer than the file can be is dropped.
    pub fn open(plan: DownloadPlan) -> Result<FetchingReader> {
        if let Some(dir) = plan.partial.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create", dir, e))?;
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&plan.partial)
            .map_err(|e| Error::io_path("cannot open download file", &plan.partial, e))?;
        let mut written = out.metadata().map_err(|e| Error::io_path("cannot stat", &plan.partial, e))?.len();
        if plan.expected_size.is_some_and(|size| written > size) {
            out.set_len(0).map_err(|e| Error::io_path("cannot truncate", &plan.partial, e))?;
            written = 0;
        }
        if written > 0 {
            tracing::info!(image = %plan.uuid, bytes = written, "resuming download from the partial file");
        }
        let refeed = File::open(&plan.partial)
            .map_err(|e| Error::io_path("cannot open download file", &plan.partial, e))?
            .take(written);
        let during_at = failpoint::during_at(FETCH, plan.expected_size.unwrap_or(0));
        Ok(FetchingReader {
            plan,
            refeed,
            out,
            body: None,
            skip: 0,
            written,
            delivered: 0,
            failures: 0,
            last_checkpoint: Instant::now(),
            during_at,
            finished: false,
        })
    }

    fn journal_progress(&self, data: serde_json::Value) -> Result<()> {
        self.plan.journal.append(vec![NewEvent {
            op: self.plan.op.clone(),
            kind: EventKind::StepProgress,
            step: Some(FETCH.to_string()),
            data,
        }])?;
        Ok(())
    }

    /// Starts (or restarts) the transfer from the partial file's length.
    fn open_body(&mut self) -> Result<()> {
        let response = self.plan.client.get_file(self.plan.uuid, self.written)?;
        let changed = |what: &str, expected: &dyn std::fmt::Display, got: &dyn std::fmt::Display| {
            Error::DownloadError(format!(
                "image {} file changed on the server ({what}: expected {expected}, the server says {got}): download it again",
                self.plan.uuid
            ))
        };
        if let (Some(expected), Some(etag)) = (&self.plan.expected_sha1, &response.etag) {
            if etag.len() == 40 && etag != expected {
                return Err(changed("sha1", expected, etag));
            }
        }
        let full_length = match (response.partial, response.content_length) {
            (true, Some(length)) => Some(length + self.written),
            (_, length) => length,
        };
        if let (Some(expected), Some(length)) = (self.plan.expected_size, full_length) {
            if expected != length {
                return Err(Error::DownloadError(format!(
                    "unexpected mismatch between expected size, {expected}, and Content-Length header, {length}"
                )));
            }
        }
        self.skip = if response.partial { 0 } else { self.written };
        if self.written > 0 {
            tracing::info!(image = %self.plan.uuid, offset = self.written, range_honoured = response.partial, "download continues");
        }
        self.body = Some(response.body);
        Ok(())
    }

    /// Records a failed attempt; `Err` when no attempt is left.
    fn retry_or_give_up(&mut self, error: Error) -> Result<()> {
        self.body = None;
        self.failures += 1;
        tracing::warn!(image = %self.plan.uuid, attempt = self.failures, error = %error, "download attempt failed");
        self.journal_progress(json!({
            "image": self.plan.uuid.to_string(),
            "attempt": self.failures,
            "code": error.code(),
            "error": error.to_string(),
            "bytes": self.written,
            "retry": self.failures < MAX_ATTEMPTS,
        }))?;
        if self.failures >= MAX_ATTEMPTS {
            return Err(error);
        }
        std::thread::sleep(Duration::from_millis(500) * 2u32.pow(self.failures - 1));
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.out.sync_all().map_err(|e| Error::io_path("cannot sync", &self.plan.partial, e))?;
        fsutil::rename_durable(&self.plan.partial, &self.plan.complete)?;
        self.finished = true;
        Ok(())
    }

    fn keep(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io_path("cannot write", &self.plan.partial, e))?;
        self.written += bytes.len() as u64;
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            self.out.sync_data().map_err(|e| Error::io_path("cannot sync", &self.plan.partial, e))?;
            self.journal_progress(json!({"image": self.plan.uuid.to_string(), "bytes": self.written}))?;
            self.last_checkpoint = Instant::now();
        }
        Ok(())
    }

    fn delivered(&mut self, n: usize) {
        self.delivered += n as u64;
        if self.during_at.is_some_and(|at| self.delivered >= at) {
            failpoint::check(FETCH, When::During);
        }
    }

    /// The next network bytes into `buf`, retrying failed transfers.
    fn read_network(&mut self, buf: &mut [u8]) -> Result<usize> {
        // A partial file that is already whole (a kill between its last
        // byte and its rename) needs no request (a Range from its end is 416).
        if self.body.is_none() && self.written > 0 && self.plan.expected_size == Some(self.written) {
            self.finish()?;
            return Ok(0);
        }
        loop {
            if self.body.is_none() {
                match self.open_body() {
                    Ok(()) => {}
                    Err(e) if is_transfer_error(&e) => {
                        self.retry_or_give_up(e)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(body) = self.body.as_mut() else { continue };
            let n = match body.read(buf) {
                Ok(n) => n,
                Err(e) => {
                    let url = self.plan.client.url().to_string();
                    self.retry_or_give_up(Error::Client { url, detail: e.to_string() })?;
                    continue;
                }
            };
            if n == 0 {
                if self.plan.expected_size.is_some_and(|size| self.written < size) {
                    let url = self.plan.client.url().to_string();
                    let detail = format!("the transfer ended after {} of {} bytes", self.written, self.plan.expected_size.unwrap_or(0));
                    self.retry_or_give_up(Error::Client { url, detail })?;
                    continue;
                }
                self.finish()?;
                return Ok(0);
            }
            let skipped = self.skip.min(n as u64) as usize;
            self.skip -= skipped as u64;
            if skipped == n {
                continue;
            }
            buf.copy_within(skipped..n, 0);
            let fresh = n - skipped;
            self.keep(&buf[..fresh])?;
            return Ok(fresh);
        }
    }
}

impl Read for FetchingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.refeed.limit() > 0 {
            let n = self.refeed.read(buf)?;
            if n > 0 {
                self.delivered(n);
                return Ok(n);
            }
            // The file is shorter than it was a moment ago: fetch from where it ends.
            self.refeed.set_limit(0);
        }
        if self.finished {
            return Ok(0);
        }
        let n = self.read_network(buf).map_err(io::Error::other)?;
        self.delivered(n);
        Ok(n)
    }
}
