//! Run metrics: records appended by the run (over the API) or shipped by its agent from the
//! run's metrics file (each line once, by its line number).

use crate::{StoreError, StoreResult};
use liftoff_types::{Millis, RunId};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

pub fn append(
    conn: &Connection,
    id: &RunId,
    first_line: Option<u64>,
    records: &[Map<String, Value>],
    _now: Millis,
) -> StoreResult<u64> {
    let (state, count): (String, u64) = conn
        .prepare_cached("SELECT state, metrics_count FROM runs WHERE id = ?1")?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::not_found("run", id))?;
    crate::rules::metrics_allowed(id, &state, count, records.len())?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO run_metrics (run_id, line, data) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?;
    let mut added = 0u64;
    for (i, record) in records.iter().enumerate() {
        let line = first_line.map(|f| (f + i as u64) as i64);
        added += insert.execute(params![id.as_str(), line, serde_json::to_string(record)?])? as u64;
    }
    conn.prepare_cached("UPDATE runs SET metrics_count = metrics_count + ?2 WHERE id = ?1")?
        .execute(params![id.as_str(), added])?;
    Ok(count + added)
}

pub fn read(conn: &Connection, id: &RunId) -> StoreResult<Vec<Map<String, Value>>> {
    super::rows::load_run(conn, id)?;
    let mut stmt =
        conn.prepare_cached("SELECT data FROM run_metrics WHERE run_id = ?1 ORDER BY id")?;
    let texts = stmt.query_map([id.as_str()], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for text in texts {
        out.push(serde_json::from_str(&text?)?);
    }
    Ok(out)
}
