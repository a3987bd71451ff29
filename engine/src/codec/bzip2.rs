//! Parallel bzip2 decoding, the way lbzip2 does it.
//!
//! A bzip2 stream is a 4-byte header (`BZh` and the level), blocks that
//! each start with a 48-bit magic (0x314159265359) at any bit offset, and
//! an end-of-stream magic (0x177245385090) followed by the CRC combined
//! from the blocks' CRCs. Blocks decode independently, so a [`Splitter`]
//! finds the magics in the compressed bits and cuts the input into blocks;
//! each block is re-framed as a stream of its own (header, the block's
//! bits, end-of-stream magic, the block's CRC as the combined CRC) and
//! decoded by the `bzip2` crate on a worker thread. [`ParallelBzDecoder`]
//! hands the output on in order and checks each stream's combined CRC.
//!
//! The block magic can occur by chance inside compressed data. A block cut
//! at such a false magic fails to decode before it gives any output; it is
//! then joined with the next piece and decoded again, until it decodes or
//! would be longer than any real block can be.
//!
//! Memory is bounded whatever the file: a fixed number of blocks in flight,
//! each at most [`max_block_bits`] of input and two output pieces queued.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::mpsc;

use bzip2::{Decompress, Status};

use super::workers::Workers;

const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
const END_MAGIC: u64 = 0x1772_4538_5090;
const MAGIC_BITS: u64 = 48;
/// A magic, then the 32-bit CRC that follows each of them.
const MARK_BITS: u64 = MAGIC_BITS + 32;
/// Output is handed from workers to the reader in pieces of this size.
const PIECE: usize = 1 << 20;
const READ_SIZE: usize = 256 << 10;

/// The most compressed bits a block of `level` can take: at most
/// 100,000 x level symbols of at most 23 bits (bzip2's longest code), plus
/// the tables and selectors. A longer stretch without a magic is corrupt.
fn max_block_bits(level: u8) -> u64 {
    u64::from(level) * 100_000 * 23 + 300_000
}

/// For each byte value, the (magic, bit shift) pairs whose second byte it
/// is: bit `b` (0-7) for the block magic at shift `b`, bit `8 + b` for the
/// end magic. A quick filter before the exact 48-bit comparison.
const SECOND_BYTE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut shift = 0;
    while shift < 8 {
        table[((BLOCK_MAGIC >> (32 + shift)) & 0xff) as usize] |= 1 << shift;
        table[((END_MAGIC >> (32 + shift)) & 0xff) as usize] |= 1 << (8 + shift);
        shift += 1;
    }
    table
};

/// The compressed bits of one block: `bits` bits from bit `start` (0-7)
/// of `bytes`, beginning with the block magic.
#[derive(Clone)]
struct BlockBits {
    bytes: Vec<u8>,
    start: u64,
    bits: u64,
    level: u8,
    crc: u32,
}

impl BlockBits {
    /// This block followed by `next`, which starts where this one ends.
    fn join(&self, next: &BlockBits) -> BlockBits {
        let end = self.start + self.bits;
        let mut bytes = self.bytes[..(end / 8) as usize].to_vec();
        // `next` starts at bit end % 8 of the byte both share.
        bytes.extend_from_slice(&next.bytes);
        BlockBits { bytes, start: self.start, bits: self.bits + next.bits, level: self.level, crc: self.crc }
    }

    /// A one-block bzip2 stream: header, this block, the end magic and the
    /// block's CRC, which is the combined CRC of a stream of one block.
    fn reframe(&self) -> Vec<u8> {
        let mut out = BitWriter::with_capacity(self.bytes.len() + 16);
        out.bytes.extend_from_slice(b"BZh");
        out.bytes.push(b'0' + self.level);
        let whole = (self.bits / 8) as usize;
        let shift = self.start as u32;
        for i in 0..whole {
            out.bytes.push(shifted_byte(&self.bytes, i, shift));
        }
        let rest = (self.bits % 8) as u32;
        if rest > 0 {
            out.put(u64::from(shifted_byte(&self.bytes, whole, shift) >> (8 - rest)), rest);
        }
        out.put(END_MAGIC, MAGIC_BITS as u32);
        out.put(u64::from(self.crc), 32);
        out.finish()
    }
}

/// The byte at bit `8 * index + shift` of `bytes` (missing bits are 0).
fn shifted_byte(bytes: &[u8], index: usize, shift: u32) -> u8 {
    let high = bytes.get(index).copied().unwrap_or(0);
    if shift == 0 {
        return high;
    }
    let low = bytes.get(index + 1).copied().unwrap_or(0);
    (high << shift) | (low >> (8 - shift))
}

struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    count: u32,
}

impl BitWriter {
    fn with_capacity(n: usize) -> BitWriter {
        BitWriter { bytes: Vec::with_capacity(n), acc: 0, count: 0 }
    }

    /// Appends the low `bits` bits of `value` (at most 56 at a time).
    fn put(&mut self, value: u64, bits: u32) {
        if bits > 32 {
            self.put(value >> 32, bits - 32);
            self.put(value & 0xffff_ffff, 32);
            return;
        }
        self.acc = (self.acc << bits) | (value & ((1 << bits) - 1));
        self.count += bits;
        while self.count >= 8 {
            self.count -= 8;
            self.bytes.push((self.acc >> self.count) as u8);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.bytes.push((self.acc << (8 - self.count)) as u8);
        }
        self.bytes
    }
}

/// A piece of a bzip2 file, in file order.
enum Segment {
    Block(BlockBits),
    StreamEnd { crc: u32 },
}

enum SplitState {
    /// At a stream header (or the end of the file).
    Header,
    /// At the magic at bit `at` of a stream of `level`.
    Magic { level: u8, at: u64 },
}

/// Cuts a bzip2 file into blocks and stream ends, reading as it goes and
/// keeping only the bytes from the current block on.
struct Splitter<R> {
    source: R,
    /// Input from the current block (or header) on; bit positions below
    /// count from its first byte.
    buf: Vec<u8>,
    eof: bool,
    state: SplitState,
    /// Where the search for the next magic goes on from.
    scan_from: u64,
    streams: u64,
}

fn corrupt(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn cut_short() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the bzip2 stream is cut short")
}

impl<R: Read> Splitter<R> {
    fn new(source: R) -> Splitter<R> {
        Splitter { source, buf: Vec::new(), eof: false, state: SplitState::Header, scan_from: 0, streams: 0 }
    }

    /// Reads more input; false at the end of the file.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_SIZE, 0);
        let n = loop {
            match self.source.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(len + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// Makes sure the first `bits` bits are there; false if the file ends first.
    fn have(&mut self, bits: u64) -> io::Result<bool> {
        while (self.buf.len() as u64) * 8 < bits {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The `count` (at most 56) bits at bit `at`; they must be there.
    fn bits(&self, at: u64, count: u32) -> u64 {
        let first = (at / 8) as usize;
        let mut word = 0u64;
        for i in 0..8 {
            word = (word << 8) | u64::from(self.buf.get(first + i).copied().unwrap_or(0));
        }
        (word >> (64 - (at % 8) as u32 - count)) & ((1 << count) - 1)
    }

    /// Drops the bytes before the one holding bit `at`; returns how many
    /// bits positions move down by.
    fn drop_before(&mut self, at: u64) -> u64 {
        let bytes = (at / 8) as usize;
        self.buf.drain(..bytes);
        bytes as u64 * 8
    }

    fn next(&mut self) -> io::Result<Option<Segment>> {
        loop {
            match self.state {
                SplitState::Header => {
                    if !self.have(32)? {
                        if self.buf.is_empty() && self.streams > 0 {
                            return Ok(None);
                        }
                        return Err(cut_short());
                    }
                    if &self.buf[..3] != b"BZh" || !(b'1'..=b'9').contains(&self.buf[3]) {
                        return Err(corrupt("no bzip2 stream header where one must be"));
                    }
                    self.streams += 1;
                    self.state = SplitState::Magic { level: self.buf[3] - b'0', at: 32 };
                }
                SplitState::Magic { level, at } => {
                    if !self.have(at + MARK_BITS)? {
                        return Err(cut_short());
                    }
                    let magic = self.bits(at, MAGIC_BITS as u32);
                    let crc = self.bits(at + MAGIC_BITS, 32) as u32;
                    if magic == END_MAGIC {
                        // The stream's last byte holds the CRC's last bit.
                        let end = (at + MARK_BITS).div_ceil(8) as usize;
                        self.buf.drain(..end);
                        self.scan_from = 0;
                        self.state = SplitState::Header;
                        return Ok(Some(Segment::StreamEnd { crc }));
                    }
                    if magic != BLOCK_MAGIC {
                        return Err(corrupt("no bzip2 block where one must be"));
                    }
                    self.scan_from = self.scan_from.max(at + MAGIC_BITS);
                    let next = loop {
                        if let Some(next) = self.find_magic()? {
                            break next;
                        }
                        if self.scan_from - at > max_block_bits(level) {
                            return Err(corrupt("a bzip2 block is longer than any valid block"));
                        }
                        // One more search once the end is known: an end
                        // magic is only told from data by what follows it.
                        if self.eof {
                            return Err(cut_short());
                        }
                        self.fill()?;
                    };
                    let block = BlockBits {
                        bytes: self.buf[(at / 8) as usize..next.div_ceil(8) as usize].to_vec(),
                        start: at % 8,
                        bits: next - at,
                        level,
                        crc,
                    };
                    let moved = self.drop_before(next);
                    self.scan_from = next - moved;
                    self.state = SplitState::Magic { level, at: next - moved };
                    return Ok(Some(Segment::Block(block)));
                }
            }
        }
    }

    /// The next block or end magic at or after `scan_from` in the input
    /// read so far; `None` if more input is needed to know (`scan_from`
    /// then says where to go on from).
    fn find_magic(&mut self) -> io::Result<Option<u64>> {
        let len = self.buf.len();
        let mut byte = (self.scan_from / 8) as usize;
        // A magic starting in byte `byte` reaches at most 7 bytes on.
        while byte + 7 <= len {
            let candidates = SECOND_BYTE[self.buf[byte + 1] as usize];
            if candidates != 0 {
                for shift in 0..8u64 {
                    let at = byte as u64 * 8 + shift;
                    if at < self.scan_from {
                        continue;
                    }
                    let word = self.bits(at, MAGIC_BITS as u32);
                    if candidates & (1 << shift) != 0 && word == BLOCK_MAGIC {
                        return Ok(Some(at));
                    }
                    if candidates & (1 << (8 + shift)) != 0 && word == END_MAGIC {
                        match self.is_stream_end(at)? {
                            Some(true) => return Ok(Some(at)),
                            Some(false) => {}
                            None => {
                                self.scan_from = at;
                                return Ok(None);
                            }
                        }
                    }
                }
            }
            byte += 1;
        }
        self.scan_from = self.scan_from.max(byte as u64 * 8);
        Ok(None)
    }

    /// Whether the end magic at `at` really ends the stream: the file ends
    /// after its CRC, or another stream starts there with a block or an
    /// end magic. `None` if more input is needed to tell.
    fn is_stream_end(&mut self, at: u64) -> io::Result<Option<bool>> {
        let next = (at + MARK_BITS).div_ceil(8) * 8;
        let wanted = next + 32 + MAGIC_BITS;
        if (self.buf.len() as u64) * 8 < wanted && !self.eof {
            return Ok(None);
        }
        if (self.buf.len() as u64) * 8 == next {
            return Ok(Some(true));
        }
        if (self.buf.len() as u64) * 8 < wanted {
            return Ok(Some(false));
        }
        let header = &self.buf[(next / 8) as usize..(next / 8) as usize + 4];
        let magic = self.bits(next + 32, MAGIC_BITS as u32);
        Ok(Some(
            &header[..3] == b"BZh" && (b'1'..=b'9').contains(&header[3]) && (magic == BLOCK_MAGIC || magic == END_MAGIC),
        ))
    }
}

/// What a worker sends back for a block, in order.
enum Piece {
    Data(Vec<u8>),
    End,
    Failed(String),
}

/// Decodes one block, handing its output to `emit` piece by piece; stops
/// early when `emit` says no one is listening.
fn decode_block(block: &BlockBits, emit: &mut dyn FnMut(Piece) -> bool) {
    let input = block.reframe();
    let mut bz = Decompress::new(false);
    let mut out = Vec::with_capacity(PIECE);
    loop {
        let (in_before, out_before) = (bz.total_in(), bz.total_out());
        match bz.decompress_vec(&input[in_before as usize..], &mut out) {
            Err(e) => {
                emit(Piece::Failed(e.to_string()));
                return;
            }
            Ok(Status::StreamEnd) => {
                if !out.is_empty() && !emit(Piece::Data(out)) {
                    return;
                }
                emit(Piece::End);
                return;
            }
            Ok(_) if out.len() == out.capacity() => {
                if !emit(Piece::Data(std::mem::replace(&mut out, Vec::with_capacity(PIECE)))) {
                    return;
                }
            }
            Ok(_) if bz.total_in() == in_before && bz.total_out() == out_before => {
                emit(Piece::Failed("a bzip2 block ends before its data does".into()));
                return;
            }
            Ok(_) => {}
        }
    }
}

enum Pending {
    Block { block: BlockBits, pieces: mpsc::Receiver<Piece> },
    StreamEnd { crc: u32 },
    Failed(io::Error),
}

/// A bzip2 decoder that decodes blocks on every core; its output and its
/// errors are those of `bzip2::read::MultiBzDecoder` over the same input.
pub struct ParallelBzDecoder<R> {
    splitter: Splitter<R>,
    split_done: bool,
    queue: VecDeque<Pending>,
    max_in_flight: usize,
    piece: Vec<u8>,
    piece_at: usize,
    /// Whether the front block has handed on any output yet.
    front_started: bool,
    /// The combined CRC of the current stream's blocks so far.
    combined: u32,
    failure: Option<(io::ErrorKind, String)>,
    workers: Workers,
}

impl<R: Read> ParallelBzDecoder<R> {
    /// Decodes `source` on `workers` (see [`workers::count`]).
    pub fn new(source: R, workers: Workers) -> ParallelBzDecoder<R> {
        ParallelBzDecoder {
            splitter: Splitter::new(source),
            split_done: false,
            queue: VecDeque::new(),
            max_in_flight: workers.threads() + 2,
            piece: Vec::new(),
            piece_at: 0,
            front_started: false,
            combined: 0,
            failure: None,
            workers,
        }
    }

    /// Splits ahead until `max_in_flight` blocks are queued.
    fn fill_queue(&mut self) {
        while !self.split_done && self.queue.len() < self.max_in_flight {
            match self.splitter.next() {
                Ok(Some(Segment::Block(block))) => {
                    let (sender, pieces) = mpsc::sync_channel(2);
                    let job = block.clone();
                    self.workers.run(move || decode_block(&job, &mut |piece| sender.send(piece).is_ok()));
                    self.queue.push_back(Pending::Block { block, pieces });
                }
                Ok(Some(Segment::StreamEnd { crc })) => self.queue.push_back(Pending::StreamEnd { crc }),
                Ok(None) => self.split_done = true,
                Err(e) => {
                    self.queue.push_back(Pending::Failed(e));
                    self.split_done = true;
                }
            }
        }
    }

    /// After the front block failed before any output: it may end at a
    /// false magic, so it is joined with the next block and decoded here,
    /// until that works or the joined block is too long to be real.
    fn rejoin_front(&mut self, failure: String) -> io::Result<()> {
        let Some(Pending::Block { mut block, .. }) = self.queue.pop_front() else {
            return Err(corrupt(&failure));
        };
        loop {
            self.fill_queue();
            let next = match self.queue.front() {
                Some(Pending::Block { block: next, .. }) if block.bits + next.bits <= max_block_bits(block.level) => next,
                _ => return Err(corrupt(&failure)),
            };
            block = block.join(next);
            self.queue.pop_front();
            let (sender, pieces) = mpsc::channel();
            let mut failed = false;
            decode_block(&block, &mut |piece| {
                failed = matches!(piece, Piece::Failed(_));
                sender.send(piece).is_ok()
            });
            if !failed {
                self.queue.push_front(Pending::Block { block, pieces });
                return Ok(());
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failure = Some((e.kind(), e.to_string()));
        e
    }
}

impl<R: Read> Read for ParallelBzDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((kind, message)) = &self.failure {
                return Err(io::Error::new(*kind, message.clone()));
            }
            if self.piece_at < self.piece.len() {
                let n = buf.len().min(self.piece.len() - self.piece_at);
                buf[..n].copy_from_slice(&self.piece[self.piece_at..self.piece_at + n]);
                self.piece_at += n;
                return Ok(n);
            }
            self.fill_queue();
            let received = match self.queue.front_mut() {
                None => return Ok(0),
                Some(Pending::Block { pieces, .. }) => {
                    pieces.recv().unwrap_or_else(|_| Piece::Failed("a bzip2 worker stopped without a result".into()))
                }
                Some(Pending::StreamEnd { crc }) => {
                    if *crc != self.combined {
                        return Err(self.fail(corrupt("the bzip2 stream's combined CRC does not match its blocks")));
                    }
                    self.combined = 0;
                    self.queue.pop_front();
                    continue;
                }
                Some(Pending::Failed(_)) => match self.queue.pop_front() {
                    Some(Pending::Failed(e)) => return Err(self.fail(e)),
                    _ => continue,
                },
            };
            match received {
                Piece::Data(data) => {
                    self.piece = data;
                    self.piece_at = 0;
                    self.front_started = true;
                }
                Piece::End => {
                    if let Some(Pending::Block { block, .. }) = self.queue.pop_front() {
                        self.combined = self.combined.rotate_left(1) ^ block.crc;
                    }
                    self.front_started = false;
                }
                Piece::Failed(failure) if !self.front_started => {
                    if let Err(e) = self.rejoin_front(failure) {
                        return Err(self.fail(e));
                    }
                }
                Piece::Failed(failure) => return Err(self.fail(corrupt(&failure))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testdata;
    use std::io::Write;

    fn data(len: usize, seed: u64, text: bool) -> Vec<u8> {
        testdata::sample(len, seed, text)
    }

    fn compress(bytes: &[u8], level: u32) -> Vec<u8> {
        let mut enc = ::bzip2::write::BzEncoder::new(Vec::new(), ::bzip2::Compression::new(level));
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn reference(file: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ::bzip2::read::MultiBzDecoder::new(file).read_to_end(&mut out)?;
        Ok(out)
    }

    fn decoder(file: &[u8]) -> ParallelBzDecoder<io::Cursor<Vec<u8>>> {
        ParallelBzDecoder::new(io::Cursor::new(file.to_vec()), Workers::new("test", 2).unwrap())
    }

    fn parallel(file: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(file).read_to_end(&mut out)?;
        Ok(out)
    }

    fn agree(file: &[u8], what: &str) {
        testdata::agree(reference(file), parallel(file), what);
    }

    #[test]
    fn matches_the_reference_on_every_level_and_block_boundary() {
        for level in 1..=9u32 {
            let block = level as usize * 100_000;
            // Every size at the ends of the range, two in between (debug
            // builds of libbzip2 are slow).
            let sizes = if level == 1 || level == 9 { vec![0, 1, block - 1000, block + 1000, 2 * block + 17] } else { vec![1, block + 1000] };
            for (i, len) in sizes.into_iter().enumerate() {
                for text in [false, true] {
                    let input = data(len, level as u64 * 10 + i as u64, text);
                    let file = compress(&input, level);
                    assert_eq!(parallel(&file).unwrap(), input, "level {level}, {len} bytes, text {text}");
                }
            }
        }
    }

    #[test]
    fn long_runs_that_expand_past_a_piece_decode() {
        // Runs compress about 45x: one block's output spans many pieces.
        let mut input = vec![0u8; 5 * PIECE];
        input.extend(data(300_000, 3, true));
        assert_eq!(parallel(&compress(&input, 9)).unwrap(), input);
    }

    #[test]
    fn concatenated_streams_decode_like_pbzip2_output() {
        let parts: Vec<Vec<u8>> = (0..4).map(|i| data(150_000 + i * 7, i as u64, i % 2 == 0)).collect();
        let mut file = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            file.extend(compress(part, 1 + i as u32 * 2));
        }
        file.extend(compress(b"", 9));
        assert_eq!(parallel(&file).unwrap(), parts.concat());
        agree(&file, "multi-stream");
    }

    #[test]
    fn truncations_and_bit_flips_fail_as_the_reference_does() {
        let input = data(250_000, 42, true);
        let file = compress(&input, 1);
        for cut in (0..file.len()).step_by(file.len() / 97 + 1).chain([file.len() - 1, file.len() - 4]) {
            let err = parallel(&file[..cut]).unwrap_err();
            assert!(matches!(err.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData), "cut at {cut}: {err}");
        }
        for (bit, flipped) in testdata::bit_flips(&file, 300, 7) {
            agree(&flipped, &format!("bit {bit} flipped"));
        }
        let mut garbage = file.clone();
        garbage.extend_from_slice(b"trailing garbage");
        agree(&garbage, "trailing garbage");
        agree(b"", "empty file");
        agree(b"BZh9", "header only");
    }

    #[test]
    fn a_block_cut_at_a_false_magic_is_joined_with_the_next() {
        // A false magic cannot be produced on purpose, so the first block of
        // a real file is cut in two by hand, as the splitter would cut it.
        let input = data(350_000, 5, false);
        let file = compress(&input, 1);
        let mut dec = decoder(&file);
        dec.fill_queue();
        let Some(Pending::Block { block, .. }) = dec.queue.pop_front() else { panic!("no first block") };
        let cut = block.bits / 2 + 3;
        let end = block.start + cut;
        let first = BlockBits { bytes: block.bytes[..end.div_ceil(8) as usize].to_vec(), bits: cut, ..block.clone() };
        let second = BlockBits {
            bytes: block.bytes[(end / 8) as usize..].to_vec(),
            start: end % 8,
            bits: block.bits - cut,
            crc: 0,
            ..block.clone()
        };
        for part in [second, first].into_iter() {
            let (sender, pieces) = mpsc::channel();
            decode_block(&part, &mut |piece| sender.send(piece).is_ok());
            assert!(matches!(pieces.try_recv(), Ok(Piece::Failed(_))), "half a block must fail before any output");
            dec.queue.push_front(Pending::Block { block: part, pieces: mpsc::channel().1 });
        }
        // The halves' result channels are closed: read() sees a failure
        // with no output, as for a false magic, and rejoins them.
        let mut out = Vec::new();
        dec.read_to_end(&mut out).unwrap();
        assert_eq!(out, input);
    }
}
