//! The SIP user agent core, sans-IO: calls out, dialogs, server side
//! answers, provider health checks.
//!
//! Shape follows quinn-proto: feed it datagrams with
//! [`Endpoint::handle_input`], timers with [`Endpoint::handle_timeout`], and
//! drain [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`]; ask
//! [`Endpoint::poll_timeout`] when to wake it next. It never reads a clock,
//! and its random values (tags, branches, Call-IDs, nonces) come from a
//! seeded generator ([`Endpoint::with_rng_seed`]).
//!
//! One file per concern: [`config`] and [`types`] are the public surface;
//! `calling` is the calling side (INVITE, CANCEL, BYE, challenges),
//! `answering` the side that answers requests (in-dialog requests,
//! re-INVITE, ACK), `transactions` the glue to the RFC 3261 §17
//! transactions, `health` the OPTIONS pings, `locate` the DNS lookups of names and
//! failover across their targets, `build` the message text, and
//! `call` and `timer` a call's states and the typed timer table.

mod answering;
mod build;
mod call;
mod calling;
mod config;
mod health;
mod locate;
mod registration;
mod session_timer;
mod timer;
mod transactions;
mod types;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dns::{Locator, LookupId};
use super::message::{self, Transport};

use call::Call;
use registration::Registration;
use timer::{Timer, TimerTable};
use transactions::{ClientEntry, ClientKey, ServerEntry, ServerKey};

pub use config::{Config, NumberFormat, Provider};
pub use registration::RegistrationState;
pub use types::{CallEvent, CallId, CallRequest, Event, Party, Stats, Transmit};

/// Where a message goes: a transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dest {
    transport: Transport,
    addr: SocketAddr,
}

/// A provider's OPTIONS health state.
#[derive(Debug)]
struct ProviderState {
    up: Option<bool>,
    next_ping: Instant,
    in_flight: bool,
    /// The provider's other servers, pinged in turn when one is silent.
    alternates: Vec<Dest>,
}

/// The SIP user agent: see the module documentation.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    locals: Vec<(Transport, SocketAddr)>,
    next_call: u64,
    clients: HashMap<ClientKey, ClientEntry>,
    servers: HashMap<ServerKey, ServerEntry>,
    calls: HashMap<CallId, Call>,
    by_call_id: HashMap<String, CallId>,
    timers: TimerTable,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    providers: Vec<ProviderState>,
    stats: Stats,
    rng: StdRng,
    /// Each provider's registration, where it registers.
    registrations: Vec<Option<Registration>>,
    /// Locates DNS names (RFC 3263).
    locator: Locator,
    /// What waits for each lookup.
    waiting: HashMap<LookupId, Vec<locate::Waiter>>,
}

impl Endpoint {
    /// An endpoint bound to `locals` (the addresses the driver actually
    /// listens on), its random values seeded once from the operating
    /// system. Tests use [`Endpoint::with_rng_seed`].
    pub fn new(config: Config, locals: Vec<(Transport, SocketAddr)>, now: Instant) -> Self {
        Self::with_rng_seed(config, locals, now, rand::random())
    }

    /// An endpoint whose tags, branches, Call-IDs and nonces come from a
    /// generator seeded with `seed`: the same inputs give the same bytes.
    pub fn with_rng_seed(
        config: Config,
        locals: Vec<(Transport, SocketAddr)>,
        now: Instant,
        seed: [u8; 32],
    ) -> Self {
        let providers = config
            .providers
            .iter()
            .map(|_| ProviderState {
                up: None,
                next_ping: now,
                in_flight: false,
                alternates: Vec::new(),
            })
            .collect();
        let mut transports: Vec<Transport> = Vec::new();
        for (t, _) in &locals {
            if !transports.contains(t) {
                transports.push(*t);
            }
        }
        transports.sort_by_key(|t| *t != Transport::Udp);
        let ipv4 = locals.iter().any(|(_, a)| a.is_ipv4());
        let ipv6 = locals.iter().any(|(_, a)| a.is_ipv6());
        let mut dns_seed = seed;
        dns_seed[0] ^= 0x5a;
        let mut endpoint = Endpoint {
            locator: Locator::new(transports, ipv4, ipv6, dns_seed),
            waiting: HashMap::new(),
            config,
            locals,
            next_call: 1,
            clients: HashMap::new(),
            servers: HashMap::new(),
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            timers: TimerTable::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            providers,
            stats: Stats::default(),
            rng: StdRng::from_seed(seed),
            registrations: Vec::new(),
        };
        endpoint.start_registrations(now);
        for i in 0..endpoint.providers.len() {
            if endpoint.config.providers[i].keepalive {
                endpoint.timers.set(Timer::Ping(i), now);
            }
        }
        endpoint
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            calls_active: self.calls.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Whether a provider counts as up: down while it must register and
    /// is not registered, else what its last OPTIONS said (`None` before
    /// the first answer or timeout).
    pub fn provider_up(&self, name: &str) -> Option<bool> {
        let i = self.config.providers.iter().position(|p| p.name == name)?;
        if self.unregistered(i) {
            return Some(false);
        }
        self.providers.get(i)?.up
    }

    /// The SIP Call-ID of one of our calls (for logs and CDRs: what a
    /// trunk's dispute names), while the endpoint knows the call.
    pub fn sip_call_id(&self, call: CallId) -> Option<&str> {
        self.calls.get(&call).map(|c| c.call_id.as_str())
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Next datagram or stream message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next(), self.locator.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.locator_timeout(now);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Client(key) => self.client_timeout(now, key),
                Timer::Server(key) => self.server_timeout(now, key),
                Timer::Ring(id) => self.ring_timeout(now, id),
                Timer::CancelGiveUp(id) => self.cancel_give_up(id),
                Timer::Answer2xx(id) => self.answer_timeout(now, id),
                Timer::Failover(id) => self.failover_due(now, id),
                Timer::Ping(i) => self.ping(now, i),
                Timer::Register(i) => self.registration_due(now, i),
                Timer::SessionRefresh(id) => self.session_refresh_due(now, id),
                Timer::SessionExpiry(id) => {
                    self.session_expired(now, id, "no refresh from the far end")
                }
            }
        }
    }

    /// Feeds one received message (a datagram, or one framed stream message).
    pub fn handle_input(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return; // keep-alive
        }
        let message = match message::parse(bytes, self.config.max_message_bytes) {
            Ok(m) => m,
            Err(unusable) => {
                match message::error_response(&unusable, &self.config.user_agent) {
                    Some(reply) => {
                        self.stats.rejected_malformed += 1;
                        tracing::debug!(%from, error = %unusable.error, "rejected a malformed request");
                        self.send(
                            Dest {
                                transport,
                                addr: from,
                            },
                            reply,
                        );
                    }
                    None => {
                        self.stats.dropped_malformed += 1;
                        tracing::debug!(%from, error = %unusable.error, "dropped a malformed message");
                    }
                }
                return;
            }
        };
        self.stats.received += 1;
        match message.status() {
            Some(status) => self.handle_response(now, status, message),
            None => self.handle_request(now, transport, from, message),
        }
    }

    fn send(&mut self, dest: Dest, payload: Vec<u8>) {
        self.stats.sent += 1;
        self.transmits.push_back(Transmit {
            transport: dest.transport,
            destination: dest.addr,
            payload,
        });
    }

    fn emit(&mut self, call: CallId, event: CallEvent) {
        self.events.push_back(Event::Call { call, event });
    }

    /// Our listener of `transport` in `dest`'s address family.
    fn local(&self, transport: Transport, dest: SocketAddr) -> Option<SocketAddr> {
        let same_family = |a: &SocketAddr| a.is_ipv4() == dest.is_ipv4();
        self.locals
            .iter()
            .filter(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
            .find(same_family)
    }

    /// A fresh random token (tags, Call-IDs, nonces).
    fn token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    /// A fresh RFC 3261 branch.
    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token())
    }
}

#[cfg(test)]
mod locate_tests;
#[cfg(test)]
mod session_timer_tests;
#[cfg(test)]
mod tests;
