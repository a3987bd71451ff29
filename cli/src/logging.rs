//! Bunyan JSON log records on stderr, as the real imgadm writes them (name
//! `imgadm`, numeric levels, `req_id`, `src` when tracing), so existing
//! bunyan tooling and log collectors read them. Default level warn; `-v`
//! means trace; else `IMGADM_LOG_LEVEL`.

use std::io::Write;

use serde_json::{json, Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The request id sent to servers as `x-request-id` and put on every record.
pub fn req_id() -> &'static str {
    imgadm_engine::source::request_id()
}

fn bunyan_level(level: &Level) -> u8 {
    match *level {
        Level::TRACE => 10,
        Level::DEBUG => 20,
        Level::INFO => 30,
        Level::WARN => 40,
        Level::ERROR => 50,
    }
}

/// One bunyan record as a line (without the newline).
pub fn record(level: u8, msg: &str, mut fields: Map<String, Value>) -> String {
    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let mut rec = Map::new();
    rec.insert("name".into(), json!("imgadm"));
    rec.insert("hostname".into(), json!(hostname));
    rec.insert("pid".into(), json!(std::process::id()));
    rec.insert("req_id".into(), json!(req_id()));
    rec.insert("level".into(), json!(level));
    rec.append(&mut fields);
    rec.insert("msg".into(), json!(msg));
    rec.insert("time".into(), json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    rec.insert("v".into(), json!(0));
    Value::Object(rec).to_string()
}

struct BunyanLayer {
    with_src: bool,
}

#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: Map<String, Value>,
}

impl Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_string(), json!(text));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.insert(field.name().to_string(), json!(value));
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), json!(value));
    }
}

impl<S: Subscriber> Layer<S> for BunyanLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut collector = FieldCollector::default();
        event.record(&mut collector);
        let meta = event.metadata();
        if self.with_src {
            collector.fields.insert(
                "src".into(),
                json!({"file": meta.file(), "line": meta.line(), "func": meta.target()}),
            );
        }
        let line = record(bunyan_level(meta.level()), &collector.message, collector.fields);
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// Starts logging. Called once, before anything else may log.
pub fn init(verbose: bool) {
    let mut invalid = None;
    let level = if verbose {
        LevelFilter::TRACE
    } else {
        match std::env::var("IMGADM_LOG_LEVEL").ok().as_deref() {
            None | Some("") => LevelFilter::WARN,
            Some("trace") => LevelFilter::TRACE,
            Some("debug") => LevelFilter::DEBUG,
            Some("info") => LevelFilter::INFO,
            Some("warn") => LevelFilter::WARN,
            Some("error") | Some("fatal") => LevelFilter::ERROR,
            Some(other) => {
                invalid = Some(other.to_string());
                LevelFilter::WARN
            }
        }
    };
    let with_src = level == LevelFilter::TRACE;
    let _ = tracing_subscriber::registry().with(BunyanLayer { with_src }.with_filter(level)).try_init();
    if let Some(value) = invalid {
        tracing::warn!(IMGADM_LOG_LEVEL = value.as_str(), "invalid IMGADM_LOG_LEVEL, ignored");
    }
    tracing::debug!(argv = ?std::env::args().collect::<Vec<_>>(), cli = true, "cli init");
}
