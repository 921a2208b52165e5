//! `liftoff bench env`: what the environment cache saves. A code job with a
//! `requirements.txt` runs several times on one agent; a run's preparation is the time from
//! its ack (the run created) to its start (source unpacked, Python environment ready), read
//! from the server's timestamps. The first run builds the environment; later ones reuse it.
//! Target: the second run's preparation at least 10× faster than the first.

use crate::commands::agent::start as start_agent;
use clap::Args;
use liftoff_agent::{AgentConfig, Control};
use liftoff_client::Client;
use liftoff_server::ServerConfig;
use liftoff_store::{SqliteStore, Store};
use liftoff_types::job::{JobKind, JobSource};
use liftoff_types::{now_ms, JobSpec, LaunchSpec, NewQueue, Scope};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Args, Debug)]
pub struct EnvBench {
    /// Runs of the same job (the first builds).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The requirements the job declares. The default needs no network (`pip` is in every
    /// new environment); with network, try e.g. "requests".
    #[arg(long, default_value = "pip")]
    pub requirements: String,
}

pub async fn run(b: EnvBench) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let store = Arc::new(SqliteStore::open(&dir.join("liftoff.db"))?);
    store
        .create_queue(NewQueue::named("bench"), now_ms())
        .await?;
    let (admin, hash) = liftoff_server::auth::new_token();
    store
        .create_token("admin", Scope::Admin, &hash, now_ms())
        .await?;
    let (agent_token, hash) = liftoff_server::auth::new_token();
    store
        .create_token("agent", Scope::Agent, &hash, now_ms())
        .await?;
    let mut config = ServerConfig::local("127.0.0.1:0".parse()?);
    config.artifacts = Some(dir.join("artifacts"));
    let server = liftoff_server::start(config, store.clone()).await?;
    let client = Client::new(&server.url(), Some(admin))?;

    let code = dir.join("code");
    std::fs::create_dir_all(&code)?;
    std::fs::write(
        code.join("requirements.txt"),
        format!("{}\n", b.requirements),
    )?;
    std::fs::write(code.join("main.py"), "print('ok')\n")?;
    let packed = liftoff_artifacts::pack_dir(&code)?;
    let digest = format!("sha256:{}", packed.sha256.trim_start_matches("sha256:"));
    client.upload_artifact(&digest, packed.bytes).await?;
    let job = JobSpec {
        kind: JobKind::Code,
        source: JobSource {
            digest: Some(digest),
            repo: None,
            commit: None,
            image: None,
        },
        entrypoint: vec!["python".into(), "main.py".into()],
        default_config: Default::default(),
        input_schema: None,
    };
    client.create_job_version("bench", &job).await?;

    let agent_config = AgentConfig {
        queues: vec!["bench".into()],
        state_dir: dir.join("agent"),
        ..AgentConfig::default()
    };
    let agent = start_agent(Client::new(&server.url(), Some(agent_token))?, agent_config).await?;
    let (control, rx) = mpsc::channel(2);
    let task = tokio::spawn(agent.run(rx));

    let mut prepare_ms = Vec::new();
    for _ in 0..b.runs {
        let spec = LaunchSpec {
            job: Some("bench:latest".into()),
            ..LaunchSpec::default()
        };
        let item = client.enqueue("bench", &spec).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        let item = loop {
            let now = client.get_item(item.id).await?;
            if now.state.is_terminal() {
                break now;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the run took too long"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(run_id) = item.run_id else {
            anyhow::bail!("item {} ended without a run: {:?}", item.id, item.failure);
        };
        let run = client.get_run(&run_id).await?;
        anyhow::ensure!(
            item.state == liftoff_types::ItemState::Finished,
            "the run failed: {:?}",
            item.failure
        );
        let started = run.started_at_ms.unwrap_or(run.created_at_ms);
        prepare_ms.push((started - run.created_at_ms) as f64);
    }
    let _ = control.send(Control::StopNow).await;
    let _ = task.await;
    server.stop().await;
    let first = prepare_ms[0];
    let later: Vec<f64> = prepare_ms[1..].to_vec();
    let second = later.first().copied().unwrap_or(f64::NAN);
    let mut sorted = later.clone();
    sorted.sort_by(f64::total_cmp);
    let median_later = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "requirements": b.requirements,
            "prepare_ms": prepare_ms,
            "first_ms": first,
            "second_ms": second,
            "median_later_ms": median_later,
            "first_over_second": first / second.max(1.0),
            "target_first_over_second": ">= 10",
        }))?
    );
    Ok(())
}
