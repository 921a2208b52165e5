//! Token rows on PostgreSQL. Only the SHA-256 of a token is stored.

use super::rows::{self, TOKEN_COLUMNS};
use super::Tx;
use crate::{StoreError, StoreResult};
use liftoff_types::{Millis, RunId, Scope, TokenInfo};

pub async fn create(
    tx: &Tx<'_>,
    name: &str,
    scope: Scope,
    hash: &str,
    now: Millis,
) -> StoreResult<TokenInfo> {
    let sql = format!(
        "INSERT INTO tokens (name, scope, hash, created_at_ms) VALUES ($1, $2, $3, $4)
         RETURNING {TOKEN_COLUMNS}"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_one(&stmt, &[&name, &scope.as_str(), &hash, &now])
        .await?;
    rows::token(&row)
}

/// A run token for a run that must still be live.
pub async fn create_run(
    tx: &Tx<'_>,
    run: &RunId,
    hash: &str,
    now: Millis,
) -> StoreResult<TokenInfo> {
    let live = rows::load_run(tx, run).await?;
    if live.state.is_terminal() {
        return Err(StoreError::Conflict(format!("run {run} has already ended")));
    }
    insert_run(tx, run, hash, now).await
}

/// A run token for a run just created in the same transaction.
pub async fn insert_run(
    tx: &Tx<'_>,
    run: &RunId,
    hash: &str,
    now: Millis,
) -> StoreResult<TokenInfo> {
    let sql = format!(
        "INSERT INTO tokens (name, scope, hash, created_at_ms, run_id)
         VALUES ($1, 'run', $2, $3, $4) RETURNING {TOKEN_COLUMNS}"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_one(&stmt, &[&format!("run {run}"), &hash, &now, &run.as_str()])
        .await?;
    rows::token(&row)
}

/// Revokes the tokens of a run that has ended.
pub async fn revoke_run(tx: &Tx<'_>, run: &RunId) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached("DELETE FROM tokens WHERE run_id = $1")
        .await?;
    tx.execute(&stmt, &[&run.as_str()]).await?;
    Ok(())
}

pub async fn by_hash(tx: &Tx<'_>, hash: &str) -> StoreResult<Option<TokenInfo>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1");
    let stmt = tx.prepare_cached(&sql).await?;
    tx.query_opt(&stmt, &[&hash])
        .await?
        .as_ref()
        .map(rows::token)
        .transpose()
}

pub async fn list(tx: &Tx<'_>) -> StoreResult<Vec<TokenInfo>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id");
    let stmt = tx.prepare_cached(&sql).await?;
    tx.query(&stmt, &[])
        .await?
        .iter()
        .map(rows::token)
        .collect()
}

pub async fn delete(tx: &Tx<'_>, id: i64) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached("DELETE FROM tokens WHERE id = $1")
        .await?;
    if tx.execute(&stmt, &[&id]).await? == 0 {
        return Err(StoreError::not_found("token", id));
    }
    Ok(())
}
