//! `liftoff bench fleet`: one real `liftoff server` (SQLite, or PostgreSQL with
//! `--postgres`) under a fleet of agents, as JSON. Each agent does what `liftoff agent` does
//! on the wire: registers, holds a heartbeat long-poll and a lease long-poll open, and acks and
//! finishes each item it is given. A producer enqueues items at a steady rate while every agent
//! is waiting. Reported: the dispatch latency of each item (its enqueue sent → its lease
//! answered: the time from `liftoff launch` to an idle fleet having the run, p50/p99), the time a plain lease call
//! takes while the fleet holds its polls, and the server's resident memory (with the fleet
//! idle, and its peak `VmHWM`) from `/proc`.

use anyhow::Context;
use clap::Args;
use liftoff_client::Client;
use liftoff_types::api::{AckRequest, CreateTokenRequest, LeaseRequest};
use liftoff_types::{
    AgentStatus, Heartbeat, LaunchSpec, NewAgent, NewQueue, RunState, RunUpdate, Scope,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct FleetBench {
    /// Agents in the fleet.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Items enqueued (one at a time, at `--rate`).
    #[arg(long, default_value_t = 3000)]
    pub items: usize,
    /// Enqueues per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// How long an agent holds its lease and heartbeat long-polls, in seconds.
    #[arg(long, default_value_t = 10)]
    pub poll_s: u64,
    /// A PostgreSQL server to make a fresh database on (dropped afterwards).
    #[arg(long, env = "LIFTOFF_BENCH_POSTGRES", hide_env_values = true)]
    pub postgres: Option<String>,
}

pub async fn run(b: FleetBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        b.agents >= 1 && b.items >= 1 && b.rate >= 1,
        "--agents, --items and --rate must be at least 1"
    );
    let exe = std::env::current_exe()?;
    let tmp = tempfile::Builder::new().prefix("liftoff-fleet").tempdir()?;
    let data = tmp.path().join("data");
    let database = match &b.postgres {
        Some(admin) => {
            let name = format!("liftoff_fleet_{}", std::process::id());
            let url = liftoff_store::postgres::admin::create_database(admin, &name).await?;
            Some((url, name))
        }
        None => None,
    };
    let mut extra = vec!["--agent-timeout".to_string(), "60".to_string()];
    if let Some((url, _)) = &database {
        extra.extend(["--database".to_string(), url.clone()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server = super::spawn_server(&exe, &data, &extra)?;
    let result = drive(&b, &data, server.id()).await;
    let _ = server.kill();
    let _ = server.wait();
    if let (Some(pg), Some((_, name))) = (&b.postgres, &database) {
        let _ = liftoff_store::postgres::admin::drop_database(pg, name).await;
    }
    println!("{}", serde_json::to_string_pretty(&result?)?);
    Ok(())
}

async fn drive(
    b: &FleetBench,
    data: &std::path::Path,
    pid: u32,
) -> anyhow::Result<serde_json::Value> {
    super::server_up(data).await?;
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("client.json"))?)?;
    let url = file["url"]
        .as_str()
        .context("client.json has no url")?
        .to_string();
    let admin = Client::new(&url, file["token"].as_str().map(str::to_string))?;
    admin.create_queue(&NewQueue::named("fleet")).await?;
    let token = admin
        .create_token(&CreateTokenRequest {
            name: "fleet".into(),
            scope: Scope::Agent,
        })
        .await?
        .token;
    let fleet = Client::new(&url, Some(token))?;

    // Every agent registered and polling before the first enqueue.
    let mut ids = Vec::with_capacity(b.agents);
    for n in 0..b.agents {
        let agent = NewAgent::on(&format!("fleet-{n}"), &["fleet"]);
        ids.push(fleet.register_agent(&agent).await?.id);
    }
    // When each item's enqueue was sent, and when its lease was answered.
    let mut sent: HashMap<i64, Instant> = HashMap::new();
    let leased: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let wait_ms = b.poll_s * 1000;
        tasks.spawn(agent_loop(fleet.clone(), id, wait_ms, leased.clone()));
    }
    // Let every agent reach its long-polls (each has sent one lease and one beat).
    let settle = Duration::from_secs(2) + Duration::from_micros(b.agents as u64 * 500);
    tokio::time::sleep(settle).await;
    let idle_rss_kb = super::status_kb(pid, "VmRSS")?;

    // A plain lease call's time while the fleet holds its polls (another queue: no item).
    admin.create_queue(&NewQueue::named("probe")).await?;
    let probe = fleet
        .register_agent(&NewAgent::on("probe", &["probe"]))
        .await?
        .id;
    let probe_req = LeaseRequest {
        queues: vec!["probe".into()],
        max: 1,
        wait_ms: 0,
        lease_ms: 60_000,
        runs: true,
        schedulers: false,
    };

    let spec = LaunchSpec::command(vec!["true".into()]);
    let every = Duration::from_secs_f64(1.0 / b.rate as f64);
    let began = Instant::now();
    let mut calls = Vec::new();
    for k in 0..b.items {
        let at = began + every * k as u32;
        tokio::time::sleep_until(at.into()).await;
        let t = Instant::now();
        let item = admin.enqueue("fleet", &spec).await?;
        sent.insert(item.id.0, t);
        if k % 10 == 0 {
            let t = Instant::now();
            fleet.lease(probe, &probe_req).await?;
            calls.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while leased.lock().unwrap().len() < b.items {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} items were dispatched",
            leased.lock().unwrap().len(),
            b.items
        );
        // An agent's loop ends only by failing: say why, not that items went missing.
        if let Some(ended) = tasks.try_join_next() {
            ended?.context("a fleet agent failed")?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let soak_s = began.elapsed().as_secs_f64();
    let peak_rss_kb = super::status_kb(pid, "VmHWM")?;
    tasks.abort_all();
    let leased = leased.lock().unwrap();
    let mut times: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| Some(leased.get(id)?.duration_since(*at).as_secs_f64() * 1000.0))
        .collect();
    anyhow::ensure!(
        times.len() == b.items,
        "items leased that were not enqueued here"
    );
    times.sort_by(f64::total_cmp);
    calls.sort_by(f64::total_cmp);
    let p = super::percentile;
    Ok(json!({
        "agents": b.agents,
        "items": b.items,
        "rate_per_s": b.rate,
        "store": if b.postgres.is_some() { "postgres" } else { "sqlite" },
        "seconds": (soak_s * 10.0).round() / 10.0,
        "dispatch_ms": {"p50": p(&times, 0.5), "p99": p(&times, 0.99), "max": p(&times, 1.0)},
        "lease_call_ms": {"p50": p(&calls, 0.5), "p99": p(&calls, 0.99), "samples": calls.len()},
        "server_rss_mb": {
            "idle_fleet": (idle_rss_kb as f64 / 1024.0).round(),
            "peak": (peak_rss_kb as f64 / 1024.0).round(),
        },
        "targets": {"dispatch_p99_ms": 50, "server_rss_mb": 200},
    }))
}

/// One agent: a heartbeat long-poll beside a lease long-poll; each item acked and finished.
async fn agent_loop(
    client: Client,
    id: liftoff_types::AgentId,
    wait_ms: u64,
    leased: Arc<Mutex<HashMap<i64, Instant>>>,
) -> anyhow::Result<()> {
    let beats = {
        let client = client.clone();
        async move {
            loop {
                let beat = Heartbeat {
                    status: AgentStatus::Polling,
                    in_flight: Vec::new(),
                    running_jobs: 0,
                    running_schedulers: 0,
                    wait_ms,
                };
                if client.heartbeat(id, &beat).await.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    let req = LeaseRequest {
        queues: vec!["fleet".into()],
        max: 1,
        wait_ms,
        lease_ms: 60_000,
        runs: true,
        schedulers: false,
    };
    let work = async {
        loop {
            let leases = client.lease(id, &req).await?.leases;
            for lease in leases {
                let twice = leased
                    .lock()
                    .unwrap()
                    .insert(lease.item.id.0, Instant::now());
                anyhow::ensure!(twice.is_none(), "item {} leased twice", lease.item.id);
                let ack = AckRequest {
                    fence: lease.fence,
                    run_id: format!("f{}", lease.item.id)
                        .parse()
                        .map_err(anyhow::Error::msg)?,
                    handle: json!({"pid": 1}),
                    state: Some(RunState::Running),
                };
                let run = client.ack(lease.item.id, &ack).await?.run;
                let end = RunUpdate {
                    started_at_ms: None,
                    fence: lease.fence,
                    state: RunState::Finished,
                    exit_code: Some(0),
                    message: None,
                    handle: None,
                    not_started: false,
                };
                client.update_run(&run.id, &end).await?;
            }
        }
        // The loop's type: it ends only through a `?`.
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    // Both loops run until the bench aborts the task; only `work` ends, with its error.
    tokio::select! {
        r = work => r,
        () = beats => Ok(()),
    }
}
