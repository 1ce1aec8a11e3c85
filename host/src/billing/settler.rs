//! Group commit for settlements: legs that end at about the same time (a
//! conference hung up, many sessions on a busy host) are settled together
//! in one transaction by [`Store::settle_batch`], so the database's cost
//! per transaction and per statement is shared. A leg settled alone waits
//! for nothing: the batch is whatever is queued when the previous one
//! commits.
//!
//! The same task records the host's progress marks, so the two writers of
//! many CDR rows at once never run side by side (on PostgreSQL they could
//! lock the same rows in different orders).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::BillingError;
use super::store::{LegEnd, Settlement, Store};

type Reply = oneshot::Sender<Result<Option<Settlement>, String>>;

enum Job {
    Settle(LegEnd, Reply),
    Progress(i64, oneshot::Sender<Result<u64, String>>),
}

/// The queue into one host's settlement task.
#[derive(Debug, Clone)]
pub struct Settler {
    queue: mpsc::UnboundedSender<Job>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    legs: AtomicU64,
    failed: AtomicU64,
}

/// What the settlement task has done so far (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettlerStats {
    /// Transactions committed.
    pub batches: u64,
    /// Legs settled by them.
    pub legs: u64,
    /// Legs whose batch failed.
    pub failed: u64,
}

impl Settler {
    /// Starts the settlement task on the current tokio runtime; it ends
    /// when every `Settler` clone is dropped.
    pub fn spawn(store: Store, max_batch: usize) -> Settler {
        let (queue, mut jobs) = mpsc::unbounded_channel::<Job>();
        let max_batch = max_batch.max(1);
        let counters = Arc::new(Counters::default());
        let count = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while jobs.recv_many(&mut batch, max_batch).await > 0 {
                // Let the tasks woken by the previous batch's replies queue
                // their next settlements before this batch is cut.
                tokio::task::yield_now().await;
                while batch.len() < max_batch {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let mut ends = Vec::with_capacity(batch.len());
                let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
                for job in batch.drain(..) {
                    match job {
                        Job::Settle(end, reply) => {
                            ends.push(end);
                            replies.push(reply);
                        }
                        Job::Progress(now_ms, reply) => {
                            let done = store.record_progress(now_ms).await;
                            let _ = reply.send(done.map_err(|e| e.to_string()));
                        }
                    }
                }
                if ends.is_empty() {
                    continue;
                }
                match store.settle_batch(&ends).await {
                    Ok(settled) => {
                        count.batches.fetch_add(1, Ordering::Relaxed);
                        count.legs.fetch_add(ends.len() as u64, Ordering::Relaxed);
                        for (reply, s) in replies.into_iter().zip(settled) {
                            let _ = reply.send(Ok(s));
                        }
                    }
                    Err(e) => {
                        tracing::error!(legs = ends.len(), error = %e, "settlement batch failed");
                        count.failed.fetch_add(ends.len() as u64, Ordering::Relaxed);
                        let text = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(text.clone()));
                        }
                    }
                }
            }
        });
        Settler { queue, counters }
    }

    /// Records that this host's answered legs are up at `now_ms` (see
    /// [`Store::record_progress`]); returns how many legs were marked.
    pub async fn record_progress(&self, now_ms: i64) -> Result<u64, BillingError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || BillingError::Settlement("the settlement task has stopped".into());
        self.queue
            .send(Job::Progress(now_ms, reply))
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(BillingError::Settlement)
    }

    /// Batches and legs settled so far.
    pub fn stats(&self) -> SettlerStats {
        SettlerStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            legs: self.counters.legs.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Settles one leg (see [`Store::settle`]); `None` if it was already settled.
    pub async fn settle(&self, end: LegEnd) -> Result<Option<Settlement>, BillingError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::Settle(end, reply))
            .map_err(|_| BillingError::Settlement("the settlement task has stopped".into()))?;
        answer
            .await
            .map_err(|_| BillingError::Settlement("the settlement task has stopped".into()))?
            .map_err(BillingError::Settlement)
    }
}
