//! Failpoints for crash tests: `IMGADM_FAILPOINT=STEP:WHEN[:N]` makes the
//! process SIGKILL itself at that point of the Nth occurrence of STEP in the
//! operation, as a power cut or `kill -9` would (no destructors, no
//! cleanup). WHEN is `before` (the step's "begun" event is durable, its
//! effect has not happened), `after` (its effect happened, its "done" event
//! is not written) or `during` (half of the step's bytes have moved; for the
//! steps that move data). Unset, it costs one environment read per process.

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

/// Whether a `during` failpoint is armed for the current occurrence of
/// `step`: data-moving steps then count bytes and call `check` at half way.
pub fn during_armed(step: &str) -> bool {
    configured().is_some_and(|fp| fp.step == step && fp.when == When::During)
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
}
