//! The endpoint's timer table: every deadline it keeps, typed by what it is
//! for (quinn-proto's `connection/timer.rs` is the model). Setting a timer
//! replaces its previous deadline and stopping it forgets it, so a timer
//! never fires for a deadline that no longer holds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::transactions::{ClientKey, ServerKey};
use super::types::CallId;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Timer {
    /// A client transaction's next retransmission or timeout (RFC 3261
    /// §17.1: timers A, B, D, E, F, K).
    Client(ClientKey),
    /// A server transaction's (§17.2: timers G, H, I, J).
    Server(ServerKey),
    /// The caller's ring timeout: cancel an unanswered call.
    Ring(CallId),
    /// 64·T1 after we decided to cancel with no final answer to the
    /// INVITE: give the call up (§9.1).
    CancelGiveUp(CallId),
    /// Retransmit our 2xx to a re-INVITE until its ACK, or give up
    /// (§13.3.1.4).
    Answer2xx(CallId),
    /// No answer at all to the INVITE from this target while another is
    /// left: try the next (RFC 3263 §4.3, `[sip] failover_secs`).
    Failover(CallId),
    /// Our turn to refresh the session (RFC 4028).
    SessionRefresh(CallId),
    /// The session expires without a refresh: BYE (RFC 4028 §10).
    SessionExpiry(CallId),
    /// The next OPTIONS ping to a provider (its index in the configuration).
    Ping(usize),
    /// A provider's next REGISTER: the first, a refresh, or a retry.
    Register(usize),
}

/// The deadlines, soonest first.
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    next_seq: u64,
    /// Each armed timer's entry in `queue`.
    live: HashMap<Timer, u64>,
    /// The timer behind each live entry of `queue`.
    armed: HashMap<u64, Timer>,
    /// Deadlines with their entry; entries of replaced or stopped timers
    /// are dropped as they reach the top.
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl TimerTable {
    /// Arms `timer` for `at`, replacing its previous deadline.
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(old) = self.live.insert(timer.clone(), seq) {
            self.armed.remove(&old);
        }
        self.armed.insert(seq, timer);
        self.queue.push(Reverse((at, seq)));
        self.prune();
    }

    /// Disarms `timer`, if it is armed.
    pub(super) fn stop(&mut self, timer: &Timer) {
        if let Some(seq) = self.live.remove(timer) {
            self.armed.remove(&seq);
        }
        self.prune();
    }

    /// The soonest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// The soonest timer due at `now`, disarmed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let Reverse((at, seq)) = *self.queue.peek()?;
        if at > now {
            return None;
        }
        self.queue.pop();
        let timer = self.armed.remove(&seq)?;
        self.live.remove(&timer);
        self.prune();
        Some(timer)
    }

    /// Drops replaced and stopped entries from the top of the queue, so
    /// [`TimerTable::next`] is always a live deadline.
    fn prune(&mut self) {
        while let Some(Reverse((_, seq))) = self.queue.peek() {
            if self.armed.contains_key(seq) {
                break;
            }
            self.queue.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_timer_fires_once_at_its_latest_deadline() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::Ring(CallId(1)), t0 + Duration::from_secs(5));
        table.set(Timer::Ping(0), t0 + Duration::from_secs(3));
        table.set(Timer::Ring(CallId(1)), t0 + Duration::from_secs(1));
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(table.pop_due(t0), None);
        assert_eq!(
            table.pop_due(t0 + Duration::from_secs(10)),
            Some(Timer::Ring(CallId(1)))
        );
        assert_eq!(
            table.pop_due(t0 + Duration::from_secs(10)),
            Some(Timer::Ping(0))
        );
        // The replaced 5 s deadline of the ring timer is gone.
        assert_eq!(table.pop_due(t0 + Duration::from_secs(10)), None);
        assert_eq!(table.next(), None);
    }

    #[test]
    fn a_stopped_timer_never_fires() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::CancelGiveUp(CallId(2)), t0);
        table.set(Timer::Ping(1), t0 + Duration::from_secs(2));
        table.stop(&Timer::CancelGiveUp(CallId(2)));
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(table.pop_due(t0 + Duration::from_secs(1)), None);
        table.stop(&Timer::Ping(7)); // not armed: nothing happens
        assert_eq!(
            table.pop_due(t0 + Duration::from_secs(2)),
            Some(Timer::Ping(1))
        );
    }
}
