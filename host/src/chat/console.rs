//! The console chat: one line in is one message, the bot's replies are
//! printed. The same [`Bot`] as the XMPP front end answers.

use std::io::{BufRead, Write};
use std::time::Instant;

use super::ChatError;
use super::bot::Bot;

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
