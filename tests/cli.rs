//! The `switchboard` binary as a user and a plugin author run it.

mod common;
mod dnsmasq_peer;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::guest_path;

fn switchboard(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("switchboard starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("switchboard ends")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `switchboard demo` as a person uses it: lines typed one after another,
/// answers read as they come.
struct Console {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
    from: usize,
}

impl Console {
    fn start(args: &[&str]) -> Console {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("switchboard starts");
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().expect("stdout");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Console {
            child,
            stdin,
            seen,
            from: 0,
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("type");
        stdin.flush().expect("flush");
    }

    /// Waits until `text` appears after what was waited for last; returns
    /// the output up to and including it.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            {
                let seen = self.seen.lock().expect("lock");
                if let Some(i) = seen[self.from..].find(text) {
                    let upto = self.from + i + text.len();
                    let chunk = seen[self.from..upto].to_string();
                    self.from = upto;
                    return chunk;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{text:?} did not appear in:\n{}",
                    &seen[self.from..]
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait().expect("demo ends");
        assert!(status.success(), "{status}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.seen.lock().expect("lock")[self.from..].to_string()
    }
}

/// The README's run command: the seed's two transcripts on the console,
/// with the simulated providers, rates and the demo account.
#[test]
fn demo_reproduces_the_seed_transcripts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}/demo.db", dir.path().display());
    let mut demo = Console::start(&[
        "demo",
        "--database",
        &database,
        "--ring-ms",
        "300",
        "--web",
        "127.0.0.1:0",
    ]);
    let banner = demo.wait_for("Ctrl-D ends the demo.");
    let web: std::net::SocketAddr = banner
        .split("Web pages on http://")
        .nth(1)
        .and_then(|t| t.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no web address in {banner}"));
    let token = banner
        .split("with token ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no admin token in {banner}"))
        .to_string();
    demo.type_line("HELP");
    demo.wait_for("Commands:\nCALLBACK SourceLeg DestinationLeg");
    demo.type_line("DIAL +4420");
    demo.wait_for("Error: unknown command 'DIAL'.");
    demo.type_line("CALLBACK +442071234567");
    demo.wait_for(
        "Error: CALLBACK needs a destination leg after the source.\nSyntax: CALLBACK [phone:|sip:",
    );

    // The first transcript: callback, then hangup.
    demo.type_line("CALLBACK +442071234567 +4915112345678");
    demo.wait_for("Calling source: phone:442071234567, cost = 0.014 via PROXICOM\n");
    demo.wait_for("Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE\n");
    demo.wait_for("Remote answered. Now talking. Cost = 0.02604\n");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    demo.type_line("hangup");
    let ended = demo.wait_for("Reason = EndedByHangup");
    assert!(
        ended.contains("Call aborted!\nThank you!\nCharged time: "),
        "{ended}"
    );

    // The second: LIST, ADD, LIST, HANGUP.
    demo.type_line("CALLBACK +442071234567 +4915112345678");
    demo.wait_for("Remote answered. Now talking. Cost = 0.02604\n");
    demo.type_line("LIST");
    demo.wait_for("List of connected legs:\nSource: phone:442071234567 Via: PROXICOM\nDestination: phone:4915112345678 Via: PAKLINE\n");
    // The demo's web pages: the live call through the admin API, and a
    // login code "sent" to the console user.
    let (status, sessions) = common::http_text(
        web,
        &format!(
            "GET /admin/api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{sessions}");
    assert!(
        sessions.contains("\"owner\":\"demo@localhost\"")
            && sessions.contains(
                "\"address\":\"phone:4915112345678\",\"provider\":\"PAKLINE\",\"state\":\"talking\""
            ),
        "{sessions}"
    );
    let form = "address=demo%40localhost";
    let (status, page) = common::http_text(
        web,
        &format!(
            "POST /account/code HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 200, "{page}");
    demo.wait_for("[to demo@localhost] Your Switchboard login code is ");
    demo.type_line("ADD +442071234568");
    demo.wait_for("Calling additional: phone:442071234568, cost = 0.014 via PROXICOM\n");
    demo.wait_for("Party answered. Now talking. Cost = 0.014\n");
    demo.type_line("LIST");
    demo.wait_for("List of connected legs:\nSource: phone:442071234567 Via: PROXICOM\nDestination: phone:4915112345678 Via: PAKLINE\nAdditional: phone:442071234568 Via: PROXICOM\n");
    demo.type_line("HANGUP");
    demo.wait_for("Reason = EndedByHangup");
    demo.type_line("BALANCE");
    demo.wait_for("Your balance is 4.9");
    // A busy number, and a call still up when the console closes.
    demo.type_line("CALLBACK +442071234567 +4915112345486");
    demo.wait_for("Calling destination phone:4915112345486 failed: busy.");
    demo.wait_for("Reason = DestinationFailed");
    demo.type_line("CALLBACK +442071234567 +4915112345678");
    demo.wait_for("Remote answered.");
    let rest = demo.finish();
    assert!(rest.contains("Reason = Shutdown"), "{rest}");
}

#[test]
fn demo_uses_plugins_from_a_watched_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(guest_path("replies_de"), dir.path().join("replies.wasm")).expect("copy");
    std::fs::copy(guest_path("parser_aliases"), dir.path().join("parser.wasm")).expect("copy");
    let plugins = dir.path().to_str().expect("utf-8 path");
    let database = format!("sqlite://{}/demo.db", dir.path().display());
    let output = switchboard(
        &["demo", "--plugins", plugins, "--database", &database],
        "?\nHU\n",
    );
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("Befehle: CALLBACK"), "{text}");
    assert!(
        text.contains("HANGUP ist jetzt nicht möglich: no call in progress."),
        "{text}"
    );
}

/// `switchboard run` refuses a bad file at start, naming the key and its line.
#[test]
fn run_refuses_a_bad_configuration_with_key_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    let cases = [
        (
            "[xmpp]\njid = \"bot@example.org\"\npassword = \"x\"\n\n[sessions]\nring_timeout_secs = 45\nmax_per_user = 0\n",
            "line 7: sessions.max_per_user = 0 is not between 1 and 100",
        ),
        (
            "[sip]\nudp = [\"127.0.0.1:0\"]\n[sip.timers]\nt1_ms = 5000\nt2_ms = 4000\n",
            "line 3: sip.timers",
        ),
        ("[billing]\ndatabse = \"sqlite://x.db\"\n", "line 2"),
        (
            "[xmpp]\njid = \"bot@example.org\"\npassword = \"x\"\n[sessions.gateways]\nmsn = \"sip:gw.example\"\n",
            "line 5: sessions.gateways.msn",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).expect("write");
        let output = switchboard(&["run", "--config", path.to_str().expect("path")], "");
        assert!(!output.status.success(), "{text}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn plugin_check_passes_good_plugins_and_fails_bad_ones() {
    for (slot, name) in [
        ("parser", "parser_aliases"),
        ("router", "router_least_cost"),
        ("replies", "replies_de"),
    ] {
        let path = guest_path(name);
        let output = switchboard(
            &["plugin", "check", slot, path.to_str().expect("utf-8")],
            "",
        );
        assert!(output.status.success(), "{name}: {output:?}");
        assert!(stdout(&output).starts_with("ok: "), "{name}");
    }
    let snooper = guest_path("snooper_guest");
    let output = switchboard(
        &[
            "plugin",
            "check",
            "parser",
            snooper.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("imports wasi:"),
        "{}",
        stdout(&output)
    );
    let replies = guest_path("replies_de");
    let output = switchboard(
        &[
            "plugin",
            "check",
            "router",
            replies.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("does not implement the router world"));
    let output = switchboard(
        &["plugin", "check", "mixer", replies.to_str().expect("utf-8")],
        "",
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown plugin slot 'mixer'"));
    let output = switchboard(
        &["plugin", "check", "parser", "/nonexistent/parser.wasm"],
        "",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/parser.wasm")
    );
}

#[test]
fn plugin_run_tries_each_slot_offline() {
    let aliases = guest_path("parser_aliases");
    let output = switchboard(
        &[
            "plugin",
            "run",
            "parser",
            aliases.to_str().expect("utf-8"),
            "cb +442071234567 sip:bob@example.org via MKS",
        ],
        "",
    );
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let callback = &json["parsed"]["Ok"]["Callback"];
    assert_eq!(callback["source"]["address"], "442071234567");
    assert_eq!(callback["destination"]["scheme"], "Sip");
    assert_eq!(callback["source_provider"], "MKS");

    let router = guest_path("router_default");
    let request = serde_json::json!({
        "route": {
            "leg": {"scheme": "Phone", "address": "4915112345678"},
            "role": "Destination",
            "account": {"id": "ruslan@example.com", "balance": 5000000},
            "requested_provider": null,
            "candidates": [
                {"provider": "PROXICOM", "price_per_minute": 14000, "connect_fee": 0, "increment_secs": 1, "up": true,
                 "stats": {"attempts": 50, "answered": 30, "asr_bp": 6000, "acd_secs": 90, "pdd_ms": 1200}},
                {"provider": "PAKLINE", "price_per_minute": 12040, "connect_fee": 0, "increment_secs": 1, "up": true,
                 "stats": {"attempts": 50, "answered": 40, "asr_bp": 8000, "acd_secs": 60, "pdd_ms": 900}}
            ]
        }
    });
    let output = switchboard(
        &[
            "plugin",
            "run",
            "router",
            router.to_str().expect("utf-8"),
            "-",
        ],
        &request.to_string(),
    );
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["routed"][0]["provider"], "PAKLINE");
    assert_eq!(json["routed"][1]["provider"], "PROXICOM");

    let replies = guest_path("replies_default");
    let output = switchboard(
        &[
            "plugin",
            "run",
            "replies",
            replies.to_str().expect("utf-8"),
            r#"{"CreditWarning": 60}"#,
        ],
        "",
    );
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        json["rendered"],
        "Warning: your credit runs out in about 60 secs; the call will then end."
    );

    let hostile = guest_path("hostile_guest");
    let output = switchboard(
        &[
            "plugin",
            "run",
            "parser",
            hostile.to_str().expect("utf-8"),
            "loop",
        ],
        "",
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("used up its fuel budget"));
    let output = switchboard(
        &[
            "plugin",
            "run",
            "replies",
            replies.to_str().expect("utf-8"),
            "{bad json",
        ],
        "",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("replies input must be an event as JSON")
    );
}

/// `switchboard sip call` against SIPp's built-in UAS on loopback.
#[test]
fn sip_call_against_sipp() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("probe")
        .port();
    let mut sipp = Command::new("sipp")
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-nostdin",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp starts (scripts/test.sh installs sip-tester)");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let target = format!("sip:+442071234567@127.0.0.1:{port}");
    let output = switchboard(&["sip", "call", &target, "--talk", "0"], "");
    let _ = sipp.kill();
    let _ = sipp.wait();
    let text = stdout(&output);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.contains("Ringing") && text.contains("Answered") && text.contains("Ended { by: Local"),
        "{text}"
    );
    let refused = switchboard(&["sip", "call", "tel:+44"], "");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot call \"tel:+44\""),
        "{refused:?}"
    );
}

/// `switchboard billing …` on a SQLite file: rate sheets (refused whole
/// when a row is bad), rating, credit, limits and the CDR list.
#[test]
fn billing_tools_import_rate_credit_and_list() {
    use switchboard::billing::{self, Billing, LegEnd, LegRole, LegStart, Micros};

    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("billing.db").display());
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "[billing]\ndatabase = \"{db}\"\n\
             [[sip.providers]]\nname = \"PROXICOM\"\naddress = \"127.0.0.1:5080\"\n\
             [[sip.providers]]\nname = \"PAKLINE\"\naddress = \"127.0.0.1:5081\"\n"
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let billing = |args: &[&str], stdin: &str| {
        let mut all = vec!["billing", "--config", config];
        all.extend_from_slice(args);
        switchboard(&all, stdin)
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let bad = "provider,prefix,price_per_minute\nPROXICOM,4420,0.014\nNOPE,1,0.1\nPAKLINE,49,1e3\n";
    let out = billing(&["import-rates", "-"], bad);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rate sheet refused, nothing imported"),
        "{out:?}"
    );
    assert!(
        stderr(&out).contains("line 3: unknown provider \"NOPE\""),
        "{out:?}"
    );
    assert!(stderr(&out).contains("line 4: price_per_minute"), "{out:?}");
    let out = billing(&["rate", "+442071234567"], "");
    assert!(
        !out.status.success(),
        "the good row was not imported either"
    );
    assert!(stderr(&out).contains("no provider has a rate for 442071234567"));

    let good = "provider,prefix,price_per_minute,increment_secs,connect_fee\n\
                PROXICOM,4420,0.014,,\nPROXICOM,49,0.03,,\nPAKLINE,49,0.015,,\nPAKLINE,4915,0.01204,,\n";
    let out = billing(&["import-rates", "-"], good);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "imported 4 rates\n");
    let out = billing(&["rate", "+4915112345678"], "");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("PAKLINE")
            && lines[1].contains("4915")
            && lines[1].contains("0.01204"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("PROXICOM") && lines[2].contains("0.03"),
        "cheapest first: {text}"
    );
    let out = billing(&["rate", "112"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("emergency number"), "{out:?}");

    let out = billing(&["credit", "ruslan@example.com", "2.50"], "");
    assert_eq!(stdout(&out), "ruslan@example.com: balance 2.5 USD\n");
    let out = billing(&["credit", "ruslan@example.com", "0.1234567"], "");
    assert!(
        !out.status.success() && stderr(&out).contains("more than 6 decimals"),
        "{out:?}"
    );
    let out = billing(
        &[
            "limits",
            "ruslan@example.com",
            "--max-paid-legs",
            "2",
            "--daily-cap",
            "1",
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&billing(&["account", "ruslan@example.com"], ""));
    assert!(
        text.contains("balance          2.5 USD") && text.contains("max paid legs    2"),
        "{text}"
    );
    assert!(text.contains("daily cap        1\n"), "{text}");

    // A call billed through the library, listed by the tool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let settings = billing::Config {
            database: db.clone(),
            ..Default::default()
        };
        let b = Billing::open(&settings, None).await.expect("open");
        let rate = b.offer("PROXICOM", "442071234567").expect("rate").rate;
        let mut credit = b.session_credit();
        let now = std::time::Instant::now();
        let start = 1_764_057_600_000; // 2025-11-25T08:00:00Z
        let leg = LegStart {
            leg_id: "L1".into(),
            session_id: "S1".into(),
            account: "ruslan@example.com".into(),
            role: LegRole::Source,
            address: "phone:442071234567".into(),
            provider: Some("PROXICOM".into()),
            rate,
            started_ms: start,
        };
        b.authorise(&mut credit, &leg, now)
            .await
            .expect("authorised");
        b.answered(&mut credit, "L1", None, now, start + 2_000)
            .await
            .expect("answered");
        let end = LegEnd {
            leg_id: "L1".into(),
            ended_ms: start + 62_000,
            sip_status: Some(200),
            reason: "EndedByHangup".into(),
        };
        let s = b
            .end_leg(&mut credit, &end, now)
            .await
            .expect("settled")
            .expect("new");
        assert_eq!((s.billed_secs, s.cost), (60, Micros(14_000)));
        b.end_session("S1").await.expect("released");
        b.store().close().await;
    });
    let text = stdout(&billing(&["cdrs", "ruslan@example.com"], ""));
    let row = text.lines().nth(1).expect("one CDR");
    for field in [
        "2025-11-25T08:00:00",
        "source",
        "phone:442071234567",
        "PROXICOM",
        "60",
        "0.014",
        "200",
        "EndedByHangup",
    ] {
        assert!(row.contains(field), "{field} missing: {text}");
    }
    let text = stdout(&billing(&["account", "ruslan@example.com"], ""));
    assert!(
        text.contains("balance          2.486 USD") && text.contains("spent today      0"),
        "{text}"
    );
}

/// `switchboard config check FILE`: the whole file validated, every name
/// resolved and what each provider and gateway resolves to printed; exit 0
/// or 1. A bad file is refused with its line, its cause said once.
#[test]
fn config_check_validates_resolves_and_prints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("switchboard.toml");
    let file = path.to_str().expect("path");
    // Names resolve through `[sip] dns`: dnsmasq on loopback.
    let dns = dnsmasq_peer::Dnsmasq::start(&[
        "--host-record=edge.test,127.0.0.1".into(),
        "--host-record=gw.test,127.0.0.1".into(),
        "--srv-host=_sip._udp.carrier.test,sbc.carrier.test,5070,10,10".into(),
        "--host-record=sbc.carrier.test,127.0.0.2".into(),
    ]);
    std::fs::write(
        &path,
        format!(
            "[sip]\nudp = [\"127.0.0.1:5060\"]\nexternal_address = \"edge.test:5070\"\n\
             dns = [\"{}\"]\n\n\
             [[sip.providers]]\nname = \"PROXICOM\"\naddress = \"127.0.0.1:5080\"\n\n\
             [[sip.providers]]\nname = \"CARRIER\"\naddress = \"carrier.test\"\n\n\
             [[sip.providers]]\nname = \"GONE\"\naddress = \"gone.test\"\n\n\
             [sessions.gateways]\nxmpp = \"sip:{{user}}@gw.test:5099\"\n\
             gtalk = \"sip:{{user}}@127.0.0.1:5098\"\n",
            dns.addr
        ),
    )
    .expect("write");
    let output = switchboard(&["config", "check", file], "");
    let out = stdout(&output);
    assert!(
        !output.status.success(),
        "a provider that does not resolve fails the check: {out}"
    );
    for line in [
        &format!("{file}: valid"),
        "sip udp 127.0.0.1:5060: advertised as edge.test:5070",
        "provider PROXICOM: 127.0.0.1:5080 over the transport DNS gives",
        "provider PROXICOM: 127.0.0.1:5080 (an address: no DNS)",
        "provider CARRIER: carrier.test -> udp 127.0.0.2:5070",
        "provider GONE: gone.test does not resolve (gone.test: no such domain (NXDOMAIN))",
        "gateway xmpp: gw.test:5099 -> udp 127.0.0.1:5099",
        "gateway gtalk: 127.0.0.1:5098 (an address: no DNS)",
        "sip.external_address: edge.test:5070 -> udp 127.0.0.1:5070",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing in:\n{out}"
        );
    }
    // Without the name that does not resolve: ok.
    let text = std::fs::read_to_string(&path).expect("read");
    let text = text.replace(
        "[[sip.providers]]\nname = \"GONE\"\naddress = \"gone.test\"\n\n",
        "",
    );
    std::fs::write(&path, text).expect("write");
    let output = switchboard(&["config", "check", file], "");
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.lines().any(|l| l == "ok"), "{out}");

    // A file that does not parse: exit 1, the line, and the cause once.
    std::fs::write(&path, "[sip]\nudp = [\"0.0.0.0:5060\"]\n").expect("write");
    let output = switchboard(&["config", "check", file], "");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("sip.external_address"), "{err}");
    std::fs::write(&path, "[sip]\nudp = 5\n").expect("write");
    let output = switchboard(&["config", "check", file], "");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(err.contains("line 2"), "{err}");
    let first = err.lines().next().unwrap_or_default();
    let halves = first.split(": ").collect::<Vec<_>>();
    let mut seen = std::collections::HashSet::new();
    assert!(
        halves.iter().all(|h| seen.insert(*h)),
        "a cause printed twice: {first}"
    );
    let missing = dir.path().join("missing.toml");
    let output = switchboard(&["config", "check", missing.to_str().expect("path")], "");
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause once: {err}"
    );
}
