//! Sweeps: their rows, their states, and their runs' enqueue (one per index, under the cap).

use super::rows::{self, SWEEP_COLUMNS, SWEEP_FROM};
use crate::{NewItem, NewSweep, NewSweepRun, StoreError, StoreResult};
use liftoff_types::{Item, ItemId, Millis, Sweep, SweepState};
use rusqlite::{params, Connection, OptionalExtension};

pub fn create(
    conn: &Connection,
    sweep: &NewSweep,
    scheduler: &NewItem,
    now: Millis,
) -> StoreResult<Sweep> {
    let queue_id = rows::queue_id(conn, &sweep.queue)?;
    let item = super::items::enqueue(conn, scheduler, None, now)?;
    conn.prepare_cached(
        "INSERT INTO sweeps (id, name, queue_id, state, config, concurrency, scheduler_item,
             created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        sweep.id,
        sweep.name,
        queue_id,
        sweep.config.to_string(),
        sweep.concurrency,
        item.id.0,
        now
    ])?;
    get(conn, &sweep.id)
}

pub fn get(conn: &Connection, id: &str) -> StoreResult<Sweep> {
    let sql = format!("SELECT {SWEEP_COLUMNS} FROM {SWEEP_FROM} WHERE s.id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([id], rows::sweep)
        .optional()?
        .ok_or_else(|| StoreError::not_found("sweep", id))
}

pub fn list(conn: &Connection) -> StoreResult<Vec<Sweep>> {
    let sql = format!("SELECT {SWEEP_COLUMNS} FROM {SWEEP_FROM} ORDER BY s.created_at_ms, s.id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let found = stmt.query_map([], rows::sweep)?;
    Ok(found.collect::<Result<_, _>>()?)
}

pub fn set_state(
    conn: &Connection,
    id: &str,
    to: SweepState,
    message: Option<&str>,
    now: Millis,
) -> StoreResult<(Sweep, Vec<Item>)> {
    let sweep = get(conn, id)?;
    crate::rules::sweep_move(&sweep, to)?;
    conn.prepare_cached(
        "UPDATE sweeps SET state = ?2, message = coalesce(?3, message), updated_at_ms = ?4
         WHERE id = ?1",
    )?
    .execute(params![id, to.as_str(), message, now])?;
    let mut touched = Vec::new();
    if to == SweepState::Cancelled {
        let live: Vec<i64> = conn
            .prepare_cached(
                "SELECT id FROM items WHERE sweep_id = ?1
                 AND state IN ('pending', 'leased', 'claimed') ORDER BY id",
            )?
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for item in live {
            touched.push(super::lease::cancel(conn, ItemId(item), now)?);
        }
    }
    Ok((get(conn, id)?, touched))
}

pub fn enqueue_run(conn: &Connection, run: &NewSweepRun, now: Millis) -> StoreResult<Item> {
    let sweep = get(conn, &run.sweep)?;
    let existing: Option<i64> = conn
        .prepare_cached("SELECT id FROM items WHERE sweep_id = ?1 AND sweep_index = ?2")?
        .query_row(params![run.sweep, run.index], |r| r.get(0))
        .optional()?;
    if let Some(item) = existing {
        return rows::load_item(conn, ItemId(item));
    }
    crate::rules::sweep_run_allowed(&sweep, run)?;
    super::items::enqueue(conn, &run.item, Some(run.index), now)
}
