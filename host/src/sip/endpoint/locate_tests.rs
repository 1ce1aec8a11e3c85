//! Providers named by DNS, on a virtual clock: the endpoint's queries and
//! the answers fed back, failover across SRV targets within one attempt
//! (silence, 503, a refused connection, a timeout), a call hung up while
//! its name is looked up, and DNS failures as the call's reason.

use std::time::Duration;

use super::*;
use crate::sip::dns::{Answer, Query, Record, RecordType};
use crate::sip::message::{Message, StartLine};
use crate::sip::sdp::AudioSdp;
use crate::sip::{HostPort, TargetUri, UriHost};

const T0_PORT: u16 = 5070;

fn endpoint(providers: Vec<Provider>, tcp: bool) -> (Endpoint, Instant) {
    let now = Instant::now();
    let config = Config {
        providers,
        failover_secs: 2,
        ..Config::default()
    };
    let mut locals = vec![(Transport::Udp, SocketAddr::from(([127, 0, 0, 1], T0_PORT)))];
    if tcp {
        locals.push((Transport::Tcp, SocketAddr::from(([127, 0, 0, 1], T0_PORT))));
    }
    (Endpoint::with_rng_seed(config, locals, now, [3; 32]), now)
}

fn carrier(name: &str) -> Provider {
    Provider {
        keepalive: false,
        ..Provider::named("CARRIER", HostPort::parse(name).expect("host"))
    }
}

fn call(ep: &mut Endpoint, now: Instant, host: &str) -> CallId {
    let request = CallRequest {
        target: TargetUri::phone("442071234567", UriHost::Name(host.into()), None).expect("uri"),
        provider: Some("CARRIER".into()),
        offer: AudioSdp::offer("127.0.0.1".parse().expect("ip"), 30000, 1),
        ring_timeout: None,
        caller: None,
        public_only: false,
    };
    ep.place_call(now, request).expect("placed")
}

/// The zone of these tests: `carrier.test` has no NAPTR; its UDP SRV
/// names three servers, by priority a (127.0.0.1:5001), b (:5002), c (:5003).
fn zone(query: &Query) -> Answer {
    let srv = |p: u16, port: u16, target: &str| Record::Srv {
        priority: p,
        weight: 0,
        port,
        target: target.into(),
    };
    match (query.name.as_str(), query.rtype) {
        ("_sip._udp.carrier.test", RecordType::Srv) => Answer::Records {
            records: vec![
                srv(1, 5001, "a.carrier.test"),
                srv(2, 5002, "b.carrier.test"),
                srv(3, 5003, "c.carrier.test"),
            ],
            ttl: Duration::from_secs(60),
        },
        (_, RecordType::A) if query.name.ends_with(".carrier.test") => Answer::Records {
            records: vec![Record::Address("127.0.0.1".parse().expect("ip"))],
            ttl: Duration::from_secs(60),
        },
        _ => Answer::Empty {
            nxdomain: false,
            ttl: None,
        },
    }
}

/// Answers every query the endpoint has out from `zone`; returns them.
fn resolve(ep: &mut Endpoint, now: Instant, zone: &dyn Fn(&Query) -> Answer) -> Vec<Query> {
    let mut asked = Vec::new();
    while let Some(q) = ep.poll_query() {
        let answer = zone(&q);
        ep.handle_answer(now, &q, answer);
        asked.push(q);
    }
    asked
}

/// What went out: (destination port, message).
fn sent(ep: &mut Endpoint) -> Vec<(u16, Message)> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        let m = message::parse(&t.payload, usize::MAX).expect("valid SIP");
        out.push((t.destination.port(), m));
    }
    out
}

fn invites(sent: &[(u16, Message)]) -> Vec<u16> {
    sent.iter()
        .filter(|(_, m)| matches!(&m.start, StartLine::Request { method, .. } if method.to_string() == "INVITE"))
        .map(|(port, _)| *port)
        .collect()
}

fn events(ep: &mut Endpoint) -> Vec<CallEvent> {
    let mut out = Vec::new();
    while let Some(e) = ep.poll_event() {
        if let Event::Call { event, .. } = e {
            out.push(event);
        }
    }
    out
}

fn reply(request: &Message, status: u16) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {status} Whatever\r\n");
    for v in &request.vias {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    s.push_str(&format!(
        "From: {}\r\n",
        request.header("From").expect("from")
    ));
    s.push_str(&format!(
        "To: {};tag=far\r\n",
        request.header("To").expect("to")
    ));
    s.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {} {}\r\nContent-Length: 0\r\n\r\n",
        request.call_id, request.cseq, request.cseq_method
    ));
    s.into_bytes()
}

fn advance(ep: &mut Endpoint, until: Instant) {
    while let Some(t) = ep.poll_timeout() {
        if t > until {
            break;
        }
        ep.handle_timeout(t);
    }
}

#[test]
fn nothing_goes_out_until_the_name_is_located_then_the_first_target_gets_the_invite() {
    let (mut ep, t0) = endpoint(vec![carrier("carrier.test")], false);
    let id = call(&mut ep, t0, "carrier.test");
    assert!(sent(&mut ep).is_empty(), "no INVITE before DNS answers");
    let asked = resolve(&mut ep, t0, &zone);
    let names: Vec<(&str, RecordType)> = asked.iter().map(|q| (q.name.as_str(), q.rtype)).collect();
    assert_eq!(
        names,
        [
            ("carrier.test", RecordType::Naptr),
            ("_sip._udp.carrier.test", RecordType::Srv),
            ("a.carrier.test", RecordType::A),
            ("b.carrier.test", RecordType::A),
            ("c.carrier.test", RecordType::A),
        ]
    );
    let out = sent(&mut ep);
    assert_eq!(invites(&out), [5001]);
    let (_, invite) = &out[0];
    let StartLine::Request { uri, .. } = &invite.start else {
        panic!("a request")
    };
    assert_eq!(uri.to_string(), "sip:+442071234567@carrier.test");
    // A second call finds everything cached: its INVITE goes out at once.
    let _second = call(&mut ep, t0, "carrier.test");
    assert!(ep.poll_query().is_none());
    assert_eq!(invites(&sent(&mut ep)), [5001]);
    assert!(events(&mut ep).is_empty(), "{id:?}");
}

#[test]
fn a_silent_target_is_left_after_failover_secs_and_a_503_at_once() {
    let (mut ep, t0) = endpoint(vec![carrier("carrier.test")], false);
    let _id = call(&mut ep, t0, "carrier.test");
    resolve(&mut ep, t0, &zone);
    assert_eq!(invites(&sent(&mut ep)), [5001]);
    // a: silent. Its retransmissions go to a until failover_secs (2 s).
    advance(&mut ep, t0 + Duration::from_millis(1999));
    assert!(invites(&sent(&mut ep)).iter().all(|p| *p == 5001));
    advance(&mut ep, t0 + Duration::from_secs(2));
    let out = sent(&mut ep);
    assert_eq!(invites(&out), [5002], "b gets the INVITE at 2 s");
    let (_, to_b) = out.into_iter().find(|(p, _)| *p == 5002).expect("b");
    // b: 503 → c, at once, in the same attempt; no event for the owner.
    ep.handle_input(
        t0 + Duration::from_secs(3),
        Transport::Udp,
        "127.0.0.1:5002".parse().expect("addr"),
        &reply(&to_b, 503),
    );
    let out = sent(&mut ep);
    assert!(
        out.iter()
            .any(|(p, m)| *p == 5002 && m.cseq_method == rsip::Method::Ack),
        "the 503 is ACKed"
    );
    assert_eq!(invites(&out), [5003]);
    assert!(events(&mut ep).is_empty());
    // Nothing more goes to a, whose transaction was given up.
    advance(&mut ep, t0 + Duration::from_secs(10));
    assert!(!invites(&sent(&mut ep)).contains(&5001));
    let stats = ep.stats();
    assert_eq!(
        (stats.failovers, stats.dns_queries, stats.dns_failures),
        (2, 5, 0)
    );
}

#[test]
fn the_last_target_failing_fails_the_call_with_its_answer() {
    let (mut ep, t0) = endpoint(vec![carrier("carrier.test")], false);
    let _id = call(&mut ep, t0, "carrier.test");
    resolve(&mut ep, t0, &zone);
    let now = t0 + Duration::from_millis(10);
    for port in [5001u16, 5002, 5003] {
        let out = sent(&mut ep);
        let (_, invite) = out
            .into_iter()
            .find(|(p, m)| *p == port && m.cseq_method == rsip::Method::Invite)
            .unwrap_or_else(|| panic!("an INVITE to {port}"));
        ep.handle_input(
            now,
            Transport::Udp,
            SocketAddr::from(([127, 0, 0, 1], port)),
            &reply(&invite, 503),
        );
    }
    assert_eq!(
        events(&mut ep),
        [CallEvent::Failed {
            status: 503,
            reason: "Whatever".into()
        }]
    );
}

#[test]
fn a_busy_target_is_final_no_other_server_is_tried() {
    let (mut ep, t0) = endpoint(vec![carrier("carrier.test")], false);
    let _id = call(&mut ep, t0, "carrier.test");
    resolve(&mut ep, t0, &zone);
    let (_, invite) = sent(&mut ep).into_iter().next().expect("INVITE");
    ep.handle_input(
        t0,
        Transport::Udp,
        "127.0.0.1:5001".parse().expect("addr"),
        &reply(&invite, 486),
    );
    assert!(
        invites(&sent(&mut ep)).is_empty(),
        "486 is the callee's answer, not the server's"
    );
    assert!(matches!(
        events(&mut ep)[..],
        [CallEvent::Failed { status: 486, .. }]
    ));
}

#[test]
fn a_refused_connection_moves_to_the_next_target_and_a_timeout_too() {
    let tcp_zone = |q: &Query| match (q.name.as_str(), q.rtype) {
        ("_sip._tcp.carrier.test", RecordType::Srv) => Answer::Records {
            records: vec![
                Record::Srv {
                    priority: 1,
                    weight: 0,
                    port: 5001,
                    target: "a.carrier.test".into(),
                },
                Record::Srv {
                    priority: 2,
                    weight: 0,
                    port: 5002,
                    target: "b.carrier.test".into(),
                },
            ],
            ttl: Duration::from_secs(60),
        },
        _ => zone(q),
    };
    let mut provider = carrier("carrier.test");
    provider.transport = Some(Transport::Tcp);
    let (mut ep, t0) = endpoint(vec![provider], true);
    let _id = call(&mut ep, t0, "carrier.test");
    resolve(&mut ep, t0, &tcp_zone);
    assert_eq!(invites(&sent(&mut ep)), [5001]);
    ep.handle_transport_error(t0, Transport::Tcp, "127.0.0.1:5001".parse().expect("addr"));
    assert_eq!(
        invites(&sent(&mut ep)),
        [5002],
        "the refused server is left at once"
    );
    assert!(events(&mut ep).is_empty());
    // b accepts the connection but never answers: Timer B (64·T1 = 32 s)
    // ends the call, as no target is left.
    advance(&mut ep, t0 + Duration::from_secs(40));
    assert!(matches!(
        events(&mut ep)[..],
        [CallEvent::Failed { status: 408, .. }]
    ));
}

#[test]
fn dns_failures_fail_the_call_with_the_reason_and_a_hangup_while_locating_ends_it() {
    let (mut ep, t0) = endpoint(vec![carrier("gone.test")], false);
    let _id = call(&mut ep, t0, "gone.test");
    resolve(&mut ep, t0, &|_| Answer::Empty {
        nxdomain: true,
        ttl: None,
    });
    assert_eq!(
        events(&mut ep),
        [CallEvent::Failed {
            status: 503,
            reason: "gone.test: no such domain (NXDOMAIN)".into()
        }]
    );
    assert!(sent(&mut ep).is_empty());
    // Hung up while the lookup runs: ended, and the late answer sends nothing.
    let (mut ep, t0) = endpoint(vec![carrier("carrier.test")], false);
    let id = call(&mut ep, t0, "carrier.test");
    ep.hangup(t0, id);
    assert!(matches!(events(&mut ep)[..], [CallEvent::Ended { .. }]));
    resolve(&mut ep, t0, &zone);
    assert!(sent(&mut ep).is_empty());
    assert_eq!(ep.stats().calls_active, 0);
    // A DNS server that never answers: the lookup's deadline fails the call.
    let (mut ep, t0) = endpoint(vec![carrier("carrier.test")], false);
    let _id = call(&mut ep, t0, "carrier.test");
    assert!(ep.poll_query().is_some());
    advance(&mut ep, t0 + Duration::from_secs(31));
    let ev = events(&mut ep);
    assert!(
        matches!(&ev[..], [CallEvent::Failed { status: 503, reason }] if reason == "DNS lookup of carrier.test failed: no answer in time"),
        "{ev:?}"
    );
}

#[test]
fn registration_and_pings_go_to_the_located_registrar() {
    let mut provider = carrier("carrier.test");
    provider.keepalive = true;
    provider.register = true;
    provider.username = Some("acct".into());
    provider.password = Some("pw".into());
    let (mut ep, t0) = endpoint(vec![provider], false);
    advance(&mut ep, t0);
    resolve(&mut ep, t0, &zone);
    let out = sent(&mut ep);
    let register = out
        .iter()
        .find(|(_, m)| m.cseq_method == rsip::Method::Register)
        .expect("a REGISTER");
    assert_eq!(register.0, 5001);
    let StartLine::Request { uri, .. } = &register.1.start else {
        panic!("a request")
    };
    assert_eq!(uri.to_string(), "sip:carrier.test");
    assert_eq!(
        register.1.header("To").as_deref(),
        Some("<sip:acct@carrier.test>")
    );
    assert!(
        out.iter()
            .any(|(p, m)| *p == 5001 && m.cseq_method == rsip::Method::Options)
    );
}

#[test]
fn a_public_only_leg_goes_to_public_addresses_only() {
    // A user's sip: leg under `sip_legs = "public-only"`, to a name that
    // leads to a private address first and a public one second. (A unit
    // test: nothing is sent anywhere, the transmits are only read here.)
    let (mut ep, t0) = endpoint(Vec::new(), false);
    let request = |host: &str| CallRequest {
        target: TargetUri::parse(&format!("sip:alice@{host}")).expect("uri"),
        provider: None,
        offer: AudioSdp::offer("127.0.0.1".parse().expect("ip"), 30000, 1),
        ring_timeout: None,
        caller: None,
        public_only: true,
    };
    let mixed = |q: &Query| match (q.name.as_str(), q.rtype) {
        ("_sip._udp.mixed.test", RecordType::Srv) => Answer::Records {
            records: vec![
                Record::Srv {
                    priority: 1,
                    weight: 0,
                    port: 5060,
                    target: "inside.mixed.test".into(),
                },
                Record::Srv {
                    priority: 2,
                    weight: 0,
                    port: 5060,
                    target: "outside.mixed.test".into(),
                },
            ],
            ttl: Duration::from_secs(60),
        },
        ("inside.mixed.test", RecordType::A) => Answer::Records {
            records: vec![Record::Address("10.1.2.3".parse().expect("ip"))],
            ttl: Duration::from_secs(60),
        },
        ("outside.mixed.test", RecordType::A) => Answer::Records {
            records: vec![Record::Address("203.0.114.5".parse().expect("ip"))],
            ttl: Duration::from_secs(60),
        },
        ("inside.test", RecordType::A) => Answer::Records {
            records: vec![Record::Address("127.0.0.1".parse().expect("ip"))],
            ttl: Duration::from_secs(60),
        },
        _ => Answer::Empty {
            nxdomain: false,
            ttl: None,
        },
    };
    ep.place_call(t0, request("mixed.test")).expect("placed");
    resolve(&mut ep, t0, &mixed);
    let out: Vec<SocketAddr> = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| t.destination)
        .collect();
    assert_eq!(
        out,
        ["203.0.114.5:5060".parse::<SocketAddr>().expect("addr")]
    );
    ep.place_call(t0, request("inside.test")).expect("placed");
    resolve(&mut ep, t0, &mixed);
    assert!(ep.poll_transmit().is_none());
    assert_eq!(
        events(&mut ep),
        [CallEvent::Failed {
            status: 403,
            reason: "it leads only to addresses that are not public (127.0.0.1), which sip: legs may not reach".into()
        }]
    );
}

#[test]
fn a_registrar_behind_srv_is_tried_target_by_target_and_challenges_stay_with_one() {
    let mut provider = carrier("carrier.test");
    provider.register = true;
    provider.username = Some("acct".into());
    provider.password = Some("pw".into());
    let (mut ep, t0) = endpoint(vec![provider], false);
    advance(&mut ep, t0);
    resolve(&mut ep, t0, &zone);
    let registers = |out: Vec<(u16, Message)>| -> Vec<(u16, Message)> {
        out.into_iter()
            .filter(|(_, m)| {
                m.cseq_method == rsip::Method::Register
                    && matches!(m.start, StartLine::Request { .. })
            })
            .collect()
    };
    assert_eq!(
        registers(sent(&mut ep))
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>(),
        [5001]
    );
    // a never answers: after Timer F (64·T1), b gets the REGISTER.
    advance(&mut ep, t0 + Duration::from_secs(33));
    let to_b = registers(sent(&mut ep));
    let (port, register) = to_b.last().expect("a REGISTER to b");
    assert_eq!(
        *port,
        5002,
        "{:?}",
        to_b.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
    // b: 503 → c at once.
    let now = t0 + Duration::from_secs(34);
    ep.handle_input(
        now,
        Transport::Udp,
        "127.0.0.1:5002".parse().expect("addr"),
        &reply(register, 503),
    );
    let to_c = registers(sent(&mut ep));
    assert_eq!(to_c.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [5003]);
    // c challenges: the answer goes to c, not back to a.
    let challenge = {
        let (_, r) = &to_c[0];
        let mut text = String::from_utf8(reply(r, 401)).expect("utf-8");
        text = text.replacen(
            "Content-Length: 0",
            "WWW-Authenticate: Digest realm=\"carrier.test\", nonce=\"n1\"\r\nContent-Length: 0",
            1,
        );
        text.into_bytes()
    };
    ep.handle_input(
        now,
        Transport::Udp,
        "127.0.0.1:5003".parse().expect("addr"),
        &challenge,
    );
    let answered = registers(sent(&mut ep));
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].0, 5003);
    assert!(answered[0].1.header("Authorization").is_some());
    ep.handle_input(
        now,
        Transport::Udp,
        "127.0.0.1:5003".parse().expect("addr"),
        &reply(&answered[0].1, 200),
    );
    assert_eq!(
        ep.provider_up("CARRIER"),
        None,
        "registered: up as far as registration goes"
    );
    assert!(matches!(
        &ep.registrations()[..],
        [(_, RegistrationState::Registered { .. })]
    ));
    assert_eq!(ep.stats().failovers, 2);
}

#[test]
fn a_provider_is_up_when_any_of_its_servers_answers_its_ping() {
    let mut provider = carrier("carrier.test");
    provider.keepalive = true;
    let (mut ep, t0) = endpoint(vec![provider], false);
    advance(&mut ep, t0);
    resolve(&mut ep, t0, &zone);
    let options = |out: Vec<(u16, Message)>| -> Vec<(u16, Message)> {
        out.into_iter()
            .filter(|(_, m)| m.cseq_method == rsip::Method::Options)
            .collect()
    };
    assert_eq!(options(sent(&mut ep))[0].0, 5001);
    // a is silent: after Timer F the ping goes to b, and b answers.
    advance(&mut ep, t0 + Duration::from_secs(33));
    let to_b = options(sent(&mut ep));
    let (port, ping) = to_b.last().expect("a ping to b");
    assert_eq!(*port, 5002);
    assert_eq!(
        ep.provider_up("CARRIER"),
        None,
        "not called down while b may answer"
    );
    ep.handle_input(
        t0 + Duration::from_secs(33),
        Transport::Udp,
        "127.0.0.1:5002".parse().expect("addr"),
        &reply(ping, 200),
    );
    assert_eq!(ep.provider_up("CARRIER"), Some(true));
}
