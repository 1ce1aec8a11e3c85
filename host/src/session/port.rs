//! What the front ends (chat, web) use of sessions: the [`Sessions`] port
//! they hand call commands to, and the [`Notice`]s sessions send back. They
//! live here, below the chat in the data flow, so sessions never import it.

use crate::plugin::types::{Command, Error, Event, WrongState};

/// The session manager as a front end sees it ([`super::SessionManager`]
/// implements it; [`Unwired`] stands in where there is none).
pub trait Sessions: Send + Sync {
    /// A command from `sender` that concerns calls (CALLBACK, LIST, ADD,
    /// DEL, HANGUP, BALANCE). Returns what to tell the sender now; progress
    /// that comes later is delivered as [`Notice`]s.
    fn command(&self, sender: &str, command: Command) -> Vec<Event>;
}

/// No session manager: every call command is answered with
/// "calls are not available", never with a pretend call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unwired;

impl Sessions for Unwired {
    fn command(&self, _sender: &str, command: Command) -> Vec<Event> {
        vec![match command {
            Command::Balance => Event::Error(Error::WrongState(WrongState {
                command: "BALANCE".into(),
                state: "accounts are not available in this build yet".into(),
            })),
            _ => Event::Error(Error::CallsUnavailable),
        }]
    }
}

/// Something a session tells a user later (call progress): the front end
/// phrases `event` and sends it to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The user's chat address.
    pub to: String,
    /// What happened.
    pub event: Event,
}
