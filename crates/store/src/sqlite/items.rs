//! Item rows outside the lease protocol: enqueue, show, list (with queue positions) and
//! attached files.

use super::rows::{self, ITEM_SHOWN_COLUMNS, ITEM_SHOWN_FROM};
use crate::{NewItem, StoreError, StoreResult};
use liftoff_types::api::ItemFilter;
use liftoff_types::{Item, ItemId, ItemState, Millis, Priority};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;

/// The order key of an item in its queue: its priority, unless the queue ignores priorities.
fn rank(conn: &Connection, queue_id: i64, priority: Priority) -> StoreResult<i64> {
    let prioritized: bool = conn
        .prepare_cached("SELECT prioritization FROM queues WHERE id = ?1")?
        .query_row([queue_id], |r| r.get(0))?;
    Ok(if prioritized {
        priority.rank()
    } else {
        Priority::Medium.rank()
    })
}

/// Stores a pending item; `sweep_index` for a sweep's run.
pub fn enqueue(
    conn: &Connection,
    item: &NewItem,
    sweep_index: Option<u32>,
    now: Millis,
) -> StoreResult<Item> {
    let queue_id = rows::queue_id(conn, &item.queue)?;
    let rank = rank(conn, queue_id, item.priority)?;
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO items (queue_id, state, priority, rank, spec, resource_args,
                 created_at_ms, updated_at_ms, kind, sweep_id, sweep_index)
             VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9) RETURNING id",
        )?
        .query_row(
            params![
                queue_id,
                item.priority.rank(),
                rank,
                serde_json::to_string(&item.spec)?,
                item.resource_args.to_string(),
                now,
                item.kind.as_str(),
                item.spec.sweep_id,
                sweep_index
            ],
            |r| r.get(0),
        )?;
    // Built from what we hold instead of read back: enqueue is the hottest write.
    Ok(Item {
        id: ItemId(id),
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

pub fn get(conn: &Connection, id: ItemId) -> StoreResult<Item> {
    let mut item = rows::load_item(conn, id)?;
    fill_positions(conn, std::slice::from_mut(&mut item))?;
    Ok(item)
}

pub fn list(conn: &Connection, filter: &ItemFilter) -> StoreResult<Vec<Item>> {
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    let queue_id = filter
        .queue
        .as_deref()
        .map(|q| rows::queue_id(conn, q))
        .transpose()?;
    // Newest first, unless paging forward from `after`.
    let order = if filter.after.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    let sql = format!(
        "SELECT {ITEM_SHOWN_COLUMNS} FROM {ITEM_SHOWN_FROM}
         WHERE (?1 IS NULL OR i.queue_id = ?1) AND (?2 IS NULL OR i.state = ?2)
           AND (?3 IS NULL OR i.id > ?3) AND (?6 IS NULL OR i.id < ?6)
           AND (?5 IS NULL OR (i.sweep_id = ?5 AND i.kind = 'run'))
           AND (?7 IS NULL OR json_extract(i.spec, '$.job') = ?7
                OR substr(json_extract(i.spec, '$.job'), 1, length(?7) + 1) = ?7 || ':')
         ORDER BY i.id {order} LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let state = filter.state.map(|s| s.as_str());
    let found = stmt.query_map(
        params![
            queue_id,
            state,
            filter.after,
            limit,
            filter.sweep,
            filter.before,
            filter.job
        ],
        rows::shown_item,
    )?;
    let mut items: Vec<Item> = found.collect::<Result<_, _>>()?;
    for item in &mut items {
        item.warnings = rows::warnings(conn, item.id)?;
    }
    fill_positions(conn, &mut items)?;
    Ok(items)
}

pub fn pending_front(conn: &Connection, queue: &str, limit: u32) -> StoreResult<Vec<Item>> {
    let queue_id = rows::queue_id(conn, queue)?;
    let sql = format!(
        "SELECT {ITEM_SHOWN_COLUMNS} FROM {ITEM_SHOWN_FROM}
         WHERE i.queue_id = ?1 AND i.state = 'pending' AND i.kind IN ('run', 'scheduler')
         ORDER BY i.rank, i.id LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let found = stmt.query_map(params![queue_id, limit.clamp(1, 1000)], rows::shown_item)?;
    let mut items: Vec<Item> = found.collect::<Result<_, _>>()?;
    for (n, item) in items.iter_mut().enumerate() {
        item.warnings = rows::warnings(conn, item.id)?;
        item.position = Some(n as u64);
    }
    Ok(items)
}

/// Sets `position` on the pending items given. Per queue, the items are walked in lease
/// order and only the index ranges between consecutive ones are counted, so a page costs
/// about as much as counting up to its last item once.
fn fill_positions(conn: &Connection, items: &mut [Item]) -> StoreResult<()> {
    let mut by_queue: BTreeMap<String, Vec<(i64, i64, usize)>> = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        if item.state == ItemState::Pending {
            let key = (item_rank(conn, item.id)?, item.id.0, index);
            by_queue.entry(item.queue.clone()).or_default().push(key);
        }
    }
    // Both kinds named: the pending index is by (queue, kind, rank, id), so each kind's
    // range is walked, not every pending item of the queue.
    let mut between = conn.prepare_cached(
        "SELECT count(*) FROM items WHERE queue_id = ?1 AND state = 'pending'
         AND kind IN ('run', 'scheduler') AND (rank, id) > (?2, ?3) AND (rank, id) < (?4, ?5)",
    )?;
    for (queue, mut keys) in by_queue {
        let queue_id = rows::queue_id(conn, &queue)?;
        keys.sort_unstable();
        let (mut prev_rank, mut prev_id, mut position) = (i64::MIN, i64::MIN, 0u64);
        for (n, (rank, id, index)) in keys.into_iter().enumerate() {
            let gap: u64 = between
                .query_row(params![queue_id, prev_rank, prev_id, rank, id], |r| {
                    r.get(0)
                })?;
            position = if n == 0 { gap } else { position + 1 + gap };
            items[index].position = Some(position);
            (prev_rank, prev_id) = (rank, id);
        }
    }
    Ok(())
}

fn item_rank(conn: &Connection, id: ItemId) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT rank FROM items WHERE id = ?1")?
        .query_row([id.0], |r| r.get(0))?)
}

pub fn file(conn: &Connection, id: ItemId, name: &str) -> StoreResult<String> {
    conn.prepare_cached("SELECT content FROM item_files WHERE item_id = ?1 AND name = ?2")?
        .query_row(params![id.0, name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::not_found("file", format!("{name:?} of item {id}")))
}
