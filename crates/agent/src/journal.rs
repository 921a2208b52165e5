//! The agent's state directory: who it is on the server, and a journal entry per run it
//! owns, so that a restarted agent re-adopts its runs instead of losing them or starting them
//! twice.
//!
//! Layout: `agent.json`; `runs/<run id>/` with `journal.json` (what the agent owns), the run's
//! `work/` directory, `output.log`, `config.json`, `metrics.jsonl` and, once it ended,
//! `exit.json` (written by the supervisor). Every file is written to a temporary name and
//! renamed, so a crash never leaves half of one. A run's `journal.json` is removed once its
//! end has reached the server; the rest of its directory stays for inspection.

use liftoff_runner::Handle;
use liftoff_types::{AgentId, ItemId, RunId};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Who this agent is on which server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub agent_id: AgentId,
    pub server: String,
}

/// What the agent owns for one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub item_id: ItemId,
    pub fence: i64,
    pub run_id: RunId,
    pub queue: String,
    /// Set once the backend has the run.
    #[serde(default)]
    pub handle: Option<Handle>,
    /// Output bytes the server has acknowledged.
    #[serde(default)]
    pub shipped: u64,
}

#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating) a state directory, private to this user.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir.join("runs"))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn run_dir(&self, run: &RunId) -> PathBuf {
        self.dir.join("runs").join(run.as_str())
    }

    pub fn identity(&self) -> Option<Identity> {
        let bytes = std::fs::read(self.dir.join("agent.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn set_identity(&self, id: &Identity) -> std::io::Result<()> {
        write_atomic(
            &self.dir.join("agent.json"),
            &serde_json::to_vec_pretty(id)?,
        )
    }

    /// Records (or updates) what the agent owns for a run.
    pub fn record(&self, entry: &Entry) -> std::io::Result<()> {
        let dir = self.run_dir(&entry.run_id);
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join("journal.json"), &serde_json::to_vec(entry)?)
    }

    /// The run's end reached the server: it is no longer the agent's to watch.
    pub fn forget(&self, run: &RunId) -> std::io::Result<()> {
        match std::fs::remove_file(self.run_dir(run).join("journal.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every run the journal says the agent owns.
    pub fn entries(&self) -> Vec<Entry> {
        let Ok(dirs) = std::fs::read_dir(self.dir.join("runs")) else {
            return Vec::new();
        };
        dirs.filter_map(|d| {
            let bytes = std::fs::read(d.ok()?.path().join("journal.json")).ok()?;
            serde_json::from_slice(&bytes).ok()
        })
        .collect()
    }
}

/// Writes `path` whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let run: RunId = "abc".parse().unwrap();
        let mut e = Entry {
            item_id: ItemId(3),
            fence: 2,
            run_id: run.clone(),
            queue: "q".into(),
            handle: None,
            shipped: 0,
        };
        j.record(&e).unwrap();
        e.shipped = 10;
        j.record(&e).unwrap();
        assert_eq!(j.entries(), vec![e]);
        j.forget(&run).unwrap();
        j.forget(&run).unwrap();
        assert!(j.entries().is_empty());
        assert!(j.identity().is_none());
        let id = Identity {
            agent_id: AgentId(4),
            server: "http://x".into(),
        };
        j.set_identity(&id).unwrap();
        assert_eq!(j.identity(), Some(id));
    }
}
