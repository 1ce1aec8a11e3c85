//! The seed's command grammar, shared by the parser plugins.
//!
//! ```text
//! CALLBACK [phone:|sip:|gtalk:|msn:|yahoo:|xmpp:]SourceLeg [...]DestinationLeg [via provider1 [provider2]]
//! LIST | ADD AddLeg [provider] | DEL AddLeg | HANGUP | HELP | BALANCE
//! ```
//!
//! Keywords are case-insensitive and any run of white space separates words.
//! A phone number is `+` or `phone:` followed by the number in international
//! format; digit groups separated by spaces, dots, dashes or brackets are
//! joined (`+44 20 7123-4567`). In `via`, `-` stands for "the router's choice",
//! so `via - AVANGARD` names a provider for the destination only.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "parser",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::switchboard::plugin::host;
pub use bindings::switchboard::plugin::types;

use types::{AddArgs, CallbackArgs, Command, Leg, ParseError, Scheme};

/// Syntax of CALLBACK, shown with errors about it.
pub const CALLBACK_SYNTAX: &str = "CALLBACK [phone:|sip:|gtalk:|msn:|yahoo:|xmpp:]SourceLeg [phone:|sip:|gtalk:|msn:|yahoo:|xmpp:]DestinationLeg [via provider1 [provider2]]";
/// Syntax of ADD.
pub const ADD_SYNTAX: &str = "ADD AddLeg [provider]";
/// Syntax of DEL.
pub const DEL_SYNTAX: &str = "DEL AddLeg";
/// The list of commands, shown when the command word itself is wrong.
pub const COMMANDS_SYNTAX: &str = "CALLBACK SourceLeg DestinationLeg [via provider1 [provider2]] | LIST | ADD AddLeg [provider] | DEL AddLeg | HANGUP | HELP | BALANCE";

/// The longest message the grammar reads, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The longest address of a non-phone leg, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;
/// The longest provider name, in bytes.
pub const MAX_PROVIDER_BYTES: usize = 64;

/// Every offered provider in the order offered, or only the one the user
/// named with `via`: the plainest ranking, for example and test routers.
pub fn offered(request: &types::RouteRequest) -> Vec<types::Attempt> {
    request
        .candidates
        .iter()
        .filter(|c| match &request.requested_provider {
            Some(name) => c.provider.eq_ignore_ascii_case(name),
            None => true,
        })
        .map(|c| types::Attempt {
            provider: c.provider.clone(),
        })
        .collect()
}

/// Parses one chat message into a command.
pub fn parse(message: &str) -> Result<Command, ParseError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(error(
            format!("the message is too long (more than {MAX_MESSAGE_BYTES} bytes)"),
            COMMANDS_SYNTAX,
        ));
    }
    let mut words = message.split_whitespace();
    let Some(keyword) = words.next() else {
        return Err(error("the message is empty", COMMANDS_SYNTAX));
    };
    let rest: Vec<&str> = words.collect();
    match keyword.to_ascii_uppercase().as_str() {
        "CALLBACK" => callback(&rest),
        "ADD" => add(&rest),
        "DEL" => del(&rest),
        "LIST" => bare(Command::List, "LIST", &rest),
        "HANGUP" => bare(Command::Hangup, "HANGUP", &rest),
        "HELP" => bare(Command::Help, "HELP", &rest),
        "BALANCE" => bare(Command::Balance, "BALANCE", &rest),
        _ => Err(error(
            format!("unknown command '{}'", shorten(keyword)),
            COMMANDS_SYNTAX,
        )),
    }
}

/// Parses one leg written as a single word (`+442071234567`, `sip:alice@example.com`).
pub fn parse_leg(word: &str) -> Result<Leg, String> {
    let words = [word];
    let (leg, used) = leg_at(&words)?;
    if used != 1 {
        return Err(format!("'{}' is not a leg", shorten(word)));
    }
    Ok(leg)
}

fn error(reason: impl Into<String>, syntax: &str) -> ParseError {
    ParseError {
        reason: reason.into(),
        syntax: syntax.to_string(),
    }
}

fn bare(command: Command, keyword: &str, rest: &[&str]) -> Result<Command, ParseError> {
    if rest.is_empty() {
        return Ok(command);
    }
    Err(error(format!("{keyword} takes no arguments"), keyword))
}

fn callback(words: &[&str]) -> Result<Command, ParseError> {
    let fail = |reason: String| error(reason, CALLBACK_SYNTAX);
    let via = words.iter().position(|w| w.eq_ignore_ascii_case("via"));
    let (leg_words, provider_words) = match via {
        Some(i) => (&words[..i], Some(&words[i + 1..])),
        None => (words, None),
    };
    let legs = legs(leg_words).map_err(fail)?;
    let (source, destination) = match legs.as_slice() {
        [] => return Err(fail("CALLBACK needs a source and a destination leg".into())),
        [_] => {
            return Err(fail(
                "CALLBACK needs a destination leg after the source".into(),
            ));
        }
        [s, d] => (s.clone(), d.clone()),
        _ => {
            return Err(fail(
                "CALLBACK takes two legs; add more parties with ADD once the call is connected"
                    .into(),
            ));
        }
    };
    let (source_provider, destination_provider) = match provider_words {
        None => (None, None),
        Some([]) => return Err(fail("'via' needs at least one provider name".into())),
        Some([p1]) => (placeholder(p1).map_err(fail)?, None),
        Some([p1, p2]) => (
            placeholder(p1).map_err(fail)?,
            placeholder(p2).map_err(fail)?,
        ),
        Some(_) => {
            return Err(fail(
                "'via' takes at most two providers: one for the source, one for the destination"
                    .into(),
            ));
        }
    };
    Ok(Command::Callback(CallbackArgs {
        source,
        destination,
        source_provider,
        destination_provider,
    }))
}

fn add(words: &[&str]) -> Result<Command, ParseError> {
    let fail = |reason: String| error(reason, ADD_SYNTAX);
    if words.is_empty() {
        return Err(fail("ADD needs the leg to call".into()));
    }
    let (leg, used) = leg_at(words).map_err(fail)?;
    let provider = match &words[used..] {
        [] => None,
        [via, name] if via.eq_ignore_ascii_case("via") => Some(provider(name).map_err(fail)?),
        [via] if via.eq_ignore_ascii_case("via") => {
            return Err(fail("'via' needs a provider name".into()));
        }
        [name] => Some(provider(name).map_err(fail)?),
        _ => return Err(fail("ADD takes one leg and at most one provider".into())),
    };
    Ok(Command::Add(AddArgs { leg, provider }))
}

fn del(words: &[&str]) -> Result<Command, ParseError> {
    let fail = |reason: String| error(reason, DEL_SYNTAX);
    if words.is_empty() {
        return Err(fail("DEL needs the leg to drop".into()));
    }
    let (leg, used) = leg_at(words).map_err(fail)?;
    if used != words.len() {
        return Err(fail("DEL takes exactly one leg".into()));
    }
    Ok(Command::Del(leg))
}

/// Reads every leg in `words`.
fn legs(words: &[&str]) -> Result<Vec<Leg>, String> {
    let mut legs = Vec::new();
    let mut at = 0;
    while at < words.len() {
        let (leg, used) = leg_at(&words[at..])?;
        legs.push(leg);
        at += used;
    }
    Ok(legs)
}

/// Reads the leg that starts at `words[0]`; returns it with the number of
/// words it took (a phone number may be written in several digit groups).
fn leg_at(words: &[&str]) -> Result<(Leg, usize), String> {
    let Some(&word) = words.first() else {
        return Err("a leg is missing".into());
    };
    if let Some(number) = word.strip_prefix('+') {
        return phone_at(word, number, words);
    }
    if let Some((scheme, address)) = word.split_once(':') {
        let scheme = scheme.to_ascii_lowercase();
        return match scheme.as_str() {
            "phone" | "tel" => phone_at(word, address.strip_prefix('+').unwrap_or(address), words),
            "sip" => Ok((leg(Scheme::Sip, sip_address(address)?), 1)),
            "gtalk" => Ok((leg(Scheme::Gtalk, im_address(word, address)?), 1)),
            "msn" => Ok((leg(Scheme::Msn, im_address(word, address)?), 1)),
            "yahoo" => Ok((leg(Scheme::Yahoo, im_address(word, address)?), 1)),
            "xmpp" | "jabber" => Ok((leg(Scheme::Xmpp, im_address(word, address)?), 1)),
            _ => Err(format!(
                "unknown leg type '{}:'; use +number, phone:, sip:, gtalk:, msn:, yahoo: or xmpp:",
                shorten(&scheme)
            )),
        };
    }
    if is_digit_group(word) {
        return Err(format!(
            "'{}' needs a leading + or phone: (phone numbers are written in international format, e.g. +442071234567)",
            shorten(word)
        ));
    }
    Err(format!(
        "'{}' is not a leg; use +number, phone:number, sip:uri, gtalk:id, msn:id, yahoo:id or xmpp:id",
        shorten(word)
    ))
}

fn leg(scheme: Scheme, address: String) -> Leg {
    Leg { scheme, address }
}

/// A phone number that starts in `first` (whose digits after the prefix are
/// `number`) and may go on in the digit groups that follow it.
fn phone_at(first: &str, number: &str, words: &[&str]) -> Result<(Leg, usize), String> {
    let mut written = number.to_string();
    let mut used = 1;
    for group in &words[1..] {
        if !is_digit_group(group) {
            break;
        }
        written.push_str(group);
        used += 1;
    }
    let digits: String = written
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | '/'))
        .collect();
    if digits.is_empty() {
        return Err(format!("'{}' has no phone number", shorten(first)));
    }
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit()) {
        return Err(format!(
            "the phone number '{}' contains '{bad}'; use digits only",
            shorten(first)
        ));
    }
    let digits = digits.strip_prefix("00").unwrap_or(&digits);
    if digits.starts_with('0') {
        return Err(format!(
            "the phone number '{}' must start with its country code (international format, e.g. +442071234567)",
            shorten(first)
        ));
    }
    if digits.len() < 3 {
        return Err(format!(
            "the phone number '{}' is too short",
            shorten(first)
        ));
    }
    if digits.len() > 15 {
        return Err(format!(
            "the phone number '{}' is too long (international numbers have at most 15 digits)",
            shorten(first)
        ));
    }
    Ok((leg(Scheme::Phone, digits.to_string()), used))
}

/// A word made of digits and separators only: a bare number or the next group of one.
fn is_digit_group(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_digit())
        && word
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | '(' | ')' | '/'))
}

fn sip_address(address: &str) -> Result<String, String> {
    check_address("sip:", address)?;
    if let Some((user, host)) = address.split_once('@')
        && (user.is_empty() || host.is_empty())
    {
        return Err(format!(
            "the SIP URI 'sip:{}' needs a user and a host (sip:user@host)",
            shorten(address)
        ));
    }
    Ok(address.to_string())
}

fn im_address(word: &str, address: &str) -> Result<String, String> {
    let scheme = &word[..word.len() - address.len()];
    check_address(scheme, address)?;
    Ok(address.to_string())
}

fn check_address(scheme: &str, address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err(format!("'{scheme}' needs an address after the colon"));
    }
    if address.len() > MAX_ADDRESS_BYTES {
        return Err(format!(
            "the address after '{scheme}' is too long (more than {MAX_ADDRESS_BYTES} bytes)"
        ));
    }
    if let Some(bad) = address
        .chars()
        .find(|c| c.is_control() || matches!(c, '<' | '>' | '"'))
    {
        return Err(format!(
            "the address after '{scheme}' contains {bad:?}, which is not allowed"
        ));
    }
    Ok(())
}

/// A provider name after `via`, where `-` means "the router's choice".
fn placeholder(word: &str) -> Result<Option<String>, String> {
    if word == "-" {
        return Ok(None);
    }
    provider(word).map(Some)
}

fn provider(word: &str) -> Result<String, String> {
    if word.len() > MAX_PROVIDER_BYTES {
        return Err(format!("the provider name '{}' is too long", shorten(word)));
    }
    if !word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "'{}' is not a provider name (letters, digits, '-', '_' and '.' only)",
            shorten(word)
        ));
    }
    Ok(word.to_string())
}

/// At most 40 characters of something the user typed, for error messages.
fn shorten(word: &str) -> String {
    match word.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &word[..cut]),
        None => word.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(n: &str) -> Leg {
        leg(Scheme::Phone, n.into())
    }

    fn cb(s: Leg, d: Leg, p1: Option<&str>, p2: Option<&str>) -> Command {
        Command::Callback(CallbackArgs {
            source: s,
            destination: d,
            source_provider: p1.map(Into::into),
            destination_provider: p2.map(Into::into),
        })
    }

    fn reason(message: &str) -> String {
        match parse(message) {
            Ok(c) => panic!("{message:?} parsed as {c:?}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn seed_examples_parse() {
        let p = phone("442071234567");
        let d = phone("4915112345678");
        let cases = [
            (
                "CALLBACK +442071234567 +4915112345678",
                cb(p.clone(), d.clone(), None, None),
            ),
            (
                "CALLBACK +442071234567 +4915112345678 via MKS AVANGARD",
                cb(p.clone(), d.clone(), Some("MKS"), Some("AVANGARD")),
            ),
            (
                "CALLBACK gtalk:ruslan@gmail.com +4915112345678",
                cb(
                    leg(Scheme::Gtalk, "ruslan@gmail.com".into()),
                    d.clone(),
                    None,
                    None,
                ),
            ),
            (
                "CALLBACK msn:ruslan@hotmail.com +4915112345678",
                cb(
                    leg(Scheme::Msn, "ruslan@hotmail.com".into()),
                    d.clone(),
                    None,
                    None,
                ),
            ),
            (
                "CALLBACK yahoo:ruslan +4915112345678",
                cb(leg(Scheme::Yahoo, "ruslan".into()), d.clone(), None, None),
            ),
            (
                "CALLBACK sip:ruslan@sip.example.com +4915112345678",
                cb(
                    leg(Scheme::Sip, "ruslan@sip.example.com".into()),
                    d.clone(),
                    None,
                    None,
                ),
            ),
            (
                "CALLBACK +442071234567 gtalk:friend@gmail.com",
                cb(
                    p.clone(),
                    leg(Scheme::Gtalk, "friend@gmail.com".into()),
                    None,
                    None,
                ),
            ),
            (
                "CALLBACK +442071234567 sip:friend@example.org",
                cb(
                    p.clone(),
                    leg(Scheme::Sip, "friend@example.org".into()),
                    None,
                    None,
                ),
            ),
            (
                "CALLBACK phone:442071234567 phone:4915112345678",
                cb(p.clone(), d.clone(), None, None),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(parse(message), Ok(expected), "{message}");
        }
    }

    #[test]
    fn connected_state_commands_parse() {
        assert_eq!(parse("LIST"), Ok(Command::List));
        assert_eq!(parse("HANGUP"), Ok(Command::Hangup));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("Balance"), Ok(Command::Balance));
        assert_eq!(
            parse("ADD +33142685300"),
            Ok(Command::Add(AddArgs {
                leg: phone("33142685300"),
                provider: None
            }))
        );
        assert_eq!(
            parse("ADD +33142685300 PROXICOM"),
            Ok(Command::Add(AddArgs {
                leg: phone("33142685300"),
                provider: Some("PROXICOM".into())
            }))
        );
        assert_eq!(
            parse("add +33142685300 via PROXICOM"),
            Ok(Command::Add(AddArgs {
                leg: phone("33142685300"),
                provider: Some("PROXICOM".into())
            }))
        );
        assert_eq!(
            parse("DEL +33142685300"),
            Ok(Command::Del(phone("33142685300")))
        );
        assert_eq!(
            parse("del yahoo:friend"),
            Ok(Command::Del(leg(Scheme::Yahoo, "friend".into())))
        );
    }

    #[test]
    fn case_and_spacing_are_forgiven() {
        let expected = cb(
            phone("442071234567"),
            phone("4915112345678"),
            Some("mks"),
            None,
        );
        assert_eq!(
            parse("  callback\t+442071234567    +4915112345678  VIA mks  "),
            Ok(expected)
        );
        assert_eq!(
            parse("CallBack +44 20 7123-4567 +49 (151) 1234.5678"),
            Ok(cb(
                phone("442071234567"),
                phone("4915112345678"),
                None,
                None
            ))
        );
        assert_eq!(
            parse("CALLBACK PHONE:+442071234567 Sip:bob@example.com"),
            Ok(cb(
                phone("442071234567"),
                leg(Scheme::Sip, "bob@example.com".into()),
                None,
                None
            ))
        );
        assert_eq!(
            parse("CALLBACK phone:00442071234567 +4915112345678"),
            Ok(cb(
                phone("442071234567"),
                phone("4915112345678"),
                None,
                None
            ))
        );
    }

    #[test]
    fn via_placeholder_names_destination_provider_only() {
        assert_eq!(
            parse("CALLBACK gtalk:me@gmail.com +4915112345678 via - AVANGARD"),
            Ok(cb(
                leg(Scheme::Gtalk, "me@gmail.com".into()),
                phone("4915112345678"),
                None,
                Some("AVANGARD")
            ))
        );
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert!(reason("").contains("empty"));
        assert!(reason("   ").contains("empty"));
        assert!(reason("DIAL +4420").contains("unknown command 'DIAL'"));
        assert!(reason("CALLBACK").contains("source and a destination"));
        assert!(reason("CALLBACK +442071234567").contains("destination"));
        assert!(reason("CALLBACK +442071234567 +4915112345678 +33142685300").contains("ADD"));
        assert!(reason("CALLBACK skype:bob +4915112345678").contains("unknown leg type 'skype:'"));
        assert!(reason("CALLBACK 442071234567 +4915112345678").contains("leading +"));
        assert!(reason("CALLBACK +44abc +4915112345678").contains("digits only"));
        assert!(reason("CALLBACK +12 +4915112345678").contains("too short"));
        assert!(reason("CALLBACK +1234567890123456 +4915112345678").contains("too long"));
        assert!(reason("CALLBACK +02071234567 +4915112345678").contains("country code"));
        assert!(reason("CALLBACK sip: +4915112345678").contains("needs an address"));
        assert!(reason("CALLBACK sip:@host +4915112345678").contains("user and a host"));
        assert!(reason("CALLBACK +442071234567 +4915112345678 via").contains("at least one"));
        assert!(reason("CALLBACK +442071234567 +4915112345678 via A B C").contains("at most two"));
        assert!(reason("CALLBACK +442071234567 +4915112345678 via PRO*").contains("provider"));
        assert!(reason("CALLBACK bob +4915112345678").contains("is not a leg"));
        assert!(reason("ADD").contains("needs the leg"));
        assert!(reason("ADD +33142685300 A B").contains("at most one provider"));
        assert!(reason("DEL").contains("needs the leg"));
        assert!(reason("DEL +33142685300 +33142685301").contains("exactly one"));
        assert!(reason("LIST all").contains("no arguments"));
        assert!(reason(&"x".repeat(2000)).contains("too long"));
    }

    #[test]
    fn errors_show_the_syntax() {
        let e = parse("CALLBACK +442071234567").unwrap_err();
        assert_eq!(e.syntax, CALLBACK_SYNTAX);
        assert_eq!(parse("ADD").unwrap_err().syntax, ADD_SYNTAX);
        assert_eq!(parse("DEL").unwrap_err().syntax, DEL_SYNTAX);
        assert_eq!(parse("FOO").unwrap_err().syntax, COMMANDS_SYNTAX);
    }

    #[test]
    fn long_or_odd_input_never_panics() {
        for message in [
            "CALLBACK +".to_string(),
            "CALLBACK phone: phone:".to_string(),
            "CALLBACK :: ::".to_string(),
            format!("CALLBACK gtalk:{} +4915112345678", "é".repeat(300)),
            "CALLBACK \u{0}:x +1".to_string(),
            "ADD via".to_string(),
            "ADD +4420 via".to_string(),
            "ADD +4420 via".to_string(),
            "CALLBACK +4420 +4420 via - -".to_string(),
            "CALLBACK ééééééééééééééééééééééééééééééééééééééééééééééé: +1".to_string(),
        ] {
            let _ = parse(&message);
        }
    }

    /// Random sentences from words that sit near the grammar's edges: no
    /// panic, and every error has a reason and a syntax.
    #[test]
    fn random_word_salad_never_panics() {
        const WORDS: &[&str] = &[
            "CALLBACK",
            "callback",
            "ADD",
            "DEL",
            "LIST",
            "HANGUP",
            "via",
            "VIA",
            "-",
            "+",
            "+4",
            "+442071234567",
            "00",
            "0044",
            "(151)",
            "12-34",
            "phone:",
            "phone:+",
            "sip:",
            "sip:@",
            "sip:a@b",
            "gtalk:x",
            "msn:",
            "yahoo:é",
            "xmpp:a@b",
            "tel:1",
            ":",
            "::",
            "a:b:c",
            "PROXICOM",
            "PRO*",
            "\u{0}",
            "é",
            "+1234567890123456",
            "  ",
            "\t",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 7) as usize;
            let message: Vec<&str> = (0..len)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            let message = message.join(" ");
            if let Err(e) = parse(&message) {
                assert!(!e.reason.is_empty(), "{message:?}");
                assert!(!e.syntax.is_empty(), "{message:?}");
            }
        }
    }

    #[test]
    fn parse_leg_reads_one_word() {
        assert_eq!(parse_leg("+442071234567"), Ok(phone("442071234567")));
        assert!(parse_leg("hello").is_err());
    }
}
