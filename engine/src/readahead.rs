//! A stage of the streaming pipeline on a thread of its own.
//!
//! [`ReadAhead`] runs a reader (reading and hashing the image file, or the
//! decompressor) on its own thread, so that on a host with several cores
//! the stages of one image overlap and the pipeline runs at the speed of
//! its slowest stage instead of the sum of all. Buffers go over a bounded
//! channel and come back to be refilled: memory stays flat (a few buffers
//! per stage) whatever the image size.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;

use crate::error::{Error, Result};

/// Buffers in flight between two stages: enough to ride out a stage's
/// jitter, few enough to keep memory flat (DEPTH x CHUNK per stage).
const DEPTH: usize = 4;
const CHUNK: usize = 256 << 10;

/// What the thread sends: bytes, then the end (an empty buffer) or an error.
type Filled = io::Result<Vec<u8>>;

/// Reads an inner reader ahead on its own thread; `read` takes from the
/// buffers it has filled. The inner reader's errors come out unchanged, in
/// order, after the bytes read before them. Dropping a `ReadAhead` stops
/// the thread at its next buffer.
pub struct ReadAhead {
    filled: Receiver<Filled>,
    /// Emptied buffers, back to the thread to be refilled.
    spent: SyncSender<Vec<u8>>,
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
        thread::Builder::new()
            .name(name.to_string())
            .spawn(move || fill_loop(inner, &sender, &returned))
            .map_err(|e| Error::internal(format!("cannot start the {name} thread: {e}")))?;
        Ok(ReadAhead { filled, spent, current: Vec::new(), at: 0, ended: false, failed: None })
    }
}

fn fill_loop(mut inner: Box<dyn Read + Send>, sender: &SyncSender<Filled>, returned: &Receiver<Vec<u8>>) {
    loop {
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
            match self.filled.recv() {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    // The thread may have stopped already: then the
                    // buffer is simply dropped.
                    let _ = self.spent.try_send(std::mem::replace(&mut self.current, chunk));
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
                Err(_) => {
                    let e = io::Error::other("the read-ahead thread stopped without an end or an error");
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
            }
        }
        let n = (self.current.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
