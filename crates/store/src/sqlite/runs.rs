//! Run rows: reports from agents (state changes, which end the item when terminal), a
//! user's stop request, show and list.

use super::lease::mark_failed;
use super::rows::{self, RUN_COLUMNS};
use crate::{StoreError, StoreResult};
use liftoff_types::api::RunFilter;
use liftoff_types::{Millis, Phase, Run, RunId, RunState, RunUpdate};
use rusqlite::{params, Connection};

pub fn update(conn: &Connection, id: &RunId, up: &RunUpdate, now: Millis) -> StoreResult<Run> {
    let run = rows::load_run(conn, id)?;
    let (fence, item_state, requeue_lost, attempts, max_attempts): (i64, String, bool, u32, u32) =
        conn.prepare_cached(
            "SELECT i.fence, i.state, q.requeue_lost, i.attempts, q.max_attempts
             FROM items i JOIN queues q ON q.id = i.queue_id WHERE i.id = ?1",
        )?
        .query_row([run.item_id.0], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(|_| StoreError::not_found("item", run.item_id))?;
    if fence != up.fence {
        return Err(StoreError::Conflict(format!(
            "stale fence {} for run {id}: its item is at fence {fence}",
            up.fence
        )));
    }
    if run.state.is_terminal() || item_state != "claimed" {
        return Err(StoreError::Conflict(format!(
            "run {id} has already ended ({})",
            run.state
        )));
    }
    if up.state == RunState::Queued {
        return Err(StoreError::invalid(
            "state",
            "a run cannot go back to queued",
        ));
    }
    let ended = up.state.is_terminal().then_some(now);
    let handle = up.handle.as_ref().map(|h| h.to_string());
    conn.prepare_cached(
        "UPDATE runs SET state = ?2, exit_code = coalesce(?3, exit_code),
             message = coalesce(?4, message), handle = coalesce(?5, handle),
             started_at_ms = CASE WHEN ?2 = 'running' THEN coalesce(started_at_ms, ?6)
                                  ELSE started_at_ms END,
             ended_at_ms = ?7, updated_at_ms = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        id.as_str(),
        up.state.as_str(),
        up.exit_code,
        up.message,
        handle,
        now,
        ended
    ])?;
    if up.state.is_terminal() {
        end_item(conn, &run, up, (requeue_lost, attempts, max_attempts), now)?;
    }
    rows::load_run(conn, id)
}

/// A run's end decides its item's: finished, failed (phase `run`), stopped, back to pending
/// after a preemption, and failed (phase `agent`) or requeued when its agent was lost.
fn end_item(
    conn: &Connection,
    run: &Run,
    up: &RunUpdate,
    (requeue_lost, attempts, max_attempts): (bool, u32, u32),
    now: Millis,
) -> StoreResult<()> {
    let item = run.item_id;
    let set_state = |state: &str| -> StoreResult<()> {
        conn.prepare_cached("UPDATE items SET state = ?2, updated_at_ms = ?3 WHERE id = ?1")?
            .execute(params![item.0, state, now])?;
        Ok(())
    };
    let requeue = |count_attempt: bool| -> StoreResult<()> {
        conn.prepare_cached(
            "UPDATE items SET state = 'pending', run_id = NULL, agent_id = NULL,
                 attempts = attempts + ?2, updated_at_ms = ?3 WHERE id = ?1",
        )?
        .execute(params![item.0, count_attempt as i64, now])?;
        Ok(())
    };
    match up.state {
        RunState::Finished => set_state("finished"),
        RunState::Stopped => set_state("stopped"),
        RunState::Failed => {
            let message = up.message.clone().unwrap_or_else(|| match up.exit_code {
                Some(code) => format!("the run exited with code {code}"),
                None => "the run failed".to_string(),
            });
            mark_failed(conn, item, &message, Phase::Run, &[], now)
        }
        RunState::Preempted => requeue(false),
        RunState::Lost if requeue_lost && attempts + 1 < max_attempts => requeue(true),
        RunState::Lost => {
            let message = up
                .message
                .clone()
                .unwrap_or_else(|| "the run was lost with its agent".to_string());
            mark_failed(conn, item, &message, Phase::Agent, &[], now)
        }
        _ => Ok(()),
    }
}

pub fn get(conn: &Connection, id: &RunId) -> StoreResult<Run> {
    rows::load_run(conn, id)
}

pub fn list(conn: &Connection, filter: &RunFilter) -> StoreResult<Vec<Run>> {
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR state = ?2)
           AND (?3 IS NULL OR agent_id = ?3)
         ORDER BY created_at_ms DESC, rowid DESC LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let found = stmt.query_map(
        params![
            filter.queue,
            filter.state.map(|s| s.as_str()),
            filter.agent.map(|a| a.0),
            limit
        ],
        rows::run,
    )?;
    Ok(found.collect::<Result<_, _>>()?)
}

pub fn request_stop(conn: &Connection, id: &RunId, now: Millis) -> StoreResult<Run> {
    let run = rows::load_run(conn, id)?;
    if run.state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "run {id} has already ended ({})",
            run.state
        )));
    }
    conn.prepare_cached("UPDATE runs SET stop_requested = 1, updated_at_ms = ?2 WHERE id = ?1")?
        .execute(params![id.as_str(), now])?;
    conn.prepare_cached("UPDATE items SET cancel_requested = 1, updated_at_ms = ?2 WHERE id = ?1")?
        .execute(params![run.item_id.0, now])?;
    rows::load_run(conn, id)
}
