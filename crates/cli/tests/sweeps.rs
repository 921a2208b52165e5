//! End-to-end sweeps: a real server, real agents running the scheduler and the runs (Python
//! scripts), sweeps created with `liftoff sweep create` from W&B sweep files.

mod common;

use common::{group_alive, ok, wait_async, ServerProcess};
use liftoff_client::Client;
use liftoff_types::sweep::SweepView;
use liftoff_types::{ItemState, NewQueue, RunState, SweepState};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Minimise (x-3)^2 + (y+1)^2. Runs with x > 0 report through the API with their run token,
/// the others through the metrics file, so both paths are used. Every start is recorded.
const OBJECTIVE: &str = r#"
import argparse, json, os, urllib.request
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
p.add_argument("--y", type=float)
a = p.parse_args()
with open(os.environ["SWEEP_STARTS"], "a") as s:
    s.write(os.environ["LIFTOFF_RUN_ID"] + "\n")
f = (a.x - 3) ** 2 + (a.y + 1) ** 2
record = {"step": 1, "f": f}
if a.x > 0:
    req = urllib.request.Request(
        os.environ["LIFTOFF_API_URL"] + "/api/v1/runs/" + os.environ["LIFTOFF_RUN_ID"] + "/metrics",
        data=json.dumps({"records": [record]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["LIFTOFF_RUN_TOKEN"],
                 "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
else:
    with open(os.environ["LIFTOFF_METRICS_FILE"], "a") as m:
        m.write(json.dumps(record) + "\n")
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

async fn queue(client: &Client, name: &str) {
    client.create_queue(&NewQueue::named(name)).await.unwrap();
}

fn create(server: &ServerProcess, file: &str, queue: &str, concurrency: &str) -> String {
    let out = server.run(&[
        "sweep",
        "create",
        file,
        "--queue",
        queue,
        "--concurrency",
        concurrency,
        "-o",
        "json",
    ]);
    let sweep: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    sweep["id"].as_str().unwrap().to_string()
}

async fn view(client: &Client, id: &str) -> SweepView {
    client.get_sweep(id).await.unwrap()
}

async fn wait_sweep(client: &Client, id: &str, state: SweepState, timeout: Duration) -> SweepView {
    let what = format!("sweep {id} to be {state}");
    wait_async(&what, timeout, || async {
        view(client, id).await.sweep.state == state
    })
    .await;
    view(client, id).await
}

fn starts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bayes_sweep_keeps_its_run_cap_and_reports_its_best_run() {
    let server = ServerProcess::start();
    let client = server.client();
    queue(&client, "q").await;
    let dir = server.dir.path();
    write(dir, "objective.py", OBJECTIVE);
    // `program` relative to the sweep file, as W&B users write it.
    let file = write(
        dir,
        "sweep.yaml",
        "program: objective.py\nmethod: bayes\nmetric: {name: f, goal: minimize}\n\
         parameters:\n  x: {min: -10.0, max: 10.0}\n  y: {min: -10.0, max: 10.0}\nrun_cap: 10\n",
    );
    let starts_file = dir.join("starts");
    let env = [("SWEEP_STARTS", starts_file.to_str().unwrap())];
    let _agent = server.agent_with_env(
        &dir.join("agent"),
        &["--queue", "q", "--max-jobs", "3", "--max-schedulers", "1"],
        &env,
    );
    let id = create(&server, &file, "q", "3");
    let done = wait_sweep(&client, &id, SweepState::Finished, Duration::from_secs(90)).await;
    assert_eq!(done.runs.len(), 10, "run_cap exactly");
    assert_eq!(starts(&starts_file).len(), 10, "each run started once");
    let mut best = (f64::INFINITY, None);
    for run in &done.runs {
        assert_eq!(run.item_state, ItemState::Finished, "{run:?}");
        let (x, y) = (
            run.params["x"].as_f64().unwrap(),
            run.params["y"].as_f64().unwrap(),
        );
        let f = (x - 3.0).powi(2) + (y + 1.0).powi(2);
        let got = run.metric.as_ref().expect("every run reported f").last;
        assert!(
            (got - f).abs() < 1e-9,
            "metric of run {}: {got} vs {f}",
            run.index
        );
        if f < best.0 {
            best = (f, run.run_id.clone());
        }
    }
    let reported = done.best.expect("a best run");
    assert_eq!(
        reported.run_id, best.1,
        "the best run is the one with the lowest f"
    );
    assert!(done.sweep.message.unwrap().contains("run_cap 10"));
    // `sweep show` prints it for people too.
    let shown = ok(&server.run(&["sweep", "show", &id]));
    assert!(
        shown.contains("finished") && shown.contains("best: run"),
        "{shown}"
    );
    // `runs --sweep` lists exactly the sweep's 10 runs (not its scheduler's).
    let runs = ok(&server.run(&["runs", "--sweep", &id, "-o", "json"]));
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let mut listed: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = done
        .runs
        .iter()
        .filter_map(|r| r.run_id.as_ref().map(|id| id.to_string()))
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    // The scheduler's item finished; nothing is left on the queue.
    let sched = client.get_item(done.sweep.scheduler_item).await.unwrap();
    assert_eq!(sched.state, ItemState::Finished);
}

/// A learning curve: the loss falls toward `floor` over 12 steps, 0.25 s apart. Runs with a
/// high floor fall behind at the brackets and hyperband stops them. Each run records its pid.
const CURVE: &str = r#"
import argparse, json, os, time
p = argparse.ArgumentParser()
p.add_argument("--floor", type=float)
a = p.parse_args()
with open(os.path.join(os.environ["SWEEP_PIDS"], os.environ["LIFTOFF_RUN_ID"]), "w") as f:
    f.write(str(os.getpid()))
for step in range(1, 13):
    with open(os.environ["LIFTOFF_METRICS_FILE"], "a") as m:
        m.write(json.dumps({"step": step, "loss": a.floor + 1.0 / step}) + "\n")
    time.sleep(0.25)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperband_stops_the_runs_it_cuts_and_their_processes_are_gone() {
    let server = ServerProcess::start();
    let client = server.client();
    queue(&client, "q").await;
    let dir = server.dir.path();
    let script = write(dir, "curve.py", CURVE);
    let pids = dir.join("pids");
    std::fs::create_dir(&pids).unwrap();
    let file = write(
        dir,
        "sweep.yaml",
        &format!(
            "program: {script}\nmethod: grid\nmetric: {{name: loss, goal: minimize}}\n\
             parameters:\n  floor: {{values: [0.0, 5.0, 0.1, 6.0, 0.2, 7.0]}}\n\
             early_terminate: {{type: hyperband, min_iter: 2, eta: 2}}\n"
        ),
    );
    let env = [("SWEEP_PIDS", pids.to_str().unwrap())];
    let _agent = server.agent_with_env(
        &dir.join("agent"),
        &["--queue", "q", "--max-jobs", "6"],
        &env,
    );
    let id = create(&server, &file, "q", "6");
    let done = wait_sweep(&client, &id, SweepState::Finished, Duration::from_secs(90)).await;
    assert_eq!(done.runs.len(), 6, "the grid, each point once");
    let by_floor: HashMap<String, &liftoff_types::sweep::SweepRun> = done
        .runs
        .iter()
        .map(|r| (r.params["floor"].to_string(), r))
        .collect();
    for floor in ["5.0", "6.0", "7.0"] {
        let run = by_floor[floor];
        assert_eq!(
            run.run_state,
            Some(RunState::Stopped),
            "floor {floor}: {run:?}"
        );
        assert!(
            run.message.as_deref().unwrap_or("").contains("hyperband"),
            "the reason is recorded: {run:?}"
        );
        let last = run.history.last().unwrap().0;
        assert!(
            last < 12,
            "floor {floor} was cut before its end (step {last})"
        );
        let pid: i32 = std::fs::read_to_string(pids.join(run.run_id.as_ref().unwrap().as_str()))
            .unwrap()
            .parse()
            .unwrap();
        assert!(group_alive(pid).is_empty(), "its processes are gone");
    }
    // The best run is never behind a cut. (Which of the good runs a later bracket cuts
    // depends on when the scheduler looks, as in W&B: only the best is certain to finish.)
    assert_eq!(by_floor["0.0"].run_state, Some(RunState::Finished));
    assert_eq!(by_floor["0.0"].history.len(), 12);
}

const SLOW: &str = r#"
import argparse, json, os, time
p = argparse.ArgumentParser()
p.add_argument("--n", type=int)
a = p.parse_args()
with open(os.environ["SWEEP_STARTS"], "a") as s:
    s.write(os.environ["LIFTOFF_RUN_ID"] + "\n")
time.sleep(float(os.environ.get("SWEEP_SLEEP", "0.5")))
with open(os.environ["LIFTOFF_METRICS_FILE"], "a") as m:
    m.write(json.dumps({"v": a.n}) + "\n")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_whose_agent_dies_is_resumed_by_another_agent() {
    let server =
        ServerProcess::start_with(&["server", "--bind", "127.0.0.1:0", "--agent-timeout", "2"]);
    let client = server.client();
    queue(&client, "q").await;
    let dir = server.dir.path();
    let script = write(dir, "slow.py", SLOW);
    let file = write(
        dir,
        "sweep.yaml",
        &format!(
            "program: {script}\nmethod: random\nmetric: {{name: v, goal: maximize}}\n\
             parameters:\n  n: {{min: 0, max: 1000}}\nrun_cap: 12\n"
        ),
    );
    let starts_file = dir.join("starts");
    let env = [("SWEEP_STARTS", starts_file.to_str().unwrap())];
    // Agent A runs the scheduler (and no runs: it has no job slot to spare once it holds
    // one); B runs schedulers only when A is gone.
    let mut a = server.agent_with_env(
        &dir.join("agent-a"),
        &["--queue", "q", "--max-jobs", "1", "--max-schedulers", "1"],
        &env,
    );
    let id = create(&server, &file, "q", "2");
    wait_async(
        "the sweep to be half way",
        Duration::from_secs(60),
        || async { view(&client, &id).await.runs.len() >= 4 },
    )
    .await;
    a.kill9();
    let _b = server.agent_with_env(
        &dir.join("agent-b"),
        &["--queue", "q", "--max-jobs", "2", "--max-schedulers", "1"],
        &env,
    );
    let done = wait_sweep(&client, &id, SweepState::Finished, Duration::from_secs(120)).await;
    assert_eq!(
        done.runs.len(),
        12,
        "run_cap exactly, across two schedulers"
    );
    let started = starts(&starts_file);
    let mut unique = started.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        started.len(),
        "no run started twice: {started:?}"
    );
    let indexes: Vec<u32> = done.runs.iter().map(|r| r.index).collect();
    assert_eq!(indexes, (0..12).collect::<Vec<_>>());
    assert!(
        _b.log().contains(&format!("scheduling sweep {id}")),
        "agent B took the scheduler over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sweep_starts_nothing_until_resumed_and_a_cancelled_one_stops_its_runs() {
    let server = ServerProcess::start();
    let client = server.client();
    queue(&client, "q").await;
    let dir = server.dir.path();
    let script = write(dir, "slow.py", SLOW);
    let file = write(
        dir,
        "sweep.yaml",
        &format!(
            "program: {script}\nmethod: random\nparameters:\n  n: {{min: 0, max: 1000}}\nrun_cap: 40\n"
        ),
    );
    let starts_file = dir.join("starts");
    let env = [
        ("SWEEP_STARTS", starts_file.to_str().unwrap()),
        ("SWEEP_SLEEP", "0.3"),
    ];
    let _agent = server.agent_with_env(
        &dir.join("agent"),
        &["--queue", "q", "--max-jobs", "2"],
        &env,
    );
    let id = create(&server, &file, "q", "2");
    wait_async("a few runs", Duration::from_secs(60), || async {
        starts(&starts_file).len() >= 3
    })
    .await;
    ok(&server.run(&["sweep", "pause", &id]));
    // What was live when the pause came ends; then nothing more starts.
    wait_async("live runs to end", Duration::from_secs(30), || async {
        view(&client, &id)
            .await
            .runs
            .iter()
            .all(|r| r.run_state.is_none_or(|s| s.is_terminal()))
    })
    .await;
    let paused_at = starts(&starts_file).len();
    let before = view(&client, &id).await.runs.len();
    // Long enough for several scheduler rounds and lease calls.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        starts(&starts_file).len(),
        paused_at,
        "no run started while paused"
    );
    assert_eq!(
        view(&client, &id).await.runs.len(),
        before,
        "no run enqueued while paused"
    );
    ok(&server.run(&["sweep", "resume", &id]));
    wait_async("runs to start again", Duration::from_secs(30), || async {
        starts(&starts_file).len() > paused_at + 1
    })
    .await;
    // Cancel while runs are live: they are stopped, the sweep and its items end.
    wait_async("a live run", Duration::from_secs(30), || async {
        view(&client, &id)
            .await
            .runs
            .iter()
            .any(|r| r.run_state == Some(RunState::Running))
    })
    .await;
    ok(&server.run(&["sweep", "cancel", &id]));
    let v = wait_async_view(&client, &id).await;
    assert_eq!(v.sweep.state, SweepState::Cancelled);
    assert!(v
        .runs
        .iter()
        .any(|r| r.run_state == Some(RunState::Stopped)));
    let sched = client.get_item(v.sweep.scheduler_item).await.unwrap();
    assert!(
        sched.state.is_terminal(),
        "the scheduler ended: {:?}",
        sched.state
    );
    // A cancelled sweep refuses to come back.
    let out = server.run(&["sweep", "resume", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"));
}

/// Waits until every run of the sweep has ended.
async fn wait_async_view(client: &Client, id: &str) -> SweepView {
    wait_async(
        "every run of the sweep to end",
        Duration::from_secs(30),
        || async {
            view(client, id)
                .await
                .runs
                .iter()
                .all(|r| r.item_state.is_terminal())
        },
    )
    .await;
    view(client, id).await
}

/// The sweep file of FORMATS.md (W&B's documented form): every kind of parameter, nested
/// parameters, hyperband, the default command's macros. It parses and runs as it is, with
/// `command` written as a block list as W&B's documentation does (the one-line flow form
/// `[${env}, ...]` is not YAML: `{` is a flow indicator; PyYAML refuses it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_sweep_file_parses_and_runs() {
    let server = ServerProcess::start();
    let client = server.client();
    queue(&client, "q").await;
    let dir = server.dir.path();
    write(
        dir,
        "train.py",
        "import json, os, sys\nargs = sys.argv[1:]\n\
         open(os.environ['LIFTOFF_METRICS_FILE'], 'a').write(json.dumps({'step': 1, 'val_loss': len(' '.join(args)) / 100}) + '\\n')\n\
         print(args)\n",
    );
    let file = write(
        dir,
        "sweep.yaml",
        "program: train.py\nmethod: bayes\nmetric: {name: val_loss, goal: minimize}\n\
         parameters:\n  lr:        {distribution: log_uniform_values, min: 0.0001, max: 0.1}\n\
         \x20 batch:     {values: [16, 32, 64]}\n  optimizer: {value: adam}\n\
         \x20 dropout:   {distribution: uniform, min: 0.1, max: 0.5}\n\
         \x20 layers:    {distribution: int_uniform, min: 1, max: 6}\n\
         \x20 model:\n    parameters:\n      width: {values: [128, 256]}\n\
         early_terminate: {type: hyperband, min_iter: 3, eta: 3}\nrun_cap: 3\n\
         command:\n  - ${env}\n  - ${interpreter}\n  - ${program}\n  - ${args}\n",
    );
    let _agent = server.agent(&dir.join("agent"), &["--queue", "q", "--max-jobs", "3"]);
    let id = create(&server, &file, "q", "3");
    let done = wait_sweep(&client, &id, SweepState::Finished, Duration::from_secs(60)).await;
    assert_eq!(done.runs.len(), 3);
    for run in &done.runs {
        assert_eq!(run.item_state, ItemState::Finished, "{run:?}");
        let p = &run.params;
        assert_eq!(p["optimizer"], "adam");
        assert!([128, 256].contains(&p["model"]["width"].as_i64().unwrap()));
        let lr = p["lr"].as_f64().unwrap();
        assert!((0.0001..=0.1).contains(&lr));
        let output = client
            .read_log(run.run_id.as_ref().unwrap(), 0)
            .await
            .unwrap();
        let output = String::from_utf8_lossy(&output);
        assert!(
            output.contains("--optimizer=adam") && output.contains("--lr="),
            "{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_sweep_file_is_refused_naming_every_problem() {
    let server = ServerProcess::start();
    let client = server.client();
    queue(&client, "q").await;
    let file = write(
        server.dir.path(),
        "bad.yaml",
        "method: bayes\nmetric: {name: loss, goal: up}\nparameters:\n  lr: {distribution: uniform, min: 1, max: 0}\n  \
         bs: {values: []}\nrun_cap: -3\nrnu_cap: 3\n",
    );
    let out = server.run(&["sweep", "create", &file, "--queue", "q"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // One problem a line, each starting with its key path (a mere mention would not do:
    // the unknown key's message lists the known keys, run_cap among them).
    for path in [
        "metric.goal:",
        "parameters.lr.min:",
        "parameters.bs.values:",
        "run_cap:",
        "rnu_cap:",
    ] {
        assert!(
            err.lines().any(|l| l.trim_start().starts_with(path)),
            "{path} is named: {err}"
        );
    }
    // The server checks too (a client that skips the CLI): 422, each problem by path.
    let req = liftoff_types::sweep::CreateSweep {
        queue: "q".into(),
        config: serde_json::json!({"method": "grid", "parameters": {"x": {"min": 0.0, "max": 1.0}}}),
        concurrency: Some(0),
    };
    let e = client.create_sweep(&req).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(422), "{e}");
    // A sweep must run something this server knows.
    for (config, says) in [
        (
            "method: random\nparameters:\n  x: {values: [1]}\n",
            "neither what to run",
        ),
        (
            "job: nosuchjob\nmethod: random\nparameters:\n  x: {values: [1]}\n",
            "no job nosuchjob",
        ),
    ] {
        let file = write(server.dir.path(), "s.yaml", config);
        let out = server.run(&["sweep", "create", &file, "--queue", "q"]);
        let err = common::refused(&out);
        assert!(err.contains(says), "{err}");
    }
    assert!(
        client.list_sweeps().await.unwrap().is_empty(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_cannot_go_on_crashes_its_sweep_with_the_reason() {
    let server = ServerProcess::start();
    let client = server.client();
    queue(&client, "q").await;
    // Valid YAML and a valid sweep, but `${args_json_file}` has no file to name here.
    let file = write(
        server.dir.path(),
        "sweep.yaml",
        "method: random\nparameters:\n  x: {values: [1, 2]}\n\
         command:\n  - /bin/echo\n  - ${args_json_file}\n",
    );
    let _agent = server.agent(&server.dir.path().join("agent"), &["--queue", "q"]);
    let id = create(&server, &file, "q", "1");
    let v = wait_sweep(&client, &id, SweepState::Crashed, Duration::from_secs(30)).await;
    assert!(
        v.sweep
            .message
            .as_deref()
            .unwrap_or("")
            .contains("args_json_file"),
        "{:?}",
        v.sweep.message
    );
    let sched = client.get_item(v.sweep.scheduler_item).await.unwrap();
    assert_eq!(sched.state, ItemState::Failed);
    let failure = sched.failure.unwrap();
    assert_eq!(failure.phase, liftoff_types::Phase::Scheduler);
    assert!(v.runs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_over_a_job_runs_the_job_with_its_parameters() {
    let server = ServerProcess::start();
    let client = server.client();
    queue(&client, "q").await;
    let dir = server.dir.path();
    let code = dir.join("code");
    std::fs::create_dir_all(&code).unwrap();
    write(
        &code,
        "objective.py",
        "import json, os, sys\n\
         c = json.loads(os.environ['LIFTOFF_CONFIG'])\n\
         print('args', sys.argv[1:])\n\
         f = (c['x'] - 3) ** 2 + c['offset']\n\
         open(os.environ['LIFTOFF_METRICS_FILE'], 'a').write(json.dumps({'f': f}) + '\\n')\n",
    );
    ok(&server.run(&[
        "job",
        "create",
        "code",
        code.to_str().unwrap(),
        "--name",
        "obj",
        "--entrypoint",
        "python3 objective.py",
        "--config",
        "offset=100",
    ]));
    let file = write(
        dir,
        "sweep.yaml",
        "method: grid\nmetric: {name: f, goal: minimize}\nparameters:\n  x: {values: [1, 3, 5]}\n",
    );
    let out = server.run(&[
        "sweep", "create", &file, "--queue", "q", "--job", "obj", "-o", "json",
    ]);
    let id = serde_json::from_str::<serde_json::Value>(&ok(&out)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A version made after the sweep does not change what its runs run: the sweep keeps the
    // version that was the latest when it was made.
    ok(&server.run(&[
        "job",
        "create",
        "code",
        code.to_str().unwrap(),
        "--name",
        "obj",
        "--entrypoint",
        "python3 objective.py",
        "--config",
        "offset=200",
    ]));
    let _agent = server.agent(&dir.join("agent"), &["--queue", "q", "--max-jobs", "3"]);
    let done = wait_sweep(&client, &id, SweepState::Finished, Duration::from_secs(60)).await;
    assert_eq!(done.sweep.config["job"], "obj:v0", "pinned at creation");
    assert_eq!(done.runs.len(), 3);
    let best = done.best.unwrap();
    assert_eq!(best.params["x"], 3);
    assert_eq!(
        best.params["offset"], 100,
        "the job's default config under the parameters"
    );
    assert_eq!(best.metric.unwrap().last, 100.0);
    let log = client
        .read_log(best.run_id.as_ref().unwrap(), 0)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("--x=3"),
        "parameters as arguments too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_runs_start_beside_their_program_and_a_failing_sweep_stops_saying_why() {
    let server = ServerProcess::start();
    let client = server.client();
    queue(&client, "q").await;
    let project = server.dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    // The program reads a file beside it by a relative path, as scripts do.
    write(&project, "data.txt", "0.25\n");
    write(
        &project,
        "train.py",
        "import json, os\nloss = float(open('data.txt').read())\n\
         open(os.environ['LIFTOFF_METRICS_FILE'], 'a').write(json.dumps({'loss': loss}) + '\\n')\n",
    );
    write(&project, "broken.py", "raise SystemExit('no data here')\n");
    let sweep = |program: &str| {
        format!(
            "program: {program}\nmethod: random\nmetric: {{name: loss, goal: minimize}}\n\
             parameters:\n  lr: {{min: 0.001, max: 0.1}}\nrun_cap: 8\n"
        )
    };
    let good = write(&project, "good.yaml", &sweep("train.py"));
    let bad = write(&project, "bad.yaml", &sweep("broken.py"));
    let _agent = server.agent(
        &server.dir.path().join("agent"),
        &["--queue", "q", "--max-jobs", "2", "--max-schedulers", "2"],
    );
    let id = create(&server, &good, "q", "1");
    let done = wait_sweep(&client, &id, SweepState::Finished, Duration::from_secs(60)).await;
    assert_eq!(done.runs.len(), 8);
    assert!(done
        .runs
        .iter()
        .all(|r| r.item_state == ItemState::Finished));
    assert_eq!(done.best.unwrap().metric.unwrap().last, 0.25);

    let id = create(&server, &bad, "q", "1");
    let crashed = wait_sweep(&client, &id, SweepState::Crashed, Duration::from_secs(60)).await;
    let message = crashed.sweep.message.unwrap_or_default();
    assert!(message.contains("last 5 runs failed"), "{message}");
    assert_eq!(crashed.runs.len(), 5, "no more proposed once it stopped");
}
