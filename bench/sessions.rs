//! Callback sessions through the session manager against SIPp far ends on
//! loopback: the whole service as `switchboard run` assembles it (SQLite
//! billing with two providers' rates, the built-in router and replies
//! plugins, SIP, the mixer), driven with CALLBACK and HANGUP commands from
//! many users at once.
//!
//! 1. **Sessions per second.** `--sessions N` callback sessions (6000),
//!    `--window W` in flight (500): each is CALLBACK (two paid phone legs routed by the router
//!    plugin, each authorised, dialled, answered by SIPp, billed from its
//!    answer), bridged in a conference, held `--hold-ms` (1000), then HANGUP (both
//!    legs hung up, settled and recorded in the provider statistics, the
//!    reservation released). Prints completed sessions/s and the setup time
//!    (CALLBACK to "Remote answered") p50/p99.
//! 2. **Concurrent sessions with media.** `--concurrent K` sessions brought
//!    up and held together for `--media-secs`, RTP flowing on every leg
//!    (SIPp echoes each leg's RTP back with `-rtp_echo`). Prints whether all
//!    stayed up, the mixer's late frames and the datagrams received per second.
//!
//! SIPp runs on CPU 0 (`taskset`) and the mixer thread is pinned to CPU 1
//! (`--no-pin` leaves both to the scheduler); the tokio workers, SQLite and
//! the plugins float over both.
//!
//! `cargo bench -p switchboard --bench sessions` (`-- --quick` for a smoke run).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{arg, flag, percentile};
use switchboard::billing::{Micros, unix_ms};
use switchboard::chat::{Notice, Sessions};
use switchboard::config::Config;
use switchboard::plugin::types::{CallbackArgs, Command, Event, Leg, LegRole, Scheme};
use switchboard::plugin::{Limits, PluginHost};
use switchboard::service::Service;
use switchboard::sip::{Provider, Transport};
use tokio::sync::{Semaphore, mpsc};

struct Sipp(Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// SIPp as a provider's far end: answers every call, echoes RTP.
fn sipp(dir: &std::path::Path) -> (Sipp, u16) {
    let port = free_port();
    let scenario =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/sip_uas.xml");
    // SIPp on CPU 0, the mixer pinned to CPU 1 (see main): the far ends'
    // RTP echo must not starve the mixer of the core it is measured on.
    let child = Process::new("taskset")
        .args(["-c", "0", "sipp"])
        .arg("-sf")
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mp", &free_port().to_string(), "-rtp_echo"])
        .args(["-nostdin", "-max_socket", "60000", "-buff_size", "16777216"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (apt-get install sip-tester)");
    std::thread::sleep(Duration::from_millis(200));
    (Sipp(child), port)
}

fn phone(n: &str) -> Leg {
    Leg {
        scheme: Scheme::Phone,
        address: n.into(),
    }
}

/// Routes notices to the task waiting for its owner's events.
type Waiters = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>>;

struct Bench {
    service: Service,
    waiters: Waiters,
}

impl Bench {
    fn listen(&self, owner: &str) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiters
            .lock()
            .expect("lock")
            .insert(owner.to_string(), tx);
        rx
    }

    /// CALLBACK as `owner`; returns when the destination has answered, with
    /// the setup time, or the event that ended it.
    async fn callback(
        &self,
        owner: &str,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let args = CallbackArgs {
            source: phone("442071234567"),
            destination: phone("4915112345678"),
            source_provider: None,
            destination_provider: None,
        };
        let now = self.service.manager.command(owner, Command::Callback(args));
        if let Some(e) = now.first() {
            return Err(format!("{e:?}"));
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Some(Event::Answered(a))) if a.role == LegRole::Destination => {
                    return Ok(start.elapsed());
                }
                Ok(Some(Event::Calling(_) | Event::Answered(_))) => {}
                other => return Err(format!("{other:?}")),
            }
        }
    }

    async fn hangup(&self, owner: &str, events: &mut mpsc::UnboundedReceiver<Event>) -> bool {
        self.service.manager.command(owner, Command::Hangup);
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Some(Event::SessionEnded(_))) => return true,
                Ok(Some(_)) => {}
                _ => return false,
            }
        }
    }
}

fn main() {
    let quick = flag("--quick");
    let sessions = arg("--sessions", if quick { 300 } else { 6000 });
    let window = arg("--window", if quick { 30 } else { 500 });
    let hold = Duration::from_millis(arg("--hold-ms", 1000) as u64);
    let concurrent = arg("--concurrent", if quick { 100 } else { 1000 });
    let media_secs = arg("--media-secs", if quick { 2 } else { 10 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(sessions, window, hold, concurrent, media_secs));
}

async fn run(sessions: usize, window: usize, hold: Duration, concurrent: usize, media_secs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_proxicom, p1) = sipp(dir.path());
    let (_pakline, p2) = sipp(dir.path());
    let mut config = Config::default();
    config.sip.udp = vec!["127.0.0.1:0".parse().expect("addr")];
    config.sip.providers = [("PROXICOM", p1), ("PAKLINE", p2)]
        .into_iter()
        .map(|(name, port)| Provider {
            name: name.into(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)).into(),
            transport: Some(Transport::Udp),
            username: None,
            password: None,
            keepalive: false,
            rates: None,
            ..Provider::new(name, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect();
    config.billing.database = format!("sqlite://{}/bench.db", dir.path().display());
    config.billing.currency = "USD".into();
    config.sessions.max_per_user = 1;
    config.media.cpu = (!flag("--no-pin")).then_some(1);
    let plugins = Arc::new(PluginHost::new(Limits::default()).expect("plugins"));
    let mut service = Service::start(&config, plugins).await.expect("host");
    let store = service.billing.store().clone();
    store
        .import_rates(
            "provider,prefix,price_per_minute\nPROXICOM,44,0.014\nPAKLINE,49,0.01204\n".as_bytes(),
            true,
        )
        .await
        .expect("rates");
    service.billing.reload_rates().await.expect("rates");
    let users = sessions.max(concurrent);
    let now = unix_ms(SystemTime::now());
    for i in 0..users {
        store
            .credit(&format!("u{i}@bench"), Micros(100_000_000), "USD", now)
            .await
            .expect("credit");
    }
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let mut notices = std::mem::replace(&mut service.notices, mpsc::unbounded_channel().1);
    {
        let waiters = Arc::clone(&waiters);
        tokio::spawn(async move {
            while let Some(Notice { to, event }) = notices.recv().await {
                if let Some(tx) = waiters.lock().expect("lock").get(&to) {
                    let _ = tx.send(event);
                }
            }
        });
    }
    let bench = Arc::new(Bench { service, waiters });
    println!(
        "Switchboard sessions benchmark: SIPp far ends (PROXICOM, PAKLINE) on loopback, SQLite billing"
    );

    // 1. Sessions per second.
    let gate = Arc::new(Semaphore::new(window));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("semaphore");
        let bench = Arc::clone(&bench);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let owner = format!("u{i}@bench");
            let mut events = bench.listen(&owner);
            let setup = bench.callback(&owner, &mut events).await;
            if setup.is_ok() {
                tokio::time::sleep(hold).await;
            }
            let ended = bench.hangup(&owner, &mut events).await;
            (setup, ended)
        }));
    }
    let mut setups = Vec::new();
    let mut failed = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            (Ok(d), true) => setups.push(d),
            (Ok(_), false) => failed.push("not ended".to_string()),
            (Err(e), _) => failed.push(e),
        }
    }
    let elapsed = started.elapsed();
    setups.sort();
    let done = setups.len();
    println!(
        "sessions: {done} completed (set up, bridged, held {} ms, hung up, settled), {} failed, in {:.2} s with {window} in flight: {:.0} sessions/s",
        hold.as_millis(),
        failed.len(),
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
    );
    if let Some(e) = failed.first() {
        println!("  first failure: {e}");
    }
    if !setups.is_empty() {
        println!(
            "setup (CALLBACK -> Remote answered, two legs): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&setups, 0.5).as_secs_f64() * 1e3,
            percentile(&setups, 0.99).as_secs_f64() * 1e3,
            setups[done - 1].as_secs_f64() * 1e3,
        );
    }
    let settled = bench.service.billing.settler_stats();
    println!("billing: {settled:?}");

    // 2. Concurrent sessions with media.
    let gate = Arc::new(Semaphore::new(window));
    let up_started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrent {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("semaphore");
        let bench = Arc::clone(&bench);
        tasks.push(tokio::spawn(async move {
            let owner = format!("u{i}@bench");
            let mut events = bench.listen(&owner);
            let setup = bench.callback(&owner, &mut events).await;
            drop(permit);
            (owner, events, setup)
        }));
    }
    let mut held = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (owner, events, setup) = t.await.expect("task");
        match setup {
            Ok(_) => held.push((owner, events)),
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    println!("  first failure: {e}");
                }
            }
        }
    }
    let up = up_started.elapsed();
    let media = bench.service.manager.services().media.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = media.stats();
    let live_before = bench.service.manager.live();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(media_secs as u64)).await;
    let secs = t.elapsed().as_secs_f64();
    let after = media.stats();
    let live_after = bench.service.manager.live();
    let frames = after.frames - before.frames;
    let late = after.late_frames - before.late_frames;
    println!(
        "concurrent: {} of {concurrent} sessions up ({failed} failed) in {:.2} s; {live_before} live at the start of the hold, {live_after} after {media_secs} s",
        held.len(),
        up.as_secs_f64()
    );
    println!(
        "media over the hold: {} legs, {:.0} frames/s sent ({:.0} expected), {:.0} datagrams/s received, late frames {late} of {frames} ({:.3} %), max lateness {:.1} ms",
        after.legs,
        frames as f64 / secs,
        held.len() as f64 * 2.0 * 50.0,
        (after.datagrams_in - before.datagrams_in) as f64 / secs,
        late as f64 * 100.0 / frames.max(1) as f64,
        after.max_lateness_us as f64 / 1e3,
    );
    let t = Instant::now();
    let mut ended = 0;
    let mut hangups = Vec::new();
    for (owner, mut events) in held {
        let bench = Arc::clone(&bench);
        hangups.push(tokio::spawn(async move {
            bench.hangup(&owner, &mut events).await
        }));
    }
    for h in hangups {
        if h.await.unwrap_or(false) {
            ended += 1;
        }
    }
    println!(
        "hung up {ended} sessions in {:.2} s; {} live afterwards",
        t.elapsed().as_secs_f64(),
        bench.service.manager.live()
    );
}
