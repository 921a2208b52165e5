//! The Kubernetes runner end to end, against the stand-in API server
//! (`liftoff-kube-standin`, started in this process on a loopback port) whose node runs each
//! pod's container on the real Docker engine of `scripts/services.sh`
//! (`LIFTOFF_TEST_DOCKER`). A user's story: runs finish with their output, fail with their
//! code, stop leaving no pod, are named when they cannot be scheduled, lack their image or
//! run out of memory, come back after a preemption, and survive a killed agent; manifests
//! that would escape the sandbox are refused. The stand-in itself is checked with clients no
//! one here wrote: kubectl and the Python client.

mod common;

use common::{in_image, ok, output, wait_async, wait_ended, wait_running, ServerProcess};
use liftoff_client::Client;
use liftoff_kube_standin::{Config, Standin};
use liftoff_types::{ItemState, LaunchSpec, NewQueue, Phase, ResourceType, RunState};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "liftoff-test/busybox:latest";

/// The engine from the services script; without it the test is skipped, except under CI,
/// where it fails.
fn engine() -> Option<String> {
    match std::env::var("LIFTOFF_TEST_DOCKER") {
        Ok(host) if Path::new(host.trim_start_matches("unix://")).exists() => Some(host),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but LIFTOFF_TEST_DOCKER names no running engine (scripts/services.sh start)"
            );
            eprintln!("skipped: no LIFTOFF_TEST_DOCKER here (scripts/services.sh start)");
            None
        }
    }
}

/// The stand-in, with a bearer token required (`token`) or none: kubectl, as client-go does,
/// sends no token over plain HTTP, and the stand-in serves no TLS.
async fn standin_with(host: &str, dir: &Path, token: bool) -> (Standin, PathBuf) {
    let config = Config {
        token: token.then(|| "standin-token".into()),
        cpu_millis: 8000,
        docker_host: host.into(),
        network: "none".into(),
        bookmark_every: Duration::from_secs(2),
        ..Config::default()
    };
    let standin = Standin::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(&path, standin.kubeconfig("ml")).unwrap();
    (standin, path)
}

async fn standin(host: &str, dir: &Path) -> (Standin, PathBuf) {
    standin_with(host, dir, true).await
}

fn agent_config(dir: &Path, kubeconfig: &Path) -> PathBuf {
    let path = dir.join("agent.yaml");
    let text = format!(
        "stopped_run_timeout: 2\nstart_timeout: 12\nrunners:\n  kubernetes:\n    kubeconfig: {}\n    image_pull_grace: 2\n",
        kubeconfig.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn kube_queue(client: &Client, name: &str, config: Value) {
    let mut queue = NewQueue::named(name);
    queue.resource = ResourceType::Kubernetes;
    queue.config = config;
    client.create_queue(&queue).await.unwrap();
}

fn with_pod_spec(mut spec: LaunchSpec, pod: Value) -> LaunchSpec {
    spec.resource_args =
        serde_json::from_value(json!({"kubernetes": {"spec": {"template": {"spec": pod}}}}))
            .unwrap();
    spec
}

/// The stand-in's objects of a kind that carry a run's id.
fn objects_of(standin: &Standin, plural: &str, run: &str) -> Vec<Value> {
    let kind = liftoff_kube_standin::store::Kind::from_plural(plural).unwrap();
    standin
        .shared
        .lock()
        .list(kind, None)
        .filter(|o| o["metadata"]["annotations"]["liftoff.run-id"] == run)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_runs_finish_fail_stop_and_say_why_they_cannot_start() {
    let Some(host) = engine() else { return };
    let server = ServerProcess::start();
    let client = server.client();
    let (standin, kubeconfig) = standin(&host, server.dir.path()).await;
    kube_queue(
        &client,
        "k8s",
        json!({"metadata": {"labels": {"team": "vision"}}}),
    )
    .await;
    let config = agent_config(server.dir.path(), &kubeconfig);
    let state = server.dir.path().join("agent");
    let agent = server.agent(
        &state,
        &[
            "--queue",
            "k8s",
            "--max-jobs",
            "8",
            "--config",
            config.to_str().unwrap(),
        ],
    );

    let mut hello = in_image(
        BUSYBOX,
        "echo hello from $LIFTOFF_RUN_ID; echo config=$LIFTOFF_CONFIG; echo oops >&2; \
         echo tokens=$(env | grep -c TOKEN=lft_)",
    );
    hello.overrides.run_config = serde_json::from_value(json!({"lr": 0.5})).unwrap();
    let hello = client.enqueue("k8s", &hello).await.unwrap().id;
    let three = client
        .enqueue("k8s", &in_image(BUSYBOX, "echo failing; exit 3"))
        .await
        .unwrap()
        .id;
    let silent = client
        .enqueue("k8s", &in_image(BUSYBOX, "exec sleep 1000"))
        .await
        .unwrap()
        .id;
    let missing = client
        .enqueue("k8s", &in_image("liftoff-test/no-such-image:1", "true"))
        .await
        .unwrap()
        .id;
    let missing_at = Instant::now();
    let big = with_pod_spec(
        in_image(BUSYBOX, "true"),
        json!({"containers": [{"resources": {"requests": {"cpu": "64"}}}]}),
    );
    let big = client.enqueue("k8s", &big).await.unwrap().id;
    let hungry = with_pod_spec(
        in_image(BUSYBOX, "exec dd if=/dev/zero of=/dev/null bs=100M count=1"),
        json!({"containers": [{"resources": {"limits": {"memory": "32Mi"}}}]}),
    );
    let hungry = client.enqueue("k8s", &hungry).await.unwrap().id;

    // A run finishes with its output (both streams), its config, and no agent token.
    let item = wait_ended(&client, hello, Duration::from_secs(120)).await;
    assert_eq!(item.state, ItemState::Finished, "{item:?}\n{}", agent.log());
    let text = output(&client, &item).await;
    let run = item.run_id.clone().unwrap();
    assert!(text.contains(&format!("hello from {run}")), "{text}");
    assert!(text.contains(r#"config={"lr":0.5}"#), "{text}");
    assert!(text.contains("oops"), "stderr too: {text}");
    assert!(text.contains("tokens=0\n"), "no agent token inside: {text}");
    // Its Job carried the queue's labels; once reported, its Job, pod and Secret are gone.
    wait_async(
        "the finished run's objects deleted",
        Duration::from_secs(20),
        || async {
            ["jobs", "pods", "secrets"]
                .iter()
                .all(|k| objects_of(&standin, k, run.as_str()).is_empty())
        },
    )
    .await;

    let item = wait_ended(&client, three, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Failed);
    let r = client.get_run(&item.run_id.clone().unwrap()).await.unwrap();
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(item.failure.unwrap().phase, Phase::Run);

    // A missing image fails in seconds (the pull grace), not at the start timeout.
    let item = wait_ended(&client, missing, Duration::from_secs(30)).await;
    let took = missing_at.elapsed();
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert_eq!(failure.phase, Phase::Build, "{failure:?}");
    assert!(
        failure.message.contains("ErrImagePull") || failure.message.contains("ImagePullBackOff"),
        "{}",
        failure.message
    );
    assert!(
        took < Duration::from_secs(11),
        "start timeout is 12 s, took {took:?}"
    );

    // A pod too big for the node is starting with the scheduler's words, then fails at the
    // start timeout.
    wait_async(
        "the big run to say why it waits",
        Duration::from_secs(30),
        || async {
            match client.get_item(big).await.unwrap().run_id {
                Some(run) => {
                    let r = client.get_run(&run).await.unwrap();
                    r.state == RunState::Starting
                        && r.message
                            .as_deref()
                            .is_some_and(|m| m.contains("Insufficient cpu"))
                }
                None => false,
            }
        },
    )
    .await;
    let item = wait_ended(&client, big, Duration::from_secs(40)).await;
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert!(
        failure.message.contains("Unschedulable"),
        "{}",
        failure.message
    );

    let item = wait_ended(&client, hungry, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert!(failure.message.contains("OOMKilled"), "{failure:?}");

    // A stop ends the Job with its pods: none is left, nor a container.
    // Its pod (whose `sleep`, as PID 1, ignores SIGTERM) is killed at the stop's grace
    // (2 s), not at the pod's own 30 s, which the garbage collector would give it.
    let run = wait_running(&client, silent).await;
    // Its Secret is its Job's dependent: the cluster deletes it with the Job even if the
    // agent never comes back.
    let job = objects_of(&standin, "jobs", run.as_str()).remove(0);
    let secret = objects_of(&standin, "secrets", run.as_str()).remove(0);
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"], job["metadata"]["uid"],
        "{secret}"
    );
    assert!(secret["data"]["LIFTOFF_RUN_TOKEN"].is_string(), "{secret}");
    let asked = Instant::now();
    ok(&server.run(&["stop", run.as_str()]));
    let item = wait_ended(&client, silent, Duration::from_secs(60)).await;
    let took = asked.elapsed();
    assert_eq!(item.state, ItemState::Stopped);
    assert!(took < Duration::from_secs(10), "grace 2 s, took {took:?}");
    wait_async(
        "no pod of the stopped run",
        Duration::from_secs(20),
        || async { objects_of(&standin, "pods", run.as_str()).is_empty() },
    )
    .await;

    // Watched, not polled: per run a Secret and a Job create, a fence list, one log stream
    // (and at most a reconnect), deletes; no gets of pods, and lists of pods only for the
    // watch's first list and the two stops (the stopped run, the one past its start
    // timeout), which delete the run's pods with the stop's grace.
    let requests = standin.shared.requests();
    let count = |k: &str| requests.get(k).copied().unwrap_or(0);
    assert_eq!(count("create jobs"), 6, "{requests:?}");
    assert_eq!(count("patch secrets"), 6, "{requests:?}");
    assert_eq!(count("get pods"), 0, "{requests:?}");
    assert!(count("list pods") <= 3, "{requests:?}");
    assert_eq!(count("delete pods"), 2, "{requests:?}");
    assert!(count("watch pods") <= 4, "{requests:?}");
    drop(agent);
    standin.stop().await;
}

/// Another kind than a Job (here a JobSet, the stand-in's custom resource) is made as a
/// custom object: each pod template runs the run, and the object's conditions end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobset_runs_as_a_custom_object_and_ends_by_its_conditions() {
    let Some(host) = engine() else { return };
    let server = ServerProcess::start();
    let client = server.client();
    let (standin, kubeconfig) = standin(&host, server.dir.path()).await;
    let pod = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "trainer"}]}});
    kube_queue(
        &client,
        "sets",
        json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "spec": {"replicatedJobs": [{"name": "workers",
                "template": {"spec": {"backoffLimit": 0, "template": pod}}}]}}),
    )
    .await;
    let config = agent_config(server.dir.path(), &kubeconfig);
    let state = server.dir.path().join("agent");
    let agent = server.agent(
        &state,
        &["--queue", "sets", "--config", config.to_str().unwrap()],
    );
    let fine = client
        .enqueue("sets", &in_image(BUSYBOX, "echo from a jobset replica"))
        .await
        .unwrap()
        .id;
    let five = client
        .enqueue("sets", &in_image(BUSYBOX, "exit 5"))
        .await
        .unwrap()
        .id;
    let item = wait_ended(&client, fine, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Finished, "{item:?}\n{}", agent.log());
    assert!(output(&client, &item)
        .await
        .contains("from a jobset replica"));
    let run = item.run_id.clone().unwrap();
    let item = wait_ended(&client, five, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Failed, "{item:?}");
    let r = client.get_run(&item.run_id.clone().unwrap()).await.unwrap();
    assert_eq!(r.exit_code, Some(5), "{r:?}");
    wait_async(
        "the JobSet, its pods and Secret deleted",
        Duration::from_secs(20),
        || async {
            ["jobsets", "pods", "secrets"]
                .iter()
                .all(|k| objects_of(&standin, k, run.as_str()).is_empty())
        },
    )
    .await;
    assert_eq!(standin.shared.requests()["create jobsets"], 2);
    standin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_that_escape_the_sandbox_are_refused_naming_the_path() {
    let server = ServerProcess::start();
    let client = server.client();
    let mut queue = NewQueue::named("host");
    queue.resource = ResourceType::Kubernetes;
    queue.config = json!({"spec": {"template": {"spec": {"hostNetwork": true}}}});
    let err = client.create_queue(&queue).await.unwrap_err().to_string();
    assert!(
        err.contains("config.spec.template.spec.hostNetwork"),
        "{err}"
    );
    kube_queue(&client, "k8s", json!({})).await;
    let spec = with_pod_spec(
        in_image(BUSYBOX, "true"),
        json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
    );
    let err = client.enqueue("k8s", &spec).await.unwrap_err().to_string();
    assert!(
        err.contains("resource_args.spec.template.spec.volumes[0].hostPath") && err.contains("422"),
        "{err}"
    );
    assert!(client
        .list_items(&liftoff_types::api::ItemFilter {
            queue: Some("k8s".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_pod_is_requeued_and_a_killed_agent_readopts_its_pods() {
    let Some(host) = engine() else { return };
    let server = ServerProcess::start();
    let client = server.client();
    let (standin, kubeconfig) = standin(&host, server.dir.path()).await;
    kube_queue(&client, "k8s", json!({})).await;
    let config = agent_config(server.dir.path(), &kubeconfig);
    let state = server.dir.path().join("agent");
    let args = [
        "--queue",
        "k8s",
        "--max-jobs",
        "8",
        "--config",
        config.to_str().unwrap(),
    ];
    let mut agent = server.agent(&state, &args);

    // The API server ends every watch and has compacted past the versions they were at:
    // the runner's watches get 410 Gone, list again, and still see the run end.
    let later = client
        .enqueue("k8s", &in_image(BUSYBOX, "sleep 2; echo still heard"))
        .await
        .unwrap()
        .id;
    wait_running(&client, later).await;
    let lists = standin.shared.requests()["list pods"];
    standin.end_watches_and_compact();
    let item = wait_ended(&client, later, Duration::from_secs(60)).await;
    assert_eq!(item.state, ItemState::Finished, "{item:?}");
    assert!(output(&client, &item).await.contains("still heard"));
    assert!(
        standin.shared.requests()["list pods"] > lists,
        "no relist after 410"
    );

    // Preempted on its first attempt, it runs again and finishes.
    let once = client
        .enqueue(
            "k8s",
            &in_image(
                BUSYBOX,
                "if [ \"$LIFTOFF_ATTEMPT\" = 1 ]; then exec sleep 1000; fi; echo second attempt",
            ),
        )
        .await
        .unwrap()
        .id;
    let run = wait_running(&client, once).await;
    let pod = objects_of(&standin, "pods", run.as_str()).remove(0);
    let name = pod["metadata"]["name"].as_str().unwrap();
    let url = format!(
        "{}/standin/namespaces/ml/pods/{name}/preempt",
        standin.url()
    );
    let answer = reqwest::Client::new()
        .post(url)
        .bearer_auth("standin-token")
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let item = wait_ended(&client, once, Duration::from_secs(90)).await;
    assert_eq!(item.state, ItemState::Finished, "{item:?}\n{}", agent.log());
    assert!(output(&client, &item).await.contains("second attempt"));
    assert_eq!(
        item.retries.get(&liftoff_types::RetryCause::Preempted),
        Some(&1),
        "{item:?}"
    );

    // Three pods running, the agent killed and started again: each run is re-adopted, its
    // output whole, once, and no Job made twice.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.4; done";
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            client
                .enqueue("k8s", &in_image(BUSYBOX, script))
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids {
        wait_running(&client, *id).await;
    }
    let made = standin.shared.requests()["create jobs"];
    agent.kill9();
    let _agent = server.agent(&state, &args);
    let want: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    for id in ids {
        let item = wait_ended(&client, id, Duration::from_secs(90)).await;
        assert_eq!(item.state, ItemState::Finished, "{item:?}");
        assert!(item.attempts == 0 && item.retries.is_empty(), "{item:?}");
        assert_eq!(output(&client, &item).await, want);
    }
    assert_eq!(
        standin.shared.requests()["create jobs"],
        made,
        "a Job made twice"
    );
    standin.stop().await;
}

/// kubectl and the Python client (W&B's own library) against the stand-in, as against a
/// cluster: create a Job, get and describe its pod, read its log, watch it end, delete it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_the_python_client_take_the_standin_for_a_cluster() {
    let Some(host) = engine() else { return };
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let have_python = Command::new("/usr/bin/python3")
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    let have_kubectl = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok();
    if !(have_python && have_kubectl) {
        assert!(
            !ci,
            "CI=true but kubectl or python3-kubernetes is missing (scripts/services.sh start)"
        );
        eprintln!("skipped: kubectl or python3-kubernetes missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (standin, kubeconfig) = standin_with(&host, dir.path(), false).await;
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: hello}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {BUSYBOX}\n        command: [sh, -c, 'echo hi from kubectl; sleep 1000']\n"
        ),
    )
    .unwrap();
    let (done, said) = kubectl(&["create", "--validate=false", "-f", job.to_str().unwrap()]);
    assert!(done && said.contains("job.batch/hello created"), "{said}");
    let mut pod = String::new();
    wait_async(
        "kubectl to list the running pod",
        Duration::from_secs(30),
        || {
            let (_, said) = kubectl(&[
                "get",
                "pods",
                "-l",
                "job-name=hello",
                "-o",
                "jsonpath={.items[0].metadata.name} {.items[0].status.phase}",
            ]);
            pod = said
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            async move { said.ends_with("Running") }
        },
    )
    .await;
    let (done, said) = kubectl(&["get", "pods"]);
    assert!(done && said.contains(&pod), "{said}");
    let (done, said) = kubectl(&["describe", "pod", &pod]);
    assert!(
        done && said.contains("Controlled By:  Job/hello") && said.contains("Running"),
        "{said}"
    );
    let (done, said) = kubectl(&["logs", &pod]);
    assert!(done && said.contains("hi from kubectl"), "{said}");
    // kubectl's delete cascades in the background and waits until the Job is gone.
    let (done, said) = kubectl(&["delete", "job", "hello"]);
    assert!(done && said.contains("deleted"), "{said}");
    wait_async("the pod gone with its Job", Duration::from_secs(20), || {
        let (_, said) = kubectl(&["get", "pods", "-o", "name"]);
        let gone = !said.contains(&pod);
        async move { gone }
    })
    .await;

    let script = format!(
        r#"
import sys
from kubernetes import client, config, watch
config.load_kube_config(config_file={kubeconfig:?})
batch, core = client.BatchV1Api(), client.CoreV1Api()
job = client.V1Job(metadata=client.V1ObjectMeta(generate_name="py-"),
    spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(
        spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
            name="main", image={BUSYBOX:?}, command=["sh", "-c", "echo from python; exit 4"])]))))
made = batch.create_namespaced_job("ml", job)
name = made.metadata.name
assert name.startswith("py-") and len(name) == 8, name
w = watch.Watch()
for event in w.stream(core.list_namespaced_pod, "ml", label_selector="job-name=" + name, timeout_seconds=60):
    pod = event["object"]
    if pod.status.phase in ("Succeeded", "Failed"):
        code = pod.status.container_statuses[0].state.terminated.exit_code
        w.stop()
        break
log = core.read_namespaced_pod_log(pod.metadata.name, "ml")
done = batch.read_namespaced_job(name, "ml")
print(pod.status.phase, code, log.strip(), done.status.conditions[-1].type)
batch.delete_namespaced_job(name, "ml", propagation_policy="Background")
try:
    core.read_namespaced_pod("nope", "ml")
except client.exceptions.ApiException as e:
    print("missing", e.status)
"#,
        kubeconfig = kubeconfig.display().to_string(),
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Failed 4 from python Failed"), "{said}");
    assert!(said.contains("missing 404"), "{said}");
    standin.stop().await;
}
