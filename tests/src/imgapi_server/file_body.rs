//! GetImageFile bodies: the file goes out as a stream of 64 KiB chunks, so
//! the cut, stall and corrupt switches land on an exact byte and the server
//! can count what it handed to the connection.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use imgadm_engine::ids::ImageUuid;
use tokio::sync::watch;

use super::faults::ResponseFaults;
use super::Shared;

const CHUNK_SIZE: u64 = 64 * 1024;

/// How long a cut waits before dropping the connection. hyper buffers what
/// the body stream yields and a body error drops the connection together
/// with that buffer; pausing first lets it flush, so the client really
/// receives the bytes before the cut.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(50);

pub(super) struct FileDownload {
    pub uuid: ImageUuid,
    pub file: Bytes,
    /// The part of the file this response carries (all of it unless a
    /// honoured Range asked for less).
    pub range: Range<u64>,
    pub faults: ResponseFaults,
}

pub(super) fn body(shared: Arc<Shared>, download: FileDownload) -> Body {
    let mut stall_release = shared.stall_release.subscribe();
    let stall_generation = *stall_release.borrow_and_update();
    let sending = Sending {
        shared,
        position: download.range.start,
        sent: 0,
        download,
        stall_release,
        stall_generation,
    };
    let chunks = futures_util::stream::unfold(Some(sending), |sending| async move {
        sending?.next_chunk().await
    });
    Body::from_stream(chunks)
}

struct Sending {
    shared: Arc<Shared>,
    download: FileDownload,
    /// Absolute offset in the file of the next byte to send.
    position: u64,
    /// Body bytes of this response sent so far (what cut/stall count).
    sent: u64,
    stall_release: watch::Receiver<u64>,
    /// The release counter when this response started: a stall ends when
    /// the switch is cleared, which bumps the counter.
    stall_generation: u64,
}

type Step = (io::Result<Bytes>, Option<Sending>);

impl Sending {
    async fn next_chunk(mut self) -> Option<Step> {
        if self.position >= self.download.range.end {
            return None;
        }
        if self.download.faults.stall_after == Some(self.sent) {
            self.wait_for_stall_release().await;
            self.download.faults.stall_after = None;
        }
        if self.download.faults.cut_after == Some(self.sent) {
            tokio::time::sleep(FLUSH_BEFORE_CUT).await;
            let cut = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "cut_file_at: dropping the connection",
            );
            return Some((Err(cut), None));
        }

        let mut end = (self.position + CHUNK_SIZE).min(self.download.range.end);
        let faults = &self.download.faults;
        for boundary in [faults.cut_after, faults.stall_after].into_iter().flatten() {
            if boundary > self.sent {
                end = end.min(self.position + (boundary - self.sent));
            }
        }
        let chunk = self.chunk(self.position..end);
        self.shared
            .count_file_bytes_sent(self.download.uuid, chunk.len() as u64);
        self.sent += chunk.len() as u64;
        self.position = end;
        Some((Ok(chunk), Some(self)))
    }

    fn chunk(&self, range: Range<u64>) -> Bytes {
        let slice = self
            .download
            .file
            .slice(range.start as usize..range.end as usize);
        match self.download.faults.corrupt_offset {
            Some(offset) if range.contains(&offset) => {
                let mut corrupted = BytesMut::from(&slice[..]);
                corrupted[(offset - range.start) as usize] ^= 0xff;
                corrupted.freeze()
            }
            _ => slice,
        }
    }

    async fn wait_for_stall_release(&mut self) {
        while *self.stall_release.borrow_and_update() == self.stall_generation {
            if self.stall_release.changed().await.is_err() {
                // The server is going away; its runtime drops this task.
                std::future::pending::<()>().await;
            }
        }
    }
}
