//! Watching a started run to its end while shipping its output and metrics: its state
//! reported as the backend changes it (`starting` with a reason, `running`), a stop asked
//! passed to the runner, the start timeout kept.

use super::end::report_end;
use crate::journal::Entry;
use crate::report::moved_on;
use crate::shipper::Shipper;
use crate::slots::StopWhy;
use crate::state::Agent;
use liftoff_runner::{Handle, RunStatus, Runner, RunnerError, RunnerResult};
use liftoff_types::{Phase, RunState, RunUpdate};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How the failure of a run that did not start in time begins (its retry cause).
const START_TIMEOUT: &str = "the run did not start within";

/// Grace given to runs when the agent stops them after its own grace period ran out.
pub(super) const AGENT_STOP_GRACE: Duration = Duration::from_secs(5);

/// Marks the first report sent when dropped, whichever way its future ends.
pub(super) struct SendOnDrop<'a>(&'a watch::Sender<bool>);

impl Drop for SendOnDrop<'_> {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// How long a local run must live before its `running` is reported on its own.
pub(super) const RUNNING_AFTER: Duration = Duration::from_millis(20);

/// A run's first state, to report beside its watch.
pub(super) struct RunningReport {
    pub(super) update: RunUpdate,
    pub(super) started_at_ms: liftoff_types::Millis,
}

/// What an end report adds for a run whose start was never reported: its handle and start.
pub(super) type Unreported = Option<(serde_json::Value, liftoff_types::Millis)>;

/// Watches a started run to its end while shipping its output, then reports the end.
pub(super) async fn watch_run(
    agent: &Arc<Agent>,
    runner: &Arc<dyn Runner>,
    mut entry: Entry,
    mut stop: watch::Receiver<StopWhy>,
    running_report: Option<RunningReport>,
    launched: Instant,
) {
    let Some(handle) = entry.handle.clone() else {
        return;
    };
    let (done, done_rx) = watch::channel(false);
    let shipper = Shipper {
        client: agent.client.clone(),
        run: entry.run_id.clone(),
        fence: entry.fence,
        path: agent.journal.run_dir(&entry.run_id).join("output.log"),
    };
    let from = entry.shipped;
    let metrics = crate::shipper::MetricsShipper {
        client: agent.client.clone(),
        run: entry.run_id.clone(),
        path: liftoff_runner::metrics_file(
            &agent.journal.run_dir(&entry.run_id),
            runner.capabilities().sandboxed,
        ),
    };
    // The watch, the shipping of both files and the first report are three futures of this
    // one task (a task, or a timer, more per run is a cost every short run pays).
    let metrics_done = done_rx.clone();
    let shipping = async move {
        let (shipped, ()) = tokio::join!(shipper.run(from, done_rx), metrics.run(metrics_done));
        shipped
    };
    let mut ended = done.subscribe();
    // Later state reports (`running` after `starting`) wait for the first to be sent, so
    // the server never hears them out of order.
    let (first_sent, first_sent_rx) = watch::channel(running_report.is_none());
    let first_report = async {
        let _sent_on_every_way_out = SendOnDrop(&first_sent);
        let report = running_report.as_ref()?;
        // A run that ends within a moment says it all in its end report (its start time and
        // handle go with it): one write to the server per short run instead of two. A
        // queueing backend's `starting` goes at once: it carries the job's id.
        if report.update.state == RunState::Running {
            tokio::select! {
                () = tokio::time::sleep(RUNNING_AFTER) => {}
                _ = ended.changed() => return Some((handle.data.clone(), report.started_at_ms)),
            }
        }
        let sent = agent
            .outbox
            .report(&entry.run_id, report.update.clone())
            .await;
        if sent.as_ref().is_err_and(moved_on) {
            agent.stop_item(entry.item_id, StopWhy::Asked);
        }
        None
    };
    // A run taken back after a restart may have been stopped by the agent before it: it
    // ends as that stop, even if it is found already ended.
    let mut stopped = entry.stopped;
    let watch = async {
        let status = tokio::select! {
            status = wait_started_then_ended(agent, runner, &entry, &handle, first_sent_rx) => status,
            why = asked_to_stop(&mut stop) => {
                stopped = Some(why);
                if entry.stopped != Some(why) {
                    // Before the signal: an agent gone before the end is reported leaves
                    // its successor the reason.
                    let mut marked = entry.clone();
                    marked.stopped = Some(why);
                    let _ = agent.journal.record(&marked);
                }
                let grace = match why {
                    StopWhy::Asked => Some(agent.config.stopped_run_timeout),
                    StopWhy::AgentStopping => Some(AGENT_STOP_GRACE),
                    // The supervisor stops it at the same moment: a second SIGTERM would
                    // reach a run busy with the first.
                    StopWhy::Lapsed if runner.capabilities().keeps_lease => None,
                    StopWhy::Lapsed => agent.lease.terms().map(|t| t.grace),
                    StopWhy::Now | StopWhy::No => Some(Duration::ZERO),
                };
                if let Some(grace) = grace {
                    if let Err(e) = runner.cancel(&handle, grace).await {
                        tracing::warn!(run = %entry.run_id, error = %e, "stopping the run failed");
                    }
                }
                runner.wait(&handle).await
            }
        };
        tracing::debug!(item = %entry.item_id, "exited");
        agent.process_ended(entry.item_id, launched.elapsed());
        let _ = done.send(true);
        status
    };
    let (status, shipped, mut unreported): (_, _, Unreported) =
        tokio::join!(watch, shipping, first_report);
    // A failure goes by its own call, which carries no start: report the start first.
    let goes_as_failure = match (&status, stopped) {
        (Ok(RunStatus::Exited(exit)), None) => !exit.success(),
        (Ok(RunStatus::Failed { .. }), None) | (Err(_), _) => true,
        _ => false,
    };
    if goes_as_failure {
        if let Some((data, at)) = unreported.take() {
            let running = RunUpdate {
                started_at_ms: Some(at),
                fence: entry.fence,
                state: RunState::Running,
                exit_code: None,
                message: None,
                handle: Some(data),
                not_started: false,
            };
            let _ = agent.outbox.report(&entry.run_id, running).await;
        }
    }
    // The journal keeps how much output the server has and why the run was stopped, for a
    // restart; unchanged, no write.
    if shipped != entry.shipped || stopped != entry.stopped {
        entry.shipped = shipped;
        entry.stopped = stopped;
        let _ = agent.journal.record(&entry);
    }
    let reported = match status {
        Ok(status) => report_end(agent, &entry, status, stopped, unreported).await,
        Err(e) => {
            let message = e.to_string();
            let cause = message
                .starts_with(START_TIMEOUT)
                .then_some(liftoff_types::RetryCause::StartTimeout);
            super::end::fail_run_for(agent, &entry, message, Phase::Run, None, cause).await;
            true
        }
    };
    if reported {
        if let Err(e) = runner.release(&handle).await {
            tracing::warn!(run = %entry.run_id, error = %e, "cleaning up after the run failed");
        }
    }
}

/// Waits for the run to end; a run still `starting` after the start timeout (a pending pod, a
/// Slurm job held in its queue) is cancelled and reported as not started. While it waits to
/// start, the backend's reason (`Resources`, `Priority`, ...) is reported as it changes, and
/// `running` once it runs.
pub(super) async fn wait_started_then_ended(
    agent: &Arc<Agent>,
    runner: &Arc<dyn Runner>,
    entry: &Entry,
    handle: &Handle,
    first_sent: watch::Receiver<bool>,
) -> RunnerResult<RunStatus> {
    let deadline = Instant::now() + agent.config.start_timeout;
    // What was last said about its start: a queueing backend's launch said `starting`.
    let mut shown: Option<Option<String>> = (!runner.capabilities().runs_at_launch).then_some(None);
    let report = |state: RunState, message: Option<String>| {
        let update = RunUpdate {
            started_at_ms: None,
            fence: entry.fence,
            state,
            exit_code: None,
            message,
            handle: None,
            not_started: false,
        };
        let (agent, run) = (agent.clone(), entry.run_id.clone());
        let mut first_sent = first_sent.clone();
        tokio::spawn(async move {
            let _ = first_sent.wait_for(|sent| *sent).await;
            let _ = agent.outbox.report(&run, update).await;
        });
    };
    loop {
        let status = match runner.status(std::slice::from_ref(handle)).await {
            Ok(status) => status,
            // A backend not answering for a moment does not end a run: ask again until the
            // start timeout.
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tracing::warn!(run = %entry.run_id, error = %e, "asking the run's state; again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match status.into_iter().next() {
            Some(RunStatus::Starting(reason))
                if shown.as_ref() != Some(&reason) && Instant::now() < deadline =>
            {
                report(RunState::Starting, reason.clone());
                shown = Some(reason);
            }
            Some(RunStatus::Starting(reason)) if Instant::now() >= deadline => {
                let _ = runner.cancel(handle, Duration::ZERO).await;
                let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
                return Err(RunnerError::Permanent(format!(
                    "{START_TIMEOUT} {:?}{why}",
                    agent.config.start_timeout
                )));
            }
            Some(RunStatus::Starting(_)) => tokio::time::sleep(runner.poll_every()).await,
            Some(RunStatus::Running) if shown.is_some() => {
                report(RunState::Running, None);
                return runner.wait(handle).await;
            }
            _ => return runner.wait(handle).await,
        }
    }
}

pub(super) async fn asked_to_stop(stop: &mut watch::Receiver<StopWhy>) -> StopWhy {
    loop {
        let why = *stop.borrow_and_update();
        if why != StopWhy::No {
            return why;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
