//! End-to-end jobs: code, git and image jobs created with `liftoff job create`, launched with
//! `--job` and `--spec`, run by a real agent; environments built once; unsafe archives and
//! bad configs refused; priorities and templates as the runner sees them.

mod common;

use common::{ok, wait_async, ServerProcess};
use liftoff_client::Client;
use liftoff_types::{ItemId, ItemState, LaunchSpec, NewQueue, Phase, Priority};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TRAIN: &str = r#"
import json, os, sys
print("config=" + json.dumps(json.loads(os.environ["LIFTOFF_CONFIG"]), sort_keys=True))
print("args=" + " ".join(sys.argv[1:]))
print("files=" + ",".join(sorted(os.listdir("."))))
print("prefix=" + sys.prefix)
"#;

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn line<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {output}"))
}

async fn wait_ended(client: &Client, id: ItemId) -> liftoff_types::Item {
    common::wait_ended(client, id, Duration::from_secs(60)).await
}

fn item_id(out: &std::process::Output) -> ItemId {
    ok(out).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_job_runs_with_overrides_merged_over_its_defaults_one_version_per_content() {
    let up = ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"]);
    let dir = up.dir.path().join("proj");
    write(&dir.join("train.py"), TRAIN);
    write(&dir.join(".gitignore"), "checkpoints/\n");
    write(&dir.join("checkpoints/big.bin"), "not uploaded");
    write(
        &dir.join("../defaults.yaml"),
        "lr: 0.1\nmodel: {width: 128, depth: 4}\n",
    );
    let d = dir.to_str().unwrap();
    let defaults = up.dir.path().join("defaults.yaml");
    let create = |entry: &str| {
        up.run(&[
            "job",
            "create",
            "code",
            d,
            "--name",
            "train",
            "--entrypoint",
            entry,
            "--config-file",
            defaults.to_str().unwrap(),
            "-o",
            "json",
        ])
    };
    let first: serde_json::Value =
        serde_json::from_str(&ok(&create("python3 train.py --epochs 2"))).unwrap();
    assert_eq!(
        (first["job"]["version"].as_u64(), first["created"].as_bool()),
        (Some(0), Some(true))
    );
    let again: serde_json::Value =
        serde_json::from_str(&ok(&create("python3 train.py --epochs 2"))).unwrap();
    assert_eq!(
        (again["job"]["version"].as_u64(), again["created"].as_bool()),
        (Some(0), Some(false))
    );
    let blobs = walk_files(&up.data_dir().join("artifacts"));
    assert_eq!(blobs, 1, "the same directory twice is one blob");
    let changed: serde_json::Value =
        serde_json::from_str(&ok(&create("python3 train.py --epochs 3"))).unwrap();
    assert_eq!(
        changed["job"]["version"].as_u64(),
        Some(1),
        "a new entrypoint is a new version"
    );
    assert_eq!(
        walk_files(&up.data_dir().join("artifacts")),
        1,
        "same content, same blob"
    );

    let out = ok(&up.run(&[
        "launch",
        "--wait",
        "--job",
        "train:v0",
        "--config",
        "model.width=256",
        "--",
        "--extra",
    ]));
    assert_eq!(
        line(&out, "config"),
        r#"{"lr": 0.1, "model": {"depth": 4, "width": 256}}"#
    );
    assert_eq!(line(&out, "args"), "--epochs 2 --extra");
    let files = line(&out, "files");
    assert!(
        files.contains("train.py") && !files.contains("checkpoints"),
        "{files}"
    );

    // A W&B launch spec, as W&B writes it (entity/project path, numeric priority).
    let spec = up.dir.path().join("spec.json");
    write(
        &spec,
        r#"{"job": "team/proj/train:latest", "entity": "team", "project": "proj",
            "resource": "local-process", "resource_args": {"local-process": {}},
            "overrides": {"run_config": {"lr": 0.2}, "args": ["--from-spec"]}, "priority": 1}"#,
    );
    let out = ok(&up.run(&["launch", "--wait", "--spec", spec.to_str().unwrap()]));
    assert_eq!(
        line(&out, "config"),
        r#"{"lr": 0.2, "model": {"depth": 4, "width": 128}}"#
    );
    assert_eq!(line(&out, "args"), "--epochs 3 --from-spec");
    let listed = ok(&up.run(&["job", "show", "train"]));
    assert!(
        listed.contains("train:v0") && listed.contains("train:v1"),
        "{listed}"
    );
}

fn walk_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        n += if p.is_dir() { walk_files(&p) } else { 1 };
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_breaks_the_jobs_schema_is_refused_naming_every_violation() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    write(&dir.join("code/train.py"), TRAIN);
    write(
        &dir.join("schema.json"),
        r#"{"type": "object", "required": ["epochs"], "additionalProperties": false,
            "properties": {"lr": {"type": "number", "minimum": 0, "maximum": 1},
                           "epochs": {"type": "integer", "minimum": 1},
                           "opt": {"enum": ["adam", "sgd"]}}}"#,
    );
    ok(&server.run(&[
        "job",
        "create",
        "code",
        dir.join("code").to_str().unwrap(),
        "--name",
        "t",
        "--entrypoint",
        "python3 train.py",
        "--schema",
        dir.join("schema.json").to_str().unwrap(),
    ]));
    let mut spec = LaunchSpec {
        job: Some("t".into()),
        ..LaunchSpec::default()
    };
    spec.overrides.run_config = serde_json::json!({"lr": 3, "opt": "rmsprop", "colour": "red"})
        .as_object()
        .unwrap()
        .clone();
    let e = client.enqueue("q", &spec).await.unwrap_err();
    let liftoff_client::ClientError::Api { status, body } = e else {
        panic!("{e}")
    };
    assert_eq!(status.as_u16(), 422);
    let fields: Vec<&str> = body.error.fields.iter().map(|f| f.field.as_str()).collect();
    for want in [
        "overrides.run_config.epochs",
        "overrides.run_config.lr",
        "overrides.run_config.opt",
        "overrides.run_config.colour",
    ] {
        assert!(fields.contains(&want), "{want} in {fields:?}");
    }
    assert!(client
        .list_items(&Default::default())
        .await
        .unwrap()
        .is_empty());
    // The CLI says it in one line and exits non-zero.
    let out = server.run(&["launch", "-q", "q", "--job", "t", "--config", "epochs=0"]);
    let err = common::refused(&out);
    assert!(err.contains("epochs"), "{err}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_job_runs_the_commit_it_names() {
    let up = ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"]);
    let repo = up.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(
        &repo.join("run.py"),
        "print('msg=' + open('msg.txt').read().strip())\n",
    );
    write(&repo.join("msg.txt"), "one\n");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    write(&repo.join("msg.txt"), "two\n");
    git(&repo, &["commit", "-q", "-am", "two"]);
    let r = repo.to_str().unwrap();
    ok(&up.run(&[
        "job",
        "create",
        "git",
        r,
        "--commit",
        &first,
        "--name",
        "g1",
        "--entrypoint",
        "python3 run.py",
    ]));
    let url = format!("file://{r}");
    ok(&up.run(&[
        "job",
        "create",
        "git",
        &url,
        "--ref",
        "main",
        "--name",
        "g2",
        "--entrypoint",
        "python3 run.py",
    ]));
    let out = ok(&up.run(&["launch", "--wait", "--job", "g1"]));
    assert_eq!(
        line(&out, "msg"),
        "one",
        "the commit named, not the branch's head"
    );
    let out = ok(&up.run(&["launch", "--wait", "--job", "g2"]));
    assert_eq!(line(&out, "msg"), "two");
    // The pinned commit is in the job's version: a later commit changes nothing.
    let shown = ok(&up.run(&["job", "show", "g1", "-o", "json"]));
    assert!(shown.contains(&first), "{shown}");
    let bad = up.run(&[
        "job",
        "create",
        "git",
        r,
        "--commit",
        "deadbeef",
        "--entrypoint",
        "x",
    ]);
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_job_is_refused_at_launch_on_a_queue_that_runs_no_images() {
    let up = ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"]);
    ok(&up.run(&[
        "job",
        "create",
        "image",
        "python:3.11-slim",
        "--entrypoint",
        "python -c 'print(1)'",
    ]));
    let listed = ok(&up.run(&["job", "list"]));
    assert!(
        listed.contains("python:v0") && listed.contains("python:3.11-slim"),
        "{listed}"
    );
    // The default queue runs local processes: the launch is refused, nothing is queued.
    let said = common::refused(&up.run(&["launch", "--job", "python"]));
    assert!(
        said.contains("job") && said.contains("runs no images") && said.contains("container"),
        "{said}"
    );
    let items = up
        .client()
        .list_items(&liftoff_types::api::ItemFilter::default())
        .await
        .unwrap();
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_is_built_once_and_a_failed_build_fails_with_its_log() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    write(&dir.join("good/train.py"), TRAIN);
    // `pip` is in every new environment: installing it needs no network.
    write(&dir.join("good/requirements.txt"), "pip\n");
    write(&dir.join("bad/train.py"), TRAIN);
    write(
        &dir.join("bad/requirements.txt"),
        "no-such-package-for-liftoff==1.0\n",
    );
    for (name, sub) in [("good", "good"), ("bad", "bad")] {
        ok(&server.run(&[
            "job",
            "create",
            "code",
            dir.join(sub).to_str().unwrap(),
            "--name",
            name,
            "--entrypoint",
            "python train.py",
        ]));
    }
    // No index: a build must never reach the network from a test.
    let state = dir.join("agent");
    let _agent = server.agent_with_env(
        &state,
        &["--queue", "q", "--max-jobs", "2"],
        &[("PIP_NO_INDEX", "1")],
    );
    let mut prefixes = Vec::new();
    // Two at once wait for one build; a third comes later and finds it made.
    let a = item_id(&server.run(&["launch", "-q", "q", "--job", "good"]));
    let b = item_id(&server.run(&["launch", "-q", "q", "--job", "good"]));
    for id in [a, b] {
        let item = wait_ended(&client, id).await;
        assert_eq!(item.state, ItemState::Finished, "{:?}", item.failure);
        let out = client
            .read_log(item.run_id.as_ref().unwrap(), 0)
            .await
            .unwrap();
        prefixes.push(line(&String::from_utf8_lossy(&out), "prefix").to_string());
    }
    let c = item_id(&server.run(&["launch", "-q", "q", "--job", "good"]));
    let item = wait_ended(&client, c).await;
    let out = client
        .read_log(item.run_id.as_ref().unwrap(), 0)
        .await
        .unwrap();
    prefixes.push(line(&String::from_utf8_lossy(&out), "prefix").to_string());
    assert!(
        prefixes.iter().all(|p| p == &prefixes[0]),
        "one environment: {prefixes:?}"
    );
    assert!(
        prefixes[0].starts_with(state.join("cache/env").to_str().unwrap()),
        "{prefixes:?}"
    );
    let envs = std::fs::read_dir(state.join("cache/env")).unwrap().count();
    assert_eq!(envs, 1, "built once");

    let id = item_id(&server.run(&["launch", "-q", "q", "--job", "bad"]));
    let item = wait_ended(&client, id).await;
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert_eq!(failure.phase, Phase::Build, "{}", failure.message);
    assert!(failure.files.contains(&"build.log".to_string()));
    let log = client.item_file(id, "build.log").await.unwrap();
    assert!(log.contains("no-such-package-for-liftoff"), "{log}");
    // pip's own words are in the message, `show` prints them, `logs` prints the build log.
    assert!(
        failure.message.contains("no-such-package-for-liftoff"),
        "{}",
        failure.message
    );
    let shown = common::ok(&server.run(&["show", &id.to_string()]));
    assert!(shown.contains("no-such-package-for-liftoff"), "{shown}");
    let logs = common::ok(&server.run(&["logs", &id.to_string()]));
    assert!(logs.contains("no-such-package-for-liftoff"), "{logs}");
    assert_eq!(
        std::fs::read_dir(state.join("cache/env")).unwrap().count(),
        1,
        "no half-built environment left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_that_escapes_is_refused_and_writes_nothing_outside() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    let evil = dir.join("evil.tar.gz");
    let made = Command::new("python3")
        .arg("-c")
        .arg(
            "import io, sys, tarfile\n\
             t = tarfile.open(sys.argv[1], 'w:gz')\n\
             for name in ['train.py', '../../../escaped.txt']:\n\
             \x20   data = b'print(1)\\n'\n\
             \x20   info = tarfile.TarInfo(name); info.size = len(data)\n\
             \x20   t.addfile(info, io.BytesIO(data))\n\
             link = tarfile.TarInfo('out'); link.type = tarfile.SYMTYPE; link.linkname = '/etc'\n\
             t.addfile(link)\n\
             t.close()\n",
        )
        .arg(&evil)
        .status()
        .unwrap();
    assert!(made.success());
    let bytes = std::fs::read(&evil).unwrap();
    let digest = format!("sha256:{}", liftoff_artifacts::Digest::of(&bytes).as_str());
    client.upload_artifact(&digest, bytes).await.unwrap();
    let job = liftoff_types::JobSpec {
        kind: liftoff_types::JobKind::Code,
        source: liftoff_types::job::JobSource {
            digest: Some(digest.clone()),
            repo: None,
            commit: None,
            image: None,
        },
        entrypoint: vec!["python3".into(), "train.py".into()],
        default_config: Default::default(),
        input_schema: None,
    };
    client.create_job_version("evil", &job).await.unwrap();
    // A digest that does not match the body is refused.
    let wrong = client
        .upload_artifact(&digest, b"other".to_vec())
        .await
        .unwrap_err();
    assert_eq!(wrong.status().map(|s| s.as_u16()), Some(422));
    let state = dir.join("agent");
    let _agent = server.agent(&state, &["--queue", "q"]);
    let spec = LaunchSpec {
        job: Some("evil".into()),
        ..LaunchSpec::default()
    };
    let id = client.enqueue("q", &spec).await.unwrap().id;
    let item = wait_ended(&client, id).await;
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert_eq!(failure.phase, Phase::Build);
    assert!(failure.message.contains("refused"), "{}", failure.message);
    let mut found = Vec::new();
    find(dir, "escaped.txt", &mut found);
    assert!(found.is_empty(), "nothing written outside: {found:?}");
    let run = item.run_id.unwrap();
    assert!(
        !state.join("runs").join(run.as_str()).join("work").exists(),
        "nothing half-unpacked"
    );
}

fn find(dir: &Path, name: &str, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.file_name().is_some_and(|n| n == name) {
            out.push(p.clone());
        }
        if p.is_dir() && !p.is_symlink() {
            find(&p, name, out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_item_enqueued_after_ten_low_ones_starts_next() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    let order = dir.join("order");
    let go = dir.join("go");
    let _agent = server.agent(&dir.join("agent"), &["--queue", "q", "--max-jobs", "1"]);
    let blocker = LaunchSpec::command(vec![
        "sh".into(),
        "-c".into(),
        format!("while [ ! -e {} ]; do sleep 0.02; done", go.display()),
    ]);
    let b = client.enqueue("q", &blocker).await.unwrap().id;
    wait_async("the blocker to run", Duration::from_secs(20), || async {
        client.get_item(b).await.unwrap().state == ItemState::Claimed
    })
    .await;
    let mut ids = Vec::new();
    for (tag, priority) in
        std::iter::repeat_n(("low", Priority::Low), 10).chain([("critical", Priority::Critical)])
    {
        let mut spec = LaunchSpec::command(vec![
            "sh".into(),
            "-c".into(),
            format!("echo {tag} >> {}", order.display()),
        ]);
        spec.priority = Some(priority);
        ids.push(client.enqueue("q", &spec).await.unwrap().id);
    }
    std::fs::write(&go, "").unwrap();
    for id in ids {
        wait_ended(&client, id).await;
    }
    let order = std::fs::read_to_string(&order).unwrap();
    assert_eq!(order.lines().next(), Some("critical"), "{order}");
    assert_eq!(order.lines().count(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_variables_and_macros_reach_the_runner() {
    let up = ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"]);
    ok(&up.run(&[
        "queue",
        "create",
        "sized",
        "--variable",
        r#"size={"type":"integer","minimum":1,"maximum":8,"default":2}"#,
        "--config",
        r#"{"size": "{{size}}", "label": "run-${run_id}", "who": "${author}"}"#,
    ]));
    let mut spec = LaunchSpec::command(vec![
        "sh".into(),
        "-c".into(),
        "echo args=$LIFTOFF_RESOURCE_ARGS; echo id=$LIFTOFF_RUN_ID".into(),
    ]);
    spec.author = Some("ann".into());
    spec.template_variables
        .insert("size".into(), serde_json::json!(4));
    let spec_file = up.dir.path().join("s.json");
    write(&spec_file, &serde_json::to_string(&spec).unwrap());
    // The default agent of `up` runs only `default`: start one for this queue.
    let _agent = up.agent(&up.dir.path().join("agent2"), &["--queue", "sized"]);
    let out = ok(&up.run(&[
        "launch",
        "-q",
        "sized",
        "--wait",
        "--spec",
        spec_file.to_str().unwrap(),
    ]));
    let args: serde_json::Value = serde_json::from_str(line(&out, "args")).unwrap();
    let id = line(&out, "id");
    assert_eq!(
        args,
        serde_json::json!({"size": 4, "label": format!("run-{id}"), "who": "ann"})
    );
    let bad = up.run(&["launch", "-q", "sized", "--set-var", "size=9", "--", "true"]);
    let err = common::refused(&bad);
    assert!(err.contains("size"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_never_sees_the_agents_secrets() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    let seen = dir.join("build-env.txt");
    // A local package whose setup.py records the environment the build ran in: package
    // builds run code from the network, as surely as runs do.
    write(&dir.join("code/train.py"), "print('ran')\n");
    write(&dir.join("code/requirements.txt"), "./pkg\n");
    write(
        &dir.join("code/pkg/setup.py"),
        &format!(
            "import os\nfrom setuptools import setup\n\
             open({:?}, 'w').write('\\n'.join(f'{{k}}={{v}}' for k, v in os.environ.items()))\n\
             setup(name='probe', version='1.0', py_modules=[])\n",
            seen.to_str().unwrap()
        ),
    );
    ok(&server.run(&[
        "job",
        "create",
        "code",
        dir.join("code").to_str().unwrap(),
        "--name",
        "probe",
        "--entrypoint",
        "python train.py",
    ]));
    let agent = server.agent_with_env(
        &dir.join("agent"),
        &["--queue", "q"],
        // No index (no network); the venv's own setuptools builds the package.
        &[
            ("PIP_NO_INDEX", "1"),
            ("PIP_NO_BUILD_ISOLATION", "0"),
            ("MY_API_KEY", "s3cr3t-of-the-agent"),
        ],
    );
    let id = item_id(&server.run(&["launch", "-q", "q", "--job", "probe"]));
    // Offline, the package may not build all the way (no `wheel`): what matters is that its
    // setup.py ran inside the agent's build.
    wait_ended(&client, id).await;
    let env = std::fs::read_to_string(&seen).expect("the build ran setup.py");
    assert!(env.contains("PATH="), "{env}");
    assert!(
        !env.contains("s3cr3t-of-the-agent"),
        "a secret reached the build"
    );
    assert!(
        !env.contains(&agent.token),
        "the agent's token reached the build"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wandb_spec_with_uri_and_git_runs_that_commit_as_a_git_job() {
    let up = ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"]);
    let repo = up.dir.path().join("examples");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(
        &repo.join("run.py"),
        "print('msg=' + open('msg.txt').read().strip())\n",
    );
    write(&repo.join("msg.txt"), "pinned\n");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    write(&repo.join("msg.txt"), "later\n");
    git(&repo, &["commit", "-q", "-am", "two"]);
    let url = format!("file://{}", repo.display());
    // W&B's form: the repository in `uri`, the commit in `git.commit`.
    let spec = up.dir.path().join("spec.json");
    let body = serde_json::json!({
        "uri": url,
        "git": {"remote": url, "commit": first},
        "overrides": {"entry_point": ["python3", "run.py"]},
    });
    write(&spec, &body.to_string());
    let out = ok(&up.run(&["launch", "--wait", "--spec", spec.to_str().unwrap()]));
    assert_eq!(
        line(&out, "msg"),
        "pinned",
        "the spec's commit, not the head"
    );
    let shown = ok(&up.run(&["job", "show", "examples", "-o", "json"]));
    assert!(shown.contains(&first), "{shown}");
    // The same spec again makes no new version; one without a command says what it lacks.
    ok(&up.run(&["launch", "--wait", "--spec", spec.to_str().unwrap()]));
    let versions = ok(&up.run(&["job", "show", "examples"]));
    assert!(!versions.contains("examples:v1"), "{versions}");
    // `runs --job` finds both runs by the job's name or its version, and nothing else.
    for job in ["examples", "examples:v0"] {
        let runs = ok(&up.run(&["runs", "--job", job, "-o", "json"]));
        let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
        assert_eq!(runs.as_array().unwrap().len(), 2, "{job}: {runs}");
    }
    for job in ["example", "examples:v1"] {
        let runs = ok(&up.run(&["runs", "--job", job, "-o", "json"]));
        assert_eq!(runs.trim(), "[]", "{job}");
    }
    write(&spec, &serde_json::json!({ "uri": url }).to_string());
    let err = common::refused(&up.run(&["launch", "--spec", spec.to_str().unwrap()]));
    assert!(err.contains("overrides.entry_point"), "{err}");
    // Sent to the API as is, the key is refused with what to do instead.
    let raw = serde_json::json!({ "uri": url, "overrides": {"entry_point": ["true"]} });
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/queues/default/items", up.url()))
        .bearer_auth(up.client_file()["token"].as_str().unwrap())
        .json(&raw)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(status == 422 && text.contains("git job"), "{status} {text}");
}
