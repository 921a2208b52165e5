//! Retention: ended items older than a cutoff go with their runs, logs, metrics, warnings
//! and files, and agents stopped or lost before it with them, and ended sweeps whose every
//! item is that old with all their items. Live items, a sweep still going or recently
//! active, and anything an agent still holds are never touched. The statements are shared with the
//! PostgreSQL store (`rules.rs`).

use crate::rules::{prune_counts, prune_deletes};
use crate::{Pruned, StoreResult};
use liftoff_types::Millis;
use rusqlite::Connection;

pub fn prune(conn: &Connection, cutoff: Millis, dry_run: bool) -> StoreResult<Pruned> {
    let mut counts = [0u64; 4];
    for (n, sql) in counts.iter_mut().zip(prune_counts()) {
        *n = conn.prepare(&sql)?.query_row([cutoff], |r| r.get(0))?;
    }
    if !dry_run {
        for sql in prune_deletes() {
            conn.execute(&sql, [cutoff])?;
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
