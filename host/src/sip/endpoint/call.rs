//! One outgoing call's dialog state. Where the call is in its life is one
//! [`CallState`], and each state carries only what holds in it.

use std::time::{Duration, Instant};

use super::super::sdp::{AudioSdp, Codec};
use super::Dest;
use super::transactions::ClientKey;
use super::types::CallEvent;

/// An outgoing call: its dialog identifiers, where it goes, and its state.
#[derive(Debug)]
pub(super) struct Call {
    pub(super) call_id: String,
    pub(super) local_tag: String,
    /// The far end's To tag, from its first 2xx.
    pub(super) remote_tag: Option<String>,
    pub(super) local_uri: String,
    /// The display name of our From, if the trunk sets one.
    pub(super) local_display: Option<String>,
    /// The `P-Asserted-Identity` user of our INVITEs, if any.
    pub(super) asserted: Option<String>,
    /// A loose Route to the trunk's outbound proxy, on requests outside
    /// the dialog.
    pub(super) initial_route: Option<String>,
    pub(super) remote_uri: String,
    /// The Request-URI of the INVITE.
    pub(super) target: String,
    /// Where the INVITE goes (the provider, or the target's own host);
    /// not yet known while the call is [`CallState::Locating`].
    pub(super) dest: Dest,
    /// The targets left to try after `dest` when it fails (RFC 3263 §4.3).
    pub(super) alternates: Vec<Dest>,
    /// The user part of our From URI.
    pub(super) from_user: String,
    /// Only public addresses may be sent to.
    pub(super) public_only: bool,
    /// The provider's index in the configuration, if it goes through one.
    pub(super) provider: Option<usize>,
    /// Our last CSeq number.
    pub(super) cseq: u32,
    /// The INVITE transaction in flight (the last one, after a challenge).
    pub(super) invite_key: Option<ClientKey>,
    /// Our BYE transaction, once sent.
    pub(super) bye_key: Option<ClientKey>,
    /// The caller's ring timeout (for the reason text).
    pub(super) ring_timeout: Duration,
    /// UAC route set: Record-Route of the 2xx, reversed (§12.1.2).
    pub(super) route_set: Vec<String>,
    /// The far end's Contact.
    pub(super) remote_target: Option<String>,
    /// Our SDP (its version moves on with each re-offer).
    pub(super) offer: AudioSdp,
    pub(super) codec: Option<Codec>,
    /// Challenges answered so far, and the answer to send with the INVITE.
    pub(super) auth_tries: u32,
    pub(super) auth_header: Option<(String, String)>,
    /// The ACK of the 2xx, resent for each retransmitted 2xx.
    pub(super) ack: Option<(Vec<u8>, Dest)>,
    /// The CSeq of the last in-dialog request from the far end.
    pub(super) remote_cseq: Option<u32>,
    /// The session interval our INVITE asks for (0: no session timer).
    pub(super) session_expires: u32,
    /// The INVITE was retried after a 422 (once only).
    pub(super) session_retried: bool,
    /// The dialog's session timer, once a 2xx set one (RFC 4028).
    pub(super) session: Option<super::session_timer::SessionTimer>,
    pub(super) state: CallState,
}

/// Where a call is in its life.
#[derive(Debug)]
pub(super) enum CallState {
    /// Its destination is a DNS name being located; nothing is sent yet.
    Locating,
    /// Our INVITE is out and no final answer has come.
    Inviting(Inviting),
    /// A 2xx came and was ACKed: the dialog is up.
    Confirmed(Confirmed),
    /// We sent BYE; its transaction's outcome ends the call.
    Closing,
    /// The call's final event is out; it is kept only until its
    /// transactions are over.
    Finished,
}

/// A call whose INVITE has no final answer yet.
#[derive(Debug, Default)]
pub(super) struct Inviting {
    /// A provisional response has come (CANCEL may be sent, §9.1).
    pub(super) provisional: bool,
    /// We decided to cancel.
    pub(super) cancel: Option<Cancelling>,
}

/// A call we decided to cancel before it was answered.
#[derive(Debug)]
pub(super) struct Cancelling {
    /// The event to report once the INVITE is over.
    pub(super) outcome: CallEvent,
    /// Our CANCEL is sent; until then it waits for a provisional response.
    pub(super) sent: bool,
}

/// A call whose dialog is up.
#[derive(Debug, Default)]
pub(super) struct Confirmed {
    /// Our 2xx to a re-INVITE, until its ACK.
    pub(super) answer: Option<Pending2xx>,
}

/// Our 2xx to a re-INVITE, retransmitted until its ACK (§13.3.1.4).
#[derive(Debug)]
pub(super) struct Pending2xx {
    pub(super) bytes: Vec<u8>,
    pub(super) cseq: u32,
    pub(super) interval: Duration,
    pub(super) give_up: Instant,
}

impl Call {
    /// Whether the call's final event is out.
    pub(super) fn finished(&self) -> bool {
        matches!(self.state, CallState::Finished)
    }

    /// The cancel decision of a call not yet answered.
    pub(super) fn cancelling(&mut self) -> Option<&mut Cancelling> {
        match &mut self.state {
            CallState::Inviting(inviting) => inviting.cancel.as_mut(),
            _ => None,
        }
    }

    /// Takes the outcome a cancel decided, if the call was being cancelled.
    pub(super) fn take_cancel_outcome(&mut self) -> Option<CallEvent> {
        match &mut self.state {
            CallState::Inviting(inviting) => inviting.cancel.take().map(|c| c.outcome),
            _ => None,
        }
    }
}
