//! Job versions: numbered per name, one per distinct content.

use crate::{StoreError, StoreResult};
use liftoff_types::{JobSpec, JobVersion, Millis};
use rusqlite::{params, Connection, OptionalExtension, Row};

fn version(row: &Row) -> rusqlite::Result<(String, u32, String, Millis)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn build((name, version, spec, at): (String, u32, String, Millis)) -> StoreResult<JobVersion> {
    Ok(JobVersion {
        name,
        version,
        spec: serde_json::from_str(&spec)?,
        created_at_ms: at,
    })
}

pub fn put(
    conn: &Connection,
    name: &str,
    key: &str,
    spec: &JobSpec,
    now: Millis,
) -> StoreResult<(JobVersion, bool)> {
    let found = conn
        .prepare_cached(
            "SELECT name, version, spec, created_at_ms FROM job_versions
             WHERE name = ?1 AND key = ?2",
        )?
        .query_row(params![name, key], version)
        .optional()?;
    if let Some(found) = found {
        return Ok((build(found)?, false));
    }
    let next: u32 = conn
        .prepare_cached("SELECT coalesce(max(version) + 1, 0) FROM job_versions WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO job_versions (name, version, key, spec, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![name, next, key, serde_json::to_string(spec)?, now])?;
    Ok((get(conn, name, Some(next))?, true))
}

pub fn get(conn: &Connection, name: &str, v: Option<u32>) -> StoreResult<JobVersion> {
    let found = conn
        .prepare_cached(
            "SELECT name, version, spec, created_at_ms FROM job_versions
             WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY version DESC LIMIT 1",
        )?
        .query_row(params![name, v], version)
        .optional()?;
    match found {
        Some(f) => build(f),
        None => Err(StoreError::not_found(
            "job",
            match v {
                Some(v) => format!("{name}:v{v}"),
                None => name.to_string(),
            },
        )),
    }
}

pub fn list(conn: &Connection, name: Option<&str>) -> StoreResult<Vec<JobVersion>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, version, spec, created_at_ms FROM job_versions
         WHERE ?1 IS NULL OR name = ?1 ORDER BY name, version",
    )?;
    let rows = stmt.query_map([name], version)?;
    rows.map(|r| build(r?)).collect()
}
