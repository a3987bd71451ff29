//! The CLI's side of the engine's reporting seam: status lines on stdout as
//! the real imgadm prints them, warnings on stderr, and an indicatif bar on
//! stderr only when it is a terminal and `-q` was not given.

use std::io::IsTerminal;

use imgadm_engine::report::{Progress, Reporter};
use indicatif::{ProgressBar, ProgressStyle};

pub struct CliReporter {
    bars: bool,
}

impl CliReporter {
    pub fn new(quiet: bool) -> CliReporter {
        CliReporter { bars: !quiet && std::io::stderr().is_terminal() }
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

struct NoBar;

impl Progress for NoBar {
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

impl Reporter for CliReporter {
    fn info(&self, line: &str) {
        println!("{line}");
    }

    fn warn(&self, line: &str) {
        eprintln!("{line}");
    }

    fn progress(&self, title: &str, total: Option<u64>) -> Box<dyn Progress> {
        if !self.bars {
            return Box::new(NoBar);
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(title.to_string());
        Box::new(Bar(bar))
    }
}
