//! The answer cache: positive answers for their TTL (at most a day),
//! negative ones (NXDOMAIN, NODATA) for their SOA minimum or 30 s (at
//! most 5 minutes, RFC 2308 §5), failures for 5 s (RFC 2308 §7). When a
//! server fails, the last positive answer stands in for up to a day after
//! it expired (serve-stale, RFC 8767).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Answer, Query, Record};

/// Every answer is kept at least this long, so that a TTL of 0 cannot
/// make a lookup ask again for the answer it was just given.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(86_400);
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(300);
const FAILURE_TTL: Duration = Duration::from_secs(5);
/// How long after expiry a positive answer may stand in for a failed one.
const STALE_FOR: Duration = Duration::from_secs(86_400);
/// Entries kept at most; past that, expired ones go first, then all.
const MAX_ENTRIES: usize = 10_000;

/// An answer as the procedure reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    /// Records of the asked type.
    Records(Vec<Record>),
    /// No such record; `nxdomain` if no such name.
    Empty { nxdomain: bool },
    /// The server failed.
    Failed(String),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Instant,
    /// When it is worth asking again before it expires: with a tenth of
    /// its lifetime left (Unbound's `prefetch`), so a name in use never
    /// makes a call wait for the DNS server.
    refresh: Instant,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Cache {
    entries: HashMap<Query, Entry>,
}

impl Cache {
    /// The answer to `query`, if one is cached and fresh at `now`, and
    /// whether it is time to ask again (it is near its expiry).
    pub(super) fn get(&self, now: Instant, query: &Query) -> Option<(Value, bool)> {
        self.entries
            .get(query)
            .filter(|e| e.expires > now)
            .map(|e| (e.value.clone(), e.refresh <= now))
    }

    /// Caches `answer` to `query` and returns it as the procedure reads
    /// it: a failure where an answer expired less than a day ago becomes
    /// that answer again.
    pub(super) fn insert(&mut self, now: Instant, query: Query, answer: Answer) -> Value {
        let (value, ttl) = match answer {
            Answer::Records { records, ttl } => (Value::Records(records), ttl.min(MAX_TTL)),
            Answer::Empty { nxdomain, ttl } => (
                Value::Empty { nxdomain },
                ttl.unwrap_or(NEGATIVE_TTL).min(MAX_NEGATIVE_TTL),
            ),
            Answer::Failed { reason } => {
                if let Some(stale) = self.entries.get_mut(&query)
                    && let Value::Records(_) = stale.value
                    && stale.expires + STALE_FOR > now
                {
                    tracing::warn!(name = %query.name, rtype = ?query.rtype, %reason,
                        "DNS failed; using the last answer, expired");
                    stale.expires = now + FAILURE_TTL;
                    stale.refresh = stale.expires;
                    return stale.value.clone();
                }
                (Value::Failed(reason), FAILURE_TTL)
            }
        };
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, e| e.expires + STALE_FOR > now);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        let ttl = ttl.max(MIN_TTL);
        let refresh = match value {
            Value::Failed(_) => now + ttl,
            _ => now + ttl.mul_f32(0.9),
        };
        self.entries.insert(
            query,
            Entry {
                value: value.clone(),
                expires: now + ttl,
                refresh,
            },
        );
        value
    }

    /// How many entries are kept.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
