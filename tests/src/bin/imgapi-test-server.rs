//! Serves a directory of images over the test Images API until killed.
//!
//! ```text
//! imgapi-test-server [--port PORT] [--channels DEFAULT[,OTHER...]]
//!                    [--honour-range] [--page-limit N] [--generate N] DIR
//! ```
//!
//! Every `NAME.imgmanifest` in DIR becomes an active image whose file is
//! the file next to it named `NAME.<anything>` (as `imgadm create` writes
//! them: `NAME.imgmanifest` + `NAME.zfs.gz`); a manifest without such a
//! file is served unactivated. The compression comes from the manifest's
//! `files[0].compression`, else from the file's extension. Files are held
//! in memory. `--generate N` adds N small generated images besides (for
//! the `avail` benchmark: bench/run), published one second apart. Prints
//! `listening on http://127.0.0.1:PORT` once serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use imgadm_tests::imgapi_server::{Channel, FileCompression, TestImgapi};
use serde_json::Value;

const USAGE: &str = "usage: imgapi-test-server [--port PORT] [--channels DEFAULT[,OTHER...]] \
                     [--honour-range] [--page-limit N] [--generate N] DIR";

struct Options {
    port: u16,
    channels: Vec<String>,
    honour_range: bool,
    page_limit: Option<usize>,
    generate: usize,
    dir: PathBuf,
}

fn main() -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|arg| arg == "-h" || arg == "--help")
    {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("imgapi-test-server: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("imgapi-test-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut port = 0;
    let mut channels = Vec::new();
    let mut honour_range = false;
    let mut page_limit = None;
    let mut generate = 0;
    let mut dir = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                port = value("--port")?
                    .parse()
                    .map_err(|_| "--port needs a number".to_string())?
            }
            "--channels" => channels = value("--channels")?.split(',').map(String::from).collect(),
            "--honour-range" => honour_range = true,
            "--page-limit" => {
                page_limit = Some(
                    value("--page-limit")?
                        .parse()
                        .map_err(|_| "--page-limit needs a number".to_string())?,
                )
            }
            "--generate" => {
                generate = value("--generate")?
                    .parse()
                    .map_err(|_| "--generate needs a number".to_string())?
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            path if dir.is_none() => dir = Some(PathBuf::from(path)),
            extra => return Err(format!("unexpected argument {extra}")),
        }
    }
    let dir = dir.ok_or("no directory given")?;
    Ok(Options {
        port,
        channels,
        honour_range,
        page_limit,
        generate,
        dir,
    })
}

fn run(options: &Options) -> Result<(), String> {
    let server = TestImgapi::start_on(SocketAddr::from(([127, 0, 0, 1], options.port)))
        .map_err(|error| format!("cannot listen on port {}: {error}", options.port))?;
    server.set_channels(
        options
            .channels
            .iter()
            .enumerate()
            .map(|(index, name)| Channel::new(name, name, index == 0))
            .collect(),
    );
    server.honour_range(options.honour_range);
    server.default_page_limit(options.page_limit);

    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&options.dir)
        .map_err(|error| format!("cannot read {}: {error}", options.dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "imgmanifest"))
        .collect();
    manifests.sort();
    for manifest_path in &manifests {
        load_image(&server, manifest_path)?;
    }
    for index in 0..options.generate {
        server.add_image(generated_manifest(index), vec![b'x'], FileCompression::Uncompressed);
    }

    println!("listening on {}", server.url());
    loop {
        // The server runs on its own thread until the process is killed.
        std::thread::park();
    }
}

/// A manifest like a real image's, different for each `index`.
fn generated_manifest(index: usize) -> Value {
    let published = chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000 + index as i64);
    serde_json::json!({
        "uuid": format!("{index:08x}-0000-4000-8000-{index:012x}"),
        "name": format!("generated-{}", index % 100),
        "version": format!("1.0.{index}"),
        "description": "A generated image for the avail benchmark",
        "published_at": published.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "type": "zone-dataset",
        "os": "smartos",
        "requirements": {"min_platform": {"7.0": "20240101T000000Z"}},
        "tags": {"role": "os", "group": format!("g{}", index % 7)},
    })
}

fn load_image(server: &TestImgapi, manifest_path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(manifest_path)
        .map_err(|error| format!("cannot read {}: {error}", manifest_path.display()))?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not JSON: {error}", manifest_path.display()))?;
    let name = |value: &Value| {
        value
            .get("uuid")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    match image_file_of(manifest_path) {
        Some(file_path) => {
            let bytes = std::fs::read(&file_path)
                .map_err(|error| format!("cannot read {}: {error}", file_path.display()))?;
            let compression = manifest
                .pointer("/files/0/compression")
                .and_then(Value::as_str)
                .and_then(FileCompression::parse)
                .unwrap_or_else(|| compression_from_name(&file_path));
            eprintln!(
                "{}: {} ({} bytes)",
                name(&manifest),
                file_path.display(),
                bytes.len()
            );
            server.add_image(manifest, bytes, compression);
        }
        None => {
            eprintln!(
                "{}: no file next to {}, serving it unactivated",
                name(&manifest),
                manifest_path.display()
            );
            server.add_unactivated(manifest);
        }
    }
    Ok(())
}

/// `DIR/NAME.imgmanifest` -> the first other `DIR/NAME.*` file.
fn image_file_of(manifest_path: &Path) -> Option<PathBuf> {
    let stem = manifest_path.file_stem()?.to_str()?;
    let prefix = format!("{stem}.");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(manifest_path.parent()?)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path != manifest_path && path.is_file())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    candidates.sort();
    candidates.into_iter().next()
}

fn compression_from_name(path: &Path) -> FileCompression {
    match path.extension().and_then(|ext| ext.to_str()) {
        Some("gz" | "tgz") => FileCompression::Gzip,
        Some("bz2") => FileCompression::Bzip2,
        Some("xz") => FileCompression::Xz,
        _ => FileCompression::Uncompressed,
    }
}
