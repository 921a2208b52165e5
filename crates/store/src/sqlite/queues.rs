//! Queue rows: create, list, show with depth, delete.

use super::rows::{self, QUEUE_COLUMNS};
use crate::{StoreError, StoreResult};
use liftoff_types::{Millis, NewQueue, Queue, QueueDepth};
use rusqlite::{params, Connection, OptionalExtension};

pub fn create(conn: &Connection, q: &NewQueue, now: Millis) -> StoreResult<Queue> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO queues (name, resource, config, template_variables, prioritization,
                 max_attempts, requeue_lost, created_at_ms, max_concurrency, retry)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![
            q.name,
            q.resource.as_str(),
            q.config.to_string(),
            serde_json::to_string(&q.template_variables)?,
            q.prioritization,
            q.max_attempts,
            q.requeue_lost,
            now,
            q.max_concurrency,
            q.retry.as_ref().map(serde_json::to_string).transpose()?
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "queue {:?} already exists",
            q.name
        )));
    }
    get(conn, &q.name, false)
}

pub fn list(conn: &Connection) -> StoreResult<Vec<Queue>> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name");
    let mut stmt = conn.prepare_cached(&sql)?;
    let queues = stmt.query_map([], rows::queue)?;
    Ok(queues.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, name: &str, with_depth: bool) -> StoreResult<Queue> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = ?1");
    let mut queue = conn
        .prepare_cached(&sql)?
        .query_row([name], rows::queue)
        .optional()?
        .ok_or_else(|| StoreError::not_found("queue", name))?;
    if with_depth {
        queue.depth = Some(depth(conn, rows::queue_id(conn, name)?)?);
    }
    Ok(queue)
}

fn depth(conn: &Connection, queue_id: i64) -> StoreResult<QueueDepth> {
    let mut stmt = conn
        .prepare_cached("SELECT state, count(*) FROM items WHERE queue_id = ?1 GROUP BY state")?;
    let mut depth = QueueDepth::default();
    let counts = stmt.query_map([queue_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
    })?;
    for row in counts {
        let (state, n) = row?;
        crate::rules::add_depth(&mut depth, &state, n)?;
    }
    depth.live_runs = conn
        .prepare_cached(crate::rules::LIVE_RUNS)?
        .query_row([queue_id], |r| r.get(0))?;
    Ok(depth)
}

pub fn delete(conn: &Connection, name: &str, force: bool, _now: Millis) -> StoreResult<()> {
    let id = rows::queue_id(conn, name)?;
    let live: u64 = conn
        .prepare_cached(
            "SELECT count(*) FROM items WHERE queue_id = ?1
             AND state IN ('pending', 'leased', 'claimed')",
        )?
        .query_row([id], |r| r.get(0))?;
    if live > 0 && !force {
        return Err(StoreError::Conflict(format!(
            "queue {name:?} still has {live} live item(s); cancel them or delete with force"
        )));
    }
    // Runs outlive their queue (they are history); agents holding a lease on one of the
    // deleted items get 404 on their next write about it and stop.
    conn.prepare_cached(
        "UPDATE runs SET stop_requested = 1 WHERE item_id IN
             (SELECT id FROM items WHERE queue_id = ?1 AND state = 'claimed')",
    )?
    .execute([id])?;
    conn.prepare_cached("DELETE FROM queues WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub fn item_counts(conn: &Connection) -> StoreResult<crate::ItemCounts> {
    let mut counts = crate::ItemCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT q.name, i.priority, count(*) FROM items i JOIN queues q ON q.id = i.queue_id
         WHERE i.state = 'pending' GROUP BY q.name, i.priority",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (queue, priority, n) = row?;
        counts.pending.push((queue, priority, n as u64));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT q.name, i.state, i.fail_phase, count(*) FROM items i JOIN queues q ON q.id = i.queue_id
         WHERE i.state IN ('finished', 'failed', 'stopped', 'cancelled')
         GROUP BY q.name, i.state, i.fail_phase",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (queue, state, phase, n) = row?;
        counts.ended.push((queue, state, phase, n as u64));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT q.name, j.key, sum(j.value) FROM items i JOIN queues q ON q.id = i.queue_id,
         json_each(i.retries) j WHERE i.retries != '{}' GROUP BY q.name, j.key",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (queue, cause, n) = row?;
        counts.requeues.push((queue, cause, n as u64));
    }
    Ok(counts)
}
