//! Run rows on PostgreSQL: agents' reports (which end the item when terminal), a user's stop
//! request, show and list. Every write locks the run's item first (see [`super::lease`]).

use super::lease::mark_failed;
use super::rows::{self, get, RUN_COLUMNS};
use super::Tx;
use crate::retries::{Retry, RetryContext};
use crate::rules::{EndContext, ItemOutcome};
use crate::{StoreError, StoreResult};
use liftoff_types::api::RunFilter;
use liftoff_types::{ItemId, Millis, Run, RunId, RunState, RunUpdate};

/// What an update needs to know about a run, its item and its queue, read in one query
/// with the item's row locked.
struct Context {
    state: RunState,
    item_id: ItemId,
    fence: i64,
    item_claimed: bool,
    item_state: liftoff_types::ItemState,
    /// A sweep's scheduler: always requeued when lost (its state is on the server).
    scheduler: bool,
}

async fn context(tx: &Tx<'_>, id: &RunId) -> StoreResult<Context> {
    let stmt = tx
        .prepare_cached(
            "SELECT r.state, r.item_id, i.fence, i.state = 'claimed', i.kind = 'scheduler',
                    i.state
             FROM runs r JOIN items i ON i.id = r.item_id WHERE r.id = $1 FOR UPDATE OF i",
        )
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .ok_or_else(|| StoreError::not_found("run", id))?;
    Ok(Context {
        state: get::<String>(&row, 0)?
            .parse()
            .map_err(StoreError::Corrupt)?,
        item_id: ItemId(get(&row, 1)?),
        fence: get(&row, 2)?,
        item_claimed: get(&row, 3)?,
        scheduler: get(&row, 4)?,
        item_state: get::<String>(&row, 5)?
            .parse()
            .map_err(StoreError::Corrupt)?,
    })
}

pub async fn update(tx: &Tx<'_>, id: &RunId, up: &RunUpdate, now: Millis) -> StoreResult<Run> {
    let ctx = context(tx, id).await?;
    if ctx.fence != up.fence {
        return Err(StoreError::Conflict(format!(
            "stale fence {} for run {id}: its item is at fence {}",
            up.fence, ctx.fence
        )));
    }
    if crate::rules::late_finish(ctx.state, ctx.item_state, ctx.fence, up) {
        return late_finish(tx, id, &ctx, up, now).await;
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
    if matches!(up.state, RunState::Finished | RunState::Stopped) {
        return end_at_once(tx, id, up, now)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("run {id} changed while it was ending")));
    }
    let sql = format!(
        "UPDATE runs SET state = $2, exit_code = coalesce($3, exit_code),
             message = coalesce($4, message), handle = coalesce($5, handle),
             started_at_ms = CASE WHEN $2 = 'running' THEN coalesce(started_at_ms, $6)
                                  ELSE coalesce(started_at_ms, $8) END,
             ended_at_ms = $7, updated_at_ms = $6
         WHERE id = $1 RETURNING {RUN_COLUMNS}"
    );
    let started = crate::rules::reported_start(up, now);
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &id.as_str(),
                &up.state.as_str(),
                &up.exit_code,
                &up.message,
                &handle,
                &now,
                &ended,
                &started,
            ],
        )
        .await?;
    let run = rows::run(&row)?;
    if up.state.is_terminal() {
        end_item(tx, &ctx, up, now).await?;
        super::tokens::revoke_run(tx, id).await?;
    }
    Ok(run)
}

/// A lost run found finished by its agent (see [`crate::rules::late_finish`]).
async fn late_finish(
    tx: &Tx<'_>,
    id: &RunId,
    ctx: &Context,
    up: &RunUpdate,
    now: Millis,
) -> StoreResult<Run> {
    let sql = format!(
        "UPDATE runs SET state = 'finished', exit_code = coalesce($2, exit_code),
             message = NULL, updated_at_ms = $3 WHERE id = $1 RETURNING {RUN_COLUMNS}"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_one(&stmt, &[&id.as_str(), &up.exit_code, &now])
        .await?;
    let item = tx
        .prepare_cached(
            "UPDATE items SET state = 'finished', run_id = $2,
                 agent_id = (SELECT agent_id FROM runs WHERE id = $2),
                 fail_message = NULL, fail_phase = NULL, fail_files = NULL,
                 available_at_ms = NULL, updated_at_ms = $3 WHERE id = $1",
        )
        .await?;
    tx.execute(&item, &[&ctx.item_id.0, &id.as_str(), &now])
        .await?;
    let warn = tx
        .prepare_cached("INSERT INTO item_warnings (item_id, message, at_ms) VALUES ($1, $2, $3)")
        .await?;
    tx.execute(&warn, &[&ctx.item_id.0, &crate::rules::LATE_FINISH, &now])
        .await?;
    rows::run(&row)
}

/// A run's plain end (finished or stopped): the run, its item and its tokens in a single
/// statement. The store runs it first outside any explicit transaction (one round trip
/// instead of four), for the common case of a live run whose item is claimed at the
/// report's fence; `None` when it changed nothing, and the caller then runs [`update`],
/// which says why or takes the other paths (a late finish, a retry), and runs this again
/// in its transaction when the end is plain after all. Every part keys on the run's row
/// having been changed, which happens only with the item's row locked and checked.
pub async fn end_at_once(
    client: &impl deadpool_postgres::GenericClient,
    id: &RunId,
    up: &RunUpdate,
    now: Millis,
) -> StoreResult<Option<Run>> {
    if !matches!(up.state, RunState::Finished | RunState::Stopped) {
        return Ok(None);
    }
    let sql = format!(
        "WITH ctx AS (
             SELECT i.id FROM runs r JOIN items i ON i.id = r.item_id
             WHERE r.id = $1 AND i.fence = $8 AND i.state = 'claimed'
             FOR UPDATE OF i),
         run AS (
             UPDATE runs SET state = $2, exit_code = coalesce($3, exit_code),
                 message = CASE WHEN $2 = 'stopped' AND stop_reason IS NOT NULL
                                THEN stop_reason ELSE coalesce($4, message) END,
                 handle = coalesce($5, handle),
                 started_at_ms = coalesce(started_at_ms, $7),
                 ended_at_ms = $6, updated_at_ms = $6
             WHERE id = $1 AND item_id = (SELECT id FROM ctx)
               AND state NOT IN ('finished', 'failed', 'stopped', 'preempted', 'lost')
             RETURNING {RUN_COLUMNS}),
         item AS (UPDATE items SET state = $2, updated_at_ms = $6
                  WHERE id = (SELECT item_id FROM run)),
         revoked AS (DELETE FROM tokens WHERE run_id = $1 AND EXISTS (SELECT 1 FROM run))
         SELECT * FROM run"
    );
    let handle = up.handle.as_ref().map(|h| h.to_string());
    let stmt = client.prepare_cached(&sql).await?;
    let row = client
        .query_opt(
            &stmt,
            &[
                &id.as_str(),
                &up.state.as_str(),
                &up.exit_code,
                &up.message,
                &handle,
                &now,
                &crate::rules::reported_start(up, now),
                &up.fence,
            ],
        )
        .await?;
    row.as_ref().map(rows::run).transpose()
}

/// A run's end decides its item's, by [`crate::rules::item_outcome`].
async fn end_item(tx: &Tx<'_>, ctx: &Context, up: &RunUpdate, now: Millis) -> StoreResult<()> {
    let item = ctx.item_id;
    let retry = match crate::rules::may_retry(up.state) {
        true => Some(retry_context(tx, item).await?),
        false => None,
    };
    let end = EndContext {
        scheduler: ctx.scheduler,
        retry,
    };
    match crate::rules::item_outcome(&end, up) {
        ItemOutcome::Ends(state) => set_state(tx, item, state, now).await,
        ItemOutcome::Fails { phase, message } => {
            mark_failed(tx, item, &message, phase, &[], now).await
        }
        ItemOutcome::Requeued { attempt, retry } => {
            let why = up.message.as_deref().unwrap_or(up.state.as_str());
            requeue(tx, item, attempt, retry.as_ref(), why, now).await
        }
        ItemOutcome::Unchanged => Ok(()),
    }
}

async fn set_state(tx: &Tx<'_>, item: ItemId, state: &str, now: Millis) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached("UPDATE items SET state = $2, updated_at_ms = $3 WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&item.0, &state, &now]).await?;
    Ok(())
}

/// An item's retry context: its queue's policy, its launch's, its retries so far.
pub(super) async fn retry_context(tx: &Tx<'_>, item: ItemId) -> StoreResult<RetryContext> {
    let stmt = tx
        .prepare_cached(
            "SELECT q.retry, q.requeue_lost, q.max_attempts, i.spec, i.retries
             FROM items i JOIN queues q ON q.id = i.queue_id WHERE i.id = $1",
        )
        .await?;
    let row = tx.query_one(&stmt, &[&item.0]).await?;
    RetryContext::read(
        get::<Option<String>>(&row, 0)?.as_deref(),
        get(&row, 1)?,
        get::<i64>(&row, 2)? as u32,
        &get::<String>(&row, 3)?,
        &get::<String>(&row, 4)?,
    )
}

/// Puts an item back in its queue (see the SQLite store's `requeue`).
pub(super) async fn requeue(
    tx: &Tx<'_>,
    item: ItemId,
    count_attempt: bool,
    retry: Option<&Retry>,
    why: &str,
    now: Millis,
) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached(
            "UPDATE items SET state = 'pending', run_id = NULL, agent_id = NULL,
                 lease_expires_at_ms = NULL, attempts = attempts + $2,
                 retries = coalesce($3, retries), available_at_ms = $4, updated_at_ms = $5
             WHERE id = $1",
        )
        .await?;
    let counts = retry.map(|r| r.counts.clone());
    let available = retry.map(|r| now + r.wait_ms);
    tx.execute(
        &stmt,
        &[&item.0, &(count_attempt as i64), &counts, &available, &now],
    )
    .await?;
    if let Some(retry) = retry {
        let warn = tx
            .prepare_cached(
                "INSERT INTO item_warnings (item_id, message, at_ms) VALUES ($1, $2, $3)",
            )
            .await?;
        tx.execute(
            &warn,
            &[&item.0, &crate::retries::warning(retry, why), &now],
        )
        .await?;
    }
    Ok(())
}

pub async fn list(tx: &Tx<'_>, filter: &RunFilter) -> StoreResult<Vec<Run>> {
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000) as i64;
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE ($1::TEXT IS NULL OR queue = $1) AND ($2::TEXT IS NULL OR state = $2)
           AND ($3::BIGINT IS NULL OR agent_id = $3)
           AND ($5::TEXT IS NULL OR EXISTS (SELECT 1 FROM items i WHERE i.id = runs.item_id
                AND i.sweep_id = $5 AND i.kind = 'run'))
           AND ($6::TEXT IS NULL OR EXISTS (SELECT 1 FROM items i WHERE i.id = runs.item_id
                AND (i.spec::jsonb->>'job' = $6 OR starts_with(i.spec::jsonb->>'job', $6 || ':'))))
         ORDER BY seq DESC LIMIT $4"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let state = filter.state.map(|s| s.as_str());
    let agent = filter.agent.map(|a| a.0);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &filter.queue,
        &state,
        &agent,
        &limit,
        &filter.sweep,
        &filter.job,
    ];
    tx.query(&stmt, &params)
        .await?
        .iter()
        .map(rows::run)
        .collect()
}

pub async fn request_stop(
    tx: &Tx<'_>,
    id: &RunId,
    reason: Option<&str>,
    now: Millis,
) -> StoreResult<Run> {
    // Lock the item before the run, as every other write does.
    let ctx = context(tx, id).await?;
    if ctx.state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "run {id} has already ended ({})",
            ctx.state
        )));
    }
    let run = tx
        .prepare_cached(
            "UPDATE runs SET stop_requested = TRUE, stop_reason = coalesce($3, stop_reason),
                 updated_at_ms = $2 WHERE id = $1",
        )
        .await?;
    tx.execute(&run, &[&id.as_str(), &now, &reason]).await?;
    let item = tx
        .prepare_cached(
            "UPDATE items SET cancel_requested = TRUE, updated_at_ms = $2 WHERE id = $1",
        )
        .await?;
    tx.execute(&item, &[&ctx.item_id.0, &now]).await?;
    rows::load_run(tx, id).await
}
