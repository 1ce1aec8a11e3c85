//! Switchboard's SIP stack against SIPp (Debian package `sip-tester`) as the
//! far end, on loopback. Each test starts its own SIPp with a scenario from
//! `tests/sip/scenarios/` and checks both sides: our call events, and SIPp's
//! exit status (0 only if every message it expected arrived, with the
//! headers the scenario checks).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard::sip::{
    AudioSdp, CallEvent, CallRequest, Codec, Config, Party, PlacedCall, Provider, SipService,
    Timers, Transport,
};

fn scenarios() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sip/scenarios")
}

fn free_udp_port(ip: &str) -> u16 {
    let socket = UdpSocket::bind(format!("{ip}:0")).expect("bind a probe socket");
    socket.local_addr().expect("probe address").port()
}

/// A running SIPp.
struct Sipp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    ip: String,
}

impl Sipp {
    /// Starts SIPp as a server with `scenario` (a file name, or `uas` for the built-in one).
    fn server(scenario: &str, extra: &[&str]) -> Sipp {
        Self::start(scenario, "127.0.0.1", extra, None)
    }

    fn start(scenario: &str, ip: &str, extra: &[&str], remote: Option<SocketAddr>) -> Sipp {
        Self::start_on(scenario, ip, free_udp_port(ip), extra, remote)
    }

    fn start_on(
        scenario: &str,
        ip: &str,
        port: u16,
        extra: &[&str],
        remote: Option<SocketAddr>,
    ) -> Sipp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new("sipp");
        if scenario == "uas" {
            cmd.args(["-sn", "uas"]);
        } else {
            cmd.arg("-sf").arg(scenarios().join(scenario));
        }
        if let Some(remote) = remote {
            cmd.arg(remote.to_string());
        }
        cmd.args([
            "-i",
            ip,
            "-p",
            &port.to_string(),
            "-nostdin",
            "-trace_err",
            "-timeout",
            "60s",
            "-timeout_error",
        ])
        .args(extra)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start sipp ({e}); scripts/test.sh installs it (apt-get install sip-tester)"
            )
        });
        // SIPp binds within a few milliseconds; our INVITE retransmissions cover the rest.
        std::thread::sleep(Duration::from_millis(150));
        Sipp {
            child,
            port,
            dir,
            ip: ip.to_string(),
        }
    }

    fn uri(&self, user: &str) -> String {
        if self.ip.contains(':') {
            format!("sip:{user}@[{}]:{}", self.ip, self.port)
        } else {
            format!("sip:{user}@{}:{}", self.ip, self.port)
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip.parse().expect("ip"), self.port)
    }

    /// Waits for SIPp to exit and asserts it counted every call as successful.
    fn succeeded(mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for sipp") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sipp did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            let mut log = String::new();
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                log.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
            let mut stderr = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            panic!("sipp failed ({status}):\n{stderr}\n{log}");
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(providers: Vec<Provider>) -> Config {
    Config {
        udp: vec!["127.0.0.1:0".parse().expect("addr")],
        tcp: vec!["127.0.0.1:0".parse().expect("addr")],
        // A short T1 keeps retransmission tests quick; timers are proportional to it.
        timers: Timers {
            t1_ms: 100,
            t2_ms: 400,
            t4_ms: 500,
        },
        providers,
        ..Config::default()
    }
}

fn request(target: String, provider: Option<&str>) -> CallRequest {
    CallRequest {
        target: switchboard::sip::TargetUri::parse(&target).expect("a valid target URI"),
        provider: provider.map(str::to_string),
        offer: AudioSdp::offer("127.0.0.1".parse().expect("ip"), 30000, 1),
        ring_timeout: None,
        caller: Some("+4915112345678".into()),
        public_only: false,
    }
}

fn provider(name: &str, addr: SocketAddr, transport: Transport) -> Provider {
    Provider {
        name: name.into(),
        address: addr.into(),
        transport: Some(transport),
        username: None,
        password: None,
        keepalive: false,
        rates: None,
        ..Provider::new(name, addr)
    }
}

/// Collects events until `stop` matches one (or the call's last event); panics after 20 s.
async fn until(call: &mut PlacedCall, stop: impl Fn(&CallEvent) -> bool) -> Vec<CallEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, call.events.recv()).await {
            Ok(Some(e)) => {
                let done =
                    stop(&e) || matches!(e, CallEvent::Failed { .. } | CallEvent::Ended { .. });
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(None) => return seen,
            Err(_) => panic!("no final event within 20 s; so far: {seen:?}"),
        }
    }
}

fn answered(e: &CallEvent) -> bool {
    matches!(e, CallEvent::Answered { .. })
}

/// Places one call to a SIPp scenario and returns every event of it, once
/// SIPp has counted the call a success.
async fn whole_call(scenario: &str) -> Vec<CallEvent> {
    let sipp = Sipp::server(scenario, &["-m", "1"]);
    let sip = SipService::start(config(vec![])).await.expect("start");
    let mut call = sip
        .place_call(request(sipp.uri("+442071234567"), None))
        .await
        .expect("placed");
    let events = until(&mut call, |_| false).await;
    sipp.succeeded();
    events
}

/// Places a call, expects it answered, hangs up and expects the BYE answered.
async fn answer_and_hang_up(sip: &SipService, request: CallRequest) {
    let mut call = sip.place_call(request).await.expect("placed");
    let events = until(&mut call, answered).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Answered { .. })),
        "{events:?}"
    );
    sip.hangup(call.id);
    let end = until(&mut call, |_| false).await;
    assert_eq!(
        end,
        [CallEvent::Ended {
            by: Party::Local,
            reason: "hangup".into()
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_then_we_hang_up_with_route_set() {
    let sipp = Sipp::server("answer.xml", &["-m", "1"]);
    let sip = SipService::start(config(vec![])).await.expect("start");
    let mut call = sip
        .place_call(request(sipp.uri("+442071234567"), None))
        .await
        .expect("placed");
    let events = until(&mut call, answered).await;
    assert!(events.contains(&CallEvent::Ringing), "{events:?}");
    let Some(CallEvent::Answered { sdp, codec }) = events.last() else {
        panic!("not answered: {events:?}")
    };
    assert_eq!(*codec, Codec::Pcma);
    assert_eq!(sdp.telephone_event(), Some(101));
    sip.hangup(call.id);
    let end = until(&mut call, |_| false).await;
    assert_eq!(
        end,
        [CallEvent::Ended {
            by: Party::Local,
            reason: "hangup".into()
        }]
    );
    sipp.succeeded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_486() {
    let events = whole_call("busy.xml").await;
    assert_eq!(
        events,
        [
            CallEvent::Trying,
            CallEvent::Failed {
                status: 486,
                reason: "Busy Here".into()
            }
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_603() {
    let events = whole_call("decline.xml").await;
    assert_eq!(
        events.last(),
        Some(&CallEvent::Failed {
            status: 603,
            reason: "Decline".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_then_our_cancel() {
    let sipp = Sipp::server("noanswer.xml", &["-m", "1"]);
    let sip = SipService::start(config(vec![])).await.expect("start");
    let mut req = request(sipp.uri("+442071234567"), None);
    req.ring_timeout = Some(Duration::from_secs(1));
    let started = Instant::now();
    let mut call = sip.place_call(req).await.expect("placed");
    let events = until(&mut call, |_| false).await;
    assert_eq!(
        events,
        [
            CallEvent::Ringing,
            CallEvent::Failed {
                status: 408,
                reason: "No answer within 1 s".into()
            }
        ]
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    sipp.succeeded();
}

/// Places a call through a provider with credentials to a SIPp scenario that challenges.
async fn challenged_call(scenario: &str) {
    let sipp = Sipp::server(scenario, &["-m", "1"]);
    let mut trunk = provider("TRUNK", sipp.addr(), Transport::Udp);
    trunk.username = Some("alice".into());
    trunk.password = Some("s3cret".into());
    let sip = SipService::start(config(vec![trunk])).await.expect("start");
    answer_and_hang_up(&sip, request(sipp.uri("+442071234567"), Some("TRUNK"))).await;
    sipp.succeeded();
}

/// 407 from a proxy: SIPp checks every Proxy-Authorization field (its
/// `verifyauth` reads only `Authorization`, so the hash itself is checked by
/// the 401 test below and by the RFC 7616 vectors in `sip::digest`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_challenge_407_then_answer() {
    challenged_call("auth407.xml").await;
}

/// 401 with qop=auth: SIPp recomputes the MD5 digest and refuses the call if it is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn www_challenge_401_verified_by_sipp_then_answer() {
    challenged_call("auth401.xml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_holds_moves_and_hangs_up() {
    let events = whole_call("remote_bye.xml").await;
    let changes: Vec<&AudioSdp> = events
        .iter()
        .filter_map(|e| match e {
            CallEvent::MediaChanged { sdp } => Some(sdp),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 2, "{events:?}");
    assert!(changes[0].on_hold());
    assert!(!changes[1].on_hold());
    assert_eq!(changes[1].port, 6002);
    assert_eq!(
        events.last(),
        Some(&CallEvent::Ended {
            by: Party::Remote,
            reason: "remote hangup".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_dialog_gets_481_and_options_get_200() {
    let sip = SipService::start(config(vec![])).await.expect("start");
    let ours = sip
        .local_addrs()
        .iter()
        .find(|(t, _)| *t == Transport::Udp)
        .map(|(_, a)| *a)
        .expect("udp");
    let sipp = Sipp::start("unknown_dialog.xml", "127.0.0.1", &["-m", "1"], Some(ours));
    sipp.succeeded();
    let stats = sip.stats().await.expect("stats");
    assert_eq!(stats.unknown_dialog, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_mark_providers_up_and_down() {
    let sipp = Sipp::server("options.xml", &["-m", "1"]);
    let dead = SocketAddr::from(([127, 0, 0, 1], free_udp_port("127.0.0.1")));
    let mut up = provider("UP", sipp.addr(), Transport::Udp);
    up.keepalive = true;
    let mut down = provider("DOWN", dead, Transport::Udp);
    down.keepalive = true;
    let mut cfg = config(vec![up, down]);
    cfg.timers = Timers {
        t1_ms: 20,
        t2_ms: 80,
        t4_ms: 100,
    };
    let sip = SipService::start(cfg).await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (a, b) = (
            sip.provider_up("UP").await.expect("up"),
            sip.provider_up("DOWN").await.expect("down"),
        );
        if a == Some(true) && b == Some(false) {
            break;
        }
        assert!(Instant::now() < deadline, "providers: UP={a:?} DOWN={b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sipp.succeeded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_transport() {
    let sipp = Sipp::server("answer.xml", &["-m", "1", "-t", "t1"]);
    let sip = SipService::start(config(vec![provider("TCP", sipp.addr(), Transport::Tcp)]))
        .await
        .expect("start");
    answer_and_hang_up(&sip, request(sipp.uri("+442071234567"), Some("TCP"))).await;
    sipp.succeeded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_udp() {
    let sipp = Sipp::start("answer.xml", "::1", &["-m", "1"], None);
    let mut cfg = config(vec![]);
    cfg.udp.push("[::1]:0".parse().expect("addr"));
    let sip = SipService::start(cfg).await.expect("start");
    let mut req = request(sipp.uri("+442071234567"), None);
    req.offer = AudioSdp::offer("::1".parse().expect("ip"), 30000, 1);
    answer_and_hang_up(&sip, req).await;
    sipp.succeeded();
}

/// A UDP relay on loopback between Switchboard and SIPp that drops a share
/// of the datagrams in both directions: packet loss on the path, with both
/// peers unaware of it. (SIPp's own `-lost` drops inside SIPp: a send it
/// "lost" is never retransmitted, so it tests SIPp rather than us.)
struct LossyRelay {
    addr: SocketAddr,
    dropped: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
}

impl LossyRelay {
    async fn start(far: SocketAddr, percent: u64) -> LossyRelay {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("relay socket");
        let addr = socket.local_addr().expect("relay address");
        let (dropped, forwarded) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (d, f) = (dropped.clone(), forwarded.clone());
        tokio::spawn(async move {
            let mut near: Option<SocketAddr> = None;
            let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let to = if from == far {
                    match near {
                        Some(n) => n,
                        None => continue,
                    }
                } else {
                    near = Some(from);
                    far
                };
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed % 100 < percent {
                    d.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                f.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(&buf[..n], to).await;
            }
        });
        LossyRelay {
            addr,
            dropped,
            forwarded,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmissions_survive_packet_loss_on_the_path() {
    const CALLS: usize = 20;
    const LOSS_PERCENT: u64 = 15;
    // The relay needs SIPp's address before SIPp starts: take a port first.
    let sipp_port = free_udp_port("127.0.0.1");
    let far = SocketAddr::from(([127, 0, 0, 1], sipp_port));
    let relay = LossyRelay::start(far, LOSS_PERCENT).await;
    let relay_port = relay.addr.port().to_string();
    let sipp = Sipp::start_on(
        "relay_uas.xml",
        "127.0.0.1",
        sipp_port,
        &["-m", &CALLS.to_string(), "-key", "relay_port", &relay_port],
        None,
    );
    let mut cfg = config(vec![]);
    cfg.timers = Timers {
        t1_ms: 200,
        t2_ms: 800,
        t4_ms: 1000,
    };
    let sip = SipService::start(cfg).await.expect("start");
    let mut tasks = Vec::new();
    for i in 0..CALLS {
        let sip = sip.clone();
        let target = format!("sip:+44207123{i:04}@{}", relay.addr);
        tasks.push(tokio::spawn(async move {
            let mut call = sip.place_call(request(target, None)).await.expect("placed");
            let events = until(&mut call, answered).await;
            if !matches!(events.last(), Some(CallEvent::Answered { .. })) {
                return Err(format!("{events:?}"));
            }
            sip.hangup(call.id);
            until(&mut call, |_| false).await;
            Ok(())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("task") {
            failures.push(e);
        }
    }
    let (dropped, forwarded) = (
        relay.dropped.load(Ordering::Relaxed),
        relay.forwarded.load(Ordering::Relaxed),
    );
    assert!(
        failures.is_empty(),
        "calls failed under loss ({dropped} dropped): {failures:?}"
    );
    assert!(
        dropped > 0 && forwarded > 0,
        "the relay dropped {dropped}, forwarded {forwarded}"
    );
    let stats = sip.stats().await.expect("stats");
    assert!(
        stats.retransmissions > 0,
        "{dropped} datagrams lost but no retransmission: {stats:?}"
    );
    // SIPp's verdict is not checked here: under loss its UAS aborts some calls
    // on its own side ("Dead call ... aborted at index 2" after our INVITE
    // retransmission crossed its 200), although every call completed here.
    drop(sipp);
}
