//! `liftoff bench ray`: N trivial runs through liftoff onto a real Ray cluster against N
//! bare submissions to the same Jobs REST API, in the same run (alternating, bare first, so
//! both see the same cluster), with the Ray API calls each side made.
//!
//! The bare side is what a user would script: `POST /api/jobs/` per job, one after the
//! other, then `GET /api/jobs/` every 100 ms until every job has ended. The liftoff side is
//! an in-process server (SQLite) and agent with the Ray runner: enqueue N items, time until
//! the server has every item `finished`.

use clap::Args;
use liftoff_agent::{Agent, AgentConfig, Control};
use liftoff_client::Client;
use liftoff_runner::ray::api::{Api, Submitted};
use liftoff_runner::ray::{RayConfig, RayRunner};
use liftoff_server::ServerConfig;
use liftoff_store::{NewItem, SqliteStore, Store};
use liftoff_types::{now_ms, LaunchSpec, NewQueue, Priority, ResourceType, Scope};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct RayBench {
    /// The cluster's dashboard (its Jobs API).
    #[arg(
        long,
        env = "LIFTOFF_TEST_RAY",
        default_value = "http://127.0.0.1:8265"
    )]
    pub address: String,
    /// Jobs per measurement.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Measurements of each side (alternating, bare first).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

pub async fn run(b: RayBench) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("liftoff-bench-ray")
        .tempdir()?;
    let mut bare = Vec::new();
    let mut ours = Vec::new();
    for round in 0..b.rounds {
        bare.push(bare_jobs(&b.address, b.runs).await?);
        ours.push(
            through_liftoff(&b.address, &tmp.path().join(format!("rig{round}")), b.runs).await?,
        );
    }
    let best = |v: &[(f64, u64)]| v.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let (bare_s, ours_s) = (best(&bare), best(&ours));
    let ratio = ours_s / bare_s;
    let per_run = |v: &[(f64, u64)]| {
        v.iter()
            .map(|x| round3(x.1 as f64 / b.runs as f64))
            .collect::<Vec<_>>()
    };
    let report = json!({
        "runs": b.runs,
        "bare_rest_api": {"seconds": bare.iter().map(|x| round3(x.0)).collect::<Vec<_>>(),
                          "ray_calls_per_run": per_run(&bare)},
        "liftoff": {"seconds": ours.iter().map(|x| round3(x.0)).collect::<Vec<_>>(),
                    "ray_calls_per_run": per_run(&ours)},
        "ratio_best_liftoff_to_best_bare": round3(ratio),
        "target_ratio_max": 1.1,
        "meets_target": ratio <= 1.1,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// N submissions one after the other, then the job list until all have ended.
async fn bare_jobs(address: &str, n: usize) -> anyhow::Result<(f64, u64)> {
    let http = liftoff_runner::ray::api::http_client();
    let calls = Arc::new(AtomicU64::new(0));
    let api = Api {
        http: &http,
        base: address,
        headers: &[],
        calls: &calls,
    };
    let tag = format!("bare-{}-{}", std::process::id(), now_ms());
    let start = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let body = json!({"entrypoint": "true", "submission_id": id});
        anyhow::ensure!(
            api.submit(&body)
                .await
                .map_err(|e| anyhow::anyhow!("{e} (is Ray running? scripts/services.sh start)"))?
                == Submitted::New,
            "Ray already had {id}"
        );
        ids.push(id);
    }
    loop {
        let jobs = api.list().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let ended = jobs
            .iter()
            .filter(|j| {
                j.submission_id
                    .as_ref()
                    .is_some_and(|s| s.starts_with(&tag))
            })
            .filter(|j| j.ended())
            .inspect(|j| assert_eq!(j.status, "SUCCEEDED", "a bare job failed: {j:?}"))
            .count();
        if ended == n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "bare jobs never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((start.elapsed().as_secs_f64(), calls.load(Ordering::Relaxed)))
}

/// N items through an in-process server and agent with the Ray runner.
async fn through_liftoff(address: &str, dir: &Path, n: usize) -> anyhow::Result<(f64, u64)> {
    std::fs::create_dir_all(dir)?;
    let store = Arc::new(SqliteStore::open(&dir.join("liftoff.db"))?);
    let mut queue = NewQueue::named("ray");
    queue.resource = ResourceType::Ray;
    store.create_queue(queue, now_ms()).await?;
    let (token, hash) = liftoff_server::auth::new_token();
    store
        .create_token("bench agent", Scope::Agent, &hash, now_ms())
        .await?;
    let server =
        liftoff_server::start(ServerConfig::local("127.0.0.1:0".parse()?), store.clone()).await?;
    let config = AgentConfig {
        queues: vec!["ray".into()],
        max_jobs: -1,
        state_dir: dir.join("agent"),
        ..AgentConfig::default()
    };
    std::fs::create_dir_all(&config.state_dir)?;
    let runner = RayRunner::new(RayConfig::new(
        format!("liftoff:bench-{}-{}", std::process::id(), now_ms()),
        &config.state_dir,
    ));
    let calls = runner.call_counter();
    let client = Client::new(&server.url(), Some(token))?;
    let runners = liftoff_runner::Runners::of(vec![Arc::new(runner)]);
    let agent = Agent::start(client, config, runners, std::env::vars()).await?;
    let (stop, rx) = tokio::sync::mpsc::channel(2);
    let task = tokio::spawn(agent.run(rx));
    let spec = LaunchSpec::command(vec!["true".into()]);
    let start = Instant::now();
    for _ in 0..n {
        let item = NewItem {
            queue: "ray".into(),
            spec: spec.clone(),
            priority: Priority::Medium,
            resource_args: json!({"address": address}),
            kind: liftoff_types::ItemKind::Run,
        };
        store.enqueue(item, now_ms()).await?;
        // Written to the store directly, so wake the agent's long-poll as the API would.
        server
            .state
            .wakers
            .wake(&liftoff_server::wake::queue_key("ray"));
    }
    loop {
        let d = store
            .get_queue("ray", true)
            .await?
            .depth
            .unwrap_or_default();
        if d.finished + d.failed + d.stopped + d.cancelled == n as u64 {
            if d.finished != n as u64 {
                let filter = liftoff_types::api::ItemFilter {
                    state: Some(liftoff_types::ItemState::Failed),
                    ..Default::default()
                };
                let why: Vec<String> = store
                    .list_items(&filter)
                    .await?
                    .into_iter()
                    .filter_map(|i| i.failure.map(|f| f.message))
                    .collect();
                anyhow::bail!("not every run finished: {d:?}: {why:?}");
            }
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "runs never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = stop.send(Control::StopNow).await;
    let _ = task.await;
    server.stop().await;
    Ok((seconds, calls.load(Ordering::Relaxed)))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
