//! Reading a placed call's events in tests that drive `SipService`
//! directly (`tests/sip_trunk.rs`, `tests/sip_dns.rs`).
#![allow(dead_code)]

use std::time::Duration;

use switchboard::sip::{CallEvent, PlacedCall};

/// The call's events up to its final one (`Failed`, `Ended`, or
/// `Answered` when `answered_is_final`); panics with `context()` when none
/// comes `within`.
pub async fn until_final(
    call: &mut PlacedCall,
    answered_is_final: bool,
    within: Duration,
    context: impl Fn() -> String,
) -> Vec<CallEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, call.events.recv()).await {
            Ok(Some(e)) => {
                let done = matches!(e, CallEvent::Failed { .. } | CallEvent::Ended { .. })
                    || (answered_is_final && matches!(e, CallEvent::Answered { .. }));
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(None) => return seen,
            Err(_) => panic!(
                "no final event within {within:?}; so far: {seen:?}\n{}",
                context()
            ),
        }
    }
}
