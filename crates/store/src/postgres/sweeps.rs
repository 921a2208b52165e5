//! Sweeps on PostgreSQL: the SQLite store's rules, with the sweep's row locked first
//! (`FOR UPDATE`) by every write about it, so concurrent schedulers and users queue up on it.
//! Lock order: sweep, then item, then run.

use super::rows::{self, get, SWEEP_COLUMNS, SWEEP_FROM};
use super::Tx;
use crate::{NewItem, NewSweep, NewSweepRun, StoreError, StoreResult};
use liftoff_types::{Item, ItemId, Millis, Sweep, SweepState};

pub async fn create(
    tx: &Tx<'_>,
    sweep: &NewSweep,
    scheduler: &NewItem,
    now: Millis,
) -> StoreResult<Sweep> {
    let queue_id = rows::queue_id(tx, &sweep.queue).await?;
    let item = super::items::enqueue(tx, scheduler, None, now).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sweeps (id, name, queue_id, state, config, concurrency, scheduler_item,
                 created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $7)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &sweep.id,
            &sweep.name,
            &queue_id,
            &sweep.config.to_string(),
            &i64::from(sweep.concurrency),
            &item.id.0,
            &now,
        ],
    )
    .await?;
    get_sweep(tx, &sweep.id, false).await
}

/// One sweep; with `lock`, its row is locked for the rest of the transaction.
pub async fn get_sweep(tx: &Tx<'_>, id: &str, lock: bool) -> StoreResult<Sweep> {
    let sql = format!(
        "SELECT {SWEEP_COLUMNS} FROM {SWEEP_FROM} WHERE s.id = $1{}",
        if lock { " FOR UPDATE OF s" } else { "" }
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&id])
        .await?
        .ok_or_else(|| StoreError::not_found("sweep", id))?;
    rows::sweep(&row)
}

pub async fn list(tx: &Tx<'_>) -> StoreResult<Vec<Sweep>> {
    let sql = format!("SELECT {SWEEP_COLUMNS} FROM {SWEEP_FROM} ORDER BY s.created_at_ms, s.id");
    let stmt = tx.prepare_cached(&sql).await?;
    tx.query(&stmt, &[])
        .await?
        .iter()
        .map(rows::sweep)
        .collect()
}

pub async fn set_state(
    tx: &Tx<'_>,
    id: &str,
    to: SweepState,
    message: Option<&str>,
    now: Millis,
) -> StoreResult<(Sweep, Vec<Item>)> {
    let sweep = get_sweep(tx, id, true).await?;
    crate::rules::sweep_move(&sweep, to)?;
    let stmt = tx
        .prepare_cached(
            "UPDATE sweeps SET state = $2, message = coalesce($3, message), updated_at_ms = $4
             WHERE id = $1",
        )
        .await?;
    tx.execute(&stmt, &[&id, &to.as_str(), &message, &now])
        .await?;
    let mut touched = Vec::new();
    if to == SweepState::Cancelled {
        let live = tx
            .prepare_cached(
                "SELECT id FROM items WHERE sweep_id = $1
                 AND state IN ('pending', 'leased', 'claimed') ORDER BY id",
            )
            .await?;
        for row in tx.query(&live, &[&id]).await? {
            let item = ItemId(get(&row, 0)?);
            touched.push(super::lease::cancel(tx, item, now).await?);
        }
    }
    Ok((get_sweep(tx, id, false).await?, touched))
}

pub async fn enqueue_run(tx: &Tx<'_>, run: &NewSweepRun, now: Millis) -> StoreResult<Item> {
    let sweep = get_sweep(tx, &run.sweep, true).await?;
    let existing = tx
        .prepare_cached("SELECT id FROM items WHERE sweep_id = $1 AND sweep_index = $2")
        .await?;
    if let Some(row) = tx
        .query_opt(&existing, &[&run.sweep, &i64::from(run.index)])
        .await?
    {
        return rows::load_item(tx, ItemId(get(&row, 0)?)).await;
    }
    crate::rules::sweep_run_allowed(&sweep, run)?;
    super::items::enqueue(tx, &run.item, Some(run.index), now).await
}
