//! `liftoff bench listing`: the daily commands on a big history. A SQLite data directory is
//! filled with N ended runs (default 100,000: 90% finished, 10% failed, over two queues),
//! then a real `liftoff server` serves it and each command is timed as a user runs it, one
//! `liftoff` process per call: `items`, `items --state failed`, `items --queue other`,
//! `runs`, `show ID` (a random old item). Printed: p50 and p95 per command, in ms.

use anyhow::Context;
use liftoff_store::{Ack, LeaseParams, NewItem, SqliteStore, Store};
use liftoff_types::{now_ms, LaunchSpec, NewAgent, NewQueue, Priority, RunState, RunUpdate};
use rand::Rng;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A command's arguments, made fresh for each call.
type Args = Box<dyn Fn() -> Vec<String>>;

#[derive(clap::Args, Debug)]
pub struct ListingBench {
    /// Ended runs in the database.
    #[arg(long, default_value_t = 100_000)]
    pub runs: usize,
    /// Calls timed per command.
    #[arg(long, default_value_t = 40)]
    pub samples: usize,
}

pub async fn run(b: ListingBench) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("liftoff-bench").tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let fill_started = Instant::now();
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.join("liftoff.db"))?);
        fill(&store, b.runs).await?;
    }
    let fill_s = fill_started.elapsed().as_secs_f64();
    let exe = std::env::current_exe()?;
    let mut server = super::spawn_server(&exe, &data, &[])?;
    let figures = measure(&exe, &data, &b).await;
    let _ = server.kill();
    let _ = server.wait();
    let mut figures = figures?;
    figures.insert("ended_runs".into(), json!(b.runs));
    figures.insert("fill_s".into(), json!((fill_s * 10.0).round() / 10.0));
    figures.insert("target_p95_ms".into(), json!(50));
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}

async fn measure(
    exe: &Path,
    data: &Path,
    b: &ListingBench,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    super::server_up(data).await?;
    let call = |args: &[String]| -> anyhow::Result<f64> {
        let started = Instant::now();
        let out = super::cli(exe, data, args)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            out.status.success() && !out.stdout.is_empty(),
            "liftoff {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(ms)
    };
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    let commands: Vec<(&str, Args)> = vec![
        ("items", Box::new(move || words("items"))),
        (
            "items_failed",
            Box::new(move || words("items --state failed")),
        ),
        (
            "items_queue",
            Box::new(move || words("items --queue other")),
        ),
        ("runs", Box::new(move || words("runs"))),
        ("show", {
            let n = b.runs;
            Box::new(move || {
                let id = rand::rng().random_range(1..=n as i64);
                vec!["show".to_string(), id.to_string()]
            })
        }),
    ];
    let mut figures = serde_json::Map::new();
    // One untimed call each: the first pays for the page cache.
    for (_, args) in &commands {
        call(&args())?;
    }
    for (name, args) in &commands {
        let mut ms = Vec::with_capacity(b.samples);
        for _ in 0..b.samples {
            ms.push(call(&args())?);
        }
        ms.sort_by(f64::total_cmp);
        figures.insert(
            name.to_string(),
            json!({"p50_ms": super::percentile(&ms, 0.5), "p95_ms": super::percentile(&ms, 0.95)}),
        );
    }
    Ok(figures)
}

/// `n` items run to their end through the store, 8 at a time (as agents would).
pub(super) async fn fill(store: &Arc<dyn Store>, n: usize) -> anyhow::Result<()> {
    for q in ["bench", "other"] {
        store.create_queue(NewQueue::named(q), now_ms()).await?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            let agent = store
                .register_agent(NewAgent::default(), now_ms())
                .await?
                .id;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let queue = if i % 10 == 0 { "other" } else { "bench" };
                let mut spec = LaunchSpec::command(vec![
                    "python3".into(),
                    "train.py".into(),
                    format!("--seed={i}"),
                ]);
                spec.overrides.run_config.insert("lr".into(), json!(0.01));
                let item = NewItem {
                    queue: queue.into(),
                    spec,
                    priority: Priority::Medium,
                    resource_args: json!({}),
                    kind: liftoff_types::ItemKind::Run,
                };
                let id = store.enqueue(item, now_ms()).await?.id;
                let params = LeaseParams {
                    agent,
                    queues: vec![queue.into()],
                    max: 1,
                    lease_ms: 60_000,
                    runs: true,
                    schedulers: true,
                };
                let lease = store
                    .lease(params, now_ms())
                    .await?
                    .pop()
                    .context("nothing to lease")?;
                let run_id = format!("b{:07}", lease.item.id.0)
                    .parse()
                    .map_err(anyhow::Error::msg)?;
                let ack = Ack {
                    fence: lease.fence,
                    run_id,
                    handle: json!({"pid": 1}),
                    state: RunState::Running,
                };
                let run = store.ack(lease.item.id, ack, now_ms()).await?;
                let failed = id.0 % 10 == 3;
                let update = RunUpdate {
                    started_at_ms: None,
                    fence: lease.fence,
                    state: if failed {
                        RunState::Failed
                    } else {
                        RunState::Finished
                    },
                    exit_code: Some(if failed { 1 } else { 0 }),
                    message: failed.then(|| "the run exited with code 1".into()),
                    handle: None,
                    not_started: false,
                };
                store.update_run(&run.id, update, now_ms()).await?;
            }
        });
    }
    for r in tasks.join_all().await {
        r?;
    }
    Ok(())
}
