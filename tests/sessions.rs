//! Callback sessions end to end, against real peers on loopback: SIPp
//! (`tests/sessions/*.xml`, `tests/sip/scenarios/*.xml`) as every provider's
//! and gateway's far end, real RTP to and from each far end (a tone each,
//! checked with Goertzel filters), SQLite billing, the built-in plugins, and
//! for the seed's transcripts Prosody with a slixmpp client.
//!
//! The host is assembled exactly as `switchboard run` does it
//! ([`Service::start`] from a configuration file, with per-provider rate
//! sheets); the chat is either the XMPP bot or the same [`Bot`] driven
//! directly.

mod common;
mod dnsmasq_peer;
mod kamailio_peer;
mod rtp_peer;
mod session_host;
mod sipp_peer;
mod xmpp_peers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rtp_peer::{TonePeer, assert_hear_each_other, share};
use session_host::*;
use sipp_peer::SippUas;
use switchboard::billing::{Cdr, Micros, unix_ms};
use switchboard::chat::xmpp::XmppBot;
use switchboard::media::Law;
use switchboard::plugin::SlotName;
use xmpp_peers::{DOMAIN, Prosody, User, befriend};

/// The seed's setting over XMPP: a host with PROXICOM and PAKLINE (the
/// seed's rates), Ruslan with 5 of credit, Prosody, the bot logged in, and
/// Ruslan logged in with a real client and subscribed to the bot.
struct SeedChat {
    host: Host,
    bot: String,
    ruslan_jid: String,
    ruslan: User,
    _server: Prosody,
    _xmpp: Arc<XmppBot>,
}

impl SeedChat {
    async fn start(proxicom: &SippUas, pakline: &SippUas) -> SeedChat {
        let mut host = Host::start(
            &[
                Provider::new("PROXICOM", proxicom, PROXICOM_RATES),
                Provider::new("PAKLINE", pakline, PAKLINE_RATES),
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
        block(|| befriend(&mut ruslan, &bot));
        SeedChat {
            host,
            bot,
            ruslan_jid,
            ruslan,
            _server: server,
            _xmpp: xmpp,
        }
    }
}

/// The seed's first transcript over XMPP: CALLBACK, then HANGUP, message
/// by message; audio both ways; the charged time and cost as in the CDRs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_transcript_callback_then_hangup_over_xmpp() {
    let (you, them) = (
        TonePeer::start(Law::Ulaw, 440.0),
        TonePeer::start(Law::Ulaw, 560.0),
    );
    let proxicom = SippUas::start("answer.xml", &[you.port]);
    let pakline = SippUas::start("answer.xml", &[them.port]);
    let seed = SeedChat::start(&proxicom, &pakline).await;
    let (host, bot, ruslan_jid) = (&seed.host, seed.bot.clone(), seed.ruslan_jid.clone());
    let mut ruslan = seed.ruslan;

    block(|| {
        ruslan.say(&bot, "CALLBACK +442071234567 +4915112345678");
        for expected in [
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.02604",
        ] {
            assert_eq!(ruslan.next_message(&bot, SECS), expected);
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_hear_each_other(&[&you, &them]);
    let ended = block(|| {
        ruslan.say(&bot, "hangup");
        ruslan.next_message(&bot, SECS)
    });
    let secs = charged_secs(&ended);
    assert_eq!(
        ended,
        format!("Call aborted!\nThank you!\nCharged time: {secs} secs. Reason = EndedByHangup")
    );
    assert!((3..=8).contains(&secs), "{secs}");
    let cdrs = assert_billed(host, &ruslan_jid, Micros(5_000_000), secs).await;
    let legs: Vec<(&str, Option<&str>, Micros)> = cdrs
        .iter()
        .map(|c| (c.role.as_str(), c.provider.as_deref(), c.price_per_minute))
        .collect();
    assert_eq!(
        legs,
        [
            ("source", Some("PROXICOM"), price("0.014").price_per_minute),
            (
                "destination",
                Some("PAKLINE"),
                price("0.01204").price_per_minute
            ),
        ]
    );
    assert!(
        cdrs.iter()
            .all(|c| c.end_reason.as_deref() == Some("EndedByHangup"))
    );
    assert!(proxicom.errors().is_empty(), "{}", proxicom.errors());
    assert!(pakline.errors().is_empty(), "{}", pakline.errors());
}

/// The seed's second transcript over XMPP: LIST, ADD, LIST, HANGUP; the
/// source hears ringback while the destination rings; three parties hear
/// each other and not themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_transcript_conference_over_xmpp() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let third = TonePeer::start(Law::Ulaw, 660.0);
    let proxicom = SippUas::start("answer.xml", &[you.port, third.port]);
    let pakline = SippUas::start("answer_late.xml", &[them.port]);
    let seed = SeedChat::start(&proxicom, &pakline).await;
    let (host, bot, ruslan_jid) = (&seed.host, seed.bot.clone(), seed.ruslan_jid.clone());
    let mut ruslan = seed.ruslan;

    block(|| {
        ruslan.say(&bot, "CALLBACK +442071234567 +4915112345678");
        assert_eq!(
            ruslan.next_message(&bot, SECS),
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM"
        );
        assert_eq!(
            ruslan.next_message(&bot, SECS),
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE"
        );
    });
    // The destination rings for 1.5 s: the source hears ringback (425 Hz).
    let before = you.heard_len();
    block(|| {
        assert_eq!(
            ruslan.next_message(&bot, SECS),
            "Remote answered. Now talking. Cost = 0.02604"
        )
    });
    let ringing = you.heard_since(before.saturating_sub(8000));
    assert!(
        share(&ringing, 425.0) > 0.3,
        "no ringback: {:.3}",
        share(&ringing, 425.0)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_hear_each_other(&[&you, &them]);

    block(|| {
        ruslan.say(&bot, "LIST");
        assert_eq!(
            ruslan.next_message(&bot, SECS),
            "List of connected legs:\nSource: phone:442071234567 Via: PROXICOM\nDestination: phone:4915112345678 Via: PAKLINE"
        );
        ruslan.say(&bot, "ADD +442071234568");
        assert_eq!(
            ruslan.next_message(&bot, SECS),
            "Calling additional: phone:442071234568, cost = 0.014 via PROXICOM"
        );
        assert_eq!(
            ruslan.next_message(&bot, SECS),
            "Party answered. Now talking. Cost = 0.014"
        );
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_hear_each_other(&[&you, &them, &third]);
    let ended = block(|| {
        ruslan.say(&bot, "LIST");
        assert_eq!(
            ruslan.next_message(&bot, SECS),
            "List of connected legs:\nSource: phone:442071234567 Via: PROXICOM\nDestination: phone:4915112345678 Via: PAKLINE\nAdditional: phone:442071234568 Via: PROXICOM"
        );
        ruslan.say(&bot, "HANGUP");
        ruslan.next_message(&bot, SECS)
    });
    let secs = charged_secs(&ended);
    assert_eq!(
        ended,
        format!("Call aborted!\nThank you!\nCharged time: {secs} secs. Reason = EndedByHangup")
    );
    let cdrs = assert_billed(host, &ruslan_jid, Micros(5_000_000), secs).await;
    let roles: Vec<&str> = cdrs.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["source", "destination", "additional"]);
}

/// Busy, no answer, every provider failing, failover to the next provider,
/// a 407 challenge answered with the provider's credentials, too little
/// credit; and the attempts feed the statistics the next routing sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_failover_challenges_and_statistics() {
    let you: Vec<TonePeer> = (0..8)
        .map(|i| TonePeer::start(Law::Ulaw, 400.0 + 10.0 * f64::from(i)))
        .collect();
    let them: Vec<TonePeer> = (0..8).map(|_| TonePeer::start(Law::Ulaw, 600.0)).collect();
    let proxicom = SippUas::start(
        "answer.xml",
        &you.iter().map(|p| p.port).collect::<Vec<_>>(),
    );
    let pakline = SippUas::start(
        "answer.xml",
        &them.iter().map(|p| p.port).collect::<Vec<_>>(),
    );
    let busytel = SippUas::start("busy.xml", &[]);
    let silent = SippUas::start("noanswer.xml", &[]);
    let down1 = SippUas::start("fail503.xml", &[]);
    let down2 = SippUas::start("fail503.xml", &[]);
    let authco = SippUas::start("auth407.xml", &[]);
    let mut host = Host::start(
        &[
            Provider::new("PROXICOM", &proxicom, &[("44", "0.014")]),
            Provider::new("PAKLINE", &pakline, &[("41", "0.02")]),
            Provider::new("BUSYTEL", &busytel, &[("33", "0.01")]),
            Provider::new("SILENT", &silent, &[("34", "0.01")]),
            Provider::new("DOWN1", &down1, &[("39", "0.01"), ("41", "0.01")]),
            Provider::new("DOWN2", &down2, &[("39", "0.02")]),
            Provider {
                credentials: Some(("alice", "secret")),
                ..Provider::new("AUTHCO", &authco, &[("43", "0.03")])
            },
        ],
        &[],
        "",
    )
    .await;
    let mut chat = host.chat();
    let u = "user@example.com";
    host.credit(u, "5").await;

    // Busy: not rung again through another provider.
    assert!(
        chat.say(u, "CALLBACK +33100000001 +4115112345678")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:33100000001, cost = 0.01 via BUSYTEL",
            "Calling source phone:33100000001 failed: busy.",
            "Call aborted!\nThank you!\nCharged time: 0 secs. Reason = SourceFailed",
        ],
    )
    .await;

    // No answer within the ring timeout (5 s): CANCEL, and the session ends.
    assert!(
        chat.say(u, "CALLBACK +442071234567 +34911234567")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:34911234567, cost = 0.01 via SILENT",
        ],
    )
    .await;
    let t = Instant::now();
    assert_eq!(
        chat.next(u).await,
        "Calling destination phone:34911234567 failed: no answer."
    );
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    let ended = chat.next(u).await;
    assert!(ended.ends_with("Reason = DestinationFailed"), "{ended}");
    assert!(
        charged_secs(&ended) >= 5,
        "the source talked while the destination rang"
    );

    // Every provider fails (503): each is tried in turn.
    assert!(
        chat.say(u, "CALLBACK +442071234567 +390612345678")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:390612345678, cost = 0.01 via DOWN1",
            "Calling destination: phone:390612345678, cost = 0.02 via DOWN2",
            "Calling destination phone:390612345678 failed: all providers failed.",
        ],
    )
    .await;
    assert!(chat.next(u).await.ends_with("Reason = DestinationFailed"));

    // Failover: DOWN1 is cheapest for +41 but fails; PAKLINE answers.
    assert!(
        chat.say(u, "CALLBACK +442071234567 +41441234567")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:41441234567, cost = 0.01 via DOWN1",
            "Calling destination: phone:41441234567, cost = 0.02 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.034",
        ],
    )
    .await;
    chat.say(u, "HANGUP");
    assert!(chat.next(u).await.ends_with("Reason = EndedByHangup"));

    // The statistics the next routing call receives: DOWN1 has failed
    // twice, PAKLINE answered; the default router now puts PAKLINE first.
    let now = unix_ms(SystemTime::now());
    let down = host.service.billing.provider_stats("DOWN1", now);
    assert_eq!((down.attempts, down.answered, down.asr_bp), (2, 0, Some(0)));
    let pak = host.service.billing.provider_stats("PAKLINE", now);
    assert_eq!(
        (pak.attempts, pak.answered, pak.asr_bp),
        (1, 1, Some(10_000))
    );
    assert!(
        chat.say(u, "CALLBACK +442071234567 +41441234567")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:41441234567, cost = 0.02 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.034",
        ],
    )
    .await;
    chat.say(u, "HANGUP");
    assert!(chat.next(u).await.ends_with("Reason = EndedByHangup"));

    // A provider that challenges with 407: answered with its credentials
    // (SIPp checks the digest's form).
    assert!(
        chat.say(u, "CALLBACK +43123456789 +442071234567")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:43123456789, cost = 0.03 via AUTHCO",
            "Calling destination: phone:442071234567, cost = 0.014 via PROXICOM",
            "Remote answered. Now talking. Cost = 0.044",
        ],
    )
    .await;
    chat.say(u, "HANGUP");
    assert!(chat.next(u).await.ends_with("Reason = EndedByHangup"));
    assert!(authco.errors().is_empty(), "{}", authco.errors());

    // Too little credit for a minute of the source: refused before dialling.
    let poor = "poor@example.com";
    host.credit(poor, "0.01").await;
    chat.say(poor, "CALLBACK +442071234567 +41441234567");
    chat.expect(
        poor,
        &[
            "Not enough credit: your balance is 0.01, this call needs at least 0.014. Please top up.",
            "Call aborted!\nThank you!\nCharged time: 0 secs. Reason = SourceFailed",
        ],
    )
    .await;
    // No account at all.
    chat.say(
        "stranger@example.com",
        "CALLBACK +442071234567 +41441234567",
    );
    let refused = chat.next("stranger@example.com").await;
    assert!(
        refused.starts_with("Not enough credit: your balance is 0"),
        "{refused}"
    );

    // An unknown provider named with `via`.
    assert!(
        chat.say(u, "CALLBACK +442071234567 +41441234567 via PROXICOM NOSUCH")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Unknown provider NOSUCH for this destination.",
        ],
    )
    .await;
    assert!(chat.next(u).await.ends_with("Reason = DestinationFailed"));
    // Emergency numbers are refused by policy before anyone is rung.
    let refused = chat.say(u, "CALLBACK +442071234567 phone:112");
    assert_eq!(
        refused,
        [
            "Calls to phone:112 are not allowed by this service (emergency and premium-rate numbers are refused)."
        ]
    );
    chat.quiet(u, Duration::from_millis(300)).await;
    assert_eq!(host.service.manager.live(), 0);
}

/// Commands in the wrong state, one user's commands never reaching
/// another's session, one live session per user, DEL rules, and far ends
/// hanging up: the source (the session ends), an additional leg (it does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_isolation_and_far_end_hangups() {
    let a: Vec<TonePeer> = (0..3).map(|_| TonePeer::start(Law::Ulaw, 440.0)).collect();
    let b: Vec<TonePeer> = (0..3).map(|_| TonePeer::start(Law::Ulaw, 560.0)).collect();
    let proxicom = SippUas::start("answer.xml", &a.iter().map(|p| p.port).collect::<Vec<_>>());
    let pakline = SippUas::start(
        "answer_late.xml",
        &b.iter().map(|p| p.port).collect::<Vec<_>>(),
    );
    let leaver_audio = TonePeer::start(Law::Ulaw, 700.0);
    let leaver = SippUas::start(
        "answer_then_bye.xml",
        &[leaver_audio.port, leaver_audio.port],
    );
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
    let mut chat = host.chat();
    let (alice, bob) = ("alice@example.com", "bob@example.com");
    host.credit(alice, "5").await;
    host.credit(bob, "5").await;

    // Nothing to act on yet.
    for (command, keyword) in [
        ("LIST", "LIST"),
        ("HANGUP", "HANGUP"),
        ("ADD +33123", "ADD"),
        ("DEL +33123", "DEL"),
    ] {
        assert_eq!(
            chat.say(alice, command),
            [format!(
                "{keyword} is not possible now: no call in progress."
            )]
        );
    }
    assert!(
        chat.say(alice, "CALLBACK +442071234567 +4915112345678")
            .is_empty()
    );
    chat.expect(
        alice,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
        ],
    )
    .await;
    // While the destination rings: ADD is too early, a second CALLBACK is refused.
    chat.say(alice, "ADD +33123456789");
    assert_eq!(
        chat.next(alice).await,
        "ADD is not possible now: the destination is still being called, the call is not yet connected."
    );
    assert_eq!(
        chat.say(alice, "CALLBACK +442071234567 +4915112345678"),
        ["CALLBACK is not possible now: you already have a call in progress; HANGUP ends it."]
    );
    // Bob sees and controls nothing of Alice's session.
    assert_eq!(
        chat.say(bob, "HANGUP"),
        ["HANGUP is not possible now: no call in progress."]
    );
    assert_eq!(
        chat.next(alice).await,
        "Remote answered. Now talking. Cost = 0.02604"
    );
    chat.say(bob, "LIST");
    chat.quiet(alice, Duration::from_millis(300)).await;
    // DEL of the source or destination is refused; of a stranger, not found.
    chat.say(alice, "DEL +442071234567");
    assert_eq!(
        chat.next(alice).await,
        "The source leg cannot be dropped; HANGUP ends the whole call."
    );
    chat.say(alice, "DEL +4915112345678");
    assert_eq!(
        chat.next(alice).await,
        "The destination leg cannot be dropped; HANGUP ends the whole call."
    );
    chat.say(alice, "DEL +1234");
    assert_eq!(
        chat.next(alice).await,
        "phone:1234 is not one of the additional legs; LIST shows them."
    );
    // An additional party that hangs up by itself (after 3 s) leaves the call up.
    chat.say(alice, "ADD +33123456789");
    chat.expect(
        alice,
        &[
            "Calling additional: phone:33123456789, cost = 0.01 via LEAVER",
            "Party answered. Now talking. Cost = 0.01",
            // Who left, and why (the list alone said neither).
            "Additional party left: phone:33123456789 (hung up)",
        ],
    )
    .await;
    // DEL of an additional leg.
    // ADD naming its provider.
    chat.say(alice, "ADD +4915112345679 PAKLINE");
    chat.expect(
        alice,
        &[
            "Calling additional: phone:4915112345679, cost = 0.01204 via PAKLINE",
            "Party answered. Now talking. Cost = 0.01204",
        ],
    )
    .await;
    chat.say(alice, "DEL +4915112345679");
    assert_eq!(
        chat.next(alice).await,
        "List of connected legs:\nSource: phone:442071234567 Via: PROXICOM\nDestination: phone:4915112345678 Via: PAKLINE"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_hear_each_other(&[&a[0], &b[0]]);
    chat.say(alice, "HANGUP");
    let ended = chat.next(alice).await;
    assert!(ended.ends_with("Reason = EndedByHangup"), "{ended}");
    let cdrs = host.cdrs(alice).await;
    assert_eq!(cdrs.len(), 4, "{cdrs:?}");
    assert!(
        cdrs.iter()
            .any(|c| c.end_reason.as_deref() == Some("EndedByParty"))
    );
    assert!(
        cdrs.iter()
            .any(|c| c.end_reason.as_deref() == Some("DroppedByUser"))
    );

    // The source hanging up ends the session and every leg.
    // (Named providers: by now the statistics would rank PROXICOM first for +49.)
    chat.say(
        bob,
        "CALLBACK +33111111111 +4915112345678 via LEAVER PAKLINE",
    );
    chat.expect(
        bob,
        &[
            "Calling source: phone:33111111111, cost = 0.01 via LEAVER",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.02204",
        ],
    )
    .await;
    let ended = chat.next(bob).await;
    assert!(ended.ends_with("Reason = EndedBySource"), "{ended}");
    assert_eq!(host.service.manager.live(), 0);
}

/// `sip:` legs are called directly and free; `gtalk:` goes through its
/// gateway template; `msn:` has none and is not reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_and_gateway_legs() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let phone = SippUas::start("answer.xml", &[you.port]);
    let direct = SippUas::start("answer.xml", &[them.port]);
    let gateway_audio = TonePeer::start(Law::Ulaw, 660.0);
    let gateway = SippUas::start("answer.xml", &[gateway_audio.port]);
    let mut host = Host::start(
        &[Provider::new("PROXICOM", &phone, PROXICOM_RATES)],
        &[("gtalk", format!("sip:{{user}}@{}", gateway.addr))],
        "max_per_user = 2",
    )
    .await;
    let mut chat = host.chat();
    let u = "user@example.com";
    // No account needed: free legs only.
    chat.say(
        u,
        &format!("CALLBACK sip:alice@{} gtalk:bob@gmail.com", direct.addr),
    );
    chat.expect(
        u,
        &[
            &format!("Calling source: sip:alice@{}, cost = 0", direct.addr),
            "Calling destination: gtalk:bob@gmail.com, cost = 0",
            "Remote answered. Now talking. Cost = 0",
        ],
    )
    .await;
    chat.say(u, "ADD msn:carol@live.com");
    assert_eq!(
        chat.next(u).await,
        "Calling additional msn:carol@live.com failed: the msn network is not reachable from this service."
    );
    // This host allows two sessions per user: a second one runs alongside,
    // a third is refused, and commands go to the newest.
    let second = format!("CALLBACK sip:bob@{} gtalk:carol@gmail.com", direct.addr);
    assert!(chat.say(u, &second).is_empty());
    chat.expect(
        u,
        &[
            &format!("Calling source: sip:bob@{}, cost = 0", direct.addr),
            "Calling destination: gtalk:carol@gmail.com, cost = 0",
            "Remote answered. Now talking. Cost = 0",
        ],
    )
    .await;
    assert_eq!(
        chat.say(u, &second),
        ["CALLBACK is not possible now: you already have a call in progress; HANGUP ends it."]
    );
    assert_eq!(host.service.manager.live(), 2);
    chat.say(u, "LIST");
    assert_eq!(
        chat.next(u).await,
        format!(
            "List of connected legs:\nSource: sip:bob@{}\nDestination: gtalk:carol@gmail.com",
            direct.addr
        )
    );
    for left in [1, 0] {
        chat.say(u, "HANGUP");
        let ended = chat.next(u).await;
        assert!(ended.ends_with("Reason = EndedByHangup"), "{ended}");
        assert_eq!(host.service.manager.live(), left);
    }
    let cdrs = host.cdrs(u).await;
    assert_eq!(cdrs.len(), 4);
    assert!(
        cdrs.iter()
            .all(|c| c.provider.is_none() && c.cost == Some(Micros::ZERO))
    );
    assert!(cdrs.iter().any(|c| c.address == "gtalk:bob@gmail.com"));

    // Paid source, free destination: only the phone leg costs.
    host.credit(u, "1").await;
    chat.say(
        u,
        &format!("CALLBACK +442071234567 sip:alice@{}", direct.addr),
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            &format!("Calling destination: sip:alice@{}, cost = 0", direct.addr),
            "Remote answered. Now talking. Cost = 0.014",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    chat.say(u, "HANGUP");
    let secs = charged_secs(&chat.next(u).await);
    let cdrs = host.cdrs(u).await;
    let paid: Vec<&Cdr> = cdrs.iter().filter(|c| c.provider.is_some()).collect();
    assert_eq!(paid.len(), 1);
    assert_eq!(
        paid[0].cost,
        Some(price("0.014").cost(paid[0].billed_secs.unwrap_or(0)))
    );
    assert!(secs >= 1);
}

/// Credit for about 70 s of the session: a warning a minute before the
/// end, then CreditExhausted ends it; exactly the credit is billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_runs_out_mid_call() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let proxicom = SippUas::start("answer.xml", &[you.port]);
    let pakline = SippUas::start("answer.xml", &[them.port]);
    let mut host = Host::start(
        &[
            Provider::new("PROXICOM", &proxicom, &[("44", "0.6")]),
            Provider::new("PAKLINE", &pakline, &[("49", "0.6")]),
        ],
        &[],
        "",
    )
    .await;
    let mut chat = host.chat();
    let u = "short@example.com";
    // 1.2 per minute together: 1.4 lasts 70 s of both legs (a little more,
    // since the destination answers after the source).
    host.credit(u, "1.4").await;
    assert!(
        chat.say(u, "CALLBACK +442071234567 +4915112345678")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.6 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.6 via PAKLINE",
            "Remote answered. Now talking. Cost = 1.2",
        ],
    )
    .await;
    let answered = Instant::now();
    let warning = chat.next_within(u, Duration::from_secs(30)).await;
    assert!(
        warning.starts_with("Warning: your credit runs out in about"),
        "{warning}"
    );
    let ended = chat.next_within(u, Duration::from_secs(90)).await;
    assert!(ended.ends_with("Reason = CreditExhausted"), "{ended}");
    let talked = answered.elapsed();
    assert!(
        (Duration::from_secs(65)..Duration::from_secs(75)).contains(&talked),
        "{talked:?}"
    );
    // Every micro of the credit, and no more, is billed.
    let balance = host.balance(u).await;
    assert!(
        balance >= Micros::ZERO && balance < Micros(20_000),
        "{balance}"
    );
    let cdrs = host.cdrs(u).await;
    assert!(
        cdrs.iter()
            .all(|c| c.end_reason.as_deref() == Some("CreditExhausted"))
    );
}

/// New router and replies plugins dropped into the watched directory while
/// a conference is up: the call goes on (audio keeps flowing), the next
/// messages are phrased by the new replies, and the next routing decision
/// is the new router's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_router_and_replies_while_calls_are_up() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let extra: Vec<TonePeer> = (0..2)
        .map(|i| TonePeer::start(Law::Ulaw, 660.0 + 110.0 * f64::from(i)))
        .collect();
    let proxicom = SippUas::start("answer.xml", &[you.port]);
    let pakline = SippUas::start("answer.xml", &[them.port]);
    let best = SippUas::start("answer.xml", &[extra[0].port]);
    let cheap = SippUas::start("answer.xml", &[extra[1].port]);
    let mut host = Host::start(
        &[
            Provider::new("PROXICOM", &proxicom, PROXICOM_RATES),
            Provider::new("PAKLINE", &pakline, PAKLINE_RATES),
            Provider::new("BEST", &best, &[("33", "0.02")]),
            Provider::new("CHEAP", &cheap, &[("33", "0.005")]),
        ],
        &[],
        "",
    )
    .await;
    let watched = host.dir.path().join("plugins");
    std::fs::create_dir(&watched).expect("plugin dir");
    host._watcher = Some(host.plugins.watch(&watched).expect("watch"));
    // BEST answers every call, CHEAP one in five: the default router ranks
    // by answer-seizure ratio, least-cost routing by price.
    common::seed_attempts(&host.service.billing, "BEST", 10, 10).await;
    common::seed_attempts(&host.service.billing, "CHEAP", 10, 2).await;
    let mut chat = host.chat();
    let u = "user@example.com";
    host.credit(u, "5").await;
    assert!(
        chat.say(u, "CALLBACK +442071234567 +4915112345678")
            .is_empty()
    );
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.02604",
        ],
    )
    .await;
    chat.say(u, "ADD +33111111111");
    chat.expect(
        u,
        &[
            "Calling additional: phone:33111111111, cost = 0.02 via BEST",
            "Party answered. Now talking. Cost = 0.02",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_hear_each_other(&[&you, &them, &extra[0]]);

    // The operator drops new versions into the watched directory.
    let before = (
        host.plugins.stats(SlotName::Router).active,
        host.plugins.stats(SlotName::Replies).active,
    );
    for (slot, guest) in [
        (SlotName::Router, "router_least_cost"),
        (SlotName::Replies, "replies_de"),
    ] {
        let from = PathBuf::from(env!("SWITCHBOARD_GUESTS_DIR")).join(format!("{guest}.wasm"));
        let staged = watched.join(format!(".{}", slot.file_name()));
        std::fs::copy(&from, &staged).expect("copy plugin");
        std::fs::rename(&staged, watched.join(slot.file_name())).expect("move plugin in");
    }
    let deadline = Instant::now() + SECS;
    while host.plugins.stats(SlotName::Router).active == before.0
        || host.plugins.stats(SlotName::Replies).active == before.1
    {
        assert!(Instant::now() < deadline, "the new plugins were not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The calls are still up and every party still hears the others.
    let marks: Vec<usize> = [&you, &them, &extra[0]]
        .iter()
        .map(|p| p.heard_len())
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (p, mark) in [&you, &them, &extra[0]].iter().zip(marks) {
        assert!(
            p.heard_len() > mark + 8000,
            "{} Hz far end stopped hearing",
            p.hz
        );
    }
    assert_hear_each_other(&[&you, &them, &extra[0]]);
    assert_eq!(host.service.manager.live(), 1);

    // The next messages are the new replies', the next route the new router's.
    chat.say(u, "LIST");
    let list = chat.next(u).await;
    assert!(
        list.contains("Anrufer") || list.contains("Verbundene"),
        "{list}"
    );
    chat.say(u, "ADD +33222222222");
    let calling = chat.next(u).await;
    assert!(
        calling.contains("CHEAP"),
        "least-cost routing picks CHEAP: {calling}"
    );
    assert!(
        !calling.starts_with("Calling"),
        "phrased by the new replies: {calling}"
    );
    let _answered = chat.next(u).await;
    chat.say(u, "HANGUP");
    let ended = chat.next(u).await;
    assert!(ended.starts_with("Anruf beendet!"), "{ended}");
}

/// The outside check's toll fraud and SIP injections, with the default
/// plugins: `sip:` legs that name a trunk, an emergency number or crafted
/// URI text are refused before anything is sent (checked in SIPp's own
/// message log), while an ordinary long `sip:` address gets a well-formed
/// INVITE. And a router that asks to continue after 486: the callee is
/// rung once, through one provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_legs_cannot_reach_trunks_and_busy_callees_are_rung_once() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let trunk = SippUas::start("answer.xml", &[you.port]);
    let direct = SippUas::start("answer.xml", &[them.port]);
    let busy1 = SippUas::start("busy.xml", &[]);
    let busy2 = SippUas::start("busy.xml", &[]);
    let mut host = Host::start(
        &[
            Provider::new("PROXICOM", &trunk, PROXICOM_RATES),
            Provider::new("BUSYTEL", &busy1, &[("33", "0.01")]),
            Provider::new("BUSYTWO", &busy2, &[("33", "0.02")]),
        ],
        &[],
        "",
    )
    .await;
    let mut chat = host.chat();
    let u = "user@example.com";
    let (t, d) = (trunk.addr, direct.addr);
    let own = host
        .service
        .sip
        .local_addrs()
        .first()
        .map(|(_, a)| *a)
        .expect("a SIP address");

    let trunk_refusal = "CALLBACK is not possible now: sip: legs may not go to this service's own trunks or addresses (127.0.0.1); to call a number, use a phone leg, which is billed.";
    for (message, reply) in [
        // Free calls to the phone network and emergency numbers through our trunk.
        (
            format!("CALLBACK sip:me@{t} sip:112@{t}"),
            trunk_refusal.to_string(),
        ),
        (
            format!("CALLBACK sip:me@{d} sip:+442071234567@{t}"),
            trunk_refusal.to_string(),
        ),
        (
            format!("CALLBACK sip:me@{d} sip:{}@{own}", "x"),
            trunk_refusal.to_string(),
        ),
        // An emergency number as a sip: user part, anywhere.
        (
            format!("CALLBACK sip:me@{d} sip:112@{d}"),
            format!(
                "Calls to sip:112@{d} are not allowed by this service (emergency and premium-rate numbers are refused)."
            ),
        ),
        (
            format!("CALLBACK sip:me@{d} sip:%2B44999@{d}"),
            format!(
                "Calls to sip:%2B44999@{d} are not allowed by this service (emergency and premium-rate numbers are refused)."
            ),
        ),
    ] {
        assert_eq!(chat.say(u, &message), [reply.as_str()], "{message}");
    }
    // Crafted URI text: headers, a forged tag, a control character, a
    // 1,000-byte user part.
    let long = "a".repeat(1000);
    for message in [
        format!("CALLBACK sip:me@{d}?X-Injected=1&Subject=hello sip:bob@{d}"),
        format!("CALLBACK sip:x;y=z>;tag=forged@{d} sip:bob@{d}"),
        format!("CALLBACK sip:me\u{2028}@{d} sip:bob@{d}"),
        format!("CALLBACK sip:{long}@{d} sip:bob@{d}"),
        format!("CALLBACK sip:me@{d};maddr=10.0.0.1 sip:bob@{d}"),
    ] {
        let replies = chat.say(u, &message);
        assert_eq!(replies.len(), 1, "{message}: {replies:?}");
        assert!(
            replies[0].starts_with("CALLBACK is not possible now: ")
                || replies[0].starts_with("Error: "),
            "{message}: {replies:?}"
        );
    }
    chat.quiet(u, Duration::from_millis(300)).await;
    assert_eq!(host.service.manager.live(), 0);
    assert!(
        trunk.invites().is_empty(),
        "the trunk got {:?}",
        trunk.invites()
    );
    assert!(direct.invites().is_empty(), "{:?}", direct.invites());

    // An ordinary sip: address with a long (allowed) user part: one
    // well-formed INVITE, written from the parsed URI.
    let user = format!("alice.{}", "b".repeat(100));
    chat.say(u, &format!("CALLBACK sip:{user}@{d} sip:bob@{d}"));
    chat.expect(
        u,
        &[
            &format!("Calling source: sip:{user}@{d}, cost = 0"),
            &format!("Calling destination: sip:bob@{d}, cost = 0"),
            "Remote answered. Now talking. Cost = 0",
        ],
    )
    .await;
    chat.say(u, "ADD sip:911@198.51.100.7");
    assert_eq!(
        chat.next(u).await,
        "Calls to sip:911@198.51.100.7 are not allowed by this service (emergency and premium-rate numbers are refused)."
    );
    chat.say(u, "HANGUP");
    assert!(chat.next(u).await.ends_with("Reason = EndedByHangup"));
    assert_eq!(
        direct.invites(),
        [
            format!("INVITE sip:{user}@{d} SIP/2.0"),
            format!("INVITE sip:bob@{d} SIP/2.0")
        ]
    );
    assert!(direct.errors().is_empty(), "{}", direct.errors());

    // A router that asks to go on after 486: the host's floor stops it.
    host.plugins
        .load(SlotName::Router, &common::guest("rogue_guest"), "rogue")
        .expect("the rogue router loads");
    let victim = "busy-again@example.com";
    host.credit(victim, "1").await;
    chat.say(victim, "CALLBACK +33100000001 +442071234567");
    chat.expect(
        victim,
        &[
            "Calling source: phone:33100000001, cost = 0.01 via BUSYTEL",
            "Calling source phone:33100000001 failed: busy.",
            "Call aborted!\nThank you!\nCharged time: 0 secs. Reason = SourceFailed",
        ],
    )
    .await;
    assert_eq!(busy1.invites().len(), 1);
    assert!(
        busy2.invites().is_empty(),
        "rung again: {:?}",
        busy2.invites()
    );
}

/// The messages SIPp received, from its `-trace_msg` log.
fn received(log: &str) -> Vec<String> {
    log.split("----------------------------------------------- ")
        .filter(|entry| entry.contains("message received"))
        .filter_map(|entry| entry.split_once("\n\n").map(|(_, m)| m.trim().to_string()))
        .filter(|m| !m.is_empty())
        .collect()
}

/// Behind NAT: with `[sip] external_address` and `[media] external_address`
/// set, every Via, Contact and From and every SDP `c=` line the far end
/// receives carries them, and none carries the bind address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nat_the_far_end_sees_only_the_external_addresses() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let direct = SippUas::start("answer.xml", &[you.port, them.port]);
    let mut host = Host::start_with(
        &[],
        &[],
        "external_address = \"127.0.0.2\"",
        "[media]\naddress = \"127.0.0.1\"\nexternal_address = \"127.0.0.3\"\n",
    )
    .await;
    let bound = host
        .service
        .sip
        .local_addrs()
        .first()
        .map(|(_, a)| *a)
        .expect("a SIP address");
    let mut chat = host.chat();
    let u = "nat@example.com";
    let d = direct.addr;
    chat.say(u, &format!("CALLBACK sip:me@{d} sip:bob@{d}"));
    chat.expect(
        u,
        &[
            &format!("Calling source: sip:me@{d}, cost = 0"),
            &format!("Calling destination: sip:bob@{d}, cost = 0"),
            "Remote answered. Now talking. Cost = 0",
        ],
    )
    .await;
    // Our own external address is no sip: leg either.
    let own = format!("sip:x@127.0.0.2:{}", bound.port());
    let mut refused = chat.say(u, &format!("ADD {own}"));
    if refused.is_empty() {
        refused.push(chat.next(u).await);
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("own trunks or addresses"),
        "{refused:?}"
    );
    chat.say(u, "HANGUP");
    assert!(chat.next(u).await.ends_with("Reason = EndedByHangup"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let messages = received(&direct.messages());
    let requests: Vec<&String> = messages.iter().filter(|m| !m.starts_with("SIP/")).collect();
    let methods: Vec<&str> = requests
        .iter()
        .filter_map(|m| m.split(' ').next())
        .collect();
    assert_eq!(
        methods,
        ["INVITE", "ACK", "INVITE", "ACK", "BYE", "BYE"],
        "{messages:#?}"
    );
    let external = format!("127.0.0.2:{}", bound.port());
    let bind = bound.to_string();
    for m in &requests {
        for line in m.lines() {
            let name = line.split(':').next().unwrap_or_default().trim();
            if ["Via", "Contact", "From", "v", "m", "f"].contains(&name) {
                assert!(
                    !line.contains(&bind),
                    "the bind address on the wire: {line}"
                );
                if name != "From" && name != "f" {
                    assert!(line.contains(&external), "{line}\n{m}");
                }
            }
            if line.starts_with("c=") {
                assert_eq!(line.trim(), "c=IN IP4 127.0.0.3", "{m}");
            }
        }
        if m.starts_with("INVITE") {
            assert!(m.contains("\nc=IN IP4 127.0.0.3"), "{m}");
            let from = m
                .lines()
                .find(|l| l.starts_with("From:"))
                .unwrap_or_default();
            assert!(from.contains(&external), "{from}");
        }
    }
    assert!(direct.errors().is_empty(), "{}", direct.errors());
}

/// A trunk at its channel limit (`max_calls`) is not offered to the router,
/// which takes the next; when no trunk is left for a destination the user is
/// told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_at_its_channel_limit_is_skipped() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let cheap = SippUas::start("answer.xml", &[you.port, you.port]);
    let dear = SippUas::start("answer.xml", &[them.port]);
    let mut host = Host::start(
        &[
            Provider {
                profile: "max_calls = 1",
                ..Provider::new("CHEAP", &cheap, &[("44", "0.01"), ("33", "0.01")])
            },
            Provider::new("DEAR", &dear, &[("44", "0.02")]),
        ],
        &[],
        "",
    )
    .await;
    let u = "busy-trunks@example.com";
    host.credit(u, "5").await;
    let mut chat = host.chat();
    chat.say(u, "CALLBACK +442071234567 +442079876543");
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.01 via CHEAP",
            "Calling destination: phone:442079876543, cost = 0.02 via DEAR",
            "Remote answered. Now talking. Cost = 0.03",
        ],
    )
    .await;
    assert_eq!(host.service.sip.calls_through("CHEAP"), 1);
    chat.say(u, "HANGUP");
    assert!(chat.next(u).await.ends_with("Reason = EndedByHangup"));
    let deadline = Instant::now() + SECS;
    while host.service.sip.calls_through("CHEAP") > 0 {
        assert!(Instant::now() < deadline, "the channel was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // +33 only CHEAP serves: with the source on it, none is left.
    chat.say(u, "CALLBACK +442071234567 +33123456789");
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.01 via CHEAP",
            "Calling destination phone:33123456789 failed: 503 every provider for this destination is at its channel limit; try again later.",
        ],
    )
    .await;
    let ended = chat.next(u).await;
    assert!(ended.starts_with("Call aborted!"), "{ended}");
    assert_eq!(cheap.invites().len(), 2, "{:?}", cheap.invites());
    assert_eq!(dear.invites().len(), 1, "{:?}", dear.invites());
}

/// A whole callback through a registered trunk: Kamailio as the carrier
/// (digest authentication for REGISTER and INVITE, 403 for an account that
/// is not registered) in front of SIPp; both legs go through it once the
/// account is registered, and audio flows both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_through_a_registered_trunk() {
    let you = TonePeer::start(Law::Ulaw, 440.0);
    let them = TonePeer::start(Law::Ulaw, 560.0);
    let phone_network = SippUas::start("trunk_answer.xml", &[you.port, them.port]);
    let carrier = kamailio_peer::Kamailio::start(phone_network.addr);
    // The trunk is known by its DNS name only: dnsmasq on loopback serves
    // its SRV record (`[sip] dns`), which leads to Kamailio.
    let dns = dnsmasq_peer::Dnsmasq::start(&[
        format!(
            "--srv-host=_sip._udp.trunk.test,sbc.trunk.test,{},10,10",
            carrier.addr.port()
        ),
        "--host-record=sbc.trunk.test,127.0.0.1".into(),
    ]);
    let nowhere = SippUas::start("fail503.xml", &[]);
    let mut host = Host::start_with(
        &[
            Provider {
                credentials: Some((kamailio_peer::ACCOUNT, kamailio_peer::PASSWORD)),
                profile: "register = true\nexpires = 60",
                via: Some("trunk.test".into()),
                ..Provider::new("CARRIER", &phone_network, &[("44", "0.01")])
            },
            Provider {
                via: Some("gone.test".into()),
                ..Provider::new("NOWHERE", &nowhere, &[("33", "0.01")])
            },
        ],
        &[],
        &format!("dns = [\"{}\"]", dns.addr),
        "",
    )
    .await;
    let deadline = Instant::now() + SECS;
    while host
        .service
        .sip
        .registrations()
        .get("CARRIER")
        .map(|v| v.state)
        != Some("registered")
    {
        assert!(
            Instant::now() < deadline,
            "not registered: {:?}\n{}\n{}",
            host.service.sip.registrations(),
            carrier.log(),
            dns.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let u = "trunk-user@example.com";
    host.credit(u, "5").await;
    let mut chat = host.chat();
    // A trunk whose name does not resolve: the user is told why.
    chat.say(u, "CALLBACK +33100000001 +442079876543");
    chat.expect(
        u,
        &[
            "Calling source: phone:33100000001, cost = 0.01 via NOWHERE",
            "Calling source phone:33100000001 failed: 503 gone.test: no such domain (NXDOMAIN).",
        ],
    )
    .await;
    let ended = chat.next(u).await;
    assert!(ended.ends_with("Reason = SourceFailed"), "{ended}");
    chat.say(u, "CALLBACK +442071234567 +442079876543");
    chat.expect(
        u,
        &[
            "Calling source: phone:442071234567, cost = 0.01 via CARRIER",
            "Calling destination: phone:442079876543, cost = 0.01 via CARRIER",
            "Remote answered. Now talking. Cost = 0.02",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_hear_each_other(&[&you, &them]);
    chat.say(u, "HANGUP");
    let ended = chat.next(u).await;
    assert!(ended.ends_with("Reason = EndedByHangup"), "{ended}");
    let secs = charged_secs(&ended);
    assert_billed(&host, u, Micros(5_000_000), secs).await;
    assert_eq!(
        phone_network.invites(),
        [
            "INVITE sip:+442071234567@trunk.test SIP/2.0",
            "INVITE sip:+442079876543@trunk.test SIP/2.0",
        ],
        "both legs crossed the carrier, addressed to its name"
    );
    assert!(
        dns.log().contains("query[SRV] _sip._udp.trunk.test"),
        "{}",
        dns.log()
    );
    assert!(nowhere.invites().is_empty());
    let bindings = carrier.kamcmd(&["ul.dump"]);
    assert!(bindings.contains(kamailio_peer::ACCOUNT), "{bindings}");
    assert!(
        phone_network.errors().is_empty(),
        "{}",
        phone_network.errors()
    );
}
