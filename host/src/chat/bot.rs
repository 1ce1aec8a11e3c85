//! The bot's core, whatever the chat network: a message and its sender in,
//! reply texts out. Messages go through the rate limit and the parser
//! plugin; commands that need a call go to the session manager; every
//! event is phrased by the replies plugin and long texts are split to fit
//! one chat message each. Time is passed in.

use std::sync::Arc;
use std::time::Instant;

use super::ChatError;
use super::limit::{RateLimit, RateLimiter, Verdict};
use crate::plugin::PluginHost;
use crate::plugin::types::{Command, Error, Event, WrongState};

/// The session manager as the chat sees it: the sessions issue implements
/// it; until then [`Unwired`] answers that calls are not available.
pub trait Sessions: Send + Sync {
    /// A command from `sender` that concerns calls (CALLBACK, LIST, ADD,
    /// DEL, HANGUP, BALANCE). Returns what to tell the sender now; progress
    /// that comes later is delivered by the session manager through the
    /// chat front end's event channel.
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

/// Splits `text` into pieces of at most `max` characters: at line breaks
/// where possible, else at spaces, else anywhere (on a character boundary).
pub fn split(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut pieces = Vec::new();
    let mut rest = text.trim_end();
    while rest.chars().count() > max {
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let head = &rest[..cut];
        let at = if rest[cut..].starts_with(char::is_whitespace) {
            cut // the first `max` characters end a word: keep them all
        } else {
            head.rfind('\n')
                .or_else(|| head.rfind(' '))
                .filter(|&i| i > 0)
                .unwrap_or(cut)
        };
        pieces.push(rest[..at].trim_end().to_string());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.to_string());
    }
    pieces
}

/// The bot: plugins, the session manager and the per-sender rate limit.
pub struct Bot {
    plugins: Arc<PluginHost>,
    sessions: Arc<dyn Sessions>,
    limiter: RateLimiter,
    max_chars: usize,
}

impl Bot {
    /// A bot answering with `plugins`, handing call commands to `sessions`,
    /// limiting each sender to `limit`, splitting replies at `max_chars`.
    pub fn new(
        plugins: Arc<PluginHost>,
        sessions: Arc<dyn Sessions>,
        limit: RateLimit,
        max_chars: usize,
    ) -> Self {
        Bot {
            plugins,
            sessions,
            limiter: RateLimiter::new(limit),
            max_chars,
        }
    }

    /// The events that answer one message (before phrasing); empty when
    /// the message is dropped silently (a flood already told off).
    pub fn events(
        &mut self,
        now: Instant,
        sender: &str,
        message: &str,
    ) -> Result<Vec<Event>, ChatError> {
        match self.limiter.check(now, sender) {
            Verdict::Allowed => {}
            Verdict::RefusedTell => return Ok(vec![Event::Error(Error::RateLimited)]),
            Verdict::Refused => return Ok(Vec::new()),
        }
        let parsed = self.plugins.parse(message, sender)?.value;
        Ok(match parsed {
            Err(e) => vec![Event::Error(Error::Parse(e))],
            Ok(Command::Help) => vec![Event::Help],
            Ok(command) => self.sessions.command(sender, command),
        })
    }

    /// The texts to send for one event, each fitting one chat message.
    pub fn phrase(&self, event: &Event) -> Result<Vec<String>, ChatError> {
        Ok(split(&self.plugins.render(event)?.value, self.max_chars))
    }

    /// The texts that answer one message, in order. A plugin failure
    /// becomes an apology rather than silence.
    pub fn answer(&mut self, now: Instant, sender: &str, message: &str) -> Vec<String> {
        let texts = self.events(now, sender, message).and_then(|events| {
            let mut out = Vec::new();
            for e in &events {
                out.extend(self.phrase(e)?);
            }
            Ok(out)
        });
        texts.unwrap_or_else(|e| vec![format!("Sorry, something went wrong on our side: {e}")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_prefers_lines_then_spaces() {
        assert_eq!(split("short", 10), vec!["short"]);
        assert_eq!(split("", 10), vec![""]);
        assert_eq!(
            split("line one\nline two\nline three", 18),
            vec!["line one\nline two", "line three"]
        );
        assert_eq!(split("aaaa bbbb cccc", 9), vec!["aaaa bbbb", "cccc"]);
        assert_eq!(split("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        let unicode = "ééééé ééééé";
        assert!(split(unicode, 5).iter().all(|p| p.chars().count() <= 5));
    }
}
