//! `imgadm sources`: the `sources` list of `imgadm.conf`, with the real
//! imgadm's semantics and messages (add, delete, replace after an edit,
//! check). Changes are saved at once; a new IMGAPI source is pinged first
//! unless forced.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::source::imgapi::{ClientOptions, ImgapiClient};
use crate::source::{self, normalize_url, SourceSpec, SourceType};

pub fn list(cx: &Context) -> Result<Vec<SourceSpec>> {
    source::configured(&cx.config)
}

/// Pings an IMGAPI source (`SourcePing` on failure). Docker and dsapi
/// sources are stored only; there is nothing to ping them with.
pub fn ping(cx: &Context, spec: &SourceSpec) -> Result<()> {
    if spec.kind != SourceType::Imgapi {
        tracing::debug!(source = %spec.describe(), "not pinging a source this imgadm does not speak");
        return Ok(());
    }
    let options = ClientOptions { user_agent_extra: cx.config.user_agent_extra().map(str::to_string) };
    ImgapiClient::new(spec, &options)
        .and_then(|client| client.ping())
        .map_err(|e| Error::SourcePing { source_desc: spec.describe(), detail: e.to_string() })
}

fn save(cx: &mut Context, sources: &[SourceSpec]) -> Result<()> {
    source::store(&mut cx.config, sources);
    cx.config.save(&cx.state)
}

/// `sources -a URL [-t TYPE] [-k] [-f]`.
pub fn add(cx: &mut Context, spec: SourceSpec, force: bool) -> Result<()> {
    let mut sources = list(cx)?;
    if sources.iter().any(|s| s.same_as(&spec)) {
        cx.info(&format!("Already have {}, no change", spec.describe()));
        return Ok(());
    }
    if !force {
        ping(cx, &spec)?;
    }
    cx.info(&format!("Added {}", spec.describe()));
    sources.push(spec);
    save(cx, &sources)
}

/// `sources -d URL`: every source whose normalised URL matches, any type.
pub fn delete(cx: &mut Context, url: &str) -> Result<()> {
    let wanted = normalize_url(url);
    let (deleted, kept): (Vec<SourceSpec>, Vec<SourceSpec>) =
        list(cx)?.into_iter().partition(|s| normalize_url(&s.url) == wanted);
    if deleted.is_empty() {
        cx.info(&format!("Do not have image source \"{url}\", no change"));
        return Ok(());
    }
    for source in &deleted {
        cx.info(&format!("Deleted {}", source.describe()));
    }
    save(cx, &kept)
}

/// `sources -c`: every source pinged in parallel, in order.
pub fn check(cx: &Context) -> Result<Vec<(SourceSpec, Result<()>)>> {
    let sources = list(cx)?;
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = sources.iter().map(|spec| scope.spawn(move || ping(cx, spec))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::internal("a ping thread panicked"))))
            .collect::<Vec<_>>()
    });
    Ok(sources.into_iter().zip(results).collect())
}

/// The text `sources -e` puts in the editor: `URL TYPE [insecure]` lines
/// (URL padded to the longest, at most 50; type to 6) and a comment block.
pub fn edit_text(sources: &[SourceSpec]) -> String {
    let width = sources.iter().map(|s| s.url.len()).max().unwrap_or(0).min(50);
    let mut text = String::new();
    for s in sources {
        let line = format!("{:width$} {:6} {}", s.url, s.kind.as_str(), if s.insecure { "insecure" } else { "" });
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text.push_str(
        "#\n\
         # Enter sources, one per line, as follows:\n\
         #\n\
         #   URL TYPE [OPTIONS]\n\
         #\n\
         # where \"TYPE\" is one of \"imgapi\" (the default), \"docker\", or \"dsapi\"\n\
         # (deprecated); and \"OPTIONS\" is the literal string \"insecure\" to skip\n\
         # TLS server certificate checking for this source.\n\
         #\n\
         # Comments beginning with \"#\" are stripped.\n\
         #\n",
    );
    text
}

/// Parses what the editor left: `#` comments and blank lines dropped,
/// fields split on whitespace, TYPE defaulting to imgapi, the third field
/// a comma list where only `insecure` is allowed.
pub fn parse_edit_text(text: &str) -> Result<Vec<SourceSpec>> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let url = fields[0];
        let kind = match fields.get(1) {
            Some(kind) => SourceType::parse_for(kind, url)?,
            None => SourceType::Imgapi,
        };
        let mut insecure = false;
        for option in fields.get(2).map(|o| o.split(',').collect::<Vec<_>>()).unwrap_or_default() {
            match option {
                "insecure" => insecure = true,
                other => return Err(Error::Usage(format!("unknown source option: {other}"))),
            }
        }
        sources.push(SourceSpec { url: url.to_string(), kind, insecure, channel: None });
    }
    Ok(sources)
}

/// Replaces the sources with what an edit produced, printing what changed
/// as the real imgadm does; only newly added sources are pinged (unless
/// `force`).
pub fn replace(cx: &mut Context, edited: Vec<SourceSpec>, force: bool) -> Result<()> {
    let before = list(cx)?;
    if before == edited {
        cx.info("Image sources unchanged");
        return Ok(());
    }
    let added: Vec<&SourceSpec> = edited.iter().filter(|s| !before.iter().any(|b| b.same_as(s))).collect();
    let deleted: Vec<&SourceSpec> = before.iter().filter(|b| !edited.iter().any(|s| s.same_as(b))).collect();
    if !force {
        for spec in &added {
            ping(cx, spec)?;
        }
    }
    if deleted.is_empty() {
        cx.info("Reordered image sources");
    }
    for spec in &added {
        cx.info(&format!("Added {}", spec.describe()));
    }
    for spec in &deleted {
        cx.info(&format!("Deleted {}", spec.describe()));
    }
    save(cx, &edited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_text_round_trips() {
        let sources = vec![
            SourceSpec::imgapi("https://images.smartos.org"),
            SourceSpec { url: "https://docker.io".into(), kind: SourceType::Docker, insecure: true, channel: None },
        ];
        assert_eq!(parse_edit_text(&edit_text(&sources)).unwrap(), sources);
        assert!(matches!(parse_edit_text("http://x bogus"), Err(Error::ConfigError(_))));
        assert!(matches!(parse_edit_text("http://x imgapi fast"), Err(Error::Usage(_))));
    }
}
