//! One item's life on this agent (the seed's `run_job` and `task_run_job`), one step per
//! module, each depending only on the steps after it: [`ack`] settles what is needed before
//! the ack (sweep state, job version, command, journal entry); [`prepare`] makes the source
//! and what it runs in (a Python environment, or an image built by the runner) and the run's
//! directory and environment; [`start`] starts it on its queue's runner; [`watch`] follows it
//! to its end while shipping its output; [`end`] reports the end or the failure. [`readopt`]
//! takes back, at start, the runs the journal holds.
//!
//! Crash windows, in order: the journal entry is written before the ack, so a restarted
//! agent knows the run id it may have started; the handle is journaled right after the
//! start; the entry is removed only once the end has reached the server. A restarted agent
//! asks the runner for a run it has no handle for, so nothing is started twice.

mod ack;
mod end;
pub(crate) mod prepare;
mod readopt;
mod start;
mod watch;

pub(crate) use end::{exit_message, fail_item, TAIL_LINES};
pub(crate) use readopt::{readopt, reconcile_every};

use crate::slots::{Phase as SlotPhase, StopWhy};
use crate::state::Agent;
use ack::{before_ack, NotNow};
use end::{fail_build, fail_run};
use liftoff_types::api::AckRequest;
use liftoff_types::{Lease, Phase, RunState};
use prepare::{prepare, source_ready};
use start::{never_started, start};
use std::sync::Arc;
use tokio::sync::watch as channel;

/// Takes a leased item and sees it through: ack, prepare, start (the runner may hold it in
/// line until a slot frees), watch, report. Returns when the item is done with.
pub(crate) async fn take_item(agent: &Arc<Agent>, lease: Lease, stop: channel::Receiver<StopWhy>) {
    let item = &lease.item;
    let fence = lease.fence;
    let Some(runner) = agent.runner_for(&item.queue) else {
        let message = format!("this agent has no runner for queue {}", item.queue);
        return fail_item(agent, item.id, fence, message, Phase::Agent).await;
    };
    let (job, argv, entry) = match before_ack(agent, &runner, item, fence).await {
        Ok(ready) => ready,
        Err(NotNow::Release) => {
            let _ = agent.client.release(item.id, fence).await;
            return;
        }
        Err(NotNow::Refuse(message)) => {
            return fail_item(agent, item.id, fence, message, Phase::Agent).await
        }
    };
    let run_id = entry.run_id.clone();
    let ack = AckRequest {
        fence,
        run_id: run_id.clone(),
        handle: serde_json::json!({}),
        state: Some(RunState::Starting),
    };
    let run_token = match agent.outbox.ack(item.id, ack).await {
        Ok(a) => a.run_token,
        Err(e) => {
            tracing::warn!(item = %item.id, error = %e, "ack refused; dropping the item");
            let _ = agent.journal.forget(&run_id);
            return;
        }
    };
    let (python, image) = match source_ready(agent, &runner, item, job.as_ref(), &run_id).await {
        Ok(ready) => ready,
        Err(e) if crate::disk::says_full(&e.message) => {
            return disk_full(agent, &entry, &e.message).await
        }
        Err(e) => return fail_build(agent, &entry, e).await,
    };
    let sandboxed = runner.capabilities().sandboxed;
    let prepared = prepare(
        agent,
        item,
        &run_id,
        &run_token,
        argv,
        python.as_deref(),
        sandboxed,
    );
    let mut spec = match prepared.await {
        Ok(spec) => spec,
        Err(message) if crate::disk::says_full(&message) => {
            return disk_full(agent, &entry, &message).await
        }
        Err(message) => return fail_run(agent, &entry, message, Phase::Agent, None).await,
    };
    spec.image = image;
    if agent.is_stopping() {
        let message = "the agent stopped before the run started";
        return never_started(agent, &entry, RunState::Preempted, message).await;
    }
    agent.mark(item.id, SlotPhase::Ready);
    start(agent, &runner, entry, spec, stop).await;
}

/// A run that could not be made ready for want of space in the agent's state directory: not
/// the run's fault, so it goes back to its queue without an attempt, and the agent takes no
/// work until space returns.
async fn disk_full(agent: &Arc<Agent>, entry: &crate::journal::Entry, message: &str) {
    agent.disk.note_full();
    let _ = std::fs::remove_dir_all(agent.journal.run_dir(&entry.run_id));
    let message = format!("the agent's disk is full, the run never started: {message}");
    never_started(agent, entry, RunState::Lost, &message).await;
}
