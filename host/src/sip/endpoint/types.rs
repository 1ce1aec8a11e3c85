//! What the endpoint takes and reports: call requests, call progress,
//! events, bytes to send and counters.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::message::Transport;
use super::super::sdp::{AudioSdp, Codec};

/// Identifies a call placed through this endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// What to call.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// Request-URI, e.g. `sip:+442071234567@trunk.example` or
    /// `sip:bob@127.0.0.1:5080`: a strict URI, written into the request
    /// from its parts.
    pub target: super::super::TargetUri,
    /// The provider to send it through; `None` sends to the URI's own
    /// host (an address, or a DNS name located by RFC 3263).
    pub provider: Option<String>,
    /// Our SDP offer (address and port of our RTP endpoint).
    pub offer: AudioSdp,
    /// Cancel the call if it is not answered within this time.
    pub ring_timeout: Option<Duration>,
    /// User part of the From URI (the caller id shown); defaults to the configured user.
    pub caller: Option<String>,
    /// Send only to public addresses ([`crate::sip::is_public_ip`]): a
    /// name that leads only to private ones fails the call with 403.
    pub public_only: bool,
}

/// Who ended an established call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// We did ([`Endpoint::hangup`](super::Endpoint::hangup), or a protocol failure on our side).
    Local,
    /// The far end sent BYE.
    Remote,
}

/// Progress of a call, in the order it happens. Exactly one of `Failed` or
/// `Ended` comes last.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// The far end has the INVITE (100).
    Trying,
    /// It rings (180).
    Ringing,
    /// Early media: a 18x with SDP; audio may flow before answer.
    EarlyMedia {
        /// The far end's description.
        sdp: AudioSdp,
    },
    /// 2xx: the call is up.
    Answered {
        /// The far end's answer.
        sdp: AudioSdp,
        /// The codec both sides use.
        codec: Codec,
    },
    /// The far end changed its media with a re-INVITE (hold, unhold, new address).
    MediaChanged {
        /// Its new description.
        sdp: AudioSdp,
    },
    /// The call was never answered: the status and why.
    Failed {
        /// SIP status (408 for our own timeouts, 488 when no codec is shared).
        status: u16,
        /// What went wrong, in words.
        reason: String,
    },
    /// An answered call's session timer ran out (RFC 4028): the far end
    /// did not refresh, or our refresh failed. We sent BYE.
    Expired {
        /// What happened, in words.
        reason: String,
    },
    /// A call that was answered (or cancelled by us) is over.
    Ended {
        /// Who ended it.
        by: Party,
        /// Why.
        reason: String,
    },
}

/// What the endpoint reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Progress of one call.
    Call {
        /// Which call.
        call: CallId,
        /// What happened.
        event: CallEvent,
    },
    /// A provider's registration changed state.
    Registration {
        /// Its name.
        name: String,
        /// Where it stands now.
        state: super::RegistrationState,
    },
    /// A provider answered or stopped answering OPTIONS.
    Provider {
        /// Its name.
        name: String,
        /// Whether it now counts as up.
        up: bool,
    },
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// UDP or TCP.
    pub transport: Transport,
    /// Where to.
    pub destination: SocketAddr,
    /// The message.
    pub payload: Vec<u8>,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Messages received and parsed.
    pub received: u64,
    /// Messages sent, retransmissions included.
    pub sent: u64,
    /// Retransmissions we sent.
    pub retransmissions: u64,
    /// Malformed messages dropped without an answer.
    pub dropped_malformed: u64,
    /// Malformed requests answered with 400/505/513.
    pub rejected_malformed: u64,
    /// Responses that matched no transaction.
    pub stray_responses: u64,
    /// Requests answered 481.
    pub unknown_dialog: u64,
    /// Calls placed.
    pub calls_placed: u64,
    /// Calls currently tracked.
    pub calls_active: u64,
    /// DNS queries handed out ([`Endpoint::poll_query`](super::Endpoint::poll_query)).
    pub dns_queries: u64,
    /// Answers that were failures (no answer, SERVFAIL, …).
    pub dns_failures: u64,
    /// INVITEs moved to a name's next target (RFC 3263 §4.3).
    pub failovers: u64,
}
