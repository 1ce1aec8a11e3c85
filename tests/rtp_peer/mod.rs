//! A far end's audio for end-to-end tests: a UDP socket whose port goes
//! into a SIP far end's SDP answer. Once Switchboard's first RTP packet
//! arrives it sends a tone back to where that packet came from (symmetric
//! RTP), in real time, and keeps what it hears, decoded.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard::media::Law;
use switchboard::media::goertzel::median_power_ratio;
use switchboard::media::rtp::{RtpPacket, RtpSender};

/// One far end's RTP.
pub struct TonePeer {
    /// The port its SDP must name.
    pub port: u16,
    /// The tone it sends.
    pub hz: f64,
    heard: Arc<Mutex<Vec<i16>>>,
    stop: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    packets: Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl TonePeer {
    /// Binds a loopback port; sends `hz` in `law` once it has heard from us.
    pub fn start(law: Law, hz: f64) -> TonePeer {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind peer"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let port = socket.local_addr().expect("addr").port();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let far: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let sender = {
            let (socket, stop, far, silent) =
                (socket.clone(), stop.clone(), far.clone(), silent.clone());
            std::thread::spawn(move || {
                let mut rtp = RtpSender::new(rand::random(), rand::random(), rand::random());
                let start = Instant::now();
                let (mut n, mut payload, mut packet) = (0u64, Vec::new(), Vec::new());
                for k in 0u32.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let to = *far.lock().expect("lock");
                    if let Some(to) = to.filter(|_| !silent.load(Ordering::Relaxed)) {
                        let samples: Vec<i16> = (0..160u64)
                            .map(|i| {
                                let t = (n + i) as f64 / 8000.0;
                                ((2.0 * std::f64::consts::PI * hz * t).sin() * 6000.0) as i16
                            })
                            .collect();
                        n += 160;
                        payload.clear();
                        law.encode(&samples, &mut payload);
                        rtp.write(
                            Instant::now(),
                            law.payload_type(),
                            n == 160,
                            &payload,
                            160,
                            &mut packet,
                        );
                        let _ = socket.send_to(&packet, to);
                    }
                    let next = start + Duration::from_millis(20) * (k + 1);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        };
        let receiver = {
            let (socket, stop, heard, count) =
                (socket.clone(), stop.clone(), heard.clone(), packets.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(p) = RtpPacket::parse(&buf[..len]) else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    far.lock().expect("lock").get_or_insert(from);
                    let Some(law) = Law::from_payload_type(p.payload_type) else {
                        continue;
                    };
                    law.decode(p.payload, &mut samples);
                    heard.lock().expect("lock").extend_from_slice(&samples);
                }
            })
        };
        TonePeer {
            port,
            hz,
            heard,
            stop,
            silent,
            packets,
            threads: vec![sender, receiver],
        }
    }

    /// Stops sending, for good, as a far end that vanished does (a phone
    /// switched off, a NAT binding lost); it still counts what it receives.
    pub fn go_silent(&self) {
        self.silent.store(true, Ordering::Relaxed);
    }

    /// RTP packets received so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Samples heard so far.
    pub fn heard_len(&self) -> usize {
        self.heard.lock().expect("lock").len()
    }

    /// What it heard after the first `from` samples.
    pub fn heard_since(&self, from: usize) -> Vec<i16> {
        let heard = self.heard.lock().expect("lock");
        heard
            .get(from.min(heard.len())..)
            .unwrap_or_default()
            .to_vec()
    }

    /// The last `ms` milliseconds of what it heard.
    pub fn tail(&self, ms: usize) -> Vec<i16> {
        let heard = self.heard.lock().expect("lock");
        heard[heard.len().saturating_sub(8 * ms)..].to_vec()
    }
}

/// Share of `hz` in `samples`, median over 50 ms windows. Use tones with a
/// whole number of cycles in 50 ms (multiples of 20 Hz): 550 Hz leaks into
/// the neighbouring bins and reads as 0.4 even when pure.
pub fn share(samples: &[i16], hz: f64) -> f64 {
    median_power_ratio(samples, hz as f32, 400)
}

/// Asserts that each peer's last second holds every other peer's tone and
/// not its own.
pub fn assert_hear_each_other(peers: &[&TonePeer]) {
    for p in peers {
        let tail = p.tail(1000);
        let spectrum: Vec<String> = [425.0, 440.0, 560.0, 660.0, 700.0, 780.0]
            .iter()
            .map(|hz| format!("{hz} Hz: {:.3}", share(&tail, *hz)))
            .collect();
        let rms = (tail
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            / tail.len().max(1) as f64)
            .sqrt();
        eprintln!(
            "{} Hz far end hears ({} samples, rms {rms:.0}): {}",
            p.hz,
            tail.len(),
            spectrum.join(", ")
        );
    }
    for p in peers {
        let tail = p.tail(1000);
        assert!(
            tail.len() >= 6000,
            "the {} Hz far end heard only {} samples",
            p.hz,
            tail.len()
        );
        for other in peers {
            let s = share(&tail, other.hz);
            if other.hz == p.hz {
                assert!(s < 0.05, "the {} Hz far end hears itself: {s:.3}", p.hz);
            } else {
                let spectrum: Vec<String> = [425.0, 440.0, 560.0, 660.0, 700.0, 780.0]
                    .iter()
                    .map(|hz| format!("{hz} Hz: {:.3}", share(&tail, *hz)))
                    .collect();
                assert!(
                    s > 0.2,
                    "the {} Hz far end hears {} Hz only at {s:.3} ({})",
                    p.hz,
                    other.hz,
                    spectrum.join(", ")
                );
            }
        }
    }
}

impl Drop for TonePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
