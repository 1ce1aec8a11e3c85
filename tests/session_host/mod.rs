//! The callback host of the session tests, assembled as `switchboard run`
//! does it: a configuration file with providers (SIPp far ends) and their
//! rate sheets, [`Service::start`], and a chat to drive it (the [`Bot`]
//! directly, or the XMPP bot). Shared by `tests/sessions.rs` and
//! `tests/call_health.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::sipp_peer::SippUas;
use crate::xmpp_peers::{self, Prosody};
use switchboard::billing::{Cdr, Micros, Rate, unix_ms};
use switchboard::chat::limit::RateLimit;
use switchboard::chat::xmpp::XmppBot;
use switchboard::chat::{Bot, Notice};
use switchboard::config::Config;
use switchboard::plugin::{Limits, PluginHost};
use switchboard::service::Service;
use tokio::sync::mpsc;

pub const SECS: Duration = Duration::from_secs(15);

/// A provider of the test host: its name, its far end, its rate sheet rows
/// (prefix, price per minute) and digest credentials.
pub struct Provider<'a> {
    pub name: &'a str,
    pub far_end: &'a SippUas,
    pub rates: &'a [(&'a str, &'a str)],
    pub credentials: Option<(&'a str, &'a str)>,
    /// More keys of its `[[sip.providers]]` table (a trunk profile).
    pub profile: &'a str,
    /// Where its SIP service is, when not at the far end itself (a
    /// carrier's proxy in front of it).
    /// (An address or a DNS name.)
    pub via: Option<String>,
}

impl<'a> Provider<'a> {
    pub fn new(name: &'a str, far_end: &'a SippUas, rates: &'a [(&'a str, &'a str)]) -> Self {
        Provider {
            name,
            far_end,
            rates,
            credentials: None,
            profile: "",
            via: None,
        }
    }
}

/// The seed's rates: +44 is cheapest through PROXICOM (0.014), +49
/// through PAKLINE (0.01204).
pub const PROXICOM_RATES: &[(&str, &str)] = &[("44", "0.014"), ("49", "0.0135")];
pub const PAKLINE_RATES: &[(&str, &str)] = &[("49", "0.01204"), ("44", "0.0159")];

/// A host assembled from a configuration file, as `switchboard run` does.
pub struct Host {
    pub service: Service,
    pub plugins: Arc<PluginHost>,
    pub dir: tempfile::TempDir,
    pub _watcher: Option<switchboard::plugin::Watcher>,
}

/// Writes the configuration (and each provider's rate sheet) into `dir`.
pub fn write_config(
    dir: &Path,
    providers: &[Provider],
    gateways: &[(&str, String)],
    sip_extra: &str,
    extra: &str,
) -> PathBuf {
    let mut toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\n{sip_extra}\n\n\
         [billing]\ndatabase = \"sqlite://{}/billing.db\"\nhost_id = \"test\"\ncurrency = \"USD\"\n\
         stats = {{ secs = 3600, attempts = 500, min_samples = 1 }}\n\n\
         [sessions]\nring_timeout_secs = 5\nsip_legs = \"any\"\n{extra}\n",
        dir.display()
    );
    if !gateways.is_empty() {
        toml.push_str("[sessions.gateways]\n");
        for (scheme, template) in gateways {
            toml.push_str(&format!("{scheme} = \"{template}\"\n"));
        }
    }
    for p in providers {
        let sheet = dir.join(format!("{}.csv", p.name));
        let mut csv = String::from("provider,prefix,price_per_minute\n");
        for (prefix, price) in p.rates {
            csv.push_str(&format!("{},{prefix},{price}\n", p.name));
        }
        std::fs::write(&sheet, csv).expect("rate sheet");
        toml.push_str(&format!(
            "\n[[sip.providers]]\nname = \"{}\"\naddress = \"{}\"\nkeepalive = false\nrates = \"{}\"\n",
            p.name,
            p.via.clone().unwrap_or(p.far_end.addr.to_string()),
            sheet.display()
        ));
        if let Some((user, pass)) = p.credentials {
            toml.push_str(&format!("username = \"{user}\"\npassword = \"{pass}\"\n"));
        }
        toml.push_str(p.profile);
        toml.push('\n');
    }
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

impl Host {
    pub async fn start(
        providers: &[Provider<'_>],
        gateways: &[(&str, String)],
        extra: &str,
    ) -> Host {
        Self::start_with(providers, gateways, "", extra).await
    }

    /// [`Host::start`] with `sip_extra` keys in `[sip]`.
    pub async fn start_with(
        providers: &[Provider<'_>],
        gateways: &[(&str, String)],
        sip_extra: &str,
        extra: &str,
    ) -> Host {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(dir.path(), providers, gateways, sip_extra, extra);
        let config = Config::load(&path).expect("the test configuration is valid");
        let plugins = Arc::new(PluginHost::new(Limits::default()).expect("plugins"));
        let service = Service::start(&config, Arc::clone(&plugins))
            .await
            .expect("the host starts");
        Host {
            service,
            plugins,
            dir,
            _watcher: None,
        }
    }

    pub async fn credit(&self, account: &str, amount: &str) {
        let amount: Micros = amount.parse().expect("amount");
        self.service
            .billing
            .store()
            .credit(account, amount, "USD", unix_ms(SystemTime::now()))
            .await
            .expect("credit");
    }

    pub async fn balance(&self, account: &str) -> Micros {
        self.service
            .billing
            .store()
            .account(account)
            .await
            .expect("account")
            .map_or(Micros::ZERO, |a| a.balance)
    }

    pub async fn cdrs(&self, account: &str) -> Vec<Cdr> {
        let mut cdrs = self
            .service
            .billing
            .store()
            .cdrs(account, 100)
            .await
            .expect("cdrs");
        cdrs.sort_by(|a, b| a.leg_id.cmp(&b.leg_id));
        cdrs
    }

    /// The bot on the console's path: the same [`Bot`], fed directly.
    pub fn chat(&mut self) -> Chat {
        let (_, empty) = mpsc::unbounded_channel();
        Chat {
            bot: Bot::new(
                Arc::clone(&self.plugins),
                self.service.manager.clone(),
                RateLimit {
                    burst: 100,
                    per_minute: 600,
                },
                2000,
            ),
            notices: std::mem::replace(&mut self.service.notices, empty),
            pending: Vec::new(),
        }
    }

    /// The XMPP bot logged in to `server`, with session notices forwarded
    /// to it (as `switchboard run` does).
    pub fn xmpp(&mut self, server: &Prosody) -> Arc<XmppBot> {
        xmpp_peers::serve_bot(server, &mut self.service, &self.plugins)
    }
}

pub async fn wait_online(bot: &XmppBot) {
    let deadline = Instant::now() + SECS;
    while !bot.stats().online.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "the bot did not log in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A user's view of the bot without a chat network: what it answers at
/// once, and the session notices it phrases later.
pub struct Chat {
    pub bot: Bot,
    pub notices: mpsc::UnboundedReceiver<Notice>,
    pub pending: Vec<Notice>,
}

impl Chat {
    /// Sends `text` as `who`; returns the immediate answers.
    pub fn say(&mut self, who: &str, text: &str) -> Vec<String> {
        self.bot.answer(Instant::now(), who, text)
    }

    /// The next message for `who` from a session, phrased by the replies plugin.
    pub async fn next(&mut self, who: &str) -> String {
        self.next_within(who, SECS).await
    }

    pub async fn next_within(&mut self, who: &str, within: Duration) -> String {
        let notice = if let Some(i) = self.pending.iter().position(|n| n.to == who) {
            self.pending.remove(i)
        } else {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                match tokio::time::timeout_at(deadline, self.notices.recv()).await {
                    Ok(Some(n)) if n.to == who => break n,
                    Ok(Some(n)) => self.pending.push(n),
                    _ => panic!("{who}: no message within {within:?}"),
                }
            }
        };
        self.bot
            .phrase(&notice.to, &notice.event)
            .expect("phrased")
            .join("\n")
    }

    /// Sends `text` and expects the session's next messages to be `replies`.
    pub async fn expect(&mut self, who: &str, replies: &[&str]) {
        for r in replies {
            assert_eq!(self.next(who).await, *r);
        }
    }

    /// Asserts nothing arrives for `who` within `within`.
    pub async fn quiet(&mut self, who: &str, within: Duration) {
        assert!(
            !self.pending.iter().any(|n| n.to == who),
            "{who} got {:?}",
            self.pending
        );
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(n)) = tokio::time::timeout_at(deadline, self.notices.recv()).await {
            assert_ne!(n.to, who, "{who} got {:?}", n.event);
            self.pending.push(n);
        }
    }
}

/// `N` of "…Charged time: N secs. Reason = …".
pub fn charged_secs(text: &str) -> u64 {
    text.split("Charged time: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no charged time in {text:?}"))
}

pub fn price(text: &str) -> Rate {
    Rate::per_minute(text.parse().expect("price"))
}

/// Every leg's CDR is settled at its rate, the charged time is the
/// longest leg's, and the balance went down by exactly what they cost.
pub async fn assert_billed(host: &Host, account: &str, start: Micros, charged: u64) -> Vec<Cdr> {
    let cdrs = host.cdrs(account).await;
    let mut total = Micros::ZERO;
    for c in &cdrs {
        let secs = c.billed_secs.expect("settled");
        let cost = c.cost.expect("settled");
        assert_eq!(
            cost,
            Rate::per_minute(c.price_per_minute).cost(secs),
            "{c:?}"
        );
        total = total.plus(cost);
    }
    let longest = cdrs.iter().filter_map(|c| c.billed_secs).max().unwrap_or(0);
    assert_eq!(
        longest, charged,
        "charged time is the longest leg's: {cdrs:?}"
    );
    assert_eq!(host.balance(account).await, start.minus(total), "{cdrs:?}");
    cdrs
}

pub fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
