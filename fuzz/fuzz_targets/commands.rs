//! Fuzzes the command grammar with arbitrary chat messages: it must never
//! panic, every error must say what was wrong and show a syntax, and every
//! phone leg it accepts must be 3 to 15 digits.
#![no_main]

use command_grammar::types::{Command, Leg, Scheme};
use libfuzzer_sys::fuzz_target;

fn check(leg: &Leg) {
    if let Scheme::Phone = leg.scheme {
        assert!((3..=15).contains(&leg.address.len()), "{leg:?}");
        assert!(leg.address.bytes().all(|b| b.is_ascii_digit()), "{leg:?}");
    } else {
        assert!(!leg.address.is_empty(), "{leg:?}");
    }
}

fuzz_target!(|message: &str| {
    match command_grammar::parse(message) {
        Ok(Command::Callback(args)) => {
            check(&args.source);
            check(&args.destination);
        }
        Ok(Command::Add(args)) => check(&args.leg),
        Ok(Command::Del(leg)) => check(&leg),
        Ok(_) => {}
        Err(e) => {
            assert!(!e.reason.is_empty());
            assert!(!e.syntax.is_empty());
        }
    }
});
