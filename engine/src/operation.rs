//! One operation: the journal record of a verb's run, step by step.
//!
//! An `Operation` holds its operation lock from before its first event until
//! after its last, writes "step begun" before a step's effect and "step done"
//! once the effect is durable, and fires failpoints at those boundaries. A
//! resumed operation is the same object built from the events already in the
//! journal: a step the journal has as done is not run again.

use std::collections::HashMap;

use imgadm_journal::{Event, EventKind, Journal, NewEvent, OpId};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::failpoint::{self, When};
use crate::lock::OpLock;
use crate::state::StateDir;

/// Who ran the command, recorded with every operation.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub argv: Vec<String>,
    pub user: String,
    pub sudo_user: Option<String>,
    pub uid: u32,
    pub pid: u32,
    pub host: String,
}

impl Invocation {
    pub fn current(argv: Vec<String>) -> Invocation {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| uid.to_string());
        Invocation {
            argv,
            user,
            sudo_user: std::env::var("SUDO_USER").ok(),
            uid: uid.as_raw(),
            pid: std::process::id(),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".to_string()),
        }
    }

    fn who(&self) -> Value {
        json!({"pid": self.pid, "host": self.host, "user": self.user, "uid": self.uid})
    }
}

/// Where a step stands in the journal.
#[derive(Clone, Debug, PartialEq)]
pub enum StepState {
    NotStarted,
    Begun { begun: Value },
    Done { begun: Value, done: Value },
    Undone,
}

/// The key of one occurrence of a step: its name and, for per-image steps,
/// the image it works on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StepKey {
    step: String,
    image: Option<String>,
}

impl StepKey {
    fn of(step: &str, data: &Value) -> StepKey {
        StepKey { step: step.to_string(), image: data.get("image").and_then(Value::as_str).map(str::to_string) }
    }
}

pub struct Operation<'a> {
    state: &'a StateDir,
    journal: &'a Journal,
    pub id: OpId,
    pub verb: String,
    images: Vec<String>,
    lock: Option<OpLock>,
    /// "done" events not yet written (they go with the next write).
    pending: Vec<NewEvent>,
    steps: HashMap<StepKey, StepState>,
    /// Step keys in the order they were first begun (for rollback).
    order: Vec<StepKey>,
}

impl<'a> Operation<'a> {
    /// Starts a new operation: takes its lock, then writes "operation
    /// begun". Its first steps, when they are checks without an effect of
    /// their own (`validate`, `lock`, `plan` ...: see `checked`), go in the
    /// same journal write: one journal cycle instead of one per step. Their
    /// failpoints fire in order once that write is durable.
    pub fn begin(
        state: &'a StateDir,
        journal: &'a Journal,
        invocation: &Invocation,
        verb: &str,
        images: &[String],
        checked: Vec<(&str, Value)>,
    ) -> Result<Operation<'a>> {
        let id = Journal::new_op_id();
        let lock = OpLock::try_take(state, &id.to_string())?
            .ok_or_else(|| Error::internal(format!("operation lock of new operation {id} is taken")))?;
        let mut op = Operation {
            state,
            journal,
            id: id.clone(),
            verb: verb.to_string(),
            images: images.to_vec(),
            lock: Some(lock),
            pending: Vec::new(),
            steps: HashMap::new(),
            order: Vec::new(),
        };
        let mut events = vec![(
            EventKind::OperationBegun,
            None,
            json!({
                "verb": verb,
                "argv": invocation.argv,
                "user": invocation.user,
                "sudo_user": invocation.sudo_user,
                "uid": invocation.uid,
                "pid": invocation.pid,
                "host": invocation.host,
                "images": images,
            }),
        )];
        for (step, data) in &checked {
            events.push((EventKind::StepBegun, Some(*step), data.clone()));
            events.push((EventKind::StepDone, Some(*step), data.clone()));
        }
        op.append(events)?;
        for (step, _) in checked {
            failpoint::step_begun(step);
            failpoint::check(step, When::After);
        }
        Ok(op)
    }

    /// Takes over an interrupted operation: its lock (refused at once when a
    /// live process holds it), its recorded steps, and an "operation
    /// resumed" event saying who took it over and why.
    pub fn take_over(
        state: &'a StateDir,
        journal: &'a Journal,
        invocation: &Invocation,
        id: &OpId,
        purpose: &str,
    ) -> Result<Operation<'a>> {
        let events = journal.operation_events(id)?;
        let lock = match OpLock::try_take(state, &id.to_string())? {
            Some(lock) => lock,
            None => {
                let (pid, step) = last_holder(&events);
                return Err(Error::OperationBusy { op: id.to_string(), pid, step });
            }
        };
        if events.iter().any(|e| e.kind == EventKind::OperationEnded) {
            return Err(Error::Usage(format!("operation {id} has already ended: nothing to {purpose}")));
        }
        let begun = events.iter().find(|e| e.kind == EventKind::OperationBegun).map(|e| &e.data);
        let verb = begun.and_then(|d| d.get("verb")).and_then(Value::as_str).unwrap_or("unknown").to_string();
        let images = begun
            .and_then(|d| d.get("images"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let mut op = Operation {
            state,
            journal,
            id: id.clone(),
            verb,
            images,
            lock: Some(lock),
            pending: Vec::new(),
            steps: HashMap::new(),
            order: Vec::new(),
        };
        for event in &events {
            op.apply(event);
        }
        op.wait_for_orphaned_children();
        let mut data = invocation.who();
        data["purpose"] = json!(purpose);
        data["argv"] = json!(invocation.argv);
        op.append(vec![(EventKind::OperationResumed, None, data)])?;
        Ok(op)
    }

    /// A child process started by a step (a `zfs receive`) can outlive the
    /// process that died: probing while it still works would see a half
    /// state. Waits, bounded, for every child recorded in a step begun and
    /// not done, and kills one that outlives the wait. A recorded pid is
    /// not trusted on its own: only a process still running the program
    /// the step starts is killed.
    fn wait_for_orphaned_children(&self) {
        let children: Vec<u32> = self
            .steps
            .values()
            .filter_map(|state| match state {
                StepState::Begun { begun } => begun.get("pid").and_then(Value::as_u64).map(|p| p as u32),
                _ => None,
            })
            .collect();
        for pid in children {
            if !child::wait_gone(pid, ORPHAN_WAIT) && child::runs(pid, crate::pool::zfs::ZFS) {
                tracing::warn!(pid, "killing a child process of an interrupted operation that outlived the wait");
                child::kill(pid);
                child::wait_gone(pid, ORPHAN_WAIT);
            }
        }
    }

    fn apply(&mut self, event: &Event) {
        self.apply_step(event.step.as_deref(), &event.kind, &event.data);
    }

    /// A queued "done" counts for this process at once; only its journal
    /// write waits.
    fn apply_pending(&mut self, event: &NewEvent) {
        self.apply_step(event.step.as_deref(), &event.kind, &event.data);
    }

    fn apply_step(&mut self, step: Option<&str>, kind: &EventKind, data: &Value) {
        let Some(step) = step else { return };
        let key = StepKey::of(step, data);
        let previous = self.steps.get(&key).cloned().unwrap_or(StepState::NotStarted);
        let next = match (kind, previous) {
            (EventKind::StepBegun, _) => StepState::Begun { begun: data.clone() },
            (EventKind::StepDone, StepState::Begun { begun }) => StepState::Done { begun, done: data.clone() },
            (EventKind::StepDone, StepState::Done { begun, .. }) => StepState::Done { begun, done: data.clone() },
            (EventKind::StepDone, _) => StepState::Done { begun: data.clone(), done: data.clone() },
            (EventKind::StepUndone, _) => StepState::Undone,
            (EventKind::StepFailed, prev) => prev,
            (_, prev) => prev,
        };
        if !self.order.contains(&key) {
            self.order.push(key.clone());
        }
        self.steps.insert(key, next);
    }

    /// Writes `events` in one journal write, after any "done" events still
    /// waiting (see `done`).
    fn append(&mut self, events: Vec<(EventKind, Option<&str>, Value)>) -> Result<()> {
        let mut new: Vec<NewEvent> = std::mem::take(&mut self.pending);
        new.extend(
            events
                .into_iter()
                .map(|(kind, step, data)| NewEvent { op: self.id.clone(), kind, step: step.map(str::to_string), data }),
        );
        if new.is_empty() {
            return Ok(());
        }
        let stored = self.journal.append(new)?;
        for event in &stored {
            self.apply(event);
        }
        Ok(())
    }

    /// The images the operation named when it began.
    pub fn images(&self) -> &[String] {
        &self.images
    }

    /// Where `step` (for `image`, if per image) stands.
    pub fn step_state(&self, step: &str, image: Option<&str>) -> StepState {
        let key = StepKey { step: step.to_string(), image: image.map(str::to_string) };
        self.steps.get(&key).cloned().unwrap_or(StepState::NotStarted)
    }

    /// Records that a step begins; durable (with any "done" still waiting)
    /// before its effect starts.
    pub fn begun(&mut self, step: &str, data: Value) -> Result<()> {
        self.append(vec![(EventKind::StepBegun, Some(step), data)])?;
        failpoint::step_begun(step);
        Ok(())
    }

    /// Records that a step's effect is durable. The event is written with
    /// the operation's next journal write (the next step's "begun", or the
    /// end), so a run costs a handful of journal opens instead of two per
    /// step. Losing it to a crash is safe: a step begun and not done is
    /// probed on resume, and every step's effect can be probed.
    pub fn done(&mut self, step: &str, data: Value) -> Result<()> {
        failpoint::check(step, When::After);
        let event = NewEvent { op: self.id.clone(), kind: EventKind::StepDone, step: Some(step.to_string()), data };
        self.apply_pending(&event);
        self.pending.push(event);
        Ok(())
    }

    /// Records several steps' "done" (stages of one pipeline that finish
    /// together). Failpoints fire in order first.
    pub fn done_together(&mut self, steps: Vec<(&str, Value)>) -> Result<()> {
        for (step, data) in steps {
            self.done(step, data)?;
        }
        Ok(())
    }

    /// A step with no effect of its own (a check, a lookup): begun and done
    /// in one journal write.
    pub fn checked(&mut self, step: &str, data: Value) -> Result<()> {
        self.append(vec![
            (EventKind::StepBegun, Some(step), data.clone()),
            (EventKind::StepDone, Some(step), data),
        ])?;
        failpoint::step_begun(step);
        failpoint::check(step, When::After);
        Ok(())
    }

    pub fn failed(&mut self, step: &str, image: Option<&str>, error: &Error) -> Result<()> {
        let mut data = json!({"code": error.code(), "message": error.to_string()});
        if let Some(image) = image {
            data["image"] = json!(image);
        }
        self.append(vec![(EventKind::StepFailed, Some(step), data)])
    }

    pub fn undone(&mut self, step: &str, data: Value) -> Result<()> {
        self.append(vec![(EventKind::StepUndone, Some(step), data)])
    }

    /// The step most recently begun (where a failure is recorded).
    pub fn current_step(&self) -> Option<(String, Option<String>)> {
        self.order.last().map(|k| (k.step.clone(), k.image.clone()))
    }

    /// Records a failure at the current step, undoes every step begun (bad
    /// input leaves nothing behind), and ends the operation as failed.
    /// Returns the original error; a failure of the cleanup is added to it.
    pub fn fail_and_roll_back(self, cx: &crate::context::Context, error: Error) -> Error {
        self.fail_and_roll_back_keeping(cx, error, &[])
    }

    /// `fail_and_roll_back`, but the steps named in `keep` stay as they are.
    pub fn fail_and_roll_back_keeping(self, cx: &crate::context::Context, error: Error, keep: &[&str]) -> Error {
        let (error, mut cleanup) = self.fail_and_roll_back_apart(cx, error, keep);
        if cleanup.is_empty() {
            error
        } else {
            cleanup.insert(0, error);
            Error::Multi(cleanup)
        }
    }

    /// `fail_and_roll_back_keeping`, with the failures of the cleanup kept
    /// apart from the original error (publish reports them as warnings).
    pub fn fail_and_roll_back_apart(mut self, cx: &crate::context::Context, error: Error, keep: &[&str]) -> (Error, Vec<Error>) {
        let (step, image) = self.current_step().unwrap_or_else(|| ("start".to_string(), None));
        let mut errors = vec![];
        if let Err(e) = self.failed(&step, image.as_deref(), &error) {
            errors.push(e);
        }
        if let Err(e) = crate::steps::roll_back_keeping(&mut self, cx, keep) {
            errors.push(e);
        }
        if let Err(e) = self.end(Outcome::Failed, Some(&error)) {
            errors.push(e);
        }
        (error, errors)
    }

    /// Steps begun or done and not yet undone, latest first: what a rollback
    /// has to consider.
    pub fn steps_to_undo(&self) -> Vec<(String, StepState)> {
        self.order
            .iter()
            .rev()
            .filter_map(|key| match self.steps.get(key) {
                Some(state @ (StepState::Begun { .. } | StepState::Done { .. })) => {
                    Some((key.step.clone(), state.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Writes "operation ended" and releases the operation lock.
    pub fn end(mut self, outcome: Outcome, error: Option<&Error>) -> Result<()> {
        let mut data = json!({"outcome": outcome.as_str()});
        if let Some(e) = error {
            data["code"] = json!(e.code());
            data["message"] = json!(e.to_string());
        }
        self.append(vec![(EventKind::OperationEnded, None, data)])?;
        if let Some(lock) = self.lock.take() {
            lock.release_and_remove();
        }
        Ok(())
    }

    pub fn state_dir(&self) -> &StateDir {
        self.state
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    RolledBack,
    Abandoned,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// The pid and step of the process that last worked on an operation, for
/// the "held by" message.
fn last_holder(events: &[Event]) -> (u32, String) {
    let pid = events
        .iter()
        .rev()
        .find_map(|e| match e.kind {
            EventKind::OperationBegun | EventKind::OperationResumed => {
                e.data.get("pid").and_then(Value::as_u64).map(|p| p as u32)
            }
            _ => None,
        })
        .unwrap_or(0);
    let step = events.iter().rev().find_map(|e| e.step.clone()).unwrap_or_else(|| "start".to_string());
    (pid, step)
}

/// How long resume and rollback wait for a dead operation's child process.
const ORPHAN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Child processes of a dead operation, by pid.
mod child {
    use std::time::{Duration, Instant};

    use nix::sys::signal::{kill as send, Signal};
    use nix::unistd::Pid;

    /// Whether `pid` is gone (or a zombie nobody reaps: it does nothing).
    fn gone(pid: u32) -> bool {
        let Ok(raw) = i32::try_from(pid) else { return true };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) {
                return true;
            }
        }
        send(Pid::from_raw(raw), None).is_err()
    }

    /// Polls until `pid` is gone; false if it still runs after `limit`.
    pub fn wait_gone(pid: u32, limit: Duration) -> bool {
        let start = Instant::now();
        while !gone(pid) {
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Whether `pid` runs `program` (where /proc says so; elsewhere no
    /// process is assumed to be ours).
    pub fn runs(pid: u32, program: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == program)
    }

    pub fn kill(pid: u32) {
        if let Ok(raw) = i32::try_from(pid) {
            let _ = send(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
}
