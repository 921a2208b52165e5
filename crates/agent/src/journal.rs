//! The agent's state directory: who it is on the server, and what it owns, so that a
//! restarted agent re-adopts its runs instead of losing them or starting them twice.
//!
//! Layout: `agent.json` (identity, written to a temporary name and renamed); `journal.jsonl`,
//! one line per change (`put` an entry, `del` a run), appended, so that recording a run costs
//! no new file (creating files is what a busy agent's file system spends most on); and
//! `runs/<run id>/` with the run's `work/` directory, `output.log`, `config.json` and, once it
//! ended, `exit.json` (written by the supervisor). A line cut short by a crash is ignored on
//! replay. The journal is rewritten to its live entries at start and when it has grown to
//! many times their number.

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
    /// Why the agent stopped the run, once it decided to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<crate::slots::StopWhy>,
}

/// One line of `journal.jsonl`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Put { entry: Entry },
    Del { run_id: RunId },
}

/// Lines past which the journal is rewritten, beyond what its live entries need.
const COMPACT_SLACK: usize = 1000;

pub struct Journal {
    dir: PathBuf,
    log: std::sync::Mutex<Log>,
}

struct Log {
    file: std::fs::File,
    live: std::collections::BTreeMap<RunId, Entry>,
    lines: usize,
}

impl Journal {
    /// Opens (creating) a state directory, private to this user, and replays its journal.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir.join("runs"))?;
        let empty = dir.join("empty-config.json");
        if std::fs::read(&empty).ok().as_deref() != Some(b"{}") {
            write_atomic(&empty, b"{}")?;
            std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o444))?;
        }
        let path = dir.join("journal.jsonl");
        let live = replay(&path);
        let file = rewrite(&path, &live)?;
        let lines = live.len();
        Ok(Journal {
            dir: dir.to_path_buf(),
            log: std::sync::Mutex::new(Log { file, live, lines }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn run_dir(&self, run: &RunId) -> PathBuf {
        self.dir.join("runs").join(run.as_str())
    }

    /// A read-only file holding `{}`, the config file of every run without a config.
    pub fn empty_config(&self) -> PathBuf {
        self.dir.join("empty-config.json")
    }

    pub fn identity(&self) -> Option<Identity> {
        read_identity(&self.dir)
    }

    pub fn set_identity(&self, id: &Identity) -> std::io::Result<()> {
        write_atomic(
            &self.dir.join("agent.json"),
            &serde_json::to_vec_pretty(id)?,
        )
    }

    /// Records (or updates) what the agent owns for a run.
    pub fn record(&self, entry: &Entry) -> std::io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        append(
            &mut log.file,
            &Line::Put {
                entry: entry.clone(),
            },
        )?;
        log.live.insert(entry.run_id.clone(), entry.clone());
        log.lines += 1;
        Ok(())
    }

    /// The run's end reached the server: it is no longer the agent's to watch.
    pub fn forget(&self, run: &RunId) -> std::io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.live.remove(run).is_none() {
            return Ok(());
        }
        append(
            &mut log.file,
            &Line::Del {
                run_id: run.clone(),
            },
        )?;
        log.lines += 1;
        if log.lines > log.live.len() * 4 + COMPACT_SLACK {
            log.file = rewrite(&self.dir.join("journal.jsonl"), &log.live)?;
            log.lines = log.live.len();
        }
        Ok(())
    }

    /// Every run the journal says the agent owns.
    pub fn entries(&self) -> Vec<Entry> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.live.values().cloned().collect()
    }
}

/// The live entries of a state directory's journal, read without changing anything: for
/// the helper that tells ends while the agent is away (see [`crate::tell`]).
pub fn read_entries(dir: &Path) -> Vec<Entry> {
    replay(&dir.join("journal.jsonl")).into_values().collect()
}

/// The agent's identity in a state directory, read without opening its journal.
pub fn read_identity(dir: &Path) -> Option<Identity> {
    let bytes = std::fs::read(dir.join("agent.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn replay(path: &Path) -> std::collections::BTreeMap<RunId, Entry> {
    let mut live = std::collections::BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Put { entry }) => {
                    live.insert(entry.run_id.clone(), entry);
                }
                Ok(Line::Del { run_id }) => {
                    live.remove(&run_id);
                }
                Err(_) => {} // a line cut short by a crash
            }
        }
    }
    live
}

fn append(file: &mut std::fs::File, line: &Line) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(line)?;
    bytes.push(b'\n');
    // One write of a whole line to a file opened for appending. A line cut short (a full
    // disk) is taken back, or the next would be glued to its remains; the file's length is
    // asked for only then, not on every append.
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if written > 0 {
                    if let Ok(meta) = file.metadata() {
                        let _ = file.set_len(meta.len().saturating_sub(written as u64));
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Writes the live entries to a fresh journal and returns it opened for appending.
fn rewrite(
    path: &Path,
    live: &std::collections::BTreeMap<RunId, Entry>,
) -> std::io::Result<std::fs::File> {
    let mut bytes = Vec::new();
    for entry in live.values() {
        bytes.extend(serde_json::to_vec(&Line::Put {
            entry: entry.clone(),
        })?);
        bytes.push(b'\n');
    }
    write_atomic(path, &bytes)?;
    std::fs::OpenOptions::new().append(true).open(path)
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

    use std::io::Write;

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
            stopped: None,
        };
        j.record(&e).unwrap();
        e.shipped = 10;
        j.record(&e).unwrap();
        assert_eq!(j.entries(), vec![e]);
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.entries().len(), 1, "replayed after a restart");
        j.forget(&run).unwrap();
        j.forget(&run).unwrap();
        assert!(j.entries().is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.jsonl"))
            .unwrap()
            .write_all(b"{\"op\":\"put\",\"entr")
            .unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert!(
            j.entries().is_empty(),
            "a line cut short by a crash is ignored"
        );
        assert!(j.identity().is_none());
        let id = Identity {
            agent_id: AgentId(4),
            server: "http://x".into(),
        };
        j.set_identity(&id).unwrap();
        assert_eq!(j.identity(), Some(id));
    }
}
