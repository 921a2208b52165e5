//! Run output on PostgreSQL: chunks at byte offsets, appended under the run's row lock so two
//! replicas receiving retries of the same append cannot both write it.

use super::rows::{self, get};
use super::Tx;
use crate::{LogAppend, LogChunk, StoreError, StoreResult};
use liftoff_types::RunId;

pub async fn append(tx: &Tx<'_>, id: &RunId, at: &LogAppend, data: &[u8]) -> StoreResult<u64> {
    let stmt = tx
        .prepare_cached(
            "SELECT r.log_len, i.fence FROM runs r JOIN items i ON i.id = r.item_id
             WHERE r.id = $1 FOR UPDATE OF r",
        )
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .ok_or_else(|| StoreError::not_found("run", id))?;
    let (len, fence): (i64, i64) = (get(&row, 0)?, get(&row, 1)?);
    let len = len as u64;
    let Some(keep) = crate::rules::cut_append(id, len, fence, at.fence, at.offset, data.len())?
    else {
        return Ok(len);
    };
    let fresh = &data[keep];
    let insert = tx
        .prepare_cached(r#"INSERT INTO run_logs (run_id, "offset", data) VALUES ($1, $2, $3)"#)
        .await?;
    tx.execute(&insert, &[&id.as_str(), &(len as i64), &fresh])
        .await?;
    let new_len = len + fresh.len() as u64;
    let set = tx
        .prepare_cached("UPDATE runs SET log_len = $2 WHERE id = $1")
        .await?;
    tx.execute(&set, &[&id.as_str(), &(new_len as i64)]).await?;
    Ok(new_len)
}

pub async fn read(tx: &Tx<'_>, id: &RunId, offset: u64, max: usize) -> StoreResult<LogChunk> {
    let run = rows::load_run(tx, id).await?;
    let stmt = tx
        .prepare_cached(
            r#"SELECT "offset", data FROM run_logs
               WHERE run_id = $1 AND "offset" + length(data) > $2 ORDER BY "offset" LIMIT 256"#,
        )
        .await?;
    let mut data = Vec::new();
    let mut next = offset;
    for row in tx.query(&stmt, &[&id.as_str(), &(offset as i64)]).await? {
        let (start, chunk): (i64, Vec<u8>) = (get(&row, 0)?, get(&row, 1)?);
        let from = next.saturating_sub(start as u64) as usize;
        let take = (chunk.len() - from).min(max - data.len());
        data.extend_from_slice(&chunk[from..from + take]);
        next += take as u64;
        if data.len() >= max {
            break;
        }
    }
    Ok(LogChunk {
        data,
        next_offset: next,
        ended: run.state.is_terminal(),
    })
}

pub async fn len(tx: &Tx<'_>, id: &RunId) -> StoreResult<u64> {
    let stmt = tx
        .prepare_cached("SELECT log_len FROM runs WHERE id = $1")
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .ok_or_else(|| StoreError::not_found("run", id))?;
    let len: i64 = get(&row, 0)?;
    Ok(len as u64)
}
