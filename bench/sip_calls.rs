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
//! Phase 2 runs the same load through three providers in the same run, in
//! interleaved rounds: one addressed by IP, one by a DNS name (dnsmasq on
//! loopback serves its SRV and A records; the cache is warm after the
//! warm-up, as in service), and one that registers first (a second SIPp
//! as its registrar). Each prints its own calls per second.
//!
//! Phase 3 times the endpoint alone (sans-IO, no SIPp) on the same two
//! providers, IP and DNS-named, to show what the name costs a call where
//! the end-to-end figures are too noisy to tell.
//!
//! Run with `cargo bench -p switchboard --bench sip_calls` (add `-- --quick`
//! for a short smoke run; the test script does that). Both processes share
//! this machine's two cores, so the figure is for Switchboard and SIPp together.
//! Options: `--calls N`, `--window N` (calls in flight), `--held N`;
//! `SIPP_ARGS=...` adds SIPp arguments.

#[path = "../tests/dnsmasq_peer/mod.rs"]
mod dnsmasq_peer;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::sip::TargetUri;

use switchboard::sip::{
    AudioSdp, CallEvent, CallRequest, Config, HostPort, Provider, SipService, Timers, Transport,
};
use tokio::sync::Semaphore;

struct Sipp(Child);

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
        .unwrap_or(5099)
}

fn start_sipp() -> (Sipp, u16) {
    start_sipp_with("sip_uas.xml")
}

fn start_sipp_with(scenario: &str) -> (Sipp, u16) {
    let port = free_port();
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(format!(
            "{}/../bench/{scenario}",
            env!("CARGO_MANIFEST_DIR")
        ))
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

/// dnsmasq on loopback serving `uas.bench.test`: an SRV record to
/// `edge.bench.test` at `port`, and its A record, valid for an hour.
fn start_dnsmasq(port: u16) -> dnsmasq_peer::Dnsmasq {
    dnsmasq_peer::Dnsmasq::start_with_ttl(
        &[
            format!("--srv-host=_sip._udp.uas.bench.test,edge.bench.test,{port},10,10"),
            "--host-record=edge.bench.test,127.0.0.1".into(),
        ],
        3600,
    )
}

/// One provider's phase 2 so far: time spent, setups, failures, and each
/// batch's calls per second.
type Tally = (Duration, Vec<Duration>, Vec<String>, Vec<f64>);

/// The three providers of phase 2, in the order their figures print.
const VARIANTS: [(&str, &str); 3] = [
    ("IP", "addressed by IP"),
    ("NAMED", "named by DNS (SRV + A, cache warm)"),
    ("REGISTERED", "registered first"),
];

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
    through(None, port, i)
}

/// Call `i` to SIPp at `port`, through `provider` if given (its URI
/// written as the session layer writes it: the provider's host and port).
fn through(provider: Option<&str>, port: u16, i: usize) -> CallRequest {
    let uri = match provider {
        Some("NAMED") => format!("sip:+4420{i:08}@uas.bench.test"),
        _ => format!("sip:+4420{i:08}@127.0.0.1:{port}"),
    };
    CallRequest {
        target: TargetUri::parse(&uri).expect("a valid target URI"),
        provider: provider.map(str::to_string),
        offer: AudioSdp::offer(
            "127.0.0.1"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            30000,
            i as u64,
        ),
        ring_timeout: None,
        caller: None,
        public_only: false,
    }
}

/// Outcome of one call: setup time (INVITE to answer) or why it failed.
async fn one_call(
    sip: SipService,
    provider: Option<&'static str>,
    port: u16,
    i: usize,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut call = sip
        .place_call(through(provider, port, i))
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

/// Phase 3: what the endpoint itself spends on a call, with no sockets
/// and no SIPp: `place_call` (DNS name located from the warm cache, or an
/// IP address), the INVITE built and taken, and the hangup. Calls
/// alternate between the two providers so drift hits both alike.
fn endpoint_cost(calls: usize) {
    use switchboard::sip::Endpoint;
    use switchboard::sip::dns::{Answer, Record, RecordType};
    let t0 = Instant::now();
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], 5999));
    let providers = vec![
        Provider {
            keepalive: false,
            ..Provider::new("IP", at)
        },
        Provider {
            keepalive: false,
            ..Provider::named(
                "NAMED",
                HostPort::parse("uas.bench.test").unwrap_or_else(|e| panic!("{e}")),
            )
        },
    ];
    let config = Config {
        providers,
        ..Config::default()
    };
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 5070));
    let mut ep = Endpoint::with_rng_seed(config, vec![(Transport::Udp, local)], t0, [1; 32]);
    let mut spent = [Duration::ZERO; 2];
    let mut now = t0;
    for i in 0..calls * 2 {
        let v = i % 2;
        let provider = ["IP", "NAMED"][v];
        let request = through(Some(provider), 5999, i);
        let started = Instant::now();
        let placed = ep.place_call(now, request);
        // The name's records, the first time only (the cache keeps them).
        while let Some(q) = ep.poll_query() {
            let answer = match q.rtype {
                RecordType::Srv => Answer::Records {
                    records: vec![Record::Srv {
                        priority: 10,
                        weight: 10,
                        port: 5999,
                        target: "edge.bench.test".into(),
                    }],
                    ttl: Duration::from_secs(3600),
                },
                RecordType::A => Answer::Records {
                    records: vec![Record::Address(at.ip())],
                    ttl: Duration::from_secs(3600),
                },
                _ => Answer::Empty {
                    nxdomain: false,
                    ttl: None,
                },
            };
            ep.handle_answer(now, &q, answer);
        }
        while ep.poll_transmit().is_some() {}
        if let Ok(id) = placed {
            ep.hangup(now, id);
        }
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
        spent[v] += started.elapsed();
        // Every 1000 calls, 40 virtual seconds pass and the cancelled
        // calls are forgotten (outside the timing).
        if i % 1000 == 999 {
            now += Duration::from_secs(40);
            ep.handle_timeout(now);
            while ep.poll_transmit().is_some() {}
            while ep.poll_event().is_some() {}
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
    println!(
        "phase 3: the endpoint alone, {calls} calls through each provider (place_call, INVITE, hangup; no I/O)"
    );
    println!(
        "  IP {:.2} µs per call, NAMED {:.2} µs per call ({:+.2} µs for the DNS name, cache warm)",
        per(spent[0]),
        per(spent[1]),
        per(spent[1]) - per(spent[0])
    );
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
        let (_registrar, registrar_port) = start_sipp_with("sip_registrar.xml");
        let dnsmasq = start_dnsmasq(port);
        let dns = dnsmasq.addr;
        let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let providers = vec![
            Provider {
                keepalive: false,
                ..Provider::new("IP", at)
            },
            Provider {
                keepalive: false,
                ..Provider::named(
                    "NAMED",
                    HostPort::parse("uas.bench.test").unwrap_or_else(|e| panic!("{e}")),
                )
            },
            Provider {
                keepalive: false,
                register: true,
                expires: 3600,
                registrar: Some(std::net::SocketAddr::from(([127, 0, 0, 1], registrar_port)).into()),
                ..Provider::new("REGISTERED", at)
            },
        ];
        let config = Config {
            udp: vec!["127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())],
            timers: Timers::default(),
            dns: vec![dns],
            providers,
            ..Config::default()
        };
        let sip = SipService::start(config).await.unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while sip.registrations().get("REGISTERED").map(|v| v.state) != Some("registered") {
            if Instant::now() > deadline {
                panic!("REGISTERED did not register: {:?}", sip.registrations());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Warm-up: SIPp and our sockets settle, and the DNS cache fills.
        for i in 0..20 {
            for (provider, _) in VARIANTS {
                let _ = one_call(sip.clone(), Some(provider), port, i).await;
            }
            let _ = one_call(sip.clone(), None, port, i).await;
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

        println!("phase 2: {calls} complete calls (INVITE/100/180/200/ACK + BYE/200) through each of three providers, {window} in flight, SIPp UAS on loopback; rounds interleave the providers");
        let rounds = 12;
        // Per provider: total time, setups, failures, each batch's calls/s.
        let mut results: Vec<Tally> = VARIANTS
            .iter()
            .map(|_| (Duration::ZERO, Vec::new(), Vec::new(), Vec::new()))
            .collect();
        let mut next_call = 1000;
        for round in 0..rounds {
            // Each provider takes each place in the order in turn, and SIPp's
            // finished calls (1 s timewait) drain before each batch, so no
            // provider always follows the others.
            for k in 0..VARIANTS.len() {
                let v = (round + k) % VARIANTS.len();
                let provider = VARIANTS[v].0;
                tokio::time::sleep(Duration::from_millis(1200)).await;
                let n = calls / rounds + usize::from(round < calls % rounds);
                let limit = Arc::new(Semaphore::new(window));
                let started = Instant::now();
                let mut tasks = Vec::with_capacity(n);
                for _ in 0..n {
                    let permit = match limit.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    };
                    let sip = sip.clone();
                    let i = next_call;
                    next_call += 1;
                    tasks.push(tokio::spawn(async move {
                        let r = one_call(sip, Some(provider), port, i).await;
                        drop(permit);
                        r
                    }));
                }
                let (elapsed, setups, failures, batches) = &mut results[v];
                let mut ok = 0;
                for t in tasks {
                    match t.await {
                        Ok(Ok(d)) => {
                            setups.push(d);
                            ok += 1;
                        }
                        Ok(Err(e)) => failures.push(e),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                let took = started.elapsed();
                *elapsed += took;
                batches.push(f64::from(ok) / took.as_secs_f64().max(1e-9));
            }
        }
        let mut failed = 0;
        // The median batch: one batch slowed by a lost datagram (a 500 ms
        // retransmission) or by the machine's other work does not decide.
        let median = |batches: &mut Vec<f64>| {
            batches.sort_by(f64::total_cmp);
            batches.get(batches.len() / 2).copied().unwrap_or(0.0)
        };
        let base = median(&mut results[0].3);
        for ((name, what), (elapsed, setups, failures, batches)) in VARIANTS.iter().zip(&mut results) {
            setups.sort();
            let overall = setups.len() as f64 / elapsed.as_secs_f64().max(1e-9);
            let rate = median(batches);
            println!(
                "  {name} ({what}): {rate:.0} calls/s median of {} batches ({:+.1} % against IP), {overall:.0} overall; {} ok, {} failed, {:.2} s; setup p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                batches.len(),
                (rate / base - 1.0) * 100.0,
                setups.len(),
                failures.len(),
                elapsed.as_secs_f64(),
                percentile(setups, 0.5).as_secs_f64() * 1e3,
                percentile(setups, 0.99).as_secs_f64() * 1e3,
                setups.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            );
            if let Some(first) = failures.first() {
                println!("  first failure: {first}");
            }
            failed += failures.len();
        }
        if let Ok(stats) = sip.stats().await {
            println!(
                "  stack: sent {} received {} retransmissions {} stray {} malformed {}; DNS queries {} (failed {}), failovers {}",
                stats.sent,
                stats.received,
                stats.retransmissions,
                stats.stray_responses,
                stats.dropped_malformed + stats.rejected_malformed,
                stats.dns_queries,
                stats.dns_failures,
                stats.failovers,
            );
        }
        if failed > 0 || ended < held {
            std::process::exit(1);
        }
    });
    endpoint_cost(if quick { 2_000 } else { 200_000 });
}
