//! A stage of the streaming pipeline on a thread of its own.
//!
//! [`ReadAhead`] runs a reader (reading and hashing the image file, or the
//! decompressor) on its own thread, so that on a host with several cores
//! the stages of one image overlap and the pipeline runs at the speed of
//! its slowest stage instead of the sum of all. Buffers go over a bounded
//! channel and come back to be refilled: memory stays flat (a few buffers
//! per stage) whatever the image size.
//!
//! Dropping a [`ReadAhead`] stops its thread and waits for it, so no stage
//! outlives the pipeline: a download thread still writing its partial file
//! while the caller already deletes or restarts it would race with it.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::error::{Error, Result};

/// Buffers in flight between two stages: enough to ride out a stage's
/// jitter, few enough to keep memory flat (DEPTH x CHUNK per stage).
const DEPTH: usize = 4;
const CHUNK: usize = 256 << 10;

/// What the thread sends: bytes, then the end (an empty buffer) or an error.
type Filled = io::Result<Vec<u8>>;

/// Reads an inner reader ahead on its own thread; `read` takes from the
/// buffers it has filled. The inner reader's errors come out unchanged, in
/// order, after the bytes read before them.
pub struct ReadAhead {
    /// `None` only while dropping.
    filled: Option<Receiver<Filled>>,
    /// Emptied buffers, back to the thread to be refilled.
    spent: SyncSender<Vec<u8>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    current: Vec<u8>,
    at: usize,
    ended: bool,
    /// The inner reader's error, repeated (in kind and words) by every
    /// read after it: a failed stream never turns into an ended one.
    failed: Option<(io::ErrorKind, String)>,
}

impl ReadAhead {
    /// Starts reading `inner` on a thread called `name`.
    pub fn start(name: &str, inner: Box<dyn Read + Send>) -> Result<ReadAhead> {
        let (sender, filled) = mpsc::sync_channel::<Filled>(DEPTH);
        let (spent, returned) = mpsc::sync_channel::<Vec<u8>>(DEPTH + 1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || fill_loop(inner, &sender, &returned, &stopping))
            .map_err(|e| Error::internal(format!("cannot start the {name} thread: {e}")))?;
        Ok(ReadAhead {
            filled: Some(filled),
            spent,
            stop,
            thread: Some(thread),
            current: Vec::new(),
            at: 0,
            ended: false,
            failed: None,
        })
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let received = match &self.filled {
            Some(filled) => filled.recv(),
            None => return Err(io::Error::other("the read-ahead stage is stopping")),
        };
        match received {
            Ok(Ok(chunk)) => {
                self.ended = chunk.is_empty();
                // The thread may have stopped already: then the buffer is
                // simply dropped.
                let _ = self.spent.try_send(std::mem::replace(&mut self.current, chunk));
                self.at = 0;
                Ok(())
            }
            Ok(Err(e)) => {
                self.failed = Some((e.kind(), e.to_string()));
                Err(e)
            }
            Err(_) => {
                let e = io::Error::other("the read-ahead thread stopped without an end or an error");
                self.failed = Some((e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

fn fill_loop(
    mut inner: Box<dyn Read + Send>,
    sender: &SyncSender<Filled>,
    returned: &Receiver<Vec<u8>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut chunk = match returned.try_recv() {
            Ok(chunk) => chunk,
            Err(TryRecvError::Empty) => vec![0u8; CHUNK],
            Err(TryRecvError::Disconnected) => return,
        };
        chunk.resize(CHUNK, 0);
        let (n, outcome) = fill(inner.as_mut(), &mut chunk);
        chunk.truncate(n);
        if n > 0 && sender.send(Ok(chunk)).is_err() {
            return;
        }
        match outcome {
            Fill::Full => {}
            Fill::End => {
                let _ = sender.send(Ok(Vec::new()));
                return;
            }
            Fill::Failed(e) => {
                let _ = sender.send(Err(e));
                return;
            }
        }
    }
}

enum Fill {
    Full,
    End,
    Failed(io::Error),
}

/// Reads until `buf` is full, `inner` ends or fails, so that the buffers
/// passed on are large even when `inner` hands out small pieces.
fn fill(inner: &mut dyn Read, buf: &mut [u8]) -> (usize, Fill) {
    let mut n = 0;
    while n < buf.len() {
        match inner.read(&mut buf[n..]) {
            Ok(0) => return (n, Fill::End),
            Ok(read) => n += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Fill::Failed(e)),
        }
    }
    (n, Fill::Full)
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.at == self.current.len() {
            if let Some((kind, message)) = &self.failed {
                return Err(io::Error::new(*kind, message.clone()));
            }
            if self.ended {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = (self.current.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // The thread notices at its next buffer: the flag when it is
        // between reads, the closed channel when it is sending. It drops
        // its inner reader on the way out (and so stops the stage before
        // it the same way).
        self.stop.store(true, Ordering::Relaxed);
        self.filled = None;
        if let Some(thread) = self.thread.take() {
            // A panic of the stage has been reported by the panic hook;
            // its reader saw the channel close.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Hands out at most 1000 bytes a read, then fails.
    struct ThenFail(io::Cursor<Vec<u8>>);

    impl Read for ThenFail {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let len = buf.len().min(1000);
            match self.0.read(&mut buf[..len])? {
                0 => Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut")),
                n => Ok(n),
            }
        }
    }

    /// An endless reader that counts its reads and says when it is dropped.
    struct Endless {
        reads: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            buf.fill(7);
            Ok(buf.len())
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn data() -> Vec<u8> {
        (0..(3 * CHUNK as u32 + 12_345)).map(|i| (i % 241) as u8).collect()
    }

    #[test]
    fn passes_every_byte_in_order() {
        let data = data();
        let mut ahead = ReadAhead::start("test", Box::new(io::Cursor::new(data.clone()))).unwrap();
        let mut out = Vec::new();
        ahead.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(ahead.read(&mut [0u8; 10]).unwrap(), 0);
    }

    #[test]
    fn passes_the_bytes_before_an_error_then_the_error() {
        let data = data();
        let mut ahead = ReadAhead::start("test", Box::new(ThenFail(io::Cursor::new(data.clone())))).unwrap();
        let mut out = Vec::new();
        let err = ahead.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, data);
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(err.to_string(), "cut");
        assert_eq!(ahead.read(&mut [0u8; 10]).unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn stages_stop_reading_ahead_and_are_gone_once_dropped() {
        let reads = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let inner = Endless { reads: reads.clone(), dropped: dropped.clone() };
        // Two stages, as in the pipeline: the outer one reads the inner one.
        let first = ReadAhead::start("first", Box::new(inner)).unwrap();
        let mut second = ReadAhead::start("second", Box::new(first)).unwrap();
        let mut buf = vec![0u8; CHUNK];
        second.read_exact(&mut buf).unwrap();
        drop(second);
        // Both threads have ended and dropped what they read from.
        assert!(dropped.load(Ordering::SeqCst));
        let after_drop = reads.load(Ordering::SeqCst);
        thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(reads.load(Ordering::SeqCst), after_drop);
        // Bounded read-ahead: a few buffers per stage, not the endless input.
        assert!(after_drop <= 4 * (DEPTH + 2), "read {after_drop} buffers ahead");
    }
}
