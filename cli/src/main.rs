//! `imgadm`: parses the command line, wires the engine, prints. It makes no
//! decisions of its own: those are the engine's.

mod commands;
mod logging;
mod output;
mod reporter;

use std::process::ExitCode;

use clap::Parser;
use imgadm_engine::Error;

/// Manage SmartOS virtual machine images.
#[derive(Debug, Parser)]
#[command(
    name = "imgadm",
    version,
    disable_help_subcommand = true,
    disable_version_flag = true,
    subcommand_required = false,
    arg_required_else_help = false,
    after_help = "Journal: every change is an operation in the journal; `imgadm journal list` shows them,\n`imgadm history UUID` what happened to an image."
)]
struct Cli {
    /// Print the version and exit.
    #[arg(long = "version", global = false)]
    version: bool,

    /// Verbose logging: trace-level bunyan records on stderr.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,

    /// On error, make the last line of stderr the error as a JSON (bunyan) record.
    #[arg(short = 'E')]
    structured_errors: bool,

    #[command(subcommand)]
    command: Option<commands::Command>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let verb = commands::verb_of(&argv);
    let early = EarlyFlags::scan(&argv);
    logging::init(early.verbose);
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => return output::clap_failure(e, &verb, early.structured_errors),
    };
    if cli.version {
        println!("imgadm {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        output::print_top_help();
        let err = output::CliError::new("NoCommand", "no command given", 1);
        return output::fail(None, &err, cli.structured_errors, true);
    };
    let result: Result<(), Error> = commands::run(command, argv);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let err = output::CliError::from_engine(&e);
            output::fail(Some(&verb), &err, cli.structured_errors, false)
        }
    }
}

/// `-v` and `-E` are needed before clap has parsed (logging starts first,
/// and a parse error must honour `-E`): top-level options precede the verb.
struct EarlyFlags {
    verbose: bool,
    structured_errors: bool,
}

impl EarlyFlags {
    fn scan(argv: &[String]) -> EarlyFlags {
        let mut flags = EarlyFlags { verbose: false, structured_errors: false };
        for arg in argv.iter().skip(1) {
            if !arg.starts_with('-') || arg.starts_with("--") && arg != "--verbose" {
                if !arg.starts_with('-') {
                    break;
                }
                continue;
            }
            if arg == "--verbose" {
                flags.verbose = true;
                continue;
            }
            for c in arg.chars().skip(1) {
                match c {
                    'v' => flags.verbose = true,
                    'E' => flags.structured_errors = true,
                    _ => {}
                }
            }
        }
        flags
    }
}
