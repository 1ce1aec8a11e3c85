//! The bot's core, whatever the chat network: a message and its sender in,
//! reply texts out. Messages go through the rate limit and the parser
//! plugin; commands that need a call go to the session manager; every
//! event is phrased by the replies plugin and long texts are split to fit
//! one chat message each. Time is passed in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::ChatError;
use super::limit::{RateLimit, RateLimiter, Verdict};
use crate::plugin::PluginHost;
use crate::plugin::types::{Command, Error, Event};

pub use crate::session::{Sessions, Unwired};

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

/// The most chat messages one event may become; a longer reply is cut and
/// says so, so one event cannot flood a user.
pub const MAX_MESSAGES_PER_EVENT: usize = 8;

/// The bot: plugins, the session manager and the per-sender rate limit.
pub struct Bot {
    plugins: Arc<PluginHost>,
    sessions: Arc<dyn Sessions>,
    limiter: RateLimiter,
    max_chars: usize,
    cut_replies: AtomicU64,
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
            cut_replies: AtomicU64::new(0),
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

    /// The texts to send `recipient` for one event, each fitting one chat
    /// message, at most [`MAX_MESSAGES_PER_EVENT`] of them.
    pub fn phrase(&self, recipient: &str, event: &Event) -> Result<Vec<String>, ChatError> {
        let mut texts = split(
            &self.plugins.render(recipient, event)?.value,
            self.max_chars,
        );
        if texts.len() > MAX_MESSAGES_PER_EVENT {
            let all = texts.len();
            texts.truncate(MAX_MESSAGES_PER_EVENT - 1);
            texts.push(format!(
                "(The rest of this reply was cut: it would have taken {all} messages.)"
            ));
            self.cut_replies.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                messages = all,
                max = MAX_MESSAGES_PER_EVENT,
                "a reply was cut to the per-event message limit"
            );
        }
        Ok(texts)
    }

    /// Replies cut to [`MAX_MESSAGES_PER_EVENT`] so far.
    pub fn cut_replies(&self) -> u64 {
        self.cut_replies.load(Ordering::Relaxed)
    }

    /// The texts that answer one message, in order. A plugin failure
    /// becomes an apology rather than silence.
    pub fn answer(&mut self, now: Instant, sender: &str, message: &str) -> Vec<String> {
        let texts = self.events(now, sender, message).and_then(|events| {
            let mut out = Vec::new();
            for e in &events {
                out.extend(self.phrase(sender, e)?);
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
