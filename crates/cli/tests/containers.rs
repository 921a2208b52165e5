//! The container runner end to end, on the real Docker engine that `scripts/services.sh`
//! starts (`LIFTOFF_TEST_DOCKER`, with the local images `liftoff-test/busybox` and
//! `liftoff-test/python:3` and a registry on a loopback port), and on podman's
//! Docker-compatible service (`LIFTOFF_TEST_PODMAN`): image runs finish, fail, stop and are
//! refused as a user would see them; a killed agent re-adopts its containers; code jobs are
//! built into images once; one agent serves a local, a container and a Slurm queue at once;
//! a run past its memory limit fails as `OOMKilled`.

mod common;

use common::{in_image, ok, output, wait_async, wait_ended, wait_running, ServerProcess};
use liftoff_client::Client;
use liftoff_types::{ItemId, ItemState, LaunchSpec, NewQueue, Phase, ResourceType, RunState};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "liftoff-test/busybox:latest";
const PYTHON: &str = "liftoff-test/python:3";

/// The engine's socket from the services script; without it the test is skipped, except
/// under CI, where it fails.
fn engine(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(host) if Path::new(host.trim_start_matches("unix://")).exists() => Some(host),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but {var} names no running engine (scripts/services.sh start)"
            );
            eprintln!("skipped: no {var} here (scripts/services.sh start)");
            None
        }
    }
}

/// The `docker` command line against an engine, for the tests' own looks at it.
fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .expect("the docker command line");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The containers the engine has for a run, running or not.
fn containers_of(host: &str, run: &str) -> String {
    docker(
        host,
        &[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=liftoff.run-id={run}"),
        ],
    )
}

/// An agent config for a container queue on `host`.
fn agent_config(dir: &Path, host: &str, extra: &str) -> PathBuf {
    let path = dir.join("agent.yaml");
    let text = format!(
        "stopped_run_timeout: 2\nstart_timeout: 20\nrunners:\n  local-container:\n    host: {host}\n    network: none\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn container_queue(client: &Client, name: &str, config: serde_json::Value) {
    let mut queue = NewQueue::named(name);
    queue.resource = ResourceType::Container;
    queue.config = config;
    client.create_queue(&queue).await.unwrap();
}

/// What a user of one engine sees: a run finishes with its output and config, a failing one
/// reports its code, a silent one stops within the grace and leaves no container.
async fn image_runs_finish_fail_and_stop(host: &str) {
    let server = ServerProcess::start();
    let client = server.client();
    container_queue(&client, "box", json!({"memory": "256m"})).await;
    let config = agent_config(server.dir.path(), host, "");
    let state = server.dir.path().join("agent");
    let _agent = server.agent(
        &state,
        &[
            "--queue",
            "box",
            "--max-jobs",
            "4",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let mut hello = in_image(
        BUSYBOX,
        "echo hello from $LIFTOFF_RUN_ID; cat $LIFTOFF_CONFIG_FILE; echo; echo oops >&2; \
         echo '{\"step\": 1, \"loss\": 0.25}' >> $LIFTOFF_METRICS_FILE; \
         test -e /liftoff/output.log || echo none of the agent files; echo tokens=$(env | grep -c TOKEN=lft_)",
    );
    hello.overrides.run_config = serde_json::from_value(json!({"lr": 0.5})).unwrap();
    let hello = client.enqueue("box", &hello).await.unwrap().id;
    let three = client
        .enqueue("box", &in_image(BUSYBOX, "echo failing; exit 3"))
        .await
        .unwrap()
        .id;
    let silent = client
        .enqueue("box", &in_image(BUSYBOX, "exec sleep 1000"))
        .await
        .unwrap()
        .id;

    // The engine's first container of the run can be slow on a loaded CI machine (podman's
    // once took over a minute there): a long bound, not a figure.
    let item = wait_ended(&client, hello, Duration::from_secs(180)).await;
    assert_eq!(item.state, ItemState::Finished, "{item:?}");
    let text = output(&client, &item).await;
    let run = item.run_id.clone().unwrap();
    assert!(text.contains(&format!("hello from {run}")), "{text}");
    assert!(text.contains(r#""lr":0.5"#), "the config inside: {text}");
    assert!(text.contains("oops"), "stderr too: {text}");
    assert!(text.contains("none of the agent files"), "{text}");
    // Stdout and stderr interleave as the engine stored them: look for the line, not its place.
    assert!(text.contains("tokens=0\n"), "no agent token inside: {text}");
    let metrics = client.run_metrics(&run).await.unwrap();
    assert_eq!(metrics.summary["loss"].last, 0.25, "{metrics:?}");

    let item = wait_ended(&client, three, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Failed);
    let run = client.get_run(&item.run_id.clone().unwrap()).await.unwrap();
    assert_eq!(run.exit_code, Some(3));
    assert_eq!(item.failure.unwrap().phase, Phase::Run);

    let run = wait_running(&client, silent).await;
    let asked = Instant::now();
    ok(&server.run(&["stop", run.as_str()]));
    let item = wait_ended(&client, silent, Duration::from_secs(30)).await;
    let took = asked.elapsed();
    assert_eq!(item.state, ItemState::Stopped);
    assert!(
        took < Duration::from_secs(3),
        "grace 2 s + 1 s, took {took:?}"
    );
    wait_async("its container removed", Duration::from_secs(10), || async {
        containers_of(host, run.as_str()).trim().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_finish_fail_and_stop_on_docker() {
    let Some(host) = engine("LIFTOFF_TEST_DOCKER") else {
        return;
    };
    image_runs_finish_fail_and_stop(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_finish_fail_and_stop_on_podman() {
    let Some(host) = engine("LIFTOFF_TEST_PODMAN") else {
        return;
    };
    image_runs_finish_fail_and_stop(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_args_and_missing_images_are_named() {
    let Some(host) = engine("LIFTOFF_TEST_DOCKER") else {
        return;
    };
    let server = ServerProcess::start();
    let client = server.client();
    // A queue whose template would escape the sandbox is never made.
    let said = common::refused(&server.run(&[
        "queue",
        "create",
        "bad",
        "--resource",
        "local-container",
        "--variable",
        r#"mem={"type": "string", "default": "1g"}"#,
        "--config",
        r#"{"privileged": true, "memory": "{{mem}}"}"#,
    ]));
    assert!(said.contains("config.privileged"), "{said}");
    assert!(
        !said.contains("config.memory"),
        "a placeholder is fine: {said}"
    );
    container_queue(&client, "box", json!({})).await;
    // Nor is an item asking for a host path.
    let mut spec = in_image(BUSYBOX, "true");
    spec.resource_args = serde_json::from_value(
        json!({"local-container": {"volume": "/:/host", "cap-add": "SYS_ADMIN"}}),
    )
    .unwrap();
    let err = client.enqueue("box", &spec).await.unwrap_err().to_string();
    assert!(
        err.contains("resource_args.cap-add") && err.contains("and 1 more"),
        "{err}"
    );
    spec.resource_args =
        serde_json::from_value(json!({"local-container": {"volume": "/:/host"}})).unwrap();
    let err = client.enqueue("box", &spec).await.unwrap_err().to_string();
    assert!(err.contains("resource_args.volume"), "{err}");
    // An image on a queue of local processes is refused at once.
    client
        .create_queue(&NewQueue::named("local"))
        .await
        .unwrap();
    let err = client
        .enqueue("local", &in_image(BUSYBOX, "true"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docker.docker_image") && err.contains("runs no images"),
        "{err}"
    );
    let items = client
        .list_items(&liftoff_types::api::ItemFilter::default())
        .await
        .unwrap();
    assert!(items.is_empty(), "nothing half-made: {items:?}");

    // An image no registry has fails as not started, with the engine's reason.
    let config = agent_config(server.dir.path(), &host, "");
    let state = server.dir.path().join("agent");
    let _agent = server.agent(
        &state,
        &["--queue", "box", "--config", config.to_str().unwrap()],
    );
    let registry = std::env::var("LIFTOFF_TEST_REGISTRY").unwrap_or("127.0.0.1:5555".into());
    let missing = format!("{registry}/liftoff-test/no-such-image:1");
    let id = client
        .enqueue("box", &in_image(&missing, "true"))
        .await
        .unwrap()
        .id;
    // An image the engine lacks is pulled from its registry, then runs.
    let pulled = format!("{registry}/liftoff-test/busybox:latest");
    let _ = Command::new("docker")
        .env("DOCKER_HOST", &host)
        .args(["rmi", "-f", &pulled])
        .output();
    let id_pulled = client
        .enqueue("box", &in_image(&pulled, "echo pulled and ran"))
        .await
        .unwrap()
        .id;
    let item = wait_ended(&client, id_pulled, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Finished, "{:?}", item.failure);
    assert!(output(&client, &item).await.contains("pulled and ran"));

    // A run past its memory limit is killed by the kernel, and said to be.
    let mut hungry = in_image(BUSYBOX, "exec dd if=/dev/zero of=/dev/null bs=100M count=1");
    hungry.resource_args =
        serde_json::from_value(json!({"local-container": {"memory": "32m", "memory-swap": "32m"}}))
            .unwrap();
    let hungry = client.enqueue("box", &hungry).await.unwrap().id;
    let item = wait_ended(&client, hungry, Duration::from_secs(30)).await;
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert!(failure.message.contains("OOMKilled"), "{failure:?}");
    assert_eq!(failure.phase, Phase::Run);

    let item = wait_ended(&client, id, Duration::from_secs(30)).await;
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert_eq!(failure.phase, Phase::Build, "{failure:?}");
    assert!(
        failure.message.contains("no-such-image") && failure.message.contains("pulling"),
        "{}",
        failure.message
    );
}

/// Numbers every 50 ms until the run's `go` file appears, then `done` and the exit code.
fn counting(code: i32) -> String {
    format!(
        "i=0; while [ ! -e /liftoff/go ]; do i=$((i+1)); echo $i; sleep 0.05; done; echo done; exit {code}"
    )
}

/// The lines of a counting run's output are 1, 2, 3, ... then `done`: none twice, none lost.
fn assert_counted(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"done"), "{text}");
    for (i, line) in lines[..lines.len() - 1].iter().enumerate() {
        assert_eq!(*line, (i + 1).to_string(), "line {i} of {text}");
    }
    assert!(lines.len() > 5, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_readopts_its_containers_without_losing_a_line() {
    let Some(host) = engine("LIFTOFF_TEST_DOCKER") else {
        return;
    };
    let server = ServerProcess::start();
    let client = server.client();
    container_queue(&client, "box", json!({})).await;
    let config = agent_config(server.dir.path(), &host, "");
    let state = server.dir.path().join("agent");
    let args = [
        "--queue",
        "box",
        "--max-jobs",
        "3",
        "--config",
        config.to_str().unwrap(),
    ];
    let mut agent = server.agent(&state, &args);
    let mut ids = Vec::new();
    for code in [0, 4, 6] {
        let spec = in_image(BUSYBOX, &counting(code));
        ids.push(client.enqueue("box", &spec).await.unwrap().id);
    }
    let mut runs = Vec::new();
    for id in &ids {
        let run = wait_running(&client, *id).await;
        // Output is flowing to the server before the kill.
        wait_async("some output shipped", Duration::from_secs(20), || async {
            let got = client.read_log(&run, 0).await.unwrap();
            String::from_utf8_lossy(&got).lines().count() >= 5
        })
        .await;
        runs.push(run);
    }
    agent.kill9();
    // Left by a run whose end was reported just before a crash cut its clean-up short: the
    // restarted agent's reconcile pass removes it.
    let label = docker(
        &host,
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"liftoff.agent\"}}",
            &format!("liftoff-{}", runs[0]),
        ],
    );
    let orphan = format!("liftoff-orphan{}", std::process::id());
    docker(
        &host,
        &[
            "create",
            "--name",
            &orphan,
            "--label",
            &format!("liftoff.agent={}", label.trim()),
            "--label",
            "liftoff.run-id=orphan1",
            BUSYBOX,
            "true",
        ],
    );
    // One ends while no agent watches: its exit is reported after the restart.
    // The container sees its run's `box/` as /liftoff.
    let go = |run: &liftoff_types::RunId| state.join("runs").join(run.as_str()).join("box/go");
    std::fs::write(go(&runs[0]), "").unwrap();
    wait_async(
        "the first container to exit",
        Duration::from_secs(20),
        || async {
            docker(
                &host,
                &[
                    "inspect",
                    "-f",
                    "{{.State.Status}}",
                    &format!("liftoff-{}", runs[0]),
                ],
            )
            .trim()
                == "exited"
        },
    )
    .await;
    let again = server.agent(&state, &args);
    common::wait_for("the runs re-adopted", Duration::from_secs(20), || {
        let log = again.log();
        runs.iter()
            .all(|r| log.contains(&format!("re-adopting run {r}")))
    });
    wait_async(
        "the leftover container removed",
        Duration::from_secs(20),
        || async {
            docker(
                &host,
                &["ps", "-a", "-q", "--filter", &format!("name={orphan}")],
            )
            .trim()
            .is_empty()
        },
    )
    .await;
    for run in &runs[1..] {
        std::fs::write(go(run), "").unwrap();
    }
    let mut codes = Vec::new();
    for id in &ids {
        let item = wait_ended(&client, *id, Duration::from_secs(60)).await;
        let text = output(&client, &item).await;
        assert!(text.ends_with("done\n"), "{item:?}\n{text}");
        assert_counted(&text);
        let run = client.get_run(&item.run_id.unwrap()).await.unwrap();
        codes.push(run.exit_code);
    }
    assert_eq!(codes, vec![Some(0), Some(4), Some(6)]);
    let all = client
        .list_runs(&liftoff_types::api::RunFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3, "nothing was started twice");
    for run in &runs {
        wait_async("the container removed", Duration::from_secs(10), || async {
            containers_of(&host, run.as_str()).trim().is_empty()
        })
        .await;
    }
}

/// Image ids of the images built for a job, one per build.
fn built_images(host: &str, job: &str) -> Vec<String> {
    let out = docker(
        host,
        &[
            "images",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=liftoff.job={job}"),
        ],
    );
    let mut ids: Vec<String> = out.lines().map(str::to_string).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn layers(host: &str, image: &str) -> Vec<String> {
    let out = docker(
        host,
        &["image", "inspect", "-f", "{{json .RootFS.Layers}}", image],
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_job_is_built_into_an_image_once_and_its_packages_layer_reused() {
    let Some(host) = engine("LIFTOFF_TEST_DOCKER") else {
        return;
    };
    let server = ServerProcess::start();
    let client = server.client();
    container_queue(&client, "box", json!({})).await;
    let registry = std::env::var("LIFTOFF_TEST_REGISTRY").unwrap_or("127.0.0.1:5555".into());
    let job = format!("trainer-{}", std::process::id());
    let extra =
        format!("builder:\n  type: docker\n  base_image: {PYTHON}\nregistry:\n  uri: {registry}\n");
    let config = agent_config(server.dir.path(), &host, &extra);
    let state = server.dir.path().join("agent");
    let _agent = server.agent(
        &state,
        &["--queue", "box", "--config", config.to_str().unwrap()],
    );
    let code = server.dir.path().join("proj");
    std::fs::create_dir_all(&code).unwrap();
    let train = "import json, os, wheel\nprint('v', os.environ['V'] if 'V' in os.environ else 1, json.loads(os.environ['LIFTOFF_CONFIG']))\nprint('venv', os.environ.get('VIRTUAL_ENV'))\n";
    std::fs::write(code.join("train.py"), train).unwrap();
    // Offline: a package the base image has, installed into the job's environment.
    std::fs::write(code.join("requirements.txt"), "--no-index\nwheel\n").unwrap();
    let create = |server: &ServerProcess| {
        ok(&server.run(&[
            "job",
            "create",
            "code",
            code.to_str().unwrap(),
            "--name",
            &job,
            "--entrypoint",
            "python3 train.py",
        ]))
    };
    let launch = |server: &ServerProcess, lr: &str| -> ItemId {
        let out = server.run(&[
            "launch",
            "-q",
            "box",
            "--job",
            &format!("{job}:latest"),
            "--config",
            &format!("lr={lr}"),
        ]);
        ok(&out).trim().parse().unwrap()
    };
    create(&server);
    let mut images = Vec::new();
    for lr in ["0.1", "0.2"] {
        let id = launch(&server, lr);
        let item = wait_ended(&client, id, Duration::from_secs(180)).await;
        assert_eq!(item.state, ItemState::Finished, "{:?}", item.failure);
        let text = output(&client, &item).await;
        assert!(text.contains(&format!("'lr': {lr}")), "{text}");
        assert!(text.contains("venv /opt/liftoff-venv"), "{text}");
        let run = client.get_run(&item.run_id.unwrap()).await.unwrap();
        images.push(run.handle["image"].as_str().unwrap().to_string());
    }
    assert_eq!(built_images(&host, &job).len(), 1, "built once, used twice");
    assert_eq!(images[0], images[1]);
    assert!(
        images[0].starts_with(&format!("{registry}/liftoff/")),
        "pushed: {}",
        images[0]
    );
    let catalog = Command::new("curl")
        .args([
            "-fsS",
            &format!("http://{registry}/v2/liftoff/{job}/tags/list"),
        ])
        .output()
        .unwrap();
    let catalog = String::from_utf8_lossy(&catalog.stdout);
    let tag = images[0].rsplit(':').next().unwrap();
    assert!(catalog.contains(tag), "{catalog}");

    // A change of requirements builds again.
    std::fs::write(
        code.join("requirements.txt"),
        "--no-index\nwheel\nsetuptools\n",
    )
    .unwrap();
    create(&server);
    let id = launch(&server, "0.3");
    let item = wait_ended(&client, id, Duration::from_secs(180)).await;
    assert_eq!(item.state, ItemState::Finished, "{:?}", item.failure);
    let with_setuptools = client.get_run(&item.run_id.unwrap()).await.unwrap().handle["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(built_images(&host, &job).len(), 2);

    // A change of code alone builds again on the same packages layer.
    std::fs::write(
        code.join("train.py"),
        format!("{train}print('second version')\n"),
    )
    .unwrap();
    create(&server);
    let id = launch(&server, "0.4");
    let item = wait_ended(&client, id, Duration::from_secs(180)).await;
    assert_eq!(item.state, ItemState::Finished, "{:?}", item.failure);
    assert!(output(&client, &item).await.contains("second version"));
    let code_only = client.get_run(&item.run_id.unwrap()).await.unwrap().handle["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(built_images(&host, &job).len(), 3);
    let (a, b) = (layers(&host, &with_setuptools), layers(&host, &code_only));
    assert_eq!(a.len(), b.len());
    assert_eq!(
        a[..a.len() - 1],
        b[..b.len() - 1],
        "all but the code's layer shared"
    );
    assert_ne!(a.last(), b.last());

    // A failed build fails the item in phase build, with pip's words in its log.
    std::fs::write(
        code.join("requirements.txt"),
        "--no-index\nno-such-package-here==1\n",
    )
    .unwrap();
    create(&server);
    let id = launch(&server, "0.5");
    let item = wait_ended(&client, id, Duration::from_secs(180)).await;
    assert_eq!(item.state, ItemState::Failed);
    assert_eq!(item.failure.as_ref().unwrap().phase, Phase::Build);
    let log = output(&client, &item).await;
    assert!(log.contains("no-such-package-here"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_serves_a_local_a_container_and_a_slurm_queue_at_once() {
    let Some(host) = engine("LIFTOFF_TEST_DOCKER") else {
        return;
    };
    let slurm = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !slurm {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but Slurm is not running"
        );
        return;
    }
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("cpu")).await.unwrap();
    container_queue(&client, "box", json!({})).await;
    let mut hpc = NewQueue::named("hpc");
    hpc.resource = ResourceType::Slurm;
    client.create_queue(&hpc).await.unwrap();
    // The container runner may hold one run at a time, beside the agent's 3.
    let config = agent_config(server.dir.path(), &host, "    max_jobs: 1\n");
    let state = server.dir.path().join("agent");
    let _agent = server.agent(
        &state,
        &[
            "--queue",
            "cpu",
            "--queue",
            "box",
            "--queue",
            "hpc",
            "--max-jobs",
            "3",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let where_am_i =
        "echo slurm=${SLURM_JOB_ID:-none}; test -d /liftoff && echo in-container || echo on-host";
    let blocker = client
        .enqueue("box", &in_image(BUSYBOX, &counting(0)))
        .await
        .unwrap()
        .id;
    let blocker_run = wait_running(&client, blocker).await;
    let mut ids = Vec::new();
    for queue in ["cpu", "box", "hpc"] {
        let spec = if queue == "box" {
            in_image(BUSYBOX, where_am_i)
        } else {
            LaunchSpec::command(vec!["sh".into(), "-c".into(), where_am_i.into()])
        };
        ids.push(client.enqueue(queue, &spec).await.unwrap().id);
    }
    for id in [ids[0], ids[2]] {
        wait_ended(&client, id, Duration::from_secs(60)).await;
    }
    // The local and Slurm runs came and went; the second container run still waits on the
    // server for the container runner's one place, not in this agent.
    let waiting = client.get_item(ids[1]).await.unwrap();
    assert_eq!(waiting.state, ItemState::Pending, "{waiting:?}");
    let go = state.join("runs").join(blocker_run.as_str()).join("box/go");
    std::fs::write(go, "").unwrap();
    let mut seen = Vec::new();
    for id in ids {
        let item = wait_ended(&client, id, Duration::from_secs(60)).await;
        assert_eq!(item.state, ItemState::Finished, "{:?}", item.failure);
        let run = client.get_run(&item.run_id.clone().unwrap()).await.unwrap();
        seen.push((output(&client, &item).await, run.handle.clone()));
    }
    assert!(
        seen[0].0.contains("slurm=none") && seen[0].0.contains("on-host"),
        "{:?}",
        seen[0]
    );
    assert!(seen[0].1.get("pid").is_some(), "{:?}", seen[0].1);
    assert!(seen[1].0.contains("in-container"), "{:?}", seen[1]);
    assert!(seen[1].1.get("container").is_some(), "{:?}", seen[1].1);
    assert!(
        !seen[2].0.contains("slurm=none") && seen[2].0.contains("on-host"),
        "{:?}",
        seen[2]
    );
    assert!(seen[2].1.get("job_id").is_some(), "{:?}", seen[2].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_container_is_removed_before_the_items_next_attempt_starts() {
    let Some(host) = engine("LIFTOFF_TEST_DOCKER") else {
        return;
    };
    let server = ServerProcess::start_with(&[
        "server",
        "--bind",
        "127.0.0.1:0",
        "--agent-timeout",
        "3",
        "--lost-grace",
        "4",
    ]);
    let client = server.client();
    let mut queue = NewQueue::named("box");
    queue.resource = ResourceType::Container;
    queue.requeue_lost = true;
    client.create_queue(&queue).await.unwrap();
    let dir = server.dir.path();
    let config = agent_config(dir, &host, "");
    let args = ["--queue", "box", "--config", config.to_str().unwrap()];
    let mut first = server.agent(&dir.join("a"), &args);
    let item = client
        .enqueue("box", &in_image(BUSYBOX, "sleep 300"))
        .await
        .unwrap()
        .id;
    let first_run = wait_running(&client, item).await;
    first.kill9();
    // The container outlives its agent; the agent that takes the next attempt (on the same
    // engine) removes it before it starts its own.
    let _second = server.agent(&dir.join("b"), &args);
    wait_async(
        "the next attempt to run",
        Duration::from_secs(60),
        || async {
            let Some(run) = client.get_item(item).await.unwrap().run_id else {
                return false;
            };
            run != first_run && client.get_run(&run).await.unwrap().state == RunState::Running
        },
    )
    .await;
    assert_eq!(
        containers_of(&host, first_run.as_str()).trim(),
        "",
        "the first attempt's container is still there beside the second"
    );
    let second_run = client.get_item(item).await.unwrap().run_id.unwrap();
    assert_ne!(containers_of(&host, second_run.as_str()).trim(), "");
    client.cancel_item(item).await.unwrap();
    wait_ended(&client, item, Duration::from_secs(30)).await;
}
