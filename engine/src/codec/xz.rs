//! xz on every core: liblzma's multi-threaded decoder (files of several
//! blocks, as `xz -T` writes them, decode one block per thread; a file of
//! one block decodes on one, as fast as the plain decoder) and its
//! multi-threaded encoder.
//!
//! liblzma's threaded decoder has no "concatenated" flag, so streams that
//! follow each other in one file (with their zero padding, a multiple of
//! four bytes) are read here, one decoder per stream, as `xz -d` does.

use std::io::{self, BufRead, BufReader, Read};

use liblzma::stream::{Action, Check, MtStreamBuilder, Status, Stream};

use super::workers;

/// The memory liblzma may use to run blocks in parallel; above it, it
/// decodes on fewer threads (down to one) rather than fail. Enough for
/// two blocks of `xz -6 -T2` (24 MiB blocks, 8 MiB dictionary).
const THREADING_MEMORY: u64 = 128 << 20;

fn mt_builder(level: Option<u32>) -> MtStreamBuilder {
    let mut builder = MtStreamBuilder::new();
    let threads = u32::try_from(workers::count()).unwrap_or(u32::MAX);
    builder.threads(threads).timeout_ms(0);
    match level {
        Some(level) => {
            builder.preset(level).check(Check::Crc64);
        }
        None => {
            builder.memlimit_threading(THREADING_MEMORY).memlimit_stop(u64::MAX);
        }
    }
    builder
}

/// liblzma's multi-threaded decoder for one stream.
pub fn stream_decoder() -> io::Result<Stream> {
    mt_builder(None).decoder().map_err(io::Error::other)
}

/// liblzma's multi-threaded encoder at `level` (0-9), with xz's default
/// CRC64 check and block size (three dictionaries).
pub fn encoder_stream(level: u32) -> io::Result<Stream> {
    mt_builder(Some(level)).encoder().map_err(io::Error::other)
}

pub struct XzMtDecoder<R> {
    source: BufReader<R>,
    stream: Stream,
    /// Set between the end of one stream and the start of the next.
    between_streams: bool,
}

impl<R: Read> XzMtDecoder<R> {
    /// Decodes `source`, starting with `stream` (from [`stream_decoder`]).
    pub fn new(source: R, stream: Stream) -> XzMtDecoder<R> {
        XzMtDecoder { source: BufReader::with_capacity(256 << 10, source), stream, between_streams: false }
    }

    /// Skips the zero padding after a stream; true if another stream
    /// follows, false at the end of the file.
    fn next_stream(&mut self) -> io::Result<bool> {
        let mut padding = 0usize;
        loop {
            let input = self.source.fill_buf()?;
            let zeros = input.iter().take_while(|&&b| b == 0).count();
            let more = zeros < input.len();
            let at_end = input.is_empty();
            self.source.consume(zeros);
            padding += zeros;
            if at_end || more {
                if padding % 4 != 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "the padding after an xz stream is not a multiple of four bytes"));
                }
                if more {
                    self.stream = stream_decoder()?;
                }
                return Ok(more);
            }
        }
    }
}

impl<R: Read> Read for XzMtDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.between_streams {
                if !self.next_stream()? {
                    return Ok(0);
                }
                self.between_streams = false;
            }
            let input = self.source.fill_buf()?;
            let eof = input.is_empty();
            let (in_before, out_before) = (self.stream.total_in(), self.stream.total_out());
            let status = self
                .stream
                .process(input, buf, if eof { Action::Finish } else { Action::Run })
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let consumed = (self.stream.total_in() - in_before) as usize;
            let produced = (self.stream.total_out() - out_before) as usize;
            self.source.consume(consumed);
            if status == Status::StreamEnd {
                self.between_streams = true;
            } else if eof && consumed == 0 && produced == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the xz stream is cut short"));
            }
            if produced > 0 {
                return Ok(produced);
            }
        }
    }
}
