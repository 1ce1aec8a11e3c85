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

/// A rendered reply: not empty, within the cap.
pub(crate) fn rendered(text: &str, limits: &Limits) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("an empty reply".into());
    }
    within(text.len(), limits)
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
