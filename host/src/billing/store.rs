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

use std::borrow::Cow;
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
    pool: AnyPool,
    backend: Backend,
    host: String,
}

const MIGRATION: &str = include_str!("../../migrations/0001_billing.sql");

/// Day number (UTC) of a Unix millisecond time, for the daily cap.
fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

fn micros(row: &sqlx::any::AnyRow, column: &str) -> Result<Micros, sqlx::Error> {
    row.try_get::<i64, _>(column).map(Micros)
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
            migrations: Cow::Owned(vec![Migration::new(
                1,
                Cow::Borrowed("billing"),
                MigrationType::Simple,
                Cow::Borrowed(MIGRATION),
                false,
            )]),
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
    /// `currency`) if it does not exist; returns the new balance.
    pub async fn credit(
        &self,
        account: &str,
        amount: Micros,
        currency: &str,
        now_ms: i64,
    ) -> Result<Micros, BillingError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO accounts (id, currency, balance, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + excluded.balance \
             RETURNING balance, currency",
        )
        .bind(account)
        .bind(currency)
        .bind(amount.0)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
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
            let rate = Rate {
                price_per_minute: micros(r, "price_per_minute")?,
                increment_secs: opt_u32(Some(r.try_get("increment_secs")?)).unwrap_or(1),
                connect_fee: micros(r, "connect_fee")?,
            };
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
            if acct.blocked {
                return Err(BillingError::Blocked(account.to_string()));
            }
            let mut grant = acct.available();
            if let Some(cap) = acct.daily_spend_cap {
                let spent = self.spent_on_day(account, now_ms).await?;
                let left = cap.minus(spent).minus(acct.reserved);
                if left < min {
                    return Err(BillingError::DailyCap {
                        account: account.to_string(),
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
            if grant.0 <= 0 {
                return Ok(Micros::ZERO);
            }
            // Locks in the order settlements take them (reservation, then
            // account), so the two cannot deadlock on PostgreSQL.
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO reservations (session_id, account, amount, host) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (session_id) DO UPDATE SET amount = reservations.amount + excluded.amount",
            )
            .bind(session)
            .bind(account)
            .bind(grant.0)
            .bind(&self.host)
            .execute(&mut *tx)
            .await?;
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
            tx.commit().await?;
            return Ok(grant);
        }
        Err(BillingError::Contended(account.to_string()))
    }

    /// What is still reserved for `session`.
    pub async fn reservation(&self, session: &str) -> Result<Micros, BillingError> {
        let amount: Option<i64> =
            sqlx::query_scalar("SELECT amount FROM reservations WHERE session_id = $1")
                .bind(session)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Micros(amount.unwrap_or(0)))
    }

    /// Gives back what is left of the session's reservation (the session
    /// ended). Returns the amount released; releasing twice releases nothing.
    pub async fn release(&self, session: &str) -> Result<Micros, BillingError> {
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("DELETE FROM reservations WHERE session_id = $1 RETURNING account, amount")
                .bind(session)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(Micros::ZERO);
        };
        let account: String = row.try_get("account")?;
        let amount = micros(&row, "amount")?;
        sqlx::query("UPDATE accounts SET reserved = reserved - $2 WHERE id = $1")
            .bind(&account)
            .bind(amount.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(amount)
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
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Already recorded (a retry): do not count it twice.
            tx.rollback().await?;
            return Ok(());
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that the leg answered: its billed time starts here.
    pub async fn answered(&self, leg_id: &str, at_ms: i64) -> Result<(), BillingError> {
        sqlx::query(
            "UPDATE cdrs SET answered_ms = $2, progress_ms = $2 \
             WHERE leg_id = $1 AND answered_ms IS NULL AND settled = 0",
        )
        .bind(leg_id)
        .bind(at_ms)
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
        self.settle_at(
            &end.leg_id,
            Some(end.ended_ms),
            end.sip_status.map(i64::from),
            &end.reason,
        )
        .await
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
        let mut settled = Vec::with_capacity(open.len());
        for leg in open {
            if let Some(s) = self.settle_at(&leg, None, None, "HostRestarted").await? {
                settled.push(s);
            }
        }
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

    async fn settle_at(
        &self,
        leg_id: &str,
        ended_ms: Option<i64>,
        sip_status: Option<i64>,
        reason: &str,
    ) -> Result<Option<Settlement>, BillingError> {
        let mut tx = self.pool.begin().await?;
        // Claim the leg first: whoever flips `settled` bills it, once.
        let row = sqlx::query(
            "UPDATE cdrs SET settled = 1 WHERE leg_id = $1 AND settled = 0 RETURNING session_id, \
             account, price_per_minute, increment_secs, connect_fee, started_ms, answered_ms, \
             progress_ms",
        )
        .bind(leg_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let session_id: String = row.try_get("session_id")?;
        let account: String = row.try_get("account")?;
        let rate = Rate {
            price_per_minute: micros(&row, "price_per_minute")?,
            increment_secs: opt_u32(Some(row.try_get("increment_secs")?)).unwrap_or(1),
            connect_fee: micros(&row, "connect_fee")?,
        };
        let started: i64 = row.try_get("started_ms")?;
        let answered: Option<i64> = row.try_get("answered_ms")?;
        let progress: Option<i64> = row.try_get("progress_ms")?;
        // A crash ends the leg at its last recorded progress.
        let ended = ended_ms.or(progress).or(answered).unwrap_or(started);
        let talk_ms = answered.map_or(0, |a| u64::try_from(ended - a).unwrap_or(0));
        let billed_secs = rate.billed_secs(talk_ms);
        let mut cost = rate.cost(billed_secs);
        if rate.is_paid() {
            let lock = match self.backend {
                Backend::Postgres => " FOR UPDATE",
                Backend::Sqlite => "",
            };
            let held: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT amount FROM reservations WHERE session_id = $1{lock}"
            ))
            .bind(&session_id)
            .fetch_optional(&mut *tx)
            .await?;
            let held = Micros(held.unwrap_or(0).max(0));
            if cost > held {
                // The cut-off should have ended the leg inside its
                // reservation; never bill beyond what was set aside.
                tracing::warn!(leg_id, %cost, %held, "leg outran its reservation; billing what was reserved");
                cost = held;
            }
            sqlx::query("UPDATE reservations SET amount = amount - $2 WHERE session_id = $1")
                .bind(&session_id)
                .bind(cost.0)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE accounts SET balance = balance - $2, reserved = reserved - $2, \
                 live_paid_legs = live_paid_legs - 1 WHERE id = $1",
            )
            .bind(&account)
            .bind(cost.0)
            .execute(&mut *tx)
            .await?;
            if cost.0 > 0 {
                sqlx::query(
                    "INSERT INTO daily_spend (account, day, amount) VALUES ($1, $2, $3) \
                     ON CONFLICT (account, day) DO UPDATE SET amount = daily_spend.amount + excluded.amount",
                )
                .bind(&account)
                .bind(day_of(ended))
                .bind(cost.0)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "UPDATE cdrs SET ended_ms = $2, billed_secs = $3, cost = $4, sip_status = $5, \
             end_reason = $6 WHERE leg_id = $1",
        )
        .bind(leg_id)
        .bind(ended)
        .bind(i64::try_from(billed_secs).unwrap_or(i64::MAX))
        .bind(cost.0)
        .bind(sip_status)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Settlement {
            leg_id: leg_id.to_string(),
            session_id,
            account,
            billed_secs,
            cost,
        }))
    }

    /// The account's latest CDRs, newest first.
    pub async fn cdrs(&self, account: &str, limit: u32) -> Result<Vec<Cdr>, BillingError> {
        let rows = sqlx::query(
            "SELECT leg_id, session_id, role, address, provider, price_per_minute, started_ms, \
             answered_ms, ended_ms, billed_secs, cost, sip_status, end_reason FROM cdrs \
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
