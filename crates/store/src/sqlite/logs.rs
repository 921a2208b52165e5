//! Run output: appended by the agent in chunks at byte offsets, read back in order.

use super::rows;
use crate::{LogAppend, LogChunk, StoreError, StoreResult};
use liftoff_types::{Millis, RunId};
use rusqlite::{params, Connection, OptionalExtension};

pub fn append(
    conn: &Connection,
    id: &RunId,
    at: &LogAppend,
    data: &[u8],
    _now: Millis,
) -> StoreResult<u64> {
    let (len, fence): (u64, i64) = conn
        .prepare_cached(
            "SELECT r.log_len, i.fence FROM runs r JOIN items i ON i.id = r.item_id WHERE r.id = ?1",
        )?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::not_found("run", id))?;
    let Some(keep) = crate::rules::cut_append(id, len, fence, at.fence, at.offset, data.len())?
    else {
        return Ok(len);
    };
    let fresh = &data[keep];
    conn.prepare_cached("INSERT INTO run_logs (run_id, offset, data) VALUES (?1, ?2, ?3)")?
        .execute(params![id.as_str(), len, fresh])?;
    let new_len = len + fresh.len() as u64;
    conn.prepare_cached("UPDATE runs SET log_len = ?2 WHERE id = ?1")?
        .execute(params![id.as_str(), new_len])?;
    Ok(new_len)
}

pub fn read(conn: &Connection, id: &RunId, offset: u64, max: usize) -> StoreResult<LogChunk> {
    let run = rows::load_run(conn, id)?;
    let mut stmt = conn.prepare_cached(
        "SELECT offset, data FROM run_logs WHERE run_id = ?1 AND offset + length(data) > ?2
         ORDER BY offset",
    )?;
    let mut rows = stmt.query(params![id.as_str(), offset])?;
    let mut data = Vec::new();
    let mut next = offset;
    while let Some(row) = rows.next()? {
        let (start, chunk): (u64, Vec<u8>) = (row.get(0)?, row.get(1)?);
        let from = next.saturating_sub(start) as usize;
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

pub fn len(conn: &Connection, id: &RunId) -> StoreResult<u64> {
    let mut stmt = conn.prepare_cached("SELECT log_len FROM runs WHERE id = ?1")?;
    let len: Option<i64> = stmt
        .query_row(params![id.as_str()], |row| row.get(0))
        .optional()?;
    len.map(|l| l as u64)
        .ok_or_else(|| StoreError::not_found("run", id))
}
