//! A sweep's scheduler, run by an agent as a task (an item of kind `scheduler`, counted
//! against `max_schedulers`).
//!
//! It keeps no state of its own: each round it reads the sweep and its runs from the server
//! and decides from them alone (the proposal for run number `n` is seeded by the sweep id and
//! `n`), so when its agent dies the item goes back to its queue and any agent carries on
//! where it stopped. The server enqueues each run index once and refuses indexes past
//! `run_cap`, so even two schedulers racing could not double a run or pass the cap.
//!
//! A round: the sweep `pending` → make it `running`; `paused` → wait; ended → done. Then
//! hyperband cuts (stopped through the normal stop path, the reason recorded on the run);
//! then, while fewer runs than the sweep's concurrency are live and the cap, the grid or the
//! metric's target are not reached, propose and enqueue the next run. When nothing is left
//! to propose and no run is live, the sweep is `finished`.

use crate::journal::Entry;
use crate::report::moved_on;
use crate::slots::StopWhy;
use crate::state::Agent;
use liftoff_client::ClientError;
use liftoff_sweep::command::{self, Context};
use liftoff_sweep::config::Method;
use liftoff_sweep::{propose, Observation, SweepConfig};
use liftoff_types::api::AckRequest;
use liftoff_types::sweep::{SweepRunRequest, SweepView};
use liftoff_types::{LaunchSpec, Lease, Phase, RunState, RunUpdate, SweepState};
use rand::SeedableRng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the scheduler looks at its sweep.
const ROUND: Duration = Duration::from_millis(500);
/// The interpreter `${interpreter}` names (W&B says `python`; Debian has `python3`).
const INTERPRETER: &str = "python3";

/// How a scheduler's task ended.
enum End {
    /// The sweep is done (or was ended by someone else): the scheduler's run finished.
    Done(String),
    /// Asked to stop: by a user (the sweep was cancelled) or by its agent stopping.
    Stopped(StopWhy),
    /// The sweep cannot go on: it is `crashed` with this reason.
    Crashed(String),
}

pub(crate) async fn run(agent: &Arc<Agent>, lease: &Lease, mut stop: watch::Receiver<StopWhy>) {
    let item = &lease.item;
    let Some(sweep) = item.spec.sweep_id.clone() else {
        let message = "a scheduler item without a sweep id".to_string();
        return crate::item::fail_item(agent, item.id, lease.fence, message, Phase::Scheduler)
            .await;
    };
    let Ok(run_id) = crate::item::prepare::run_id_for(item) else {
        return;
    };
    let entry = Entry {
        item_id: item.id,
        fence: lease.fence,
        run_id: run_id.clone(),
        queue: item.queue.clone(),
        handle: None,
        shipped: 0,
        stopped: None,
    };
    // Journaled like a run: an agent restarted from a crash reports it lost, and the server
    // hands a lost scheduler back to its queue.
    if let Err(e) = agent.journal.record(&entry) {
        if crate::disk::is_full(&e) {
            agent.disk.note_full();
            let _ = agent.client.release(item.id, lease.fence).await;
            return;
        }
        let message = format!("the agent cannot write its journal: {e}");
        return crate::item::fail_item(agent, item.id, lease.fence, message, Phase::Agent).await;
    }
    let ack = AckRequest {
        fence: lease.fence,
        run_id: run_id.clone(),
        handle: serde_json::json!({"scheduler": sweep}),
        state: Some(RunState::Running),
    };
    if let Err(e) = agent.outbox.ack(item.id, ack).await {
        tracing::warn!(item = %item.id, error = %e, "scheduler ack refused");
        let _ = agent.journal.forget(&run_id);
        return;
    }
    eprintln!("agent {}: scheduling sweep {sweep}", agent.name());
    let end = drive(agent, &sweep, &mut stop).await;
    let update = |state, message: String| RunUpdate {
        started_at_ms: None,
        fence: lease.fence,
        state,
        exit_code: None,
        message: Some(message),
        handle: None,
        not_started: false,
    };
    let report = match end {
        End::Done(message) => update(RunState::Finished, message),
        End::Stopped(StopWhy::Asked) => update(RunState::Stopped, "stopped on request".into()),
        End::Stopped(_) => update(
            RunState::Preempted,
            "its agent stopped; the sweep goes on with another".into(),
        ),
        End::Crashed(reason) => {
            let message = format!("the sweep's scheduler failed: {reason}");
            let _ = agent
                .client
                .set_sweep_state(&sweep, SweepState::Crashed, Some(reason))
                .await;
            crate::item::fail_item(agent, item.id, lease.fence, message, Phase::Scheduler).await;
            let _ = agent.journal.forget(&run_id);
            return;
        }
    };
    match agent.outbox.report(&run_id, report).await {
        Err(e) if !moved_on(&e) => {
            tracing::warn!(run = %run_id, error = %e, "could not report the scheduler's end");
        }
        _ => {
            let _ = agent.journal.forget(&run_id);
        }
    }
}

/// Rounds until the sweep is done, stopped or crashed.
async fn drive(agent: &Agent, sweep: &str, stop: &mut watch::Receiver<StopWhy>) -> End {
    let seed = seed_of(sweep);
    // A grid can run out; then only the live runs are waited for.
    let mut exhausted = false;
    loop {
        let why = *stop.borrow_and_update();
        if why != StopWhy::No {
            return End::Stopped(why);
        }
        let view = match agent.client.get_sweep(sweep).await {
            Ok(view) => view,
            Err(e) if e.is_transient() => {
                tracing::warn!(%sweep, error = %e, "scheduler: cannot read the sweep; again soon");
                pause(stop, Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return End::Crashed(format!("cannot read the sweep: {e}")),
        };
        let config = match SweepConfig::parse(&view.sweep.config) {
            Ok(c) => c,
            Err(problems) => return End::Crashed(problems.join("; ")),
        };
        match view.sweep.state {
            SweepState::Pending => {
                if let Err(e) = agent
                    .client
                    .set_sweep_state(sweep, SweepState::Running, None)
                    .await
                {
                    tracing::warn!(%sweep, error = %e, "scheduler: cannot start the sweep");
                    pause(stop, ROUND).await;
                }
                continue;
            }
            SweepState::Paused => {
                pause(stop, ROUND).await;
                continue;
            }
            SweepState::Running => {}
            ended => return End::Done(format!("the sweep is {ended}")),
        }
        cut_with_hyperband(agent, &config, &view).await;
        match next_step(agent, sweep, seed, &config, &view, &mut exhausted).await {
            Step::Again => continue,
            Step::Wait => {}
            Step::Finish(message) => {
                match agent
                    .client
                    .set_sweep_state(sweep, SweepState::Finished, Some(message.clone()))
                    .await
                {
                    Ok(_) => return End::Done(message),
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => tracing::warn!(%sweep, error = %e, "scheduler: cannot finish"),
                }
            }
            Step::Crash(reason) => return End::Crashed(reason),
        }
        pause(stop, ROUND).await;
    }
}

enum Step {
    /// Something was enqueued: look again at once.
    Again,
    /// Nothing to do until runs move.
    Wait,
    Finish(String),
    Crash(String),
}

async fn next_step(
    agent: &Agent,
    sweep: &str,
    seed: u64,
    config: &SweepConfig,
    view: &SweepView,
    exhausted: &mut bool,
) -> Step {
    let total = view.runs.len() as u64;
    let live = view
        .runs
        .iter()
        .filter(|r| !r.item_state.is_terminal())
        .count() as u32;
    let done_why = if config.run_cap.is_some_and(|cap| total >= cap) {
        Some(format!(
            "run_cap {} reached",
            config.run_cap.unwrap_or_default()
        ))
    } else if *exhausted {
        Some("every grid point has run".to_string())
    } else {
        target_reached(config, view)
    };
    if let Some(why) = done_why {
        return if live == 0 {
            Step::Finish(why)
        } else {
            Step::Wait
        };
    }
    if let Some(why) = failing(view, agent.config.sweep_failure_limit) {
        return Step::Crash(why);
    }
    if live >= view.sweep.concurrency {
        return Step::Wait;
    }
    let seen: Vec<Observation> = view
        .runs
        .iter()
        .filter(|r| {
            // A run that ended without its metric says nothing to `bayes`; a grid still
            // must not propose its point again.
            r.metric.is_some() || !r.item_state.is_terminal() || config.method == Method::Grid
        })
        .map(|r| Observation {
            params: r.params.clone(),
            metric: r.metric.as_ref().map(|m| m.last),
        })
        .collect();
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ total.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // On a blocking thread: `bayes` fits a model to every run seen so far, which takes a
    // while for a long sweep, and the agent's loop and its runs' watches must not wait.
    let search = config.clone();
    let proposed = tokio::task::spawn_blocking(move || propose(&search, &seen, &mut rng)).await;
    let params = match proposed {
        Ok(Some(params)) => params,
        Ok(None) => {
            *exhausted = true;
            return Step::Again;
        }
        Err(e) => return Step::Crash(format!("its search failed: {e}")),
    };
    let job = view.sweep.config.get("job").and_then(|j| j.as_str());
    let spec = match spec_for(agent, sweep, total, config, job, params) {
        Ok(spec) => spec,
        Err(e) => return Step::Crash(e),
    };
    let req = SweepRunRequest {
        index: total as u32,
        spec,
    };
    match agent.client.enqueue_sweep_run(sweep, &req).await {
        Ok(_) => Step::Again,
        // The sweep moved on (paused, ended) or the spec is refused by the queue.
        Err(e @ ClientError::Api { .. }) if e.is_conflict() => Step::Wait,
        Err(e) if e.is_transient() => Step::Wait,
        Err(e) => Step::Crash(format!("its run {total} was refused: {e}")),
    }
}

/// The sweep's last `limit` ended runs (by index) all failed: a broken program or
/// environment, which more proposals would only repeat. `limit` 0: never.
fn failing(view: &SweepView, limit: u32) -> Option<String> {
    if limit == 0 {
        return None;
    }
    let mut ended: Vec<&liftoff_types::sweep::SweepRun> = view
        .runs
        .iter()
        .filter(|r| r.item_state.is_terminal())
        .collect();
    ended.sort_by_key(|r| r.index);
    let streak: Vec<_> = ended
        .iter()
        .rev()
        .take_while(|r| r.item_state == liftoff_types::ItemState::Failed)
        .collect();
    let last = streak.first()?;
    (streak.len() >= limit as usize).then(|| {
        format!(
            "its last {} runs failed; the last is item {} (liftoff show {} says why)",
            streak.len(),
            last.item_id,
            last.item_id
        )
    })
}

/// The sweep's metric has reached its `target` (stop proposing runs).
fn target_reached(config: &SweepConfig, view: &SweepView) -> Option<String> {
    let metric = config.metric.as_ref()?;
    let target = metric.target?;
    view.runs
        .iter()
        .filter_map(|r| r.metric.as_ref().map(|m| m.last))
        .find(|v| !metric.goal.better(target, *v))
        .map(|v| format!("{} reached its target {target} ({v})", metric.name))
}

/// The run's launch spec: the sweep's command with its macros expanded, and the parameters
/// as the run's config. A sweep over a job runs the job (the server pins its version and
/// merges its default config under the parameters), with the parameters also given as
/// `--name=value` arguments, as `${args}` would.
fn spec_for(
    agent: &Agent,
    sweep: &str,
    index: u64,
    config: &SweepConfig,
    job: Option<&str>,
    params: serde_json::Value,
) -> Result<LaunchSpec, String> {
    let mut spec = match job {
        Some(job) => {
            let args = ["${args}".to_string()];
            let cx = Context {
                program: None,
                interpreter: INTERPRETER,
                params: &params,
                env: &agent.base_env,
                args_json_file: None,
            };
            let mut spec = LaunchSpec {
                job: Some(job.to_string()),
                ..LaunchSpec::default()
            };
            spec.overrides.args = command::expand(&args, &cx).unwrap_or_default();
            spec
        }
        None => {
            let words: Vec<String> = match &config.command {
                Some(c) => c.clone(),
                None => command::DEFAULT.iter().map(|w| w.to_string()).collect(),
            };
            let cx = Context {
                program: config.program.as_deref(),
                interpreter: INTERPRETER,
                params: &params,
                env: &agent.base_env,
                args_json_file: None,
            };
            let mut spec = LaunchSpec::command(command::expand(&words, &cx)?);
            // Its runs start beside their program (`sweep create` made it absolute against
            // the sweep file), so the program's own relative paths work as they do by hand.
            spec.cwd = config
                .program
                .as_deref()
                .map(std::path::Path::new)
                .filter(|p| p.is_absolute())
                .and_then(|p| p.parent())
                .map(|d| d.to_string_lossy().into_owned());
            spec
        }
    };
    spec.sweep_id = Some(sweep.to_string());
    spec.name = Some(format!("{sweep}-{index}"));
    if let serde_json::Value::Object(map) = params {
        spec.overrides.run_config = map;
    }
    Ok(spec)
}

/// Stops the live runs hyperband cuts, with the reason on the run.
async fn cut_with_hyperband(agent: &Agent, config: &SweepConfig, view: &SweepView) {
    let (Some(hb), Some(metric)) = (&config.early_terminate, &config.metric) else {
        return;
    };
    let histories: Vec<Vec<(u64, f64)>> = view.runs.iter().map(|r| r.history.clone()).collect();
    let live: Vec<bool> = view
        .runs
        .iter()
        .map(|r| r.run_state.is_some_and(|s| !s.is_terminal()) && !r.stop_requested)
        .collect();
    for i in hb.to_stop(&histories, &live, metric.goal) {
        let run = &view.runs[i];
        let Some(run_id) = &run.run_id else { continue };
        let reason = format!(
            "hyperband (eta {}, min_iter {}): {} fell behind the best 1/{} of the runs at a bracket",
            hb.eta, hb.min_iter, metric.name, hb.eta
        );
        match agent.client.stop_run_because(run_id, &reason).await {
            Ok(_) => eprintln!("agent {}: hyperband stops run {run_id}", agent.name()),
            Err(e) => tracing::info!(run = %run_id, error = %e, "hyperband stop not taken"),
        }
    }
}

/// Sleeps `for_` or until a stop comes (the next round sees it).
async fn pause(stop: &mut watch::Receiver<StopWhy>, for_: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(for_) => {}
        _ = stop.changed() => {}
    }
}

/// A stable seed from the sweep id (FNV-1a), so every scheduler of a sweep proposes alike.
fn seed_of(sweep: &str) -> u64 {
    sweep.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
