//! One module per verb: each holds its clap arguments (the doc comments are
//! the help text) and one `run` function. This file is only the verb enum
//! and the dispatch.

mod ancestry;
mod avail;
mod create;
mod delete;
mod get;
mod history;
mod import;
mod install;
mod journal;
mod list;
mod publish;
mod show;
mod sources;
mod update;
mod vacuum;

use std::sync::Arc;

use clap::Subcommand;
use imgadm_engine::context::Context;
use imgadm_engine::Result;

use crate::reporter::CliReporter;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the help of imgadm or of one of its commands.
    #[command(visible_alias = "?")]
    Help(HelpArgs),
    /// List and edit the image sources.
    Sources(sources::Args),
    /// List the images available from the image sources.
    #[command(visible_alias = "available")]
    Avail(avail::Args),
    /// Show the manifest of an image in the image sources.
    Show(show::Args),
    /// Import an image (and the origins it needs) from the image sources.
    Import(import::Args),
    /// Install an image from a local manifest and file.
    Install(install::Args),
    /// List installed images.
    List(list::Args),
    /// Show the info of an installed image.
    #[command(visible_alias = "info")]
    Get(get::Args),
    /// List the ancestry (origin chain) of an installed image.
    Ancestry(ancestry::Args),
    /// Delete an installed image.
    #[command(visible_alias = "destroy")]
    Delete(delete::Args),
    /// Create an image from a VM.
    Create(create::Args),
    /// Publish an image from a local manifest and file to an Images API server.
    Publish(publish::Args),
    /// Refresh installed images' manifests from the sources and give them their @final.
    Update(update::Args),
    /// Delete the images no VM and no other image uses.
    Vacuum(vacuum::Args),
    /// Every operation that touched an image (or all), from the journal.
    History(history::Args),
    /// Inspect, verify, export, resume and roll back journaled operations.
    #[command(subcommand)]
    Journal(journal::Command),
}

#[derive(Debug, clap::Args)]
pub struct HelpArgs {
    /// The command to show the help of.
    command: Vec<String>,
}

/// The canonical name of the verb in `argv`, for error lines.
pub fn verb_of(argv: &[String]) -> String {
    let word = argv.iter().skip(1).find(|a| !a.starts_with('-')).cloned().unwrap_or_default();
    match word.as_str() {
        "info" => "get".to_string(),
        "destroy" => "delete".to_string(),
        "available" => "avail".to_string(),
        "?" => "help".to_string(),
        _ => word,
    }
}

/// Builds the engine context for a verb that reads or changes images, and
/// warns (on stderr) about interrupted operations.
fn context(argv: Vec<String>, quiet: bool) -> Result<Context> {
    let cx = Context::from_env(argv, Arc::new(CliReporter::new(quiet)))?;
    journal::warn_interrupted(&cx);
    Ok(cx)
}

pub fn run(command: Command, argv: Vec<String>) -> Result<()> {
    match command {
        Command::Help(args) => help(&args.command),
        Command::Sources(args) => sources::run(context(argv, false)?, args),
        Command::Avail(args) => avail::run(context(argv, false)?, args),
        Command::Show(args) => show::run(context(argv, false)?, args),
        Command::Import(args) => import::run(context(argv, args.quiet)?, args),
        Command::Install(args) => install::run(context(argv, args.files.quiet)?, args),
        Command::List(args) => list::run(context(argv, false)?, args),
        Command::Get(args) => get::run(context(argv, false)?, args),
        Command::Ancestry(args) => ancestry::run(context(argv, false)?, args),
        Command::Delete(args) => delete::run(context(argv, false)?, args),
        Command::Create(args) => create::run(context(argv, args.quiet)?, args),
        Command::Publish(args) => publish::run(context(argv, args.files.quiet)?, args),
        Command::Update(args) => update::run(context(argv, false)?, args),
        Command::Vacuum(args) => vacuum::run(context(argv, false)?, args),
        Command::History(args) => history::run(context(argv, false)?, args),
        Command::Journal(command) => journal::run(command, argv),
    }
}

fn help(path: &[String]) -> Result<()> {
    use clap::CommandFactory;
    let mut cmd = crate::Cli::command();
    let mut current = &mut cmd;
    for name in path {
        let Some(sub) = current.find_subcommand_mut(name) else {
            return Err(imgadm_engine::Error::Usage(format!("unknown command: \"{name}\"")));
        };
        current = sub;
    }
    let name = std::iter::once("imgadm".to_string()).chain(path.iter().cloned()).collect::<Vec<_>>().join(" ");
    let mut cmd = current.clone().bin_name(name);
    let _ = cmd.print_help();
    Ok(())
}

/// `-j` and `-H`, as every listing verb takes them.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// JSON output.
    #[arg(short = 'j', long = "json")]
    pub json: bool,
    /// Do not print the table header.
    #[arg(short = 'H')]
    pub no_header: bool,
}

/// `-q`, `-m MANIFEST` and `-f FILE`, as install and publish take them.
#[derive(Debug, clap::Args)]
pub struct ImageFileArgs {
    /// Disable progress bars.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The image's manifest file.
    #[arg(short = 'm', value_name = "MANIFEST")]
    manifest: Option<std::path::PathBuf>,
    /// The image file (a ZFS send stream, compressed or not).
    #[arg(short = 'f', value_name = "FILE")]
    file: Option<std::path::PathBuf>,
}

impl ImageFileArgs {
    /// The manifest and file paths; both are required.
    pub fn paths(self, verb: &str) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        match (self.manifest, self.file) {
            (Some(manifest), Some(file)) => Ok((manifest, file)),
            _ => Err(imgadm_engine::Error::Usage(format!("{verb} needs both -m MANIFEST and -f FILE"))),
        }
    }
}

/// `-P POOL`, parsed; `zones` when not given.
pub fn pool_arg(value: &Option<String>) -> Result<imgadm_engine::ids::PoolName> {
    match value {
        Some(name) => imgadm_engine::ids::PoolName::parse(name),
        None => Ok(imgadm_engine::ids::PoolName::default()),
    }
}
