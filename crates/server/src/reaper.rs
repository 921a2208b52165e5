//! The lease reaper: returns expired leases to their queues (or fails items past their
//! attempt limit) and wakes long-polls on the queues that got items back.

use crate::state::AppState;
use liftoff_types::now_ms;
use std::time::Duration;

/// One pass. Returns how many items it requeued or failed.
pub async fn reap_once(state: &AppState) -> usize {
    match state.store.expire_leases(now_ms()).await {
        Ok(expired) => {
            for (_, queue) in &expired.requeued {
                state.wakers.wake(queue);
            }
            if !expired.requeued.is_empty() || !expired.failed.is_empty() {
                tracing::info!(
                    requeued = expired.requeued.len(),
                    failed = expired.failed.len(),
                    "expired leases"
                );
            }
            expired.requeued.len() + expired.failed.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "lease reaper pass failed");
            0
        }
    }
}

/// Runs [`reap_once`] every `every` until the task is dropped.
pub async fn run(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        reap_once(&state).await;
    }
}
