//! The endpoint's side of the RFC 3261 §17 transactions: their keys,
//! starting client transactions, matching responses to them, answering
//! through server transactions, and their timers.

use std::hash::{Hash, Hasher};
use std::mem::discriminant;
use std::time::Instant;

use super::super::message::{Message, StartLine};
use super::super::transaction::{ClientTx, ClientVerdict, ServerTx, TimerOutput};
use super::build::ack_for_failure;
use super::timer::Timer;
use super::types::{CallEvent, CallId, Party};
use super::{Dest, Endpoint};

/// A client transaction: the branch we sent and the method (§17.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClientKey {
    branch: String,
    method: rsip::Method,
}

impl ClientKey {
    pub(super) fn new(branch: &str, method: rsip::Method) -> ClientKey {
        ClientKey {
            branch: branch.to_string(),
            method,
        }
    }
}

impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.branch.hash(state);
        discriminant(&self.method).hash(state);
    }
}

/// A server transaction (RFC 3261 §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ServerKey {
    /// A request with an RFC 3261 branch: the branch, the top Via's
    /// sent-by, and the method.
    Branch {
        branch: String,
        host: String,
        port: u16,
        method: rsip::Method,
    },
    /// A request from an RFC 2543 peer (no branch, or one without the
    /// cookie, or a bare cookie): its Request-URI, From tag, Call-ID, CSeq
    /// number, top Via and method. (The To tag is left out: CSeq already
    /// tells an INVITE from a re-INVITE, and an ACK's To tag is ours.)
    Legacy {
        request_uri: String,
        from_tag: Option<String>,
        call_id: String,
        cseq: u32,
        top_via: String,
        method: rsip::Method,
    },
}

impl ServerKey {
    /// The server transaction `request` belongs to, as a `method` request
    /// (an ACK or CANCEL matches its INVITE's).
    pub(super) fn of(request: &Message, method: rsip::Method) -> ServerKey {
        if request.via.rfc3261_branch() {
            return ServerKey::Branch {
                branch: request.via.branch.clone(),
                host: request.via.host.clone(),
                port: request.via.port.unwrap_or(5060),
                method,
            };
        }
        let request_uri = match &request.start {
            StartLine::Request { uri, .. } => uri.to_string(),
            StartLine::Response { .. } => String::new(),
        };
        ServerKey::Legacy {
            request_uri,
            from_tag: request.from.tag.clone(),
            call_id: request.call_id.clone(),
            cseq: request.cseq,
            top_via: request
                .vias
                .first()
                .map(|v| v.trim().to_string())
                .unwrap_or_default(),
            method,
        }
    }
}

impl Hash for ServerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            ServerKey::Branch {
                branch,
                host,
                port,
                method,
            } => {
                branch.hash(state);
                host.hash(state);
                port.hash(state);
                discriminant(method).hash(state);
            }
            ServerKey::Legacy {
                request_uri,
                from_tag,
                call_id,
                cseq,
                top_via,
                method,
            } => {
                request_uri.hash(state);
                from_tag.hash(state);
                call_id.hash(state);
                cseq.hash(state);
                top_via.hash(state);
                discriminant(method).hash(state);
            }
        }
    }
}

/// What a client transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Invite,
    Cancel,
    Bye,
    Options(usize),
    Register(usize),
    /// Our re-INVITE refreshing the session (RFC 4028).
    Refresh,
}

/// A client transaction with what it belongs to.
#[derive(Debug)]
pub(super) struct ClientEntry {
    pub(super) tx: ClientTx,
    pub(super) call: Option<CallId>,
    pub(super) purpose: Purpose,
    pub(super) dest: Dest,
}

/// A server transaction with where its responses go.
#[derive(Debug)]
pub(super) struct ServerEntry {
    pub(super) tx: ServerTx,
    pub(super) dest: Dest,
}

impl Endpoint {
    /// Sends `bytes` in a new client transaction `key`.
    pub(super) fn start_client(
        &mut self,
        now: Instant,
        key: ClientKey,
        bytes: Vec<u8>,
        dest: Dest,
        call: Option<CallId>,
        purpose: Purpose,
    ) {
        let invite = matches!(purpose, Purpose::Invite | Purpose::Refresh);
        let tx = ClientTx::new(
            now,
            invite,
            dest.transport.reliable(),
            self.config.timers,
            bytes.clone(),
        );
        if let Some(at) = tx.deadline() {
            self.timers.set(Timer::Client(key.clone()), at);
        }
        self.clients.insert(
            key,
            ClientEntry {
                tx,
                call,
                purpose,
                dest,
            },
        );
        self.send(dest, bytes);
    }

    /// Re-arms client transaction `key`'s timer at its next deadline.
    fn rearm_client(&mut self, key: &ClientKey) {
        match self.clients.get(key).and_then(|e| e.tx.deadline()) {
            Some(at) => self.timers.set(Timer::Client(key.clone()), at),
            None => self.timers.stop(&Timer::Client(key.clone())),
        }
    }

    pub(super) fn client_timeout(&mut self, now: Instant, key: ClientKey) {
        let Some(entry) = self.clients.get_mut(&key) else {
            return;
        };
        if entry.tx.deadline().is_some_and(|t| t > now) {
            self.rearm_client(&key);
            return;
        }
        let output = entry.tx.on_timeout(now);
        let (dest, call, purpose) = (entry.dest, entry.call, entry.purpose);
        match output {
            Some(TimerOutput::Retransmit(bytes)) => {
                self.stats.retransmissions += 1;
                self.send(dest, bytes);
            }
            Some(TimerOutput::TimedOut) => {
                self.clients.remove(&key);
                self.client_timed_out(now, call, purpose);
                return;
            }
            Some(TimerOutput::Terminated) => {
                self.clients.remove(&key);
                if let Some(id) = call {
                    self.reap(id);
                }
                return;
            }
            None => {}
        }
        self.rearm_client(&key);
    }

    /// A client transaction got no final answer in time.
    fn client_timed_out(&mut self, now: Instant, call: Option<CallId>, purpose: Purpose) {
        match purpose {
            Purpose::Invite => {
                if let Some(id) = call {
                    if self.fail_over(now, id, "no response to INVITE") {
                        return;
                    }
                    let outcome = self
                        .calls
                        .get_mut(&id)
                        .and_then(|c| c.take_cancel_outcome());
                    let event = outcome.unwrap_or(CallEvent::Failed {
                        status: 408,
                        reason: "Request Timeout (no response to INVITE)".into(),
                    });
                    self.finish(id, event);
                }
            }
            Purpose::Options(i) => self.provider_result(now, i, false),
            Purpose::Register(i) => self.registration_timed_out(now, i),
            Purpose::Refresh => {
                if let Some(id) = call {
                    self.session_expired(now, id, "no answer to our session refresh");
                }
            }
            Purpose::Bye => {
                if let Some(id) = call {
                    let reason = "hangup (no response to BYE)".to_string();
                    self.finish(
                        id,
                        CallEvent::Ended {
                            by: Party::Local,
                            reason,
                        },
                    );
                    self.reap(id);
                }
            }
            Purpose::Cancel => {
                if let Some(id) = call {
                    self.reap(id);
                }
            }
        }
    }

    pub(super) fn server_timeout(&mut self, now: Instant, key: ServerKey) {
        let Some(entry) = self.servers.get_mut(&key) else {
            return;
        };
        if let Some(at) = entry.tx.deadline().filter(|t| *t > now) {
            self.timers.set(Timer::Server(key), at);
            return;
        }
        let output = entry.tx.on_timeout(now);
        let dest = entry.dest;
        let next = entry.tx.deadline();
        match output {
            Some(TimerOutput::Retransmit(bytes)) => {
                self.stats.retransmissions += 1;
                self.send(dest, bytes);
            }
            Some(TimerOutput::TimedOut | TimerOutput::Terminated) => {
                self.servers.remove(&key);
                return;
            }
            None => {}
        }
        if let Some(at) = next {
            self.timers.set(Timer::Server(key), at);
        }
    }

    /// A response: matched to its client transaction (§17.1.3), then to
    /// what that transaction is for.
    pub(super) fn handle_response(&mut self, now: Instant, status: u16, response: Message) {
        let key = ClientKey::new(&response.via.branch, response.cseq_method);
        let Some(entry) = self.clients.get_mut(&key) else {
            // A 2xx retransmitted after the INVITE transaction is gone: ACK again.
            if status / 100 == 2
                && response.cseq_method == rsip::Method::Invite
                && let Some(id) = self.by_call_id.get(&response.call_id).copied()
            {
                self.resend_ack(id);
                return;
            }
            self.stats.stray_responses += 1;
            return;
        };
        let verdict = entry.tx.on_response(now, status);
        let (call, purpose, dest) = (entry.call, entry.purpose, entry.dest);
        match verdict {
            ClientVerdict::Absorb => return,
            ClientVerdict::ResendAck => {
                if let Some(ack) = entry.tx.ack().map(<[u8]>::to_vec) {
                    self.send(dest, ack);
                }
                return;
            }
            ClientVerdict::DeliverAndAck => {
                let ack = ack_for_failure(entry.tx.request(), &response);
                if let Some(ack) = ack {
                    entry.tx.set_ack(ack.clone());
                    self.send(dest, ack);
                }
            }
            ClientVerdict::Deliver => {}
        }
        if let Some(at) = self.clients.get(&key).and_then(|e| e.tx.deadline()) {
            self.timers.set(Timer::Client(key.clone()), at);
        }
        match purpose {
            Purpose::Invite => {
                if let Some(id) = call {
                    self.invite_response(now, id, status, response);
                }
            }
            Purpose::Options(i) => {
                if status >= 200 {
                    self.provider_result(now, i, status != 503);
                }
            }
            Purpose::Register(i) => self.registration_response(now, i, status, &response),
            Purpose::Refresh => {
                if let Some(id) = call {
                    self.refresh_response(now, id, status, response);
                }
            }
            Purpose::Bye if status >= 200 => {
                if let Some(id) = call {
                    // Any final answer ends the dialog (RFC 3261 §15.1.1), even a challenge.
                    let reason = if status < 300 {
                        "hangup".to_string()
                    } else {
                        format!("hangup (BYE answered {status})")
                    };
                    self.finish(
                        id,
                        CallEvent::Ended {
                            by: Party::Local,
                            reason,
                        },
                    );
                }
            }
            Purpose::Bye => {}
            Purpose::Cancel => {}
        }
        if status >= 200
            && let Some(id) = call
        {
            self.reap(id);
        }
    }

    /// Sends a response through the server transaction `key`; returns the bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        request: &Message,
        from: std::net::SocketAddr,
        status: u16,
        reason: &str,
        extra: &[(String, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let dialog_tag = self
            .by_call_id
            .get(&request.call_id)
            .and_then(|id| self.calls.get(id))
            .map(|c| c.local_tag.clone());
        let to_tag = match dialog_tag {
            Some(tag) => Some(tag),
            None if request.to.tag.is_none() && status > 100 => Some(self.token()),
            None => None,
        };
        let bytes = self.response(request, from, status, reason, to_tag, extra, body);
        let Some(entry) = self.servers.get_mut(key) else {
            return bytes;
        };
        entry.tx.respond(now, status, bytes.clone());
        let dest = entry.dest;
        if let Some(at) = entry.tx.deadline() {
            self.timers.set(Timer::Server(key.clone()), at);
        }
        self.send(dest, bytes.clone());
        bytes
    }
}
