//! RFC 3261 §17 transaction state machines, sans-IO.
//!
//! A transaction never touches a socket or a clock: the owner hands it the
//! current time with every input, sends what it returns, and calls
//! [`ClientTx::on_timeout`] / [`ServerTx::on_timeout`] when
//! [`ClientTx::deadline`] / [`ServerTx::deadline`] has passed. Timer names
//! follow the RFC (A–K). The 2xx to an INVITE leaves the client transaction
//! in RFC 6026's Accepted state, so retransmitted 2xx still reach the dialog,
//! which ACKs each one.

use std::time::{Duration, Instant};

/// The base timers. Defaults are the RFC's: T1 500 ms, T2 4 s, T4 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timers {
    /// Round-trip estimate (T1), milliseconds.
    pub t1_ms: u64,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (T2), ms.
    pub t2_ms: u64,
    /// Longest time a message stays in the network (T4), ms.
    pub t4_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
        }
    }
}

impl Timers {
    /// T1 (1 ms to 60 s, whatever the configuration says).
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms.clamp(1, 60_000))
    }
    /// T2 (1 ms to 600 s).
    pub fn t2(&self) -> Duration {
        Duration::from_millis(self.t2_ms.clamp(1, 600_000))
    }
    /// T4 (at most 600 s).
    pub fn t4(&self) -> Duration {
        Duration::from_millis(self.t4_ms.min(600_000))
    }
    /// 64·T1: timers B, F, H, J and the 2xx retransmission limit.
    pub fn t64(&self) -> Duration {
        self.t1() * 64
    }
}

/// What a client transaction tells its owner after a response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Pass the response up to the dialog / call.
    Deliver,
    /// Pass it up, and build an ACK for it (first non-2xx final to an INVITE);
    /// hand the ACK to [`ClientTx::set_ack`].
    DeliverAndAck,
    /// A retransmission of a final response: resend the stored ACK, nothing else.
    ResendAck,
    /// A retransmission or late response: drop it.
    Absorb,
}

/// What a timeout produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerOutput {
    /// Send these bytes again.
    Retransmit(Vec<u8>),
    /// The transaction gave up waiting (timer B, F or H): tell the owner.
    TimedOut,
    /// The transaction is finished and can be forgotten.
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Proceeding,
    Accepted,
    Completed,
    Terminated,
}

/// A client transaction: one request we sent and the responses to it.
#[derive(Debug)]
pub struct ClientTx {
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    request: Vec<u8>,
    ack: Option<Vec<u8>>,
    /// Timer A (INVITE) or E (non-INVITE): next retransmission and interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B or F: give up.
    give_up: Option<Instant>,
    /// Timer D, K or RFC 6026's M: linger to absorb retransmissions.
    linger: Option<Instant>,
}

impl ClientTx {
    /// Starts a transaction for `request`, which the caller sends now.
    pub fn new(
        now: Instant,
        invite: bool,
        reliable: bool,
        timers: Timers,
        request: Vec<u8>,
    ) -> Self {
        let retransmit = (!reliable).then(|| (now + timers.t1(), timers.t1()));
        ClientTx {
            invite,
            reliable,
            timers,
            state: ClientState::Calling,
            request,
            ack: None,
            retransmit,
            give_up: Some(now + timers.t64()),
            linger: None,
        }
    }

    /// The request as sent (CANCEL copies its Via and Route from it).
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Whether a provisional response has arrived.
    pub fn proceeding(&self) -> bool {
        self.state != ClientState::Calling
    }

    /// Whether the transaction is finished.
    pub fn terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// Stores the ACK for a non-2xx final response, to resend on retransmissions.
    pub fn set_ack(&mut self, ack: Vec<u8>) {
        self.ack = Some(ack);
        self.request = Vec::new();
    }

    /// The stored ACK, if any.
    pub fn ack(&self) -> Option<&[u8]> {
        self.ack.as_deref()
    }

    /// Feeds a response with this status code.
    pub fn on_response(&mut self, now: Instant, status: u16) -> ClientVerdict {
        use ClientState::*;
        let provisional = status < 200;
        let success = (200..300).contains(&status);
        match (self.state, self.invite) {
            (Calling | Proceeding, _) if provisional => {
                self.state = Proceeding;
                if self.invite {
                    self.retransmit = None;
                    // Timer B only runs in Calling; the TU cancels a call that rings too long.
                    self.give_up = None;
                } else if let Some((_, _)) = self.retransmit {
                    // Timer E keeps firing, at T2.
                    self.retransmit = Some((now + self.timers.t2(), self.timers.t2()));
                }
                ClientVerdict::Deliver
            }
            (Calling | Proceeding, true) if success => {
                self.state = Accepted;
                // Only the dialog's 2xx retransmissions matter from here on.
                self.request = Vec::new();
                self.retransmit = None;
                self.give_up = None;
                self.linger = Some(now + self.timers.t64());
                ClientVerdict::Deliver
            }
            (Calling | Proceeding, true) => {
                self.state = Completed;
                self.retransmit = None;
                self.give_up = None;
                let d = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32).max(self.timers.t64())
                };
                self.linger = Some(now + d);
                ClientVerdict::DeliverAndAck
            }
            (Calling | Proceeding, false) => {
                self.state = Completed;
                self.retransmit = None;
                self.give_up = None;
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4()
                };
                self.linger = Some(now + k);
                ClientVerdict::Deliver
            }
            // RFC 6026: every 2xx in Accepted goes to the TU, which ACKs it again.
            (Accepted, _) if success => ClientVerdict::Deliver,
            (Completed, true) if !provisional && !success => ClientVerdict::ResendAck,
            _ => ClientVerdict::Absorb,
        }
    }

    /// When [`Self::on_timeout`] next wants to be called.
    pub fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|(t, _)| t), self.give_up, self.linger]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers that are due at `now`.
    pub fn on_timeout(&mut self, now: Instant) -> Option<TimerOutput> {
        if self.state == ClientState::Terminated {
            return None;
        }
        if self.give_up.is_some_and(|t| t <= now) {
            self.state = ClientState::Terminated;
            self.clear();
            return Some(TimerOutput::TimedOut);
        }
        if self.linger.is_some_and(|t| t <= now) {
            self.state = ClientState::Terminated;
            self.clear();
            return Some(TimerOutput::Terminated);
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            let next = if self.invite {
                interval * 2
            } else {
                (interval * 2).min(self.timers.t2())
            };
            let next = if self.state == ClientState::Proceeding {
                self.timers.t2()
            } else {
                next
            };
            self.retransmit = Some((now + next, next));
            return Some(TimerOutput::Retransmit(self.request.clone()));
        }
        None
    }

    fn clear(&mut self) {
        self.retransmit = None;
        self.give_up = None;
        self.linger = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Proceeding,
    Completed,
    Confirmed,
    Terminated,
}

/// A server transaction: one request we received and our responses to it.
#[derive(Debug)]
pub struct ServerTx {
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    /// Timer G: retransmit a non-2xx final INVITE response.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H: give up waiting for the ACK.
    give_up: Option<Instant>,
    /// Timers I and J: linger to absorb retransmissions.
    linger: Option<Instant>,
}

impl ServerTx {
    /// Starts a transaction for a request that just arrived.
    pub fn new(invite: bool, reliable: bool, timers: Timers) -> Self {
        ServerTx {
            invite,
            reliable,
            timers,
            state: ServerState::Proceeding,
            last_response: None,
            retransmit: None,
            give_up: None,
            linger: None,
        }
    }

    /// Whether a final response has been sent.
    pub fn completed(&self) -> bool {
        self.state != ServerState::Proceeding
    }

    /// Whether the transaction is finished.
    pub fn terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// Records a response we are sending with this status; the caller sends it.
    pub fn respond(&mut self, now: Instant, status: u16, bytes: Vec<u8>) {
        if self.state != ServerState::Proceeding {
            return;
        }
        self.last_response = Some(bytes);
        if status < 200 {
            return;
        }
        if self.invite && status < 300 {
            // The dialog retransmits 2xx until the ACK (RFC 3261 §13.3.1.4);
            // the transaction lingers only to answer retransmitted INVITEs.
            self.state = ServerState::Completed;
            self.linger = Some(now + self.timers.t64());
            return;
        }
        self.state = ServerState::Completed;
        if self.invite {
            if !self.reliable {
                self.retransmit = Some((now + self.timers.t1(), self.timers.t1()));
            }
            self.give_up = Some(now + self.timers.t64());
        } else {
            let j = if self.reliable {
                Duration::ZERO
            } else {
                self.timers.t64()
            };
            self.linger = Some(now + j);
        }
    }

    /// A retransmission of the request arrived: the bytes to send again, if any.
    pub fn on_retransmission(&self) -> Option<Vec<u8>> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => self.last_response.clone(),
            _ => None,
        }
    }

    /// The ACK for a non-2xx final response arrived.
    pub fn on_ack(&mut self, now: Instant) {
        if self.invite && self.state == ServerState::Completed && self.give_up.is_some() {
            self.state = ServerState::Confirmed;
            self.retransmit = None;
            self.give_up = None;
            let i = if self.reliable {
                Duration::ZERO
            } else {
                self.timers.t4()
            };
            self.linger = Some(now + i);
        }
    }

    /// When [`Self::on_timeout`] next wants to be called.
    pub fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|(t, _)| t), self.give_up, self.linger]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers due at `now`.
    pub fn on_timeout(&mut self, now: Instant) -> Option<TimerOutput> {
        if self.state == ServerState::Terminated {
            return None;
        }
        if self.give_up.is_some_and(|t| t <= now) {
            self.state = ServerState::Terminated;
            self.retransmit = None;
            self.give_up = None;
            return Some(TimerOutput::TimedOut);
        }
        if self.linger.is_some_and(|t| t <= now) {
            self.state = ServerState::Terminated;
            self.linger = None;
            return Some(TimerOutput::Terminated);
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            let next = (interval * 2).min(self.timers.t2());
            self.retransmit = Some((now + next, next));
            return self.last_response.clone().map(TimerOutput::Retransmit);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the machine on a virtual clock until `until`, returning
    /// (milliseconds since start, output) for each firing.
    fn run_client(tx: &mut ClientTx, start: Instant, until: Duration) -> Vec<(u128, TimerOutput)> {
        let mut out = Vec::new();
        while let Some(at) = tx.deadline() {
            if at > start + until {
                break;
            }
            if let Some(o) = tx.on_timeout(at) {
                out.push(((at - start).as_millis(), o));
            }
        }
        out
    }

    fn times(events: &[(u128, TimerOutput)]) -> Vec<u128> {
        events.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn invite_timer_a_doubles_and_timer_b_fires_at_64_t1() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, true, false, Timers::default(), b"INVITE".to_vec());
        let ev = run_client(&mut tx, t0, Duration::from_secs(60));
        // A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
        assert_eq!(times(&ev), vec![500, 1500, 3500, 7500, 15500, 31500, 32000]);
        assert_eq!(ev.last().map(|e| &e.1), Some(&TimerOutput::TimedOut));
        assert!(tx.terminated());
    }

    #[test]
    fn provisional_stops_timers_a_and_b() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, true, false, Timers::default(), b"INVITE".to_vec());
        let _ = tx.on_timeout(t0 + Duration::from_millis(500));
        assert_eq!(
            tx.on_response(t0 + Duration::from_millis(600), 180),
            ClientVerdict::Deliver
        );
        assert_eq!(tx.deadline(), None, "no timer runs while ringing");
    }

    #[test]
    fn non_2xx_final_acks_then_timer_d_absorbs_retransmissions() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, true, false, Timers::default(), b"INVITE".to_vec());
        assert_eq!(tx.on_response(t0, 486), ClientVerdict::DeliverAndAck);
        tx.set_ack(b"ACK".to_vec());
        assert_eq!(
            tx.on_response(t0 + Duration::from_secs(1), 486),
            ClientVerdict::ResendAck
        );
        let ev = run_client(&mut tx, t0, Duration::from_secs(60));
        assert_eq!(
            ev,
            vec![(32000, TimerOutput::Terminated)],
            "timer D is 32 s on UDP"
        );
        let mut tcp = ClientTx::new(t0, true, true, Timers::default(), b"INVITE".to_vec());
        assert_eq!(
            tcp.deadline(),
            Some(t0 + Duration::from_secs(32)),
            "B still runs on TCP, A does not"
        );
        tcp.on_response(t0, 603);
        assert_eq!(
            tcp.on_timeout(t0),
            Some(TimerOutput::Terminated),
            "D is zero on TCP"
        );
    }

    #[test]
    fn accepted_passes_every_2xx_up_until_timer_m() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, true, false, Timers::default(), b"INVITE".to_vec());
        assert_eq!(tx.on_response(t0, 200), ClientVerdict::Deliver);
        assert_eq!(
            tx.on_response(t0 + Duration::from_millis(500), 200),
            ClientVerdict::Deliver
        );
        assert_eq!(
            tx.on_response(t0 + Duration::from_millis(500), 180),
            ClientVerdict::Absorb
        );
        let ev = run_client(&mut tx, t0, Duration::from_secs(60));
        assert_eq!(ev, vec![(32000, TimerOutput::Terminated)]);
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_timer_f_fires() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, false, false, Timers::default(), b"BYE".to_vec());
        let ev = run_client(&mut tx, t0, Duration::from_secs(60));
        // E: 0.5, 1.5, 3.5, 7.5, then every 4 s; F at 32 s.
        assert_eq!(
            times(&ev),
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500, 32000
            ]
        );
        assert_eq!(ev.last().map(|e| &e.1), Some(&TimerOutput::TimedOut));
    }

    #[test]
    fn non_invite_provisional_moves_e_to_t2_and_timer_k_lingers_t4() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, false, false, Timers::default(), b"OPTIONS".to_vec());
        tx.on_response(t0 + Duration::from_millis(100), 100);
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_millis(4100)),
            Some(TimerOutput::Retransmit(b"OPTIONS".to_vec()))
        );
        assert_eq!(
            tx.on_response(t0 + Duration::from_millis(4200), 200),
            ClientVerdict::Deliver
        );
        assert_eq!(
            tx.on_response(t0 + Duration::from_millis(4300), 200),
            ClientVerdict::Absorb
        );
        assert_eq!(
            tx.deadline(),
            Some(t0 + Duration::from_millis(9200)),
            "K = T4"
        );
    }

    #[test]
    fn custom_t1_scales_every_timer() {
        let t0 = Instant::now();
        let timers = Timers {
            t1_ms: 100,
            t2_ms: 400,
            t4_ms: 500,
        };
        let mut tx = ClientTx::new(t0, true, false, timers, b"INVITE".to_vec());
        let ev = run_client(&mut tx, t0, Duration::from_secs(60));
        assert_eq!(times(&ev), vec![100, 300, 700, 1500, 3100, 6300, 6400]);
    }

    #[test]
    fn server_invite_timer_g_h_and_i() {
        let t0 = Instant::now();
        let mut tx = ServerTx::new(true, false, Timers::default());
        tx.respond(t0, 100, b"100".to_vec());
        assert_eq!(tx.on_retransmission(), Some(b"100".to_vec()));
        tx.respond(t0, 486, b"486".to_vec());
        let mut fired = Vec::new();
        while let Some(at) = tx.deadline() {
            if let Some(o) = tx.on_timeout(at) {
                fired.push(((at - t0).as_millis(), o));
            }
        }
        let g: Vec<u128> = fired
            .iter()
            .filter(|(_, o)| matches!(o, TimerOutput::Retransmit(_)))
            .map(|(t, _)| *t)
            .collect();
        // G: 0.5, 1.5, 3.5, 7.5, then every T2 until H at 32 s.
        assert_eq!(&g[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(fired.last(), Some(&(32000, TimerOutput::TimedOut)));

        let mut acked = ServerTx::new(true, false, Timers::default());
        acked.respond(t0, 603, b"603".to_vec());
        acked.on_ack(t0 + Duration::from_millis(10));
        assert_eq!(
            acked.deadline(),
            Some(t0 + Duration::from_millis(5010)),
            "I = T4"
        );
        assert_eq!(
            acked.on_retransmission(),
            None,
            "retransmitted ACKs are absorbed"
        );
    }

    #[test]
    fn server_non_invite_timer_j() {
        let t0 = Instant::now();
        let mut tx = ServerTx::new(false, false, Timers::default());
        tx.respond(t0, 200, b"200".to_vec());
        assert_eq!(
            tx.on_retransmission(),
            Some(b"200".to_vec()),
            "retransmitted BYE gets the same 200"
        );
        assert_eq!(tx.deadline(), Some(t0 + Duration::from_secs(32)));
        let mut tcp = ServerTx::new(false, true, Timers::default());
        tcp.respond(t0, 200, b"200".to_vec());
        assert_eq!(
            tcp.on_timeout(t0),
            Some(TimerOutput::Terminated),
            "J is zero on TCP"
        );
    }
}
