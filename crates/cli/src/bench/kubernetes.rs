//! `liftoff bench kubernetes`: N trivial runs through liftoff onto the stand-in API server
//! (whose node runs pods on a real Docker engine) against N bare Job creates on the same
//! stand-in, in one process: the time from enqueue (or create) to the pod running, and the
//! API requests the runner made per run, by verb.
//!
//! Both sides go one run at a time, so each latency is one run's alone, and take turns in
//! blocks of ten (bare first), so both see the same drift of this shared machine. The moment a pod
//! runs is read from the stand-in's own objects (in process, no API call), the same way for
//! both sides.

use super::rig::Rig;
use clap::Args;
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use liftoff_kube_standin::store::Kind;
use liftoff_kube_standin::{Config, Standin};
use liftoff_runner::kubernetes::{KubeConfig, KubeRunner};
use liftoff_types::{LaunchSpec, ResourceType};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct KubeBench {
    /// The Docker engine the stand-in's node runs pods on.
    #[arg(
        long,
        env = "LIFTOFF_TEST_DOCKER",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker: String,
    /// Runs per side.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// The image every pod runs (on the engine already: the stand-in pulls nothing).
    #[arg(long, default_value = "liftoff-test/busybox:latest")]
    pub image: String,
}

/// Runs per block: the sides take turns in blocks, so that both see the machine's drift.
const BLOCK: usize = 10;

pub async fn run(b: KubeBench) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("liftoff-bench-kube")
        .tempdir()?;
    let config = Config {
        docker_host: b.docker.clone(),
        network: "none".into(),
        cpu_millis: 1_000_000,
        ..Config::default()
    };
    let standin = Standin::start(([127, 0, 0, 1], 0).into(), config).await?;
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, standin.kubeconfig("default"))?;
    let file = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(file, &Default::default()).await?,
    )?;
    let jobs: kube::Api<Job> = kube::Api::namespaced(client, "default");
    let path = kubeconfig.clone();
    let rig = Rig::start(
        &tmp.path().join("rig"),
        "k8s",
        ResourceType::Kubernetes,
        |_| {
            let mut config = KubeConfig::new("bench".into());
            config.kubeconfig = Some(path);
            Arc::new(KubeRunner::new(config))
        },
    )
    .await?;

    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    let mut per_verb: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    let mut done = 0;
    while done < b.runs {
        let n = BLOCK.min(b.runs - done);
        bare.extend(bare_jobs(&standin, &jobs, &b.image, done, n).await?);
        let before = standin.shared.requests();
        ours.extend(through_liftoff(&standin, &rig, &b.image, n).await?);
        rig.wait_finished(done + n, start).await?;
        released(&standin).await?;
        for (k, v) in standin.shared.requests() {
            *per_verb.entry(k.clone()).or_default() += v - before.get(&k).copied().unwrap_or(0);
        }
        done += n;
    }
    rig.stop().await;
    standin.stop().await;

    let per_run: BTreeMap<String, f64> = per_verb
        .into_iter()
        .filter(|(_, d)| *d > 0)
        .map(|(k, d)| (k, round3(d as f64 / b.runs as f64)))
        .collect();
    let total: f64 = per_run.values().sum();
    let (bare_p50, ours_p50) = (pct(&bare, 50.0), pct(&ours, 50.0));
    let ratio = ours_p50 / bare_p50;
    let report = json!({
        "runs": b.runs,
        "bare_job_create_to_running_ms": {"p50": bare_p50, "p95": pct(&bare, 95.0)},
        "liftoff_enqueue_to_running_ms": {"p50": ours_p50, "p95": pct(&ours, 95.0)},
        "ratio_p50_liftoff_to_bare": round3(ratio),
        "target_ratio_max": 1.2,
        "meets_target": ratio <= 1.2,
        "api_requests_per_run": round3(total),
        "api_requests_per_run_by_verb": per_run,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len().saturating_sub(1)) as f64).round() as usize;
    round3(s.get(i).copied().unwrap_or(f64::NAN))
}

/// The pods of the stand-in whose container has started, added to `seen`; true if one
/// was new (liftoff deletes its pods once their runs end, so a count would go down).
fn started(standin: &Standin, seen: &mut HashSet<String>) -> bool {
    let now: Vec<String> = standin
        .shared
        .lock()
        .list(Kind::Pod, None)
        .filter(|p| {
            let s = &p["status"]["containerStatuses"][0]["state"];
            !s["running"].is_null() || !s["terminated"].is_null()
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let mut new = false;
    for name in now {
        new |= seen.insert(name);
    }
    new
}

async fn wait_started(
    standin: &Standin,
    seen: &mut HashSet<String>,
    since: Instant,
) -> anyhow::Result<f64> {
    let mut tick = standin.shared.lock().subscribe();
    while !started(standin, seen) {
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(120),
            "no pod ran within 120 s"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), tick.changed()).await;
    }
    Ok(since.elapsed().as_secs_f64() * 1000.0)
}

async fn bare_jobs(
    standin: &Standin,
    jobs: &kube::Api<Job>,
    image: &str,
    from: usize,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut took = Vec::new();
    let mut seen = HashSet::new();
    started(standin, &mut seen);
    for i in from..from + n {
        let job: Job = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": format!("bare-{i}")},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "args": ["true"]}]}}},
        }))?;
        let at = Instant::now();
        jobs.create(&PostParams::default(), &job).await?;
        took.push(wait_started(standin, &mut seen, at).await?);
    }
    Ok(took)
}

async fn through_liftoff(
    standin: &Standin,
    rig: &Rig,
    image: &str,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut spec = LaunchSpec::command(vec!["true".into()]);
    spec.docker = Some(liftoff_types::spec::DockerSpec {
        docker_image: Some(image.into()),
    });
    let mut seen = HashSet::new();
    started(standin, &mut seen);
    let mut took = Vec::new();
    for _ in 0..n {
        let at = Instant::now();
        rig.enqueue(1, &spec, &Value::Null).await?;
        took.push(wait_started(standin, &mut seen, at).await?);
    }
    Ok(took)
}

/// Waits until liftoff has deleted every Job it made (each after its end is reported).
async fn released(standin: &Standin) -> anyhow::Result<()> {
    let since = Instant::now();
    let ours = |j: &Value| {
        j["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("liftoff-"))
    };
    while standin.shared.lock().list(Kind::Job, None).any(ours) {
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(60),
            "Jobs never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
