//! At start: the runs the journal holds are taken back (watched again, or reported with how
//! they ended while the agent was down), and the reconcile pass removes what the runners hold
//! under this agent's label that no run claims.

use super::watch::watch_run;
use crate::journal::Entry;
use crate::state::Agent;
use liftoff_runner::Handle;
use liftoff_types::{RunState, RunUpdate};
use std::sync::Arc;
use std::time::Instant;

/// Re-adopts the runs in the journal: still alive → watched again; ended while the agent
/// was down → reported with their real exit code; never started → reported lost.
pub(crate) async fn readopt(agent: &Arc<Agent>) {
    let entries = agent.journal.entries();
    // With nothing journaled, only backends that keep ended runs' leftovers are asked (an
    // idle local agent starts no supervisor for this).
    let owned = owned(agent, !entries.is_empty()).await;
    reconcile(agent, &entries, &owned).await;
    for mut entry in entries {
        if entry.handle.is_none() {
            entry.handle = owned.iter().find(|h| h.run_id == entry.run_id).cloned();
        }
        let runner = match &entry.handle {
            Some(h) => agent.runners.get(h.runner).cloned(),
            None => agent.runner_for(&entry.queue),
        };
        let Some(runner) = runner.filter(|_| entry.handle.is_some()) else {
            let lost = RunUpdate {
                started_at_ms: None,
                fence: entry.fence,
                state: RunState::Lost,
                exit_code: None,
                message: Some("the agent restarted before the run started".into()),
                handle: None,
                not_started: true,
            };
            let _ = agent.outbox.report(&entry.run_id, lost).await;
            let _ = agent.journal.forget(&entry.run_id);
            continue;
        };
        eprintln!(
            "agent {}: re-adopting run {} (item {})",
            agent.name(),
            entry.run_id,
            entry.item_id
        );
        let stop = agent.adopt_slot(entry.item_id, &entry.queue);
        if let Some(why) = entry.stopped {
            // Stopped before the restart: still alive, it is stopped again the same way.
            agent.stop_item(entry.item_id, why);
        }
        let me = agent.clone();
        tokio::spawn(async move {
            let item = entry.item_id;
            watch_run(&me, &runner, entry, stop, None, Instant::now()).await;
            me.finish_item(item);
        });
    }
}

/// What the runners hold under this agent's label: every runner's (`all`), or only those
/// that keep ended runs' leftovers.
async fn owned(agent: &Arc<Agent>, all: bool) -> Vec<Handle> {
    let mut owned = Vec::new();
    let to_ask = agent
        .runners
        .iter()
        .filter(|r| all || r.capabilities().keeps_ended);
    for runner in to_ask {
        match runner.owned().await {
            Ok(found) => owned.extend(found),
            Err(e) => {
                tracing::warn!(runner = %runner.resource(), error = %e, "listing what the runner has")
            }
        }
    }
    owned
}

/// The reconcile pass while the agent runs, every few minutes: leftovers of runs whose
/// clean-up failed (the engine away at that moment) go. A run in flight always has its
/// journal entry (written before the ack, removed after its end is reported), so it is never
/// taken for a leftover.
pub(crate) async fn reconcile_every(agent: Arc<Agent>, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        let owned = owned(&agent, false).await;
        reconcile(&agent, &agent.journal.entries(), &owned).await;
    }
}

/// The reconcile pass (buildomat's): what a runner has under this agent's label that no run
/// in the journal claims is left from a run whose end the server already has (its clean-up
/// cut short), or from one never acked: it goes.
pub(super) async fn reconcile(agent: &Arc<Agent>, entries: &[Entry], owned: &[Handle]) {
    for handle in owned {
        if entries.iter().any(|e| e.run_id == handle.run_id) {
            continue;
        }
        let Some(runner) = agent.runners.get(handle.runner) else {
            continue;
        };
        tracing::info!(run = %handle.run_id, runner = %handle.runner, "removing what no run of this agent claims");
        if let Err(e) = runner.release(handle).await {
            tracing::warn!(run = %handle.run_id, error = %e, "removing a leftover failed");
        }
    }
}
