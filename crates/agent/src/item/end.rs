//! The end of an item: a run's end reported (finished, stopped, preempted, lost), or a
//! failure with its phase, message and attached files (the seed's `fail_run_queue_item`).

use super::watch::Unreported;
use crate::journal::Entry;
use crate::report::{moved_on, retry};
use crate::shipper::tail;
use crate::slots::StopWhy;
use crate::state::Agent;
use liftoff_runner::{Exit, RunStatus};
use liftoff_types::api::FailRequest;
use liftoff_types::{Attachment, ItemId, Phase, RunState, RunUpdate};
use std::sync::Arc;

/// Lines of output attached to a failure.
pub(crate) const TAIL_LINES: usize = 200;

/// Fails an acked item whose source or environment could not be made ready (phase
/// `build`), with the build's log attached and as the run's output (what `liftoff logs`
/// shows for it).
pub(super) async fn fail_build(agent: &Arc<Agent>, entry: &Entry, e: crate::source::NotReady) {
    if let Some(log) = e.log.as_ref().filter(|l| !l.is_empty()) {
        let bytes = log.as_bytes().to_vec();
        let _ = agent
            .client
            .append_log(&entry.run_id, entry.fence, 0, bytes)
            .await;
    }
    let files = e
        .log
        .map(|log| {
            vec![Attachment {
                name: "build.log".into(),
                content: log,
            }]
        })
        .unwrap_or_default();
    fail(
        agent,
        entry.item_id,
        entry.fence,
        e.message,
        Phase::Build,
        None,
        files,
    )
    .await;
    let _ = agent.journal.forget(&entry.run_id);
}

/// Reports a run's end; true once the server has it (or had moved on), so what the backend
/// keeps of the run may go.
pub(super) async fn report_end(
    agent: &Arc<Agent>,
    entry: &Entry,
    status: RunStatus,
    stopped: Option<StopWhy>,
    unreported: Unreported,
) -> bool {
    let (handle, started_at_ms) = unreported.unzip();
    let update = |state, exit: Option<Exit>, message: Option<String>| RunUpdate {
        started_at_ms,
        fence: entry.fence,
        state,
        exit_code: exit.map(|e| e.code),
        message,
        handle: handle.clone(),
        not_started: false,
    };
    let report = match (status, stopped) {
        // It ended by itself just as the lease lapsed: it finished.
        (RunStatus::Exited(exit), Some(StopWhy::Lapsed)) if exit.success() => {
            update(RunState::Finished, Some(exit), None)
        }
        (_, Some(StopWhy::Lapsed)) => update(RunState::Lost, None, Some(lapsed_message(agent))),
        (RunStatus::Exited(exit), Some(why)) => {
            let message = match why {
                StopWhy::Asked => "stopped on request".to_string(),
                _ => "stopped: the agent was stopping".to_string(),
            };
            update(RunState::Stopped, Some(exit), Some(message))
        }
        (RunStatus::Exited(exit), None) if exit.success() => {
            update(RunState::Finished, Some(exit), None)
        }
        (RunStatus::Exited(exit), None) => {
            let message = exit_message(&exit);
            fail_run(agent, entry, message, Phase::Run, Some(exit.code)).await;
            return true;
        }
        (RunStatus::Preempted(message), _) => update(RunState::Preempted, None, Some(message)),
        (RunStatus::Failed { message, exit }, None) => {
            fail_run(agent, entry, message, Phase::Run, exit.map(|e| e.code)).await;
            return true;
        }
        (RunStatus::NotStarted(message), None) => {
            fail_run(agent, entry, message, Phase::Build, None).await;
            return true;
        }
        (RunStatus::NotStarted(_), Some(_)) => update(
            RunState::Stopped,
            None,
            Some("stopped before it started".into()),
        ),
        (RunStatus::Failed { exit, .. }, Some(_)) => {
            update(RunState::Stopped, exit, Some("stopped on request".into()))
        }
        (_, _) => update(
            RunState::Lost,
            None,
            Some("the run's process ended without a recorded exit code".into()),
        ),
    };
    let finished = report.state == RunState::Finished;
    match agent.outbox.report(&entry.run_id, report).await {
        Ok(_) => {}
        Err(e) if moved_on(&e) => {
            tracing::info!(run = %entry.run_id, error = %e, "the server had moved on")
        }
        Err(e) => {
            // Keep the journal entry: the next start of the agent reports it.
            tracing::warn!(run = %entry.run_id, error = %e, "could not report the run's end");
            return false;
        }
    }
    let _ = agent.journal.forget(&entry.run_id);
    if finished {
        let dir = agent.journal.run_dir(&entry.run_id);
        let kept = agent.spares.give(&dir, entry.shipped);
        crate::cleanup::ended(agent, &dir, kept).await;
    }
    tracing::debug!(item = %entry.item_id, "reported");
    true
}

/// What a failed run's exit says.
pub(crate) fn exit_message(exit: &Exit) -> String {
    match exit.signal {
        Some(sig) => format!("the run was killed by signal {sig}"),
        None => format!("the run exited with code {}", exit.code),
    }
}

/// Why a run stopped when the agent's lease lapsed.
pub(super) fn lapsed_message(agent: &Agent) -> String {
    let timeout = agent.lease.terms().map_or(0, |t| t.timeout.as_secs());
    format!(
        "stopped: its agent had no answer from the server for {timeout}s (the agent timeout), \
         so that no second copy runs beside another agent's"
    )
}

/// Fails an acked item with the run's output tail attached.
pub(super) async fn fail_run(
    agent: &Arc<Agent>,
    entry: &Entry,
    message: String,
    phase: Phase,
    exit_code: Option<i32>,
) {
    fail_run_for(agent, entry, message, phase, exit_code, None).await
}

/// [`fail_run`], with the cause when the phase does not say it.
pub(super) async fn fail_run_for(
    agent: &Arc<Agent>,
    entry: &Entry,
    message: String,
    phase: Phase,
    exit_code: Option<i32>,
    cause: Option<liftoff_types::RetryCause>,
) {
    let output = agent.journal.run_dir(&entry.run_id).join("output.log");
    let files = vec![Attachment {
        name: "output-tail.log".into(),
        content: tail(&output, TAIL_LINES),
    }];
    fail_for(
        agent,
        entry.item_id,
        entry.fence,
        message,
        phase,
        exit_code,
        files,
        cause,
    )
    .await;
    let _ = agent.journal.forget(&entry.run_id);
}

/// Fails an item with nothing attached and no exit code (a refusal, not a run's end).
pub(crate) async fn fail_item(
    agent: &Arc<Agent>,
    item: ItemId,
    fence: i64,
    message: String,
    phase: Phase,
) {
    fail(agent, item, fence, message, phase, None, Vec::new()).await
}

/// The seed's `fail_run_queue_item`.
pub(crate) async fn fail(
    agent: &Arc<Agent>,
    item: ItemId,
    fence: i64,
    message: String,
    phase: Phase,
    exit_code: Option<i32>,
    files: Vec<Attachment>,
) {
    fail_for(agent, item, fence, message, phase, exit_code, files, None).await
}

/// [`fail`], saying why when the phase and exit code do not (a start timeout).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fail_for(
    agent: &Arc<Agent>,
    item: ItemId,
    fence: i64,
    message: String,
    phase: Phase,
    exit_code: Option<i32>,
    files: Vec<Attachment>,
    cause: Option<liftoff_types::RetryCause>,
) {
    let report = FailRequest {
        fence,
        message,
        phase,
        exit_code,
        files,
        cause,
    };
    if let Err(e) = retry("fail", || agent.client.fail(item, &report)).await {
        tracing::warn!(%item, error = %e, "could not fail the item");
    }
}
