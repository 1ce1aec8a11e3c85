//! The locator on a virtual clock: the RFC 3263 steps, SRV ordering,
//! caching and its expiry, negative answers and failures.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

fn locator() -> Locator {
    Locator::new(vec![Transport::Udp, Transport::Tcp], true, false, [7; 32])
}

fn wanted(name: &str, port: Option<u16>, transport: Option<Transport>) -> Wanted {
    Wanted {
        name: name.into(),
        port,
        transport,
    }
}

fn q(name: &str, rtype: RecordType) -> Query {
    Query {
        name: name.into(),
        rtype,
    }
}

fn a(ips: &[&str], ttl: u64) -> Answer {
    Answer::Records {
        records: ips
            .iter()
            .map(|ip| Record::Address(ip.parse::<IpAddr>().expect("ip")))
            .collect(),
        ttl: Duration::from_secs(ttl),
    }
}

fn srv(records: &[(u16, u16, u16, &str)], ttl: u64) -> Answer {
    Answer::Records {
        records: records
            .iter()
            .map(|(priority, weight, port, target)| Record::Srv {
                priority: *priority,
                weight: *weight,
                port: *port,
                target: target.to_string(),
            })
            .collect(),
        ttl: Duration::from_secs(ttl),
    }
}

fn naptr(records: &[(u16, u16, &str, &str)]) -> Answer {
    Answer::Records {
        records: records
            .iter()
            .map(|(order, preference, service, replacement)| Record::Naptr {
                order: *order,
                preference: *preference,
                flags: "s".into(),
                service: service.to_string(),
                replacement: replacement.to_string(),
            })
            .collect(),
        ttl: Duration::from_secs(300),
    }
}

fn empty() -> Answer {
    Answer::Empty {
        nxdomain: false,
        ttl: None,
    }
}

fn nxdomain() -> Answer {
    Answer::Empty {
        nxdomain: true,
        ttl: Some(Duration::from_secs(60)),
    }
}

fn target(transport: Transport, addr: &str) -> Target {
    Target {
        transport,
        addr: addr.parse::<SocketAddr>().expect("addr"),
    }
}

/// Answers each query from `zone` until the lookup ends; returns its
/// result and the queries asked, in order.
fn run(
    l: &mut Locator,
    now: Instant,
    w: Wanted,
    zone: &dyn Fn(&Query) -> Answer,
) -> (Result<Vec<Target>, DnsError>, Vec<Query>) {
    let id = match l.locate(now, w) {
        Located::Ready(result) => return (result, Vec::new()),
        Located::Pending(id) => id,
    };
    let mut asked = Vec::new();
    while let Some(query) = l.poll_query() {
        asked.push(query.clone());
        let answer = zone(&query);
        l.answer(now, &query, answer);
        if let Some((done, result)) = l.poll_done() {
            assert_eq!(done, id);
            return (result, asked);
        }
    }
    panic!("lookup never finished; asked {asked:?}");
}

#[test]
fn naptr_picks_tcp_and_follows_it_to_srv_and_addresses() {
    let mut l = locator();
    let zone = |query: &Query| match (query.name.as_str(), query.rtype) {
        ("carrier.test", RecordType::Naptr) => naptr(&[
            (10, 20, "SIP+D2U", "_sip._udp.carrier.test"),
            (10, 10, "SIP+D2T", "_sip._tcp.carrier.test"),
            (5, 10, "SIPS+D2T", "_sips._tcp.carrier.test"),
        ]),
        ("_sip._tcp.carrier.test", RecordType::Srv) => {
            srv(&[(0, 0, 5070, "edge.carrier.test")], 60)
        }
        ("edge.carrier.test", RecordType::A) => a(&["127.0.0.9"], 60),
        _ => panic!("unexpected query {query:?}"),
    };
    let (result, asked) = run(
        &mut l,
        Instant::now(),
        wanted("carrier.test", None, None),
        &zone,
    );
    assert_eq!(
        result,
        Ok(vec![target(Transport::Tcp, "127.0.0.9:5070")]),
        "SIPS is not spoken; of the rest, preference 10 (TCP) beats 20 (UDP)"
    );
    assert_eq!(
        asked,
        vec![
            q("carrier.test", RecordType::Naptr),
            q("_sip._tcp.carrier.test", RecordType::Srv),
            q("edge.carrier.test", RecordType::A),
        ]
    );
}

#[test]
fn without_naptr_srv_per_transport_then_a_records_on_5060() {
    let mut l = locator();
    let zone = |query: &Query| match (query.name.as_str(), query.rtype) {
        ("plain.test", RecordType::A) => a(&["127.0.0.5"], 60),
        _ => empty(),
    };
    let (result, asked) = run(
        &mut l,
        Instant::now(),
        wanted("plain.test", None, None),
        &zone,
    );
    assert_eq!(result, Ok(vec![target(Transport::Udp, "127.0.0.5:5060")]));
    assert_eq!(
        asked,
        vec![
            q("plain.test", RecordType::Naptr),
            q("_sip._udp.plain.test", RecordType::Srv),
            q("_sip._tcp.plain.test", RecordType::Srv),
            q("plain.test", RecordType::A),
        ]
    );
}

#[test]
fn a_port_means_addresses_only_and_a_transport_means_its_srv() {
    let mut l = locator();
    let zone = |query: &Query| match (query.name.as_str(), query.rtype) {
        ("p.test", RecordType::A) => a(&["127.0.0.6", "127.0.0.7"], 60),
        ("_sip._tcp.p.test", RecordType::Srv) => srv(&[(1, 0, 5080, "p.test")], 60),
        _ => panic!("unexpected query {query:?}"),
    };
    let (result, asked) = run(
        &mut l,
        Instant::now(),
        wanted("p.test", Some(5099), None),
        &zone,
    );
    assert_eq!(
        result,
        Ok(vec![
            target(Transport::Udp, "127.0.0.6:5099"),
            target(Transport::Udp, "127.0.0.7:5099")
        ])
    );
    assert_eq!(asked, vec![q("p.test", RecordType::A)]);
    let mut l = locator();
    let (result, _) = run(
        &mut l,
        Instant::now(),
        wanted("p.test", None, Some(Transport::Tcp)),
        &zone,
    );
    assert_eq!(
        result,
        Ok(vec![
            target(Transport::Tcp, "127.0.0.6:5080"),
            target(Transport::Tcp, "127.0.0.7:5080")
        ])
    );
}

#[test]
fn srv_targets_by_priority_and_by_weight_within_one() {
    let zone = |query: &Query| match (query.name.as_str(), query.rtype) {
        ("_sip._udp.w.test", RecordType::Srv) => srv(
            &[
                (20, 0, 5060, "backup.w.test"),
                (10, 60, 5060, "heavy.w.test"),
                (10, 20, 5060, "light.w.test"),
            ],
            60,
        ),
        ("backup.w.test", RecordType::A) => a(&["127.0.0.30"], 60),
        ("heavy.w.test", RecordType::A) => a(&["127.0.0.10"], 60),
        ("light.w.test", RecordType::A) => a(&["127.0.0.20"], 60),
        _ => panic!("unexpected query {query:?}"),
    };
    let mut heavy_first = 0;
    let rounds = 2000;
    for seed in 0..rounds {
        let mut l = Locator::new(
            vec![Transport::Udp],
            true,
            false,
            [(seed % 251) as u8; 32].map(|b| b ^ (seed / 251) as u8),
        );
        let (result, _) = run(
            &mut l,
            Instant::now(),
            wanted("w.test", None, Some(Transport::Udp)),
            &zone,
        );
        let targets = result.expect("targets");
        assert_eq!(targets.len(), 3);
        assert_eq!(
            targets[2].addr.ip().to_string(),
            "127.0.0.30",
            "priority 20 comes after both of priority 10"
        );
        if targets[0].addr.ip().to_string() == "127.0.0.10" {
            heavy_first += 1;
        }
    }
    // Weight 60 against 20: first three times in four.
    let share = f64::from(heavy_first) / f64::from(rounds);
    assert!(
        (0.65..0.85).contains(&share),
        "weight 60 first in {share:.2} of draws"
    );
}

#[test]
fn answers_are_cached_for_their_ttl_and_asked_again_after() {
    let mut l = locator();
    let t0 = Instant::now();
    let zone = |query: &Query| match (query.name.as_str(), query.rtype) {
        ("_sip._udp.c.test", RecordType::Srv) => srv(&[(0, 0, 5062, "host.c.test")], 30),
        ("host.c.test", RecordType::A) => a(&["127.0.0.40"], 300),
        _ => panic!("unexpected query {query:?}"),
    };
    let w = wanted("c.test", None, Some(Transport::Udp));
    let (first, asked) = run(&mut l, t0, w.clone(), &zone);
    assert_eq!(asked.len(), 2);
    // Warm: no query at all.
    assert_eq!(
        l.locate(t0 + Duration::from_secs(20), w.clone()),
        Located::Ready(first.clone())
    );
    assert!(l.poll_query().is_none());
    // The SRV answer expired, the A answer did not: only SRV is asked.
    let (again, asked) = run(&mut l, t0 + Duration::from_secs(31), w, &zone);
    assert_eq!(again, first);
    assert_eq!(asked, vec![q("_sip._udp.c.test", RecordType::Srv)]);
}

#[test]
fn nxdomain_is_cached_for_its_negative_ttl_and_says_so() {
    let mut l = locator();
    let t0 = Instant::now();
    let w = wanted("gone.test", Some(5060), None);
    let (result, asked) = run(&mut l, t0, w.clone(), &|_| nxdomain());
    assert_eq!(asked.len(), 1);
    let err = result.expect_err("no such name");
    assert_eq!(
        err.to_string(),
        "gone.test: no such domain (NXDOMAIN)",
        "the reason the user reads"
    );
    assert!(matches!(
        l.locate(t0 + Duration::from_secs(59), w.clone()),
        Located::Ready(Err(_))
    ));
    assert!(matches!(
        l.locate(t0 + Duration::from_secs(61), w),
        Located::Pending(_)
    ));
}

#[test]
fn a_failed_server_fails_the_lookup_but_an_expired_answer_stands_in() {
    let mut l = locator();
    let t0 = Instant::now();
    let w = wanted("s.test", Some(5060), None);
    let (result, _) = run(&mut l, t0, w.clone(), &|_| Answer::Failed {
        reason: "the DNS server did not answer".into(),
    });
    assert_eq!(
        result.expect_err("failed").to_string(),
        "DNS lookup of s.test failed: the DNS server did not answer"
    );
    // Once it has answered, a later failure uses the last answer (RFC 8767).
    let later = t0 + Duration::from_secs(10);
    let (ok, _) = run(&mut l, later, w.clone(), &|_| a(&["127.0.0.50"], 1));
    assert_eq!(ok, Ok(vec![target(Transport::Udp, "127.0.0.50:5060")]));
    let (stale, asked) = run(&mut l, later + Duration::from_secs(60), w, &|_| {
        Answer::Failed {
            reason: "timeout".into(),
        }
    });
    assert_eq!(asked.len(), 1, "it did ask again");
    assert_eq!(stale, ok);
}

#[test]
fn srv_of_dot_says_not_offered_and_a_name_with_no_address_is_reported() {
    let mut l = locator();
    let zone = |query: &Query| match (query.name.as_str(), query.rtype) {
        ("_sip._udp.none.test", RecordType::Srv) => srv(&[(0, 0, 0, ".")], 60),
        _ => empty(),
    };
    let (result, _) = run(
        &mut l,
        Instant::now(),
        wanted("none.test", None, Some(Transport::Udp)),
        &zone,
    );
    assert_eq!(
        result.expect_err("refused").to_string(),
        "none.test: _sip._udp.none.test says SIP is not offered there"
    );
    let (result, _) = run(
        &mut l,
        Instant::now(),
        wanted("bare.test", Some(5060), None),
        &|_| empty(),
    );
    assert_eq!(
        result.expect_err("empty").to_string(),
        "bare.test: no address records"
    );
}

#[test]
fn lookups_share_queries_and_a_lookup_never_answered_fails_at_its_deadline() {
    let mut l = locator();
    let t0 = Instant::now();
    let w = wanted("slow.test", Some(5060), None);
    let Located::Pending(first) = l.locate(t0, w.clone()) else {
        panic!("pending")
    };
    let Located::Pending(second) = l.locate(t0, w) else {
        panic!("pending")
    };
    assert_eq!(l.poll_query(), Some(q("slow.test", RecordType::A)));
    assert_eq!(
        l.poll_query(),
        None,
        "the second lookup waits for the same query"
    );
    assert_eq!(l.poll_timeout(), Some(t0 + LOOKUP_DEADLINE));
    l.handle_timeout(t0 + LOOKUP_DEADLINE);
    let done: Vec<LookupId> = std::iter::from_fn(|| {
        l.poll_done().map(|(id, r)| {
            assert!(r.is_err());
            id
        })
    })
    .collect();
    assert_eq!(done.len(), 2);
    assert!(done.contains(&first) && done.contains(&second));
    // A late answer finds no one waiting and is only cached.
    l.answer(
        t0 + LOOKUP_DEADLINE,
        &q("slow.test", RecordType::A),
        a(&["127.0.0.1"], 60),
    );
    assert!(l.poll_done().is_none());
}

#[test]
fn a_ttl_of_zero_still_completes_the_lookup_that_asked() {
    let mut l = locator();
    let zone = |query: &Query| match (query.name.as_str(), query.rtype) {
        ("_sip._udp.z.test", RecordType::Srv) => srv(&[(0, 0, 5060, "h.z.test")], 0),
        ("h.z.test", RecordType::A) => a(&["127.0.0.60"], 0),
        _ => panic!("unexpected query {query:?}"),
    };
    let (result, asked) = run(
        &mut l,
        Instant::now(),
        wanted("z.test", None, Some(Transport::Udp)),
        &zone,
    );
    assert_eq!(result, Ok(vec![target(Transport::Udp, "127.0.0.60:5060")]));
    assert_eq!(asked.len(), 2);
}

#[test]
fn a_name_in_use_is_asked_again_before_it_expires() {
    let mut l = locator();
    let t0 = Instant::now();
    let zone = |query: &Query| match (query.name.as_str(), query.rtype) {
        ("_sip._udp.p.test", RecordType::Srv) => srv(&[(0, 0, 5060, "h.p.test")], 100),
        ("h.p.test", RecordType::A) => a(&["127.0.0.70"], 1000),
        _ => panic!("unexpected query {query:?}"),
    };
    let w = wanted("p.test", None, Some(Transport::Udp));
    let (first, _) = run(&mut l, t0, w.clone(), &zone);
    // At 95 s the SRV answer has a twentieth of its life left: the call is
    // answered from the cache at once, and the SRV record is asked again.
    let later = t0 + Duration::from_secs(95);
    assert_eq!(l.locate(later, w.clone()), Located::Ready(first.clone()));
    assert_eq!(l.poll_query(), Some(q("_sip._udp.p.test", RecordType::Srv)));
    assert_eq!(l.poll_query(), None, "asked once, not once per call");
    assert_eq!(l.locate(later, w.clone()), Located::Ready(first.clone()));
    assert_eq!(l.poll_query(), None);
    l.answer(
        later,
        &q("_sip._udp.p.test", RecordType::Srv),
        zone(&q("_sip._udp.p.test", RecordType::Srv)),
    );
    assert!(l.poll_done().is_none(), "nobody waited for it");
    // Refreshed: still served from the cache at 150 s, past the first expiry.
    assert_eq!(
        l.locate(t0 + Duration::from_secs(150), w),
        Located::Ready(first)
    );
    assert_eq!(l.poll_query(), None);
}
