//! What every handler shares: the store, the long-poll wakers and the token checker.

use crate::auth::Auth;
use crate::wake::Wakers;
use liftoff_store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// An agent not heard from for this long is declared lost.
    pub agent_timeout: std::time::Duration,
    /// How long a lost agent's started items wait before another agent may take them: the
    /// time its machine has to stop them (agents learn it, and stop runs within half of it).
    pub lost_grace: std::time::Duration,
    /// The store's own id, the same for every server of it (made by the first): agents name
    /// items across servers sharing a backend with it.
    pub store_id: String,
    /// When this server started: no agent is declared lost before it has been up for
    /// `agent_timeout` (while it was down, no agent could reach it).
    pub started: std::time::Instant,
    pub wakers: Arc<Wakers>,
    pub auth: Arc<Auth>,
    /// Uploaded code archives, by digest.
    pub artifacts: Option<Arc<dyn liftoff_artifacts::ArtifactStore>>,
    /// Largest archive one upload may carry, in bytes.
    pub artifact_limit: usize,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    /// An item may have gone back to its queue (a retry, a preemption): its queue's
    /// long-polls are woken when it may be leased (now, or after its backoff).
    pub fn item_back(&self, item: &liftoff_types::Item) {
        if item.state != liftoff_types::ItemState::Pending {
            return;
        }
        let key = crate::wake::queue_key(&item.queue);
        let wait = item
            .available_at_ms
            .map_or(0, |at| at - liftoff_types::now_ms());
        let kind = item.kind;
        if wait <= 0 {
            self.wakers.wake_one(&key, kind);
            return;
        }
        let wakers = self.wakers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
            wakers.wake_one(&key, kind);
        });
    }

    /// A run of `queue` ended or let go of its slot: when the queue caps its live runs, the
    /// lease calls waiting on it may now take one (an uncapped queue's waiters are not
    /// woken, as nothing changed for them).
    pub async fn run_slot_freed(&self, queue: &str) {
        if let Ok(q) = self.store.get_queue(queue, false).await {
            if q.max_concurrency.is_some() {
                self.wakers.wake(&crate::wake::queue_key(queue));
            }
        }
    }
}
