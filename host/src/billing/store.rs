//! The billing database: accounts, providers, rates, reservations, CDRs and
//! provider attempts, on SQLite (the embedded default) or PostgreSQL
//! (several hosts sharing one database), through sqlx's `Any` driver so one
//! set of portable SQL serves both.
//!
//! Money moves only inside transactions that start with a conditional write:
//! a reservation is `UPDATE accounts … WHERE balance - reserved >= amount`,
//! so two hosts debiting one account can never take more than it holds, and
//! a settlement first claims its CDR (`… WHERE settled = 0`), so a leg is
//! billed once whoever settles it and however often.
//!
//! Lock order, for PostgreSQL with several hosts: a writer that touches an
//! account and a reservation locks the account first (several accounts in
//! id order); settlements and progress marks, the two writers of many CDR
//! rows at once, run one at a time per host (in the settler task), and
//! hosts never share CDR rows or reservations. So no two writers wait on
//! each other in a cycle.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

use super::BillingError;
use super::money::Micros;
use super::rating::{Rate, RateTable};
use super::stats::AttemptOutcome;

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (or memory): one host.
    Sqlite,
    /// A PostgreSQL server: one or several hosts.
    Postgres,
}

/// The part a leg plays in its session, as CDRs record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegRole {
    /// The user's own location.
    Source,
    /// The party called.
    Destination,
    /// A party added with ADD.
    Additional,
}

impl LegRole {
    /// The name stored in CDRs.
    pub fn as_str(self) -> &'static str {
        match self {
            LegRole::Source => "source",
            LegRole::Destination => "destination",
            LegRole::Additional => "additional",
        }
    }
}

/// A prepaid account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id: the owner's chat address.
    pub id: String,
    /// ISO 4217 code of the currency its money is in.
    pub currency: String,
    /// Settled credit.
    pub balance: Micros,
    /// Credit set aside for live sessions.
    pub reserved: Micros,
    /// Paid legs dialled or up right now, on every host.
    pub live_paid_legs: u32,
    /// Cap on simultaneous paid legs (none = no cap).
    pub max_paid_legs: Option<u32>,
    /// Cap on what may be spent per UTC day (none = no cap).
    pub daily_spend_cap: Option<Micros>,
    /// A blocked account cannot dial paid legs.
    pub blocked: bool,
}

impl Account {
    /// Credit that is neither spent nor reserved.
    pub fn available(&self) -> Micros {
        self.balance.minus(self.reserved)
    }
}

/// A SIP provider as the billing database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// Its name, as users write it after `via`.
    pub name: String,
    /// Where its SIP requests go (`host:port`).
    pub target: String,
    /// Digest user name.
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<String>,
    /// Whether calls may be routed through it.
    pub enabled: bool,
}

/// A leg about to be dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegStart {
    /// Unique id of the leg (the CDR's key).
    pub leg_id: String,
    /// The session it belongs to.
    pub session_id: String,
    /// Who pays.
    pub account: String,
    /// Its part in the session.
    pub role: LegRole,
    /// Where it goes (`phone:442071234567`, `sip:alice@example.com`).
    pub address: String,
    /// The provider carrying it; none for free legs called directly.
    pub provider: Option<String>,
    /// Its rate ([`Rate::FREE`] for free legs).
    pub rate: Rate,
    /// When dialling started (Unix milliseconds).
    pub started_ms: i64,
}

/// How a leg ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegEnd {
    /// The leg.
    pub leg_id: String,
    /// When it ended (Unix milliseconds).
    pub ended_ms: i64,
    /// The SIP status that ended it, if any (final response or 200 to BYE).
    pub sip_status: Option<u16>,
    /// Why it ended (`EndedByHangup`, `CreditExhausted`, ...).
    pub reason: String,
}

/// What settling a leg billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The leg.
    pub leg_id: String,
    /// Its session.
    pub session_id: String,
    /// The account debited.
    pub account: String,
    /// Seconds billed.
    pub billed_secs: u64,
    /// What was debited.
    pub cost: Micros,
}

/// A call detail record, as listed for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdr {
    /// The leg.
    pub leg_id: String,
    /// Its session.
    pub session_id: String,
    /// Its part in the session (`source`, `destination`, `additional`).
    pub role: String,
    /// Where it went.
    pub address: String,
    /// The provider that carried it.
    pub provider: Option<String>,
    /// Its price per minute.
    pub price_per_minute: Micros,
    /// Dialling started (Unix ms).
    pub started_ms: i64,
    /// Answered (Unix ms).
    pub answered_ms: Option<i64>,
    /// Ended (Unix ms); none while live.
    pub ended_ms: Option<i64>,
    /// Seconds billed, once settled.
    pub billed_secs: Option<u64>,
    /// What it cost, once settled.
    pub cost: Option<Micros>,
    /// The SIP status that ended it.
    pub sip_status: Option<u16>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Its SIP Call-ID, once answered.
    pub sip_call_id: Option<String>,
}

/// One rate of an import, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRow {
    /// The provider.
    pub provider: String,
    /// The destination prefix (digits).
    pub prefix: String,
    /// The rate.
    pub rate: Rate,
}

/// The connection to the billing database, as one host.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) pool: AnyPool,
    backend: Backend,
    pub(super) host: String,
}

/// The schema, in order; a database is brought up to the last.
const MIGRATIONS: [(i64, &str, &str); 2] = [
    (
        1,
        "billing",
        include_str!("../../migrations/0001_billing.sql"),
    ),
    (
        2,
        "host leases, Call-IDs",
        include_str!("../../migrations/0002_leases_call_ids.sql"),
    ),
];

/// Most legs settled in one transaction.
const MAX_BATCH: usize = 128;

/// How a leg ends, as settlement needs it (`ended_ms` none: at its last
/// recorded progress, after a crash).
struct Ending<'a> {
    leg_id: &'a str,
    ended_ms: Option<i64>,
    sip_status: Option<i64>,
    reason: &'a str,
}

/// What one authorisation attempt came to.
enum Authorised {
    /// Counted, reserved and recorded.
    Yes,
    /// The leg was recorded by an earlier call: nothing done twice.
    AlreadyRecorded,
    /// The conditional update refused: find out why, or how much is there.
    Refused,
}

/// A leg claimed for settlement, priced.
struct Claimed {
    settlement: Settlement,
    paid: bool,
    day: i64,
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` parameters.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", r * columns + c + 1));
        }
        out.push(')');
    }
    out
}

/// Day number (UTC) of a Unix millisecond time, for the daily cap.
fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

fn micros(row: &sqlx::any::AnyRow, column: &str) -> Result<Micros, sqlx::Error> {
    row.try_get::<i64, _>(column).map(Micros)
}

/// The rate columns of a `rates` or `cdrs` row.
fn rate_of(row: &sqlx::any::AnyRow) -> Result<Rate, sqlx::Error> {
    Ok(Rate {
        price_per_minute: micros(row, "price_per_minute")?,
        increment_secs: opt_u32(Some(row.try_get("increment_secs")?)).unwrap_or(1),
        connect_fee: micros(row, "connect_fee")?,
    })
}

fn opt_u32(v: Option<i64>) -> Option<u32> {
    v.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

impl Store {
    /// Opens the database at `url` (`sqlite://file.db`, `sqlite::memory:`,
    /// `postgres://user@host/db`) as host `host`, creating a SQLite file if
    /// needed and bringing the schema up to date.
    pub async fn connect(url: &str, host: &str) -> Result<Store, BillingError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(BillingError::BadUrl(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| BillingError::BadUrl(format!("{url}: {e}")))?;
        let memory = url.contains(":memory:");
        let pool = AnyPoolOptions::new()
            // One SQLite connection per writer would only queue on the file
            // lock; a few serve readers. In-memory SQLite is one database
            // per connection, so it gets exactly one.
            .max_connections(match (backend, memory) {
                (Backend::Sqlite, true) => 1,
                (Backend::Sqlite, false) => 4,
                (Backend::Postgres, _) => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer; NORMAL sync
                        // survives a process crash (the WAL is in the OS);
                        // the busy timeout queues writers of other
                        // connections instead of failing them.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let migrator = Migrator {
            migrations: Cow::Owned(
                MIGRATIONS
                    .iter()
                    .map(|(version, name, sql)| {
                        Migration::new(
                            *version,
                            Cow::Borrowed(*name),
                            MigrationType::Simple,
                            Cow::Borrowed(*sql),
                            false,
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        migrator.run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            host: host.to_string(),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The host id this store settles and recovers legs as.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- accounts ------------------------------------------------------

    /// Adds `amount` to an account's balance, opening the account (in
    /// `currency`) if it does not exist; returns the new balance. A
    /// negative amount (a refund, a correction) may not take the balance
    /// below what live sessions have reserved, nor open an account.
    pub async fn credit(
        &self,
        account: &str,
        amount: Micros,
        currency: &str,
        now_ms: i64,
    ) -> Result<Micros, BillingError> {
        let mut tx = self.pool.begin().await?;
        let row = if amount.0 < 0 {
            sqlx::query(
                "UPDATE accounts SET balance = balance + $2 \
                 WHERE id = $1 AND balance + $2 >= reserved RETURNING balance, currency",
            )
            .bind(account)
            .bind(amount.0)
            .fetch_optional(&mut *tx)
            .await?
        } else {
            sqlx::query(
                "INSERT INTO accounts (id, currency, balance, created_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + excluded.balance \
                 RETURNING balance, currency",
            )
            .bind(account)
            .bind(currency)
            .bind(amount.0)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?
        };
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(match self.account(account).await? {
                None => BillingError::UnknownAccount(account.to_string()),
                Some(a) => BillingError::Overdraw {
                    account: account.to_string(),
                    debit: Micros(amount.0.saturating_neg()),
                    available: a.available(),
                },
            });
        };
        let held: String = row.try_get("currency")?;
        if held != currency {
            return Err(BillingError::Currency {
                account: account.to_string(),
                held,
                given: currency.to_string(),
            });
        }
        let balance = micros(&row, "balance")?;
        tx.commit().await?;
        Ok(balance)
    }

    /// Sets an account's caps and its blocked flag.
    pub async fn set_limits(
        &self,
        account: &str,
        max_paid_legs: Option<u32>,
        daily_spend_cap: Option<Micros>,
        blocked: bool,
    ) -> Result<(), BillingError> {
        let done = sqlx::query(
            "UPDATE accounts SET max_paid_legs = $2, daily_spend_cap = $3, blocked = $4 WHERE id = $1",
        )
        .bind(account)
        .bind(max_paid_legs.map(i64::from))
        .bind(daily_spend_cap.map(|m| m.0))
        .bind(i64::from(blocked))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(BillingError::UnknownAccount(account.to_string()));
        }
        Ok(())
    }

    /// The account, if it exists.
    pub async fn account(&self, account: &str) -> Result<Option<Account>, BillingError> {
        let row = sqlx::query(
            "SELECT id, currency, balance, reserved, live_paid_legs, max_paid_legs, \
             daily_spend_cap, blocked FROM accounts WHERE id = $1",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Account {
            id: row.try_get("id")?,
            currency: row.try_get("currency")?,
            balance: micros(&row, "balance")?,
            reserved: micros(&row, "reserved")?,
            live_paid_legs: opt_u32(Some(row.try_get("live_paid_legs")?)).unwrap_or(0),
            max_paid_legs: opt_u32(row.try_get("max_paid_legs")?),
            daily_spend_cap: row
                .try_get::<Option<i64>, _>("daily_spend_cap")?
                .map(Micros),
            blocked: row.try_get::<i64, _>("blocked")? != 0,
        }))
    }

    /// What the account spent on the UTC day of `now_ms`.
    pub async fn spent_on_day(&self, account: &str, now_ms: i64) -> Result<Micros, BillingError> {
        let spent: Option<i64> =
            sqlx::query_scalar("SELECT amount FROM daily_spend WHERE account = $1 AND day = $2")
                .bind(account)
                .bind(day_of(now_ms))
                .fetch_optional(&self.pool)
                .await?;
        Ok(Micros(spent.unwrap_or(0)))
    }

    // ---- providers and rates -------------------------------------------

    /// Makes the providers table match the configuration: named providers
    /// are added or updated and enabled, the others disabled (their rates
    /// and history stay).
    pub async fn sync_providers(&self, providers: &[ProviderRecord]) -> Result<(), BillingError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE providers SET enabled = 0")
            .execute(&mut *tx)
            .await?;
        for p in providers {
            sqlx::query(
                "INSERT INTO providers (name, target, username, password, enabled) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET \
                 target = excluded.target, username = excluded.username, \
                 password = excluded.password, enabled = excluded.enabled",
            )
            .bind(&p.name)
            .bind(&p.target)
            .bind(p.username.as_deref())
            .bind(p.password.as_deref())
            .bind(i64::from(p.enabled))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every provider the database knows, by name.
    pub async fn providers(&self) -> Result<Vec<ProviderRecord>, BillingError> {
        let rows = sqlx::query(
            "SELECT name, target, username, password, enabled FROM providers ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ProviderRecord {
                    name: r.try_get("name")?,
                    target: r.try_get("target")?,
                    username: r.try_get("username")?,
                    password: r.try_get("password")?,
                    enabled: r.try_get::<i64, _>("enabled")? != 0,
                })
            })
            .collect()
    }

    /// The rates of every enabled provider, for rating in memory.
    pub async fn rate_table(&self) -> Result<RateTable, BillingError> {
        let rows = sqlx::query(
            "SELECT r.provider, r.prefix, r.price_per_minute, r.increment_secs, r.connect_fee \
             FROM rates r JOIN providers p ON p.name = r.provider WHERE p.enabled = 1 \
             ORDER BY r.provider",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut table = RateTable::default();
        for r in &rows {
            let provider: String = r.try_get("provider")?;
            let prefix: String = r.try_get("prefix")?;
            let rate = rate_of(r)?;
            table.insert(&provider, &prefix, rate);
        }
        Ok(table)
    }

    /// Writes checked rates in one transaction: all or nothing. With
    /// `replace`, the named providers' other rates are removed first.
    pub async fn write_rates(&self, rows: &[RateRow], replace: bool) -> Result<(), BillingError> {
        let mut tx = self.pool.begin().await?;
        if replace {
            let mut names: Vec<&str> = rows.iter().map(|r| r.provider.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                sqlx::query("DELETE FROM rates WHERE provider = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for r in rows {
            sqlx::query(
                "INSERT INTO rates (provider, prefix, price_per_minute, increment_secs, connect_fee) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, prefix) DO UPDATE SET \
                 price_per_minute = excluded.price_per_minute, \
                 increment_secs = excluded.increment_secs, connect_fee = excluded.connect_fee",
            )
            .bind(&r.provider)
            .bind(&r.prefix)
            .bind(r.rate.price_per_minute.0)
            .bind(i64::from(r.rate.increment_secs))
            .bind(r.rate.connect_fee.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reads a CSV rate sheet (see [`super::import`]) and writes it, all
    /// or nothing; returns how many rates were written.
    pub async fn import_rates(
        &self,
        sheet: impl std::io::Read,
        replace: bool,
    ) -> Result<usize, BillingError> {
        let providers: Vec<String> = self
            .providers()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        let rows = super::import::read_rates(sheet, &providers).map_err(BillingError::Import)?;
        self.write_rates(&rows, replace).await?;
        Ok(rows.len())
    }

    // ---- prepaid -------------------------------------------------------

    /// Sets aside up to `want` more for `session`, as far as the account's
    /// free credit (and today's cap) goes, provided that is at least `min`;
    /// returns what was added to the session's reservation.
    ///
    /// The write is conditional (`balance - reserved >= amount`), so hosts
    /// racing for one account can each only take what is really there; a
    /// lost race re-reads and tries again.
    pub async fn reserve(
        &self,
        session: &str,
        account: &str,
        min: Micros,
        want: Micros,
        now_ms: i64,
    ) -> Result<Micros, BillingError> {
        for _ in 0..32 {
            let Some(acct) = self.account(account).await? else {
                return Err(BillingError::UnknownAccount(account.to_string()));
            };
            let grant = self.grantable(&acct, min, want, now_ms).await?;
            if grant.0 <= 0 {
                return Ok(Micros::ZERO);
            }
            // Account first, then reservation: the lock order of every
            // writer (see the module notes), so none can deadlock another.
            let mut tx = self.pool.begin().await?;
            let taken = sqlx::query(
                "UPDATE accounts SET reserved = reserved + $2 \
                 WHERE id = $1 AND blocked = 0 AND balance - reserved >= $2",
            )
            .bind(account)
            .bind(grant.0)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 0 {
                tx.rollback().await?;
                continue;
            }
            self.add_to_reservation(&mut tx, session, account, grant)
                .await?;
            tx.commit().await?;
            return Ok(grant);
        }
        Err(BillingError::Contended(account.to_string()))
    }

    /// What `account` can set aside now: up to `want`, as far as its free
    /// credit and today's cap go; an error if that is less than `min`.
    async fn grantable(
        &self,
        acct: &Account,
        min: Micros,
        want: Micros,
        now_ms: i64,
    ) -> Result<Micros, BillingError> {
        if acct.blocked {
            return Err(BillingError::Blocked(acct.id.clone()));
        }
        let mut grant = acct.available();
        if let Some(cap) = acct.daily_spend_cap {
            let spent = self.spent_on_day(&acct.id, now_ms).await?;
            let left = cap.minus(spent).minus(acct.reserved);
            if left < min {
                return Err(BillingError::DailyCap {
                    account: acct.id.clone(),
                    cap,
                    spent,
                });
            }
            grant = grant.min(left);
        }
        grant = grant.min(want.max(min));
        if grant < min {
            return Err(BillingError::InsufficientCredit {
                available: acct.available(),
                needed: min,
            });
        }
        Ok(grant.max(Micros::ZERO))
    }

    /// Authorises a paid leg in one transaction: sets aside up to `want`
    /// more for its session (at least `min`), counts it against the
    /// account's cap on paid legs, and records its CDR. Returns what was
    /// added to the session's reservation. Free legs are only recorded.
    ///
    /// The first try asks for all of `want` with one conditional update
    /// (the usual case: an account without a daily cap that can afford the
    /// chunk); only when that is refused is the account read to find out
    /// how much it can give, or why not.
    pub async fn authorise_leg(
        &self,
        leg: &LegStart,
        min: Micros,
        want: Micros,
    ) -> Result<Micros, BillingError> {
        if !leg.rate.is_paid() {
            self.open_leg(leg).await?;
            return Ok(Micros::ZERO);
        }
        let mut grant = want.max(min);
        let mut read = false;
        for _ in 0..32 {
            let outcome = match self.backend {
                Backend::Postgres => self.authorise_pg(leg, grant, read).await?,
                Backend::Sqlite => self.authorise_tx(leg, grant, read).await?,
            };
            match outcome {
                Authorised::Yes => return Ok(grant),
                Authorised::AlreadyRecorded => return Ok(Micros::ZERO),
                Authorised::Refused => {}
            }
            let Some(acct) = self.account(&leg.account).await? else {
                return Err(BillingError::UnknownAccount(leg.account.clone()));
            };
            if let Some(cap) = acct.max_paid_legs.filter(|cap| acct.live_paid_legs >= *cap) {
                return Err(BillingError::PaidLegCap {
                    account: leg.account.clone(),
                    cap,
                });
            }
            grant = self.grantable(&acct, min, want, leg.started_ms).await?;
            read = true;
        }
        Err(BillingError::Contended(leg.account.clone()))
    }

    /// Authorisation as one transaction of three statements (SQLite, where
    /// the transaction is cheap: no round trips to a server).
    async fn authorise_tx(
        &self,
        leg: &LegStart,
        grant: Micros,
        read: bool,
    ) -> Result<Authorised, BillingError> {
        let mut tx = self.pool.begin().await?;
        let capped = if read {
            ""
        } else {
            " AND daily_spend_cap IS NULL"
        };
        let counted = sqlx::query(&format!(
            "UPDATE accounts SET reserved = reserved + $2, live_paid_legs = live_paid_legs + 1 \
             WHERE id = $1 AND blocked = 0 AND balance - reserved >= $2 \
             AND (max_paid_legs IS NULL OR live_paid_legs < max_paid_legs){capped}"
        ))
        .bind(&leg.account)
        .bind(grant.0)
        .execute(&mut *tx)
        .await?;
        if counted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Authorised::Refused);
        }
        if grant.0 > 0 {
            self.add_to_reservation(&mut tx, &leg.session_id, &leg.account, grant)
                .await?;
        }
        if !self.insert_cdr(&mut tx, leg).await? {
            // Already recorded (a retry): count nothing twice.
            tx.rollback().await?;
            return Ok(Authorised::AlreadyRecorded);
        }
        tx.commit().await?;
        Ok(Authorised::Yes)
    }

    /// Authorisation as one statement (PostgreSQL, where every statement is
    /// a round trip and every commit a WAL flush): the account's
    /// conditional update feeds the reservation and the CDR inserts, so
    /// they happen only if it succeeded, and the account row is locked
    /// first, as every writer locks it.
    async fn authorise_pg(
        &self,
        leg: &LegStart,
        grant: Micros,
        read: bool,
    ) -> Result<Authorised, BillingError> {
        let capped = if read {
            ""
        } else {
            " AND daily_spend_cap IS NULL"
        };
        let sql = format!(
            "WITH a AS (UPDATE accounts SET reserved = reserved + $2, \
               live_paid_legs = live_paid_legs + 1 \
               WHERE id = $1 AND blocked = 0 AND balance - reserved >= $2 \
               AND (max_paid_legs IS NULL OR live_paid_legs < max_paid_legs){capped} \
               AND NOT EXISTS (SELECT 1 FROM cdrs WHERE leg_id = $4) RETURNING id), \
             r AS (INSERT INTO reservations (session_id, account, amount, host) \
               SELECT $3, id, $2, $5 FROM a WHERE $2 > 0 ON CONFLICT (session_id) \
               DO UPDATE SET amount = reservations.amount + excluded.amount RETURNING 1), \
             c AS (INSERT INTO cdrs (leg_id, session_id, account, role, address, provider, \
               price_per_minute, increment_secs, connect_fee, host, started_ms) \
               SELECT $4, $3, id, $6, $7, $8, $9, $10, $11, $5, $12 FROM a RETURNING 1) \
             SELECT (SELECT COUNT(*) FROM a) AS counted, (SELECT COUNT(*) FROM r) AS reserved, \
               (SELECT COUNT(*) FROM c) AS recorded, \
               (SELECT COUNT(*) FROM cdrs WHERE leg_id = $4) AS existing"
        );
        let row = sqlx::query(&sql)
            .bind(&leg.account)
            .bind(grant.0)
            .bind(&leg.session_id)
            .bind(&leg.leg_id)
            .bind(&self.host)
            .bind(leg.role.as_str())
            .bind(&leg.address)
            .bind(leg.provider.as_deref())
            .bind(leg.rate.price_per_minute.0)
            .bind(i64::from(leg.rate.increment_secs))
            .bind(leg.rate.connect_fee.0)
            .bind(leg.started_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
                Some(sqlx::error::ErrorKind::ForeignKeyViolation) => {
                    BillingError::UnknownAccount(leg.account.clone())
                }
                _ => BillingError::Database(e),
            })?;
        let counted: i64 = row.try_get("counted")?;
        if counted == 1 {
            return Ok(Authorised::Yes);
        }
        // The statement's snapshot predates its own inserts, so `existing`
        // counts only a CDR recorded by an earlier authorisation.
        let existing: i64 = row.try_get("existing")?;
        Ok(if existing > 0 {
            Authorised::AlreadyRecorded
        } else {
            Authorised::Refused
        })
    }

    /// Adds `amount` to the session's reservation (creating it).
    async fn add_to_reservation(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        session: &str,
        account: &str,
        amount: Micros,
    ) -> Result<(), BillingError> {
        sqlx::query(
            "INSERT INTO reservations (session_id, account, amount, host) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (session_id) DO UPDATE SET amount = reservations.amount + excluded.amount",
        )
        .bind(session)
        .bind(account)
        .bind(amount.0)
        .bind(&self.host)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// What is still reserved for `session`.
    pub async fn reservation(&self, session: &str) -> Result<Micros, BillingError> {
        let left: Option<i64> =
            sqlx::query_scalar("SELECT amount - used FROM reservations WHERE session_id = $1")
                .bind(session)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Micros(left.unwrap_or(0).max(0)))
    }

    /// Gives back what is left of the session's reservation (the session
    /// ended). Returns the amount released; releasing twice releases nothing.
    pub async fn release(&self, session: &str) -> Result<Micros, BillingError> {
        let account: Option<String> =
            sqlx::query_scalar("SELECT account FROM reservations WHERE session_id = $1")
                .bind(session)
                .fetch_optional(&self.pool)
                .await?;
        let Some(account) = account else {
            return Ok(Micros::ZERO);
        };
        let mut tx = self.pool.begin().await?;
        // Account first, then reservation (the lock order of every writer);
        // the reservation is read after the account is locked, so no
        // settlement can change it in between.
        sqlx::query("UPDATE accounts SET reserved = reserved WHERE id = $1")
            .bind(&account)
            .execute(&mut *tx)
            .await?;
        let row =
            sqlx::query("DELETE FROM reservations WHERE session_id = $1 RETURNING amount, used")
                .bind(session)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(Micros::ZERO);
        };
        let (amount, used): (i64, i64) = (row.try_get("amount")?, row.try_get("used")?);
        let left = Micros((amount - used).max(0));
        sqlx::query("UPDATE accounts SET reserved = reserved - $2 WHERE id = $1")
            .bind(&account)
            .bind(left.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(left)
    }

    // ---- legs ----------------------------------------------------------

    /// Records a leg about to be dialled. A paid leg counts against the
    /// account's cap on simultaneous paid legs (checked and counted in one
    /// conditional write). Recording the same leg twice is a no-op.
    pub async fn open_leg(&self, leg: &LegStart) -> Result<(), BillingError> {
        let mut tx = self.pool.begin().await?;
        let paid = leg.rate.is_paid();
        if paid {
            let counted = sqlx::query(
                "UPDATE accounts SET live_paid_legs = live_paid_legs + 1 WHERE id = $1 \
                 AND blocked = 0 AND (max_paid_legs IS NULL OR live_paid_legs < max_paid_legs)",
            )
            .bind(&leg.account)
            .execute(&mut *tx)
            .await?;
            if counted.rows_affected() == 0 {
                tx.rollback().await?;
                return Err(match self.account(&leg.account).await? {
                    None => BillingError::UnknownAccount(leg.account.clone()),
                    Some(a) if a.blocked => BillingError::Blocked(leg.account.clone()),
                    Some(a) => BillingError::PaidLegCap {
                        account: leg.account.clone(),
                        cap: a.max_paid_legs.unwrap_or(0),
                    },
                });
            }
        }
        let inserted = self.insert_cdr(&mut tx, leg).await?;
        if !inserted {
            // Already recorded (a retry): do not count it twice.
            tx.rollback().await?;
            return Ok(());
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes a leg's CDR; false if it was already there.
    async fn insert_cdr(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        leg: &LegStart,
    ) -> Result<bool, BillingError> {
        let inserted = sqlx::query(
            "INSERT INTO cdrs (leg_id, session_id, account, role, address, provider, \
             price_per_minute, increment_secs, connect_fee, host, started_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (leg_id) DO NOTHING",
        )
        .bind(&leg.leg_id)
        .bind(&leg.session_id)
        .bind(&leg.account)
        .bind(leg.role.as_str())
        .bind(&leg.address)
        .bind(leg.provider.as_deref())
        .bind(leg.rate.price_per_minute.0)
        .bind(i64::from(leg.rate.increment_secs))
        .bind(leg.rate.connect_fee.0)
        .bind(&self.host)
        .bind(leg.started_ms)
        .execute(&mut **tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Records that the leg answered: its billed time starts here. The
    /// SIP Call-ID, when given, is kept with it.
    pub async fn answered(
        &self,
        leg_id: &str,
        at_ms: i64,
        sip_call_id: Option<&str>,
    ) -> Result<(), BillingError> {
        sqlx::query(
            "UPDATE cdrs SET answered_ms = $2, progress_ms = $2, sip_call_id = $3 \
             WHERE leg_id = $1 AND answered_ms IS NULL AND settled = 0",
        )
        .bind(leg_id)
        .bind(at_ms)
        .bind(sip_call_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that every answered leg of this host is still up at `now_ms`:
    /// after a crash they are billed up to the last such mark. One statement
    /// for all of the host's legs.
    pub async fn record_progress(&self, now_ms: i64) -> Result<u64, BillingError> {
        let done = sqlx::query(
            "UPDATE cdrs SET progress_ms = $1 \
             WHERE host = $2 AND settled = 0 AND answered_ms IS NOT NULL",
        )
        .bind(now_ms)
        .bind(&self.host)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Bills a leg that ended: seconds from answer to end at its rate,
    /// debited from the balance and taken off the session's reservation.
    /// Returns `None` if the leg was already settled (or never recorded):
    /// settling is idempotent.
    pub async fn settle(&self, end: &LegEnd) -> Result<Option<Settlement>, BillingError> {
        let mut settled = self.settle_batch(std::slice::from_ref(end)).await?;
        Ok(settled.pop().flatten())
    }

    /// Settles many legs in few transactions: one set-based statement per
    /// table, whatever the number of legs, so the database's per-statement
    /// cost is paid once per batch ([`super::settler::Settler`] gathers
    /// concurrent settlements into batches). Returns, for each leg in
    /// order, what was billed, or `None` if it was already settled (or
    /// never recorded, or named twice in the batch).
    pub async fn settle_batch(
        &self,
        ends: &[LegEnd],
    ) -> Result<Vec<Option<Settlement>>, BillingError> {
        let endings: Vec<Ending<'_>> = ends
            .iter()
            .map(|e| Ending {
                leg_id: &e.leg_id,
                ended_ms: Some(e.ended_ms),
                sip_status: e.sip_status.map(i64::from),
                reason: &e.reason,
            })
            .collect();
        self.settle_endings(&endings).await
    }

    /// Settles every leg this host left open (a crash or a kill), each at
    /// its last recorded progress, and gives back the reservations of its
    /// sessions. Legs already settled are not touched: running it twice
    /// bills nothing twice.
    pub async fn recover(&self) -> Result<Vec<Settlement>, BillingError> {
        let open: Vec<String> =
            sqlx::query_scalar("SELECT leg_id FROM cdrs WHERE host = $1 AND settled = 0")
                .bind(&self.host)
                .fetch_all(&self.pool)
                .await?;
        let endings: Vec<Ending<'_>> = open
            .iter()
            .map(|leg_id| Ending {
                leg_id,
                ended_ms: None,
                sip_status: None,
                reason: "HostRestarted",
            })
            .collect();
        let settled = self
            .settle_endings(&endings)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let sessions: Vec<String> =
            sqlx::query_scalar("SELECT session_id FROM reservations WHERE host = $1")
                .bind(&self.host)
                .fetch_all(&self.pool)
                .await?;
        for session in sessions {
            self.release(&session).await?;
        }
        Ok(settled)
    }

    async fn settle_endings(
        &self,
        ends: &[Ending<'_>],
    ) -> Result<Vec<Option<Settlement>>, BillingError> {
        let mut results = vec![None; ends.len()];
        let mut seen = HashSet::new();
        let unique: Vec<usize> = (0..ends.len())
            .filter(|&i| seen.insert(ends[i].leg_id))
            .collect();
        for chunk in unique.chunks(MAX_BATCH) {
            let batch: Vec<&Ending<'_>> = chunk.iter().map(|&i| &ends[i]).collect();
            let settled = self.settle_chunk(&batch).await?;
            for &i in chunk {
                results[i] = settled.get(ends[i].leg_id).cloned();
            }
        }
        Ok(results)
    }

    /// One transaction: claim the legs (only unsettled ones come back),
    /// price them, take the costs off the sessions' reservations, debit the
    /// accounts, count the day's spend, write the costs into the CDRs.
    async fn settle_chunk(
        &self,
        batch: &[&Ending<'_>],
    ) -> Result<HashMap<String, Settlement>, BillingError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "WITH v(v_leg, v_ended, v_status, v_reason) AS (VALUES {}) \
             UPDATE cdrs SET settled = 1, \
             ended_ms = COALESCE(v_ended, progress_ms, answered_ms, started_ms), \
             sip_status = v_status, end_reason = v_reason \
             FROM v WHERE leg_id = v_leg AND settled = 0 \
             RETURNING leg_id, session_id, account, price_per_minute, increment_secs, \
             connect_fee, answered_ms, ended_ms",
            placeholders(batch.len(), 4)
        );
        let mut claim = sqlx::query(&sql);
        for e in batch {
            claim = claim
                .bind(e.leg_id)
                .bind(e.ended_ms)
                .bind(e.sip_status)
                .bind(e.reason);
        }
        let rows = claim.fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(HashMap::new());
        }
        let mut legs = Vec::with_capacity(rows.len());
        for row in &rows {
            let rate = rate_of(row)?;
            let answered: Option<i64> = row.try_get("answered_ms")?;
            let ended: i64 = row.try_get("ended_ms")?;
            let talk_ms = answered.map_or(0, |a| u64::try_from(ended - a).unwrap_or(0));
            let billed_secs = rate.billed_secs(talk_ms);
            legs.push(Claimed {
                settlement: Settlement {
                    leg_id: row.try_get("leg_id")?,
                    session_id: row.try_get("session_id")?,
                    account: row.try_get("account")?,
                    billed_secs,
                    cost: rate.cost(billed_secs),
                },
                paid: rate.is_paid(),
                day: day_of(ended),
            });
        }
        // Sorted, so concurrent batches lock rows in one order.
        legs.sort_by(|a, b| {
            (
                &a.settlement.account,
                &a.settlement.session_id,
                &a.settlement.leg_id,
            )
                .cmp(&(
                    &b.settlement.account,
                    &b.settlement.session_id,
                    &b.settlement.leg_id,
                ))
        });

        // Accounts before reservations, in id order: the lock order of
        // every writer. (SQLite has one writer at a time anyway.)
        let accounts: BTreeSet<&str> = legs
            .iter()
            .filter(|l| l.paid)
            .map(|l| l.settlement.account.as_str())
            .collect();
        if self.backend == Backend::Postgres && !accounts.is_empty() {
            let sql = format!(
                "SELECT id FROM accounts WHERE id IN ({}) ORDER BY id FOR NO KEY UPDATE",
                (1..=accounts.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut q = sqlx::query(&sql);
            for account in &accounts {
                q = q.bind(*account);
            }
            q.fetch_all(&mut *tx).await?;
        }

        // Reservations: what each session's paid legs cost together.
        let mut by_session: BTreeMap<&str, i64> = BTreeMap::new();
        for l in legs.iter().filter(|l| l.paid && l.settlement.cost.0 > 0) {
            *by_session
                .entry(l.settlement.session_id.as_str())
                .or_default() += l.settlement.cost.0;
        }
        let mut taken: HashMap<String, i64> = HashMap::new();
        if !by_session.is_empty() {
            let sql = format!(
                "WITH v(v_session, v_cost) AS (VALUES {}) UPDATE reservations \
                 SET used = used + v_cost FROM v WHERE session_id = v_session \
                 RETURNING session_id, amount, used",
                placeholders(by_session.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (session, cost) in &by_session {
                q = q.bind(*session).bind(*cost);
            }
            for row in q.fetch_all(&mut *tx).await? {
                let session: String = row.try_get("session_id")?;
                let (amount, used): (i64, i64) = (row.try_get("amount")?, row.try_get("used")?);
                let cost = by_session.get(session.as_str()).copied().unwrap_or(0);
                // Take what was still reserved, never more than the cost.
                let take = (amount - (used - cost)).clamp(0, cost);
                taken.insert(session, take);
            }
        }
        // Never bill beyond the reservation: the cut-off should have ended
        // the legs inside it; if not, the later legs of the session give way.
        for l in legs
            .iter_mut()
            .filter(|l| l.paid && l.settlement.cost.0 > 0)
        {
            let left = taken.entry(l.settlement.session_id.clone()).or_insert(0);
            if l.settlement.cost.0 > *left {
                tracing::warn!(
                    leg_id = %l.settlement.leg_id,
                    cost = %l.settlement.cost,
                    reserved = %Micros(*left),
                    "leg outran its reservation; billing what was reserved"
                );
                l.settlement.cost = Micros(*left);
            }
            *left -= l.settlement.cost.0;
        }

        // Accounts: debit and count down the paid legs, locked in id order.
        let mut by_account: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        let mut by_day: BTreeMap<(&str, i64), i64> = BTreeMap::new();
        for l in legs.iter().filter(|l| l.paid) {
            let e = by_account.entry(l.settlement.account.as_str()).or_default();
            e.0 += l.settlement.cost.0;
            e.1 += 1;
            if l.settlement.cost.0 > 0 {
                *by_day
                    .entry((l.settlement.account.as_str(), l.day))
                    .or_default() += l.settlement.cost.0;
            }
        }
        if !by_account.is_empty() {
            let sql = format!(
                "WITH v(v_id, v_debit, v_legs) AS (VALUES {}) UPDATE accounts SET \
                 balance = balance - v_debit, reserved = reserved - v_debit, \
                 live_paid_legs = live_paid_legs - v_legs FROM v WHERE id = v_id",
                placeholders(by_account.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for (account, (debit, count)) in &by_account {
                q = q.bind(*account).bind(*debit).bind(*count);
            }
            q.execute(&mut *tx).await?;
        }
        if !by_day.is_empty() {
            let sql = format!(
                "INSERT INTO daily_spend (account, day, amount) VALUES {} ON CONFLICT \
                 (account, day) DO UPDATE SET amount = daily_spend.amount + excluded.amount",
                placeholders(by_day.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for ((account, day), amount) in &by_day {
                q = q.bind(*account).bind(*day).bind(*amount);
            }
            q.execute(&mut *tx).await?;
        }
        let sql = format!(
            "WITH v(v_leg, v_secs, v_cost) AS (VALUES {}) UPDATE cdrs \
             SET billed_secs = v_secs, cost = v_cost FROM v WHERE leg_id = v_leg",
            placeholders(legs.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for l in &legs {
            let secs = i64::try_from(l.settlement.billed_secs).unwrap_or(i64::MAX);
            q = q
                .bind(&l.settlement.leg_id)
                .bind(secs)
                .bind(l.settlement.cost.0);
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(legs
            .into_iter()
            .map(|l| (l.settlement.leg_id.clone(), l.settlement))
            .collect())
    }

    /// The account's latest CDRs, newest first.
    pub async fn cdrs(&self, account: &str, limit: u32) -> Result<Vec<Cdr>, BillingError> {
        let rows = sqlx::query(
            "SELECT leg_id, session_id, role, address, provider, price_per_minute, started_ms, \
             answered_ms, ended_ms, billed_secs, cost, sip_status, end_reason, sip_call_id FROM cdrs \
             WHERE account = $1 ORDER BY started_ms DESC, leg_id LIMIT $2",
        )
        .bind(account)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Cdr {
                    leg_id: r.try_get("leg_id")?,
                    session_id: r.try_get("session_id")?,
                    role: r.try_get("role")?,
                    address: r.try_get("address")?,
                    provider: r.try_get("provider")?,
                    price_per_minute: micros(r, "price_per_minute")?,
                    started_ms: r.try_get("started_ms")?,
                    answered_ms: r.try_get("answered_ms")?,
                    ended_ms: r.try_get("ended_ms")?,
                    billed_secs: r
                        .try_get::<Option<i64>, _>("billed_secs")?
                        .map(|s| u64::try_from(s).unwrap_or(0)),
                    cost: r.try_get::<Option<i64>, _>("cost")?.map(Micros),
                    sip_status: r
                        .try_get::<Option<i64>, _>("sip_status")?
                        .and_then(|s| u16::try_from(s).ok()),
                    end_reason: r.try_get("end_reason")?,
                    sip_call_id: r.try_get("sip_call_id")?,
                })
            })
            .collect()
    }

    // ---- provider statistics -------------------------------------------

    /// Stores one attempt through a provider (idempotent per attempt id).
    pub async fn record_attempt(
        &self,
        attempt_id: &str,
        provider: &str,
        outcome: &AttemptOutcome,
        sip_status: Option<u16>,
    ) -> Result<(), BillingError> {
        sqlx::query(
            "INSERT INTO provider_attempts (attempt_id, provider, at_ms, answered, talk_secs, \
             pdd_ms, sip_status, host) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (attempt_id) DO NOTHING",
        )
        .bind(attempt_id)
        .bind(provider)
        .bind(outcome.at_ms)
        .bind(i64::from(outcome.answered))
        .bind(i64::from(outcome.talk_secs))
        .bind(outcome.pdd_ms.map(i64::from))
        .bind(sip_status.map(i64::from))
        .bind(&self.host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every host's attempts since `since_ms`, oldest first, to warm the
    /// statistics window at start.
    pub async fn attempts_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, AttemptOutcome)>, BillingError> {
        let rows = sqlx::query(
            "SELECT provider, at_ms, answered, talk_secs, pdd_ms FROM provider_attempts \
             WHERE at_ms >= $1 ORDER BY at_ms",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("provider")?,
                    AttemptOutcome {
                        at_ms: r.try_get("at_ms")?,
                        answered: r.try_get::<i64, _>("answered")? != 0,
                        talk_secs: opt_u32(Some(r.try_get("talk_secs")?)).unwrap_or(0),
                        pdd_ms: opt_u32(r.try_get("pdd_ms")?),
                    },
                ))
            })
            .collect()
    }
}
