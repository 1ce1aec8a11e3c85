//! Every live session of the host, found by its owner's chat address. The
//! chat hands it call commands ([`super::Sessions`]); it starts a
//! [`SessionTask`] per CALLBACK and passes later commands to the owner's
//! session. What sessions tell their owners comes out as [`Notice`]s for
//! the chat front end to phrase and send.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::SessionConfig;
use super::task::{Message, SessionTask, send_notice};
use crate::billing::{Billing, unix_ms};
use crate::media::{ConferenceId, EngineEvent, MediaEngine};
use crate::plugin::PluginHost;
use crate::plugin::types::{Balance, Command, EndReason, Error, Event, Leg, Scheme, WrongState};
use crate::sip::SipService;

pub use super::port::Notice;
use super::port::Sessions;

/// What sessions run on.
pub struct Services {
    /// Signalling.
    pub sip: SipService,
    /// The mixer.
    pub media: Arc<MediaEngine>,
    /// Accounts, rates, CDRs, provider statistics.
    pub billing: Arc<Billing>,
    /// Router and replies plugins (the parser is the chat's).
    pub plugins: Arc<PluginHost>,
    /// Limits and gateways; replaced whole by a reload.
    config: arc_swap::ArcSwap<SessionConfig>,
    /// No new CALLBACKs: the host is draining before a restart.
    draining: watch::Sender<bool>,
    /// The account currency, for BALANCE.
    pub currency: String,
    /// Provider name → its SIP address (an IP address or a DNS name), for
    /// request URIs.
    pub providers: HashMap<String, crate::sip::HostPort>,
    /// Each provider's channel limit (`max_calls`), where it has one.
    pub max_calls: HashMap<String, u32>,
    /// Counters for metrics.
    pub counters: SessionCounters,
    /// What `sip:` legs may reach.
    pub sip_rules: super::target::SipLegRules,
    notices: mpsc::UnboundedSender<Notice>,
    live: Mutex<HashMap<String, Vec<Live>>>,
    up: Mutex<HashMap<String, bool>>,
    count: watch::Sender<usize>,
    /// Each live session's inbox by its conference, for the mixer's events.
    media_inboxes: Mutex<HashMap<ConferenceId, mpsc::UnboundedSender<Message>>>,
}

/// What sessions have done since the host started (for `/metrics`).
pub struct SessionCounters {
    /// Sessions started.
    pub started: AtomicU64,
    /// CALLBACKs refused before any leg was rung (policy, per-user limit).
    pub refused: AtomicU64,
    /// Sessions ended, by end reason (indexed like [`END_REASONS`]).
    pub ended: [AtomicU64; END_REASONS.len()],
    /// Call attempts dialled (every failover attempt counts).
    pub attempts: AtomicU64,
    /// Legs answered.
    pub answered: AtomicU64,
    /// Seconds from dialling to answer, per provider.
    pub setup: crate::metrics::Histograms<crate::metrics::ProviderLabel>,
    /// Seconds from dialling to first ringing, per provider.
    pub post_dial: crate::metrics::Histograms<crate::metrics::ProviderLabel>,
}

impl Default for SessionCounters {
    fn default() -> Self {
        SessionCounters {
            started: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            ended: Default::default(),
            attempts: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            setup: crate::metrics::call_setup(),
            post_dial: crate::metrics::post_dial_delay(),
        }
    }
}

impl std::fmt::Debug for SessionCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCounters")
            .field("started", &self.started)
            .field("answered", &self.answered)
            .finish_non_exhaustive()
    }
}

/// Every end reason, in the order of [`SessionCounters::ended`].
pub const END_REASONS: [EndReason; 11] = [
    EndReason::EndedByHangup,
    EndReason::EndedBySource,
    EndReason::EndedByDestination,
    EndReason::CreditExhausted,
    EndReason::SourceFailed,
    EndReason::DestinationFailed,
    EndReason::Shutdown,
    EndReason::EndedByOperator,
    EndReason::MediaTimeout,
    EndReason::MaxDuration,
    EndReason::SessionExpired,
];

impl SessionCounters {
    pub(super) fn ended(&self, reason: EndReason) {
        if let Some(i) = END_REASONS.iter().position(|r| *r == reason) {
            self.ended[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Live {
    id: String,
    inbox: mpsc::UnboundedSender<Message>,
}

impl Services {
    /// The session limits and gateways in force (a reload replaces them;
    /// sessions already up keep what they read).
    pub fn config(&self) -> Arc<SessionConfig> {
        self.config.load_full()
    }

    /// Sends the mixer's events about `conference` to `inbox` from now on
    /// (none: no longer).
    pub(super) fn media_inbox(
        &self,
        conference: ConferenceId,
        inbox: Option<mpsc::UnboundedSender<Message>>,
    ) {
        let mut map = self.media_inboxes.lock().unwrap_or_else(|e| e.into_inner());
        match inbox {
            Some(inbox) => map.insert(conference, inbox),
            None => map.remove(&conference),
        };
    }

    pub(super) fn tell(&self, to: &str, event: Event) {
        send_notice(&self.notices, to, event);
    }

    /// Takes session `id` off the live list (and the live count) and then
    /// tells its owner `last`, all under the list's lock: a CALLBACK sent on
    /// reading "Call aborted" finds no session in the way, and whoever saw
    /// the count fall and then takes the lock (shutdown) finds the last word
    /// already sent.
    pub(super) fn finished(&self, owner: &str, id: &str, last: Event) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sessions) = live.get_mut(owner) {
            sessions.retain(|s| s.id != id);
            if sessions.is_empty() {
                live.remove(owner);
            }
        }
        let n = live.values().map(Vec::len).sum();
        self.count.send_replace(n);
        self.tell(owner, last);
    }

    pub(super) fn provider_up(&self, name: &str) -> bool {
        let up = self.up.lock().unwrap_or_else(|e| e.into_inner());
        up.get(name).copied().unwrap_or(true)
    }

    /// What the last OPTIONS probe said of provider `name`: up, down, or
    /// none when it is not probed (keepalive off) or not yet.
    pub fn probed_up(&self, name: &str) -> Option<bool> {
        let up = self.up.lock().unwrap_or_else(|e| e.into_inner());
        up.get(name).copied()
    }

    /// Whether provider `name` has as many calls up as its `max_calls`.
    pub(super) fn trunk_full(&self, name: &str) -> bool {
        self.max_calls
            .get(name)
            .is_some_and(|max| self.sip.calls_through(name) >= *max)
    }

    pub(super) fn provider_address(&self, name: &str) -> Option<&crate::sip::HostPort> {
        self.providers.get(name)
    }
}

/// The rules for `sip:` legs: `[sessions] sip_legs`, with every provider,
/// gateway and own SIP address refused as a host.
fn sip_leg_rules(
    config: &SessionConfig,
    providers: &[crate::sip::Provider],
    sip: &SipService,
    policy: crate::billing::policy::Policy,
) -> super::target::SipLegRules {
    let mut rules = super::target::SipLegRules::new(config.sip_legs, Vec::new(), policy);
    for p in providers {
        for hop in p.hops() {
            rules
                .refused
                .push((hop.host.clone(), hop.port.unwrap_or(5060)));
        }
    }
    for (_, addr) in sip.local_addrs() {
        rules.refuse_addr(*addr);
        if let Some(external) = sip.external_address() {
            let port = external.port.unwrap_or(addr.port());
            rules.refused.push((external.host.clone(), port));
        }
    }
    for template in config.gateways.values() {
        if let Ok(uri) = super::target::gateway_uri(template, "user") {
            rules
                .refused
                .push((uri.host().clone(), uri.port().unwrap_or(5060)));
        }
    }
    rules
}

/// Why `leg` (not a phone leg) may not be rung, as the error to tell the
/// user; none when it may.
fn leg_refusal(services: &Services, leg: &Leg, command: &str) -> Option<Error> {
    super::target::resolve(leg, &services.config().gateways, &services.sip_rules)
        .err()
        .and_then(|e| e.refusal(leg, command))
}

/// The host's sessions.
pub struct SessionManager {
    services: Arc<Services>,
    runtime: tokio::runtime::Handle,
    host: String,
    next: AtomicU64,
    count: watch::Receiver<usize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SessionManager {
    /// Starts the manager on the current tokio runtime: marks billing
    /// progress every `progress_interval_secs`, follows provider status and
    /// drains the mixer's events. Returns the manager and the notices its
    /// sessions send.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        sip: SipService,
        media: Arc<MediaEngine>,
        mut media_events: mpsc::UnboundedReceiver<EngineEvent>,
        billing: Arc<Billing>,
        plugins: Arc<PluginHost>,
        config: SessionConfig,
        providers: &[crate::sip::Provider],
        currency: String,
        host: String,
    ) -> (Arc<SessionManager>, mpsc::UnboundedReceiver<Notice>) {
        let (notices, notice_rx) = mpsc::unbounded_channel();
        let (count, count_rx) = watch::channel(0);
        let sip_rules = sip_leg_rules(&config, providers, &sip, (*billing.policy()).clone());
        let services = Arc::new(Services {
            sip_rules,
            sip,
            media,
            billing,
            plugins,
            config: arc_swap::ArcSwap::from_pointee(config),
            draining: watch::channel(false).0,
            currency,
            providers: providers
                .iter()
                .map(|p| (p.name.clone(), p.address.clone()))
                .collect(),
            max_calls: providers
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.max_calls?)))
                .collect(),
            counters: SessionCounters::default(),
            notices,
            live: Mutex::new(HashMap::new()),
            up: Mutex::new(HashMap::new()),
            count,
            media_inboxes: Mutex::new(HashMap::new()),
        });
        let mut tasks = Vec::new();
        let billing = Arc::clone(&services.billing);
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(billing.progress_interval());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match billing.record_progress(unix_ms(SystemTime::now())).await {
                    Ok(_) => {}
                    Err(e @ crate::billing::BillingError::LeaseLost(_)) => {
                        tracing::error!(error = %e, "another process serves this host id now");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot mark call progress"),
                }
            }
        }));
        let weak = Arc::downgrade(&services);
        tasks.push(tokio::spawn(async move {
            while let Some(e) = media_events.recv().await {
                tracing::debug!(conference = e.conference.0, event = ?e.event, "media");
                let Some(services) = weak.upgrade() else {
                    return;
                };
                let inbox = services
                    .media_inboxes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&e.conference)
                    .cloned();
                if let Some(inbox) = inbox {
                    let _ = inbox.send(Message::Media(e.event));
                }
            }
        }));
        let weak = Arc::downgrade(&services);
        let names: Vec<String> = providers
            .iter()
            .filter(|p| p.keepalive)
            .map(|p| p.name.clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(services) = weak.upgrade() else {
                    return;
                };
                for name in &names {
                    if let Ok(Some(up)) = services.sip.provider_up(name).await {
                        let mut map = services.up.lock().unwrap_or_else(|e| e.into_inner());
                        map.insert(name.clone(), up);
                    }
                }
            }
        }));
        let manager = SessionManager {
            services,
            runtime: tokio::runtime::Handle::current(),
            host,
            next: AtomicU64::new(0),
            count: count_rx,
            tasks,
        };
        (Arc::new(manager), notice_rx)
    }

    /// What sessions run on.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Live sessions on this host.
    pub fn live(&self) -> usize {
        *self.count.borrow()
    }

    /// Every live session with its legs, oldest first. A session busy for
    /// more than a second (a stuck database) is listed without legs.
    pub async fn sessions(&self) -> Vec<super::SessionView> {
        let asked: Vec<_> = {
            let live = self.services.live.lock().unwrap_or_else(|e| e.into_inner());
            live.iter()
                .flat_map(|(owner, sessions)| sessions.iter().map(move |s| (owner, s)))
                .map(|(owner, s)| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = s.inbox.send(Message::Describe(tx));
                    (owner.clone(), s.id.clone(), rx)
                })
                .collect()
        };
        // All asked at once: one busy session delays the list by at most
        // the timeout, not the timeout times the sessions.
        let answers =
            futures::future::join_all(asked.into_iter().map(|(owner, id, rx)| async move {
                match tokio::time::timeout(Duration::from_secs(1), rx).await {
                    Ok(Ok(view)) => Some(view),
                    // Ended meanwhile.
                    Ok(Err(_)) => None,
                    Err(_) => Some(super::SessionView {
                        started_ms: started_ms(&id),
                        id,
                        owner,
                        legs: Vec::new(),
                    }),
                }
            }))
            .await;
        let mut views: Vec<super::SessionView> = answers.into_iter().flatten().collect();
        views.sort_by(|a, b| (a.started_ms, &a.id).cmp(&(b.started_ms, &b.id)));
        views
    }

    /// Ends session `id` (reason `EndedByOperator`); false when no such
    /// session is live.
    pub fn end(&self, id: &str) -> bool {
        let live = self.services.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values()
            .flatten()
            .find(|s| s.id == id)
            .is_some_and(|s| s.inbox.send(Message::EndByOperator).is_ok())
    }

    /// Ends every session (reason `Shutdown`), waiting at most `grace` for
    /// them to settle.
    pub async fn shutdown(&self, grace: Duration) {
        {
            let live = self.services.live.lock().unwrap_or_else(|e| e.into_inner());
            for s in live.values().flatten() {
                let _ = s.inbox.send(Message::Shutdown);
            }
        }
        let mut count = self.count.clone();
        let _ = tokio::time::timeout(grace, count.wait_for(|n| *n == 0)).await;
        // The last session may still be telling its owner (it does so
        // under the lock, after the count fell): wait for that word.
        drop(self.services.live.lock().unwrap_or_else(|e| e.into_inner()));
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Replaces the session limits and gateways (a configuration reload):
    /// new sessions use them, live ones keep theirs.
    pub fn set_config(&self, config: SessionConfig) {
        self.services.config.store(Arc::new(config));
    }

    /// Stops taking CALLBACKs (they are answered with
    /// [`Error::Draining`]); live sessions go on. Returns false if the host
    /// was draining already.
    pub fn begin_drain(&self) -> bool {
        !self.services.draining.send_replace(true)
    }

    /// Whether the host is draining; changes when [`Self::begin_drain`] is called.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.services.draining.subscribe()
    }

    /// Drains: no new CALLBACKs, the live sessions go on for up to
    /// `within`, then the rest end with `Shutdown` (as [`Self::shutdown`]
    /// with `grace`). Returns how many were still up at the deadline.
    pub async fn drain(&self, within: Duration, grace: Duration) -> usize {
        self.begin_drain();
        let mut count = self.count.clone();
        let _ = tokio::time::timeout(within, count.wait_for(|n| *n == 0)).await;
        let left = self.live();
        self.shutdown(grace).await;
        left
    }

    fn start_session(&self, owner: &str, args: crate::plugin::types::CallbackArgs) -> Vec<Event> {
        if *self.services.draining.borrow() {
            self.services
                .counters
                .refused
                .fetch_add(1, Ordering::Relaxed);
            return vec![Event::Error(Error::Draining)];
        }
        // A number the policy refuses, or a sip: leg the rules refuse, is
        // refused before anyone is rung.
        for leg in [&args.source, &args.destination] {
            let refusal = if leg.scheme == Scheme::Phone {
                self.services
                    .billing
                    .policy()
                    .check(&leg.address)
                    .err()
                    .map(|_| Error::NumberRefused(leg.clone()))
            } else {
                leg_refusal(&self.services, leg, "CALLBACK")
            };
            if let Some(error) = refusal {
                self.services
                    .counters
                    .refused
                    .fetch_add(1, Ordering::Relaxed);
                return vec![Event::Error(error)];
            }
        }
        let (inbox, messages) = mpsc::unbounded_channel();
        let id = format!(
            "{}-{}-{}",
            self.host,
            unix_ms(SystemTime::now()),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        {
            let mut live = self.services.live.lock().unwrap_or_else(|e| e.into_inner());
            let mine = live.entry(owner.to_string()).or_default();
            if mine.len() >= self.services.config().max_per_user as usize {
                self.services
                    .counters
                    .refused
                    .fetch_add(1, Ordering::Relaxed);
                return vec![wrong(
                    "CALLBACK",
                    "you already have a call in progress; HANGUP ends it",
                )];
            }
            mine.push(Live {
                id: id.clone(),
                inbox: inbox.clone(),
            });
            let n = live.values().map(Vec::len).sum();
            self.services.count.send_replace(n);
        }
        self.services
            .counters
            .started
            .fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("session", id = %id);
        self.runtime.spawn(
            SessionTask::run(
                Arc::clone(&self.services),
                id,
                owner.to_string(),
                args,
                inbox,
                messages,
            )
            .instrument(span),
        );
        Vec::new()
    }

    fn balance(&self, owner: &str) {
        let services = Arc::clone(&self.services);
        let owner = owner.to_string();
        self.runtime.spawn(async move {
            let event = match services.billing.store().account(&owner).await {
                Ok(Some(a)) => Event::Balance(Balance {
                    amount: a.available().0,
                    currency: a.currency,
                }),
                Ok(None) => Event::Balance(Balance {
                    amount: 0,
                    currency: services.currency.clone(),
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a balance");
                    Event::Error(Error::CallsUnavailable)
                }
            };
            services.tell(&owner, event);
        });
    }
}

/// The start time in a session id (`host-ms-n`).
fn started_ms(id: &str) -> i64 {
    id.rsplit('-')
        .nth(1)
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

fn wrong(command: &str, state: &str) -> Event {
    Event::Error(Error::WrongState(WrongState {
        command: command.into(),
        state: state.into(),
    }))
}

impl Sessions for SessionManager {
    fn command(&self, sender: &str, command: Command) -> Vec<Event> {
        let keyword = match &command {
            Command::Callback(_) => "CALLBACK",
            Command::List => "LIST",
            Command::Add(_) => "ADD",
            Command::Del(_) => "DEL",
            Command::Hangup => "HANGUP",
            Command::Help => return vec![Event::Help],
            Command::Balance => {
                self.balance(sender);
                return Vec::new();
            }
        };
        if let Command::Callback(args) = command {
            return self.start_session(sender, args);
        }
        let live = self.services.live.lock().unwrap_or_else(|e| e.into_inner());
        // With several sessions allowed, commands go to the newest.
        match live.get(sender).and_then(|s| s.last()) {
            Some(s) if s.inbox.send(Message::Command(command)).is_ok() => Vec::new(),
            _ => vec![wrong(keyword, "no call in progress")],
        }
    }
}
