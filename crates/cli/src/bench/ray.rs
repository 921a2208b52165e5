//! `liftoff bench ray`: N trivial runs through liftoff onto a real Ray cluster against N
//! bare submissions to the same Jobs REST API, in the same run (alternating, bare first, so
//! both see the same cluster), with the Ray API calls each side made.
//!
//! The bare side is what a user would script: `POST /api/jobs/` per job, one after the
//! other, then `GET /api/jobs/` every 100 ms until every job has ended. The liftoff side is
//! an in-process server (SQLite) and agent with the Ray runner: enqueue N items, time until
//! the server has every item `finished`.

use super::rig::Rig;
use clap::Args;
use liftoff_runner::ray::api::{Api, Submitted};
use liftoff_runner::ray::{RayConfig, RayRunner};
use liftoff_types::{now_ms, LaunchSpec, ResourceType};
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
    let label = format!("liftoff:bench-{}-{}", std::process::id(), now_ms());
    let mut calls = None;
    let rig = Rig::start(dir, "ray", ResourceType::Ray, |config| {
        let runner = RayRunner::new(RayConfig::new(label, &config.state_dir));
        calls = Some(runner.call_counter());
        Arc::new(runner)
    })
    .await?;
    let start = Instant::now();
    rig.enqueue(
        n,
        &LaunchSpec::command(vec!["true".into()]),
        &json!({"address": address}),
    )
    .await?;
    rig.wait_finished(n, start).await?;
    let seconds = start.elapsed().as_secs_f64();
    rig.stop().await;
    let calls = calls.map_or(0, |c| c.load(Ordering::Relaxed));
    Ok((seconds, calls))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
