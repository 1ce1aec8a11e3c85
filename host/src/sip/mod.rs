//! SIP signalling: transports, transactions (RFC 3261 §17), dialogs, digest
//! authentication and SDP, for placing calls through providers.
//!
//! The protocol core is sans-IO ([`Endpoint`], [`transaction`]): it takes
//! bytes and the current time and returns bytes to send, events and its next
//! deadline. [`driver`] runs it on tokio sockets and gives the rest of the
//! host a small async API: [`SipService::place_call`], the call's
//! [`CallEvent`] stream, and [`SipService::hangup`].

pub mod digest;
pub mod dns;
pub mod driver;
mod endpoint;
pub mod message;
pub mod sdp;
pub mod transaction;
pub mod transport;
mod uri;

pub use driver::{PlacedCall, RegistrationView, SipService};
pub use endpoint::{
    CallEvent, CallId, CallRequest, Config, Endpoint, Event, NumberFormat, Party, Provider,
    RegistrationState, Stats, Transmit,
};
pub use message::Transport;
pub use sdp::{AudioSdp, Codec, Direction};
pub use transaction::Timers;
pub use uri::{HostPort, TargetUri, UriError, UriHost, UriTransport, is_public_ip};

/// Errors of the SIP module.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// The target is not a SIP URI we can send to.
    #[error("cannot call {0:?}: not a SIP URI we can send to")]
    BadTarget(String),
    /// The provider is not in the configuration.
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    /// No listener of the transport and address family the destination needs.
    #[error("no {0} listener for this destination's address family")]
    NoListener(Transport),
    /// Binding a socket failed.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// The transport.
        transport: Transport,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A wildcard listen address with no external address to advertise in
    /// its place.
    #[error(
        "sip.{transport} listens on {addr}, a wildcard, which peers cannot be told: set \
         sip.external_address to the address they reach this host at (behind NAT, the public one)"
    )]
    Wildcard {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The listen address.
        addr: std::net::SocketAddr,
    },
    /// The provider has as many calls up as its `max_calls`.
    #[error("provider {0:?} is at its channel limit (max_calls)")]
    TrunkFull(String),
    /// The DNS resolver could not be set up (`[sip] dns`, or the system's
    /// configuration).
    #[error("DNS: {0}")]
    Resolver(String),
    /// The SIP task has stopped.
    #[error("the SIP service has stopped")]
    Stopped,
}
