//! The write path: group commit on a writer thread, and a checkpointer thread.
//!
//! SQLite has one writer at a time, and a commit costs more than the statements in it. A
//! write is queued for the writer thread, which takes every queued write, runs each inside a
//! savepoint (so one failing write does not undo its neighbours), commits them together, and
//! answers them all. Writes used to run on whichever async task found the connection free,
//! but a group's commit then held up every other task of that runtime thread: with the agent
//! in the same process (`liftoff up`), runs waited to be told their start while the thread
//! committed, and a batch of acks made as many commits as acks. Only a write alone in flight
//! still runs where it is (one commit of one write is short, and the hand-off to the thread
//! and back tripled a lone client's latency).
//!
//! Callers hear back only after the commit, so an answered write survives a crash of the
//! process (WAL with `synchronous=NORMAL`: the commit is in the WAL file before we answer;
//! only a crash of the whole machine can lose the last commits).
//!
//! Checkpoints (which fsync) are moved off the write path to their own thread, so a commit
//! never stalls on one. PASSIVE checkpoints alone never bound the WAL under sustained writes
//! with readers (the log restarts only when a checkpoint has caught up and no reader holds
//! an old snapshot; a 1.4 GB WAL beside an 18 MB database was seen): after each commit the
//! writer looks at the WAL's size, and past its limit the checkpointer runs a TRUNCATE
//! checkpoint at once, which holds writers for its length and empties the file.
//! `journal_size_limit` trims what a reset leaves.
//!
//! A TRUNCATE must wait until no reader uses the log, and SQLite's busy handler only polls
//! for that: with reads back to back (a dashboard, a fleet's lease polls) it rarely saw the
//! moment, so it timed out while holding writers back (the WAL passed four times its limit,
//! and writes waited seconds). Our reads therefore pass a [`ReadGate`]: while a TRUNCATE is
//! due, new reads wait for it, the reads in flight finish, and the checkpoint runs with no
//! reader at all.
//!
//! Writes go on while a TRUNCATE waits for the reads in flight (tens of milliseconds under a
//! busy listing), and flat-out writers add megabytes in that time. So the limit is also a
//! bound: past twice the limit, groups wait for the checkpointer (at most
//! [`MAX_HOLD`]) before they commit.

use crate::{StoreError, StoreResult};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most writes committed together: bounds the latency one commit adds to the first caller.
const MAX_GROUP: usize = 256;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// The WAL size past which it is emptied (a TRUNCATE checkpoint), unless told otherwise.
pub const DEFAULT_WAL_LIMIT: u64 = 64 * 1024 * 1024;

/// What every read of this store holds while it runs, and a TRUNCATE checkpoint holds
/// alone. The lock prefers writers (std's futex lock on Linux): once the checkpointer asks,
/// new reads queue behind it, so back-to-back reads cannot starve it.
#[derive(Clone, Default)]
pub struct ReadGate(Arc<RwLock<()>>);

impl ReadGate {
    /// Held for the length of one read.
    pub fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with no read in flight.
    pub fn alone<T>(&self, f: impl FnOnce() -> T) -> T {
        let _alone = self.0.write().unwrap_or_else(|p| p.into_inner());
        f()
    }
}

/// How long a group waits for a WAL past twice its limit to be emptied before it commits
/// anyway (another process's reader can keep a TRUNCATE from finishing).
const MAX_HOLD: Duration = Duration::from_secs(2);

/// The writer's word to the checkpointer that the WAL has passed its limit, and the
/// checkpointer's back that it has been emptied.
#[derive(Default)]
struct Nudge {
    due: Mutex<bool>,
    signal: Condvar,
    /// Set past twice the limit: groups wait until the checkpointer clears it.
    over: Mutex<bool>,
    emptied: Condvar,
}

impl Nudge {
    fn is_over(&self) -> bool {
        *lock(&self.over)
    }

    /// Blocks while the WAL is over its bound, at most [`MAX_HOLD`].
    fn wait_until_emptied(&self) {
        let over = lock(&self.over);
        let _ = self
            .emptied
            .wait_timeout_while(over, MAX_HOLD, |over| *over)
            .unwrap_or_else(|p| p.into_inner());
    }

    fn tell_emptied(&self) {
        *lock(&self.over) = false;
        self.emptied.notify_all();
    }
}

type Reply = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

pub struct Writer {
    conn: Mutex<Connection>,
    queue: Mutex<Vec<Job>>,
    /// Signalled when a write is queued, for the writer thread.
    queued: Condvar,
    /// Writes in flight (queued, running or waiting for their answer).
    writers: AtomicUsize,
    wal: PathBuf,
    wal_limit: u64,
    nudge: Arc<Nudge>,
    pub commits: crate::CommitTimes,
}

impl Writer {
    pub fn start(
        conn: Connection,
        path: &Path,
        wal_limit: u64,
        gate: ReadGate,
    ) -> StoreResult<Arc<Writer>> {
        // The checkpointer below does this work; the writer must never checkpoint inline.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", wal_limit as i64)?;
        let nudge = Arc::new(Nudge::default());
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let writer = Arc::new(Writer {
            conn: Mutex::new(conn),
            queue: Mutex::new(Vec::new()),
            queued: Condvar::new(),
            writers: AtomicUsize::new(0),
            wal: PathBuf::from(wal),
            wal_limit,
            nudge: nudge.clone(),
            commits: crate::CommitTimes::default(),
        });
        let checkpoint_conn = super::open_connection(path, false)?;
        checkpoint_conn.pragma_update(None, "journal_size_limit", wal_limit as i64)?;
        let weak = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("liftoff-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, weak, nudge, gate))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let weak = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("liftoff-sqlite-writer".into())
            .spawn(move || write_loop(weak))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(writer)
    }

    /// Runs `f` inside the next group commit and answers after that commit.
    pub async fn write<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, reply)
        });
        let _writing = Writing::start(&self.writers);
        // A write with no other in flight runs here, at once: no hand-off to the writer
        // thread and back (which tripled a lone client's write latency). It first lets the
        // writes started alongside it show up (a batch of acks starts them all together):
        // those go to the writer thread as one group.
        let mut job = Some(job);
        // Past the bound the write must wait for the checkpointer, which only the writer
        // thread may do (never block the runtime).
        if self.writers.load(Ordering::Acquire) == 1 && !self.nudge.is_over() {
            tokio::task::yield_now().await;
            if self.writers.load(Ordering::Acquire) == 1 && lock(&self.queue).is_empty() {
                self.run_here(&mut job);
            }
        }
        if let Some(job) = job {
            lock(&self.queue).push(job);
            self.queued.notify_one();
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits `job` on this thread if the connection is free (then takes it).
    fn run_here(&self, job: &mut Option<Job>) {
        let Ok(conn) = self.conn.try_lock() else {
            return;
        };
        let Some(job) = job.take() else { return };
        let started = std::time::Instant::now();
        let replies = commit_group(&conn, vec![job]);
        self.commits.observe(started.elapsed());
        drop(conn);
        self.watch_wal();
        for (reply, result) in replies {
            reply(result);
        }
    }

    /// After a commit: a WAL past its limit is the checkpointer's to empty, now (one stat
    /// call per group).
    fn watch_wal(&self) {
        let size = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if size > self.wal_limit.saturating_mul(2) {
            *lock(&self.nudge.over) = true;
        }
        if size > self.wal_limit {
            *lock(&self.nudge.due) = true;
            self.nudge.signal.notify_one();
        }
    }
}

/// Counts a write in flight for as long as it lives (also when its caller drops it).
struct Writing<'a>(&'a AtomicUsize);

impl<'a> Writing<'a> {
    fn start(count: &'a AtomicUsize) -> Writing<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Writing(count)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The writer thread: takes every queued write, commits them as one group, answers them,
/// and again, until the writer is gone. Groups never commit on the async runtime's threads
/// (only a write alone in flight does): a group's commit there held up every task of that
/// thread (the agent's too, in `up`).
fn write_loop(writer: Weak<Writer>) {
    loop {
        let Some(w) = writer.upgrade() else { return };
        let group: Vec<Job> = {
            let mut queue = lock(&w.queue);
            if queue.is_empty() {
                // Woken by a write, or now and then to see whether the writer is gone.
                queue = w
                    .queued
                    .wait_timeout(queue, Duration::from_millis(500))
                    .map_or_else(|p| p.into_inner().0, |(q, _)| q);
            }
            let n = queue.len().min(MAX_GROUP);
            queue.drain(..n).collect()
        };
        if group.is_empty() {
            continue;
        }
        w.nudge.wait_until_emptied();
        let conn = lock(&w.conn);
        let started = std::time::Instant::now();
        let replies = commit_group(&conn, group);
        w.commits.observe(started.elapsed());
        drop(conn);
        w.watch_wal();
        for (reply, result) in replies {
            reply(result);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a statement without arguments, prepared once per connection (`BEGIN` and `COMMIT`
/// were parsed again for every commit).
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Why a commit failed, told to each writer of the group: a full disk is said as such (the
/// write is retried by those who can, once there is space), anything else is a conflict.
fn commit_failed(e: &rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return StoreError::Full(format!("commit failed: {e}"));
    }
    StoreError::Conflict(format!("commit failed: {e}"))
}

/// Runs a group in one transaction; returns each reply with what to tell its caller.
fn commit_group(conn: &Connection, group: Vec<Job>) -> Vec<(Reply, StoreResult<()>)> {
    if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
        // Another process holds the file's write lock past busy_timeout: fail the group
        // without running it rather than run it outside a transaction.
        let message = format!("the database is locked by another process: {e}");
        return group
            .into_iter()
            .map(|job| {
                let (_, reply) = job(conn);
                (reply, Err(StoreError::Conflict(message.clone())))
            })
            .collect();
    }
    // A lone write needs no savepoint: if it fails, the whole transaction is rolled back.
    if group.len() == 1 {
        let job = group.into_iter().next().expect("one job");
        let (ok, reply) = job(conn);
        let end = if ok { "COMMIT" } else { "ROLLBACK" };
        let result = run(conn, end).map_err(|e| commit_failed(&e));
        if result.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return vec![(reply, result)];
    }
    let replies: Vec<Reply> = group
        .into_iter()
        .map(|job| {
            let _ = run(conn, "SAVEPOINT job");
            let (ok, reply) = job(conn);
            if !ok {
                let _ = run(conn, "ROLLBACK TO job");
            }
            let _ = run(conn, "RELEASE job");
            reply
        })
        .collect();
    let commit = run(conn, "COMMIT");
    if commit.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    replies
        .into_iter()
        .map(|reply| {
            let result = match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(commit_failed(e)),
            };
            (reply, result)
        })
        .collect()
}

/// Copies the WAL back into the database every half second (PASSIVE: never blocks the
/// writer), and empties it (TRUNCATE, with no read in flight) the moment the writer says it
/// passed its limit, until the writer is gone.
fn checkpoint_loop(conn: Connection, writer: Weak<Writer>, nudge: Arc<Nudge>, gate: ReadGate) {
    while writer.strong_count() > 0 {
        let due = {
            let due = lock(&nudge.due);
            let (mut due, _) = nudge
                .signal
                .wait_timeout_while(due, CHECKPOINT_EVERY, |due| !*due)
                .unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *due)
        };
        let checkpoint = |mode: &str| {
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(0)
            })
        };
        let done = if due {
            gate.alone(|| checkpoint("TRUNCATE"))
        } else {
            checkpoint("PASSIVE")
        };
        match done {
            // 1: another process's reader or the writer kept a TRUNCATE from finishing
            // within busy_timeout; the next commit past the limit asks again.
            Ok(1) => tracing::warn!("the WAL is past its limit and could not be emptied yet"),
            Ok(_) if due => tracing::debug!("emptied the WAL past its limit"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
        if due {
            nudge.tell_emptied();
        }
    }
}
