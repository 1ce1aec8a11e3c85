//! A real trunk: Kamailio (Debian package `kamailio`) on loopback as the
//! carrier, a registrar that demands digest authentication for REGISTER and
//! INVITE, refuses calls from an account that is not registered (403), and
//! forwards the rest to a SIPp UAS standing for the phone network. Both
//! sides are checked: our registration states and call events, and
//! Kamailio's own view (`kamcmd ul.dump`, its registrar statistics) and
//! SIPp's message log.

mod call_events;
mod kamailio_peer;
mod sipp_peer;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kamailio_peer::{ACCOUNT, Kamailio, PASSWORD};
use sipp_peer::SippUas;
use switchboard::sip::{
    AudioSdp, CallEvent, CallRequest, Config, PlacedCall, Provider, SipService, TargetUri, UriHost,
};

fn trunk(name: &str, at: SocketAddr, account: &str, register: bool) -> Provider {
    Provider {
        keepalive: false,
        username: Some(account.into()),
        password: Some(PASSWORD.into()),
        register,
        expires: 4,
        ..Provider::new(name, at)
    }
}

fn call_through(trunk: &SocketAddr, provider: &str) -> CallRequest {
    CallRequest {
        target: TargetUri::phone("442071234567", UriHost::Ip(trunk.ip()), Some(trunk.port()))
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
    call_events::until_final(call, answered_is_final, Duration::from_secs(20), context).await
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_calls_through_kamailio_reregisters_and_unregisters() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let phone_network = SippUas::start("trunk_uas.xml", &[]);
    let kamailio = Kamailio::start(phone_network.addr);
    let at = kamailio.addr;
    let sip = SipService::start(Config {
        udp: vec!["127.0.0.1:0".parse().expect("addr")],
        providers: vec![
            trunk("CARRIER", at, ACCOUNT, true),
            // Authenticates, but that account never registers.
            trunk("UNREGISTERED", at, "other", false),
            // Authenticates as an account the registrar does not take.
            trunk("INTRUDER", at, "intruder", true),
        ],
        ..Config::default()
    })
    .await
    .expect("the SIP stack starts");

    let state = |name: &str| sip.registrations().get(name).map(|v| v.state);
    wait_for("CARRIER registered", Duration::from_secs(10), || {
        state("CARRIER") == Some("registered")
    })
    .await;
    wait_for("INTRUDER refused", Duration::from_secs(10), || {
        state("INTRUDER") == Some("failed")
    })
    .await;
    let intruder = sip.registrations()["INTRUDER"].clone();
    assert_eq!(
        intruder.reason.as_deref(),
        Some("403 Forbidden"),
        "{intruder:?}"
    );
    assert!(intruder.retry_ms.is_some());
    let carrier = sip.registrations()["CARRIER"].clone();
    assert!(carrier.until_ms.is_some(), "{carrier:?}");
    assert_eq!(sip.provider_up("CARRIER").await.expect("running"), None);
    assert_eq!(
        sip.provider_up("INTRUDER").await.expect("running"),
        Some(false)
    );

    // Kamailio's side: the binding is there, for our Contact.
    let bindings = kamailio.kamcmd(&["ul.dump"]);
    let ours = sip.local_addrs()[0].1;
    assert!(
        bindings.contains(ACCOUNT) && bindings.contains(&format!("sip:{ACCOUNT}@{ours}")),
        "{bindings}\n{}",
        kamailio.log()
    );

    // An account that is not registered is refused by the carrier.
    let mut refused = sip
        .place_call(call_through(&at, "UNREGISTERED"))
        .await
        .expect("placed");
    let events = until_final(&mut refused, false, || kamailio.log()).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Failed { status: 403, .. })),
        "{events:?}"
    );

    // The registered account's call goes through, challenge answered, to the phone network.
    let mut call = sip
        .place_call(call_through(&at, "CARRIER"))
        .await
        .expect("placed");
    let events = until_final(&mut call, true, || kamailio.log()).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Answered { .. })),
        "{events:?}\n{}",
        kamailio.log()
    );
    // Talk a moment: SIPp's scenario takes the ACK before the BYE.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sip.hangup(call.id);
    let end = until_final(&mut call, false, || kamailio.log()).await;
    assert!(
        matches!(end.last(), Some(CallEvent::Ended { .. })),
        "{end:?}"
    );
    assert_eq!(
        phone_network.invites(),
        [format!("INVITE sip:+442071234567@{at} SIP/2.0")],
        "only the registered account's call reached the phone network"
    );

    // Re-registration: a 4 s binding is refreshed before it lapses.
    let before = kamailio.accepted_registrations();
    assert!(
        before >= 1,
        "{}",
        kamailio.kamcmd(&["stats.get_statistics", "all"])
    );
    wait_for("a refresh accepted", Duration::from_secs(8), || {
        kamailio.accepted_registrations() > before
    })
    .await;
    assert_eq!(state("CARRIER"), Some("registered"));

    // Shutdown removes the binding.
    sip.shutdown().await;
    let bindings = kamailio.kamcmd(&["ul.dump"]);
    assert!(
        !bindings.contains(&format!("sip:{ACCOUNT}@{ours}")),
        "still bound after shutdown: {bindings}"
    );
    assert!(
        phone_network.errors().is_empty(),
        "{}",
        phone_network.errors()
    );
}
