//! Failpoints for crash tests: `IMGADM_FAILPOINT=STEP:WHEN[:N]` makes the
//! process SIGKILL itself at that point of the Nth occurrence of STEP in the
//! operation, as a power cut or `kill -9` would (no destructors, no
//! cleanup). WHEN is `before` (the step's "begun" event is durable, its
//! effect has not happened), `after` (its effect happened, its "done" event
//! is not written) or `during` (half of the step's bytes have moved; for the
//! steps that move data). Unset, it costs one environment read per process.
//!
//! `IMGADM_FAILPOINT_FRACTION=F` (test-only, read alongside) moves where a
//! `during` failpoint of a step with a known size fires: once that fraction
//! of its bytes have moved (0 < F <= 1, default 0.5), so a test can
//! interrupt a download at 90%. The steps whose size is not known in
//! advance (`send`, `compress`) fire after their first bytes whatever F is;
//! `prepare` fires once the VM has been booted with the script.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Before,
    After,
    During,
}

#[derive(Debug, PartialEq, Eq)]
struct Failpoint {
    step: String,
    when: When,
    occurrence: u32,
}

fn parse(spec: &str) -> Option<Failpoint> {
    let mut parts = spec.split(':');
    let step = parts.next()?.to_string();
    let when = match parts.next()? {
        "before" => When::Before,
        "after" => When::After,
        "during" => When::During,
        _ => return None,
    };
    let occurrence = match parts.next() {
        Some(n) => n.parse().ok().filter(|n| *n >= 1)?,
        None => 1,
    };
    if parts.next().is_some() || step.is_empty() {
        return None;
    }
    Some(Failpoint { step, when, occurrence })
}

fn configured() -> Option<&'static Failpoint> {
    static FAILPOINT: OnceLock<Option<Failpoint>> = OnceLock::new();
    FAILPOINT
        .get_or_init(|| {
            let spec = std::env::var("IMGADM_FAILPOINT").ok()?;
            let parsed = parse(&spec);
            if parsed.is_none() {
                tracing::warn!(spec, "ignoring malformed IMGADM_FAILPOINT (want STEP:before|after|during[:N])");
            }
            parsed
        })
        .as_ref()
}

/// Counts occurrences of each step's `before` (the start of an occurrence).
fn occurrences() -> &'static Mutex<HashMap<String, u32>> {
    static COUNTS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    COUNTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Marks the start of an occurrence of `step` and fires a `before` failpoint.
pub fn step_begun(step: &str) {
    let Some(fp) = configured() else { return };
    let n = {
        let mut counts = occurrences().lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(step.to_string()).or_insert(0);
        *n += 1;
        *n
    };
    if fp.step == step && fp.occurrence == n && fp.when == When::Before {
        fire(fp);
    }
}

/// Fires an `after` or `during` failpoint for the current occurrence of `step`.
pub fn check(step: &str, when: When) {
    let Some(fp) = configured() else { return };
    if fp.step != step || fp.when != when {
        return;
    }
    let n = occurrences().lock().unwrap_or_else(|p| p.into_inner()).get(step).copied().unwrap_or(0);
    if n == fp.occurrence {
        fire(fp);
    }
}

/// Where a `during` failpoint armed for `step` fires in a transfer of
/// `total` bytes (`None` when none is armed): data-moving steps count bytes
/// and call `check` once they reach it.
pub fn during_at(step: &str, total: u64) -> Option<u64> {
    configured().filter(|fp| fp.step == step && fp.when == When::During)?;
    Some((total as f64 * during_fraction()) as u64)
}

const DEFAULT_FRACTION: f64 = 0.5;

fn during_fraction() -> f64 {
    static FRACTION: OnceLock<f64> = OnceLock::new();
    *FRACTION.get_or_init(|| {
        let Ok(text) = std::env::var("IMGADM_FAILPOINT_FRACTION") else { return DEFAULT_FRACTION };
        parse_fraction(&text).unwrap_or_else(|| {
            tracing::warn!(text, "ignoring malformed IMGADM_FAILPOINT_FRACTION (want 0 < F <= 1)");
            DEFAULT_FRACTION
        })
    })
}

fn parse_fraction(text: &str) -> Option<f64> {
    text.parse().ok().filter(|f: &f64| *f > 0.0 && *f <= 1.0)
}

fn fire(fp: &Failpoint) -> ! {
    eprintln!("imgadm: failpoint {}:{:?}:{} hit, killing myself", fp.step, fp.when, fp.occurrence);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; this is never reached.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(parse("recv:after"), Some(Failpoint { step: "recv".into(), when: When::After, occurrence: 1 }));
        assert_eq!(parse("fetch:during:2"), Some(Failpoint { step: "fetch".into(), when: When::During, occurrence: 2 }));
        assert_eq!(parse("fetch:sometime"), None);
        assert_eq!(parse("fetch:before:0"), None);
        assert_eq!(parse(":before"), None);
        assert_eq!(parse("recv:after:1:x"), None);
    }

    #[test]
    fn fractions_parse() {
        assert_eq!(parse_fraction("0.9"), Some(0.9));
        assert_eq!(parse_fraction("1"), Some(1.0));
        assert_eq!(parse_fraction("0"), None);
        assert_eq!(parse_fraction("1.5"), None);
        assert_eq!(parse_fraction("most"), None);
    }
}
