//! `liftoff bench container`: the container runner against the bare Docker Engine API on the
//! same engine and image, in the same run (alternating, so both see the same machine).
//!
//! - **Start latency**: enqueue → the container's process started (the engine's own
//!   `State.StartedAt`), against a bare create + start of the same image and command.
//! - **Throughput**: N runs of `true`, C at a time, through liftoff (an in-process server
//!   and agent, as `liftoff up` runs them) against C workers each looping create, start,
//!   wait, remove.
//! - **Memory**: a separate `liftoff agent` with the container runner configured, idle.

use crate::commands::agent::start as start_agent;
use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use bollard::Docker;
use clap::Args;
use futures_util::StreamExt;
use liftoff_agent::{AgentConfig, Control};
use liftoff_client::Client;
use liftoff_server::{Server, ServerConfig};
use liftoff_store::{NewItem, SqliteStore, Store};
use liftoff_types::{now_ms, ItemId, LaunchSpec, NewQueue, Priority, ResourceType, Scope};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ContainerBench {
    /// The engine's socket (default: `LIFTOFF_TEST_DOCKER`, then `DOCKER_HOST`).
    #[arg(long)]
    pub host: Option<String>,
    /// The image every run uses (it must have `sh`, `sleep` and `true`).
    #[arg(long, default_value = "liftoff-test/busybox:latest")]
    pub image: String,
    /// Starts measured for latency, on each side.
    #[arg(long, default_value_t = 20)]
    pub latency_runs: usize,
    /// Runs of `true` per throughput measurement.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Throughput measurements of each side (alternating, bare first).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

/// An in-process server (SQLite) and agent with the container runner, as `liftoff up`.
struct Rig {
    store: Arc<SqliteStore>,
    server: Server,
    stop: tokio::sync::mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

/// A server on a loopback port over a fresh SQLite file with a container queue `box`, and an
/// agent token for it.
async fn serve(dir: &Path) -> anyhow::Result<(Arc<SqliteStore>, Server, String)> {
    std::fs::create_dir_all(dir)?;
    let store = Arc::new(SqliteStore::open(&dir.join("liftoff.db"))?);
    let mut queue = NewQueue::named("box");
    queue.resource = ResourceType::Container;
    store.create_queue(queue, now_ms()).await?;
    let (agent_token, hash) = liftoff_server::auth::new_token();
    store
        .create_token("bench agent", Scope::Agent, &hash, now_ms())
        .await?;
    let server =
        liftoff_server::start(ServerConfig::local("127.0.0.1:0".parse()?), store.clone()).await?;
    Ok((store, server, agent_token))
}

impl Rig {
    async fn new(dir: &Path, host: &str, max_jobs: usize) -> anyhow::Result<Rig> {
        let (store, server, agent_token) = serve(dir).await?;
        let client = Client::new(&server.url(), Some(agent_token))?
            .in_process(crate::commands::up::in_process(&server));
        let config = AgentConfig {
            queues: vec!["box".into()],
            max_jobs: max_jobs as i64,
            state_dir: dir.join("agent"),
            stopped_run_timeout: Duration::from_secs(1),
            runners: section(host),
            ..AgentConfig::default()
        };
        let agent = start_agent(client, config).await?;
        let (stop, rx) = tokio::sync::mpsc::channel(2);
        let task = tokio::spawn(agent.run(rx));
        Ok(Rig {
            store,
            server,
            stop,
            task,
        })
    }

    async fn enqueue(&self, image: &str, argv: &[&str]) -> anyhow::Result<ItemId> {
        let mut spec = LaunchSpec::command(argv.iter().map(|s| s.to_string()).collect());
        spec.docker = Some(liftoff_types::spec::DockerSpec {
            docker_image: Some(image.into()),
        });
        let item = NewItem {
            queue: "box".into(),
            spec,
            priority: Priority::Medium,
            resource_args: json!({}),
            kind: liftoff_types::ItemKind::Run,
        };
        let id = self.store.enqueue(item, now_ms()).await?.id;
        // Written to the store directly, so wake the agent's long-poll as the API would.
        self.server
            .state
            .wakers
            .wake(&liftoff_server::wake::queue_key("box"));
        Ok(id)
    }

    async fn ended(&self) -> anyhow::Result<(u64, u64)> {
        let d = self
            .store
            .get_queue("box", true)
            .await?
            .depth
            .unwrap_or_default();
        Ok((d.finished + d.failed + d.stopped + d.cancelled, d.finished))
    }

    async fn stop(self) {
        let _ = self.stop.send(Control::StopNow).await;
        let _ = self.task.await;
        self.server.stop().await;
    }
}

fn section(host: &str) -> Vec<liftoff_runner::Section> {
    liftoff_runner::Section::parse_map(json!({"container": {"host": host, "network": "none"}}))
        .unwrap_or_default()
}

pub async fn run(b: ContainerBench) -> anyhow::Result<()> {
    let host = b
        .host
        .clone()
        .or_else(|| std::env::var("LIFTOFF_TEST_DOCKER").ok())
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .context("no engine: --host, LIFTOFF_TEST_DOCKER or DOCKER_HOST")?;
    let docker = Docker::connect_with_unix(
        host.trim_start_matches("unix://"),
        120,
        bollard::API_DEFAULT_VERSION,
    )?;
    docker
        .inspect_image(&b.image)
        .await
        .with_context(|| format!("the image {} (scripts/services.sh start makes it)", b.image))?;
    let tmp = tempfile::Builder::new()
        .prefix("liftoff-bench-container")
        .tempdir()?;
    let latency = start_latency(&docker, &host, &b, tmp.path()).await?;
    let mut bare = Vec::new();
    let mut ours = Vec::new();
    for round in 0..b.rounds {
        bare.push(bare_loop(&docker, &b.image, b.runs, b.concurrency).await?);
        let dir = tmp.path().join(format!("throughput{round}"));
        ours.push(through_liftoff(&host, &b, &dir).await?);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let ratio = best(&ours) / best(&bare);
    let memory = idle_rss(&host, tmp.path()).await?;
    let report = json!({
        "engine": host,
        "image": b.image,
        "start_latency_ms": latency,
        "throughput": {
            "runs": b.runs,
            "concurrency": b.concurrency,
            "bare_seconds": bare.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
            "liftoff_seconds": ours.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
            "ratio_best_liftoff_to_best_bare": round3(ratio),
            "target_ratio_max": 1.2,
            "meets_target": ratio <= 1.2,
        },
        "agent_idle_rss_kib": memory,
        "target_agent_idle_rss_kib_max": 10240,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Enqueue → process started, through liftoff and bare, alternating; p50 and the ratio.
async fn start_latency(
    docker: &Docker,
    host: &str,
    b: &ContainerBench,
    dir: &Path,
) -> anyhow::Result<serde_json::Value> {
    let rig = Rig::new(&dir.join("latency"), host, 1).await?;
    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    for i in 0..b.latency_runs {
        let name = format!("liftoff-bench-bare-{}-{i}", std::process::id());
        let asked = unix_nanos_now();
        let body = body(&b.image, &["sleep", "30"]);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            platform: String::new(),
        };
        docker.create_container(Some(options), body).await?;
        docker.start_container(&name, None).await?;
        bare.push(started_ms(docker, &name, asked).await?);
        remove(docker, &name).await;

        let asked = unix_nanos_now();
        let id = rig.enqueue(&b.image, &["sleep", "30"]).await?;
        let run = wait_for_run(&rig, id).await?;
        let name = format!("liftoff-{run}");
        ours.push(started_ms(docker, &name, asked).await?);
        remove(docker, &name).await;
        wait_until(Duration::from_secs(30), || async {
            rig.ended().await.is_ok_and(|(ended, _)| ended as usize > i)
        })
        .await?;
    }
    rig.stop().await;
    bare.sort_by(f64::total_cmp);
    ours.sort_by(f64::total_cmp);
    let (bp, op) = (super::percentile(&bare, 0.5), super::percentile(&ours, 0.5));
    Ok(json!({
        "runs": b.latency_runs,
        "bare_p50": bp, "bare_p90": super::percentile(&bare, 0.9),
        "liftoff_p50": op, "liftoff_p90": super::percentile(&ours, 0.9),
        "ratio_p50": round3(op / bp),
        "target_ratio_max": 1.15,
        "meets_target": op / bp <= 1.15,
    }))
}

/// The run id an item got, once its container is being made.
async fn wait_for_run(rig: &Rig, id: ItemId) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(run) = rig.store.get_item(id).await?.run_id {
            return Ok(run.to_string());
        }
        anyhow::ensure!(Instant::now() < deadline, "item {id} was never acked");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Milliseconds from `asked` (Unix nanoseconds) to the container's recorded start.
async fn started_ms(docker: &Docker, name: &str, asked: i128) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(info) = docker.inspect_container(name, None).await {
            let started = info
                .state
                .and_then(|s| s.started_at)
                .and_then(|t| rfc3339_nanos(&t));
            if let Some(at) = started.filter(|&t| t > 0) {
                return Ok(((at - asked) as f64 / 1e6 * 100.0).round() / 100.0);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn body(image: &str, argv: &[&str]) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn remove(docker: &Docker, name: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    let _ = docker.remove_container(name, Some(options)).await;
}

/// `concurrency` workers, each looping create, start, wait, remove until `runs` are done.
async fn bare_loop(
    docker: &Docker,
    image: &str,
    runs: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (docker, image, next) = (docker.clone(), image.to_string(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= runs {
                    return Ok::<(), anyhow::Error>(());
                }
                let name = format!("liftoff-bench-loop-{}-{i}", std::process::id());
                let options = CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                };
                docker
                    .create_container(Some(options), body(&image, &["true"]))
                    .await?;
                docker.start_container(&name, None).await?;
                let _ = docker.wait_container(&name, None).next().await;
                remove(&docker, &name).await;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `runs` runs of `true` through liftoff at `concurrency`.
async fn through_liftoff(host: &str, b: &ContainerBench, dir: &Path) -> anyhow::Result<f64> {
    let rig = Rig::new(dir, host, b.concurrency).await?;
    let start = Instant::now();
    for _ in 0..b.runs {
        rig.enqueue(&b.image, &["true"]).await?;
    }
    wait_until(Duration::from_secs(600), || async {
        rig.ended()
            .await
            .is_ok_and(|(ended, _)| ended as usize >= b.runs)
    })
    .await?;
    let seconds = start.elapsed().as_secs_f64();
    let (_, finished) = rig.ended().await?;
    anyhow::ensure!(
        finished as usize == b.runs,
        "only {finished} of {} finished",
        b.runs
    );
    rig.stop().await;
    Ok(seconds)
}

/// A separate `liftoff agent` process with the container runner, idle.
async fn idle_rss(host: &str, base: &Path) -> anyhow::Result<u64> {
    let dir = base.join("memory");
    let (store, server, token) = serve(&dir).await?;
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!("runners:\n  container:\n    host: {host}\n"),
    )?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["agent", "--queue", "box", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("agent"))
        .env("LIFTOFF_URL", server.url())
        .env("LIFTOFF_TOKEN", &token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    wait_until(Duration::from_secs(30), || async {
        store.list_agents().await.is_ok_and(|a| !a.is_empty())
    })
    .await?;
    // Settled: the same wait as the agent bench's idle figure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    server.stop().await;
    Ok(rss)
}

fn unix_nanos_now() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// `2026-12-01T22:10:01.123456789Z` as Unix nanoseconds (the engine's UTC timestamps).
fn rfc3339_nanos(s: &str) -> Option<i128> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
    let nanos: i64 = format!("{digits:0<9}")[..9].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + min * 60 + sec;
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn engine_timestamps_read_as_unix_time() {
        assert_eq!(
            super::rfc3339_nanos("1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        assert_eq!(
            super::rfc3339_nanos("2026-12-01T22:10:01.123456789Z"),
            Some(1_796_163_001_123_456_789)
        );
    }
}
