//! The sandbox contains hostile plugins: each misbehaviour is stopped, the
//! call is answered by the fallback, it is counted, and the host goes on.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{guest, parse_error_event, route_request};
use switchboard::plugin::types::{Command, Event};
use switchboard::plugin::{Limits, PluginError, PluginHost, SlotName};

fn host() -> PluginHost {
    PluginHost::new(Limits::default()).expect("plugin host starts")
}

/// Limits with a fuel budget and a backstop so large that only the other
/// limits can stop a call: tests about memory, stack and output use this one.
fn patient() -> Limits {
    Limits {
        deadline: Duration::from_secs(20),
        min_fuel: 20_000_000_000,
        ..Limits::default()
    }
}

/// A host with the default limits (fuel sized from the defaults) whose three slots run
/// the hostile guest, which passes every conformance set and misbehaves only
/// on its trigger words.
fn hostile_host() -> PluginHost {
    hostile_host_with(Limits::default())
}

fn hostile_host_with(limits: Limits) -> PluginHost {
    let host = PluginHost::new(limits).expect("plugin host starts");
    let bytes = guest("hostile_guest");
    for slot in SlotName::ALL {
        host.load(slot, &bytes, "hostile_guest.wasm")
            .unwrap_or_else(|e| panic!("hostile guest loads into {slot}: {e}"));
    }
    host
}

#[test]
fn embedded_defaults_answer_the_seed() {
    let host = host();
    let answer = host
        .parse(
            "CALLBACK +442071234567 +4915112345678 via MKS AVANGARD",
            "ruslan@example.com",
        )
        .expect("parser answers");
    assert!(!answer.fell_back);
    let Ok(Command::Callback(args)) = answer.value else {
        panic!("not a callback: {:?}", answer.value);
    };
    assert_eq!(args.source.address, "442071234567");
    assert_eq!(args.destination_provider.as_deref(), Some("AVANGARD"));
    let attempts = host
        .route(&route_request("ruslan@example.com"))
        .expect("router answers");
    let names: Vec<_> = attempts.value.iter().map(|a| a.provider.as_str()).collect();
    assert_eq!(names, ["PAKLINE", "PROXICOM", "MKS"], "best ASR first");
    let text = host
        .render("user@example.com", &Event::Help)
        .expect("replies answer")
        .value;
    assert!(text.contains("CALLBACK"), "{text}");
}

/// Runs a parse that the hostile parser turns into `trigger`; asserts that
/// the default answered instead, and returns the slot's stats.
fn parse_falls_back(host: &PluginHost, trigger: &str) -> switchboard::plugin::SlotStats {
    let started = Instant::now();
    let answer = host
        .parse(trigger, "attacker@example.com")
        .unwrap_or_else(|e| panic!("{trigger}: no answer: {e}"));
    assert!(answer.fell_back, "{trigger}: hostile version answered");
    let stats = host.stats(SlotName::Parser);
    assert_eq!(
        answer.version, stats.embedded,
        "{trigger}: default answered"
    );
    // The default parser refuses the trigger word as an unknown command.
    let Err(e) = &answer.value else {
        panic!("{trigger}: default parsed {:?}", answer.value);
    };
    assert!(
        e.reason.contains("unknown command"),
        "{trigger}: {}",
        e.reason
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{trigger}: containment took {:?}",
        started.elapsed()
    );
    stats
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let host = hostile_host();
    let stats = parse_falls_back(&host, "loop");
    assert_eq!(stats.out_of_fuel, 1);
    assert_eq!(
        stats.deadlines, 0,
        "fuel stops it, not the wall-clock backstop"
    );
    assert_eq!(stats.fallbacks, 1);
}

#[test]
fn memory_bomb_hits_the_cap() {
    let host = hostile_host_with(patient());
    let stats = parse_falls_back(&host, "bomb");
    assert_eq!(stats.memory_faults, 1);
}

#[test]
fn unbounded_recursion_overflows_safely() {
    let host = hostile_host_with(patient());
    let stats = parse_falls_back(&host, "recurse");
    assert_eq!(stats.traps, 1);
}

#[test]
fn panic_is_a_trap() {
    let host = hostile_host_with(patient());
    let stats = parse_falls_back(&host, "panic");
    assert_eq!(stats.traps, 1);
}

#[test]
fn oversized_output_is_refused() {
    let host = hostile_host_with(patient());
    let stats = parse_falls_back(&host, "huge");
    assert_eq!(stats.invalid, 1);
}

#[test]
fn invalid_leg_is_refused() {
    let host = hostile_host_with(patient());
    let stats = parse_falls_back(&host, "bad");
    assert_eq!(stats.invalid, 1);
}

#[test]
fn log_flood_is_capped() {
    let host = hostile_host();
    // 100,000 lines of 10 kB: either the log budget drops them and the
    // call finishes, or its fuel runs out; both are contained.
    let answer = host
        .parse("flood", "attacker@example.com")
        .expect("answered");
    let stats = host.stats(SlotName::Parser);
    if answer.fell_back {
        assert_eq!(stats.out_of_fuel, 1);
    } else {
        assert_eq!(answer.value, Ok(Command::Help));
    }
}

#[test]
fn hostile_version_keeps_answering_ordinary_input() {
    let host = hostile_host_with(patient());
    parse_falls_back(&host, "loop");
    let answer = host.parse("HANGUP", "user@example.com").expect("answered");
    assert!(!answer.fell_back);
    assert_eq!(answer.version, host.stats(SlotName::Parser).active);
    assert_eq!(answer.value, Ok(Command::Hangup));
}

#[test]
fn router_failures_fall_back() {
    let host = hostile_host();
    for (account, counter) in [
        ("loop", "out_of_fuel"),
        ("panic", "traps"),
        ("bogus", "invalid"),
    ] {
        let answer = host.route(&route_request(account)).expect("answered");
        assert!(answer.fell_back, "{account}");
        let names: Vec<_> = answer.value.iter().map(|a| a.provider.as_str()).collect();
        assert_eq!(
            names,
            ["PAKLINE", "PROXICOM", "MKS"],
            "{account}: default ranking"
        );
        let stats = host.stats(SlotName::Router);
        let count = match counter {
            "out_of_fuel" => stats.out_of_fuel,
            "traps" => stats.traps,
            _ => stats.invalid,
        };
        assert!(count >= 1, "{account}: {counter}");
    }
    let answer = host.route(&route_request("fine")).expect("answered");
    assert!(
        !answer.fell_back,
        "ordinary request answered by the hostile version"
    );
}

#[test]
fn replies_failures_fall_back() {
    let host = hostile_host_with(Limits {
        min_fuel: 200_000_000,
        ..Limits::default()
    });
    for trigger in ["loop", "bomb", "empty", "huge"] {
        let answer = host
            .render("user@example.com", &parse_error_event(trigger))
            .expect("answered");
        assert!(answer.fell_back, "{trigger}");
        assert!(
            answer.value.starts_with("Error: "),
            "{trigger}: {}",
            answer.value
        );
    }
    let stats = host.stats(SlotName::Replies);
    assert_eq!(stats.out_of_fuel, 1);
    assert_eq!(stats.memory_faults, 1);
    assert_eq!(stats.invalid, 2);
    assert_eq!(stats.fallbacks, 4);
    assert_eq!(stats.unanswered, 0);
}

#[test]
fn fallback_prefers_the_last_known_good_version() {
    let host = PluginHost::new(patient()).expect("host");
    let aliases = host
        .load(SlotName::Parser, &guest("parser_aliases"), "aliases")
        .expect("aliases load");
    host.load(SlotName::Parser, &guest("hostile_guest"), "hostile")
        .expect("hostile loads");
    let answer = host
        .parse("panic", "attacker@example.com")
        .expect("answered");
    assert!(answer.fell_back);
    assert_eq!(
        answer.version, aliases,
        "the version before answers, not the default"
    );
}

#[test]
fn imports_the_host_does_not_give_are_refused_at_load() {
    let host = host();
    let before = host.stats(SlotName::Parser);
    let err = host
        .load(SlotName::Parser, &guest("snooper_guest"), "snooper")
        .expect_err("snooper refused");
    assert!(
        matches!(err, PluginError::Import(ref name) if name.starts_with("wasi:")),
        "{err}"
    );
    let after = host.stats(SlotName::Parser);
    assert_eq!(after.active, before.active, "running version kept");
    assert_eq!(after.rejected, 1);
}

/// A plugin built against the previous contract (its component names the
/// package `switchboard:plugin@0.1.0`) is refused with the versions named,
/// not with a type error. The old build is made from the shipped one by
/// rewriting the version in its import and export names, byte for byte.
#[test]
fn a_plugin_built_for_an_older_contract_is_refused_by_name() {
    let host = host();
    let current = guest("replies_de");
    let new = format!("@{}", switchboard::plugin::PACKAGE_VERSION);
    assert_eq!(new, "@0.2.0");
    let mut old = current.clone();
    let mut rewritten = 0;
    let mut i = 0;
    while let Some(at) = old[i..]
        .windows(new.len())
        .position(|w| w == new.as_bytes())
    {
        old[i + at..i + at + new.len()].copy_from_slice(b"@0.1.0");
        rewritten += 1;
        i += at + new.len();
    }
    assert!(rewritten >= 2, "the component names its package version");
    let err = host
        .load(SlotName::Replies, &old, "replies built for 0.1.0")
        .expect_err("an old plugin refused");
    assert!(matches!(err, PluginError::Version { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "built for switchboard:plugin@0.1.0, this host speaks 0.2.0"
    );
    assert_eq!(host.stats(SlotName::Replies).rejected, 1);
    host.load(SlotName::Replies, &current, "replies built for 0.2.0")
        .expect("the current build loads");
}

#[test]
fn garbage_and_wrong_worlds_are_refused() {
    let host = host();
    let err = host
        .load(SlotName::Parser, b"\0asm not really", "garbage")
        .expect_err("garbage refused");
    assert!(matches!(err, PluginError::Compile(_)), "{err}");
    let err = host
        .load(SlotName::Router, &guest("replies_de"), "replies as router")
        .expect_err("wrong world refused");
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err}");
    assert_eq!(host.stats(SlotName::Router).rejected, 1);
}

#[test]
fn conformance_refuses_a_parser_that_misreads_the_seed() {
    // The aliases parser passes; a replies plugin that drops facts would
    // not; here: the German replies pass, which shows the set allows other
    // languages.
    let host = host();
    assert!(
        host.check(SlotName::Parser, &guest("parser_aliases"))
            .is_ok()
    );
    assert!(
        host.check(SlotName::Router, &guest("router_least_cost"))
            .is_ok()
    );
    assert!(host.check(SlotName::Replies, &guest("replies_de")).is_ok());
}

#[test]
fn rollback_returns_to_the_replaced_version() {
    let host = host();
    let default = host.stats(SlotName::Replies).active;
    let german = host
        .load(SlotName::Replies, &guest("replies_de"), "de")
        .expect("loads");
    assert!(
        host.render("user@example.com", &Event::Help)
            .expect("answer")
            .value
            .starts_with("Befehle")
    );
    assert_eq!(
        host.rollback(SlotName::Replies).expect("rolls back"),
        default
    );
    assert!(
        host.render("user@example.com", &Event::Help)
            .expect("answer")
            .value
            .starts_with("Commands")
    );
    assert!(matches!(
        host.rollback(SlotName::Replies),
        Err(PluginError::NothingToRollBack(SlotName::Replies))
    ));
    assert_ne!(german, default);
    assert_eq!(host.stats(SlotName::Replies).rollbacks, 1);
}

#[test]
fn a_spinning_plugin_does_not_hold_up_other_calls() {
    // Twenty failures in a row would trip the circuit breaker (tested in
    // plugin_attacks.rs); here the hostile version must stay active.
    let host = Arc::new(hostile_host_with(Limits {
        breaker_failures: 0,
        ..Limits::default()
    }));
    let spinner = {
        let host = host.clone();
        thread::spawn(move || {
            for _ in 0..20 {
                let _ = host.parse("loop", "attacker@example.com");
            }
        })
    };
    let mut answered = 0;
    while !spinner.is_finished() {
        let answer = host.parse("LIST", "user@example.com").expect("answered");
        assert_eq!(answer.value, Ok(Command::List));
        answered += 1;
    }
    spinner.join().expect("spinner thread");
    assert!(answered > 0);
    // Every spin was stopped by its fuel, and no ordinary call was.
    let stats = host.stats(SlotName::Parser);
    assert_eq!(stats.out_of_fuel, 20);
    assert_eq!(stats.deadlines, 0);
}

#[test]
fn limits_the_defaults_cannot_meet_are_refused_at_start() {
    let limits = Limits {
        output_bytes: 16,
        ..Limits::default()
    };
    let err = PluginHost::new(limits).err().expect("refused");
    assert!(matches!(err, PluginError::Limits(_)), "{err}");
    assert!(err.to_string().contains("conformance"), "{err}");
}

#[test]
fn a_call_no_version_can_answer_is_an_error_not_a_crash() {
    let host = PluginHost::new(patient()).expect("host");
    // The default echoes the reason; 100 kB of it is over the 64 kB cap.
    let answer = host.render("user@example.com", &parse_error_event(&"r".repeat(100_000)));
    assert!(matches!(
        answer,
        Err(PluginError::Unanswered(SlotName::Replies))
    ));
    let stats = host.stats(SlotName::Replies);
    assert_eq!(stats.unanswered, 1);
    assert_eq!(stats.invalid, 1);
    // The next ordinary call is answered as usual.
    assert!(host.render("user@example.com", &Event::Help).is_ok());
}

#[test]
fn corrupted_components_never_crash_the_host() {
    let host = PluginHost::new(patient()).expect("host");
    let original = guest("parser_default");
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for round in 0..24 {
        let mut bytes = original.clone();
        if round % 3 == 0 {
            bytes.truncate((next() % original.len() as u64) as usize);
        } else {
            for _ in 0..=(next() % 8) {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
        }
        if host.load(SlotName::Parser, &bytes, "corrupted").is_err() {
            refused += 1;
        }
        // Whatever was loaded, the slot answers.
        let answer = host.parse("LIST", "user@example.com").expect("answered");
        assert_eq!(answer.value, Ok(Command::List), "round {round}");
    }
    assert!(refused > 0);
}

#[test]
fn each_version_is_tried_once_per_call() {
    let host = PluginHost::new(patient()).expect("host");
    host.load(SlotName::Replies, &guest("replies_de"), "de")
        .expect("German loads");
    // The default's own bytes from a file: active is now the embedded
    // version, and German is the last known-good one.
    let default = host
        .load(
            SlotName::Replies,
            &guest("replies_default"),
            "default from file",
        )
        .expect("default loads");
    let stats = host.stats(SlotName::Replies);
    assert_eq!(stats.active, default);
    assert_eq!(stats.embedded, default);
    // Both versions echo the reason, so both overflow the output cap: two
    // tries (default, German), not three (the default again as the embedded one).
    let answer = host.render("user@example.com", &parse_error_event(&"r".repeat(100_000)));
    assert!(matches!(
        answer,
        Err(PluginError::Unanswered(SlotName::Replies))
    ));
    assert_eq!(host.stats(SlotName::Replies).invalid, 2);
}
