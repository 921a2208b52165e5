//! What the agent holds, item by item: being prepared (acked, directory being made), ready
//! (prepared, waiting for a free slot), running (a live process: what counts against
//! `max_jobs`), or reporting (the process ended; its end is on its way to the server).
//!
//! Why `ready` exists: when runs are short, the round trips to lease and ack the next item
//! would leave a slot idle between two runs. Then the agent takes a few items ahead, so a
//! slot that frees starts the next run at once. When runs are long it takes none ahead:
//! an item held here would wait while another agent sits idle.

use crate::agent::StopWhy;
use liftoff_types::ItemId;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Preparing,
    Ready,
    Running,
    Reporting,
}

/// Runs shorter than this (median of the last few) make the agent take items ahead.
const SHORT_RUN: Duration = Duration::from_secs(1);
const RECENT: usize = 8;
/// Most items taken ahead.
const MAX_AHEAD: i64 = 16;

pub struct Slots<R> {
    items: HashMap<ItemId, (Phase, watch::Sender<StopWhy>)>,
    ready: VecDeque<(ItemId, R)>,
    max_jobs: i64,
    recent: VecDeque<Duration>,
}

impl<R> Slots<R> {
    pub fn new(max_jobs: i64) -> Slots<R> {
        Slots {
            items: HashMap::new(),
            ready: VecDeque::new(),
            max_jobs,
            recent: VecDeque::new(),
        }
    }

    fn count(&self, phase: Phase) -> usize {
        self.items.values().filter(|(p, _)| *p == phase).count()
    }

    pub fn running(&self) -> usize {
        self.count(Phase::Running)
    }

    /// How many more items to lease now: free slots, plus room ahead when runs are short.
    pub fn wanted(&self) -> u32 {
        let cap = liftoff_types::api::MAX_LEASE_BATCH as i64;
        if self.max_jobs < 0 {
            return cap as u32;
        }
        let held = (self.items.len() - self.count(Phase::Reporting)) as i64;
        (self.max_jobs + self.ahead() - held).clamp(0, cap) as u32
    }

    /// Items to take ahead of free slots.
    fn ahead(&self) -> i64 {
        if self.recent.len() < RECENT / 2 {
            return 0;
        }
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort();
        if sorted[sorted.len() / 2] < SHORT_RUN {
            self.max_jobs.min(MAX_AHEAD)
        } else {
            0
        }
    }

    pub fn record_duration(&mut self, took: Duration) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
    }

    /// A new item, being prepared; returns how to tell it to stop.
    pub fn add(&mut self, item: ItemId, phase: Phase) -> watch::Receiver<StopWhy> {
        let (stop, rx) = watch::channel(StopWhy::No);
        self.items.insert(item, (phase, stop));
        rx
    }

    /// A prepared item: runs now if a slot is free (returned to the caller to start), else
    /// waits in the ready queue.
    pub fn place(&mut self, item: ItemId, ready: R) -> Option<R> {
        let free = self.max_jobs < 0 || (self.running() as i64) < self.max_jobs;
        let phase = if free { Phase::Running } else { Phase::Ready };
        if let Some(entry) = self.items.get_mut(&item) {
            entry.0 = phase;
        }
        if free {
            return Some(ready);
        }
        self.ready.push_back((item, ready));
        None
    }

    /// A process ended: its item moves to reporting, and the next ready item (if any) takes
    /// the slot and is returned to be started.
    pub fn process_ended(&mut self, item: ItemId) -> Option<(ItemId, R)> {
        if let Some(entry) = self.items.get_mut(&item) {
            entry.0 = Phase::Reporting;
        }
        let free = self.max_jobs < 0 || (self.running() as i64) < self.max_jobs;
        if !free {
            return None;
        }
        let (next, ready) = self.ready.pop_front()?;
        if let Some(entry) = self.items.get_mut(&next) {
            entry.0 = Phase::Running;
        }
        Some((next, ready))
    }

    /// Tells an item to stop. A ready item never started: it is taken out and returned.
    pub fn stop(&mut self, item: ItemId, why: StopWhy) -> Option<R> {
        if let Some(pos) = self.ready.iter().position(|(i, _)| *i == item) {
            return self.ready.remove(pos).map(|(_, r)| r);
        }
        if let Some((_, stop)) = self.items.get(&item) {
            let _ = stop.send(why);
        }
        None
    }

    /// Every ready item, taken out (the agent is stopping).
    pub fn drain_ready(&mut self) -> Vec<(ItemId, R)> {
        self.ready.drain(..).collect()
    }

    /// Tells every started item to stop.
    pub fn stop_all(&self, why: StopWhy) {
        for (_, stop) in self.items.values() {
            let _ = stop.send(why);
        }
    }

    pub fn remove(&mut self, item: ItemId) {
        self.items.remove(&item);
    }

    pub fn in_flight(&self) -> Vec<ItemId> {
        let mut ids: Vec<ItemId> = self.items.keys().copied().collect();
        ids.sort();
        ids
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn reporting(&self) -> usize {
        self.count(Phase::Reporting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_running_and_hand_over_to_ready_items() {
        let mut s: Slots<&str> = Slots::new(2);
        assert_eq!(s.wanted(), 2);
        for n in 1..=3 {
            let _ = s.add(ItemId(n), Phase::Preparing);
        }
        assert_eq!(s.place(ItemId(1), "a"), Some("a"));
        assert_eq!(s.place(ItemId(2), "b"), Some("b"));
        assert_eq!(s.place(ItemId(3), "c"), None, "no free slot: it waits");
        assert_eq!((s.running(), s.wanted()), (2, 0));
        assert_eq!(
            s.process_ended(ItemId(1)),
            Some((ItemId(3), "c")),
            "the slot goes on at once"
        );
        assert_eq!(s.running(), 2);
        assert_eq!(s.process_ended(ItemId(2)), None);
        assert_eq!(s.running(), 1);
        s.remove(ItemId(1));
        assert_eq!(s.in_flight(), vec![ItemId(2), ItemId(3)]);
    }

    #[test]
    fn items_are_taken_ahead_only_while_runs_are_short() {
        let mut s: Slots<()> = Slots::new(2);
        for _ in 0..8 {
            s.record_duration(Duration::from_millis(3));
        }
        assert_eq!(s.wanted(), 4);
        for _ in 0..8 {
            s.record_duration(Duration::from_secs(60));
        }
        assert_eq!(s.wanted(), 2);
    }

    #[test]
    fn a_stopped_ready_item_is_handed_back() {
        let mut s: Slots<&str> = Slots::new(1);
        let _ = s.add(ItemId(1), Phase::Preparing);
        let mut rx = s.add(ItemId(2), Phase::Preparing);
        assert!(s.place(ItemId(1), "a").is_some());
        assert!(s.place(ItemId(2), "b").is_none());
        assert_eq!(s.stop(ItemId(2), StopWhy::Asked), Some("b"));
        assert_eq!(s.stop(ItemId(1), StopWhy::Asked), None);
        assert_eq!(
            *rx.borrow_and_update(),
            StopWhy::No,
            "item 2 was not signalled: it never ran"
        );
    }
}
