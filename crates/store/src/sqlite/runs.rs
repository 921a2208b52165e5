//! Run rows: reports from agents (state changes, which end the item when terminal), a
//! user's stop request, show and list.

use super::lease::mark_failed;
use super::rows::{self, RUN_COLUMNS};
use crate::retries::{Retry, RetryContext};
use crate::rules::{EndContext, ItemOutcome};
use crate::{StoreError, StoreResult};
use liftoff_types::api::RunFilter;
use liftoff_types::{ItemId, Millis, Run, RunId, RunState, RunUpdate};
use rusqlite::{params, Connection, OptionalExtension};

/// What an update needs to know about a run, its item and its queue, read in one query.
struct Context {
    state: RunState,
    item_id: ItemId,
    fence: i64,
    item_claimed: bool,
    item_state: liftoff_types::ItemState,
    /// A sweep's scheduler: always requeued when lost (its state is on the server).
    scheduler: bool,
}

impl Context {
    fn end(&self, conn: &Connection, up: &RunUpdate) -> StoreResult<EndContext> {
        let retry = crate::rules::may_retry(up.state)
            .then(|| retry_context(conn, self.item_id))
            .transpose()?;
        Ok(EndContext {
            scheduler: self.scheduler,
            retry,
        })
    }
}

/// An item's retry context: its queue's policy, its launch's, its retries so far.
pub(super) fn retry_context(conn: &Connection, item: ItemId) -> StoreResult<RetryContext> {
    let (retry, requeue_lost, max_attempts, spec, retries): (
        Option<String>,
        bool,
        u32,
        String,
        String,
    ) = conn
        .prepare_cached(
            "SELECT q.retry, q.requeue_lost, q.max_attempts, i.spec, i.retries
             FROM items i JOIN queues q ON q.id = i.queue_id WHERE i.id = ?1",
        )?
        .query_row([item.0], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    RetryContext::read(
        retry.as_deref(),
        requeue_lost,
        max_attempts,
        &spec,
        &retries,
    )
}

/// Puts an item back in its queue, counting an attempt or not; a retry by cause also stores
/// its counts, holds the item for its wait, and leaves a warning saying why.
pub(super) fn requeue(
    conn: &Connection,
    item: ItemId,
    attempt: bool,
    retry: Option<&Retry>,
    why: &str,
    now: Millis,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE items SET state = 'pending', run_id = NULL, agent_id = NULL,
             lease_expires_at_ms = NULL, attempts = attempts + ?2,
             retries = coalesce(?3, retries), available_at_ms = ?4, updated_at_ms = ?5
         WHERE id = ?1",
    )?
    .execute(params![
        item.0,
        attempt as i64,
        retry.map(|r| r.counts.as_str()),
        retry.map(|r| now + r.wait_ms),
        now
    ])?;
    if let Some(retry) = retry {
        conn.prepare_cached(
            "INSERT INTO item_warnings (item_id, message, at_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![item.0, crate::retries::warning(retry, why), now])?;
    }
    Ok(())
}

fn context(conn: &Connection, id: &RunId) -> StoreResult<Context> {
    conn.prepare_cached(
        "SELECT r.state, r.item_id, i.fence, i.state = 'claimed', i.kind = 'scheduler', i.state
         FROM runs r JOIN items i ON i.id = r.item_id WHERE r.id = ?1",
    )?
    .query_row([id.as_str()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get::<_, String>(5)?,
        ))
    })
    .optional()?
    .ok_or_else(|| StoreError::not_found("run", id))
    .and_then(
        |(state, item, fence, item_claimed, scheduler, item_state)| {
            Ok(Context {
                item_state: item_state.parse().map_err(StoreError::Corrupt)?,
                state: state.parse().map_err(StoreError::Corrupt)?,
                item_id: ItemId(item),
                fence,
                item_claimed,
                scheduler,
            })
        },
    )
}

/// Stores an agent's report (the caller reads the run back if it wants it).
pub fn update(conn: &Connection, id: &RunId, up: &RunUpdate, now: Millis) -> StoreResult<()> {
    let ctx = context(conn, id)?;
    if ctx.fence != up.fence {
        return Err(StoreError::Conflict(format!(
            "stale fence {} for run {id}: its item is at fence {}",
            up.fence, ctx.fence
        )));
    }
    if crate::rules::late_finish(ctx.state, ctx.item_state, ctx.fence, up) {
        return late_finish(conn, id, &ctx, up, now);
    }
    if ctx.state.is_terminal() || !ctx.item_claimed {
        return Err(StoreError::Conflict(format!(
            "run {id} has already ended ({})",
            ctx.state
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
             message = CASE WHEN ?2 = 'stopped' AND stop_reason IS NOT NULL THEN stop_reason
                            ELSE coalesce(?4, message) END,
             handle = coalesce(?5, handle),
             started_at_ms = CASE WHEN ?2 = 'running' THEN coalesce(started_at_ms, ?6)
                                  ELSE coalesce(started_at_ms, ?8) END,
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
        ended,
        crate::rules::reported_start(up, now)
    ])?;
    if up.state.is_terminal() {
        end_item(conn, &ctx, up, now)?;
        super::tokens::revoke_run(conn, id)?;
    }
    Ok(())
}

/// A lost run found finished by its agent (see [`crate::rules::late_finish`]): the run and
/// its item end `finished`, with a warning that says what happened.
fn late_finish(
    conn: &Connection,
    id: &RunId,
    ctx: &Context,
    up: &RunUpdate,
    now: Millis,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE runs SET state = 'finished', exit_code = coalesce(?2, exit_code),
             message = NULL, updated_at_ms = ?3 WHERE id = ?1",
    )?
    .execute(params![id.as_str(), up.exit_code, now])?;
    conn.prepare_cached(
        "UPDATE items SET state = 'finished', run_id = ?2,
             agent_id = (SELECT agent_id FROM runs WHERE id = ?2),
             fail_message = NULL, fail_phase = NULL, fail_files = NULL,
             available_at_ms = NULL, updated_at_ms = ?3 WHERE id = ?1",
    )?
    .execute(params![ctx.item_id.0, id.as_str(), now])?;
    conn.prepare_cached("INSERT INTO item_warnings (item_id, message, at_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![ctx.item_id.0, crate::rules::LATE_FINISH, now])?;
    Ok(())
}

/// A run's end decides its item's, by [`crate::rules::item_outcome`].
fn end_item(conn: &Connection, ctx: &Context, up: &RunUpdate, now: Millis) -> StoreResult<()> {
    let item = ctx.item_id;
    let set_state = |state: &str| -> StoreResult<()> {
        conn.prepare_cached("UPDATE items SET state = ?2, updated_at_ms = ?3 WHERE id = ?1")?
            .execute(params![item.0, state, now])?;
        Ok(())
    };
    match crate::rules::item_outcome(&ctx.end(conn, up)?, up) {
        ItemOutcome::Ends(state) => set_state(state),
        ItemOutcome::Fails { phase, message } => mark_failed(conn, item, &message, phase, &[], now),
        ItemOutcome::Requeued { attempt, retry } => {
            let why = up.message.as_deref().unwrap_or(up.state.as_str());
            requeue(conn, item, attempt, retry.as_ref(), why, now)
        }
        ItemOutcome::Unchanged => Ok(()),
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
           AND (?5 IS NULL OR EXISTS (SELECT 1 FROM items i WHERE i.id = runs.item_id
                AND i.sweep_id = ?5 AND i.kind = 'run'))
           AND (?6 IS NULL OR EXISTS (SELECT 1 FROM items i WHERE i.id = runs.item_id
                AND (json_extract(i.spec, '$.job') = ?6
                     OR substr(json_extract(i.spec, '$.job'), 1, length(?6) + 1) = ?6 || ':')))
         ORDER BY rowid DESC LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let found = stmt.query_map(
        params![
            filter.queue,
            filter.state.map(|s| s.as_str()),
            filter.agent.map(|a| a.0),
            limit,
            filter.sweep,
            filter.job
        ],
        rows::run,
    )?;
    Ok(found.collect::<Result<_, _>>()?)
}

pub fn request_stop(
    conn: &Connection,
    id: &RunId,
    reason: Option<&str>,
    now: Millis,
) -> StoreResult<Run> {
    let run = rows::load_run(conn, id)?;
    if run.state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "run {id} has already ended ({})",
            run.state
        )));
    }
    conn.prepare_cached(
        "UPDATE runs SET stop_requested = 1, stop_reason = coalesce(?3, stop_reason),
             updated_at_ms = ?2 WHERE id = ?1",
    )?
    .execute(params![id.as_str(), now, reason])?;
    conn.prepare_cached("UPDATE items SET cancel_requested = 1, updated_at_ms = ?2 WHERE id = ?1")?
        .execute(params![run.item_id.0, now])?;
    rows::load_run(conn, id)
}
