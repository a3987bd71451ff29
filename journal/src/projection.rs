//! What is derived from events: operation summaries and the installed-image
//! projection. Both are pure functions of the events, so `rebuild` and live
//! appends cannot disagree as long as both go through here.

use serde::Serialize;
use serde_json::Value;

use crate::event::{Event, EventKind, OpId};

/// One operation, as `journal list` and `history` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationSummary {
    pub id: OpId,
    pub verb: String,
    pub argv: Vec<String>,
    pub images: Vec<String>,
    pub user: String,
    pub uid: u32,
    pub host: String,
    pub pid: u32,
    pub started: String,
    pub ended: Option<String>,
    /// `data.outcome` of the operation-ended event: "succeeded", "failed",
    /// "rolled-back" or "abandoned".
    pub outcome: Option<String>,
    pub steps: Vec<StepSummary>,
}

/// One run of a step. A step name can occur several times in an operation
/// (an import fetches, verifies and receives each image of a chain): each
/// run is its own entry, in the order they began.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSummary {
    pub step: String,
    /// "begun", "done", "failed" or "undone".
    pub state: String,
    pub begun: Option<String>,
    pub ended: Option<String>,
    /// The `data` of its events merged, later keys winning.
    pub data: Value,
}

/// An image the journal says is installed, and the operation that did it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct InstalledImage {
    pub pool: String,
    pub driver: String,
    pub image: String,
    pub op: OpId,
}

/// Builds the summary of one operation from its events (in seq order).
pub(crate) fn summarize(op: &OpId, events: &[Event]) -> OperationSummary {
    let begun = events.iter().find(|e| e.kind == EventKind::OperationBegun);
    let ended = events.iter().rev().find(|e| e.kind == EventKind::OperationEnded);
    let data = begun.map(|e| &e.data);
    let text = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let number = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or_default()
    };
    let strings = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    OperationSummary {
        id: op.clone(),
        verb: text("verb"),
        argv: strings("argv"),
        images: strings("images"),
        user: text("user"),
        uid: number("uid"),
        host: text("host"),
        pid: number("pid"),
        started: begun.or(events.first()).map(|e| e.ts.clone()).unwrap_or_default(),
        ended: ended.map(|e| e.ts.clone()),
        outcome: ended
            .and_then(|e| e.data.get("outcome"))
            .and_then(Value::as_str)
            .map(String::from),
        steps: steps(events),
    }
}

fn steps(events: &[Event]) -> Vec<StepSummary> {
    let mut steps: Vec<StepSummary> = Vec::new();
    for event in events {
        let Some(name) = &event.step else { continue };
        let state = match event.kind {
            EventKind::StepBegun => "begun",
            EventKind::StepDone => "done",
            EventKind::StepFailed => "failed",
            EventKind::StepUndone => "undone",
            _ => continue,
        };
        let image = event.data.get("image");
        // The run this event closes: the latest run of the same step (for
        // the same image, when both name one) that is still open, or for an
        // undo, the latest run at all.
        let same = |s: &StepSummary| {
            &s.step == name
                && match (image, s.data.get("image")) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        };
        let run = match event.kind {
            EventKind::StepBegun => None,
            EventKind::StepUndone => steps.iter().rposition(same),
            _ => steps
                .iter()
                .rposition(|s| same(s) && s.state == "begun")
                .or_else(|| steps.iter().rposition(same)),
        };
        match run {
            Some(i) => {
                let s = &mut steps[i];
                s.state = state.to_string();
                s.ended = Some(event.ts.clone());
                merge(&mut s.data, &event.data);
            }
            None => steps.push(StepSummary {
                step: name.clone(),
                state: state.to_string(),
                begun: (event.kind == EventKind::StepBegun).then(|| event.ts.clone()),
                ended: (event.kind != EventKind::StepBegun).then(|| event.ts.clone()),
                data: event.data.clone(),
            }),
        }
    }
    steps
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                into.insert(k.clone(), v.clone());
            }
        }
        (into, from) if !from.is_null() => *into = from.clone(),
        _ => {}
    }
}

/// A change to the installed-image projection that one event makes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InstalledChange {
    Add(InstalledKey),
    Remove(InstalledKey),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InstalledKey {
    pub pool: String,
    pub driver: String,
    pub image: String,
}

impl InstalledKey {
    /// The sled key: `pool NUL driver NUL image`, so keys sort by pool,
    /// then driver, then image.
    pub(crate) fn encode(&self) -> Vec<u8> {
        [self.pool.as_bytes(), self.driver.as_bytes(), self.image.as_bytes()].join(&0u8)
    }

    pub(crate) fn decode(key: &[u8]) -> Option<InstalledKey> {
        let mut parts = key.split(|&b| b == 0).map(|p| String::from_utf8(p.to_vec()).ok());
        let key = InstalledKey {
            pool: parts.next()??,
            driver: parts.next()??,
            image: parts.next()??,
        };
        parts.next().is_none().then_some(key)
    }
}

/// `data.removed` first, then `data.installed`: an event that replaces one
/// image with another says both.
pub(crate) fn installed_changes(event: &Event) -> Vec<InstalledChange> {
    let key = |v: Option<&Value>| {
        let v = v?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        Some(InstalledKey {
            pool: field("pool")?,
            driver: field("driver")?,
            image: field("image")?,
        })
    };
    let mut changes = Vec::new();
    if let Some(k) = key(event.data.get("removed")) {
        changes.push(InstalledChange::Remove(k));
    }
    if let Some(k) = key(event.data.get("installed")) {
        changes.push(InstalledChange::Add(k));
    }
    changes
}
