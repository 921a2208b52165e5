//! The supervisor: a small process, started once per agent state directory, that is the
//! parent of every local run.
//!
//! Why: an agent killed with SIGKILL takes its children's exit codes with it, since only a
//! parent can wait for a child. The supervisor outlives the agent: it keeps waiting for the
//! runs, writes each exit to the run's exit file, and tells whichever agent is connected. A
//! restarted agent reconnects and re-adopts its runs with their real exit codes.
//!
//! It is plain threads and blocking I/O: one thread per connection, and a pool of workers
//! (small stacks), each of which starts a run from the line, waits for that run, writes its
//! exit, and starts the next: the shape of the plainest spawn-and-wait loop, with no hand-off
//! between threads on a run's path (a single reaper handing slots to starter threads put a
//! thread switch, and a wait for the one reaper, on every run). Workers are made as runs
//! need them and end after [`WORKER_IDLE`] without one, so a thread is made per run only
//! while the number of runs at once grows. A teller thread tells ends in batches while other
//! runs go on (see [`ended`]). It does almost nothing, and it must not depend on
//! the agent's runtime. It exits once it has had no run and no agent for [`IDLE_EXIT`].
//! Ends no agent heard go to the agent's reporter command (see [`report_alone`]).

use super::proto::{Child, Message, Request};
use crate::{procs, Exit};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A line to the supervisor's log (its stderr: a file in the agent's state directory).
/// Never `eprintln!`, which panics when the write fails: on a full disk that killed the
/// worker before it told the agent its run's end, and the run stayed `running`.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// How long the supervisor stays with nothing to do (covers an agent's restart).
pub const IDLE_EXIT: Duration = Duration::from_secs(10);
/// How long it stays instead while it holds ends no agent was told: the agent that comes
/// back asks for them (see [`Table::ended`]).
const IDLE_EXIT_UNTOLD: Duration = Duration::from_secs(3600);
/// The ended runs kept for a returning agent: more than the runs one agent has at once.
const ENDED_KEPT: usize = 4096;
/// How long a worker waits for a run to start before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(10);
const THREAD_STACK: usize = 128 * 1024;

/// A spawn request waiting for a free slot, with the connection that asked.
struct Waiting {
    conn: u64,
    request: Request,
    /// The connection's base environment when the request was read, for a request that
    /// carries only the run's own variables over it.
    base: Option<Arc<Vec<(String, String)>>>,
}

/// The runs by pid, each waited for by the worker that started it.
#[derive(Default)]
struct Table {
    live: HashMap<i32, Child>,
    /// Runs being started (taken out of the line, not yet in `live`): they count against
    /// the limit already.
    starting: usize,
    /// The last runs that ended, oldest first, for [`Request::List`]: an agent killed
    /// between asking for a spawn and journaling its handle finds such a run here.
    ended: VecDeque<Child>,
    /// An end may not have reached any agent since the last list (none was connected, or
    /// the write failed): the supervisor then waits [`IDLE_EXIT_UNTOLD`] before it exits.
    untold_end: bool,
}

#[derive(Default)]
struct Shared {
    children: Mutex<Table>,
    /// Signalled when a run may start from the line (a run ended, or one joined the line),
    /// for the idle workers.
    may_start: Condvar,
    conns: Mutex<Vec<(u64, UnixStream)>>,
    next_conn: Mutex<u64>,
    /// Runs waiting for a slot, and the idle workers. Lock order: `line`, then `children`.
    /// `may_start` waits with this lock.
    line: Mutex<Line>,
    /// Ends not yet told, for the teller (see [`ended`]). Lock order: `conns`, then this.
    untold: Mutex<Vec<(u64, Vec<u8>)>>,
    /// Signalled when the first end goes into `untold`.
    to_tell: Condvar,
    /// The agent's lease on the runs (see [`watch_lease`]).
    lease: Mutex<Lease>,
    /// Signalled when the lease is renewed.
    renewed: Condvar,
    /// Ends for the agent's reporter (see [`report_alone`]).
    reporting: Mutex<Reporting>,
    /// Signalled when an end goes to `reporting`.
    to_report: Condvar,
}

/// The ends no agent may have passed on to its server, for the reporter the agent gave.
#[derive(Default)]
struct Reporting {
    command: Option<ReporterCommand>,
    /// Run ids whose ends to report.
    runs: Vec<String>,
    /// Ends told to a connection in the last [`RECENT`], newest last: the agent may have been
    /// killed before it passed them on.
    recent: VecDeque<(Instant, String)>,
}

struct ReporterCommand {
    program: std::path::PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// How long an end told to an agent counts as maybe not passed on, when that agent goes.
const RECENT: Duration = Duration::from_secs(5);
/// How long the reporter waits for more ends to report with the first.
const REPORT_LINGER: Duration = Duration::from_millis(200);
/// Run ids kept for the reporter, and given to one run of it.
const REPORT_MAX: usize = 1024;

/// The agent's lease: none until an agent sends one (an agent of an earlier version never
/// does, and its runs are never stopped for it).
#[derive(Default)]
struct Lease {
    deadline: Option<Instant>,
    /// The lease's length as last given, for the log.
    length: Duration,
    grace: Duration,
    /// Passed and acted on; a renewal clears it.
    lapsed: bool,
}

/// What a run in line, or a spawn asked for, hears once the lease has lapsed.
const LAPSED: &str =
    "the agent's lease lapsed (no word from its server): no run starts until it is renewed";

/// A spawn refused for the lapsed lease: the agent gives the item back as never started.
fn lapsed(id: u64) -> Message {
    Message::Refused {
        id,
        error: LAPSED.into(),
        lapsed: true,
    }
}

/// A spawn refused for what it asked.
fn refused(id: u64, error: String) -> Message {
    Message::Refused {
        id,
        error,
        lapsed: false,
    }
}

#[derive(Default)]
struct Line {
    /// Oldest first.
    waiting: VecDeque<Waiting>,
    /// Workers waiting for a run to start.
    idle: usize,
}

impl Shared {
    /// Writes the ends not yet told, in the order they came, under the connections' lock
    /// (so two tellers never swap their batches).
    fn tell_untold(&self) {
        let mut conns = lock(&self.conns);
        let untold = std::mem::take(&mut *lock(&self.untold));
        // A connection that cannot be written to is gone (its reader ends it too).
        let before = conns.len();
        conns.retain_mut(|(conn, stream)| {
            let lines: Vec<u8> = untold
                .iter()
                .filter(|(to, _)| to == conn)
                .flat_map(|(_, line)| line.iter().copied())
                .collect();
            lines.is_empty() || stream.write_all(&lines).is_ok()
        });
        let to_gone = untold
            .iter()
            .any(|(to, _)| !conns.iter().any(|(c, _)| c == to));
        if conns.len() < before || to_gone {
            lock(&self.children).untold_end = true;
        }
    }

    fn send_to(&self, conn: u64, msg: &Message) {
        let line = line_of(msg);
        let mut conns = lock(&self.conns);
        if let Some((_, w)) = conns.iter_mut().find(|(c, _)| *c == conn) {
            let _ = w.write_all(&line);
        }
    }
}

/// A message as the line that carries it.
fn line_of(msg: &Message) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves on `socket` until idle. Returns at once if another supervisor already serves it.
pub fn run(socket: &Path) -> std::io::Result<()> {
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let shared = Arc::new(Shared::default());
    {
        let shared = shared.clone();
        let socket = socket.to_path_buf();
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || idle_exit(&shared, &socket))?;
    }
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || tell(&shared))?;
    }
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || watch_lease(&shared))?;
    }
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || report_alone(&shared))?;
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || serve(shared, stream))?;
    }
    Ok(())
}

fn idle_exit(shared: &Shared, socket: &Path) {
    let mut idle_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let (busy, untold_end) = {
            let table = lock(&shared.children);
            (
                !table.live.is_empty() || table.starting > 0,
                table.untold_end,
            )
        };
        let busy =
            busy || !lock(&shared.conns).is_empty() || !lock(&shared.line).waiting.is_empty();
        if busy {
            idle_since = Instant::now();
        } else if may_exit(idle_since.elapsed(), untold_end, !socket.exists()) {
            let _ = std::fs::remove_file(socket);
            std::process::exit(0);
        }
    }
}

/// Whether a supervisor with nothing to do may go after `idle` so: past its limit, or at
/// once when its socket is gone (the agent's state directory removed), since no agent can
/// reach it to hear the ends it holds.
fn may_exit(idle: Duration, untold_end: bool, socket_gone: bool) -> bool {
    let limit = if untold_end {
        IDLE_EXIT_UNTOLD
    } else {
        IDLE_EXIT
    };
    socket_gone || idle >= limit
}

fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let conn = {
        let mut next = lock(&shared.next_conn);
        *next += 1;
        *next
    };
    lock(&shared.conns).push((conn, writer));
    let mut base: Option<Arc<Vec<(String, String)>>> = None;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let reply = match Request::parse(&line) {
            Ok(Request::Spawn { id, base: true, .. }) if base.is_none() => {
                // A run without the environment it counts on would start all the same and
                // fail in some puzzling way: refused instead.
                Some(refused(
                    id,
                    "a spawn over a base environment this connection never sent".into(),
                ))
            }
            Ok(Request::Spawn { id, .. }) if lock(&shared.lease).lapsed => Some(lapsed(id)),
            Ok(request @ Request::Spawn { .. }) => {
                let over_base = matches!(request, Request::Spawn { base: true, .. });
                // Into the line, always: a start waits for the new process to exec, and
                // starting here would make every next request of this agent wait for it.
                let base = if over_base { base.clone() } else { None };
                join_line(
                    &shared,
                    Waiting {
                        conn,
                        request,
                        base,
                    },
                );
                None
            }
            Ok(Request::Base { id, env }) => {
                base = Some(Arc::new(env));
                Some(Message::BaseTaken { id })
            }
            Ok(Request::Withdraw { id, run_id }) => {
                let mut line = lock(&shared.line);
                let before = line.waiting.len();
                line.waiting.retain(
                    |w| !matches!(&w.request, Request::Spawn { run_id: r, .. } if *r == run_id),
                );
                Some(Message::Withdrawn {
                    id,
                    withdrawn: line.waiting.len() < before,
                })
            }
            Ok(Request::Lease { ms, grace_ms, .. }) => {
                renew(
                    &shared,
                    Duration::from_millis(ms),
                    Duration::from_millis(grace_ms),
                );
                None
            }
            Ok(Request::Reporter {
                program, args, env, ..
            }) => {
                lock(&shared.reporting).command = Some(ReporterCommand { program, args, env });
                shared.to_report.notify_one();
                None
            }
            Ok(Request::List { id }) => {
                let mut table = lock(&shared.children);
                table.untold_end = false;
                Some(Message::Running {
                    id,
                    runs: table.live.values().cloned().collect(),
                    ended: table.ended.iter().cloned().collect(),
                })
            }
            Err(e) => Some(refused(0, format!("bad request: {e}"))),
        };
        if let Some(reply) = reply {
            shared.send_to(conn, &reply);
        }
    }
    // Runs this agent left waiting are not started for nobody.
    lock(&shared.line).waiting.retain(|w| w.conn != conn);
    let alone = {
        let mut conns = lock(&shared.conns);
        conns.retain(|(c, _)| *c != conn);
        conns.is_empty()
    };
    if alone {
        // The agent went (killed, maybe): what it heard last may not have reached its server.
        let mut reporting = lock(&shared.reporting);
        let since = Instant::now().checked_sub(RECENT);
        let recent: Vec<String> = std::mem::take(&mut reporting.recent)
            .into_iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|(_, run)| run)
            .collect();
        if !recent.is_empty() {
            reporting.runs.extend(recent);
            shared.to_report.notify_one();
        }
    }
}

/// The reporter's loop: runs the agent's reporter for the ends no agent heard, a batch at a
/// time, [`REPORT_LINGER`] after the first. Nothing here waits on it but the next batch.
fn report_alone(shared: &Shared) {
    loop {
        let mut reporting = lock(&shared.reporting);
        while reporting.runs.is_empty() || reporting.command.is_none() {
            reporting = shared
                .to_report
                .wait(reporting)
                .unwrap_or_else(|p| p.into_inner());
        }
        drop(reporting);
        std::thread::sleep(REPORT_LINGER);
        let mut reporting = lock(&shared.reporting);
        let mut runs = std::mem::take(&mut reporting.runs);
        runs.sort();
        runs.dedup();
        let Some(command) = &reporting.command else {
            continue;
        };
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .args(&runs)
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        drop(reporting);
        match cmd.status() {
            Ok(status) if status.success() => {}
            Ok(status) => note!(
                "liftoff supervisor: reporting {} end(s) no agent heard: {status}",
                runs.len()
            ),
            Err(e) => note!("liftoff supervisor: cannot run the reporter: {e}"),
        }
    }
}

/// Renews the agent's lease for `length` from now.
fn renew(shared: &Shared, length: Duration, grace: Duration) {
    let mut lease = lock(&shared.lease);
    if lease.lapsed {
        note!("liftoff supervisor: the agent's lease is renewed; runs may start again");
    }
    *lease = Lease {
        deadline: Some(Instant::now() + length),
        length,
        grace,
        lapsed: false,
    };
    shared.renewed.notify_all();
}

/// The supervisor's side of the agent's lease (HTCondor's job lease): when the agent has not
/// renewed it in time, its server has declared it lost (or is about to) and may give its
/// items to another agent, so the runs here must not go on beside their next attempts.
fn watch_lease(shared: &Shared) {
    let mut lease = lock(&shared.lease);
    loop {
        let due = match lease.deadline {
            Some(deadline) if !lease.lapsed => deadline,
            _ => {
                lease = shared
                    .renewed
                    .wait(lease)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
        };
        let now = Instant::now();
        if now < due {
            lease = shared
                .renewed
                .wait_timeout(lease, due - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        lease.lapsed = true;
        let (length, grace) = (lease.length, lease.grace);
        drop(lease);
        lapse(shared, length, grace);
        lease = lock(&shared.lease);
    }
}

/// Stops every run (SIGTERM to its group, `grace`, then SIGKILL) and drops the runs in line,
/// which are told they were refused.
fn lapse(shared: &Shared, length: Duration, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    let dropped: Vec<Waiting> = lock(&shared.line).waiting.drain(..).collect();
    for waiting in &dropped {
        if let Request::Spawn { id, .. } = waiting.request {
            shared.send_to(waiting.conn, &lapsed(id));
        }
    }
    let groups = || -> Vec<i32> { lock(&shared.children).live.keys().copied().collect() };
    let live = groups();
    note!(
        "liftoff supervisor: the agent's lease lapsed (not renewed for {} ms): stopping {} run(s) \
         (SIGTERM, SIGKILL after {} ms), {} waiting run(s) dropped",
        length.as_millis(),
        live.len(),
        grace.as_millis(),
        dropped.len()
    );
    for pid in &live {
        let _ = killpg(nix::unistd::Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until && !groups().is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every group a run began, and any run that started meanwhile: a process of the group
    // may outlive its leader.
    let mut all = live;
    all.extend(groups());
    for pid in all {
        if !procs::group_members(pid).is_empty() {
            let _ = killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Whether a spawn request may start now; if so, counts it as starting (the caller holds
/// the line, so two callers cannot both take the last slot).
fn reserve(shared: &Shared, request: &Request) -> bool {
    let mut table = lock(&shared.children);
    let room = has_room(&table, request);
    if room {
        table.starting += 1;
    }
    room
}

/// Whether `request` would fit under its limit now.
fn has_room(table: &Table, request: &Request) -> bool {
    match request {
        Request::Spawn {
            limit: Some(limit), ..
        } => table.live.len() + table.starting < *limit as usize,
        _ => true,
    }
}

/// Puts a spawn request in line, and makes sure a worker will look at it.
fn join_line(shared: &Arc<Shared>, waiting: Waiting) {
    let mut line = lock(&shared.line);
    line.waiting.push_back(waiting);
    call_worker(shared, &mut line);
}

/// When the first run in line has room: wakes an idle worker for it, or makes one when all
/// are busy with runs. A worker that takes a run calls this again for the next, so a burst
/// of requests gets as many workers as have room.
fn call_worker(shared: &Arc<Shared>, line: &mut Line) {
    let fits = line
        .waiting
        .front()
        .is_some_and(|front| has_room(&lock(&shared.children), &front.request));
    if !fits {
        return;
    }
    if line.idle > 0 {
        shared.may_start.notify_one();
        return;
    }
    // Counted idle from now, so the next request does not make another.
    line.idle += 1;
    let worker = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || work(&shared))
    };
    if let Err(e) = worker {
        note!("liftoff supervisor: cannot make a worker: {e}");
        line.idle -= 1;
    }
}

/// A worker: takes the first run in line that has room, starts it, waits for it, and takes
/// the next, until none has come for [`WORKER_IDLE`]. It starts with itself counted idle.
fn work(shared: &Arc<Shared>) {
    let mut line = lock(&shared.line);
    loop {
        let Some(first) = take_first(shared, &mut line) else {
            let (back, timeout) = shared
                .may_start
                .wait_timeout(line, WORKER_IDLE)
                .unwrap_or_else(|p| p.into_inner());
            line = back;
            if timeout.timed_out() && line.waiting.is_empty() {
                line.idle -= 1;
                return;
            }
            continue;
        };
        line.idle -= 1;
        // More may fit after it (several ended at once, or no limit): another worker.
        call_worker(shared, &mut line);
        drop(line);
        let mut next = Some(first);
        // The run that ended last, when its slot went straight to the next in line: its end
        // is written and told with the next one's start, in one message to the agent (a
        // wakeup of the agent per run, not two).
        let mut just_ended: Option<(Child, Exit)> = None;
        // Start, wait, and go on with the next in line while there is one with room.
        while let Some(waiting) = next.take() {
            let answer = start(shared, waiting.request, waiting.base.as_deref());
            match just_ended.take() {
                Some((child, exit)) => ended(shared, child, exit, Some((waiting.conn, &answer))),
                None => shared.send_to(waiting.conn, &answer),
            }
            let Message::Spawned { pid, .. } = answer else {
                break;
            };
            let exit = wait_for(pid);
            let child = lock(&shared.children).live.remove(&pid);
            // The slot goes to the next run before this one's exit is written and told.
            next = {
                let mut line = lock(&shared.line);
                let next = take_first(shared, &mut line);
                if next.is_some() {
                    call_worker(shared, &mut line);
                }
                next
            };
            if let Some(child) = child {
                if next.is_some() {
                    just_ended = Some((child, exit));
                } else {
                    ended(shared, child, exit, None);
                }
            }
        }
        line = lock(&shared.line);
        line.idle += 1;
    }
}

/// Takes the first run in line if there is room for it (counted as starting from now).
fn take_first(shared: &Shared, line: &mut Line) -> Option<Waiting> {
    let front = line.waiting.front()?;
    if !reserve(shared, &front.request) {
        return None;
    }
    line.waiting.pop_front()
}

/// Waits for the run `pid` to end.
fn wait_for(pid: i32) -> Exit {
    use nix::errno::Errno;
    use nix::sys::wait::{waitpid, WaitStatus};
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Exit { code, signal: None },
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Exit {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                }
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                // Only this worker waits for this pid: this cannot happen. Its end is
                // unknown; it is told as killed rather than never.
                note!("liftoff supervisor: waitpid {pid}: {e}");
                return Exit {
                    code: 128 + 9,
                    signal: Some(9),
                };
            }
        }
    }
}

/// Starts a spawn request counted as starting by [`reserve`] (its environment over `base`,
/// when it has one); the answer for its asker.
fn start(shared: &Arc<Shared>, request: Request, base: Option<&Vec<(String, String)>>) -> Message {
    let answer = if lock(&shared.lease).lapsed {
        // Taken from the line just as the lease lapsed.
        let id = match request {
            Request::Spawn { id, .. } => id,
            _ => 0,
        };
        lapsed(id)
    } else {
        start_reserved(shared, request, base)
    };
    if matches!(answer, Message::Refused { .. }) {
        // Never started: its place goes back (its worker takes the next in line).
        lock(&shared.children).starting -= 1;
    }
    answer
}

fn start_reserved(
    shared: &Arc<Shared>,
    request: Request,
    base: Option<&Vec<(String, String)>>,
) -> Message {
    let Request::Spawn {
        id,
        run_id,
        program,
        argv,
        env,
        cwd,
        output,
        exit_file,
        ..
    } = request
    else {
        return refused(0, "not a spawn request".into());
    };
    spawn(
        shared, id, run_id, &program, argv, base, env, &cwd, &output, exit_file,
    )
}

#[allow(clippy::too_many_arguments)]
fn spawn(
    shared: &Arc<Shared>,
    id: u64,
    run_id: String,
    program: &Path,
    argv: Vec<String>,
    base: Option<&Vec<(String, String)>>,
    env: Vec<(String, String)>,
    cwd: &Path,
    output: &Path,
    exit_file: std::path::PathBuf,
) -> Message {
    let refuse = |error: String| refused(id, error);
    let Some((name, args)) = argv.split_first() else {
        return refuse("the command is empty".into());
    };
    let out = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)
    {
        Ok(f) => f,
        Err(e) => return refuse(format!("cannot open {}: {e}", output.display())),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return refuse(format!("cannot open {}: {e}", output.display())),
    };
    // `/dev/null`, opened once: each run gets a copy of the descriptor, not a path lookup.
    static NULL: std::sync::OnceLock<std::io::Result<std::fs::File>> = std::sync::OnceLock::new();
    let null = match NULL
        .get_or_init(|| std::fs::File::open("/dev/null"))
        .as_ref()
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
        .and_then(|f| f.try_clone())
    {
        Ok(f) => Stdio::from(f),
        Err(e) => return refuse(format!("cannot open /dev/null: {e}")),
    };
    let mut cmd = Command::new(program);
    cmd.arg0(name)
        .args(args)
        .env_clear()
        // The run's own variables go in last: they win over the base's of the same name.
        .envs(base.into_iter().flatten().map(|(k, v)| (k, v)))
        .envs(env)
        .current_dir(cwd)
        .stdin(null)
        .stdout(out)
        .stderr(err)
        // Its own process group, so a stop reaches every process the run starts.
        .process_group(0);
    let before = procs::start_time_now();
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return refuse(format!("cannot start {name:?}: {e}")),
    };
    let pid = child.id() as i32;
    let after = procs::start_time_now();
    // The child started between the two readings. Only a spawn held up for over a tick
    // (a loaded machine) needs `/proc`, where the child still is (a zombie at worst: only
    // this worker reaps it).
    let start_time = if before > 0 && after.saturating_sub(before) <= 1 {
        before
    } else {
        procs::stat(pid).map_or(0, |s| s.start_time)
    };
    let child = Child {
        run_id,
        pid,
        start_time,
        exit_file,
    };
    {
        let mut table = lock(&shared.children);
        table.starting -= 1;
        table.live.insert(pid, child);
    }
    Message::Spawned {
        id,
        pid,
        start_time,
    }
}

/// How long an end waits for others to be told with it, while others may come.
const TELL_LINGER: Duration = Duration::from_millis(2);

/// A run ended: its exit is written, then told with `then` (the next run's start, for the
/// connection that asked for it) in the same line.
///
/// Told at once when no other run of this supervisor is live or in line; otherwise it waits
/// up to [`TELL_LINGER`] for the ends that come meanwhile, and they go in one write. Why: a
/// message per end woke the agent once per run, which in a stream of short runs was a good
/// part of its work, and an agent thread woken beside a child just started made the kernel
/// move children between cores at `exec` and leave one idle. Nothing waits on an end while
/// other runs go on (the next run starts from the line here); a lone run is told at once.
fn ended(shared: &Shared, child: Child, exit: Exit, then: Option<(u64, &Message)>) {
    write_exit(&child.exit_file, &child.run_id, &exit);
    {
        let mut table = lock(&shared.children);
        if table.ended.len() >= ENDED_KEPT {
            table.ended.pop_front();
        }
        table.ended.push_back(child.clone());
    }
    let lapsed = lock(&shared.lease).lapsed;
    let run_id = child.run_id.clone();
    let exited = line_of(&Message::Exited {
        run_id: child.run_id,
        pid: child.pid,
        exit,
    });
    let company_may_come = {
        let line = lock(&shared.line);
        let table = lock(&shared.children);
        others_to_end(&table, &line)
    };
    {
        let conns: Vec<u64> = lock(&shared.conns).iter().map(|(c, _)| *c).collect();
        if conns.is_empty() {
            lock(&shared.children).untold_end = true;
        }
        // A run stopped for a lapsed lease is not reported: its server has declared it lost.
        if !lapsed {
            for_reporter(shared, run_id, conns.is_empty());
        }
        let mut untold = lock(&shared.untold);
        let first = untold.is_empty();
        for conn in conns {
            let line = match then {
                Some((to, next)) if to == conn => [&exited[..], &line_of(next)].concat(),
                _ => exited.clone(),
            };
            untold.push((conn, line));
        }
        if company_may_come {
            if first {
                shared.to_tell.notify_one();
            }
            return;
        }
    }
    shared.tell_untold();
}

/// An end for the reporter: now when no agent heard it (`alone`), else among the recent.
fn for_reporter(shared: &Shared, run_id: String, alone: bool) {
    let mut reporting = lock(&shared.reporting);
    if alone {
        if reporting.runs.len() < REPORT_MAX {
            reporting.runs.push(run_id);
            shared.to_report.notify_one();
        }
        return;
    }
    let now = Instant::now();
    while reporting.recent.front().is_some_and(|(at, _)| {
        now.duration_since(*at) > RECENT || reporting.recent.len() >= REPORT_MAX
    }) {
        reporting.recent.pop_front();
    }
    reporting.recent.push_back((now, run_id));
}

/// Whether a run other than one just ended may end soon: one live, starting, or in line.
fn others_to_end(table: &Table, line: &Line) -> bool {
    !table.live.is_empty() || table.starting > 0 || !line.waiting.is_empty()
}

/// The teller: tells the ends [`ended`] left untold, [`TELL_LINGER`] after the first.
fn tell(shared: &Shared) {
    loop {
        {
            let mut untold = lock(&shared.untold);
            while untold.is_empty() {
                untold = shared
                    .to_tell
                    .wait(untold)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        std::thread::sleep(TELL_LINGER);
        shared.tell_untold();
    }
}

/// Writes the exit in place: one write at the start of a file that may already be there (a
/// run directory in reuse keeps its last run's, which the run id in the record tells
/// apart), not a temporary file and a rename, which cost a new inode per run. The record is padded to [`super::EXIT_RECORD`] bytes, so it never
/// needs a truncation (on ext4 a file truncated to empty and written again is flushed to
/// disk on close). A reader that catches it half-written finds no valid exit and looks again.
fn write_exit(path: &Path, run_id: &str, exit: &Exit) {
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .and_then(|mut f| f.write_all(&super::exit_record(run_id, exit)));
    if let Err(e) = ok {
        note!("liftoff supervisor: cannot write {}: {e}", path.display());
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
