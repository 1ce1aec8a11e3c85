//! Hot reload: a watched directory, rejected files, and replacement under
//! load with every call answered by exactly the old or the new version.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::guest;
use switchboard::plugin::types::Event;
use switchboard::plugin::{Call, Limits, PluginHost, Reply, SlotName, SlotStats, VersionId};

/// Generous limits: these tests are about atomic replacement, not deadlines,
/// and the deadline is wall clock on a shared machine.
fn host() -> Arc<PluginHost> {
    Arc::new(
        PluginHost::new(Limits {
            deadline: Duration::from_secs(2),
            ..Limits::default()
        })
        .expect("plugin host starts"),
    )
}

fn wait_for(host: &PluginHost, slot: SlotName, what: &str, done: impl Fn(&SlotStats) -> bool) {
    let started = Instant::now();
    while !done(&host.stats(slot)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {:?}",
            host.stats(slot)
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `bytes` to `dir/name` the way deploy tools do: a temporary file
/// renamed into place.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write temporary plugin");
    std::fs::rename(&tmp, dir.join(name)).expect("rename plugin into place");
}

#[test]
fn watched_directory_loads_reloads_and_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host();
    let default = host.stats(SlotName::Replies).active;
    // A file present before watching starts is loaded at once.
    std::fs::write(dir.path().join("replies.wasm"), guest("replies_de")).expect("write");
    let _watcher = host.watch(dir.path()).expect("watch starts");
    let german = VersionId::of(&guest("replies_de"));
    assert_eq!(host.stats(SlotName::Replies).active, german);
    assert!(
        host.render("user@example.com", &Event::Help)
            .expect("answer")
            .value
            .starts_with("Befehle")
    );

    // A broken file written in place is refused and the running version stays.
    std::fs::write(dir.path().join("replies.wasm"), b"not wasm at all").expect("write");
    wait_for(
        &host,
        SlotName::Replies,
        "the broken file to be refused",
        |s| s.rejected >= 1,
    );
    assert_eq!(host.stats(SlotName::Replies).active, german);
    assert!(
        host.render("user@example.com", &Event::Help)
            .expect("answer")
            .value
            .starts_with("Befehle")
    );

    // A good file renamed into place replaces it.
    install(dir.path(), "replies.wasm", &guest("replies_default"));
    wait_for(&host, SlotName::Replies, "the default to come back", |s| {
        s.active == default
    });
    assert!(
        host.render("user@example.com", &Event::Help)
            .expect("answer")
            .value
            .starts_with("Commands")
    );

    // A parser that imports the clock is refused; the parser slot is untouched.
    install(dir.path(), "parser.wasm", &guest("snooper_guest"));
    wait_for(&host, SlotName::Parser, "the snooper to be refused", |s| {
        s.rejected >= 1
    });
    let parser = host.stats(SlotName::Parser);
    assert_eq!(parser.active, parser.embedded);

    // The aliases parser, written in place, is picked up.
    std::fs::write(dir.path().join("parser.wasm"), guest("parser_aliases")).expect("write");
    let aliases = VersionId::of(&guest("parser_aliases"));
    wait_for(&host, SlotName::Parser, "the aliases parser", |s| {
        s.active == aliases
    });
    let answer = host.parse("HU", "user@example.com").expect("answer");
    assert_eq!(answer.version, aliases);
    assert!(answer.value.is_ok());
}

fn rendered(host: &PluginHost, bytes: &[u8], event: &Event) -> String {
    match host.try_plugin(bytes, &Call::Render(event.clone())) {
        Ok(Reply::Rendered(text)) => text,
        other => panic!("render failed: {other:?}"),
    }
}

#[test]
fn replacement_under_load_answers_with_old_or_new_and_never_fails() {
    const CALLERS: usize = 8;
    const RELOADS: usize = 12;
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host();
    let _watcher = host.watch(dir.path()).expect("watch starts");

    let english = guest("replies_default");
    let german = guest("replies_de");
    let versions = [VersionId::of(&english), VersionId::of(&german)];
    let events = [Event::Help, common::calling_event()];
    // The text each version gives for each event, computed outside the slot.
    let expected: Vec<Vec<String>> = [&english, &german]
        .iter()
        .map(|bytes| events.iter().map(|e| rendered(&host, bytes, e)).collect())
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| {
            let host = host.clone();
            let stop = stop.clone();
            let events = events.clone();
            thread::spawn(move || {
                let mut answers = Vec::new();
                let mut i = n;
                while !stop.load(Ordering::Relaxed) {
                    let which = i % events.len();
                    let answer = host.render("user@example.com", &events[which]);
                    answers.push((which, answer));
                    i += 1;
                }
                answers
            })
        })
        .collect();

    for round in 0..RELOADS {
        let (bytes, id) = if round % 2 == 0 {
            (&german, &versions[1])
        } else {
            (&english, &versions[0])
        };
        install(dir.path(), "replies.wasm", bytes);
        wait_for(&host, SlotName::Replies, "the new version", |s| {
            &s.active == id
        });
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);

    let mut calls = 0;
    let mut seen = [0usize; 2];
    for caller in callers {
        for (which, answer) in caller.join().expect("caller thread") {
            let answer = answer.expect("every call is answered");
            assert!(!answer.fell_back, "no call fell back");
            let v = versions
                .iter()
                .position(|id| *id == answer.version)
                .unwrap_or_else(|| panic!("answered by unknown version {}", answer.version));
            assert_eq!(
                answer.value, expected[v][which],
                "text matches the version that answered"
            );
            seen[v] += 1;
            calls += 1;
        }
    }
    let stats = host.stats(SlotName::Replies);
    assert_eq!(stats.fallbacks, 0);
    assert_eq!(stats.unanswered, 0);
    assert_eq!(stats.rejected, 0);
    assert!(stats.loads >= RELOADS as u64, "{stats:?}");
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both versions answered: {seen:?}"
    );
    eprintln!("{calls} calls during {RELOADS} reloads: {seen:?} by English/German");
}

#[test]
fn explicit_reload_entry_point_and_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("router.wasm");
    std::fs::write(&path, guest("router_least_cost")).expect("write");
    let host = host();
    let results = host.load_dir(dir.path());
    assert_eq!(results.len(), 1);
    let (slot, result) = &results[0];
    assert_eq!(*slot, SlotName::Router);
    let id = result.as_ref().expect("least-cost router loads").clone();
    let stats = host.stats(SlotName::Router);
    assert_eq!(stats.active, id);
    assert_eq!(stats.active_origin, path.display().to_string());
    assert_eq!(stats.previous, Some(stats.embedded.clone()));
    // Least cost: MKS (0.009) before PAKLINE (0.01204) before PROXICOM (0.014).
    let ranked = host
        .route(&common::route_request("user"))
        .expect("answer")
        .value;
    let names: Vec<_> = ranked.iter().map(|a| a.provider.as_str()).collect();
    assert_eq!(names, ["MKS", "PAKLINE", "PROXICOM"]);
    // Loading the same bytes again is a no-op.
    assert_eq!(host.load_file(SlotName::Router, &path).expect("same"), id);
    assert_eq!(host.stats(SlotName::Router).loads, 1);
}

#[test]
fn a_call_in_flight_finishes_on_the_version_it_started_with() {
    let host = Arc::new(
        PluginHost::new(Limits {
            deadline: Duration::from_secs(60),
            // `slow` is about 10^10 instructions of honest work.
            min_fuel: 50_000_000_000,
            ..Limits::default()
        })
        .expect("plugin host starts"),
    );
    let hostile = host
        .load(SlotName::Parser, &guest("hostile_guest"), "hostile")
        .expect("hostile parser loads");
    // `slow` keeps the hostile parser busy for about a second.
    let in_flight = {
        let host = host.clone();
        thread::spawn(move || {
            let answer = host.parse("slow", "user@example.com");
            (answer, Instant::now())
        })
    };
    thread::sleep(Duration::from_millis(50));
    let aliases = host
        .load(SlotName::Parser, &guest("parser_aliases"), "aliases")
        .expect("aliases load");
    let swapped = Instant::now();
    assert_eq!(
        host.parse("HU", "user@example.com")
            .expect("answer")
            .version,
        aliases
    );
    let (answer, finished) = in_flight.join().expect("in-flight call");
    let answer = answer.expect("in-flight call answered");
    assert!(
        finished > swapped,
        "the slow call ended before the swap; the test proved nothing"
    );
    assert_eq!(
        answer.version, hostile,
        "finished on the version it started with"
    );
    assert!(!answer.fell_back);
    assert_eq!(answer.value, Ok(switchboard::plugin::types::Command::Help));
}
