//! `imgadm vacuum [-n] [-f] [-P POOL]`

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};

use imgadm_engine::context::Context;
use imgadm_engine::ids::PoolName;
use imgadm_engine::verbs::vacuum::{self, Doomed};
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dry run: say what would be deleted, delete nothing, ask nothing.
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Only this zpool (or dir pool); every imported pool when not given.
    #[arg(short = 'P', value_name = "POOL")]
    pool: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    // Unlike the real imgadm, which reports this and vacuums anyway.
    if !args.extra.is_empty() {
        return Err(Error::Usage(format!("unexpected args ({}): {}", args.extra.len(), args.extra.join(" "))));
    }
    let only = args.pool.as_deref().map(PoolName::parse).transpose()?;
    if !args.dry_run {
        vacuum::resume_interrupted(&cx)?;
    }
    let doomed = vacuum::plan(&cx, only.as_ref())?;
    if doomed.is_empty() {
        return Ok(());
    }
    if args.dry_run {
        for image in &doomed {
            cx.info(&format!("[dry-run] Deleted image {}", image.title));
        }
        return Ok(());
    }
    if !args.force && !confirm(&doomed)? {
        cx.info("Aborting");
        return Ok(());
    }
    vacuum::vacuum(&cx, &doomed)
}

/// Lists the images and asks on the controlling terminal (stdio may be a
/// pipe): y/yes or n/no, empty is no, anything else asks again.
fn confirm(doomed: &[Doomed]) -> Result<bool> {
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| Error::io("cannot ask for confirmation on /dev/tty (use -f to delete without asking)", e))?;
    let mut text = String::from("This will delete the following images:\n");
    for image in doomed {
        text.push_str(&format!("    {}\n", image.title));
    }
    let question = match doomed.len() {
        1 => "Delete this image? [y/N] ".to_string(),
        n => format!("Delete these {n} images? [y/N] "),
    };
    let mut reader = BufReader::new(tty.try_clone().map_err(|e| Error::io("cannot read /dev/tty", e))?);
    tty.write_all(text.as_bytes()).map_err(|e| Error::io("cannot write to /dev/tty", e))?;
    loop {
        tty.write_all(question.as_bytes()).and_then(|()| tty.flush()).map_err(|e| Error::io("cannot write to /dev/tty", e))?;
        let mut answer = String::new();
        if reader.read_line(&mut answer).map_err(|e| Error::io("cannot read /dev/tty", e))? == 0 {
            return Ok(false);
        }
        match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "" | "n" | "no" => return Ok(false),
            _ => {}
        }
    }
}
