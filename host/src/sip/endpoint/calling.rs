//! The calling side: placing a call (INVITE, answering challenges),
//! hanging up (CANCEL before answer, BYE after), the responses to our
//! INVITE, and the call's own timers (ring timeout, giving up a CANCEL).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::digest::Challenge;
use super::super::message::{Message, NameAddr, SipUri, StartLine, Transport, split_list};
use super::super::sdp::AudioSdp;
use super::super::{HostPort, SipError};
use super::build::cancel_for;
use super::call::{Call, CallState, Cancelling, Confirmed, Inviting};
use super::locate::{Targets, Waiter};
use super::timer::Timer;
use super::transactions::{ClientKey, Purpose};
use super::types::{CallEvent, CallId, CallRequest, Party};
use super::{Dest, Endpoint};

/// Longest ring timeout honoured; longer ones are cut to this.
const MAX_RING: Duration = Duration::from_secs(24 * 3600);

impl Endpoint {
    /// Starts a call. Events for it arrive through [`Self::poll_event`].
    pub fn place_call(
        &mut self,
        now: Instant,
        mut request: CallRequest,
    ) -> Result<CallId, SipError> {
        let mut profile = None;
        let (hop, transport) = match &request.provider {
            Some(name) => {
                let i = self
                    .config
                    .providers
                    .iter()
                    .position(|p| &p.name == name)
                    .ok_or_else(|| SipError::UnknownProvider(name.clone()))?;
                let p = &self.config.providers[i];
                if let Some(max) = p.max_calls {
                    let up = self
                        .calls
                        .values()
                        .filter(|c| c.provider == Some(i) && !c.finished())
                        .count();
                    if up >= max as usize {
                        return Err(SipError::TrunkFull(name.clone()));
                    }
                }
                // The trunk's number format for the Request-URI and To.
                if p.number_format != Default::default() {
                    let written = request
                        .target
                        .user_digits()
                        .and_then(|digits| p.number_format.apply(&digits))
                        .and_then(|user| request.target.with_user(&user).ok())
                        .ok_or_else(|| SipError::BadTarget(request.target.to_string()))?;
                    request.target = written;
                }
                if !p.codecs.is_empty() {
                    request.offer.keep_codecs(&p.codecs);
                }
                profile = Some(i);
                (p.next_hop().clone(), p.transport)
            }
            None => {
                let target = request.target.to_string();
                let uri =
                    SipUri::parse(&target).map_err(|_| SipError::BadTarget(target.clone()))?;
                let host = HostPort {
                    host: request.target.host().clone(),
                    port: request.target.port(),
                };
                (host, uri.transport())
            }
        };
        let target = request.target.to_string();
        let provider = profile;
        let id = CallId(self.next_call);
        self.next_call += 1;
        let trunk = provider.and_then(|i| self.config.providers.get(i));
        let from_user = trunk
            .and_then(|p| p.from_user.clone())
            .or_else(|| request.caller.clone())
            .unwrap_or_else(|| self.config.user.clone());
        let local_display = trunk.and_then(|p| p.display_name.clone());
        let asserted = trunk.and_then(|p| p.asserted_identity.clone());
        let initial_route = trunk
            .and_then(|p| p.outbound_proxy.as_ref())
            .map(|proxy| format!("<sip:{proxy};lr>"));
        // A placeholder until the destination is located.
        let unknown = Dest {
            transport: transport.unwrap_or(Transport::Udp),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let call_host = self
            .locals
            .first()
            .map(|(_, a)| self.advertised_host(*a))
            .unwrap_or_default();
        let call = Call {
            call_id: format!("{}@{call_host}", self.token()),
            local_tag: self.token(),
            remote_tag: None,
            local_uri: String::new(),
            from_user,
            public_only: request.public_only,
            local_display,
            asserted,
            initial_route,
            remote_uri: target.clone(),
            target,
            dest: unknown,
            alternates: Vec::new(),
            provider,
            cseq: 0,
            invite_key: None,
            bye_key: None,
            ring_timeout: request.ring_timeout.unwrap_or_default().min(MAX_RING),
            route_set: Vec::new(),
            remote_target: None,
            offer: request.offer,
            codec: None,
            auth_tries: 0,
            auth_header: None,
            ack: None,
            remote_cseq: None,
            session_expires: self.config.session_expires_secs,
            session_retried: false,
            session: None,
            state: CallState::Locating,
        };
        let located = self.locate(now, &hop, transport, Waiter::Call(id));
        // Known at once (an IP address, or a name in the cache): a
        // destination we have no listener for is refused here, as before.
        if let Some(Ok(dests)) = &located
            && let Some(first) = dests.first()
            && self.first_usable(dests.clone()).is_none()
        {
            return Err(SipError::NoListener(first.transport));
        }
        self.by_call_id.insert(call.call_id.clone(), id);
        self.calls.insert(id, call);
        if let Some(ring) = request.ring_timeout {
            self.timers.set(Timer::Ring(id), now + ring.min(MAX_RING));
        }
        self.stats.calls_placed += 1;
        // Otherwise the lookup resumes the call when it ends.
        if let Some(targets) = located {
            self.begin_inviting(now, id, targets);
        }
        Ok(id)
    }

    /// The call's destination is located: its first INVITE goes out, or
    /// the call fails with the status and reason.
    pub(super) fn begin_inviting(&mut self, now: Instant, id: CallId, targets: Targets) {
        if let Err((status, reason)) = self.invite_first_target(now, id, targets) {
            self.finish(id, CallEvent::Failed { status, reason });
        }
    }

    /// The first target we have a listener for gets the INVITE, the rest
    /// wait as alternates.
    fn invite_first_target(
        &mut self,
        now: Instant,
        id: CallId,
        targets: Targets,
    ) -> Result<(), (u16, String)> {
        let mut targets = targets.map_err(|e| (503, e.to_string()))?;
        if self.calls.get(&id).is_some_and(|c| c.public_only) {
            let private: Vec<String> = targets
                .iter()
                .filter(|d| !super::super::is_public_ip(d.addr.ip()))
                .map(|d| d.addr.ip().to_string())
                .collect();
            targets.retain(|d| super::super::is_public_ip(d.addr.ip()));
            if targets.is_empty() {
                return Err((
                    403,
                    format!(
                        "it leads only to addresses that are not public ({}), which sip: legs may not reach",
                        private.join(", ")
                    ),
                ));
            }
        }
        let transport = targets.first().map_or(Transport::Udp, |d| d.transport);
        let Some((first, usable)) = self.first_usable(targets) else {
            return Err((503, SipError::NoListener(transport).to_string()));
        };
        let local = self
            .local(first.transport, first.addr)
            .ok_or_else(|| (503, SipError::NoListener(first.transport).to_string()))?;
        let local_uri = self.advertised(local);
        let Some(call) = self.calls.get_mut(&id) else {
            return Ok(());
        };
        call.local_uri = format!("sip:{}@{local_uri}", call.from_user);
        call.dest = first;
        call.alternates = usable;
        call.state = CallState::Inviting(Inviting::default());
        self.send_invite(now, id);
        Ok(())
    }

    /// The INVITE to the call's current target failed with 503, a
    /// timeout, a transport error or no answer at all (`why`): send it to
    /// the next target, if one is left and the call is not being
    /// cancelled (RFC 3263 §4.3). Whether it did.
    pub(super) fn fail_over(&mut self, now: Instant, id: CallId, why: &str) -> bool {
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        let CallState::Inviting(inviting) = &mut call.state else {
            return false;
        };
        if inviting.cancel.is_some() || call.alternates.is_empty() {
            return false;
        }
        let next = call.alternates.remove(0);
        tracing::info!(call = id.0, from = %call.dest.addr, to = %next.addr, %why,
            "trying the next server");
        *inviting = Inviting::default();
        call.dest = next;
        self.stats.failovers += 1;
        call.auth_tries = 0;
        call.auth_header = None;
        self.timers.stop(&Timer::Failover(id));
        self.send_invite(now, id);
        true
    }

    /// `[sip] failover_secs` passed with no answer at all from the call's
    /// target: move on to the next.
    pub(super) fn failover_due(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let silent =
            matches!(&call.state, CallState::Inviting(i) if !i.provisional && i.cancel.is_none());
        if !silent || call.alternates.is_empty() {
            return;
        }
        // The silent server's transaction is abandoned: nothing came from
        // it to answer or ACK.
        if let Some(key) = call.invite_key.take() {
            self.clients.remove(&key);
            self.timers.stop(&Timer::Client(key));
        }
        let secs = self.config.failover_secs;
        self.fail_over(now, id, &format!("no answer in {secs} s"));
    }

    fn send_invite(&mut self, now: Instant, id: CallId) {
        let branch = self.branch();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.cseq += 1;
        let body = call.offer.to_bytes();
        let mut extra: Vec<(String, String)> = call.auth_header.iter().cloned().collect();
        let asked = call.session_expires;
        extra.extend(self.session_timer_headers(asked, None));
        let Some(bytes) =
            self.build_request(id, rsip::Method::Invite, &branch, None, &extra, &body)
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let key = ClientKey::new(&branch, rsip::Method::Invite);
        call.invite_key = Some(key.clone());
        let dest = call.dest;
        if !call.alternates.is_empty() {
            let wait = Duration::from_secs(self.config.failover_secs.max(1));
            self.timers.set(Timer::Failover(id), now + wait);
        }
        self.start_client(now, key, bytes, dest, Some(id), Purpose::Invite);
    }

    /// Ends a call: CANCEL before answer, BYE after. Events report the outcome.
    pub fn hangup(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        match call.state {
            CallState::Locating => {
                let outcome = CallEvent::Ended {
                    by: Party::Local,
                    reason: "cancelled before answer".into(),
                };
                self.finish(id, outcome);
            }
            CallState::Inviting(_) => {
                let outcome = CallEvent::Ended {
                    by: Party::Local,
                    reason: "cancelled before answer".into(),
                };
                self.cancel(now, id, outcome);
            }
            CallState::Confirmed(_) => {
                // `Ended` follows when the BYE transaction completes.
                self.send_bye(now, id);
            }
            CallState::Closing | CallState::Finished => {}
        }
    }

    /// Decides to cancel an unanswered call, ending it with `outcome`. The
    /// CANCEL goes out now if a provisional response has come, else with
    /// the first one (RFC 3261 §9.1).
    fn cancel(&mut self, now: Instant, id: CallId, outcome: CallEvent) {
        let t64 = self.config.timers.t64();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let CallState::Inviting(inviting) = &mut call.state else {
            return;
        };
        if inviting.cancel.is_some() {
            return;
        }
        inviting.cancel = Some(Cancelling {
            outcome,
            sent: false,
        });
        let provisional = inviting.provisional;
        self.timers.stop(&Timer::Ring(id));
        self.timers.set(Timer::CancelGiveUp(id), now + t64);
        if provisional {
            self.send_cancel(now, id);
        }
    }

    fn send_cancel(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.cancelling().is_none_or(|c| c.sent) {
            return;
        }
        let Some(key) = call.invite_key.clone() else {
            return;
        };
        let Some(invite) = self.clients.get(&key) else {
            return;
        };
        let dest = invite.dest;
        let Some((bytes, branch)) = cancel_for(invite.tx.request()) else {
            return;
        };
        if let Some(cancelling) = self.calls.get_mut(&id).and_then(Call::cancelling) {
            cancelling.sent = true;
        }
        let cancel_key = ClientKey::new(&branch, rsip::Method::Cancel);
        self.start_client(now, cancel_key, bytes, dest, Some(id), Purpose::Cancel);
    }

    pub(super) fn send_bye(&mut self, now: Instant, id: CallId) {
        let branch = self.branch();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.cseq += 1;
        call.state = CallState::Closing;
        self.timers.stop(&Timer::Answer2xx(id));
        let Some(bytes) = self.build_request(id, rsip::Method::Bye, &branch, None, &[], &[]) else {
            return;
        };
        let Some(dest) = self.dialog_dest_of(id) else {
            return;
        };
        let key = ClientKey::new(&branch, rsip::Method::Bye);
        if let Some(call) = self.calls.get_mut(&id) {
            call.bye_key = Some(key.clone());
        }
        self.start_client(now, key, bytes, dest, Some(id), Purpose::Bye);
    }

    /// Emits the call's final event once.
    pub(super) fn finish(&mut self, id: CallId, event: CallEvent) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.finished() {
            return;
        }
        call.state = CallState::Finished;
        for timer in [
            Timer::Ring(id),
            Timer::CancelGiveUp(id),
            Timer::Answer2xx(id),
            Timer::Failover(id),
        ] {
            self.timers.stop(&timer);
        }
        self.emit(id, event);
        self.reap(id);
    }

    /// Forgets a finished call once no transaction needs it any more.
    pub(super) fn reap(&mut self, id: CallId) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if !call.finished() {
            return;
        }
        let live =
            |key: &Option<ClientKey>| key.as_ref().is_some_and(|k| self.clients.contains_key(k));
        if live(&call.invite_key) || live(&call.bye_key) {
            return;
        }
        let call_id = call.call_id.clone();
        self.calls.remove(&id);
        self.by_call_id.remove(&call_id);
    }

    /// The caller's ring timeout: cancel a call still unanswered.
    pub(super) fn ring_timeout(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let secs = call.ring_timeout.as_secs_f32();
        let outcome = CallEvent::Failed {
            status: 408,
            reason: format!("No answer within {secs} s"),
        };
        if matches!(call.state, CallState::Locating) {
            self.finish(id, outcome);
            return;
        }
        if !matches!(call.state, CallState::Inviting(_)) {
            return;
        }
        self.cancel(now, id, outcome);
    }

    /// No final answer 64·T1 after we decided to cancel (RFC 3261 §9.1):
    /// give the call up.
    pub(super) fn cancel_give_up(&mut self, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.finished() {
            return;
        }
        let outcome = call.take_cancel_outcome().unwrap_or(CallEvent::Failed {
            status: 408,
            reason: "no response to CANCEL".into(),
        });
        if let Some(key) = call.invite_key.clone() {
            self.clients.remove(&key);
            self.timers.stop(&Timer::Client(key));
        }
        self.finish(id, outcome);
    }

    /// A response to our INVITE.
    pub(super) fn invite_response(
        &mut self,
        now: Instant,
        id: CallId,
        status: u16,
        response: Message,
    ) {
        self.timers.stop(&Timer::Failover(id));
        if status == 503 {
            let reason = match &response.start {
                StartLine::Response { reason, .. } => reason.clone(),
                StartLine::Request { .. } => String::new(),
            };
            if self.fail_over(now, id, &format!("503 {reason}")) {
                return;
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if status < 200 {
            let CallState::Inviting(inviting) = &mut call.state else {
                return;
            };
            let first = !inviting.provisional;
            inviting.provisional = true;
            match &inviting.cancel {
                Some(cancelling) if !cancelling.sent => {
                    self.send_cancel(now, id);
                    return;
                }
                Some(_) => return,
                None => {}
            }
            if status == 100 {
                if first {
                    self.emit(id, CallEvent::Trying);
                }
                return;
            }
            if status == 180 {
                self.emit(id, CallEvent::Ringing);
            }
            if !response.body.is_empty() {
                match AudioSdp::parse(&response.body) {
                    Ok(sdp) => self.emit(id, CallEvent::EarlyMedia { sdp }),
                    Err(e) => tracing::debug!(error = %e, "ignoring unusable early-media SDP"),
                }
            } else if status != 180 {
                self.emit(id, CallEvent::Ringing);
            }
            return;
        }
        if status < 300 {
            self.invite_success(now, id, response);
            return;
        }
        // 422 Session Interval Too Small: ask again, once, with its Min-SE.
        if status == 422 && !call.session_retried && call.session_expires > 0 {
            let wanted = response.header("Min-SE").and_then(|v| {
                v.split(';')
                    .next()
                    .and_then(|n| n.trim().parse::<u32>().ok())
            });
            if let Some(min) = wanted.filter(|m| *m > call.session_expires && *m <= 86_400) {
                call.session_expires = min;
                call.session_retried = true;
                self.send_invite(now, id);
                return;
            }
        }
        // Challenges: answer once per nonce with the provider's credentials.
        let answerable = matches!(&call.state, CallState::Inviting(i) if i.cancel.is_none());
        if (status == 401 || status == 407) && answerable {
            let cnonce = self.token();
            if let Some(header) = self.authorization(id, status, &response, &cnonce) {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.auth_tries += 1;
                    call.auth_header = Some(header);
                }
                self.send_invite(now, id);
                return;
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let reason = match &response.start {
            StartLine::Response { reason, .. } => reason.clone(),
            StartLine::Request { .. } => String::new(),
        };
        let event = match call.take_cancel_outcome() {
            Some(outcome) if status == 487 => outcome,
            _ => CallEvent::Failed {
                status,
                reason: if reason.is_empty() {
                    format!("status {status}")
                } else {
                    reason
                },
            },
        };
        self.finish(id, event);
    }

    /// The answer to a 401/407 with the provider's credentials, if it has
    /// some and this challenge is worth answering.
    fn authorization(
        &self,
        id: CallId,
        status: u16,
        response: &Message,
        cnonce: &str,
    ) -> Option<(String, String)> {
        let call = self.calls.get(&id)?;
        let provider = self.config.providers.get(call.provider?)?;
        let (user, pass) = (provider.username.as_ref()?, provider.password.as_ref()?);
        let (challenge_name, answer_name) = if status == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let values: Vec<String> = response.header_values(challenge_name).collect();
        let challenge = match Challenge::best(values.iter().map(String::as_str)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(provider = %provider.name, error = %e, "cannot answer challenge");
                return None;
            }
        };
        // A second challenge for the same credentials means they are wrong, unless the nonce was stale.
        if call.auth_tries >= 1 && !challenge.stale || call.auth_tries >= 3 {
            return None;
        }
        let answer = challenge.answer(user, pass, "INVITE", &call.target, 1, cnonce);
        Some((answer_name.to_string(), answer))
    }

    /// A 2xx to our INVITE: ACK it, and the call is up (or, if we were
    /// cancelling it, hang up at once).
    fn invite_success(&mut self, now: Instant, id: CallId, response: Message) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if !matches!(call.state, CallState::Inviting(_)) || call.ack.is_some() {
            let same = response.to.tag == call.remote_tag;
            if same {
                self.resend_ack(id);
            } else {
                tracing::warn!(
                    call = id.0,
                    "2xx from a second fork; only the first is kept"
                );
            }
            return;
        }
        let cancelled = call.take_cancel_outcome();
        call.remote_tag = response.to.tag.clone();
        call.remote_target = response
            .header("Contact")
            .and_then(|c| NameAddr::parse(&c, "Contact").ok())
            .map(|n| n.uri);
        // UAC route set: Record-Route in reverse order (RFC 3261 §12.1.2).
        let mut routes: Vec<String> = response
            .header_values("Record-Route")
            .flat_map(|v| {
                split_list(&v)
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        routes.reverse();
        call.route_set = routes;
        call.state = CallState::Confirmed(Confirmed::default());
        self.timers.stop(&Timer::Ring(id));
        self.arm_session_timer(now, id, &response);
        let cseq = response.cseq;
        // ACK every 2xx, even one we will end at once.
        let branch = self.branch();
        let ack = self.build_request(id, rsip::Method::Ack, &branch, Some(cseq), &[], &[]);
        if let (Some(ack), Some(dest)) = (ack, self.dialog_dest_of(id)) {
            if let Some(call) = self.calls.get_mut(&id) {
                call.ack = Some((ack.clone(), dest));
            }
            self.send(dest, ack);
        }
        if let Some(outcome) = cancelled {
            // Answered while our CANCEL was in flight: hang up at once.
            self.send_bye(now, id);
            self.finish(id, outcome);
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let negotiated = AudioSdp::parse(&response.body)
            .map_err(|e| e.to_string())
            .and_then(|sdp| {
                call.offer
                    .negotiate(&sdp)
                    .map(|codec| (sdp, codec))
                    .map_err(|e| e.to_string())
            });
        match negotiated {
            Ok((sdp, codec)) => {
                call.codec = Some(codec);
                self.emit(id, CallEvent::Answered { sdp, codec });
            }
            Err(reason) => {
                self.send_bye(now, id);
                self.finish(
                    id,
                    CallEvent::Failed {
                        status: 488,
                        reason: format!("answer unusable: {reason}"),
                    },
                );
            }
        }
    }

    /// Sends the ACK of the call's 2xx again (the 2xx was retransmitted).
    pub(super) fn resend_ack(&mut self, id: CallId) {
        let Some((ack, dest)) = self.calls.get(&id).and_then(|c| c.ack.clone()) else {
            return;
        };
        self.stats.retransmissions += 1;
        self.send(dest, ack);
    }
}
