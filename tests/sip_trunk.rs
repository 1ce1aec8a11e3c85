//! A real trunk: Kamailio (Debian package `kamailio`) on loopback as the
//! carrier, a registrar that demands digest authentication for REGISTER and
//! INVITE, refuses calls from an account that is not registered (403), and
//! forwards the rest to a SIPp UAS standing for the phone network. Both
//! sides are checked: our registration states and call events, and
//! Kamailio's own view (`kamcmd ul.dump`, its registrar statistics) and
//! SIPp's message log.

#[path = "sipp_peer/mod.rs"]
mod sipp_peer;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sipp_peer::SippUas;
use switchboard::sip::{
    AudioSdp, CallEvent, CallRequest, Config, PlacedCall, Provider, SipService, TargetUri, UriHost,
};

const ACCOUNT: &str = "acct";
const PASSWORD: &str = "s3cret";

/// A running Kamailio with its control socket.
struct Kamailio {
    child: Child,
    addr: SocketAddr,
    ctl: String,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    /// Starts Kamailio as the carrier: registrar for `ACCOUNT`, proxy to `phone_network`.
    fn start(phone_network: SocketAddr) -> Kamailio {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        let ctl = format!("{}/kamailio_ctl", dir.path().display());
        let cfg = config(port, &ctl, phone_network);
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, cfg).expect("write kamailio.cfg");
        let check = Command::new("kamailio")
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run kamailio ({e}); scripts/test.sh installs it (apt-get install kamailio)")
            });
        assert!(
            check.status.success(),
            "kamailio -c refuses the test configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("kamailio")
            .args(["-DD", "-E", "-f"])
            .arg(&path)
            .args(["-Y", &dir.path().display().to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("kamailio.log")).expect("log file"),
            ))
            .spawn()
            .expect("kamailio starts");
        let kamailio = Kamailio {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ctl,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&kamailio.ctl).exists() {
            assert!(
                Instant::now() < deadline,
                "kamailio did not start: {}",
                kamailio.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        kamailio
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// `kamcmd` against this Kamailio.
    fn kamcmd(&self, args: &[&str]) -> String {
        let out = Command::new("kamcmd")
            .args(["-s", &format!("unix:{}", self.ctl)])
            .args(args)
            .output()
            .expect("kamcmd runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The registrar's count of accepted REGISTERs.
    fn accepted_registrations(&self) -> u64 {
        let text = self.kamcmd(&["stats.get_statistics", "all"]);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("registrar:accepted_regs = "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: u16, ctl: &str, phone_network: SocketAddr) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "ctl.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 2)
modparam("ctl", "binrpc", "unix:{ctl}")

request_route {{
    xlog("L_INFO", "REQ $rm $ru cseq=$cs from $si:$sp au=$au\n");
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("$td", "{PASSWORD}", "0")) {{ www_challenge("$td", "0"); exit; }}
        if ($au != "{ACCOUNT}") {{ sl_send_reply("403", "Forbidden"); exit; }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (is_method("INVITE")) {{
        if (!pv_proxy_authenticate("$fd", "{PASSWORD}", "0")) {{ proxy_challenge("$fd", "0"); exit; }}
        if (!registered("location", "sip:$au@127.0.0.1")) {{
            sl_send_reply("403", "Forbidden (not registered)");
            exit;
        }}
        consume_credentials();
        record_route();
        $du = "sip:{phone_network}";
        if (!t_relay()) {{ xlog("L_ERR", "relay failed\n"); sl_reply_error(); }}
        exit;
    }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    sl_send_reply("405", "Method Not Allowed");
}}

onreply_route {{
    xlog("L_INFO", "REPLY $rs $rr for $cs $rm from $si:$sp\n");
}}
"#
    )
}

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
    }
}

async fn until_final(
    call: &mut PlacedCall,
    answered_is_final: bool,
    context: impl Fn() -> String,
) -> Vec<CallEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, call.events.recv()).await {
            Ok(Some(e)) => {
                let done = matches!(e, CallEvent::Failed { .. } | CallEvent::Ended { .. })
                    || (answered_is_final && matches!(e, CallEvent::Answered { .. }));
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(None) => return seen,
            Err(_) => panic!(
                "no final event within 20 s; so far: {seen:?}\n{}",
                context()
            ),
        }
    }
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
