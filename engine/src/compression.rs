//! Image file compression: the manifest's `files[0].compression` values,
//! recognising a file by its magic bytes, and streaming decoders/encoders.
//!
//! Decoders tell their own failures (corrupt data) from failures of the
//! reader under them (a cut download, a disk error): the first become
//! `Error::Uncompression`, the second keep their own error. See
//! [`decoder`] and [`crate::Error::from_io`].

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::codec::workers::{self, Workers};
use crate::codec::{bzip2 as par_bzip2, gzip as par_gzip, xz as mt_xz};
use crate::error::{Error, Result};
use crate::zstream::DRR_BEGIN_MAGIC;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b, 0x08];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

/// How many leading bytes [`sniff`] needs to recognise every format.
pub const SNIFF_LEN: usize = 16;

impl Compression {
    /// Parses a manifest's `files[0].compression`.
    pub fn parse(text: &str) -> Result<Compression> {
        match text {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "bzip2" => Ok(Compression::Bzip2),
            "xz" => Ok(Compression::Xz),
            other => Err(Error::InvalidManifest(format!(
                "unknown file compression \"{other}\" (expected one of \"none\", \"gzip\", \"bzip2\", \"xz\")"
            ))),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }

    /// The file name extension the real imgadm gives such a file (`create`
    /// writes `NAME-VERSION.zfs.gz`, ...).
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Bzip2 => ".bz2",
            Compression::Xz => ".xz",
        }
    }

    /// What the file is, in words, for error messages.
    fn describe(&self) -> &'static str {
        match self {
            Compression::None => "an uncompressed ZFS send stream",
            Compression::Gzip => "gzip-compressed",
            Compression::Bzip2 => "bzip2-compressed",
            Compression::Xz => "xz-compressed",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Compression::parse(s)
    }
}

/// Recognises a file from its first bytes ([`SNIFF_LEN`] are enough):
/// `Some(Compression::None)` is a raw ZFS send stream (a BEGIN record, either
/// byte order); `None` is none of the known formats.
pub fn sniff(first_bytes: &[u8]) -> Option<Compression> {
    if first_bytes.starts_with(XZ_MAGIC) {
        return Some(Compression::Xz);
    }
    if first_bytes.starts_with(GZIP_MAGIC) {
        return Some(Compression::Gzip);
    }
    if first_bytes.starts_with(BZIP2_MAGIC) {
        return Some(Compression::Bzip2);
    }
    if first_bytes.len() >= 16 && first_bytes[..4] == [0, 0, 0, 0] {
        let magic: [u8; 8] = first_bytes[8..16].try_into().ok()?;
        if u64::from_le_bytes(magic) == DRR_BEGIN_MAGIC || u64::from_be_bytes(magic) == DRR_BEGIN_MAGIC {
            return Some(Compression::None);
        }
    }
    None
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Checks that the manifest's compression agrees with the file's first
/// bytes, so a mismatch is reported as what it is rather than as a decoder
/// failing on the first block.
pub fn check_magic(declared: Compression, first_bytes: &[u8]) -> Result<()> {
    let actual = sniff(first_bytes);
    if actual == Some(declared) {
        return Ok(());
    }
    let what = match actual {
        Some(c) => format!("the file is {}", c.describe()),
        None => format!("the file is not a known format (it starts with {})", hex_prefix(first_bytes)),
    };
    if declared == Compression::None {
        return Err(Error::InvalidStream(format!(
            "the manifest says the file is not compressed (compression \"none\"), but {what}"
        )));
    }
    Err(Error::Uncompression {
        compression: declared.as_str().to_string(),
        detail: format!(
            "the manifest says the file is {} (compression \"{}\"), but {what}",
            declared.describe(),
            declared.as_str()
        ),
    })
}

/// An error of the reader under a decoder, carried through the decoder
/// unchanged so that it is not mistaken for a decoding error.
#[derive(Debug)]
struct SourceError(io::Error);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

/// Marks the errors of the reader under a decoder.
struct MarkSourceErrors<R>(R);

impl<R: Read> Read for MarkSourceErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                e
            } else {
                io::Error::new(e.kind(), SourceError(e))
            }
        })
    }
}

/// A decoder's output: source errors come out as they went in, decoder
/// errors as `Error::Uncompression`.
struct Decoded {
    decoder: Box<dyn Read + Send>,
    compression: Compression,
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                return e;
            }
            if e.get_ref().is_some_and(|inner| inner.is::<SourceError>()) {
                let kind = e.kind();
                return match e.into_inner().map(|inner| inner.downcast::<SourceError>()) {
                    Some(Ok(source)) => source.0,
                    _ => io::Error::new(kind, "source error"),
                };
            }
            let detail = if e.kind() == io::ErrorKind::UnexpectedEof {
                format!("the file ends in the middle of its {} data ({e})", self.compression)
            } else {
                e.to_string()
            };
            io::Error::new(
                io::ErrorKind::InvalidData,
                Error::Uncompression { compression: self.compression.as_str().to_string(), detail },
            )
        })
    }
}

/// A streaming decoder for `c`. Concatenated members (gzip, bzip2) and
/// streams (xz) are all decoded, as the command-line tools do. bzip2 and
/// xz decode on every core (`crate::codec`), or on one if no thread can be
/// started.
pub fn decoder(c: Compression, r: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    let source = MarkSourceErrors(r);
    let decoder: Box<dyn Read + Send> = match c {
        Compression::None => return Box::new(source.0),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(source)),
        Compression::Bzip2 => match Workers::new("bunzip2", workers::count()) {
            Ok(workers) => Box::new(par_bzip2::ParallelBzDecoder::new(source, workers)),
            Err(_) => Box::new(bzip2::read::MultiBzDecoder::new(source)),
        },
        Compression::Xz => match mt_xz::stream_decoder() {
            Ok(stream) => Box::new(mt_xz::XzMtDecoder::new(source, stream)),
            Err(_) => Box::new(liblzma::read::XzDecoder::new_multi_decoder(source)),
        },
    };
    Box::new(Decoded { decoder, compression: c })
}

/// A compressing writer. `finish` writes the format's trailer and returns
/// the writer under it; dropping an encoder without `finish` leaves a
/// truncated file.
pub trait Encoder: Write + Send {
    fn finish(self: Box<Self>) -> io::Result<Box<dyn Write + Send>>;
}

struct Plain(Box<dyn Write + Send>);

impl Write for Plain {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Encoder for Plain {
    fn finish(mut self: Box<Self>) -> io::Result<Box<dyn Write + Send>> {
        self.0.flush()?;
        Ok(self.0)
    }
}

impl Encoder for flate2::write::GzEncoder<Box<dyn Write + Send>> {
    fn finish(self: Box<Self>) -> io::Result<Box<dyn Write + Send>> {
        flate2::write::GzEncoder::finish(*self)
    }
}

impl Encoder for bzip2::write::BzEncoder<Box<dyn Write + Send>> {
    fn finish(self: Box<Self>) -> io::Result<Box<dyn Write + Send>> {
        bzip2::write::BzEncoder::finish(*self)
    }
}

impl Encoder for liblzma::write::XzEncoder<Box<dyn Write + Send>> {
    fn finish(self: Box<Self>) -> io::Result<Box<dyn Write + Send>> {
        liblzma::write::XzEncoder::finish(*self)
    }
}

impl Encoder for par_gzip::ParallelGzEncoder {
    fn finish(self: Box<Self>) -> io::Result<Box<dyn Write + Send>> {
        par_gzip::ParallelGzEncoder::finish(*self)
    }
}

/// A compressing writer for `c`. `level` is the format's level (gzip and
/// bzip2 1-9, xz 0-9), clamped into range; `None` is the tools' default
/// (gzip 6, bzip2 9, xz 6). gzip and xz compress on every core (the
/// output stays one plain gzip member, one xz stream), or on one if no
/// thread can be started.
pub fn encoder(c: Compression, w: Box<dyn Write + Send>, level: Option<u32>) -> Box<dyn Encoder> {
    match c {
        Compression::None => Box::new(Plain(w)),
        Compression::Gzip => {
            let level = level.unwrap_or(6).clamp(1, 9);
            match Workers::new("gzip", workers::count()) {
                Ok(workers) => Box::new(par_gzip::ParallelGzEncoder::new(w, level, workers)),
                Err(_) => Box::new(flate2::write::GzEncoder::new(w, flate2::Compression::new(level))),
            }
        }
        Compression::Bzip2 => {
            let level = bzip2::Compression::new(level.unwrap_or(9).clamp(1, 9));
            Box::new(bzip2::write::BzEncoder::new(w, level))
        }
        Compression::Xz => {
            let level = level.unwrap_or(6).min(9);
            match mt_xz::encoder_stream(level) {
                Ok(stream) => Box::new(liblzma::write::XzEncoder::new_stream(w, stream)),
                Err(_) => Box::new(liblzma::write::XzEncoder::new(w, level)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testdata::Shared;

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let out = Shared::default();
        let mut enc = encoder(c, Box::new(out.clone()), None);
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
        out.bytes()
    }

    fn decompress(c: Compression, data: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(c, Box::new(io::Cursor::new(data))).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn names_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Bzip2, Compression::Xz] {
            assert_eq!(Compression::parse(c.as_str()).unwrap(), c);
        }
        assert_eq!(Compression::Bzip2.extension(), ".bz2");
        assert_eq!(Compression::parse("lz4").unwrap_err().code(), "InvalidManifest");
    }

    #[test]
    fn each_format_round_trips_and_is_sniffed() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for c in [Compression::Gzip, Compression::Bzip2, Compression::Xz] {
            let packed = compress(c, &data);
            assert_eq!(sniff(&packed), Some(c));
            check_magic(c, &packed[..SNIFF_LEN]).unwrap();
            assert_eq!(decompress(c, packed).unwrap(), data, "{c}");
        }
    }

    #[test]
    fn concatenated_members_are_all_decoded() {
        for c in [Compression::Gzip, Compression::Bzip2, Compression::Xz] {
            let mut packed = compress(c, b"first ");
            packed.extend(compress(c, b"second"));
            assert_eq!(decompress(c, packed).unwrap(), b"first second", "{c}");
        }
    }

    #[test]
    fn raw_zfs_streams_are_recognised() {
        let mut le = vec![0u8; 16];
        le[8..16].copy_from_slice(&DRR_BEGIN_MAGIC.to_le_bytes());
        assert_eq!(sniff(&le), Some(Compression::None));
        let mut be = vec![0u8; 16];
        be[8..16].copy_from_slice(&DRR_BEGIN_MAGIC.to_be_bytes());
        assert_eq!(sniff(&be), Some(Compression::None));
        assert_eq!(sniff(b"hello world, not a stream"), None);
        assert_eq!(sniff(&[]), None);
    }

    #[test]
    fn a_mismatched_declaration_says_what_the_file_is() {
        let xz = compress(Compression::Xz, b"x");
        let err = check_magic(Compression::Gzip, &xz).unwrap_err();
        assert_eq!(err.code(), "UncompressionError");
        assert!(err.to_string().contains("xz-compressed"), "{err}");
        let gz = compress(Compression::Gzip, b"x");
        let err = check_magic(Compression::None, &gz).unwrap_err();
        assert!(err.to_string().contains("gzip-compressed"), "{err}");
        let err = check_magic(Compression::Bzip2, b"garbage!").unwrap_err();
        assert!(err.to_string().contains("not a known format"), "{err}");
    }

    #[test]
    fn corrupt_data_is_an_uncompression_error_and_source_errors_stay_theirs() {
        let mut gz = compress(Compression::Gzip, &[7u8; 50_000]);
        let mid = gz.len() / 2;
        gz[mid] ^= 0xff;
        let err = decompress(Compression::Gzip, gz.clone()).unwrap_err();
        let inner = err.into_inner().unwrap().downcast::<Error>().unwrap();
        assert_eq!(inner.code(), "UncompressionError");

        let truncated = gz[..mid].to_vec();
        let err = decompress(Compression::Gzip, truncated).unwrap_err();
        assert!(err.get_ref().unwrap().is::<Error>(), "{err}");

        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer went away"))
            }
        }
        let mut out = Vec::new();
        let err = decoder(Compression::Xz, Box::new(Failing)).read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(err.to_string(), "peer went away");
    }
}
