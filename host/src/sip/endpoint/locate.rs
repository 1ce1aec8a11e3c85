//! Where requests go when a provider, registrar, proxy or leg is a DNS
//! name: the endpoint asks its [`Locator`](super::super::dns::Locator),
//! hands the DNS queries to its owner ([`Endpoint::poll_query`]), takes the
//! answers ([`Endpoint::handle_answer`]) and resumes what waited. An IP
//! address needs no DNS at all. A transport failure the owner reports
//! ([`Endpoint::handle_transport_error`]) counts as a 503 (RFC 3261
//! §8.1.3.1), so an INVITE moves on to the next target.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::dns::{Answer, DnsError, Located, Query, Wanted};
use super::super::message::Transport;
use super::super::{HostPort, UriHost};
use super::call::CallState;
use super::transactions::Purpose;
use super::types::{CallEvent, CallId};
use super::{Dest, Endpoint};

/// What waits for a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiter {
    /// A call's first INVITE.
    Call(CallId),
    /// Provider `i`'s REGISTER.
    Register(usize),
    /// Provider `i`'s OPTIONS ping.
    Ping(usize),
}

/// The outcome of locating a destination: the targets in the order to
/// try them, or why there are none.
pub(super) type Targets = Result<Vec<Dest>, DnsError>;

impl Endpoint {
    /// The next DNS query to answer with [`Endpoint::handle_answer`].
    pub fn poll_query(&mut self) -> Option<Query> {
        let query = self.locator.poll_query()?;
        self.stats.dns_queries += 1;
        Some(query)
    }

    /// A DNS server's answer to `query` (every query handed out must be
    /// answered, a failure included).
    pub fn handle_answer(&mut self, now: Instant, query: &Query, answer: Answer) {
        if let Answer::Failed { reason } = &answer {
            self.stats.dns_failures += 1;
            tracing::warn!(name = %query.name, rtype = ?query.rtype, %reason, "DNS query failed");
        }
        self.locator.answer(now, query, answer);
        self.resume_located(now);
    }

    /// The owner could not reach `addr` over `transport` (a refused or
    /// failed TCP connection): every transaction sent there fails as if
    /// answered 503, and an INVITE moves on to its next target.
    pub fn handle_transport_error(&mut self, now: Instant, transport: Transport, addr: SocketAddr) {
        let failed: Vec<_> = self
            .clients
            .iter()
            .filter(|(_, e)| e.dest.transport == transport && e.dest.addr == addr)
            .map(|(k, e)| (k.clone(), e.call, e.purpose))
            .collect();
        for (key, call, purpose) in failed {
            self.clients.remove(&key);
            self.timers.stop(&super::timer::Timer::Client(key));
            let why = format!("cannot reach {addr} over {transport}");
            match (purpose, call) {
                (Purpose::Invite, Some(id)) if self.fail_over(now, id, &why) => {}
                (Purpose::Invite, Some(id)) => {
                    let outcome = self
                        .calls
                        .get_mut(&id)
                        .and_then(|c| c.take_cancel_outcome())
                        .unwrap_or(CallEvent::Failed {
                            status: 503,
                            reason: why,
                        });
                    self.finish(id, outcome);
                }
                (Purpose::Register(i), _) => self.registration_transport_failed(now, i, why),
                (Purpose::Options(i), _) => self.provider_result(now, i, false),
                (Purpose::Bye, Some(id)) => {
                    self.finish(
                        id,
                        CallEvent::Ended {
                            by: super::types::Party::Local,
                            reason: format!("hangup ({why})"),
                        },
                    );
                    self.reap(id);
                }
                (Purpose::Cancel, Some(id)) => self.reap(id),
                _ => {}
            }
        }
    }

    /// Where requests for `host` go, over `transport` if given: at once
    /// for an IP address or a cached name, else `None`, and `waiter`
    /// resumes when the lookup ends.
    pub(super) fn locate(
        &mut self,
        now: Instant,
        host: &HostPort,
        transport: Option<Transport>,
        waiter: Waiter,
    ) -> Option<Targets> {
        let name = match &host.host {
            UriHost::Ip(ip) => {
                return Some(Ok(vec![Dest {
                    transport: transport.unwrap_or(Transport::Udp),
                    addr: SocketAddr::new(*ip, host.port.unwrap_or(5060)),
                }]));
            }
            UriHost::Name(name) => name.clone(),
        };
        let wanted = Wanted {
            name,
            port: host.port,
            transport,
        };
        match self.locator.locate(now, wanted) {
            Located::Ready(result) => Some(result.map(Self::dests)),
            Located::Pending(id) => {
                self.waiting.entry(id).or_default().push(waiter);
                None
            }
        }
    }

    /// Of `dests`, the first we have a listener for, and the usable ones
    /// after it (the alternates, RFC 3263 §4.3); none if none is usable.
    pub(super) fn first_usable(&self, dests: Vec<Dest>) -> Option<(Dest, Vec<Dest>)> {
        let mut usable: Vec<Dest> = dests
            .into_iter()
            .filter(|d| self.local(d.transport, d.addr).is_some())
            .collect();
        if usable.is_empty() {
            return None;
        }
        let first = usable.remove(0);
        Some((first, usable))
    }

    /// Runs the lookups' deadlines.
    pub(super) fn locator_timeout(&mut self, now: Instant) {
        self.locator.handle_timeout(now);
        self.resume_located(now);
    }

    fn dests(targets: Vec<super::super::dns::Target>) -> Vec<Dest> {
        targets
            .into_iter()
            .map(|t| Dest {
                transport: t.transport,
                addr: t.addr,
            })
            .collect()
    }

    fn resume_located(&mut self, now: Instant) {
        while let Some((id, result)) = self.locator.poll_done() {
            let result = result.map(Self::dests);
            for waiter in self.waiting.remove(&id).unwrap_or_default() {
                match waiter {
                    Waiter::Call(call) => self.call_located(now, call, result.clone()),
                    Waiter::Register(i) => self.registrar_located(now, i, result.clone()),
                    Waiter::Ping(i) => self.ping_located(now, i, result.clone()),
                }
            }
        }
    }

    /// A call's destination was located: its first INVITE goes out, or it
    /// fails with 503 and the reason.
    fn call_located(&mut self, now: Instant, id: CallId, targets: Targets) {
        if !self
            .calls
            .get(&id)
            .is_some_and(|c| matches!(c.state, CallState::Locating))
        {
            return; // hung up meanwhile
        }
        self.begin_inviting(now, id, targets);
    }
}
