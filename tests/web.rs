//! The web pages and the admin API, against real peers on loopback.
//!
//! `pages_in_a_real_browser` drives a real headless Chromium (Debian
//! packages `chromium` and `chromium-driver`) through ChromeDriver the way
//! a person uses the site: the Invite form (the bot's subscription request
//! reaches a real XMPP client through Prosody), the rates search, the
//! account login with the code the bot sends over XMPP, the admin pages
//! (credit top-up, a shadow router on live calls, ending a live session
//! whose legs are SIPp far ends, plugin upload, refusal and rollback).
//! Screenshots of each step are written to
//! `target/tmp/web-screenshots/` (the path is printed).
//!
//! `api_and_bad_input` speaks raw HTTP to the same server: the admin API
//! with and without the token, and malformed or hostile requests, after
//! which the host still answers.

mod common;
mod sipp_peer;
mod xmpp_peers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use sipp_peer::SippUas;
use switchboard::billing::Micros;
use switchboard::chat::{ChatError, Messenger};
use switchboard::config::Config;
use switchboard::plugin::{Limits, PluginHost, SlotName};
use switchboard::service::Service;
use switchboard::web::{WebConfig, WebState};
use xmpp_peers::{DOMAIN, Prosody, User, serve_bot};

const TOKEN: &str = "test-admin-token-0123456789";
const SECS: Duration = Duration::from_secs(15);

/// Rates as in the seed, plus two providers for +33 whose ranking differs
/// between the default router (answer rate first) and least-cost routing.
const PROVIDERS: &[(&str, &[(&str, &str)])] = &[
    ("PROXICOM", &[("44", "0.014"), ("49", "0.0135")]),
    (
        "PAKLINE",
        &[("49", "0.01204"), ("44", "0.0159"), ("447", "0.02")],
    ),
    ("BEST", &[("33", "0.02")]),
    ("CHEAP", &[("33", "0.005")]),
];

/// The host as `switchboard run` assembles it, with the web front end.
struct Host {
    service: Service,
    plugins: Arc<PluginHost>,
    web: SocketAddr,
    _sink: std::net::UdpSocket,
    _dir: tempfile::TempDir,
    _far_ends: Vec<SippUas>,
}

impl Host {
    async fn start(
        messenger: impl FnOnce(&Service, &Arc<PluginHost>) -> Arc<dyn Messenger>,
    ) -> Host {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut toml = format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\n\n\
             [billing]\ndatabase = \"sqlite://{}/billing.db\"\nhost_id = \"web\"\ncurrency = \"USD\"\n\
             stats = {{ secs = 3600, attempts = 500, min_samples = 1 }}\n\n\
             [web]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n",
            dir.path().display()
        );
        let mut far_ends = Vec::new();
        // The far ends' audio goes to a socket nobody reads: these tests
        // are about the pages, tests/sessions.rs about the audio.
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("RTP sink");
        let sink_port = sink.local_addr().expect("sink address").port();
        for (name, rates) in PROVIDERS {
            let far = SippUas::start("answer.xml", &[sink_port; 50]);
            let sheet = dir.path().join(format!("{name}.csv"));
            let mut csv = String::from("provider,prefix,price_per_minute\n");
            for (prefix, price) in *rates {
                csv.push_str(&format!("{name},{prefix},{price}\n"));
            }
            std::fs::write(&sheet, csv).expect("rate sheet");
            toml.push_str(&format!(
                "\n[[sip.providers]]\nname = \"{name}\"\naddress = \"{}\"\nkeepalive = false\nrates = \"{}\"\n",
                far.addr,
                sheet.display()
            ));
            far_ends.push(far);
        }
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, toml).expect("config");
        let config = Config::load(&path).expect("the test configuration is valid");
        let plugins = Arc::new(PluginHost::new(Limits::default()).expect("plugins"));
        let service = Service::start(&config, Arc::clone(&plugins))
            .await
            .expect("the host starts");
        // BEST answers every call, CHEAP one in five.
        common::seed_attempts(&service.billing, "BEST", 10, 10).await;
        common::seed_attempts(&service.billing, "CHEAP", 10, 2).await;
        let web_config: WebConfig = config.web.clone().expect("[web]");
        let messenger = messenger(&service, &plugins);
        let state = WebState::new(
            &web_config,
            service.manager.clone(),
            messenger,
            format!("switchboard@{DOMAIN}"),
        );
        let listener = switchboard::web::bind(web_config.listen)
            .await
            .expect("web listener");
        let web = listener.local_addr().expect("web address");
        switchboard::web::spawn(listener, Arc::new(state));
        Host {
            service,
            plugins,
            web,
            _sink: sink,
            _dir: dir,
            _far_ends: far_ends,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.web)
    }

    async fn balance(&self, account: &str) -> Micros {
        self.service
            .billing
            .store()
            .account(account)
            .await
            .expect("account")
            .map_or(Micros::ZERO, |a| a.balance)
    }
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Headless Chromium driven through ChromeDriver.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    taken: u32,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/test.sh installs chromium and chromium-driver)");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,2000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        // A loaded CI machine can take a while to start Chromium.
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for chromedriver: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("cannot start headless Chromium: {e}"),
            }
        };
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        println!("screenshots: {}", shots.display());
        Browser {
            client,
            driver,
            shots,
            taken: 0,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("page loads");
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.client.find(Locator::Css(css)).await.expect(css);
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Waits until the element `css` exists and its text contains
    /// `needle`; returns the text. Pages are reloaded by form posts, so
    /// the element is looked up afresh each time.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + SECS;
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
            {
                // Table cells come tab-separated.
                let t = t.replace('\t', " ");
                if t.contains(needle) {
                    return t;
                }
                last = t;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never said {needle:?}; last {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The flash message after a form post, once it contains `needle`.
    async fn flash(&self, needle: &str) -> String {
        self.wait_text("#flash", needle).await
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .expect("text")
            .replace('\t', " ")
    }

    async fn shot(&mut self, name: &str) {
        self.taken += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{:02}-{name}.png", self.taken));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot {}", path.display());
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_in_a_real_browser() {
    let server = Prosody::start(&[("switchboard", "bot-secret"), ("alice", "alice-pw")]);
    let bot_jid = format!("switchboard@{DOMAIN}");
    let alice_jid = format!("alice@{DOMAIN}");
    // The XMPP bot needs the started service, and the web front end the
    // bot (as its messenger): a handle set once the bot is up.
    let late = Arc::new(LateMessenger::default());
    let handle = Arc::clone(&late);
    let mut host = Host::start(move |_, _| handle).await;
    let xmpp = serve_bot(&server, &mut host.service, &host.plugins);
    *late.0.lock().unwrap() = Some(Arc::clone(&xmpp) as Arc<dyn Messenger>);
    let mut alice = block(|| User::login(&server, "alice", "alice-pw"));
    let mut b = Browser::start().await;

    // ---- the landing page and the Invite form ----
    b.goto(&host.url("/")).await;
    b.wait_text("body", "CALLBACK [phone:|gtalk:|yahoo:|msn:|sip:]SourceLeg")
        .await;
    b.fill("#address", "example.org").await;
    b.click("#invite-button").await;
    b.flash("is a server, not a person").await;
    b.shot("invite-refused").await;
    b.fill("#address", &alice_jid).await;
    b.click("#invite-button").await;
    b.flash(&format!("Invitation sent to {alice_jid}")).await;
    b.shot("invite-sent").await;
    // Alice's client gets the bot's subscription request and accepts it,
    // and adds the bot in turn.
    block(|| {
        alice.expect(SECS, |v| v["subscribe"] == bot_jid.as_str());
        alice.command(serde_json::json!({"approve": bot_jid}));
        alice.command(serde_json::json!({"subscribe": bot_jid}));
        alice.expect(SECS, |v| v["subscribed"] == bot_jid.as_str());
    });

    // ---- rates ----
    b.goto(&host.url("/rates")).await;
    b.fill("#q", "+44 20 7123-4567").await;
    b.click("#search").await;
    let offers = b.wait_text("#offers", "PROXICOM").await;
    let rows: Vec<&str> = offers.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{offers}");
    assert!(
        rows[0].starts_with("PROXICOM +44 0.014"),
        "cheapest first: {offers}"
    );
    assert!(rows[1].starts_with("PAKLINE +44 0.0159"), "{offers}");
    b.shot("rates-number").await;
    b.fill("#q", "44").await;
    b.click("#search").await;
    let deeper = b.wait_text("#deeper", "+447").await;
    assert!(deeper.contains("PAKLINE 0.02"), "{deeper}");
    b.fill("#q", "44x1").await;
    b.click("#search").await;
    b.flash("'x' is not a digit").await;
    b.fill("#q", "112").await;
    b.click("#search").await;
    b.flash("+112 cannot be called").await;
    b.shot("rates-refused").await;

    // ---- admin: login and credit top-up ----
    b.goto(&host.url("/admin")).await;
    b.fill("#token", "not-the-token").await;
    b.click("#admin-login-button").await;
    b.flash("That is not the admin token").await;
    b.fill("#token", TOKEN).await;
    b.click("#admin-login-button").await;
    b.wait_text("#plugins", "router").await;
    b.fill("#credit-account", &alice_jid).await;
    b.fill("#credit-amount", "five").await;
    b.click("#credit-button").await;
    b.flash("Top-up refused: amount \"five\"").await;
    b.fill("#credit-account", &alice_jid).await;
    b.fill("#credit-amount", "5.00").await;
    b.click("#credit-button").await;
    b.flash("the balance is now 5 USD").await;
    b.shot("admin-credit").await;
    assert_eq!(host.balance(&alice_jid).await, Micros(5_000_000));

    // ---- the account page with a code sent over XMPP ----
    b.goto(&host.url("/account")).await;
    b.fill("#address", &alice_jid).await;
    b.click("#send-code-button").await;
    b.flash("has sent it a login code").await;
    let message = block(|| alice.next_message(&bot_jid, SECS));
    let code: String = message
        .split("login code is ")
        .nth(1)
        .map(|t| t.chars().take(6).collect())
        .unwrap_or_else(|| panic!("no code in {message:?}"));
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{message}");
    let wrong = if code == "000000" { "000001" } else { "000000" };
    b.fill("#code", wrong).await;
    b.click("#login-button").await;
    b.flash("Wrong code (4 tries left)").await;
    b.fill("#code", &code).await;
    b.click("#login-button").await;
    b.wait_text("#balance", "5 USD").await;
    b.wait_text("#no-calls", "No calls yet").await;
    b.shot("account-empty").await;

    // ---- a shadow router on live calls ----
    b.goto(&host.url("/admin")).await;
    b.fill(
        "#shadow-file",
        &path_str(&common::guest_path("router_least_cost")),
    )
    .await;
    b.click("#shadow-upload-button").await;
    b.flash("now routes in the shadow").await;

    // ---- a live call, seen and ended from the admin page ----
    block(|| alice.say(&bot_jid, "CALLBACK +442071234567 +4915112345678"));
    for expected in [
        "Calling source: phone:442071234567, cost = 0.014 via PROXICOM",
        "Calling destination: phone:4915112345678, cost = 0.01204 via PAKLINE",
        "Remote answered. Now talking. Cost = 0.02604",
    ] {
        assert_eq!(block(|| alice.next_message(&bot_jid, SECS)), expected);
    }
    block(|| alice.say(&bot_jid, "ADD +33111111111"));
    for expected in [
        "Calling additional: phone:33111111111, cost = 0.02 via BEST",
        "Party answered. Now talking. Cost = 0.02",
    ] {
        assert_eq!(block(|| alice.next_message(&bot_jid, SECS)), expected);
    }
    b.goto(&host.url("/admin")).await;
    let live = b.wait_text("#sessions", "Live sessions (1)").await;
    for leg in [
        "source: phone:442071234567 via PROXICOM — talking",
        "destination: phone:4915112345678 via PAKLINE — talking",
        "additional: phone:33111111111 via BEST — talking",
    ] {
        assert!(live.contains(leg), "{leg} in {live}");
    }
    assert!(live.contains(&alice_jid), "{live}");
    b.shot("admin-live-session").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.click("#sessions button.end").await;
    b.flash("is ended").await;
    b.wait_text("#no-sessions", "No calls in progress").await;
    b.shot("admin-session-ended").await;
    let ended = block(|| alice.next_message(&bot_jid, SECS));
    assert!(
        ended.starts_with("Call aborted!\nThank you!\nCharged time: ")
            && ended.ends_with("Reason = EndedByOperator"),
        "{ended}"
    );

    // ---- the shadow's figures: it would have sent +33 to CHEAP ----
    b.goto(&host.url("/admin")).await;
    let stats = b.wait_text("#shadow-stats", "Compared").await;
    assert!(stats.contains("Compared 3"), "{stats}");
    assert!(stats.contains("Same answer 2"), "{stats}");
    assert!(stats.contains("first choice 1"), "{stats}");
    let moves = b.text("#shadow-moves").await;
    assert!(moves.contains("BEST → CHEAP 1"), "{moves}");
    let prefixes = b.text("#shadow-prefixes").await;
    assert!(prefixes.contains("+33… 1 1"), "{prefixes}");
    b.shot("admin-shadow").await;
    b.click("#shadow-promote").await;
    b.flash("is now the active router").await;
    let router = b.text("#slot-router").await;
    assert!(
        router.contains("promoted shadow (upload router_least_cost.wasm)"),
        "{router}"
    );

    // ---- the account page lists the legs with their cost ----
    b.goto(&host.url("/account")).await;
    let calls = b.wait_text("#calls", "EndedByOperator").await;
    let cdrs = host
        .service
        .billing
        .store()
        .cdrs(&alice_jid, 10)
        .await
        .unwrap();
    assert_eq!(cdrs.len(), 3, "{cdrs:?}");
    let mut total = Micros::ZERO;
    for c in &cdrs {
        let cost = c.cost.expect("settled");
        total = total.plus(cost);
        assert!(calls.contains(&c.address), "{} in {calls}", c.address);
        assert!(calls.contains(&cost.to_string()), "{cost} in {calls}");
    }
    let left = Micros(5_000_000).minus(total);
    b.wait_text("#balance", &format!("{left} USD")).await;
    b.shot("account-calls").await;

    // ---- plugin upload, refusal and rollback ----
    b.goto(&host.url("/admin")).await;
    let embedded = host.plugins.stats(SlotName::Replies).active;
    b.client
        .find(Locator::Css("#upload-slot"))
        .await
        .unwrap()
        .select_by_value("replies")
        .await
        .unwrap();
    b.fill("#upload-file", &path_str(&common::guest_path("replies_de")))
        .await;
    b.click("#upload-button").await;
    b.flash("is now the active replies plugin").await;
    let de = host.plugins.stats(SlotName::Replies).active;
    assert_ne!(de, embedded);
    assert!(b.text("#slot-replies").await.contains(de.as_str()));
    block(|| alice.say(&bot_jid, "LIST"));
    let german = block(|| alice.next_message(&bot_jid, SECS));
    assert_eq!(german, "LIST ist jetzt nicht möglich: no call in progress.");
    // Not a component: refused with the reason, the German version stays.
    let junk = tempfile::Builder::new().suffix(".wasm").tempfile().unwrap();
    std::fs::write(junk.path(), b"this is not WebAssembly").unwrap();
    b.client
        .find(Locator::Css("#upload-slot"))
        .await
        .unwrap()
        .select_by_value("replies")
        .await
        .unwrap();
    b.fill("#upload-file", &path_str(junk.path())).await;
    b.click("#upload-button").await;
    b.flash("Upload refused: not a valid WebAssembly component")
        .await;
    b.shot("admin-upload-refused").await;
    assert_eq!(host.plugins.stats(SlotName::Replies).active, de);
    b.click("#rollback-replies").await;
    b.flash("The replies slot is back on version").await;
    b.shot("admin-rolled-back").await;
    assert_eq!(host.plugins.stats(SlotName::Replies).active, embedded);

    // ---- metrics ----
    b.goto(&host.url("/metrics")).await;
    let metrics = b.text("body").await;
    assert!(
        metrics.contains("switchboard_sessions_ended_total{reason=\"EndedByOperator\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_plugin_rollbacks_total{slot=\"replies\"} 1"),
        "{metrics}"
    );

    b.close().await;
    xmpp.stop();
}

/// A messenger set once the bot is up.
#[derive(Default)]
struct LateMessenger(Mutex<Option<Arc<dyn Messenger>>>);

impl Messenger for LateMessenger {
    fn invite(&self, address: &str) -> Result<(), ChatError> {
        let m = self.0.lock().unwrap().clone();
        m.ok_or_else(|| ChatError::Config("no bot yet".into()))?
            .invite(address)
    }
    fn send(&self, address: &str, text: &str) -> Result<(), ChatError> {
        let m = self.0.lock().unwrap().clone();
        m.ok_or_else(|| ChatError::Config("no bot yet".into()))?
            .send(address, text)
    }
}

/// Records what the web pages send, for the raw-HTTP test.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

impl Messenger for Recorder {
    fn invite(&self, address: &str) -> Result<(), ChatError> {
        self.0
            .lock()
            .unwrap()
            .push((address.into(), "INVITE".into()));
        Ok(())
    }
    fn send(&self, address: &str, text: &str) -> Result<(), ChatError> {
        self.0.lock().unwrap().push((address.into(), text.into()));
        Ok(())
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the status (0 when the
/// server closed without answering) and the body.
async fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let reply = block(|| common::http(addr, request));
    (reply.status, reply.body)
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("Content-Type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_bad_input() {
    let recorder = Arc::new(Recorder::default());
    let r = Arc::clone(&recorder);
    let host = Host::start(move |_, _| r).await;
    let addr = host.web;
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());

    // The API refuses requests without the token, or with a wrong one.
    for path in [
        "/admin/api/plugins",
        "/admin/api/sessions",
        "/admin/api/providers",
        "/admin/api/shadow",
    ] {
        let (status, body) = http(addr, &request("GET", path, &[], b"")).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("admin token"), "{body}");
        let (status, _) = http(
            addr,
            &request("GET", path, &[("Authorization", "Bearer wrong")], b""),
        )
        .await;
        assert_eq!(status, 401, "{path}");
        let (status, _) = http(addr, &request("GET", path, &[auth], b"")).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _) = http(
        addr,
        &request("PUT", "/admin/api/plugins/router", &[], b"\0asm"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = http(
        addr,
        &request(
            "POST",
            "/admin/api/credit",
            &[JSON],
            br#"{"account":"a@b.c","amount":"1"}"#,
        ),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        host.balance("a@b.c").await,
        Micros::ZERO,
        "nothing credited without the token"
    );
    // Admin pages without a login show the login form, and do nothing.
    let (status, body) = http(
        addr,
        &request(
            "POST",
            "/admin/credit",
            &[FORM],
            b"account=a%40b.c&amount=1",
        ),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("Admin token"), "{body}");
    assert_eq!(host.balance("a@b.c").await, Micros::ZERO);

    // With the token: listings, and bad values refused with the reason.
    let (status, body) = http(addr, &request("GET", "/admin/api/providers", &[auth], b"")).await;
    assert_eq!(status, 200);
    let providers: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(providers.as_array().map(Vec::len), Some(4), "{body}");
    let (status, body) = http(
        addr,
        &request(
            "PUT",
            "/admin/api/plugins/router",
            &[auth],
            b"\0asm garbage",
        ),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not a valid WebAssembly component"), "{body}");
    let (status, body) = http(
        addr,
        &request("PUT", "/admin/api/plugins/dialer", &[auth], b"x"),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body.contains("unknown plugin slot"), "{body}");
    let bytes = std::fs::read(common::guest_path("router_least_cost")).unwrap();
    let (status, body) = http(
        addr,
        &request("PUT", "/admin/api/plugins/replies", &[auth], &bytes),
    )
    .await;
    assert_eq!(status, 422, "a router is not a replies plugin: {body}");
    assert!(body.contains("replies world"), "{body}");
    let (status, body) = http(
        addr,
        &request(
            "PUT",
            "/admin/api/plugins/router",
            &[auth, ("X-Plugin-Origin", "ci")],
            &bytes,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(host.plugins.stats(SlotName::Router).active_origin, "ci");
    let (status, _) = http(
        addr,
        &request("POST", "/admin/api/plugins/router/rollback", &[auth], b""),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = http(
        addr,
        &request("POST", "/admin/api/plugins/router/rollback", &[auth], b""),
    )
    .await;
    assert_eq!(status, 422, "nothing left to roll back: {body}");
    // A time bomb uploaded as the parser: the breaker rolls it back, and
    // the API (what the admin page shows) says so and why.
    let rogue = std::fs::read(common::guest_path("rogue_guest")).unwrap();
    let (status, body) = http(
        addr,
        &request("PUT", "/admin/api/plugins/parser", &[auth], &rogue),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let breaker = Limits::default().breaker_failures;
    for _ in 0..=breaker {
        let answer = host.plugins.parse("tick", "bomber@example.com").unwrap();
        assert!(answer.fell_back);
    }
    let (status, body) = http(addr, &request("GET", "/admin/api/plugins", &[auth], b"")).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"breaker_trips\":1"), "{body}");
    assert!(body.contains("rolled back to"), "{body}");
    let (status, body) = http(
        addr,
        &request("POST", "/admin/api/shadow/promote", &[auth], b""),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body.contains("no shadow router"), "{body}");
    let (status, _) = http(
        addr,
        &request(
            "DELETE",
            "/admin/api/sessions/no-such-session",
            &[auth],
            b"",
        ),
    )
    .await;
    assert_eq!(status, 404);
    for (body, why) in [
        (&b"{not json"[..], "must be JSON"),
        (br#"{"account":"a@b.c","amount":"1.0000001"}"#, "amount"),
        (br#"{"account":"a@b.c","amount":"-5"}"#, "more than zero"),
        (br#"{"account":"nobody","amount":"1"}"#, "name before the @"),
        (br#"{"account":"a@b.c"}"#, "enter an amount"),
    ] {
        let (status, text) = http(
            addr,
            &request("POST", "/admin/api/credit", &[auth, JSON], body),
        )
        .await;
        assert_eq!(status, 422, "{text}");
        assert!(text.contains(why), "{why} in {text}");
    }
    let (status, body) = http(
        addr,
        &request(
            "POST",
            "/admin/api/credit",
            &[auth, JSON],
            br#"{"account":"a@b.c","amount":"2.5"}"#,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"balance\":\"2.5\""), "{body}");

    // Forms: each bad value gets a message; nothing is sent.
    for (form, why) in [
        ("", "Enter your XMPP address"),
        ("address=%00%FF", "class=\"error\""),
        ("address=a%40b%40c", "not an XMPP address"),
    ] {
        let (status, body) =
            http(addr, &request("POST", "/invite", &[FORM], form.as_bytes())).await;
        assert_eq!(status, 422, "{form}: {body}");
        assert!(body.contains(why), "{why} in {body}");
    }
    let (status, _) = http(
        addr,
        &request("POST", "/invite", &[FORM], b"address=carol%40example.org"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = http(
        addr,
        &request("POST", "/invite", &[FORM], b"address=carol%40example.org"),
    )
    .await;
    assert_eq!(status, 429, "one invitation per address per minute: {body}");
    assert!(body.contains("moments ago"), "{body}");
    // Codes go only to accounts that exist, with the same answer for both.
    let (s1, b1) = http(
        addr,
        &request("POST", "/account/code", &[FORM], b"address=a%40b.c"),
    )
    .await;
    let (s2, b2) = http(
        addr,
        &request("POST", "/account/code", &[FORM], b"address=stranger%40b.c"),
    )
    .await;
    assert_eq!((s1, s2), (200, 200));
    assert!(
        b1.contains("If a@b.c has an account") && b2.contains("If stranger@b.c has an account")
    );
    let (status, body) = http(
        addr,
        &request("POST", "/account/code", &[FORM], b"address=a%40b.c"),
    )
    .await;
    assert_eq!(status, 429);
    assert!(body.contains("less than 30 seconds ago"), "{body}");
    let (status, body) = http(
        addr,
        &request(
            "POST",
            "/account/login",
            &[FORM],
            b"address=a%40b.c&code=12",
        ),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body.contains("six digits"), "{body}");
    let sent = recorder.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        sent[0],
        ("carol@example.org".to_string(), "INVITE".to_string())
    );
    assert_eq!(sent[1].0, "a@b.c");
    let code: String = sent[1]
        .1
        .split("code is ")
        .nth(1)
        .unwrap()
        .chars()
        .take(6)
        .collect();
    // A logged-in page is only reached with the cookie the code gives.
    let login = format!("address=a%40b.c&code={code}");
    let reply = block(|| {
        common::http(
            addr,
            &request("POST", "/account/login", &[FORM], login.as_bytes()),
        )
    });
    let raw = reply.head;
    assert!(raw.starts_with("HTTP/1.1 303"), "{raw}");
    let cookie = raw
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    assert!(raw.contains("HttpOnly; SameSite=Strict"), "{raw}");
    let (status, body) = http(
        addr,
        &request("GET", "/account", &[("Cookie", &cookie)], b""),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("2.5 USD"), "{body}");
    let (_, body) = http(
        addr,
        &request("GET", "/account", &[("Cookie", "sb_account=forged")], b""),
    )
    .await;
    assert!(body.contains("Send me a code") && !body.contains("2.5 USD"));
    // Rates: bad queries are explained.
    let (status, body) = http(addr, &request("GET", "/rates?q=%2B44%20abc", &[], b"")).await;
    assert_eq!(status, 422);
    assert!(body.contains("is not a digit"), "{body}");
    let (status, body) = http(addr, &request("GET", "/rates?q=4915112345678", &[], b"")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("PAKLINE") && body.contains("0.01204"),
        "{body}"
    );
    // Markup in input comes back escaped.
    let (_, body) = http(
        addr,
        &request(
            "GET",
            "/rates?q=%3Cscript%3Ealert(1)%3C/script%3E",
            &[],
            b"",
        ),
    )
    .await;
    assert!(
        !body.contains("<script>") && body.contains("&lt;script&gt;"),
        "{body}"
    );

    // Hostile requests: oversized, malformed, wrong types, garbage bytes.
    let big = vec![b'a'; 200 << 10];
    let (status, _) = http(addr, &request("POST", "/invite", &[FORM], &big)).await;
    assert_eq!(status, 413, "forms are small");
    let (status, _) = http(addr, &request("POST", "/invite", &[JSON], b"{}")).await;
    assert_eq!(status, 415);
    let (status, _) = http(
        addr,
        &request(
            "POST",
            "/admin/plugins/upload",
            &[("Cookie", "sb_admin=x")],
            b"--x--",
        ),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = http(addr, &request("GET", "/%FF%FE/../../etc/passwd", &[], b"")).await;
    assert_eq!(status, 404);
    let (status, _) = http(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    assert!(status == 0 || status == 400, "{status}");
    let (status, _) = http(
        addr,
        &request(
            "POST",
            "/admin/api/credit",
            &[
                auth,
                ("Content-Type", "application/json"),
                ("Content-Length", "99999999"),
            ],
            b"{}",
        ),
    )
    .await;
    assert!(status == 0 || status >= 400, "{status}");

    // Still up, and the figures are there.
    let (status, body) = http(addr, &request("GET", "/health", &[], b"")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"database\":\"ok\""), "{body}");
    let (status, metrics) = http(addr, &request("GET", "/metrics", &[], b"")).await;
    assert_eq!(status, 200);
    for family in [
        "# TYPE switchboard_sessions_live gauge",
        "switchboard_plugin_reloads_total{slot=\"router\"} 1",
        "switchboard_plugin_rejected_total{slot=\"router\"} 1",
        "switchboard_plugin_rollbacks_total{slot=\"router\"} 1",
        "switchboard_mixer_late_frames_total 0",
        "switchboard_billing_settlements_total 0",
        "switchboard_provider_attempts{provider=\"BEST\"} 10",
    ] {
        assert!(metrics.contains(family), "{family} in {metrics}");
    }
    // Random requests at every route: methods, content types and bodies
    // (form-ish, JSON-ish, multipart-ish, binary), with and without the
    // token. Any status will do; the host must keep answering.
    let routes = [
        "/",
        "/invite",
        "/rates?q=44",
        "/account",
        "/account/code",
        "/account/login",
        "/account/logout",
        "/admin",
        "/admin/login",
        "/admin/logout",
        "/admin/plugins/upload",
        "/admin/plugins/rollback",
        "/admin/shadow/upload",
        "/admin/shadow/promote",
        "/admin/shadow/stop",
        "/admin/sessions/end",
        "/admin/credit",
        "/admin/api/plugins",
        "/admin/api/plugins/router",
        "/admin/api/plugins/parser/rollback",
        "/admin/api/shadow",
        "/admin/api/shadow/promote",
        "/admin/api/sessions",
        "/admin/api/sessions/x",
        "/admin/api/providers",
        "/admin/api/credit",
        "/metrics",
        "/health",
    ];
    let types = [
        "application/x-www-form-urlencoded",
        "application/json",
        "multipart/form-data; boundary=XyZ",
        "multipart/form-data",
        "text/plain",
    ];
    let pieces: [&[u8]; 9] = [
        b"address=",
        b"%40",
        b"&code=",
        b"{\"account\":",
        b"\"amount\":\"1\"}",
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wasm\"\r\n\r\n",
        b"\0asm\x01\0\0\0",
        b"\xff\xfe\x00%%",
        b"--XyZ--\r\n",
    ];
    let mut seed: u64 = 0x5eed_cafe_f00d_d00d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let route = routes[next() as usize % routes.len()];
        let method = ["GET", "POST", "PUT", "DELETE"][next() as usize % 4];
        let mut body = Vec::new();
        for _ in 0..next() % 6 {
            body.extend_from_slice(pieces[next() as usize % pieces.len()]);
        }
        let content_type = ("Content-Type", types[next() as usize % types.len()]);
        let headers: Vec<(&str, &str)> = if next() % 2 == 0 {
            vec![content_type, auth, ("Cookie", "sb_admin=forged")]
        } else {
            vec![content_type]
        };
        let (status, _) = http(addr, &request(method, route, &headers, &body)).await;
        assert!(status >= 200, "{method} {route}: no answer");
    }
    assert!(
        host.plugins.shadow_stats().is_none() || host.plugins.clear_shadow(),
        "a shadow loaded by a random request is dropped"
    );

    let (status, body) = http(addr, &request("GET", "/health", &[], b"")).await;
    assert_eq!(
        status, 200,
        "still healthy after the random requests: {body}"
    );
}
