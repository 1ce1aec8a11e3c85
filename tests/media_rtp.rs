//! The media engine over real UDP sockets on loopback: far ends send tones
//! in real time, and what each far end receives is decoded and checked with
//! Goertzel filters. One test uses SIPp's RTP streaming (`rtp_stream`) as a
//! far end that is not Switchboard's code.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchboard::sip::TargetUri;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard::media::engine::LegHandle;
use switchboard::media::goertzel::median_power_ratio;
use switchboard::media::rtp::{RtpPacket, RtpSender};
use switchboard::media::{ConferenceId, Law, LegConfig, MediaConfig, MediaEngine, Playback, Tone};

const FRAME: Duration = Duration::from_millis(20);

/// How a far end's path is spoiled.
#[derive(Clone, Copy, Default)]
struct Impairment {
    /// Share of packets we send that are lost.
    loss: f64,
    /// Share of packets we send that are swapped with the next one.
    reorder: f64,
    /// Share of packets sent to us that are lost.
    loss_in: f64,
}

/// A far end on its own UDP socket: sends a tone in real time, keeps the
/// decoded audio it receives.
struct Peer {
    law: Law,
    hz: f64,
    heard: Arc<Mutex<Vec<i16>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Peer {
    fn start(law: Law, hz: f64, to: SocketAddr, spoil: Impairment, seed: u64) -> Peer {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind peer"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (socket, stop) = (socket.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut rtp = RtpSender::new(rng.random(), rng.random(), rng.random());
                let start = Instant::now();
                let mut held: Option<Vec<u8>> = None;
                let mut n: u64 = 0;
                let mut payload = Vec::new();
                for k in 0u32.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let samples: Vec<i16> = (0..160u64)
                        .map(|i| {
                            let t = (n + i) as f64 / 8000.0;
                            ((2.0 * std::f64::consts::PI * hz * t).sin() * 6000.0) as i16
                        })
                        .collect();
                    n += 160;
                    payload.clear();
                    law.encode(&samples, &mut payload);
                    let mut packet = Vec::new();
                    rtp.write(
                        Instant::now(),
                        law.payload_type(),
                        k == 0,
                        &payload,
                        160,
                        &mut packet,
                    );
                    if rng.random_bool(spoil.loss) {
                        // lost
                    } else if held.is_none() && rng.random_bool(spoil.reorder) {
                        held = Some(packet);
                    } else {
                        let _ = socket.send_to(&packet, to);
                        if let Some(late) = held.take() {
                            let _ = socket.send_to(&late, to);
                        }
                    }
                    let next = start + FRAME * (k + 1);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        };
        let receiver = {
            let (socket, stop, heard) = (socket.clone(), stop.clone(), heard.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ 0xFFFF);
                let mut buf = [0u8; 2048];
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, _)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(p) = RtpPacket::parse(&buf[..len]) else {
                        continue;
                    };
                    if p.payload_type != law.payload_type() || rng.random_bool(spoil.loss_in) {
                        continue;
                    }
                    law.decode(p.payload, &mut samples);
                    heard.lock().expect("lock").extend_from_slice(&samples);
                }
            })
        };
        Peer {
            law,
            hz,
            heard,
            stop,
            threads: vec![sender, receiver],
        }
    }

    /// The last `seconds` of what this far end heard.
    fn tail(&self, seconds: usize) -> Vec<i16> {
        let heard = self.heard.lock().expect("lock");
        heard[heard.len().saturating_sub(8000 * seconds)..].to_vec()
    }

    fn stop(mut self) -> Vec<i16> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.heard.lock().expect("lock").clone()
    }
}

fn engine(first_port: u16) -> MediaEngine {
    let config = MediaConfig {
        ports: (first_port, first_port + 199),
        ..MediaConfig::default()
    };
    let (engine, _events) = MediaEngine::start(config).expect("engine");
    engine
}

/// Adds a leg whose far end is a new peer sending `hz` in `law`.
fn leg_with_peer(
    engine: &MediaEngine,
    conference: ConferenceId,
    law: Law,
    hz: f64,
    spoil: Impairment,
    seed: u64,
) -> (LegHandle, Peer) {
    // The peer's address is not known before its socket exists, and the
    // leg's port not before the leg exists: add the leg without a far end
    // and let symmetric RTP latch onto the peer's first packet.
    let leg = engine
        .add_leg(conference, LegConfig::new(law, None))
        .expect("leg");
    let peer = Peer::start(law, hz, leg.local, spoil, seed);
    (leg, peer)
}

/// Share of `hz` in what was heard, median over 50 ms windows.
fn share(heard: &[i16], hz: f64) -> f64 {
    median_power_ratio(heard, hz as f32, 400)
}

fn assert_hears_others_not_itself(peers: &[&Peer]) {
    for p in peers {
        let tail = p.tail(2);
        assert!(
            tail.len() >= 12000,
            "{} Hz peer heard only {} samples",
            p.hz,
            tail.len()
        );
        for other in peers {
            let s = share(&tail, other.hz);
            if other.hz == p.hz {
                assert!(s < 0.02, "{} Hz ({:?}) hears itself: {s:.3}", p.hz, p.law);
            } else {
                assert!(
                    s > 0.25,
                    "{} Hz ({:?}) hears {} Hz only at {s:.3}",
                    p.hz,
                    p.law,
                    other.hz
                );
            }
        }
    }
}

#[test]
fn three_legs_over_udp_hear_each_other_and_not_themselves() {
    let engine = engine(31000);
    let conference = engine.create_conference().expect("conference");
    let peers: Vec<Peer> = [(Law::Ulaw, 440.0), (Law::Alaw, 880.0), (Law::Ulaw, 1320.0)]
        .into_iter()
        .enumerate()
        .map(|(i, (law, hz))| {
            leg_with_peer(
                &engine,
                conference,
                law,
                hz,
                Impairment::default(),
                i as u64,
            )
            .1
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    assert_hears_others_not_itself(&peers.iter().collect::<Vec<_>>());
    let stats = engine.stats();
    assert_eq!(stats.legs, 3);
    assert!(stats.frames > 3 * 100, "{stats:?}");
    for p in peers {
        p.stop();
    }
}

#[test]
fn tones_come_through_five_percent_loss_and_reordering() {
    let engine = engine(31200);
    let conference = engine.create_conference().expect("conference");
    let spoil = Impairment {
        loss: 0.05,
        reorder: 0.05,
        loss_in: 0.05,
    };
    let legs: Vec<(LegHandle, Peer)> =
        [(Law::Alaw, 440.0), (Law::Ulaw, 880.0), (Law::Alaw, 1320.0)]
            .into_iter()
            .enumerate()
            .map(|(i, (law, hz))| {
                leg_with_peer(&engine, conference, law, hz, spoil, 100 + i as u64)
            })
            .collect();
    std::thread::sleep(Duration::from_secs(4));
    assert_hears_others_not_itself(&legs.iter().map(|(_, p)| p).collect::<Vec<_>>());
    // The loss shows in the statistics: about 5 % of ~200 packets.
    for (leg, _) in &legs {
        let stats = engine.leg_stats(conference, leg.id).expect("stats");
        // Kernel receive timestamps: the jitter of 5 % reordering is about
        // 2 ms here; arrival times on the engine's 20 ms read grid gave 15 ms.
        assert!(stats.jitter_us < 10_000, "{stats:?}");
        assert!(stats.lost >= 3, "{stats:?}");
        let jb = stats.jitter_buffer;
        assert!(jb.concealed + jb.partly_concealed >= 3, "{stats:?}");
    }
    for (_, p) in legs {
        p.stop();
    }
}

#[test]
fn a_waiting_leg_hears_ringback_over_udp() {
    let engine = engine(31400);
    let conference = engine.create_conference().expect("conference");
    let (caller, caller_peer) = leg_with_peer(
        &engine,
        conference,
        Law::Alaw,
        880.0,
        Impairment::default(),
        7,
    );
    engine
        .play(conference, caller.id, Playback::Tone(Tone::ringback()))
        .expect("play");
    std::thread::sleep(Duration::from_millis(900));
    // Ringback is on for the first second: 425 Hz, 320-sample windows.
    let heard = caller_peer.tail(1);
    let ring = median_power_ratio(&heard[heard.len().saturating_sub(4000)..], 425.0, 320);
    assert!(ring > 0.8, "ringback share {ring:.3}");
    // The other party answers: ringback stops, the two hear each other.
    let (_callee, callee_peer) = leg_with_peer(
        &engine,
        conference,
        Law::Ulaw,
        1320.0,
        Impairment::default(),
        8,
    );
    engine.stop_playback(conference, caller.id).expect("stop");
    std::thread::sleep(Duration::from_secs(3));
    assert_hears_others_not_itself(&[&caller_peer, &callee_peer]);
    caller_peer.stop();
    callee_peer.stop();
}

#[test]
fn ports_come_from_the_range_and_bad_config_is_refused() {
    let engine = engine(31600);
    let conference = engine.create_conference().expect("conference");
    let leg = engine
        .add_leg(conference, LegConfig::new(Law::Ulaw, None))
        .expect("leg");
    assert!((31600..31800).contains(&leg.local.port()));
    assert_eq!(leg.local.port() % 2, 0, "RTP on an even port");
    let stats = engine.remove_leg(conference, leg.id).expect("removed");
    assert_eq!(stats.packets_received, 0);
    // Two pairs only; a third leg finds no port.
    let small = MediaConfig {
        ports: (31900, 31903),
        ..MediaConfig::default()
    };
    let (tight, _) = MediaEngine::start(small).expect("engine");
    let c = tight.create_conference().expect("conference");
    tight
        .add_leg(c, LegConfig::new(Law::Ulaw, None))
        .expect("first");
    tight
        .add_leg(c, LegConfig::new(Law::Ulaw, None))
        .expect("second");
    let err = tight
        .add_leg(c, LegConfig::new(Law::Ulaw, None))
        .expect_err("range exhausted");
    assert!(err.to_string().contains("no free RTP port pair"), "{err}");
    for ports in [
        (5000, 5000),
        (5001, 5002),
        (65535, 65535),
        (0, 100),
        (6000, 5000),
    ] {
        let bad = MediaConfig {
            ports,
            ..MediaConfig::default()
        };
        assert!(MediaEngine::start(bad).is_err(), "{ports:?} accepted");
    }
    // An odd first port: pairs start at the next even one and stay inside.
    let odd = MediaConfig {
        ports: (32301, 32304),
        ..MediaConfig::default()
    };
    let (odd, _) = MediaEngine::start(odd).expect("engine");
    let c = odd.create_conference().expect("conference");
    let leg = odd
        .add_leg(c, LegConfig::new(Law::Ulaw, None))
        .expect("leg");
    assert_eq!(leg.local.port(), 32302);
    let err = odd
        .add_leg(c, LegConfig::new(Law::Ulaw, None))
        .expect_err("32304 has no partner in range");
    assert!(err.to_string().contains("no free RTP port pair"), "{err}");
}

#[test]
fn garbage_on_a_leg_port_is_refused_and_the_leg_goes_on() {
    let engine = engine(31800);
    let conference = engine.create_conference().expect("conference");
    let (a, peer_a) = leg_with_peer(
        &engine,
        conference,
        Law::Ulaw,
        440.0,
        Impairment::default(),
        21,
    );
    let (_b, peer_b) = leg_with_peer(
        &engine,
        conference,
        Law::Ulaw,
        880.0,
        Impairment::default(),
        22,
    );
    // The peers' first packets are out before the junk, so the leg has
    // latched onto its real far end.
    std::thread::sleep(Duration::from_millis(100));
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rng = StdRng::seed_from_u64(5);
    for i in 0..500 {
        let len = rng.random_range(0..300);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if i % 2 == 0 && len > 12 {
            bytes[0] = 0x80; // looks like RTP version 2
        }
        let rtcp = SocketAddr::new(a.local.ip(), a.local.port() + 1);
        let _ = junk.send_to(&bytes, if i % 3 == 0 { rtcp } else { a.local });
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_hears_others_not_itself(&[&peer_a, &peer_b]);
    assert!(
        engine.stats().datagrams_refused > 100,
        "{:?}",
        engine.stats()
    );
}

#[test]
fn dtmf_from_a_far_end_arrives_as_events() {
    use switchboard::media::MediaEvent;
    use switchboard::media::dtmf::TelephoneEvent;

    let config = MediaConfig {
        ports: (32200, 32299),
        ..MediaConfig::default()
    };
    let (engine, mut events) = MediaEngine::start(config).expect("engine");
    let conference = engine.create_conference().expect("conference");
    let leg = engine
        .add_leg(conference, LegConfig::new(Law::Ulaw, None))
        .expect("leg");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rtp = RtpSender::new(42, 1000, 8000);
    // "1", "#", "9" as RFC 4733 sends them: each event's packets share its
    // start timestamp, the last three carry the end bit; audio in between.
    for (i, key) in [1u8, 11, 9].into_iter().enumerate() {
        let start = 8000 + i as u32 * 4000;
        for (n, end) in [(1u16, false), (2, false), (3, true), (3, true), (3, true)] {
            let payload = TelephoneEvent {
                event: key,
                end,
                volume: 10,
                duration: n * 160,
            }
            .write();
            let mut packet = Vec::new();
            rtp.write_at(
                Instant::now(),
                101,
                n == 1 && !end,
                &payload,
                start,
                &mut packet,
            );
            socket.send_to(&packet, leg.local).expect("send");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut packet = Vec::new();
        rtp.write(Instant::now(), 0, false, &[0xFF; 160], 160, &mut packet);
        socket.send_to(&packet, leg.local).expect("send");
    }
    let mut digits = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while digits.len() < 3 && Instant::now() < deadline {
        match events.try_recv() {
            Ok(e) => {
                if let MediaEvent::Dtmf { leg: id, digit } = e.event {
                    assert_eq!((id, e.conference), (leg.id, conference));
                    digits.push(digit);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert_eq!(digits, "1#9");
}

#[test]
fn far_end_rtcp_reaches_every_conference_whatever_its_phase() {
    use switchboard::media::rtcp::{self, ReportBlock};

    let config = MediaConfig {
        ports: (32400, 32499),
        ..MediaConfig::default()
    };
    let (engine, _events) = MediaEngine::start(config).expect("engine");
    // Four conferences started 5 ms apart, so they tick at four phases.
    let mut legs = Vec::new();
    for i in 0..4u32 {
        let conference = engine.create_conference().expect("conference");
        let leg = engine
            .add_leg(conference, LegConfig::new(Law::Ulaw, None))
            .expect("leg");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        legs.push((
            conference,
            leg,
            socket,
            RtpSender::new(900 + i, 0, 0),
            None::<u32>,
        ));
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    for k in 0..75u32 {
        for (_, leg, socket, rtp, ours) in legs.iter_mut() {
            let mut packet = Vec::new();
            rtp.write(Instant::now(), 0, k == 0, &[0xFF; 160], 160, &mut packet);
            socket.send_to(&packet, leg.local).expect("send rtp");
            // Learn the SSRC the engine sends us, then report on it.
            while let Ok((len, _)) = socket.recv_from(&mut buf) {
                if let Ok(p) = RtpPacket::parse(&buf[..len]) {
                    *ours = Some(p.ssrc);
                }
            }
            if let (Some(ssrc), true) = (*ours, k % 5 == 0) {
                let block = ReportBlock {
                    ssrc,
                    fraction_lost: 3,
                    cumulative_lost: 1,
                    jitter: 7,
                    ..Default::default()
                };
                let mut rr = Vec::new();
                rtcp::write_report(rtp.ssrc(), None, Some(block), "peer", &mut rr);
                let to = SocketAddr::new(leg.local.ip(), leg.local.port() + 1);
                socket.send_to(&rr, to).expect("send rtcp");
            }
        }
        std::thread::sleep((start + FRAME * (k + 1)).saturating_duration_since(Instant::now()));
    }
    for (conference, leg, ..) in &legs {
        let stats = engine.leg_stats(*conference, leg.id).expect("stats");
        assert!(stats.rtcp_received >= 1, "{:?}: {stats:?}", leg.id);
        let remote = stats.remote.expect("the far end's report about our stream");
        assert_eq!(
            (remote.fraction_lost, remote.cumulative_lost, remote.jitter),
            (3, 1, 7)
        );
    }
}

// --- SIPp as the far end -------------------------------------------------

/// An 8 kHz µ-law WAV file of a tone, for SIPp's `rtp_stream`.
fn ulaw_wav(hz: f64, seconds: u32) -> Vec<u8> {
    let n = 8000 * seconds;
    let samples: Vec<i16> = (0..n)
        .map(|i| ((2.0 * std::f64::consts::PI * hz * f64::from(i) / 8000.0).sin() * 6000.0) as i16)
        .collect();
    let mut data = Vec::new();
    Law::Ulaw.encode(&samples, &mut data);
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&7u16.to_le_bytes()); // WAVE_FORMAT_MULAW
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    wav
}

/// SIPp and the directory it runs in (kept until SIPp has stopped).
struct Sipp(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("probe port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_streams_a_tone_into_the_conference() {
    use switchboard::sip::{AudioSdp, CallEvent, CallRequest, Codec, Config, SipService};

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("tone.wav"), ulaw_wav(1000.0, 4)).expect("write wav");
    let scenario =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/media/sipp_tone_uas.xml");
    let (sip_port, media_port) = (free_port(), free_port());
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args([
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-nostdin",
            "-m",
            "1",
            "-timeout",
            "60s",
        ])
        .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (scripts/test.sh installs sip-tester)");
    let _sipp = Sipp(child, dir);
    std::thread::sleep(Duration::from_millis(200));

    let engine = engine(32000);
    let conference = engine.create_conference().expect("conference");
    // Our leg toward SIPp: its port goes into the offer.
    let to_sipp = engine
        .add_leg(conference, LegConfig::new(Law::Ulaw, None))
        .expect("leg");
    let sip = SipService::start(Config {
        udp: vec!["127.0.0.1:0".parse().expect("addr")],
        ..Config::default()
    })
    .await
    .expect("sip");
    let mut call = sip
        .place_call(CallRequest {
            target: TargetUri::parse(&format!("sip:+442071234567@127.0.0.1:{sip_port}"))
                .expect("a valid target URI"),
            provider: None,
            offer: AudioSdp::offer(to_sipp.local.ip(), to_sipp.local.port(), 1),
            ring_timeout: None,
            caller: None,
            public_only: false,
        })
        .await
        .expect("call");
    let (sdp, codec) = loop {
        match tokio::time::timeout(Duration::from_secs(10), call.events.recv()).await {
            Ok(Some(CallEvent::Answered { sdp, codec })) => break (sdp, codec),
            Ok(Some(CallEvent::Failed { status, reason })) => {
                panic!("call failed: {status} {reason}")
            }
            Ok(Some(_)) => continue,
            other => panic!("no answer from SIPp: {other:?}"),
        }
    };
    assert_eq!(codec, Codec::Pcmu);
    engine
        .update_leg(
            conference,
            to_sipp.id,
            LegConfig::new(Law::Ulaw, Some(sdp.rtp_address())),
        )
        .expect("update");
    // A second leg, our own test peer in A-law at 440 Hz, must hear SIPp's
    // 1000 Hz tone (decoded, jitter-buffered, mixed, re-encoded in A-law).
    let (_other, peer) = leg_with_peer(
        &engine,
        conference,
        Law::Alaw,
        440.0,
        Impairment::default(),
        9,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let heard = peer.tail(2);
    let tone = share(&heard, 1000.0);
    let own = share(&heard, 440.0);
    let stats = engine.leg_stats(conference, to_sipp.id).expect("stats");
    assert!(
        tone > 0.5,
        "SIPp's 1000 Hz tone share {tone:.3}; SIPp leg {stats:?}"
    );
    assert!(own < 0.02, "hears itself: {own:.3}");
    assert!(stats.packets_received > 100, "{stats:?}");
    sip.hangup(call.id);
    peer.stop();
}
