//! The conference core driven by a virtual clock: far ends are simulated
//! here, packets go in and out as bytes, time is passed in.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::g711::Law;
use super::goertzel::{median_power_ratio, power_ratio};
use super::jitter::FRAME_SAMPLES;
use super::mixer::{Channel, Conference, FRAME, LegConfig, LegId, MediaEvent, Transmit};
use super::rtcp::{self, NtpClock, ReportBlock};
use super::rtp::{RtpPacket, RtpSender};
use super::tone::{Playback, Tone};
use super::{MediaError, dtmf::TelephoneEvent};

/// A simulated far end: sends a tone in 20 ms packets, keeps what it hears.
struct FarEnd {
    leg: LegId,
    addr: SocketAddr,
    law: Law,
    hz: f64,
    sender: RtpSender,
    n: u64,
    heard: Vec<i16>,
}

impl FarEnd {
    fn new(leg: u64, port: u16, law: Law, hz: f64) -> Self {
        FarEnd {
            leg: LegId(leg),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            law,
            hz,
            sender: RtpSender::new(leg as u32 * 1000, 100, 5000),
            n: 0,
            heard: Vec::new(),
        }
    }

    fn packet(&mut self, now: Instant) -> Vec<u8> {
        let samples: Vec<i16> = (0..FRAME_SAMPLES as u64)
            .map(|i| {
                let t = (self.n + i) as f64 / 8000.0;
                ((2.0 * std::f64::consts::PI * self.hz * t).sin() * 8000.0) as i16
            })
            .collect();
        self.n += FRAME_SAMPLES as u64;
        let mut payload = Vec::new();
        self.law.encode(&samples, &mut payload);
        let mut out = Vec::new();
        self.sender.write(
            now,
            self.law.payload_type(),
            false,
            &payload,
            FRAME_SAMPLES as u32,
            &mut out,
        );
        out
    }
}

fn conference(now: Instant) -> Conference {
    Conference::new(
        now,
        NtpClock::new(now, Duration::from_secs(1_700_000_000)),
        "test@switchboard",
    )
}

/// Delivers each transmit to the far end it is addressed to.
fn deliver(conf: &mut Conference, ends: &mut [FarEnd]) -> Vec<Transmit> {
    let mut other = Vec::new();
    while let Some(t) = conf.poll_transmit() {
        if t.channel == Channel::Rtcp {
            other.push(t);
            continue;
        }
        let Some(end) = ends.iter_mut().find(|e| e.leg == t.leg) else {
            continue;
        };
        assert_eq!(t.to, end.addr, "sent to the far end's address");
        let p = RtpPacket::parse(&t.bytes).unwrap();
        assert_eq!(
            p.payload_type,
            end.law.payload_type(),
            "each leg gets its own law"
        );
        let mut samples = Vec::new();
        end.law.decode(p.payload, &mut samples);
        end.heard.extend_from_slice(&samples);
    }
    other
}

/// Runs `ticks` frames: every far end sends one packet per frame (some
/// dropped or swapped by `mangle`), then the clock ticks.
fn run(
    conf: &mut Conference,
    ends: &mut [FarEnd],
    t0: Instant,
    ticks: u32,
    mangle: impl Fn(u32, usize) -> Fate,
) {
    let mut held: Vec<(usize, Vec<u8>)> = Vec::new();
    for k in 0..ticks {
        let now = t0 + FRAME * k + Duration::from_millis(3);
        let mut released = std::mem::take(&mut held);
        for (i, end) in ends.iter_mut().enumerate() {
            let bytes = end.packet(now);
            match mangle(k, i) {
                Fate::Deliver => conf
                    .handle_input(now, end.leg, Channel::Rtp, end.addr, &bytes)
                    .unwrap(),
                Fate::Drop => {}
                Fate::Delay => held.push((i, bytes)),
            }
        }
        // Delayed packets arrive one frame late, after their successors.
        for (i, bytes) in released.drain(..) {
            let _ = conf.handle_input(now, ends[i].leg, Channel::Rtp, ends[i].addr, &bytes);
        }
        conf.handle_timeout(t0 + FRAME * (k + 1));
        deliver(conf, ends);
    }
}

#[derive(Clone, Copy)]
enum Fate {
    Deliver,
    Drop,
    Delay,
}

fn three_legs(t0: Instant) -> (Conference, Vec<FarEnd>) {
    let mut conf = conference(t0);
    let ends = vec![
        FarEnd::new(1, 40000, Law::Ulaw, 440.0),
        FarEnd::new(2, 40002, Law::Alaw, 880.0),
        FarEnd::new(3, 40004, Law::Ulaw, 1320.0),
    ];
    for e in &ends {
        conf.add_leg(
            t0,
            e.leg,
            LegConfig::new(e.law, Some(e.addr)),
            (e.leg.0 as u32, 1, 1),
        )
        .unwrap();
    }
    (conf, ends)
}

/// Each far end hears both other tones and not its own.
fn assert_mix_minus(ends: &[FarEnd]) {
    for end in ends {
        // Skip the start (jitter buffer filling), look at one second.
        let tail = &end.heard[end.heard.len() - 8000..];
        for other in ends {
            let share = median_power_ratio(tail, other.hz as f32, 400);
            if other.leg == end.leg {
                assert!(
                    share < 0.01,
                    "{} hears its own {} Hz ({share:.3})",
                    end.leg,
                    other.hz
                );
            } else {
                assert!(
                    share > 0.3,
                    "{} hears {} Hz only at {share:.3}",
                    end.leg,
                    other.hz
                );
            }
        }
    }
}

#[test]
fn each_leg_hears_the_others_and_not_itself() {
    let t0 = Instant::now();
    let (mut conf, mut ends) = three_legs(t0);
    run(&mut conf, &mut ends, t0, 100, |_, _| Fate::Deliver);
    assert_mix_minus(&ends);
    for e in &ends {
        let stats = conf.leg_stats(e.leg).unwrap();
        assert_eq!(stats.packets_received, 100);
        assert_eq!(stats.lost, 0);
        assert!(stats.packets_sent >= 99);
    }
}

#[test]
fn tones_survive_five_percent_loss_and_reordering() {
    let t0 = Instant::now();
    let (mut conf, mut ends) = three_legs(t0);
    // A fixed pattern: every 20th packet of each leg lost, every 17th
    // delayed past its successor.
    run(&mut conf, &mut ends, t0, 250, |k, i| {
        match (k + i as u32 * 7) % 340 {
            n if n % 20 == 0 => Fate::Drop,
            n if n % 17 == 0 => Fate::Delay,
            _ => Fate::Deliver,
        }
    });
    assert_mix_minus(&ends);
    let stats = conf.leg_stats(ends[0].leg).unwrap();
    assert!(stats.lost >= 10, "{stats:?}");
    assert!(stats.jitter_buffer.concealed >= 5, "{stats:?}");
}

#[test]
fn sums_saturate_instead_of_wrapping() {
    let t0 = Instant::now();
    let mut conf = conference(t0);
    let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
    for (id, port) in [(1, 41000), (2, 41002), (3, 41004)] {
        conf.add_leg(
            t0,
            LegId(id),
            LegConfig::new(Law::Ulaw, Some(addr(port))),
            (id as u32, 0, 0),
        )
        .unwrap();
    }
    // Legs 1 and 2 send full-scale positive samples; leg 3 hears their sum.
    let loud = [Law::Ulaw.encode_one(32000); FRAME_SAMPLES];
    let mut senders = [RtpSender::new(11, 0, 0), RtpSender::new(12, 0, 0)];
    let mut heard = Vec::new();
    for k in 0..10u32 {
        let now = t0 + FRAME * k;
        for (i, s) in senders.iter_mut().enumerate() {
            let mut out = Vec::new();
            s.write(now, 0, false, &loud, 160, &mut out);
            conf.handle_input(
                now,
                LegId(i as u64 + 1),
                Channel::Rtp,
                addr(41000 + 2 * i as u16),
                &out,
            )
            .unwrap();
        }
        conf.handle_timeout(t0 + FRAME * (k + 1));
        while let Some(t) = conf.poll_transmit() {
            if t.leg == LegId(3) {
                let p = RtpPacket::parse(&t.bytes).unwrap();
                heard.extend(p.payload.iter().map(|b| Law::Ulaw.decode_one(*b)));
            }
        }
    }
    // Clamped at the top, never wrapped to a negative value.
    assert!(heard.iter().all(|s| *s >= 0), "wrapped");
    assert!(heard.iter().any(|s| *s >= 32000), "never reached the top");
}

#[test]
fn dtmf_is_reported_once_per_key() {
    let t0 = Instant::now();
    let mut conf = conference(t0);
    let from = SocketAddr::from(([127, 0, 0, 1], 42000));
    conf.add_leg(
        t0,
        LegId(1),
        LegConfig::new(Law::Alaw, Some(from)),
        (1, 0, 0),
    )
    .unwrap();
    let mut sender = RtpSender::new(5, 0, 0);
    for (ts, key, end) in [
        (800, 5, false),
        (800, 5, false),
        (800, 5, true),
        (800, 5, true),
        (2400, 11, false),
    ] {
        let payload = TelephoneEvent {
            event: key,
            end,
            volume: 10,
            duration: 160,
        }
        .write();
        let mut out = Vec::new();
        sender.write_at(t0, 101, !end, &payload, ts, &mut out);
        conf.handle_input(t0, LegId(1), Channel::Rtp, from, &out)
            .unwrap();
    }
    let digits: String = std::iter::from_fn(|| conf.poll_event())
        .filter_map(|e| match e {
            MediaEvent::Dtmf { digit, .. } => Some(digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, "5#");
}

#[test]
fn symmetric_rtp_latches_onto_the_real_source() {
    let t0 = Instant::now();
    let mut conf = conference(t0);
    let said = SocketAddr::from(([127, 0, 0, 1], 43000));
    let real = SocketAddr::from(([127, 0, 0, 2], 53000));
    let intruder = SocketAddr::from(([127, 0, 0, 3], 1234));
    conf.add_leg(
        t0,
        LegId(1),
        LegConfig::new(Law::Ulaw, Some(said)),
        (1, 0, 0),
    )
    .unwrap();
    let mut end = FarEnd::new(9, 1, Law::Ulaw, 440.0);
    let p = end.packet(t0);
    conf.handle_input(t0, LegId(1), Channel::Rtp, real, &p)
        .unwrap();
    assert_eq!(
        conf.poll_event(),
        Some(MediaEvent::Latched {
            leg: LegId(1),
            remote: real
        })
    );
    // Another source is refused while the latched one is alive...
    let p = end.packet(t0);
    let refused = conf.handle_input(t0 + FRAME, LegId(1), Channel::Rtp, intruder, &p);
    assert!(matches!(refused, Err(MediaError::WrongSource(_))));
    conf.handle_timeout(t0 + FRAME);
    let t = conf.poll_transmit().unwrap();
    assert_eq!(t.to, real);
    // ...and taken over only after the latched one has been quiet 2 s.
    let later = t0 + Duration::from_secs(3);
    conf.handle_input(later, LegId(1), Channel::Rtp, intruder, &end.packet(later))
        .unwrap();
    assert!(std::iter::from_fn(|| conf.poll_event()).any(|e| e
        == MediaEvent::Latched {
            leg: LegId(1),
            remote: intruder
        }));
    // Garbage is refused with a reason and counted.
    assert!(
        conf.handle_input(later, LegId(1), Channel::Rtp, intruder, b"hello")
            .is_err()
    );
    assert!(
        conf.handle_input(later, LegId(1), Channel::Rtcp, intruder, b"hello")
            .is_err()
    );
    assert!(
        conf.handle_input(later, LegId(7), Channel::Rtp, intruder, &end.packet(later))
            .is_err()
    );
    assert_eq!(conf.leg_stats(LegId(1)).unwrap().packets_refused, 2);
}

#[test]
fn a_waiting_leg_hears_ringback_then_the_conference() {
    let t0 = Instant::now();
    let (mut conf, mut ends) = three_legs(t0);
    conf.play(ends[0].leg, Playback::Tone(Tone::ringback()))
        .unwrap();
    run(&mut conf, &mut ends, t0, 50, |_, _| Fate::Deliver);
    let rang = std::mem::take(&mut ends[0].heard);
    assert!(power_ratio(&rang[4800..8000], 425.0) > 0.9, "ringback");
    assert!(
        power_ratio(&rang[4800..8000], 880.0) < 0.01,
        "ringback only"
    );
    // The others heard the waiting leg all along.
    assert!(power_ratio(&ends[1].heard[4000..8000], 440.0) > 0.3);
    conf.stop_playback(ends[0].leg).unwrap();
    run(&mut conf, &mut ends, t0 + FRAME * 50, 60, |_, _| {
        Fate::Deliver
    });
    assert_mix_minus(&ends);
    // A short beep ends by itself and says so.
    conf.play(ends[1].leg, Playback::Tone(Tone::beep(1000.0, 60)))
        .unwrap();
    run(&mut conf, &mut ends, t0 + FRAME * 110, 5, |_, _| {
        Fate::Deliver
    });
    assert!(
        std::iter::from_fn(|| conf.poll_event())
            .any(|e| e == MediaEvent::PlaybackDone { leg: ends[1].leg })
    );
}

#[test]
fn rtcp_reports_go_both_ways() {
    let t0 = Instant::now();
    let (mut conf, mut ends) = three_legs(t0);
    let mut reports = Vec::new();
    for k in 0..400u32 {
        let now = t0 + FRAME * k;
        for end in ends.iter_mut() {
            let bytes = end.packet(now);
            if k % 10 != 3 {
                conf.handle_input(now, end.leg, Channel::Rtp, end.addr, &bytes)
                    .unwrap();
            }
        }
        conf.handle_timeout(now + FRAME);
        reports.extend(deliver(&mut conf, &mut ends));
    }
    // 8 s: each leg reported at least once, to RTP port + 1, with a sender
    // report (we send) and a block about the far end's SSRC showing ~10 %.
    for end in &ends {
        let r = reports
            .iter()
            .find(|t| t.leg == end.leg)
            .expect("a report for every leg");
        assert_eq!(r.to.port(), end.addr.port() + 1);
        let parsed = rtcp::parse(&r.bytes).unwrap();
        let rtcp::RtcpPacket::SenderReport {
            reports: blocks, ..
        } = &parsed[0]
        else {
            panic!("expected an SR, got {parsed:?}");
        };
        assert_eq!(blocks[0].ssrc, end.sender.ssrc());
        assert!(
            (20..=30).contains(&blocks[0].fraction_lost),
            "{:?}",
            blocks[0]
        );
    }
    // The far end reports on our stream: 2 % lost, jitter 40.
    let ours = {
        let r = reports.iter().find(|t| t.leg == ends[0].leg).unwrap();
        let rtcp::RtcpPacket::SenderReport { ssrc, .. } = rtcp::parse(&r.bytes).unwrap()[0].clone()
        else {
            panic!()
        };
        ssrc
    };
    let block = ReportBlock {
        ssrc: ours,
        fraction_lost: 5,
        cumulative_lost: 8,
        jitter: 40,
        ..Default::default()
    };
    let mut rr = Vec::new();
    rtcp::write_report(77, None, Some(block), "far", &mut rr);
    let now = t0 + FRAME * 400;
    conf.handle_input(now, ends[0].leg, Channel::Rtcp, ends[0].addr, &rr)
        .unwrap();
    let remote = conf.leg_stats(ends[0].leg).unwrap().remote.unwrap();
    assert_eq!(
        (remote.fraction_lost, remote.cumulative_lost, remote.jitter),
        (5, 8, 40)
    );
}

#[test]
fn legs_come_and_go() {
    let t0 = Instant::now();
    let (mut conf, mut ends) = three_legs(t0);
    run(&mut conf, &mut ends, t0, 20, |_, _| Fate::Deliver);
    let gone = ends.remove(1);
    let final_stats = conf.remove_leg(gone.leg).unwrap();
    assert_eq!(final_stats.packets_received, 20);
    assert!(conf.remove_leg(gone.leg).is_err());
    for e in ends.iter_mut() {
        e.heard.clear();
    }
    run(&mut conf, &mut ends, t0 + FRAME * 20, 60, |_, _| {
        Fate::Deliver
    });
    assert!(
        power_ratio(&ends[0].heard[1600..], 880.0) < 0.01,
        "the removed leg is no longer heard"
    );
    assert_mix_minus(&ends);
    assert_eq!(conf.len(), 2);
}

/// RFC 3264 §8.4 and §5.1: a leg that holds with `sendonly` gets no RTP
/// (its RTCP reports go on) and is still heard; `inactive` is neither way;
/// resuming restores the mix.
#[test]
fn hold_stops_what_we_send_and_resume_restores_it() {
    let t0 = Instant::now();
    let (mut conf, mut ends) = three_legs(t0);
    run(&mut conf, &mut ends, t0, 50, |_, _| Fate::Deliver);
    let heard_before = ends[0].heard.len();
    // Leg 1 holds (sendonly from it: we send nothing to it).
    let held = LegConfig::new(Law::Ulaw, Some(ends[0].addr)).with_flow(false, true);
    let t1 = t0 + FRAME * 50;
    conf.update_leg(t1, ends[0].leg, held).unwrap();
    let sent_before = conf.leg_stats(ends[0].leg).unwrap().packets_sent;
    let mut reports = 0;
    for k in 0..300 {
        let now = t1 + FRAME * k + Duration::from_millis(3);
        for end in ends.iter_mut() {
            let bytes = end.packet(now);
            conf.handle_input(now, end.leg, Channel::Rtp, end.addr, &bytes)
                .unwrap();
        }
        conf.handle_timeout(t1 + FRAME * (k + 1));
        reports += deliver(&mut conf, &mut ends)
            .iter()
            .filter(|t| t.leg == ends[0].leg)
            .count();
    }
    assert_eq!(ends[0].heard.len(), heard_before, "RTP reached a held leg");
    assert_eq!(
        conf.leg_stats(ends[0].leg).unwrap().packets_sent,
        sent_before
    );
    assert!(reports >= 1, "RTCP to a held leg stops");
    // The others still hear it.
    for other in &ends[1..] {
        let tail = &other.heard[other.heard.len() - 8000..];
        assert!(median_power_ratio(tail, 440.0, 400) > 0.3);
    }

    // Inactive: neither way. The others stop hearing it.
    let t2 = t1 + FRAME * 300;
    let inactive = LegConfig::new(Law::Ulaw, Some(ends[0].addr)).with_flow(false, false);
    conf.update_leg(t2, ends[0].leg, inactive).unwrap();
    run(&mut conf, &mut ends, t2, 100, |_, _| Fate::Deliver);
    assert_eq!(ends[0].heard.len(), heard_before);
    for other in &ends[1..] {
        let tail = &other.heard[other.heard.len() - 8000..];
        assert!(median_power_ratio(tail, 440.0, 400) < 0.01);
    }

    // Resume: the mix comes back, both ways.
    let t3 = t2 + FRAME * 100;
    conf.update_leg(
        t3,
        ends[0].leg,
        LegConfig::new(Law::Ulaw, Some(ends[0].addr)),
    )
    .unwrap();
    run(&mut conf, &mut ends, t3, 100, |_, _| Fate::Deliver);
    assert!(ends[0].heard.len() >= heard_before + 99 * FRAME_SAMPLES);
    assert_mix_minus(&ends);
}

/// A leg that goes silent (no RTP, no RTCP) for its timeout is reported
/// once, with the time of its last packet; a packet or an update rearms it.
#[test]
fn a_silent_leg_times_out_once_at_its_last_packet() {
    let t0 = Instant::now();
    let (mut conf, mut ends) = three_legs(t0);
    let timeout = Duration::from_secs(30);
    conf.update_leg(
        t0,
        ends[0].leg,
        LegConfig::new(Law::Ulaw, Some(ends[0].addr)).with_timeout(Some(timeout)),
    )
    .unwrap();
    run(&mut conf, &mut ends, t0, 100, |_, _| Fate::Deliver);
    let last = t0 + FRAME * 99 + Duration::from_millis(3);
    // Leg 1 vanishes; the others keep talking.
    let t1 = t0 + FRAME * 100;
    let mut timed_out = Vec::new();
    for k in 0..(31 * 50) {
        let now = t1 + FRAME * k + Duration::from_millis(3);
        for end in ends[1..].iter_mut() {
            let bytes = end.packet(now);
            conf.handle_input(now, end.leg, Channel::Rtp, end.addr, &bytes)
                .unwrap();
        }
        conf.handle_timeout(t1 + FRAME * (k + 1));
        deliver(&mut conf, &mut ends);
        while let Some(e) = conf.poll_event() {
            if let MediaEvent::TimedOut { leg, last_heard } = e {
                timed_out.push((leg, last_heard, t1 + FRAME * (k + 1)));
            }
        }
    }
    assert_eq!(timed_out.len(), 1, "{timed_out:?}");
    let (leg, last_heard, at) = timed_out[0];
    assert_eq!(leg, ends[0].leg);
    assert_eq!(last_heard, last);
    assert!(
        at >= last + timeout && at <= last + timeout + FRAME,
        "{at:?}"
    );
    // The legs without a timeout never time out (the other two were
    // heard throughout anyway).
    // Heard again: rearmed, and silent again for the timeout: once more.
    let t2 = t1 + FRAME * (31 * 50);
    let bytes = ends[0].packet(t2);
    conf.handle_input(t2, ends[0].leg, Channel::Rtp, ends[0].addr, &bytes)
        .unwrap();
    conf.handle_timeout(t2 + timeout + FRAME);
    let again: Vec<_> = std::iter::from_fn(|| conf.poll_event())
        .filter(|e| matches!(e, MediaEvent::TimedOut { .. }))
        .collect();
    assert_eq!(
        again,
        [MediaEvent::TimedOut {
            leg: ends[0].leg,
            last_heard: t2
        }]
    );
}
