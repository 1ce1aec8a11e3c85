//! Group commit for settlements: legs that end at about the same time (a
//! conference hung up, many sessions on a busy host) are settled together
//! in one transaction by [`Store::settle_batch`], so the database's cost
//! per transaction and per statement is shared. A leg settled alone waits
//! for nothing: the batch is whatever is queued when the previous one
//! commits.

use tokio::sync::{mpsc, oneshot};

use super::BillingError;
use super::store::{LegEnd, Settlement, Store};

type Reply = oneshot::Sender<Result<Option<Settlement>, String>>;

/// The queue into one host's settlement task.
#[derive(Debug, Clone)]
pub struct Settler {
    queue: mpsc::UnboundedSender<(LegEnd, Reply)>,
}

impl Settler {
    /// Starts the settlement task on the current tokio runtime; it ends
    /// when every `Settler` clone is dropped.
    pub fn spawn(store: Store, max_batch: usize) -> Settler {
        let (queue, mut jobs) = mpsc::unbounded_channel::<(LegEnd, Reply)>();
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while jobs.recv_many(&mut batch, max_batch).await > 0 {
                let (ends, replies): (Vec<LegEnd>, Vec<Reply>) = batch.drain(..).unzip();
                match store.settle_batch(&ends).await {
                    Ok(settled) => {
                        for (reply, s) in replies.into_iter().zip(settled) {
                            let _ = reply.send(Ok(s));
                        }
                    }
                    Err(e) => {
                        tracing::error!(legs = ends.len(), error = %e, "settlement batch failed");
                        let text = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(text.clone()));
                        }
                    }
                }
            }
        });
        Settler { queue }
    }

    /// Settles one leg (see [`Store::settle`]); `None` if it was already settled.
    pub async fn settle(&self, end: LegEnd) -> Result<Option<Settlement>, BillingError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((end, reply))
            .map_err(|_| BillingError::Settlement("the settlement task has stopped".into()))?;
        answer
            .await
            .map_err(|_| BillingError::Settlement("the settlement task has stopped".into()))?
            .map_err(BillingError::Settlement)
    }
}
