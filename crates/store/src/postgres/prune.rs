//! Retention, as the SQLite store does it (the statements are shared, in `rules.rs`).

use super::Tx;
use crate::rules::{prune_counts, prune_deletes};
use crate::{Pruned, StoreResult};
use liftoff_types::Millis;

pub async fn prune(tx: &Tx<'_>, cutoff: Millis, dry_run: bool) -> StoreResult<Pruned> {
    let mut counts = [0u64; 4];
    for (n, sql) in counts.iter_mut().zip(prune_counts()) {
        let row = tx.query_one(&sql, &[&cutoff]).await?;
        *n = super::rows::get::<i64>(&row, 0)? as u64;
    }
    if !dry_run {
        for sql in prune_deletes() {
            tx.execute(&sql, &[&cutoff]).await?;
        }
    }
    Ok(Pruned {
        items: counts[0],
        runs: counts[1],
        agents: counts[2],
        sweeps: counts[3],
        archives: 0,
    })
}
