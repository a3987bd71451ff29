//! Test helpers shared by the codecs' tests and `compression`'s.

use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// A writer that keeps what it got, readable after an encoder is done.
#[derive(Clone, Default)]
pub struct Shared(pub Arc<Mutex<Vec<u8>>>);

impl Shared {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `len` deterministic bytes (xorshift from `seed`): noise, or text-like
/// words and runs, as the two halves of an image stream are.
pub fn sample(len: usize, seed: u64, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let words: [&[u8]; 6] = [b"the ", b"image ", b"zfs ", b"stream ", b"\n", b"aaaaaaaaaaaaaaaa"];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            out.extend_from_slice(words[(x % 6) as usize]);
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// What `program args` writes for `input` on its stdin (gzip -dc, ...).
pub fn filter(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "{program} {args:?} failed");
    output.stdout
}

/// `count` copies of `file`, each with one pseudo-random bit flipped.
pub fn bit_flips(file: &[u8], count: usize, seed: u64) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
    let mut x = seed;
    (0..count).map(move |_| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let bit = (x >> 11) as usize % (file.len() * 8);
        let mut flipped = file.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        (bit, flipped)
    })
}

/// Both decoders agree on `file`: the same output, or both fail.
pub fn agree(want: io::Result<Vec<u8>>, got: io::Result<Vec<u8>>, what: &str) {
    match (want, got) {
        (Ok(want), Ok(got)) => assert!(want == got, "{what}: outputs differ ({} vs {} bytes)", want.len(), got.len()),
        (Err(_), Err(_)) => {}
        (want, got) => panic!("{what}: reference {:?}, tested {:?}", want.map(|v| v.len()), got.map(|v| v.len())),
    }
}
