//! Runs the sans-IO [`Endpoint`] on tokio sockets: UDP and TCP listeners,
//! outbound TCP connections, the timer, and one event channel per call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use super::SipError;
use super::dns::system::SystemDns;
use super::dns::{Answer, Query};
use super::endpoint::{
    CallEvent, CallId, CallRequest, Config, Endpoint, Event, RegistrationState, Stats,
};
use super::message::Transport;
use super::transport::StreamFramer;

/// A placed call: its id (for [`SipService::hangup`]) and its events.
#[derive(Debug)]
pub struct PlacedCall {
    /// The call's id.
    pub id: CallId,
    /// Its SIP Call-ID header, as the far end and the trunk's records see it.
    pub sip_call_id: String,
    /// Progress, ending with `Failed` or `Ended`; the channel closes after that.
    pub events: mpsc::UnboundedReceiver<CallEvent>,
}

enum Command {
    Place(
        Box<CallRequest>,
        oneshot::Sender<Result<PlacedCall, SipError>>,
    ),
    Hangup(CallId),
    Stats(oneshot::Sender<Stats>),
    ProviderUp(String, oneshot::Sender<Option<bool>>),
    /// Remove the registrations, then answer (and stop).
    Shutdown(oneshot::Sender<()>),
}

/// A provider's registration as operators see it (admin page and API,
/// `/metrics`), with wall-clock times.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegistrationView {
    /// `registering`, `registered`, `failed` or `unregistered`.
    pub state: &'static str,
    /// Registered until then (ms since the Unix epoch).
    pub until_ms: Option<i64>,
    /// Why the last try failed.
    pub reason: Option<String>,
    /// When the next try goes out (ms since the Unix epoch).
    pub retry_ms: Option<i64>,
}

impl RegistrationView {
    fn of(state: &RegistrationState) -> RegistrationView {
        let wall = |at: Instant| {
            let now = std::time::SystemTime::now();
            let then = now + at.saturating_duration_since(Instant::now());
            then.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        match state {
            RegistrationState::Registering => RegistrationView {
                state: "registering",
                until_ms: None,
                reason: None,
                retry_ms: None,
            },
            RegistrationState::Registered { until } => RegistrationView {
                state: "registered",
                until_ms: Some(wall(*until)),
                reason: None,
                retry_ms: None,
            },
            RegistrationState::Failed { reason, retry } => RegistrationView {
                state: "failed",
                until_ms: None,
                reason: Some(reason.clone()),
                retry_ms: Some(wall(*retry)),
            },
            RegistrationState::Unregistered => RegistrationView {
                state: "unregistered",
                until_ms: None,
                reason: None,
                retry_ms: None,
            },
        }
    }
}

/// Each registering provider's registration, kept by the SIP task.
type Registrations = Arc<std::sync::Mutex<std::collections::BTreeMap<String, RegistrationView>>>;

/// What the SIP task keeps up to date for the handles to read.
#[derive(Debug, Clone, Default)]
struct Views {
    trunk_calls: TrunkCalls,
    registrations: Registrations,
}

enum Inbound {
    Message(Transport, SocketAddr, Vec<u8>),
    Connected(SocketAddr, mpsc::UnboundedSender<Vec<u8>>),
    Closed(SocketAddr),
    /// A TCP connection we opened could not be made.
    Unreachable(SocketAddr),
    /// A DNS server's answer to one of the endpoint's queries.
    Answer(Query, Answer),
}

/// Handle to the running SIP stack. Cloneable; the stack stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct SipService {
    commands: mpsc::UnboundedSender<Command>,
    locals: Arc<Vec<(Transport, SocketAddr)>>,
    external: Option<super::HostPort>,
    /// Calls up through each provider and the registrations, kept by the
    /// SIP task.
    views: Views,
}

/// Calls up through each provider (placed and not yet failed or ended).
type TrunkCalls = Arc<std::sync::Mutex<HashMap<String, u32>>>;

impl SipService {
    /// Binds the configured listeners and starts the stack on the current tokio runtime.
    pub async fn start(config: Config) -> Result<Self, SipError> {
        config.check_addresses()?;
        let mut locals = Vec::new();
        let mut udp = Vec::new();
        for addr in &config.udp {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| SipError::Bind {
                    transport: Transport::Udp,
                    addr: *addr,
                    source,
                })?;
            let bound = socket.local_addr().map_err(|source| SipError::Bind {
                transport: Transport::Udp,
                addr: *addr,
                source,
            })?;
            locals.push((Transport::Udp, bound));
            udp.push(Arc::new(socket));
        }
        let mut tcp = Vec::new();
        for addr in &config.tcp {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| SipError::Bind {
                    transport: Transport::Tcp,
                    addr: *addr,
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| SipError::Bind {
                transport: Transport::Tcp,
                addr: *addr,
                source,
            })?;
            locals.push((Transport::Tcp, bound));
            tcp.push(listener);
        }
        let limit = config.max_message_bytes;
        let external = config.external_address.clone();
        // Without DNS (an unreadable resolv.conf) names fail to resolve,
        // each with this reason; addresses work as ever.
        let dns = SystemDns::new(&config.dns).map_err(|e| {
            tracing::warn!(error = %e, "no DNS resolver: providers and legs named by DNS names will fail");
            e
        });
        if !config.dns.is_empty()
            && let Err(e) = &dns
        {
            return Err(SipError::Resolver(e.clone()));
        }
        let views = Views::default();
        let endpoint =
            Endpoint::with_rng_seed(config, locals.clone(), Instant::now(), rand::random());
        {
            let mut shown = views
                .registrations
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (name, state) in endpoint.registrations() {
                shown.insert(name, RegistrationView::of(&state));
            }
        }
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound_rx) = mpsc::channel(4096);
        for socket in &udp {
            tokio::spawn(read_udp(socket.clone(), inbound_tx.clone(), limit));
        }
        for listener in tcp {
            tokio::spawn(accept_tcp(listener, inbound_tx.clone(), limit));
        }
        tokio::spawn(run(
            endpoint,
            dns,
            udp,
            command_rx,
            inbound_tx,
            inbound_rx,
            limit,
            views.clone(),
        ));
        Ok(SipService {
            commands,
            locals: Arc::new(locals),
            external,
            views,
        })
    }

    /// The addresses actually bound (port 0 in the config becomes a real port here).
    pub fn local_addrs(&self) -> &[(Transport, SocketAddr)] {
        &self.locals
    }

    /// The address peers are told to reach us at instead of the listeners
    /// (`[sip] external_address`), if any.
    pub fn external_address(&self) -> Option<&super::HostPort> {
        self.external.as_ref()
    }

    /// How many calls are up through provider `name` (placed, not yet
    /// failed or ended): what its `max_calls` is held against.
    pub fn calls_through(&self, name: &str) -> u32 {
        let calls = self
            .views
            .trunk_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        calls.get(name).copied().unwrap_or(0)
    }

    /// Each registering provider's registration.
    pub fn registrations(&self) -> std::collections::BTreeMap<String, RegistrationView> {
        self.views
            .registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes the registrations (REGISTER with `Expires: 0`), waits up to
    /// 2 s for the registrars' answers, and stops the stack.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), rx).await;
        }
    }

    /// Places a call and returns its event stream.
    pub async fn place_call(&self, request: CallRequest) -> Result<PlacedCall, SipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Place(Box::new(request), tx))
            .map_err(|_| SipError::Stopped)?;
        rx.await.map_err(|_| SipError::Stopped)?
    }

    /// Hangs up (CANCEL or BYE); the outcome arrives on the call's events.
    pub fn hangup(&self, call: CallId) {
        let _ = self.commands.send(Command::Hangup(call));
    }

    /// The stack's counters.
    pub async fn stats(&self) -> Result<Stats, SipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .map_err(|_| SipError::Stopped)?;
        rx.await.map_err(|_| SipError::Stopped)
    }

    /// Whether a provider answers OPTIONS (`None` until known).
    pub async fn provider_up(&self, name: &str) -> Result<Option<bool>, SipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::ProviderUp(name.to_string(), tx))
            .map_err(|_| SipError::Stopped)?;
        rx.await.map_err(|_| SipError::Stopped)
    }
}

async fn read_udp(socket: Arc<UdpSocket>, inbound: mpsc::Sender<Inbound>, limit: usize) {
    // One byte more than the limit, so an oversized datagram is seen as such.
    let mut buf = vec![0u8; limit.clamp(1500, 65_535) + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if inbound
                    .send(Inbound::Message(Transport::Udp, from, buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                // ICMP port unreachable and the like surface here on some systems; keep reading.
                tracing::debug!(error = %e, "UDP receive error");
            }
        }
    }
}

async fn accept_tcp(listener: TcpListener, inbound: mpsc::Sender<Inbound>, limit: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (tx, rx) = mpsc::unbounded_channel();
                if inbound.send(Inbound::Connected(peer, tx)).await.is_err() {
                    return;
                }
                tokio::spawn(connection(stream, peer, inbound.clone(), rx, limit));
            }
            Err(e) => tracing::warn!(error = %e, "TCP accept failed"),
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    limit: usize,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new(limit);
    let mut buf = vec![0u8; 16 * 1024];
    'stream: loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_message() {
                        Ok(Some(m)) => {
                            if inbound.send(Inbound::Message(Transport::Tcp, peer, m)).await.is_err() {
                                break 'stream;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "closing SIP TCP connection");
                            break 'stream;
                        }
                    }
                }
            }
            out = outgoing.recv() => {
                let Some(bytes) = out else { break };
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = inbound.send(Inbound::Closed(peer)).await;
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut endpoint: Endpoint,
    dns: Result<SystemDns, String>,
    udp: Vec<Arc<UdpSocket>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    inbound_tx: mpsc::Sender<Inbound>,
    mut inbound: mpsc::Receiver<Inbound>,
    limit: usize,
    views: Views,
) {
    let udp: Vec<(SocketAddr, Arc<UdpSocket>)> = udp
        .into_iter()
        .filter_map(|s| Some((s.local_addr().ok()?, s)))
        .collect();
    let mut conns: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut calls: HashMap<CallId, mpsc::UnboundedSender<CallEvent>> = HashMap::new();
    // The provider of each call placed through one, for `trunk_calls`.
    let mut through: HashMap<CallId, String> = HashMap::new();
    // Set by a shutdown: answer it once the removals are answered, or then.
    let mut stopping: Option<(oneshot::Sender<()>, Instant)> = None;
    let count = |name: &str, up: bool| {
        let mut counts = views.trunk_calls.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(name.to_string()).or_insert(0);
        *n = if up {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
    };
    loop {
        // Queries first: a failed one resumes at once and may send.
        while let Some(query) = endpoint.poll_query() {
            let inbound = inbound_tx.clone();
            match &dns {
                Ok(dns) => {
                    let dns = dns.clone();
                    tokio::spawn(async move {
                        let answer = dns.ask(&query).await;
                        let _ = inbound.send(Inbound::Answer(query, answer)).await;
                    });
                }
                Err(reason) => {
                    let answer = Answer::Failed {
                        reason: reason.clone(),
                    };
                    endpoint.handle_answer(Instant::now(), &query, answer);
                }
            }
        }
        while let Some(t) = endpoint.poll_transmit() {
            match t.transport {
                Transport::Udp => {
                    let Some((_, socket)) = udp
                        .iter()
                        .find(|(a, _)| a.is_ipv4() == t.destination.is_ipv4())
                    else {
                        tracing::warn!(to = %t.destination, "no UDP socket for this address family");
                        continue;
                    };
                    if let Err(e) = socket.try_send_to(&t.payload, t.destination) {
                        if e.kind() == std::io::ErrorKind::WouldBlock {
                            let _ = socket.send_to(&t.payload, t.destination).await;
                        } else {
                            tracing::debug!(to = %t.destination, error = %e, "UDP send failed");
                        }
                    }
                }
                Transport::Tcp => {
                    let sender = conns.entry(t.destination).or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        let inbound = inbound_tx.clone();
                        let peer = t.destination;
                        tokio::spawn(async move {
                            match TcpStream::connect(peer).await {
                                Ok(stream) => connection(stream, peer, inbound, rx, limit).await,
                                Err(e) => {
                                    tracing::warn!(%peer, error = %e, "SIP TCP connect failed");
                                    let _ = inbound.send(Inbound::Unreachable(peer)).await;
                                }
                            }
                        });
                        tx
                    });
                    let _ = sender.send(t.payload);
                }
            }
        }
        while let Some(event) = endpoint.poll_event() {
            match event {
                Event::Call { call, event } => {
                    let last = matches!(event, CallEvent::Failed { .. } | CallEvent::Ended { .. });
                    if let Some(tx) = calls.get(&call) {
                        let _ = tx.send(event);
                    }
                    if last {
                        calls.remove(&call);
                        if let Some(name) = through.remove(&call) {
                            count(&name, false);
                        }
                    }
                }
                Event::Provider { name, up } => {
                    tracing::info!(provider = %name, up, "provider status")
                }
                Event::Registration { name, state } => {
                    let mut shown = views
                        .registrations
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    shown.insert(name, RegistrationView::of(&state));
                }
            }
        }
        if let Some((_, since)) = &stopping
            && (!endpoint.unregistering() || since.elapsed() > std::time::Duration::from_secs(2))
        {
            if let Some((reply, _)) = stopping.take() {
                let _ = reply.send(());
            }
            return;
        }
        let deadline = endpoint.poll_timeout().map(tokio::time::Instant::from_std);
        let deadline = match &stopping {
            Some((_, since)) => {
                let end =
                    tokio::time::Instant::from_std(*since + std::time::Duration::from_secs(2));
                Some(deadline.map_or(end, |d| d.min(end)))
            }
            None => deadline,
        };
        tokio::select! {
            message = inbound.recv() => match message {
                Some(Inbound::Message(transport, from, bytes)) => endpoint.handle_input(Instant::now(), transport, from, &bytes),
                Some(Inbound::Connected(peer, tx)) => { conns.insert(peer, tx); }
                Some(Inbound::Closed(peer)) => { conns.remove(&peer); }
                Some(Inbound::Unreachable(peer)) => {
                    conns.remove(&peer);
                    endpoint.handle_transport_error(Instant::now(), Transport::Tcp, peer);
                }
                Some(Inbound::Answer(query, answer)) => endpoint.handle_answer(Instant::now(), &query, answer),
                None => return,
            },
            command = commands.recv() => match command {
                None => return,
                Some(Command::Place(request, reply)) => {
                    let provider = request.provider.clone();
                    let result = endpoint.place_call(Instant::now(), *request).map(|id| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        calls.insert(id, tx);
                        if let Some(name) = provider {
                            count(&name, true);
                            through.insert(id, name);
                        }
                        let sip_call_id = endpoint.sip_call_id(id).unwrap_or_default().to_string();
                        PlacedCall { id, sip_call_id, events: rx }
                    });
                    let _ = reply.send(result);
                }
                Some(Command::Hangup(id)) => endpoint.hangup(Instant::now(), id),
                Some(Command::Stats(reply)) => { let _ = reply.send(endpoint.stats()); }
                Some(Command::ProviderUp(name, reply)) => { let _ = reply.send(endpoint.provider_up(&name)); }
                Some(Command::Shutdown(reply)) => {
                    endpoint.unregister_all(Instant::now());
                    stopping = Some((reply, Instant::now()));
                }
            },
            _ = sleep_until(deadline) => endpoint.handle_timeout(Instant::now()),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
