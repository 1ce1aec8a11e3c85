//! One live process per host id.
//!
//! The legs and reservations a host records are its own to recover after a
//! crash, so two processes with one `host_id` would settle each other's live
//! calls. A process that serves calls (`run`, `demo`) first takes its host's
//! lease: a row in `host_leases` that it renews every progress interval and
//! removes when it stops. A second process finds the lease live and is
//! refused; a crashed process's lease expires after [`LEASE_INTERVALS`]
//! progress intervals, and the next start takes it over and recovers. The
//! billing CLI takes no lease and recovers nothing.

use super::BillingError;
use super::store::Store;

/// How many progress intervals a lease outlives its last renewal.
pub const LEASE_INTERVALS: i64 = 3;

/// A host's lease, as held by one process.
#[derive(Debug, Clone)]
pub struct Lease {
    owner: String,
    ttl_ms: i64,
}

impl Lease {
    /// A lease for the process named `owner` (unique per process: a random
    /// token and the pid), valid `ttl_ms` after each renewal.
    pub fn new(owner: String, ttl_ms: i64) -> Lease {
        Lease { owner, ttl_ms }
    }

    /// This process's name in the lease row.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Takes the store's host lease at `now_ms`: succeeds when there is no
    /// row, the row is this owner's, or it expired; otherwise
    /// [`BillingError::HostRunning`] says how long ago the other process
    /// renewed it.
    pub async fn take(&self, store: &Store, now_ms: i64) -> Result<(), BillingError> {
        let taken = sqlx::query(
            "INSERT INTO host_leases (host, owner, renewed_ms, expires_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (host) DO UPDATE SET owner = excluded.owner, \
             renewed_ms = excluded.renewed_ms, expires_ms = excluded.expires_ms \
             WHERE host_leases.expires_ms < $3 OR host_leases.owner = excluded.owner",
        )
        .bind(&store.host)
        .bind(&self.owner)
        .bind(now_ms)
        .bind(now_ms.saturating_add(self.ttl_ms))
        .execute(&store.pool)
        .await?;
        if taken.rows_affected() > 0 {
            return Ok(());
        }
        let renewed: Option<i64> =
            sqlx::query_scalar("SELECT renewed_ms FROM host_leases WHERE host = $1")
                .bind(&store.host)
                .fetch_optional(&store.pool)
                .await?;
        Err(BillingError::HostRunning {
            host: store.host.clone(),
            renewed_secs_ago: renewed.map_or(0, |r| now_ms.saturating_sub(r).max(0) / 1000),
        })
    }

    /// Pushes the lease's expiry forward. Returns false when the row is no
    /// longer this owner's (it expired while the process was stalled, and
    /// another process took it over): the caller must stop serving calls.
    pub async fn renew(&self, store: &Store, now_ms: i64) -> Result<bool, BillingError> {
        let done = sqlx::query(
            "UPDATE host_leases SET renewed_ms = $1, expires_ms = $2 \
             WHERE host = $3 AND owner = $4",
        )
        .bind(now_ms)
        .bind(now_ms.saturating_add(self.ttl_ms))
        .bind(&store.host)
        .bind(&self.owner)
        .execute(&store.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives the lease back (a clean stop): the next start need not wait.
    pub async fn release(&self, store: &Store) -> Result<(), BillingError> {
        sqlx::query("DELETE FROM host_leases WHERE host = $1 AND owner = $2")
            .bind(&store.host)
            .bind(&self.owner)
            .execute(&store.pool)
            .await?;
        Ok(())
    }
}
