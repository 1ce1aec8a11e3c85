//! Trunks named by DNS (RFC 3263) against real DNS servers on loopback:
//! dnsmasq (Debian package `dnsmasq`) serving a test domain with NAPTR,
//! SRV and A records, and, for the answers dnsmasq will not give (a CNAME
//! loop, a truncated answer with no TCP behind it, no answer at all), a
//! small misbehaving server written here. SIPp plays the carrier.

mod call_events;
mod dnsmasq_peer;
mod sipp_peer;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dnsmasq_peer::Dnsmasq;
use sipp_peer::SippUas;
use switchboard::sip::{
    AudioSdp, CallEvent, CallRequest, Config, HostPort, PlacedCall, Provider, SipService,
    TargetUri, UriHost,
};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn named(name: &str, address: &str) -> Provider {
    Provider {
        keepalive: false,
        ..Provider::named(name, HostPort::parse(address).expect("a host"))
    }
}

async fn stack(dns: SocketAddr, tcp: bool, providers: Vec<Provider>) -> SipService {
    SipService::start(Config {
        udp: vec!["127.0.0.1:0".parse().expect("addr")],
        tcp: if tcp {
            vec!["127.0.0.1:0".parse().expect("addr")]
        } else {
            Vec::new()
        },
        dns: vec![dns],
        failover_secs: 1,
        providers,
        ..Config::default()
    })
    .await
    .expect("the SIP stack starts")
}

fn call(host: &str, provider: &str) -> CallRequest {
    CallRequest {
        target: TargetUri::phone("442071234567", UriHost::Name(host.into()), None)
            .expect("a phone URI"),
        provider: Some(provider.into()),
        offer: AudioSdp::offer("127.0.0.1".parse().expect("ip"), 30000, 1),
        ring_timeout: None,
        caller: None,
        public_only: false,
    }
}

async fn until_final(
    call: &mut PlacedCall,
    answered_is_final: bool,
    context: impl Fn() -> String,
) -> Vec<CallEvent> {
    call_events::until_final(call, answered_is_final, Duration::from_secs(30), context).await
}

/// A UDP port nothing listens on.
fn dead_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a port")
        .port()
}

async fn hang_up(sip: &SipService, call: &mut PlacedCall, context: impl Fn() -> String) {
    // Talk a moment: SIPp's scenario takes the ACK before the BYE.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sip.hangup(call.id);
    let end = until_final(call, false, context).await;
    assert!(
        matches!(end.last(), Some(CallEvent::Ended { reason, .. }) if reason == "hangup"),
        "the BYE was answered: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_srv_targets_the_first_dead_the_call_reaches_the_second_in_the_same_attempt() {
    init_tracing();
    let live = SippUas::start("trunk_uas.xml", &[]);
    let dead = dead_port();
    let dns = Dnsmasq::start(&[
        format!("--srv-host=_sip._udp.carrier.test,dead.carrier.test,{dead},10,10"),
        format!(
            "--srv-host=_sip._udp.carrier.test,live.carrier.test,{},20,10",
            live.addr.port()
        ),
        "--host-record=dead.carrier.test,127.0.0.1".into(),
        "--host-record=live.carrier.test,127.0.0.1".into(),
    ]);
    let sip = stack(dns.addr, false, vec![named("CARRIER", "carrier.test")]).await;
    let started = Instant::now();
    let mut placed = sip
        .place_call(call("carrier.test", "CARRIER"))
        .await
        .expect("placed");
    let events = until_final(&mut placed, true, || dns.log()).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Answered { .. })),
        "{events:?}\n{}",
        dns.log()
    );
    // One attempt: the silent first target was given failover_secs (1 s),
    // then the INVITE went to the second; no Failed came in between.
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(
        live.invites(),
        ["INVITE sip:+442071234567@carrier.test SIP/2.0"]
    );
    // The RFC 3263 steps, in order, as dnsmasq saw them.
    let log = dns.log();
    let naptr = log.find("query[NAPTR] carrier.test").expect("NAPTR asked");
    let srv = log
        .find("query[SRV] _sip._udp.carrier.test")
        .expect("SRV asked");
    let a = log.find("query[A] live.carrier.test").expect("A asked");
    assert!(naptr < srv && srv < a, "{log}");
    hang_up(&sip, &mut placed, || live.messages()).await;
    assert!(live.errors().is_empty(), "{}", live.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naptr_that_picks_tcp_sends_the_call_over_tcp() {
    init_tracing();
    let live = SippUas::start_with("trunk_uas.xml", &[], &["-t", "t1"]);
    let dead = dead_port();
    let dns = Dnsmasq::start(&[
        // UDP is offered too, but TCP comes first by order.
        "--naptr-record=carrier.test,20,10,s,SIP+D2U,,_sip._udp.carrier.test".into(),
        "--naptr-record=carrier.test,10,10,s,SIP+D2T,,_sip._tcp.carrier.test".into(),
        format!("--srv-host=_sip._udp.carrier.test,edge.carrier.test,{dead},0,0"),
        format!(
            "--srv-host=_sip._tcp.carrier.test,edge.carrier.test,{},0,0",
            live.addr.port()
        ),
        "--host-record=edge.carrier.test,127.0.0.1".into(),
    ]);
    let sip = stack(dns.addr, true, vec![named("CARRIER", "carrier.test")]).await;
    let mut placed = sip
        .place_call(call("carrier.test", "CARRIER"))
        .await
        .expect("placed");
    let events = until_final(&mut placed, true, || {
        format!("{}\n{}", dns.log(), live.errors())
    })
    .await;
    assert!(
        matches!(events.last(), Some(CallEvent::Answered { .. })),
        "{events:?}\n{}",
        dns.log()
    );
    let messages = live.messages();
    assert!(messages.contains("Via: SIP/2.0/TCP"), "{messages}");
    assert!(!messages.contains("SIP/2.0/UDP"), "{messages}");
    hang_up(&sip, &mut placed, || live.messages()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_stops_resolving_while_a_call_is_up_the_call_goes_on() {
    init_tracing();
    let live = SippUas::start("trunk_uas.xml", &[]);
    let mut dns = Dnsmasq::start(&[
        format!(
            "--srv-host=_sip._udp.carrier.test,edge.carrier.test,{},0,0",
            live.addr.port()
        ),
        "--host-record=edge.carrier.test,127.0.0.1".into(),
    ]);
    let sip = stack(dns.addr, false, vec![named("CARRIER", "carrier.test")]).await;
    let mut placed = sip
        .place_call(call("carrier.test", "CARRIER"))
        .await
        .expect("placed");
    let events = until_final(&mut placed, true, || dns.log()).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Answered { .. })),
        "{events:?}"
    );
    // The DNS server goes away and every answer's TTL (1 s) runs out.
    dns.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The dialog never needed DNS: the BYE reaches the carrier, answered.
    hang_up(&sip, &mut placed, || live.messages()).await;
    assert!(live.messages().contains("BYE sip:"), "{}", live.messages());
    assert!(live.errors().is_empty(), "{}", live.errors());
}

/// A DNS server that answers wrongly on purpose, by the first label of
/// the name: `loop` a CNAME loop, `trunc` a truncated answer (with no TCP
/// listener to ask again), `silent` nothing at all; anything else NXDOMAIN.
fn misbehaving_dns() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let query = &buf[..n];
            let Some((labels, end)) = question(query) else {
                continue;
            };
            let first = labels.first().map(String::as_str).unwrap_or("");
            let mut reply = query[..2].to_vec();
            let question_bytes = &query[12..end];
            match first {
                "silent" => continue,
                "trunc" => {
                    // QR, TC, RD, RA; one question, no answer.
                    reply.extend_from_slice(&[0x83, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
                    reply.extend_from_slice(question_bytes);
                }
                "loop" => {
                    // name → other.bad.test → name → …
                    reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]);
                    reply.extend_from_slice(question_bytes);
                    let other = encode(&["other", "bad", "test"]);
                    let this = encode(&labels.iter().map(String::as_str).collect::<Vec<_>>());
                    // The question's name by pointer → other.
                    reply.extend_from_slice(&[0xc0, 0x0c, 0, 5, 0, 1, 0, 0, 0, 60]);
                    reply.extend_from_slice(&(other.len() as u16).to_be_bytes());
                    reply.extend_from_slice(&other);
                    // other → the question's name.
                    reply.extend_from_slice(&other);
                    reply.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 60]);
                    reply.extend_from_slice(&(this.len() as u16).to_be_bytes());
                    reply.extend_from_slice(&this);
                }
                _ => {
                    reply.extend_from_slice(&[0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0]);
                    reply.extend_from_slice(question_bytes);
                }
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    addr
}

/// The question's labels and where it ends (after QTYPE and QCLASS).
fn question(query: &[u8]) -> Option<(Vec<String>, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        let label = query.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    Some((labels, at + 4)).filter(|(_, end)| *end <= query.len())
}

fn encode(labels: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// Places a call to `host` through provider `name` and returns its
/// failure's status and reason (panics if it does not fail).
async fn failure(sip: &SipService, host: &str, name: &str) -> (u16, String) {
    let mut placed = sip.place_call(call(host, name)).await.expect("placed");
    let events = until_final(&mut placed, false, String::new).await;
    match events.last() {
        Some(CallEvent::Failed { status, reason }) => (*status, reason.clone()),
        other => panic!("{host}: expected a failure, got {other:?} after {events:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dns_answers_fail_the_call_with_a_clear_reason_and_nothing_sticks() {
    init_tracing();
    let live = SippUas::start("trunk_uas.xml", &[]);
    // An SRV answer far too big for a datagram: 120 records (about 6 KB).
    // dnsmasq truncates it over UDP and the resolver asks again over TCP.
    let mut records = vec![
        format!(
            "--srv-host=_sip._udp.big.test,edge.big.test,{},0,0",
            live.addr.port()
        ),
        "--host-record=edge.big.test,127.0.0.1".to_string(),
        "--txt-record=empty.test,nothing-but-text".to_string(),
    ];
    for i in 0..120 {
        records.push(format!(
            "--srv-host=_sip._udp.big.test,spare-{i:03}-with-a-long-name.big.test,5060,{},10",
            i + 1
        ));
    }
    let dns = Dnsmasq::start(&records);
    let sip = stack(
        dns.addr,
        false,
        vec![
            named("NXDOMAIN", "nothere.test"),
            named("EMPTY", "empty.test"),
            named("BIG", "big.test"),
        ],
    )
    .await;
    let (status, reason) = failure(&sip, "nothere.test", "NXDOMAIN").await;
    assert_eq!(
        (status, reason.as_str()),
        (503, "nothere.test: no such domain (NXDOMAIN)")
    );
    let (status, reason) = failure(&sip, "empty.test", "EMPTY").await;
    assert_eq!(
        (status, reason.as_str()),
        (503, "empty.test: no address records")
    );
    // Oversized: answered after all, over TCP, and the call goes through.
    let mut placed = sip
        .place_call(call("big.test", "BIG"))
        .await
        .expect("placed");
    let events = until_final(&mut placed, true, || dns.log()).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Answered { .. })),
        "{events:?}\n{}",
        dns.log()
    );
    hang_up(&sip, &mut placed, || live.messages()).await;

    let bad = misbehaving_dns();
    let sip = stack(
        bad,
        false,
        vec![
            named("LOOP", "loop.bad.test:5060"),
            named("TRUNCATED", "trunc.bad.test:5060"),
            named("SILENT", "silent.bad.test"),
        ],
    )
    .await;
    let (status, reason) = failure(&sip, "loop.bad.test", "LOOP").await;
    assert_eq!(
        (status, reason.as_str()),
        (
            503,
            "DNS lookup of loop.bad.test failed: its CNAME chain leads to no record: a loop, or an alias of nothing"
        )
    );
    let (status, reason) = failure(&sip, "trunc.bad.test", "TRUNCATED").await;
    assert_eq!(status, 503);
    assert!(
        reason.starts_with("DNS lookup of trunc.bad.test failed: response was truncated"),
        "{reason}"
    );
    let started = Instant::now();
    let (status, reason) = failure(&sip, "silent.bad.test", "SILENT").await;
    assert_eq!(
        (status, reason.as_str()),
        (
            503,
            "DNS lookup of silent.bad.test failed: the DNS server did not answer"
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    // Nothing is stuck: the stack still answers, with no call left over.
    let stats = sip.stats().await.expect("running");
    assert_eq!(stats.calls_active, 0, "{stats:?}");
}
