//! The `switchboard run` binary as an operator runs it, with real peers on
//! loopback: Prosody and a slixmpp user for the chat, SIPp as the two
//! providers' far ends, the SQLite billing file shared with `switchboard
//! billing`. What it checks is what goes wrong on a host's first months:
//! the billing CLI run beside a live host, a second process started with
//! the same `host_id`, a `kill -9` and the restart after it.

mod common;
mod rtp_peer;
mod sipp_peer;
mod xmpp_peers;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rtp_peer::TonePeer;
use sipp_peer::SippUas;
use switchboard::billing::{Billing, Cdr, Micros};
use switchboard::media::Law;
use xmpp_peers::{DOMAIN, Prosody, User, befriend};

const SECS: Duration = Duration::from_secs(15);
const HOST: &str = "host-a";

/// A test host's files: its configuration (two providers at the seed's
/// rates, a billing file, the bot's account on the Prosody) in a temp dir.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    server: Prosody,
    _proxicom: SippUas,
    _pakline: SippUas,
    /// The far ends' audio, one per call each provider answers.
    _audio: Vec<TonePeer>,
    /// Where the web pages and admin API listen.
    web: std::net::SocketAddr,
}

const ADMIN_TOKEN: &str = "an-operator-admin-token";

impl Site {
    fn start() -> Site {
        let server =
            Prosody::start(&[("switchboard", "bot-secret"), ("ruslan", "r"), ("bob", "b")]);
        // Each provider answers up to four calls, each with its own audio.
        let audio: Vec<TonePeer> = (0..8)
            .map(|i| TonePeer::start(Law::Ulaw, 400.0 + 40.0 * f64::from(i)))
            .collect();
        let ports =
            |from: usize| -> Vec<u16> { audio[from..from + 4].iter().map(|a| a.port).collect() };
        let proxicom = SippUas::start("answer.xml", &ports(0));
        let pakline = SippUas::start("answer.xml", &ports(4));
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let mut toml = format!(
            "[xmpp]\njid = \"switchboard@{DOMAIN}\"\npassword = \"bot-secret\"\n\
             server = \"127.0.0.1:{}\"\nallow_plaintext = true\n\n\
             [sip]\nudp = [\"127.0.0.1:0\"]\n\n\
             [billing]\ndatabase = \"sqlite://{d}/billing.db\"\nhost_id = \"{HOST}\"\n\
             progress_interval_secs = 1\n\n\
             [sessions]\nring_timeout_secs = 5\n",
            server.port
        );
        for (name, far, rates) in [
            ("PROXICOM", &proxicom, [("44", "0.014"), ("49", "0.0135")]),
            ("PAKLINE", &pakline, [("49", "0.01204"), ("44", "0.0159")]),
        ] {
            let sheet = dir.path().join(format!("{name}.csv"));
            let mut csv = String::from("provider,prefix,price_per_minute\n");
            for (prefix, price) in rates {
                csv.push_str(&format!("{name},{prefix},{price}\n"));
            }
            std::fs::write(&sheet, csv).expect("rate sheet");
            toml.push_str(&format!(
                "\n[[sip.providers]]\nname = \"{name}\"\naddress = \"{}\"\nkeepalive = false\nrates = \"{}\"\n",
                far.addr,
                sheet.display()
            ));
        }
        let web = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        toml.push_str(&format!(
            "\n[web]\nlisten = \"{web}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n"
        ));
        let config = dir.path().join("switchboard.toml");
        std::fs::write(&config, toml).expect("config");
        Site {
            dir,
            config,
            server,
            _proxicom: proxicom,
            _pakline: pakline,
            _audio: audio,
            web,
        }
    }

    /// `POST path` on the admin API with the token; status and body.
    fn admin_post(&self, path: &str) -> (u16, String) {
        common::http_text(
            self.web,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
                 Connection: close\r\nContent-Length: 0\r\n\r\n"
            ),
        )
    }

    /// `switchboard billing --config <the service's file> ARGS`.
    fn billing(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("billing")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("switchboard billing")
    }

    /// Starts `switchboard run --config <the file>`, its output in files.
    fn run(&self, name: &str) -> Run {
        self.run_with(name, &[])
    }

    /// [`Self::run`] with more arguments, at the default log level.
    fn run_with(&self, name: &str, args: &[&str]) -> Run {
        let out = self.dir.path().join(format!("{name}.out"));
        let err = self.dir.path().join(format!("{name}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("switchboard run");
        Run { child, out, err }
    }

    /// The account's CDRs, read as a tool reads them (no lease, no recovery).
    async fn cdrs(&self) -> Vec<Cdr> {
        let config = switchboard::config::Config::load(&self.config).expect("config");
        let billing = Billing::open(&config.billing, None).await.expect("open");
        let cdrs = billing
            .store()
            .cdrs(&format!("ruslan@{DOMAIN}"), 20)
            .await
            .expect("cdrs");
        billing.close().await;
        cdrs
    }

    async fn balance(&self) -> Micros {
        let config = switchboard::config::Config::load(&self.config).expect("config");
        let billing = Billing::open(&config.billing, None).await.expect("open");
        let account = billing
            .store()
            .account(&format!("ruslan@{DOMAIN}"))
            .await
            .expect("account")
            .expect("ruslan has an account");
        billing.close().await;
        account.balance
    }
}

/// A `switchboard run` process.
struct Run {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Run {
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until it says it is running (or fails if it exits first).
    fn wait_running(&mut self) {
        let deadline = Instant::now() + SECS;
        while !self.stdout().contains("Switchboard running") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("switchboard run exited {status}:\n{}", self.stderr());
            }
            assert!(Instant::now() < deadline, "not running:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to exit by itself and returns its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(server: &Prosody, line: &str) {
    let deadline = Instant::now() + SECS;
    while !server.log().contains(line) {
        assert!(
            Instant::now() < deadline,
            "no {line:?} in:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn charged_secs(text: &str) -> u64 {
    text.split("Charged time: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no charged time in {text:?}"))
}

/// CALLBACK to the seed's numbers, up to "Remote answered".
fn call(ruslan: &mut User, bot: &str) {
    ruslan.say(bot, "CALLBACK +442071234567 +4915112345678");
    for expected in [
        "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
        "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
        "Remote answered. Now talking. Cost = 0.02604",
    ] {
        assert_eq!(ruslan.next_message(bot, SECS), expected);
    }
}

fn live(cdrs: &[Cdr]) -> usize {
    cdrs.iter().filter(|c| c.end_reason.is_none()).count()
}

/// One host id, one process; the billing CLI beside a live host settles
/// nothing; a killed host's lease expires and the next start recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_per_host_id_and_the_billing_cli_beside_it() {
    let site = Site::start();
    let credit = site.billing(&["credit", &format!("ruslan@{DOMAIN}"), "5"]);
    assert!(credit.status.success(), "{credit:?}");
    let mut first = site.run("first");
    first.wait_running();
    wait_for(&site.server, "Authenticated as switchboard@localhost");
    let bot = format!("switchboard@{DOMAIN}");
    let mut ruslan = tokio::task::block_in_place(|| User::login(&site.server, "ruslan", "r"));
    tokio::task::block_in_place(|| {
        befriend(&mut ruslan, &bot);
        call(&mut ruslan, &bot);
    });

    // The README's billing commands, run against the live host's file.
    let cdrs = site.billing(&["cdrs", &format!("ruslan@{DOMAIN}")]);
    assert!(cdrs.status.success(), "{cdrs:?}");
    let text = String::from_utf8_lossy(&cdrs.stdout);
    assert_eq!(text.matches("(live)").count(), 2, "{text}");
    assert!(
        !String::from_utf8_lossy(&cdrs.stderr).contains("settled"),
        "{cdrs:?}"
    );
    assert_eq!(live(&site.cdrs().await), 2, "the CLI settled the live call");

    // A second process for the same host id is refused, and leaves the
    // first one's call alone.
    let mut second = site.run("second");
    assert_eq!(second.wait_exit(SECS), Some(1));
    let refused = second.stderr();
    assert!(
        refused.contains(&format!("host {HOST} is running (lease renewed "))
            && refused.contains(" s ago); give this process another host_id"),
        "{refused}"
    );
    assert_eq!(live(&site.cdrs().await), 2, "the second process settled");

    // The call bills correctly at HANGUP.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ended = tokio::task::block_in_place(|| {
        ruslan.say(&bot, "HANGUP");
        ruslan.next_message(&bot, SECS)
    });
    let secs = charged_secs(&ended);
    assert!(ended.ends_with("Reason = EndedByHangup"), "{ended}");
    let cdrs = site.cdrs().await;
    assert_eq!(live(&cdrs), 0);
    let cost: Micros = cdrs
        .iter()
        .map(|c| c.cost.unwrap_or(Micros::ZERO))
        .fold(Micros::ZERO, Micros::plus);
    assert!(
        cdrs.iter().all(
            |c| c.billed_secs == Some(secs) && c.end_reason.as_deref() == Some("EndedByHangup")
        ),
        "{cdrs:?}"
    );
    assert_eq!(site.balance().await, Micros::units(5).minus(cost));

    // kill -9 with a call up: a start right after is refused (the lease is
    // still live); once it expires (three progress intervals) the next
    // start takes it and settles the call to its last progress mark.
    tokio::task::block_in_place(|| call(&mut ruslan, &bot));
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.signal("-KILL");
    let killed_ms = switchboard::billing::unix_ms(std::time::SystemTime::now());
    let _ = first.wait_exit(SECS);
    let mut early = site.run("early");
    assert_eq!(early.wait_exit(SECS), Some(1), "{}", early.stderr());
    assert!(early.stderr().contains("is running (lease renewed"));
    assert_eq!(live(&site.cdrs().await), 2);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let mut after = site.run("after");
    after.wait_running();
    let cdrs = site.cdrs().await;
    let recovered: Vec<&Cdr> = cdrs
        .iter()
        .filter(|c| c.end_reason.as_deref() == Some("HostRestarted"))
        .collect();
    assert_eq!(recovered.len(), 2, "{cdrs:?}");
    for c in recovered {
        let (answered, ended) = (c.answered_ms.expect("answered"), c.ended_ms.expect("ended"));
        assert!(
            ended <= killed_ms && ended >= killed_ms - 1_500,
            "ended {ended}, killed {killed_ms}"
        );
        assert!(c.billed_secs >= Some(2), "{c:?}");
        assert_eq!(
            c.billed_secs,
            Some(u64::try_from(ended - answered).expect("ms").div_ceil(1000))
        );
    }
    // A clean stop gives the lease back: the next start need not wait.
    after.signal("-TERM");
    assert_eq!(after.wait_exit(SECS), Some(0), "{}", after.stderr());
    let mut again = site.run("again");
    again.wait_running();
    again.signal("-TERM");
    assert_eq!(again.wait_exit(SECS), Some(0), "{}", again.stderr());
}

/// Waits until `run`'s stdout holds `text`.
fn wait_stdout(run: &Run, text: &str) {
    let deadline = Instant::now() + SECS;
    while !run.stdout().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in:\n{}\n{}",
            run.stdout(),
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGHUP after a rate sheet gained a row: the call that was up goes on,
/// the next call uses the new rate. SIGUSR1 drains: a CALLBACK is refused
/// with the restart text, the live call finishes, the process exits 0.
/// The JSON log parses line by line, and a call's lines carry its Call-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_drain_and_json_logs() {
    let site = Site::start();
    for who in ["ruslan", "bob"] {
        let credit = site.billing(&["credit", &format!("{who}@{DOMAIN}"), "5"]);
        assert!(credit.status.success(), "{credit:?}");
    }
    let mut run = site.run_with("json", &["--log-format", "json"]);
    run.wait_running();
    wait_for(&site.server, "Authenticated as switchboard@localhost");
    let bot = format!("switchboard@{DOMAIN}");
    let (mut ruslan, mut bob) = tokio::task::block_in_place(|| {
        let mut ruslan = User::login(&site.server, "ruslan", "r");
        befriend(&mut ruslan, &bot);
        let mut bob = User::login(&site.server, "bob", "b");
        befriend(&mut bob, &bot);
        call(&mut ruslan, &bot);
        (ruslan, bob)
    });

    // A cheaper rate for +447 appears in PROXICOM's sheet; SIGHUP.
    let sheet = site.dir.path().join("PROXICOM.csv");
    let mut csv = std::fs::read_to_string(&sheet).expect("sheet");
    csv.push_str("PROXICOM,447,0.009\n");
    std::fs::write(&sheet, csv).expect("sheet");
    run.signal("-HUP");
    wait_stdout(
        &run,
        "Configuration reloaded: applied: rate sheets (5 rates)",
    );
    assert!(
        !run.stdout().contains("needs a restart"),
        "{}",
        run.stdout()
    );
    // The admin API reloads too, and says what it applied and what not: a
    // changed listener needs a restart and is left alone.
    let toml = std::fs::read_to_string(&site.config).expect("config");
    std::fs::write(
        &site.config,
        toml.replace(
            "udp = [\"127.0.0.1:0\"]",
            "udp = [\"127.0.0.1:0\", \"127.0.0.2:0\"]",
        ),
    )
    .expect("config");
    let (status, body) = site.admin_post("/admin/api/reload");
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(report["applied"][0], "rate sheets (5 rates)", "{body}");
    assert!(
        report["restart_needed"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("[sip]")),
        "{body}"
    );
    std::fs::write(&site.config, "[sip\nbroken").expect("config");
    let (status, body) = site.admin_post("/admin/api/reload");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("configuration not reloaded"), "{body}");
    std::fs::write(&site.config, toml).expect("config");
    // The call that was up goes on, and bills to its HANGUP.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ended = tokio::task::block_in_place(|| {
        ruslan.say(&bot, "LIST");
        assert!(
            ruslan
                .next_message(&bot, SECS)
                .starts_with("List of connected legs:")
        );
        ruslan.say(&bot, "HANGUP");
        ruslan.next_message(&bot, SECS)
    });
    assert!(ended.ends_with("Reason = EndedByHangup"), "{ended}");
    assert!(charged_secs(&ended) >= 1, "{ended}");
    let first_call: Vec<Cdr> = site.cdrs().await;
    assert_eq!(first_call.len(), 2);
    // The next call is rated from the new row.
    tokio::task::block_in_place(|| {
        ruslan.say(&bot, "CALLBACK +447911123456 +4915112345678");
        for expected in [
            "Calling source: phone:447911123456, cost = 0.009 via PROXICOM",
            "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
            "Remote answered. Now talking. Cost = 0.02104",
        ] {
            assert_eq!(ruslan.next_message(&bot, SECS), expected);
        }
    });

    // /metrics has the latency histograms (prometheus-client's encoding).
    let (status, metrics) = common::http_text(
        site.web,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    for family in [
        "# TYPE switchboard_call_setup_seconds histogram",
        "switchboard_call_setup_seconds_count{provider=\"PROXICOM\"} 2",
        "switchboard_call_setup_seconds_count{provider=\"PAKLINE\"} 2",
        "switchboard_post_dial_delay_seconds_bucket{le=\"+Inf\",provider=\"PAKLINE\"} 2",
        "# TYPE switchboard_plugin_call_seconds histogram",
        "switchboard_plugin_call_seconds_count{slot=\"router\"}",
        "switchboard_plugin_call_seconds_count{slot=\"parser\"}",
        "switchboard_plugin_call_seconds_count{slot=\"replies\"}",
        "switchboard_sessions_started_total 2",
    ] {
        assert!(metrics.contains(family), "{family} in {metrics}");
    }

    // Drain: no new calls; the live one goes on until its HANGUP; exit 0.
    run.signal("-USR1");
    wait_stdout(&run, "Draining: no new calls");
    let (status, body) = site.admin_post("/admin/api/drain");
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"started_now\":false"), "{body}");
    tokio::task::block_in_place(|| {
        bob.say(&bot, "CALLBACK +442071234567 +4915112345678");
        assert_eq!(
            bob.next_message(&bot, SECS),
            "This service is about to restart; please try again in a minute"
        );
        ruslan.say(&bot, "LIST");
        assert!(
            ruslan
                .next_message(&bot, SECS)
                .starts_with("List of connected legs:")
        );
        ruslan.say(&bot, "HANGUP");
        let ended = ruslan.next_message(&bot, SECS);
        assert!(ended.ends_with("Reason = EndedByHangup"), "{ended}");
    });
    assert_eq!(run.wait_exit(SECS), Some(0), "{}", run.stderr());
    let cdrs = site.cdrs().await;
    assert_eq!(cdrs.len(), 4, "bob's CALLBACK rang nobody: {cdrs:?}");
    assert!(
        cdrs.iter()
            .all(|c| c.end_reason.as_deref() == Some("EndedByHangup")),
        "{cdrs:?}"
    );

    // Every log line is a JSON object (python3's own parser says so), at
    // info by default, and the first call's lines carry its Call-IDs.
    let checked = Command::new("python3")
        .args(["-m", "json.tool", "--json-lines"])
        .arg(&run.err)
        .output()
        .expect("python3");
    assert!(
        checked.status.success(),
        "not JSON lines: {}\n{}",
        String::from_utf8_lossy(&checked.stderr),
        run.stderr()
    );
    let log = run.stderr();
    assert!(log.lines().count() > 10, "{log}");
    assert!(log.contains("\"level\":\"INFO\""), "{log}");
    for cdr in &first_call {
        let id = cdr
            .sip_call_id
            .as_deref()
            .expect("an answered leg's Call-ID");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(id)).collect();
        assert!(
            lines.len() >= 2 && lines.iter().any(|l| l.contains("\"answered\"")),
            "{id}: {lines:?}"
        );
    }
}
