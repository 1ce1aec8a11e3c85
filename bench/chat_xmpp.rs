//! XMPP round-trip benchmark: client → Prosody → the Switchboard bot →
//! parser and replies plugins → Prosody → client, all on loopback.
//!
//! Starts Prosody (its own configuration on a free port), the bot, and
//! `--users` XMPP clients (tokio-xmpp, in this process; the bot is a
//! separate connection). Every user subscribes to the bot, then keeps
//! `--window` messages in flight (`CALLBACK +442071234567 +4915112345678`,
//! answered "calls are not available" until sessions exist) until
//! `--messages` replies have come back. Prints replies per second and the
//! message-to-reply latency p50/p99.
//!
//! Run with `cargo bench -p switchboard --bench chat_xmpp` (add `-- --quick`
//! for a short smoke run; the test script does that). Needs `prosody`.

#[path = "common/mod.rs"]
mod common;

use common::{arg, flag, percentile};
#[path = "../tests/xmpp_peers/mod.rs"]
mod xmpp_peers;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard::chat::limit::RateLimit;
use switchboard::chat::xmpp::{XmppBot, XmppConfig};
use switchboard::chat::{Bot, Unwired};
use switchboard::plugin::{Limits, PluginHost};
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::{DnsConfig, TcpServerConnector};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::Roster;
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::Timeouts;
use xmpp_peers::{DOMAIN, Prosody};

const COMMAND: &str = "CALLBACK +442071234567 +4915112345678";

fn stream(server: &Prosody, name: &str) -> StanzaStream {
    let jid = Jid::from_str(&format!("{name}@{DOMAIN}")).expect("jid");
    StanzaStream::new_c2s(
        TcpServerConnector::from(DnsConfig::Addr {
            addr: format!("127.0.0.1:{}", server.port),
        }),
        jid,
        "pw".into(),
        Timeouts::default(),
        1024,
    )
}

/// One user: subscribes to the bot, then sends `count` messages with
/// `window` in flight; returns the latency of each reply.
async fn user(mut s: StanzaStream, bot: Jid, count: usize, window: usize) -> Vec<Duration> {
    // Online, subscribed (the bot approves at once), then go.
    loop {
        match s.next().await {
            Some(Event::Stream(StreamEvent::Reset { .. })) => break,
            Some(_) => {}
            None => return Vec::new(),
        }
    }
    s.send(Box::new(Presence::new(PresenceType::None).into()))
        .await;
    // Only resources that asked for the roster are told of subscriptions.
    let roster = Roster {
        ver: None,
        items: Vec::new(),
    };
    s.send(Box::new(Iq::from_get("roster", roster).into()))
        .await;
    s.send(Box::new(
        Presence::new(PresenceType::Subscribe)
            .with_to(bot.clone())
            .into(),
    ))
    .await;
    loop {
        match s.next().await {
            Some(Event::Stanza(Stanza::Presence(p))) if p.type_ == PresenceType::Subscribed => {
                break;
            }
            Some(_) => {}
            None => return Vec::new(),
        }
    }
    let message = || {
        let mut m = Message::new(Some(bot.clone()));
        m.type_ = MessageType::Chat;
        m.bodies.insert(Lang::default(), COMMAND.to_string());
        Stanza::from(m)
    };
    let mut sent = std::collections::VecDeque::new();
    let mut latencies = Vec::with_capacity(count);
    let mut next = 0;
    while latencies.len() < count {
        while next < count && sent.len() < window {
            sent.push_back(Instant::now());
            s.send(Box::new(message())).await;
            next += 1;
        }
        match s.next().await {
            Some(Event::Stanza(Stanza::Message(m))) if m.bodies.values().next().is_some() => {
                if let Some(at) = sent.pop_front() {
                    latencies.push(at.elapsed());
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    latencies
}

fn main() {
    let quick = flag("--quick");
    let users = arg("--users", 8).max(1);
    let messages = arg("--messages", if quick { 400 } else { 20_000 });
    let window = arg("--window", 4).max(1);
    let names: Vec<String> = (0..users).map(|i| format!("user{i}")).collect();
    let mut accounts: Vec<(&str, &str)> = vec![("switchboard", "pw")];
    accounts.extend(names.iter().map(|n| (n.as_str(), "pw")));
    let server = Prosody::start(&accounts);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let plugins = Arc::new(PluginHost::new(Limits::default()).expect("plugins"));
        let unlimited = RateLimit {
            burst: 1_000_000,
            per_minute: 60_000_000,
        };
        let bot = Bot::new(plugins, Arc::new(Unwired), unlimited, 2000);
        let config = XmppConfig {
            jid: format!("switchboard@{DOMAIN}"),
            password: "pw".into(),
            server: Some(format!("127.0.0.1:{}", server.port)),
            allow_plaintext: true,
            rate_limit: unlimited,
            ..XmppConfig::default()
        };
        let running = XmppBot::start(config, bot).expect("bot");
        let bot_jid = Jid::from_str(&format!("switchboard@{DOMAIN}")).expect("jid");
        let per_user = messages / users;
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for name in &names {
            let s = stream(&server, name);
            tasks.spawn(user(s, bot_jid.clone(), per_user, window));
        }
        let mut all = Vec::new();
        let mut first_reply_at = None;
        while let Some(done) = tasks.join_next().await {
            let lat = done.expect("user task");
            first_reply_at.get_or_insert(start.elapsed());
            all.extend(lat);
        }
        let elapsed = start.elapsed();
        running.stop();
        all.sort();
        assert_eq!(all.len(), per_user * users, "every message answered");
        println!(
            "xmpp round trip ({}): {} messages from {users} users, window {window}: {:.0} replies/s \
             (including login and subscription), latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            if quick { "quick" } else { "full" },
            all.len(),
            all.len() as f64 / elapsed.as_secs_f64(),
            percentile(&all, 0.50).as_secs_f64() * 1e3,
            percentile(&all, 0.99).as_secs_f64() * 1e3,
            all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    });
}
