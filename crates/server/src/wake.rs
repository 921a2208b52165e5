//! Long-poll wake-ups, by key: a queue (a lease call waits for items), an agent (a heartbeat
//! waits for something to stop), a run (a log follower waits for output).
//!
//! A lease call that finds nothing registers a [`LeaseWaiter`] on each queue it asked for,
//! then sleeps. One item enqueued (or back from a retry) wakes **one** waiter that can take
//! its kind ([`Wakers::wake_one`], longest waiting first), not every waiter of the queue:
//! with a thousand agents polling, waking all of them cost a thousand lease queries per item
//! (on PostgreSQL, a burst that held each dispatch behind the others). Events that may free
//! several items or change who may take them (an expired lease, a sweep resumed, a capped
//! queue's slot freed) still wake every waiter ([`Wakers::wake`]).
//!
//! A wake is never lost: a waiter woken *before or during* a lease attempt that then returns
//! with items (perhaps from another of its queues), with an error, or at its deadline, passes
//! the wake on to the next waiter (at most one more attempt per wake). A woken waiter whose
//! attempt finds nothing keeps it: the item was taken by another call, or nobody may take it
//! now (a capped queue), and whatever changes that wakes the queue again.
//!
//! Registration happens *before* the lease attempt and `notify_one` stores a permit when its
//! waiter is not yet sleeping, so an item that arrives between the attempt and the sleep
//! still wakes it: no polling.
//!
//! When several servers share a store (PostgreSQL), each wake is also handed to the store to
//! publish, and what other servers publish comes back through [`Wakers::wake_local`]: a
//! long-poll on one replica is woken by an enqueue through another.
//!
//! Beside the keyed wakes, [`Wakers::changed`] counts every change anyone may want to see
//! (the dashboard's live pages wait on [`Wakers::changes`]): a write through the API, a wake
//! from another server, a pass of the reaper that changed something.

use liftoff_types::ItemKind;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::{mpsc, Notify};

/// A lease call waiting for items, with the kinds it may take.
pub struct LeaseWaiter {
    pub notify: Notify,
    pub runs: bool,
    pub schedulers: bool,
    /// The wakes delivered to it and not yet covered by a lease attempt.
    woken: Mutex<Vec<(String, ItemKind)>>,
}

impl LeaseWaiter {
    pub fn new(runs: bool, schedulers: bool) -> LeaseWaiter {
        LeaseWaiter {
            notify: Notify::new(),
            runs,
            schedulers,
            woken: Mutex::new(Vec::new()),
        }
    }

    fn takes(&self, kind: ItemKind) -> bool {
        match kind {
            ItemKind::Scheduler => self.schedulers,
            _ => self.runs,
        }
    }

    /// The wakes it was given since the last call.
    pub fn take_wakes(&self) -> Vec<(String, ItemKind)> {
        self.woken
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}

/// Separates a key from the kind of a one-waiter wake when it goes to other servers.
const ONE: char = '\u{1}';

#[derive(Default)]
pub struct Wakers {
    changes: tokio::sync::watch::Sender<u64>,
    queues: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
    lease_waiters: Mutex<HashMap<String, VecDeque<Weak<LeaseWaiter>>>>,
    /// Where wakes go to be published to other servers, when the store is shared.
    remote: OnceLock<mpsc::UnboundedSender<String>>,
}

impl Wakers {
    /// Something changed that a page may show.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Hears of every [`changed`](Self::changed).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

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

    /// Registers a lease call on each queue key until it is woken.
    pub fn register_lease(&self, keys: &[String], waiter: &Arc<LeaseWaiter>) {
        let Ok(mut map) = self.lease_waiters.lock() else {
            return;
        };
        for key in keys {
            let list = map.entry(key.clone()).or_default();
            list.retain(|w| w.strong_count() > 0);
            // Once per key: a waiter woken by nothing re-registers on every loop.
            if !list
                .iter()
                .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(waiter)))
            {
                list.push_back(Arc::downgrade(waiter));
            }
        }
    }

    /// Wakes one lease call on `key` that may take an item of `kind`, here and on each other
    /// server sharing the store (one per server).
    pub fn wake_one(&self, key: &str, kind: ItemKind) {
        self.wake_one_local(key, kind);
        if let Some(remote) = self.remote.get() {
            let _ = remote.send(format!("{key}{ONE}{kind}"));
        }
    }

    fn wake_one_local(&self, key: &str, kind: ItemKind) {
        let chosen = {
            let Ok(mut map) = self.lease_waiters.lock() else {
                return;
            };
            let Some(list) = map.get_mut(key) else {
                return;
            };
            list.retain(|w| w.strong_count() > 0);
            let at = list
                .iter()
                .position(|w| w.upgrade().is_some_and(|w| w.takes(kind)));
            at.and_then(|i| list.remove(i)).and_then(|w| w.upgrade())
        };
        if let Some(waiter) = chosen {
            if let Ok(mut woken) = waiter.woken.lock() {
                woken.push((key.to_string(), kind));
            }
            waiter.notify.notify_one();
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
        self.changed();
        if let Some((key, kind)) = key.split_once(ONE) {
            if let Ok(kind) = kind.parse() {
                self.wake_one_local(key, kind);
            }
            return;
        }
        let leases: Vec<Weak<LeaseWaiter>> = match self.lease_waiters.lock() {
            Ok(mut map) if key == liftoff_store::WAKE_EVERYONE => {
                map.drain().flat_map(|(_, list)| list).collect()
            }
            Ok(mut map) => map.remove(key).unwrap_or_default().into(),
            Err(_) => Vec::new(),
        };
        for waiter in leases.iter().filter_map(Weak::upgrade) {
            waiter.notify.notify_one();
        }
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
        let plain = self
            .queues
            .lock()
            .map(|map| {
                map.get(key)
                    .map_or(0, |l| l.iter().filter(|w| w.strong_count() > 0).count())
            })
            .unwrap_or(0);
        let leases = self
            .lease_waiters
            .lock()
            .map(|map| {
                map.get(key)
                    .map_or(0, |l| l.iter().filter(|w| w.strong_count() > 0).count())
            })
            .unwrap_or(0);
        plain + leases
    }
}

/// Passes on, when dropped, the wakes a lease call was given but did not use for the item
/// they were for: taken with items in hand, at its deadline, or with an error.
pub struct PassOn<'a> {
    pub wakers: &'a Wakers,
    pub waiter: &'a LeaseWaiter,
    /// Wakes covered by the attempt in flight.
    pub owed: Vec<(String, ItemKind)>,
}

impl PassOn<'_> {
    /// Takes the wakes given so far into the attempt about to start.
    pub fn cover(&mut self) {
        self.owed.extend(self.waiter.take_wakes());
    }

    /// The attempt found nothing after its wakes: they were spent (see the module's doc).
    pub fn spent(&mut self) {
        self.owed.clear();
    }

    /// Items taken: each uses the wake of its queue and kind, if one is owed.
    pub fn used(&mut self, queue: &str, kind: ItemKind) {
        let key = queue_key(queue);
        if let Some(i) = self.owed.iter().position(|(k, w)| *k == key && *w == kind) {
            self.owed.swap_remove(i);
        }
    }
}

impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        self.owed.extend(self.waiter.take_wakes());
        for (key, kind) in self.owed.drain(..) {
            self.wakers.wake_one(&key, kind);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_item_wakes_one_waiter_that_can_take_it_and_an_unused_wake_moves_on() {
        let wakers = Wakers::default();
        let key = queue_key("q");
        let schedulers_only = Arc::new(LeaseWaiter::new(false, true));
        let first = Arc::new(LeaseWaiter::new(true, false));
        let second = Arc::new(LeaseWaiter::new(true, false));
        for w in [&schedulers_only, &first, &second] {
            wakers.register_lease(std::slice::from_ref(&key), w);
        }
        wakers.wake_one(&key, ItemKind::Run);
        let woke = |w: &LeaseWaiter| {
            let n = w.notify.notified();
            futures_ready(n)
        };
        assert!(!woke(&schedulers_only), "cannot take a run");
        assert!(woke(&first), "the longest waiting that can");
        assert!(!woke(&second), "one item, one wake");
        // `first` takes an item of another queue: the run's wake goes on to `second`.
        let mut pass = PassOn {
            wakers: &wakers,
            waiter: &first,
            owed: Vec::new(),
        };
        pass.cover();
        pass.used("other", ItemKind::Run);
        drop(pass);
        assert!(woke(&second));
    }

    /// Whether a `notified()` is ready at once (a stored permit).
    fn futures_ready(fut: tokio::sync::futures::Notified<'_>) -> bool {
        let mut fut = std::pin::pin!(fut);
        let waker = futures_util::task::noop_waker_ref();
        let mut cx = std::task::Context::from_waker(waker);
        std::future::Future::poll(fut.as_mut(), &mut cx).is_ready()
    }
}
