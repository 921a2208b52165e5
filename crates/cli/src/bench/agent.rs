//! `liftoff bench agent`: what a user of the agent feels.
//!
//! - dispatch latency: enqueue → the run's process running (the child, `liftoff stamp`,
//!   writes the time it started), on an idle agent; beside it, the floor: this process
//!   spawning the same child directly;
//! - throughput: N runs of `true` at each concurrency, against a bare loop that spawns the
//!   same processes with the same concurrency, right after; in rounds (3 by default), of
//!   which the median ratio is reported with every round's; beside it (in process), the
//!   same runs through the local runner and its supervisor alone;
//! - stop latency: `stop` asked → every process of the run gone;
//! - the agent's resident memory, idle and with runs in flight (a separate `liftoff agent`
//!   process, as users run it).

use super::percentile;
use crate::commands::agent::start as start_agent;
use anyhow::Context;
use clap::Args;
use liftoff_agent::{AgentConfig, Control};
use liftoff_client::Client;
use liftoff_server::{Server, ServerConfig};
use liftoff_store::{NewItem, SqliteStore, Store};
use liftoff_types::api::ItemFilter;
use liftoff_types::{now_ms, ItemId, ItemState, LaunchSpec, NewQueue, Priority, RunState, Scope};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Args, Debug)]
pub struct AgentBench {
    /// Runs timed for dispatch latency.
    #[arg(long, default_value_t = 200)]
    pub dispatch_runs: usize,
    /// Runs of `true` per throughput measurement.
    #[arg(long, default_value_t = 1000)]
    pub throughput_runs: usize,
    /// Concurrencies (max_jobs) for throughput.
    #[arg(long, value_delimiter = ',', default_value = "2,16")]
    pub concurrency: Vec<usize>,
    /// Throughput rounds per concurrency and mode, each liftoff then the bare loop; the
    /// median ratio is reported with every round's (a shared machine's speed drifts from
    /// one second to the next, and one pair is as likely to catch a slow moment as not).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=25))]
    pub rounds: u32,
    /// Runs in flight for the memory figure.
    #[arg(long, default_value_t = 100)]
    pub in_flight: usize,
    /// Stops timed.
    #[arg(long, default_value_t = 20)]
    pub stops: usize,
    /// Where to put databases and agent state (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the databases and agent state afterwards (their directory is printed on stderr),
    /// to look at when each run was leased, started and ended.
    #[arg(long)]
    pub keep: bool,
}

/// A server on a loopback port over a fresh SQLite file, with a `bench` queue.
struct Rig {
    dir: PathBuf,
    store: Arc<SqliteStore>,
    server: Server,
    client: Client,
    agent_token: String,
}

impl Rig {
    async fn new(base: &Path, name: &str) -> anyhow::Result<Rig> {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir)?;
        let store = Arc::new(SqliteStore::open(&dir.join("liftoff.db"))?);
        store
            .create_queue(NewQueue::named("bench"), now_ms())
            .await?;
        let (admin, hash) = liftoff_server::auth::new_token();
        store
            .create_token("bench admin", Scope::Admin, &hash, now_ms())
            .await?;
        let (agent_token, hash) = liftoff_server::auth::new_token();
        store
            .create_token("bench agent", Scope::Agent, &hash, now_ms())
            .await?;
        let server =
            liftoff_server::start(ServerConfig::local("127.0.0.1:0".parse()?), store.clone())
                .await?;
        let client = Client::new(&server.url(), Some(admin))?;
        Ok(Rig {
            dir,
            store,
            server,
            client,
            agent_token,
        })
    }

    fn config(&self, max_jobs: i64) -> AgentConfig {
        AgentConfig {
            queues: vec!["bench".into()],
            max_jobs,
            state_dir: self.dir.join("agent"),
            stopped_run_timeout: Duration::from_secs(5),
            ..AgentConfig::default()
        }
    }

    /// An agent in this process, as `liftoff up` runs one: it reaches the server in
    /// process (`http`: over loopback HTTP instead, as a `liftoff agent` of its own does).
    /// Send it `Control::StopNow` to end it.
    async fn agent(
        &self,
        max_jobs: i64,
        http: bool,
    ) -> anyhow::Result<(
        mpsc::Sender<Control>,
        tokio::task::JoinHandle<()>,
        Arc<liftoff_agent::Agent>,
    )> {
        let mut client = Client::new(&self.server.url(), Some(self.agent_token.clone()))?;
        if !http {
            client = client.in_process(crate::commands::up::in_process(&self.server));
        }
        let agent = start_agent(client, self.config(max_jobs)).await?;
        let (tx, rx) = mpsc::channel(2);
        let task = tokio::spawn(agent.clone().run(rx));
        Ok((tx, task, agent))
    }

    /// Enqueues `n` items; returns the last one's id.
    async fn enqueue_many(&self, argv: &[&str], n: usize) -> anyhow::Result<ItemId> {
        let spec = LaunchSpec::command(argv.iter().map(|s| s.to_string()).collect());
        let mut last = ItemId(0);
        for _ in 0..n {
            let item = NewItem {
                queue: "bench".into(),
                spec: spec.clone(),
                priority: Priority::Medium,
                resource_args: json!({}),
                kind: liftoff_types::ItemKind::Run,
            };
            last = self.store.enqueue(item, now_ms()).await?.id;
        }
        Ok(last)
    }

    /// Wakes long-polls on the bench queue, as an enqueue through the API does (the bench
    /// writes to the store directly).
    fn wake(&self) {
        self.server
            .state
            .wakers
            .wake(&liftoff_server::wake::queue_key("bench"));
    }

    async fn ended(&self) -> anyhow::Result<u64> {
        let d = self
            .store
            .get_queue("bench", true)
            .await?
            .depth
            .unwrap_or_default();
        Ok(d.finished + d.failed + d.stopped + d.cancelled)
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

pub async fn run(b: AgentBench) -> anyhow::Result<()> {
    let base = b.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("liftoff-bench-agent")
        .tempdir_in(&base)?;
    let exe = std::env::current_exe()?;
    let dispatch = dispatch_latency(tmp.path(), &exe, b.dispatch_runs).await?;
    let mut throughput = serde_json::Map::new();
    for &c in &b.concurrency {
        for http in [false, true] {
            let mut rounds = Vec::new();
            for round in 0..b.rounds {
                rounds
                    .push(throughput_vs_bare(tmp.path(), b.throughput_runs, c, http, round).await?);
            }
            let mode = if http { "_http" } else { "" };
            throughput.insert(format!("max_jobs_{c}{mode}"), median_round(rounds));
        }
    }
    let stops = stop_latency(tmp.path(), b.stops).await?;
    let memory = memory(tmp.path(), &exe, b.in_flight).await?;
    let report = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "dispatch_latency_ms": dispatch,
        "throughput": throughput,
        "stop_latency_ms": stops,
        "memory_kib": memory,
        "targets": {"dispatch_p50_ms": 5, "dispatch_p99_ms": 20, "throughput_ratio_max": 1.5, "agent_idle_rss_kib_max": 10240, "stop_ms_max": 1000},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if b.keep {
        eprintln!("bench databases kept in {}", tmp.keep().display());
    }
    Ok(())
}

fn read_stamp(path: &Path) -> Option<u128> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn epoch_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn dispatch_latency(
    base: &Path,
    exe: &Path,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let rig = Rig::new(base, "dispatch").await?;
    let (control, task, _) = rig.agent(1, false).await?;
    let exe_s = exe.to_string_lossy().to_string();
    let mut through_liftoff = Vec::new();
    let mut floor = Vec::new();
    for i in 0..runs + 10 {
        let stamp = rig.dir.join(format!("stamp-{i}"));
        let spec = LaunchSpec::command(vec![
            exe_s.clone(),
            "stamp".into(),
            stamp.to_string_lossy().into(),
        ]);
        let sent = epoch_nanos();
        let item = rig.client.enqueue("bench", &spec).await?;
        wait_until(Duration::from_secs(30), || async {
            read_stamp(&stamp).is_some()
        })
        .await
        .context("a run never started")?;
        let started = read_stamp(&stamp).unwrap_or(sent);
        // The agent must be idle again before the next one.
        wait_until(Duration::from_secs(30), || async {
            rig.client
                .get_item(item.id)
                .await
                .is_ok_and(|i| i.state.is_terminal())
        })
        .await?;
        let bare = rig.dir.join(format!("bare-{i}"));
        let spawned = epoch_nanos();
        std::process::Command::new(exe)
            .arg("stamp")
            .arg(&bare)
            .status()?;
        let bare_started = read_stamp(&bare).unwrap_or(spawned);
        if i >= 10 {
            through_liftoff.push((started.saturating_sub(sent)) as f64 / 1e6);
            floor.push((bare_started.saturating_sub(spawned)) as f64 / 1e6);
        }
    }
    let _ = control.send(Control::StopNow).await;
    let _ = task.await;
    rig.stop().await;
    through_liftoff.sort_by(f64::total_cmp);
    floor.sort_by(f64::total_cmp);
    Ok(json!({
        "runs": runs,
        "p50": percentile(&through_liftoff, 0.5), "p99": percentile(&through_liftoff, 0.99),
        "floor_bare_spawn_p50": percentile(&floor, 0.5), "floor_bare_spawn_p99": percentile(&floor, 0.99),
    }))
}

/// The round with the median ratio, with every round's ratio beside it.
fn median_round(mut rounds: Vec<serde_json::Value>) -> serde_json::Value {
    let ratio = |r: &serde_json::Value| r["ratio"].as_f64().unwrap_or(f64::MAX);
    let ratios: Vec<f64> = rounds.iter().map(ratio).collect();
    rounds.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let mut median = rounds.swap_remove(rounds.len() / 2);
    median["ratios"] = json!(ratios);
    median
}

async fn throughput_vs_bare(
    base: &Path,
    runs: usize,
    concurrency: usize,
    http: bool,
    round: u32,
) -> anyhow::Result<serde_json::Value> {
    let name = format!(
        "throughput-{concurrency}{}-{round}",
        if http { "-http" } else { "" }
    );
    let rig = Rig::new(base, &name).await?;
    // An agent already up and idle, as users run one: its start-up (registration, the
    // supervisor process) is not part of the work, so one run goes through first.
    let (control, task, agent) = rig.agent(concurrency as i64, http).await?;
    rig.enqueue_many(&["true"], 1).await?;
    rig.wake();
    wait_until(Duration::from_secs(30), || async {
        rig.ended().await.unwrap_or(0) >= 1
    })
    .await?;
    // An idle agent has made the directories for its first runs (it does so right after it
    // starts); they are part of starting up, not of the work.
    wait_until(Duration::from_secs(60), || async { agent.made_ahead() }).await?;
    // The work is in the queue before the clock starts, as the bare loop has its list before
    // its clock starts: the agent does not see it until the wake (the bench writes to the
    // store directly), so this times the agent working a full queue. Enqueueing is timed
    // apart.
    let enqueue_start = Instant::now();
    let last = rig.enqueue_many(&["true"], runs).await?;
    // A bulk load's WAL is written back now, as part of the enqueueing: left to the
    // background checkpointer, its flush landed in the timed work about once a run.
    rig.store.checkpoint().await?;
    let enqueue_s = enqueue_start.elapsed().as_secs_f64();
    let start = now_ms();
    rig.wake();
    let runs_total = runs + 1;
    // Looked at rarely and cheaply, so the looking costs the agent next to nothing (counting
    // the queue's items by state, every time, took 2% of the process's time at 12,000
    // runs): the last item first (items go in order), then the count. The time taken is
    // read from the items' own timestamps, exact to the millisecond whatever the polling.
    wait_until_every(
        Duration::from_secs(600),
        Duration::from_millis(50),
        || async {
            rig.store
                .get_item(last)
                .await
                .is_ok_and(|i| i.state.is_terminal())
        },
    )
    .await?;
    wait_until_every(
        Duration::from_secs(600),
        Duration::from_millis(50),
        || async { rig.ended().await.unwrap_or(0) >= runs_total as u64 },
    )
    .await?;
    let filter = ItemFilter {
        limit: Some(1000),
        ..ItemFilter::default()
    };
    let mut last = start;
    let mut after = 0;
    loop {
        let page = rig
            .store
            .list_items(&ItemFilter {
                after: Some(after),
                ..filter.clone()
            })
            .await?;
        let Some(tail) = page.last() else { break };
        after = tail.id.0;
        last = page.iter().map(|i| i.updated_at_ms).fold(last, i64::max);
    }
    let liftoff = (last - start) as f64 / 1e3;
    let _ = control.send(Control::StopNow).await;
    let _ = task.await;
    let finished = rig
        .store
        .get_queue("bench", true)
        .await?
        .depth
        .unwrap_or_default()
        .finished
        - 1;
    let dir = rig.dir.clone();
    rig.stop().await;
    let bare = bare_loop(runs, concurrency)?;
    let mut round = json!({
        "runs": runs, "finished": finished,
        "liftoff_s": round3(liftoff), "bare_loop_s": round3(bare), "ratio": round3(liftoff / bare),
        "enqueue_s": round3(enqueue_s),
    });
    if !http {
        let floor = runner_floor(&dir, runs, concurrency).await?;
        round["runner_floor_s"] = json!(round3(floor));
        round["runner_floor_ratio"] = json!(round3(floor / bare));
    }
    Ok(round)
}

/// The same runs through the local runner and its supervisor alone, as the agent hands them
/// on (all in line at once, `concurrency` at a time), with no server, store, journal or run
/// directories: how much of the ratio is the runner's, and how much is left for the rest.
async fn runner_floor(dir: &Path, runs: usize, concurrency: usize) -> anyhow::Result<f64> {
    use liftoff_runner::local::{LocalRunner, SupervisorCommand};
    use liftoff_runner::{RunEnv, RunSpec, Runner};
    let state = dir.join("runner-floor");
    let work = state.join("work");
    std::fs::create_dir_all(&work)?;
    let runner = Arc::new(LocalRunner::new(
        &state,
        SupervisorCommand {
            program: std::env::current_exe()?,
            args: vec!["supervise".into()],
            reporter: None,
        },
    ));
    let env = RunEnv {
        base: Arc::new(liftoff_agent::env::inherited(std::env::vars())),
        own: Default::default(),
    };
    let spec = |i: usize| -> anyhow::Result<RunSpec> {
        Ok(RunSpec {
            attempt_of: None,
            run_id: format!("floor-{i}").parse().map_err(anyhow::Error::msg)?,
            argv: vec!["true".into()],
            env: env.clone(),
            workdir: work.clone(),
            output: state.join("output.log"),
            resource_args: json!({}),
            concurrency: Some(concurrency as u32),
            image: None,
        })
    };
    // The supervisor is up before the clock starts, as the agent's is.
    let first = runner.launch(&spec(0)?).await?;
    runner.wait(&first).await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=runs {
        let (runner, spec) = (runner.clone(), spec(i)?);
        tasks.spawn(async move {
            let handle = runner.launch(&spec).await?;
            runner.wait(&handle).await
        });
    }
    while let Some(ended) = tasks.join_next().await {
        ended??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `concurrency` threads spawning and waiting for `true` until `runs` have run.
fn bare_loop(runs: usize, concurrency: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < runs {
                    let _ = std::process::Command::new("true").status();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn stop_latency(base: &Path, stops: usize) -> anyhow::Result<serde_json::Value> {
    let rig = Rig::new(base, "stop").await?;
    let (control, task, _) = rig.agent(1, false).await?;
    let mut times = Vec::new();
    for _ in 0..stops {
        let item = rig
            .client
            .enqueue(
                "bench",
                &LaunchSpec::command(vec!["sleep".into(), "1000".into()]),
            )
            .await?;
        wait_until(Duration::from_secs(30), || async {
            let Ok(i) = rig.client.get_item(item.id).await else {
                return false;
            };
            let Some(id) = i.run_id else { return false };
            let r = rig.client.get_run(&id).await;
            r.is_ok_and(|r| r.state == RunState::Running)
        })
        .await?;
        let run_id = rig
            .client
            .get_item(item.id)
            .await?
            .run_id
            .context("no run")?;
        let run = rig.client.get_run(&run_id).await?;
        // A missing pid would make the wait below end at once and the figure meaningless.
        let pid = run.handle["pid"].as_i64().context("the run has no pid")? as i32;
        let asked = Instant::now();
        rig.client.stop_run(&run.id).await?;
        wait_until(Duration::from_secs(30), || async {
            liftoff_runner::procs::group_members(pid).is_empty()
        })
        .await?;
        times.push(asked.elapsed().as_secs_f64() * 1e3);
        wait_until(Duration::from_secs(30), || async {
            rig.client
                .get_item(item.id)
                .await
                .is_ok_and(|i| i.state == ItemState::Stopped)
        })
        .await?;
    }
    let _ = control.send(Control::StopNow).await;
    let _ = task.await;
    rig.stop().await;
    times.sort_by(f64::total_cmp);
    Ok(json!({"stops": stops, "p50": percentile(&times, 0.5), "max": percentile(&times, 1.0)}))
}

/// Resident memory of a separate `liftoff agent` process, idle and with `in_flight` runs.
async fn memory(base: &Path, exe: &Path, in_flight: usize) -> anyhow::Result<serde_json::Value> {
    let rig = Rig::new(base, "memory").await?;
    let state = rig.dir.join("agent-proc");
    let mut child = std::process::Command::new(exe)
        .args([
            "agent",
            "--queue",
            "bench",
            "--max-jobs",
            &in_flight.to_string(),
            "--state-dir",
        ])
        .arg(&state)
        .env("LIFTOFF_URL", rig.server.url())
        .env("LIFTOFF_TOKEN", &rig.agent_token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id() as i32;
    wait_until(Duration::from_secs(30), || async {
        rig.client.list_agents().await.is_ok_and(|a| !a.is_empty())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);
    rig.enqueue_many(&["sleep", "1000"], in_flight).await?;
    wait_until(Duration::from_secs(60), || async {
        let d = rig
            .store
            .get_queue("bench", true)
            .await
            .ok()
            .and_then(|q| q.depth)
            .unwrap_or_default();
        d.claimed as usize >= in_flight
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = rss_kib(pid);
    let supervisor = supervisor_pid(&state).map(rss_kib);
    for item in rig.store.list_items(&Default::default()).await? {
        let _ = rig.client.cancel_item(item.id).await;
    }
    wait_until(Duration::from_secs(60), || async {
        rig.ended().await.unwrap_or(0) >= in_flight as u64
    })
    .await?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    rig.stop().await;
    Ok(
        json!({"agent_idle": idle, format!("agent_{in_flight}_runs"): busy, format!("supervisor_{in_flight}_runs"): supervisor}),
    )
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn supervisor_pid(state: &Path) -> Option<i32> {
    let socket = state.join("supervisor.sock").to_string_lossy().to_string();
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains("supervise") && cmdline.contains(&socket)).then_some(pid)
    })
}

async fn wait_until<F, Fut>(timeout: Duration, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until_every(timeout, Duration::from_micros(500), check).await
}

async fn wait_until_every<F, Fut>(
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
