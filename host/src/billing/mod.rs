//! Billing: prepaid accounts, rates, per-second settlement of every paid
//! leg, provider statistics for routing, and fraud controls.
//!
//! - [`money`]: `Micros`, exact decimal amounts.
//! - [`rating`]: rates, longest-prefix match per provider, what a leg costs.
//! - [`policy`]: emergency numbers and denied prefixes.
//! - [`credit`]: a session's credit clock (sans-IO): maximum duration,
//!   warning, cut-off.
//! - [`stats`]: sliding-window ASR/ACD/PDD per provider.
//! - [`store`]: the database (SQLite or PostgreSQL through sqlx).
//! - [`settler`]: group commit of settlements.
//! - [`import`]: rate sheets in CSV.
//! - [`lease`]: one live process per host id.
//!
//! [`Billing`] ties them together for the session manager: rate a number,
//! authorise a paid leg before it is dialled, settle it when it ends.

pub mod credit;
pub mod import;
pub mod lease;
pub mod money;
pub mod policy;
pub mod rating;
pub mod settler;
pub mod stats;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

pub use credit::{CreditEvent, InsufficientCredit, SessionCredit};
pub use money::Micros;
pub use policy::{Policy, Refusal};
pub use rating::{Offer, Rate, RateTable};
pub use stats::{AttemptOutcome, ProviderStats, StatsBook, StatsWindow};
pub use store::{
    Account, Backend, Cdr, LegEnd, LegRole, LegStart, ProviderRecord, Settlement, Store,
};

/// What can go wrong in billing.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The database refused or could not be reached.
    #[error("billing database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("billing database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is not `sqlite:…` or `postgres://…`.
    #[error("billing database URL {0:?} is not sqlite:… or postgres://…")]
    BadUrl(String),
    /// No account has this id.
    #[error("no account {0:?}")]
    UnknownAccount(String),
    /// The account is blocked.
    #[error("account {0:?} is blocked")]
    Blocked(String),
    /// The account is in another currency.
    #[error("account {account:?} is in {held}, not {given}")]
    Currency {
        /// The account.
        account: String,
        /// Its currency.
        held: String,
        /// The currency asked for.
        given: String,
    },
    /// A debit larger than the account's free credit.
    #[error(
        "debiting {debit} from {account:?} would take it below its reserved credit ({available} free)"
    )]
    Overdraw {
        /// The account.
        account: String,
        /// The debit asked for.
        debit: Micros,
        /// Credit neither spent nor reserved.
        available: Micros,
    },
    /// Not enough credit for the shortest useful call.
    #[error(
        "insufficient credit: {available} available, {needed} needed for one minute of every paid leg"
    )]
    InsufficientCredit {
        /// Credit available to the session.
        available: Micros,
        /// Credit needed.
        needed: Micros,
    },
    /// The account already has as many paid legs up as it may.
    #[error("account {account:?} already has {cap} paid legs up, its limit")]
    PaidLegCap {
        /// The account.
        account: String,
        /// Its cap.
        cap: u32,
    },
    /// The account reached its spending cap for today.
    #[error("account {account:?} has spent {spent} of its {cap} daily limit")]
    DailyCap {
        /// The account.
        account: String,
        /// Its daily cap.
        cap: Micros,
        /// Spent today.
        spent: Micros,
    },
    /// Other hosts kept winning the race for the account's credit.
    #[error("account {0:?} is being charged by too many calls at once; try again")]
    Contended(String),
    /// The number may not be dialled.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No enabled provider has a rate for the number.
    #[error("no provider has a rate for {0}")]
    NoRoute(String),
    /// The provider does not exist or has no rate for the number.
    #[error("provider {provider:?} does not serve {number}")]
    UnknownProvider {
        /// The provider asked for.
        provider: String,
        /// The number.
        number: String,
    },
    /// A settlement batch failed (the database error, as text, for every
    /// leg of the batch); the legs stay open and can be settled again.
    #[error("settlement failed: {0}")]
    Settlement(String),
    /// Another process holds this host id's lease: it is serving calls, and
    /// starting a second one would settle them.
    #[error(
        "host {host} is running (lease renewed {renewed_secs_ago} s ago); give this process another host_id"
    )]
    HostRunning {
        /// The host id.
        host: String,
        /// How long ago its lease was renewed.
        renewed_secs_ago: i64,
    },
    /// This process's lease was taken over by another process (it expired
    /// while this one stalled): the other one has recovered this host.
    #[error("the lease of host {0} was taken over by another process")]
    LeaseLost(String),
    /// A rate sheet with bad rows; nothing was imported.
    #[error("rate sheet refused, nothing imported:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Import(Vec<import::RowError>),
}

/// The `[billing]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://file.db` (the default, created if missing) or
    /// `postgres://user@host/db` for several hosts sharing one database.
    pub database: String,
    /// This host's id: the legs it records are its own to recover after a
    /// crash. Every host sharing a database needs its own.
    pub host_id: String,
    /// Currency of new accounts (ISO 4217).
    pub currency: String,
    /// Numbers refused besides 112, 911 and 999.
    pub emergency_numbers: Vec<String>,
    /// Prefixes never dialled (premium rate and the like).
    pub denied_prefixes: Vec<String>,
    /// How long before the credit runs out the user is warned.
    pub credit_warning_secs: u64,
    /// How much talk time of a session's paid legs one reservation covers;
    /// the session reserves the next chunk when this one runs low. Smaller
    /// chunks leave more of an account's credit to its other sessions.
    pub reservation_secs: u64,
    /// How often live legs' progress is recorded (what a crash can lose).
    pub progress_interval_secs: u64,
    /// The window of the provider statistics.
    pub stats: StatsWindow,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: "sqlite://switchboard.db".into(),
            host_id: "local".into(),
            currency: "USD".into(),
            emergency_numbers: Vec::new(),
            denied_prefixes: Vec::new(),
            credit_warning_secs: 60,
            reservation_secs: 600,
            progress_interval_secs: 5,
            stats: StatsWindow::default(),
        }
    }
}

impl Config {
    /// Checks the values that serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.host_id.trim().is_empty() {
            return Err("billing.host_id is empty".into());
        }
        let is_code =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !is_code {
            return Err(format!(
                "billing.currency {:?} is not an ISO 4217 code like USD",
                self.currency
            ));
        }
        let digits =
            |s: &String| !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(bad) = self.emergency_numbers.iter().find(|n| !digits(n)) {
            return Err(format!("billing.emergency_numbers: {bad:?} is not digits"));
        }
        if let Some(bad) = self.denied_prefixes.iter().find(|n| !digits(n)) {
            return Err(format!("billing.denied_prefixes: {bad:?} is not digits"));
        }
        if !(1..=3600).contains(&self.credit_warning_secs) {
            return Err("billing.credit_warning_secs is not between 1 and 3600".into());
        }
        if !(120..=86_400).contains(&self.reservation_secs) {
            return Err("billing.reservation_secs is not between 120 and 86400".into());
        }
        if !(1..=300).contains(&self.progress_interval_secs) {
            return Err("billing.progress_interval_secs is not between 1 and 300".into());
        }
        if self.stats.secs == 0 && self.stats.attempts == 0 {
            return Err("billing.stats: give secs or attempts (or both), not neither".into());
        }
        Ok(())
    }
}

/// The current time as Unix milliseconds, as CDRs record it.
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Billing as the session manager uses it.
#[derive(Debug)]
pub struct Billing {
    store: Store,
    settler: settler::Settler,
    rates: ArcSwap<RateTable>,
    stats: StatsBook,
    policy: ArcSwap<Policy>,
    config: Config,
    lease: Option<lease::Lease>,
}

impl Billing {
    /// Opens the database for a tool (the billing CLI, a test): brings the
    /// providers in line with the configuration (when given; `None` leaves
    /// them as they are), loads the rates and warms the statistics. It
    /// takes no lease and recovers nothing, so it is safe beside a running
    /// host with the same `host_id`.
    pub async fn open(
        config: &Config,
        providers: Option<&[ProviderRecord]>,
    ) -> Result<Billing, BillingError> {
        let store = Store::connect(&config.database, &config.host_id).await?;
        if let Some(providers) = providers {
            store.sync_providers(providers).await?;
        }
        Billing::assemble(config, store, None).await
    }

    /// Opens the database as the process serving this host's calls: takes
    /// the host's lease (refused with [`BillingError::HostRunning`] while
    /// another process holds it), then does what [`Self::open`] does and
    /// settles what this host left open before a crash. Returns what
    /// recovery settled. [`Self::record_progress`] renews the lease and
    /// [`Self::close`] gives it back.
    pub async fn open_host(
        config: &Config,
        providers: Option<&[ProviderRecord]>,
    ) -> Result<(Billing, Vec<Settlement>), BillingError> {
        let store = Store::connect(&config.database, &config.host_id).await?;
        let token: u64 = rand::random();
        let ttl = i64::try_from(config.progress_interval_secs * 1000)
            .unwrap_or(i64::MAX)
            .saturating_mul(lease::LEASE_INTERVALS);
        let lease = lease::Lease::new(format!("{:016x}-{}", token, std::process::id()), ttl);
        lease.take(&store, unix_ms(SystemTime::now())).await?;
        if let Some(providers) = providers {
            store.sync_providers(providers).await?;
        }
        let recovered = store.recover().await?;
        let billing = Billing::assemble(config, store, Some(lease)).await?;
        Ok((billing, recovered))
    }

    async fn assemble(
        config: &Config,
        store: Store,
        lease: Option<lease::Lease>,
    ) -> Result<Billing, BillingError> {
        let billing = Billing {
            lease,
            settler: settler::Settler::spawn(store.clone(), 128),
            rates: ArcSwap::from_pointee(store.rate_table().await?),
            stats: StatsBook::new(config.stats),
            policy: ArcSwap::from_pointee(Policy::new(
                &config.emergency_numbers,
                &config.denied_prefixes,
            )),
            config: config.clone(),
            store,
        };
        let now = unix_ms(SystemTime::now());
        let since =
            now.saturating_sub(i64::try_from(config.stats.secs.max(86_400) * 1000).unwrap_or(0));
        for (provider, attempt) in billing.store.attempts_since(since).await? {
            billing.stats.record(&provider, attempt);
        }
        Ok(billing)
    }

    /// Gives back the host's lease (if this process holds it) and closes
    /// the database: the next start need not wait for the lease to expire.
    pub async fn close(&self) {
        if let Some(lease) = &self.lease
            && let Err(e) = lease.release(&self.store).await
        {
            tracing::warn!(error = %e, "cannot give back the host lease");
        }
        self.store.close().await;
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The number policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Replaces the emergency numbers and denied prefixes (a reload).
    pub fn set_policy(&self, emergency_numbers: &[String], denied_prefixes: &[String]) {
        self.policy
            .store(Arc::new(Policy::new(emergency_numbers, denied_prefixes)));
    }

    /// Re-reads the rates (after an import).
    pub async fn reload_rates(&self) -> Result<(), BillingError> {
        self.rates.store(Arc::new(self.store.rate_table().await?));
        Ok(())
    }

    /// Every provider's offer for a phone number, after the fraud checks.
    pub fn offers(&self, number: &str) -> Result<Vec<Offer>, BillingError> {
        self.policy.load().check(number)?;
        let offers = self.rates.load().offers(number);
        if offers.is_empty() {
            return Err(BillingError::NoRoute(number.to_string()));
        }
        Ok(offers)
    }

    /// Rates whose prefix starts `digits` or starts with it (the rates
    /// page); see [`RateTable::search`]. No fraud checks: nothing is dialled.
    pub fn search_rates(&self, digits: &str, limit: usize) -> Vec<Offer> {
        self.rates.load().search(digits, limit)
    }

    /// The named provider's offer for a phone number, after the fraud checks.
    pub fn offer(&self, provider: &str, number: &str) -> Result<Offer, BillingError> {
        self.policy.load().check(number)?;
        self.rates
            .load()
            .offer(provider, number)
            .ok_or_else(|| BillingError::UnknownProvider {
                provider: provider.to_string(),
                number: number.to_string(),
            })
    }

    /// A provider's live statistics.
    pub fn provider_stats(&self, provider: &str, now_ms: i64) -> ProviderStats {
        self.stats.stats(provider, now_ms)
    }

    /// A fresh credit clock for a new session.
    pub fn session_credit<K: PartialEq + Clone>(&self) -> SessionCredit<K> {
        SessionCredit::new(
            Micros::ZERO,
            Duration::from_secs(self.config.credit_warning_secs),
            Duration::from_secs(self.config.reservation_secs),
        )
    }

    /// How often [`Store::record_progress`] should run.
    pub fn progress_interval(&self) -> Duration {
        Duration::from_secs(self.config.progress_interval_secs)
    }

    /// Authorises and records a leg about to be dialled. For a paid leg the
    /// session's reservation is topped up to cover a chunk of talk time
    /// (`reservation_secs`) of every paid leg of the session and of this
    /// one, as far as the account's free credit goes; it must cover at
    /// least one minute of each. The leg counts against the account's caps.
    /// Returns the session's maximum duration from `now` (`None` while it
    /// has no paid legs).
    pub async fn authorise(
        &self,
        credit: &mut SessionCredit<String>,
        leg: &LegStart,
        now: Instant,
    ) -> Result<Option<Duration>, BillingError> {
        if leg.rate.is_paid() {
            let spent = credit.spent(now);
            let needed = credit.needed_for(now, leg.rate);
            let short = needed.minus(credit.pool()).max(Micros::ZERO);
            let wanted = credit.wanted(now, Some(leg.rate)).max(short);
            match self.store.authorise_leg(leg, short, wanted).await {
                Ok(granted) => credit.top_up(now, granted),
                Err(BillingError::InsufficientCredit { available, .. }) => {
                    return Err(BillingError::InsufficientCredit {
                        available: credit.pool().minus(spent).plus(available),
                        needed: needed.minus(spent),
                    });
                }
                Err(e) => return Err(e),
            }
        } else {
            self.store.open_leg(leg).await?;
        }
        if leg.rate.is_paid() {
            credit
                .add_leg(now, leg.leg_id.clone(), leg.rate)
                .map_err(|e| BillingError::InsufficientCredit {
                    available: e.available,
                    needed: e.needed,
                })?;
        }
        Ok(credit.remaining(now))
    }

    /// The credit clock asked for more ([`CreditEvent::Replenish`]):
    /// reserves another chunk, or what the account still has, and returns
    /// the session's new maximum duration.
    pub async fn replenish(
        &self,
        credit: &mut SessionCredit<String>,
        session_id: &str,
        account: &str,
        now: Instant,
        now_ms: i64,
    ) -> Result<Option<Duration>, BillingError> {
        let wanted = credit.wanted(now, None);
        let granted = match self
            .store
            .reserve(session_id, account, Micros::ZERO, wanted, now_ms)
            .await
        {
            Ok(granted) => granted,
            // Nothing more today: the call runs on to its cut-off.
            Err(BillingError::DailyCap { .. }) => Micros::ZERO,
            Err(e) => return Err(e),
        };
        credit.top_up(now, granted);
        Ok(credit.remaining(now))
    }

    /// The leg answered: billing starts. `sip_call_id` (the call's SIP
    /// Call-ID) goes into its CDR, for matching a trunk's records.
    pub async fn answered(
        &self,
        credit: &mut SessionCredit<String>,
        leg_id: &str,
        sip_call_id: Option<&str>,
        now: Instant,
        now_ms: i64,
    ) -> Result<(), BillingError> {
        self.store.answered(leg_id, now_ms, sip_call_id).await?;
        credit.answered(now, &leg_id.to_string());
        Ok(())
    }

    /// The leg ended: settle it and take its cost off the session's pool.
    pub async fn end_leg(
        &self,
        credit: &mut SessionCredit<String>,
        end: &LegEnd,
        now: Instant,
    ) -> Result<Option<Settlement>, BillingError> {
        let settled = self.settler.settle(end.clone()).await?;
        let cost = settled.as_ref().map_or(Micros::ZERO, |s| s.cost);
        credit.remove_leg(now, &end.leg_id, cost);
        Ok(settled)
    }

    /// Settles a leg without a session's credit clock (group-committed with
    /// other settlements in flight); `None` if it was already settled.
    pub async fn settle(&self, end: LegEnd) -> Result<Option<Settlement>, BillingError> {
        self.settler.settle(end).await
    }

    /// Records that this host's answered legs are still up (every
    /// [`Self::progress_interval`]); after a crash they are billed up to
    /// the last mark. Returns how many legs were marked.
    pub async fn record_progress(&self, now_ms: i64) -> Result<u64, BillingError> {
        if let Some(lease) = &self.lease
            && !lease.renew(&self.store, now_ms).await?
        {
            return Err(BillingError::LeaseLost(self.config.host_id.clone()));
        }
        self.settler.record_progress(now_ms).await
    }

    /// What the settlement task has done (transactions, legs).
    pub fn settler_stats(&self) -> settler::SettlerStats {
        self.settler.stats()
    }

    /// The session ended: give back what is left of its reservation.
    pub async fn end_session(&self, session_id: &str) -> Result<Micros, BillingError> {
        self.store.release(session_id).await
    }

    /// Counts an attempt through a provider, in the database and the window.
    pub async fn record_attempt(
        &self,
        attempt_id: &str,
        provider: &str,
        outcome: AttemptOutcome,
        sip_status: Option<u16>,
    ) -> Result<(), BillingError> {
        self.store
            .record_attempt(attempt_id, provider, &outcome, sip_status)
            .await?;
        self.stats.record(provider, outcome);
        Ok(())
    }
}
