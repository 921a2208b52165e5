//! One item's life on this agent (the seed's `run_job` and `task_run_job`): ack, prepare the
//! run (its directory and environment, made in [`crate::run`]), start it on the runner, watch it while shipping its
//! output, and report its end. Also the re-adoption of runs found in the journal at start.
//!
//! Crash windows, in order: the journal entry is written before the ack, so a restarted
//! agent knows the run id it may have started; the handle is journaled right after the
//! start; the entry is removed only once the end has reached the server. A restarted agent
//! asks the runner for a run it has no handle for, so nothing is started twice.

use crate::agent::{Agent, StopWhy};
use crate::journal::Entry;
use crate::report::{moved_on, retry};
use crate::run::{command, prepare, run_id_for};
use crate::shipper::{tail, Shipper};
use crate::slots::Phase as SlotPhase;
use liftoff_runner::{
    BuildRequest, Exit, Handle, RunSpec, RunStatus, Runner, RunnerError, RunnerResult,
};
use liftoff_types::api::{AckRequest, FailRequest};
use liftoff_types::job::{JobKind, JobRef};
use liftoff_types::{
    Attachment, Item, ItemId, ItemKind, JobVersion, Lease, Phase, RunState, RunUpdate, SweepState,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Lines of output attached to a failure.
const TAIL_LINES: usize = 200;
/// Grace given to runs when the agent stops them after its own grace period ran out.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(5);

/// Takes a leased item and sees it through: ack, prepare, start (the runner may hold it in
/// line until a slot frees), watch, report. Returns when the item is done with.
pub(crate) async fn take_item(agent: &Arc<Agent>, lease: Lease, stop: watch::Receiver<StopWhy>) {
    let item = &lease.item;
    let fence = lease.fence;
    if agent.is_stopping() {
        // Leased as the stop came in: give it back, no attempt counted.
        let _ = agent.client.release(item.id, fence).await;
        return;
    }
    if item.kind == ItemKind::Scheduler {
        return crate::scheduler::run(agent, &lease, stop).await;
    }
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

/// The run's source and what it runs in: a job's source unpacked into the run's `work/`,
/// then a Python environment for it (local runs) or an image built from it (runners that
/// run images); an image job's or an inline spec's image as it is.
async fn source_ready(
    agent: &Agent,
    runner: &Arc<dyn Runner>,
    item: &Item,
    job: Option<&JobVersion>,
    run_id: &liftoff_types::RunId,
) -> Result<(Option<std::path::PathBuf>, Option<String>), crate::source::NotReady> {
    let inline_image = item
        .spec
        .docker
        .as_ref()
        .and_then(|d| d.docker_image.clone());
    let Some(job) = job else {
        return Ok((None, inline_image));
    };
    if job.spec.kind == JobKind::Image {
        return Ok((None, job.spec.source.image.clone()));
    }
    let work = agent.journal.run_dir(run_id).join("work");
    agent.cache.checkout(&agent.client, job, &work).await?;
    if !runner.capabilities().images {
        return Ok((agent.cache.python_env(&work).await?, None));
    }
    let request = BuildRequest {
        job: job.name.clone(),
        source: work,
    };
    match runner.build(&request).await {
        Ok(built) => {
            tracing::info!(image = %built.image, built = built.built, "the job's image is ready");
            Ok((None, Some(built.image)))
        }
        Err(e) => Err(crate::source::NotReady {
            message: e.message,
            log: Some(e.log),
        }),
    }
}

/// Why an item is not acked.
enum NotNow {
    /// Its sweep is paused: back to its queue, no attempt counted (it waits there unleased).
    Release,
    /// It cannot run here: it fails with phase `agent` and this message.
    Refuse(String),
}

/// What is settled before the ack: the sweep lets the run start, the job's version, the
/// command, and the journal entry that makes the item this agent's across a crash.
async fn before_ack(
    agent: &Agent,
    runner: &Arc<dyn Runner>,
    item: &Item,
    fence: i64,
) -> Result<(Option<JobVersion>, Vec<String>, Entry), NotNow> {
    if let Some(sweep) = &item.spec.sweep_id {
        check_sweep_state(agent, sweep).await?;
    }
    let job = match &item.spec.job {
        Some(reference) => Some(
            job_version(agent, runner, reference)
                .await
                .map_err(NotNow::Refuse)?,
        ),
        None => None,
    };
    let inline_image = item
        .spec
        .docker
        .as_ref()
        .is_some_and(|d| d.docker_image.is_some());
    if inline_image && job.is_none() && !runner.capabilities().images {
        return Err(NotNow::Refuse(format!(
            "the launch spec runs an image, and queue {} runs {}, which runs no images",
            item.queue,
            runner.resource()
        )));
    }
    let (argv, entry) = own(agent, item, job.as_ref(), fence).map_err(NotNow::Refuse)?;
    Ok((job, argv, entry))
}

/// The seed's `check_sweep_state`: a sweep's run starts only while its sweep is `running`.
async fn check_sweep_state(agent: &Agent, sweep: &str) -> Result<(), NotNow> {
    match retry("checking the sweep", || agent.client.sweep_state(sweep)).await {
        Ok(s) => match s.state {
            SweepState::Running => Ok(()),
            SweepState::Paused | SweepState::Pending => Err(NotNow::Release),
            ended => Err(NotNow::Refuse(format!(
                "sweep {sweep} is {ended}: its runs no longer start"
            ))),
        },
        Err(e) if moved_on(&e) => Err(NotNow::Refuse(format!("sweep {sweep}: {e}"))),
        Err(_) => Err(NotNow::Release),
    }
}

/// Starts a prepared item on the runner (waiting in its line for a slot) and watches it to
/// its end. A stop that comes while it waits withdraws it, so it never starts.
async fn start(
    agent: &Arc<Agent>,
    runner: &Arc<dyn Runner>,
    mut entry: Entry,
    spec: RunSpec,
    mut stop: watch::Receiver<StopWhy>,
) {
    let (fence, run_id, item) = (entry.fence, entry.run_id.clone(), entry.item_id);
    if *stop.borrow() != StopWhy::No {
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
            if runner.withdraw(&run_id).await.unwrap_or(false) {
                let (state, message) = match why {
                    StopWhy::Asked => (RunState::Stopped, "stopped before it started"),
                    _ => (RunState::Preempted, "the agent stopped before the run started"),
                };
                return never_started(agent, &entry, state, message).await;
            }
            // It started just before the stop: the watch below stops it.
            launch.await
        }
    };
    let handle = match launched {
        Ok(h) => h,
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
        },
        started_at_ms: liftoff_types::now_ms(),
    };
    watch_run(agent, runner, entry, stop, Some(report), started).await;
}

/// Marks the first report sent when dropped, whichever way its future ends.
struct SendOnDrop<'a>(&'a watch::Sender<bool>);

impl Drop for SendOnDrop<'_> {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// How long a local run must live before its `running` is reported on its own.
const RUNNING_AFTER: Duration = Duration::from_millis(20);

/// A run's first state, to report beside its watch.
struct RunningReport {
    update: RunUpdate,
    started_at_ms: liftoff_types::Millis,
}

/// What an end report adds for a run whose start was never reported: its handle and start.
type Unreported = Option<(serde_json::Value, liftoff_types::Millis)>;

/// Reports an acked item whose run never started (stopped, or handed back as preempted).
async fn never_started(agent: &Arc<Agent>, entry: &Entry, state: RunState, message: &str) {
    let update = RunUpdate {
        started_at_ms: None,
        fence: entry.fence,
        state,
        exit_code: None,
        message: Some(message.to_string()),
        handle: None,
    };
    let _ = agent.outbox.report(&entry.run_id, update).await;
    let _ = agent.journal.forget(&entry.run_id);
}

/// The job version a spec names (the server pinned it to `name:vN` at enqueue).
async fn job_version(
    agent: &Agent,
    runner: &Arc<dyn Runner>,
    reference: &str,
) -> Result<JobVersion, String> {
    let r: JobRef = reference.parse()?;
    let version = r.version.map_or("latest".to_string(), |v| format!("v{v}"));
    let job = retry("reading the job", || {
        agent.client.job_version(&r.name, &version)
    })
    .await
    .map_err(|e| format!("job {reference}: {e}"))?;
    if job.spec.kind == JobKind::Image && !runner.capabilities().images {
        return Err(format!(
            "job {reference} runs the image {}, and the {} runner runs no images",
            job.spec.source.image.as_deref().unwrap_or("?"),
            runner.resource()
        ));
    }
    Ok(job)
}

/// Fails an acked item whose source or environment could not be made ready (phase
/// `build`), with the build's log attached and as the run's output (what `liftoff logs`
/// shows for it).
async fn fail_build(agent: &Arc<Agent>, entry: &Entry, e: crate::source::NotReady) {
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

/// What the agent needs before it acks: the command, a run id, and the journal entry that
/// makes the item this agent's across a crash.
fn own(
    agent: &Agent,
    item: &Item,
    job: Option<&JobVersion>,
    fence: i64,
) -> Result<(Vec<String>, Entry), String> {
    if agent.config.secure_mode && job.is_some() && item.spec.overrides.entry_point.is_some() {
        return Err(
            "secure_mode: this agent runs jobs' own entrypoints only (overrides.entry_point refused)"
                .into(),
        );
    }
    let argv = command(&item.spec, job)?;
    let entry = Entry {
        item_id: item.id,
        fence,
        run_id: run_id_for(item)?,
        queue: item.queue.clone(),
        handle: None,
        shipped: 0,
    };
    agent
        .journal
        .record(&entry)
        .map_err(|e| format!("the agent cannot write its journal: {e}"))?;
    Ok((argv, entry))
}

/// Watches a started run to its end while shipping its output, then reports the end.
async fn watch_run(
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
    let mut stopped = None;
    let watch = async {
        let status = tokio::select! {
            status = wait_started_then_ended(agent, runner, &entry, &handle, first_sent_rx) => status,
            why = asked_to_stop(&mut stop) => {
                stopped = Some(why);
                let grace = match why {
                    StopWhy::Asked => agent.config.stopped_run_timeout,
                    StopWhy::AgentStopping => AGENT_STOP_GRACE,
                    StopWhy::Now | StopWhy::No => Duration::ZERO,
                };
                if let Err(e) = runner.cancel(&handle, grace).await {
                    tracing::warn!(run = %entry.run_id, error = %e, "stopping the run failed");
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
            };
            let _ = agent.outbox.report(&entry.run_id, running).await;
        }
    }
    // The journal keeps how much output the server has, for a restart; unchanged, no write.
    if shipped != entry.shipped {
        entry.shipped = shipped;
        let _ = agent.journal.record(&entry);
    }
    let reported = match status {
        Ok(status) => report_end(agent, &entry, status, stopped, unreported).await,
        Err(e) => {
            fail_run(agent, &entry, e.to_string(), Phase::Run, None).await;
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
async fn wait_started_then_ended(
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
                    "the run did not start within {:?}{why}",
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

async fn asked_to_stop(stop: &mut watch::Receiver<StopWhy>) -> StopWhy {
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

/// Reports a run's end; true once the server has it (or had moved on), so what the backend
/// keeps of the run may go.
async fn report_end(
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
    };
    let report = match (status, stopped) {
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
            let message = match exit.signal {
                Some(sig) => format!("the run was killed by signal {sig}"),
                None => format!("the run exited with code {}", exit.code),
            };
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
        agent
            .spares
            .give(&agent.journal.run_dir(&entry.run_id), entry.shipped);
    }
    tracing::debug!(item = %entry.item_id, "reported");
    true
}

/// Fails an acked item with the run's output tail attached.
async fn fail_run(
    agent: &Arc<Agent>,
    entry: &Entry,
    message: String,
    phase: Phase,
    exit_code: Option<i32>,
) {
    let output = agent.journal.run_dir(&entry.run_id).join("output.log");
    let files = vec![Attachment {
        name: "output-tail.log".into(),
        content: tail(&output, TAIL_LINES),
    }];
    fail(
        agent,
        entry.item_id,
        entry.fence,
        message,
        phase,
        exit_code,
        files,
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
    let report = FailRequest {
        fence,
        message,
        phase,
        exit_code,
        files,
    };
    if let Err(e) = retry("fail", || agent.client.fail(item, &report)).await {
        tracing::warn!(%item, error = %e, "could not fail the item");
    }
}

/// Re-adopts the runs in the journal: still alive → watched again; ended while the agent
/// was down → reported with their real exit code; never started → reported lost.
pub(crate) async fn readopt(agent: &Arc<Agent>) {
    let entries = agent.journal.entries();
    let mut owned = Vec::new();
    // With nothing journaled, only backends that keep ended runs' leftovers are asked (an
    // idle local agent starts no supervisor for this).
    let to_ask = agent
        .runners
        .iter()
        .filter(|r| !entries.is_empty() || r.capabilities().keeps_ended);
    for runner in to_ask {
        match runner.owned().await {
            Ok(found) => owned.extend(found),
            Err(e) => {
                tracing::warn!(runner = %runner.resource(), error = %e, "listing what the runner has")
            }
        }
    }
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
        let me = agent.clone();
        tokio::spawn(async move {
            let item = entry.item_id;
            watch_run(&me, &runner, entry, stop, None, Instant::now()).await;
            me.finish_item(item);
        });
    }
}

/// The reconcile pass (buildomat's): what a runner has under this agent's label that no run
/// in the journal claims is left from a run whose end the server already has (its clean-up
/// cut short), or from one never acked: it goes.
async fn reconcile(agent: &Arc<Agent>, entries: &[Entry], owned: &[Handle]) {
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
