//! The console chat: one line in is one message, the bot's reply is printed.
//!
//! Calls are not wired yet: a command that needs a call is answered with the
//! replies plugin's "calls unavailable" text rather than a pretend call.

use std::io::{BufRead, Write};

use super::ChatError;
use crate::plugin::PluginHost;
use crate::plugin::types::{Command, Error, Event, WrongState};

/// The event that answers one message, before the replies plugin phrases it.
pub fn respond(plugins: &PluginHost, message: &str, sender: &str) -> Result<Event, ChatError> {
    let parsed = plugins.parse(message, sender)?.value;
    Ok(match parsed {
        Err(e) => Event::Error(Error::Parse(e)),
        Ok(Command::Help) => Event::Help,
        Ok(Command::Balance) => Event::Error(Error::WrongState(WrongState {
            command: "BALANCE".into(),
            state: "accounts are not available in this build yet".into(),
        })),
        Ok(
            Command::Callback(_)
            | Command::List
            | Command::Add(_)
            | Command::Del(_)
            | Command::Hangup,
        ) => Event::Error(Error::CallsUnavailable),
    })
}

/// The text the bot sends back for one message.
pub fn answer(plugins: &PluginHost, message: &str, sender: &str) -> Result<String, ChatError> {
    let event = respond(plugins, message, sender)?;
    Ok(plugins.render(&event)?.value)
}

/// Reads messages from `input` until it ends and writes each reply to
/// `output`, as the user `sender`. Blank lines are skipped.
pub fn run(
    plugins: &PluginHost,
    input: impl BufRead,
    mut output: impl Write,
    sender: &str,
) -> Result<(), ChatError> {
    write!(output, "> ")?;
    output.flush()?;
    for line in input.lines() {
        let line = line?;
        if !line.trim().is_empty() {
            let reply = match answer(plugins, &line, sender) {
                Ok(reply) => reply,
                Err(e) => format!("Sorry, something went wrong on our side: {e}"),
            };
            writeln!(output, "{reply}")?;
        }
        write!(output, "> ")?;
        output.flush()?;
    }
    writeln!(output)?;
    Ok(())
}
