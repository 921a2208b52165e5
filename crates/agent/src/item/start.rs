//! Starting a prepared item on its runner (waiting in the runner's line for a slot), and
//! the report of an acked item that never started.

use super::end::fail_run;
use super::watch::{asked_to_stop, watch_run, RunningReport};
use crate::journal::Entry;
use crate::slots::{Phase as SlotPhase, StopWhy};
use crate::state::Agent;
use liftoff_runner::{RunSpec, Runner, RunnerError};
use liftoff_types::{Phase, RunState, RunUpdate};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Starts a prepared item on the runner (waiting in its line for a slot) and watches it to
/// its end. A stop that comes while it waits withdraws it, so it never starts.
pub(super) async fn start(
    agent: &Arc<Agent>,
    runner: &Arc<dyn Runner>,
    mut entry: Entry,
    spec: RunSpec,
    mut stop: watch::Receiver<StopWhy>,
) {
    let (fence, run_id, item) = (entry.fence, entry.run_id.clone(), entry.item_id);
    let why = *stop.borrow();
    if why == StopWhy::Lapsed {
        return never_started(agent, &entry, RunState::Lost, LAPSED_BEFORE_START).await;
    }
    if why != StopWhy::No {
        return never_started(
            agent,
            &entry,
            RunState::Stopped,
            "stopped before it started",
        )
        .await;
    }
    let launch = runner.launch(&spec);
    tokio::pin!(launch);
    let launched = tokio::select! {
        // The launch is polled first, so its request is on its way before any withdrawal.
        biased;
        launched = &mut launch => launched,
        why = asked_to_stop(&mut stop) => {
            // The launch keeps being polled while the withdrawal is asked: the withdrawal may
            // need what the launch holds (the local runner's connection, while the launch is
            // still starting the supervisor), and waiting on it alone hung such a stop.
            let withdraw = runner.withdraw(&run_id);
            tokio::pin!(withdraw);
            let mut done = None;
            let withdrawn = loop {
                tokio::select! {
                    launched = &mut launch, if done.is_none() => done = Some(launched),
                    withdrawn = &mut withdraw => break withdrawn.unwrap_or(false),
                }
            };
            if withdrawn {
                let (state, message) = match why {
                    StopWhy::Asked => (RunState::Stopped, "stopped before it started"),
                    StopWhy::Lapsed => (RunState::Lost, LAPSED_BEFORE_START),
                    _ => (RunState::Preempted, "the agent stopped before the run started"),
                };
                return never_started(agent, &entry, state, message).await;
            }
            // It started just before the stop: the watch below stops it.
            match done {
                Some(launched) => launched,
                None => launch.await,
            }
        }
    };
    let handle = match launched {
        Ok(h) => h,
        // The supervisor saw the lapse first (or refused a run this agent was withdrawing
        // for it): nothing ran, and the item is given back as never started.
        Err(RunnerError::LeaseLapsed(_)) => {
            return never_started(agent, &entry, RunState::Lost, LAPSED_BEFORE_START).await;
        }
        Err(e) => {
            let _ = std::fs::write(&spec.output, format!("liftoff: {e}\n"));
            return fail_run(agent, &entry, e.to_string(), Phase::Run, None).await;
        }
    };
    agent.mark(item, SlotPhase::Running);
    let started = Instant::now();
    tracing::debug!(item = %item, "launched");
    entry.handle = Some(handle.clone());
    if let Err(e) = agent.journal.record(&entry) {
        tracing::warn!(run = %run_id, error = %e, "cannot journal the run's handle");
    }
    // Reported beside the watch, not before it: a short run must not wait for this. A
    // local process runs from its launch; a backend that queues (Slurm) starts `starting`,
    // and the watch reports `running` when the backend says so.
    let first_state = if runner.capabilities().runs_at_launch {
        RunState::Running
    } else {
        RunState::Starting
    };
    let report = RunningReport {
        update: RunUpdate {
            started_at_ms: None,
            fence,
            state: first_state,
            exit_code: None,
            message: None,
            handle: Some(handle.data.clone()),
            not_started: false,
        },
        started_at_ms: liftoff_types::now_ms(),
    };
    watch_run(agent, runner, entry, stop, Some(report), started).await;
}

/// Why a run that never started was given back when the agent's lease lapsed.
const LAPSED_BEFORE_START: &str =
    "its agent had no answer from the server for the agent timeout before the run started";

/// Reports an acked item whose run never started (stopped, handed back as preempted, or
/// given back as lost and never started when the agent's lease lapsed).
pub(super) async fn never_started(
    agent: &Arc<Agent>,
    entry: &Entry,
    state: RunState,
    message: &str,
) {
    let update = RunUpdate {
        started_at_ms: None,
        fence: entry.fence,
        state,
        exit_code: None,
        message: Some(message.to_string()),
        handle: None,
        not_started: state == RunState::Lost,
    };
    let _ = agent.outbox.report(&entry.run_id, update).await;
    let _ = agent.journal.forget(&entry.run_id);
}
