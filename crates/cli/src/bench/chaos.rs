//! `liftoff bench chaos`: the promise that no run is lost, none runs twice and no two
//! attempts of an item run at once, tried the way machines fail. Real binaries: a `liftoff
//! server` (or two replicas on one PostgreSQL database, with `--postgres`) and several
//! `liftoff agent`s; half the items on a queue that requeues lost runs, half on one that does
//! not. On a schedule, agents are killed with SIGKILL and restarted after a random delay
//! (some past the agent timeout, one down for three timeouts), the server (one replica)
//! is killed and restarted, and with `--database-restart`, PostgreSQL itself.
//!
//! Every run takes an exclusive `flock` on a file named after its item and appends `start`,
//! then `end`, to a ledger: a run that finds the lock held writes `overlap` (two attempts at
//! once; the lock goes with the last process of the run, however it dies). At the end the
//! ledger and the items' final states give Jepsen's counters for a total queue: launched,
//! acknowledged, ok, lost (acknowledged but not finished, though it never ran or its work was
//! done), unexpected (finished without having run), duplicated (its work done twice; of
//! those, `duplicated_unheard`: the first run ended on an agent that was down past the agent
//! timeout and its supervisor's report did not reach the server either, which requeued it as
//! the queue asked), plus
//! overlapping, and `cut`: runs stopped with their lost agent on the queue that does not
//! requeue (failed as lost, by that queue's choice). Each kill's recovery is the time until
//! every item the agent held is ended or held by a live agent that has beaten since.

use anyhow::Context;
use clap::Args;
use liftoff_client::Client;
use liftoff_types::api::{CreateTokenRequest, ItemFilter};
use liftoff_types::{AgentStatus, ItemId, ItemState, LaunchSpec, NewQueue, Phase, Scope};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct ChaosBench {
    /// Items to run, half on a queue that requeues lost runs.
    #[arg(long, default_value_t = 2000)]
    pub runs: u32,
    #[arg(long, default_value_t = 3)]
    pub agents: u32,
    /// Each agent's `--max-jobs`.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// The server's `--agent-timeout`, seconds.
    #[arg(long, default_value_t = 5)]
    pub agent_timeout: u64,
    /// The server's `--lost-grace`, seconds.
    #[arg(long, default_value_t = 4)]
    pub lost_grace: u64,
    /// Agent kill -9s, spread over the soak.
    #[arg(long, default_value_t = 16)]
    pub kills: u32,
    /// Server kill -9s (on PostgreSQL, of the second replica), each restarted after 1 s.
    #[arg(long, default_value_t = 1)]
    pub server_kills: u32,
    /// The longest an agent stays down, in seconds (default: three agent timeouts, the first
    /// kill's). Runs that finish while their agent is down are told by its supervisor (see
    /// `liftoff report-ends`), or by the agent when it comes back.
    #[arg(long)]
    pub max_down: Option<f64>,
    /// The longest run, in milliseconds (each sleeps a random time up to it).
    #[arg(long, default_value_t = 1500)]
    pub run_ms: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Two server replicas on a fresh database made on this PostgreSQL server, agents split
    /// between them.
    #[arg(long, env = "LIFTOFF_BENCH_POSTGRES", hide_env_values = true)]
    pub postgres: Option<String>,
    /// A command (run by `sh -c`) that restarts that PostgreSQL server, for example
    /// `pg_ctl -D DATA restart -m immediate` (a crash, then recovery from its WAL); run
    /// `--database-restarts` times over the soak, each while the soak goes on.
    #[arg(long, requires = "postgres")]
    pub database_restart: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub database_restarts: u32,
}

pub async fn run(b: ChaosBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        b.runs >= 2 && b.agents >= 1,
        "--runs 2 or more, --agents 1 or more"
    );
    let tmp = tempfile::Builder::new().prefix("liftoff-chaos").tempdir()?;
    let database = match &b.postgres {
        Some(admin) => {
            let name = format!("liftoff_chaos_{}", std::process::id());
            Some((
                admin.clone(),
                name.clone(),
                liftoff_store::postgres::admin::create_database(admin, &name).await?,
            ))
        }
        None => None,
    };
    let mut soak = Soak::start(&b, tmp.path(), database.as_ref().map(|d| d.2.clone())).await;
    let figures = match &mut soak {
        Ok(soak) => soak.run().await,
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    if let Ok(soak) = &mut soak {
        soak.stop_all();
    }
    if let Some((admin, name, _)) = &database {
        let _ = liftoff_store::postgres::admin::drop_database(admin, name).await;
    }
    println!("{}", serde_json::to_string_pretty(&figures?)?);
    Ok(())
}

/// A `liftoff server` process on a fixed loopback address, so it can come back there.
struct ServerProc {
    child: Option<Child>,
    addr: String,
    data: PathBuf,
    args: Vec<String>,
}

impl ServerProc {
    fn spawn(&mut self, exe: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))?;
        let child = Command::new(exe)
            .args(["server", "--bind", &self.addr])
            .args(&self.args)
            .env("LIFTOFF_DATA_DIR", &self.data)
            .env("LIFTOFF_LOG", "warn")
            .env_remove("LIFTOFF_URL")
            .env_remove("LIFTOFF_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting liftoff server")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_listening(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

struct AgentProc {
    child: Option<Child>,
    state: PathBuf,
    url: String,
}

struct Soak {
    b: ChaosBench,
    exe: PathBuf,
    servers: Vec<ServerProc>,
    agents: Vec<AgentProc>,
    client: Client,
    agent_token: String,
    ledger: PathBuf,
    locks: PathBuf,
}

/// A free loopback port, found by binding one.
fn free_addr() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

impl Soak {
    async fn start(b: &ChaosBench, dir: &Path, database: Option<String>) -> anyhow::Result<Soak> {
        let exe = std::env::current_exe()?;
        let mut args = vec![
            "--agent-timeout".to_string(),
            b.agent_timeout.to_string(),
            "--lost-grace".to_string(),
            b.lost_grace.to_string(),
        ];
        if let Some(url) = &database {
            args.extend(["--database".to_string(), url.clone()]);
        }
        let replicas = if database.is_some() { 2 } else { 1 };
        let mut servers = Vec::new();
        for n in 0..replicas {
            let mut server = ServerProc {
                child: None,
                addr: free_addr()?,
                data: dir.join(format!("server{n}")),
                args: args.clone(),
            };
            server.spawn(&exe)?;
            // The first makes the admin token; the next find the store has one.
            if n == 0 {
                super::server_up(&server.data).await?;
            }
            server.wait_listening().await?;
            servers.push(server);
        }
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(servers[0].data.join("client.json"))?)?;
        let token = file["token"].as_str().map(str::to_string);
        let url = |s: &ServerProc| format!("http://{}", s.addr);
        let client = Client::new(&url(&servers[0]), token)?;
        client.create_queue(&NewQueue::named("plain")).await?;
        let mut again = NewQueue::named("again");
        again.requeue_lost = true;
        again.max_attempts = 100;
        client.create_queue(&again).await?;
        let agent_token = client
            .create_token(&CreateTokenRequest {
                name: "chaos".into(),
                scope: Scope::Agent,
            })
            .await?
            .token;
        let agents = (0..b.agents)
            .map(|n| AgentProc {
                child: None,
                state: dir.join(format!("agent{n}")),
                url: url(&servers[n as usize % servers.len()]),
            })
            .collect();
        let (ledger, locks) = (dir.join("ledger"), dir.join("locks"));
        std::fs::create_dir_all(&locks)?;
        Ok(Soak {
            b: b.clone(),
            exe,
            servers,
            agents,
            client,
            agent_token,
            ledger,
            locks,
        })
    }

    fn spawn_agent(&mut self, n: usize) -> anyhow::Result<()> {
        let agent = &mut self.agents[n];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(agent.state.with_extension("log"))?;
        let child = Command::new(&self.exe)
            .args(["agent", "--queue", "plain", "--queue", "again"])
            .args(["--max-jobs", &self.b.slots.to_string()])
            .arg("--state-dir")
            .arg(&agent.state)
            .env("LIFTOFF_URL", &agent.url)
            .env("LIFTOFF_TOKEN", &self.agent_token)
            .env("LIFTOFF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting liftoff agent")?;
        agent.child = Some(child);
        Ok(())
    }

    fn kill_agent(&mut self, n: usize) {
        if let Some(mut child) = self.agents[n].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop_all(&mut self) {
        for n in 0..self.agents.len() {
            self.kill_agent(n);
        }
        for server in &mut self.servers {
            server.kill9();
        }
    }

    /// The agent id in an agent's state directory, once it has registered.
    fn agent_id(&self, n: usize) -> Option<i64> {
        let text = std::fs::read_to_string(self.agents[n].state.join("agent.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["agent_id"].as_i64()
    }

    fn spec(&self, seconds: f64) -> LaunchSpec {
        let (ledger, locks) = (self.ledger.display(), self.locks.display());
        let script = format!(
            "exec 9>>{locks}/$LIFTOFF_ITEM_ID; \
             flock -n 9 || echo \"overlap $LIFTOFF_ITEM_ID $LIFTOFF_RUN_ID\" >> {ledger}; \
             echo \"start $LIFTOFF_ITEM_ID $LIFTOFF_RUN_ID\" >> {ledger}; sleep {seconds:.3}; \
             echo \"end $LIFTOFF_ITEM_ID $LIFTOFF_RUN_ID\" >> {ledger}"
        );
        LaunchSpec::command(vec!["sh".into(), "-c".into(), script])
    }

    async fn run(&mut self) -> anyhow::Result<serde_json::Value> {
        let b = self.b.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(b.seed);
        for n in 0..self.agents.len() {
            self.spawn_agent(n)?;
        }
        let began = Instant::now();
        let began_ms = liftoff_types::now_ms();
        let mut acknowledged = Vec::new();
        for k in 0..b.runs {
            let queue = if k % 2 == 0 { "plain" } else { "again" };
            let seconds = rng.random_range(0.05..=(b.run_ms as f64 / 1000.0).max(0.06));
            if let Ok(item) = self.client.enqueue(queue, &self.spec(seconds)).await {
                acknowledged.push(item.id);
            }
        }
        // Faults over about the time the runs take with every slot busy.
        let slots = (b.agents * b.slots).max(1) as f64;
        let expected = b.runs as f64 * (b.run_ms as f64 / 2000.0 + 0.05) / slots;
        let timeout = Duration::from_secs(b.agent_timeout);
        let mut faults: Vec<(Duration, Fault)> = Vec::new();
        for k in 0..b.kills {
            let at = expected * (k + 1) as f64 / (b.kills + 1) as f64;
            let down = if k == 0 {
                timeout * 3
            } else {
                timeout.mul_f64(rng.random_range(0.0..2.0))
            };
            let down = match b.max_down {
                Some(max) => down.min(Duration::from_secs_f64(max)),
                None => down,
            };
            let pick = rng.random_range(0..self.agents.len());
            faults.push((Duration::from_secs_f64(at), Fault::Agent { pick, down }));
        }
        for k in 0..b.server_kills {
            let at = expected * (k as f64 + 0.5) / b.server_kills as f64;
            faults.push((Duration::from_secs_f64(at), Fault::Server));
        }
        if b.database_restart.is_some() {
            for k in 0..b.database_restarts {
                let at = expected * (k as f64 + 0.75) / b.database_restarts as f64;
                faults.push((Duration::from_secs_f64(at), Fault::Database));
            }
        }
        faults.sort_by_key(|(at, _)| *at);
        let counts = self.drive(began, faults).await?;
        let soak_s = began.elapsed().as_secs_f64();
        let ledger = Ledger::read(&self.ledger)?;
        let items = self.all_items().await?;
        let mut out = ledger.counters(&acknowledged, &items);
        out.insert("launched".into(), json!(b.runs));
        let (twice, unheard) = self.explain_duplicates(&ledger, began_ms).await;
        out.insert("duplicated_unheard".into(), json!(unheard));
        out.insert("duplicated_items".into(), json!(twice));
        out.insert("timeline".into(), json!(counts.timeline));
        let recoveries = counts.recoveries;
        let mut sorted: Vec<f64> = recoveries
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        sorted.sort_by(f64::total_cmp);
        out.insert(
            "setup".into(),
            json!({
                "store": if b.postgres.is_some() { "postgres, 2 replicas" } else { "sqlite" },
                "runs": b.runs, "agents": b.agents, "slots": b.slots,
                "agent_timeout_s": b.agent_timeout, "lost_grace_s": b.lost_grace,
                "run_ms_max": b.run_ms, "seed": b.seed, "max_down_s": b.max_down,
            }),
        );
        out.insert(
            "faults".into(),
            json!({
                "agent_kills": counts.agent_kills,
                "restarted_past_timeout": counts.past_timeout,
                "server_kills": counts.server_kills,
                "database_restarts": counts.database_restarts,
            }),
        );
        out.insert(
            "recovery_ms".into(),
            json!({
                "kills_measured": sorted.len(),
                "p50": super::percentile(&sorted, 0.5),
                "max": sorted.last().copied().unwrap_or(0.0),
            }),
        );
        out.insert("seconds".into(), json!((soak_s * 10.0).round() / 10.0));
        Ok(serde_json::Value::Object(out))
    }

    /// Applies the faults on their schedule, watches recoveries, and returns once every item
    /// has ended (or the soak has run far too long).
    async fn drive(
        &mut self,
        began: Instant,
        mut faults: Vec<(Duration, Fault)>,
    ) -> anyhow::Result<FaultCounts> {
        faults.reverse();
        let mut counts = FaultCounts::default();
        let mut restarts: Vec<(Instant, usize)> = Vec::new();
        let mut server_back: Option<Instant> = None;
        // The database's restart command while it runs (the soak goes on meanwhile).
        let mut database: Option<Child> = None;
        let mut watching: Vec<Recovery> = Vec::new();
        let limit = Duration::from_secs(600) + Duration::from_secs(self.b.runs as u64);
        let mut last_look = Instant::now() - Duration::from_secs(1);
        loop {
            let now = Instant::now();
            anyhow::ensure!(began.elapsed() < limit, "the soak did not end in {limit:?}");
            while faults.last().is_some_and(|(at, _)| began.elapsed() >= *at) {
                let Some((_, fault)) = faults.pop() else {
                    break;
                };
                match fault {
                    Fault::Agent { pick, down } => {
                        // One of the agents up now (all down: this fault is skipped).
                        let up: Vec<usize> = (0..self.agents.len())
                            .filter(|n| self.agents[*n].child.is_some())
                            .collect();
                        let Some(&agent) = up.get(pick % up.len().max(1)) else {
                            continue;
                        };
                        let id = self.agent_id(agent);
                        let held = match id {
                            Some(id) => self.held_by(id).await,
                            None => Vec::new(),
                        };
                        self.kill_agent(agent);
                        counts.agent_kills += 1;
                        counts.timeline.push(format!(
                            "{} ms: agent {} (id {}) killed for {} ms",
                            began.elapsed().as_millis(),
                            agent,
                            id.unwrap_or(0),
                            down.as_millis()
                        ));
                        if down > Duration::from_secs(self.b.agent_timeout) {
                            counts.past_timeout += 1;
                        }
                        restarts.push((Instant::now() + down, agent));
                        if id.is_some() {
                            watching.push(Recovery {
                                killed: Instant::now(),
                                killed_ms: liftoff_types::now_ms(),
                                held,
                            });
                        }
                    }
                    Fault::Server => {
                        // Restarted from this loop a second later, so that agents due back
                        // meanwhile come back on time.
                        let server = self.servers.last_mut().context("a server")?;
                        server.kill9();
                        counts.server_kills += 1;
                        server_back = Some(Instant::now() + Duration::from_secs(1));
                        counts
                            .timeline
                            .push(format!("{} ms: server killed", began.elapsed().as_millis()));
                    }
                    Fault::Database => {
                        let command = self.b.database_restart.clone().unwrap_or_default();
                        let child = Command::new("sh")
                            .args(["-c", &command])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .context("starting the database's restart command")?;
                        database = Some(child);
                        counts.database_restarts += 1;
                        counts.timeline.push(format!(
                            "{} ms: database restart begun",
                            began.elapsed().as_millis()
                        ));
                    }
                }
            }
            if let Some(child) = database.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::ensure!(status.success(), "the database's restart failed: {status}");
                    database = None;
                    counts.timeline.push(format!(
                        "{} ms: database restarted",
                        began.elapsed().as_millis()
                    ));
                }
            }
            if server_back.is_some_and(|at| at <= now) {
                server_back = None;
                let exe = self.exe.clone();
                let server = self.servers.last_mut().context("a server")?;
                server.spawn(&exe)?;
                counts.timeline.push(format!(
                    "{} ms: server restarted",
                    began.elapsed().as_millis()
                ));
            }
            let due: Vec<usize> = restarts
                .iter()
                .filter(|(at, _)| *at <= now)
                .map(|(_, n)| *n)
                .collect();
            restarts.retain(|(at, _)| *at > now);
            for n in due {
                self.spawn_agent(n)?;
                counts.timeline.push(format!(
                    "{} ms: agent {n} restarted",
                    began.elapsed().as_millis()
                ));
            }
            if now.duration_since(last_look) >= Duration::from_millis(250) {
                last_look = now;
                let mut still = Vec::new();
                for r in watching.drain(..) {
                    match self.recovered(&r).await {
                        Some(true) => counts.recoveries.push(r.killed.elapsed()),
                        _ => still.push(r),
                    }
                }
                watching = still;
                if faults.is_empty()
                    && restarts.is_empty()
                    && server_back.is_none()
                    && database.is_none()
                    && self.all_ended().await
                {
                    return Ok(counts);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// For the first items whose work was done twice: each run that ended, where and when (in
    /// soak milliseconds), to read beside the timeline.
    /// The first 20 items whose work was done twice, each run's story; and how many of all
    /// such items had their first run end unheard: on an agent killed and not back within
    /// the agent timeout, with no report of its end from the supervisor either, so the server
    /// declared it lost, and the queue (`--requeue-lost`) asked for it to run again.
    async fn explain_duplicates(
        &self,
        ledger: &Ledger,
        began_ms: i64,
    ) -> (Vec<serde_json::Value>, usize) {
        let mut out = Vec::new();
        let mut unheard = 0;
        let twice = ledger.ended_runs.iter().filter(|(_, runs)| runs.len() > 1);
        for (n, (item, runs)) in twice.enumerate() {
            let first = match runs[0].parse::<liftoff_types::RunId>() {
                Ok(run) => self.client.get_run(&run).await.ok(),
                Err(_) => None,
            };
            if first.is_some_and(|r| {
                r.state == liftoff_types::RunState::Lost
                    && r.message
                        .as_deref()
                        .is_some_and(|m| m.contains("stopped sending heartbeats"))
            }) {
                unheard += 1;
            }
            if n >= 20 {
                continue;
            }
            let mut seen = Vec::new();
            for id in runs {
                let run = match id.parse::<liftoff_types::RunId>() {
                    Ok(run) => self.client.get_run(&run).await.ok(),
                    Err(_) => None,
                };
                let Some(run) = run else {
                    seen.push(json!({"run": id}));
                    continue;
                };
                let at = |ms: Option<i64>| ms.map(|ms| ms - began_ms);
                seen.push(json!({
                    "run": id, "agent": run.agent_id.0, "state": run.state.to_string(),
                    "started_ms": at(run.started_at_ms), "ended_ms": at(run.ended_at_ms),
                    "message": run.message,
                }));
            }
            out.push(json!({"item": item, "runs": seen}));
        }
        (out, unheard)
    }

    /// The items an agent holds now.
    async fn held_by(&self, agent: i64) -> Vec<ItemId> {
        let filter = ItemFilter {
            state: Some(ItemState::Claimed),
            limit: Some(1000),
            ..ItemFilter::default()
        };
        let items = self.client.list_items(&filter).await.unwrap_or_default();
        items
            .into_iter()
            .filter(|i| i.agent_id.map(|a| a.0) == Some(agent))
            .map(|i| i.id)
            .collect()
    }

    /// Whether every item the killed agent held has ended or is held by a live agent that
    /// has beaten since the kill (`None`: the server did not answer).
    async fn recovered(&self, r: &Recovery) -> Option<bool> {
        let agents = self.client.list_agents().await.ok()?;
        let live: HashMap<i64, bool> = agents
            .iter()
            .map(|a| {
                let up = a.status != AgentStatus::Lost && a.heartbeat_at_ms > r.killed_ms;
                (a.id.0, up)
            })
            .collect();
        for id in &r.held {
            let item = self.client.get_item(*id).await.ok()?;
            let moving = item.state.is_terminal()
                || (item.state == ItemState::Claimed
                    && item
                        .agent_id
                        .is_some_and(|a| live.get(&a.0).copied().unwrap_or(false)));
            if !moving {
                return Some(false);
            }
        }
        Some(true)
    }

    async fn all_ended(&self) -> bool {
        for queue in ["plain", "again"] {
            let Ok(q) = self.client.get_queue(queue).await else {
                return false;
            };
            let Some(depth) = q.depth else { return false };
            if depth.pending + depth.leased + depth.claimed > 0 {
                return false;
            }
        }
        true
    }

    async fn all_items(&self) -> anyhow::Result<HashMap<i64, liftoff_types::Item>> {
        let mut out = HashMap::new();
        let mut after = 0;
        loop {
            let filter = ItemFilter {
                after: Some(after),
                limit: Some(1000),
                ..ItemFilter::default()
            };
            let page = self.client.list_items(&filter).await?;
            let Some(last) = page.last() else { break };
            after = last.id.0;
            for item in page {
                out.insert(item.id.0, item);
            }
        }
        Ok(out)
    }
}

enum Fault {
    /// Kills the `pick`th agent of those up (modulo their number) for `down`.
    Agent {
        pick: usize,
        down: Duration,
    },
    Server,
    /// Runs `--database-restart`.
    Database,
}

#[derive(Default)]
struct FaultCounts {
    agent_kills: u32,
    past_timeout: u32,
    server_kills: u32,
    database_restarts: u32,
    recoveries: Vec<Duration>,
    /// What happened when, in soak milliseconds: the story behind a bad counter.
    timeline: Vec<String>,
}

struct Recovery {
    killed: Instant,
    killed_ms: i64,
    held: Vec<ItemId>,
}

/// What the runs wrote, by item.
#[derive(Default)]
struct Ledger {
    starts: BTreeMap<i64, u32>,
    ends: BTreeMap<i64, u32>,
    overlaps: BTreeMap<i64, u32>,
    /// The runs that wrote `end`, by item.
    ended_runs: BTreeMap<i64, Vec<String>>,
}

impl Ledger {
    fn read(path: &Path) -> anyhow::Result<Ledger> {
        let mut ledger = Ledger::default();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let mut words = line.split(' ');
            let (Some(what), Some(item)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(item) = item.parse::<i64>() else {
                continue;
            };
            if what == "end" {
                if let Some(run) = words.next() {
                    let runs = ledger.ended_runs.entry(item).or_default();
                    runs.push(run.to_string());
                }
            }
            let counter = match what {
                "start" => &mut ledger.starts,
                "end" => &mut ledger.ends,
                "overlap" => &mut ledger.overlaps,
                _ => continue,
            };
            *counter.entry(item).or_default() += 1;
        }
        Ok(ledger)
    }

    fn counters(
        &self,
        acknowledged: &[ItemId],
        items: &HashMap<i64, liftoff_types::Item>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let (mut ok, mut lost, mut cut, mut unexpected, mut duplicated) = (0, 0, 0, 0, 0);
        let mut lost_ids: Vec<serde_json::Value> = Vec::new();
        for id in acknowledged {
            let ends = self.ends.get(&id.0).copied().unwrap_or(0);
            let starts = self.starts.get(&id.0).copied().unwrap_or(0);
            let item = items.get(&id.0);
            let finished = item.is_some_and(|i| i.state == ItemState::Finished);
            if ends > 1 {
                duplicated += 1;
            }
            if finished && ends >= 1 {
                ok += 1;
            } else if finished {
                unexpected += 1;
            } else if starts > ends
                && ends == 0
                && item.is_some_and(|i| {
                    i.queue == "plain"
                        && i.failure.as_ref().is_some_and(|f| f.phase == Phase::Agent)
                })
            {
                cut += 1;
            } else {
                lost += 1;
                let why = item.map_or("not found".to_string(), |i| {
                    let failure = i.failure.as_ref().map(|f| f.message.as_str());
                    format!(
                        "{} {}: {} ({} starts)",
                        i.queue,
                        i.state,
                        failure.unwrap_or("-"),
                        starts
                    )
                });
                lost_ids.push(json!({"item": id.0, "why": why}));
            }
        }
        let known: std::collections::HashSet<i64> = acknowledged.iter().map(|i| i.0).collect();
        unexpected += self.starts.keys().filter(|i| !known.contains(i)).count();
        let mut out = serde_json::Map::new();
        out.insert("acknowledged".into(), json!(acknowledged.len()));
        out.insert("ok".into(), json!(ok));
        out.insert("lost".into(), json!(lost));
        lost_ids.truncate(20);
        out.insert("lost_items".into(), json!(lost_ids));
        out.insert("unexpected".into(), json!(unexpected));
        out.insert("duplicated".into(), json!(duplicated));
        out.insert(
            "overlapping".into(),
            json!(self.overlaps.values().filter(|n| **n > 0).count()),
        );
        out.insert("cut_with_their_agent".into(), json!(cut));
        out.insert(
            "executions".into(),
            json!(self.starts.values().sum::<u32>()),
        );
        out
    }
}
