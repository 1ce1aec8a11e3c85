//! The media plane: every leg's RTP is anchored here, each leg hears all the
//! others (mix-minus), and tones are played to legs that wait.
//!
//! - [`g711`]: PCMU/PCMA tables.
//! - [`rtp`], [`rtcp`], [`dtmf`]: the wire formats and per-leg statistics.
//! - [`jitter`]: the per-leg jitter buffer (sans-IO).
//! - [`mixer`]: the conference core (sans-IO): packets and time in,
//!   datagrams and events out.
//! - [`tone`]: ringback, beeps and prompts.
//! - [`engine`]: the thread that owns the sockets (one RTP/RTCP pair per leg
//!   from a port range) and drives the conferences' clocks.
//! - [`goertzel`]: tone detection, for checking what a leg hears.

pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod goertzel;
pub mod jitter;
pub mod mixer;
pub mod rtcp;
pub mod rtp;
pub mod tone;

#[cfg(test)]
mod mixer_tests;

use std::net::SocketAddr;

pub use engine::{ConferenceId, EngineEvent, EngineStats, LegHandle, MediaConfig, MediaEngine};
pub use g711::Law;
pub use mixer::{Conference, LegConfig, LegId, LegStats, MediaEvent};
pub use tone::{Playback, Tone};

/// What can go wrong in the media plane.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A datagram on an RTP port that is not a usable RTP packet.
    #[error("not an RTP packet: {0}")]
    BadRtp(String),
    /// A datagram on an RTCP port that is not a usable RTCP packet.
    #[error("not an RTCP packet: {0}")]
    BadRtcp(String),
    /// A telephone-event payload too short to read.
    #[error("bad telephone-event payload: {0}")]
    BadDtmf(String),
    /// RTP with a payload type the leg did not negotiate.
    #[error("payload type {0} was not negotiated on this leg")]
    UnexpectedPayloadType(u8),
    /// RTP from an address other than the one the leg latched onto.
    #[error("RTP from {0}, which is not the leg's far end")]
    WrongSource(SocketAddr),
    /// A leg id that is not in the conference.
    #[error("no such leg: {0}")]
    UnknownLeg(LegId),
    /// A leg id added twice.
    #[error("leg {0} is already in the conference")]
    DuplicateLeg(LegId),
    /// A conference id that does not exist.
    #[error("no such conference: {0}")]
    UnknownConference(u64),
    /// Every port of the configured range is in use.
    #[error("no free RTP port pair in {first}-{last} on {address}")]
    PortsExhausted {
        /// The address legs bind to.
        address: std::net::IpAddr,
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// A configuration value that cannot work.
    #[error("media configuration: {0}")]
    Config(String),
    /// The engine thread has stopped.
    #[error("the media engine has stopped")]
    Stopped,
    /// A socket operation failed.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
}
