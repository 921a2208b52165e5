//! The supervisor: a small process, started once per agent state directory, that is the
//! parent of every local run.
//!
//! Why: an agent killed with SIGKILL takes its children's exit codes with it, since only a
//! parent can wait for a child. The supervisor outlives the agent: it keeps waiting for the
//! runs, writes each exit to the run's exit file, and tells whichever agent is connected. A
//! restarted agent reconnects and re-adopts its runs with their real exit codes.
//!
//! It is plain threads and blocking I/O (one thread per connection, small stacks; one
//! reaper that waits for every run, since a thread per run cost short runs more than the run
//! itself; and a starter per core that starts runs waiting in line, so that starts, which
//! wait for the new process to exec, overlap and never hold up reaping): it does almost
//! nothing, and it must not depend on the agent's runtime. It exits
//! once it has had no run and no agent for [`IDLE_EXIT`].

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

/// How long the supervisor stays with nothing to do (covers an agent's restart).
pub const IDLE_EXIT: Duration = Duration::from_secs(10);
const THREAD_STACK: usize = 128 * 1024;

/// A spawn request waiting for a free slot, with the connection that asked.
struct Waiting {
    conn: u64,
    request: Request,
}

/// The runs by pid. Every child of this process is a run: the reaper waits for any.
#[derive(Default)]
struct Table {
    live: HashMap<i32, Child>,
    /// Ends the reaper saw before the run's starter put it in `live` (a run that ended
    /// during its own start): the starter finds its end here.
    early: HashMap<i32, Exit>,
    /// Runs being started (taken out of the line, not yet in `live`): they count against
    /// the limit already.
    starting: usize,
}

#[derive(Default)]
struct Shared {
    children: Mutex<Table>,
    /// Signalled when `children` gains a run, for the reaper waiting for one.
    has_children: Condvar,
    /// Signalled when a run may start from the line (a run ended, or one joined the line).
    may_start: Condvar,
    conns: Mutex<Vec<(u64, UnixStream)>>,
    next_conn: Mutex<u64>,
    /// Runs waiting for a slot, oldest first. Lock order: `queue`, then `children`.
    /// `may_start` waits with this lock.
    queue: Mutex<VecDeque<Waiting>>,
}

impl Shared {
    fn send_to(&self, conn: u64, msg: &Message) {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        let mut conns = lock(&self.conns);
        if let Some((_, w)) = conns.iter_mut().find(|(c, _)| *c == conn) {
            let _ = w.write_all(&line);
        }
    }

    fn broadcast(&self, msg: &Message) {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        let mut conns = lock(&self.conns);
        conns.retain_mut(|(_, stream)| stream.write_all(&line).is_ok());
    }
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
            .spawn(move || reap(&shared))?;
    }
    let starters = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    for _ in 0..starters {
        let shared = shared.clone();
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || starter(&shared))?;
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
        let busy = {
            let table = lock(&shared.children);
            !table.live.is_empty() || table.starting > 0
        } || !lock(&shared.conns).is_empty()
            || !lock(&shared.queue).is_empty();
        if busy {
            idle_since = Instant::now();
        } else if idle_since.elapsed() >= IDLE_EXIT {
            let _ = std::fs::remove_file(socket);
            std::process::exit(0);
        }
    }
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
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request @ Request::Spawn { .. }) => {
                // Into the line, always: a start waits for the new process to exec, and
                // starting here would make every next request of this agent wait for it
                // (the starters, one per core, start runs side by side).
                lock(&shared.queue).push_back(Waiting { conn, request });
                shared.may_start.notify_one();
                None
            }
            Ok(Request::Withdraw { id, run_id }) => {
                let mut queue = lock(&shared.queue);
                let before = queue.len();
                queue.retain(
                    |w| !matches!(&w.request, Request::Spawn { run_id: r, .. } if *r == run_id),
                );
                Some(Message::Withdrawn {
                    id,
                    withdrawn: queue.len() < before,
                })
            }
            Ok(Request::List { id }) => Some(Message::Running {
                id,
                runs: lock(&shared.children).live.values().cloned().collect(),
            }),
            Err(e) => Some(Message::Refused {
                id: 0,
                error: format!("bad request: {e}"),
            }),
        };
        if let Some(reply) = reply {
            shared.send_to(conn, &reply);
        }
    }
    // Runs this agent left waiting are not started for nobody.
    lock(&shared.queue).retain(|w| w.conn != conn);
    lock(&shared.conns).retain(|(c, _)| *c != conn);
}

/// Whether a spawn request may start now; if so, counts it as starting (the caller holds
/// the line, so two callers cannot both take the last slot).
fn reserve(shared: &Shared, request: &Request) -> bool {
    let mut table = lock(&shared.children);
    let room = match request {
        Request::Spawn {
            limit: Some(limit), ..
        } => table.live.len() + table.starting < *limit as usize,
        _ => true,
    };
    if room {
        table.starting += 1;
    }
    room
}

/// Starts a spawn request counted as starting by [`reserve`]; the answer for its asker.
fn start(shared: &Arc<Shared>, request: Request) -> Message {
    let answer = start_reserved(shared, request);
    if matches!(answer, Message::Refused { .. }) {
        // Never started: its place goes back.
        lock(&shared.children).starting -= 1;
        let _line = lock(&shared.queue);
        shared.may_start.notify_one();
    }
    answer
}

fn start_reserved(shared: &Arc<Shared>, request: Request) -> Message {
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
        return Message::Refused {
            id: 0,
            error: "not a spawn request".into(),
        };
    };
    spawn(
        shared, id, run_id, &program, argv, env, &cwd, &output, exit_file,
    )
}

/// Starts runs from the line whenever there is room, answering each asker; one per core,
/// so that one waiting for its new process to exec does not hold up the next.
fn starter(shared: &Arc<Shared>) {
    loop {
        let waiting = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(front) = queue.front() {
                    if reserve(shared, &front.request) {
                        break queue.pop_front();
                    }
                }
                queue = shared
                    .may_start
                    .wait(queue)
                    .unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(waiting) = waiting else { continue };
        // More may fit (several ended at once): let another starter look.
        shared.may_start.notify_one();
        let answer = start(shared, waiting.request);
        shared.send_to(waiting.conn, &answer);
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn(
    shared: &Arc<Shared>,
    id: u64,
    run_id: String,
    program: &Path,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: &Path,
    output: &Path,
    exit_file: std::path::PathBuf,
) -> Message {
    let refuse = |error: String| Message::Refused { id, error };
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
    let mut cmd = Command::new(program);
    cmd.arg0(name)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group, so a stop reaches every process the run starts.
        .process_group(0);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return refuse(format!("cannot start {name:?}: {e}")),
    };
    let pid = child.id() as i32;
    // 0 if it has already ended and been reaped: its end is recorded, nobody needs to
    // tell it from another process by that pid.
    let start_time = procs::stat(pid).map_or(0, |s| s.start_time);
    let child = Child {
        run_id,
        pid,
        start_time,
        exit_file,
    };
    let early = {
        let mut table = lock(&shared.children);
        table.starting -= 1;
        match table.early.remove(&pid) {
            Some(exit) => Some((child, exit)),
            None => {
                table.live.insert(pid, child);
                None
            }
        }
    };
    shared.has_children.notify_one();
    if let Some((child, exit)) = early {
        ended(shared, child, exit);
    }
    Message::Spawned {
        id,
        pid,
        start_time,
    }
}

/// Waits for every run: any child that ends is looked up in the table (its spawner held the
/// table from fork to insert, so the entry is there), its exit written and told, and the
/// runs waiting in line get its slot.
fn reap(shared: &Arc<Shared>) {
    use nix::errno::Errno;
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        {
            // Nothing live: wait (a run that ends before its starter puts it in the table
            // stays a zombie until then, and is reaped after).
            let mut table = lock(&shared.children);
            while table.live.is_empty() {
                table = shared
                    .has_children
                    .wait(table)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        let (pid, exit) = match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Exit { code, signal: None }),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (
                pid,
                Exit {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                },
            ),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                // ECHILD with runs in the table cannot happen while this is the only reaper;
                // wait a little rather than spin if it ever does.
                eprintln!("liftoff supervisor: waitpid: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let child = {
            let mut table = lock(&shared.children);
            match table.live.remove(&pid.as_raw()) {
                Some(child) => child,
                None => {
                    // Its starter has not put it in the table yet: it will find this.
                    table.early.insert(pid.as_raw(), exit);
                    continue;
                }
            }
        };
        ended(shared, child, exit);
    }
}

/// A run ended: its slot goes to the line first (the next run starts while this one's exit
/// is written and told), then its exit is written and told.
fn ended(shared: &Shared, child: Child, exit: Exit) {
    {
        let _line = lock(&shared.queue);
        shared.may_start.notify_one();
    }
    write_exit(&child.exit_file, &child.run_id, &exit);
    shared.broadcast(&Message::Exited {
        run_id: child.run_id,
        pid: child.pid,
        exit,
    });
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
        eprintln!("liftoff supervisor: cannot write {}: {e}", path.display());
    }
}
