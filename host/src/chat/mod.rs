//! Chat front ends: where users' messages come in and the bot's replies go out.
//!
//! - [`bot`]: the network-independent core (rate limit, parser, session
//!   manager interface, replies, splitting).
//! - [`xmpp`]: the XMPP bot (tokio-xmpp).
//! - [`console`]: the same flow on stdin/stdout, for the demo.
//! - [`limit`], [`outbox`]: the per-sender rate limit, the offline queue.

pub mod bot;
pub mod console;
pub mod limit;
pub mod outbox;
pub mod xmpp;

pub use bot::{Bot, MAX_MESSAGES_PER_EVENT, Sessions, Unwired};
pub use limit::RateLimit;

pub use crate::session::Notice;

/// How other parts of the host reach users outside their conversation
/// with the bot: the invite page's subscription request and the account
/// page's login codes.
pub trait Messenger: Send + Sync {
    /// Asks `address` to add the bot to their contacts.
    fn invite(&self, address: &str) -> Result<(), ChatError>;
    /// Sends `text` to `address` as it is.
    fn send(&self, address: &str, text: &str) -> Result<(), ChatError>;
}

/// Errors of the chat front ends.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Reading a message or writing a reply failed.
    #[error("chat I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// No plugin version could parse or phrase a message.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
    /// A chat setting or address that cannot be used.
    #[error("chat: {0}")]
    Config(String),
}
