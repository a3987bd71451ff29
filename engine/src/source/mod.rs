//! Image sources: the `sources` list of `imgadm.conf` (in the real imgadm's
//! format, so either tool reads what the other wrote) and the clients that
//! talk to them.
//!
//! A source is `{"type": "imgapi"|"docker"|"dsapi", "url": U[, "insecure":
//! true][, "channel": C]}`. A config without a `sources` key means the
//! default source (<https://images.smartos.org>); `[]` means none. Only
//! IMGAPI sources are spoken to ([`imgapi::ImgapiClient`]); docker and
//! dsapi sources are kept and listed, and using them says `NotSupported`.

pub mod download;
pub mod imgapi;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::ids::ImageUuid;
use crate::manifest::Manifest;
use crate::state::{Config, DEFAULT_SOURCE_URL};
use imgapi::{ClientOptions, ImgapiClient};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceType {
    Imgapi,
    Docker,
    Dsapi,
}

impl SourceType {
    pub fn parse(text: &str) -> Option<SourceType> {
        match text {
            "imgapi" => Some(SourceType::Imgapi),
            "docker" => Some(SourceType::Docker),
            "dsapi" => Some(SourceType::Dsapi),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            SourceType::Imgapi => "imgapi",
            SourceType::Docker => "docker",
            SourceType::Dsapi => "dsapi",
        }
    }

    /// The ConfigError the real imgadm gives for an unknown type.
    pub fn parse_for(text: &str, url: &str) -> Result<SourceType> {
        SourceType::parse(text).ok_or_else(|| {
            Error::ConfigError(format!(
                "type \"{text}\" for source url \"{url}\" is invalid: must be one of \"imgapi\", \"dsapi\", \"docker\""
            ))
        })
    }
}

/// One configured source, as `imgadm.conf` stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    pub url: String,
    pub kind: SourceType,
    pub insecure: bool,
    pub channel: Option<String>,
}

impl SourceSpec {
    pub fn imgapi(url: &str) -> SourceSpec {
        SourceSpec { url: url.to_string(), kind: SourceType::Imgapi, insecure: false, channel: None }
    }

    pub fn from_value(value: &Value) -> Result<SourceSpec> {
        let url = value
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::ConfigError(format!("a source in the config file has no \"url\": {value}")))?;
        // A source without a type is what the real imgadm's 3.0.0 upgrade
        // gives a type: dsapi for `.../datasets`, imgapi otherwise.
        let kind = match value.get("type").and_then(Value::as_str) {
            Some(kind) => SourceType::parse_for(kind, url)?,
            None if url.trim_end_matches('/').ends_with("/datasets") => SourceType::Dsapi,
            None => SourceType::Imgapi,
        };
        Ok(SourceSpec {
            url: url.to_string(),
            kind,
            insecure: value.get("insecure").and_then(Value::as_bool).unwrap_or(false),
            channel: value.get("channel").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// The config form: keys that are not set are left out.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("type".into(), json!(self.kind.as_str()));
        map.insert("url".into(), json!(self.url));
        if self.insecure {
            map.insert("insecure".into(), json!(true));
        }
        if let Some(channel) = &self.channel {
            map.insert("channel".into(), json!(channel));
        }
        Value::Object(map)
    }

    /// `"imgapi" image source "URL" (insecure) (channel=C)`, as messages say it.
    pub fn describe(&self) -> String {
        let mut text = format!("\"{}\" image source \"{}\"", self.kind.as_str(), self.url);
        if self.insecure {
            text.push_str(" (insecure)");
        }
        if let Some(channel) = &self.channel {
            text.push_str(&format!(" (channel={channel})"));
        }
        text
    }

    /// Same source for `sources -a`: URL (normalised), type, insecure and channel.
    pub fn same_as(&self, other: &SourceSpec) -> bool {
        normalize_url(&self.url) == normalize_url(&other.url)
            && self.kind == other.kind
            && self.insecure == other.insecure
            && self.channel == other.channel
    }
}

/// The URL form used to compare sources: `http://` when there is no scheme,
/// one trailing `/` of the path dropped, default ports dropped, the query
/// kept.
pub fn normalize_url(url: &str) -> String {
    let with_scheme = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
    let (scheme, rest) = with_scheme.split_once("://").unwrap_or(("http", &with_scheme));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (host, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    let host = match scheme {
        "https" => host.strip_suffix(":443").unwrap_or(host),
        "http" => host.strip_suffix(":80").unwrap_or(host),
        _ => host,
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut normalized = format!("{scheme}://{host}{path}");
    if let Some(query) = query {
        normalized.push('?');
        normalized.push_str(query);
    }
    normalized
}

/// The configured sources: the default one when the config has no
/// `sources` key.
pub fn configured(config: &Config) -> Result<Vec<SourceSpec>> {
    match config.get("sources") {
        None => Ok(vec![SourceSpec::imgapi(DEFAULT_SOURCE_URL)]),
        Some(Value::Array(items)) => items.iter().map(SourceSpec::from_value).collect(),
        Some(other) => Err(Error::ConfigError(format!("\"sources\" in the config file is not an array: {other}"))),
    }
}

pub fn store(config: &mut Config, sources: &[SourceSpec]) {
    config.set("sources", Value::Array(sources.iter().map(SourceSpec::to_value).collect()));
}

/// The sources a command uses: `-S URL`s (imgapi) when given, else the
/// configured ones; `-C` overrides every source's channel. None at all is
/// `NoSources`.
pub fn effective(config: &Config, only: &[String], channel: Option<&str>) -> Result<Vec<SourceSpec>> {
    let mut sources = if only.is_empty() {
        configured(config)?
    } else {
        only.iter().map(|url| SourceSpec::imgapi(url)).collect()
    };
    if let Some(channel) = channel {
        for source in &mut sources {
            source.channel = Some(channel.to_string());
        }
    }
    if sources.is_empty() {
        return Err(Error::NoSources);
    }
    Ok(sources)
}

/// Clients for the IMGAPI sources among `specs`, in order. Docker and
/// dsapi sources are passed over (this imgadm does not speak them); if
/// nothing is left, that is `NotSupported`.
pub fn imgapi_clients(config: &Config, specs: &[SourceSpec]) -> Result<Vec<ImgapiClient>> {
    let options = client_options(config);
    let mut clients = Vec::new();
    for spec in specs {
        if spec.kind == SourceType::Imgapi {
            clients.push(ImgapiClient::new(spec, &options)?);
        } else {
            tracing::debug!(source = %spec.describe(), "skipping a source this imgadm does not speak");
        }
    }
    if clients.is_empty() {
        return Err(Error::NotSupported(format!(
            "no \"imgapi\" image source is configured: {} sources cannot be used by this imgadm",
            specs.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(clients)
}

fn client_options(config: &Config) -> ClientOptions {
    ClientOptions { user_agent_extra: config.user_agent_extra().map(str::to_string) }
}

/// A client for an IMGAPI server named on the command line (publish's),
/// not one of the sources.
pub fn client_for_url(config: &Config, url: &str) -> Result<ImgapiClient> {
    ImgapiClient::new(&SourceSpec::imgapi(url), &client_options(config))
}

/// The first source (in order) that has image `uuid` (active, when
/// `active_only`). A source that fails does not stop the search; its error
/// is returned only when no source has the image.
pub fn find_image(clients: &[ImgapiClient], uuid: ImageUuid, active_only: bool) -> Result<Option<(&ImgapiClient, Manifest)>> {
    let mut errors = Vec::new();
    for client in clients {
        match client.get_image(uuid) {
            Ok(Some(manifest)) if !active_only || manifest.state() == Some("active") => {
                for error in &errors {
                    tracing::warn!(error = %error, "an earlier image source failed");
                }
                return Ok(Some((client, manifest)));
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    match Error::combine(errors) {
        Some(error) => Err(error),
        None => Ok(None),
    }
}

/// The `req_id` of this process, sent as `x-request-id`: `REQ_ID`, else
/// `req_id`, else a fresh v4 uuid, the same for the whole process.
pub fn request_id() -> &'static str {
    static REQ_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REQ_ID.get_or_init(|| {
        std::env::var("REQ_ID")
            .or_else(|_| std::env::var("req_id"))
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise_as_the_real_imgadm_does() {
        assert_eq!(normalize_url("images.smartos.org"), "http://images.smartos.org");
        assert_eq!(normalize_url("https://images.smartos.org:443/"), "https://images.smartos.org");
        assert_eq!(normalize_url("http://h:80/x/"), "http://h/x");
        assert_eq!(normalize_url("https://h:8443/?channel=dev"), "https://h:8443?channel=dev");
        assert_eq!(normalize_url("https://h/a/?channel=dev"), "https://h/a?channel=dev");
    }

    #[test]
    fn sources_default_and_round_trip() {
        let mut config = Config::default();
        assert_eq!(configured(&config).unwrap(), vec![SourceSpec::imgapi(DEFAULT_SOURCE_URL)]);
        let spec = SourceSpec { url: "https://x".into(), kind: SourceType::Docker, insecure: true, channel: None };
        store(&mut config, std::slice::from_ref(&spec));
        assert_eq!(configured(&config).unwrap(), vec![spec.clone()]);
        assert_eq!(spec.describe(), "\"docker\" image source \"https://x\" (insecure)");
        store(&mut config, &[]);
        assert!(matches!(effective(&config, &[], None), Err(Error::NoSources)));
    }
}
