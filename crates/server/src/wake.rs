//! Long-poll wake-ups, by key: a queue (a lease call waits for items), an agent (a heartbeat
//! waits for something to stop), a run (a log follower waits for output).
//!
//! A lease call that finds nothing registers a private `Notify` on each queue it asked for,
//! then sleeps; an enqueue (or an item coming back from an expired lease or a release) wakes
//! every waiter of that queue, which tries its lease again.
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
    /// Registers `waiter` on each key until the next wake of that key.
    pub fn register(&self, keys: &[String], waiter: &Arc<Notify>) {
        let Ok(mut map) = self.queues.lock() else {
            return;
        };
        for key in keys {
            let list = map.entry(key.clone()).or_default();
            // Waiters that timed out leave dead entries; drop them here so a queue that never
            // receives an item does not grow its list forever.
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(waiter));
        }
    }

    /// Wakes every waiter registered on `key`.
    pub fn wake(&self, key: &str) {
        let waiters = match self.queues.lock() {
            Ok(mut map) => map.remove(key).unwrap_or_default(),
            Err(_) => return,
        };
        for waiter in waiters.iter().filter_map(Weak::upgrade) {
            waiter.notify_one();
        }
    }

    /// How many live waiters a key has (for tests and the status endpoint).
    pub fn waiting(&self, key: &str) -> usize {
        self.queues
            .lock()
            .map(|map| {
                map.get(key)
                    .map_or(0, |l| l.iter().filter(|w| w.strong_count() > 0).count())
            })
            .unwrap_or(0)
    }
}

pub fn queue_key(name: &str) -> String {
    format!("queue:{name}")
}

pub fn agent_key(id: liftoff_types::AgentId) -> String {
    format!("agent:{id}")
}

pub fn run_key(id: &liftoff_types::RunId) -> String {
    format!("run:{id}")
}
