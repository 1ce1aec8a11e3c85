//! Callback sessions: CALLBACK rings the source, then the destination, and
//! bridges them; ADD, DEL, LIST and HANGUP work on the conference; every leg
//! is billed.
//!
//! - [`machine`]: one session's rules as a pure state machine.
//! - [`duration`]: the maximum call length (sans-IO).
//! - [`target`]: where a leg is rung (provider, direct SIP URI, IM gateway).
//! - [`task`]: the tokio task that runs one session's machine against the
//!   router plugin, SIP, the mixer and billing.
//! - [`manager`]: every live session of the host; the chat's
//!   [`Sessions`] port (`port.rs`, with [`Notice`]).

pub mod duration;
pub mod machine;
pub mod manager;
mod port;
pub mod target;
pub mod task;

use std::collections::BTreeMap;

pub use machine::{Action, Input, LegKey, Phase, Session};
pub use manager::{END_REASONS, Services, SessionCounters, SessionManager};
pub use port::{Notice, Sessions, Unwired};

/// A live session as operators see it (the admin page and API).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionView {
    /// The session id (CDRs carry it).
    pub id: String,
    /// The owner's chat address.
    pub owner: String,
    /// When it started, ms since the Unix epoch.
    pub started_ms: i64,
    /// Its legs, in the order they were dialled.
    pub legs: Vec<LegView>,
}

/// One leg of a [`SessionView`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LegView {
    /// `source`, `destination` or `additional`.
    pub role: &'static str,
    /// Where it goes, as LIST writes it (`phone:442071234567`).
    pub address: String,
    /// The provider of the current attempt; none for free legs.
    pub provider: Option<String>,
    /// `ringing`, `talking` or `ended`.
    pub state: &'static str,
    /// Seconds since it answered, while talking.
    pub talking_secs: Option<u64>,
}

/// The `[sessions]` section: limits and gateways.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Live sessions one user may have at once.
    pub max_per_user: u32,
    /// A leg not answered within this many seconds is given up (no answer).
    pub ring_timeout_secs: u64,
    /// SIP address templates for IM networks, by scheme (`gtalk`, `msn`,
    /// `yahoo`, `xmpp`, or any other scheme a parser knows), e.g.
    /// `gtalk = "sip:{user}@gtalk-gateway.example"`. `{user}` is replaced by
    /// the leg's address. A scheme without a template cannot be reached.
    pub gateways: BTreeMap<String, String>,
    /// Which hosts `sip:` legs may reach: `"any"`, `"public-only"` (the
    /// default) or `"off"`. Whatever it says, a `sip:` leg may not reach a
    /// configured provider, a gateway or one of our own SIP addresses, and
    /// a user part that is an emergency, denied or premium number is refused.
    pub sip_legs: target::SipLegs,
    /// After a 486 Busy Here, 600 Busy Everywhere or 603 Decline the callee
    /// is not rung again through another provider, whatever the router
    /// plugin says. On by default.
    pub never_ring_busy_again: bool,
    /// The longest a call may last, from the source's answer; the owner is
    /// warned a minute before. A safety net for legs whose far end is gone
    /// without our noticing. Default 4 hours.
    pub max_call_secs: u64,
    /// How long a drain (`POST /admin/api/drain`, SIGUSR1) lets live calls
    /// go on before they are ended with `Shutdown` and the process exits.
    pub drain_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_per_user: 1,
            ring_timeout_secs: 45,
            gateways: BTreeMap::new(),
            sip_legs: target::SipLegs::default(),
            never_ring_busy_again: true,
            max_call_secs: 4 * 3600,
            drain_secs: 300,
        }
    }
}

impl SessionConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.max_per_user) {
            return Err(format!(
                "sessions.max_per_user = {} is not between 1 and 100",
                self.max_per_user
            ));
        }
        if !(5..=300).contains(&self.ring_timeout_secs) {
            return Err(format!(
                "sessions.ring_timeout_secs = {} is not between 5 and 300",
                self.ring_timeout_secs
            ));
        }
        if !(60..=7 * 86_400).contains(&self.max_call_secs) {
            return Err(format!(
                "sessions.max_call_secs = {} is not between 60 and 604800",
                self.max_call_secs
            ));
        }
        if !(1..=86_400).contains(&self.drain_secs) {
            return Err(format!(
                "sessions.drain_secs = {} is not between 1 and 86400",
                self.drain_secs
            ));
        }
        for (scheme, template) in &self.gateways {
            if scheme == "phone" || scheme == "sip" {
                return Err(format!(
                    "sessions.gateways.{scheme}: {scheme} legs are not reached through a gateway"
                ));
            }
            target::gateway_uri(template, "user")
                .map_err(|e| format!("sessions.gateways.{scheme} = {template:?}: {e}"))?;
        }
        Ok(())
    }
}
