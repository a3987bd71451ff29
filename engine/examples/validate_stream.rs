//! Validates a ZFS send stream file as the dir pool's receive does and
//! prints what it found and how fast: for streams too big to keep in the
//! repository (a 1 GiB `zfs send` made by bench/run, say).
//!
//!   cargo run --release -p imgadm-engine --example validate_stream -- FILE [FROMGUID]

use std::io::BufReader;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, fromguid) = match args.as_slice() {
        [path] => (path, None),
        [path, guid] => match guid.parse::<u64>() {
            Ok(guid) => (path, Some(guid)),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => BufReader::with_capacity(1 << 20, file),
        Err(e) => {
            eprintln!("validate_stream: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    match imgadm_engine::zstream::validate(file, fromguid) {
        Ok(summary) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{} records, {} bytes, toguid {}, fromguid {}, {:.0} MB/s",
                summary.records,
                summary.bytes,
                summary.begin.toguid,
                summary.begin.fromguid,
                summary.bytes as f64 / seconds / 1e6
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("validate_stream: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: validate_stream FILE [FROMGUID]");
    ExitCode::from(2)
}
