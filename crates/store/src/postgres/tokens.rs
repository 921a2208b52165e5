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

/// Revokes the stored tokens of a run that has ended: only earlier versions stored run
/// tokens (they are signed now, and end with their run), so this finds none but theirs.
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

/// The secret `name`, stored as `fresh` when there is none yet.
pub async fn secret(tx: &Tx<'_>, name: &str, fresh: &str) -> StoreResult<String> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&name, &fresh]).await?;
    let select = tx
        .prepare_cached("SELECT value FROM secrets WHERE name = $1")
        .await?;
    Ok(tx.query_one(&select, &[&name]).await?.get(0))
}

pub async fn delete(tx: &Tx<'_>, id: i64) -> StoreResult<()> {
    // Lock every admin token, so two revocations at once cannot each leave the other's
    // token as the last and then both go.
    let admins = tx
        .prepare_cached("SELECT id FROM tokens WHERE scope = 'admin' FOR UPDATE")
        .await?;
    let admins: Vec<i64> = tx
        .query(&admins, &[])
        .await?
        .iter()
        .map(|r| super::rows::get(r, 0))
        .collect::<StoreResult<_>>()?;
    if admins.contains(&id) && admins.len() <= 1 {
        return Err(StoreError::Conflict(crate::rules::LAST_ADMIN.into()));
    }
    let stmt = tx
        .prepare_cached("DELETE FROM tokens WHERE id = $1")
        .await?;
    if tx.execute(&stmt, &[&id]).await? == 0 {
        return Err(StoreError::not_found("token", id));
    }
    Ok(())
}
