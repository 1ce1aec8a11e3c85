//! RFC 4028 session timers on the virtual clock: what our INVITE offers,
//! a 422 retried, a far end that is the refresher and stops, one that
//! refreshes, and our own refreshes.

use super::tests::*;
use super::*;
use crate::sip::message::Message;

/// Answers our INVITE with `session_expires` in the 2xx.
fn answer_with(ep: &mut Endpoint, t0: Instant, session_expires: &str) -> (CallId, Message) {
    let id = call(ep, t0, None);
    let invite = sent(ep).remove(0);
    let extra = format!(
        "Contact: <sip:bob@127.0.0.1:5080>\r\nRequire: timer\r\nSession-Expires: {session_expires}\r\n"
    );
    input(
        ep,
        at(t0, 10),
        &reply(&invite, 200, &extra, &answer_sdp("0")),
    );
    let _ = sent(ep);
    let _ = events(ep);
    (id, invite)
}

#[test]
fn our_invite_offers_session_timers() {
    let (mut ep, t0) = endpoint(vec![]);
    let _ = call(&mut ep, t0, None);
    let invite = sent(&mut ep).remove(0);
    assert_eq!(invite.header("Supported").as_deref(), Some("timer"));
    assert_eq!(invite.header("Session-Expires").as_deref(), Some("1800"));
    assert_eq!(invite.header("Min-SE").as_deref(), Some("90"));
}

#[test]
fn a_422_is_retried_once_with_its_min_se() {
    let (mut ep, t0) = endpoint(vec![]);
    let _ = call(&mut ep, t0, None);
    let invite = sent(&mut ep).remove(0);
    input(
        &mut ep,
        at(t0, 10),
        &reply(&invite, 422, "Min-SE: 3600\r\n", ""),
    );
    let out = sent(&mut ep);
    assert_eq!(
        out.iter().map(method).collect::<Vec<_>>(),
        ["ACK", "INVITE"]
    );
    assert_eq!(out[1].header("Session-Expires").as_deref(), Some("3600"));
    assert_eq!(out[1].cseq, invite.cseq + 1);
    // A second 422 is the end of it.
    input(
        &mut ep,
        at(t0, 20),
        &reply(&out[1], 422, "Min-SE: 7200\r\n", ""),
    );
    assert!(matches!(
        events(&mut ep).last(),
        Some(CallEvent::Failed { status: 422, .. })
    ));
}

#[test]
fn a_far_end_refresher_that_stops_gets_a_bye_before_expiry() {
    let (mut ep, t0) = endpoint(vec![]);
    let (_, invite) = answer_with(&mut ep, t0, "90;refresher=uas");
    // It refreshes once, at 40 s (a re-INVITE with the same SDP).
    let refresh = far_request(
        &invite,
        "INVITE",
        2,
        "Session-Expires: 90;refresher=uac\r\nContent-Type: application/sdp\r\n",
        &answer_sdp("0"),
    );
    input(&mut ep, at(t0, 40_010), &refresh);
    let ok = sent(&mut ep).pop().expect("our 200");
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.header("Session-Expires").as_deref(),
        Some("90;refresher=uac")
    );
    input(
        &mut ep,
        at(t0, 40_020),
        &far_request(&invite, "ACK", 2, "", ""),
    );
    let _ = events(&mut ep);
    // The expiry counts from that refresh: 90 − 30 = 60 s after it.
    advance(&mut ep, at(t0, 100_000));
    assert!(
        sent(&mut ep).iter().all(|m| method(m) != "BYE"),
        "BYE before the refreshed expiry"
    );
    advance(&mut ep, at(t0, 100_020));
    let out = sent(&mut ep);
    assert_eq!(out.iter().map(method).collect::<Vec<_>>(), ["BYE"]);
    assert!(matches!(
        &events(&mut ep)[..],
        [CallEvent::Expired { reason }] if reason.contains("no refresh")
    ));
}

#[test]
fn as_refresher_we_reinvite_at_half_the_interval() {
    let (mut ep, t0) = endpoint(vec![]);
    let (_, invite) = answer_with(&mut ep, t0, "120;refresher=uac");
    advance(&mut ep, at(t0, 60_000));
    assert!(sent(&mut ep).is_empty());
    advance(&mut ep, at(t0, 60_010));
    let refresh = sent(&mut ep).remove(0);
    assert_eq!(method(&refresh), "INVITE");
    assert_eq!(refresh.cseq, invite.cseq + 1);
    assert_eq!(
        refresh.header("Session-Expires").as_deref(),
        Some("120;refresher=uac")
    );
    assert_eq!(refresh.to.tag.as_deref(), Some("far"), "in the dialog");
    assert!(!refresh.body.is_empty(), "with our offer");
    input(
        &mut ep,
        at(t0, 60_050),
        &reply(
            &refresh,
            200,
            "Session-Expires: 120;refresher=uac\r\n",
            &answer_sdp("0"),
        ),
    );
    let ack = sent(&mut ep).remove(0);
    assert_eq!(method(&ack), "ACK");
    assert_eq!(ack.cseq, refresh.cseq);
    // The next refresh comes half an interval after this one.
    advance(&mut ep, at(t0, 120_000));
    assert!(sent(&mut ep).is_empty());
    advance(&mut ep, at(t0, 120_060));
    let next = sent(&mut ep).remove(0);
    assert_eq!(method(&next), "INVITE");
    // It is refused with 481 (the far end lost the dialog): BYE.
    input(&mut ep, at(t0, 120_100), &reply(&next, 481, "", ""));
    let out = sent(&mut ep);
    assert!(
        out.iter().any(|m| method(m) == "BYE"),
        "{:?}",
        out.iter().map(method).collect::<Vec<_>>()
    );
    assert!(matches!(
        events(&mut ep).last(),
        Some(CallEvent::Expired { .. })
    ));
}

#[test]
fn a_far_end_without_timers_has_no_expiry() {
    let (mut ep, t0) = endpoint(vec![]);
    let _ = answered(&mut ep, t0);
    advance(&mut ep, at(t0, 4 * 3600 * 1000));
    assert!(sent(&mut ep).is_empty());
    assert!(events(&mut ep).is_empty());
}
