//! Retention on the server: ended items and their runs, logs and metrics, stopped agents
//! (the store's [`prune`](liftoff_store::Store::prune)), and code archives no job version
//! refers to, all past a cutoff. Run by `POST /api/v1/prune` and, with `--retention`, by
//! the server itself every hour.

use crate::state::AppState;
use liftoff_store::{Pruned, StoreResult};
use liftoff_types::Millis;
use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

pub async fn prune(state: &AppState, cutoff: Millis, dry_run: bool) -> StoreResult<Pruned> {
    let mut pruned = state.store.prune(cutoff, dry_run).await?;
    if let Some(artifacts) = state.artifacts.clone() {
        let kept: HashSet<String> = state
            .store
            .list_job_versions(None)
            .await?
            .into_iter()
            .filter_map(|v| v.spec.source.digest)
            .map(|d| d.trim_start_matches("sha256:").to_string())
            .collect();
        let before = UNIX_EPOCH + Duration::from_millis(cutoff.max(0) as u64);
        let gone = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for (digest, at) in artifacts.list() {
                if at < before
                    && !kept.contains(digest.as_str())
                    && (dry_run || artifacts.remove(&digest).is_ok())
                {
                    n += 1;
                }
            }
            n
        })
        .await
        .unwrap_or(0);
        pruned.archives = gone;
    }
    Ok(pruned)
}

/// Prunes what is older than `keep`, now and every hour.
pub async fn every_hour(state: AppState, keep: Duration) {
    loop {
        let cutoff = liftoff_types::now_ms() - keep.as_millis() as i64;
        match prune(&state, cutoff, false).await {
            Ok(p) if p != Pruned::default() => tracing::info!(
                items = p.items,
                runs = p.runs,
                agents = p.agents,
                sweeps = p.sweeps,
                archives = p.archives,
                "pruned past the retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
