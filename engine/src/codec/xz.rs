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
                if !padding.is_multiple_of(4) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testdata;
    use std::io::Write;

    fn sample(len: usize, seed: u64) -> Vec<u8> {
        testdata::sample(len, seed, seed % 2 == 1)
    }

    /// A file of several blocks, as `xz -T2` writes.
    fn multi_block(input: &[u8]) -> Vec<u8> {
        let mut builder = mt_builder(Some(1));
        builder.block_size(256 << 10);
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), builder.encoder().unwrap());
        enc.write_all(input).unwrap();
        enc.finish().unwrap()
    }

    fn reference(file: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new_multi_decoder(file).read_to_end(&mut out)?;
        Ok(out)
    }

    fn threaded(file: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        XzMtDecoder::new(file, stream_decoder()?).read_to_end(&mut out)?;
        Ok(out)
    }

    fn unxz_command(file: &[u8]) -> Vec<u8> {
        testdata::filter("xz", &["-dc"], file)
    }

    #[test]
    fn multi_block_and_single_block_files_decode_like_the_reference() {
        let input = sample(1_500_000, 3);
        let multi = multi_block(&input);
        let mut single = liblzma::write::XzEncoder::new(Vec::new(), 1);
        single.write_all(&input).unwrap();
        let single = single.finish().unwrap();
        for file in [&multi, &single] {
            assert!(threaded(file).unwrap() == input);
            assert!(unxz_command(file) == input);
        }
    }

    #[test]
    fn the_threaded_encoder_writes_what_xz_reads() {
        let input = sample(600_000, 9);
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), encoder_stream(6).unwrap());
        enc.write_all(&input).unwrap();
        let file = enc.finish().unwrap();
        assert!(unxz_command(&file) == input);
        assert!(threaded(&file).unwrap() == input);
    }

    #[test]
    fn concatenated_streams_and_their_padding() {
        let (a, b) = (sample(300_000, 1), sample(5, 2));
        let mut file = multi_block(&a);
        file.extend_from_slice(&[0; 8]);
        file.extend(multi_block(&b));
        assert_eq!(threaded(&file).unwrap(), [a.clone(), b].concat());
        let mut bad_padding = multi_block(&a);
        bad_padding.extend_from_slice(&[0; 3]);
        assert!(threaded(&bad_padding).is_err() && reference(&bad_padding).is_err());
        let mut garbage = multi_block(&a);
        garbage.extend_from_slice(b"not xz");
        assert!(threaded(&garbage).is_err() && reference(&garbage).is_err());
    }

    #[test]
    fn truncations_and_bit_flips_fail_as_the_reference_does() {
        let file = multi_block(&sample(700_000, 5));
        for cut in (0..file.len()).step_by(file.len() / 61 + 1).chain([file.len() - 1]) {
            let err = threaded(&file[..cut]).unwrap_err();
            assert!(reference(&file[..cut]).is_err(), "cut at {cut}");
            assert!(matches!(err.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData), "cut at {cut}: {err}");
        }
        for (bit, flipped) in testdata::bit_flips(&file, 150, 11) {
            testdata::agree(reference(&flipped), threaded(&flipped), &format!("bit {bit} flipped"));
        }
    }
}
