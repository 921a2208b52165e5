//! The rules both stores enforce, written once: how a write about an item is checked
//! against its fence and state, how a log append is cut, what a run's end says, and the
//! column lists both stores read rows with.

use crate::{StoreError, StoreResult};
use liftoff_types::api::MAX_LOG_BYTES;
use liftoff_types::{ItemId, ItemState, Millis, Phase, QueueDepth, RunId, RunState, RunUpdate};

pub const ITEM_COLUMNS: &str = "i.id, q.name, i.state, i.priority, i.spec, i.resource_args, \
    i.attempts, i.fence, i.agent_id, i.lease_expires_at_ms, i.run_id, i.fail_message, \
    i.fail_phase, i.fail_files, i.cancel_requested, i.created_at_ms, i.updated_at_ms, i.kind, \
    i.sweep_index, i.retries, i.available_at_ms";
/// An item's columns as shown to people: its latest run's times too (with [`ITEM_SHOWN_FROM`]).
pub const ITEM_SHOWN_COLUMNS: &str = "i.id, q.name, i.state, i.priority, i.spec, \
    i.resource_args, i.attempts, i.fence, i.agent_id, i.lease_expires_at_ms, i.run_id, \
    i.fail_message, i.fail_phase, i.fail_files, i.cancel_requested, i.created_at_ms, \
    i.updated_at_ms, i.kind, i.sweep_index, i.retries, i.available_at_ms, r.started_at_ms, \
    r.ended_at_ms";
pub const SWEEP_COLUMNS: &str =
    "s.id, s.name, q.name, s.state, s.message, s.config, s.concurrency, \
    s.scheduler_item, s.created_at_ms, s.updated_at_ms";
pub const SWEEP_FROM: &str = "sweeps s JOIN queues q ON q.id = s.queue_id";
pub const ITEM_SHOWN_FROM: &str =
    "items i JOIN queues q ON q.id = i.queue_id LEFT JOIN runs r ON r.id = i.run_id";
pub const QUEUE_COLUMNS: &str = "name, resource, config, template_variables, prioritization, \
    max_attempts, requeue_lost, created_at_ms, max_concurrency, retry";
pub const RUN_COLUMNS: &str = "id, item_id, queue, agent_id, state, handle, exit_code, message, \
    stop_requested, created_at_ms, started_at_ms, ended_at_ms, updated_at_ms";
pub const AGENT_COLUMNS: &str = "id, name, hostname, queues, max_jobs, max_schedulers, version, \
    status, in_flight, stop_requested, registered_at_ms, heartbeat_at_ms, running_jobs, \
    running_schedulers";
pub const TOKEN_COLUMNS: &str = "id, name, scope, created_at_ms, run_id";

/// Checks a write's fence against the item's and that the item is in one of `states`.
pub fn guard(
    id: ItemId,
    state: ItemState,
    current_fence: i64,
    fence: i64,
    states: &[ItemState],
) -> StoreResult<()> {
    if current_fence != fence {
        return Err(StoreError::Conflict(format!(
            "stale fence {fence} for item {id}: it was leased again (fence {current_fence})"
        )));
    }
    if !states.contains(&state) {
        return Err(StoreError::Conflict(format!(
            "item {id} is {state}, not {}",
            states
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    Ok(())
}

/// What part of an append to store: `None` when a retry brought nothing new, else the
/// byte range of `data` to keep. `len` is what the store has; `run_fence` the item's fence.
pub fn cut_append(
    id: &RunId,
    len: u64,
    run_fence: i64,
    fence: i64,
    offset: u64,
    data_len: usize,
) -> StoreResult<Option<std::ops::Range<usize>>> {
    if run_fence != fence {
        return Err(StoreError::Conflict(format!(
            "stale fence {fence} for run {id}: its item is at fence {run_fence}"
        )));
    }
    if offset > len {
        return Err(StoreError::Conflict(format!(
            "log gap for run {id}: the server has {len} bytes, the append starts at {offset}"
        )));
    }
    // Skip what a retried append already delivered.
    let skip = (len - offset) as usize;
    if skip >= data_len {
        return Ok(None);
    }
    let room = MAX_LOG_BYTES.saturating_sub(len) as usize;
    if room == 0 {
        return Err(StoreError::invalid(
            "log",
            format!("run {id} has reached the server's log limit of {MAX_LOG_BYTES} bytes"),
        ));
    }
    Ok(Some(skip..data_len.min(skip + room)))
}

/// Counts `n` items of `state` into a queue's depth.
pub fn add_depth(depth: &mut QueueDepth, state: &str, n: u64) -> StoreResult<()> {
    match state {
        "pending" => depth.pending = n,
        "leased" => depth.leased = n,
        "claimed" => depth.claimed = n,
        "finished" => depth.finished = n,
        "failed" => depth.failed = n,
        "stopped" => depth.stopped = n,
        "cancelled" => depth.cancelled = n,
        other => return Err(StoreError::Corrupt(format!("item state {other:?}"))),
    }
    Ok(())
}

/// Why the last admin token may not be revoked: nobody could then create tokens, revoke
/// them or prune, and a restart mints none.
pub const LAST_ADMIN: &str = "this is the last admin token: create another admin token \
    (liftoff token create --scope admin) before revoking this one";

/// What an item's queue and history say about how its run's end moves it.
pub struct EndContext {
    /// A sweep's scheduler: always requeued when lost (its state is on the server).
    pub scheduler: bool,
    /// Read for ends that may be retried (lost, preempted, failed); `None` for the others.
    pub retry: Option<crate::retries::RetryContext>,
}

/// Whether a run's end in `state` may be retried, so its item's retry context is needed.
pub fn may_retry(state: RunState) -> bool {
    matches!(
        state,
        RunState::Lost | RunState::Preempted | RunState::Failed
    )
}

/// What a run's end does to its item.
#[derive(Debug, PartialEq)]
pub enum ItemOutcome {
    /// The item ends in this state (`finished`, `stopped`).
    Ends(&'static str),
    Fails {
        phase: Phase,
        message: String,
    },
    /// Back to pending, counting an attempt or not; a retry by cause carries its counts.
    Requeued {
        attempt: bool,
        retry: Option<crate::retries::Retry>,
    },
    /// Not an end.
    Unchanged,
}

/// The one rule both stores follow for what a run's end means for its item: finished and
/// stopped end it; a lost scheduler and a run lost before it started go back without an
/// attempt; a failure (exit-code), a preemption and a lost run go back when the item's retry
/// policy has a retry left for that cause (a preemption counting no attempt, W&B's rule),
/// else fail (a lost run with phase `agent`, the others `run`).
pub fn item_outcome(ctx: &EndContext, up: &RunUpdate) -> ItemOutcome {
    use liftoff_types::RetryCause;
    let retry = |cause: RetryCause| {
        ctx.retry
            .as_ref()
            .and_then(|r| r.retry(cause, up.exit_code))
    };
    let exhausted = |cause: RetryCause| {
        ctx.retry
            .as_ref()
            .map(|r| r.exhausted(cause))
            .unwrap_or_default()
    };
    match up.state {
        RunState::Finished => ItemOutcome::Ends("finished"),
        RunState::Stopped => ItemOutcome::Ends("stopped"),
        RunState::Failed => match retry(RetryCause::ExitCode) {
            Some(retry) => ItemOutcome::Requeued {
                attempt: true,
                retry: Some(retry),
            },
            None => ItemOutcome::Fails {
                phase: Phase::Run,
                message: failed_message(up) + &exhausted(RetryCause::ExitCode),
            },
        },
        RunState::Preempted => match retry(RetryCause::Preempted) {
            Some(retry) => ItemOutcome::Requeued {
                attempt: false,
                retry: Some(retry),
            },
            None => ItemOutcome::Fails {
                phase: Phase::Run,
                message: format!(
                    "{}{}",
                    up.message.as_deref().unwrap_or("preempted"),
                    exhausted(RetryCause::Preempted)
                ),
            },
        },
        RunState::Lost if ctx.scheduler || up.not_started => ItemOutcome::Requeued {
            attempt: false,
            retry: None,
        },
        RunState::Lost => match retry(RetryCause::Lost) {
            Some(retry) => ItemOutcome::Requeued {
                attempt: true,
                retry: Some(retry),
            },
            None => ItemOutcome::Fails {
                phase: Phase::Agent,
                message: lost_message(up) + &exhausted(RetryCause::Lost),
            },
        },
        _ => ItemOutcome::Unchanged,
    }
}

/// The item's failure message when its run failed.
pub fn failed_message(up: &RunUpdate) -> String {
    up.message.clone().unwrap_or_else(|| match up.exit_code {
        Some(code) => format!("the run exited with code {code}"),
        None => "the run failed".to_string(),
    })
}

/// A lost agent's claimed items, with their runs, fences, queues and whether each run never
/// started (still `starting`, with the ack's empty handle and no start: the agent had it in
/// line, or was making it ready).
pub const LOST_RUNS: &str = "SELECT i.run_id, i.fence, q.name,
        r.state = 'starting' AND r.handle = '{}' AND r.started_at_ms IS NULL
     FROM items i JOIN queues q ON q.id = i.queue_id JOIN runs r ON r.id = i.run_id
     WHERE i.agent_id = ?1 AND i.state = 'claimed'";

/// The report the reaper makes for a lost agent's run.
pub fn lost_update(agent: liftoff_types::AgentId, fence: i64, never_started: bool) -> RunUpdate {
    let message = if never_started {
        format!("agent {agent} stopped sending heartbeats before the run started")
    } else {
        format!("agent {agent} stopped sending heartbeats")
    };
    RunUpdate {
        started_at_ms: None,
        fence,
        state: RunState::Lost,
        exit_code: None,
        message: Some(message),
        handle: None,
        not_started: never_started,
    }
}

/// Whether an agent's report may correct a run the server declared lost: the agent came
/// back and found the run had finished meanwhile (its supervisor kept the exit). Taken only
/// while the item has not been leased again (same fence) and is still back in its queue or
/// failed as lost: the work is done, and running it again (or calling it failed) is wrong.
pub fn late_finish(run: RunState, item: ItemState, item_fence: i64, up: &RunUpdate) -> bool {
    run == RunState::Lost
        && up.state == RunState::Finished
        && item_fence == up.fence
        && matches!(item, ItemState::Pending | ItemState::Failed)
}

/// The warning an item gets when its lost run is found finished.
pub const LATE_FINISH: &str =
    "its run was declared lost, then its agent came back and reported it finished";

/// The item's failure message when its run was lost.
pub fn lost_message(up: &RunUpdate) -> String {
    up.message
        .clone()
        .unwrap_or_else(|| "the run was lost with its agent".to_string())
}

/// Checks a sweep's move to `to`.
pub fn sweep_move(sweep: &liftoff_types::Sweep, to: liftoff_types::SweepState) -> StoreResult<()> {
    if sweep.state.may_become(to) {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "sweep {} is {} and cannot become {to}",
            sweep.id, sweep.state
        )))
    }
}

/// Checks that a sweep may take a new run: it is running and the index is under its cap.
pub fn sweep_run_allowed(
    sweep: &liftoff_types::Sweep,
    run: &crate::NewSweepRun,
) -> StoreResult<()> {
    if sweep.state != liftoff_types::SweepState::Running {
        return Err(StoreError::Conflict(format!(
            "sweep {} is {}: it takes no new runs",
            sweep.id, sweep.state
        )));
    }
    if run.run_cap.is_some_and(|cap| u64::from(run.index) >= cap) {
        return Err(StoreError::Conflict(format!(
            "sweep {} has run_cap {}: run index {} is past it",
            sweep.id,
            run.run_cap.unwrap_or_default(),
            run.index
        )));
    }
    Ok(())
}

/// Checks a metrics append: the run is live and stays under its record limit.
pub fn metrics_allowed(id: &RunId, state: &str, count: u64, adding: usize) -> StoreResult<()> {
    let state: liftoff_types::RunState = state.parse().map_err(StoreError::Corrupt)?;
    if state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "run {id} has ended ({state}): it takes no more metrics"
        )));
    }
    if count + adding as u64 > liftoff_types::sweep::MAX_METRICS_PER_RUN {
        return Err(StoreError::Conflict(format!(
            "run {id} would pass {} metric records",
            liftoff_types::sweep::MAX_METRICS_PER_RUN
        )));
    }
    Ok(())
}

/// The item kinds a lease asks for, each picked by its own walk of the pending index.
pub fn lease_kinds(p: &crate::LeaseParams) -> Vec<&'static str> {
    let mut kinds = Vec::with_capacity(2);
    if p.runs {
        kinds.push("run");
    }
    if p.schedulers {
        kinds.push("scheduler");
    }
    kinds
}

/// A queue's runs that count against its `max_concurrency` (`$1` is the queue's id):
/// leased or claimed, the same in both stores.
pub const LIVE_RUNS: &str = "SELECT count(*) FROM items WHERE queue_id = $1 AND kind = 'run'
    AND state IN ('leased', 'claimed')";

/// How many more runs a queue capped at `cap` may start with `live` already live.
pub fn room(cap: Option<u32>, live: i64) -> Option<u32> {
    cap.map(|c| (c as i64 - live).max(0) as u32)
}

/// Merges per-kind candidates `(rank, id)` into lease order and keeps the first `max`.
pub fn merge_candidates(mut picked: Vec<(i64, i64)>, max: u32) -> Vec<i64> {
    picked.sort_unstable();
    picked.truncate(max as usize);
    picked.into_iter().map(|(_, id)| id).collect()
}

/// The start time an end report gives for a run never reported `running` on its own: the
/// agent's clock, never later than the server's now.
pub fn reported_start(up: &RunUpdate, now: Millis) -> Option<Millis> {
    up.started_at_ms.map(|t| t.min(now))
}

/// Retention, the same in both stores (`$1` is the cutoff; SQLite reads it as its first
/// parameter).
///
/// A sweep goes whole or not at all: once it has ended and every item of it (runs and
/// scheduler) ended before the cutoff, the sweep and all its items go together; until then
/// none of its items do, so a sweep's view never loses runs.
const PRUNE_SWEEPS: &str =
    "SELECT id FROM sweeps WHERE state IN ('finished', 'cancelled', 'crashed')
     AND updated_at_ms < $1 AND NOT EXISTS (SELECT 1 FROM items i WHERE i.sweep_id = sweeps.id
     AND (i.state IN ('pending', 'leased', 'claimed') OR i.updated_at_ms >= $1))";

/// Ended, last changed before `$1`, and either no sweep's or of a sweep that goes.
fn prune_items() -> String {
    format!(
        "SELECT id FROM items WHERE state IN ('finished', 'failed', 'stopped', 'cancelled')
         AND updated_at_ms < $1 AND ((sweep_id IS NULL AND kind = 'run')
             OR sweep_id IN ({PRUNE_SWEEPS}))"
    )
}

const PRUNE_AGENTS: &str = "SELECT id FROM agents WHERE status IN ('stopped', 'lost')
     AND heartbeat_at_ms < $1 AND NOT EXISTS (SELECT 1 FROM items i WHERE i.agent_id = agents.id
     AND i.state IN ('leased', 'claimed'))";

/// What a prune counts, in the order of [`crate::Pruned`]'s items, runs, agents, sweeps.
pub fn prune_counts() -> [String; 4] {
    let items = prune_items();
    [
        format!("SELECT count(*) FROM ({items}) AS x"),
        format!("SELECT count(*) FROM (SELECT id FROM runs WHERE item_id IN ({items})) AS x"),
        format!("SELECT count(*) FROM ({PRUNE_AGENTS}) AS x"),
        format!("SELECT count(*) FROM ({PRUNE_SWEEPS}) AS x"),
    ]
}

/// What a prune deletes, in order: runs (with their logs and metrics) before their items,
/// and sweeps last (the items' statement reads which sweeps go).
pub fn prune_deletes() -> [String; 8] {
    let items = prune_items();
    let runs = format!("SELECT id FROM runs WHERE item_id IN ({items})");
    [
        format!("DELETE FROM run_logs WHERE run_id IN ({runs})"),
        format!("DELETE FROM run_metrics WHERE run_id IN ({runs})"),
        format!("DELETE FROM runs WHERE id IN ({runs})"),
        format!("DELETE FROM item_warnings WHERE item_id IN ({items})"),
        format!("DELETE FROM item_files WHERE item_id IN ({items})"),
        format!("DELETE FROM items WHERE id IN ({items})"),
        format!("DELETE FROM agents WHERE id IN ({PRUNE_AGENTS})"),
        format!("DELETE FROM sweeps WHERE id IN ({PRUNE_SWEEPS})"),
    ]
}
