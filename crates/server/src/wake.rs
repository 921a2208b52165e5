//! Long-poll wake-ups. A lease call that finds nothing registers a private `Notify` on each
//! queue it asked for, then sleeps; an enqueue (or an item coming back from an expired lease
//! or a release) wakes every waiter of that queue, which tries its lease again.
//!
//! Registration happens *before* the lease attempt and `notify_one` stores a permit when its
//! waiter is not yet sleeping, so an item that arrives between the attempt and the sleep
//! still wakes it: no lost wake-ups, and no polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Wakers {
    queues: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
}

impl Wakers {
    /// Registers `waiter` on each queue until the next wake of that queue.
    pub fn register(&self, queues: &[String], waiter: &Arc<Notify>) {
        let Ok(mut map) = self.queues.lock() else {
            return;
        };
        for queue in queues {
            let list = map.entry(queue.clone()).or_default();
            // Waiters that timed out leave dead entries; drop them here so a queue that never
            // receives an item does not grow its list forever.
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(waiter));
        }
    }

    /// Wakes every waiter registered on `queue`.
    pub fn wake(&self, queue: &str) {
        let waiters = match self.queues.lock() {
            Ok(mut map) => map.remove(queue).unwrap_or_default(),
            Err(_) => return,
        };
        for waiter in waiters.iter().filter_map(Weak::upgrade) {
            waiter.notify_one();
        }
    }

    /// How many live waiters a queue has (for tests and the status endpoint).
    pub fn waiting(&self, queue: &str) -> usize {
        self.queues
            .lock()
            .map(|map| {
                map.get(queue)
                    .map_or(0, |l| l.iter().filter(|w| w.strong_count() > 0).count())
            })
            .unwrap_or(0)
    }
}
