//! The `switchboard` binary as a user and a plugin author run it.

mod common;

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

#[test]
fn demo_answers_the_seed_commands_and_says_calls_are_not_wired() {
    let output = switchboard(
        &["demo"],
        "HELP\nCALLBACK +442071234567 +4915112345678\n\nDIAL +4420\nhangup\nCALLBACK +442071234567\n",
    );
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("calls are not wired yet"), "{text}");
    assert!(
        text.contains("Commands:\nCALLBACK SourceLeg DestinationLeg"),
        "{text}"
    );
    assert_eq!(
        text.matches("Calls are not available on this host right now; no call was placed.")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("Error: unknown command 'DIAL'."), "{text}");
    assert!(
        text.contains("Error: CALLBACK needs a destination leg after the source.\nSyntax: CALLBACK [phone:|sip:"),
        "{text}"
    );
}

#[test]
fn demo_uses_plugins_from_a_watched_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(guest_path("replies_de"), dir.path().join("replies.wasm")).expect("copy");
    std::fs::copy(guest_path("parser_aliases"), dir.path().join("parser.wasm")).expect("copy");
    let plugins = dir.path().to_str().expect("utf-8 path");
    let output = switchboard(&["demo", "--plugins", plugins], "?\nHU\n");
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("Befehle: CALLBACK"), "{text}");
    assert!(
        text.contains("Anrufe sind derzeit nicht möglich."),
        "{text}"
    );
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
    assert!(String::from_utf8_lossy(&output.stderr).contains("ran past its CPU deadline"));
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
