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
//!
//! When several servers share a store (PostgreSQL), each wake is also handed to the store to
//! publish, and what other servers publish comes back through [`Wakers::wake_local`]: a
//! long-poll on one replica is woken by an enqueue through another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::{mpsc, Notify};

#[derive(Default)]
pub struct Wakers {
    queues: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
    /// Where wakes go to be published to other servers, when the store is shared.
    remote: OnceLock<mpsc::UnboundedSender<String>>,
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

    /// Wakes every waiter registered on `key`, here and on other servers sharing the store.
    pub fn wake(&self, key: &str) {
        self.wake_local(key);
        if let Some(remote) = self.remote.get() {
            let _ = remote.send(key.to_string());
        }
    }

    /// Wakes the waiters of this server only; [`liftoff_store::WAKE_EVERYONE`] wakes all.
    pub fn wake_local(&self, key: &str) {
        let waiters: Vec<Weak<Notify>> = match self.queues.lock() {
            Ok(mut map) if key == liftoff_store::WAKE_EVERYONE => {
                map.drain().flat_map(|(_, list)| list).collect()
            }
            Ok(mut map) => map.remove(key).unwrap_or_default(),
            Err(_) => return,
        };
        for waiter in waiters.iter().filter_map(Weak::upgrade) {
            waiter.notify_one();
        }
    }

    /// Sends every later [`wake`](Self::wake) to `remote` as well (set once, at start).
    pub fn publish_to(&self, remote: mpsc::UnboundedSender<String>) {
        let _ = self.remote.set(remote);
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
