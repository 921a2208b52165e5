//! The local-process runner: runs are child processes of the [`supervisor`], each in its own
//! process group, with its own working directory and environment, stdout and stderr
//! interleaved into one output file.
//!
//! The agent asks the supervisor to start a run and hears from it when the run ends. If the
//! agent dies, the supervisor keeps the runs and their exit codes; the next agent on the same
//! state directory reconnects to it.

mod exit;
mod program;
pub mod proto;
pub mod supervisor;

pub use exit::{exit_record, read_exit_record, EXIT_RECORD};
use program::{resolve, Found};

use crate::{
    procs, Capabilities, Exit, Handle, RunSpec, RunStatus, Runner, RunnerError, RunnerResult,
};
use async_trait::async_trait;
use liftoff_types::{ResourceType, RunId};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use proto::{Message, Request};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

/// How the agent starts a supervisor when none is running: a program and its arguments,
/// to which `--socket PATH` is appended.
#[derive(Clone, Debug)]
pub struct SupervisorCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// What the supervisor runs to report ends no agent heard.
    pub reporter: Option<Reporter>,
}

/// A command the supervisor runs when runs end while no agent is connected (or just after
/// its agent went), with their run ids appended: it reports their ends to the server. Why:
/// an agent killed, or away past the agent timeout, would leave finished work for the
/// server to declare lost and, on a queue that requeues lost runs, to run again. Given to
/// every connection; its environment is `env` alone (it holds the agent's token, which no
/// run ever sees).
#[derive(Clone)]
pub struct Reporter {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for Reporter {
    // The environment holds a token: out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("program", &self.program)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

/// What the local runner keeps in a [`Handle`]'s data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalHandle {
    pub pid: i32,
    pub start_time: u64,
    pub exit_file: PathBuf,
}

impl LocalHandle {
    pub fn of(handle: &Handle) -> RunnerResult<LocalHandle> {
        serde_json::from_value(handle.data.clone())
            .map_err(|e| RunnerError::Permanent(format!("not a local-process handle: {e}")))
    }
}

/// How much later than the agent's the supervisor's lease ends (see `renew_lease`).
const LEASE_MARGIN: Duration = Duration::from_millis(250);

/// How long the supervisor may take to answer a request that does not wait in line.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

type SharedEnds = Arc<Mutex<Ends>>;

/// What this runner heard of its runs' ends, so that watching a run it started costs no
/// look at the disk or `/proc` (each short run paid four).
#[derive(Default)]
struct Ends {
    /// Who waits for which run's end.
    waiters: HashMap<String, Vec<oneshot::Sender<Exit>>>,
    /// Ends heard while nobody waited yet (a short run ends before its launch returns).
    ended: HashMap<String, Exit>,
    /// Runs this runner started over its current connection and not yet heard end.
    live: std::collections::HashSet<String>,
}

/// Ends kept for runs nobody waits for: a bound, not a working size (the agent waits for
/// every run it starts).
const ENDED_MAX: usize = 10_000;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Message>>>>;

/// A connection to the supervisor, as far as writing to it goes.
struct Conn {
    write: OwnedWriteHalf,
    base: Base,
    /// Request lines not yet written: the requests made in one turn of the agent's runtime
    /// (a lease's worth of runs prepared together) go in one write, which wakes the
    /// supervisor's reader once, not once per run.
    queued: Vec<u8>,
    /// Whether a task to write `queued` is on its way.
    flushing: bool,
}

type Writer = Arc<tokio::sync::Mutex<Option<Conn>>>;

/// Writes what is queued on the connection. A failed write drops the connection: the
/// supervisor is gone, its side closes, and the reader tells every asker.
async fn flush(writer: Writer) {
    let mut guard = writer.lock().await;
    let Some(conn) = guard.as_mut() else { return };
    conn.flushing = false;
    let lines = std::mem::take(&mut conn.queued);
    if !lines.is_empty() && conn.write.write_all(&lines).await.is_err() {
        *guard = None;
    }
}

/// Where a connection stands with the base environment (see [`proto`]).
enum Base {
    Unsent,
    /// This map (the same `Arc`) is the connection's base.
    Sent(Arc<BTreeMap<String, String>>),
    /// The supervisor is of an earlier version: whole environments go with every spawn.
    Refused,
}

/// The id of a base request: one at a time (under the writer's lock), and the id a
/// supervisor of an earlier version gives its refusal of a request it cannot read.
const BASE_ID: u64 = 0;

pub struct LocalRunner {
    socket: PathBuf,
    supervisor: SupervisorCommand,
    log: PathBuf,
    writer: Writer,
    pending: Pending,
    ends: SharedEnds,
    next_id: AtomicU64,
    found: Found,
    /// The agent's lease on its runs (its deadline and grace), given to every connection.
    lease: Mutex<Option<(tokio::time::Instant, Duration)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalRunner {
    /// A runner whose supervisor listens in `state_dir`.
    pub fn new(state_dir: &Path, supervisor: SupervisorCommand) -> LocalRunner {
        LocalRunner {
            socket: state_dir.join("supervisor.sock"),
            log: state_dir.join("supervisor.log"),
            supervisor,
            writer: Arc::default(),
            pending: Arc::default(),
            ends: Arc::default(),
            next_id: AtomicU64::new(BASE_ID + 1),
            found: Found::default(),
            lease: Mutex::new(None),
        }
    }

    /// Sends a request and waits for its reply, connecting (and starting a supervisor) first
    /// when needed.
    /// `patience`: how long to wait for the answer (`None` for a spawn that may wait in line).
    /// `base`: the request's environment is over this base: the connection gets it first
    /// if it has not; `make` is told whether the connection has it.
    async fn ask<R: Serialize>(
        &self,
        patience: Option<Duration>,
        base: Option<&Arc<BTreeMap<String, String>>>,
        make: impl FnOnce(u64, bool) -> R,
    ) -> RunnerResult<Message> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        {
            let mut writer = self.writer.lock().await;
            let sent = self.write_request(&mut writer, id, base, make).await;
            if let Err(e) = sent {
                *writer = None;
                lock(&self.pending).remove(&id);
                return Err(e);
            }
        }
        let answer = match patience {
            Some(limit) => tokio::time::timeout(limit, rx).await,
            None => Ok(rx.await),
        };
        match answer {
            Ok(Ok(msg)) => Ok(msg),
            _ => {
                lock(&self.pending).remove(&id);
                *self.writer.lock().await = None;
                Err(RunnerError::Transient(
                    "the supervisor did not answer".into(),
                ))
            }
        }
    }

    /// Writes a request on the connection (made first when there is none), after the base
    /// environment when the request needs it and the connection has not had it.
    async fn write_request<R: Serialize>(
        &self,
        writer: &mut Option<Conn>,
        id: u64,
        base: Option<&Arc<BTreeMap<String, String>>>,
        make: impl FnOnce(u64, bool) -> R,
    ) -> RunnerResult<()> {
        if writer.is_none() {
            let mut conn = Conn {
                write: self.connect().await?,
                base: Base::Unsent,
                queued: Vec::new(),
                flushing: false,
            };
            // A new supervisor (or one an earlier agent left) learns the lease first, and
            // who reports ends when no agent is there.
            let lease = *lock(&self.lease);
            if let Some((deadline, grace)) = lease {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                queue_lease(&mut conn.queued, left, grace);
            }
            if let Some(reporter) = &self.supervisor.reporter {
                let request = Request::Reporter {
                    id: BASE_ID,
                    program: reporter.program.clone(),
                    args: reporter.args.clone(),
                    env: reporter.env.clone(),
                };
                if serde_json::to_writer(&mut conn.queued, &request).is_ok() {
                    conn.queued.push(b'\n');
                }
            }
            *writer = Some(conn);
        }
        let Some(conn) = writer.as_mut() else {
            return Ok(());
        };
        let mut over_base = false;
        if let Some(want) = base {
            let has = |conn: &Conn| matches!(&conn.base, Base::Sent(b) if Arc::ptr_eq(b, want));
            if !has(conn) && !matches!(conn.base, Base::Refused) {
                conn.base = self.send_base(conn, want).await?;
            }
            over_base = has(conn);
        }
        serde_json::to_writer(&mut conn.queued, &make(id, over_base))
            .map_err(|e| RunnerError::Permanent(e.to_string()))?;
        conn.queued.push(b'\n');
        if !conn.flushing {
            conn.flushing = true;
            tokio::spawn(flush(self.writer.clone()));
        }
        Ok(())
    }

    /// Gives the connection its base environment; a supervisor of an earlier version
    /// refuses it (it cannot read the request).
    /// Whatever is queued goes first, in the same write.
    async fn send_base(
        &self,
        conn: &mut Conn,
        env: &Arc<BTreeMap<String, String>>,
    ) -> RunnerResult<Base> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(BASE_ID, tx);
        let mut lines = std::mem::take(&mut conn.queued);
        serde_json::to_writer(
            &mut lines,
            &proto::BaseRef {
                id: BASE_ID,
                env: proto::EnvPairs::Map(env),
            },
        )
        .map_err(|e| RunnerError::Permanent(e.to_string()))?;
        lines.push(b'\n');
        conn.write.write_all(&lines).await.map_err(gone)?;
        match tokio::time::timeout(ANSWER_WITHIN, rx).await {
            Ok(Ok(Message::BaseTaken { .. })) => Ok(Base::Sent(env.clone())),
            Ok(Ok(_)) => Ok(Base::Refused),
            _ => {
                lock(&self.pending).remove(&BASE_ID);
                Err(RunnerError::Transient(
                    "the supervisor did not answer".into(),
                ))
            }
        }
    }

    async fn connect(&self) -> RunnerResult<OwnedWriteHalf> {
        let stream = match UnixStream::connect(&self.socket).await {
            Ok(s) => s,
            Err(_) => {
                self.start_supervisor()?;
                self.connect_retrying().await?
            }
        };
        let (read, write) = stream.into_split();
        tokio::spawn(read_messages(read, self.pending.clone(), self.ends.clone()));
        Ok(write)
    }

    fn start_supervisor(&self) -> RunnerResult<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| {
                RunnerError::Permanent(format!("cannot open {}: {e}", self.log.display()))
            })?;
        let mut cmd = std::process::Command::new(&self.supervisor.program);
        cmd.args(&self.supervisor.args)
            .arg("--socket")
            .arg(&self.socket)
            // It needs nothing of the agent's environment, and must not pass it on.
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        // Out of the agent's process group: a Ctrl-C to the agent must not reach it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| RunnerError::Permanent(format!("cannot start the supervisor: {e}")))?;
        // It lives on its own; nobody waits for it but the system.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }

    async fn connect_retrying(&self) -> RunnerResult<UnixStream> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(&self.socket).await {
                Ok(s) => return Ok(s),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(RunnerError::Transient(format!(
                        "the supervisor did not come up at {}: {e}",
                        self.socket.display()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// The exit recorded for a run, if it has ended.
    fn recorded_exit(h: &LocalHandle, run_id: &str) -> Option<Exit> {
        let bytes = std::fs::read(&h.exit_file).ok()?;
        read_exit_record(&bytes, run_id)
    }

    fn status_of(h: &LocalHandle, run_id: &str) -> RunStatus {
        if let Some(exit) = Self::recorded_exit(h, run_id) {
            return RunStatus::Exited(exit);
        }
        if procs::alive(h.pid, h.start_time) {
            RunStatus::Running
        } else {
            RunStatus::Gone
        }
    }
}

fn gone(e: std::io::Error) -> RunnerError {
    RunnerError::Transient(format!("the supervisor went away: {e}"))
}

/// Puts a lease request in `queued`.
fn queue_lease(queued: &mut Vec<u8>, left: Duration, grace: Duration) {
    let request = Request::Lease {
        id: BASE_ID,
        ms: left.as_millis() as u64,
        grace_ms: grace.as_millis() as u64,
    };
    if serde_json::to_writer(&mut *queued, &request).is_ok() {
        queued.push(b'\n');
    }
}

/// Reads the supervisor's messages: replies go to their askers, ends to their waiters.
async fn read_messages(read: tokio::net::unix::OwnedReadHalf, pending: Pending, ends: SharedEnds) {
    read_until_closed(read, &pending, &ends).await;
    // Ends may now go unheard: runs are looked at by hand again.
    lock(&ends).live.clear();
    // The supervisor is gone: whoever waits for an answer hears so now.
    lock(&pending).clear();
}

async fn read_until_closed(
    read: tokio::net::unix::OwnedReadHalf,
    pending: &Pending,
    shared_ends: &SharedEnds,
) {
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(msg) = serde_json::from_str::<Message>(&line) else {
            continue;
        };
        match msg {
            Message::Exited { run_id, exit, .. } => {
                let mut ends = lock(shared_ends);
                ends.live.remove(&run_id);
                match ends.waiters.remove(&run_id) {
                    Some(txs) => {
                        for tx in txs {
                            let _ = tx.send(exit);
                        }
                    }
                    None => {
                        if ends.ended.len() >= ENDED_MAX {
                            ends.ended.clear();
                        }
                        ends.ended.insert(run_id, exit);
                    }
                }
            }
            Message::Spawned { id, .. }
            | Message::Refused { id, .. }
            | Message::Running { id, .. }
            | Message::Withdrawn { id, .. }
            | Message::BaseTaken { id } => {
                if let Some(tx) = lock(pending).remove(&id) {
                    let _ = tx.send(msg);
                }
            }
        }
    }
}

#[async_trait]
impl Runner for LocalRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::LocalProcess
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: false,
            runs_at_launch: true,
            keeps_ended: false,
            sandboxed: false,
            keeps_lease: true,
            ships_source: false,
        }
    }

    async fn check(&self, spec: &RunSpec) -> RunnerResult<()> {
        let program = spec
            .argv
            .first()
            .ok_or_else(|| RunnerError::Permanent("the command is empty".into()))?;
        resolve(program, spec.env.get("PATH"), &spec.workdir).map(drop)
    }

    async fn launch(&self, spec: &RunSpec) -> RunnerResult<Handle> {
        let name = spec
            .argv
            .first()
            .ok_or_else(|| RunnerError::Permanent("the command is empty".into()))?;
        let program = self
            .found
            .resolve(name, spec.env.get("PATH"), &spec.workdir)?;
        let exit_file = spec.output.with_file_name("exit.json");
        let reply = self
            .ask(
                spec.concurrency.map_or(Some(ANSWER_WITHIN), |_| None),
                Some(&spec.env.base),
                |id, over_base| proto::SpawnRef {
                    id,
                    run_id: spec.run_id.as_str(),
                    program: &program,
                    argv: &spec.argv,
                    env: if over_base {
                        proto::EnvPairs::Map(&spec.env.own)
                    } else {
                        proto::EnvPairs::Whole(&spec.env)
                    },
                    cwd: &spec.workdir,
                    output: &spec.output,
                    exit_file: &exit_file,
                    limit: spec.concurrency,
                    base: over_base,
                },
            )
            .await?;
        match reply {
            Message::Spawned {
                pid, start_time, ..
            } => {
                let run = spec.run_id.to_string();
                let mut ends = lock(&self.ends);
                // Its end may already have been heard (then it is in `ended`).
                if !ends.ended.contains_key(&run) {
                    ends.live.insert(run);
                }
                drop(ends);
                Ok(Handle {
                    runner: ResourceType::LocalProcess,
                    run_id: spec.run_id.clone(),
                    data: serde_json::to_value(LocalHandle {
                        pid,
                        start_time,
                        exit_file,
                    })
                    .map_err(|e| RunnerError::Permanent(e.to_string()))?,
                })
            }
            Message::Refused {
                error,
                lapsed: true,
                ..
            } => Err(RunnerError::LeaseLapsed(error)),
            Message::Refused { error, .. } => Err(RunnerError::Permanent(error)),
            other => Err(RunnerError::Transient(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    async fn status(&self, handles: &[Handle]) -> RunnerResult<Vec<RunStatus>> {
        handles
            .iter()
            .map(|h| {
                let run = h.run_id.as_str();
                {
                    let ends = lock(&self.ends);
                    if let Some(exit) = ends.ended.get(run) {
                        return Ok(RunStatus::Exited(*exit));
                    }
                    if ends.live.contains(run) {
                        return Ok(RunStatus::Running);
                    }
                }
                LocalHandle::of(h).map(|l| Self::status_of(&l, run))
            })
            .collect()
    }

    async fn wait(&self, handle: &Handle) -> RunnerResult<RunStatus> {
        let h = LocalHandle::of(handle)?;
        let (tx, mut rx) = oneshot::channel();
        // Listen first, then look: an end between the two is in the exit file.
        let run = handle.run_id.to_string();
        {
            let mut ends = lock(&self.ends);
            if let Some(exit) = ends.ended.remove(&run) {
                ends.live.remove(&run);
                return Ok(RunStatus::Exited(exit));
            }
            ends.waiters.entry(run.clone()).or_default().push(tx);
        }
        let mut gone_checks = 0;
        loop {
            // A run started over the live connection is told to end: nothing to look at.
            let heard = lock(&self.ends).live.contains(&run);
            let status = if heard {
                RunStatus::Running
            } else {
                Self::status_of(&h, &run)
            };
            match status {
                RunStatus::Exited(exit) => return Ok(RunStatus::Exited(exit)),
                // The supervisor writes the exit file just after reaping: give it a moment.
                RunStatus::Gone if gone_checks >= 20 => return Ok(RunStatus::Gone),
                RunStatus::Gone => gone_checks += 1,
                _ => gone_checks = 0,
            }
            let pause = if gone_checks > 0 {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(2)
            };
            match tokio::time::timeout(pause, &mut rx).await {
                Ok(Ok(exit)) => return Ok(RunStatus::Exited(exit)),
                Ok(Err(_)) => {
                    // The supervisor connection closed: keep checking by hand.
                    let (tx, new_rx) = oneshot::channel();
                    lock(&self.ends)
                        .waiters
                        .entry(run.clone())
                        .or_default()
                        .push(tx);
                    rx = new_rx;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {}
            }
        }
    }

    async fn cancel(&self, handle: &Handle, grace: Duration) -> RunnerResult<()> {
        let h = LocalHandle::of(handle)?;
        let group = Pid::from_raw(h.pid);
        let leader_reused =
            procs::stat(h.pid).is_some_and(|s| !procs::same_start(s.start_time, h.start_time));
        if leader_reused || procs::group_members(h.pid).is_empty() {
            return Ok(());
        }
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if procs::group_members(h.pid).is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = killpg(group, Signal::SIGKILL);
        for _ in 0..100 {
            if procs::group_members(h.pid).is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(RunnerError::Transient(format!(
            "processes of run {} survived SIGKILL",
            handle.run_id
        )))
    }

    async fn renew_lease(&self, left: Duration, grace: Duration) {
        // A moment after the agent's own end of the lease, so that a live agent has marked
        // its runs as stopped for the lapse when the supervisor stops them (else a run
        // killed then reads as failed). Well within the server's wait (twice `grace`).
        let left = left.saturating_add(LEASE_MARGIN.min(grace / 4));
        *lock(&self.lease) = Some((tokio::time::Instant::now() + left, grace));
        // Only a connection there is: a supervisor is not started to be told of a lease.
        let mut writer = self.writer.lock().await;
        if let Some(conn) = writer.as_mut() {
            queue_lease(&mut conn.queued, left, grace);
            if !conn.flushing {
                conn.flushing = true;
                tokio::spawn(flush(self.writer.clone()));
            }
        }
    }

    async fn withdraw(&self, run: &RunId) -> RunnerResult<bool> {
        let run_id = run.to_string();
        match self
            .ask(Some(ANSWER_WITHIN), None, |id, _| Request::Withdraw {
                id,
                run_id,
            })
            .await?
        {
            Message::Withdrawn { withdrawn, .. } => Ok(withdrawn),
            other => Err(RunnerError::Transient(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    async fn owned(&self) -> RunnerResult<Vec<Handle>> {
        match self
            .ask(Some(ANSWER_WITHIN), None, |id, _| Request::List { id })
            .await?
        {
            Message::Running { runs, ended, .. } => runs
                .into_iter()
                .chain(ended)
                .filter_map(|c| {
                    let run_id = c.run_id.parse().ok()?;
                    let data = LocalHandle {
                        pid: c.pid,
                        start_time: c.start_time,
                        exit_file: c.exit_file,
                    };
                    Some(serde_json::to_value(data).map(|data| Handle {
                        runner: ResourceType::LocalProcess,
                        run_id,
                        data,
                    }))
                })
                .collect::<Result<_, _>>()
                .map_err(|e| RunnerError::Permanent(e.to_string())),
            other => Err(RunnerError::Transient(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A supervisor that answers as scripted: takes the base environment (or, as one of an
    /// earlier version, refuses it), answers every spawn `spawned`, and keeps every request
    /// it read.
    fn scripted_supervisor(socket: &Path, takes_base: bool) -> Arc<Mutex<Vec<serde_json::Value>>> {
        use std::io::{BufRead, Write};
        let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            for line in std::io::BufReader::new(stream).lines() {
                let request: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                let id = request["id"].clone();
                let answer = match (request["op"].as_str(), takes_base) {
                    (Some("base"), true) => serde_json::json!({"kind": "base_taken", "id": id}),
                    (Some("base"), false) => serde_json::json!({
                        "kind": "refused", "id": 0,
                        "error": "bad request: unknown variant `base`"
                    }),
                    _ => {
                        serde_json::json!({"kind": "spawned", "id": id, "pid": 1, "start_time": 0})
                    }
                };
                lock(&kept).push(request);
                writeln!(out, "{answer}").unwrap();
            }
        });
        seen
    }

    fn spec(dir: &Path, run: &str, base: &Arc<BTreeMap<String, String>>) -> RunSpec {
        RunSpec {
            attempt_of: None,
            run_id: run.parse().unwrap(),
            argv: vec!["true".into()],
            env: crate::RunEnv {
                base: base.clone(),
                own: BTreeMap::from([
                    ("LIFTOFF_RUN_ID".to_string(), run.to_string()),
                    ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ]),
            },
            workdir: dir.to_path_buf(),
            output: dir.join("output.log"),
            resource_args: serde_json::json!({}),
            concurrency: None,
            image: None,
        }
    }

    #[tokio::test]
    async fn the_base_environment_goes_once_per_connection_and_whole_to_an_older_supervisor() {
        let base = Arc::new(BTreeMap::from([
            ("HOME".to_string(), "/home/u".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]));
        for takes_base in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let seen = scripted_supervisor(&dir.path().join("supervisor.sock"), takes_base);
            let runner = LocalRunner::new(
                dir.path(),
                SupervisorCommand {
                    program: "/nonexistent".into(),
                    args: vec![],
                    reporter: None,
                },
            );
            for run in ["r1", "r2"] {
                runner.launch(&spec(dir.path(), run, &base)).await.unwrap();
            }
            let seen = lock(&seen).clone();
            let ops: Vec<&str> = seen.iter().map(|r| r["op"].as_str().unwrap()).collect();
            assert_eq!(ops, ["base", "spawn", "spawn"], "the base once: {seen:?}");
            assert_eq!(
                seen[0]["env"],
                serde_json::json!([["HOME", "/home/u"], ["PATH", "/bin"]])
            );
            for (spawn, run) in seen[1..].iter().zip(["r1", "r2"]) {
                assert_eq!(spawn["base"], serde_json::json!(takes_base));
                let env: BTreeMap<String, String> =
                    serde_json::from_value::<Vec<(String, String)>>(spawn["env"].clone())
                        .unwrap()
                        .into_iter()
                        .collect();
                let mut expected = BTreeMap::from([
                    ("LIFTOFF_RUN_ID".to_string(), run.to_string()),
                    ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ]);
                if !takes_base {
                    // Whole, the run's own PATH over the base's.
                    expected.insert("HOME".into(), "/home/u".into());
                }
                assert_eq!(env, expected, "takes_base: {takes_base}");
            }
        }
    }
}
