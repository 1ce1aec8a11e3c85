//! The tokio task that runs one session: it feeds the [`Session`] machine
//! with commands, SIP call events and the credit clock, and carries out its
//! actions: routing with the router plugin and failover, dialling, ringback
//! and bridging in the mixer, authorising and settling every attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::duration::{CallLimit, LimitEvent};
use super::machine::{Action, Input, LegKey, Session};
use super::manager::{Notice, Services};
use super::target::{self, Target, TargetError, role_name};
use crate::billing::{
    AttemptOutcome, BillingError, CreditEvent, LegEnd, LegStart, Micros, Rate, SessionCredit,
    Settlement, unix_ms,
};
use crate::media::{ConferenceId, Law, LegConfig, LegHandle, MediaEvent, Playback, Tone};
use crate::plugin::callee_refused;
use crate::plugin::types::{
    Account, Attempt, CallbackArgs, Candidate, Command, EndReason, Error, Event, Failover,
    InsufficientCredit, LeaveReason, Leg, LegFailure, LegRole, ProviderStats, RouteRequest,
    SessionEnded, SipFailure,
};
use crate::sip::{AudioSdp, CallEvent, CallId, CallRequest, Codec, Direction};

/// What reaches a session task.
#[derive(Debug)]
pub enum Message {
    /// A user command (LIST, ADD, DEL, HANGUP).
    Command(Command),
    /// Progress of one attempt's SIP call.
    Call {
        /// The leg.
        key: LegKey,
        /// Which attempt of the leg.
        attempt: u32,
        /// What happened.
        event: CallEvent,
    },
    /// End the session (the host is stopping).
    Shutdown,
    /// End the session (an operator asked).
    EndByOperator,
    /// Describe the session's legs.
    Describe(tokio::sync::oneshot::Sender<super::SessionView>),
    /// Something the mixer saw on one of the session's legs.
    Media(MediaEvent),
}

/// How a leg is being reached.
enum Plan {
    /// One SIP URI, free.
    Direct(crate::sip::TargetUri),
    /// Providers in the router's order.
    Routed {
        number: String,
        request: RouteRequest,
        attempts: Vec<Attempt>,
    },
}

/// The host side of one leg.
struct LegRun {
    role: LegRole,
    leg: Leg,
    media: LegHandle,
    plan: Plan,
    /// Index of the current attempt.
    attempt: u32,
    call: Option<CallId>,
    /// The current attempt's CDR id, until it is settled.
    cdr: Option<String>,
    provider: Option<String>,
    dialled: Instant,
    dialled_ms: i64,
    ringing_ms: Option<u32>,
    answered: Option<Instant>,
    /// Whether its media leg is still in the conference.
    in_mix: bool,
    /// The current attempt's SIP Call-ID, once placed.
    sip_call_id: Option<String>,
}

/// One running session.
pub struct SessionTask {
    id: String,
    owner: String,
    machine: Session,
    credit: SessionCredit<String>,
    limit: CallLimit,
    services: Arc<Services>,
    conference: ConferenceId,
    legs: HashMap<LegKey, LegRun>,
    settled: Vec<Settlement>,
    inbox: mpsc::UnboundedSender<Message>,
    balance: Micros,
    ended: Option<EndReason>,
    started_ms: i64,
    /// Legs in the order they were dialled, for [`SessionTask::view`].
    order: Vec<LegKey>,
}

impl SessionTask {
    /// Runs a session for `args` until it ends; `inbox` feeds it. The
    /// caller gives it its tracing span (`session`, with the id).
    pub async fn run(
        services: Arc<Services>,
        id: String,
        owner: String,
        args: CallbackArgs,
        inbox: mpsc::UnboundedSender<Message>,
        mut messages: mpsc::UnboundedReceiver<Message>,
    ) {
        let conference = match services.media.create_conference() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(session = %id, error = %e, "cannot open a conference");
                services.finished(&owner, &id, Event::Error(Error::CallsUnavailable));
                return;
            }
        };
        let balance = match services.billing.store().account(&owner).await {
            Ok(Some(a)) => a.available(),
            _ => Micros::ZERO,
        };
        let (machine, actions) = Session::new(
            args.source,
            args.destination,
            args.source_provider,
            args.destination_provider,
        );
        services.media_inbox(conference, Some(inbox.clone()));
        let mut task = SessionTask {
            credit: services.billing.session_credit(),
            limit: CallLimit::new(Duration::from_secs(services.config().max_call_secs)),
            id,
            owner,
            machine,
            services,
            conference,
            legs: HashMap::new(),
            settled: Vec::new(),
            inbox,
            balance,
            ended: None,
            started_ms: unix_ms(SystemTime::now()),
            order: Vec::new(),
        };
        tracing::info!(owner = %task.owner, "session started");
        task.perform(actions).await;
        while task.ended.is_none() {
            let deadline = [task.credit.poll_timeout(), task.limit.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let message = tokio::select! {
                m = messages.recv() => m,
                _ = sleep_until(deadline) => {
                    task.credit_timeout().await;
                    task.limit_timeout().await;
                    continue;
                }
            };
            let Some(message) = message else {
                task.feed(Input::Shutdown).await;
                break;
            };
            match message {
                Message::Command(c) => task.feed(Input::Command(c)).await,
                Message::Shutdown => task.feed(Input::Shutdown).await,
                Message::EndByOperator => task.feed(Input::EndedByOperator).await,
                Message::Describe(reply) => {
                    let _ = reply.send(task.view());
                }
                Message::Call {
                    key,
                    attempt,
                    event,
                } => task.call_event(key, attempt, event).await,
                Message::Media(event) => task.media_event(event).await,
            }
        }
    }

    /// A leg went silent for its media timeout: its far end is gone (a
    /// phone switched off, a NAT binding lost, a crashed trunk) and sent no
    /// BYE. It is hung up and billed to its last packet.
    async fn media_event(&mut self, event: MediaEvent) {
        let MediaEvent::TimedOut { leg, last_heard } = event else {
            return;
        };
        let Some((&key, l)) = self.legs.iter_mut().find(|(_, l)| l.media.id == leg) else {
            return;
        };
        if l.answered.is_none() || l.cdr.is_none() || !l.in_mix {
            return;
        }
        let now = Instant::now();
        let silent = now.saturating_duration_since(last_heard);
        tracing::warn!(
            leg = key,
            role = role_name(l.role),
            provider = l.provider.as_deref().unwrap_or("-"),
            call_id = l.sip_call_id.as_deref().unwrap_or("-"),
            silent_ms = millis(silent),
            "no media from the leg: ending it"
        );
        if let Some(call) = l.call.take() {
            self.services.sip.hangup(call);
        }
        let at_ms = unix_ms(SystemTime::now()).saturating_sub(i64::from(millis(silent)));
        self.settle_at(key, "MediaTimeout", None, last_heard, at_ms)
            .await;
        self.feed(Input::Left(key, LeaveReason::MediaTimeout)).await;
        if self.ended.is_none() && !self.machine.is_live(key) {
            self.release_media(key);
        }
    }

    async fn limit_timeout(&mut self) {
        match self.limit.handle_timeout(Instant::now()) {
            None => {}
            Some(LimitEvent::Warning { secs_left }) => {
                self.feed(Input::DurationWarning(secs_left)).await
            }
            Some(LimitEvent::Reached) => self.feed(Input::MaxDuration).await,
        }
    }

    /// What the mixer must know of a leg from its SDP: where it receives,
    /// which ways media flows (RFC 3264 §8.4 hold: `sendonly`, `inactive`
    /// or `c=0.0.0.0` from it means we send it nothing), and how long it may
    /// be silent once answered.
    fn media_config(&self, law: Law, sdp: &AudioSdp, answered: bool) -> LegConfig {
        let media = self.services.media.config();
        let nowhere = sdp.address.is_unspecified();
        let (send, receive) = match sdp.direction {
            Direction::SendRecv => (true, true),
            Direction::SendOnly => (false, true),
            Direction::RecvOnly => (true, false),
            Direction::Inactive => (false, false),
        };
        let timeout = if sdp.on_hold() {
            media.hold_timeout
        } else {
            media.rtp_timeout
        };
        LegConfig::new(law, (!nowhere).then(|| sdp.rtp_address()))
            .with_flow(send && !nowhere, receive)
            .with_timeout(answered.then_some(timeout))
    }

    /// The session as operators see it.
    fn view(&self) -> super::SessionView {
        let legs = self
            .order
            .iter()
            .filter_map(|k| self.legs.get(k))
            .map(|l| super::LegView {
                role: role_name(l.role),
                address: format!("{}:{}", target::scheme_name(&l.leg.scheme), l.leg.address),
                provider: l.provider.clone(),
                state: match (l.answered, l.in_mix, l.call.is_some()) {
                    (Some(_), true, _) => "talking",
                    (None, true, true) => "ringing",
                    _ => "ended",
                },
                talking_secs: l
                    .answered
                    .filter(|_| l.in_mix)
                    .map(|at| at.elapsed().as_secs()),
            })
            .collect();
        super::SessionView {
            id: self.id.clone(),
            owner: self.owner.clone(),
            started_ms: self.started_ms,
            legs,
        }
    }

    async fn feed(&mut self, input: Input) {
        let actions = self.machine.handle(input);
        self.perform(actions).await;
    }

    /// Carries out actions; actions may feed the machine again (a refused
    /// leg), whose actions are carried out in turn.
    async fn perform(&mut self, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            // The reason every leg dropped together with the session ends with.
            let end = queue.iter().find_map(|a| match a {
                Action::End(r) => Some(*r),
                _ => None,
            });
            let more = match action {
                Action::Tell(event) => {
                    self.services.tell(&self.owner, event);
                    Vec::new()
                }
                Action::Reach {
                    key,
                    role,
                    leg,
                    provider,
                } => self.reach(key, role, leg, provider).await,
                Action::Ringback(key) => {
                    if let Some(l) = self.legs.get(&key) {
                        let _ = self.services.media.play(
                            self.conference,
                            l.media.id,
                            Playback::Tone(Tone::ringback()),
                        );
                    }
                    Vec::new()
                }
                Action::Join(key) => {
                    if let Some(l) = self.legs.get(&key) {
                        let _ = self
                            .services
                            .media
                            .stop_playback(self.conference, l.media.id);
                    }
                    Vec::new()
                }
                Action::Drop(key) => {
                    let reason = end.map_or("DroppedByUser", end_reason_name);
                    self.drop_leg(key, reason, end.is_none()).await;
                    Vec::new()
                }
                Action::End(reason) => {
                    self.finish(reason).await;
                    Vec::new()
                }
            };
            for a in more {
                queue.extend(self.machine.handle(a));
            }
        }
    }

    /// Routes a new leg and dials its first attempt. Returns inputs for the
    /// machine when the leg cannot be dialled at all.
    async fn reach(
        &mut self,
        key: LegKey,
        role: LegRole,
        leg: Leg,
        provider: Option<String>,
    ) -> Vec<Input> {
        let services = &self.services;
        let plan = match target::resolve(&leg, &services.config().gateways, &services.sip_rules) {
            Ok(Target::Direct(uri)) => Plan::Direct(uri),
            Err(e @ (TargetError::NumberRefused(_) | TargetError::HostRefused(_))) => {
                let refusal = e.refusal(&leg, "ADD");
                return refusal.map_or_else(Vec::new, |error| vec![Input::Refused(key, error)]);
            }
            Ok(Target::Phone(number)) => match self.route(key, role, &leg, &number, provider) {
                Ok(plan) => plan,
                Err(input) => return vec![*input],
            },
            Err(TargetError::Unreachable(_)) => {
                return vec![Input::Failed(key, LegFailure::NetworkUnreachable)];
            }
            Err(TargetError::BadAddress(reason)) => {
                return vec![Input::Failed(
                    key,
                    LegFailure::SipError(SipFailure {
                        status: 400,
                        reason,
                    }),
                )];
            }
        };
        let media = match self
            .services
            .media
            .add_leg(self.conference, LegConfig::new(Law::Ulaw, None))
        {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "no media port for a leg");
                return vec![Input::Refused(key, Error::CallsUnavailable)];
            }
        };
        self.order.push(key);
        self.legs.insert(
            key,
            LegRun {
                role,
                leg,
                media,
                plan,
                attempt: 0,
                call: None,
                cdr: None,
                provider: None,
                dialled: Instant::now(),
                dialled_ms: 0,
                ringing_ms: None,
                answered: None,
                in_mix: true,
                sip_call_id: None,
            },
        );
        self.dial(key).await
    }

    /// The router's attempts for phone leg `key`, or the input that refuses it.
    fn route(
        &self,
        key: LegKey,
        role: LegRole,
        leg: &Leg,
        number: &str,
        requested: Option<String>,
    ) -> Result<Plan, Box<Input>> {
        let billing = &self.services.billing;
        let refused = |e: Error| Box::new(Input::Refused(key, e));
        let offers = match &requested {
            Some(p) => billing.offer(p, number).map(|o| vec![o]),
            None => billing.offers(number),
        };
        let offers = match offers {
            Ok(o) => o,
            Err(BillingError::Refused(_)) => {
                return Err(refused(Error::NumberRefused(leg.clone())));
            }
            Err(BillingError::UnknownProvider { provider, .. }) => {
                return Err(refused(Error::UnknownProvider(provider)));
            }
            Err(_) => return Err(Box::new(Input::Failed(key, LegFailure::NoRoute))),
        };
        // A trunk at its channel limit is not offered to the router.
        let (offers, full): (Vec<_>, Vec<_>) = offers
            .into_iter()
            .partition(|o| !self.services.trunk_full(&o.provider));
        if offers.is_empty() && !full.is_empty() {
            let names: Vec<&str> = full.iter().map(|o| o.provider.as_str()).collect();
            tracing::info!(providers = ?names, "every provider for the leg is at its max_calls");
            return Err(Box::new(Input::Failed(
                key,
                LegFailure::SipError(SipFailure {
                    status: 503,
                    reason: "every provider for this destination is at its channel limit; try again later".into(),
                }),
            )));
        }
        let now_ms = unix_ms(SystemTime::now());
        let candidates = offers
            .iter()
            .map(|o| {
                let s = billing.provider_stats(&o.provider, now_ms);
                Candidate {
                    provider: o.provider.clone(),
                    price_per_minute: o.rate.price_per_minute.0,
                    connect_fee: o.rate.connect_fee.0,
                    increment_secs: o.rate.increment_secs,
                    up: self.services.provider_up(&o.provider),
                    stats: ProviderStats {
                        attempts: s.attempts,
                        answered: s.answered,
                        asr_bp: s.asr_bp,
                        acd_secs: s.acd_secs,
                        pdd_ms: s.pdd_ms,
                    },
                }
            })
            .collect();
        let request = RouteRequest {
            leg: leg.clone(),
            role,
            account: Account {
                id: self.owner.clone(),
                balance: self.balance.0,
            },
            requested_provider: requested,
            candidates,
        };
        let attempts = match self.services.plugins.route(&request) {
            Ok(answer) => answer.value,
            Err(e) => {
                tracing::error!(error = %e, "no router answered");
                Vec::new()
            }
        };
        if attempts.is_empty() {
            return Err(Box::new(Input::Failed(key, LegFailure::NoRoute)));
        }
        Ok(Plan::Routed {
            number: number.to_string(),
            request,
            attempts,
        })
    }

    /// Authorises and dials the leg's current attempt.
    async fn dial(&mut self, key: LegKey) -> Vec<Input> {
        let Some(l) = self.legs.get_mut(&key) else {
            return Vec::new();
        };
        let (target, provider, rate) = match &l.plan {
            Plan::Direct(uri) => (uri.clone(), None, Rate::FREE),
            Plan::Routed {
                number,
                request,
                attempts,
            } => {
                let Some(attempt) = attempts.get(l.attempt as usize) else {
                    return Vec::new();
                };
                let Some(c) = request
                    .candidates
                    .iter()
                    .find(|c| c.provider == attempt.provider)
                else {
                    return vec![Input::Failed(key, LegFailure::NoRoute)];
                };
                let rate = Rate {
                    price_per_minute: Micros(c.price_per_minute),
                    increment_secs: c.increment_secs,
                    connect_fee: Micros(c.connect_fee),
                };
                let Some(address) = self.services.provider_address(&c.provider) else {
                    return vec![Input::Failed(key, LegFailure::NoRoute)];
                };
                let Ok(uri) =
                    crate::sip::TargetUri::phone(number, address.host.clone(), address.port)
                else {
                    return vec![Input::Refused(key, Error::NumberRefused(l.leg.clone()))];
                };
                (uri, Some(c.provider.clone()), rate)
            }
        };
        let now = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        let cdr = format!("{}.{key}.{}", self.id, l.attempt);
        let start = LegStart {
            leg_id: cdr.clone(),
            session_id: self.id.clone(),
            account: self.owner.clone(),
            role: billing_role(l.role),
            address: format!("{}:{}", target::scheme_name(&l.leg.scheme), l.leg.address),
            provider: provider.clone(),
            rate,
            started_ms: now_ms,
        };
        if let Err(e) = self
            .services
            .billing
            .authorise(&mut self.credit, &start, now)
            .await
        {
            tracing::info!(error = %e, "leg refused by billing");
            let error = match e {
                BillingError::InsufficientCredit { available, needed } => {
                    Error::InsufficientCredit(InsufficientCredit {
                        balance: available.0,
                        needed: needed.0,
                    })
                }
                BillingError::UnknownAccount(_) => Error::InsufficientCredit(InsufficientCredit {
                    balance: 0,
                    needed: rate.cost_after(60_000).0,
                }),
                BillingError::Refused(_) => Error::NumberRefused(l.leg.clone()),
                _ => Error::CallsUnavailable,
            };
            return vec![Input::Refused(key, error)];
        }
        l.cdr = Some(cdr);
        l.provider = provider.clone();
        l.dialled = now;
        l.dialled_ms = now_ms;
        l.ringing_ms = None;
        l.sip_call_id = None;
        let attempt = l.attempt;
        let offer = AudioSdp::offer(
            l.media.advertised.ip(),
            l.media.advertised.port(),
            rand::random(),
        );
        let request = CallRequest {
            target,
            provider: provider.clone(),
            offer,
            ring_timeout: Some(Duration::from_secs(
                self.services.config().ring_timeout_secs,
            )),
            caller: None,
            // A user's sip: leg under `sip_legs = "public-only"`: its name
            // may not lead to a private address either.
            public_only: provider.is_none()
                && matches!(l.leg.scheme, crate::plugin::types::Scheme::Sip)
                && self.services.sip_rules.mode == target::SipLegs::PublicOnly,
        };
        let calling = Input::Calling {
            key,
            provider,
            price: rate.price_per_minute.0,
        };
        self.services
            .counters
            .attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.services.sip.place_call(request).await {
            Ok(placed) => {
                l.call = Some(placed.id);
                tracing::info!(
                    leg = key,
                    role = role_name(l.role),
                    provider = l.provider.as_deref().unwrap_or("-"),
                    call_id = %placed.sip_call_id,
                    "dialling"
                );
                l.sip_call_id = Some(placed.sip_call_id);
                let inbox = self.inbox.clone();
                let mut events = placed.events;
                tokio::spawn(async move {
                    while let Some(event) = events.recv().await {
                        if inbox
                            .send(Message::Call {
                                key,
                                attempt,
                                event,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                });
                vec![calling]
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot place the call");
                let _ = self.inbox.send(Message::Call {
                    key,
                    attempt,
                    event: CallEvent::Failed {
                        status: 503,
                        reason: e.to_string(),
                    },
                });
                vec![calling]
            }
        }
    }

    async fn call_event(&mut self, key: LegKey, attempt: u32, event: CallEvent) {
        let Some(l) = self
            .legs
            .get(&key)
            .filter(|l| l.attempt == attempt && l.cdr.is_some())
        else {
            return; // an attempt we gave up on or a leg already settled
        };
        // Every line about this leg names its role, provider and Call-ID.
        let span = tracing::info_span!(
            "leg",
            leg = key,
            role = role_name(l.role),
            provider = l.provider.as_deref().unwrap_or("-"),
            call_id = l.sip_call_id.as_deref().unwrap_or("-"),
        );
        tracing::Instrument::instrument(self.leg_event(key, event), span).await;
    }

    async fn leg_event(&mut self, key: LegKey, event: CallEvent) {
        let inputs = match event {
            CallEvent::Trying => Vec::new(),
            CallEvent::Ringing | CallEvent::EarlyMedia { .. } => {
                if let Some(l) = self.legs.get_mut(&key)
                    && l.ringing_ms.is_none()
                {
                    l.ringing_ms = Some(millis(l.dialled.elapsed()));
                    if let Some(provider) = &l.provider {
                        self.services
                            .counters
                            .post_dial
                            .get_or_create(&crate::metrics::ProviderLabel {
                                provider: provider.clone(),
                            })
                            .observe(l.dialled.elapsed().as_secs_f64());
                    }
                }
                Vec::new()
            }
            CallEvent::MediaChanged { sdp } => {
                if let Some(l) = self.legs.get(&key) {
                    let law = law_of(sdp.first_codec().unwrap_or(Codec::Pcmu));
                    let config = self.media_config(law, &sdp, l.answered.is_some());
                    tracing::info!(
                        leg = key,
                        send = config.send,
                        receive = config.receive,
                        "media changed"
                    );
                    let _ = self
                        .services
                        .media
                        .update_leg(self.conference, l.media.id, config);
                }
                Vec::new()
            }
            CallEvent::Answered { sdp, codec } => self.answered(key, sdp, codec).await,
            CallEvent::Failed { status, reason } => self.attempt_failed(key, status, reason).await,
            CallEvent::Expired { reason } => {
                tracing::warn!(leg = key, %reason, "leg's session timer ran out");
                self.settle(key, "SessionExpired", None).await;
                vec![Input::Left(key, LeaveReason::SessionExpired)]
            }
            CallEvent::Ended { by, reason } => {
                tracing::info!(leg = key, ?by, %reason, "leg ended");
                let name = match self.machine.role(key) {
                    Some(LegRole::Source) => "EndedBySource",
                    Some(LegRole::Destination) => "EndedByDestination",
                    _ => "EndedByParty",
                };
                self.settle(key, name, Some(200)).await;
                // Whoever ended it (the far end's BYE, or a protocol failure
                // on our side), the party is gone.
                vec![Input::Left(key, LeaveReason::HungUp)]
            }
        };
        for input in inputs {
            self.feed(input).await;
        }
        if self.ended.is_none() && !self.machine.is_live(key) {
            self.release_media(key);
        }
    }

    /// Takes a leg that is gone out of the mix (the rest of the session goes on).
    fn release_media(&mut self, key: LegKey) {
        let Some(l) = self.legs.get_mut(&key) else {
            return;
        };
        if !std::mem::replace(&mut l.in_mix, false) {
            return;
        }
        let (media, conference) = (Arc::clone(&self.services.media), self.conference);
        let leg = l.media.id;
        // Removing a leg waits for the media thread's answer: not on a tokio worker.
        tokio::task::spawn_blocking(move || media.remove_leg(conference, leg));
    }

    async fn answered(&mut self, key: LegKey, sdp: AudioSdp, codec: Codec) -> Vec<Input> {
        let Some(l) = self.legs.get_mut(&key) else {
            return Vec::new();
        };
        let now = Instant::now();
        l.answered = Some(now);
        self.services
            .counters
            .answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if l.ringing_ms.is_none() {
            l.ringing_ms = Some(millis(l.dialled.elapsed()));
        }
        tracing::info!(ring_ms = l.ringing_ms, "answered");
        if let Some(provider) = &l.provider {
            self.services
                .counters
                .setup
                .get_or_create(&crate::metrics::ProviderLabel {
                    provider: provider.clone(),
                })
                .observe(now.saturating_duration_since(l.dialled).as_secs_f64());
        }
        if l.role == LegRole::Source {
            self.limit.start(now);
        }
        let (media_leg, cdr, call_id) = (l.media.id, l.cdr.clone(), l.sip_call_id.clone());
        let config = self.media_config(law_of(codec), &sdp, true);
        let _ = self
            .services
            .media
            .update_leg(self.conference, media_leg, config);
        if let Some(cdr) = cdr
            && let Err(e) = self
                .services
                .billing
                .answered(
                    &mut self.credit,
                    &cdr,
                    call_id.as_deref(),
                    now,
                    unix_ms(SystemTime::now()),
                )
                .await
        {
            tracing::error!(error = %e, "cannot record the answer");
        }
        vec![Input::Answered(key)]
    }

    async fn attempt_failed(&mut self, key: LegKey, status: u16, reason: String) -> Vec<Input> {
        tracing::info!(leg = key, status, %reason, "attempt failed");
        self.settle(key, "Failed", Some(status)).await;
        let Some(l) = self.legs.get_mut(&key) else {
            return Vec::new();
        };
        l.call = None;
        let failure = failure_of(status, &reason);
        let decision = match &l.plan {
            Plan::Direct(_) => None,
            Plan::Routed {
                request, attempts, ..
            } => {
                let next = l.attempt as usize + 1;
                if callee_refused(status) && self.services.config().never_ring_busy_again {
                    // The host's floor, whatever the router says: a busy or
                    // declining callee is not rung again through another provider.
                    None
                } else if next >= attempts.len() {
                    (attempts.len() > 1).then_some(LegFailure::AllProvidersFailed)
                } else {
                    let failed = &attempts[l.attempt as usize];
                    match self.services.plugins.on_failure(request, failed, status) {
                        Ok(a) if a.value == Failover::TryNext => {
                            l.attempt += 1;
                            return self.dial(key).await;
                        }
                        Ok(_) => None,
                        Err(e) => {
                            tracing::error!(error = %e, "no router answered on-failure");
                            None
                        }
                    }
                }
            }
        };
        vec![Input::Failed(key, decision.unwrap_or(failure))]
    }

    /// Settles the leg's current attempt (once) and counts it for its provider.
    async fn settle(&mut self, key: LegKey, reason: &str, sip_status: Option<u16>) {
        self.settle_at(
            key,
            reason,
            sip_status,
            Instant::now(),
            unix_ms(SystemTime::now()),
        )
        .await;
    }

    /// [`Self::settle`] with the leg ended at `now` (`now_ms` on the wall
    /// clock): earlier than the present for a leg billed to its last packet.
    async fn settle_at(
        &mut self,
        key: LegKey,
        reason: &str,
        sip_status: Option<u16>,
        now: Instant,
        now_ms: i64,
    ) {
        let Some(l) = self.legs.get_mut(&key) else {
            return;
        };
        let Some(cdr) = l.cdr.take() else {
            return;
        };
        let end = LegEnd {
            leg_id: cdr.clone(),
            ended_ms: now_ms,
            sip_status,
            reason: reason.to_string(),
        };
        let talk = l.answered.map(|a| now.saturating_duration_since(a));
        let outcome = AttemptOutcome {
            at_ms: l.dialled_ms,
            answered: talk.is_some(),
            talk_secs: talk.map_or(0, |t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX)),
            pdd_ms: l.ringing_ms,
        };
        let provider = l.provider.clone();
        match self
            .services
            .billing
            .end_leg(&mut self.credit, &end, now)
            .await
        {
            Ok(Some(s)) => self.settled.push(s),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, leg = %cdr, "settlement failed; recovery will bill it")
            }
        }
        if let Some(provider) = provider
            && let Err(e) = self
                .services
                .billing
                .record_attempt(&cdr, &provider, outcome, sip_status)
                .await
        {
            tracing::warn!(error = %e, "cannot record the attempt");
        }
    }

    /// Hangs a leg up and bills it; `alone` when the rest of the session goes on.
    async fn drop_leg(&mut self, key: LegKey, reason: &str, alone: bool) {
        let Some(l) = self.legs.get_mut(&key) else {
            return;
        };
        if let Some(call) = l.call.take() {
            self.services.sip.hangup(call);
        }
        self.settle(key, reason, None).await;
        if alone {
            self.release_media(key);
        }
    }

    async fn credit_timeout(&mut self) {
        let now = Instant::now();
        match self.credit.handle_timeout(now) {
            None => {}
            Some(CreditEvent::Replenish) => {
                if let Err(e) = self
                    .services
                    .billing
                    .replenish(
                        &mut self.credit,
                        &self.id,
                        &self.owner,
                        now,
                        unix_ms(SystemTime::now()),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "cannot reserve more credit");
                }
            }
            Some(CreditEvent::Warning { secs_left }) => {
                self.feed(Input::CreditWarning(secs_left)).await
            }
            Some(CreditEvent::Exhausted) => self.feed(Input::CreditExhausted).await,
        }
    }

    /// Every leg is dropped and settled: release the reservation, tell the
    /// owner what it cost, close the conference.
    async fn finish(&mut self, reason: EndReason) {
        self.ended = Some(reason);
        let keys: Vec<LegKey> = self.legs.keys().copied().collect();
        for key in keys {
            self.settle(key, end_reason_name(reason), None).await;
        }
        if let Err(e) = self.services.billing.end_session(&self.id).await {
            tracing::error!(error = %e, "cannot release the reservation; recovery will");
        }
        let cost = self
            .settled
            .iter()
            .fold(Micros::ZERO, |sum, s| sum.plus(s.cost));
        let charged = self
            .settled
            .iter()
            .map(|s| s.billed_secs)
            .max()
            .unwrap_or(0);
        self.services.counters.ended(reason);
        self.services.finished(
            &self.owner,
            &self.id,
            Event::SessionEnded(SessionEnded {
                charged_secs: u32::try_from(charged).unwrap_or(u32::MAX),
                cost: cost.0,
                reason,
            }),
        );
        self.services.media_inbox(self.conference, None);
        let _ = self.services.media.destroy_conference(self.conference);
        tracing::info!(?reason, cost = %cost, charged, "session ended");
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn law_of(codec: Codec) -> Law {
    match codec {
        Codec::Pcmu => Law::Ulaw,
        Codec::Pcma => Law::Alaw,
    }
}

fn billing_role(role: LegRole) -> crate::billing::LegRole {
    match role {
        LegRole::Source => crate::billing::LegRole::Source,
        LegRole::Destination => crate::billing::LegRole::Destination,
        LegRole::Additional => crate::billing::LegRole::Additional,
    }
}

/// What a SIP final status means for the user.
pub fn failure_of(status: u16, reason: &str) -> LegFailure {
    match status {
        486 | 600 => LegFailure::Busy,
        603 => LegFailure::Declined,
        408 | 480 | 487 => LegFailure::NoAnswer,
        488 | 606 => LegFailure::NoCommonCodec,
        _ => LegFailure::SipError(SipFailure {
            status,
            reason: reason.chars().take(200).collect(),
        }),
    }
}

pub use crate::plugin::end_reason_name;

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Sends `notice` unless nobody listens any more.
pub(super) fn send_notice(tx: &mpsc::UnboundedSender<Notice>, to: &str, event: Event) {
    let _ = tx.send(Notice {
        to: to.to_string(),
        event,
    });
}
