//! `liftoff bench queue`: the queue's speed on this machine, as JSON.
//!
//! Measured, each on a fresh SQLite file: enqueues/s (1 and 8 clients); lease → ack →
//! finish cycles/s with 1 and 8 clients, directly on the store and over HTTP against a real
//! server on a loopback port; and lease latency at queue depths (default 1,000 and
//! 1,000,000), whose ratio shows that leasing does not slow down as a queue grows.
//!
//! With `--postgres URL` (a PostgreSQL server the bench may create databases on), the same
//! enqueue and cycle figures are measured on the PostgreSQL store too, each on a fresh
//! database that is dropped afterwards.

use anyhow::Context;
use clap::Args;
use liftoff_client::Client;
use liftoff_server::ServerConfig;
use liftoff_store::postgres::admin;
use liftoff_store::{Ack, LeaseParams, NewItem, PostgresStore, SqliteStore, Store};
use liftoff_types::api::{AckRequest, LeaseRequest};
use liftoff_types::{
    now_ms, AgentId, LaunchSpec, NewAgent, NewQueue, Priority, RunState, RunUpdate, Scope,
};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct QueueBench {
    /// Enqueues per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub enqueues: usize,
    /// Cycles per store measurement.
    #[arg(long, default_value_t = 10_000)]
    pub cycles: usize,
    /// Cycles per HTTP measurement.
    #[arg(long, default_value_t = 5_000)]
    pub http_cycles: usize,
    /// Queue depths at which to measure lease latency.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
    pub depths: Vec<usize>,
    /// Leases timed at each depth.
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    /// Where to put the temporary databases (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also measure the PostgreSQL store, on fresh databases made on this server
    /// (`postgres://user@host:port/db`; the bench creates and drops its own databases).
    #[arg(long, env = "LIFTOFF_BENCH_POSTGRES", hide_env_values = true)]
    pub postgres: Option<String>,
}

type DynStore = Arc<dyn Store>;

pub async fn run(b: QueueBench) -> anyhow::Result<()> {
    let base = b.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("liftoff-bench")
        .tempdir_in(&base)?;
    let mut n = 0;
    let mut fresh = || -> anyhow::Result<Arc<SqliteStore>> {
        n += 1;
        Ok(Arc::new(SqliteStore::open(
            &tmp.path().join(format!("bench{n}.db")),
        )?))
    };
    let enq1 = enqueue_rate(fresh()?, b.enqueues, 1).await?;
    let enq8 = enqueue_rate(fresh()?, b.enqueues, 8).await?;
    let store1 = store_cycles(fresh()?, b.cycles, 1).await?;
    let store8 = store_cycles(fresh()?, b.cycles, 8).await?;
    let http1 = http_cycles(fresh()?, b.http_cycles, 1).await?;
    let http8 = http_cycles(fresh()?, b.http_cycles, 8).await?;
    let postgres = match &b.postgres {
        Some(url) => Some(postgres_figures(url, &b).await?),
        None => None,
    };
    let mut latency = serde_json::Map::new();
    let mut p50s = Vec::new();
    for &depth in &b.depths {
        let (p50, p99) = lease_latency(fresh()?, depth, b.samples).await?;
        p50s.push(p50);
        latency.insert(
            format!("depth_{depth}"),
            json!({"p50_us": p50, "p99_us": p99}),
        );
    }
    let ratio = match (p50s.first(), p50s.last()) {
        (Some(first), Some(last)) if *first > 0.0 => last / first,
        _ => 0.0,
    };
    let report = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "store": {
            "enqueues_per_s": {"clients_1": enq1, "clients_8": enq8},
            "cycles_per_s": {"clients_1": store1, "clients_8": store8},
        },
        "http": {"cycles_per_s": {"clients_1": http1, "clients_8": http8}},
        "lease_latency": latency,
        "lease_latency_ratio_deepest_to_shallowest_p50": ratio,
        "targets": {
            "enqueues_per_s": 20000, "store_cycles_per_s": 10000,
            "http_cycles_per_s_8_clients": 3000, "lease_latency_ratio_max": 2.0,
        },
        "meets_targets": enq8.max(enq1) >= 20000.0 && store8.max(store1) >= 10000.0
            && http8 >= 3000.0 && ratio <= 2.0,
        "postgres": postgres,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Enqueues and cycles on the PostgreSQL store, each on a database of its own.
async fn postgres_figures(admin_url: &str, b: &QueueBench) -> anyhow::Result<serde_json::Value> {
    let mut n = 0;
    let mut measure = async |what: Measure| -> anyhow::Result<f64> {
        n += 1;
        let name = format!("liftoff_bench_{}_{n}", std::process::id());
        let url = admin::create_database(admin_url, &name).await?;
        let result = async {
            let store: DynStore = Arc::new(PostgresStore::connect(&url).await?);
            match what {
                Measure::Enqueues(clients) => enqueue_rate(store, b.enqueues, clients).await,
                Measure::Cycles(clients) => store_cycles(store, b.cycles, clients).await,
                Measure::Http(clients) => http_cycles(store, b.http_cycles, clients).await,
            }
        }
        .await;
        admin::drop_database(admin_url, &name).await?;
        result
    };
    let enq1 = measure(Measure::Enqueues(1)).await?;
    let enq8 = measure(Measure::Enqueues(8)).await?;
    let store1 = measure(Measure::Cycles(1)).await?;
    let store8 = measure(Measure::Cycles(8)).await?;
    let http1 = measure(Measure::Http(1)).await?;
    let http8 = measure(Measure::Http(8)).await?;
    // The target is for a durable server; a cluster with fsync off measures something else.
    let durable = admin::durable(admin_url).await?;
    Ok(json!({
        "durable": durable,
        "store": {
            "enqueues_per_s": {"clients_1": enq1, "clients_8": enq8},
            "cycles_per_s": {"clients_1": store1, "clients_8": store8},
        },
        "http": {"cycles_per_s": {"clients_1": http1, "clients_8": http8}},
        "targets": {"store_cycles_per_s_8_clients": 3000, "durable": true},
        "meets_targets": durable && store8 >= 3000.0,
    }))
}

enum Measure {
    Enqueues(usize),
    Cycles(usize),
    Http(usize),
}

fn spec() -> LaunchSpec {
    LaunchSpec::command(vec!["true".into()])
}

async fn setup(store: &DynStore) -> anyhow::Result<()> {
    store
        .create_queue(NewQueue::named("bench"), now_ms())
        .await?;
    Ok(())
}

/// Enqueues `n` items from `clients` concurrent tasks; returns items per second.
async fn enqueue_rate(store: DynStore, n: usize, clients: usize) -> anyhow::Result<f64> {
    setup(&store).await?;
    let start = Instant::now();
    fill(&store, n, clients).await?;
    Ok(rate(n, start.elapsed()))
}

async fn fill(store: &DynStore, n: usize, clients: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let item = NewItem {
                    queue: "bench".into(),
                    spec: spec(),
                    priority: Priority::Medium,
                    resource_args: json!({}),
                    kind: liftoff_types::ItemKind::Run,
                };
                store.enqueue(item, now_ms()).await?;
            }
            anyhow::Ok(())
        });
    }
    for r in tasks.join_all().await {
        r?;
    }
    Ok(())
}

async fn register(store: &DynStore) -> anyhow::Result<AgentId> {
    Ok(store
        .register_agent(NewAgent::default(), now_ms())
        .await?
        .id)
}

/// `clients` tasks each lease one item, ack it and report it finished, until `n` are done.
async fn store_cycles(store: DynStore, n: usize, clients: usize) -> anyhow::Result<f64> {
    setup(&store).await?;
    fill(&store, n, 16).await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let store = store.clone();
        tasks.spawn(async move {
            let agent = register(&store).await?;
            loop {
                let params = LeaseParams {
                    agent,
                    queues: vec!["bench".into()],
                    max: 1,
                    lease_ms: 60_000,
                    runs: true,
                    schedulers: true,
                };
                let Some(lease) = store.lease(params, now_ms()).await?.pop() else {
                    return anyhow::Ok(());
                };
                let run_id = format!("r{}", lease.item.id)
                    .parse()
                    .map_err(anyhow::Error::msg)?;
                let ack = Ack {
                    fence: lease.fence,
                    run_id,
                    handle: json!({"pid": 1}),
                    state: RunState::Running,
                };
                let run = store.ack(lease.item.id, ack, now_ms()).await?;
                store
                    .update_run(&run.id, finished(lease.fence), now_ms())
                    .await?;
            }
        });
    }
    for r in tasks.join_all().await {
        r?;
    }
    Ok(rate(n, start.elapsed()))
}

fn finished(fence: i64) -> RunUpdate {
    RunUpdate {
        started_at_ms: None,
        fence,
        state: RunState::Finished,
        exit_code: Some(0),
        message: None,
        handle: None,
        not_started: false,
    }
}

/// The same cycle over HTTP, against a real server on a loopback port with auth on.
async fn http_cycles(store: DynStore, n: usize, clients: usize) -> anyhow::Result<f64> {
    setup(&store).await?;
    fill(&store, n, 16).await?;
    let (token, hash) = liftoff_server::auth::new_token();
    store
        .create_token("bench", Scope::Agent, &hash, now_ms())
        .await?;
    let config = ServerConfig::local("127.0.0.1:0".parse()?);
    let server = liftoff_server::start(config, store).await?;
    let client = Client::new(&server.url(), Some(token))?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = client.clone();
        tasks.spawn(async move {
            let agent = client
                .register_agent(&NewAgent::on("test", &["q"]))
                .await?
                .id;
            let req = LeaseRequest {
                queues: vec!["bench".into()],
                max: 1,
                wait_ms: 0,
                lease_ms: 60_000,
                runs: true,
                schedulers: true,
            };
            loop {
                let Some(lease) = client.lease(agent, &req).await?.leases.pop() else {
                    return anyhow::Ok(());
                };
                let ack = AckRequest {
                    fence: lease.fence,
                    run_id: format!("r{}", lease.item.id)
                        .parse()
                        .map_err(anyhow::Error::msg)?,
                    handle: json!({"pid": 1}),
                    state: Some(RunState::Running),
                };
                let run = client.ack(lease.item.id, &ack).await?.run;
                client.update_run(&run.id, &finished(lease.fence)).await?;
            }
        });
    }
    for r in tasks.join_all().await {
        r.context("an HTTP bench client failed")?;
    }
    let elapsed = start.elapsed();
    server.stop().await;
    Ok(rate(n, elapsed))
}

/// Times `samples` single-item leases on a queue `depth` deep (each released again, so the
/// depth holds); returns p50 and p99 in microseconds.
async fn lease_latency(
    store: Arc<SqliteStore>,
    depth: usize,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
    let dyn_store: DynStore = store.clone();
    setup(&dyn_store).await?;
    fill(&dyn_store, depth, 64).await?;
    // Measure the steady state: right after a bulk load the WAL holds the whole load until
    // the checkpointer has copied it back, and every read pays for that.
    store.checkpoint().await?;
    let agent = register(&dyn_store).await?;
    let mut times = Vec::with_capacity(samples);
    for k in 0..samples + 50 {
        let params = LeaseParams {
            agent,
            queues: vec!["bench".into()],
            max: 1,
            lease_ms: 60_000,
            runs: true,
            schedulers: true,
        };
        let start = Instant::now();
        let lease = store
            .lease(params, now_ms())
            .await?
            .pop()
            .context("queue ran dry")?;
        let took = start.elapsed();
        if k >= 50 {
            times.push(took.as_secs_f64() * 1e6);
        }
        store.release(lease.item.id, lease.fence, now_ms()).await?;
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    Ok((round(pick(0.5)), round(pick(0.99))))
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    round(n as f64 / elapsed.as_secs_f64())
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
