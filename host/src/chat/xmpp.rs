//! The XMPP bot (tokio-xmpp): logs in, sends presence, approves and returns
//! subscriptions, answers chat messages through the [`Bot`], and keeps the
//! replies of an outage in a bounded [`Outbox`] until it is back online.
//!
//! It runs on tokio-xmpp's `StanzaStream` rather than its `Client`: the
//! stream reconnects by itself (backoff from 1 s to 30 s) and, unlike the
//! client, says when the connection is lost (`Suspended`), which is when
//! replies must go to the outbox instead of a dead socket.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::{DnsConfig, StartTlsServerConnector, TcpServerConnector};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Roster, Subscription};
use tokio_xmpp::stanzastream::{Event as XmppEvent, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::Timeouts;

use super::ChatError;
use super::bot::Bot;
use super::outbox::Outbox;
use crate::plugin::types::Event;

/// The `[xmpp]` section: the bot's account and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XmppConfig {
    /// The bot's address, e.g. `callback@example.org`.
    pub jid: String,
    /// Its password.
    pub password: String,
    /// `host:port` to connect to instead of looking up the domain's SRV record.
    pub server: Option<String>,
    /// Log in without TLS. Only for tests on loopback: the password and
    /// every message would cross the network in clear.
    pub allow_plaintext: bool,
    /// Per-sender limit.
    pub rate_limit: super::limit::RateLimit,
    /// Longer replies are split into several messages.
    pub max_reply_chars: usize,
    /// Replies kept while offline; the oldest are dropped beyond this.
    pub outbox: usize,
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            jid: String::new(),
            password: String::new(),
            server: None,
            allow_plaintext: false,
            rate_limit: super::limit::RateLimit::default(),
            max_reply_chars: 2000,
            outbox: 1000,
        }
    }
}

/// What the bot has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct XmppStats {
    /// Times it came online.
    pub connects: AtomicU64,
    /// Whether it is online now.
    pub online: AtomicBool,
    /// Chat messages answered.
    pub messages: AtomicU64,
    /// Replies dropped from a full outbox.
    pub dropped: AtomicU64,
}

/// The running bot: invite addresses, send later events, read its figures.
pub struct XmppBot {
    invites: mpsc::UnboundedSender<BareJid>,
    notices: mpsc::UnboundedSender<(BareJid, Outgoing)>,
    stats: Arc<XmppStats>,
    task: tokio::task::JoinHandle<()>,
}

impl XmppBot {
    /// Starts the bot on the current tokio runtime.
    pub fn start(config: XmppConfig, bot: Bot) -> Result<XmppBot, ChatError> {
        let jid = BareJid::from_str(&config.jid)
            .map_err(|e| ChatError::Config(format!("xmpp.jid {:?}: {e}", config.jid)))?;
        let timeouts = Timeouts {
            read_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(30),
        };
        let dns = match &config.server {
            Some(addr) => DnsConfig::Addr { addr: addr.clone() },
            None => DnsConfig::srv_default_client(jid.domain().as_str()),
        };
        let (jid, password) = (Jid::from(jid), config.password.clone());
        let stream = if config.allow_plaintext {
            StanzaStream::new_c2s(TcpServerConnector::from(dns), jid, password, timeouts, 64)
        } else {
            StanzaStream::new_c2s(
                StartTlsServerConnector::from(dns),
                jid,
                password,
                timeouts,
                64,
            )
        };
        let (invites, invite_rx) = mpsc::unbounded_channel();
        let (notices, notice_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(XmppStats::default());
        let task = tokio::spawn(run(
            stream,
            bot,
            Outbox::new(config.outbox),
            invite_rx,
            notice_rx,
            Arc::clone(&stats),
        ));
        Ok(XmppBot {
            invites,
            notices,
            stats,
            task,
        })
    }

    /// Sends a subscription request to `address` (the invite page's button).
    pub fn invite(&self, address: &str) -> Result<(), ChatError> {
        let jid = BareJid::from_str(address)
            .map_err(|e| ChatError::Config(format!("{address:?} is not an XMPP address: {e}")))?;
        self.invites
            .send(jid)
            .map_err(|_| ChatError::Config("the XMPP bot has stopped".into()))
    }

    /// Tells `address` about `event` (session progress that comes later).
    pub fn notify(&self, address: &str, event: Event) -> Result<(), ChatError> {
        let jid = BareJid::from_str(address)
            .map_err(|e| ChatError::Config(format!("{address:?} is not an XMPP address: {e}")))?;
        self.notices
            .send((jid, Outgoing::Event(event)))
            .map_err(|_| ChatError::Config("the XMPP bot has stopped".into()))
    }

    /// Sends `text` to `address` as it is, not phrased by the replies plugin
    /// (a web login code).
    pub fn send_text(&self, address: &str, text: &str) -> Result<(), ChatError> {
        let jid = BareJid::from_str(address)
            .map_err(|e| ChatError::Config(format!("{address:?} is not an XMPP address: {e}")))?;
        self.notices
            .send((jid, Outgoing::Text(text.to_string())))
            .map_err(|_| ChatError::Config("the XMPP bot has stopped".into()))
    }

    /// Its figures.
    pub fn stats(&self) -> &XmppStats {
        &self.stats
    }

    /// Stops the bot.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// A message for a user that is not a reply to theirs.
#[derive(Debug)]
enum Outgoing {
    /// Session progress, phrased by the replies plugin.
    Event(Event),
    /// Text sent as it is.
    Text(String),
}

impl super::Messenger for XmppBot {
    fn invite(&self, address: &str) -> Result<(), ChatError> {
        XmppBot::invite(self, address)
    }

    fn send(&self, address: &str, text: &str) -> Result<(), ChatError> {
        self.send_text(address, text)
    }
}

/// The explanation for a message from someone who has not added the bot.
pub const NOT_SUBSCRIBED: &str = "Hello! Add me to your contacts (accept my subscription request) \
and I will place calls for you. Then send HELP for the commands.";

fn chat(to: Jid, body: String) -> Message {
    let mut m = Message::new(Some(to));
    m.type_ = MessageType::Chat;
    m.bodies.insert(Lang::default(), body);
    m
}

const ROSTER_QUERY: &str = "switchboard-roster";

async fn run(
    mut client: StanzaStream,
    mut bot: Bot,
    mut outbox: Outbox<Message>,
    mut invites: mpsc::UnboundedReceiver<BareJid>,
    mut notices: mpsc::UnboundedReceiver<(BareJid, Outgoing)>,
    stats: Arc<XmppStats>,
) {
    let mut online = false;
    let mut contacts: HashSet<BareJid> = HashSet::new();
    loop {
        let mut out: Vec<Stanza> = Vec::new();
        tokio::select! {
            event = client.next() => {
                let Some(event) = event else { break };
                tracing::debug!(?event, "XMPP event");
                match event {
                    XmppEvent::Stream(StreamEvent::Reset { .. } | StreamEvent::Resumed) => {
                        online = true;
                        stats.connects.fetch_add(1, Ordering::Relaxed);
                        stats.online.store(true, Ordering::Relaxed);
                        tracing::info!("XMPP bot online");
                        // Presence first: until it is sent the server holds
                        // messages for the bot instead of delivering them.
                        out.push(Presence::new(PresenceType::None).into());
                        let query = Iq::from_get(ROSTER_QUERY, Roster { ver: None, items: Vec::new() });
                        out.push(query.into());
                        out.extend(outbox.drain().map(Stanza::from));
                    }
                    XmppEvent::Stream(StreamEvent::Suspended) => {
                        online = false;
                        stats.online.store(false, Ordering::Relaxed);
                        tracing::warn!("XMPP connection lost; reconnecting");
                    }
                    XmppEvent::Stanza(Stanza::Presence(p)) => {
                        if let Some(from) = p.from.as_ref().map(|f| f.to_bare()) {
                            match p.type_ {
                                PresenceType::Subscribe => {
                                    // They add the bot: approve, and ask back.
                                    contacts.insert(from.clone());
                                    out.push(Presence::new(PresenceType::Subscribed).with_to(from.clone()).into());
                                    out.push(Presence::new(PresenceType::Subscribe).with_to(from).into());
                                }
                                PresenceType::Unsubscribe => {
                                    contacts.remove(&from);
                                    out.push(Presence::new(PresenceType::Unsubscribed).with_to(from).into());
                                }
                                _ => {}
                            }
                        }
                    }
                    XmppEvent::Stanza(Stanza::Message(m)) => {
                        // Error, groupchat and headline messages are not for
                        // us; chat states and receipts carry no body.
                        let chat_message = matches!(m.type_, MessageType::Chat | MessageType::Normal);
                        if let (true, Some(from), Some(body)) =
                            (chat_message, m.from.clone(), m.bodies.values().next())
                        {
                            let bare = from.to_bare();
                            stats.messages.fetch_add(1, Ordering::Relaxed);
                            if contacts.contains(&bare) {
                                for text in bot.answer(Instant::now(), bare.as_str(), body) {
                                    out.push(chat(from.clone(), text).into());
                                }
                            } else {
                                out.push(chat(from, NOT_SUBSCRIBED.to_string()).into());
                            }
                        }
                    }
                    XmppEvent::Stanza(Stanza::Iq(iq)) => {
                        if let Iq::Result { id, payload: Some(el), .. } = iq
                            && id == ROSTER_QUERY
                            && let Ok(roster) = Roster::try_from(el)
                        {
                            for item in roster.items {
                                if matches!(item.subscription, Subscription::From | Subscription::Both) {
                                    contacts.insert(item.jid);
                                }
                            }
                        }
                    }
                }
            }
            Some(to) = invites.recv() => {
                out.push(Presence::new(PresenceType::Subscribe).with_to(to).into());
            }
            Some((to, outgoing)) = notices.recv() => {
                match outgoing {
                    Outgoing::Event(event) => match bot.phrase(&to.to_string(), &event) {
                        Ok(texts) => out.extend(texts.into_iter().map(|t| Stanza::from(chat(to.clone().into(), t)))),
                        Err(e) => tracing::error!(error = %e, "cannot phrase a notice"),
                    },
                    Outgoing::Text(text) => out.push(chat(to.into(), text).into()),
                }
            }
        }
        for stanza in out {
            match stanza {
                Stanza::Message(message) if !online => outbox.push(message),
                // Presence and queries of a lost connection are redone on
                // the next one.
                _ if !online => {}
                stanza => {
                    client.send(Box::new(stanza)).await;
                }
            }
        }
        stats.dropped.store(outbox.dropped(), Ordering::Relaxed);
    }
}
