//! Mixer benchmark: how many legs one core mixes in real time.
//!
//! The media engine runs pinned to CPU 0. A load generator — this same
//! binary started again with `--generator`, a separate process pinned to
//! CPU 1 — sends every leg one 20 ms PCMU packet every 20 ms over loopback
//! UDP and receives what each leg is sent back. Legs are grouped in rooms of
//! `--room` legs (3 by default: caller, callee and one more); every leg is a
//! real UDP port pair of the engine, latched onto the generator by symmetric
//! RTP.
//!
//! For each N of the ramp it reports the engine's late frames (a frame is
//! late when it left more than one frame period after it was due, or was
//! skipped), the engine process's CPU use, and what the generator saw:
//! frames received against frames expected, and frames that arrived more
//! than 20 ms behind their stream's schedule. The largest N with fewer than
//! 0.1 % late frames is the result.
//!
//! `--janus` measures Janus AudioBridge (Debian package `janus`) at the same
//! N in the same run: the same generator, the same rooms of plain-RTP PCMU
//! participants, Janus pinned to CPU 0.
//!
//! Each N is run `--repeat` times (3) and judged by its median run; Janus
//! once per N (its failure is saturation, not noise, and each run has to
//! set up every participant over its HTTP API).
//!
//! cargo bench -p switchboard --bench media_mix -- [--legs 1000,2000,3000]
//!     [--seconds 10] [--room 3] [--repeat 3] [--janus] [--no-timestamps] [--quick]
//!
//! `--no-timestamps` turns off the engine's kernel receive timestamps, to
//! measure what they cost.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};
use switchboard::media::engine::pin_to;
use switchboard::media::jitter::JitterConfig;
use switchboard::media::{Law, LegConfig, MediaConfig, MediaEngine};

const FRAME: Duration = Duration::from_millis(20);
const GENERATOR_SOCKETS: usize = 4;

struct Options {
    legs: Vec<usize>,
    seconds: u64,
    warmup: u64,
    room: usize,
    repeat: usize,
    janus: bool,
    no_timestamps: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let legs = value("--legs")
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if quick {
                vec![60]
            } else {
                vec![1000, 2000, 3000, 4000, 5000, 6000]
            }
        });
    Options {
        legs,
        seconds: value("--seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 2 } else { 10 }),
        warmup: if quick { 1 } else { 3 },
        room: value("--room")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
            .max(2),
        repeat: value("--repeat")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1 } else { 3 })
            .max(1),
        janus: args.iter().any(|a| a == "--janus"),
        no_timestamps: args.iter().any(|a| a == "--no-timestamps"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--generator") {
        generator();
        return;
    }
    let options = options();
    println!(
        "media_mix: rooms of {} legs, {} s measured after {} s warm-up, engine on CPU 0, generator on CPU 1",
        options.room, options.seconds, options.warmup
    );
    println!(
        "{:>6} {:>12} {:>14} {:>8} {:>10} {:>12} {:>12} {:>10}",
        "legs", "system", "late frames", "max ms", "CPU %", "CPU µs/leg/s", "received", "gen late"
    );
    // Each N is measured `--repeat` times and judged by its median run: the
    // machine is shared, and a stall of the whole VM (both processes late
    // at once) fails a run whatever the mixer does. Every run is printed.
    let mut best = None;
    let mut janus_at = Vec::new();
    for &n in &options.legs {
        let mut runs: Vec<Outcome> = (0..options.repeat)
            .map(|_| {
                let r = run_switchboard(n, &options);
                r.print(n, "switchboard");
                r
            })
            .collect();
        runs.sort_by(|a, b| a.badness().total_cmp(&b.badness()));
        let median = runs.swap_remove(runs.len() / 2);
        let ok = median.passes();
        if ok {
            best = Some(n);
        }
        let saturated = median.late_ratio() > 0.05;
        janus_at.push((n, median));
        if saturated {
            break;
        }
    }
    match best {
        Some(n) => println!(
            "largest N whose median run had < 0.1 % late frames and > 99.9 % received: {n} legs"
        ),
        None => println!("no N of the ramp met < 0.1 % late frames"),
    }
    if !options.janus {
        return;
    }
    // Janus at every N Switchboard ran, judged from outside by the same
    // generator (Janus has no late-frame counter of its own).
    let mut janus_best = None;
    let mut pairs = Vec::new();
    for (n, ours) in janus_at {
        match run_janus(n, &options) {
            Ok(r) => {
                r.print(n, "janus");
                if r.passes() {
                    janus_best = Some(n);
                }
                pairs.push((n, ours, r));
            }
            Err(e) => {
                println!("{n:>6} {:>12} failed: {e}", "janus");
                break;
            }
        }
    }
    println!("same N, same generator: Switchboard against Janus AudioBridge");
    for (n, ours, janus) in &pairs {
        println!(
            "  N = {n}: CPU per leg {:.0} vs {:.0} µs/s (Janus uses {:.1}x); frames late at the generator {:.3} % vs {:.3} %; received {:.2} % vs {:.2} %",
            ours.cpu_per_leg(*n),
            janus.cpu_per_leg(*n),
            janus.cpu_per_leg(*n) / ours.cpu_per_leg(*n).max(f64::MIN_POSITIVE),
            100.0 * ours.generator_late_ratio(),
            100.0 * janus.generator_late_ratio(),
            100.0 * ours.received_ratio(),
            100.0 * janus.received_ratio(),
        );
    }
    match (best, janus_best) {
        (Some(a), Some(b)) => println!(
            "capacity on one core (< 0.1 % late, > 99.9 % received): Switchboard {a} legs, Janus {b} legs, ratio {:.1}",
            a as f64 / b as f64
        ),
        (Some(a), None) => println!(
            "capacity on one core: Switchboard {a} legs; Janus met the bar at no N of the ramp"
        ),
        _ => {}
    }
}

/// What one run measured.
#[derive(Default)]
struct Outcome {
    frames: u64,
    late_frames: u64,
    max_lateness_ms: f64,
    cpu_percent: f64,
    generator: GeneratorReport,
}

impl Outcome {
    fn late_ratio(&self) -> f64 {
        if self.frames == 0 {
            return 1.0;
        }
        self.late_frames as f64 / self.frames as f64
    }

    fn received_ratio(&self) -> f64 {
        if self.generator.expected == 0 {
            return 0.0;
        }
        self.generator.received as f64 / self.generator.expected as f64
    }

    /// The bar: fewer than 0.1 % frames late (by the engine's count, where
    /// there is one, and at the generator) and more than 99.9 % received.
    fn passes(&self) -> bool {
        let engine_ok = self.frames == 0 || self.late_ratio() < 0.001;
        engine_ok && self.received_ratio() > 0.999 && self.generator_late_ratio() < 0.001
    }

    /// For ordering runs of one N: the worse of late and missing frames.
    fn badness(&self) -> f64 {
        let late = if self.frames == 0 {
            0.0
        } else {
            self.late_ratio()
        };
        late.max(self.generator_late_ratio())
            .max(1.0 - self.received_ratio())
    }

    fn generator_late_ratio(&self) -> f64 {
        if self.generator.received == 0 {
            return 1.0;
        }
        self.generator.late as f64 / self.generator.received as f64
    }

    fn cpu_per_leg(&self, n: usize) -> f64 {
        self.cpu_percent / 100.0 * 1e6 / n as f64
    }

    fn print(&self, n: usize, system: &str) {
        let late = if system == "janus" {
            "n/a".to_string()
        } else {
            format!("{:.3} %", 100.0 * self.late_ratio())
        };
        let max = if system == "janus" {
            "n/a".to_string()
        } else {
            format!("{:.1}", self.max_lateness_ms)
        };
        let gen_late = 100.0 * self.generator_late_ratio();
        println!(
            "{:>6} {:>12} {:>14} {:>8} {:>10.1} {:>12.2} {:>11.2}% {:>9.3}%",
            n,
            system,
            late,
            max,
            self.cpu_percent,
            self.cpu_per_leg(n),
            100.0 * self.received_ratio(),
            gen_late,
        );
    }
}

fn cpu_seconds_self() -> f64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}

/// CPU seconds used by another process, from /proc (clock ticks of 10 ms).
fn cpu_seconds_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn run_switchboard(n: usize, options: &Options) -> Outcome {
    pin_to(0);
    let config = MediaConfig {
        ports: (20000, 20000 + (2 * n as u16) + 200),
        cpu: Some(0),
        jitter: JitterConfig::default(),
        receive_timestamps: !options.no_timestamps,
        ..MediaConfig::default()
    };
    let (engine, _events) = match MediaEngine::start(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot start the engine: {e}");
            return Outcome::default();
        }
    };
    let mut generator = Generator::start();
    let mut conference = None;
    for i in 0..n {
        if i % options.room == 0 {
            conference = engine.create_conference().ok();
        }
        let Some(c) = conference else { continue };
        match engine.add_leg(c, LegConfig::new(Law::Ulaw, None)) {
            Ok(leg) => generator.target(leg.local),
            Err(e) => {
                eprintln!("leg {i}: {e}");
                break;
            }
        }
    }
    generator.go(options.warmup, options.seconds);
    std::thread::sleep(Duration::from_secs(options.warmup));
    let (s0, cpu0, t0) = (engine.stats(), cpu_seconds_self(), Instant::now());
    std::thread::sleep(Duration::from_secs(options.seconds));
    let (s1, cpu1, wall) = (engine.stats(), cpu_seconds_self(), t0.elapsed());
    let report = generator.finish();
    drop(engine);
    Outcome {
        frames: s1.frames - s0.frames,
        late_frames: s1.late_frames - s0.late_frames,
        max_lateness_ms: s1.max_lateness_us as f64 / 1000.0,
        cpu_percent: 100.0 * (cpu1 - cpu0) / wall.as_secs_f64(),
        generator: report,
    }
}

// --- The load generator ----------------------------------------------------

/// The parent's handle on the generator process.
struct Generator {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The generator's socket addresses (legs are spread over them).
    sockets: Vec<SocketAddr>,
    legs: usize,
}

impl Drop for Generator {
    /// A run that failed half-way (Janus refused joins) must not leave the
    /// generator behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default, Debug)]
struct GeneratorReport {
    sent: u64,
    expected: u64,
    received: u64,
    late: u64,
    send_late_ticks: u64,
}

impl Generator {
    fn start() -> Generator {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .arg("--generator")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the generator");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let sockets = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or("")
            .split(' ')
            .filter_map(|a| a.parse().ok())
            .collect();
        Generator {
            child,
            stdin,
            stdout,
            sockets,
            legs: 0,
        }
    }

    /// The generator socket that leg `i` uses.
    fn socket_of(&self, i: usize) -> SocketAddr {
        self.sockets[i % self.sockets.len()]
    }

    fn target(&mut self, addr: SocketAddr) {
        let _ = writeln!(self.stdin, "target {addr}");
        self.legs += 1;
    }

    fn go(&mut self, warmup: u64, seconds: u64) {
        let _ = writeln!(self.stdin, "go {warmup} {seconds}");
        let _ = self.stdin.flush();
    }

    fn finish(mut self) -> GeneratorReport {
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        let _ = self.child.wait();
        let mut r = GeneratorReport::default();
        for kv in line.split_whitespace() {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "sent" => r.sent = v,
                "expected" => r.expected = v,
                "received" => r.received = v,
                "late" => r.late = v,
                "send_late_ticks" => r.send_late_ticks = v,
                _ => {}
            }
        }
        if r.send_late_ticks > 0 {
            eprintln!(
                "  (generator was late on {} of its send ticks)",
                r.send_late_ticks
            );
        }
        r
    }
}

/// Per-leg arrival bookkeeping on the generator side.
struct Arrivals {
    first_seq: Option<u16>,
    /// Minimum of (arrival - k·20 ms) over the previous and current second.
    base_prev: i64,
    base_cur: i64,
    count_in_window: u32,
    received: u64,
    late: u64,
}

impl Arrivals {
    fn new() -> Self {
        Arrivals {
            first_seq: None,
            base_prev: i64::MAX,
            base_cur: i64::MAX,
            count_in_window: 0,
            received: 0,
            late: 0,
        }
    }

    fn record(&mut self, seq: u16, at_us: i64, measuring: bool) {
        let first = *self.first_seq.get_or_insert(seq);
        // Packets of one stream never wrap within a run of a few minutes.
        let k = i64::from(seq.wrapping_sub(first));
        let offset = at_us - k * 20_000;
        let base = self.base_prev.min(self.base_cur).min(offset);
        self.base_cur = self.base_cur.min(offset);
        self.count_in_window += 1;
        if self.count_in_window == 50 {
            self.base_prev = self.base_cur;
            self.base_cur = i64::MAX;
            self.count_in_window = 0;
        }
        if measuring {
            self.received += 1;
            if offset - base > 20_000 {
                self.late += 1;
            }
        }
    }
}

/// The generator process: binds its sockets, reads its targets, sends one
/// PCMU packet per leg every 20 ms (batched with sendmmsg) and receives
/// everything (recvmmsg), then prints one result line.
fn generator() {
    pin_to(1);
    let sockets: Vec<Arc<UdpSocket>> = (0..GENERATOR_SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let _ = nix::sys::socket::setsockopt(
                &s,
                nix::sys::socket::sockopt::RcvBufForce,
                &(8 << 20),
            );
            let _ = nix::sys::socket::setsockopt(
                &s,
                nix::sys::socket::sockopt::SndBufForce,
                &(8 << 20),
            );
            Arc::new(s)
        })
        .collect();
    let addrs: Vec<String> = sockets
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    println!("ready {}", addrs.join(" "));
    let _ = std::io::stdout().flush();
    let mut targets: Vec<SocketAddr> = Vec::new();
    let (mut warmup, mut seconds) = (3u64, 10u64);
    let mut go = false;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("target") => {
                if let Some(a) = words.next().and_then(|a| a.parse().ok()) {
                    targets.push(a);
                }
            }
            Some("go") => {
                warmup = words.next().and_then(|v| v.parse().ok()).unwrap_or(3);
                seconds = words.next().and_then(|v| v.parse().ok()).unwrap_or(10);
                go = true;
                break;
            }
            _ => {}
        }
    }
    if !go {
        // The parent gave up before starting the load.
        return;
    }
    let index: Arc<HashMap<SocketAddr, usize>> =
        Arc::new(targets.iter().enumerate().map(|(i, a)| (*a, i)).collect());
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(warmup);
    let end = measure_from + Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let sent_in_window = Arc::new(AtomicU64::new(0));

    // Receivers: one thread per socket.
    let receivers: Vec<_> = sockets
        .iter()
        .map(|socket| {
            let (socket, index, stop) = (socket.clone(), index.clone(), stop.clone());
            let legs = targets.len();
            std::thread::spawn(move || {
                receive(&socket, &index, legs, start, measure_from, end, &stop)
            })
        })
        .collect();

    // Sender: every 20 ms, one packet per leg.
    let payload: Vec<u8> = {
        let samples: Vec<i16> = (0..160)
            .map(|i| {
                ((2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin() * 6000.0) as i16
            })
            .collect();
        let mut p = Vec::new();
        Law::Ulaw.encode(&samples, &mut p);
        p
    };
    let ssrc: Vec<u32> = (0..targets.len()).map(|i| 0x5000_0000 + i as u32).collect();
    let mut packets: Vec<Vec<u8>> = vec![vec![0u8; 12 + 160]; targets.len()];
    let dests: Vec<Option<SockaddrIn>> = targets
        .iter()
        .map(|a| match a {
            SocketAddr::V4(v4) => Some(SockaddrIn::from(*v4)),
            SocketAddr::V6(_) => None,
        })
        .collect();
    let mut send_late_ticks = 0u64;
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(256, None);
    let mut k: u32 = 0;
    loop {
        let due = start + FRAME * k;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > FRAME {
            send_late_ticks += 1;
        }
        let seq = k as u16;
        let ts = k.wrapping_mul(160);
        for (i, p) in packets.iter_mut().enumerate() {
            p[0] = 0x80;
            p[1] = if k == 0 { 0x80 } else { 0 };
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p[4..8].copy_from_slice(&ts.to_be_bytes());
            p[8..12].copy_from_slice(&ssrc[i].to_be_bytes());
            p[12..].copy_from_slice(&payload);
        }
        for (s, socket) in sockets.iter().enumerate() {
            let mine: Vec<usize> = (s..targets.len()).step_by(sockets.len()).collect();
            for chunk in mine.chunks(256) {
                let slices: Vec<[std::io::IoSlice<'_>; 1]> = chunk
                    .iter()
                    .map(|&i| [std::io::IoSlice::new(&packets[i])])
                    .collect();
                let addrs: Vec<Option<SockaddrIn>> = chunk.iter().map(|&i| dests[i]).collect();
                let _ = sendmmsg(
                    socket.as_raw_fd(),
                    &mut headers,
                    &slices,
                    &addrs,
                    [],
                    MsgFlags::empty(),
                );
            }
        }
        if due >= measure_from {
            sent_in_window.fetch_add(targets.len() as u64, Ordering::Relaxed);
        }
        k += 1;
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (mut received, mut late) = (0u64, 0u64);
    for r in receivers {
        if let Ok((rec, l)) = r.join() {
            received += rec;
            late += l;
        }
    }
    let expected = targets.len() as u64 * seconds * 50;
    println!(
        "result sent={} expected={expected} received={received} late={late} send_late_ticks={send_late_ticks}",
        sent_in_window.load(Ordering::Relaxed)
    );
}

fn receive(
    socket: &UdpSocket,
    index: &HashMap<SocketAddr, usize>,
    legs: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    stop: &AtomicBool,
) -> (u64, u64) {
    let mut arrivals: Vec<Arrivals> = (0..legs).map(|_| Arrivals::new()).collect();
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(64, None);
    let mut bufs = vec![[0u8; 256]; 64];
    while !stop.load(Ordering::Relaxed) {
        let mut slices: Vec<[std::io::IoSliceMut<'_>; 1]> = bufs
            .iter_mut()
            .map(|b| [std::io::IoSliceMut::new(&mut b[..])])
            .collect();
        // Poll rather than block: a receiver asleep in the socket's wait
        // queue makes every datagram sent to it wake a thread on the other
        // CPU, a cost the sender pays (30 % of the engine's profile when the
        // generator blocked). Real far ends are on other machines.
        let results = match recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let now = Instant::now();
        let measuring = now >= measure_from && now < end;
        let at_us = now.duration_since(start).as_micros() as i64;
        let got: Vec<(Option<SockaddrIn>, usize)> = results.map(|r| (r.address, r.bytes)).collect();
        for (i, (from, len)) in got.into_iter().enumerate() {
            let Some(from) = from else { continue };
            let from = SocketAddr::V4(std::net::SocketAddrV4::new(from.ip(), from.port()));
            let Some(&leg) = index.get(&from) else {
                continue;
            };
            if len < 12 {
                continue;
            }
            let seq = u16::from_be_bytes([bufs[i][2], bufs[i][3]]);
            arrivals[leg].record(seq, at_us, measuring);
        }
    }
    arrivals
        .iter()
        .fold((0, 0), |(r, l), a| (r + a.received, l + a.late))
}

// --- Janus AudioBridge ------------------------------------------------------

/// A minimal blocking HTTP/1.1 client for Janus's REST API.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<serde_json::Value, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
    let json = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&json).map_err(|e| format!("bad JSON from Janus ({e}): {json}"))
}

/// Undoes HTTP/1.1 chunked transfer coding.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

struct Janus {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_janus(port: u16) -> Result<Janus, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let p = dir.path();
    let plugins = "/usr/lib/x86_64-linux-gnu/janus/plugins";
    let transports = "/usr/lib/x86_64-linux-gnu/janus/transports";
    std::fs::write(
        p.join("janus.jcfg"),
        format!(
            "general: {{\n configs_folder = \"{}\"\n plugins_folder = \"{plugins}\"\n transports_folder = \"{transports}\"\n events_folder = \"/nonexistent\"\n loggers_folder = \"/nonexistent\"\n debug_level = 2\n session_timeout = 0\n interface = \"127.0.0.1\"\n}}\nmedia: {{\n rtp_port_range = \"40000-49999\"\n}}\nnat: {{\n ice_enforce_list = \"lo\"\n}}\nplugins: {{\n disable = \"libjanus_echotest.so,libjanus_duktape.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so\"\n}}\ntransports: {{\n disable = \"libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so\"\n}}\nevents: {{\n broadcast = false\n}}\n",
            p.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        p.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n json = \"compact\"\n base_path = \"/janus\"\n http = true\n port = {port}\n ip = \"127.0.0.1\"\n https = false\n}}\nadmin: {{\n admin_http = false\n}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        p.join("janus.plugin.audiobridge.jcfg"),
        "general: {\n rtp_port_range = \"50000-59999\"\n local_ip = \"127.0.0.1\"\n}\n",
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(p.join("janus.log")).map_err(|e| e.to_string())?;
    let child = Command::new("taskset")
        .args(["-c", "0", "janus", "-F"])
        .arg(p)
        .arg("-C")
        .arg(p.join("janus.jcfg"))
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start janus ({e}); install it with apt-get install janus"))?;
    let janus = Janus { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http(port, "GET", "/janus/info", "").is_ok() {
            return Ok(janus);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err("janus did not answer on its HTTP port within 20 s".into())
}

fn run_janus(n: usize, options: &Options) -> Result<Outcome, String> {
    let port = 18088;
    let janus = start_janus(port)?;
    let mut generator = Generator::start();
    let tx = |t: usize| format!("t{t}");
    let created = http(
        port,
        "POST",
        "/janus",
        &format!(r#"{{"janus":"create","transaction":"{}"}}"#, tx(0)),
    )?;
    let session = created["data"]["id"]
        .as_u64()
        .ok_or(format!("no session: {created}"))?;
    let path = format!("/janus/{session}");
    let mut handles = Vec::new();
    for i in 0..n {
        let r = http(
            port,
            "POST",
            &path,
            &format!(
                r#"{{"janus":"attach","plugin":"janus.plugin.audiobridge","transaction":"{}"}}"#,
                tx(i)
            ),
        )?;
        handles.push(
            r["data"]["id"]
                .as_u64()
                .ok_or(format!("attach failed: {r}"))?,
        );
    }
    let rooms = n.div_ceil(options.room);
    for room in 0..rooms {
        let body = format!(
            r#"{{"janus":"message","transaction":"room{room}","body":{{"request":"create","room":{},"audiocodec":"pcmu","sampling_rate":8000,"allow_rtp_participants":true,"audiolevel_ext":false}}}}"#,
            room + 1
        );
        let r = http(port, "POST", &format!("{path}/{}", handles[0]), &body)?;
        let ok = r["plugindata"]["data"]["audiobridge"].as_str() == Some("created");
        if !ok {
            return Err(format!("room create failed: {r}"));
        }
    }
    // Joins: each participant tells Janus where the generator listens for
    // it; Janus answers (asynchronously) with the port it listens on.
    let mut pending: HashMap<u64, usize> = HashMap::new();
    for (i, handle) in handles.iter().enumerate() {
        let to = generator.socket_of(i);
        let body = format!(
            r#"{{"janus":"message","transaction":"j{i}","body":{{"request":"join","room":{},"codec":"pcmu","rtp":{{"ip":"{}","port":{},"payload_type":0}}}}}}"#,
            i / options.room + 1,
            to.ip(),
            to.port()
        );
        http(port, "POST", &format!("{path}/{handle}"), &body)?;
        pending.insert(*handle, i);
    }
    let mut janus_ports: Vec<Option<SocketAddr>> = vec![None; n];
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() && Instant::now() < deadline {
        let r = http(port, "GET", &format!("{path}?maxev=100"), "")?;
        let events = if r.is_array() {
            r.as_array().cloned().unwrap_or_default()
        } else {
            vec![r]
        };
        for e in events {
            let Some(sender) = e["sender"].as_u64() else {
                continue;
            };
            let data = &e["plugindata"]["data"];
            if data["audiobridge"].as_str() != Some("joined") {
                if data["error"].is_string() {
                    return Err(format!("join failed: {data}"));
                }
                continue;
            }
            let Some(i) = pending.remove(&sender) else {
                continue;
            };
            let rtp = &data["rtp"];
            let ip = rtp["ip"].as_str().unwrap_or("127.0.0.1");
            let ip = if ip == "0.0.0.0" || ip.is_empty() {
                "127.0.0.1"
            } else {
                ip
            };
            let p = rtp["port"].as_u64().unwrap_or(0) as u16;
            janus_ports[i] = format!("{ip}:{p}").parse().ok();
        }
    }
    if !pending.is_empty() {
        return Err(format!("{} joins unanswered after 120 s", pending.len()));
    }
    for addr in janus_ports.iter().flatten() {
        generator.target(*addr);
    }
    let pid = janus.child.id();
    generator.go(options.warmup, options.seconds);
    std::thread::sleep(Duration::from_secs(options.warmup));
    let (cpu0, t0) = (cpu_seconds_of(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(options.seconds));
    let (cpu1, wall) = (cpu_seconds_of(pid), t0.elapsed());
    let report = generator.finish();
    drop(janus);
    Ok(Outcome {
        frames: 0,
        late_frames: 0,
        max_lateness_ms: 0.0,
        cpu_percent: 100.0 * (cpu1 - cpu0) / wall.as_secs_f64(),
        generator: report,
    })
}
