//! The SIP user agent core, sans-IO: calls out, dialogs, server side
//! answers, provider health checks.
//!
//! Shape follows quinn-proto: feed it datagrams with
//! [`Endpoint::handle_input`], timers with [`Endpoint::handle_timeout`], and
//! drain [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`]; ask
//! [`Endpoint::poll_timeout`] when to wake it next. It never reads a clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::SipError;
use super::digest::Challenge;
use super::message::SipUri;
use super::message::{self, Message, NameAddr, StartLine, Transport, ip_of, split_list};
use super::sdp::{AudioSdp, Codec};
use super::transaction::{ClientTx, ClientVerdict, ServerTx, TimerOutput, Timers};

/// A SIP trunk we send calls to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Name used by routing and in replies (e.g. `PROXICOM`).
    pub name: String,
    /// Where its SIP service listens.
    pub address: SocketAddr,
    /// Transport to reach it.
    #[serde(default = "udp")]
    pub transport: Transport,
    /// Digest username, if it challenges.
    #[serde(default)]
    pub username: Option<String>,
    /// Digest password.
    #[serde(default)]
    pub password: Option<String>,
    /// Whether to send OPTIONS to it periodically to learn if it is up.
    #[serde(default = "yes")]
    pub keepalive: bool,
    /// Its rate sheet (CSV, see [`crate::billing::import`]), loaded into
    /// billing when the host starts; every row must name this provider.
    /// The SIP stack itself does not read it.
    #[serde(default)]
    pub rates: Option<std::path::PathBuf>,
}

fn udp() -> Transport {
    Transport::Udp
}
fn yes() -> bool {
    true
}

/// Settings of the SIP stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP listen addresses (one per address family you need).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// T1, T2, T4.
    pub timers: Timers,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// User part of our From and Contact URIs.
    pub user: String,
    /// User-Agent / Server header.
    pub user_agent: String,
    /// Seconds between OPTIONS to each provider.
    pub options_interval_secs: u64,
    /// The trunks.
    pub providers: Vec<Provider>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            tcp: Vec::new(),
            timers: Timers::default(),
            max_message_bytes: message::DEFAULT_MAX_MESSAGE_BYTES,
            user: "switchboard".into(),
            user_agent: concat!("Switchboard/", env!("CARGO_PKG_VERSION")).into(),
            options_interval_secs: 30,
            providers: Vec::new(),
        }
    }
}

/// Identifies a call placed through this endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// What to call.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// Request-URI, e.g. `sip:+442071234567@trunk.example` or
    /// `sip:bob@127.0.0.1:5080`: a strict URI, written into the request
    /// from its parts.
    pub target: super::TargetUri,
    /// The provider to send it through; `None` sends to the URI's own host, which must be an IP address.
    pub provider: Option<String>,
    /// Our SDP offer (address and port of our RTP endpoint).
    pub offer: AudioSdp,
    /// Cancel the call if it is not answered within this time.
    pub ring_timeout: Option<Duration>,
    /// User part of the From URI (the caller id shown); defaults to the configured user.
    pub caller: Option<String>,
}

/// Who ended an established call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// We did ([`Endpoint::hangup`], or a protocol failure on our side).
    Local,
    /// The far end sent BYE.
    Remote,
}

/// Progress of a call, in the order it happens. Exactly one of `Failed` or
/// `Ended` comes last.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// The far end has the INVITE (100).
    Trying,
    /// It rings (180).
    Ringing,
    /// Early media: a 18x with SDP; audio may flow before answer.
    EarlyMedia {
        /// The far end's description.
        sdp: AudioSdp,
    },
    /// 2xx: the call is up.
    Answered {
        /// The far end's answer.
        sdp: AudioSdp,
        /// The codec both sides use.
        codec: Codec,
    },
    /// The far end changed its media with a re-INVITE (hold, unhold, new address).
    MediaChanged {
        /// Its new description.
        sdp: AudioSdp,
    },
    /// The call was never answered: the status and why.
    Failed {
        /// SIP status (408 for our own timeouts, 488 when no codec is shared).
        status: u16,
        /// What went wrong, in words.
        reason: String,
    },
    /// A call that was answered (or cancelled by us) is over.
    Ended {
        /// Who ended it.
        by: Party,
        /// Why.
        reason: String,
    },
}

/// What the endpoint reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Progress of one call.
    Call {
        /// Which call.
        call: CallId,
        /// What happened.
        event: CallEvent,
    },
    /// A provider answered or stopped answering OPTIONS.
    Provider {
        /// Its name.
        name: String,
        /// Whether it now counts as up.
        up: bool,
    },
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// UDP or TCP.
    pub transport: Transport,
    /// Where to.
    pub destination: SocketAddr,
    /// The message.
    pub payload: Vec<u8>,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Messages received and parsed.
    pub received: u64,
    /// Messages sent, retransmissions included.
    pub sent: u64,
    /// Retransmissions we sent.
    pub retransmissions: u64,
    /// Malformed messages dropped without an answer.
    pub dropped_malformed: u64,
    /// Malformed requests answered with 400/505/513.
    pub rejected_malformed: u64,
    /// Responses that matched no transaction.
    pub stray_responses: u64,
    /// Requests answered 481.
    pub unknown_dialog: u64,
    /// Calls placed.
    pub calls_placed: u64,
    /// Calls currently tracked.
    pub calls_active: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dest {
    transport: Transport,
    addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite,
    Cancel,
    Bye,
    Options(usize),
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientTx,
    call: Option<CallId>,
    purpose: Purpose,
    dest: Dest,
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTx,
    dest: Dest,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Client(String),
    Server(String),
    Call(CallId),
    Provider(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Calling,
    Answered,
    Done,
}

#[derive(Debug)]
struct Pending2xx {
    bytes: Vec<u8>,
    cseq: u32,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

#[derive(Debug)]
struct Call {
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    local_uri: String,
    remote_uri: String,
    target: String,
    dest: Dest,
    provider: Option<usize>,
    cseq: u32,
    invite_key: Option<String>,
    state: CallState,
    provisional: bool,
    cancel_pending: bool,
    cancel_sent: bool,
    cancel_outcome: Option<CallEvent>,
    cancel_deadline: Option<Instant>,
    ring_deadline: Option<Instant>,
    ring_timeout: Duration,
    route_set: Vec<String>,
    remote_target: Option<String>,
    offer: AudioSdp,
    codec: Option<Codec>,
    auth_tries: u32,
    auth_header: Option<(String, String)>,
    ack: Option<(Vec<u8>, Dest)>,
    pending_2xx: Option<Pending2xx>,
    remote_cseq: Option<u32>,
    finished: bool,
    bye_key: Option<String>,
}

#[derive(Debug)]
struct ProviderState {
    up: Option<bool>,
    next_ping: Instant,
    in_flight: bool,
}

/// The SIP user agent: see the module documentation.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    locals: Vec<(Transport, SocketAddr)>,
    next_call: u64,
    clients: HashMap<String, ClientEntry>,
    servers: HashMap<String, ServerEntry>,
    calls: HashMap<CallId, Call>,
    by_call_id: HashMap<String, CallId>,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    providers: Vec<ProviderState>,
    stats: Stats,
}

/// Longest ring timeout honoured; longer ones are cut to this.
const MAX_RING: Duration = Duration::from_secs(24 * 3600);

fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn client_key(branch: &str, method: rsip::Method) -> String {
    format!("{branch} {method}")
}

impl Endpoint {
    /// An endpoint bound to `locals` (the addresses the driver actually listens on).
    pub fn new(config: Config, locals: Vec<(Transport, SocketAddr)>, now: Instant) -> Self {
        let providers = config
            .providers
            .iter()
            .map(|_| ProviderState {
                up: None,
                next_ping: now,
                in_flight: false,
            })
            .collect();
        let mut endpoint = Endpoint {
            config,
            locals,
            next_call: 1,
            clients: HashMap::new(),
            servers: HashMap::new(),
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            providers,
            stats: Stats::default(),
        };
        for i in 0..endpoint.providers.len() {
            if endpoint.config.providers[i].keepalive {
                endpoint.schedule(now, TimerRef::Provider(i));
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

    /// Whether a provider answered its last OPTIONS (`None` before the first answer or timeout).
    pub fn provider_up(&self, name: &str) -> Option<bool> {
        let i = self.config.providers.iter().position(|p| p.name == name)?;
        self.providers.get(i)?.up
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
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    fn schedule(&mut self, at: Instant, what: TimerRef) {
        self.timers.push(Reverse((at, what)));
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

    fn local(&self, transport: Transport, dest: SocketAddr) -> Option<SocketAddr> {
        let same_family = |a: &SocketAddr| a.is_ipv4() == dest.is_ipv4();
        self.locals
            .iter()
            .filter(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
            .find(same_family)
    }

    fn host_port(addr: SocketAddr) -> String {
        match addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        }
    }

    fn contact(&self, local: SocketAddr, transport: Transport) -> String {
        let suffix = if transport == Transport::Tcp {
            ";transport=tcp"
        } else {
            ""
        };
        format!(
            "<sip:{}@{}{}>",
            self.config.user,
            Self::host_port(local),
            suffix
        )
    }

    /// Starts a call. Events for it arrive through [`Self::poll_event`].
    pub fn place_call(&mut self, now: Instant, request: CallRequest) -> Result<CallId, SipError> {
        let target = request.target.to_string();
        let uri = SipUri::parse(&target).map_err(|_| SipError::BadTarget(target.clone()))?;
        let (dest, provider) = match &request.provider {
            Some(name) => {
                let i = self
                    .config
                    .providers
                    .iter()
                    .position(|p| &p.name == name)
                    .ok_or_else(|| SipError::UnknownProvider(name.clone()))?;
                let p = &self.config.providers[i];
                (
                    Dest {
                        transport: p.transport,
                        addr: p.address,
                    },
                    Some(i),
                )
            }
            None => (
                uri_dest(&uri, Transport::Udp)
                    .ok_or_else(|| SipError::BadTarget(target.clone()))?,
                None,
            ),
        };
        let local = self
            .local(dest.transport, dest.addr)
            .ok_or(SipError::NoListener(dest.transport))?;
        let id = CallId(self.next_call);
        self.next_call += 1;
        let user = request.caller.as_deref().unwrap_or(&self.config.user);
        let call = Call {
            call_id: format!("{}@{}", token(), local.ip()),
            local_tag: token(),
            remote_tag: None,
            local_uri: format!("sip:{user}@{}", Self::host_port(local)),
            remote_uri: target.clone(),
            target,
            dest,
            provider,
            cseq: 0,
            invite_key: None,
            state: CallState::Calling,
            provisional: false,
            cancel_pending: false,
            cancel_sent: false,
            cancel_outcome: None,
            cancel_deadline: None,
            ring_deadline: request.ring_timeout.map(|t| now + t.min(MAX_RING)),
            ring_timeout: request.ring_timeout.unwrap_or_default().min(MAX_RING),
            route_set: Vec::new(),
            remote_target: None,
            offer: request.offer,
            codec: None,
            auth_tries: 0,
            auth_header: None,
            ack: None,
            pending_2xx: None,
            remote_cseq: None,
            finished: false,
            bye_key: None,
        };
        self.by_call_id.insert(call.call_id.clone(), id);
        if let Some(at) = call.ring_deadline {
            self.schedule(at, TimerRef::Call(id));
        }
        self.calls.insert(id, call);
        self.stats.calls_placed += 1;
        self.send_invite(now, id);
        Ok(id)
    }

    fn send_invite(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.cseq += 1;
        let branch = format!("z9hG4bK{}", token());
        let body = call.offer.to_bytes();
        let extra: Vec<(String, String)> = call.auth_header.iter().cloned().collect();
        let Some(bytes) =
            self.build_request(id, rsip::Method::Invite, &branch, None, &extra, &body)
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let key = client_key(&branch, rsip::Method::Invite);
        call.invite_key = Some(key.clone());
        let dest = call.dest;
        self.start_client(now, key, bytes, dest, Some(id), Purpose::Invite);
    }

    fn start_client(
        &mut self,
        now: Instant,
        key: String,
        bytes: Vec<u8>,
        dest: Dest,
        call: Option<CallId>,
        purpose: Purpose,
    ) {
        let invite = purpose == Purpose::Invite;
        let tx = ClientTx::new(
            now,
            invite,
            dest.transport.reliable(),
            self.config.timers,
            bytes.clone(),
        );
        if let Some(at) = tx.deadline() {
            self.schedule(at, TimerRef::Client(key.clone()));
        }
        self.clients.insert(
            key,
            ClientEntry {
                tx,
                call,
                purpose,
                dest,
            },
        );
        self.send(dest, bytes);
    }

    /// Where in-dialog requests go: the first loose route, else the remote target.
    fn dialog_dest(&self, call: &Call) -> Dest {
        let first = call
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r, "Route").ok())
            .map(|n| n.uri);
        let target = first.or_else(|| call.remote_target.clone());
        target
            .and_then(|t| SipUri::parse(&t).ok())
            .and_then(|u| uri_dest(&u, call.dest.transport))
            .map(|d| Dest {
                transport: call.dest.transport,
                addr: d.addr,
            })
            .unwrap_or(call.dest)
    }

    /// Builds a request within (or starting) the call's dialog.
    fn build_request(
        &self,
        id: CallId,
        method: rsip::Method,
        branch: &str,
        cseq: Option<u32>,
        extra: &[(String, String)],
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let call = self.calls.get(&id)?;
        let in_dialog = call.remote_tag.is_some()
            && !matches!(method, rsip::Method::Invite if call.state == CallState::Calling);
        let dest = if in_dialog {
            self.dialog_dest(call)
        } else {
            call.dest
        };
        let local = self.local(dest.transport, dest.addr)?;
        let request_uri = if in_dialog {
            call.remote_target
                .clone()
                .unwrap_or_else(|| call.target.clone())
        } else {
            call.target.clone()
        };
        let uri = SipUri::parse(&request_uri).ok()?;
        let to = match (&call.remote_tag, in_dialog) {
            (Some(tag), true) => format!("<{}>;tag={tag}", call.remote_uri),
            _ => format!("<{}>", call.remote_uri),
        };
        let mut text = String::with_capacity(512 + body.len());
        let _ = write!(
            text,
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <{}>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n",
            dest.transport,
            Self::host_port(local),
            call.local_uri,
            call.local_tag,
            call.call_id,
            cseq.unwrap_or(call.cseq),
        );
        if in_dialog {
            for route in &call.route_set {
                let _ = write!(text, "Route: {route}\r\n");
            }
        }
        if matches!(method, rsip::Method::Invite) {
            let _ = write!(
                text,
                "Contact: {}\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO\r\n",
                self.contact(local, dest.transport)
            );
        }
        for (name, value) in extra {
            let _ = write!(text, "{name}: {value}\r\n");
        }
        let _ = write!(text, "User-Agent: {}\r\n", self.config.user_agent);
        if !body.is_empty() {
            text.push_str("Content-Type: application/sdp\r\n");
        }
        let _ = write!(text, "Content-Length: {}\r\n\r\n", body.len());
        let mut out = text.into_bytes();
        out.extend_from_slice(body);
        Some(out)
    }

    /// Ends a call: CANCEL before answer, BYE after. Events report the outcome.
    pub fn hangup(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.finished {
            return;
        }
        match call.state {
            CallState::Calling => {
                let outcome = CallEvent::Ended {
                    by: Party::Local,
                    reason: "cancelled before answer".into(),
                };
                self.cancel(now, id, outcome);
            }
            CallState::Answered => {
                // `Ended` follows when the BYE transaction completes.
                self.send_bye(now, id);
            }
            CallState::Done => {}
        }
    }

    fn cancel(&mut self, now: Instant, id: CallId, outcome: CallEvent) {
        let t64 = self.config.timers.t64();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.cancel_outcome.is_some() {
            return;
        }
        call.cancel_outcome = Some(outcome);
        call.ring_deadline = None;
        call.cancel_deadline = Some(now + t64);
        self.schedule(now + t64, TimerRef::Call(id));
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.provisional {
            self.send_cancel(now, id);
        } else if let Some(call) = self.calls.get_mut(&id) {
            // RFC 3261 §9.1: no CANCEL before a provisional response.
            call.cancel_pending = true;
        }
    }

    fn send_cancel(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.cancel_sent {
            return;
        }
        let Some(key) = call.invite_key.clone() else {
            return;
        };
        let Some(invite) = self.clients.get(&key) else {
            return;
        };
        let Ok(parsed) = message::parse(invite.tx.request(), usize::MAX) else {
            return;
        };
        let dest = invite.dest;
        let StartLine::Request { uri, .. } = &parsed.start else {
            return;
        };
        let mut text = format!("CANCEL {uri} SIP/2.0\r\n");
        let _ = write!(
            text,
            "Via: {}\r\n",
            parsed.vias.first().map(String::as_str).unwrap_or_default()
        );
        for name in ["From", "To", "Call-ID", "Route"] {
            for v in parsed.header_values(name) {
                let _ = write!(text, "{name}: {v}\r\n");
            }
        }
        let _ = write!(
            text,
            "CSeq: {} CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            parsed.cseq
        );
        let cancel_key = client_key(&parsed.via.branch, rsip::Method::Cancel);
        if let Some(call) = self.calls.get_mut(&id) {
            call.cancel_sent = true;
            call.cancel_pending = false;
        }
        self.start_client(
            now,
            cancel_key,
            text.into_bytes(),
            dest,
            Some(id),
            Purpose::Cancel,
        );
    }

    fn send_bye(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.cseq += 1;
        call.state = CallState::Done;
        call.pending_2xx = None;
        let branch = format!("z9hG4bK{}", token());
        let extra: Vec<(String, String)> = Vec::new();
        let Some(bytes) = self.build_request(id, rsip::Method::Bye, &branch, None, &extra, &[])
        else {
            return;
        };
        let Some(dest) = self.dialog_dest_of(id) else {
            return;
        };
        let key = client_key(&branch, rsip::Method::Bye);
        if let Some(call) = self.calls.get_mut(&id) {
            call.bye_key = Some(key.clone());
        }
        self.start_client(now, key, bytes, dest, Some(id), Purpose::Bye);
    }

    fn dialog_dest_of(&self, id: CallId) -> Option<Dest> {
        self.calls.get(&id).map(|call| self.dialog_dest(call))
    }

    /// Emits the call's final event once.
    fn finish(&mut self, id: CallId, event: CallEvent) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.finished {
            return;
        }
        call.finished = true;
        call.state = CallState::Done;
        call.ring_deadline = None;
        call.cancel_deadline = None;
        self.emit(id, event);
        self.reap(id);
    }

    /// Forgets a finished call once no transaction needs it any more.
    fn reap(&mut self, id: CallId) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if !call.finished || call.pending_2xx.is_some() {
            return;
        }
        let live =
            |key: &Option<String>| key.as_ref().is_some_and(|k| self.clients.contains_key(k));
        if live(&call.invite_key) || live(&call.bye_key) {
            return;
        }
        let call_id = call.call_id.clone();
        self.calls.remove(&id);
        self.by_call_id.remove(&call_id);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, what))) = self.timers.pop() else {
                break;
            };
            match what {
                TimerRef::Client(key) => self.client_timeout(now, key),
                TimerRef::Server(key) => self.server_timeout(now, key),
                TimerRef::Call(id) => self.call_timeout(now, id),
                TimerRef::Provider(i) => self.provider_timeout(now, i),
            }
        }
    }

    fn client_timeout(&mut self, now: Instant, key: String) {
        let Some(entry) = self.clients.get_mut(&key) else {
            return;
        };
        let before = entry.tx.deadline();
        if before.is_some_and(|t| t > now) {
            return; // a stale heap entry; the live one is still queued
        }
        let output = entry.tx.on_timeout(now);
        let (dest, call, purpose) = (entry.dest, entry.call, entry.purpose);
        let next = entry.tx.deadline();
        match output {
            Some(TimerOutput::Retransmit(bytes)) => {
                self.stats.retransmissions += 1;
                self.send(dest, bytes);
            }
            Some(TimerOutput::TimedOut) => {
                self.clients.remove(&key);
                self.client_timed_out(now, call, purpose);
                return;
            }
            Some(TimerOutput::Terminated) => {
                self.clients.remove(&key);
                if let Some(id) = call {
                    self.reap(id);
                }
                return;
            }
            None => {}
        }
        if let Some(at) = next {
            self.schedule(at, TimerRef::Client(key));
        }
    }

    fn client_timed_out(&mut self, now: Instant, call: Option<CallId>, purpose: Purpose) {
        match purpose {
            Purpose::Invite => {
                if let Some(id) = call {
                    let outcome = self
                        .calls
                        .get_mut(&id)
                        .and_then(|c| c.cancel_outcome.take());
                    let event = outcome.unwrap_or(CallEvent::Failed {
                        status: 408,
                        reason: "Request Timeout (no response to INVITE)".into(),
                    });
                    self.finish(id, event);
                }
            }
            Purpose::Options(i) => self.provider_result(now, i, false),
            Purpose::Bye => {
                if let Some(id) = call {
                    let reason = "hangup (no response to BYE)".to_string();
                    self.finish(
                        id,
                        CallEvent::Ended {
                            by: Party::Local,
                            reason,
                        },
                    );
                    self.reap(id);
                }
            }
            Purpose::Cancel => {
                if let Some(id) = call {
                    self.reap(id);
                }
            }
        }
    }

    fn server_timeout(&mut self, now: Instant, key: String) {
        let Some(entry) = self.servers.get_mut(&key) else {
            return;
        };
        if entry.tx.deadline().is_some_and(|t| t > now) {
            return;
        }
        let output = entry.tx.on_timeout(now);
        let dest = entry.dest;
        let next = entry.tx.deadline();
        match output {
            Some(TimerOutput::Retransmit(bytes)) => {
                self.stats.retransmissions += 1;
                self.send(dest, bytes);
            }
            Some(TimerOutput::TimedOut | TimerOutput::Terminated) => {
                self.servers.remove(&key);
                return;
            }
            None => {}
        }
        if let Some(at) = next {
            self.schedule(at, TimerRef::Server(key));
        }
    }

    fn call_timeout(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.ring_deadline.is_some_and(|t| t <= now) && call.state == CallState::Calling {
            call.ring_deadline = None;
            let secs = call.ring_timeout.as_secs_f32();
            let outcome = CallEvent::Failed {
                status: 408,
                reason: format!("No answer within {secs} s"),
            };
            self.cancel(now, id, outcome);
            return;
        }
        if call.cancel_deadline.is_some_and(|t| t <= now) && !call.finished {
            // RFC 3261 §9.1: no final response 64·T1 after CANCEL; give up.
            let outcome = call.cancel_outcome.take().unwrap_or(CallEvent::Failed {
                status: 408,
                reason: "no response to CANCEL".into(),
            });
            if let Some(key) = call.invite_key.clone() {
                self.clients.remove(&key);
            }
            self.finish(id, outcome);
            return;
        }
        let Some(pending) = call.pending_2xx.as_mut() else {
            return;
        };
        if pending.give_up <= now {
            // No ACK for our 2xx to their re-INVITE: the dialog is broken (§13.3.1.4).
            call.pending_2xx = None;
            self.send_bye(now, id);
            self.finish(
                id,
                CallEvent::Ended {
                    by: Party::Local,
                    reason: "no ACK to our 200 for a re-INVITE".into(),
                },
            );
            return;
        }
        if pending.next <= now {
            pending.interval = (pending.interval * 2).min(self.config.timers.t2());
            pending.next = now + pending.interval;
            let (bytes, at) = (pending.bytes.clone(), pending.next.min(pending.give_up));
            let Some(dest) = self.dialog_dest_of(id) else {
                return;
            };
            self.stats.retransmissions += 1;
            self.send(dest, bytes);
            self.schedule(at, TimerRef::Call(id));
        }
    }

    fn provider_timeout(&mut self, now: Instant, i: usize) {
        let Some(state) = self.providers.get_mut(i) else {
            return;
        };
        if state.next_ping > now {
            return;
        }
        let interval = Duration::from_secs(self.config.options_interval_secs.clamp(1, 86_400));
        state.next_ping = now + interval;
        self.schedule(now + interval, TimerRef::Provider(i));
        let Some(state) = self.providers.get_mut(i) else {
            return;
        };
        if state.in_flight {
            return;
        }
        state.in_flight = true;
        let Some(p) = self.config.providers.get(i) else {
            return;
        };
        let dest = Dest {
            transport: p.transport,
            addr: p.address,
        };
        let Some(local) = self.local(dest.transport, dest.addr) else {
            return;
        };
        let branch = format!("z9hG4bK{}", token());
        let host = Self::host_port(p.address);
        let text = format!(
            "OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{}@{}>;tag={}\r\nTo: <sip:{host}>\r\nCall-ID: {}@{}\r\nCSeq: 1 OPTIONS\r\n\
             Accept: application/sdp\r\nUser-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            dest.transport,
            Self::host_port(local),
            self.config.user,
            Self::host_port(local),
            token(),
            token(),
            local.ip(),
            self.config.user_agent
        );
        self.start_client(
            now,
            client_key(&branch, rsip::Method::Options),
            text.into_bytes(),
            dest,
            None,
            Purpose::Options(i),
        );
    }

    fn provider_result(&mut self, _now: Instant, i: usize, up: bool) {
        let Some(state) = self.providers.get_mut(i) else {
            return;
        };
        state.in_flight = false;
        if state.up == Some(up) {
            return;
        }
        state.up = Some(up);
        let Some(p) = self.config.providers.get(i) else {
            return;
        };
        tracing::info!(provider = %p.name, up, "provider status changed");
        self.events.push_back(Event::Provider {
            name: p.name.clone(),
            up,
        });
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

    fn handle_response(&mut self, now: Instant, status: u16, response: Message) {
        let key = client_key(&response.via.branch, response.cseq_method);
        let Some(entry) = self.clients.get_mut(&key) else {
            // A 2xx retransmitted after the INVITE transaction is gone: ACK again.
            if status / 100 == 2
                && response.cseq_method == rsip::Method::Invite
                && let Some(id) = self.by_call_id.get(&response.call_id).copied()
            {
                self.resend_ack(id);
                return;
            }
            self.stats.stray_responses += 1;
            return;
        };
        let verdict = entry.tx.on_response(now, status);
        let (call, purpose, dest) = (entry.call, entry.purpose, entry.dest);
        match verdict {
            ClientVerdict::Absorb => return,
            ClientVerdict::ResendAck => {
                if let Some(ack) = entry.tx.ack().map(<[u8]>::to_vec) {
                    self.send(dest, ack);
                }
                return;
            }
            ClientVerdict::DeliverAndAck => {
                let ack = ack_for_failure(entry.tx.request(), &response);
                if let Some(ack) = ack {
                    entry.tx.set_ack(ack.clone());
                    self.send(dest, ack);
                }
            }
            ClientVerdict::Deliver => {}
        }
        if let Some(at) = self.clients.get(&key).and_then(|e| e.tx.deadline()) {
            self.schedule(at, TimerRef::Client(key.clone()));
        }
        match purpose {
            Purpose::Invite => {
                if let Some(id) = call {
                    self.invite_response(now, id, status, response);
                }
            }
            Purpose::Options(i) => {
                if status >= 200 {
                    self.provider_result(now, i, status != 503);
                }
            }
            Purpose::Bye if status >= 200 => {
                if let Some(id) = call {
                    // Any final answer ends the dialog (RFC 3261 §15.1.1), even a challenge.
                    let reason = if status < 300 {
                        "hangup".to_string()
                    } else {
                        format!("hangup (BYE answered {status})")
                    };
                    self.finish(
                        id,
                        CallEvent::Ended {
                            by: Party::Local,
                            reason,
                        },
                    );
                }
            }
            Purpose::Bye => {}
            Purpose::Cancel => {}
        }
        if status >= 200
            && let Some(id) = call
        {
            self.reap(id);
        }
    }

    fn invite_response(&mut self, now: Instant, id: CallId, status: u16, response: Message) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if status < 200 {
            let first = !call.provisional;
            call.provisional = true;
            if call.cancel_pending {
                self.send_cancel(now, id);
                return;
            }
            if call.finished || call.cancel_outcome.is_some() {
                return;
            }
            if status == 100 {
                if first {
                    self.emit(id, CallEvent::Trying);
                }
                return;
            }
            if status == 180 {
                self.emit(id, CallEvent::Ringing);
            }
            if !response.body.is_empty() {
                match AudioSdp::parse(&response.body) {
                    Ok(sdp) => self.emit(id, CallEvent::EarlyMedia { sdp }),
                    Err(e) => tracing::debug!(error = %e, "ignoring unusable early-media SDP"),
                }
            } else if status != 180 {
                self.emit(id, CallEvent::Ringing);
            }
            return;
        }
        if status < 300 {
            self.invite_success(now, id, response);
            return;
        }
        // Challenges: answer once per nonce with the provider's credentials.
        if (status == 401 || status == 407)
            && call.cancel_outcome.is_none()
            && !call.finished
            && let Some(header) = self.authorization(id, status, &response)
        {
            if let Some(call) = self.calls.get_mut(&id) {
                call.auth_tries += 1;
                call.auth_header = Some(header);
            }
            self.send_invite(now, id);
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let reason = match &response.start {
            StartLine::Response { reason, .. } => reason.clone(),
            StartLine::Request { .. } => String::new(),
        };
        let event = match call.cancel_outcome.take() {
            Some(outcome) if status == 487 => outcome,
            _ => CallEvent::Failed {
                status,
                reason: if reason.is_empty() {
                    format!("status {status}")
                } else {
                    reason
                },
            },
        };
        self.finish(id, event);
    }

    fn authorization(
        &self,
        id: CallId,
        status: u16,
        response: &Message,
    ) -> Option<(String, String)> {
        let call = self.calls.get(&id)?;
        let provider = self.config.providers.get(call.provider?)?;
        let (user, pass) = (provider.username.as_ref()?, provider.password.as_ref()?);
        let (challenge_name, answer_name) = if status == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let values: Vec<String> = response.header_values(challenge_name).collect();
        let challenge = match Challenge::best(values.iter().map(String::as_str)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(provider = %provider.name, error = %e, "cannot answer challenge");
                return None;
            }
        };
        // A second challenge for the same credentials means they are wrong, unless the nonce was stale.
        if call.auth_tries >= 1 && !challenge.stale || call.auth_tries >= 3 {
            return None;
        }
        let answer = challenge.answer(user, pass, "INVITE", &call.target, 1, &token());
        Some((answer_name.to_string(), answer))
    }

    fn invite_success(&mut self, now: Instant, id: CallId, response: Message) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.state == CallState::Answered || call.ack.is_some() {
            let same = response.to.tag == call.remote_tag;
            if same {
                self.resend_ack(id);
            } else {
                tracing::warn!(
                    call = id.0,
                    "2xx from a second fork; only the first is kept"
                );
            }
            return;
        }
        call.remote_tag = response.to.tag.clone();
        call.remote_target = response
            .header("Contact")
            .and_then(|c| NameAddr::parse(&c, "Contact").ok())
            .map(|n| n.uri);
        // UAC route set: Record-Route in reverse order (RFC 3261 §12.1.2).
        let mut routes: Vec<String> = response
            .header_values("Record-Route")
            .flat_map(|v| {
                split_list(&v)
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        routes.reverse();
        call.route_set = routes;
        call.state = CallState::Answered;
        call.ring_deadline = None;
        let cseq = response.cseq;
        // ACK every 2xx, even one we will end at once.
        let branch = format!("z9hG4bK{}", token());
        let ack = self.build_request(id, rsip::Method::Ack, &branch, Some(cseq), &[], &[]);
        if let (Some(ack), Some(dest)) = (ack, self.dialog_dest_of(id)) {
            if let Some(call) = self.calls.get_mut(&id) {
                call.ack = Some((ack.clone(), dest));
            }
            self.send(dest, ack);
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(outcome) = call.cancel_outcome.take() {
            // Answered while our CANCEL was in flight: hang up at once.
            self.send_bye(now, id);
            self.finish(id, outcome);
            return;
        }
        let negotiated = AudioSdp::parse(&response.body)
            .map_err(|e| e.to_string())
            .and_then(|sdp| {
                call.offer
                    .negotiate(&sdp)
                    .map(|codec| (sdp, codec))
                    .map_err(|e| e.to_string())
            });
        match negotiated {
            Ok((sdp, codec)) => {
                call.codec = Some(codec);
                self.emit(id, CallEvent::Answered { sdp, codec });
            }
            Err(reason) => {
                self.send_bye(now, id);
                self.finish(
                    id,
                    CallEvent::Failed {
                        status: 488,
                        reason: format!("answer unusable: {reason}"),
                    },
                );
            }
        }
    }

    fn resend_ack(&mut self, id: CallId) {
        let Some((ack, dest)) = self.calls.get(&id).and_then(|c| c.ack.clone()) else {
            return;
        };
        self.stats.retransmissions += 1;
        self.send(dest, ack);
    }

    fn server_key(request: &Message, method: rsip::Method) -> String {
        format!(
            "{} {}:{} {method}",
            request.via.branch,
            request.via.host,
            request.via.port.unwrap_or(5060)
        )
    }

    fn handle_request(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        request: Message,
    ) {
        let StartLine::Request { method, .. } = request.start.clone() else {
            return;
        };
        // RFC 3261 §18.2.2 with RFC 3581: answer where it came from.
        let dest = Dest {
            transport,
            addr: from,
        };
        if method == rsip::Method::Ack {
            self.handle_ack(now, request);
            return;
        }
        let key = Self::server_key(&request, method);
        if let Some(entry) = self.servers.get(&key) {
            if let Some(bytes) = entry.tx.on_retransmission() {
                self.stats.retransmissions += 1;
                self.send(dest, bytes);
            }
            return;
        }
        let mut tx = ServerTx::new(
            method == rsip::Method::Invite,
            transport.reliable(),
            self.config.timers,
        );
        if method == rsip::Method::Invite {
            let trying = self.response(&request, from, 100, "Trying", None, &[], &[]);
            tx.respond(now, 100, trying.clone());
            self.send(dest, trying);
        }
        self.servers.insert(key.clone(), ServerEntry { tx, dest });

        if method == rsip::Method::Cancel {
            self.handle_cancel(now, &key, &request, from);
            return;
        }
        let call = self.by_call_id.get(&request.call_id).copied().filter(|id| {
            self.calls
                .get(id)
                .is_some_and(|c| request.to.tag.as_deref() == Some(c.local_tag.as_str()))
        });
        match (call, request.to.tag.is_some(), method) {
            (Some(id), _, _) => self.in_dialog(now, &key, id, method, request, from),
            (None, true, _) | (None, false, rsip::Method::Bye) => {
                self.stats.unknown_dialog += 1;
                self.respond_481(now, &key, &request, from);
            }
            (None, false, rsip::Method::Options) => {
                let extra = [("Accept".to_string(), "application/sdp".to_string())];
                self.respond(now, &key, &request, from, 200, "OK", &extra, &[]);
            }
            (None, false, rsip::Method::Invite) => {
                self.respond(
                    now,
                    &key,
                    &request,
                    from,
                    403,
                    "Forbidden (this service places calls, it does not take them)",
                    &[],
                    &[],
                );
            }
            (None, false, _) => {
                self.respond(
                    now,
                    &key,
                    &request,
                    from,
                    405,
                    "Method Not Allowed",
                    &[],
                    &[],
                );
            }
        }
    }

    fn handle_ack(&mut self, now: Instant, request: Message) {
        let key = Self::server_key(&request, rsip::Method::Invite);
        if let Some(entry) = self.servers.get_mut(&key) {
            entry.tx.on_ack(now);
            if let Some(at) = entry.tx.deadline() {
                self.schedule(at, TimerRef::Server(key));
            }
        }
        let Some(id) = self.by_call_id.get(&request.call_id).copied() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .pending_2xx
            .as_ref()
            .is_some_and(|p| p.cseq == request.cseq)
        {
            call.pending_2xx = None;
            // An offer in our 2xx is answered in the ACK.
            if !request.body.is_empty()
                && let Ok(sdp) = AudioSdp::parse(&request.body)
            {
                self.emit(id, CallEvent::MediaChanged { sdp });
            }
            self.reap(id);
        }
    }

    fn handle_cancel(&mut self, now: Instant, key: &str, request: &Message, from: SocketAddr) {
        let invite_key = Self::server_key(request, rsip::Method::Invite);
        if !self.servers.contains_key(&invite_key) {
            self.respond_481(now, key, request, from);
            return;
        }
        // Only re-INVITEs reach a server INVITE transaction here, and they are
        // answered at once: there is never anything left to cancel.
        self.respond(now, key, request, from, 200, "OK", &[], &[]);
    }

    fn in_dialog(
        &mut self,
        now: Instant,
        key: &str,
        id: CallId,
        method: rsip::Method,
        request: Message,
        from: SocketAddr,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .remote_cseq
            .is_some_and(|last| request.cseq <= last && method != rsip::Method::Cancel)
        {
            self.respond(
                now,
                key,
                &request,
                from,
                500,
                "Server Internal Error (CSeq out of order)",
                &[],
                &[],
            );
            return;
        }
        call.remote_cseq = Some(request.cseq);
        match method {
            rsip::Method::Bye => {
                self.respond(now, key, &request, from, 200, "OK", &[], &[]);
                let Some(call) = self.calls.get_mut(&id) else {
                    return;
                };
                call.pending_2xx = None;
                let reason = request
                    .header("Reason")
                    .unwrap_or_else(|| "remote hangup".into());
                self.finish(
                    id,
                    CallEvent::Ended {
                        by: Party::Remote,
                        reason,
                    },
                );
            }
            rsip::Method::Invite => self.reinvite(now, key, id, request, from),
            rsip::Method::Info | rsip::Method::Options => {
                self.respond(now, key, &request, from, 200, "OK", &[], &[]);
            }
            _ => {
                let extra = [(
                    "Allow".to_string(),
                    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO".to_string(),
                )];
                self.respond(
                    now,
                    key,
                    &request,
                    from,
                    405,
                    "Method Not Allowed",
                    &extra,
                    &[],
                );
            }
        }
    }

    fn reinvite(
        &mut self,
        now: Instant,
        key: &str,
        id: CallId,
        request: Message,
        from: SocketAddr,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.state != CallState::Answered || call.finished {
            self.respond_481(now, key, &request, from);
            return;
        }
        if call.pending_2xx.is_some() {
            let extra = [("Retry-After".to_string(), "1".to_string())];
            self.respond(
                now,
                key,
                &request,
                from,
                500,
                "Server Internal Error (previous re-INVITE not yet acknowledged)",
                &extra,
                &[],
            );
            return;
        }
        if let Some(contact) = request
            .header("Contact")
            .and_then(|c| NameAddr::parse(&c, "Contact").ok())
        {
            call.remote_target = Some(contact.uri);
        }
        let codec = call.codec.unwrap_or(Codec::Pcmu);
        let body = if request.body.is_empty() {
            // They want our offer; their answer comes in the ACK.
            call.offer.session.1 += 1;
            call.offer.to_bytes()
        } else {
            let offer = match AudioSdp::parse(&request.body) {
                Ok(o) => o,
                Err(e) => {
                    let reason = format!("Not Acceptable Here ({e})");
                    self.respond(now, key, &request, from, 488, &reason, &[], &[]);
                    return;
                }
            };
            let answer = match call.offer.answer_to(&offer, codec) {
                Ok(a) => a,
                Err(e) => {
                    let reason = format!("Not Acceptable Here ({e})");
                    self.respond(now, key, &request, from, 488, &reason, &[], &[]);
                    return;
                }
            };
            call.offer.session.1 = answer.session.1;
            if let Some(c) = answer.first_codec() {
                call.codec = Some(c);
            }
            self.emit(id, CallEvent::MediaChanged { sdp: offer });
            answer.to_bytes()
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let dest_transport = call.dest.transport;
        let contact = self
            .local(dest_transport, from)
            .map(|l| self.contact(l, dest_transport));
        let mut extra = vec![("Content-Type".to_string(), "application/sdp".to_string())];
        if let Some(c) = contact {
            extra.push(("Contact".to_string(), c));
        }
        let bytes = self.respond(now, key, &request, from, 200, "OK", &extra, &body);
        let t1 = self.config.timers.t1();
        let give_up = now + self.config.timers.t64();
        let reliable = dest_transport.reliable();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.pending_2xx = Some(Pending2xx {
            bytes,
            cseq: request.cseq,
            next: if reliable { give_up } else { now + t1 },
            interval: t1,
            give_up,
        });
        self.schedule(
            if reliable { give_up } else { now + t1 },
            TimerRef::Call(id),
        );
    }

    /// Answers a request that belongs to no dialog or transaction we know.
    fn respond_481(&mut self, now: Instant, key: &str, request: &Message, from: SocketAddr) {
        self.respond(
            now,
            key,
            request,
            from,
            481,
            "Call/Transaction Does Not Exist",
            &[],
            &[],
        );
    }

    /// Sends a response through the server transaction `key`; returns the bytes.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        now: Instant,
        key: &str,
        request: &Message,
        from: SocketAddr,
        status: u16,
        reason: &str,
        extra: &[(String, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let to_tag = self
            .by_call_id
            .get(&request.call_id)
            .and_then(|id| self.calls.get(id))
            .map(|c| c.local_tag.clone());
        let bytes = self.response(request, from, status, reason, to_tag, extra, body);
        let Some(entry) = self.servers.get_mut(key) else {
            return bytes;
        };
        entry.tx.respond(now, status, bytes.clone());
        let dest = entry.dest;
        if let Some(at) = entry.tx.deadline() {
            self.schedule(at, TimerRef::Server(key.to_string()));
        }
        self.send(dest, bytes.clone());
        bytes
    }

    /// Builds a response echoing the request's Via (with received/rport), From, To, Call-ID, CSeq.
    #[allow(clippy::too_many_arguments)]
    fn response(
        &self,
        request: &Message,
        from: SocketAddr,
        status: u16,
        reason: &str,
        to_tag: Option<String>,
        extra: &[(String, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let mut text = format!("SIP/2.0 {status} {reason}\r\n");
        for (i, via) in request.vias.iter().enumerate() {
            if i == 0 {
                let mut top = via.clone();
                let sent_by_ip = ip_of(&request.via.host);
                if sent_by_ip != Some(from.ip()) {
                    let _ = write!(top, ";received={}", from.ip());
                }
                if request.via.rport {
                    // Replace the bare rport with the source port (RFC 3581 §4).
                    top = top
                        .split(';')
                        .map(|p| {
                            if p.trim().eq_ignore_ascii_case("rport") {
                                format!("rport={}", from.port())
                            } else {
                                p.to_string()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(";");
                }
                let _ = write!(text, "Via: {top}\r\n");
            } else {
                let _ = write!(text, "Via: {via}\r\n");
            }
        }
        for v in request.header_values("Record-Route") {
            let _ = write!(text, "Record-Route: {v}\r\n");
        }
        let _ = write!(
            text,
            "From: {}\r\n",
            request.header("From").unwrap_or_default()
        );
        let to = request.header("To").unwrap_or_default();
        match (&request.to.tag, status > 100) {
            (None, true) => {
                let tag = to_tag.unwrap_or_else(token);
                let _ = write!(text, "To: {to};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(text, "To: {to}\r\n");
            }
        }
        let _ = write!(
            text,
            "Call-ID: {}\r\nCSeq: {} {}\r\n",
            request.call_id, request.cseq, request.cseq_method
        );
        for (name, value) in extra {
            let _ = write!(text, "{name}: {value}\r\n");
        }
        if (status == 200 || status == 405) && !extra.iter().any(|(n, _)| n == "Allow") {
            text.push_str("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO\r\n");
        }
        let _ = write!(
            text,
            "Server: {}\r\nContent-Length: {}\r\n\r\n",
            self.config.user_agent,
            body.len()
        );
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

/// Where a URI points: its host must be an IP address (no DNS here).
fn uri_dest(uri: &SipUri, default_transport: Transport) -> Option<Dest> {
    let addr = uri.socket_addr()?;
    Some(Dest {
        transport: uri.transport().unwrap_or(default_transport),
        addr,
    })
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's
/// Request-URI, top Via, From, Call-ID and Route; the response's To.
fn ack_for_failure(invite: &[u8], response: &Message) -> Option<Vec<u8>> {
    let parsed = message::parse(invite, usize::MAX).ok()?;
    let StartLine::Request { uri, .. } = &parsed.start else {
        return None;
    };
    let mut text = format!("ACK {uri} SIP/2.0\r\nVia: {}\r\n", parsed.vias.first()?);
    let _ = write!(text, "From: {}\r\n", parsed.header("From")?);
    let _ = write!(text, "To: {}\r\n", response.header("To")?);
    let _ = write!(
        text,
        "Call-ID: {}\r\nCSeq: {} ACK\r\nMax-Forwards: 70\r\n",
        parsed.call_id, parsed.cseq
    );
    for route in parsed.header_values("Route") {
        let _ = write!(text, "Route: {route}\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Some(text.into_bytes())
}

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
