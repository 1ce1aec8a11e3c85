//! The answering side: requests that reach us (OPTIONS, an INVITE we do
//! not take, CANCEL, ACK), requests within a call's dialog (BYE, INFO,
//! re-INVITE), and our 2xx to a re-INVITE until its ACK.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::message::{ALLOW, Message, NameAddr, StartLine, Transport};
use super::super::sdp::{AudioSdp, Codec};
use super::super::transaction::ServerTx;
use super::call::{CallState, Pending2xx};
use super::timer::Timer;
use super::transactions::{ServerEntry, ServerKey};
use super::types::{CallEvent, CallId, Party};
use super::{Dest, Endpoint};

impl Endpoint {
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        request: Message,
    ) {
        let StartLine::Request { method, .. } = request.start.clone() else {
            return;
        };
        // RFC 3261 §18.2.2 with RFC 3581: answer where it came from.
        let dest = Dest {
            transport,
            addr: from,
        };
        if method == rsip::Method::Ack {
            self.handle_ack(now, request);
            return;
        }
        let key = ServerKey::of(&request, method);
        if let Some(entry) = self.servers.get(&key) {
            if let Some(bytes) = entry.tx.on_retransmission() {
                self.stats.retransmissions += 1;
                self.send(dest, bytes);
            }
            return;
        }
        let mut tx = ServerTx::new(
            method == rsip::Method::Invite,
            transport.reliable(),
            self.config.timers,
        );
        if method == rsip::Method::Invite {
            let trying = self.response(&request, from, 100, "Trying", None, &[], &[]);
            tx.respond(now, 100, trying.clone());
            self.send(dest, trying);
        }
        self.servers.insert(key.clone(), ServerEntry { tx, dest });

        if method == rsip::Method::Cancel {
            self.handle_cancel(now, &key, &request, from);
            return;
        }
        // RFC 3261 §8.2.2.3: this stack supports one extension, session
        // timers (RFC 4028); any other option tag a request requires is
        // one it does not.
        let required: Vec<String> = request
            .header_values("Require")
            .flat_map(|v| {
                v.split(',')
                    .map(|tag| tag.trim().to_string())
                    .filter(|tag| !tag.is_empty() && !tag.eq_ignore_ascii_case("timer"))
                    .collect::<Vec<_>>()
            })
            .collect();
        if !required.is_empty() {
            let extra = [("Unsupported".to_string(), required.join(", "))];
            self.respond(now, &key, &request, from, 420, "Bad Extension", &extra, &[]);
            return;
        }
        // §8.2.3: a session description we cannot read is refused before
        // anything looks at the offer.
        if method == rsip::Method::Invite && !request.body.is_empty() && !is_sdp(&request) {
            let extra = [("Accept".to_string(), "application/sdp".to_string())];
            self.respond(
                now,
                &key,
                &request,
                from,
                415,
                "Unsupported Media Type",
                &extra,
                &[],
            );
            return;
        }
        let call = self.by_call_id.get(&request.call_id).copied().filter(|id| {
            self.calls
                .get(id)
                .is_some_and(|c| request.to.tag.as_deref() == Some(c.local_tag.as_str()))
        });
        match (call, request.to.tag.is_some(), method) {
            (Some(id), _, _) => self.in_dialog(now, &key, id, method, request, from),
            (None, true, _) | (None, false, rsip::Method::Bye) => {
                self.stats.unknown_dialog += 1;
                self.respond_481(now, &key, &request, from);
            }
            (None, false, rsip::Method::Options) => {
                let extra = [("Accept".to_string(), "application/sdp".to_string())];
                self.respond(now, &key, &request, from, 200, "OK", &extra, &[]);
            }
            (None, false, rsip::Method::Invite) => {
                self.respond(
                    now,
                    &key,
                    &request,
                    from,
                    403,
                    "Forbidden (this service places calls, it does not take them)",
                    &[],
                    &[],
                );
            }
            (None, false, _) => {
                self.respond(
                    now,
                    &key,
                    &request,
                    from,
                    405,
                    "Method Not Allowed",
                    &[],
                    &[],
                );
            }
        }
    }

    fn handle_ack(&mut self, now: Instant, request: Message) {
        let key = ServerKey::of(&request, rsip::Method::Invite);
        if let Some(entry) = self.servers.get_mut(&key) {
            entry.tx.on_ack(now);
            if let Some(at) = entry.tx.deadline() {
                self.timers.set(Timer::Server(key), at);
            }
        }
        let Some(id) = self.by_call_id.get(&request.call_id).copied() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let CallState::Confirmed(confirmed) = &mut call.state else {
            return;
        };
        if confirmed
            .answer
            .as_ref()
            .is_some_and(|p| p.cseq == request.cseq)
        {
            confirmed.answer = None;
            self.timers.stop(&Timer::Answer2xx(id));
            // An offer in our 2xx is answered in the ACK.
            if !request.body.is_empty()
                && let Ok(sdp) = AudioSdp::parse(&request.body)
            {
                self.emit(id, CallEvent::MediaChanged { sdp });
            }
            self.reap(id);
        }
    }

    fn handle_cancel(
        &mut self,
        now: Instant,
        key: &ServerKey,
        request: &Message,
        from: SocketAddr,
    ) {
        let invite_key = ServerKey::of(request, rsip::Method::Invite);
        if !self.servers.contains_key(&invite_key) {
            self.respond_481(now, key, request, from);
            return;
        }
        // Only re-INVITEs reach a server INVITE transaction here, and they are
        // answered at once: there is never anything left to cancel.
        self.respond(now, key, request, from, 200, "OK", &[], &[]);
    }

    fn in_dialog(
        &mut self,
        now: Instant,
        key: &ServerKey,
        id: CallId,
        method: rsip::Method,
        request: Message,
        from: SocketAddr,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .remote_cseq
            .is_some_and(|last| request.cseq <= last && method != rsip::Method::Cancel)
        {
            self.respond(
                now,
                key,
                &request,
                from,
                500,
                "Server Internal Error (CSeq out of order)",
                &[],
                &[],
            );
            return;
        }
        call.remote_cseq = Some(request.cseq);
        match method {
            rsip::Method::Bye => {
                self.respond(now, key, &request, from, 200, "OK", &[], &[]);
                let reason = request
                    .header("Reason")
                    .unwrap_or_else(|| "remote hangup".into());
                self.finish(
                    id,
                    CallEvent::Ended {
                        by: Party::Remote,
                        reason,
                    },
                );
            }
            rsip::Method::Invite => self.reinvite(now, key, id, request, from),
            rsip::Method::Info | rsip::Method::Options => {
                self.respond(now, key, &request, from, 200, "OK", &[], &[]);
            }
            _ => {
                let extra = [("Allow".to_string(), ALLOW.to_string())];
                self.respond(
                    now,
                    key,
                    &request,
                    from,
                    405,
                    "Method Not Allowed",
                    &extra,
                    &[],
                );
            }
        }
    }

    fn reinvite(
        &mut self,
        now: Instant,
        key: &ServerKey,
        id: CallId,
        request: Message,
        from: SocketAddr,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let CallState::Confirmed(confirmed) = &call.state else {
            self.respond_481(now, key, &request, from);
            return;
        };
        if confirmed.answer.is_some() {
            let extra = [("Retry-After".to_string(), "1".to_string())];
            self.respond(
                now,
                key,
                &request,
                from,
                500,
                "Server Internal Error (previous re-INVITE not yet acknowledged)",
                &extra,
                &[],
            );
            return;
        }
        if let Some(contact) = request
            .header("Contact")
            .and_then(|c| NameAddr::parse(&c, "Contact").ok())
        {
            call.remote_target = Some(contact.uri);
        }
        let codec = call.codec.unwrap_or(Codec::Pcmu);
        let body = if request.body.is_empty() {
            // They want our offer; their answer comes in the ACK.
            call.offer.session.1 += 1;
            call.offer.to_bytes()
        } else {
            let offer = match AudioSdp::parse(&request.body) {
                Ok(o) => o,
                Err(e) => {
                    let reason = format!("Not Acceptable Here ({e})");
                    self.respond(now, key, &request, from, 488, &reason, &[], &[]);
                    return;
                }
            };
            let answer = match call.offer.answer_to(&offer, codec) {
                Ok(a) => a,
                Err(e) => {
                    let reason = format!("Not Acceptable Here ({e})");
                    self.respond(now, key, &request, from, 488, &reason, &[], &[]);
                    return;
                }
            };
            call.offer.session.1 = answer.session.1;
            if let Some(c) = answer.first_codec() {
                call.codec = Some(c);
            }
            self.emit(id, CallEvent::MediaChanged { sdp: offer });
            answer.to_bytes()
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let dest_transport = call.dest.transport;
        let contact = self
            .local(dest_transport, from)
            .map(|l| self.contact(l, dest_transport));
        let mut extra = vec![("Content-Type".to_string(), "application/sdp".to_string())];
        if let Some(c) = contact {
            extra.push(("Contact".to_string(), c));
        }
        // A refresh (RFC 4028 §9): it keeps the session, and our 2xx says
        // the sender refreshes from now on.
        if let Some((secs, _)) = request
            .header("Session-Expires")
            .and_then(|v| super::session_timer::parse_session_expires(&v))
        {
            let secs = secs.max(super::session_timer::MIN_SE_SECS);
            extra.push(("Require".to_string(), "timer".to_string()));
            extra.push((
                "Session-Expires".to_string(),
                format!("{secs};refresher=uac"),
            ));
        }
        self.session_refreshed(now, id, &request);
        let bytes = self.respond(now, key, &request, from, 200, "OK", &extra, &body);
        let t1 = self.config.timers.t1();
        let give_up = now + self.config.timers.t64();
        let reliable = dest_transport.reliable();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let CallState::Confirmed(confirmed) = &mut call.state else {
            return;
        };
        confirmed.answer = Some(Pending2xx {
            bytes,
            cseq: request.cseq,
            interval: t1,
            give_up,
        });
        let first = if reliable { give_up } else { now + t1 };
        self.timers.set(Timer::Answer2xx(id), first);
    }

    /// Our 2xx to a re-INVITE is still unacknowledged: send it again, or,
    /// at 64·T1, end the call (RFC 3261 §13.3.1.4).
    pub(super) fn answer_timeout(&mut self, now: Instant, id: CallId) {
        let t2 = self.config.timers.t2();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let CallState::Confirmed(confirmed) = &mut call.state else {
            return;
        };
        let Some(pending) = confirmed.answer.as_mut() else {
            return;
        };
        if pending.give_up <= now {
            // No ACK for our 2xx: the dialog is broken.
            confirmed.answer = None;
            self.send_bye(now, id);
            self.finish(
                id,
                CallEvent::Ended {
                    by: Party::Local,
                    reason: "no ACK to our 200 for a re-INVITE".into(),
                },
            );
            return;
        }
        pending.interval = (pending.interval * 2).min(t2);
        let (bytes, at) = (
            pending.bytes.clone(),
            (now + pending.interval).min(pending.give_up),
        );
        self.timers.set(Timer::Answer2xx(id), at);
        let Some(dest) = self.dialog_dest_of(id) else {
            return;
        };
        self.stats.retransmissions += 1;
        self.send(dest, bytes);
    }

    /// Answers a request that belongs to no dialog or transaction we know.
    fn respond_481(&mut self, now: Instant, key: &ServerKey, request: &Message, from: SocketAddr) {
        self.respond(
            now,
            key,
            request,
            from,
            481,
            "Call/Transaction Does Not Exist",
            &[],
            &[],
        );
    }
}

/// Whether the request's body is SDP (or says nothing of its type).
fn is_sdp(request: &Message) -> bool {
    let Some(content_type) = request.header("Content-Type") else {
        return true;
    };
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/sdp")
}
