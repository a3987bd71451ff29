//! The reporting seam: what an operation tells the person running it. The
//! CLI implements it (stdout lines, indicatif bars on a terminal); tests can
//! implement it with a recorder.

use std::sync::{Arc, Mutex};

pub trait Reporter: Send + Sync {
    /// A status line, as the real imgadm prints it on stdout
    /// ("Installing image ...", "Deleted image ...").
    fn info(&self, line: &str);

    /// A warning line for stderr.
    fn warn(&self, line: &str);

    /// A byte-progress bar (none when quiet or not on a terminal).
    fn progress(&self, title: &str, total: Option<u64>) -> Box<dyn Progress>;
}

pub trait Progress: Send {
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// Reports nothing: for library callers and benchmarks.
pub struct Silent;

struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

impl Reporter for Silent {
    fn info(&self, _line: &str) {}
    fn warn(&self, _line: &str) {}
    fn progress(&self, _title: &str, _total: Option<u64>) -> Box<dyn Progress> {
        Box::new(NoProgress)
    }
}

/// One bar shared by several transfers, as import's `Download N images`
/// bar is: each transfer advances it through a [`SharedProgress::part`],
/// and only the owner finishes it, after the last one.
pub struct SharedProgress(Arc<Mutex<Box<dyn Progress>>>);

impl SharedProgress {
    pub fn new(bar: Box<dyn Progress>) -> SharedProgress {
        SharedProgress(Arc::new(Mutex::new(bar)))
    }

    /// A handle for one transfer; its `finish` leaves the bar running.
    pub fn part(&self) -> Box<dyn Progress> {
        Box::new(PartOfShared(self.0.clone()))
    }

    pub fn finish(&self) {
        if let Ok(bar) = self.0.lock() {
            bar.finish();
        }
    }
}

struct PartOfShared(Arc<Mutex<Box<dyn Progress>>>);

impl Progress for PartOfShared {
    fn advance(&self, bytes: u64) {
        if let Ok(bar) = self.0.lock() {
            bar.advance(bytes);
        }
    }

    fn finish(&self) {}
}

/// Human size as the real imgadm prints it: 1024-based, truncated (not
/// rounded) to one decimal, `0 B` for zero.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes == 0 {
        return "0 B".to_string();
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let truncated = (value * 10.0).floor() / 10.0;
    format!("{truncated:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn human_sizes_truncate_like_the_real_imgadm() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(99), "99.0 B");
        assert_eq!(human_size(5_900_000), "5.6 MiB");
        assert_eq!(human_size(1024 * 1024 * 1024), "1.0 GiB");
        assert_eq!(human_size(2047), "1.9 KiB");
    }
}
