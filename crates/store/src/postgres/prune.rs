//! Retention, as the SQLite store does it: ended items older than a cutoff go with their runs, logs, metrics, warnings
//! and files, and agents stopped or lost before it with them. Live items, a live sweep's
//! items and anything an agent still holds are never touched.

use super::Tx;
use crate::{Pruned, StoreResult};
use liftoff_types::Millis;

/// Ended, not a sweep's, last changed before `$1`.
const ITEMS: &str =
    "SELECT id FROM items WHERE state IN ('finished', 'failed', 'stopped', 'cancelled')
     AND updated_at_ms < $1 AND sweep_id IS NULL AND kind = 'run'";
const RUNS: &str = "SELECT id FROM runs WHERE item_id IN (SELECT id FROM items WHERE state IN
     ('finished', 'failed', 'stopped', 'cancelled') AND updated_at_ms < $1 AND sweep_id IS NULL
     AND kind = 'run')";
const AGENTS: &str = "SELECT id FROM agents WHERE status IN ('stopped', 'lost')
     AND heartbeat_at_ms < $1
     AND NOT EXISTS (SELECT 1 FROM items i WHERE i.agent_id = agents.id
                     AND i.state IN ('leased', 'claimed'))";

pub async fn prune(tx: &Tx<'_>, cutoff: Millis, dry_run: bool) -> StoreResult<Pruned> {
    let mut counts = [0u64; 3];
    for (n, sql) in counts.iter_mut().zip([ITEMS, RUNS, AGENTS]) {
        let row = tx
            .query_one(&format!("SELECT count(*) FROM ({sql}) AS x"), &[&cutoff])
            .await?;
        *n = super::rows::get::<i64>(&row, 0)? as u64;
    }
    let pruned = Pruned {
        items: counts[0],
        runs: counts[1],
        agents: counts[2],
        archives: 0,
    };
    if dry_run {
        return Ok(pruned);
    }
    for sql in [
        format!("DELETE FROM run_logs WHERE run_id IN ({RUNS})"),
        format!("DELETE FROM run_metrics WHERE run_id IN ({RUNS})"),
        format!("DELETE FROM runs WHERE id IN ({RUNS})"),
        format!("DELETE FROM item_warnings WHERE item_id IN ({ITEMS})"),
        format!("DELETE FROM item_files WHERE item_id IN ({ITEMS})"),
        format!("DELETE FROM items WHERE id IN ({ITEMS})"),
        format!("DELETE FROM agents WHERE id IN ({AGENTS})"),
    ] {
        tx.execute(&sql, &[&cutoff]).await?;
    }
    Ok(pruned)
}
