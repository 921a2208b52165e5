//! Queue rows on PostgreSQL: create, list, show with depth, delete.

use super::rows::{self, get, QUEUE_COLUMNS};
use super::Tx;
use crate::{StoreError, StoreResult};
use liftoff_types::{Millis, NewQueue, Queue, QueueDepth};

pub async fn create(tx: &Tx<'_>, q: &NewQueue, now: Millis) -> StoreResult<Queue> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO queues (name, resource, config, template_variables, prioritization,
                 max_attempts, requeue_lost, created_at_ms, max_concurrency, retry)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING",
        )
        .await?;
    let inserted = tx
        .execute(
            &stmt,
            &[
                &q.name,
                &q.resource.as_str(),
                &q.config.to_string(),
                &serde_json::to_string(&q.template_variables)?,
                &q.prioritization,
                &(q.max_attempts as i64),
                &q.requeue_lost,
                &now,
                &q.max_concurrency.map(i64::from),
                &q.retry.as_ref().map(serde_json::to_string).transpose()?,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "queue {:?} already exists",
            q.name
        )));
    }
    get_queue(tx, &q.name, false).await
}

pub async fn list(tx: &Tx<'_>) -> StoreResult<Vec<Queue>> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name");
    let stmt = tx.prepare_cached(&sql).await?;
    tx.query(&stmt, &[])
        .await?
        .iter()
        .map(rows::queue)
        .collect()
}

pub async fn get_queue(tx: &Tx<'_>, name: &str, with_depth: bool) -> StoreResult<Queue> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = $1");
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&name])
        .await?
        .ok_or_else(|| StoreError::not_found("queue", name))?;
    let mut queue = rows::queue(&row)?;
    if with_depth {
        queue.depth = Some(depth(tx, rows::queue_id(tx, name).await?).await?);
    }
    Ok(queue)
}

async fn depth(tx: &Tx<'_>, queue_id: i64) -> StoreResult<QueueDepth> {
    let stmt = tx
        .prepare_cached("SELECT state, count(*) FROM items WHERE queue_id = $1 GROUP BY state")
        .await?;
    let mut depth = QueueDepth::default();
    for row in tx.query(&stmt, &[&queue_id]).await? {
        let (state, n): (String, i64) = (get(&row, 0)?, get(&row, 1)?);
        crate::rules::add_depth(&mut depth, &state, n as u64)?;
    }
    let live = tx.prepare_cached(crate::rules::LIVE_RUNS).await?;
    depth.live_runs = get::<i64>(&tx.query_one(&live, &[&queue_id]).await?, 0)? as u64;
    Ok(depth)
}

pub async fn delete(tx: &Tx<'_>, name: &str, force: bool) -> StoreResult<()> {
    // Lock the queue row so an enqueue through another replica waits for the delete.
    let lock = tx
        .prepare_cached("SELECT id FROM queues WHERE name = $1 FOR UPDATE")
        .await?;
    let id: i64 = match tx.query_opt(&lock, &[&name]).await? {
        Some(row) => get(&row, 0)?,
        None => return Err(StoreError::not_found("queue", name)),
    };
    let live = tx
        .prepare_cached(
            "SELECT count(*) FROM items WHERE queue_id = $1
             AND state IN ('pending', 'leased', 'claimed')",
        )
        .await?;
    let live: i64 = get(&tx.query_one(&live, &[&id]).await?, 0)?;
    if live > 0 && !force {
        return Err(StoreError::Conflict(format!(
            "queue {name:?} still has {live} live item(s); cancel them or delete with force"
        )));
    }
    // Runs outlive their queue (they are history); agents holding a lease on one of the
    // deleted items get 404 on their next write about it and stop.
    let stop = tx
        .prepare_cached(
            "UPDATE runs SET stop_requested = TRUE WHERE item_id IN
                 (SELECT id FROM items WHERE queue_id = $1 AND state = 'claimed')",
        )
        .await?;
    tx.execute(&stop, &[&id]).await?;
    let delete = tx
        .prepare_cached("DELETE FROM queues WHERE id = $1")
        .await?;
    tx.execute(&delete, &[&id]).await?;
    Ok(())
}

pub async fn item_counts(tx: &Tx<'_>) -> StoreResult<crate::ItemCounts> {
    let mut counts = crate::ItemCounts::default();
    let stmt = tx
        .prepare_cached(
            "SELECT q.name, i.priority, count(*) FROM items i JOIN queues q ON q.id = i.queue_id
             WHERE i.state = 'pending' GROUP BY q.name, i.priority",
        )
        .await?;
    for row in tx.query(&stmt, &[]).await? {
        let (queue, priority, n): (String, i64, i64) =
            (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
        counts.pending.push((queue, priority, n as u64));
    }
    let stmt = tx
        .prepare_cached(
            "SELECT q.name, i.state, i.fail_phase, count(*) FROM items i JOIN queues q ON q.id = i.queue_id
             WHERE i.state IN ('finished', 'failed', 'stopped', 'cancelled')
             GROUP BY q.name, i.state, i.fail_phase",
        )
        .await?;
    for row in tx.query(&stmt, &[]).await? {
        let (queue, state, phase, n): (String, String, Option<String>, i64) =
            (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?, get(&row, 3)?);
        counts.ended.push((queue, state, phase, n as u64));
    }
    let stmt = tx
        .prepare_cached(
            "SELECT q.name, j.key, sum(j.value::BIGINT)::BIGINT FROM items i
             JOIN queues q ON q.id = i.queue_id, jsonb_each_text(i.retries::jsonb) j
             WHERE i.retries <> '{}' GROUP BY q.name, j.key",
        )
        .await?;
    for row in tx.query(&stmt, &[]).await? {
        let (queue, cause, n): (String, String, i64) =
            (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
        counts.requeues.push((queue, cause, n as u64));
    }
    Ok(counts)
}
