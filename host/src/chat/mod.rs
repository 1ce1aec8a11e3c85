//! Chat front ends: where users' messages come in and the bot's replies go out.
//!
//! For now only the console, which the demo uses; the XMPP bot joins it later.

pub mod console;

/// Errors of the chat front ends.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Reading a message or writing a reply failed.
    #[error("chat I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// No plugin version could parse or phrase a message.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
}
