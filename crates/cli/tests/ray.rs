//! The Ray runner end to end, on the real Ray head node that `scripts/services.sh` starts
//! (`LIFTOFF_TEST_RAY`, its dashboard's Jobs API): commands and code jobs finish with their
//! output and config, a failing driver reports its exit code, a stop ends the Ray job, a job
//! asking for GPUs the cluster lacks shows Ray's message and fails at the start timeout, a
//! restarted agent re-adopts its jobs without submitting any twice, a second run of one code
//! version uploads no package, and a sweep on a Ray queue finds its best run.

mod common;

use common::{ok, wait_async, wait_ended, ServerProcess};
use liftoff_client::Client;
use liftoff_types::{ItemId, ItemState, LaunchSpec, NewQueue, Phase, ResourceType, RunState};
use serde_json::{json, Value};
use std::time::Duration;

/// The Ray dashboard, when one answers; without it the test is skipped, except under CI,
/// where it fails.
async fn ray_here() -> Option<String> {
    let address = std::env::var("LIFTOFF_TEST_RAY").ok();
    let up = match &address {
        Some(a) => reqwest::get(format!("{a}/api/version"))
            .await
            .is_ok_and(|r| r.status().is_success()),
        None => false,
    };
    if !up {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but Ray is not running (scripts/services.sh start)"
        );
        eprintln!("skipped: no Ray here (scripts/services.sh start)");
        return None;
    }
    address
}

fn sh(script: &str) -> LaunchSpec {
    LaunchSpec::command(vec!["sh".into(), "-c".into(), script.into()])
}

async fn ray_queue(client: &Client, name: &str, config: Value) {
    let mut queue = NewQueue::named(name);
    queue.resource = ResourceType::Ray;
    queue.config = config;
    client.create_queue(&queue).await.unwrap();
}

/// A job as Ray's own API shows it.
async fn ray_job(address: &str, id: &str) -> Value {
    reqwest::get(format!("{address}/api/jobs/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every Ray job submitted by the agent whose label is in `label`'s metadata.
async fn ray_jobs_of(address: &str, label: &str) -> Vec<Value> {
    let jobs: Vec<Value> = reqwest::get(format!("{address}/api/jobs/"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jobs.into_iter()
        .filter(|j| j["metadata"]["liftoff_agent"] == label)
        .collect()
}

async fn log_of(client: &Client, item: &liftoff_types::Item) -> String {
    let log = client
        .read_log(item.run_id.as_ref().unwrap(), 0)
        .await
        .unwrap();
    String::from_utf8_lossy(&log).into_owned()
}

async fn run_state(client: &Client, id: ItemId) -> Option<liftoff_types::Run> {
    let run = client.get_item(id).await.unwrap().run_id?;
    Some(client.get_run(&run).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ray_runs_finish_with_output_and_config_fail_with_the_drivers_code_and_stop() {
    let Some(ray) = ray_here().await else { return };
    let server = ServerProcess::start();
    let client = server.client();
    ray_queue(
        &client,
        "ray",
        json!({"address": ray, "metadata": {"team": "vision"}}),
    )
    .await;
    let agent = server.agent(
        &server.dir.path().join("agent"),
        &["--queue", "ray", "--max-jobs", "3"],
    );

    let mut spec = sh("echo \"hello from ray, config $LIFTOFF_CONFIG\"");
    spec.overrides.run_config.insert("lr".into(), json!(0.25));
    let hello = client.enqueue("ray", &spec).await.unwrap().id;
    let bad = client
        .enqueue("ray", &sh("echo failing; exit 3"))
        .await
        .unwrap()
        .id;
    let long = client
        .enqueue(
            "ray",
            &sh("trap 'echo got TERM; exit 143' TERM; while true; do sleep 0.1; done"),
        )
        .await
        .unwrap()
        .id;

    let item = wait_ended(&client, hello, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Finished, "{item:?}");
    let log = log_of(&client, &item).await;
    assert!(
        log.contains(r#"hello from ray, config {"lr":0.25}"#),
        "the driver's output, with its config: {log}"
    );
    let run_id = item.run_id.clone().unwrap();
    let job = ray_job(&ray, run_id.as_str()).await;
    assert_eq!(
        job["status"], "SUCCEEDED",
        "the run id is Ray's submission id: {job}"
    );
    assert_eq!(job["metadata"]["team"], "vision");
    assert_eq!(job["metadata"]["liftoff_run"], run_id.as_str());
    let env = &job["runtime_env"]["env_vars"];
    assert!(
        env.get("LIFTOFF_RUN_TOKEN").is_some(),
        "the run's own token: {env}"
    );
    let names: Vec<&String> = env.as_object().unwrap().keys().collect();
    assert!(
        names
            .iter()
            .all(|k| k.starts_with("LIFTOFF_") || k.starts_with("WANDB_")),
        "nothing of the agent's environment reaches the cluster: {names:?}"
    );
    assert!(
        !job.to_string().contains(&agent.token),
        "the agent's token is not in the Ray job"
    );

    let item = wait_ended(&client, bad, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Failed);
    assert_eq!(item.failure.as_ref().unwrap().phase, Phase::Run);
    let run = client.get_run(item.run_id.as_ref().unwrap()).await.unwrap();
    assert_eq!(run.exit_code, Some(3), "{run:?}");
    assert!(log_of(&client, &item).await.contains("failing"));

    wait_async("the long run to run", Duration::from_secs(60), || async {
        run_state(&client, long)
            .await
            .is_some_and(|r| r.state == RunState::Running)
    })
    .await;
    let run_id = client.get_item(long).await.unwrap().run_id.unwrap();
    client.stop_run(&run_id).await.unwrap();
    let item = wait_ended(&client, long, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Stopped, "{item:?}");
    assert_eq!(ray_job(&ray, run_id.as_str()).await["status"], "STOPPED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_job_ships_its_source_once_per_version_with_its_requirements() {
    let Some(ray) = ray_here().await else { return };
    let server = ServerProcess::start();
    let client = server.client();
    ray_queue(&client, "ray", json!({"address": ray})).await;
    let code = server.dir.path().join("code");
    std::fs::create_dir_all(code.join("lib")).unwrap();
    std::fs::write(
        code.join("train.py"),
        "import json, os, sys\nfrom lib import helper\n\
         print('trained', helper.VALUE, json.loads(os.environ['LIFTOFF_CONFIG']), sys.argv[1:])\n",
    )
    .unwrap();
    std::fs::write(code.join("lib/__init__.py"), "").unwrap();
    // A stamp of this test run: the same content would find the package of an earlier run
    // still on the cluster.
    let stamp = format!("{:?}", std::time::SystemTime::now());
    std::fs::write(
        code.join("lib/helper.py"),
        format!("VALUE = 'from lib'\nSTAMP = {stamp:?}\n"),
    )
    .unwrap();
    // Already in Ray's environment: pip finds it there without reaching out.
    std::fs::write(
        code.join("requirements.txt"),
        "# what train.py needs\nrequests\n",
    )
    .unwrap();
    ok(&server.run(&[
        "job",
        "create",
        "code",
        code.to_str().unwrap(),
        "--name",
        "train",
        "--entrypoint",
        "python train.py --epochs 2",
        "--config",
        "lr=0.5",
    ]));
    let state = server.dir.path().join("agent");
    let agent = server.agent_with_env(
        &state,
        &["--queue", "ray"],
        &[("LIFTOFF_LOG", "liftoff_runner=info,warn")],
    );
    let mut runs = Vec::new();
    for _ in 0..2 {
        let spec = LaunchSpec {
            job: Some("train".into()),
            ..Default::default()
        };
        let id = client.enqueue("ray", &spec).await.unwrap().id;
        let item = wait_ended(&client, id, Duration::from_secs(120)).await;
        assert_eq!(
            item.state,
            ItemState::Finished,
            "{item:?}: {}",
            log_of(&client, &item).await
        );
        let log = log_of(&client, &item).await;
        assert!(
            log.contains("trained from lib {'lr': 0.5} ['--epochs', '2']"),
            "{log}"
        );
        runs.push(item.run_id.unwrap());
    }
    let first = ray_job(&ray, runs[0].as_str()).await;
    let second = ray_job(&ray, runs[1].as_str()).await;
    let uri = first["runtime_env"]["working_dir"].as_str().unwrap();
    assert!(uri.starts_with("gcs://_ray_pkg_"), "{first}");
    assert_eq!(second["runtime_env"]["working_dir"], uri);
    assert_eq!(first["runtime_env"]["pip"], json!(["requests"]), "{first}");
    let uploads = agent
        .log()
        .matches("uploading the run's source to Ray")
        .count();
    assert_eq!(uploads, 1, "one upload for one version: {}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_asking_for_gpus_the_cluster_lacks_shows_rays_message_then_fails() {
    let Some(ray) = ray_here().await else { return };
    let server = ServerProcess::start();
    let client = server.client();
    ray_queue(
        &client,
        "gpu",
        json!({"address": ray, "entrypoint_num_gpus": 8}),
    )
    .await;
    let config = server.dir.path().join("agent.yaml");
    std::fs::write(&config, "start_timeout: 5\n").unwrap();
    let _agent = server.agent(
        &server.dir.path().join("agent"),
        &["--queue", "gpu", "--config", config.to_str().unwrap()],
    );
    let id = client.enqueue("gpu", &sh("echo never")).await.unwrap().id;
    wait_async(
        "the run to show Ray's message",
        Duration::from_secs(30),
        || async {
            run_state(&client, id).await.is_some_and(|r| {
                r.state == RunState::Starting
                    && r.message
                        .as_deref()
                        .is_some_and(|m| m.contains("waiting for resources"))
            })
        },
    )
    .await;
    let item = wait_ended(&client, id, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Failed);
    let message = &item.failure.as_ref().unwrap().message;
    assert!(message.contains("did not start within"), "{message}");
    assert!(message.contains("waiting for resources"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_readopts_its_ray_jobs_with_their_output_whole() {
    let Some(ray) = ray_here().await else { return };
    let server = ServerProcess::start();
    let client = server.client();
    ray_queue(&client, "ray", json!({"address": ray})).await;
    let state = server.dir.path().join("agent");
    let mut agent = server.agent(&state, &["--queue", "ray", "--max-jobs", "2"]);
    let marker = server.dir.path().join("go");
    let mut ids = Vec::new();
    for code in [0, 5] {
        // Counts while it waits for the marker, so lines are written before, during and
        // after the agent's absence.
        let script = format!(
            "i=0; while [ ! -e {m} ] || [ $i -lt 30 ]; do i=$((i+1)); echo line $i; sleep 0.1; done; exit {code}",
            m = marker.display()
        );
        ids.push(client.enqueue("ray", &sh(&script)).await.unwrap().id);
    }
    wait_async(
        "2 runs running with output",
        Duration::from_secs(60),
        || async {
            let mut running = 0;
            for id in &ids {
                if let Some(run) = run_state(&client, *id).await {
                    let log = client.read_log(&run.id, 0).await.unwrap();
                    if run.state == RunState::Running && !log.is_empty() {
                        running += 1;
                    }
                }
            }
            running == 2
        },
    )
    .await;
    agent.kill9();
    let _agent = server.agent(&state, &["--queue", "ray", "--max-jobs", "2"]);
    std::fs::write(&marker, "").unwrap();
    let mut codes = Vec::new();
    for id in &ids {
        let item = wait_ended(&client, *id, Duration::from_secs(90)).await;
        let run = client.get_run(item.run_id.as_ref().unwrap()).await.unwrap();
        codes.push(run.exit_code);
        let log = log_of(&client, &item).await;
        let counted: Vec<u32> = log
            .lines()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .collect();
        let n = counted.len() as u32;
        assert!(n >= 30, "{log}");
        assert_eq!(
            counted,
            (1..=n).collect::<Vec<_>>(),
            "no line lost or repeated: {log}"
        );
    }
    assert_eq!(codes, vec![Some(0), Some(5)]);
    let runs = client
        .list_runs(&liftoff_types::api::RunFilter::default())
        .await
        .unwrap();
    assert_eq!(runs.len(), 2, "nothing was started twice");
    let run = &runs[0];
    let label = ray_job(&ray, run.id.as_str()).await["metadata"]["liftoff_agent"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ray_jobs_of(&ray, &label).await.len(),
        2,
        "two Ray jobs, none twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_on_a_ray_queue_finds_its_best_run() {
    let Some(ray) = ray_here().await else { return };
    let server = ServerProcess::start();
    let client = server.client();
    ray_queue(&client, "ray", json!({"address": ray})).await;
    let dir = server.dir.path();
    let program = dir.join("objective.py");
    std::fs::write(
        &program,
        "import json, os\n\
         c = json.loads(os.environ['LIFTOFF_CONFIG'])\n\
         open(os.environ['LIFTOFF_METRICS_FILE'], 'a').write(json.dumps({'f': (c['x'] - 3) ** 2}) + '\\n')\n",
    )
    .unwrap();
    let file = dir.join("sweep.yaml");
    std::fs::write(
        &file,
        format!(
            "program: {}\ncommand: [python3, '${{program}}']\nmethod: grid\nmetric: {{name: f, goal: minimize}}\nparameters:\n  x: {{values: [1, 3, 4]}}\n",
            program.display()
        ),
    )
    .unwrap();
    let _agent = server.agent(&dir.join("agent"), &["--queue", "ray", "--max-jobs", "3"]);
    let out = server.run(&[
        "sweep",
        "create",
        file.to_str().unwrap(),
        "--queue",
        "ray",
        "-o",
        "json",
    ]);
    let id = serde_json::from_str::<Value>(&ok(&out)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_async("the sweep to finish", Duration::from_secs(120), || async {
        client.get_sweep(&id).await.unwrap().sweep.state == liftoff_types::SweepState::Finished
    })
    .await;
    let view = client.get_sweep(&id).await.unwrap();
    assert_eq!(view.runs.len(), 3);
    let best = view.best.unwrap();
    assert_eq!(best.params["x"], 3);
    assert_eq!(best.metric.unwrap().last, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ray_resource_args_and_images_are_refused_where_they_enter() {
    let server = ServerProcess::start();
    let client = server.client();
    let mut queue = NewQueue::named("ray");
    queue.resource = ResourceType::Ray;
    queue.config = json!({"address": "127.0.0.1:8265"});
    let err = client.create_queue(&queue).await.unwrap_err().to_string();
    assert!(
        err.contains("config.address: must be the Ray dashboard's URL"),
        "{err}"
    );
    queue.config = json!({"address": "http://h:8265", "runtime_env": {"working_dir": "/home/me"}});
    let err = client.create_queue(&queue).await.unwrap_err().to_string();
    assert!(
        err.contains("config.runtime_env.working_dir: not a runtime_env key"),
        "{err}"
    );
    queue.config = json!({"address": "http://127.0.0.1:1"});
    client.create_queue(&queue).await.unwrap();
    for (args, want) in [
        (
            json!({"entrypoint_num_gpus": "many"}),
            "resource_args.entrypoint_num_gpus",
        ),
        (
            json!({"runtime_env": {"env_vars": {"LIFTOFF_API_URL": "x"}}}),
            "resource_args.runtime_env.env_vars.LIFTOFF_API_URL: liftoff's own variable",
        ),
    ] {
        let mut spec = sh("true");
        spec.resource_args.insert("ray".into(), args);
        let err = client.enqueue("ray", &spec).await.unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(
        client.list_items(&Default::default()).await.unwrap().len(),
        0,
        "nothing half-written"
    );
    let mut image = sh("true");
    image.docker = Some(liftoff_types::spec::DockerSpec {
        docker_image: Some("python:3.12".into()),
    });
    let err = client.enqueue("ray", &image).await.unwrap_err().to_string();
    assert!(err.contains("runs no images"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_ray_already_took_is_adopted_and_a_strangers_is_not_run_over() {
    let Some(ray) = ray_here().await else { return };
    let server = ServerProcess::start();
    let client = server.client();
    ray_queue(&client, "ray", json!({"address": ray})).await;
    let http = reqwest::Client::new();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let ours = format!("adopt{stamp}");
    let theirs = format!("taken{stamp}");
    let launch = |id: &str| {
        let mut spec = sh("echo second copy");
        spec.run_id = Some(id.to_string());
        spec
    };
    let adopted = client.enqueue("ray", &launch(&ours)).await.unwrap().id;
    let refused = client.enqueue("ray", &launch(&theirs)).await.unwrap().id;
    let limits: Value = http
        .get(format!("{}/api/v1/limits", server.url()))
        .bearer_auth(server.client_file()["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let store = limits["store_id"].as_str().unwrap();
    // As an agent that crashed after Ray took its submission would have left it: this run,
    // this attempt of this item.
    let mine = json!({"liftoff_run": ours, "liftoff_attempt": "1",
        "liftoff_attempt_of": format!("{store}/{adopted}")});
    for (id, meta) in [(&ours, mine), (&theirs, json!({"team": "x"}))] {
        let body = json!({"entrypoint": format!("echo first copy of {id}"), "submission_id": id, "metadata": meta});
        let answer = http
            .post(format!("{ray}/api/jobs/"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }
    let _agent = server.agent(&server.dir.path().join("agent"), &["--queue", "ray"]);
    let item = wait_ended(&client, adopted, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Finished, "{item:?}");
    let log = log_of(&client, &item).await;
    assert!(
        log.contains("first copy") && !log.contains("second copy"),
        "the job Ray had is the run, not a second one: {log}"
    );
    let item = wait_ended(&client, refused, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Failed);
    let message = &item.failure.as_ref().unwrap().message;
    assert!(message.contains("not this run's"), "{message}");
    let mut spec = sh("true");
    spec.resource_args
        .insert("ray".into(), json!({"address": "http://elsewhere:8265"}));
    let err = client.enqueue("ray", &spec).await.unwrap_err().to_string();
    assert!(
        err.contains("resource_args.ray.address"),
        "a launch cannot send the agent to another cluster: {err}"
    );
}
