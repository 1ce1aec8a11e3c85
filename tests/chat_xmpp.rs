//! The XMPP bot against a real Prosody server on loopback, with real XMPP
//! clients (slixmpp, in their own processes): subscription both ways, a
//! stranger told how to subscribe, the invite, HELP, a parse error, calls
//! answered as unavailable, the rate limit, and a Prosody restart in the
//! middle (the bot reconnects, delivers what it phrased while offline, and
//! answers again).

mod common;
mod xmpp_peers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switchboard::chat::limit::RateLimit;
use switchboard::chat::xmpp::{NOT_SUBSCRIBED, XmppBot, XmppConfig};
use switchboard::chat::{Bot, Unwired};
use switchboard::plugin::types::Event;
use switchboard::plugin::{Limits, PluginHost};
use xmpp_peers::{DOMAIN, Prosody, User, befriend, bot_config};

const SECS: Duration = Duration::from_secs(15);

fn start_bot(server: &Prosody, limit: RateLimit, max_chars: usize) -> XmppBot {
    let plugins = Arc::new(PluginHost::new(Limits::default()).expect("plugins"));
    let bot = Bot::new(plugins, Arc::new(Unwired), limit, max_chars);
    let config = bot_config(server);
    XmppBot::start(config, bot).expect("bot starts")
}

async fn wait_online(bot: &XmppBot, connects: u64, within: Duration, server: &Prosody) {
    let deadline = Instant::now() + within;
    while bot.stats().connects.load(Ordering::Relaxed) < connects
        || !bot.stats().online.load(Ordering::Relaxed)
    {
        assert!(
            Instant::now() < deadline,
            "bot not online:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_commands_and_the_rate_limit() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = Prosody::start(&[
        ("switchboard", "bot-secret"),
        ("alice", "a"),
        ("bob", "b"),
        ("carol", "c"),
    ]);
    let bot_jid = format!("switchboard@{DOMAIN}");
    let bot = start_bot(
        &server,
        RateLimit {
            burst: 5,
            per_minute: 1,
        },
        300,
    );
    wait_online(&bot, 1, SECS, &server).await;

    // A stranger is told how to subscribe.
    let mut bob = tokio::task::block_in_place(|| User::login(&server, "bob", "b"));
    tokio::task::block_in_place(|| {
        bob.say(&bot_jid, "HELP");
        assert_eq!(bob.next_message(&bot_jid, SECS), NOT_SUBSCRIBED);
    });

    // Alice adds the bot; it approves and subscribes back.
    let mut alice = tokio::task::block_in_place(|| User::login(&server, "alice", "a"));
    tokio::task::block_in_place(|| {
        befriend(&mut alice, &bot_jid);
        // HELP is longer than this bot's 300 characters: it comes in pieces.
        alice.say(&bot_jid, "HELP");
        let help = alice.next_message(&bot_jid, SECS);
        assert!(
            help.starts_with("Commands:") && help.chars().count() <= 300,
            "{help}"
        );
        let rest = alice.next_message(&bot_jid, SECS);
        assert!(rest.chars().count() <= 300, "{rest}");
        let pieces = alice.collect(Duration::from_millis(500));
        assert!(pieces.iter().all(|v| {
            v["message"]
                .as_str()
                .is_none_or(|m| m.chars().count() <= 300)
        }));
        // Headline, groupchat and error messages are not commands: no
        // answer; the next chat message is answered first.
        for kind in ["headline", "groupchat", "error"] {
            alice.command(serde_json::json!({"send": "HELP", "to": bot_jid, "type": kind}));
        }
        alice.say(&bot_jid, "DIAL +4420");
        let e = alice.next_message(&bot_jid, SECS);
        assert!(e.starts_with("Error: unknown command 'DIAL'."), "{e}");
        alice.say(&bot_jid, "CALLBACK +442071234567 +4915112345678");
        assert_eq!(
            alice.next_message(&bot_jid, SECS),
            "Calls are not available on this host right now; no call was placed."
        );
        // Burst of 5: three used above; a flood of 10 more gets two
        // answers (in two pieces each) and one "too fast", then silence.
        alice.command(serde_json::json!({"flood": 10, "to": bot_jid, "body": "HELP"}));
        let got: Vec<String> = alice
            .collect(Duration::from_secs(3))
            .into_iter()
            .filter(|v| v["from"] == bot_jid.as_str())
            .filter_map(|v| v["message"].as_str().map(str::to_string))
            .collect();
        let too_fast = got.iter().filter(|m| m.contains("too fast")).count();
        let answered = got.iter().filter(|m| m.starts_with("Commands:")).count();
        assert_eq!((answered, too_fast), (2, 1), "{got:?}");
    });

    // The invite: Carol gets the bot's subscription request.
    let mut carol = tokio::task::block_in_place(|| User::login(&server, "carol", "c"));
    bot.invite(&format!("carol@{DOMAIN}")).expect("invite");
    tokio::task::block_in_place(|| {
        carol.expect(SECS, |v| v["subscribe"] == bot_jid.as_str());
    });
    assert!(bot.stats().messages.load(Ordering::Relaxed) >= 5);
    bot.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_reconnects_after_a_prosody_restart() {
    let mut server = Prosody::start(&[("switchboard", "bot-secret"), ("alice", "a")]);
    let bot_jid = format!("switchboard@{DOMAIN}");
    let bot = start_bot(&server, RateLimit::default(), 2000);
    wait_online(&bot, 1, SECS, &server).await;
    let mut alice = tokio::task::block_in_place(|| User::login(&server, "alice", "a"));
    tokio::task::block_in_place(|| {
        befriend(&mut alice, &bot_jid);
        alice.say(&bot_jid, "HELP");
        assert!(alice.next_message(&bot_jid, SECS).contains("CALLBACK"));
    });
    drop(alice);

    // The server goes away; something to tell Alice comes up meanwhile.
    server.stop();
    let deadline = Instant::now() + SECS;
    while bot.stats().online.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "the bot did not notice the server left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bot.notify(&format!("alice@{DOMAIN}"), Event::CreditWarning(60))
        .expect("notify");
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    wait_online(&bot, 2, Duration::from_secs(45), &server).await;

    // Alice comes back: the reply phrased while offline was delivered (to
    // her offline storage), and the bot answers again.
    let mut alice = tokio::task::block_in_place(|| User::login(&server, "alice", "a"));
    tokio::task::block_in_place(|| {
        let warning = alice.next_message(&bot_jid, SECS);
        assert!(warning.contains("60"), "{warning}");
        alice.say(&bot_jid, "HELP");
        assert!(alice.next_message(&bot_jid, SECS).contains("CALLBACK"));
    });
    assert_eq!(bot.stats().dropped.load(Ordering::Relaxed), 0);
    bot.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_login_unless_allowed() {
    // This Prosody offers no TLS: a bot that may not log in without it
    // must keep trying rather than send its password in clear.
    let server = Prosody::start(&[("switchboard", "bot-secret")]);
    let plugins = Arc::new(PluginHost::new(Limits::default()).expect("plugins"));
    let bot = Bot::new(plugins, Arc::new(Unwired), RateLimit::default(), 2000);
    let config = XmppConfig {
        jid: format!("switchboard@{DOMAIN}"),
        password: "bot-secret".into(),
        server: Some(format!("127.0.0.1:{}", server.port)),
        allow_plaintext: false,
        ..XmppConfig::default()
    };
    let bot = XmppBot::start(config, bot).expect("bot starts");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bot.stats().connects.load(Ordering::Relaxed), 0);
    let log = server.log();
    assert!(log.contains("Client connected"), "it did try:\n{log}");
    assert!(!log.contains("Authenticated as switchboard"), "{log}");
    bot.stop();
}

/// The bot as shipped (`switchboard serve`), with STARTTLS as by default:
/// it verifies the server's certificate (issued by a test CA, trusted
/// through `SSL_CERT_FILE`), logs in over TLS and answers. Its `[web]`
/// pages answer too, and their Invite button reaches the user through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_in_with_starttls_by_default() {
    let server = Prosody::start_with(&[("switchboard", "bot-secret"), ("bob", "b")], true);
    let config = server.dir().join("switchboard.toml");
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    std::fs::write(
        &config,
        format!(
            "[xmpp]\njid = \"switchboard@{DOMAIN}\"\npassword = \"bot-secret\"\nserver = \"127.0.0.1:{}\"\n\n\
             [sip]\nudp = [\"127.0.0.1:0\"]\n\n[billing]\ndatabase = \"sqlite://{}/billing.db\"\n\n\
             [web]\nlisten = \"{web}\"\nadmin_token = \"a-long-enough-admin-token\"\n",
            server.port,
            server.dir().display()
        ),
    )
    .expect("config");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("SSL_CERT_FILE", server.dir().join("ca.crt"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("switchboard serve");
    let deadline = Instant::now() + SECS;
    while !server
        .log()
        .contains("Authenticated as switchboard@localhost")
    {
        assert!(Instant::now() < deadline, "no login:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server.log().contains("Stream encrypted"),
        "{}",
        server.log()
    );
    let bot_jid = format!("switchboard@{DOMAIN}");
    let mut bob = tokio::task::block_in_place(|| User::login(&server, "bob", "b"));
    tokio::task::block_in_place(|| {
        bob.say(&bot_jid, "HELP");
        assert_eq!(bob.next_message(&bot_jid, SECS), NOT_SUBSCRIBED);
    });
    let (status, body) = common::http_text(
        web,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"database\":\"ok\""), "{body}");
    let form = format!("address=bob%40{DOMAIN}");
    let (status, body) = common::http_text(
        web,
        &format!(
            "POST /invite HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Invitation sent to bob@localhost"), "{body}");
    tokio::task::block_in_place(|| {
        bob.expect(SECS, |v| v["subscribe"] == bot_jid.as_str());
    });
    let (status, _) = common::http_text(
        web,
        "GET /admin/api/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401);
    let _ = serve.kill();
    let _ = serve.wait();
}
