//! Run directories kept for reuse.
//!
//! Each run gets a directory of its own (`runs/<id>/`, with `work/` as its working directory,
//! its `output.log` and `exit.json`). Making one costs four new inodes, and on a busy agent
//! of short runs that was the biggest single cost of a run: ext4 searches its inode bitmaps
//! for each, the longer the more files were deleted lately. So a run that ended `finished`,
//! whose output the server has whole and which left nothing behind (an empty `work/`, no
//! file but the two the agent's side writes), hands its directory on: the output is emptied
//! and the directory stays where it is until the next run's is renamed from it (one rename
//! per run: a directory moved to another parent and back cost two, each a fifth of a short
//! run's own cost). Its exit file keeps the last run's record, which names that run: the
//! supervisor overwrites it, and a reader never takes it for the new run's.
//! Anything a run writes is kept: a directory with more in it is left as it is. The checks
//! take one directory listing each (file types come with the listing) and a few `lstat`s:
//! they are on every short run's path.
//!
//! The checks look at what the run could have changed: `work/` must still be a real
//! directory and the two files plain files with one link (a symlink or hard link planted by
//! the run would otherwise make the next run write, or the emptying truncate, someone
//! else's file).
//!
//! A fresh agent has no finished runs to take from, and its first runs would each pay for
//! new inodes: [`Spares::fill`] makes directories ahead, off the runs' path, in `spare/`
//! (where [`Spares::put_away`] also moves the finished ones when the agent stops, so the next
//! agent on this state directory finds them).

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most directories kept waiting: enough for every slot of a busy agent several times over.
const MAX_SPARES: usize = 256;
const WORK: &str = "work";

pub struct Spares {
    dir: PathBuf,
    /// Taken from the back. Finished runs' directories go in at the back, so the next run
    /// takes the one the last run left (it waits under `runs/`); directories made ahead go
    /// in at the front, so a fill still going on beside the first runs does not bury them.
    pool: Mutex<VecDeque<PathBuf>>,
    next: AtomicU64,
}

impl Spares {
    /// The spares under `state_dir/spare`, with those a previous run of the agent left.
    pub fn open(state_dir: &Path) -> Spares {
        let dir = state_dir.join("spare");
        let _ = fs::create_dir_all(&dir);
        let mut pool = VecDeque::new();
        let mut next = 0;
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if let Some(n) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    next = next.max(n + 1);
                    pool.push_back(entry.path());
                }
            }
        }
        pool.truncate(MAX_SPARES);
        Spares {
            dir,
            pool: Mutex::new(pool),
            next: AtomicU64::new(next),
        }
    }

    /// Puts a spare in place as `run_dir` (which must not exist yet). False when there is
    /// none: the caller makes the directory.
    pub fn take(&self, run_dir: &Path) -> bool {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        let Some(spare) = self.lock().pop_back() else {
            return false;
        };
        // One call, and never over a directory already there (a job's checkout).
        match renameat2(
            AT_FDCWD,
            &spare,
            AT_FDCWD,
            run_dir,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => true,
            Err(nix::errno::Errno::EEXIST) => {
                self.lock().push_back(spare);
                false
            }
            // A spare gone from under us (the state directory cleaned by hand) is dropped.
            Err(_) => false,
        }
    }

    /// Keeps the directory of a run that ended `finished` for reuse, if the run left
    /// nothing of its own in it and the server has its output up to `shipped` bytes, which
    /// must be all of it. It stays where it is until taken.
    pub fn give(&self, run_dir: &Path, shipped: u64) {
        if self.lock().len() >= MAX_SPARES {
            return;
        }
        let Some(output_len) = reusable(run_dir, shipped) else {
            return;
        };
        if output_len > 0
            && OpenOptions::new()
                .write(true)
                .open(run_dir.join("output.log"))
                .and_then(|f| f.set_len(0))
                .is_err()
        {
            return;
        }
        self.lock().push_back(run_dir.to_path_buf());
    }

    /// Makes the spares missing for `wanted` (at most [`MAX_SPARES`]) in `spare/`, each as a
    /// run leaves it: `work/`, an empty `output.log` and `exit.json`. Blocking: for a
    /// blocking thread, while the agent waits for work.
    pub fn fill(&self, wanted: usize) {
        let missing = wanted.min(MAX_SPARES).saturating_sub(self.lock().len());
        for _ in 0..missing {
            let spare = self.new_path();
            let made = fs::create_dir_all(spare.join(WORK))
                .and_then(|()| fs::File::create(spare.join("output.log")))
                .and_then(|_| fs::File::create(spare.join("exit.json")));
            if made.is_err() {
                let _ = fs::remove_dir_all(&spare);
                return;
            }
            self.lock().push_front(spare);
        }
    }

    /// Moves the spares still under `runs/` (finished runs' directories) to `spare/`, for
    /// the next agent on this state directory: an agent stopping.
    pub fn put_away(&self) {
        let mut pool = self.lock();
        for spare in pool.iter_mut() {
            if spare.parent() == Some(self.dir.as_path()) {
                continue;
            }
            let moved = self.new_path();
            if fs::rename(&*spare, &moved).is_ok() {
                *spare = moved;
            }
        }
    }

    /// A name in `spare/` no spare has.
    fn new_path(&self) -> PathBuf {
        self.dir
            .join(self.next.fetch_add(1, Ordering::Relaxed).to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<PathBuf>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `run_dir` holds only an empty `work/` and the agent's own files, as made, with
/// the output shipped whole: then the output's length.
fn reusable(run_dir: &Path, shipped: u64) -> Option<u64> {
    let mut has_work = false;
    let mut output_len = 0;
    for entry in fs::read_dir(run_dir).ok()? {
        let entry = entry.ok()?;
        // From the listing: no call, and a symlink is a symlink (not followed).
        let kind = entry.file_type().ok()?;
        match entry.file_name().to_str()? {
            WORK if kind.is_dir() => has_work = true,
            own @ ("output.log" | "exit.json") if kind.is_file() => {
                let meta = entry.metadata().ok()?;
                let whole = match own {
                    "output.log" => meta.len() == shipped,
                    _ => meta.len() <= liftoff_runner::local::EXIT_RECORD as u64,
                };
                if meta.nlink() != 1 || !whole {
                    return None;
                }
                if own == "output.log" {
                    output_len = meta.len();
                }
            }
            _ => return None,
        }
    }
    let work_empty = fs::read_dir(run_dir.join(WORK)).ok()?.next().is_none();
    (has_work && work_empty).then_some(output_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(root: &Path, name: &str, output: &str) -> PathBuf {
        let dir = root.join("runs").join(name);
        fs::create_dir_all(dir.join(WORK)).unwrap();
        fs::write(dir.join("output.log"), output).unwrap();
        fs::write(dir.join("exit.json"), "{\"code\":0}").unwrap();
        dir
    }

    #[test]
    fn an_empty_finished_run_dir_is_reused_with_its_output_emptied() {
        let root = tempfile::tempdir().unwrap();
        let spares = Spares::open(root.path());
        let old = run_dir(root.path(), "a", "hello\n");
        spares.give(&old, 6);
        let new = root.path().join("runs").join("b");
        assert!(spares.take(&new));
        assert!(!old.exists(), "renamed into place");
        assert_eq!(fs::read(new.join("output.log")).unwrap(), b"");
        assert!(new.join("exit.json").is_file(), "kept, to be overwritten");
        assert!(new.join(WORK).is_dir());
        assert!(
            !spares.take(&root.path().join("runs").join("c")),
            "one spare only"
        );
        // Never over a directory already there (a job's checkout): the spare stays.
        spares.give(&new, 0);
        let checkout = run_dir(root.path(), "checkout", "");
        fs::write(checkout.join(WORK).join("train.py"), "print(1)").unwrap();
        assert!(!spares.take(&checkout));
        assert!(checkout.join(WORK).join("train.py").exists());
        let new = root.path().join("runs").join("b2");
        assert!(spares.take(&new), "the spare was kept");
        // A new agent on the same state directory finds what the last one put away.
        spares.give(&new, 0);
        spares.put_away();
        assert!(!new.exists());
        let again = Spares::open(root.path());
        assert!(again.take(&root.path().join("runs").join("d")));
    }

    #[test]
    fn spares_made_ahead_are_run_directories_as_a_run_leaves_them() {
        let root = tempfile::tempdir().unwrap();
        let spares = Spares::open(root.path());
        spares.fill(3);
        spares.fill(2);
        assert_eq!(fs::read_dir(root.path().join("spare")).unwrap().count(), 3);
        for name in ["a", "b", "c"] {
            let dir = root.path().join("runs").join(name);
            fs::create_dir_all(dir.parent().unwrap()).unwrap();
            assert!(spares.take(&dir), "{name}");
            assert!(dir.join(WORK).is_dir());
            assert_eq!(fs::read(dir.join("output.log")).unwrap(), b"");
            assert_eq!(reusable(&dir, 0), Some(0), "and reusable after a run");
        }
        assert!(!spares.take(&root.path().join("runs").join("d")));
    }

    #[test]
    fn a_finished_runs_directory_is_taken_before_those_made_ahead() {
        let root = tempfile::tempdir().unwrap();
        let spares = Spares::open(root.path());
        spares.fill(1);
        let finished = run_dir(root.path(), "finished", "");
        spares.give(&finished, 0);
        // A fill still going on when the first runs end (a fresh agent) must not bury the
        // directory the last run left under `runs/`: it would stay there.
        spares.fill(3);
        assert!(spares.take(&root.path().join("runs").join("next")));
        assert!(
            !finished.exists(),
            "the finished run's directory went on to the next run"
        );
    }

    #[test]
    fn what_a_run_leaves_behind_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let spares = Spares::open(root.path());
        let wrote = run_dir(root.path(), "wrote", "");
        fs::write(wrote.join(WORK).join("model.pt"), "weights").unwrap();
        let metrics = run_dir(root.path(), "metrics", "");
        fs::write(metrics.join("metrics.jsonl"), "{}\n").unwrap();
        let unshipped = run_dir(root.path(), "unshipped", "not all sent\n");
        let linked = run_dir(root.path(), "linked", "");
        let victim = root.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        fs::remove_file(linked.join("output.log")).unwrap();
        std::os::unix::fs::symlink(&victim, linked.join("output.log")).unwrap();
        let hard = run_dir(root.path(), "hard", "");
        fs::remove_file(hard.join("exit.json")).unwrap();
        fs::hard_link(&victim, hard.join("exit.json")).unwrap();
        for dir in [&wrote, &metrics, &unshipped, &linked, &hard] {
            spares.give(dir, 0);
            assert!(dir.exists(), "{} was taken", dir.display());
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!spares.take(&root.path().join("runs").join("x")));
    }
}
