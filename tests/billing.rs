//! Billing against real databases: every scenario runs on a SQLite file and
//! on the real PostgreSQL server (a schema of its own per test).
//!
//! - the seed's session billed per second per leg, idempotently;
//! - refusals: emergency numbers, denied prefixes, no route, too little
//!   credit, blocked accounts, caps on paid legs and daily spend;
//! - the credit clock against the database: warning a minute before, the
//!   cut-off when the reservation is used up, a second leg shortening it;
//! - many tasks on several hosts (own pools, own host ids) charging one
//!   account at once never spend more than it holds;
//! - a process holding live legs is killed (SIGKILL) and the next start
//!   bills them once from their last recorded progress.

mod billing_db;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use billing_db::{RATES_CSV, TestDb, providers};
use switchboard::billing::{
    AttemptOutcome, Billing, BillingError, CreditEvent, LegEnd, LegRole, LegStart, Micros,
    ProviderStats, Rate, Refusal, SessionCredit,
};

/// Runs a scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(super::TestDb::sqlite()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(super::TestDb::postgres(stringify!($scenario)).await).await;
            }
        }
    )*};
}

on_both_databases!(
    seed_session_is_billed_per_second_per_leg,
    refusals_are_clear_and_leave_nothing_behind,
    credit_runs_out_with_a_warning_first,
    concurrent_hosts_never_overspend,
    killed_process_is_billed_once_at_restart,
    provider_statistics_are_shared_and_survive_a_restart,
);

const T0_MS: i64 = 1_764_000_000_000;
const RUSLAN: &str = "ruslan@example.com";

async fn open(db: &TestDb, host: &str) -> Billing {
    Billing::open(&db.config(host), Some(&providers()))
        .await
        .unwrap_or_else(|e| panic!("{}: open: {e}", db.kind))
}

async fn open_with_rates(db: &TestDb) -> Billing {
    let b = open(db, "host-a").await;
    let n = b
        .store()
        .import_rates(RATES_CSV.as_bytes(), false)
        .await
        .expect("import");
    assert_eq!(n, 6);
    b.reload_rates().await.expect("reload");
    b
}

fn leg(
    id: &str,
    session: &str,
    role: LegRole,
    address: &str,
    provider: Option<&str>,
    rate: Rate,
    started_ms: i64,
) -> LegStart {
    LegStart {
        leg_id: id.into(),
        session_id: session.into(),
        account: RUSLAN.into(),
        role,
        address: address.into(),
        provider: provider.map(str::to_string),
        rate,
        started_ms,
    }
}

fn end(id: &str, ended_ms: i64, reason: &str) -> LegEnd {
    LegEnd {
        leg_id: id.into(),
        ended_ms,
        sip_status: Some(200),
        reason: reason.into(),
    }
}

async fn seed_session_is_billed_per_second_per_leg(db: TestDb) {
    let b = open_with_rates(&db).await;
    let store = b.store();
    store
        .credit(RUSLAN, Micros::units(1), "USD", T0_MS)
        .await
        .expect("credit");
    let source = b
        .offer("PROXICOM", "442071234567")
        .expect("PROXICOM serves London");
    assert_eq!(
        source.rate,
        Rate::per_minute(Micros(14_000)),
        "longest prefix 4420"
    );
    let offers = b.offers("4915112345678").expect("two providers");
    assert_eq!(offers.len(), 2);
    let destination = offers
        .iter()
        .find(|o| o.provider == "PAKLINE")
        .expect("PAKLINE");
    assert_eq!(destination.rate.price_per_minute, Micros(12_040));

    let t0 = Instant::now();
    let at = |s: u64| (t0 + Duration::from_secs(s), T0_MS + s as i64 * 1000);
    let mut credit: SessionCredit<String> = b.session_credit();
    let src = leg(
        "s1-src",
        "s1",
        LegRole::Source,
        "phone:442071234567",
        Some("PROXICOM"),
        source.rate,
        T0_MS,
    );
    let max = b
        .authorise(&mut credit, &src, t0)
        .await
        .expect("authorised");
    // One reservation covers ten minutes (reservation_secs) of the source.
    assert_eq!(max, Some(Duration::from_secs(600)));
    assert_eq!(credit.pool(), Micros(140_000));
    let (t3, ms3) = at(3);
    b.answered(&mut credit, "s1-src", None, t3, ms3)
        .await
        .expect("answered");
    let dst = leg(
        "s1-dst",
        "s1",
        LegRole::Destination,
        "phone:4915112345678",
        Some("PAKLINE"),
        destination.rate,
        ms3,
    );
    b.authorise(&mut credit, &dst, t3)
        .await
        .expect("authorised");
    let (t6, ms6) = at(6);
    b.answered(&mut credit, "s1-dst", None, t6, ms6)
        .await
        .expect("answered");
    let free = leg(
        "s1-sip",
        "s1",
        LegRole::Additional,
        "sip:alice@127.0.0.1",
        None,
        Rate::FREE,
        ms6,
    );
    b.authorise(&mut credit, &free, t6).await.expect("free leg");
    b.answered(&mut credit, "s1-sip", None, t6, ms6)
        .await
        .expect("answered");

    // The destination topped the reservation up to ten minutes of both.
    let a = store.account(RUSLAN).await.expect("db").expect("account");
    assert_eq!(
        (a.reserved, a.live_paid_legs),
        (Micros(260_400), 2),
        "free legs are not counted"
    );
    assert_eq!(credit.pool(), a.reserved);
    assert_eq!(store.reservation("s1").await.expect("db"), a.reserved);

    // HANGUP at 34 s: source talked 31 s, destination 28 s.
    let (t34, ms34) = at(34);
    let s_src = b
        .end_leg(&mut credit, &end("s1-src", ms34, "EndedByHangup"), t34)
        .await
        .expect("settle")
        .expect("new");
    let s_dst = b
        .end_leg(&mut credit, &end("s1-dst", ms34, "EndedByHangup"), t34)
        .await
        .expect("settle")
        .expect("new");
    let s_sip = b
        .end_leg(&mut credit, &end("s1-sip", ms34, "EndedByHangup"), t34)
        .await
        .expect("settle")
        .expect("new");
    assert_eq!(
        (s_src.billed_secs, s_src.cost),
        (31, Micros(7_234)),
        "0.014 × 31/60, rounded up to the micro"
    );
    assert_eq!((s_dst.billed_secs, s_dst.cost), (28, Micros(5_619)));
    assert_eq!(
        (s_sip.billed_secs, s_sip.cost),
        (28, Micros::ZERO),
        "SIP legs are free"
    );
    let released = b.end_session("s1").await.expect("release");
    assert_eq!(released, Micros(260_400 - 7_234 - 5_619));

    let a = store.account(RUSLAN).await.expect("db").expect("account");
    assert_eq!(a.balance, Micros(1_000_000 - 12_853));
    assert_eq!((a.reserved, a.live_paid_legs), (Micros::ZERO, 0));
    assert_eq!(
        store.spent_on_day(RUSLAN, ms34).await.expect("db"),
        Micros(12_853)
    );

    // Idempotent: settling again, releasing again, recovering: nothing more.
    assert_eq!(
        store
            .settle(&end("s1-src", ms34 + 60_000, "again"))
            .await
            .expect("db"),
        None
    );
    assert_eq!(b.end_session("s1").await.expect("db"), Micros::ZERO);
    assert!(store.recover().await.expect("db").is_empty());
    assert_eq!(
        store
            .account(RUSLAN)
            .await
            .expect("db")
            .expect("account")
            .balance,
        Micros(987_147)
    );

    let cdrs = store.cdrs(RUSLAN, 10).await.expect("cdrs");
    assert_eq!(cdrs.len(), 3);
    let src_cdr = cdrs
        .iter()
        .find(|c| c.leg_id == "s1-src")
        .expect("source CDR");
    assert_eq!(src_cdr.role, "source");
    assert_eq!(src_cdr.provider.as_deref(), Some("PROXICOM"));
    assert_eq!(
        (src_cdr.answered_ms, src_cdr.ended_ms),
        (Some(ms3), Some(ms34))
    );
    assert_eq!(
        (src_cdr.billed_secs, src_cdr.cost),
        (Some(31), Some(Micros(7_234)))
    );
    assert_eq!(
        (src_cdr.sip_status, src_cdr.end_reason.as_deref()),
        (Some(200), Some("EndedByHangup"))
    );
}

async fn refusals_are_clear_and_leave_nothing_behind(db: TestDb) {
    let b = open_with_rates(&db).await;
    let store = b.store();
    for n in ["112", "911", "999", "44999", "1911"] {
        assert!(
            matches!(
                b.offers(n),
                Err(BillingError::Refused(Refusal::Emergency { .. }))
            ),
            "{n}"
        );
    }
    assert!(matches!(
        b.offers("33123456789"),
        Err(BillingError::NoRoute(_))
    ));
    let e = b
        .offer("PAKLINE", "442071234567")
        .expect_err("PAKLINE has no UK rate");
    assert_eq!(
        e.to_string(),
        "provider \"PAKLINE\" does not serve 442071234567"
    );

    let t0 = Instant::now();
    let rate = Rate::per_minute(Micros(14_000));
    // Unknown account.
    let mut credit: SessionCredit<String> = b.session_credit();
    let l = leg(
        "r0",
        "r0",
        LegRole::Source,
        "phone:442071234567",
        Some("PROXICOM"),
        rate,
        T0_MS,
    );
    assert!(matches!(
        b.authorise(&mut credit, &l, t0).await,
        Err(BillingError::UnknownAccount(_))
    ));

    // Too little credit for one minute.
    store
        .credit(RUSLAN, Micros(10_000), "USD", T0_MS)
        .await
        .expect("credit");
    let e = b
        .authorise(&mut credit, &l, t0)
        .await
        .expect_err("0.01 < 0.014");
    assert_eq!(
        e.to_string(),
        "insufficient credit: 0.01 available, 0.014 needed for one minute of every paid leg"
    );
    let a = store.account(RUSLAN).await.expect("db").expect("account");
    assert_eq!(
        (a.reserved, a.live_paid_legs),
        (Micros::ZERO, 0),
        "nothing reserved"
    );
    assert!(
        store.cdrs(RUSLAN, 10).await.expect("db").is_empty(),
        "no CDR for a refused leg"
    );
    assert!(matches!(
        store.credit(RUSLAN, Micros(1), "EUR", T0_MS).await,
        Err(BillingError::Currency { .. })
    ));
    let e = store
        .credit(RUSLAN, Micros(-20_000), "USD", T0_MS)
        .await
        .expect_err("overdraw");
    assert_eq!(
        e.to_string(),
        "debiting 0.02 from \"ruslan@example.com\" would take it below its reserved credit (0.01 free)"
    );
    assert!(matches!(
        store
            .credit("nobody@example.com", Micros(-1), "USD", T0_MS)
            .await,
        Err(BillingError::UnknownAccount(_))
    ));
    assert_eq!(
        store
            .credit(RUSLAN, Micros(-1), "USD", T0_MS)
            .await
            .expect("a small debit"),
        Micros(9_999)
    );
    store
        .credit(RUSLAN, Micros(1), "USD", T0_MS)
        .await
        .expect("credit");

    // Blocked.
    store
        .credit(RUSLAN, Micros::units(10), "USD", T0_MS)
        .await
        .expect("credit");
    store
        .set_limits(RUSLAN, Some(1), None, true)
        .await
        .expect("limits");
    assert!(matches!(
        b.authorise(&mut credit, &l, t0).await,
        Err(BillingError::Blocked(_))
    ));

    // One paid leg at a time.
    store
        .set_limits(RUSLAN, Some(1), None, false)
        .await
        .expect("limits");
    b.authorise(&mut credit, &l, t0)
        .await
        .expect("first paid leg");
    let l2 = leg(
        "r1",
        "r0",
        LegRole::Destination,
        "phone:4915112345678",
        Some("PAKLINE"),
        rate,
        T0_MS,
    );
    let e = b.authorise(&mut credit, &l2, t0).await.expect_err("cap");
    assert!(matches!(e, BillingError::PaidLegCap { cap: 1, .. }), "{e}");
    let free = leg(
        "r2",
        "r0",
        LegRole::Destination,
        "sip:bob@127.0.0.1",
        None,
        Rate::FREE,
        T0_MS,
    );
    b.authorise(&mut credit, &free, t0)
        .await
        .expect("free legs are not capped");
    b.end_leg(&mut credit, &end("r0", T0_MS, "SourceFailed"), t0)
        .await
        .expect("settle");
    b.end_leg(&mut credit, &end("r2", T0_MS, "SourceFailed"), t0)
        .await
        .expect("settle");
    b.end_session("r0").await.expect("release");

    // Daily cap: 0.05 a day; a session spends 0.04, the next cannot get 0.014.
    store
        .set_limits(RUSLAN, None, Some(Micros(50_000)), false)
        .await
        .expect("limits");
    let mut credit: SessionCredit<String> = b.session_credit();
    let l = leg(
        "d0",
        "d0",
        LegRole::Source,
        "phone:442071234567",
        Some("PROXICOM"),
        Rate::per_minute(Micros(20_000)),
        T0_MS,
    );
    let max = b
        .authorise(&mut credit, &l, t0)
        .await
        .expect("within the cap");
    assert_eq!(
        max,
        Some(Duration::from_secs(150)),
        "only the cap's 0.05 is reserved"
    );
    b.answered(&mut credit, "d0", None, t0, T0_MS)
        .await
        .expect("answered");
    b.end_leg(
        &mut credit,
        &end("d0", T0_MS + 120_000, "EndedByHangup"),
        t0,
    )
    .await
    .expect("settle");
    b.end_session("d0").await.expect("release");
    let mut credit: SessionCredit<String> = b.session_credit();
    let l = leg(
        "d1",
        "d1",
        LegRole::Source,
        "phone:442071234567",
        Some("PROXICOM"),
        rate,
        T0_MS + 200_000,
    );
    let e = b
        .authorise(&mut credit, &l, t0)
        .await
        .expect_err("cap reached");
    assert!(matches!(e, BillingError::DailyCap { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("has spent 0.04 of its 0.05 daily limit"),
        "{e}"
    );
    // The next UTC day the cap starts again.
    let tomorrow = leg(
        "d2",
        "d2",
        LegRole::Source,
        "phone:442071234567",
        Some("PROXICOM"),
        rate,
        T0_MS + 86_400_000,
    );
    b.authorise(&mut credit, &tomorrow, t0)
        .await
        .expect("a new day");
}

async fn credit_runs_out_with_a_warning_first(db: TestDb) {
    let b = open_with_rates(&db).await;
    let store = b.store();
    store
        .credit(RUSLAN, Micros(300_000), "USD", T0_MS)
        .await
        .expect("credit");
    let rate = Rate::per_minute(Micros(60_000)); // 0.30 → 300 s of one leg
    let t0 = Instant::now();
    let mut credit: SessionCredit<String> = b.session_credit();
    let l = leg(
        "c-src",
        "c",
        LegRole::Source,
        "phone:442071234567",
        Some("PROXICOM"),
        rate,
        T0_MS,
    );
    assert_eq!(
        b.authorise(&mut credit, &l, t0).await.expect("ok"),
        Some(Duration::from_secs(300))
    );
    b.answered(&mut credit, "c-src", None, t0, T0_MS)
        .await
        .expect("answered");

    // At 100 s a second leg at the same price: 0.20 left for both → 100 s more.
    let t100 = t0 + Duration::from_secs(100);
    let l2 = leg(
        "c-add",
        "c",
        LegRole::Additional,
        "phone:442079460000",
        Some("PROXICOM"),
        rate,
        T0_MS + 100_000,
    );
    let max = b.authorise(&mut credit, &l2, t100).await.expect("ok");
    assert_eq!(max, Some(Duration::from_secs(100)));
    b.answered(&mut credit, "c-add", None, t100, T0_MS + 100_000)
        .await
        .expect("answered");

    // Drive the session's timer as the session manager will.
    let mut now = t100;
    let mut events = Vec::new();
    while let Some(at) = credit.poll_timeout() {
        now = now.max(at);
        let Some(e) = credit.handle_timeout(now) else {
            continue;
        };
        if e == CreditEvent::Replenish {
            let ms = T0_MS + (now - t0).as_millis() as i64;
            let max = b.replenish(&mut credit, "c", RUSLAN, now, ms).await;
            assert_eq!(
                max.expect("db"),
                Some(Duration::from_secs(100)),
                "nothing more"
            );
        }
        events.push((now - t0, e));
    }
    assert_eq!(
        events,
        vec![
            (Duration::from_secs(100), CreditEvent::Replenish),
            (
                Duration::from_secs(140),
                CreditEvent::Warning { secs_left: 60 }
            ),
            (Duration::from_secs(200), CreditEvent::Exhausted),
        ]
    );
    // The session ends with reason CreditExhausted at the cut-off.
    let cut = T0_MS + 200_000;
    let a = b
        .end_leg(&mut credit, &end("c-src", cut, "CreditExhausted"), now)
        .await
        .expect("db")
        .expect("settled");
    let c = b
        .end_leg(&mut credit, &end("c-add", cut, "CreditExhausted"), now)
        .await
        .expect("db")
        .expect("settled");
    assert_eq!(
        a.cost.plus(c.cost),
        Micros(300_000),
        "every micro used, none beyond"
    );
    b.end_session("c").await.expect("release");
    let acct = store.account(RUSLAN).await.expect("db").expect("account");
    assert_eq!((acct.balance, acct.reserved), (Micros::ZERO, Micros::ZERO));
    let cdrs = store.cdrs(RUSLAN, 10).await.expect("db");
    assert!(
        cdrs.iter()
            .all(|c| c.end_reason.as_deref() == Some("CreditExhausted"))
    );
}

async fn concurrent_hosts_never_overspend(db: TestDb) {
    const HOSTS: usize = 4;
    const TASKS: usize = 48;
    const ROUNDS: usize = 4;
    let first = open_with_rates(&db).await;
    let initial = Micros::units(5);
    first
        .store()
        .credit(RUSLAN, initial, "USD", T0_MS)
        .await
        .expect("credit");
    let mut hosts = vec![Arc::new(first)];
    for h in 1..HOSTS {
        let b = open(&db, &format!("host-{h}")).await;
        b.reload_rates().await.expect("rates");
        hosts.push(Arc::new(b));
    }
    // Every host marks its live legs' progress all along, as hosts do.
    let marking = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut markers = tokio::task::JoinSet::new();
    for b in &hosts {
        let (b, marking) = (Arc::clone(b), Arc::clone(&marking));
        markers.spawn(async move {
            while marking.load(std::sync::atomic::Ordering::Relaxed) {
                b.record_progress(T0_MS + 1_000).await.expect("progress");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    // Every task tries to make calls worth far more than the account holds
    // (48 × 4 sessions of two legs, each wanting ten minutes of credit).
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let b = Arc::clone(&hosts[t % HOSTS]);
        tasks.spawn(async move {
            let mut billed = Vec::new();
            let mut refused = 0u32;
            for r in 0..ROUNDS {
                let session = format!("t{t}-r{r}");
                let rate = Rate::per_minute(Micros(10_000 + (t as i64 % 7) * 1_000));
                let now = Instant::now();
                let mut credit: SessionCredit<String> = b.session_credit();
                let l = leg(
                    &format!("{session}-leg"),
                    &session,
                    LegRole::Source,
                    "phone:442071234567",
                    Some("PROXICOM"),
                    rate,
                    T0_MS,
                );
                match b.authorise(&mut credit, &l, now).await {
                    Ok(Some(max)) => {
                        b.answered(&mut credit, &l.leg_id, None, now, T0_MS)
                            .await
                            .expect("answered");
                        // Talk for the whole authorised time, or 3 minutes.
                        let talk = max.min(Duration::from_secs(180));
                        let (at, ended) = (now + talk, T0_MS + talk.as_millis() as i64);
                        // The source hangs up while an additional leg of the
                        // same session is being authorised: a settlement and
                        // an authorisation of one session and one account at
                        // the same time.
                        let add = leg(
                            &format!("{session}-add"),
                            &session,
                            LegRole::Additional,
                            "phone:442071234567",
                            Some("PROXICOM"),
                            rate,
                            ended,
                        );
                        let (settled, added) = tokio::join!(
                            b.settle(end(&l.leg_id, ended, "EndedByDestination")),
                            b.authorise(&mut credit, &add, at)
                        );
                        let s = settled.expect("settle").expect("first settlement");
                        credit.remove_leg(at, &l.leg_id, s.cost);
                        billed.push(s.cost);
                        match added {
                            Ok(Some(max)) => {
                                b.answered(&mut credit, &add.leg_id, None, at, ended)
                                    .await
                                    .expect("answered");
                                let talk = max.min(Duration::from_secs(30));
                                let done = end(
                                    &add.leg_id,
                                    ended + talk.as_millis() as i64,
                                    "EndedByHangup",
                                );
                                let s = b
                                    .end_leg(&mut credit, &done, at + talk)
                                    .await
                                    .expect("settle")
                                    .expect("first settlement");
                                billed.push(s.cost);
                            }
                            Err(BillingError::InsufficientCredit { .. }) => refused += 1,
                            other => panic!("unexpected: {other:?}"),
                        }
                    }
                    Ok(None) => panic!("a paid leg without a maximum duration"),
                    Err(BillingError::InsufficientCredit { .. }) => refused += 1,
                    Err(e) => panic!("unexpected: {e}"),
                }
                b.end_session(&session).await.expect("release");
            }
            (billed, refused)
        });
    }
    let mut spent = Micros::ZERO;
    let (mut legs, mut refused) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (billed, r) = done.expect("task");
        legs += billed.len();
        refused += r;
        spent = billed.into_iter().fold(spent, Micros::plus);
    }
    marking.store(false, std::sync::atomic::Ordering::Relaxed);
    while let Some(done) = markers.join_next().await {
        done.expect("progress marker");
    }
    let a = hosts[0]
        .store()
        .account(RUSLAN)
        .await
        .expect("db")
        .expect("account");
    assert!(
        a.balance >= Micros::ZERO,
        "{}: overspent: {}",
        db.kind,
        a.balance
    );
    assert_eq!(
        a.balance,
        initial.minus(spent),
        "{}: every settlement debited exactly once",
        db.kind
    );
    assert_eq!(
        (a.reserved, a.live_paid_legs),
        (Micros::ZERO, 0),
        "{}",
        db.kind
    );
    let cdr_total = hosts[0]
        .store()
        .cdrs(RUSLAN, 10_000)
        .await
        .expect("db")
        .iter()
        .filter_map(|c| c.cost)
        .fold(Micros::ZERO, Micros::plus);
    assert_eq!(cdr_total, spent);
    assert!(
        legs >= 10 && refused > 0,
        "{}: {legs} legs billed, {refused} refused",
        db.kind
    );
    println!(
        "{}: {legs} legs billed, {refused} refused, {spent} of {initial} spent",
        db.kind
    );
}

/// The helper process of `killed_process_is_billed_once_at_restart`: this
/// test binary run again with only this test and `BILLING_HOLD_LEGS` set.
/// It dials paid legs, answers them and keeps them up, recording their
/// progress every 500 ms, until it is killed. Ignored in ordinary runs.
#[test]
#[ignore = "helper process, started by killed_process_is_billed_once_at_restart"]
fn hold_legs_until_killed() {
    let Ok(spec) = std::env::var("BILLING_HOLD_LEGS") else {
        panic!("run by killed_process_is_billed_once_at_restart with BILLING_HOLD_LEGS set");
    };
    let [url, host, account, legs] = spec.split('|').collect::<Vec<_>>()[..] else {
        panic!("BILLING_HOLD_LEGS is url|host|account|legs");
    };
    let legs: u32 = legs.parse().expect("legs");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        use std::io::Write;
        use switchboard::billing::unix_ms;
        let config = switchboard::billing::Config {
            database: url.to_string(),
            host_id: host.to_string(),
            // The lease outlives its last renewal by three intervals: 3 s.
            progress_interval_secs: 1,
            ..switchboard::billing::Config::default()
        };
        let (b, _) = Billing::open_host(&config, Some(&providers()))
            .await
            .expect("open");
        let rate = b.offer("PROXICOM", "442071234567").expect("rate").rate;
        let mut credit: SessionCredit<String> = b.session_credit();
        for i in 0..legs {
            let (now, now_ms) = (Instant::now(), unix_ms(std::time::SystemTime::now()));
            let mut l = leg(
                &format!("{host}-{i}"),
                &format!("{host}-session"),
                LegRole::Additional,
                "phone:442071234567",
                Some("PROXICOM"),
                rate,
                now_ms,
            );
            l.account = account.to_string();
            b.authorise(&mut credit, &l, now).await.expect("authorise");
            b.answered(&mut credit, &l.leg_id, None, now, now_ms)
                .await
                .expect("answered");
        }
        let mut out = std::io::stdout();
        writeln!(out, "holding {legs} legs")
            .and_then(|()| out.flush())
            .expect("stdout");
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            b.record_progress(unix_ms(std::time::SystemTime::now()))
                .await
                .expect("progress");
        }
    });
}

async fn killed_process_is_billed_once_at_restart(db: TestDb) {
    let b = open_with_rates(&db).await;
    let store = b.store();
    store
        .credit(RUSLAN, Micros::units(2), "USD", T0_MS)
        .await
        .expect("credit");
    // A leg of another host: not the crashed host's to settle.
    let mut other_credit: SessionCredit<String> = b.session_credit();
    let other = leg(
        "other-leg",
        "other",
        LegRole::Source,
        "sip:carol@127.0.0.1",
        None,
        Rate::FREE,
        T0_MS,
    );
    b.authorise(&mut other_credit, &other, Instant::now())
        .await
        .expect("free leg");
    drop(b);

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "hold_legs_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BILLING_HOLD_LEGS", format!("{}|crashy|{RUSLAN}|3", db.url))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the helper");
    let stdout = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        // libtest prints its own lines first, and `test … ` before ours.
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.find("holding").map(|at| l[at..].to_string()))
    })
    .await
    .expect("join");
    assert_eq!(
        ready.as_deref(),
        Some("holding 3 legs"),
        "the helper did not start"
    );
    // Killed 3.1 s after "holding": the last progress mark (every 500 ms,
    // each after the lease renewal) is at least 2 s after the answer even
    // on a loaded machine.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    child.kill().expect("SIGKILL");
    let killed_ms = switchboard::billing::unix_ms(std::time::SystemTime::now());
    let status = child.wait().expect("reap");
    assert!(!status.success());

    // Its lease is still live: a restart now is refused, and a tool that
    // opens the database (the billing CLI) settles nothing.
    let config = switchboard::billing::Config {
        progress_interval_secs: 1,
        ..db.config("crashy")
    };
    match Billing::open_host(&config, Some(&providers())).await {
        Err(e @ BillingError::HostRunning { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with("host crashy is running (lease renewed ")
                    && text.ends_with(" s ago); give this process another host_id"),
                "{text}"
            );
        }
        Err(e) => panic!("{}: restart under a live lease: {e}", db.kind),
        Ok(_) => panic!("{}: a second process took a live lease", db.kind),
    }
    let tool = Billing::open(&config, Some(&providers()))
        .await
        .expect("open as a tool");
    let open_legs = tool
        .store()
        .cdrs(RUSLAN, 10)
        .await
        .expect("db")
        .iter()
        .filter(|c| c.leg_id.starts_with("crashy-") && c.ended_ms.is_none())
        .count();
    assert_eq!(open_legs, 3, "{}: the tool settled live legs", db.kind);
    drop(tool);
    // The lease expires three progress intervals after its last renewal.
    tokio::time::sleep(Duration::from_millis(3_300)).await;

    // What the crashed process left: three open paid legs, a reservation.
    let (crashy, recovered) = Billing::open_host(&config, Some(&providers()))
        .await
        .expect("restart");
    let store = crashy.store();
    assert_eq!(recovered.len(), 3, "{}: {recovered:?}", db.kind);
    let rate = Rate::per_minute(Micros(14_000));
    let mut total = Micros::ZERO;
    let cdrs = store.cdrs(RUSLAN, 10).await.expect("db");
    for s in &recovered {
        // Answered before "holding", progress recorded every 500 ms, killed
        // 3.1 s later: billed up to the last progress mark, which is at
        // most a progress interval (plus scheduling slack) before the kill.
        let cdr = cdrs.iter().find(|c| c.leg_id == s.leg_id).expect("CDR");
        let (answered, ended) = (
            cdr.answered_ms.expect("answered"),
            cdr.ended_ms.expect("ended"),
        );
        assert!(
            ended <= killed_ms && ended >= killed_ms - 1_500,
            "{}: ended {ended}, killed {killed_ms}",
            db.kind
        );
        assert!(ended - answered >= 2_000, "{}: {s:?}", db.kind);
        assert_eq!(s.billed_secs, ((ended - answered) as u64).div_ceil(1000));
        assert_eq!(s.cost, rate.cost(s.billed_secs));
        total = total.plus(s.cost);
    }
    let a = store.account(RUSLAN).await.expect("db").expect("account");
    assert_eq!(a.balance, Micros::units(2).minus(total));
    assert_eq!(
        (a.reserved, a.live_paid_legs),
        (Micros::ZERO, 0),
        "reservation given back"
    );
    let held: Vec<_> = cdrs
        .iter()
        .filter(|c| c.leg_id.starts_with("crashy-"))
        .collect();
    assert_eq!(held.len(), 3);
    assert!(
        held.iter()
            .all(|c| c.end_reason.as_deref() == Some("HostRestarted"))
    );
    let other = cdrs
        .iter()
        .find(|c| c.leg_id == "other-leg")
        .expect("other host's leg");
    assert_eq!(
        other.ended_ms, None,
        "another host's live leg is left alone"
    );

    // A second restart bills nothing twice.
    crashy.close().await;
    let (again, recovered) = Billing::open_host(&config, Some(&providers()))
        .await
        .expect("restart");
    assert!(recovered.is_empty());
    assert_eq!(
        again
            .store()
            .account(RUSLAN)
            .await
            .expect("db")
            .expect("account")
            .balance,
        a.balance
    );
}

async fn provider_statistics_are_shared_and_survive_a_restart(db: TestDb) {
    let b = open_with_rates(&db).await;
    // Real times: a host warms its window from the last day's attempts.
    let base = switchboard::billing::unix_ms(std::time::SystemTime::now()) - 60_000;
    for i in 0..16u32 {
        let outcome = AttemptOutcome {
            at_ms: base + i64::from(i) * 1_000,
            answered: i % 4 != 0,
            talk_secs: if i % 4 != 0 { 60 + i } else { 0 },
            pdd_ms: Some(1_000 + i * 100),
        };
        let status = if outcome.answered { 200 } else { 486 };
        b.record_attempt(&format!("a{i}"), "PROXICOM", outcome, Some(status))
            .await
            .expect("recorded");
    }
    // Recording an attempt twice (a retry) counts it once in the database.
    let again = AttemptOutcome {
        at_ms: base,
        answered: false,
        talk_secs: 0,
        pdd_ms: None,
    };
    b.store()
        .record_attempt("a0", "PROXICOM", &again, Some(486))
        .await
        .expect("idempotent");
    let now = base + 20_000;
    let live = b.provider_stats("PROXICOM", now);
    assert_eq!((live.attempts, live.answered), (16, 12));
    assert_eq!(live.asr_bp, Some(7_500));
    assert_eq!(live.acd_secs, Some(68), "(12 × 60 + 96) / 12");
    assert_eq!(live.pdd_ms, Some(1_750));
    assert_eq!(b.provider_stats("PAKLINE", now), ProviderStats::default());
    // Another host (or this one after a restart) starts with the same figures.
    let other = open(&db, "host-b").await;
    assert_eq!(other.provider_stats("PROXICOM", now), live, "{}", db.kind);
}
