//! Prepaid credit of one session, sans-IO: how long its paid legs may run on
//! the credit reserved for it, a warning a minute before the end, and the
//! cut-off. Time is passed in; the session manager arms one timer from
//! [`SessionCredit::poll_timeout`] and calls
//! [`SessionCredit::handle_timeout`] when it fires.
//!
//! Every paid leg of the session draws on one pool (what the store reserved
//! for the session, less what its settled legs cost), so the maximum
//! duration is recomputed whenever a leg is added, answered or dropped, or
//! the pool is topped up. A leg still ringing is counted as if it answered
//! now, so the figure never promises more than the credit covers.

use std::time::{Duration, Instant};

use super::money::Micros;
use super::rating::Rate;

/// The longest a session may be authorised for, whatever its credit.
pub const MAX_AUTHORISATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest useful call: a paid leg is only dialled if the session's
/// credit covers this much more of every paid leg, the new one included.
pub const MINIMUM_CALL: Duration = Duration::from_secs(60);

/// How long before the warning the session asks for more credit.
pub const REPLENISH_LEAD: Duration = Duration::from_secs(60);

/// What the credit clock tells the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditEvent {
    /// The reservation is running low: reserve more (`Billing::replenish`)
    /// and [`SessionCredit::top_up`] with what was granted.
    Replenish,
    /// The credit runs out in about this long; tell the user.
    Warning {
        /// Time left, rounded up to the second.
        secs_left: u32,
    },
    /// The credit is used up: end the session (reason `CreditExhausted`).
    Exhausted,
}

/// Not enough credit to dial a paid leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "insufficient credit: {available} available, {needed} needed for one minute of every paid leg"
)]
pub struct InsufficientCredit {
    /// Credit the session can draw on.
    pub available: Micros,
    /// Credit needed for one more minute of every paid leg, the new one included.
    pub needed: Micros,
}

#[derive(Debug, Clone)]
struct PaidLeg<K> {
    key: K,
    rate: Rate,
    answered: Option<Instant>,
}

/// The credit clock of one session's paid legs.
#[derive(Debug, Clone)]
pub struct SessionCredit<K> {
    pool: Micros,
    legs: Vec<PaidLeg<K>>,
    warning: Duration,
    chunk: Duration,
    warned: bool,
    replenish_asked: bool,
    exhausted: bool,
    cutoff: Option<Instant>,
}

impl<K: PartialEq + Clone> SessionCredit<K> {
    /// A session with `pool` reserved for it, warning `warning` before the
    /// end, reserving credit `chunk` of talk time at a time.
    pub fn new(pool: Micros, warning: Duration, chunk: Duration) -> Self {
        SessionCredit {
            pool,
            legs: Vec::new(),
            warning,
            chunk: chunk.max(MINIMUM_CALL),
            warned: false,
            replenish_asked: false,
            exhausted: false,
            cutoff: None,
        }
    }

    /// Credit the session's legs may still use (reserved, less settled costs).
    pub fn pool(&self) -> Micros {
        self.pool
    }

    /// What the live paid legs have cost so far.
    pub fn spent(&self, now: Instant) -> Micros {
        self.cost_at(now, Duration::ZERO)
    }

    /// Credit needed to dial a leg at `rate`: one more minute of every live
    /// paid leg and of the new one, on top of what they have cost so far.
    pub fn needed_for(&self, now: Instant, rate: Rate) -> Micros {
        self.cost_at(now, MINIMUM_CALL)
            .plus(rate.cost_after(MINIMUM_CALL.as_millis() as u64))
    }

    /// How much more to reserve so the pool covers one chunk of talk time
    /// of every paid leg from `now`, and of a leg at `new_leg` about to be
    /// dialled.
    pub fn wanted(&self, now: Instant, new_leg: Option<Rate>) -> Micros {
        let new = new_leg.map_or(Micros::ZERO, |r| {
            r.cost_after(self.chunk.as_millis() as u64)
        });
        self.cost_at(now, self.chunk)
            .plus(new)
            .minus(self.pool)
            .max(Micros::ZERO)
    }

    /// Adds reserved credit to the pool.
    pub fn top_up(&mut self, now: Instant, amount: Micros) {
        if amount.0 > 0 {
            self.pool = self.pool.plus(amount);
            self.replenish_asked = false;
        }
        self.recompute(now);
    }

    /// Counts a paid leg about to be dialled, if the pool covers the
    /// shortest useful call; returns the session's new maximum duration.
    pub fn add_leg(
        &mut self,
        now: Instant,
        key: K,
        rate: Rate,
    ) -> Result<Duration, InsufficientCredit> {
        let needed = self.needed_for(now, rate);
        if needed > self.pool {
            return Err(InsufficientCredit {
                available: self.pool.minus(self.spent(now)),
                needed: needed.minus(self.spent(now)),
            });
        }
        self.legs.push(PaidLeg {
            key,
            rate,
            answered: None,
        });
        self.recompute(now);
        Ok(self.remaining(now).unwrap_or(MAX_AUTHORISATION))
    }

    /// The leg answered: its time starts counting.
    pub fn answered(&mut self, now: Instant, key: &K) {
        if let Some(leg) = self.legs.iter_mut().find(|l| l.key == *key) {
            leg.answered.get_or_insert(now);
        }
        self.recompute(now);
    }

    /// The leg ended and was settled at `cost`, which comes off the pool.
    pub fn remove_leg(&mut self, now: Instant, key: &K, cost: Micros) {
        let before = self.legs.len();
        self.legs.retain(|l| l.key != *key);
        if self.legs.len() != before {
            self.pool = self.pool.minus(cost);
        }
        self.recompute(now);
    }

    /// Whether the session has paid legs up or ringing.
    pub fn has_paid_legs(&self) -> bool {
        !self.legs.is_empty()
    }

    /// How long the paid legs may still run together; `None` without paid legs.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        if self.legs.is_empty() {
            return None;
        }
        if self.cost_at(now, Duration::ZERO) > self.pool {
            return Some(Duration::ZERO);
        }
        if self.cost_at(now, MAX_AUTHORISATION) <= self.pool {
            return Some(MAX_AUTHORISATION);
        }
        // Largest whole millisecond with cost <= pool; cost is monotone.
        let (mut ok, mut too_far) = (0u64, MAX_AUTHORISATION.as_millis() as u64);
        while too_far - ok > 1 {
            let mid = ok + (too_far - ok) / 2;
            if self.cost_at(now, Duration::from_millis(mid)) <= self.pool {
                ok = mid;
            } else {
                too_far = mid;
            }
        }
        Some(Duration::from_millis(ok))
    }

    /// When the paid legs must be cut off, as last computed.
    pub fn cutoff(&self) -> Option<Instant> {
        self.cutoff
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.exhausted {
            return None;
        }
        let cutoff = self.cutoff?;
        let before = |d: Duration| cutoff.checked_sub(d).unwrap_or(cutoff);
        if !self.replenish_asked {
            return Some(before(self.warning + REPLENISH_LEAD));
        }
        if !self.warned {
            return Some(before(self.warning));
        }
        Some(cutoff)
    }

    /// Advances the clock: a request for more credit when the reservation
    /// runs low, a warning once the end is near, then the cut-off.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<CreditEvent> {
        if self.exhausted {
            return None;
        }
        let remaining = self.remaining(now)?;
        self.recompute(now);
        if remaining.is_zero() {
            self.exhausted = true;
            return Some(CreditEvent::Exhausted);
        }
        if remaining <= self.warning + REPLENISH_LEAD && !self.replenish_asked {
            self.replenish_asked = true;
            return Some(CreditEvent::Replenish);
        }
        if remaining <= self.warning && !self.warned {
            self.warned = true;
            let secs_left = u32::try_from(remaining.as_millis().div_ceil(1000)).unwrap_or(u32::MAX);
            return Some(CreditEvent::Warning { secs_left });
        }
        None
    }

    /// What the live paid legs will have cost `ahead` from `now` (legs still
    /// ringing counted as answering now).
    fn cost_at(&self, now: Instant, ahead: Duration) -> Micros {
        self.legs.iter().fold(Micros::ZERO, |sum, leg| {
            let talked = leg
                .answered
                .map_or(Duration::ZERO, |a| now.saturating_duration_since(a));
            let ms = u64::try_from((talked + ahead).as_millis()).unwrap_or(u64::MAX);
            sum.plus(leg.rate.cost_after(ms))
        })
    }

    fn recompute(&mut self, now: Instant) {
        let remaining = self.remaining(now);
        self.cutoff = remaining.map(|r| now + r);
        if remaining.is_some_and(|r| r > self.warning) {
            self.warned = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARN: Duration = Duration::from_secs(60);
    const CHUNK: Duration = Duration::from_secs(600);

    fn rate(micros_per_minute: i64) -> Rate {
        Rate::per_minute(Micros(micros_per_minute))
    }

    /// Runs the clock until it reports something other than a request to
    /// replenish (which finds no more credit), like a session's timer would.
    fn run_until_event(c: &mut SessionCredit<u8>, now: &mut Instant) -> Option<CreditEvent> {
        for _ in 0..100 {
            let at = c.poll_timeout()?;
            *now = (*now).max(at);
            match c.handle_timeout(*now) {
                Some(CreditEvent::Replenish) => c.top_up(*now, Micros::ZERO),
                Some(e) => return Some(e),
                None => {}
            }
        }
        None
    }

    #[test]
    fn warning_a_minute_before_then_exhausted_on_the_dot() {
        let t0 = Instant::now();
        // 1.00 of credit at 0.10/min: ten minutes.
        let mut c = SessionCredit::new(Micros(1_000_000), WARN, CHUNK);
        let max = c.add_leg(t0, 1, rate(100_000)).expect("enough");
        assert_eq!(max, Duration::from_secs(600));
        c.answered(t0, &1);
        let mut now = t0;
        assert_eq!(
            run_until_event(&mut c, &mut now),
            Some(CreditEvent::Warning { secs_left: 60 })
        );
        assert_eq!(now - t0, Duration::from_secs(540));
        assert_eq!(
            run_until_event(&mut c, &mut now),
            Some(CreditEvent::Exhausted)
        );
        assert_eq!(now - t0, Duration::from_secs(600));
        assert_eq!(
            c.spent(now),
            Micros(1_000_000),
            "cut exactly when the credit is used"
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn second_leg_shortens_and_dropping_it_extends() {
        let t0 = Instant::now();
        let mut c = SessionCredit::new(Micros(1_200_000), WARN, CHUNK);
        c.add_leg(t0, 1, rate(60_000)).expect("source");
        c.answered(t0, &1);
        assert_eq!(c.remaining(t0), Some(Duration::from_secs(1200)));
        let t1 = t0 + Duration::from_secs(600); // 0.60 spent, 0.60 left
        let max = c.add_leg(t1, 2, rate(120_000)).expect("destination");
        // 0.60 left at 0.18/min together = 200 s.
        assert_eq!(max, Duration::from_secs(200));
        c.answered(t1, &2);
        let t2 = t1 + Duration::from_secs(100); // leg 2 cost 0.20, leg 1 now 0.70
        c.remove_leg(t2, &2, Micros(200_000));
        assert_eq!(c.pool(), Micros(1_000_000));
        // 1.00 pool, leg 1 has cost 0.70 → 0.30 left at 0.06/min = 300 s.
        assert_eq!(c.remaining(t2), Some(Duration::from_secs(300)));
        assert_eq!(c.cutoff(), Some(t2 + Duration::from_secs(300)));
    }

    #[test]
    fn too_little_credit_is_refused_with_the_figures() {
        let t0 = Instant::now();
        let mut c = SessionCredit::new(Micros(50_000), WARN, CHUNK);
        let e = c
            .add_leg(t0, 1, rate(60_000))
            .expect_err("one minute costs 0.06");
        assert_eq!(
            e,
            InsufficientCredit {
                available: Micros(50_000),
                needed: Micros(60_000)
            }
        );
        assert!(e.to_string().contains("0.05 available, 0.06 needed"));
        assert!(!c.has_paid_legs());
        // A ringing leg counts as answering now: the second leg needs a
        // minute of both.
        let mut c = SessionCredit::new(Micros(100_000), WARN, CHUNK);
        c.add_leg(t0, 1, rate(60_000)).expect("first");
        assert!(c.add_leg(t0, 2, rate(60_000)).is_err());
    }

    #[test]
    fn ringing_legs_do_not_burn_and_top_up_rearms_the_warning() {
        let t0 = Instant::now();
        let mut c = SessionCredit::new(Micros(120_000), WARN, CHUNK);
        c.add_leg(t0, 1, rate(60_000)).expect("ok");
        // Rings for 30 s: nothing spent, still two minutes once answered.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(
            c.handle_timeout(t1),
            Some(CreditEvent::Replenish),
            "two minutes left"
        );
        c.top_up(t1, Micros::ZERO); // the account has no more
        c.answered(t1, &1);
        let mut now = t1;
        assert_eq!(
            run_until_event(&mut c, &mut now),
            Some(CreditEvent::Warning { secs_left: 60 })
        );
        assert_eq!(now - t1, Duration::from_secs(60));
        c.top_up(now, Micros(600_000)); // ten more minutes
        assert_eq!(
            run_until_event(&mut c, &mut now),
            Some(CreditEvent::Warning { secs_left: 60 })
        );
        assert_eq!(now - t1, Duration::from_secs(660));
    }

    #[test]
    fn replenishing_comes_before_the_warning_and_extends_the_call() {
        let t0 = Instant::now();
        let r = rate(60_000);
        let mut c = SessionCredit::new(Micros::ZERO, WARN, CHUNK);
        // Ten minutes of one leg at 0.06/min.
        assert_eq!(c.wanted(t0, Some(r)), Micros(600_000));
        c.top_up(t0, Micros(600_000));
        c.add_leg(t0, 1, r).expect("ok");
        c.answered(t0, &1);
        assert_eq!(c.wanted(t0, None), Micros::ZERO);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(480)));
        let t480 = t0 + Duration::from_secs(480);
        assert_eq!(c.handle_timeout(t480), Some(CreditEvent::Replenish));
        // Another chunk from here: 8 minutes spent, 18 to cover.
        assert_eq!(c.wanted(t480, None), Micros(480_000));
        c.top_up(t480, Micros(480_000));
        assert_eq!(c.cutoff(), Some(t0 + Duration::from_secs(1080)));
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(960)));
    }

    #[test]
    fn increments_and_connect_fees_are_counted() {
        let t0 = Instant::now();
        let r = Rate {
            price_per_minute: Micros(60_000),
            increment_secs: 60,
            connect_fee: Micros(10_000),
        };
        let mut c = SessionCredit::new(Micros(130_000), WARN, CHUNK);
        c.add_leg(t0, 1, r).expect("fee + one minute = 0.07");
        c.answered(t0, &1);
        // 0.01 fee + two 60 s blocks = 0.13: the second block ends at 120 s.
        assert_eq!(c.remaining(t0), Some(Duration::from_secs(120)));
        assert_eq!(c.spent(t0 + Duration::from_secs(120)), Micros(130_000));
    }
}
