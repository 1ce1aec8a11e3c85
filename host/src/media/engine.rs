//! The media engine: one thread that owns every leg's sockets and drives the
//! conferences' 20 ms clocks. It only moves bytes and time; what to do with
//! them is decided by the sans-IO [`Conference`] cores.
//!
//! Sockets are read once per frame rather than as packets arrive: the mixer
//! takes one frame per leg per tick anyway, and reading at the tick with
//! `recvmmsg` costs one system call per leg per frame instead of a
//! readiness wake-up and a read per packet. When each packet arrived comes
//! from the kernel's receive timestamp (`SO_TIMESTAMPNS`), so the jitter
//! buffer and RTCP see real interarrival jitter, not the 20 ms grid.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::MediaError;
use super::jitter::JitterConfig;
use super::mixer::{Channel, Conference, FRAME, LegConfig, LegId, LegStats, MediaEvent};
use super::rtcp::NtpClock;
use super::tone::Playback;

/// Where legs get their ports, and how the engine runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// The address leg sockets bind to (and that SDP offers advertise,
    /// unless `external_address` is set).
    pub address: IpAddr,
    /// The address SDP offers give for our RTP (behind NAT, the public
    /// one); the port is the bound one.
    pub external_address: Option<IpAddr>,
    /// First and last port of the RTP range; each leg takes an even port
    /// for RTP and the next one for RTCP.
    pub ports: (u16, u16),
    /// Jitter buffer bounds for new legs.
    pub jitter: JitterConfig,
    /// Our RTCP CNAME.
    pub cname: String,
    /// Pin the engine thread to this CPU (benchmarks measure one core).
    pub cpu: Option<usize>,
    /// Ask the kernel for receive timestamps, so that arrival times (jitter
    /// buffer, RTCP jitter) are exact rather than on the 20 ms read grid.
    pub receive_timestamps: bool,
    /// How long an answered leg may send neither RTP nor RTCP before the
    /// session ends it (the session sets it on each leg's [`LegConfig`]).
    pub rtp_timeout: std::time::Duration,
    /// The same while the leg is on hold.
    pub hold_timeout: std::time::Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            external_address: None,
            ports: (20000, 29999),
            jitter: JitterConfig::default(),
            cname: "switchboard@localhost".into(),
            cpu: None,
            receive_timestamps: true,
            rtp_timeout: std::time::Duration::from_secs(30),
            hold_timeout: std::time::Duration::from_secs(3600),
        }
    }
}

impl MediaConfig {
    /// Checks the values before any socket is opened.
    pub fn validate(&self) -> Result<(), MediaError> {
        let (first, last) = self.ports;
        if first == 0 || pairs_in(self.ports).is_none() {
            return Err(MediaError::Config(format!(
                "port range {first}-{last} must hold at least one even/odd pair and not start at 0"
            )));
        }
        if self.jitter.max_delay < self.jitter.min_delay {
            return Err(MediaError::Config(
                "jitter max_delay is below min_delay".into(),
            ));
        }
        Ok(())
    }
}

/// The first even port of a range and how many even/odd pairs fit in it.
fn pairs_in((first, last): (u16, u16)) -> Option<(u16, u64)> {
    let first = first.checked_add(first % 2)?;
    let pairs = (u64::from(last) + 1).checked_sub(u64::from(first))? / 2;
    (pairs > 0).then_some((first, pairs))
}

/// Identifies a conference in the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConferenceId(pub u64);

/// Counters of the engine as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Conferences open.
    pub conferences: u64,
    /// Legs open.
    pub legs: u64,
    /// Frames (one per leg per tick) sent.
    pub frames: u64,
    /// Frames sent more than one frame period after they were due, or
    /// skipped because the engine fell that far behind.
    pub late_frames: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams refused by the conference cores (not RTP, wrong source...).
    pub datagrams_refused: u64,
    /// Datagrams that could not be sent.
    pub send_errors: u64,
    /// Largest delay of a frame after its due time, in microseconds.
    pub max_lateness_us: u64,
}

#[derive(Default)]
struct SharedStats {
    conferences: AtomicU64,
    legs: AtomicU64,
    frames: AtomicU64,
    late_frames: AtomicU64,
    datagrams_in: AtomicU64,
    datagrams_refused: AtomicU64,
    send_errors: AtomicU64,
    max_lateness_us: AtomicU64,
}

/// An event from one of the engine's conferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// Which conference.
    pub conference: ConferenceId,
    /// What happened.
    pub event: MediaEvent,
}

/// A leg just created: where its far end must send RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegHandle {
    /// The leg.
    pub id: LegId,
    /// Our RTP address (RTCP is the next port).
    pub local: SocketAddr,
    /// The address to give the far end in SDP: `local`, or the external
    /// address with `local`'s port.
    pub advertised: SocketAddr,
}

enum Command {
    CreateConference(ConferenceId),
    DestroyConference(ConferenceId),
    AddLeg {
        conference: ConferenceId,
        id: LegId,
        config: LegConfig,
        rtp: UdpSocket,
        rtcp: UdpSocket,
        numbering: (u32, u16, u32),
    },
    UpdateLeg(ConferenceId, LegId, LegConfig),
    RemoveLeg(
        ConferenceId,
        LegId,
        mpsc::Sender<Result<LegStats, MediaError>>,
    ),
    Play(ConferenceId, LegId, Playback),
    StopPlayback(ConferenceId, LegId),
    SetMuted(ConferenceId, LegId, bool),
    LegStats(
        ConferenceId,
        LegId,
        mpsc::Sender<Result<LegStats, MediaError>>,
    ),
    Shutdown,
}

/// Handle to the media engine thread. Dropping it stops the thread.
pub struct MediaEngine {
    config: MediaConfig,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SharedStats>,
    next_id: AtomicU64,
    next_port: AtomicU64,
}

impl MediaEngine {
    /// Starts the engine thread; events from every conference arrive on the
    /// returned receiver.
    pub fn start(
        config: MediaConfig,
    ) -> Result<(MediaEngine, UnboundedReceiver<EngineEvent>), MediaError> {
        config.validate()?;
        let (commands, rx) = mpsc::channel();
        let (events_tx, events) = unbounded_channel();
        let stats = Arc::new(SharedStats::default());
        let worker = Worker {
            commands: rx,
            events: events_tx,
            stats: stats.clone(),
            conferences: HashMap::new(),
            ntp: NtpClock::new(
                Instant::now(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            cname: config.cname.clone(),
            cpu: config.cpu,
        };
        let thread = std::thread::Builder::new()
            .name("media".into())
            .spawn(move || worker.run())?;
        let first_port = u64::from(config.ports.0);
        Ok((
            MediaEngine {
                config,
                commands,
                thread: Some(thread),
                stats,
                next_id: AtomicU64::new(1),
                next_port: AtomicU64::new(first_port),
            },
            events,
        ))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    fn send(&self, command: Command) -> Result<(), MediaError> {
        self.commands.send(command).map_err(|_| MediaError::Stopped)
    }

    /// Opens a new, empty conference.
    pub fn create_conference(&self) -> Result<ConferenceId, MediaError> {
        let id = ConferenceId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.send(Command::CreateConference(id))?;
        Ok(id)
    }

    /// Closes a conference and every leg still in it.
    pub fn destroy_conference(&self, id: ConferenceId) -> Result<(), MediaError> {
        self.send(Command::DestroyConference(id))
    }

    /// Opens a leg's RTP/RTCP port pair and adds the leg to a conference. The
    /// returned address goes into the leg's SDP.
    pub fn add_leg(
        &self,
        conference: ConferenceId,
        mut config: LegConfig,
    ) -> Result<LegHandle, MediaError> {
        let (rtp, rtcp) = self.bind_pair()?;
        let local = rtp.local_addr()?;
        let id = LegId(self.next_id.fetch_add(1, Ordering::Relaxed));
        if config.jitter == JitterConfig::default() {
            config.jitter = self.config.jitter;
        }
        let numbering = (rand::random(), rand::random(), rand::random());
        self.send(Command::AddLeg {
            conference,
            id,
            config,
            rtp,
            rtcp,
            numbering,
        })?;
        let advertised = SocketAddr::new(
            self.config.external_address.unwrap_or(local.ip()),
            local.port(),
        );
        Ok(LegHandle {
            id,
            local,
            advertised,
        })
    }

    /// Binds the next free even/odd port pair of the range, round robin so a
    /// port just released is not reused at once.
    fn bind_pair(&self) -> Result<(UdpSocket, UdpSocket), MediaError> {
        let (first, last) = self.config.ports;
        let Some((first, pairs)) = pairs_in(self.config.ports) else {
            return Err(MediaError::PortsExhausted {
                address: self.config.address,
                first,
                last,
            });
        };
        for _ in 0..pairs {
            let n = self.next_port.fetch_add(2, Ordering::Relaxed);
            let port = u64::from(first) + (n.saturating_sub(u64::from(first)) % (pairs * 2));
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let Ok(rtp) = UdpSocket::bind(SocketAddr::new(self.config.address, port)) else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(self.config.address, port + 1)) else {
                continue;
            };
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            // Kernel receive timestamps: sockets are read once per frame,
            // and the jitter buffer and RTCP want when packets arrived.
            if self.config.receive_timestamps
                && let Err(e) = setsockopt(&rtp, sockopt::ReceiveTimestampns, &true)
            {
                tracing::debug!("no receive timestamps on port {port}: {e}");
            }
            return Ok((rtp, rtcp));
        }
        Err(MediaError::PortsExhausted {
            address: self.config.address,
            first,
            last,
        })
    }

    /// Changes a leg's far end or law (SDP answer, re-INVITE).
    pub fn update_leg(
        &self,
        conference: ConferenceId,
        leg: LegId,
        config: LegConfig,
    ) -> Result<(), MediaError> {
        self.send(Command::UpdateLeg(conference, leg, config))
    }

    /// Takes a leg out of its conference and closes its ports; returns its
    /// final figures.
    pub fn remove_leg(&self, conference: ConferenceId, leg: LegId) -> Result<LegStats, MediaError> {
        self.ask(|reply| Command::RemoveLeg(conference, leg, reply))
    }

    /// Plays a tone or prompt to one leg (ringback while the other party is
    /// called, a beep, a message).
    pub fn play(
        &self,
        conference: ConferenceId,
        leg: LegId,
        playback: Playback,
    ) -> Result<(), MediaError> {
        self.send(Command::Play(conference, leg, playback))
    }

    /// Stops a tone or prompt; the leg hears the conference again.
    pub fn stop_playback(&self, conference: ConferenceId, leg: LegId) -> Result<(), MediaError> {
        self.send(Command::StopPlayback(conference, leg))
    }

    /// Keeps a leg's audio out of the mix, or lets it back in.
    pub fn set_muted(
        &self,
        conference: ConferenceId,
        leg: LegId,
        muted: bool,
    ) -> Result<(), MediaError> {
        self.send(Command::SetMuted(conference, leg, muted))
    }

    /// One leg's figures: loss, jitter, what the far end reports.
    pub fn leg_stats(&self, conference: ConferenceId, leg: LegId) -> Result<LegStats, MediaError> {
        self.ask(|reply| Command::LegStats(conference, leg, reply))
    }

    /// Sends a command that answers, and waits (at most 5 s) for the answer.
    fn ask(
        &self,
        command: impl FnOnce(mpsc::Sender<Result<LegStats, MediaError>>) -> Command,
    ) -> Result<LegStats, MediaError> {
        let (tx, rx) = mpsc::channel();
        self.send(command(tx))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| MediaError::Stopped)?
    }

    /// The engine's counters.
    pub fn stats(&self) -> EngineStats {
        let s = &self.stats;
        EngineStats {
            conferences: s.conferences.load(Ordering::Relaxed),
            legs: s.legs.load(Ordering::Relaxed),
            frames: s.frames.load(Ordering::Relaxed),
            late_frames: s.late_frames.load(Ordering::Relaxed),
            datagrams_in: s.datagrams_in.load(Ordering::Relaxed),
            datagrams_refused: s.datagrams_refused.load(Ordering::Relaxed),
            send_errors: s.send_errors.load(Ordering::Relaxed),
            max_lateness_us: s.max_lateness_us.load(Ordering::Relaxed),
        }
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct LegSockets {
    id: LegId,
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

struct Room {
    core: Conference,
    sockets: Vec<LegSockets>,
}

struct Worker {
    commands: mpsc::Receiver<Command>,
    events: UnboundedSender<EngineEvent>,
    stats: Arc<SharedStats>,
    conferences: HashMap<ConferenceId, Room>,
    ntp: NtpClock,
    cname: String,
    cpu: Option<usize>,
}

/// RTCP sockets are read every this many ticks (reports come every 5 s).
const RTCP_READ_EVERY: u64 = 10;
/// Commands handled at most per wake-up before due frames are mixed.
const COMMANDS_PER_WAKE: usize = 64;

impl Worker {
    fn run(mut self) {
        if let Some(cpu) = self.cpu {
            pin_to(cpu);
        }
        // Not Send (raw pointers into its own buffers): made on this thread.
        let mut batch = Batch::new();
        loop {
            let next = self
                .conferences
                .values()
                .filter_map(|r| r.core.poll_timeout())
                .min();
            let command = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        self.commands
                            .try_recv()
                            .map_err(|e| matches!(e, mpsc::TryRecvError::Disconnected))
                    } else {
                        self.commands
                            .recv_timeout(wait)
                            .map_err(|e| matches!(e, mpsc::RecvTimeoutError::Disconnected))
                    }
                }
                None => self.commands.recv().map_err(|_| true),
            };
            match command {
                Ok(Command::Shutdown) | Err(true) => return,
                Ok(command) => {
                    // Take what else is queued, but only so much: a stream
                    // of commands must not hold back the frames that are due.
                    self.command(command);
                    for _ in 0..COMMANDS_PER_WAKE {
                        match self.commands.try_recv() {
                            Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return,
                            Ok(command) => self.command(command),
                            Err(mpsc::TryRecvError::Empty) => break,
                        }
                    }
                }
                Err(false) => {}
            }
            let now = Instant::now();
            let wall = SystemTime::now();
            for (&conference, room) in &mut self.conferences {
                let Some(due) = room.core.poll_timeout() else {
                    continue;
                };
                if due > now {
                    continue;
                }
                // Each conference counts its own ticks: conferences tick at
                // different phases, so a shared counter would leave some
                // of them never reading RTCP.
                let read_rtcp = room.core.ticks().is_multiple_of(RTCP_READ_EVERY);
                read_sockets(room, &mut batch, (now, wall), read_rtcp, &self.stats);
                let ran = room.core.handle_timeout(now);
                let legs = room.core.len() as u64;
                while let Some(t) = room.core.poll_transmit() {
                    let Some(s) = room.sockets.iter().find(|s| s.id == t.leg) else {
                        continue;
                    };
                    let socket = match t.channel {
                        Channel::Rtp => &s.rtp,
                        Channel::Rtcp => &s.rtcp,
                    };
                    if socket.send_to(&t.bytes, t.to).is_err() {
                        self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                while let Some(event) = room.core.poll_event() {
                    let _ = self.events.send(EngineEvent { conference, event });
                }
                // Lateness: when the last frame of each tick left, against
                // when it was due. Ticks skipped while far behind are late.
                let done = Instant::now();
                let expected =
                    (now.saturating_duration_since(due).as_micros() / FRAME.as_micros()) as u64 + 1;
                let mut late = expected.saturating_sub(u64::from(ran)) * legs;
                for k in 0..u64::from(ran) {
                    let due_k = due + FRAME * k as u32;
                    let lateness = done.saturating_duration_since(due_k);
                    self.stats
                        .max_lateness_us
                        .fetch_max(lateness.as_micros() as u64, Ordering::Relaxed);
                    if lateness > FRAME {
                        late += legs;
                    }
                }
                self.stats
                    .frames
                    .fetch_add(u64::from(ran) * legs, Ordering::Relaxed);
                self.stats.late_frames.fetch_add(late, Ordering::Relaxed);
            }
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::CreateConference(id) => {
                let core = Conference::new(now, self.ntp, self.cname.clone());
                self.conferences.insert(
                    id,
                    Room {
                        core,
                        sockets: Vec::new(),
                    },
                );
                self.stats.conferences.fetch_add(1, Ordering::Relaxed);
            }
            Command::DestroyConference(id) => {
                if let Some(room) = self.conferences.remove(&id) {
                    self.stats.conferences.fetch_sub(1, Ordering::Relaxed);
                    self.stats
                        .legs
                        .fetch_sub(room.sockets.len() as u64, Ordering::Relaxed);
                }
            }
            Command::AddLeg {
                conference,
                id,
                config,
                rtp,
                rtcp,
                numbering,
            } => {
                let Some(room) = self.conferences.get_mut(&conference) else {
                    tracing::warn!(%id, conference = conference.0, "leg added to a conference that does not exist");
                    return;
                };
                if let Err(e) = room.core.add_leg(now, id, config, numbering) {
                    tracing::warn!(%id, "cannot add leg: {e}");
                    return;
                }
                room.sockets.push(LegSockets { id, rtp, rtcp });
                self.stats.legs.fetch_add(1, Ordering::Relaxed);
            }
            Command::UpdateLeg(conference, leg, config) => {
                if let Some(room) = self.conferences.get_mut(&conference)
                    && let Err(e) = room.core.update_leg(now, leg, config)
                {
                    tracing::warn!(%leg, "cannot update leg: {e}");
                }
            }
            Command::RemoveLeg(conference, leg, reply) => {
                let result = match self.conferences.get_mut(&conference) {
                    Some(room) => {
                        let result = room.core.remove_leg(leg);
                        if result.is_ok() {
                            room.sockets.retain(|s| s.id != leg);
                            self.stats.legs.fetch_sub(1, Ordering::Relaxed);
                        }
                        result
                    }
                    None => Err(MediaError::UnknownConference(conference.0)),
                };
                let _ = reply.send(result);
            }
            Command::Play(conference, leg, playback) => {
                self.with_core(conference, |c| c.play(leg, playback));
            }
            Command::StopPlayback(conference, leg) => {
                self.with_core(conference, |c| c.stop_playback(leg));
            }
            Command::SetMuted(conference, leg, muted) => {
                self.with_core(conference, |c| c.set_muted(leg, muted));
            }
            Command::LegStats(conference, leg, reply) => {
                let result = match self.conferences.get(&conference) {
                    Some(room) => room.core.leg_stats(leg),
                    None => Err(MediaError::UnknownConference(conference.0)),
                };
                let _ = reply.send(result);
            }
            Command::Shutdown => {}
        }
    }

    fn with_core(
        &mut self,
        conference: ConferenceId,
        f: impl FnOnce(&mut Conference) -> Result<(), MediaError>,
    ) {
        let Some(room) = self.conferences.get_mut(&conference) else {
            tracing::warn!(conference = conference.0, "no such conference");
            return;
        };
        if let Err(e) = f(&mut room.core) {
            tracing::warn!(conference = conference.0, "{e}");
        }
    }
}

/// Datagrams taken from a socket per system call.
const BATCH: usize = 8;

/// Reusable buffers for `recvmmsg`: one system call takes every datagram
/// waiting on a socket (up to [`BATCH`]), so an idle socket costs one call
/// and a socket with one packet costs one call, not two.
struct Batch {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: Box<[[u8; 2048]; BATCH]>,
}

impl Batch {
    fn new() -> Self {
        Batch {
            headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec))),
            bufs: Box::new([[0; 2048]; BATCH]),
        }
    }

    /// Calls `f` with every datagram waiting on `socket`, and when it
    /// arrived: the kernel's receive timestamp (`SO_TIMESTAMPNS`) mapped onto
    /// `clock` (an instant and the wall-clock time read together), or the
    /// instant itself when the socket gave no timestamp.
    fn drain(
        &mut self,
        socket: &UdpSocket,
        clock: (Instant, SystemTime),
        mut f: impl FnMut(SocketAddr, &[u8], Instant),
    ) {
        loop {
            let mut got = [(None, 0usize, clock.0); BATCH];
            let mut count = 0;
            {
                let mut slices = self.bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
                match recvmmsg(
                    socket.as_raw_fd(),
                    &mut self.headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(results) => {
                        for r in results {
                            if count < BATCH {
                                let stamp = r.cmsgs().ok().and_then(|mut c| {
                                    c.find_map(|m| match m {
                                        ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                                        _ => None,
                                    })
                                });
                                let arrival = stamp.map_or(clock.0, |ts| arrival_of(ts, clock));
                                let from = r.address.as_ref().and_then(socket_addr);
                                got[count] = (from, r.bytes, arrival);
                                count += 1;
                            }
                        }
                    }
                    Err(Errno::EAGAIN) => return,
                    // ICMP port unreachable from an earlier send shows up
                    // here on Linux; it says nothing about this socket.
                    Err(Errno::ECONNREFUSED) => continue,
                    Err(e) => {
                        tracing::debug!("receive error: {e}");
                        return;
                    }
                }
            }
            for (i, (from, len, arrival)) in got.iter().take(count).enumerate() {
                if let Some(from) = from {
                    f(*from, &self.bufs[i][..(*len).min(2048)], *arrival);
                }
            }
            if count < BATCH {
                return;
            }
        }
    }
}

/// The instant a datagram arrived, from the kernel's wall-clock stamp and a
/// pair of (instant, wall clock) read together just after.
fn arrival_of(stamp: TimeSpec, clock: (Instant, SystemTime)) -> Instant {
    let secs = stamp.tv_sec().max(0) as u64;
    let nanos = stamp.tv_nsec().clamp(0, 999_999_999) as u32;
    match clock
        .1
        .duration_since(UNIX_EPOCH + Duration::new(secs, nanos))
    {
        // Never earlier than a few frames: a wall-clock step must not make
        // a packet look seconds old.
        Ok(age) => clock.0.checked_sub(age.min(FRAME * 5)).unwrap_or(clock.0),
        Err(_) => clock.0,
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6().map(|v6| {
        SocketAddr::V6(SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        ))
    })
}

/// Drains every leg's RTP socket (and RTCP when due) into the core.
fn read_sockets(
    room: &mut Room,
    batch: &mut Batch,
    clock: (Instant, SystemTime),
    read_rtcp: bool,
    stats: &SharedStats,
) {
    let core = &mut room.core;
    for s in &room.sockets {
        let mut take = |channel: Channel, from: SocketAddr, bytes: &[u8], arrival: Instant| {
            stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = core.handle_input(arrival, s.id, channel, from, bytes) {
                stats.datagrams_refused.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(leg = %s.id, "refused datagram from {from}: {e}");
            }
        };
        batch.drain(&s.rtp, clock, |from, bytes, at| {
            take(Channel::Rtp, from, bytes, at)
        });
        if read_rtcp {
            batch.drain(&s.rtcp, clock, |from, bytes, at| {
                take(Channel::Rtcp, from, bytes, at)
            });
        }
    }
}

/// Pins the calling thread to one CPU; a failure is logged, not fatal.
pub fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_err() {
        tracing::warn!(cpu, "no such CPU to pin the media thread to");
        return;
    }
    if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
        tracing::warn!(cpu, "cannot pin the media thread: {e}");
    }
}
