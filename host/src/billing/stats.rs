//! Provider statistics for routing: attempts, answered, ASR, ACD and
//! post-dial delay over a sliding window, read on every routing call.
//!
//! Each provider keeps its attempts in a queue with running sums, so a read
//! drops what left the window and divides; it never scans the window. Time
//! is passed in (Unix milliseconds, as stored with each attempt), so the
//! window is tested on a virtual clock and warmed from the database at start.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How much history a figure is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsWindow {
    /// Attempts older than this many seconds leave the window (0 = no age limit).
    pub secs: u64,
    /// At most this many of the latest attempts are kept (0 = no count limit).
    pub attempts: u32,
    /// A figure is reported only once this many samples back it.
    pub min_samples: u32,
}

impl Default for StatsWindow {
    fn default() -> Self {
        StatsWindow {
            secs: 3600,
            attempts: 500,
            min_samples: 10,
        }
    }
}

/// The outcome of one attempt to reach a leg through a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// When the attempt started (Unix milliseconds).
    pub at_ms: i64,
    /// Whether the callee answered.
    pub answered: bool,
    /// Seconds talked, for answered attempts.
    pub talk_secs: u32,
    /// INVITE to first ringing (or answer), when the call got that far.
    pub pdd_ms: Option<u32>,
}

/// A provider's figures over the window, as the router sees them. Figures
/// are `None` until enough samples back them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// Attempts in the window.
    pub attempts: u32,
    /// Of which answered.
    pub answered: u32,
    /// Answer-seizure ratio in basis points (10000 = all answered).
    pub asr_bp: Option<u32>,
    /// Average talk time of answered attempts, in seconds.
    pub acd_secs: Option<u32>,
    /// Average post-dial delay, in milliseconds.
    pub pdd_ms: Option<u32>,
}

#[derive(Debug, Default)]
struct Window {
    attempts: VecDeque<AttemptOutcome>,
    answered: u64,
    talk_secs: u64,
    pdd_count: u64,
    pdd_sum: u64,
}

impl Window {
    fn push(&mut self, a: AttemptOutcome) {
        self.answered += u64::from(a.answered);
        self.talk_secs += u64::from(if a.answered { a.talk_secs } else { 0 });
        if let Some(p) = a.pdd_ms {
            self.pdd_count += 1;
            self.pdd_sum += u64::from(p);
        }
        // Attempts arrive roughly in order; keep the queue sorted so the
        // oldest is always at the front.
        let at = self.attempts.partition_point(|x| x.at_ms <= a.at_ms);
        self.attempts.insert(at, a);
    }

    fn pop_front(&mut self) {
        let Some(a) = self.attempts.pop_front() else {
            return;
        };
        self.answered -= u64::from(a.answered);
        self.talk_secs -= u64::from(if a.answered { a.talk_secs } else { 0 });
        if let Some(p) = a.pdd_ms {
            self.pdd_count -= 1;
            self.pdd_sum -= u64::from(p);
        }
    }

    fn trim(&mut self, w: &StatsWindow, now_ms: i64) {
        if w.attempts > 0 {
            while self.attempts.len() > w.attempts as usize {
                self.pop_front();
            }
        }
        if w.secs > 0 {
            let oldest = now_ms
                .saturating_sub(i64::try_from(w.secs.saturating_mul(1000)).unwrap_or(i64::MAX));
            while self.attempts.front().is_some_and(|a| a.at_ms < oldest) {
                self.pop_front();
            }
        }
    }

    fn stats(&self, min: u64) -> ProviderStats {
        let n = self.attempts.len() as u64;
        let ratio = |num: u64, den: u64| {
            (den >= min.max(1)).then(|| u32::try_from(num / den).unwrap_or(u32::MAX))
        };
        ProviderStats {
            attempts: u32::try_from(n).unwrap_or(u32::MAX),
            answered: u32::try_from(self.answered).unwrap_or(u32::MAX),
            asr_bp: ratio(self.answered * 10_000, n),
            acd_secs: ratio(self.talk_secs, self.answered),
            pdd_ms: ratio(self.pdd_sum, self.pdd_count),
        }
    }
}

/// Every provider's sliding window, shared by the tasks that route and
/// settle calls.
#[derive(Debug, Default)]
pub struct StatsBook {
    window: StatsWindow,
    providers: Mutex<HashMap<String, Window>>,
}

impl StatsBook {
    /// An empty book with this window.
    pub fn new(window: StatsWindow) -> Self {
        StatsBook {
            window,
            providers: Mutex::new(HashMap::new()),
        }
    }

    /// The window figures are computed over.
    pub fn window(&self) -> StatsWindow {
        self.window
    }

    /// Counts one attempt through `provider`.
    pub fn record(&self, provider: &str, attempt: AttemptOutcome) {
        let mut providers = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        let w = match providers.get_mut(provider) {
            Some(w) => w,
            None => providers.entry(provider.to_string()).or_default(),
        };
        w.push(attempt);
        w.trim(&self.window, attempt.at_ms);
    }

    /// The provider's figures at `now_ms` (all zero for one never tried).
    pub fn stats(&self, provider: &str, now_ms: i64) -> ProviderStats {
        let mut providers = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = providers.get_mut(provider) else {
            return ProviderStats::default();
        };
        w.trim(&self.window, now_ms);
        w.stats(u64::from(self.window.min_samples))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(at_s: i64, answered: bool, talk: u32, pdd: Option<u32>) -> AttemptOutcome {
        AttemptOutcome {
            at_ms: at_s * 1000,
            answered,
            talk_secs: talk,
            pdd_ms: pdd,
        }
    }

    #[test]
    fn figures_need_the_minimum_sample() {
        let book = StatsBook::new(StatsWindow {
            secs: 0,
            attempts: 0,
            min_samples: 4,
        });
        for i in 0..3 {
            book.record("P", attempt(i, true, 60, Some(2000)));
        }
        let s = book.stats("P", 10_000);
        assert_eq!(
            (s.attempts, s.answered, s.asr_bp, s.acd_secs, s.pdd_ms),
            (3, 3, None, None, None)
        );
        book.record("P", attempt(3, false, 0, None));
        let s = book.stats("P", 10_000);
        assert_eq!(s.asr_bp, Some(7_500));
        assert_eq!(s.acd_secs, None, "only 3 answered");
        book.record("P", attempt(4, true, 120, Some(4000)));
        let s = book.stats("P", 10_000);
        assert_eq!(
            (s.asr_bp, s.acd_secs, s.pdd_ms),
            (Some(8_000), Some(75), Some(2_500))
        );
        assert_eq!(book.stats("NEVER", 0), ProviderStats::default());
    }

    #[test]
    fn window_slides_by_age_and_by_count() {
        let by_age = StatsBook::new(StatsWindow {
            secs: 60,
            attempts: 0,
            min_samples: 1,
        });
        by_age.record("P", attempt(0, false, 0, None));
        by_age.record("P", attempt(30, true, 10, Some(100)));
        by_age.record("P", attempt(50, true, 30, Some(300)));
        assert_eq!(by_age.stats("P", 59_000).asr_bp, Some(6_666));
        let later = by_age.stats("P", 61_000);
        assert_eq!(
            (later.attempts, later.asr_bp, later.acd_secs),
            (2, Some(10_000), Some(20))
        );
        assert_eq!(by_age.stats("P", 200_000).attempts, 0);

        let by_count = StatsBook::new(StatsWindow {
            secs: 0,
            attempts: 2,
            min_samples: 1,
        });
        for (i, answered) in [true, false, false].into_iter().enumerate() {
            by_count.record("P", attempt(i as i64, answered, 5, None));
        }
        let s = by_count.stats("P", 0);
        assert_eq!((s.attempts, s.answered, s.asr_bp), (2, 0, Some(0)));
    }

    #[test]
    fn late_records_stay_in_time_order() {
        let book = StatsBook::new(StatsWindow {
            secs: 10,
            attempts: 0,
            min_samples: 1,
        });
        book.record("P", attempt(100, true, 1, None));
        book.record("P", attempt(95, false, 0, None)); // settled later, started earlier
        assert_eq!(book.stats("P", 104_000).attempts, 2);
        assert_eq!(
            book.stats("P", 106_000).attempts,
            1,
            "the 95 s attempt left first"
        );
    }
}
