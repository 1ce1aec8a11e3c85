//! The conference core: every leg of a session hears the sum of all the
//! others minus itself. Sans-IO like the SIP endpoint: packets come in
//! through [`Conference::handle_input`], a 20 ms clock through
//! [`Conference::handle_timeout`], and what to send comes out of
//! [`Conference::poll_transmit`], events out of [`Conference::poll_event`].
//!
//! Mixing is O(N) per frame: each leg's frame is decoded once and added to
//! one 32-bit sum; each leg then gets the sum minus its own frame, clamped to
//! 16 bits, encoded in that leg's own law.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::MediaError;
use super::dtmf::DtmfReceiver;
use super::g711::Law;
use super::jitter::{CLOCK_RATE, FRAME_SAMPLES, Frame, JitterBuffer, JitterConfig, JitterStats};
use super::rtcp::{self, NtpClock, RemoteView, ReportBlock, RtcpPacket, SenderInfo};
use super::rtp::{ReceiveStats, RtpPacket, RtpSender, SeqVerdict};
use super::tone::{Playback, Player};

/// The mixer's frame period.
pub const FRAME: Duration = Duration::from_millis(20);
/// How often each leg sends an RTCP report (RFC 3550's minimum interval).
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// A latched address that has been silent this long may be replaced by a
/// new source (the far end's NAT rebound).
const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// Identifies a leg; chosen by whoever adds it, unique within a conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl std::fmt::Display for LegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "leg-{}", self.0)
    }
}

/// What the media plane needs to know about one leg (from the SDP answer,
/// or the offer for a leg not answered yet).
#[derive(Debug, Clone, PartialEq)]
pub struct LegConfig {
    /// The law negotiated for this leg.
    pub law: Law,
    /// Where the far end said it receives RTP, if known yet. Symmetric RTP
    /// replaces it with the address packets really come from.
    pub remote: Option<SocketAddr>,
    /// Where it receives RTCP, if it said so (`a=rtcp`); else RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// RFC 4733 telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
    /// Jitter buffer bounds.
    pub jitter: JitterConfig,
    /// Whether we send it RTP (false while it holds the call with
    /// `sendonly`, `inactive` or `c=0.0.0.0`: RFC 3264 §8.4). RTCP goes on.
    pub send: bool,
    /// Whether its audio goes into the mix (false while it said `recvonly`
    /// or `inactive`).
    pub receive: bool,
    /// How long the leg may send neither RTP nor RTCP before
    /// [`MediaEvent::TimedOut`]; none: forever. Counted from the last packet,
    /// or from when the leg was added or updated.
    pub timeout: Option<Duration>,
}

impl LegConfig {
    /// A leg speaking `law` to `remote`, with telephone-event on 101, both
    /// ways, with no media timeout.
    pub fn new(law: Law, remote: Option<SocketAddr>) -> Self {
        LegConfig {
            law,
            remote,
            remote_rtcp: None,
            telephone_event: Some(101),
            jitter: JitterConfig::default(),
            send: true,
            receive: true,
            timeout: None,
        }
    }

    /// The same with a media timeout.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same with the directions: `send` RTP to it, `receive` its audio.
    pub fn with_flow(mut self, send: bool, receive: bool) -> Self {
        self.send = send;
        self.receive = receive;
        self
    }
}

/// Whether a datagram came in on the leg's RTP or RTCP socket, and where a
/// transmit must go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The RTP port.
    Rtp,
    /// The RTCP port (RTP + 1).
    Rtcp,
}

/// A datagram to send from a leg's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Whose socket sends it.
    pub leg: LegId,
    /// RTP or RTCP socket.
    pub channel: Channel,
    /// Destination.
    pub to: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// Something that happened on a leg that the session may care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A DTMF key was pressed (RFC 4733).
    Dtmf {
        /// On which leg.
        leg: LegId,
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
    },
    /// RTP now goes to (and is expected from) this address.
    Latched {
        /// Which leg.
        leg: LegId,
        /// The far end's real address.
        remote: SocketAddr,
    },
    /// A tone or prompt started with [`Conference::play`] has ended; the leg
    /// hears the conference again.
    PlaybackDone {
        /// Which leg.
        leg: LegId,
    },
    /// The far end sent an RTCP BYE.
    RemoteBye {
        /// Which leg.
        leg: LegId,
    },
    /// The leg sent neither RTP nor RTCP for its configured timeout (the
    /// far end vanished: a phone switched off, a NAT binding lost). Sent
    /// once per leg until it is heard again or updated.
    TimedOut {
        /// Which leg.
        leg: LegId,
        /// When it was last heard (or added, if never): what it is billed to.
        last_heard: Instant,
    },
}

/// What is known about one leg's media, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LegStats {
    /// RTP packets received (valid, any payload type).
    pub packets_received: u64,
    /// Packets refused as not RTP, or of a payload type not negotiated, or
    /// from an address other than the latched one.
    pub packets_refused: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Packets lost on the way to us (RFC 3550 cumulative count).
    pub lost: i64,
    /// Packets expected from the far end so far.
    pub expected: u32,
    /// Interarrival jitter of the far end's stream, in microseconds.
    pub jitter_us: u64,
    /// The jitter buffer's counters.
    pub jitter_buffer: JitterStats,
    /// How the far end hears us, from its last RTCP report.
    pub remote: Option<RemoteView>,
    /// RTCP reports received.
    pub rtcp_received: u64,
    /// RTCP reports sent.
    pub rtcp_sent: u64,
}

/// What a received RTP packet carries, as far as the leg is concerned.
enum Payload {
    Audio,
    Event,
    ComfortNoise,
}

struct Leg {
    id: LegId,
    config: LegConfig,
    remote: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    latched: Option<(SocketAddr, Instant)>,
    sender: RtpSender,
    receive: ReceiveStats,
    jitter: JitterBuffer,
    dtmf: DtmfReceiver,
    player: Option<Player>,
    muted: bool,
    frame: [i16; FRAME_SAMPLES],
    speaking: bool,
    next_rtcp: Instant,
    stats: LegStats,
    /// The last packet (RTP or RTCP) from it, or when it was added/updated.
    last_heard: Instant,
    /// [`MediaEvent::TimedOut`] was sent for the current silence.
    timed_out: bool,
}

/// One conference: its legs, its clock and its queues.
pub struct Conference {
    legs: Vec<Leg>,
    index: HashMap<LegId, usize>,
    next_tick: Option<Instant>,
    epoch: Instant,
    ntp: NtpClock,
    cname: String,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MediaEvent>,
    decoded: Vec<i16>,
    total: [i32; FRAME_SAMPLES],
    payload: Vec<u8>,
    /// Ticks run since the start.
    ticks: u64,
}

impl Conference {
    /// An empty conference. `ntp` converts instants to wall-clock time for
    /// RTCP; `cname` names us in RTCP.
    pub fn new(now: Instant, ntp: NtpClock, cname: impl Into<String>) -> Self {
        Conference {
            legs: Vec::new(),
            index: HashMap::new(),
            next_tick: None,
            epoch: now,
            ntp,
            cname: cname.into(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            decoded: Vec::with_capacity(FRAME_SAMPLES * 2),
            total: [0; FRAME_SAMPLES],
            payload: Vec::with_capacity(FRAME_SAMPLES),
            ticks: 0,
        }
    }

    /// Adds a leg. `ssrc`, `first_sequence` and `first_timestamp` number
    /// what we send it (random, per RFC 3550). The clock starts with the
    /// first leg.
    pub fn add_leg(
        &mut self,
        now: Instant,
        id: LegId,
        config: LegConfig,
        numbering: (u32, u16, u32),
    ) -> Result<(), MediaError> {
        if self.index.contains_key(&id) {
            return Err(MediaError::DuplicateLeg(id));
        }
        let remote = config.remote;
        let remote_rtcp = config.remote_rtcp.or_else(|| remote.map(rtcp_of));
        // Spread the legs' reports over the interval.
        let offset = Duration::from_millis((id.0 % 5000) + 500);
        self.index.insert(id, self.legs.len());
        self.legs.push(Leg {
            id,
            jitter: JitterBuffer::new(config.jitter),
            config,
            remote,
            remote_rtcp,
            latched: None,
            sender: RtpSender::new(numbering.0, numbering.1, numbering.2),
            receive: ReceiveStats::default(),
            dtmf: DtmfReceiver::default(),
            player: None,
            muted: false,
            frame: [0; FRAME_SAMPLES],
            speaking: false,
            next_rtcp: now + offset,
            stats: LegStats::default(),
            last_heard: now,
            timed_out: false,
        });
        if self.next_tick.is_none() {
            self.next_tick = Some(now + FRAME);
        }
        Ok(())
    }

    /// Removes a leg; the others stop hearing it at the next frame.
    pub fn remove_leg(&mut self, id: LegId) -> Result<LegStats, MediaError> {
        let i = self.index.remove(&id).ok_or(MediaError::UnknownLeg(id))?;
        let leg = self.legs.swap_remove(i);
        if let Some(moved) = self.legs.get(i) {
            self.index.insert(moved.id, i);
        }
        if self.legs.is_empty() {
            self.next_tick = None;
        }
        Ok(self.leg_stats_of(&leg))
    }

    /// Updates a leg's far end (an SDP answer or re-INVITE arrived); its
    /// media timeout counts again from `now`.
    pub fn update_leg(
        &mut self,
        now: Instant,
        id: LegId,
        config: LegConfig,
    ) -> Result<(), MediaError> {
        let leg = self.leg_mut(id)?;
        leg.last_heard = leg.last_heard.max(now);
        leg.timed_out = false;
        if config.remote != leg.config.remote {
            leg.remote = config.remote;
            leg.latched = None;
            leg.remote_rtcp = config.remote_rtcp.or_else(|| config.remote.map(rtcp_of));
        }
        leg.config = config;
        Ok(())
    }

    /// Plays a tone or prompt to one leg instead of the conference until it
    /// ends or [`Conference::stop_playback`] (ringback repeats until then).
    pub fn play(&mut self, id: LegId, playback: Playback) -> Result<(), MediaError> {
        self.leg_mut(id)?.player = Some(Player::new(playback));
        Ok(())
    }

    /// Stops what [`Conference::play`] started; the leg hears the mix again.
    pub fn stop_playback(&mut self, id: LegId) -> Result<(), MediaError> {
        self.leg_mut(id)?.player = None;
        Ok(())
    }

    /// Keeps a leg's audio out of the mix (it still hears the others).
    pub fn set_muted(&mut self, id: LegId, muted: bool) -> Result<(), MediaError> {
        self.leg_mut(id)?.muted = muted;
        Ok(())
    }

    /// The legs, in no particular order.
    pub fn legs(&self) -> impl Iterator<Item = LegId> + '_ {
        self.legs.iter().map(|l| l.id)
    }

    /// Number of legs.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// Whether the conference has no legs.
    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    /// Ticks run so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Figures about one leg.
    pub fn leg_stats(&self, id: LegId) -> Result<LegStats, MediaError> {
        let i = *self.index.get(&id).ok_or(MediaError::UnknownLeg(id))?;
        Ok(self.leg_stats_of(&self.legs[i]))
    }

    fn leg_stats_of(&self, leg: &Leg) -> LegStats {
        let mut stats = leg.stats;
        stats.lost = leg.receive.cumulative_lost();
        stats.expected = leg.receive.expected();
        stats.jitter_us = leg.receive.jitter_duration(CLOCK_RATE).as_micros() as u64;
        stats.jitter_buffer = leg.jitter.stats();
        stats.packets_sent = u64::from(leg.sender.packets);
        stats
    }

    fn leg_mut(&mut self, id: LegId) -> Result<&mut Leg, MediaError> {
        let i = *self.index.get(&id).ok_or(MediaError::UnknownLeg(id))?;
        Ok(&mut self.legs[i])
    }

    /// Takes one datagram that arrived at `now` from `from` on a leg's RTP or
    /// RTCP socket. A bad packet is counted and refused with the reason;
    /// it never disturbs the conference.
    pub fn handle_input(
        &mut self,
        now: Instant,
        id: LegId,
        channel: Channel,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), MediaError> {
        let i = *self.index.get(&id).ok_or(MediaError::UnknownLeg(id))?;
        match channel {
            Channel::Rtp => self.rtp_input(now, i, from, bytes),
            Channel::Rtcp => self.rtcp_input(now, i, from, bytes),
        }
    }

    fn rtp_input(
        &mut self,
        now: Instant,
        i: usize,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), MediaError> {
        let leg = &mut self.legs[i];
        let packet = match RtpPacket::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                leg.stats.packets_refused += 1;
                return Err(e);
            }
        };
        // What the payload is, decided once: audio in the leg's law, a
        // telephone event, or comfort noise (13, legal without negotiation,
        // means silence). Anything else is refused before it can latch.
        let pt = packet.payload_type;
        let kind = if pt == leg.config.law.payload_type() {
            Payload::Audio
        } else if Some(pt) == leg.config.telephone_event {
            Payload::Event
        } else if pt == 13 {
            Payload::ComfortNoise
        } else {
            leg.stats.packets_refused += 1;
            return Err(MediaError::UnexpectedPayloadType(pt));
        };
        // Symmetric RTP: the first good packet of a negotiated type fixes
        // where the far end is; another source is ignored unless the latched
        // one has gone quiet.
        match leg.latched {
            Some((addr, _)) if addr == from => leg.latched = Some((from, now)),
            Some((_, last)) if now.saturating_duration_since(last) < RELATCH_AFTER => {
                leg.stats.packets_refused += 1;
                return Err(MediaError::WrongSource(from));
            }
            _ => {
                leg.latched = Some((from, now));
                if leg.remote != Some(from) {
                    leg.remote = Some(from);
                    if leg.config.remote_rtcp.is_none() {
                        leg.remote_rtcp = Some(rtcp_of(from));
                    }
                }
                self.events.push_back(MediaEvent::Latched {
                    leg: leg.id,
                    remote: from,
                });
            }
        }
        leg.stats.packets_received += 1;
        leg.last_heard = now;
        leg.timed_out = false;
        match kind {
            Payload::Audio if !leg.config.receive => {}
            Payload::Audio => {
                if leg.receive.record(&packet, now, self.epoch, CLOCK_RATE) == SeqVerdict::Restart {
                    tracing::debug!(leg = %leg.id, ssrc = packet.ssrc, "far end restarted its stream");
                }
                leg.config.law.decode(packet.payload, &mut self.decoded);
                leg.jitter.push(now, packet.timestamp, &self.decoded);
            }
            Payload::Event => {
                leg.receive.record(&packet, now, self.epoch, CLOCK_RATE);
                if let Some(digit) = leg.dtmf.receive(packet.timestamp, packet.payload)? {
                    self.events
                        .push_back(MediaEvent::Dtmf { leg: leg.id, digit });
                }
            }
            Payload::ComfortNoise => {}
        }
        Ok(())
    }

    fn rtcp_input(
        &mut self,
        now: Instant,
        i: usize,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), MediaError> {
        let ntp_now = self.ntp.at(now);
        let leg = &mut self.legs[i];
        let packets = rtcp::parse(bytes)?;
        leg.stats.rtcp_received += 1;
        leg.last_heard = now;
        leg.timed_out = false;
        if leg.config.remote_rtcp.is_none() {
            leg.remote_rtcp = Some(from);
        }
        let ours = leg.sender.ssrc();
        for packet in packets {
            let reports = match packet {
                RtcpPacket::SenderReport { info, reports, .. } => {
                    leg.receive.last_sr = Some((NtpClock::middle(info.ntp), now));
                    reports
                }
                RtcpPacket::ReceiverReport { reports, .. } => reports,
                RtcpPacket::Bye(_) => {
                    self.events.push_back(MediaEvent::RemoteBye { leg: leg.id });
                    continue;
                }
                RtcpPacket::Other(_) => continue,
            };
            if let Some(block) = reports.iter().find(|b| b.ssrc == ours) {
                leg.stats.remote = Some(RemoteView::from_block(block, ntp_now));
            }
        }
        Ok(())
    }

    /// When [`Conference::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Runs every frame that is due at `now`. Returns how many ticks ran; a
    /// caller that fell more than 10 frames behind has the missed frames
    /// skipped (and counted in the return value as not run).
    pub fn handle_timeout(&mut self, now: Instant) -> u32 {
        let mut ran = 0;
        while let Some(due) = self.next_tick {
            if due > now {
                break;
            }
            if now.saturating_duration_since(due) > FRAME * 10 {
                // Far behind (the process was stopped): start the clock again
                // rather than send a burst of stale frames.
                self.next_tick = Some(now);
                continue;
            }
            self.tick(due);
            self.next_tick = Some(due + FRAME);
            ran += 1;
        }
        ran
    }

    /// One 20 ms frame: take each leg's audio, sum once, and send each leg
    /// the sum minus itself (or its tone).
    fn tick(&mut self, now: Instant) {
        self.ticks += 1;
        self.total = [0; FRAME_SAMPLES];
        for leg in &mut self.legs {
            let kind = leg.jitter.pop(now, &mut leg.frame);
            leg.speaking = kind != Frame::Silence && !leg.muted;
            if leg.speaking {
                for (t, s) in self.total.iter_mut().zip(leg.frame.iter()) {
                    *t += i32::from(*s);
                }
            }
        }
        let mut out = [0i16; FRAME_SAMPLES];
        for leg in &mut self.legs {
            if let Some(timeout) = leg.config.timeout
                && !leg.timed_out
                && now.saturating_duration_since(leg.last_heard) >= timeout
            {
                leg.timed_out = true;
                self.events.push_back(MediaEvent::TimedOut {
                    leg: leg.id,
                    last_heard: leg.last_heard,
                });
            }
            if !leg.config.send {
                // On hold: nothing to it, but its reports go on.
                leg.sender.skip(FRAME_SAMPLES as u32);
                Self::report_due(leg, &self.ntp, now, &self.cname, &mut self.transmits);
                continue;
            }
            let Some(to) = leg.remote else {
                // Nowhere to send yet: keep the numbering moving with time.
                leg.sender.skip(FRAME_SAMPLES as u32);
                continue;
            };
            let mut playing = false;
            if let Some(player) = &mut leg.player {
                if player.next_frame(&mut out) {
                    playing = true;
                } else {
                    leg.player = None;
                    self.events
                        .push_back(MediaEvent::PlaybackDone { leg: leg.id });
                }
            }
            if !playing {
                if leg.speaking {
                    for ((o, t), s) in out.iter_mut().zip(self.total.iter()).zip(leg.frame.iter()) {
                        *o = (t - i32::from(*s)).clamp(i32::from(i16::MIN), i32::from(i16::MAX))
                            as i16;
                    }
                } else {
                    for (o, t) in out.iter_mut().zip(self.total.iter()) {
                        *o = (*t).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
                    }
                }
            }
            self.payload.clear();
            leg.config.law.encode(&out, &mut self.payload);
            let mut bytes = Vec::with_capacity(super::rtp::HEADER_LEN + FRAME_SAMPLES);
            let marker = leg.sender.packets == 0;
            leg.sender.write(
                now,
                leg.config.law.payload_type(),
                marker,
                &self.payload,
                FRAME_SAMPLES as u32,
                &mut bytes,
            );
            self.transmits.push_back(Transmit {
                leg: leg.id,
                channel: Channel::Rtp,
                to,
                bytes,
            });
            Self::report_due(leg, &self.ntp, now, &self.cname, &mut self.transmits);
        }
    }

    /// Queues the leg's RTCP report if one is due.
    fn report_due(
        leg: &mut Leg,
        ntp: &NtpClock,
        now: Instant,
        cname: &str,
        transmits: &mut VecDeque<Transmit>,
    ) {
        if now < leg.next_rtcp {
            return;
        }
        leg.next_rtcp = now + RTCP_INTERVAL;
        if let Some(to) = leg.remote_rtcp {
            let bytes = report(leg, ntp, now, cname);
            leg.stats.rtcp_sent += 1;
            transmits.push_back(Transmit {
                leg: leg.id,
                channel: Channel::Rtcp,
                to,
                bytes,
            });
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}

/// The conventional RTCP address: the RTP port plus one.
fn rtcp_of(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().saturating_add(1))
}

fn report(leg: &mut Leg, ntp: &NtpClock, now: Instant, cname: &str) -> Vec<u8> {
    let info = leg.sender.last_sent.map(|(ts, at)| {
        // The RTP timestamp matching `now`, extrapolated from the last packet.
        let since = now.saturating_duration_since(at);
        let units = (since.as_micros() as u64 * u64::from(CLOCK_RATE) / 1_000_000) as u32;
        SenderInfo {
            ntp: ntp.at(now),
            rtp_timestamp: ts.wrapping_add(units),
            packets: leg.sender.packets,
            octets: leg.sender.octets,
        }
    });
    let block = leg.receive.ssrc().map(|ssrc| {
        let (last_sr, delay) = match leg.receive.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                (lsr, (d.as_micros() as u64 * 65536 / 1_000_000) as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost: leg.receive.take_fraction_lost(),
            cumulative_lost: leg
                .receive
                .cumulative_lost()
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
                as i32,
            extended_max: leg.receive.extended_max(),
            jitter: leg.receive.jitter(),
            last_sr,
            delay_since_last_sr: delay,
        }
    });
    let mut out = Vec::new();
    rtcp::write_report(leg.sender.ssrc(), info, block, cname, &mut out);
    out
}
