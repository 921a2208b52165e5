//! Token rows. Only the SHA-256 of a token is stored; the secret is shown once at creation.

use super::rows::{self, TOKEN_COLUMNS};
use crate::{StoreError, StoreResult};
use liftoff_types::{Millis, RunId, Scope, TokenInfo};
use rusqlite::{params, Connection, OptionalExtension};

pub fn create(
    conn: &Connection,
    name: &str,
    scope: Scope,
    hash: &str,
    now: Millis,
) -> StoreResult<TokenInfo> {
    let sql = format!(
        "INSERT INTO tokens (name, scope, hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)
         RETURNING {TOKEN_COLUMNS}"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![name, scope.as_str(), hash, now], rows::token)?)
}

/// Revokes the stored tokens of a run that has ended: only earlier versions stored run
/// tokens (they are signed now, and end with their run), so this finds none but theirs.
pub fn revoke_run(conn: &Connection, run: &RunId) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM tokens WHERE run_id = ?1")?
        .execute([run.as_str()])?;
    Ok(())
}

pub fn by_hash(conn: &Connection, hash: &str) -> StoreResult<Option<TokenInfo>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([hash], rows::token)
        .optional()?)
}

pub fn list(conn: &Connection) -> StoreResult<Vec<TokenInfo>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let tokens = stmt.query_map([], rows::token)?;
    Ok(tokens.collect::<Result<_, _>>()?)
}

/// The secret `name`, stored as `fresh` when there is none yet.
pub fn secret(conn: &Connection, name: &str, fresh: &str) -> StoreResult<String> {
    conn.prepare_cached(
        "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )?
    .execute([name, fresh])?;
    Ok(conn
        .prepare_cached("SELECT value FROM secrets WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

pub fn delete(conn: &Connection, id: i64) -> StoreResult<()> {
    let (scope, admins): (Option<String>, i64) = conn
        .prepare_cached(
            "SELECT (SELECT scope FROM tokens WHERE id = ?1),
                    (SELECT count(*) FROM tokens WHERE scope = 'admin')",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if scope.as_deref() == Some("admin") && admins <= 1 {
        return Err(StoreError::Conflict(crate::rules::LAST_ADMIN.into()));
    }
    let n = conn
        .prepare_cached("DELETE FROM tokens WHERE id = ?1")?
        .execute([id])?;
    if n == 0 {
        return Err(StoreError::not_found("token", id));
    }
    Ok(())
}
