//! `imgadm sources [-j|-v|-a URL [-t TYPE] [-k] [-f]|-d URL|-e|-c]`

use std::io::Write;

use imgadm_engine::context::Context;
use imgadm_engine::source::{SourceSpec, SourceType};
use imgadm_engine::verbs::sources;
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON output.
    #[arg(short = 'j', long = "json")]
    json: bool,
    /// Verbose output: a table with each source's type and whether it is insecure.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Add a source (appended to the list).
    #[arg(short = 'a', value_name = "URL")]
    add: Option<String>,
    /// Delete every source with this URL.
    #[arg(short = 'd', value_name = "URL")]
    delete: Option<String>,
    /// Edit the sources in $EDITOR (vi when unset).
    #[arg(short = 'e')]
    edit: bool,
    /// Ping every source and show which are working.
    #[arg(short = 'c', long = "check")]
    check: bool,
    /// The type of the source added with -a: imgapi (default), docker or dsapi.
    #[arg(short = 't', long = "type", value_name = "TYPE", default_value = "imgapi")]
    kind: String,
    /// Skip TLS certificate checks for the source added with -a.
    #[arg(short = 'k', long = "insecure")]
    insecure: bool,
    /// Do not ping a source before adding it.
    #[arg(short = 'f', long = "force")]
    force: bool,
    #[arg(hide = true)]
    extra: Vec<String>,
}

pub fn run(mut cx: Context, args: Args) -> Result<()> {
    if !args.extra.is_empty() {
        return Err(Error::Usage(format!("unexpected args: {}", args.extra.join(" "))));
    }
    let actions = [args.add.is_some(), args.delete.is_some(), args.edit, args.check].iter().filter(|a| **a).count();
    if actions > 1 {
        return Err(Error::Usage("cannot specify more than one of \"-a\", \"-d\", \"-e\", and \"-c\"".to_string()));
    }
    if let Some(url) = args.add {
        let kind = SourceType::parse_for(&args.kind, &url)?;
        let spec = SourceSpec { url, kind, insecure: args.insecure, channel: None };
        return sources::add(&mut cx, spec, args.force);
    }
    if let Some(url) = args.delete {
        return sources::delete(&mut cx, &url);
    }
    if args.edit {
        return edit(&mut cx, args.force);
    }
    if args.check {
        let rows: Vec<Vec<String>> = sources::check(&cx)?
            .into_iter()
            .map(|(spec, result)| {
                let (ok, error) = match result {
                    Ok(()) => ("true".to_string(), "-".to_string()),
                    Err(e) => ("false".to_string(), e.to_string()),
                };
                vec![spec.url, spec.kind.as_str().to_string(), ok, error]
            })
            .collect();
        return print_table(&["URL", "TYPE", "OK", "ERROR"], &rows);
    }
    let list = sources::list(&cx)?;
    if args.json {
        let values: Vec<serde_json::Value> = list
            .iter()
            .map(|s| {
                // As the real one: a key whose value is not set is left out.
                let mut value = serde_json::json!({"url": s.url, "type": s.kind.as_str()});
                if s.insecure {
                    value["insecure"] = serde_json::Value::Bool(true);
                }
                value
            })
            .collect();
        return super::list::print_json(&serde_json::Value::Array(values));
    }
    if args.verbose {
        let rows: Vec<Vec<String>> =
            list.iter().map(|s| vec![s.url.clone(), s.kind.as_str().to_string(), s.insecure.to_string()]).collect();
        return print_table(&["URL", "TYPE", "INSECURE"], &rows);
    }
    let text: String = list.iter().map(|s| format!("{}\n", s.url)).collect();
    super::list::write_stdout(text.as_bytes())
}

/// A plain table: columns padded to their widest cell, two spaces apart,
/// the last one unpadded.
fn print_table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut text: String = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.to_string() } else { format!("{c:w$}  ", w = widths[i]) })
            .collect();
        text.push('\n');
        text
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    super::list::write_stdout(text.as_bytes())
}

/// `-e`: the sources in a temp file (`imgadm-sources-PID.txt`), edited in
/// $EDITOR (else vi), then applied. A failing editor changes nothing.
fn edit(cx: &mut Context, force: bool) -> Result<()> {
    let before = sources::list(cx)?;
    let text = sources::edit_text(&before);
    let path = std::env::temp_dir().join(format!("imgadm-sources-{}.txt", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::io_path("cannot write", &path, e))?;
    let editor = std::env::var("EDITOR").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| "vi".to_string());
    // EDITOR may carry arguments ("vim -f"): split on whitespace, argv only.
    let mut words = editor.split_whitespace();
    let program = words.next().unwrap_or("vi");
    let status = std::process::Command::new(program).args(words).arg(&path).status();
    let edited = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            cx.warn(&format!("Warning: editor {editor} exited with {s}: sources not changed"));
            return Ok(());
        }
        Err(e) => return Err(Error::io(format!("cannot run editor \"{editor}\""), e)),
    }
    let edited = edited.map_err(|e| Error::io_path("cannot read", &path, e))?;
    if edited == text {
        cx.info("Image sources unchanged");
        return Ok(());
    }
    sources::replace(cx, sources::parse_edit_text(&edited)?, force)
}
