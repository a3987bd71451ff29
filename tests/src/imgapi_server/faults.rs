//! The fault switches: what each one does to the next responses. They are
//! set from the test thread while the server runs and read by the request
//! handlers, so each is plain data behind the server's lock.

use axum::http::StatusCode;

#[derive(Default)]
pub(super) struct Faults {
    pub cut: Option<BodyFault>,
    pub stall: Option<BodyFault>,
    /// Absolute offset in the file of the byte to flip on every download.
    pub corrupt_offset: Option<u64>,
    pub fail_requests: Option<InjectedFailure>,
    pub fail_file_requests: Option<InjectedFailure>,
    /// File uploads are not read (nor answered) until stalls are released.
    pub stall_uploads: bool,
}

/// "After `after_bytes` body bytes of a file response, do X", for every
/// file response or only for the next `remaining` ones.
#[derive(Clone, Copy)]
pub(super) struct BodyFault {
    pub after_bytes: u64,
    pub remaining: Option<u32>,
}

#[derive(Clone, Copy)]
pub(super) struct InjectedFailure {
    pub remaining: u32,
    pub status: StatusCode,
}

/// The body faults one file response was started with; taking them counts
/// down the "next n responses" switches.
pub(super) struct ResponseFaults {
    pub cut_after: Option<u64>,
    pub stall_after: Option<u64>,
    pub corrupt_offset: Option<u64>,
}

impl Faults {
    pub fn take_for_file_response(&mut self) -> ResponseFaults {
        ResponseFaults {
            cut_after: take_body_fault(&mut self.cut),
            stall_after: take_body_fault(&mut self.stall),
            corrupt_offset: self.corrupt_offset,
        }
    }

    /// The status to answer instead of serving this request, if a
    /// `fail_next` switch still has failures left.
    pub fn take_failure(&mut self, is_file_request: bool) -> Option<StatusCode> {
        take_failure(&mut self.fail_requests).or_else(|| {
            if is_file_request {
                take_failure(&mut self.fail_file_requests)
            } else {
                None
            }
        })
    }
}

fn take_body_fault(slot: &mut Option<BodyFault>) -> Option<u64> {
    let fault = (*slot)?;
    match fault.remaining {
        None => {}
        Some(0 | 1) => *slot = None,
        Some(n) => {
            *slot = Some(BodyFault {
                remaining: Some(n - 1),
                ..fault
            })
        }
    }
    Some(fault.after_bytes)
}

fn take_failure(slot: &mut Option<InjectedFailure>) -> Option<StatusCode> {
    let failure = (*slot)?;
    if failure.remaining <= 1 {
        *slot = None;
    } else {
        *slot = Some(InjectedFailure {
            remaining: failure.remaining - 1,
            ..failure
        });
    }
    (failure.remaining > 0).then_some(failure.status)
}
