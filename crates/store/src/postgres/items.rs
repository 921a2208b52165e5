//! Item rows outside the lease protocol on PostgreSQL: enqueue, show, list (with queue
//! positions) and attached files.

use super::rows::{self, get, ITEM_SHOWN_COLUMNS, ITEM_SHOWN_FROM};
use super::Tx;
use crate::{NewItem, StoreError, StoreResult};
use liftoff_types::api::ItemFilter;
use liftoff_types::{Item, ItemId, ItemState, Millis, Priority};
use std::collections::BTreeMap;

/// Stores a pending item; `sweep_index` for a sweep's run.
pub async fn enqueue(
    tx: &Tx<'_>,
    item: &NewItem,
    sweep_index: Option<u32>,
    now: Millis,
) -> StoreResult<Item> {
    // `FOR SHARE` keeps the queue from being deleted under the new item.
    let queue = tx
        .prepare_cached("SELECT id, prioritization FROM queues WHERE name = $1 FOR SHARE")
        .await?;
    let row = tx
        .query_opt(&queue, &[&item.queue])
        .await?
        .ok_or_else(|| StoreError::not_found("queue", &item.queue))?;
    let (queue_id, prioritized): (i64, bool) = (get(&row, 0)?, get(&row, 1)?);
    let rank = if prioritized {
        item.priority.rank()
    } else {
        Priority::Medium.rank()
    };
    let insert = tx
        .prepare_cached(
            "INSERT INTO items (queue_id, state, priority, rank, spec, resource_args,
                 created_at_ms, updated_at_ms, kind, sweep_id, sweep_index)
             VALUES ($1, 'pending', $2, $3, $4, $5, $6, $6, $7, $8, $9) RETURNING id",
        )
        .await?;
    let row = tx
        .query_one(
            &insert,
            &[
                &queue_id,
                &item.priority.rank(),
                &rank,
                &serde_json::to_string(&item.spec)?,
                &item.resource_args.to_string(),
                &now,
                &item.kind.as_str(),
                &item.spec.sweep_id,
                &sweep_index.map(i64::from),
            ],
        )
        .await?;
    Ok(Item {
        id: ItemId(get(&row, 0)?),
        queue: item.queue.clone(),
        kind: item.kind,
        sweep_index,
        state: ItemState::Pending,
        priority: item.priority,
        spec: item.spec.clone(),
        resource_args: item.resource_args.clone(),
        attempts: 0,
        retries: Default::default(),
        available_at_ms: None,
        fence: 0,
        agent_id: None,
        lease_expires_at_ms: None,
        run_id: None,
        failure: None,
        warnings: Vec::new(),
        cancel_requested: false,
        position: None,
        created_at_ms: now,
        updated_at_ms: now,
        started_at_ms: None,
        ended_at_ms: None,
        pending_reason: None,
    })
}

pub async fn get_item(tx: &Tx<'_>, id: ItemId) -> StoreResult<Item> {
    let mut item = rows::load_item(tx, id).await?;
    fill_positions(tx, std::slice::from_mut(&mut item)).await?;
    Ok(item)
}

pub async fn pending_front(tx: &Tx<'_>, queue: &str, limit: u32) -> StoreResult<Vec<Item>> {
    let queue_id = rows::queue_id(tx, queue).await?;
    let sql = format!(
        "SELECT {ITEM_SHOWN_COLUMNS} FROM {ITEM_SHOWN_FROM}
         WHERE i.queue_id = $1 AND i.state = 'pending' AND i.kind IN ('run', 'scheduler')
         ORDER BY i.rank, i.id LIMIT $2"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let limit = i64::from(limit.clamp(1, 1000));
    let found = tx.query(&stmt, &[&queue_id, &limit]).await?;
    let mut items = found
        .iter()
        .map(rows::shown_item)
        .collect::<StoreResult<Vec<_>>>()?;
    for (n, item) in items.iter_mut().enumerate() {
        item.warnings = rows::warnings(tx, item.id).await?;
        item.position = Some(n as u64);
    }
    Ok(items)
}

pub async fn list(tx: &Tx<'_>, filter: &ItemFilter) -> StoreResult<Vec<Item>> {
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000) as i64;
    let queue_id = match filter.queue.as_deref() {
        Some(q) => Some(rows::queue_id(tx, q).await?),
        None => None,
    };
    // Newest first, unless paging forward from `after`.
    let order = if filter.after.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    let sql = format!(
        "SELECT {ITEM_SHOWN_COLUMNS} FROM {ITEM_SHOWN_FROM}
         WHERE ($1::BIGINT IS NULL OR i.queue_id = $1) AND ($2::TEXT IS NULL OR i.state = $2)
           AND ($3::BIGINT IS NULL OR i.id > $3) AND ($6::BIGINT IS NULL OR i.id < $6)
           AND ($5::TEXT IS NULL OR (i.sweep_id = $5 AND i.kind = 'run'))
           AND ($7::TEXT IS NULL OR i.spec::jsonb->>'job' = $7
                OR starts_with(i.spec::jsonb->>'job', $7 || ':'))
         ORDER BY i.id {order} LIMIT $4"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let state = filter.state.map(|s| s.as_str());
    let found = tx
        .query(
            &stmt,
            &[
                &queue_id,
                &state,
                &filter.after,
                &limit,
                &filter.sweep,
                &filter.before,
                &filter.job,
            ],
        )
        .await?;
    let mut items = found
        .iter()
        .map(rows::shown_item)
        .collect::<StoreResult<Vec<_>>>()?;
    for item in &mut items {
        item.warnings = rows::warnings(tx, item.id).await?;
    }
    fill_positions(tx, &mut items).await?;
    Ok(items)
}

/// Sets `position` on the pending items given, counting only the index ranges between
/// consecutive ones (as the SQLite store does).
async fn fill_positions(tx: &Tx<'_>, items: &mut [Item]) -> StoreResult<()> {
    let mut by_queue: BTreeMap<String, Vec<(i64, i64, usize)>> = BTreeMap::new();
    let rank = tx
        .prepare_cached("SELECT rank FROM items WHERE id = $1")
        .await?;
    for (index, item) in items.iter().enumerate() {
        if item.state == ItemState::Pending {
            let r: i64 = get(&tx.query_one(&rank, &[&item.id.0]).await?, 0)?;
            by_queue
                .entry(item.queue.clone())
                .or_default()
                .push((r, item.id.0, index));
        }
    }
    // Both kinds named: the pending index is by (queue, kind, rank, id), so each kind's
    // range is walked, not every pending item of the queue.
    let between = tx
        .prepare_cached(
            "SELECT count(*) FROM items WHERE queue_id = $1 AND state = 'pending'
             AND kind IN ('run', 'scheduler') AND (rank, id) > ($2, $3) AND (rank, id) < ($4, $5)",
        )
        .await?;
    for (queue, mut keys) in by_queue {
        let queue_id = rows::queue_id(tx, &queue).await?;
        keys.sort_unstable();
        let (mut prev_rank, mut prev_id, mut position) = (i64::MIN, i64::MIN, 0u64);
        for (n, (rank, id, index)) in keys.into_iter().enumerate() {
            let row = tx
                .query_one(&between, &[&queue_id, &prev_rank, &prev_id, &rank, &id])
                .await?;
            let gap = get::<i64>(&row, 0)? as u64;
            position = if n == 0 { gap } else { position + 1 + gap };
            items[index].position = Some(position);
            (prev_rank, prev_id) = (rank, id);
        }
    }
    Ok(())
}

pub async fn file(tx: &Tx<'_>, id: ItemId, name: &str) -> StoreResult<String> {
    let stmt = tx
        .prepare_cached("SELECT content FROM item_files WHERE item_id = $1 AND name = $2")
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.0, &name])
        .await?
        .ok_or_else(|| StoreError::not_found("file", format!("{name:?} of item {id}")))?;
    get(&row, 0)
}
