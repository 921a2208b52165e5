//! The Slurm runner end to end, on the real single-node Slurm that `scripts/services.sh`
//! starts (`SLURM_CONF`): a run finishes with its output served, a failing one reports its
//! exit code, a stop ends the job, a held job shows `starting` with Slurm's reason and fails
//! after the start timeout, and a restarted agent re-adopts the jobs it owned.

mod common;

use common::{wait_async, wait_ended, ServerProcess};
use liftoff_client::Client;
use liftoff_types::{ItemState, LaunchSpec, NewQueue, Phase, ResourceType, RunState};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// True when Slurm answers; without it the test is skipped, except under CI, where it fails.
fn slurm_here() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !up {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but Slurm is not running (scripts/services.sh start)"
        );
        eprintln!("skipped: no Slurm here (scripts/services.sh start)");
    }
    up
}

fn sh(script: &str) -> LaunchSpec {
    LaunchSpec::command(vec!["sh".into(), "-c".into(), script.into()])
}

async fn slurm_queue(client: &Client, name: &str, config: serde_json::Value) {
    let mut queue = NewQueue::named(name);
    queue.resource = ResourceType::Slurm;
    queue.config = config;
    client.create_queue(&queue).await.unwrap();
}

/// The Slurm job of a run, as `scontrol` shows it (one line of `key=value`).
fn job_line(job_id: u64) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", &job_id.to_string(), "-o"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_runs_finish_fail_and_stop() {
    if !slurm_here() {
        return;
    }
    let server = ServerProcess::start();
    let client = server.client();
    slurm_queue(&client, "hpc", json!({"time": "10:00", "cpus": 1})).await;
    let state = server.dir.path().join("agent");
    let _agent = server.agent(&state, &["--queue", "hpc", "--max-jobs", "4"]);

    let ok = client
        .enqueue("hpc", &sh("echo hello from slurm job $SLURM_JOB_ID"))
        .await
        .unwrap()
        .id;
    let bad = client
        .enqueue("hpc", &sh("echo failing; exit 3"))
        .await
        .unwrap()
        .id;
    let long = client
        .enqueue("hpc", &sh("sleep 1000 & sleep 1000"))
        .await
        .unwrap()
        .id;

    let item = wait_ended(&client, ok, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Finished, "{item:?}");
    let run = client.get_run(&item.run_id.clone().unwrap()).await.unwrap();
    let job_id = run.handle["job_id"]
        .as_u64()
        .expect("the handle names the Slurm job");
    assert!(job_line(job_id).contains("JobState=COMPLETED"));
    let want = format!("hello from slurm job {job_id}");
    wait_async(
        "the job's output on the server",
        Duration::from_secs(20),
        || async {
            let log = client.read_log(&run.id, 0).await.unwrap();
            String::from_utf8_lossy(&log).contains(&want)
        },
    )
    .await;

    let item = wait_ended(&client, bad, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert_eq!(failure.phase, Phase::Run);
    let run = client.get_run(&item.run_id.unwrap()).await.unwrap();
    assert_eq!(run.exit_code, Some(3), "{run:?}");

    wait_async(
        "the long run to be running",
        Duration::from_secs(60),
        || async {
            let item = client.get_item(long).await.unwrap();
            match item.run_id {
                Some(run) => client.get_run(&run).await.unwrap().state == RunState::Running,
                None => false,
            }
        },
    )
    .await;
    let run_id = client.get_item(long).await.unwrap().run_id.unwrap();
    let job_id = client.get_run(&run_id).await.unwrap().handle["job_id"]
        .as_u64()
        .unwrap();
    client.stop_run(&run_id).await.unwrap();
    let item = wait_ended(&client, long, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Stopped);
    let line = job_line(job_id);
    assert!(
        !line.contains("JobState=RUNNING") && !line.contains("JobState=PENDING"),
        "the Slurm job still runs: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_shows_starting_with_the_reason_then_fails_after_the_start_timeout() {
    if !slurm_here() {
        return;
    }
    let server = ServerProcess::start();
    let client = server.client();
    slurm_queue(&client, "held", json!({"extra": ["--hold"]})).await;
    let state = server.dir.path().join("agent");
    let config = server.dir.path().join("agent.yaml");
    std::fs::write(&config, "start_timeout: 4\n").unwrap();
    let cfg = config.to_str().unwrap();
    let _agent = server.agent(&state, &["--queue", "held", "--config", cfg]);
    let id = client.enqueue("held", &sh("echo never")).await.unwrap().id;
    wait_async(
        "the run to show Slurm's reason",
        Duration::from_secs(30),
        || async {
            let item = client.get_item(id).await.unwrap();
            let Some(run) = item.run_id else { return false };
            let run = client.get_run(&run).await.unwrap();
            run.state == RunState::Starting && run.message.as_deref() == Some("JobHeldUser")
        },
    )
    .await;
    let item = wait_ended(&client, id, Duration::from_secs(30)).await;
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert!(
        failure.message.contains("did not start within"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("JobHeldUser"),
        "{}",
        failure.message
    );
    let run = client.get_run(&item.run_id.unwrap()).await.unwrap();
    let line = job_line(run.handle["job_id"].as_u64().unwrap());
    assert!(
        line.contains("JobState=CANCELLED"),
        "the held job was removed: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_readopts_its_slurm_jobs() {
    if !slurm_here() {
        return;
    }
    let server = ServerProcess::start();
    let client = server.client();
    slurm_queue(&client, "hpc", json!({})).await;
    let state = server.dir.path().join("agent");
    let mut agent = server.agent(&state, &["--queue", "hpc", "--max-jobs", "3"]);
    let marker = server.dir.path().join("go");
    let mut ids = Vec::new();
    for code in [0, 4, 6] {
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.2; done; exit {code}",
            marker.display()
        );
        ids.push(client.enqueue("hpc", &sh(&script)).await.unwrap().id);
    }
    wait_async("3 runs running", Duration::from_secs(60), || async {
        let mut running = 0;
        for id in &ids {
            if let Some(run) = client.get_item(*id).await.unwrap().run_id {
                if client.get_run(&run).await.unwrap().state == RunState::Running {
                    running += 1;
                }
            }
        }
        running == 3
    })
    .await;
    agent.kill9();
    let _agent = server.agent(&state, &["--queue", "hpc", "--max-jobs", "3"]);
    std::fs::write(&marker, "").unwrap();
    let mut codes = Vec::new();
    for id in &ids {
        let item = wait_ended(&client, *id, Duration::from_secs(60)).await;
        let run = client.get_run(&item.run_id.unwrap()).await.unwrap();
        codes.push(run.exit_code);
    }
    assert_eq!(codes, vec![Some(0), Some(4), Some(6)]);
    let runs = client
        .list_runs(&liftoff_types::api::RunFilter::default())
        .await
        .unwrap();
    assert_eq!(runs.len(), 3, "nothing was started twice");
}
