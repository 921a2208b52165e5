//! The lease protocol on PostgreSQL: the SQLite store's rules, made safe for several server
//! replicas writing at once. Leasing takes candidates with `FOR UPDATE SKIP LOCKED`, so
//! concurrent leasers never wait on each other nor take the same item; every other write
//! about an item first locks its row (`FOR UPDATE`), so checks and writes cannot interleave.
//! Lock order is always item, then run, then tokens.

use super::rows::{self, get, ITEM_COLUMNS};
use super::Tx;
use crate::{Ack, Expired, LeaseParams, StoreError, StoreResult};
use liftoff_types::api::FailRequest;
use liftoff_types::{Item, ItemId, ItemState, Lease, Millis, Phase, Run, RunState};
use std::collections::HashMap;
use std::str::FromStr;

/// The parts of an item the protocol checks before a write, read under the item's lock.
pub struct Current {
    pub state: ItemState,
    pub queue: String,
    pub agent_id: Option<i64>,
    pub fence: i64,
    pub lease_expires_at_ms: Option<Millis>,
    pub run_id: Option<String>,
}

pub async fn current(tx: &Tx<'_>, id: ItemId) -> StoreResult<Current> {
    let stmt = tx
        .prepare_cached(
            "SELECT i.state, i.fence, i.lease_expires_at_ms, i.run_id, q.name, i.agent_id
             FROM items i JOIN queues q ON q.id = i.queue_id WHERE i.id = $1 FOR UPDATE OF i",
        )
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.0])
        .await?
        .ok_or_else(|| StoreError::not_found("item", id))?;
    Ok(Current {
        state: ItemState::from_str(&get::<String>(&row, 0)?).map_err(StoreError::Corrupt)?,
        fence: get(&row, 1)?,
        lease_expires_at_ms: get(&row, 2)?,
        run_id: get(&row, 3)?,
        queue: get(&row, 4)?,
        agent_id: get(&row, 5)?,
    })
}

/// Checks the fence and that the item is in one of `states`.
fn guard(id: ItemId, cur: &Current, fence: i64, states: &[ItemState]) -> StoreResult<()> {
    crate::rules::guard(id, cur.state, cur.fence, fence, states)
}

/// A lease from one queue in a single statement, outside any explicit transaction (one
/// round trip instead of seven): the common case of an agent with one queue. Returns `None`
/// when it took nothing, and the caller then runs [`lease`] to tell an empty queue from an
/// unknown queue or agent. A queue with `max_concurrency` takes nothing here: its count
/// must be read under the queue's lock, which [`lease`] takes.
pub async fn lease_one_queue(
    client: &deadpool_postgres::Client,
    p: &LeaseParams,
    now: Millis,
) -> StoreResult<Option<Vec<Lease>>> {
    let sql = format!(
        "WITH runs AS (
             SELECT i.id, i.rank FROM items i
             WHERE $6 AND i.queue_id = (SELECT id FROM queues WHERE name = $1
                   AND max_concurrency IS NULL)
               AND i.state = 'pending' AND i.kind = 'run'
               AND (i.available_at_ms IS NULL OR i.available_at_ms <= $5)
               AND EXISTS (SELECT 1 FROM agents WHERE id = $2)
               AND (i.sweep_id IS NULL OR NOT EXISTS
                   (SELECT 1 FROM sweeps s WHERE s.id = i.sweep_id AND s.state = 'paused'))
             ORDER BY i.rank, i.id LIMIT $3 FOR UPDATE SKIP LOCKED),
         schedulers AS (
             SELECT i.id, i.rank FROM items i
             WHERE $7 AND i.queue_id = (SELECT id FROM queues WHERE name = $1
                   AND max_concurrency IS NULL)
               AND i.state = 'pending' AND i.kind = 'scheduler'
               AND (i.available_at_ms IS NULL OR i.available_at_ms <= $5)
               AND EXISTS (SELECT 1 FROM agents WHERE id = $2)
             ORDER BY i.rank, i.id LIMIT $3 FOR UPDATE SKIP LOCKED),
         -- each kind walks its own part of the pending index; the lease takes the first
         -- `max` of both in lease order
         picked AS (
             SELECT id FROM (SELECT id, rank FROM runs UNION ALL SELECT id, rank FROM schedulers) c
             ORDER BY rank, id LIMIT $3)
         UPDATE items i SET state = 'leased', fence = i.fence + 1, agent_id = $2,
             lease_expires_at_ms = $4, updated_at_ms = $5
         FROM queues q WHERE q.id = i.queue_id AND i.id IN (SELECT id FROM picked)
         RETURNING {ITEM_COLUMNS},
             (SELECT coalesce(json_agg(json_build_object('message', w.message, 'at_ms', w.at_ms)
                  ORDER BY w.seq), '[]')::TEXT FROM item_warnings w WHERE w.item_id = i.id),
             i.rank"
    );
    let expires = now + p.lease_ms as i64;
    let stmt = client.prepare_cached(&sql).await?;
    let rows = client
        .query(
            &stmt,
            &[
                &p.queues[0],
                &p.agent.0,
                &(p.max as i64),
                &expires,
                &now,
                &p.runs,
                &p.schedulers,
            ],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut ranked = rows
        .iter()
        .map(|row| {
            let mut item = rows::item(row)?;
            item.warnings = serde_json::from_str(&get::<String>(row, 21)?)?;
            let rank: i64 = get(row, 22)?;
            Ok((rank, item))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    // Lease order (the UPDATE returns rows in no particular order).
    ranked.sort_by_key(|(rank, item)| (*rank, item.id.0));
    Ok(Some(
        ranked
            .into_iter()
            .map(|(_, item)| Lease {
                fence: item.fence,
                expires_at_ms: expires,
                item,
            })
            .collect(),
    ))
}

/// A queue's id and, when it caps its live runs, how many more may start. A capped queue's
/// row is locked (`FOR NO KEY UPDATE`, which enqueues' foreign-key checks do not wait on)
/// until the lease commits, so two replicas leasing from it at once cannot both count the
/// same free room.
async fn queue_room(tx: &Tx<'_>, name: &str) -> StoreResult<(i64, Option<u32>)> {
    let stmt = tx
        .prepare_cached("SELECT id, max_concurrency FROM queues WHERE name = $1")
        .await?;
    let row = tx
        .query_opt(&stmt, &[&name])
        .await?
        .ok_or_else(|| StoreError::not_found("queue", name))?;
    let (id, cap): (i64, Option<i64>) = (get(&row, 0)?, get(&row, 1)?);
    let Some(cap) = cap else {
        return Ok((id, None));
    };
    let lock = tx
        .prepare_cached("SELECT 1 FROM queues WHERE id = $1 FOR NO KEY UPDATE")
        .await?;
    tx.query_one(&lock, &[&id]).await?;
    let count = tx.prepare_cached(crate::rules::LIVE_RUNS).await?;
    let live: i64 = get(&tx.query_one(&count, &[&id]).await?, 0)?;
    Ok((id, crate::rules::room(Some(cap as u32), live)))
}

/// `turn` counts this agent's lease calls on this replica: the call starts its round-robin
/// at queue `turn % queues.len()`.
pub async fn lease(
    tx: &Tx<'_>,
    p: &LeaseParams,
    turn: u64,
    now: Millis,
) -> StoreResult<Vec<Lease>> {
    if p.queues.is_empty() {
        return Err(StoreError::invalid("queues", "name at least one queue"));
    }
    let agent = tx
        .prepare_cached("SELECT 1 FROM agents WHERE id = $1")
        .await?;
    if tx.query_opt(&agent, &[&p.agent.0]).await?.is_none() {
        return Err(StoreError::not_found("agent", p.agent));
    }
    let n = p.queues.len();
    let start = (turn % n as u64) as usize;
    // One walk of the pending index per kind asked for (an agent asking for schedulers only
    // never walks past the queue's runs).
    let pick = tx
        .prepare_cached(
            "SELECT i.rank, i.id FROM items i
             WHERE i.queue_id = $1 AND i.state = 'pending' AND i.kind = $3
                 AND (i.available_at_ms IS NULL OR i.available_at_ms <= $4)
                 AND (i.sweep_id IS NULL OR i.kind <> 'run' OR NOT EXISTS
                     (SELECT 1 FROM sweeps s WHERE s.id = i.sweep_id AND s.state = 'paused'))
             ORDER BY i.rank, i.id LIMIT $2 FOR UPDATE OF i SKIP LOCKED",
        )
        .await?;
    let kinds = crate::rules::lease_kinds(p);
    let mut candidates = Vec::with_capacity(n);
    for k in 0..n {
        let (queue_id, room) = queue_room(tx, &p.queues[(start + k) % n]).await?;
        let mut picked = Vec::new();
        for kind in &kinds {
            let max = match (*kind, room) {
                ("run", Some(room)) => room.min(p.max),
                _ => p.max,
            };
            if max == 0 {
                continue;
            }
            for r in tx
                .query(&pick, &[&queue_id, &(max as i64), kind, &now])
                .await?
            {
                picked.push((get::<i64>(&r, 0)?, get::<i64>(&r, 1)?));
            }
        }
        candidates.push(crate::rules::merge_candidates(picked, p.max));
    }
    // One item per queue per round, so a deep queue cannot starve the others.
    let mut chosen = Vec::new();
    'rounds: for round in 0.. {
        let mut any = false;
        for ids in &candidates {
            if chosen.len() as u32 >= p.max {
                break 'rounds;
            }
            if let Some(&id) = ids.get(round) {
                any = true;
                chosen.push(id);
            }
        }
        if !any {
            break;
        }
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let expires = now + p.lease_ms as i64;
    let sql = format!(
        "UPDATE items i SET state = 'leased', fence = i.fence + 1, agent_id = $2,
             lease_expires_at_ms = $3, updated_at_ms = $4
         FROM queues q WHERE q.id = i.queue_id AND i.id = ANY($1)
         RETURNING {ITEM_COLUMNS}"
    );
    let take = tx.prepare_cached(&sql).await?;
    let taken = tx
        .query(&take, &[&chosen, &p.agent.0, &expires, &now])
        .await?;
    let mut by_id: HashMap<i64, Item> = HashMap::with_capacity(taken.len());
    for row in &taken {
        let item = rows::item(row)?;
        by_id.insert(item.id.0, item);
    }
    // Warnings survive a return to the queue; fetch them for the whole batch at once.
    let warned = tx
        .prepare_cached(
            "SELECT item_id, message, at_ms FROM item_warnings WHERE item_id = ANY($1)
             ORDER BY seq",
        )
        .await?;
    for row in tx.query(&warned, &[&chosen]).await? {
        if let Some(item) = by_id.get_mut(&get::<i64>(&row, 0)?) {
            item.warnings.push(liftoff_types::Warning {
                message: get(&row, 1)?,
                at_ms: get(&row, 2)?,
            });
        }
    }
    Ok(chosen
        .iter()
        .filter_map(|id| by_id.remove(id))
        .map(|item| Lease {
            fence: item.fence,
            expires_at_ms: expires,
            item,
        })
        .collect())
}

/// An ack in a single statement, outside any explicit transaction (one round trip instead
/// of five): the common case of an item leased at this fence, acked before its lease ran out,
/// with a run id not yet taken. Returns `None` when it changed nothing; the caller then runs
/// [`ack`], which says why (or answers an ack sent again). The item's row is locked first,
/// as in [`ack`], and the run is inserted and the item claimed only if the row passed.
pub async fn ack_at_once(
    client: &deadpool_postgres::Client,
    id: ItemId,
    ack: &Ack,
    now: Millis,
) -> StoreResult<Option<Run>> {
    let sql = format!(
        "WITH cur AS (
             SELECT i.id, q.name AS queue, i.agent_id
             FROM items i JOIN queues q ON q.id = i.queue_id
             WHERE i.id = $2 AND i.state = 'leased' AND i.fence = $3
               AND (i.lease_expires_at_ms IS NULL OR i.lease_expires_at_ms >= $7)
             FOR UPDATE OF i),
         run AS (
             INSERT INTO runs (id, item_id, queue, agent_id, state, handle, created_at_ms,
                 started_at_ms, updated_at_ms)
             SELECT $1, id, queue, agent_id, $4, $5, $7, $6, $7 FROM cur
             ON CONFLICT (id) DO NOTHING RETURNING {}),
         claim AS (
             UPDATE items SET state = 'claimed', run_id = $1, lease_expires_at_ms = NULL,
                 updated_at_ms = $7
             WHERE id = (SELECT item_id FROM run))
         SELECT * FROM run",
        rows::RUN_COLUMNS
    );
    let started = (ack.state == RunState::Running).then_some(now);
    let stmt = client.prepare_cached(&sql).await?;
    let row = client
        .query_opt(
            &stmt,
            &[
                &ack.run_id.as_str(),
                &id.0,
                &ack.fence,
                &ack.state.as_str(),
                &ack.handle.to_string(),
                &started,
                &now,
            ],
        )
        .await?;
    row.as_ref().map(rows::run).transpose()
}

pub async fn ack(tx: &Tx<'_>, id: ItemId, ack: &Ack, now: Millis) -> StoreResult<Run> {
    let cur = current(tx, id).await?;
    // The same ack again (its answer was lost on the way): answer it again, so the agent
    // does not drop a run the server already counts as started.
    if cur.state == ItemState::Claimed
        && cur.fence == ack.fence
        && cur.run_id.as_deref() == Some(ack.run_id.as_str())
    {
        return rows::load_run(tx, &ack.run_id).await;
    }
    guard(id, &cur, ack.fence, &[ItemState::Leased])?;
    if cur.lease_expires_at_ms.is_some_and(|t| t < now) {
        return Err(StoreError::Conflict(format!(
            "the lease on item {id} expired before the ack"
        )));
    }
    if ack.state.is_terminal() {
        return Err(StoreError::invalid(
            "state",
            "an ack starts a run: its state must not be terminal",
        ));
    }
    let started = (ack.state == RunState::Running).then_some(now);
    let sql = format!(
        "INSERT INTO runs (id, item_id, queue, agent_id, state, handle, created_at_ms,
             started_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7) ON CONFLICT (id) DO NOTHING
         RETURNING {}",
        rows::RUN_COLUMNS
    );
    let insert = tx.prepare_cached(&sql).await?;
    let inserted = tx
        .query_opt(
            &insert,
            &[
                &ack.run_id.as_str(),
                &id.0,
                &cur.queue,
                &cur.agent_id,
                &ack.state.as_str(),
                &ack.handle.to_string(),
                &now,
                &started,
            ],
        )
        .await?;
    let Some(row) = inserted else {
        return Err(StoreError::Conflict(format!(
            "run id {} is already taken",
            ack.run_id
        )));
    };
    let claim = tx
        .prepare_cached(
            "UPDATE items SET state = 'claimed', run_id = $2, lease_expires_at_ms = NULL,
                 updated_at_ms = $3 WHERE id = $1",
        )
        .await?;
    tx.execute(&claim, &[&id.0, &ack.run_id.as_str(), &now])
        .await?;
    rows::run(&row)
}

pub async fn fail(tx: &Tx<'_>, id: ItemId, report: &FailRequest, now: Millis) -> StoreResult<Item> {
    let cur = current(tx, id).await?;
    guard(
        id,
        &cur,
        report.fence,
        &[ItemState::Leased, ItemState::Claimed],
    )?;
    let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
    let cause = crate::retries::failure_cause(report.phase, report.exit_code, report.cause);
    match cause.filter(|_| cur.state == ItemState::Claimed) {
        Some(cause) => {
            let ctx = super::runs::retry_context(tx, id).await?;
            match ctx.retry(cause, report.exit_code) {
                Some(retry) => {
                    let why = &report.message;
                    super::runs::requeue(tx, id, true, Some(&retry), why, now).await?
                }
                None => {
                    let message = report.message.clone() + &ctx.exhausted(cause);
                    mark_failed(tx, id, &message, report.phase, &names, now).await?
                }
            }
        }
        None => mark_failed(tx, id, &report.message, report.phase, &names, now).await?,
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO item_files (item_id, name, content) VALUES ($1, $2, $3)
             ON CONFLICT (item_id, name) DO UPDATE SET content = excluded.content",
        )
        .await?;
    for file in &report.files {
        tx.execute(&insert, &[&id.0, &file.name, &file.content])
            .await?;
    }
    if let Some(run_id) = cur.run_id {
        let end = tx
            .prepare_cached(
                "UPDATE runs SET state = 'failed', message = $2, ended_at_ms = $3,
                     updated_at_ms = $3, exit_code = coalesce($4, exit_code)
                 WHERE id = $1
                   AND state NOT IN ('finished', 'failed', 'stopped', 'preempted', 'lost')",
            )
            .await?;
        tx.execute(&end, &[&run_id, &report.message, &now, &report.exit_code])
            .await?;
        let run: liftoff_types::RunId = run_id.parse().map_err(StoreError::Corrupt)?;
        super::tokens::revoke_run(tx, &run).await?;
    }
    rows::load_item(tx, id).await
}

/// Ends an item `failed` with a message and phase (no fence check: callers did it).
pub async fn mark_failed(
    tx: &Tx<'_>,
    id: ItemId,
    message: &str,
    phase: Phase,
    files: &[&str],
    now: Millis,
) -> StoreResult<()> {
    let files = (!files.is_empty())
        .then(|| serde_json::to_string(files))
        .transpose()?;
    let stmt = tx
        .prepare_cached(
            "UPDATE items SET state = 'failed', fail_message = $2, fail_phase = $3,
                 fail_files = $4, lease_expires_at_ms = NULL, updated_at_ms = $5 WHERE id = $1",
        )
        .await?;
    tx.execute(&stmt, &[&id.0, &message, &phase.as_str(), &files, &now])
        .await?;
    Ok(())
}

/// Most warnings one item keeps: a looping agent must not grow the store without bound.
const MAX_WARNINGS: i64 = 100;

pub async fn warn(
    tx: &Tx<'_>,
    id: ItemId,
    fence: i64,
    message: &str,
    now: Millis,
) -> StoreResult<()> {
    let cur = current(tx, id).await?;
    guard(id, &cur, fence, &[ItemState::Leased, ItemState::Claimed])?;
    let count = tx
        .prepare_cached("SELECT count(*) FROM item_warnings WHERE item_id = $1")
        .await?;
    let count: i64 = get(&tx.query_one(&count, &[&id.0]).await?, 0)?;
    if count >= MAX_WARNINGS {
        return Err(StoreError::invalid(
            "message",
            format!("item {id} already has {MAX_WARNINGS} warnings"),
        ));
    }
    let insert = tx
        .prepare_cached("INSERT INTO item_warnings (item_id, message, at_ms) VALUES ($1, $2, $3)")
        .await?;
    tx.execute(&insert, &[&id.0, &message, &now]).await?;
    Ok(())
}

pub async fn release(tx: &Tx<'_>, id: ItemId, fence: i64, now: Millis) -> StoreResult<()> {
    let cur = current(tx, id).await?;
    guard(id, &cur, fence, &[ItemState::Leased])?;
    let stmt = tx
        .prepare_cached(
            "UPDATE items SET state = 'pending', agent_id = NULL, lease_expires_at_ms = NULL,
                 updated_at_ms = $2 WHERE id = $1",
        )
        .await?;
    tx.execute(&stmt, &[&id.0, &now]).await?;
    Ok(())
}

pub async fn cancel(tx: &Tx<'_>, id: ItemId, now: Millis) -> StoreResult<Item> {
    let cur = current(tx, id).await?;
    match cur.state {
        ItemState::Pending | ItemState::Leased => {
            // The fence moves so that a holder of the lease finds its next write stale.
            let stmt = tx
                .prepare_cached(
                    "UPDATE items SET state = 'cancelled', fence = fence + 1,
                         lease_expires_at_ms = NULL, updated_at_ms = $2 WHERE id = $1",
                )
                .await?;
            tx.execute(&stmt, &[&id.0, &now]).await?;
        }
        ItemState::Claimed => {
            let item = tx
                .prepare_cached(
                    "UPDATE items SET cancel_requested = TRUE, updated_at_ms = $2 WHERE id = $1",
                )
                .await?;
            tx.execute(&item, &[&id.0, &now]).await?;
            let run = tx
                .prepare_cached(
                    "UPDATE runs SET stop_requested = TRUE, updated_at_ms = $2 WHERE id = $1",
                )
                .await?;
            tx.execute(&run, &[&cur.run_id, &now]).await?;
        }
        done => return Err(StoreError::Conflict(format!("item {id} is already {done}"))),
    }
    rows::load_item(tx, id).await
}

/// `cancel --force`, as the SQLite store does it.
pub async fn force_cancel(tx: &Tx<'_>, id: ItemId, reason: &str, now: Millis) -> StoreResult<Item> {
    let cur = current(tx, id).await?;
    if cur.state != ItemState::Claimed {
        return cancel(tx, id, now).await;
    }
    let item = tx
        .prepare_cached(
            "UPDATE items SET state = 'cancelled', fence = fence + 1, cancel_requested = TRUE,
                 lease_expires_at_ms = NULL, updated_at_ms = $2 WHERE id = $1",
        )
        .await?;
    tx.execute(&item, &[&id.0, &now]).await?;
    let run = tx
        .prepare_cached(
            "UPDATE runs SET state = 'lost', message = $2, stop_requested = TRUE,
                 ended_at_ms = $3, updated_at_ms = $3
             WHERE id = $1 AND state NOT IN ('finished', 'failed', 'stopped', 'preempted', 'lost')",
        )
        .await?;
    tx.execute(&run, &[&cur.run_id, &reason, &now]).await?;
    let warn = tx
        .prepare_cached("INSERT INTO item_warnings (item_id, message, at_ms) VALUES ($1, $2, $3)")
        .await?;
    tx.execute(&warn, &[&id.0, &reason, &now]).await?;
    rows::load_item(tx, id).await
}

/// Expired leases, locked with `SKIP LOCKED`: when several replicas reap at once, each item
/// is handed back by exactly one of them, and none waits on another's writes.
pub async fn expire(tx: &Tx<'_>, now: Millis) -> StoreResult<Expired> {
    let stmt = tx
        .prepare_cached(
            "SELECT i.id, q.name, i.attempts, q.max_attempts FROM items i
             JOIN queues q ON q.id = i.queue_id
             WHERE i.state = 'leased' AND i.lease_expires_at_ms < $1
             FOR UPDATE OF i SKIP LOCKED",
        )
        .await?;
    let expired = tx.query(&stmt, &[&now]).await?;
    let mut out = Expired::default();
    for row in &expired {
        let (id, queue): (i64, String) = (get(row, 0)?, get(row, 1)?);
        let (attempts, max): (i64, i64) = (get(row, 2)?, get(row, 3)?);
        let reason = "the item's lease expired without an ack";
        if give_back(tx, ItemId(id), attempts, max, reason, now).await? {
            out.requeued.push((ItemId(id), queue));
        } else {
            out.failed.push(ItemId(id));
        }
    }
    Ok(out)
}

/// Ends a lease that was not acked: back to `pending` with one more attempt, or `failed`
/// (phase `agent`) at the queue's limit. Returns whether the item went back.
pub async fn give_back(
    tx: &Tx<'_>,
    id: ItemId,
    attempts: i64,
    max: i64,
    reason: &str,
    now: Millis,
) -> StoreResult<bool> {
    let attempts = attempts + 1;
    if attempts >= max {
        let stmt = tx
            .prepare_cached("UPDATE items SET attempts = $2 WHERE id = $1")
            .await?;
        tx.execute(&stmt, &[&id.0, &attempts]).await?;
        let message = format!("{reason} {attempts} time(s); the queue allows {max}");
        mark_failed(tx, id, &message, Phase::Agent, &[], now).await?;
        return Ok(false);
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE items SET state = 'pending', attempts = $2, agent_id = NULL,
                 lease_expires_at_ms = NULL, updated_at_ms = $3 WHERE id = $1",
        )
        .await?;
    tx.execute(&stmt, &[&id.0, &attempts, &now]).await?;
    Ok(true)
}
