//! What the contract in `wit/` promises about results, checked on every
//! call: a result that breaks it counts as a failure of that version.

use std::collections::HashSet;

use super::Limits;
use super::types::{Attempt, Command, Leg, ParseError, RouteRequest, Scheme};

/// Longest address of a non-phone leg a parser may return, in bytes.
const MAX_ADDRESS_BYTES: usize = 1024;
/// Longest provider name a parser may return, in bytes.
const MAX_PROVIDER_BYTES: usize = 64;

/// A parser's result: legs well formed, sizes within the cap.
pub(crate) fn parsed(parsed: &Result<Command, ParseError>, limits: &Limits) -> Result<(), String> {
    let bytes = match parsed {
        Ok(command) => command_bytes(command)?,
        Err(e) if e.reason.trim().is_empty() => {
            return Err("a parse error with an empty reason".into());
        }
        Err(e) => e.reason.len() + e.syntax.len(),
    };
    within(bytes, limits)
}

/// A router's ranking: only offered providers, each at most once.
pub(crate) fn attempts(
    attempts: &[Attempt],
    request: &RouteRequest,
    limits: &Limits,
) -> Result<(), String> {
    let offered: HashSet<&str> = request
        .candidates
        .iter()
        .map(|c| c.provider.as_str())
        .collect();
    let mut seen = HashSet::new();
    let mut bytes = 0usize;
    for attempt in attempts {
        let name = attempt.provider.as_str();
        if !offered.contains(name) {
            return Err(format!(
                "attempt via '{}', which was not offered",
                cut(name)
            ));
        }
        if !seen.insert(name) {
            return Err(format!("provider '{}' listed twice", cut(name)));
        }
        bytes += name.len();
    }
    within(bytes, limits)
}

/// A rendered reply: not empty, within the cap, and only characters a chat
/// message can carry and a terminal shows as text: no C0 control but `\n`
/// and `\t`, no DEL or C1 control (terminal escapes), no U+FFFE/U+FFFF or
/// other noncharacters (which XML, hence XMPP, cannot carry), no line or
/// paragraph separators and no bidirectional overrides (which make text
/// read as something else).
pub(crate) fn rendered(text: &str, limits: &Limits) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("an empty reply".into());
    }
    within(text.len(), limits)?;
    if let Some((at, c)) = text.char_indices().find(|(_, c)| !reply_char(*c)) {
        return Err(format!(
            "a reply with the character U+{:04X} at byte {at}, which replies may not hold",
            c as u32
        ));
    }
    Ok(())
}

/// Whether a reply may hold `c`.
fn reply_char(c: char) -> bool {
    match c {
        '\n' | '\t' => true,
        c if c.is_control() || deceptive(c) => false,
        '\u{fdd0}'..='\u{fdef}' => false,
        c => (c as u32) & 0xfffe != 0xfffe,
    }
}

/// Characters that make text read as something else: line and paragraph
/// separators (a new line where none shows) and bidirectional marks,
/// embeddings, overrides and isolates. Replies may not hold them, and
/// guest log lines have them escaped.
pub(crate) fn deceptive(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// A phone leg of `command` whose digits do not appear in `message` (read
/// as digits only, a leading `00` allowed for `+`): the default parser never
/// returns one, so a parser that does is flagged.
pub(crate) fn phone_leg_not_in(command: &Command, message: &str) -> Option<String> {
    let digits: String = message.chars().filter(char::is_ascii_digit).collect();
    let legs: Vec<&Leg> = match command {
        Command::Callback(args) => vec![&args.source, &args.destination],
        Command::Add(args) => vec![&args.leg],
        Command::Del(leg) => vec![leg],
        Command::List | Command::Hangup | Command::Help | Command::Balance => Vec::new(),
    };
    legs.into_iter()
        .filter(|leg| leg.scheme == Scheme::Phone)
        .find(|leg| !digits.contains(leg.address.as_str()))
        .map(|leg| leg.address.clone())
}

fn within(bytes: usize, limits: &Limits) -> Result<(), String> {
    if bytes > limits.output_bytes {
        return Err(format!(
            "{bytes} bytes of output, over the {} byte cap",
            limits.output_bytes
        ));
    }
    Ok(())
}

fn command_bytes(command: &Command) -> Result<usize, String> {
    Ok(match command {
        Command::Callback(args) => {
            leg_bytes(&args.source)?
                + leg_bytes(&args.destination)?
                + provider_bytes(args.source_provider.as_deref())?
                + provider_bytes(args.destination_provider.as_deref())?
        }
        Command::Add(args) => leg_bytes(&args.leg)? + provider_bytes(args.provider.as_deref())?,
        Command::Del(leg) => leg_bytes(leg)?,
        Command::List | Command::Hangup | Command::Help | Command::Balance => 0,
    })
}

/// Checks a leg against the contract and returns its size.
fn leg_bytes(leg: &Leg) -> Result<usize, String> {
    let address = leg.address.as_str();
    match &leg.scheme {
        Scheme::Phone => {
            if address.is_empty()
                || address.len() > 15
                || !address.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "phone leg '{}' is not 1 to 15 digits in international format",
                    cut(address)
                ));
            }
        }
        Scheme::Other(name) => {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(format!(
                    "scheme name '{}' is not lower-case letters",
                    cut(name)
                ));
            }
            other_address(address)?;
        }
        _ => other_address(address)?,
    }
    Ok(address.len())
}

fn other_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("a leg with an empty address".into());
    }
    if address.len() > MAX_ADDRESS_BYTES {
        return Err(format!("a leg address over {MAX_ADDRESS_BYTES} bytes"));
    }
    if address.chars().any(char::is_control) {
        return Err(format!(
            "leg address '{}' has control characters",
            cut(address)
        ));
    }
    Ok(())
}

fn provider_bytes(provider: Option<&str>) -> Result<usize, String> {
    let Some(name) = provider else {
        return Ok(0);
    };
    if name.is_empty() || name.len() > MAX_PROVIDER_BYTES || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "provider name '{}' is empty, too long or has spaces",
            cut(name)
        ));
    }
    Ok(name.len())
}

/// The start of something a plugin returned, for error messages.
fn cut(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{Account, AddArgs, Candidate, LegRole, ProviderStats};

    fn phone(n: &str) -> Leg {
        Leg {
            scheme: Scheme::Phone,
            address: n.into(),
        }
    }

    #[test]
    fn phone_legs_must_be_international_digits() {
        let limits = Limits::default();
        assert!(parsed(&Ok(Command::Del(phone("442071234567"))), &limits).is_ok());
        assert!(parsed(&Ok(Command::Del(phone("+442071234567"))), &limits).is_err());
        assert!(parsed(&Ok(Command::Del(phone(""))), &limits).is_err());
        assert!(parsed(&Ok(Command::Del(phone("1234567890123456"))), &limits).is_err());
        let add = Command::Add(AddArgs {
            leg: phone("33142685300"),
            provider: Some("A B".into()),
        });
        assert!(parsed(&Ok(add), &limits).is_err());
        let other = Leg {
            scheme: Scheme::Other("Skype".into()),
            address: "x".into(),
        };
        assert!(parsed(&Ok(Command::Del(other)), &limits).is_err());
    }

    #[test]
    fn replies_carry_only_text() {
        let limits = Limits::default();
        assert!(rendered("Calling source: 44\tfine\nnext line ü €", &limits).is_ok());
        for bad in [
            "nul\0",
            "vt\u{b}",
            "esc\u{1b}[2J",
            "cr\r",
            "del\u{7f}",
            "csi\u{9b}",
            "sep\u{2028}",
            "rlo\u{202e}",
            "iso\u{2066}",
            "nonchar\u{fffe}",
            "nonchar\u{ffff}",
            "nonchar\u{1fffe}",
            "fdd0\u{fdd0}",
        ] {
            assert!(rendered(bad, &limits).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn phone_legs_must_come_from_the_message() {
        let del = |n: &str| Command::Del(phone(n));
        assert_eq!(
            phone_leg_not_in(&del("442071234567"), "DEL +44 (20) 7123-4567"),
            None
        );
        assert_eq!(
            phone_leg_not_in(&del("442071234567"), "DEL 00442071234567"),
            None
        );
        assert_eq!(
            phone_leg_not_in(&del("4915199999999"), "DEL +4915112345678"),
            Some("4915199999999".into())
        );
        assert_eq!(phone_leg_not_in(&Command::List, "LIST"), None);
    }

    #[test]
    fn output_cap_applies() {
        let limits = Limits {
            output_bytes: 10,
            ..Limits::default()
        };
        assert!(rendered("short", &limits).is_ok());
        assert!(rendered("much too long for ten", &limits).is_err());
        assert!(rendered("  ", &limits).is_err());
        let e = ParseError {
            reason: "r".repeat(20),
            syntax: String::new(),
        };
        assert!(parsed(&Err(e), &limits).is_err());
    }

    #[test]
    fn attempts_must_be_offered_once() {
        let limits = Limits::default();
        let candidate = |name: &str| Candidate {
            provider: name.into(),
            price_per_minute: 1,
            connect_fee: 0,
            increment_secs: 1,
            up: true,
            stats: ProviderStats {
                attempts: 0,
                answered: 0,
                asr_bp: None,
                acd_secs: None,
                pdd_ms: None,
            },
        };
        let request = RouteRequest {
            leg: phone("442071234567"),
            role: LegRole::Source,
            account: Account {
                id: "a".into(),
                balance: 0,
            },
            requested_provider: None,
            candidates: vec![candidate("A"), candidate("B")],
        };
        let via = |names: &[&str]| -> Vec<Attempt> {
            names
                .iter()
                .map(|n| Attempt {
                    provider: n.to_string(),
                })
                .collect()
        };
        assert!(attempts(&via(&["B", "A"]), &request, &limits).is_ok());
        assert!(attempts(&via(&[]), &request, &limits).is_ok());
        assert!(attempts(&via(&["C"]), &request, &limits).is_err());
        assert!(attempts(&via(&["A", "A"]), &request, &limits).is_err());
    }
}
