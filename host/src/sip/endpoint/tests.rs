//! The endpoint on a virtual clock against a scripted far end: every timer
//! is exercised in simulated milliseconds, never by sleeping.

use std::time::Duration;

use super::*;
use crate::sip::message::{Message, StartLine};
use crate::sip::sdp::{AudioSdp, Codec, Direction};
use crate::sip::{SipError, TargetUri};

const FAR: &str = "127.0.0.1:5080";
const T0_PORT: u16 = 5070;

pub(super) fn far() -> SocketAddr {
    FAR.parse().expect("addr")
}

pub(super) fn endpoint(providers: Vec<Provider>) -> (Endpoint, Instant) {
    let now = Instant::now();
    let config = Config {
        providers,
        ..Config::default()
    };
    let local = SocketAddr::from(([127, 0, 0, 1], T0_PORT));
    (
        Endpoint::new(config, vec![(Transport::Udp, local)], now),
        now,
    )
}

pub(super) fn offer() -> AudioSdp {
    AudioSdp::offer("127.0.0.1".parse().expect("ip"), 30000, 1)
}

pub(super) fn call(ep: &mut Endpoint, now: Instant, ring: Option<Duration>) -> CallId {
    let request = CallRequest {
        target: TargetUri::parse(&format!("sip:bob@{FAR}")).expect("a valid target URI"),
        provider: None,
        offer: offer(),
        ring_timeout: ring,
        caller: None,
        public_only: false,
    };
    ep.place_call(now, request).expect("placed")
}

pub(super) fn sent(ep: &mut Endpoint) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push(message::parse(&t.payload, usize::MAX).expect("we send valid SIP"));
    }
    out
}

pub(super) fn events(ep: &mut Endpoint) -> Vec<CallEvent> {
    let mut out = Vec::new();
    while let Some(e) = ep.poll_event() {
        if let Event::Call { event, .. } = e {
            out.push(event);
        }
    }
    out
}

pub(super) fn method(m: &Message) -> String {
    match &m.start {
        StartLine::Request { method, .. } => method.to_string(),
        StartLine::Response { status, .. } => status.to_string(),
    }
}

/// A response from the far end to `request`.
pub(super) fn reply(request: &Message, status: u16, extra: &str, body: &str) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {status} Whatever\r\n");
    for v in &request.vias {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    s.push_str(&format!(
        "From: {}\r\n",
        request.header("From").expect("from")
    ));
    let to = request.header("To").expect("to");
    if status > 100 && request.to.tag.is_none() {
        s.push_str(&format!("To: {to};tag=far\r\n"));
    } else {
        s.push_str(&format!("To: {to}\r\n"));
    }
    s.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {} {}\r\n{extra}",
        request.call_id, request.cseq, request.cseq_method
    ));
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.into_bytes()
}

pub(super) fn answer_sdp(codecs: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP {codecs}\r\n"
    )
}

pub(super) fn input(ep: &mut Endpoint, now: Instant, bytes: &[u8]) {
    ep.handle_input(now, Transport::Udp, far(), bytes);
}

pub(super) fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// Runs timers up to `until`, one deadline at a time, as a driver would.
pub(super) fn advance(ep: &mut Endpoint, until: Instant) {
    while let Some(t) = ep.poll_timeout() {
        if t > until {
            break;
        }
        ep.handle_timeout(t);
    }
}

#[test]
fn answered_call_acks_reacks_and_hangs_up_with_bye() {
    let (mut ep, t0) = endpoint(vec![]);
    let id = call(&mut ep, t0, None);
    let out = sent(&mut ep);
    let invite = &out[0];
    assert_eq!(method(invite), "INVITE");
    assert!(invite.via.branch.starts_with("z9hG4bK") && invite.via.rport);
    assert!(invite.header("Contact").is_some());
    assert_eq!(AudioSdp::parse(&invite.body).expect("offer"), offer());

    input(&mut ep, at(t0, 10), &reply(invite, 100, "", ""));
    input(&mut ep, at(t0, 20), &reply(invite, 180, "", ""));
    let contact = "Contact: <sip:bob@127.0.0.1:5081>\r\nRecord-Route: <sip:127.0.0.1:5082;lr>, <sip:127.0.0.1:5083;lr>\r\n";
    let ok = reply(invite, 200, contact, &answer_sdp("8 0"));
    input(&mut ep, at(t0, 30), &ok);
    let ev = events(&mut ep);
    assert_eq!(ev[..2], [CallEvent::Trying, CallEvent::Ringing]);
    assert!(
        matches!(
            &ev[2],
            CallEvent::Answered {
                codec: Codec::Pcma,
                ..
            }
        ),
        "{ev:?}"
    );
    let acks = sent(&mut ep);
    assert_eq!(acks.len(), 1);
    let ack = &acks[0];
    assert_eq!(method(ack), "ACK");
    assert_ne!(
        ack.via.branch, invite.via.branch,
        "2xx ACK is its own transaction"
    );
    assert_eq!(ack.to.tag.as_deref(), Some("far"));
    // The route set is the Record-Route reversed; the Request-URI the remote target.
    let routes: Vec<String> = ack.header_values("Route").collect();
    assert_eq!(
        routes,
        ["<sip:127.0.0.1:5083;lr>", "<sip:127.0.0.1:5082;lr>"]
    );
    assert!(
        matches!(&ack.start, StartLine::Request { uri, .. } if uri.to_string() == "sip:bob@127.0.0.1:5081")
    );

    // A retransmitted 200 is ACKed again.
    input(&mut ep, at(t0, 530), &ok);
    assert_eq!(
        sent(&mut ep).iter().map(method).collect::<Vec<_>>(),
        ["ACK"]
    );

    ep.hangup(at(t0, 1000), id);
    let bye = sent(&mut ep).pop().expect("BYE");
    assert_eq!(method(&bye), "BYE");
    assert_eq!(bye.cseq, invite.cseq + 1);
    assert_eq!(
        ep.dialog_dest_of(id).map(|d| d.addr.port()),
        Some(5083),
        "in-dialog requests go to the first route"
    );
    input(&mut ep, at(t0, 1010), &reply(&bye, 200, "", ""));
    assert_eq!(
        events(&mut ep),
        [CallEvent::Ended {
            by: Party::Local,
            reason: "hangup".into()
        }]
    );
    // The INVITE transaction lingers 64·T1 for 2xx retransmissions, then everything is gone.
    advance(&mut ep, at(t0, 60_000));
    assert_eq!(ep.stats().calls_active, 0);
}

#[test]
fn busy_is_acked_in_the_transaction_and_reported() {
    let (mut ep, t0) = endpoint(vec![]);
    let _ = call(&mut ep, t0, None);
    let invite = sent(&mut ep).remove(0);
    let busy = reply(&invite, 486, "", "");
    input(&mut ep, at(t0, 5), &busy);
    let ack = sent(&mut ep).remove(0);
    assert_eq!(method(&ack), "ACK");
    assert_eq!(
        ack.via.branch, invite.via.branch,
        "non-2xx ACK belongs to the INVITE transaction"
    );
    assert_eq!(ack.to.tag.as_deref(), Some("far"));
    assert_eq!(
        events(&mut ep),
        [CallEvent::Failed {
            status: 486,
            reason: "Whatever".into()
        }]
    );
    // Retransmitted 486 (our ACK was lost): ACK again, no new event.
    input(&mut ep, at(t0, 600), &busy);
    assert_eq!(
        sent(&mut ep).iter().map(method).collect::<Vec<_>>(),
        ["ACK"]
    );
    assert!(events(&mut ep).is_empty());
}

#[test]
fn no_answer_cancels_after_ring_timeout() {
    let (mut ep, t0) = endpoint(vec![]);
    let _ = call(&mut ep, t0, Some(Duration::from_secs(30)));
    let invite = sent(&mut ep).remove(0);
    input(&mut ep, at(t0, 100), &reply(&invite, 180, "", ""));
    advance(&mut ep, at(t0, 29_999));
    assert!(sent(&mut ep).is_empty(), "no retransmission while ringing");
    advance(&mut ep, at(t0, 30_000));
    let cancel = sent(&mut ep).remove(0);
    assert_eq!(method(&cancel), "CANCEL");
    assert_eq!(cancel.via.branch, invite.via.branch);
    assert_eq!(cancel.cseq, invite.cseq);
    input(&mut ep, at(t0, 30_010), &reply(&cancel, 200, "", ""));
    input(&mut ep, at(t0, 30_020), &reply(&invite, 487, "", ""));
    assert_eq!(method(&sent(&mut ep)[0]), "ACK");
    let ev = events(&mut ep);
    assert_eq!(
        ev.last(),
        Some(&CallEvent::Failed {
            status: 408,
            reason: "No answer within 30 s".into()
        })
    );
}

#[test]
fn cancel_waits_for_a_provisional_response() {
    let (mut ep, t0) = endpoint(vec![]);
    let id = call(&mut ep, t0, None);
    let invite = sent(&mut ep).remove(0);
    ep.hangup(at(t0, 10), id);
    assert!(
        sent(&mut ep).is_empty(),
        "RFC 3261 §9.1: no CANCEL before a 1xx"
    );
    input(&mut ep, at(t0, 20), &reply(&invite, 100, "", ""));
    assert_eq!(method(&sent(&mut ep)[0]), "CANCEL");
    input(&mut ep, at(t0, 30), &reply(&invite, 487, "", ""));
    let ev = events(&mut ep);
    assert_eq!(
        ev.last(),
        Some(&CallEvent::Ended {
            by: Party::Local,
            reason: "cancelled before answer".into()
        })
    );
}

#[test]
fn timer_b_fails_an_unanswered_invite_after_32_seconds() {
    let (mut ep, t0) = endpoint(vec![]);
    let _ = call(&mut ep, t0, None);
    let _ = sent(&mut ep);
    advance(&mut ep, at(t0, 31_999));
    assert_eq!(
        sent(&mut ep).len(),
        6,
        "timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s"
    );
    assert!(events(&mut ep).is_empty());
    advance(&mut ep, at(t0, 32_000));
    assert!(matches!(
        events(&mut ep)[..],
        [CallEvent::Failed { status: 408, .. }]
    ));
    assert_eq!(ep.stats().calls_active, 0);
}

#[test]
fn proxy_challenge_is_answered_once_with_the_providers_credentials() {
    let provider = Provider {
        name: "TRUNK".into(),
        address: far().into(),
        transport: Some(Transport::Udp),
        username: Some("alice".into()),
        password: Some("secret".into()),
        keepalive: false,
        rates: None,
        ..Provider::new("TRUNK", far())
    };
    let (mut ep, t0) = endpoint(vec![provider]);
    let request = CallRequest {
        target: TargetUri::parse(&format!("sip:+442071234567@{FAR}")).expect("a valid target URI"),
        provider: Some("TRUNK".into()),
        offer: offer(),
        ring_timeout: None,
        caller: None,
        public_only: false,
    };
    let _ = ep.place_call(t0, request).expect("placed");
    let first = sent(&mut ep).remove(0);
    let challenge = "Proxy-Authenticate: Digest realm=\"trunk\", nonce=\"abc\", qop=\"auth\", algorithm=SHA-256\r\n";
    input(&mut ep, at(t0, 5), &reply(&first, 407, challenge, ""));
    let out = sent(&mut ep);
    assert_eq!(
        out.iter().map(method).collect::<Vec<_>>(),
        ["ACK", "INVITE"]
    );
    let second = &out[1];
    assert_eq!(second.cseq, first.cseq + 1);
    assert_eq!(second.call_id, first.call_id);
    assert_eq!(second.from.tag, first.from.tag);
    let auth = second.header("Proxy-Authorization").expect("answered");
    let expected = crate::sip::digest::Challenge::parse(
        challenge.trim_start_matches("Proxy-Authenticate: ").trim(),
    )
    .expect("challenge")
    .answer(
        "alice",
        "secret",
        "INVITE",
        "sip:+442071234567@127.0.0.1:5080",
        1,
        "x",
    );
    let response_of = |s: &str| s.split("response=\"").nth(1).map(|r| r[..64].to_string());
    assert!(auth.contains("algorithm=SHA-256") && auth.contains("nc=00000001"));
    // cnonce differs, so recompute with the cnonce we sent.
    let cnonce = auth
        .split("cnonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("cnonce");
    let expected_here = crate::sip::digest::Challenge::parse(
        challenge.trim_start_matches("Proxy-Authenticate: ").trim(),
    )
    .expect("challenge")
    .answer(
        "alice",
        "secret",
        "INVITE",
        "sip:+442071234567@127.0.0.1:5080",
        1,
        cnonce,
    );
    assert_eq!(response_of(&auth), response_of(&expected_here));
    assert_ne!(response_of(&expected), None);
    // A second challenge means the credentials are wrong: fail, do not loop.
    input(&mut ep, at(t0, 10), &reply(second, 407, challenge, ""));
    assert_eq!(
        sent(&mut ep).iter().map(method).collect::<Vec<_>>(),
        ["ACK"]
    );
    assert!(matches!(
        events(&mut ep)[..],
        [CallEvent::Failed { status: 407, .. }]
    ));
}

pub(super) fn answered(ep: &mut Endpoint, t0: Instant) -> (CallId, Message) {
    let id = call(ep, t0, None);
    let invite = sent(ep).remove(0);
    input(
        ep,
        at(t0, 10),
        &reply(
            &invite,
            200,
            "Contact: <sip:bob@127.0.0.1:5080>\r\n",
            &answer_sdp("0"),
        ),
    );
    let _ = sent(ep);
    let _ = events(ep);
    (id, invite)
}

/// A request from the far end inside the dialog.
pub(super) fn far_request(
    invite: &Message,
    method: &str,
    cseq: u32,
    extra: &str,
    body: &str,
) -> Vec<u8> {
    let from = invite.header("From").expect("from");
    let to = invite.header("To").expect("to");
    format!(
        "{method} sip:switchboard@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{method}{cseq};rport\r\n\
         From: {to};tag=far\r\nTo: {from}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        invite.call_id,
        body.len()
    )
    .into_bytes()
}

#[test]
fn far_end_bye_is_answered_and_reported() {
    let (mut ep, t0) = endpoint(vec![]);
    let (_, invite) = answered(&mut ep, t0);
    let bye = far_request(&invite, "BYE", 1, "", "");
    input(&mut ep, at(t0, 100), &bye);
    let ok = sent(&mut ep).remove(0);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.via.received, None,
        "sent-by already matched the source address"
    );
    assert!(ok.vias[0].contains("rport=5080"));
    assert_eq!(
        events(&mut ep),
        [CallEvent::Ended {
            by: Party::Remote,
            reason: "remote hangup".into()
        }]
    );
    // A retransmitted BYE gets the same 200 from the server transaction (timer J).
    input(&mut ep, at(t0, 600), &bye);
    assert_eq!(sent(&mut ep)[0].status(), Some(200));
    assert!(events(&mut ep).is_empty());
}

#[test]
fn reinvite_hold_unhold_and_new_address() {
    let (mut ep, t0) = endpoint(vec![]);
    let (_, invite) = answered(&mut ep, t0);
    let hold = format!(
        "{}a=sendonly\r\n",
        answer_sdp("0 101\r\na=rtpmap:101 telephone-event/8000")
    );
    input(
        &mut ep,
        at(t0, 100),
        &far_request(
            &invite,
            "INVITE",
            2,
            "Content-Type: application/sdp\r\n",
            &hold,
        ),
    );
    let out = sent(&mut ep);
    assert_eq!(
        out.iter().map(|m| m.status()).collect::<Vec<_>>(),
        [Some(100), Some(200)]
    );
    let ok = &out[1];
    let answer = AudioSdp::parse(&ok.body).expect("answer");
    assert_eq!(answer.direction, Direction::RecvOnly);
    assert_eq!(answer.port, 30000, "our RTP port does not change");
    assert_eq!(answer.telephone_event(), Some(101));
    assert!(matches!(&events(&mut ep)[..], [CallEvent::MediaChanged { sdp }] if sdp.on_hold()));
    // No ACK yet: the 200 is retransmitted at T1, 2·T1, ...
    advance(&mut ep, at(t0, 100 + 500));
    assert_eq!(
        sent(&mut ep).iter().map(|m| m.status()).collect::<Vec<_>>(),
        [Some(200)]
    );
    input(
        &mut ep,
        at(t0, 700),
        &far_request(&invite, "ACK", 2, "", ""),
    );
    advance(&mut ep, at(t0, 5000));
    assert!(
        sent(&mut ep).iter().all(|m| m.status() != Some(200)),
        "ACK stops the retransmissions"
    );

    let moved = answer_sdp("0").replace("40000", "40002");
    input(
        &mut ep,
        at(t0, 6000),
        &far_request(
            &invite,
            "INVITE",
            3,
            "Contact: <sip:bob@127.0.0.1:5090>\r\n",
            &moved,
        ),
    );
    let ok = sent(&mut ep).pop().expect("200");
    assert_eq!(
        AudioSdp::parse(&ok.body).expect("answer").direction,
        Direction::SendRecv
    );
    assert!(matches!(&events(&mut ep)[..], [CallEvent::MediaChanged { sdp }] if sdp.port == 40002));
    input(
        &mut ep,
        at(t0, 6010),
        &far_request(&invite, "ACK", 3, "", ""),
    );
    // The new Contact is the new remote target.
    let id = CallId(1);
    assert_eq!(ep.dialog_dest_of(id).map(|d| d.addr.port()), Some(5090));

    // An old CSeq is refused.
    input(
        &mut ep,
        at(t0, 7000),
        &far_request(&invite, "INFO", 2, "", ""),
    );
    assert_eq!(sent(&mut ep).pop().and_then(|m| m.status()), Some(500));
}

#[test]
fn unknown_dialogs_get_481_and_options_get_200() {
    let (mut ep, t0) = endpoint(vec![]);
    let (_, invite) = answered(&mut ep, t0);
    let stray = String::from_utf8(far_request(&invite, "BYE", 9, "", ""))
        .expect("text")
        .replace(&invite.call_id, "nobody@nowhere");
    input(&mut ep, at(t0, 100), stray.as_bytes());
    assert_eq!(sent(&mut ep).pop().and_then(|m| m.status()), Some(481));
    let options = "OPTIONS sip:switchboard@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5080;branch=z9hG4bKo1\r\n\
        From: <sip:mon@127.0.0.1>;tag=m\r\nTo: <sip:switchboard@127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    input(&mut ep, at(t0, 200), options.as_bytes());
    let ok = sent(&mut ep).pop().expect("answer");
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header("Allow").is_some_and(|a| a.contains("INVITE")));
    assert_eq!(
        ok.via.received.as_deref(),
        Some("127.0.0.1"),
        "sent-by differed from the source: received= is added"
    );
    assert!(ok.to.tag.is_some());
}

#[test]
fn malformed_requests_get_400_with_the_reason_or_are_dropped() {
    let (mut ep, t0) = endpoint(vec![]);
    let no_cseq_number = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKm\r\n\
        From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: m1\r\nCSeq: OPTIONS\r\nContent-Length: 0\r\n\r\n";
    input(&mut ep, t0, no_cseq_number.as_bytes());
    let t = ep.poll_transmit().expect("answered");
    let text = String::from_utf8(t.payload).expect("text");
    assert!(
        text.starts_with("SIP/2.0 400 Bad Request (malformed CSeq header)"),
        "{text}"
    );
    input(&mut ep, t0, b"\x00\xffgarbage\r\n\r\n");
    assert!(ep.poll_transmit().is_none());
    let stats = ep.stats();
    assert_eq!((stats.rejected_malformed, stats.dropped_malformed), (1, 1));
}

#[test]
fn no_common_codec_ends_the_call_with_a_clear_reason() {
    let (mut ep, t0) = endpoint(vec![]);
    let _ = call(&mut ep, t0, None);
    let invite = sent(&mut ep).remove(0);
    input(
        &mut ep,
        at(t0, 10),
        &reply(
            &invite,
            200,
            "Contact: <sip:bob@127.0.0.1:5080>\r\n",
            &answer_sdp("18"),
        ),
    );
    assert_eq!(
        sent(&mut ep).iter().map(method).collect::<Vec<_>>(),
        ["ACK", "BYE"]
    );
    assert_eq!(
        events(&mut ep),
        [CallEvent::Failed {
            status: 488,
            reason:
                "answer unusable: no common codec (offered PCMU PCMA telephone-event, answered ?)"
                    .into()
        }]
    );
}

#[test]
fn options_mark_providers_up_and_down() {
    let provider = Provider {
        name: "TRUNK".into(),
        address: far().into(),
        transport: Some(Transport::Udp),
        username: None,
        password: None,
        keepalive: true,
        rates: None,
        ..Provider::new("TRUNK", far())
    };
    let (mut ep, t0) = endpoint(vec![provider]);
    advance(&mut ep, t0);
    let options = sent(&mut ep).remove(0);
    assert_eq!(method(&options), "OPTIONS");
    input(&mut ep, at(t0, 5), &reply(&options, 200, "", ""));
    assert_eq!(
        ep.poll_event(),
        Some(Event::Provider {
            name: "TRUNK".into(),
            up: true
        })
    );
    // The next OPTIONS (30 s later) goes unanswered: down when timer F fires, 32 s after it.
    advance(&mut ep, at(t0, 30_000 + 31_999));
    assert_eq!(ep.provider_up("TRUNK"), Some(true));
    advance(&mut ep, at(t0, 30_000 + 32_000));
    assert_eq!(
        ep.poll_event(),
        Some(Event::Provider {
            name: "TRUNK".into(),
            up: false
        })
    );
}

#[test]
fn early_media_from_183_then_answer() {
    let (mut ep, t0) = endpoint(vec![]);
    let _ = call(&mut ep, t0, None);
    let invite = sent(&mut ep).remove(0);
    input(
        &mut ep,
        at(t0, 10),
        &reply(
            &invite,
            183,
            "",
            &answer_sdp("0 101\r\na=rtpmap:101 telephone-event/8000"),
        ),
    );
    input(&mut ep, at(t0, 20), &reply(&invite, 180, "", ""));
    input(
        &mut ep,
        at(t0, 30),
        &reply(
            &invite,
            200,
            "Contact: <sip:bob@127.0.0.1:5080>\r\n",
            &answer_sdp("0"),
        ),
    );
    let ev = events(&mut ep);
    assert!(
        matches!(&ev[0], CallEvent::EarlyMedia { sdp } if sdp.port == 40000 && sdp.telephone_event() == Some(101)),
        "{ev:?}"
    );
    assert_eq!(ev[1], CallEvent::Ringing);
    assert!(matches!(
        &ev[2],
        CallEvent::Answered {
            codec: Codec::Pcmu,
            ..
        }
    ));
}

#[test]
fn tcp_calls_use_tcp_and_no_retransmission_timers() {
    let now = Instant::now();
    let local = SocketAddr::from(([127, 0, 0, 1], T0_PORT));
    let provider = Provider {
        name: "TCP".into(),
        address: far().into(),
        transport: Some(Transport::Tcp),
        username: None,
        password: None,
        keepalive: false,
        rates: None,
        ..Provider::new("TRUNK", far())
    };
    let config = Config {
        providers: vec![provider],
        ..Config::default()
    };
    let mut ep = Endpoint::new(
        config,
        vec![(Transport::Udp, local), (Transport::Tcp, local)],
        now,
    );
    let request = CallRequest {
        target: TargetUri::parse(&format!("sip:bob@{FAR}")).expect("a valid target URI"),
        provider: Some("TCP".into()),
        offer: offer(),
        ring_timeout: None,
        caller: None,
        public_only: false,
    };
    let _ = ep.place_call(now, request).expect("placed");
    let t = ep.poll_transmit().expect("INVITE");
    assert_eq!(t.transport, Transport::Tcp);
    let invite = message::parse(&t.payload, usize::MAX).expect("valid");
    assert_eq!(invite.via.transport, "TCP");
    assert!(
        invite
            .header("Contact")
            .is_some_and(|c| c.contains("transport=tcp"))
    );
    advance(&mut ep, now + Duration::from_secs(31));
    assert!(
        ep.poll_transmit().is_none(),
        "no timer A on a reliable transport"
    );
    advance(&mut ep, now + Duration::from_secs(32));
    assert!(
        matches!(events(&mut ep)[..], [CallEvent::Failed { status: 408, .. }]),
        "timer B still runs"
    );
}

/// A trunk's profile: caller ID and display name in From,
/// P-Asserted-Identity, the number written its way in the Request-URI and
/// To, a loose Route to its outbound proxy (where the INVITE goes), its
/// codec order, and its channel limit.
#[test]
fn a_trunk_profile_shapes_the_invite() {
    let proxy: SocketAddr = "127.0.0.1:5090".parse().expect("addr");
    let provider = Provider {
        keepalive: false,
        from_user: Some("+15551230000".into()),
        display_name: Some("Switchboard Ltd".into()),
        asserted_identity: Some("+15551230000".into()),
        number_format: NumberFormat {
            plus: false,
            strip: 2,
            prefix: "0".into(),
        },
        outbound_proxy: Some(proxy.into()),
        max_calls: Some(1),
        codecs: vec![Codec::Pcma],
        ..Provider::new("TRUNK", far())
    };
    let (mut ep, t0) = endpoint(vec![provider]);
    let request = || CallRequest {
        target: TargetUri::phone(
            "442071234567",
            crate::sip::UriHost::Ip(far().ip()),
            Some(far().port()),
        )
        .expect("a phone URI"),
        provider: Some("TRUNK".into()),
        offer: offer(),
        ring_timeout: None,
        caller: Some("someone".into()),
        public_only: false,
    };
    let id = ep.place_call(t0, request()).expect("placed");
    let t = ep.poll_transmit().expect("an INVITE");
    assert_eq!(t.destination, proxy, "sent to the outbound proxy");
    let text = String::from_utf8(t.payload.clone()).expect("text");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .to_string()
    };
    assert!(
        text.starts_with(&format!("INVITE sip:02071234567@{FAR} SIP/2.0\r\n")),
        "{text}"
    );
    assert_eq!(line("To"), format!("To: <sip:02071234567@{FAR}>"));
    assert!(
        line("From").starts_with(&format!(
            "From: \"Switchboard Ltd\" <sip:+15551230000@127.0.0.1:{T0_PORT}>;tag="
        )),
        "{text}"
    );
    assert_eq!(
        line("P-Asserted-Identity"),
        "P-Asserted-Identity: <sip:+15551230000@127.0.0.1>"
    );
    assert_eq!(line("Route"), "Route: <sip:127.0.0.1:5090;lr>");
    assert!(
        text.contains("\r\nm=audio 30000 RTP/AVP 8 101\r\n"),
        "{text}"
    );

    // Its channel limit: a second call is refused while the first is up.
    match ep.place_call(t0, request()) {
        Err(SipError::TrunkFull(name)) => assert_eq!(name, "TRUNK"),
        other => panic!("expected TrunkFull, got {other:?}"),
    }
    // Once the first is over, the channel is free again.
    let invite = message::parse(&t.payload, usize::MAX).expect("valid");
    ep.handle_input(t0, Transport::Udp, proxy, &reply(&invite, 486, "", ""));
    assert!(
        events(&mut ep)
            .iter()
            .any(|e| matches!(e, CallEvent::Failed { status: 486, .. }))
    );
    let _ = id;
    ep.place_call(t0, request())
        .expect("the channel is free again");
}

#[test]
fn number_formats() {
    let national = NumberFormat {
        plus: false,
        strip: 2,
        prefix: "0".into(),
    };
    assert_eq!(
        national.apply("442071234567").as_deref(),
        Some("02071234567")
    );
    assert_eq!(
        NumberFormat::default().apply("442071234567").as_deref(),
        Some("+442071234567")
    );
    let international = NumberFormat {
        plus: false,
        strip: 0,
        prefix: "00".into(),
    };
    assert_eq!(
        international.apply("4915112345678").as_deref(),
        Some("004915112345678")
    );
    assert_eq!(national.apply("44"), None, "nothing left after stripping");
    assert!(
        NumberFormat {
            prefix: "0x".into(),
            ..NumberFormat::default()
        }
        .check()
        .is_err()
    );
    assert!(
        NumberFormat {
            strip: 15,
            ..NumberFormat::default()
        }
        .check()
        .is_err()
    );
}

fn registering(expires: u32) -> (Endpoint, Instant) {
    let provider = Provider {
        keepalive: false,
        register: true,
        expires,
        username: Some("acct".into()),
        password: Some("secret".into()),
        ..Provider::new("TRUNK", far())
    };
    endpoint(vec![provider])
}

fn header(m: &Message, name: &str) -> String {
    m.header(name).unwrap_or_default()
}

fn state(ep: &Endpoint) -> RegistrationState {
    ep.registrations()
        .into_iter()
        .find(|(name, _)| name == "TRUNK")
        .map(|(_, s)| s)
        .expect("TRUNK registers")
}

/// REGISTER, a digest challenge answered, the binding refreshed before it
/// lapses; down until registered.
#[test]
fn registration_answers_a_challenge_and_refreshes_before_expiry() {
    let (mut ep, t0) = registering(60);
    assert_eq!(
        ep.provider_up("TRUNK"),
        Some(false),
        "down until registered"
    );
    ep.handle_timeout(t0);
    let first = sent(&mut ep);
    assert_eq!(first.len(), 1);
    let register = &first[0];
    assert_eq!(method(register), "REGISTER");
    assert!(
        matches!(&register.start, StartLine::Request { uri, .. } if uri.to_string() == format!("sip:{FAR}"))
    );
    assert_eq!(header(register, "Expires"), "60");
    assert_eq!(header(register, "To"), "<sip:acct@127.0.0.1>");
    assert!(header(register, "Contact").starts_with(&format!("<sip:acct@127.0.0.1:{T0_PORT}")));
    assert!(register.header("Authorization").is_none());

    let challenge = "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"n1\", qop=\"auth\"\r\n";
    ep.handle_input(
        t0,
        Transport::Udp,
        far(),
        &reply(register, 401, challenge, ""),
    );
    let second = sent(&mut ep);
    assert_eq!(second.len(), 1, "one answer to the challenge");
    let answer = &second[0];
    assert_eq!(answer.call_id, register.call_id, "the same Call-ID");
    assert_eq!(answer.cseq, register.cseq + 1);
    let auth = header(answer, "Authorization");
    assert!(
        auth.contains("username=\"acct\"") && auth.contains("nonce=\"n1\""),
        "{auth}"
    );

    let granted = format!("Contact: <sip:acct@127.0.0.1:{T0_PORT}>;expires=60\r\n");
    ep.handle_input(t0, Transport::Udp, far(), &reply(answer, 200, &granted, ""));
    assert_eq!(
        state(&ep),
        RegistrationState::Registered {
            until: t0 + Duration::from_secs(60)
        }
    );
    assert_eq!(
        ep.provider_up("TRUNK"),
        None,
        "registered: up as far as that goes"
    );
    // Refreshed at 48 s (a fifth before the 60 s lapse), not before.
    ep.handle_timeout(at(t0, 47_000));
    assert!(sent(&mut ep).is_empty());
    ep.handle_timeout(at(t0, 48_000));
    let refresh = sent(&mut ep);
    assert_eq!(refresh.len(), 1);
    assert_eq!(method(&refresh[0]), "REGISTER");
    assert_eq!(refresh[0].call_id, register.call_id);
    assert!(
        refresh[0].header("Authorization").is_none(),
        "a new nonce comes with a new challenge"
    );
}

/// 423 raises the lifetime to Min-Expires; 403 fails the registration and
/// the next try waits, longer after each failure.
#[test]
fn registration_takes_min_expires_after_423_and_backs_off_after_403() {
    let (mut ep, t0) = registering(10);
    ep.handle_timeout(t0);
    let register = sent(&mut ep).remove(0);
    ep.handle_input(
        t0,
        Transport::Udp,
        far(),
        &reply(&register, 423, "Min-Expires: 120\r\n", ""),
    );
    let again = sent(&mut ep).remove(0);
    assert_eq!(header(&again, "Expires"), "120");

    ep.handle_input(t0, Transport::Udp, far(), &reply(&again, 403, "", ""));
    match state(&ep) {
        RegistrationState::Failed { reason, retry } => {
            assert_eq!(reason, "403 Whatever");
            assert_eq!(retry, t0 + Duration::from_secs(5));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(ep.provider_up("TRUNK"), Some(false));
    ep.handle_timeout(at(t0, 4_900));
    assert!(sent(&mut ep).iter().all(|m| method(m) != "REGISTER"));
    ep.handle_timeout(at(t0, 5_000));
    let retry = sent(&mut ep);
    assert_eq!(retry.len(), 1);
    ep.handle_input(
        at(t0, 5_000),
        Transport::Udp,
        far(),
        &reply(&retry[0], 403, "", ""),
    );
    match state(&ep) {
        RegistrationState::Failed { retry, .. } => {
            assert_eq!(retry, at(t0, 15_000), "the wait doubled");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A registrar that never answers, and one that challenges every answer.
#[test]
fn a_registrar_that_never_answers_or_challenges_forever_fails() {
    let (mut ep, t0) = registering(60);
    ep.handle_timeout(t0);
    let mut now = t0;
    while now < at(t0, 33_000) {
        now = ep.poll_timeout().expect("a timer").max(now);
        ep.handle_timeout(now);
        let _ = sent(&mut ep);
        if matches!(state(&ep), RegistrationState::Failed { .. }) {
            break;
        }
    }
    match state(&ep) {
        RegistrationState::Failed { reason, .. } => {
            assert_eq!(reason, "no answer from the registrar")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    let (mut ep, t0) = registering(60);
    ep.handle_timeout(t0);
    let mut register = sent(&mut ep).remove(0);
    for round in 1..=3 {
        let challenge = format!("WWW-Authenticate: Digest realm=\"trunk\", nonce=\"n{round}\"\r\n");
        ep.handle_input(
            t0,
            Transport::Udp,
            far(),
            &reply(&register, 401, &challenge, ""),
        );
        match sent(&mut ep).pop() {
            Some(next) => register = next,
            None => break,
        }
    }
    match state(&ep) {
        RegistrationState::Failed { reason, .. } => {
            assert!(reason.contains("refuses the credentials"), "{reason}")
        }
        other => panic!("expected refused credentials, got {other:?}"),
    }
}

/// On shutdown the binding is removed with `Expires: 0`.
#[test]
fn shutdown_removes_the_registration() {
    let (mut ep, t0) = registering(60);
    ep.handle_timeout(t0);
    let register = sent(&mut ep).remove(0);
    ep.handle_input(
        t0,
        Transport::Udp,
        far(),
        &reply(&register, 200, "Expires: 60\r\n", ""),
    );
    assert!(state(&ep).registered());
    ep.unregister_all(at(t0, 1_000));
    let removal = sent(&mut ep).remove(0);
    assert_eq!(header(&removal, "Expires"), "0");
    assert!(ep.unregistering());
    ep.handle_input(
        at(t0, 1_000),
        Transport::Udp,
        far(),
        &reply(&removal, 200, "", ""),
    );
    assert!(!ep.unregistering());
    assert_eq!(state(&ep), RegistrationState::Unregistered);
}
