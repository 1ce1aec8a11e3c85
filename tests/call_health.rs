//! Calls whose far end misbehaves, end to end with real peers on loopback:
//! SIPp as the providers' far ends (signalling), a real RTP peer for each
//! far end's audio, the host as `switchboard run` assembles it.
//!
//! - A far end that stops sending media and never sends BYE (a phone
//!   switched off, a NAT binding lost): an additional party so lost leaves
//!   the call ("Additional party left: … (no audio from it)"), a lost
//!   destination ends the session with `MediaTimeout`, each within
//!   `rtp_timeout_secs` plus a second, billed to its last packet.
//! - A far end that holds the call (re-INVITE `a=sendonly`) gets no RTP
//!   until it resumes, is still heard, and gets the mix back after.

mod common;
mod dnsmasq_peer;
mod kamailio_peer;
mod rtp_peer;
mod session_host;
mod sipp_peer;
mod xmpp_peers;

use std::time::{Duration, Instant, SystemTime};

use rtp_peer::{TonePeer, share};
use session_host::*;
use sipp_peer::SippUas;
use switchboard::billing::unix_ms;
use switchboard::media::Law;

/// The media timeout the tests run with (the smallest allowed).
const RTP_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_far_ends_are_ended_at_their_last_packet() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let extra = TonePeer::start(Law::Ulaw, 700.0);
    let proxicom = SippUas::start("answer.xml", &[you.port, extra.port]);
    let pakline = SippUas::start("answer.xml", &[them.port]);
    let mut host = Host::start(
        &[
            Provider::new("PROXICOM", &proxicom, PROXICOM_RATES),
            Provider::new("PAKLINE", &pakline, PAKLINE_RATES),
        ],
        &[],
        "\n[media]\nrtp_timeout_secs = 5\n",
    )
    .await;
    let mut chat = host.chat();
    let alice = "alice@example.com";
    host.credit(alice, "5").await;
    chat.say(alice, "CALLBACK +442071234567 +4915112345678");
    chat.expect(
        alice,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.02604",
        ],
    )
    .await;
    chat.say(alice, "ADD +442071234568");
    chat.expect(
        alice,
        &[
            "Calling additional: phone:442071234568, cost = 0.014 via PROXICOM",
            "Party answered. Now talking. Cost = 0.014",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The additional party vanishes: it leaves, the call goes on.
    extra.go_silent();
    let (gone, gone_ms) = (Instant::now(), unix_ms(SystemTime::now()));
    let left = chat.next_within(alice, RTP_TIMEOUT * 2).await;
    let after = gone.elapsed();
    assert_eq!(
        left,
        "Additional party left: phone:442071234568 (no audio from it)"
    );
    assert!(
        after >= RTP_TIMEOUT - Duration::from_millis(100)
            && after <= RTP_TIMEOUT + Duration::from_secs(1),
        "told after {after:?}"
    );
    chat.say(alice, "LIST");
    assert_eq!(
        chat.next(alice).await,
        "List of connected legs:\nSource: phone:442071234567 Via: PROXICOM\nDestination: phone:4915112345678 Via: PAKLINE"
    );

    // The destination vanishes: the session ends.
    them.go_silent();
    let (lost, lost_ms) = (Instant::now(), unix_ms(SystemTime::now()));
    let ended = chat.next_within(alice, RTP_TIMEOUT * 2).await;
    let after = lost.elapsed();
    assert!(ended.ends_with("Reason = MediaTimeout"), "{ended}");
    assert!(
        after >= RTP_TIMEOUT - Duration::from_millis(100)
            && after <= RTP_TIMEOUT + Duration::from_secs(1),
        "ended after {after:?}"
    );
    assert_eq!(host.service.manager.live(), 0);

    // Each lost leg is billed to its last packet (within a frame or two
    // of when its peer went quiet), not to when the loss was noticed.
    let cdrs = host.cdrs(alice).await;
    assert_eq!(cdrs.len(), 3, "{cdrs:?}");
    for (address, quiet_ms) in [
        ("phone:442071234568", gone_ms),
        ("phone:4915112345678", lost_ms),
    ] {
        let c = cdrs
            .iter()
            .find(|c| c.address == address)
            .expect("the lost leg's CDR");
        assert_eq!(c.end_reason.as_deref(), Some("MediaTimeout"), "{c:?}");
        let ended = c.ended_ms.expect("settled");
        assert!(
            (quiet_ms - 300..=quiet_ms + 100).contains(&ended),
            "{address}: ended {ended}, quiet from {quiet_ms}"
        );
        let answered = c.answered_ms.expect("answered");
        assert_eq!(
            c.billed_secs,
            Some(u64::try_from(ended - answered).expect("ms").div_ceil(1000)),
            "{c:?}"
        );
        assert!(c.sip_call_id.as_deref().is_some_and(|id| id.contains('@')));
    }
    let source = cdrs
        .iter()
        .find(|c| c.address == "phone:442071234567")
        .expect("source CDR");
    assert!(
        source.ended_ms.expect("settled") >= lost_ms + 4_800,
        "the source was up until the end: {source:?}"
    );
    // We hung both lost legs up (BYE), though nobody answered it yet.
    assert!(pakline.messages().contains("BYE sip:"), "no BYE sent");
}

/// RFC 3264 §8.4: a far end that holds with `a=sendonly` gets no RTP from
/// us while it holds (we answer `recvonly`), is still heard by the other
/// party, and hears the mix again once it resumes. Billing goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_is_honoured_and_resume_restores_the_mix() {
    hold_and_resume("answer_hold_resume.xml", "a=recvonly").await;
}

/// The same with the old way of holding (RFC 2543: `c=0.0.0.0`): it is a
/// hold, not an address to send RTP to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_style_hold_is_a_hold_not_an_address() {
    hold_and_resume("answer_old_hold_resume.xml", "a=sendrecv").await;
}

/// A far end (SIPp running `scenario`) holds 2 s after its ACK for 4 s,
/// then resumes; our answer to the hold carries `answered`.
async fn hold_and_resume(scenario: &str, answered_with: &str) {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let proxicom = SippUas::start("answer.xml", &[you.port]);
    let pakline = SippUas::start(scenario, &[them.port]);
    let mut host = Host::start(
        &[
            Provider::new("PROXICOM", &proxicom, PROXICOM_RATES),
            Provider::new("PAKLINE", &pakline, PAKLINE_RATES),
        ],
        &[],
        "",
    )
    .await;
    let mut chat = host.chat();
    let alice = "alice@example.com";
    host.credit(alice, "5").await;
    chat.say(alice, "CALLBACK +442071234567 +4915112345678");
    chat.expect(
        alice,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.02604",
        ],
    )
    .await;
    let answered = Instant::now();
    let at = |secs: f64| answered + Duration::from_secs_f64(secs);
    // SIPp holds 2 s after its ACK and resumes 4 s later: look inside that.
    tokio::time::sleep_until(at(3.0).into()).await;
    let (held_from, heard_from) = (them.packets(), you.heard_len());
    tokio::time::sleep_until(at(5.5).into()).await;
    let (held_to, heard_to) = (them.packets(), you.heard_len());
    assert_eq!(held_to, held_from, "RTP reached the far end on hold");
    let heard = &you.heard_since(heard_from)[..heard_to - heard_from];
    assert!(
        share(heard, 560.0) > 0.3,
        "the source no longer hears the held party ({:.2})",
        share(heard, 560.0)
    );
    assert!(
        pakline.messages().contains(answered_with),
        "we answered the hold with {answered_with}"
    );
    // Resumed at 6 s: the mix comes back.
    tokio::time::sleep_until(at(8.0).into()).await;
    let resumed = them.packets() - held_to;
    assert!(resumed >= 50, "only {resumed} packets after the resume");
    assert!(share(&them.tail(1000), 440.0) > 0.3, "the mix is back");
    chat.say(alice, "HANGUP");
    let ended = chat.next(alice).await;
    let secs = charged_secs(&ended);
    assert!(secs >= 8, "the hold was billed: {ended}");
    let cdrs = host.cdrs(alice).await;
    assert!(
        cdrs.iter().all(|c| c.billed_secs.is_some_and(|s| s >= 8)),
        "{cdrs:?}"
    );
    assert!(pakline.errors().is_empty(), "{}", pakline.errors());
}

/// RFC 4028: a trunk that asks for session timers with itself as the
/// refresher (`Session-Expires: 90;refresher=uas`) and then never
/// refreshes: we send BYE at the interval minus a third (60 s), the
/// session ends with `SessionExpired`, both legs billed to that moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_that_stops_refreshing_its_session_timer_gets_a_bye() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let proxicom = SippUas::start("answer.xml", &[you.port]);
    let pakline = SippUas::start("answer_timer_no_refresh.xml", &[them.port]);
    let mut host = Host::start(
        &[
            Provider::new("PROXICOM", &proxicom, PROXICOM_RATES),
            Provider::new("PAKLINE", &pakline, PAKLINE_RATES),
        ],
        &[],
        "",
    )
    .await;
    let mut chat = host.chat();
    let alice = "alice@example.com";
    host.credit(alice, "5").await;
    chat.say(alice, "CALLBACK +442071234567 +4915112345678");
    chat.expect(
        alice,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.02604",
        ],
    )
    .await;
    let answered = Instant::now();
    let ended = chat.next_within(alice, Duration::from_secs(75)).await;
    let after = answered.elapsed();
    assert!(ended.ends_with("Reason = SessionExpired"), "{ended}");
    assert!(
        after >= Duration::from_secs(59) && after <= Duration::from_secs(62),
        "BYE after {after:?}, not at 60 s"
    );
    let invite = pakline.messages();
    assert!(invite.contains("Supported: timer"), "we offered timers");
    assert!(invite.contains("BYE sip:"), "we hung up");
    let cdrs = host.cdrs(alice).await;
    let destination = cdrs
        .iter()
        .find(|c| c.address == "phone:4915112345678")
        .expect("destination CDR");
    assert_eq!(destination.end_reason.as_deref(), Some("SessionExpired"));
    assert!(
        destination
            .billed_secs
            .is_some_and(|s| (59..=62).contains(&s))
    );
    // SIPp got its BYE within the scenario's wait: no error.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(pakline.errors().is_empty(), "{}", pakline.errors());
}

/// An additional party that hangs up by itself: the user is told who left,
/// over XMPP (Prosody and a slixmpp user), and the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_additional_party_leaving_is_told_over_xmpp() {
    use xmpp_peers::{DOMAIN, Prosody, User, befriend};
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let leaver_audio = TonePeer::start(Law::Ulaw, 700.0);
    let proxicom = SippUas::start("answer.xml", &[you.port]);
    let pakline = SippUas::start("answer.xml", &[them.port]);
    let leaver = SippUas::start("answer_then_bye.xml", &[leaver_audio.port]);
    let mut host = Host::start(
        &[
            Provider::new("PROXICOM", &proxicom, PROXICOM_RATES),
            Provider::new("PAKLINE", &pakline, PAKLINE_RATES),
            Provider::new("LEAVER", &leaver, &[("33", "0.01")]),
        ],
        &[],
        "",
    )
    .await;
    let ruslan_jid = format!("ruslan@{DOMAIN}");
    host.credit(&ruslan_jid, "5").await;
    let server = Prosody::start(&[("switchboard", "bot-secret"), ("ruslan", "r")]);
    let xmpp = host.xmpp(&server);
    wait_online(&xmpp).await;
    let bot = format!("switchboard@{DOMAIN}");
    let mut ruslan = block(|| User::login(&server, "ruslan", "r"));
    block(|| {
        befriend(&mut ruslan, &bot);
        ruslan.say(&bot, "CALLBACK +442071234567 +4915112345678");
        for expected in [
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.02604",
        ] {
            assert_eq!(ruslan.next_message(&bot, SECS), expected);
        }
        ruslan.say(&bot, "ADD +33123456789");
        for expected in [
            "Calling additional: phone:33123456789, cost = 0.01 via LEAVER",
            "Party answered. Now talking. Cost = 0.01",
            // It hangs up by itself 3 s later (its own BYE).
            "Additional party left: phone:33123456789 (hung up)",
        ] {
            assert_eq!(ruslan.next_message(&bot, SECS), expected);
        }
        ruslan.say(&bot, "LIST");
        assert_eq!(
            ruslan.next_message(&bot, SECS),
            "List of connected legs:\nSource: phone:442071234567 Via: PROXICOM\nDestination: phone:4915112345678 Via: PAKLINE"
        );
        ruslan.say(&bot, "HANGUP");
        let ended = ruslan.next_message(&bot, SECS);
        assert!(ended.ends_with("Reason = EndedByHangup"), "{ended}");
    });
    let cdrs = host.cdrs(&ruslan_jid).await;
    assert!(
        cdrs.iter()
            .any(|c| c.address == "phone:33123456789"
                && c.end_reason.as_deref() == Some("EndedByParty")),
        "{cdrs:?}"
    );
}
