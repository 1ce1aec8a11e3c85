//! Plugin runtime benchmarks: per-call latency of each slot under each
//! isolation mode (a fresh sandbox per call; warm instances kept per user,
//! with two users alternating; a thousand users round-robin, so no instance
//! is ever reused), with fuel metering on and off; the time to refuse a
//! compile bomb (pre-check, and the compiler child under its budget); time
//! from a file write to the new version answering; and calls per second
//! while versions are replaced continuously, on an idle machine and with a
//! CPU-hog process on every core.
//!
//! Run with `cargo bench -p switchboard --bench plugins` (add `-- --quick`
//! for a short smoke run, `-- --new-users` for only the rows of a user's
//! first call). Prints its figures; nothing here is a pass/fail test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{calling_event as calling, compile_bomb, guest, peak_rss, route_request};
use switchboard::plugin::types::Event;
use switchboard::plugin::{Limits, PluginHost, SlotName, VersionId};

/// Percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Calls `call` `n` times on this thread, timing each; prints a line. A
/// call returns whether it fell back (or failed): such calls are counted,
/// since their timing is not the active version's.
fn latency<E>(label: &str, n: usize, mut call: impl FnMut() -> Result<bool, E>) {
    for _ in 0..n / 10 {
        let _ = call();
    }
    let mut samples = Vec::with_capacity(n);
    let mut off_path = 0;
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let fell_back = call().unwrap_or(true);
        samples.push(t.elapsed());
        off_path += usize::from(fell_back);
    }
    let total = started.elapsed();
    samples.sort();
    println!(
        "{label:<24} n={n:<6} p50={:>6.1} us  p99={:>6.1} us  p99.9={:>6.1} us  max={:>7.1} us  {:>7.0} calls/s/thread  fell back: {off_path}",
        us(pct(&samples, 0.50)),
        us(pct(&samples, 0.99)),
        us(pct(&samples, 0.999)),
        us(samples[samples.len() - 1]),
        n as f64 / total.as_secs_f64()
    );
}

/// Parse calls from a thousand users round-robin at 5,000 calls/s (one
/// every 200 µs; a real host's chat and session traffic is hundreds a
/// second): each user's call finds no idle instance of its own (8 are kept
/// per version) and gets a fresh one. Only the call is timed.
fn paced_new_users(host: &PluginHost, message: &str, users: &[String], n: usize) {
    let mut samples = Vec::with_capacity(n);
    let mut fell_back = 0;
    let mut due = Instant::now();
    for i in 0..n {
        due += Duration::from_micros(200);
        let t = Instant::now();
        let answer = host.parse(message, &users[i % users.len()]);
        samples.push(t.elapsed());
        fell_back += usize::from(answer.map_or(true, |a| a.fell_back));
        while Instant::now() < due {
            std::hint::spin_loop();
        }
    }
    samples.sort();
    println!(
        "{:<24} n={n:<6} p50={:>6.1} us  p99={:>6.1} us  p99.9={:>6.1} us  max={:>7.1} us  fell back: {fell_back}",
        "parser.parse (1000 users, 5000/s)",
        us(pct(&samples, 0.50)),
        us(pct(&samples, 0.99)),
        us(pct(&samples, 0.999)),
        us(samples[samples.len() - 1]),
    );
}

fn install(dir: &Path, bytes: &[u8]) {
    let tmp = dir.join(".replies.wasm.tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dir.join("replies.wasm")).expect("rename");
}

/// Time from a file renamed into the watched directory to the first call
/// answered by the new version.
fn reload_latency(rounds: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = Arc::new(PluginHost::new(Limits::default()).expect("host"));
    let _watcher = host.watch(dir.path()).expect("watch");
    let versions = [guest("replies_de"), guest("replies_default")];
    let ids = [VersionId::of(&versions[0]), VersionId::of(&versions[1])];
    let mut samples = Vec::new();
    for round in 0..rounds {
        let which = round % 2;
        let written = Instant::now();
        install(dir.path(), &versions[which]);
        // Poll once a millisecond: a caller spinning here would take a core
        // from the compiler on this 2-core machine (that case is measured
        // by calls_during_reloads).
        loop {
            let answer = host
                .render("user@example.com", &Event::Help)
                .expect("answer");
            if answer.version == ids[which] {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(30),
                "reload never happened"
            );
            thread::sleep(Duration::from_millis(1));
        }
        samples.push(written.elapsed());
        thread::sleep(Duration::from_millis(20));
    }
    samples.sort();
    println!(
        "file write -> new version answering  rounds={rounds}  p50={:.1} ms  p90={:.1} ms  max={:.1} ms",
        ms(pct(&samples, 0.5)),
        ms(pct(&samples, 0.9)),
        ms(samples[samples.len() - 1])
    );

    let mut loads = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        if host
            .load(SlotName::Replies, &versions[round % 2], "bench")
            .is_ok()
        {
            loads.push(t.elapsed());
        }
    }
    if loads.is_empty() {
        println!("load() alone: every load was refused");
        return;
    }
    loads.sort();
    println!(
        "load() alone (compile + type-check + conformance)  p50={:.1} ms  max={:.1} ms  ({} byte component)",
        ms(pct(&loads, 0.5)),
        ms(loads[loads.len() - 1]),
        versions[0].len()
    );
}

/// Busy-loop processes on every core, killed on drop.
struct CpuHog(Vec<std::process::Child>);

impl CpuHog {
    fn start() -> CpuHog {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        CpuHog(
            (0..cores)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn peak_rss_mib() -> u64 {
    peak_rss() >> 20
}

/// The compile bomb of the outside check (a million empty functions):
/// refused by the pre-check, and, with the pre-check's caps raised, by the
/// compiler child's budget; with calls answered meanwhile.
fn compile_bomb_refusal(quick: bool) {
    let bomb = compile_bomb(1_000_000);
    let host = PluginHost::new(Limits::default()).expect("host");
    let before = peak_rss_mib();
    let t = Instant::now();
    let refused = host.load(SlotName::Parser, &bomb, "bomb").is_err();
    println!(
        "compile bomb ({} bytes, 1,000,000 functions): pre-check refused={refused} in {:.1} ms, host peak RSS {} -> {} MiB",
        bomb.len(),
        ms(t.elapsed()),
        before,
        peak_rss_mib()
    );
    let limits = Limits {
        functions: 2_000_000,
        component_bytes: 16 << 20,
        code_bytes: 16 << 20,
        compile_cpu_secs: if quick { 2 } else { 20 },
        ..Limits::default()
    };
    let host = Arc::new(PluginHost::new(limits.clone()).expect("host"));
    host.use_compiler(env!("CARGO_BIN_EXE_switchboard").into())
        .expect("compiler");
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (host, stop) = (host.clone(), stop.clone());
        thread::spawn(move || {
            let (mut calls, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match host.parse("LIST", "user@example.com") {
                    Ok(a) if !a.fell_back => {}
                    _ => failed += 1,
                }
                calls += 1;
            }
            (calls, failed)
        })
    };
    let before = peak_rss_mib();
    let t = Instant::now();
    let outcome = host.load(SlotName::Parser, &bomb, "bomb");
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (calls, failed) = caller.join().expect("caller");
    println!(
        "compile bomb past the pre-check, compiled in a child (RLIMIT_AS {} MiB, RLIMIT_CPU {} s): {} in {:.2} s; host peak RSS {} -> {} MiB; {calls} parse calls meanwhile, {failed} failed",
        limits.compile_memory_bytes >> 20,
        limits.compile_cpu_secs,
        match outcome {
            Ok(_) => "ACCEPTED".to_string(),
            Err(e) => format!("refused ({e})"),
        },
        took.as_secs_f64(),
        before,
        peak_rss_mib()
    );
}

/// Calls per second on one caller thread, first with no reloads, then while
/// another thread replaces the version continuously.
fn calls_during_reloads(seconds: u64) {
    let host = Arc::new(PluginHost::new(Limits::default()).expect("host"));
    let versions = [guest("replies_de"), guest("replies_default")];
    let event = calling();
    let run = |host: &PluginHost| {
        let mut calls = 0u64;
        let mut failed = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(seconds) {
            match host.render("user@example.com", &event) {
                Ok(answer) if !answer.fell_back => {}
                _ => failed += 1,
            }
            calls += 1;
        }
        (calls as f64 / started.elapsed().as_secs_f64(), failed)
    };
    let (quiet, quiet_failed) = run(&host);

    let stop = Arc::new(AtomicBool::new(false));
    let reloads = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let reloader = {
        let (host, stop) = (host.clone(), stop.clone());
        let (reloads, refused) = (reloads.clone(), refused.clone());
        thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                match host.load(SlotName::Replies, &versions[round % 2], "bench") {
                    Ok(_) => reloads.fetch_add(1, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
                round += 1;
            }
        })
    };
    let (busy, busy_failed) = run(&host);
    stop.store(true, Ordering::Relaxed);
    reloader.join().expect("reloader");
    let stats = host.stats(SlotName::Replies);
    println!(
        "render calls/s, no reloads: {quiet:.0} (failed {quiet_failed});  during {} reloads ({} refused) in {seconds} s: {busy:.0} (failed or fell back {busy_failed}; slot fallbacks {}, unanswered {})",
        reloads.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        stats.fallbacks,
        stats.unanswered
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2_000 } else { 50_000 };
    println!(
        "switchboard plugin benchmarks ({} mode, {} cores)",
        if quick { "quick" } else { "full" },
        thread::available_parallelism().map_or(0, |n| n.get())
    );

    let message = "CALLBACK +442071234567 +4915112345678 via MKS AVANGARD";
    let request = route_request("ruslan@example.com");
    let event = calling();
    let users: Vec<String> = (0..1000).map(|i| format!("user{i}@example.com")).collect();
    if std::env::args().any(|a| a == "--new-users") {
        // Only the rows of a user's first call, for profiling them.
        let host = PluginHost::new(Limits::default()).expect("host");
        let mut i = 0usize;
        latency("parser.parse (1000 users)", n, || {
            i += 1;
            host.parse(message, &users[i % users.len()])
                .map(|a| a.fell_back)
        });
        paced_new_users(&host, message, &users, n / 5);
        return;
    }
    // The fuel on/off pair runs twice, interleaved, so that the order of
    // the runs (a warmer cache, a quieter neighbour) shows as noise.
    let reused = Limits::default().calls_per_instance;
    for (mode, calls_per_instance, fuel, extras) in [
        ("fresh", 1, true, false),
        ("per user", reused, true, true),
        ("per user, no fuel", reused, false, false),
        ("per user, again", reused, true, false),
        ("per user, no fuel, again", reused, false, false),
    ] {
        let host = PluginHost::new(Limits {
            calls_per_instance,
            bench_without_fuel: !fuel,
            ..Limits::default()
        })
        .expect("host");
        let mut i = 0usize;
        latency(&format!("parser.parse ({mode})"), n, || {
            i += 1;
            let sender = if i.is_multiple_of(2) {
                "ruslan@example.com"
            } else {
                "olga@example.com"
            };
            host.parse(message, sender).map(|a| a.fell_back)
        });
        latency(&format!("router.route ({mode})"), n, || {
            host.route(&request).map(|a| a.fell_back)
        });
        latency(&format!("replies.render ({mode})"), n, || {
            i += 1;
            let to = if i.is_multiple_of(2) {
                "ruslan@example.com"
            } else {
                "olga@example.com"
            };
            host.render(to, &event).map(|a| a.fell_back)
        });
        if extras {
            // A thousand users round-robin: each call's user has no warm
            // instance left (8 per version), so every call is a fresh one.
            latency("parser.parse (1000 users)", n, || {
                i += 1;
                host.parse(message, &users[i % users.len()])
                    .map(|a| a.fell_back)
            });
            paced_new_users(&host, message, &users, n / 5);
            // The same routing calls with a shadow router comparing each
            // one on its own thread: what the active path pays for it.
            host.load_shadow(&guest("router_least_cost"), "bench")
                .expect("shadow router");
            latency(&format!("route+shadow ({mode})"), n, || {
                host.route(&request).map(|a| a.fell_back)
            });
            if let Some(s) = host.shadow_stats() {
                println!(
                    "  shadow: {} requests, {} compared, {} skipped (queue full), {} failed",
                    s.requests, s.compared, s.skipped, s.failed
                );
            }
            host.clear_shadow();
            for slot in SlotName::ALL {
                println!(
                    "  {slot} fuel budget per call: {}",
                    host.stats(slot).fuel_budget
                );
            }
        }
    }

    compile_bomb_refusal(quick);
    reload_latency(if quick { 4 } else { 20 });
    println!("idle machine:");
    calls_during_reloads(if quick { 1 } else { 5 });
    {
        let _hog = CpuHog::start();
        println!("with a CPU-hog process on every core:");
        calls_during_reloads(if quick { 1 } else { 5 });
    }
}
