//! How results and errors reach the person: the `imgadm VERB: error (Code):
//! message` line, `-E`'s JSON record as the last line of stderr, and exit
//! statuses (0, 1 error, 2 usage, 3 image not installed).

use std::io::Write;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::CommandFactory;
use serde_json::{json, Map};

use crate::logging;

/// An error as printed: its code name, message and exit status.
pub struct CliError {
    code: String,
    message: String,
    exit: u8,
}

impl CliError {
    pub fn new(code: &str, message: &str, exit: u8) -> CliError {
        CliError { code: code.to_string(), message: message.to_string(), exit }
    }

    pub fn from_engine(e: &imgadm_engine::Error) -> CliError {
        CliError { code: e.code().to_string(), message: e.to_string(), exit: e.exit_status() as u8 }
    }
}

/// Prints the error and returns its exit status. `quiet_message` leaves the
/// human line out (no command given: the help said it all).
pub fn fail(verb: Option<&str>, err: &CliError, structured: bool, quiet_message: bool) -> ExitCode {
    // Before the error record: with -E the error must be the last line.
    tracing::debug!(exit_status = err.exit, cli = true, "cli exit");
    let mut stderr = std::io::stderr().lock();
    if structured {
        let mut fields = Map::new();
        fields.insert(
            "err".into(),
            json!({"message": err.message, "name": "ImgadmError", "stack": format!("{}: {}", err.code, err.message), "code": err.code}),
        );
        let _ = writeln!(stderr, "{}", logging::record(50, &err.message, fields));
    } else if !quiet_message {
        let prefix = match verb {
            Some(v) if !v.is_empty() => format!("imgadm {v}"),
            _ => "imgadm".to_string(),
        };
        let _ = writeln!(stderr, "{prefix}: error ({}): {}", err.code, err.message);
    }
    ExitCode::from(err.exit)
}

pub fn print_top_help() {
    let mut cmd = crate::Cli::command();
    let _ = cmd.print_help();
}

/// clap's parse outcomes in imgadm's terms: help and version are not
/// errors; an unknown verb is `UnknownCommand` (exit 1, as the real tool's
/// test suite expects); bad options are usage errors (exit 2).
pub fn clap_failure(e: clap::Error, verb: &str, structured: bool) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::InvalidSubcommand => {
            let name = context(&e, ContextKind::InvalidSubcommand).unwrap_or_default();
            let err = CliError::new("UnknownCommand", &format!("unknown command: \"{name}\""), 1);
            fail(None, &err, structured, false)
        }
        ErrorKind::UnknownArgument => {
            let arg = context(&e, ContextKind::InvalidArg).unwrap_or_default();
            let err = CliError::new("Option", &format!("unknown option: \"{arg}\""), 2);
            fail(Some(verb), &err, structured, false)
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string();
            let err = CliError::new("Usage", &first, 2);
            fail(Some(verb), &err, structured, false)
        }
    }
}

fn context(e: &clap::Error, kind: ContextKind) -> Option<String> {
    match e.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        other => Some(other.to_string()),
    }
}
