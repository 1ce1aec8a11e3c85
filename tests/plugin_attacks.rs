//! The attacks an outside security check made with hostile plugins of its
//! own, each made again here with this project's own hostile guests
//! (`tests/guests/rogue`, `tests/guests/evader`) or components built in the
//! test, against the host library: each is stopped, counted, and the host
//! goes on answering.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    compile_bomb, core_module, core_modules, guest, leb, parse_error_event, peak_rss,
    route_request, with_sections,
};
use switchboard::chat::{Bot, RateLimit, Unwired};
use switchboard::plugin::types::{Balance, Command, Event};
use switchboard::plugin::{Limits, PluginError, PluginHost, SlotName};

fn host() -> PluginHost {
    PluginHost::new(Limits::default()).expect("plugin host starts")
}

fn rogue_host(limits: Limits) -> PluginHost {
    let host = PluginHost::new(limits).expect("plugin host starts");
    let bytes = guest("rogue_guest");
    for slot in SlotName::ALL {
        host.load(slot, &bytes, "rogue_guest.wasm")
            .unwrap_or_else(|e| panic!("the rogue guest passes {slot}'s conformance: {e}"));
    }
    host
}

const A: &str = "alice@example.com";
const B: &str = "mallory@example.com";

/// Finding 1: a parser and a replies plugin that keep every message in a
/// global told one user what another had sent and what balance they had.
#[test]
fn no_state_crosses_between_users() {
    let plugins = Arc::new(rogue_host(Limits::default()));
    let unlimited = RateLimit {
        burst: 1_000_000,
        per_minute: 1_000_000,
    };
    let mut bot = Bot::new(plugins.clone(), Arc::new(Unwired), unlimited, 4000);
    let now = Instant::now();
    for round in 0..10_000 {
        bot.answer(now, A, "CALLBACK +442071234567 +4915112345678");
        let spied = bot.answer(now, B, "SPY").join("\n");
        assert!(
            !spied.contains("442071234567") && !spied.contains(A),
            "round {round}: B learnt what A sent: {spied}"
        );
        if round % 1000 == 0 {
            let balance = |amount| {
                Event::Balance(Balance {
                    amount,
                    currency: "EUR".into(),
                })
            };
            plugins.render(A, &balance(4_321_000)).expect("rendered");
            let text = plugins.render(B, &balance(5)).expect("rendered").value;
            assert!(!text.contains("4321000"), "B saw A's balance: {text}");
        }
    }
    // The guest really tries: its own user's state is there for it to read,
    // which shows the test would catch a leak.
    let carol = "carol@example.com";
    bot.answer(now, carol, "CALLBACK +33142685300 +4915112345678");
    let own = bot.answer(now, carol, "SPY").join("\n");
    assert!(own.contains("33142685300"), "{own}");
    assert_eq!(plugins.stats(SlotName::Parser).fallbacks, 0);
}

/// Finding 2: a parser and a router that behave only for the fixed probe
/// sender passed the checks. The values are drawn afresh now: refused at load.
#[test]
fn a_conformance_evader_is_refused_at_load() {
    let host = host();
    let evader = guest("evader_guest");
    for _ in 0..5 {
        let err = host
            .load(SlotName::Parser, &evader, "evader")
            .expect_err("the evading parser is refused");
        assert!(
            matches!(
                err,
                PluginError::Conformance { .. } | PluginError::RefusedBefore(_)
            ),
            "{err}"
        );
        let err = host
            .check(SlotName::Router, &evader)
            .expect_err("the evading router is refused");
        assert!(
            err.to_string().contains("on-failure after SIP 486"),
            "{err}"
        );
    }
    assert_eq!(host.stats(SlotName::Parser).rejected, 5);
}

/// Finding 2, caught live: a parser whose phone leg does not appear in the
/// message is counted as suspicious.
#[test]
fn a_parser_that_changes_the_number_is_flagged_live() {
    let host = rogue_host(Limits::default());
    let answer = host
        .parse("CALLBACK +442071234567 +4915112345678 swap", A)
        .expect("answered");
    let Ok(Command::Callback(args)) = answer.value else {
        panic!("{:?}", answer.value);
    };
    assert_eq!(args.destination.address, "4915199999999");
    assert_eq!(host.stats(SlotName::Parser).suspicious, 1);
    host.parse("CALLBACK +442071234567 +4915112345678", A)
        .expect("answered");
    assert_eq!(host.stats(SlotName::Parser).suspicious, 1);
}

/// Finding 5: 2,000 attempts aliasing one 64 KiB string would have made
/// the host copy 128 MiB; the copy budget stops it while lifting.
#[test]
fn a_copy_amplifier_is_cut_while_lifting() {
    let host = rogue_host(Limits::default());
    let started = Instant::now();
    let answer = host.route(&route_request("amplify")).expect("answered");
    assert!(answer.fell_back);
    let names: Vec<_> = answer.value.iter().map(|a| a.provider.as_str()).collect();
    assert_eq!(names, ["PAKLINE", "PROXICOM", "MKS"], "the default ranked");
    let stats = host.stats(SlotName::Router);
    assert_eq!(stats.invalid + stats.traps, 1, "{stats:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Finding 8: control characters and a fake "Call aborted!" line reached
/// the console; one event became 32 messages.
#[test]
fn replies_with_controls_fall_back_and_one_event_is_a_few_messages() {
    let plugins = Arc::new(rogue_host(Limits::default()));
    let answer = plugins
        .render(A, &parse_error_event("ctrl"))
        .expect("answered");
    assert!(answer.fell_back);
    assert!(answer.value.starts_with("Error: "), "{}", answer.value);
    assert!(!answer.value.contains('\u{1b}'));
    assert_eq!(plugins.stats(SlotName::Replies).invalid, 1);

    let bot = Bot::new(
        plugins.clone(),
        Arc::new(Unwired),
        RateLimit::default(),
        2000,
    );
    let texts = bot
        .phrase(A, &parse_error_event("fanout"))
        .expect("phrased");
    assert_eq!(texts.len(), switchboard::chat::MAX_MESSAGES_PER_EVENT);
    assert!(
        texts.last().is_some_and(|t| t.contains("was cut")),
        "{texts:?}"
    );
    assert_eq!(bot.cut_replies(), 1);
}

/// Finding 12: an instance whose result was refused was reused. The rogue
/// replies plugin remembers what it rendered; after a refused reply its
/// instance is gone, and with it what it remembered.
#[test]
fn an_instance_whose_result_is_refused_is_discarded() {
    let host = rogue_host(Limits::default());
    let balance = |amount| {
        Event::Balance(Balance {
            amount,
            currency: "EUR".into(),
        })
    };
    host.render(A, &balance(111_000)).expect("rendered");
    let kept = host.render(A, &balance(222_000)).expect("rendered").value;
    assert!(
        kept.contains("111000"),
        "the same user's instance was reused: {kept}"
    );
    assert!(
        host.render(A, &parse_error_event("ctrl"))
            .expect("answered")
            .fell_back
    );
    let fresh = host.render(A, &balance(333_000)).expect("rendered").value;
    assert!(
        !fresh.contains("111000") && !fresh.contains("222000"),
        "{fresh}"
    );
}

/// Finding 10: a version that fails on one input stayed active forever.
#[test]
fn a_time_bomb_is_rolled_back_by_the_breaker() {
    let host = PluginHost::new(Limits {
        breaker_failures: 3,
        breaker_window: 10,
        ..Limits::default()
    })
    .expect("host");
    let aliases = host
        .load(SlotName::Parser, &guest("parser_aliases"), "aliases")
        .expect("aliases load");
    let rogue = host
        .load(SlotName::Parser, &guest("rogue_guest"), "rogue")
        .expect("rogue loads");
    for _ in 0..3 {
        host.parse("LIST", A).expect("answered");
        assert!(host.parse("tick", A).expect("answered").fell_back);
    }
    assert_eq!(
        host.stats(SlotName::Parser).active,
        rogue,
        "3 of 6 failed: not yet"
    );
    assert!(host.parse("tick", A).expect("answered").fell_back);
    let stats = host.stats(SlotName::Parser);
    assert_eq!(stats.active, aliases, "rolled back to the last known-good");
    assert_eq!(stats.breaker_trips, 1);
    assert_eq!(stats.rollbacks, 1);
    let why = stats.last_breaker_trip.expect("the trip is recorded");
    assert!(
        why.contains(rogue.as_str()) && why.contains("trapped"),
        "{why}"
    );
    // The next call is the known-good version's, with no fallback.
    let answer = host.parse("LIST", A).expect("answered");
    assert!(!answer.fell_back);
    assert_eq!(answer.version, aliases);
}

/// A writer the test's log subscriber writes into.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Finding 11: a guest's log text with CR/LF forged a host log line.
#[test]
fn guest_logs_cannot_forge_host_lines() {
    let host = rogue_host(Limits::default());
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        host.parse("forge", A).expect("answered");
    });
    let text = String::from_utf8(captured.0.lock().expect("log").clone()).expect("utf-8");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("version=0000"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("plugin: ok\\nINFO"),
        "one escaped line: {text}"
    );
    assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
}

/// Finding 3: a plugin that passes conformance declares ~400 memories and
/// fills the shared pool. Here: the default parser with a 400-memory core
/// module instantiated beside it.
#[test]
fn a_memory_pool_filler_is_refused_and_starves_nothing() {
    let host = host();
    let mut memories = Vec::new();
    leb(&mut memories, 400);
    for _ in 0..400 {
        memories.extend_from_slice(&[0x00, 0x00]);
    }
    let filler = core_module(&[(5, memories)]);
    for slot in SlotName::ALL {
        let base = match slot {
            SlotName::Parser => guest("parser_default"),
            SlotName::Router => guest("router_default"),
            SlotName::Replies => guest("replies_default"),
        };
        let index = core_modules(&base);
        let mut instance = Vec::new();
        leb(&mut instance, 1);
        instance.push(0x00);
        leb(&mut instance, index);
        leb(&mut instance, 0);
        let bytes = with_sections(&base, &[(1, filler.clone()), (2, instance)]);
        let err = host
            .load(slot, &bytes, "filler")
            .expect_err("filler refused");
        assert!(err.to_string().contains("memories"), "{slot}: {err}");
    }
    assert_eq!(
        host.parse("LIST", A).expect("parser").value,
        Ok(Command::List)
    );
    assert!(!host.route(&route_request(A)).expect("router").fell_back);
    assert!(!host.render(A, &Event::Help).expect("replies").fell_back);
    host.load(SlotName::Parser, &guest("parser_aliases"), "the fix")
        .expect("a fix loads");
}

/// Finding 4: an 8 MB component with a million empty functions took 141 s
/// and 5.5 GB to compile. It is refused before compiling now, calls go on
/// meanwhile, and the same bytes are not looked at twice.
#[test]
fn a_compile_bomb_is_refused_before_compiling() {
    let host = Arc::new(host());
    let bomb = compile_bomb(1_000_000);
    assert!(bomb.len() > 3_000_000);
    let calls = {
        let host = host.clone();
        thread::spawn(move || {
            let mut answered = 0;
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                let a = host.parse("LIST", A).expect("answered");
                assert_eq!(a.value, Ok(Command::List));
                answered += 1;
            }
            answered
        })
    };
    let started = Instant::now();
    let err = host
        .load(SlotName::Parser, &bomb, "bomb")
        .expect_err("the bomb is refused");
    let took = started.elapsed();
    assert!(
        matches!(err, PluginError::TooBig(ref why) if why.contains("functions")),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "refusing took {took:?}");
    let again = host.load(SlotName::Parser, &bomb, "bomb again");
    assert!(
        matches!(again, Err(PluginError::RefusedBefore(_))),
        "{again:?}"
    );
    assert!(calls.join().expect("calls") > 0);

    // A file over the size cap is refused before it is read.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("parser.wasm");
    std::fs::write(&path, vec![0u8; 5 << 20]).expect("write");
    let err = host
        .load_file(SlotName::Parser, &path)
        .expect_err("too big");
    assert!(matches!(err, PluginError::TooBig(_)), "{err}");
}

/// Finding 9: under CPU contention the host once refused to start (an
/// interrupt during the embedded default's conformance), and calls fell
/// back during reloads. Budgets are fuel now: with both cores busy, every
/// start succeeds and no call falls back, while a looping guest is still
/// cut off.
#[test]
fn a_busy_machine_changes_no_outcome() {
    // A busy-loop process per core, and one more.
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    let mut hogs: Vec<_> = (0..=cores)
        .map(|_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("sh")
        })
        .collect();
    let mut fallbacks = 0;
    for _ in 0..5 {
        let host = PluginHost::new(Limits::default()).expect("starts under load");
        for _ in 0..200 {
            fallbacks += u64::from(host.parse("LIST", A).expect("answered").fell_back);
        }
        host.load(SlotName::Replies, &guest("replies_de"), "de")
            .expect("a reload under load");
        let hostile = guest("hostile_guest");
        host.load(SlotName::Router, &hostile, "hostile")
            .expect("loads");
        assert!(
            host.route(&route_request("loop"))
                .expect("answered")
                .fell_back
        );
        assert_eq!(host.stats(SlotName::Router).out_of_fuel, 1);
    }
    for hog in &mut hogs {
        let _ = hog.kill();
        let _ = hog.wait();
    }
    assert_eq!(fallbacks, 0);
}

/// Finding 4, past the pre-check: a component the shape caps let through
/// but that needs more memory to compile than the budget is compiled in a
/// child process (the real `switchboard` binary) under `RLIMIT_AS` and
/// `RLIMIT_CPU`, and refused when the child runs out; the host's own
/// memory does not grow, and ordinary plugins compile the same way.
#[test]
fn compiling_runs_in_a_child_under_a_budget() {
    let host = PluginHost::new(Limits {
        functions: 2_000_000,
        component_bytes: 16 << 20,
        code_bytes: 16 << 20,
        compile_memory_bytes: 768 << 20,
        compile_cpu_secs: 4,
        ..Limits::default()
    })
    .expect("host");
    host.use_compiler(std::path::PathBuf::from(env!("CARGO_BIN_EXE_switchboard")))
        .expect("the binary is there");
    let aliases = host
        .load(SlotName::Parser, &guest("parser_aliases"), "aliases")
        .expect("an ordinary plugin compiles in the child");
    assert_eq!(host.parse("HU", A).expect("answered").version, aliases);

    let bomb = compile_bomb(1_000_000);
    let before = peak_rss();
    let started = Instant::now();
    let err = host
        .load(SlotName::Parser, &bomb, "bomb")
        .expect_err("the bomb is refused");
    let took = started.elapsed();
    let grew = peak_rss().saturating_sub(before);
    assert!(matches!(err, PluginError::CompileBudget(_)), "{err}");
    eprintln!(
        "compile bomb refused in {took:?}: {err}; host peak RSS grew {} MiB",
        grew >> 20
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(grew < 64 << 20, "the host's peak RSS grew {grew} bytes");
    assert_eq!(host.parse("HU", A).expect("answered").version, aliases);
    assert!(matches!(
        host.load(SlotName::Parser, &bomb, "again"),
        Err(PluginError::RefusedBefore(_))
    ));
}
