//! Run metrics on PostgreSQL (see the SQLite store's `metrics`). The run's row is locked so
//! that concurrent appends count against its limit one at a time.

use super::rows::get;
use super::Tx;
use crate::{StoreError, StoreResult};
use liftoff_types::{Millis, RunId};
use serde_json::{Map, Value};

pub async fn append(
    tx: &Tx<'_>,
    id: &RunId,
    first_line: Option<u64>,
    records: &[Map<String, Value>],
    _now: Millis,
) -> StoreResult<u64> {
    let stmt = tx
        .prepare_cached("SELECT state, metrics_count FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .ok_or_else(|| StoreError::not_found("run", id))?;
    let (state, count): (String, i64) = (get(&row, 0)?, get(&row, 1)?);
    crate::rules::metrics_allowed(id, &state, count as u64, records.len())?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO run_metrics (run_id, line, data) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let mut added = 0i64;
    for (i, record) in records.iter().enumerate() {
        let line = first_line.map(|f| (f + i as u64) as i64);
        let text = serde_json::to_string(record)?;
        added += tx.execute(&insert, &[&id.as_str(), &line, &text]).await? as i64;
    }
    let bump = tx
        .prepare_cached("UPDATE runs SET metrics_count = metrics_count + $2 WHERE id = $1")
        .await?;
    tx.execute(&bump, &[&id.as_str(), &added]).await?;
    Ok((count + added) as u64)
}

pub async fn read(tx: &Tx<'_>, id: &RunId) -> StoreResult<Vec<Map<String, Value>>> {
    super::rows::load_run(tx, id).await?;
    let stmt = tx
        .prepare_cached("SELECT data FROM run_metrics WHERE run_id = $1 ORDER BY id")
        .await?;
    let mut out = Vec::new();
    for row in tx.query(&stmt, &[&id.as_str()]).await? {
        out.push(serde_json::from_str(&get::<String>(&row, 0)?)?);
    }
    Ok(out)
}
