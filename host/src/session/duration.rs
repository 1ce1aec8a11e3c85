//! The maximum call length (`[sessions] max_call_secs`), sans-IO like the
//! credit clock: started when the source answers, it warns the owner a
//! minute before (the way a credit warning is given) and then ends the
//! session. Time comes in as `now`; nothing here reads a clock.

use std::time::{Duration, Instant};

/// How long before the end the owner is warned.
pub const WARNING: Duration = Duration::from_secs(60);

/// What the limit says at a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitEvent {
    /// The call ends in about this many seconds.
    Warning {
        /// Seconds left.
        secs_left: u32,
    },
    /// The call reached its maximum length.
    Reached,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not started: the source has not answered.
    Idle,
    /// Counting; the warning is still to come (at `warn`).
    Running { ends: Instant, warn: Instant },
    /// Counting; the owner was warned.
    Warned { ends: Instant },
    /// Reached (or never, once the session is over).
    Done,
}

/// One session's maximum length.
#[derive(Debug, Clone)]
pub struct CallLimit {
    max: Duration,
    state: State,
}

impl CallLimit {
    /// A limit of `max`, not running yet.
    pub fn new(max: Duration) -> CallLimit {
        CallLimit {
            max,
            state: State::Idle,
        }
    }

    /// The call started (its source answered) at `now`. A second start
    /// changes nothing.
    pub fn start(&mut self, now: Instant) {
        if self.state == State::Idle {
            let ends = now + self.max;
            self.state = State::Running {
                ends,
                warn: ends.checked_sub(WARNING).unwrap_or(now).max(now),
            };
        }
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Running { warn, .. } => Some(warn),
            State::Warned { ends } => Some(ends),
            State::Idle | State::Done => None,
        }
    }

    /// What is due at `now`, if anything.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<LimitEvent> {
        match self.state {
            State::Running { ends, .. } | State::Warned { ends } if now >= ends => {
                self.state = State::Done;
                Some(LimitEvent::Reached)
            }
            State::Running { ends, warn } if now >= warn => {
                self.state = State::Warned { ends };
                let left = ends.saturating_duration_since(now);
                Some(LimitEvent::Warning {
                    secs_left: u32::try_from(left.as_secs_f64().round() as u64).unwrap_or(u32::MAX),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_a_minute_before_then_ends() {
        let t0 = Instant::now();
        let mut limit = CallLimit::new(Duration::from_secs(4 * 3600));
        assert_eq!(limit.poll_timeout(), None, "not before the source answers");
        limit.start(t0 + Duration::from_secs(10));
        limit.start(t0 + Duration::from_secs(20));
        let ends = t0 + Duration::from_secs(10 + 4 * 3600);
        let warn_at = limit.poll_timeout().expect("running");
        assert_eq!(warn_at, ends - WARNING);
        assert_eq!(limit.handle_timeout(warn_at - Duration::from_secs(1)), None);
        assert_eq!(
            limit.handle_timeout(warn_at),
            Some(LimitEvent::Warning { secs_left: 60 })
        );
        assert_eq!(limit.poll_timeout(), Some(ends));
        assert_eq!(limit.handle_timeout(ends - Duration::from_millis(1)), None);
        assert_eq!(limit.handle_timeout(ends), Some(LimitEvent::Reached));
        assert_eq!(limit.poll_timeout(), None);
        assert_eq!(limit.handle_timeout(ends + WARNING), None);
    }

    #[test]
    fn a_late_timer_or_a_short_limit_still_ends_it() {
        let t0 = Instant::now();
        let mut limit = CallLimit::new(Duration::from_secs(30));
        limit.start(t0);
        assert_eq!(limit.poll_timeout(), Some(t0));
        assert_eq!(
            limit.handle_timeout(t0),
            Some(LimitEvent::Warning { secs_left: 30 })
        );
        // A timer that fires long after the end: reached, once.
        assert_eq!(
            limit.handle_timeout(t0 + Duration::from_secs(90)),
            Some(LimitEvent::Reached)
        );
        assert_eq!(limit.handle_timeout(t0 + Duration::from_secs(91)), None);
    }
}
