//! The reaper: returns expired leases to their queues (or fails items past their attempt
//! limit), declares silent agents lost (handing their work back), and wakes the long-polls
//! concerned.

use crate::state::AppState;
use crate::wake::{queue_key, run_key};
use liftoff_types::now_ms;
use std::time::Duration;

/// One pass: expired leases, then silent agents. Returns how many things it changed.
pub async fn reap_once(state: &AppState) -> usize {
    expire_leases(state).await + lose_agents(state).await
}

async fn expire_leases(state: &AppState) -> usize {
    match state.store.expire_leases(now_ms()).await {
        Ok(expired) => {
            for (_, queue) in &expired.requeued {
                state.wakers.wake(&queue_key(queue));
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

async fn lose_agents(state: &AppState) -> usize {
    if state.started.elapsed() < state.agent_timeout {
        // Agents could not beat while this server was down: they get a full timeout.
        return 0;
    }
    let now = now_ms();
    let cutoff = now - state.agent_timeout.as_millis() as i64;
    let hold_until = now + state.lost_grace.as_millis() as i64;
    match state.store.lose_agents(cutoff, now, hold_until).await {
        Ok(lost) => {
            if !lost.requeued.is_empty() {
                // Their items may be leased once the hold is over: the queues' long-polls
                // are woken then (a restart before it loses the wake, and the next poll,
                // at most a poll's wait later, takes them).
                let (state, queues) = (state.clone(), lost.requeued.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(state.lost_grace).await;
                    for queue in &queues {
                        state.wakers.wake(&queue_key(queue));
                    }
                });
            }
            for run in &lost.runs {
                state.wakers.wake(&run_key(run));
                if let Ok(run) = state.store.get_run(run).await {
                    state.metrics.run_lost(&run.queue, "agent_timeout");
                    state.run_slot_freed(&run.queue).await;
                }
            }
            for agent in &lost.agents {
                tracing::warn!(%agent, runs = lost.runs.len(), "agent lost: no heartbeat");
            }
            lost.agents.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "agent liveness pass failed");
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
        if reap_once(&state).await > 0 {
            state.wakers.changed();
        }
    }
}
