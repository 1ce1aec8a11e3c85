//! A simulated provider for the demo: a small SIP user agent server on a
//! loopback UDP port that rings, answers and streams a tone to whoever it
//! is called by, as a real trunk's far end would.
//!
//! What a call does depends on the number's last digits, so the demo can
//! show failures: `…486` is busy, `…408` rings until it is given up, `…503`
//! fails as a provider outage (the router tries the next provider);
//! anything else rings for `ring` and answers. An answered call streams a
//! continuous tone (the provider's own pitch) until it receives a BYE.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::media::jitter::FRAME_SAMPLES;
use crate::media::rtp::RtpSender;
use crate::media::tone::Player;
use crate::media::{Law, Playback, Tone};
use crate::sip::message::{self, Message, StartLine};
use crate::sip::{AudioSdp, Codec};

/// A running simulated provider.
pub struct FarEnd {
    /// Where its SIP listens.
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Step {
    Datagram(Vec<u8>, SocketAddr),
    /// Time to answer (or fail) this call.
    Due(String),
    /// Resend the 2xx of this call until its ACK (RFC 3261 §13.3.1.4).
    Resend(String, u32),
}

struct Call {
    from: SocketAddr,
    invite: Message,
    to_tag: String,
    last: Option<Vec<u8>>,
    acked: bool,
    offer: Option<AudioSdp>,
    tone: Option<tokio::task::JoinHandle<()>>,
}

impl FarEnd {
    /// Starts a far end on `ip` (port chosen by the system) that rings for
    /// `ring` before it answers, and plays `hz` once answered.
    pub async fn start(ip: IpAddr, ring: Duration, hz: f32) -> std::io::Result<FarEnd> {
        let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
        let address = socket.local_addr()?;
        let task = tokio::spawn(run(socket, ring, hz));
        Ok(FarEnd { address, task })
    }
}

async fn run(socket: Arc<UdpSocket>, ring: Duration, hz: f32) {
    let (steps, mut step_rx) = mpsc::unbounded_channel();
    {
        let (socket, steps) = (Arc::clone(&socket), steps.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if steps.send(Step::Datagram(buf[..n].to_vec(), from)).is_err() {
                    return;
                }
            }
        });
    }
    let mut calls: HashMap<String, Call> = HashMap::new();
    while let Some(step) = step_rx.recv().await {
        match step {
            Step::Datagram(bytes, from) => {
                let Ok(m) = message::parse(&bytes, message::DEFAULT_MAX_MESSAGE_BYTES) else {
                    continue;
                };
                let StartLine::Request { method, uri } = &m.start else {
                    continue; // responses to nothing we sent
                };
                let user = uri.user.clone().unwrap_or_default();
                handle(
                    &socket,
                    &mut calls,
                    &steps,
                    m.clone(),
                    *method,
                    &user,
                    from,
                    ring,
                    hz,
                )
                .await;
            }
            Step::Due(call_id) => {
                let Some(call) = calls.get_mut(&call_id) else {
                    continue;
                };
                if call
                    .last
                    .as_ref()
                    .is_some_and(|l| !l.starts_with(b"SIP/2.0 1"))
                {
                    continue; // already finished (cancelled)
                }
                let user = match &call.invite.start {
                    StartLine::Request { uri, .. } => uri.user.clone().unwrap_or_default(),
                    StartLine::Response { .. } => String::new(),
                };
                let (bytes, done) = if user.ends_with("486") {
                    (
                        response(&call.invite, 486, "Busy Here", &call.to_tag, None),
                        true,
                    )
                } else if user.ends_with("503") {
                    (
                        response(&call.invite, 503, "Service Unavailable", &call.to_tag, None),
                        true,
                    )
                } else {
                    let answer = call.offer.as_ref().and_then(|offer| {
                        let local = socket.local_addr().ok()?;
                        let ours = AudioSdp::offer(local.ip(), 0, 1);
                        ours.answer_to(offer, Codec::Pcmu).ok()
                    });
                    match answer {
                        Some(mut sdp) => {
                            // The tone's socket is opened now so its port can be in the answer.
                            let Ok(rtp) =
                                std::net::UdpSocket::bind(SocketAddr::new(sdp.address, 0))
                            else {
                                continue;
                            };
                            sdp.port = rtp.local_addr().map(|a| a.port()).unwrap_or(0);
                            let law = match sdp.first_codec() {
                                Some(Codec::Pcma) => Law::Alaw,
                                _ => Law::Ulaw,
                            };
                            let to = call.offer.as_ref().map(AudioSdp::rtp_address);
                            call.tone = to.map(|to| tokio::spawn(tone(rtp, to, law, hz)));
                            let _ = steps.send(Step::Resend(call_id.clone(), 0));
                            (
                                response(&call.invite, 200, "OK", &call.to_tag, Some(&sdp)),
                                false,
                            )
                        }
                        None => (
                            response(&call.invite, 488, "Not Acceptable Here", &call.to_tag, None),
                            true,
                        ),
                    }
                };
                let _ = socket.send_to(&bytes, call.from).await;
                call.last = Some(bytes);
                if done {
                    call.acked = true; // the ACK of a failure needs nothing from us
                }
            }
            Step::Resend(call_id, n) => {
                let Some(call) = calls.get(&call_id) else {
                    continue;
                };
                if call.acked || n >= 7 {
                    continue;
                }
                if n > 0
                    && let Some(last) = &call.last
                {
                    let _ = socket.send_to(last, call.from).await;
                }
                let steps = steps.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500 << n.min(3))).await;
                    let _ = steps.send(Step::Resend(call_id, n + 1));
                });
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    socket: &UdpSocket,
    calls: &mut HashMap<String, Call>,
    steps: &mpsc::UnboundedSender<Step>,
    m: Message,
    method: rsip::Method,
    user: &str,
    from: SocketAddr,
    ring: Duration,
    _hz: f32,
) {
    let reply = |status: u16, reason: &str| response(&m, status, reason, "far", None);
    match method {
        rsip::Method::Invite => {
            if let Some(call) = calls.get(&m.call_id) {
                // A retransmission: answer it with what we last said.
                if let Some(last) = &call.last {
                    let _ = socket.send_to(last, from).await;
                }
                return;
            }
            let to_tag = format!("{:08x}", rand::random::<u32>());
            let trying = response(&m, 100, "Trying", "", None);
            let _ = socket.send_to(&trying, from).await;
            let ringing = response(&m, 180, "Ringing", &to_tag, None);
            let _ = socket.send_to(&ringing, from).await;
            let offer = AudioSdp::parse(&m.body).ok();
            calls.insert(
                m.call_id.clone(),
                Call {
                    from,
                    invite: m.clone(),
                    to_tag,
                    last: Some(ringing),
                    acked: false,
                    offer,
                    tone: None,
                },
            );
            if !user.ends_with("408") {
                let (steps, id) = (steps.clone(), m.call_id.clone());
                let wait = if user.ends_with("503") || user.ends_with("486") {
                    Duration::from_millis(100)
                } else {
                    ring
                };
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = steps.send(Step::Due(id));
                });
            }
        }
        rsip::Method::Ack => {
            if let Some(call) = calls.get_mut(&m.call_id) {
                call.acked = true;
                if call
                    .last
                    .as_ref()
                    .is_some_and(|l| !l.starts_with(b"SIP/2.0 200"))
                {
                    calls.remove(&m.call_id);
                }
            }
        }
        rsip::Method::Bye => {
            let _ = socket.send_to(&reply(200, "OK"), from).await;
            if let Some(call) = calls.remove(&m.call_id)
                && let Some(t) = call.tone
            {
                t.abort();
            }
        }
        rsip::Method::Cancel => {
            let _ = socket.send_to(&reply(200, "OK"), from).await;
            if let Some(call) = calls.get_mut(&m.call_id)
                && call
                    .last
                    .as_ref()
                    .is_some_and(|l| l.starts_with(b"SIP/2.0 1"))
            {
                let bytes = response(&call.invite, 487, "Request Terminated", &call.to_tag, None);
                let _ = socket.send_to(&bytes, call.from).await;
                call.last = Some(bytes);
                call.acked = true;
            }
        }
        rsip::Method::Options => {
            let _ = socket.send_to(&reply(200, "OK"), from).await;
        }
        _ => {
            let _ = socket.send_to(&reply(501, "Not Implemented"), from).await;
        }
    }
}

/// A response to `request`: its Vias, From, Call-ID and CSeq; its To with `tag`.
fn response(
    request: &Message,
    status: u16,
    reason: &str,
    tag: &str,
    sdp: Option<&AudioSdp>,
) -> Vec<u8> {
    let mut text = format!("SIP/2.0 {status} {reason}\r\n");
    for via in &request.vias {
        text.push_str(&format!("Via: {via}\r\n"));
    }
    for name in ["From", "Call-ID", "CSeq"] {
        if let Some(v) = request.header(name) {
            text.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let to = request.header("To").unwrap_or_default();
    if tag.is_empty() || to.contains(";tag=") {
        text.push_str(&format!("To: {to}\r\n"));
    } else {
        text.push_str(&format!("To: {to};tag={tag}\r\n"));
    }
    if status == 200
        && let StartLine::Request { uri, .. } = &request.start
    {
        text.push_str(&format!("Contact: <{uri}>\r\n"));
    }
    let body = sdp.map(AudioSdp::to_bytes).unwrap_or_default();
    if !body.is_empty() {
        text.push_str("Content-Type: application/sdp\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// Streams a tone in 20 ms packets to `to` from `socket`, until aborted;
/// what arrives on the socket is read and dropped.
async fn tone(socket: std::net::UdpSocket, to: SocketAddr, law: Law, hz: f32) {
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(socket) = UdpSocket::from_std(socket) else {
        return;
    };
    let mut sender = RtpSender::new(rand::random(), rand::random(), rand::random());
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let mut player = Player::new(Playback::Tone(Tone::continuous(hz, 4000)));
    let (mut frame, mut payload, mut packet) = ([0i16; FRAME_SAMPLES], Vec::new(), Vec::new());
    let mut first = true;
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = socket.recv_from(&mut buf) => continue,
        }
        player.next_frame(&mut frame);
        payload.clear();
        law.encode(&frame, &mut payload);
        sender.write(
            Instant::now(),
            law.payload_type(),
            std::mem::take(&mut first),
            &payload,
            FRAME_SAMPLES as u32,
            &mut packet,
        );
        let _ = socket.send_to(&packet, to).await;
    }
}
