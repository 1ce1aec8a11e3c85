//! SIP call-setup benchmark against SIPp on loopback.
//!
//! Phase 1 (throughput): complete calls — INVITE / 100 / 180 / 200 / ACK,
//! then BYE / 200 — from Switchboard's SIP stack to SIPp's built-in UAS
//! (`bench/sip_uas.xml`: `sipp -sd uas` plus a 100 Trying), with a fixed number of calls in flight, as fast as both
//! sides go. Prints calls per second, failed calls and setup latency.
//!
//! Phase 2 (capacity): establishes many dialogs and holds them all at once,
//! then reports the process's resident memory growth per dialog, and hangs
//! them all up.
//!
//! Run with `cargo bench -p switchboard --bench sip_calls` (add `-- --quick`
//! for a short smoke run; the test script does that). Both processes share
//! this machine's two cores, so the figure is for Switchboard and SIPp together.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-nostdin",
            "-max_recv_loops",
            "10000",
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
        target: format!("sip:+4420{i:08}@127.0.0.1:{port}"),
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
    let (calls, window, held) = if quick {
        (300, 50, 200)
    } else {
        (20_000, 200, 10_000)
    };
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

        println!("phase 1: {calls} complete calls (INVITE/100/180/200/ACK + BYE/200), {window} in flight, SIPp UAS on loopback");
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
            println!("  stack: sent {} received {} retransmissions {} stray {}", stats.sent, stats.received, stats.retransmissions, stats.stray_responses);
        }

        // Phase 2: let the phase-1 transactions expire (64·T1), then hold many dialogs.
        tokio::time::sleep(Duration::from_secs(if quick { 1 } else { 33 })).await;
        println!("phase 2: {held} dialogs established and held at once");
        let before = rss_bytes();
        let mut live = Vec::with_capacity(held);
        let started = Instant::now();
        let mut pending = Vec::with_capacity(held);
        for i in 0..held {
            pending.push(sip.place_call(request(port, 100_000 + i)).await);
            if pending.len() >= window || i + 1 == held {
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
        }
        // Let the INVITE transactions leave the Accepted state so only dialogs remain.
        tokio::time::sleep(Duration::from_secs(if quick { 1 } else { 33 })).await;
        let after = rss_bytes();
        let active = sip.stats().await.map(|s| s.calls_active).unwrap_or(0);
        println!(
            "  {} dialogs up in {:.2} s ({active} tracked by the stack); RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per dialog",
            live.len(),
            started.elapsed().as_secs_f64(),
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            after.saturating_sub(before) as f64 / live.len().max(1) as f64,
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
        println!("  {ended} hung up");
        if !failures.is_empty() {
            std::process::exit(1);
        }
    });
}
