//! Finding a run's program on its `PATH` before it starts, so that a missing executable is a
//! clear refusal (and the supervisor can start it with `posix_spawn`, no search of its own).

use super::lock;
use crate::{RunnerError, RunnerResult};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Programs found in a `PATH` lately: a search costs a failed `stat` per directory before
/// the one that has it (eight for `true` on a typical machine), on every run's start.
#[derive(Default)]
pub(super) struct Found {
    recent: Mutex<HashMap<(String, String), (PathBuf, Instant)>>,
}

/// How long a program found in a `PATH` is taken as found there: a new program of the same
/// name installed earlier in the `PATH` is used from the next search on.
const FOUND_FOR: Duration = Duration::from_secs(1);

impl Found {
    /// [`resolve`], remembering what a `PATH` search found for [`FOUND_FOR`] (checked to
    /// still be an executable file each time).
    pub(super) fn resolve(
        &self,
        program: &str,
        path: Option<&String>,
        cwd: &Path,
    ) -> RunnerResult<PathBuf> {
        if program.contains('/') {
            return resolve(program, path, cwd);
        }
        let key = (program.to_string(), path.cloned().unwrap_or_default());
        let hit = lock(&self.recent)
            .get(&key)
            .filter(|(_, at)| at.elapsed() < FOUND_FOR)
            .map(|(p, _)| p.clone());
        if let Some(found) = hit.filter(|p| executable(p)) {
            return Ok(found);
        }
        let found = resolve(program, path, cwd)?;
        let mut recent = lock(&self.recent);
        if recent.len() >= 64 {
            recent.retain(|_, (_, at)| at.elapsed() < FOUND_FOR);
        }
        recent.insert(key, (found.clone(), Instant::now()));
        Ok(found)
    }
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `program` the way exec would, so that a missing executable is a clear refusal.
/// A relative path with a slash is taken from the run's working directory, as exec would.
pub(super) fn resolve(program: &str, path: Option<&String>, cwd: &Path) -> RunnerResult<PathBuf> {
    if program.contains('/') {
        let full = cwd.join(program);
        if executable(&full) {
            return Ok(full);
        }
        return Err(RunnerError::Permanent(format!(
            "cannot start {program:?}: no such executable file"
        )));
    }
    let path = path
        .map(String::as_str)
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    if let Some(found) = std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
    {
        return Ok(found);
    }
    Err(RunnerError::Permanent(format!(
        "cannot start {program:?}: not found in PATH ({path})"
    )))
}
