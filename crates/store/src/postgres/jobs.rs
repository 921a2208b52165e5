//! Job versions on PostgreSQL: numbering under an advisory lock per name, so two versions
//! created at once get distinct numbers.

use super::rows::get;
use super::Tx;
use crate::{StoreError, StoreResult};
use liftoff_types::{JobSpec, JobVersion, Millis};
use tokio_postgres::Row;

fn build(row: &Row) -> StoreResult<JobVersion> {
    Ok(JobVersion {
        name: get(row, 0)?,
        version: get::<i64>(row, 1)? as u32,
        spec: serde_json::from_str(&get::<String>(row, 2)?)?,
        created_at_ms: get(row, 3)?,
    })
}

pub async fn put(
    tx: &Tx<'_>,
    name: &str,
    key: &str,
    spec: &JobSpec,
    now: Millis,
) -> StoreResult<(JobVersion, bool)> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('job:' || $1))",
        &[&name],
    )
    .await?;
    let found = tx
        .prepare_cached(
            "SELECT name, version, spec, created_at_ms FROM job_versions
             WHERE name = $1 AND key = $2",
        )
        .await?;
    if let Some(row) = tx.query_opt(&found, &[&name, &key]).await? {
        return Ok((build(&row)?, false));
    }
    let next = tx
        .prepare_cached("SELECT coalesce(max(version) + 1, 0) FROM job_versions WHERE name = $1")
        .await?;
    let next: i64 = get(&tx.query_one(&next, &[&name]).await?, 0)?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO job_versions (name, version, key, spec, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    tx.execute(
        &insert,
        &[&name, &next, &key, &serde_json::to_string(spec)?, &now],
    )
    .await?;
    Ok((get_version(tx, name, Some(next as u32)).await?, true))
}

pub async fn get_version(tx: &Tx<'_>, name: &str, v: Option<u32>) -> StoreResult<JobVersion> {
    let stmt = tx
        .prepare_cached(
            "SELECT name, version, spec, created_at_ms FROM job_versions
             WHERE name = $1 AND ($2::BIGINT IS NULL OR version = $2)
             ORDER BY version DESC LIMIT 1",
        )
        .await?;
    match tx.query_opt(&stmt, &[&name, &v.map(i64::from)]).await? {
        Some(row) => build(&row),
        None => Err(StoreError::not_found(
            "job",
            match v {
                Some(v) => format!("{name}:v{v}"),
                None => name.to_string(),
            },
        )),
    }
}

pub async fn list(tx: &Tx<'_>, name: Option<&str>) -> StoreResult<Vec<JobVersion>> {
    let stmt = tx
        .prepare_cached(
            "SELECT name, version, spec, created_at_ms FROM job_versions
             WHERE $1::TEXT IS NULL OR name = $1 ORDER BY name, version",
        )
        .await?;
    tx.query(&stmt, &[&name]).await?.iter().map(build).collect()
}
