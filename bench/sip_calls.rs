//! SIP call-setup benchmark against SIPp on loopback.
//!
//! Phase 1 (capacity, first so the heap is fresh): establishes many dialogs
//! and holds them all at once, reports the process's resident memory growth
//! per dialog, and hangs them all up.
//!
//! Phase 2 (throughput): complete calls — INVITE / 100 / 180 / 200 / ACK,
//! then BYE / 200 — from Switchboard's SIP stack to SIPp as UAS
//! (`bench/sip_uas.xml`: `sipp -sd uas` plus a 100 Trying), with a fixed
//! number of calls in flight, as fast as both sides go. Prints calls per
//! second, failed calls and setup latency (INVITE sent to 200 received).
//!
//! Run with `cargo bench -p switchboard --bench sip_calls` (add `-- --quick`
//! for a short smoke run; the test script does that). Both processes share
//! this machine's two cores, so the figure is for Switchboard and SIPp together.
//! Options: `--calls N`, `--window N` (calls in flight), `--held N`;
//! `SIPP_ARGS=...` adds SIPp arguments.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::sip::TargetUri;

use switchboard::sip::{AudioSdp, CallEvent, CallRequest, Config, SipService, Timers};
use tokio::sync::Semaphore;

struct Sipp(Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sipp() -> (Sipp, u16) {
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(5099);
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/sip_uas.xml"))
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
        // Read many datagrams per loop, big socket buffers, and no cap on open
        // calls: SIPp silently ignores an INVITE it dropped once (it keeps dead
        // Call-IDs), so any drop on its side becomes a 32 s Timer B failure here.
        .args([
            "-max_recv_loops",
            "10000",
            "-buff_size",
            "16777216",
            "-l",
            "1000000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sipp ({e}); install the sip-tester package"));
    std::thread::sleep(Duration::from_millis(300));
    (Sipp(child), port)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn request(port: u16, i: usize) -> CallRequest {
    CallRequest {
        target: TargetUri::parse(&format!("sip:+4420{i:08}@127.0.0.1:{port}"))
            .expect("a valid target URI"),
        provider: None,
        offer: AudioSdp::offer(
            "127.0.0.1"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            30000,
            i as u64,
        ),
        ring_timeout: None,
        caller: None,
    }
}

/// Outcome of one call: setup time (INVITE to answer) or why it failed.
async fn one_call(sip: SipService, port: u16, i: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let mut call = sip
        .place_call(request(port, i))
        .await
        .map_err(|e| e.to_string())?;
    let setup = loop {
        match call.events.recv().await {
            Some(CallEvent::Answered { .. }) => break started.elapsed(),
            Some(CallEvent::Failed { status, reason }) => return Err(format!("{status} {reason}")),
            Some(_) => {}
            None => return Err("no answer".into()),
        }
    };
    sip.hangup(call.id);
    while let Some(e) = call.events.recv().await {
        if let CallEvent::Ended { .. } = e {
            return Ok(setup);
        }
    }
    Err("no end".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (mut calls, mut window, mut held) = if quick {
        (300, 20, 200)
    } else {
        (20_000, 50, 10_000)
    };
    // `--calls N`, `--window N` (calls in flight) and `--held N` override the defaults.
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let n = pair[1].parse().ok();
        match (pair[0].as_str(), n) {
            ("--calls", Some(n)) => calls = n,
            ("--window", Some(n)) => window = n,
            ("--held", Some(n)) => held = n,
            _ => {}
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    runtime.block_on(async move {
        let (_sipp, port) = start_sipp();
        let config = Config {
            udp: vec!["127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())],
            timers: Timers::default(),
            ..Config::default()
        };
        let sip = SipService::start(config).await.unwrap_or_else(|e| panic!("{e}"));

        // Warm-up: SIPp and our sockets settle.
        for i in 0..20 {
            let _ = one_call(sip.clone(), port, i).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Phase 1 (on a fresh heap, so the growth is the dialogs'): hold many at once.
        println!("phase 1: {held} dialogs established and held at once");
        let before = rss_bytes();
        let started = Instant::now();
        let mut live = Vec::with_capacity(held);
        let mut pending = Vec::with_capacity(window);
        for i in 0..held {
            pending.push(sip.place_call(request(port, 100_000 + i)).await);
            if pending.len() < window && i + 1 < held {
                continue;
            }
            for placed in pending.drain(..) {
                let Ok(mut call) = placed else { continue };
                loop {
                    match call.events.recv().await {
                        Some(CallEvent::Answered { .. }) => {
                            live.push(call);
                            break;
                        }
                        Some(CallEvent::Failed { .. }) | None => break,
                        Some(_) => {}
                    }
                }
            }
        }
        let up_in = started.elapsed();
        let with_transactions = rss_bytes();
        // The INVITE transactions linger 64·T1 (32 s) to absorb 2xx retransmissions;
        // after that only the dialogs remain.
        tokio::time::sleep(Duration::from_secs(if quick { 1 } else { 33 })).await;
        let after = rss_bytes();
        let per = |rss: u64| rss.saturating_sub(before) as f64 / live.len().max(1) as f64;
        println!(
            "  {} dialogs up in {:.2} s; RSS {:.1} MiB before, {:.1} MiB with their INVITE transactions ({:.0} B/dialog), {:.1} MiB after those expired ({:.0} B/dialog)",
            live.len(),
            up_in.as_secs_f64(),
            before as f64 / 1048576.0,
            with_transactions as f64 / 1048576.0,
            per(with_transactions),
            after as f64 / 1048576.0,
            per(after),
        );
        for call in &live {
            sip.hangup(call.id);
        }
        let mut ended = 0;
        for mut call in live {
            while let Some(e) = call.events.recv().await {
                if matches!(e, CallEvent::Ended { .. }) {
                    ended += 1;
                    break;
                }
            }
        }
        println!("  {ended} hung up (BYE answered)");

        println!("phase 2: {calls} complete calls (INVITE/100/180/200/ACK + BYE/200), {window} in flight, SIPp UAS on loopback");
        let limit = Arc::new(Semaphore::new(window));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(calls);
        for i in 0..calls {
            let permit = match limit.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => break,
            };
            let sip = sip.clone();
            tasks.push(tokio::spawn(async move {
                let r = one_call(sip, port, 1000 + i).await;
                drop(permit);
                r
            }));
            if i > 0 && i % 5000 == 0 {
                eprintln!("  {i} calls started, {:.1} s", started.elapsed().as_secs_f64());
            }
        }
        let mut setups = Vec::with_capacity(calls);
        let mut failures: Vec<String> = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok(d)) => setups.push(d),
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let elapsed = started.elapsed();
        setups.sort();
        println!(
            "  {:.0} calls/s ({} ok, {} failed, {:.2} s); setup p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            setups.len() as f64 / elapsed.as_secs_f64(),
            setups.len(),
            failures.len(),
            elapsed.as_secs_f64(),
            percentile(&setups, 0.5).as_secs_f64() * 1e3,
            percentile(&setups, 0.99).as_secs_f64() * 1e3,
            setups.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
        if let Some(first) = failures.first() {
            println!("  first failure: {first}");
        }
        if let Ok(stats) = sip.stats().await {
            println!(
                "  stack: sent {} received {} retransmissions {} stray {} malformed {}",
                stats.sent,
                stats.received,
                stats.retransmissions,
                stats.stray_responses,
                stats.dropped_malformed + stats.rejected_malformed
            );
        }
        if !failures.is_empty() || ended < held {
            std::process::exit(1);
        }
    });
}
