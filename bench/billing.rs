//! Billing benchmark on SQLite and on the real PostgreSQL server.
//!
//! 1. **Settlements per second.** Opens paid legs (each answered, in
//!    sessions of three legs holding a reservation), then settles every one
//!    of them — the whole transaction: claim the CDR, take the cost off the
//!    session's reservation, debit the balance, count the day's spend, write
//!    the CDR's end — from `--tasks` concurrent tasks. Prints settlements/s.
//! 2. **Authorisation latency.** Authorises paid legs one after another,
//!    each in a new session (a reservation taken with a conditional update,
//!    the CDR written, the caps counted), and prints p50/p99/max.
//! 3. **Statistics read.** Reading one provider's sliding-window figures, as
//!    the router does on every call.
//!
//! Run with `cargo bench -p switchboard --bench billing` (add `-- --quick`
//! for a short smoke run; the test script does that). Options: `--legs N`
//! (settlements per database), `--auths N`, `--tasks N`, `--only sqlite|postgres`.
//! PostgreSQL is `SWITCHBOARD_TEST_POSTGRES` or postgres://postgres@127.0.0.1:5432/test;
//! each run uses a fresh schema. SQLite is a fresh file in a temporary directory.

#[path = "common/mod.rs"]
mod common;

use common::{arg, flag, percentile};
use std::sync::Arc;
use std::time::Instant;

use switchboard::billing::{
    self, AttemptOutcome, Billing, LegEnd, LegRole, LegStart, Micros, ProviderRecord, Rate,
    SessionCredit, StatsBook, StatsWindow,
};

const T0_MS: i64 = 1_764_000_000_000;

fn only() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned())
}

fn providers() -> Vec<ProviderRecord> {
    vec![ProviderRecord {
        name: "PROXICOM".into(),
        target: "sip:127.0.0.1:5080;transport=udp".into(),
        username: None,
        password: None,
        enabled: true,
    }]
}

/// A fresh schema on the PostgreSQL server: (URL with it as search path, schema).
async fn postgres_url() -> (String, String) {
    use sqlx::Connection;
    let base = std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base}: {e} (scripts/test.sh starts one)"));
    let schema = format!("sb_bench_{}_{}", std::process::id(), rand::random::<u32>());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    )
}

async fn drop_schema(schema: &str) {
    use sqlx::Connection;
    let base = std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

fn leg(id: String, session: String, account: &str, rate: Rate) -> LegStart {
    LegStart {
        leg_id: id,
        session_id: session,
        account: account.into(),
        role: LegRole::Source,
        address: "phone:442071234567".into(),
        provider: Some("PROXICOM".into()),
        rate,
        started_ms: T0_MS,
    }
}

async fn run(kind: &str, url: String, legs: usize, auths: usize, tasks: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = if kind == "sqlite" {
        format!("sqlite://{}", dir.path().join("bench.db").display())
    } else {
        url
    };
    let config = billing::Config {
        database: url,
        host_id: "bench".into(),
        ..Default::default()
    };
    let b = Billing::open(&config, Some(&providers()))
        .await
        .expect("open");
    let b = Arc::new(b);
    let store = b.store();
    let rate = Rate::per_minute(Micros(14_000));
    let accounts = 64;
    for a in 0..accounts {
        store
            .credit(
                &format!("acct{a}@bench"),
                Micros::units(1_000_000),
                "USD",
                T0_MS,
            )
            .await
            .expect("credit");
    }

    // --- 1. settlements -------------------------------------------------
    let setup = Instant::now();
    let per_task = legs / tasks;
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let b = Arc::clone(&b);
        set.spawn(async move {
            let now = Instant::now();
            let account = format!("acct{}@bench", t % accounts);
            let mut ids = Vec::with_capacity(per_task);
            let mut credit: SessionCredit<String> = b.session_credit();
            for i in 0..per_task {
                if i % 3 == 0 {
                    credit = b.session_credit();
                }
                let session = format!("set-{t}-{}", i / 3);
                let l = leg(format!("set-{t}-{i}"), session, &account, rate);
                b.authorise(&mut credit, &l, now).await.expect("authorise");
                b.store()
                    .answered(&l.leg_id, T0_MS + 1_000, None)
                    .await
                    .expect("answered");
                ids.push(l.leg_id);
            }
            ids
        });
    }
    let mut batches = Vec::new();
    while let Some(ids) = set.join_next().await {
        batches.push(ids.expect("setup task"));
    }
    let opened: usize = batches.iter().map(Vec::len).sum();
    eprintln!(
        "{kind}: {opened} legs opened in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for ids in batches {
        let b = Arc::clone(&b);
        set.spawn(async move {
            let mut n = 0usize;
            for (i, id) in ids.into_iter().enumerate() {
                let end = LegEnd {
                    leg_id: id,
                    ended_ms: T0_MS + 1_000 + 30_000 + (i as i64 % 600) * 1_000,
                    sip_status: Some(200),
                    reason: "EndedByHangup".into(),
                };
                if b.settle(end).await.expect("settle").is_some() {
                    n += 1;
                }
            }
            n
        });
    }
    let mut settled = 0;
    while let Some(n) = set.join_next().await {
        settled += n.expect("settle task");
    }
    let elapsed = start.elapsed();
    assert_eq!(settled, opened, "every leg settled once");
    let batches = b.settler_stats().batches.max(1);
    println!(
        "{kind:<9} settlements: {settled} legs in {:.3} s = {:.0} settlements/s \
         ({tasks} tasks; {batches} transactions, {:.1} legs each)",
        elapsed.as_secs_f64(),
        settled as f64 / elapsed.as_secs_f64(),
        settled as f64 / batches as f64
    );

    // --- 2. authorisation latency ----------------------------------------
    let mut lat = Vec::with_capacity(auths);
    let now = Instant::now();
    for i in 0..auths {
        let account = format!("acct{}@bench", i % accounts);
        let mut credit: SessionCredit<String> = b.session_credit();
        let l = leg(format!("auth-{i}"), format!("auth-{i}"), &account, rate);
        let t = Instant::now();
        b.authorise(&mut credit, &l, now).await.expect("authorise");
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "{kind:<9} authorisation: {auths} paid legs, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    b.store().close().await;
}

fn stats_read(n: usize) {
    let book = StatsBook::new(StatsWindow::default());
    for i in 0..500 {
        book.record(
            "PROXICOM",
            AttemptOutcome {
                at_ms: T0_MS + i * 1000,
                answered: i % 3 != 0,
                talk_secs: 60,
                pdd_ms: Some(1500),
            },
        );
    }
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..n {
        let s = book.stats("PROXICOM", T0_MS + 500_000 + i as i64);
        sum += u64::from(s.asr_bp.unwrap_or(0));
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!("stats read: {per:.0} ns per provider (window of 500 attempts; checksum {sum})");
}

fn main() {
    let quick = flag("--quick");
    let legs = arg("--legs", if quick { 600 } else { 30_000 });
    let auths = arg("--auths", if quick { 200 } else { 5_000 });
    let tasks = arg("--tasks", 16).max(1);
    println!(
        "billing benchmark ({}): {legs} settlements and {auths} authorisations per database",
        if quick { "quick" } else { "full" }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let only = only();
        if only.as_deref() != Some("postgres") {
            run("sqlite", String::new(), legs, auths, tasks).await;
        }
        if only.as_deref() != Some("sqlite") {
            let (url, schema) = postgres_url().await;
            run("postgres", url, legs, auths, tasks).await;
            drop_schema(&schema).await;
        }
    });
    stats_read(if quick { 100_000 } else { 2_000_000 });
}
