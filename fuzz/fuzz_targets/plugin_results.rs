//! Fuzzes the host's checks of plugin results (`plugin/validate.rs`) with
//! arbitrary legs and replies, as a hostile plugin would return them: the
//! checks never panic; a leg they accept has a bounded, control-free
//! address (a phone leg: 1 to 15 digits); a `sip:` leg they accept either
//! makes a strict SIP URI that prints and re-parses to itself or is refused
//! by it; a reply they accept holds no control character but `\n` and `\t`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::plugin::Limits;
use switchboard::plugin::_internal_test_exports::{validate_parsed, validate_rendered};
use switchboard::plugin::types::{Command, Leg, Scheme};
use switchboard::sip::TargetUri;

fuzz_target!(|input: (u8, &str)| {
    let (kind, text) = input;
    let limits = Limits::default();
    let scheme = match kind % 4 {
        0 => Scheme::Phone,
        1 => Scheme::Sip,
        2 => Scheme::Gtalk,
        _ => Scheme::Other(text.chars().take(8).collect()),
    };
    let leg = Leg {
        scheme: scheme.clone(),
        address: text.to_string(),
    };
    if validate_parsed(&Ok(Command::Del(leg)), &limits).is_ok() {
        assert!(text.len() <= 1024);
        assert!(!text.chars().any(char::is_control), "{text:?}");
        if scheme == Scheme::Phone {
            assert!((1..=15).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()));
        }
        if scheme == Scheme::Sip
            && let Ok(uri) = TargetUri::parse(&format!("sip:{text}"))
        {
            let printed = uri.to_string();
            assert_eq!(TargetUri::parse(&printed).as_ref(), Ok(&uri), "{printed}");
        }
    }
    if validate_rendered(text, &limits).is_ok() {
        assert!(!text.trim().is_empty());
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{text:?}"
        );
    }
});
