//! The lease protocol: lease, ack, fail, warn, release, cancel and lease expiry.
//!
//! Every write about an item after its lease carries the fence the lease handed out. The
//! fence grows with each lease (and with a cancel), so a holder whose lease expired and was
//! given to someone else finds its fence stale and gets a conflict instead of overwriting.

use super::rows;
use crate::{Ack, Expired, LeaseParams, StoreError, StoreResult};
use liftoff_types::api::FailRequest;
use liftoff_types::{ItemId, ItemState, Lease, Millis, Phase};
use rusqlite::{params, Connection, OptionalExtension};
use std::str::FromStr;

/// The parts of an item the protocol checks before a write.
struct Current {
    state: ItemState,
    queue: String,
    agent_id: Option<i64>,
    fence: i64,
    lease_expires_at_ms: Option<Millis>,
    run_id: Option<String>,
}

fn current(conn: &Connection, id: ItemId) -> StoreResult<Current> {
    let row = conn
        .prepare_cached(
            "SELECT i.state, i.fence, i.lease_expires_at_ms, i.run_id, q.name, i.agent_id
             FROM items i JOIN queues q ON q.id = i.queue_id WHERE i.id = ?1",
        )?
        .query_row([id.0], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?
        .ok_or_else(|| StoreError::not_found("item", id))?;
    Ok(Current {
        state: ItemState::from_str(&row.0).map_err(StoreError::Corrupt)?,
        fence: row.1,
        lease_expires_at_ms: row.2,
        run_id: row.3,
        queue: row.4,
        agent_id: row.5,
    })
}

/// Checks the fence and that the item is in one of `states`.
fn guard(id: ItemId, cur: &Current, fence: i64, states: &[ItemState]) -> StoreResult<()> {
    crate::rules::guard(id, cur.state, cur.fence, fence, states)
}

/// `turn` counts this agent's lease calls: the call starts its round-robin at queue
/// `turn % queues.len()`.
pub fn lease(
    conn: &Connection,
    p: &LeaseParams,
    turn: u64,
    now: Millis,
) -> StoreResult<Vec<Lease>> {
    if p.queues.is_empty() {
        return Err(StoreError::invalid("queues", "name at least one queue"));
    }
    conn.prepare_cached("SELECT 1 FROM agents WHERE id = ?1")?
        .query_row([p.agent.0], |_| Ok(()))
        .optional()?
        .ok_or_else(|| StoreError::not_found("agent", p.agent))?;
    let n = p.queues.len();
    let start = (turn % n as u64) as usize;
    let order: Vec<&String> = (0..n).map(|k| &p.queues[(start + k) % n]).collect();
    let mut candidates = Vec::with_capacity(n);
    // One walk of the pending index per kind asked for (an agent asking for schedulers only
    // never walks past the queue's runs).
    let mut pick = conn.prepare_cached(
        "SELECT rank, id FROM items WHERE queue_id = ?1 AND state = 'pending' AND kind = ?3
             AND (available_at_ms IS NULL OR available_at_ms <= ?4)
             AND (sweep_id IS NULL OR kind <> 'run' OR NOT EXISTS
                 (SELECT 1 FROM sweeps s WHERE s.id = items.sweep_id AND s.state = 'paused'))
         ORDER BY rank, id LIMIT ?2",
    )?;
    let kinds = crate::rules::lease_kinds(p);
    for name in &order {
        let (queue_id, cap) = queue_cap(conn, name)?;
        let room = match cap {
            Some(_) => {
                let live = conn
                    .prepare_cached(crate::rules::LIVE_RUNS)?
                    .query_row([queue_id], |r| r.get(0))?;
                crate::rules::room(cap, live)
            }
            None => None,
        };
        let mut picked = Vec::new();
        for kind in &kinds {
            let max = match (*kind, room) {
                ("run", Some(room)) => room.min(p.max),
                _ => p.max,
            };
            if max == 0 {
                continue;
            }
            let rows = pick.query_map(params![queue_id, max, kind, now], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                picked.push(row?);
            }
        }
        candidates.push(crate::rules::merge_candidates(picked, p.max));
    }
    let expires = now + p.lease_ms as i64;
    let mut take = conn.prepare_cached(
        "UPDATE items SET state = 'leased', fence = fence + 1, agent_id = ?2,
             lease_expires_at_ms = ?3, updated_at_ms = ?4
         WHERE id = ?1 AND state = 'pending'",
    )?;
    let mut leases = Vec::new();
    // One item per queue per round, so a deep queue cannot starve the others.
    for round in 0.. {
        let mut any = false;
        for ids in &candidates {
            if leases.len() as u32 >= p.max {
                return Ok(leases);
            }
            if let Some(&id) = ids.get(round) {
                any = true;
                if take.execute(params![id, p.agent.0, expires, now])? == 1 {
                    let item = rows::load_item(conn, ItemId(id))?;
                    leases.push(Lease {
                        fence: item.fence,
                        expires_at_ms: expires,
                        item,
                    });
                }
            }
        }
        if !any {
            break;
        }
    }
    Ok(leases)
}

/// A queue's id and its cap on live runs, or `NotFound`.
fn queue_cap(conn: &Connection, name: &str) -> StoreResult<(i64, Option<u32>)> {
    conn.prepare_cached("SELECT id, max_concurrency FROM queues WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::not_found("queue", name))
}

/// Stores an ack (the caller reads the run back if it wants it).
pub fn ack(conn: &Connection, id: ItemId, ack: &Ack, now: Millis) -> StoreResult<()> {
    let cur = current(conn, id)?;
    // The same ack again (its answer was lost on the way): answer it again, so the agent
    // does not drop a run the server already counts as started.
    if cur.state == ItemState::Claimed
        && cur.fence == ack.fence
        && cur.run_id.as_deref() == Some(ack.run_id.as_str())
    {
        return Ok(());
    }
    guard(id, &cur, ack.fence, &[ItemState::Leased])?;
    let (queue, agent) = (&cur.queue, cur.agent_id);
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
    let started = (ack.state == liftoff_types::RunState::Running).then_some(now);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO runs (id, item_id, queue, agent_id, state, handle, created_at_ms,
                 started_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            ack.run_id.as_str(),
            id.0,
            queue,
            agent,
            ack.state.as_str(),
            ack.handle.to_string(),
            now,
            started
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "run id {} is already taken",
            ack.run_id
        )));
    }
    conn.prepare_cached(
        "UPDATE items SET state = 'claimed', run_id = ?2, lease_expires_at_ms = NULL,
             updated_at_ms = ?3 WHERE id = ?1",
    )?
    .execute(params![id.0, ack.run_id.as_str(), now])?;
    Ok(())
}

pub fn fail(
    conn: &Connection,
    id: ItemId,
    report: &FailRequest,
    now: Millis,
) -> StoreResult<liftoff_types::Item> {
    let cur = current(conn, id)?;
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
            let ctx = super::runs::retry_context(conn, id)?;
            match ctx.retry(cause, report.exit_code) {
                Some(retry) => {
                    super::runs::requeue(conn, id, true, Some(&retry), &report.message, now)?
                }
                None => {
                    let message = report.message.clone() + &ctx.exhausted(cause);
                    mark_failed(conn, id, &message, report.phase, &names, now)?
                }
            }
        }
        None => mark_failed(conn, id, &report.message, report.phase, &names, now)?,
    }
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO item_files (item_id, name, content) VALUES (?1, ?2, ?3)",
    )?;
    for file in &report.files {
        insert.execute(params![id.0, file.name, file.content])?;
    }
    if let Some(run_id) = cur.run_id {
        conn.prepare_cached(
            "UPDATE runs SET state = 'failed', message = ?2, ended_at_ms = ?3, updated_at_ms = ?3,
                 exit_code = coalesce(?4, exit_code)
             WHERE id = ?1 AND state NOT IN ('finished', 'failed', 'stopped', 'preempted', 'lost')",
        )?
        .execute(params![run_id, report.message, now, report.exit_code])?;
        let run: liftoff_types::RunId = run_id.parse().map_err(StoreError::Corrupt)?;
        super::tokens::revoke_run(conn, &run)?;
    }
    rows::load_item(conn, id)
}

/// Ends an item `failed` with a message and phase (no fence check: callers did it).
pub fn mark_failed(
    conn: &Connection,
    id: ItemId,
    message: &str,
    phase: Phase,
    files: &[&str],
    now: Millis,
) -> StoreResult<()> {
    let files = (!files.is_empty())
        .then(|| serde_json::to_string(files))
        .transpose()?;
    conn.prepare_cached(
        "UPDATE items SET state = 'failed', fail_message = ?2, fail_phase = ?3, fail_files = ?4,
             lease_expires_at_ms = NULL, updated_at_ms = ?5 WHERE id = ?1",
    )?
    .execute(params![id.0, message, phase.as_str(), files, now])?;
    Ok(())
}

/// Most warnings one item keeps: a looping agent must not grow the store without bound.
const MAX_WARNINGS: u64 = 100;

pub fn warn(
    conn: &Connection,
    id: ItemId,
    fence: i64,
    message: &str,
    now: Millis,
) -> StoreResult<()> {
    let cur = current(conn, id)?;
    guard(id, &cur, fence, &[ItemState::Leased, ItemState::Claimed])?;
    let count: u64 = conn
        .prepare_cached("SELECT count(*) FROM item_warnings WHERE item_id = ?1")?
        .query_row([id.0], |r| r.get(0))?;
    if count >= MAX_WARNINGS {
        return Err(StoreError::invalid(
            "message",
            format!("item {id} already has {MAX_WARNINGS} warnings"),
        ));
    }
    conn.prepare_cached("INSERT INTO item_warnings (item_id, message, at_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![id.0, message, now])?;
    Ok(())
}

pub fn release(conn: &Connection, id: ItemId, fence: i64, now: Millis) -> StoreResult<()> {
    let cur = current(conn, id)?;
    guard(id, &cur, fence, &[ItemState::Leased])?;
    conn.prepare_cached(
        "UPDATE items SET state = 'pending', agent_id = NULL, lease_expires_at_ms = NULL,
             updated_at_ms = ?2 WHERE id = ?1",
    )?
    .execute(params![id.0, now])?;
    Ok(())
}

pub fn cancel(conn: &Connection, id: ItemId, now: Millis) -> StoreResult<liftoff_types::Item> {
    let cur = current(conn, id)?;
    match cur.state {
        ItemState::Pending | ItemState::Leased => {
            // The fence moves so that a holder of the lease finds its next write stale.
            conn.prepare_cached(
                "UPDATE items SET state = 'cancelled', fence = fence + 1,
                     lease_expires_at_ms = NULL, updated_at_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![id.0, now])?;
        }
        ItemState::Claimed => {
            conn.prepare_cached(
                "UPDATE items SET cancel_requested = 1, updated_at_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![id.0, now])?;
            conn.prepare_cached(
                "UPDATE runs SET stop_requested = 1, updated_at_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![cur.run_id, now])?;
        }
        done => return Err(StoreError::Conflict(format!("item {id} is already {done}"))),
    }
    rows::load_item(conn, id)
}

/// `cancel --force`: a claimed item whose agent will not confirm its stop ends `cancelled`
/// now, its run `lost` with `reason`; the fence moves so a late report from that agent is
/// refused. Other states go as in [`cancel`].
pub fn force_cancel(
    conn: &Connection,
    id: ItemId,
    reason: &str,
    now: Millis,
) -> StoreResult<liftoff_types::Item> {
    let cur = current(conn, id)?;
    if cur.state != ItemState::Claimed {
        return cancel(conn, id, now);
    }
    conn.prepare_cached(
        "UPDATE items SET state = 'cancelled', fence = fence + 1, cancel_requested = 1,
             lease_expires_at_ms = NULL, updated_at_ms = ?2 WHERE id = ?1",
    )?
    .execute(params![id.0, now])?;
    conn.prepare_cached(
        "UPDATE runs SET state = 'lost', message = ?2, stop_requested = 1,
             ended_at_ms = ?3, updated_at_ms = ?3
         WHERE id = ?1 AND state NOT IN ('finished', 'failed', 'stopped', 'preempted', 'lost')",
    )?
    .execute(params![cur.run_id, reason, now])?;
    conn.prepare_cached("INSERT INTO item_warnings (item_id, message, at_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![id.0, reason, now])?;
    rows::load_item(conn, id)
}

pub fn expire(conn: &Connection, now: Millis) -> StoreResult<Expired> {
    let mut stmt = conn.prepare_cached(
        "SELECT i.id, q.name, i.attempts, q.max_attempts FROM items i
         JOIN queues q ON q.id = i.queue_id
         WHERE i.state = 'leased' AND i.lease_expires_at_ms < ?1",
    )?;
    let expired = stmt
        .query_map([now], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, u32>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Expired::default();
    for (id, queue, attempts, max) in expired {
        let reason = "the item's lease expired without an ack";
        if give_back(conn, ItemId(id), attempts, max, reason, now)? {
            out.requeued.push((ItemId(id), queue));
        } else {
            out.failed.push(ItemId(id));
        }
    }
    Ok(out)
}

/// Ends a lease that was not acked: back to `pending` with one more attempt, or `failed`
/// (phase `agent`) at the queue's limit. Returns whether the item went back.
pub fn give_back(
    conn: &Connection,
    id: ItemId,
    attempts: u32,
    max: u32,
    reason: &str,
    now: Millis,
) -> StoreResult<bool> {
    let attempts = attempts + 1;
    if attempts >= max {
        conn.prepare_cached("UPDATE items SET attempts = ?2 WHERE id = ?1")?
            .execute(params![id.0, attempts])?;
        let message = format!("{reason} {attempts} time(s); the queue allows {max}");
        mark_failed(conn, id, &message, Phase::Agent, &[], now)?;
        return Ok(false);
    }
    conn.prepare_cached(
        "UPDATE items SET state = 'pending', attempts = ?2, agent_id = NULL,
             lease_expires_at_ms = NULL, updated_at_ms = ?3 WHERE id = ?1",
    )?
    .execute(params![id.0, attempts, now])?;
    Ok(true)
}
