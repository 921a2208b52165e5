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
//! Anything a run writes is kept: a directory with more in it is left as it is.
//!
//! The checks are on every short run's path, so they are made cheap: a directory kept here
//! gets a modification time of its own choosing (two seconds in the past, read back as the
//! file system stores it), for itself and its `work/`, and remembers it. Creating, removing
//! or renaming anything in a directory sets its modification time to the present, so when
//! both still read as set, nothing in them changed: four `lstat`s, no listing (two
//! listings, each an `opendir` with its 32 KiB buffer and a few `getdents`, were a tenth of
//! the agent's work on a run of `true`). Otherwise, or for a directory without a time of its
//! own (one left by an earlier agent), the directories are listed.
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

use std::collections::{HashMap, VecDeque};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Most directories kept waiting: enough for every slot of a busy agent several times over.
const MAX_SPARES: usize = 256;
const WORK: &str = "work";
/// How far in the past a kept directory's modification time is set: further than any file
/// system's timestamp granularity (FAT's is two seconds) and than the lag of the coarse
/// clock the kernel stamps changes with, so a change made after it was set always shows.
const STAMP_AGE: Duration = Duration::from_secs(2);

/// The modification times a kept directory and its `work/` were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dir: SystemTime,
    work: SystemTime,
}

/// A directory waiting to be taken, with its stamp if it has one.
type Spare = (PathBuf, Option<Stamp>);

pub struct Spares {
    dir: PathBuf,
    inner: Mutex<Inner>,
    next: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// Taken from the back. Finished runs' directories go in at the back, so the next run
    /// takes the one the last run left (it waits under `runs/`); directories made ahead go
    /// in at the front, so a fill still going on beside the first runs does not bury them.
    pool: VecDeque<Spare>,
    /// The stamps of directories runs have now, by run directory, until given back.
    lent: HashMap<PathBuf, Stamp>,
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
                    pool.push_back((entry.path(), None));
                }
            }
        }
        pool.truncate(MAX_SPARES);
        Spares {
            dir,
            inner: Mutex::new(Inner {
                pool,
                lent: HashMap::new(),
            }),
            next: AtomicU64::new(next),
        }
    }

    /// Puts a spare in place as `run_dir` (which must not exist yet). False when there is
    /// none: the caller makes the directory.
    pub fn take(&self, run_dir: &Path) -> bool {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        let Some((spare, stamp)) = self.lock().pool.pop_back() else {
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
            Ok(()) => {
                if let Some(stamp) = stamp {
                    self.lock().lent.insert(run_dir.to_path_buf(), stamp);
                }
                true
            }
            Err(nix::errno::Errno::EEXIST) => {
                self.lock().pool.push_back((spare, stamp));
                false
            }
            // A spare gone from under us (the state directory cleaned by hand) is dropped.
            Err(_) => false,
        }
    }

    /// Whether `dir` waits here to be taken (it must not be removed).
    pub fn holds(&self, dir: &Path) -> bool {
        self.lock().pool.iter().any(|(d, _)| d == dir)
    }

    /// Keeps the directory of a run that ended `finished` for reuse, if the run left
    /// nothing of its own in it and the server has its output up to `shipped` bytes, which
    /// must be all of it. It stays where it is until taken. Returns whether it was kept.
    pub fn give(&self, run_dir: &Path, shipped: u64) -> bool {
        let stamp = {
            let mut inner = self.lock();
            let stamp = inner.lent.remove(run_dir);
            if inner.pool.len() >= MAX_SPARES {
                return false;
            }
            stamp
        };
        // By the stamp when the directory has one; else (or if it moved) by listing it, and
        // then stamped for the next time.
        let checked = stamp
            .and_then(|stamp| Some((unchanged(run_dir, stamp, shipped)?, Some(stamp))))
            .or_else(|| Some((reusable(run_dir, shipped)?, restamp(run_dir))));
        let Some((output_len, stamp)) = checked else {
            return false;
        };
        if output_len > 0
            && OpenOptions::new()
                .write(true)
                .open(run_dir.join("output.log"))
                .and_then(|f| f.set_len(0))
                .is_err()
        {
            return false;
        }
        self.lock().pool.push_back((run_dir.to_path_buf(), stamp));
        true
    }

    /// Makes the spares missing for `wanted` (at most [`MAX_SPARES`]) in `spare/`, each as a
    /// run leaves it: `work/`, an empty `output.log` and `exit.json`. Blocking: for a
    /// blocking thread, while the agent waits for work.
    pub fn fill(&self, wanted: usize) {
        let missing = wanted
            .min(MAX_SPARES)
            .saturating_sub(self.lock().pool.len());
        for _ in 0..missing {
            let spare = self.new_path();
            let made = fs::create_dir_all(spare.join(WORK))
                .and_then(|()| fs::File::create(spare.join("output.log")))
                .and_then(|_| fs::File::create(spare.join("exit.json")));
            if made.is_err() {
                let _ = fs::remove_dir_all(&spare);
                return;
            }
            let stamp = restamp(&spare);
            self.lock().pool.push_front((spare, stamp));
        }
    }

    /// Moves the spares still under `runs/` (finished runs' directories) to `spare/`, for
    /// the next agent on this state directory: an agent stopping.
    pub fn put_away(&self) {
        let mut inner = self.lock();
        for (spare, _) in inner.pool.iter_mut() {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Gives `run_dir` and its `work/` a modification time [`STAMP_AGE`] in the past; returns
/// them as the file system keeps them (it may round), or `None` if they cannot be set.
fn restamp(run_dir: &Path) -> Option<Stamp> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let at = SystemTime::now()
        .checked_sub(STAMP_AGE)?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    let work = run_dir.join(WORK);
    for path in [run_dir, work.as_path()] {
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::from_duration(at),
            UtimensatFlags::NoFollowSymlink,
        )
        .ok()?;
    }
    Some(Stamp {
        dir: fs::symlink_metadata(run_dir).ok()?.modified().ok()?,
        work: fs::symlink_metadata(&work).ok()?.modified().ok()?,
    })
}

/// The fast check: nothing was created, removed or renamed in `run_dir` or its `work/`
/// since they were stamped (both still have their stamped times), and the agent's two files
/// are as they must be. Then the output's length.
fn unchanged(run_dir: &Path, stamp: Stamp, shipped: u64) -> Option<u64> {
    let same = |path: &Path, at: SystemTime| {
        fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.modified().is_ok_and(|t| t == at))
    };
    if !same(run_dir, stamp.dir) || !same(&run_dir.join(WORK), stamp.work) {
        return None;
    }
    // The same files as before (the directory did not change), but what the run may have
    // done to them (written to them, linked them elsewhere) still counts.
    own_file(
        "exit.json",
        &fs::symlink_metadata(run_dir.join("exit.json")).ok()?,
        shipped,
    )?;
    own_file(
        "output.log",
        &fs::symlink_metadata(run_dir.join("output.log")).ok()?,
        shipped,
    )
}

/// Whether one of the agent's own files in a run directory is as a reusable directory's
/// must be: a plain file with one link; `output.log` shipped whole (then its length), the
/// exit file no longer than a record.
fn own_file(name: &str, meta: &fs::Metadata, shipped: u64) -> Option<u64> {
    let whole = match name {
        "output.log" => meta.len() == shipped,
        _ => meta.len() <= liftoff_runner::local::EXIT_RECORD as u64,
    };
    (meta.file_type().is_file() && meta.nlink() == 1 && whole).then_some(meta.len())
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
                let len = own_file(own, &entry.metadata().ok()?, shipped)?;
                if own == "output.log" {
                    output_len = len;
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

    /// The stamp of the spare the next run would take.
    fn next_stamp(spares: &Spares) -> Option<Stamp> {
        spares.lock().pool.back().and_then(|(_, stamp)| *stamp)
    }

    #[test]
    fn a_stamped_directory_shows_whatever_a_run_changed_in_it() {
        let root = tempfile::tempdir().unwrap();
        let runs = root.path().join("runs");
        fs::create_dir_all(&runs).unwrap();
        let spares = Spares::open(root.path());
        spares.fill(1);
        let made = next_stamp(&spares).expect("a spare made ahead is stamped");
        assert!(made.dir <= SystemTime::now() - STAMP_AGE + Duration::from_millis(1));

        // A run that leaves nothing hands its directory on by the stamp alone (kept as is:
        // a listing would have stamped it again).
        let a = runs.join("a");
        assert!(spares.take(&a));
        spares.give(&a, 0);
        assert_eq!(next_stamp(&spares), Some(made));

        // Files written at once, within the clock tick the directory was taken in, show.
        let b = runs.join("b");
        assert!(spares.take(&b));
        fs::write(b.join(WORK).join("model.pt"), "weights").unwrap();
        spares.give(&b, 0);
        assert!(b.join(WORK).join("model.pt").exists());
        assert!(!spares.take(&runs.join("x")), "kept, not handed on");

        // So do files beside `work/`, and a file of the agent's replaced by a link.
        for (name, change) in [
            ("c", "metrics"),
            ("d", "hard link"),
            ("e", "created and removed"),
        ] {
            spares.fill(1);
            let dir = runs.join(name);
            assert!(spares.take(&dir));
            match change {
                "metrics" => fs::write(dir.join("metrics.jsonl"), "{}\n").unwrap(),
                "hard link" => {
                    let victim = root.path().join("victim");
                    fs::write(&victim, "precious").unwrap();
                    fs::remove_file(dir.join("exit.json")).unwrap();
                    fs::hard_link(&victim, dir.join("exit.json")).unwrap();
                }
                _ => {
                    fs::write(dir.join(WORK).join("tmp"), "").unwrap();
                    fs::remove_file(dir.join(WORK).join("tmp")).unwrap();
                }
            }
            spares.give(&dir, 0);
            if change == "created and removed" {
                // Listed, found empty, handed on with a new stamp.
                let stamp = next_stamp(&spares).expect("stamped again");
                assert_ne!(stamp, made);
                assert!(spares.take(&runs.join("f")));
            } else {
                assert!(dir.exists(), "{change}: kept");
                assert!(!spares.take(&runs.join("x")), "{change}: not handed on");
            }
        }
        assert_eq!(
            fs::read_to_string(root.path().join("victim")).unwrap(),
            "precious"
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
