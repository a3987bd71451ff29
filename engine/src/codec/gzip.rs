//! Parallel gzip compression, as `pigz -i` does it: the input is cut into
//! chunks, each deflated on its own by a worker (no dictionary shared
//! across chunks, which costs well under 1% of size at this chunk size),
//! ending on a byte boundary with a sync flush, the last one with the
//! final block. The pieces are written in order behind one gzip header
//! with one trailer (the chunks' CRC-32s combined), so the file is a plain
//! single-member gzip file that any gzip reads.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

use flate2::{Compress, Crc, FlushCompress, Status};

use super::workers::Workers;

/// Input bytes per chunk: large enough that restarting the window costs
/// little, small enough to keep every core busy and memory flat.
const CHUNK: usize = 1 << 20;

struct Deflated {
    bytes: Vec<u8>,
    crc: Crc,
}

pub struct ParallelGzEncoder {
    inner: Box<dyn Write + Send>,
    /// Written with the first compressed bytes.
    header: Option<[u8; 10]>,
    level: u32,
    chunk: Vec<u8>,
    in_flight: VecDeque<mpsc::Receiver<io::Result<Deflated>>>,
    max_in_flight: usize,
    crc: Crc,
    workers: Workers,
}

impl ParallelGzEncoder {
    /// Compresses at `level` (1-9) on `workers` (see [`workers::count`]).
    pub fn new(inner: Box<dyn Write + Send>, level: u32, workers: Workers) -> ParallelGzEncoder {
        // XFL says "best" for 9 and "fastest" for 1, as gzip writes it;
        // mtime 0 (a stream has no file time) and OS 3 (Unix).
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        ParallelGzEncoder {
            inner,
            header: Some([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]),
            level,
            chunk: Vec::with_capacity(CHUNK),
            in_flight: VecDeque::new(),
            max_in_flight: workers.threads() * 2,
            crc: Crc::new(),
            workers,
        }
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        if self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let input = std::mem::replace(&mut self.chunk, if last { Vec::new() } else { Vec::with_capacity(CHUNK) });
        let level = self.level;
        let (sender, receiver) = mpsc::sync_channel(1);
        self.workers.run(move || {
            let _ = sender.send(deflate_chunk(&input, level, last));
        });
        self.in_flight.push_back(receiver);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(receiver) = self.in_flight.pop_front() else { return Ok(()) };
        let deflated = receiver.recv().map_err(|_| io::Error::other("a gzip worker stopped without a result"))??;
        if let Some(header) = self.header.take() {
            self.inner.write_all(&header)?;
        }
        self.crc.combine(&deflated.crc);
        self.inner.write_all(&deflated.bytes)
    }

    pub fn finish(mut self) -> io::Result<Box<dyn Write + Send>> {
        self.submit(true)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl Write for ParallelGzEncoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Writes what the workers have finished; the chunk being filled stays
    /// (a flush in the middle would cost a chunk boundary).
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Raw deflate of one chunk: a sync flush ends it on a byte boundary so
/// the next chunk's blocks can follow; the last chunk ends the stream.
fn deflate_chunk(input: &[u8], level: u32, last: bool) -> io::Result<Deflated> {
    let mut crc = Crc::new();
    crc.update(input);
    let mut deflate = Compress::new(flate2::Compression::new(level), false);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    // Stored blocks are the worst case: 5 bytes per 16 KiB, and the flush.
    let mut bytes = Vec::with_capacity(input.len() + input.len() / 1000 + 64);
    loop {
        let consumed = deflate.total_in() as usize;
        let status = deflate.compress_vec(&input[consumed..], &mut bytes, flush).map_err(io::Error::other)?;
        let all_in = deflate.total_in() as usize == input.len();
        // zlib's rule: a flush is complete once it returns with room left.
        if status == Status::StreamEnd || (!last && all_in && bytes.len() < bytes.capacity()) {
            return Ok(Deflated { bytes, crc });
        }
        bytes.reserve(bytes.capacity().max(4096));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testdata::{self, Shared};
    use std::io::Read;

    fn compress(input: &[u8], level: u32, threads: usize) -> Vec<u8> {
        let out = Shared::default();
        let mut enc = ParallelGzEncoder::new(Box::new(out.clone()), level, Workers::new("test", threads).unwrap());
        // Odd write sizes, so chunks fill across writes.
        for piece in input.chunks(77_777) {
            enc.write_all(piece).unwrap();
        }
        enc.finish().unwrap();
        out.bytes()
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut half = testdata::sample(len / 2, 1, true);
        half.extend(testdata::sample(len - len / 2, 2, false));
        half
    }

    #[test]
    fn output_is_one_gzip_member_that_gzip_and_flate2_read() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + CHUNK / 2] {
            let input = sample(len);
            for (level, threads) in [(6, 2), (1, 1), (9, 3)] {
                let file = compress(&input, level, threads);
                // GzDecoder stops after the first member: one member holds it all.
                let mut single = Vec::new();
                flate2::read::GzDecoder::new(file.as_slice()).read_to_end(&mut single).unwrap();
                assert!(single == input, "{len} bytes, level {level}: flate2 output differs");
                assert!(testdata::filter("gzip", &["-dc"], &file) == input, "{len} bytes, level {level}: gzip -dc output differs");
            }
        }
    }

    #[test]
    fn compresses_about_as_well_as_one_thread() {
        let input = sample(4 * CHUNK);
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        plain.write_all(&input).unwrap();
        let plain = plain.finish().unwrap();
        let parallel = compress(&input, 6, 2);
        assert!(parallel.len() < plain.len() + plain.len() / 50, "{} vs {} bytes", parallel.len(), plain.len());
    }
}
