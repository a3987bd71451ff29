//! A streaming validator for ZFS send streams (the content of an image
//! file, once decompressed).
//!
//! A stream is a sequence of records, each a fixed 312-byte header
//! (`dmu_replay_record_t`: `u32 type`, `u32 payloadlen`, a 304-byte union)
//! and a payload whose length depends on the type. The first record is
//! BEGIN (magic, feature flags, toguid, fromguid, `pool/ds@snap`), the last
//! END (the stream's checksum and toguid). A running Fletcher-4 is kept over
//! every byte, in the stream's byte order; every record after BEGIN carries
//! the running sum of everything before its last 32 bytes there (zero in
//! streams from older ZFS, such as zfs-fuse, which do not fill it), and END
//! carries the running sum of everything before END. This is what the
//! receiving kernel checks (`dmu_recv.c`); [`ValidatingReader`] checks the
//! same while the bytes flow, plus the record framing, END's toguid, that
//! nothing follows END, and that the stream is the full or incremental
//! stream the caller expects.

use std::io::{self, Read};

use crate::error::{Error, Result};

/// `drr_begin.drr_magic`; read in the other byte order it means the stream
/// was written on a host of the other endianness.
pub const DRR_BEGIN_MAGIC: u64 = 0x2_F5BA_CBAC;

/// The fixed size of every record header.
pub const RECORD_LEN: usize = 312;

/// Where a record's own checksum lives: the last 32 bytes of the header.
const CHECKSUM_OFFSET: usize = RECORD_LEN - 32;

/// Record types (`drr_type`).
pub mod record_type {
    pub const BEGIN: u32 = 0;
    pub const OBJECT: u32 = 1;
    pub const FREEOBJECTS: u32 = 2;
    pub const WRITE: u32 = 3;
    pub const FREE: u32 = 4;
    pub const END: u32 = 5;
    pub const WRITE_BYREF: u32 = 6;
    pub const SPILL: u32 = 7;
    pub const WRITE_EMBEDDED: u32 = 8;
    pub const OBJECT_RANGE: u32 = 9;
    pub const REDACT: u32 = 10;
}

/// `drr_versioninfo` header types (its low two bits).
const HEADER_SUBSTREAM: u64 = 1;
const HEADER_COMPOUNDSTREAM: u64 = 2;

/// Stream feature flags (`drr_versioninfo >> 2`), `DMU_BACKUP_FEATURE_*`.
pub mod feature {
    pub const DEDUP: u64 = 1 << 0;
    pub const DEDUPPROPS: u64 = 1 << 1;
    pub const SA_SPILL: u64 = 1 << 2;
    pub const EMBED_DATA: u64 = 1 << 16;
    pub const LZ4: u64 = 1 << 17;
    pub const LARGE_BLOCKS: u64 = 1 << 19;
    pub const RESUMING: u64 = 1 << 20;
    pub const REDACTED: u64 = 1 << 21;
    pub const COMPRESSED: u64 = 1 << 22;
    pub const LARGE_DNODE: u64 = 1 << 23;
    pub const RAW: u64 = 1 << 24;
    pub const ZSTD: u64 = 1 << 25;
    pub const HOLDS: u64 = 1 << 26;
    pub const SWITCH_TO_LARGE_BLOCKS: u64 = 1 << 27;
    pub const LONGNAME: u64 = 1 << 28;
    pub const LARGE_MICROZAP: u64 = 1 << 29;

    /// The features whose records this validator knows how to frame.
    /// LONGNAME is known but refused: its name lives in the BEGIN payload's
    /// nvlist, which this validator does not decode.
    pub const SUPPORTED: u64 = DEDUP
        | DEDUPPROPS
        | SA_SPILL
        | EMBED_DATA
        | LZ4
        | LARGE_BLOCKS
        | RESUMING
        | REDACTED
        | COMPRESSED
        | LARGE_DNODE
        | RAW
        | ZSTD
        | HOLDS
        | SWITCH_TO_LARGE_BLOCKS
        | LARGE_MICROZAP;
}

/// The receiver's cap on the BEGIN payload (a packed nvlist).
const MAX_BEGIN_PAYLOAD: u64 = 256 << 20;
/// `SPA_MAXBLOCKSIZE`: no WRITE or SPILL payload is larger.
const MAX_BLOCK_PAYLOAD: u64 = 16 << 20;
/// Far above the largest bonus buffer (a 16 KiB large dnode's).
const MAX_BONUS_PAYLOAD: u64 = 64 << 10;
/// `BPE_PAYLOAD_SIZE`: the most data a block pointer embeds.
const MAX_EMBEDDED_PAYLOAD: u64 = 112;
/// `DN_MAX_OBJECT` (`1 << DN_MAX_OBJECT_SHIFT`): no object number reaches it.
/// zfs-fuse's receive never returns on a FREEOBJECTS record that starts
/// beyond it (its `restore_freeobjects` loop shifts the object number left
/// by 9 bits, which wraps, so the loop never ends and the daemon spins
/// holding its locks), so such records must never reach `zfs receive`.
const MAX_OBJECT: u64 = 1 << 48;

/// What a stream's BEGIN record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeginRecord {
    /// The stream was written in big-endian byte order.
    pub big_endian: bool,
    pub versioninfo: u64,
    /// `versioninfo >> 2`: the `feature` flags the stream uses.
    pub features: u64,
    pub creation_time: u64,
    /// The objset type (2 a filesystem, 3 a volume).
    pub objset_type: u32,
    /// `drr_flags` (CLONE 1, CI_DATA 2, FREERECORDS 4, SPILL_BLOCK 8).
    pub flags: u32,
    pub toguid: u64,
    /// 0 for a full stream.
    pub fromguid: u64,
    /// `pool/ds@snap`, as the sender named it.
    pub toname: String,
    /// The snapshot part of `toname`.
    pub snapshot: String,
    /// Length of the BEGIN payload (an nvlist; 0 for plain streams).
    pub payload_len: u32,
}

impl BeginRecord {
    pub fn is_incremental(&self) -> bool {
        self.fromguid != 0
    }

    /// The dataset part of `toname`.
    pub fn dataset(&self) -> &str {
        self.toname.split_once('@').map(|(ds, _)| ds).unwrap_or(&self.toname)
    }
}

/// Reads integers in the stream's byte order.
#[derive(Clone, Copy)]
struct Order {
    big_endian: bool,
}

impl Order {
    fn u32(self, buf: &[u8], at: usize) -> u32 {
        let bytes = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    }

    fn u64(self, buf: &[u8], at: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&buf[at..at + 8]);
        if self.big_endian {
            u64::from_be_bytes(bytes)
        } else {
            u64::from_le_bytes(bytes)
        }
    }

    fn checksum(self, buf: &[u8], at: usize) -> [u64; 4] {
        [self.u64(buf, at), self.u64(buf, at + 8), self.u64(buf, at + 16), self.u64(buf, at + 24)]
    }
}

/// Decodes a BEGIN record header. Refuses what cannot be received as an
/// image: not a send stream, a compound stream (`zfs send -R` and friends),
/// features this validator does not know.
pub fn read_begin(header: &[u8; RECORD_LEN]) -> Result<BeginRecord> {
    let le_magic = Order { big_endian: false }.u64(header, 8);
    let big_endian = if le_magic == DRR_BEGIN_MAGIC {
        false
    } else if le_magic.swap_bytes() == DRR_BEGIN_MAGIC {
        true
    } else {
        return Err(Error::InvalidStream(format!(
            "not a ZFS send stream: the first record has no BEGIN magic (found {le_magic:#x} where {DRR_BEGIN_MAGIC:#x} belongs)"
        )));
    };
    let order = Order { big_endian };
    let drr_type = order.u32(header, 0);
    if drr_type != record_type::BEGIN {
        return Err(Error::InvalidStream(format!(
            "not a ZFS send stream: the first record has type {drr_type}, not BEGIN (0)"
        )));
    }
    let versioninfo = order.u64(header, 16);
    match versioninfo & 3 {
        HEADER_SUBSTREAM => {}
        HEADER_COMPOUNDSTREAM => {
            return Err(Error::InvalidStream(
                "this is a compound stream (made by zfs send -R, -p, -b or --holds), which holds several \
                 datasets or properties; an image file must be the stream of one snapshot (plain zfs send, \
                 or zfs send -i for an incremental image)"
                    .to_string(),
            ))
        }
        other => {
            return Err(Error::InvalidStream(format!("unknown stream header type {other} in BEGIN")));
        }
    }
    let features = versioninfo >> 2;
    if features & feature::LONGNAME != 0 {
        return Err(Error::InvalidStream(
            "the stream uses the LONGNAME feature (a dataset name over 255 characters), which is not supported"
                .to_string(),
        ));
    }
    let unknown = features & !feature::SUPPORTED;
    if unknown != 0 {
        return Err(Error::InvalidStream(format!(
            "the stream uses feature flags this imgadm does not know ({unknown:#x}): it was made by a newer ZFS; \
             make the image without newer send options"
        )));
    }
    let name_bytes = &header[56..RECORD_LEN];
    let name_len = name_bytes.iter().position(|b| *b == 0).unwrap_or(name_bytes.len());
    let toname = std::str::from_utf8(&name_bytes[..name_len])
        .map_err(|_| Error::InvalidStream("the BEGIN record's snapshot name is not valid UTF-8".to_string()))?
        .to_string();
    let snapshot = match toname.split_once('@') {
        Some((ds, snap)) if !ds.is_empty() && !snap.is_empty() && !snap.contains('@') => snap.to_string(),
        _ => {
            return Err(Error::InvalidStream(format!(
                "the BEGIN record names \"{toname}\", not a snapshot (pool/dataset@snapshot)"
            )))
        }
    };
    let payload_len = order.u32(header, 4);
    if u64::from(payload_len) > MAX_BEGIN_PAYLOAD {
        return Err(Error::InvalidStream(format!(
            "the BEGIN record announces a {payload_len}-byte payload, over the {MAX_BEGIN_PAYLOAD}-byte limit"
        )));
    }
    Ok(BeginRecord {
        big_endian,
        versioninfo,
        features,
        creation_time: order.u64(header, 24),
        objset_type: order.u32(header, 32),
        flags: order.u32(header, 36),
        toguid: order.u64(header, 40),
        fromguid: order.u64(header, 48),
        toname,
        snapshot,
        payload_len,
    })
}

/// Checks a BEGIN against what the caller expects: `None` a full stream,
/// `Some(guid)` an incremental stream from the snapshot with that guid.
pub fn check_fromguid(begin: &BeginRecord, expected_fromguid: Option<u64>) -> Result<()> {
    let problem = match (expected_fromguid, begin.fromguid) {
        (None, 0) => return Ok(()),
        (Some(want), got) if got == want && want != 0 => return Ok(()),
        (None, got) => format!(
            "the stream is incremental (from the snapshot with guid {got}), but a full stream was expected \
             (the image has no origin)"
        ),
        (Some(want), 0) => format!(
            "the stream is a full stream, but an incremental stream from the origin's snapshot (guid {want}) \
             was expected"
        ),
        (Some(want), got) => format!(
            "the stream is incremental from the snapshot with guid {got}, but the origin's snapshot has guid \
             {want}: the image does not apply to this origin"
        ),
    };
    Err(Error::InvalidStream(problem))
}

/// The Fletcher-4 checksum ZFS uses for send streams: four 64-bit running
/// sums over 32-bit words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fletcher4 {
    pub sums: [u64; 4],
}

impl Fletcher4 {
    /// Folds in the whole 32-bit words of `bytes`, read in the given byte
    /// order; 1-3 trailing bytes are ignored, as ZFS ignores them.
    pub fn update(&mut self, bytes: &[u8], big_endian: bool) {
        if big_endian {
            self.fold::<true>(bytes)
        } else {
            self.fold::<false>(bytes)
        }
    }

    // The hot loop of an import: one pass, four adds per word, the sums in
    // registers. Monomorphised per byte order so the loop has no branch.
    #[inline]
    fn fold<const BIG_ENDIAN: bool>(&mut self, bytes: &[u8]) {
        let [mut a, mut b, mut c, mut d] = self.sums;
        for w in bytes.chunks_exact(4) {
            let word = [w[0], w[1], w[2], w[3]];
            let v = u64::from(if BIG_ENDIAN { u32::from_be_bytes(word) } else { u32::from_le_bytes(word) });
            a = a.wrapping_add(v);
            b = b.wrapping_add(a);
            c = c.wrapping_add(b);
            d = d.wrapping_add(c);
        }
        self.sums = [a, b, c, d];
    }
}

/// What a validated stream held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub begin: BeginRecord,
    /// Records, BEGIN and END included.
    pub records: u64,
    /// Bytes of the (decompressed) stream.
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a record header from the inner reader.
    ReadHeader,
    /// Handing out a checked header; then the payload.
    EmitHeader { payload: u64, is_end: bool },
    /// Passing a payload through.
    Payload { remaining: u64 },
    /// END checked; the inner reader must end before END is handed out.
    /// A state of its own so that a read error there (a gzip trailer's CRC)
    /// can be retried without folding END in twice.
    CheckEnd,
    /// END handed out and nothing after it.
    Done,
    /// A violation was found; every read repeats it.
    Failed,
}

/// Passes a decompressed send stream through unchanged while validating it
/// (see the module doc). Only one record header is ever held back: a header
/// is handed on only once it has been checked, and END only once the inner
/// reader is known to end there, so a consumer never sees a complete stream
/// that is then found invalid. A payload flows through as it is read; its
/// checksum is checked by the next header (or END), which is then withheld.
///
/// Violations come out as `io::Error`s of kind `InvalidData` wrapping
/// `Error::InvalidStream`, naming the record index and byte offset; use
/// [`Error::from_io`] to get the `Error` back.
pub struct ValidatingReader<R: Read> {
    inner: R,
    expected_fromguid: Option<u64>,
    begin: Option<BeginRecord>,
    order: Order,
    sum: Fletcher4,
    header: [u8; RECORD_LEN],
    header_len: usize,
    header_out: usize,
    /// Bytes of an incomplete 32-bit payload word, carried to the next read.
    carry: [u8; 4],
    carry_len: usize,
    state: State,
    /// Index of the record being read (BEGIN is 0).
    record: u64,
    /// Stream offset of that record's header.
    record_offset: u64,
    /// Bytes read from the inner reader.
    offset: u64,
    failure: Option<String>,
}

impl<R: Read> ValidatingReader<R> {
    /// Validates `inner` from its first byte (its BEGIN record).
    pub fn new(inner: R, expected_fromguid: Option<u64>) -> ValidatingReader<R> {
        ValidatingReader {
            inner,
            expected_fromguid,
            begin: None,
            order: Order { big_endian: false },
            sum: Fletcher4::default(),
            header: [0; RECORD_LEN],
            header_len: 0,
            header_out: 0,
            carry: [0; 4],
            carry_len: 0,
            state: State::ReadHeader,
            record: 0,
            record_offset: 0,
            offset: 0,
            failure: None,
        }
    }

    /// For a caller that has read the BEGIN header already (to learn the
    /// stream's guids before deciding where it goes): checks it now, and
    /// hands it out first, so the output is still the whole stream.
    pub fn with_begin(
        begin_header: [u8; RECORD_LEN],
        inner: R,
        expected_fromguid: Option<u64>,
    ) -> Result<ValidatingReader<R>> {
        let mut reader = ValidatingReader::new(inner, expected_fromguid);
        reader.header = begin_header;
        reader.header_len = RECORD_LEN;
        reader.offset = RECORD_LEN as u64;
        reader.check_header().map_err(error_from_io_default)?;
        Ok(reader)
    }

    /// The BEGIN record, once read.
    pub fn begin(&self) -> Option<&BeginRecord> {
        self.begin.as_ref()
    }

    /// Records read so far (complete ones, and the one being read).
    pub fn records(&self) -> u64 {
        self.record
    }

    /// Bytes read from the inner reader so far.
    pub fn bytes(&self) -> u64 {
        self.offset
    }

    /// Whether the whole stream, END included, has been validated.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// What the stream held, once it has been read to its end.
    pub fn summary(&self) -> Option<StreamSummary> {
        match (&self.state, &self.begin) {
            (State::Done, Some(begin)) => {
                Some(StreamSummary { begin: begin.clone(), records: self.record, bytes: self.offset })
            }
            _ => None,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn fail(&mut self, at_offset: u64, what: String) -> io::Error {
        let message = format!("record {} (at byte offset {}): {what}", self.record, at_offset);
        self.state = State::Failed;
        self.failure = Some(message.clone());
        invalid_stream(message)
    }

    /// Checks the complete header in `self.header`, folds it into the
    /// running checksum and sets the state to hand it out.
    fn check_header(&mut self) -> io::Result<()> {
        let at = self.record_offset;
        if self.record == 0 {
            let begin = read_begin(&self.header).map_err(|e| self.fail(at, plain_message(e)))?;
            check_fromguid(&begin, self.expected_fromguid).map_err(|e| self.fail(at, plain_message(e)))?;
            self.order = Order { big_endian: begin.big_endian };
            self.sum.update(&self.header, begin.big_endian);
            self.state = State::EmitHeader { payload: u64::from(begin.payload_len), is_end: false };
            self.begin = Some(begin);
            return Ok(());
        }
        let order = self.order;
        let drr_type = order.u32(&self.header, 0);
        let sum_before = self.sum;
        self.sum.update(&self.header[..CHECKSUM_OFFSET], order.big_endian);
        let stored = order.checksum(&self.header, CHECKSUM_OFFSET);
        if stored != [0; 4] && stored != self.sum.sums {
            return Err(self.fail(
                at,
                format!("checksum mismatch in the header of a type {drr_type} record: the stream is corrupt"),
            ));
        }
        self.sum.update(&self.header[CHECKSUM_OFFSET..], order.big_endian);

        let header = self.header;
        let h = &header[..];
        self.check_object_numbers(at, drr_type, h)?;
        let payload = match drr_type {
            record_type::BEGIN => return Err(self.fail(at, "a second BEGIN record".to_string())),
            record_type::END => {
                let end_sum = order.checksum(h, 8);
                let end_toguid = order.u64(h, 40);
                let toguid = self.begin.as_ref().map(|b| b.toguid).unwrap_or_default();
                if end_sum != sum_before.sums {
                    return Err(self.fail(
                        at,
                        "the END record's checksum does not match the stream: the stream is corrupt".to_string(),
                    ));
                }
                if end_toguid != toguid {
                    return Err(self.fail(
                        at,
                        format!("the END record's toguid {end_toguid} is not the BEGIN record's toguid {toguid}"),
                    ));
                }
                self.state = State::CheckEnd;
                return Ok(());
            }
            record_type::OBJECT => {
                let raw_bonuslen = order.u32(h, 36);
                let len = if raw_bonuslen != 0 { u64::from(raw_bonuslen) } else { round8(u64::from(order.u32(h, 28))) };
                self.bounded(at, "OBJECT bonus", len, MAX_BONUS_PAYLOAD)?
            }
            record_type::WRITE => {
                let logical = order.u64(h, 32);
                let len = if h[50] != 0 { order.u64(h, 96) } else { logical };
                self.bounded(at, "WRITE logical", logical, MAX_BLOCK_PAYLOAD)?;
                self.bounded(at, "WRITE", len, MAX_BLOCK_PAYLOAD)?
            }
            record_type::SPILL => {
                let len = if h[33] != 0 { order.u64(h, 40) } else { order.u64(h, 16) };
                self.bounded(at, "SPILL", len, MAX_BLOCK_PAYLOAD)?
            }
            record_type::WRITE_EMBEDDED => {
                let psize = u64::from(order.u32(h, 52));
                self.bounded(at, "WRITE_EMBEDDED", psize, MAX_EMBEDDED_PAYLOAD)?;
                round8(psize)
            }
            record_type::FREEOBJECTS
            | record_type::FREE
            | record_type::WRITE_BYREF
            | record_type::OBJECT_RANGE
            | record_type::REDACT => 0,
            other => return Err(self.fail(at, format!("unknown record type {other}"))),
        };
        self.state = State::EmitHeader { payload, is_end: false };
        Ok(())
    }

    /// Every record about objects names one below [`MAX_OBJECT`] (its
    /// `drr_object`, or FREEOBJECTS' `drr_firstobj`), and a FREEOBJECTS
    /// range does not wrap around.
    fn check_object_numbers(&mut self, at: u64, drr_type: u32, h: &[u8]) -> io::Result<()> {
        let object = self.order.u64(h, 8);
        match drr_type {
            record_type::FREEOBJECTS => {
                let count = self.order.u64(h, 16);
                if object >= MAX_OBJECT || object.checked_add(count).is_none() {
                    let what = format!("FREEOBJECTS of {count} objects from object {object}: no such objects");
                    return Err(self.fail(at, what));
                }
            }
            record_type::OBJECT
            | record_type::WRITE
            | record_type::FREE
            | record_type::WRITE_BYREF
            | record_type::SPILL
            | record_type::WRITE_EMBEDDED
                if object >= MAX_OBJECT =>
            {
                return Err(self.fail(at, format!("object number {object} is over the {MAX_OBJECT} limit")));
            }
            _ => {}
        }
        Ok(())
    }

    fn bounded(&mut self, at: u64, what: &str, len: u64, max: u64) -> io::Result<u64> {
        if len > max {
            return Err(self.fail(at, format!("{what} payload of {len} bytes is over the {max}-byte limit")));
        }
        Ok(len)
    }

    /// After END: the inner reader must end too (real streams are not
    /// padded; trailing bytes mean a damaged or concatenated file).
    fn check_nothing_follows(&mut self) -> io::Result<()> {
        let mut probe = [0u8; 64];
        loop {
            match self.inner.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    let at = self.offset;
                    let what = format!("{n} or more bytes follow the END record (the stream should end there)");
                    return Err(self.fail(at, what));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn fold_payload(&mut self, mut bytes: &[u8]) {
        let big_endian = self.order.big_endian;
        if self.carry_len > 0 {
            let take = (4 - self.carry_len).min(bytes.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&bytes[..take]);
            self.carry_len += take;
            bytes = &bytes[take..];
            if self.carry_len < 4 {
                return;
            }
            let word = self.carry;
            self.sum.update(&word, big_endian);
            self.carry_len = 0;
        }
        let whole = bytes.len() & !3;
        self.sum.update(&bytes[..whole], big_endian);
        let rest = &bytes[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
    }

    fn next_record(&mut self) {
        self.record += 1;
        self.record_offset = self.offset;
        self.header_len = 0;
        self.header_out = 0;
        // A payload's trailing partial word is not summed (as in ZFS).
        self.carry_len = 0;
        self.state = State::ReadHeader;
    }
}

fn read_retrying(inner: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match inner.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn round8(n: u64) -> u64 {
    n.saturating_add(7) & !7
}

impl<R: Read> Read for ValidatingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Failed => {
                    return Err(invalid_stream(self.failure.clone().unwrap_or_else(|| "invalid stream".to_string())));
                }
                State::Done => return Ok(0),
                State::ReadHeader => {
                    let n = read_retrying(&mut self.inner, &mut self.header[self.header_len..])?;
                    if n == 0 {
                        let at = self.record_offset;
                        let what = if self.header_len > 0 {
                            format!("the stream ends early, {} bytes into a 312-byte record header", self.header_len)
                        } else if self.record == 0 {
                            "the stream is empty".to_string()
                        } else {
                            "the stream ends early: no END record".to_string()
                        };
                        return Err(self.fail(at, what));
                    }
                    self.header_len += n;
                    self.offset += n as u64;
                    if self.header_len == RECORD_LEN {
                        self.check_header()?;
                    }
                }
                State::CheckEnd => {
                    self.check_nothing_follows()?;
                    self.state = State::EmitHeader { payload: 0, is_end: true };
                }
                State::EmitHeader { payload, is_end } => {
                    let n = (RECORD_LEN - self.header_out).min(buf.len());
                    buf[..n].copy_from_slice(&self.header[self.header_out..self.header_out + n]);
                    self.header_out += n;
                    if self.header_out == RECORD_LEN {
                        if is_end {
                            self.record += 1;
                            self.state = State::Done;
                        } else if payload > 0 {
                            self.state = State::Payload { remaining: payload };
                        } else {
                            self.next_record();
                        }
                    }
                    return Ok(n);
                }
                State::Payload { remaining } => {
                    let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
                    let n = read_retrying(&mut self.inner, &mut buf[..want])?;
                    if n == 0 {
                        let at = self.offset;
                        return Err(self.fail(
                            at,
                            format!("the stream ends early, {remaining} bytes short of the record's payload"),
                        ));
                    }
                    self.fold_payload(&buf[..n]);
                    self.offset += n as u64;
                    let remaining = remaining - n as u64;
                    if remaining == 0 {
                        self.next_record();
                    } else {
                        self.state = State::Payload { remaining };
                    }
                    return Ok(n);
                }
            }
        }
    }
}

fn invalid_stream(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Error::InvalidStream(message))
}

/// The message of an `InvalidStream` without its "invalid ZFS send stream: "
/// prefix, to be wrapped with the record position.
fn plain_message(e: Error) -> String {
    match e {
        Error::InvalidStream(message) => message,
        other => other.to_string(),
    }
}

fn error_from_io_default(e: io::Error) -> Error {
    Error::from_io(e, "reading the send stream")
}

/// Reads a whole stream through the validator, discarding the bytes.
pub fn validate(inner: impl Read, expected_fromguid: Option<u64>) -> Result<StreamSummary> {
    let mut reader = ValidatingReader::new(inner, expected_fromguid);
    drain(&mut reader)
}

/// Reads the rest of a validator's stream, discarding the bytes.
pub fn drain<R: Read>(reader: &mut ValidatingReader<R>) -> Result<StreamSummary> {
    let mut buf = vec![0u8; 128 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(error_from_io_default(e)),
        }
    }
    reader.summary().ok_or_else(|| Error::internal("the send stream validator stopped before the END record"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE_GZ: &[u8] = include_bytes!("../../examples/example-base-1.0.0.zfs.gz");
    const CHILD_GZ: &[u8] = include_bytes!("../../examples/example-child-1.0.0.zfs.gz");
    const BASE_TOGUID: u64 = 11363198826342852693;
    const CHILD_TOGUID: u64 = 6306372232744026684;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("example stream decompresses");
        out
    }

    /// Hands out at most `chunk` bytes per read, to cross every boundary.
    struct Chunked<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn pass_through(
        data: &[u8],
        expected: Option<u64>,
        chunk: usize,
        out_chunk: usize,
    ) -> Result<(Vec<u8>, StreamSummary)> {
        let mut reader = ValidatingReader::new(Chunked { data, chunk }, expected);
        let mut out = Vec::new();
        let mut buf = vec![0u8; out_chunk];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(Error::from_io(e, "test")),
            }
        }
        Ok((out, reader.summary().expect("complete")))
    }

    fn expect_invalid(data: &[u8], expected: Option<u64>) -> String {
        match pass_through(data, expected, 4096, 8192) {
            Ok(_) => panic!("stream was accepted"),
            Err(e) => {
                assert_eq!(e.code(), "InvalidStream", "{e}");
                e.to_string()
            }
        }
    }

    /// (offset, type, payload length) of each record.
    fn records(data: &[u8]) -> Vec<(usize, u32, usize)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < data.len() {
            let h = &data[off..off + RECORD_LEN];
            let t = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let p = match t {
                0 => u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize,
                1 => (u32::from_le_bytes([h[28], h[29], h[30], h[31]]) as usize).div_ceil(8) * 8,
                3 => u64::from_le_bytes(h[32..40].try_into().unwrap()) as usize,
                _ => 0,
            };
            out.push((off, t, p));
            off += RECORD_LEN + p;
        }
        out
    }

    #[test]
    fn real_streams_pass_byte_identical_whatever_the_read_sizes() {
        let base = gunzip(BASE_GZ);
        let child = gunzip(CHILD_GZ);
        for (chunk, out_chunk) in [(1 << 20, 1 << 20), (1, 7), (313, 311), (5, 4096), (4096, 1)] {
            let (out, summary) = pass_through(&base, None, chunk, out_chunk).unwrap();
            assert_eq!(out, base);
            assert_eq!(summary.begin.toguid, BASE_TOGUID);
            assert_eq!(summary.begin.fromguid, 0);
            assert_eq!(summary.begin.snapshot, "final");
            assert_eq!(summary.bytes, base.len() as u64);
            assert_eq!(summary.records as usize, records(&base).len());

            let (out, summary) = pass_through(&child, Some(BASE_TOGUID), chunk, out_chunk).unwrap();
            assert_eq!(out, child);
            assert_eq!(summary.begin.toguid, CHILD_TOGUID);
            assert_eq!(summary.begin.fromguid, BASE_TOGUID);
        }
    }

    #[test]
    fn begin_is_decoded() {
        let base = gunzip(BASE_GZ);
        let header: [u8; RECORD_LEN] = base[..RECORD_LEN].try_into().unwrap();
        let begin = read_begin(&header).unwrap();
        assert!(!begin.big_endian);
        assert_eq!(begin.toname, "imgdev/5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01@final");
        assert_eq!(begin.dataset(), "imgdev/5b1e0c3e-6f43-4c1a-9d5e-3a0f2b7c8d01");
        assert_eq!(begin.snapshot, "final");
        assert_eq!(begin.versioninfo & 3, 1);
        assert_eq!(begin.objset_type, 2);
        assert!(!begin.is_incremental());
    }

    #[test]
    fn begin_refusals() {
        let base = gunzip(BASE_GZ);
        let header: [u8; RECORD_LEN] = base[..RECORD_LEN].try_into().unwrap();
        let set_vi = |vi: u64| {
            let mut h = header;
            h[16..24].copy_from_slice(&vi.to_le_bytes());
            h
        };
        let err = read_begin(&set_vi(2)).unwrap_err().to_string();
        assert!(err.contains("compound"), "{err}");
        let err = read_begin(&set_vi(1 | (1 << 40))).unwrap_err().to_string();
        assert!(err.contains("feature flags"), "{err}");
        let err = read_begin(&set_vi(1 | (feature::LONGNAME << 2))).unwrap_err().to_string();
        assert!(err.contains("LONGNAME"), "{err}");
        read_begin(&set_vi(1 | ((feature::EMBED_DATA | feature::LZ4) << 2))).unwrap();
        let mut h = header;
        h[8] ^= 1;
        assert!(read_begin(&h).unwrap_err().to_string().contains("magic"));
        let mut h = header;
        h[56..].fill(0);
        h[56..63].copy_from_slice(b"pool/ds");
        assert!(read_begin(&h).unwrap_err().to_string().contains("not a snapshot"));
    }

    /// The stream as written on a big-endian host: every integer field
    /// swapped, the checksums recomputed in that order.
    fn to_big_endian(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        let swap4 = |b: &mut [u8], at: usize| b[at..at + 4].reverse();
        let swap8 = |b: &mut [u8], at: usize| b[at..at + 8].reverse();
        let mut sum = Fletcher4::default();
        for (off, t, p) in records(data) {
            let h = &mut out[off..off + RECORD_LEN];
            swap4(h, 0);
            swap4(h, 4);
            match t {
                0 => {
                    for at in [8, 16, 24, 40, 48] {
                        swap8(h, at);
                    }
                    swap4(h, 32);
                    swap4(h, 36);
                }
                1 => {
                    swap8(h, 8);
                    for at in [16, 20, 24, 28, 36] {
                        swap4(h, at);
                    }
                }
                3 => {
                    for at in [8, 24, 32, 40, 96] {
                        swap8(h, at);
                    }
                    swap4(h, 16);
                }
                5 => {
                    h[8..40].copy_from_slice(&sum.sums.iter().flat_map(|s| s.to_be_bytes()).collect::<Vec<_>>());
                    swap8(h, 40);
                }
                _ => {
                    for at in (8..40).step_by(8) {
                        swap8(h, at);
                    }
                }
            }
            sum.update(&out[off..off + RECORD_LEN + p], true);
        }
        out
    }

    #[test]
    fn other_endian_streams_are_validated_in_their_byte_order() {
        let base = gunzip(BASE_GZ);
        let swapped = to_big_endian(&base);
        let (out, summary) = pass_through(&swapped, None, 1000, 1000).unwrap();
        assert_eq!(out, swapped);
        assert!(summary.begin.big_endian);
        assert_eq!(summary.begin.toguid, BASE_TOGUID);
        // Read as little-endian words the sums would differ: the END check
        // really depends on the byte order.
        let mut corrupt = swapped.clone();
        let (off, _, _) = records(&base).into_iter().find(|r| r.1 == 3).unwrap();
        corrupt[off + RECORD_LEN] ^= 0x10;
        expect_invalid(&corrupt, None);
    }

    /// The stream as a current OpenZFS sender writes it: every record after
    /// BEGIN carries the running checksum in its last 32 bytes
    /// (`dump_record`), and END's checksum is re-sealed over that.
    fn with_record_checksums(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        let mut sum = Fletcher4::default();
        for (off, t, p) in records(data) {
            if t == record_type::BEGIN {
                sum.update(&out[off..off + RECORD_LEN + p], false);
                continue;
            }
            if t == record_type::END {
                let sealed: Vec<u8> = sum.sums.iter().flat_map(|s| s.to_le_bytes()).collect();
                out[off + 8..off + 40].copy_from_slice(&sealed);
            }
            sum.update(&out[off..off + CHECKSUM_OFFSET], false);
            let own: Vec<u8> = sum.sums.iter().flat_map(|s| s.to_le_bytes()).collect();
            out[off + CHECKSUM_OFFSET..off + RECORD_LEN].copy_from_slice(&own);
            sum.update(&out[off + CHECKSUM_OFFSET..off + RECORD_LEN + p], false);
        }
        out
    }

    #[test]
    fn per_record_checksums_are_checked_and_catch_damage_at_the_next_record() {
        let base = gunzip(BASE_GZ);
        let sealed = with_record_checksums(&base);
        assert_ne!(sealed, base);
        let (out, _) = pass_through(&sealed, None, 777, 4096).unwrap();
        assert_eq!(out, sealed);

        let recs = records(&base);
        let (index, &(off, _, p)) = recs.iter().enumerate().find(|(_, r)| r.1 == record_type::WRITE).unwrap();
        let mut damaged = sealed.clone();
        damaged[off + RECORD_LEN + p - 1] ^= 0x80;
        let msg = expect_invalid(&damaged, None);
        let next = recs[index + 1].0;
        assert!(msg.contains(&format!("record {} (at byte offset {next})", index + 1)), "{msg}");
        assert!(msg.contains("checksum mismatch in the header"), "{msg}");
    }

    #[test]
    fn a_flipped_payload_byte_is_caught() {
        let base = gunzip(BASE_GZ);
        let writes: Vec<_> = records(&base).into_iter().filter(|r| r.1 == 3).collect();
        assert!(!writes.is_empty());
        for (off, _, p) in [writes[0], writes[writes.len() - 1]] {
            let mut data = base.clone();
            data[off + RECORD_LEN + p / 2] ^= 0x01;
            let msg = expect_invalid(&data, None);
            assert!(msg.contains("checksum"), "{msg}");
        }
    }

    #[test]
    fn a_flipped_header_byte_is_caught() {
        let base = gunzip(BASE_GZ);
        let recs = records(&base);
        // A byte in an OBJECT header, in a WRITE's offset field, and in END's toguid.
        let object = recs.iter().find(|r| r.1 == 1).unwrap().0;
        let write = recs.iter().find(|r| r.1 == 3).unwrap().0;
        let end = recs.last().unwrap().0;
        for at in [object + 9, write + 25, end + 41, end + 9, object + 300] {
            let mut data = base.clone();
            data[at] ^= 0x04;
            let msg = expect_invalid(&data, None);
            assert!(msg.contains("record "), "{msg}");
        }
        // Framing: a record type that does not exist.
        let mut data = base.clone();
        data[object] = 99;
        assert!(expect_invalid(&data, None).contains("unknown record type"));
    }

    #[test]
    fn object_numbers_past_the_last_possible_object_are_refused() {
        let base = gunzip(BASE_GZ);
        let recs = records(&base);
        // The record a corrupt gzip of the example decodes to (one byte
        // lost before it): zfs-fuse spins forever on it.
        let free_objects = recs.iter().rfind(|r| r.1 == record_type::FREEOBJECTS).unwrap().0;
        let mut data = base.clone();
        data[free_objects + 8..free_objects + 16].copy_from_slice(&0xe000_0000_0000_0002u64.to_le_bytes());
        let msg = expect_invalid(&data, None);
        assert!(msg.contains("FREEOBJECTS") && msg.contains("no such objects"), "{msg}");
        // A range that wraps around.
        let mut data = base.clone();
        data[free_objects + 16..free_objects + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(expect_invalid(&data, None).contains("no such objects"));
        // An object record.
        let write = recs.iter().find(|r| r.1 == record_type::WRITE).unwrap().0;
        let mut data = base.clone();
        data[write + 8..write + 16].copy_from_slice(&MAX_OBJECT.to_le_bytes());
        assert!(expect_invalid(&data, None).contains("over the"));
    }

    #[test]
    fn truncated_streams_are_caught() {
        let base = gunzip(BASE_GZ);
        let recs = records(&base);
        let end = recs.last().unwrap().0;
        for cut in [0, 1, 311, 312, 313, 1000, recs[6].0, recs[6].0 + RECORD_LEN + 8, end, end + 311] {
            let msg = expect_invalid(&base[..cut], None);
            assert!(msg.contains("ends early") || msg.contains("empty"), "cut {cut}: {msg}");
        }
    }

    #[test]
    fn the_end_header_is_withheld_until_the_stream_is_known_complete() {
        let base = gunzip(BASE_GZ);
        let mut data = base.clone();
        data.extend_from_slice(b"garbage");
        let mut reader = ValidatingReader::new(&data[..], None);
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("follow the END record"), "{err}");
        assert_eq!(out.len(), base.len() - RECORD_LEN);
        assert!(!reader.is_complete());
        // And the error sticks.
        assert!(reader.read(&mut [0u8; 10]).is_err());
    }

    #[test]
    fn a_read_error_of_the_inner_reader_can_be_retried() {
        /// Fails once at the end (as a gzip trailer check would), then ends.
        struct FailsOnceAtEnd<'a> {
            data: &'a [u8],
            failed: bool,
        }
        impl Read for FailsOnceAtEnd<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.data.is_empty() && !self.failed {
                    self.failed = true;
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "slow disk"));
                }
                self.data.read(buf)
            }
        }
        let base = gunzip(BASE_GZ);
        let mut reader = ValidatingReader::new(FailsOnceAtEnd { data: &base, failed: false }, None);
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, base);
        assert_eq!(reader.summary().unwrap().begin.toguid, BASE_TOGUID);
    }

    #[test]
    fn the_wrong_kind_of_stream_is_refused_before_any_byte_is_passed_on() {
        let base = gunzip(BASE_GZ);
        let child = gunzip(CHILD_GZ);
        for (data, expected, what) in [
            (&base, Some(BASE_TOGUID), "full stream"),
            (&child, None, "incremental"),
            (&child, Some(12345), "guid 12345"),
        ] {
            let mut reader = ValidatingReader::new(&data[..], expected);
            let err = reader.read(&mut [0u8; 4096]).unwrap_err();
            let err = Error::from_io(err, "test");
            assert_eq!(err.code(), "InvalidStream");
            assert!(err.to_string().contains(what), "{err}");
            assert!(err.to_string().contains("record 0 (at byte offset 0)"), "{err}");
        }
        let header: [u8; RECORD_LEN] = child[..RECORD_LEN].try_into().unwrap();
        assert!(ValidatingReader::with_begin(header, &child[RECORD_LEN..], None).is_err());
        let mut reader = ValidatingReader::with_begin(header, &child[RECORD_LEN..], Some(BASE_TOGUID)).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, child);
    }

    #[test]
    fn fletcher4_matches_a_reference() {
        // Sums of the words 1, 2, 3: a = 6, b = 1+3+6, c = 1+4+10, d = 1+5+15.
        let mut f = Fletcher4::default();
        let bytes: Vec<u8> = [1u32, 2, 3].iter().flat_map(|w| w.to_le_bytes()).collect();
        f.update(&bytes, false);
        assert_eq!(f.sums, [6, 10, 15, 21]);
        let mut g = Fletcher4::default();
        let be: Vec<u8> = [1u32, 2, 3].iter().flat_map(|w| w.to_be_bytes()).collect();
        g.update(&be, true);
        assert_eq!(g, f);
    }
}
