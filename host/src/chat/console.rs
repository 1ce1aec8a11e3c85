//! The console chat: one line in is one message, the bot's replies are
//! printed. The same [`Bot`] as the XMPP front end answers.

use std::io::{BufRead, Write};
use std::time::Instant;

use tokio::sync::mpsc;

use super::bot::Bot;
use super::{ChatError, Notice};

/// What the demo's web pages send users, printed on the console as if the
/// bot had sent it (the demo has one user, at the keyboard).
pub struct ConsoleMessenger;

impl super::Messenger for ConsoleMessenger {
    fn invite(&self, address: &str) -> Result<(), ChatError> {
        println!("\n[the bot sends {address} a subscription request]");
        Ok(())
    }

    fn send(&self, address: &str, text: &str) -> Result<(), ChatError> {
        println!("\n[to {address}] {text}");
        Ok(())
    }
}

/// Reads messages from `input` until it ends and writes each reply to
/// `output`, as the user `sender`. Blank lines are skipped.
pub fn run(
    bot: &mut Bot,
    input: impl BufRead,
    mut output: impl Write,
    sender: &str,
) -> Result<(), ChatError> {
    write!(output, "> ")?;
    output.flush()?;
    for line in input.lines() {
        let line = line?;
        if !line.trim().is_empty() {
            for reply in bot.answer(Instant::now(), sender, &line) {
                writeln!(output, "{reply}")?;
            }
        }
        write!(output, "> ")?;
        output.flush()?;
    }
    writeln!(output)?;
    Ok(())
}

/// The console with calls: reads lines from stdin on a thread of its own,
/// answers them, and prints the session manager's notices for `sender` as
/// they come, until stdin ends.
pub async fn run_live(
    bot: &mut Bot,
    notices: &mut mpsc::UnboundedReceiver<Notice>,
    mut output: impl Write,
    sender: &str,
) -> Result<(), ChatError> {
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    write!(output, "> ")?;
    output.flush()?;
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                if !line.trim().is_empty() {
                    for reply in bot.answer(Instant::now(), sender, &line) {
                        writeln!(output, "{reply}")?;
                    }
                }
            }
            notice = notices.recv() => {
                let Some(notice) = notice else { break };
                if notice.to != sender {
                    continue;
                }
                let texts = bot.phrase(&notice.to, &notice.event).unwrap_or_else(|e| {
                    vec![format!("Sorry, something went wrong on our side: {e}")]
                });
                writeln!(output)?;
                for text in texts {
                    writeln!(output, "{text}")?;
                }
            }
        }
        write!(output, "> ")?;
        output.flush()?;
    }
    writeln!(output)?;
    Ok(())
}
