//! Run directories go once they are no longer needed: a finished run's when its end and
//! output are on the server (after `keep_finished_runs`, default at once), any other's after
//! `keep_failed_runs` (default a day, to look into what it left). Without this the disk grew
//! by a full copy of a code job's source per run.
//!
//! A finished run's directory goes at its end ([`ended`]); a sweep every minute removes the
//! rest once they are old enough, judged by their exit file (or the directory itself, for a
//! run that wrote none). Never touched: directories of runs the journal still holds, spares
//! waiting in place for the next run, and anything changed in the last minute (a run's
//! directory is made just after its journal entry, so a young one may not be in it yet).

use crate::state::Agent;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Nothing younger than this is swept, whatever the settings.
const MIN_AGE: Duration = Duration::from_secs(60);

/// A finished run's end is on the server; `kept`: its directory went to the spares.
pub(crate) async fn ended(agent: &Arc<Agent>, dir: &Path, kept: bool) {
    if kept || !agent.config.keep_finished.is_zero() {
        return;
    }
    remove(dir.to_path_buf()).await;
}

/// Sweeps the run directories now and every `every` until the agent ends.
pub(crate) async fn sweep_every(agent: Arc<Agent>, every: Duration) {
    loop {
        let me = agent.clone();
        let _ = tokio::task::spawn_blocking(move || sweep(&me)).await;
        tokio::time::sleep(every).await;
    }
}

fn sweep(agent: &Agent) {
    let runs = agent.journal.dir().join("runs");
    let Ok(listing) = std::fs::read_dir(&runs) else {
        return;
    };
    let live: std::collections::HashSet<String> = agent
        .journal
        .entries()
        .into_iter()
        .map(|e| e.run_id.to_string())
        .collect();
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if live.contains(&name) || agent.spares.holds(&dir) {
            continue;
        }
        let Some(keep) = keep_for(agent, &dir, &name) else {
            continue;
        };
        let age = |p: &Path| {
            std::fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
        };
        let since_change = [dir.clone(), dir.join("exit.json"), dir.join("output.log")]
            .iter()
            .filter_map(|p| age(p))
            .min();
        if since_change.is_some_and(|a| a >= keep.max(MIN_AGE))
            && std::fs::remove_dir_all(&dir).is_ok()
        {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed old run directories");
    }
}

/// How long `dir` is kept: a run that exited 0 as finished, any other as failed. `None`:
/// not a run's directory (left alone).
fn keep_for(agent: &Agent, dir: &Path, name: &str) -> Option<Duration> {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
        || name.parse::<liftoff_types::RunId>().is_err()
    {
        return None;
    }
    let exit = std::fs::read(dir.join("exit.json"))
        .ok()
        .and_then(|b| liftoff_runner::local::read_exit_record(&b, name));
    Some(match exit {
        Some(exit) if exit.success() => agent.config.keep_finished,
        _ => agent.config.keep_failed,
    })
}

async fn remove(dir: std::path::PathBuf) {
    let shown = dir.display().to_string();
    match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => {
            tracing::warn!(dir = %shown, error = %e, "could not remove a run's directory")
        }
        Err(_) => {}
    }
}
