//! Locating a SIP server by its DNS name (RFC 3263 §4 over RFC 2782 SRV
//! and RFC 3403 NAPTR records), sans-IO.
//!
//! [`Locator`] never touches the network. Given a host, an optional port
//! and an optional transport, it decides which DNS records it needs and
//! hands them out as [`Query`]s ([`Locator::poll_query`]); the owner asks a
//! DNS server and feeds each [`Answer`] back ([`Locator::answer`]). When a
//! lookup has what it needs, [`Locator::poll_done`] gives its ordered
//! [`Target`]s: the addresses to try in turn (RFC 3263 §4.3).
//!
//! The procedure, decided afresh from the answers at each step:
//! - a port given: A/AAAA of the host, with the given transport or UDP;
//! - a transport given: SRV `_sip._udp`/`_sip._tcp` of the host, else
//!   A/AAAA at port 5060;
//! - neither: NAPTR of the host, the supported services (`SIP+D2U`,
//!   `SIP+D2T`) by order and preference, each to its SRV name; without a
//!   usable NAPTR, SRV for each transport we listen on (UDP first); without
//!   SRV, A/AAAA over UDP at 5060.
//!
//! SRV targets are ordered by priority, and by weight within a priority
//! (RFC 2782's weighted random pick, from a seeded generator). Answers are
//! cached for their TTL ([`cache`]); a name that does not exist, or has no
//! such record, for its negative TTL (RFC 2308). When a server fails to
//! answer, an expired answer is used for up to a day (RFC 8767).
//!
//! [`system`] answers the queries with hickory-resolver.

mod cache;
mod procedure;
mod srv;
pub mod system;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::message::Transport;
use cache::Cache;
use procedure::{Eval, Memo, Weighted};

/// The kinds of DNS record the procedure asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// Naming authority pointer (RFC 3403): which transports a domain offers.
    Naptr,
    /// Service location (RFC 2782): hosts and ports of a service.
    Srv,
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
}

/// One DNS question: a name (lower case, without the final dot) and a type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Query {
    /// The name asked about.
    pub name: String,
    /// The record type asked for.
    pub rtype: RecordType,
}

/// One record of an answer, of the types the procedure uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A NAPTR record.
    Naptr {
        /// Lower first.
        order: u16,
        /// Lower first, within an order.
        preference: u16,
        /// `s` for a record that leads to SRV.
        flags: String,
        /// `SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, ….
        service: String,
        /// The SRV name it leads to.
        replacement: String,
    },
    /// An SRV record.
    Srv {
        /// Lower first.
        priority: u16,
        /// Share of the load within a priority.
        weight: u16,
        /// The port.
        port: u16,
        /// The host; `.` means the service is not offered.
        target: String,
    },
    /// An address (A or AAAA).
    Address(IpAddr),
}

/// What a DNS server said to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Records of the asked type, valid for `ttl`.
    Records {
        /// The records.
        records: Vec<Record>,
        /// The shortest TTL among them.
        ttl: Duration,
    },
    /// The name has no such record (NODATA), or does not exist at all
    /// (NXDOMAIN); valid for `ttl` (the SOA minimum) when known.
    Empty {
        /// Whether the name does not exist.
        nxdomain: bool,
        /// How long the answer holds, if the server said.
        ttl: Option<Duration>,
    },
    /// No usable answer: the server failed, refused, did not answer, or
    /// sent something unusable.
    Failed {
        /// Why, in words (for logs and the user's reply).
        reason: String,
    },
}

/// One place to send a request: a transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// UDP or TCP.
    pub transport: Transport,
    /// The address and port.
    pub addr: SocketAddr,
}

/// What is being located: a host name, maybe a port, maybe a transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wanted {
    /// The host name (lower case, without the final dot).
    pub name: String,
    /// A port, when the configuration or the URI names one.
    pub port: Option<u16>,
    /// A transport, when the configuration or the URI names one.
    pub transport: Option<Transport>,
}

/// Why a name could not be located. The text is what the user's reply
/// and the log show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN for the name, or no record leading to an address.
    #[error("{name}: {what}")]
    NotFound {
        /// The name looked up.
        name: String,
        /// What was missing.
        what: String,
    },
    /// A DNS server failed or did not answer.
    #[error("DNS lookup of {name} failed: {reason}")]
    Failed {
        /// The name whose lookup failed.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Identifies a lookup started with [`Locator::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// What [`Locator::locate`] gives: the targets at once (from the cache),
/// or a lookup whose result comes from [`Locator::poll_done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Everything needed was cached.
    Ready(Result<Vec<Target>, DnsError>),
    /// Queries are out; the result comes later.
    Pending(LookupId),
}

/// The longest time a lookup waits for its queries' answers before it
/// fails. The owner answers every query; this only guards against one
/// that does not.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(30);

/// How long a finished lookup's hosts are reused as they are, before the
/// procedure runs again over the cache. Every cached answer lives at least
/// this long ([`cache`]'s minimum TTL), and any new answer clears them.
const RESULT_REUSE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Lookup {
    wanted: Wanted,
    memo: Memo,
    deadline: Instant,
}

/// The RFC 3263 server locator: see the module documentation.
#[derive(Debug)]
pub struct Locator {
    cache: Cache,
    /// Finished results by what was wanted, until when they may be reused:
    /// a warm name costs one hash lookup and an RFC 2782 draw per call.
    results: HashMap<Wanted, (Instant, Result<Vec<Weighted>, DnsError>)>,
    lookups: HashMap<LookupId, Lookup>,
    /// Queries handed out and not yet answered, with the lookups waiting.
    asked: HashMap<Query, Vec<LookupId>>,
    queries: VecDeque<Query>,
    done: VecDeque<(LookupId, Result<Vec<Target>, DnsError>)>,
    next: u64,
    rng: StdRng,
    transports: Vec<Transport>,
    ipv4: bool,
    ipv6: bool,
}

impl Locator {
    /// A locator for a host that listens on `transports` (in order of
    /// preference) and sends from IPv4 and/or IPv6 addresses; SRV weights
    /// are drawn from a generator seeded with `seed`.
    pub fn new(transports: Vec<Transport>, ipv4: bool, ipv6: bool, seed: [u8; 32]) -> Locator {
        Locator {
            cache: Cache::default(),
            results: HashMap::new(),
            lookups: HashMap::new(),
            asked: HashMap::new(),
            queries: VecDeque::new(),
            done: VecDeque::new(),
            next: 1,
            rng: StdRng::from_seed(seed),
            transports,
            ipv4,
            ipv6,
        }
    }

    /// Starts locating `wanted`: the result at once if the cache holds
    /// all it needs, else a lookup to wait for.
    pub fn locate(&mut self, now: Instant, wanted: Wanted) -> Located {
        if let Some((until, result)) = self.results.get(&wanted)
            && *until > now
        {
            let result = result.clone();
            return Located::Ready(self.ordered(result));
        }
        let memo = Memo::default();
        match self.evaluate(now, &wanted, &memo) {
            Eval::Done(result) => {
                if self.results.len() >= 1024 {
                    self.results.retain(|_, (until, _)| *until > now);
                }
                self.results
                    .insert(wanted, (now + RESULT_REUSE, result.clone()));
                Located::Ready(self.ordered(result))
            }
            Eval::Need(queries) => {
                let id = LookupId(self.next);
                self.next += 1;
                self.ask(id, queries);
                self.lookups.insert(
                    id,
                    Lookup {
                        wanted,
                        memo,
                        deadline: now + LOOKUP_DEADLINE,
                    },
                );
                Located::Pending(id)
            }
        }
    }

    /// The next query to put to a DNS server.
    pub fn poll_query(&mut self) -> Option<Query> {
        self.queries.pop_front()
    }

    /// A DNS server's answer to `query`: cached, and every lookup waiting
    /// for it moves on.
    pub fn answer(&mut self, now: Instant, query: &Query, answer: Answer) {
        self.results.clear();
        let value = self.cache.insert(now, query.clone(), answer);
        let Some(waiting) = self.asked.remove(query) else {
            return;
        };
        for id in waiting {
            let Some(mut lookup) = self.lookups.remove(&id) else {
                continue;
            };
            lookup.memo.insert(query.clone(), value.clone());
            match self.evaluate(now, &lookup.wanted, &lookup.memo) {
                Eval::Done(result) => {
                    let result = self.ordered(result);
                    self.done.push_back((id, result));
                }
                Eval::Need(queries) => {
                    // Queries this lookup already waits for are not asked twice.
                    let waiting_for: Vec<Query> = queries
                        .into_iter()
                        .filter(|q| !self.asked.get(q).is_some_and(|ids| ids.contains(&id)))
                        .collect();
                    self.ask(id, waiting_for);
                    self.lookups.insert(id, lookup);
                }
            }
        }
    }

    /// The next finished lookup and its targets, best first.
    pub fn poll_done(&mut self) -> Option<(LookupId, Result<Vec<Target>, DnsError>)> {
        self.done.pop_front()
    }

    /// When [`Self::handle_timeout`] should next run (a lookup's deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lookups.values().map(|l| l.deadline).min()
    }

    /// Fails every lookup whose answers did not come by its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<LookupId> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(lookup) = self.lookups.remove(&id) {
                for ids in self.asked.values_mut() {
                    ids.retain(|i| *i != id);
                }
                self.done.push_back((
                    id,
                    Err(DnsError::Failed {
                        name: lookup.wanted.name,
                        reason: "no answer in time".into(),
                    }),
                ));
            }
        }
        self.asked.retain(|_, ids| !ids.is_empty());
    }

    /// Entries in the cache (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The targets of a result in the order to try them: SRV priority,
    /// then a weighted draw (RFC 2782), each host's addresses in turn.
    fn ordered(
        &mut self,
        result: Result<Vec<Weighted>, DnsError>,
    ) -> Result<Vec<Target>, DnsError> {
        let mut targets: Vec<Target> = Vec::new();
        for host in srv::order(result?, &mut self.rng) {
            for target in host {
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
        }
        Ok(targets)
    }

    fn ask(&mut self, id: LookupId, queries: Vec<Query>) {
        for query in queries {
            // A query already out (for another lookup, or a refresh) is
            // not asked twice: its answer serves every waiting lookup.
            if !self.asked.contains_key(&query) {
                self.queries.push_back(query.clone());
            }
            let waiting = self.asked.entry(query).or_default();
            if !waiting.contains(&id) {
                waiting.push(id);
            }
        }
    }

    fn evaluate(&mut self, now: Instant, wanted: &Wanted, memo: &Memo) -> Eval {
        // What the lookup has been told wins over the cache, so that an
        // answer with a TTL of 0 still counts for the lookup that asked.
        let cache = &self.cache;
        let stale = std::cell::RefCell::new(Vec::new());
        let known = |q: &Query| {
            if let Some(value) = memo.get(q) {
                return Some(value.clone());
            }
            let (value, refresh) = cache.get(now, q)?;
            if refresh {
                stale.borrow_mut().push(q.clone());
            }
            Some(value)
        };
        let procedure = procedure::Procedure {
            transports: &self.transports,
            ipv4: self.ipv4,
            ipv6: self.ipv6,
        };
        let eval = procedure.evaluate(wanted, &known);
        // Answers near their expiry are asked again in the background; the
        // answer refreshes the cache and waits for no one.
        for query in stale.into_inner() {
            if !self.asked.contains_key(&query) {
                self.asked.insert(query.clone(), Vec::new());
                self.queries.push_back(query);
            }
        }
        eval
    }
}
