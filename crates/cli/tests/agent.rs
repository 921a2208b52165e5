//! End-to-end: real agents (and `liftoff up`) running real processes.

mod common;

use common::{group_alive, kill_group, ok, wait_async, ServerProcess};
use liftoff_client::Client;
use liftoff_types::api::{ItemFilter, RunFilter};
use liftoff_types::{AgentStatus, ItemId, ItemState, LaunchSpec, NewQueue, Phase, RunState};
use std::collections::HashSet;
use std::time::Duration;

fn sh(script: &str) -> LaunchSpec {
    LaunchSpec::command(vec!["sh".into(), "-c".into(), script.into()])
}

async fn item_state(client: &Client, id: ItemId) -> ItemState {
    client.get_item(id).await.unwrap().state
}

/// Whether an item's run is running now.
async fn is_running(client: &Client, id: ItemId) -> bool {
    let Some(run) = client.get_item(id).await.unwrap().run_id else {
        return false;
    };
    client.get_run(&run).await.unwrap().state == RunState::Running
}

/// Waits for an item's run to be running; returns the run and its process group.
async fn running(client: &Client, id: ItemId) -> (liftoff_types::RunId, i32) {
    wait_async("the run to be running", Duration::from_secs(20), || {
        is_running(client, id)
    })
    .await;
    let run = client.get_item(id).await.unwrap().run_id.unwrap();
    let pid = client.get_run(&run).await.unwrap().handle["pid"]
        .as_i64()
        .unwrap() as i32;
    (run, pid)
}

/// Waits (up to 20 s) for an item to reach `state`.
async fn wait_state(client: &Client, id: ItemId, state: ItemState) {
    let what = format!("item {id} to be {state}");
    wait_async(&what, Duration::from_secs(20), || async {
        item_state(client, id).await == state
    })
    .await;
}

/// Waits for the server to declare agent `id` lost.
async fn wait_lost(client: &Client, id: liftoff_types::AgentId) {
    wait_async("the agent to be lost", Duration::from_secs(15), || async {
        client
            .list_agents()
            .await
            .unwrap()
            .iter()
            .any(|a| a.id == id && a.status == AgentStatus::Lost)
    })
    .await;
}

async fn wait_items_done(client: &Client, ids: &[ItemId], timeout: Duration) {
    wait_async("every item to end", timeout, || async {
        for id in ids {
            if !item_state(client, *id).await.is_terminal() {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_launches_to_their_end_with_output_and_exit_codes() {
    let up = ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"]);
    // `launch --wait` follows the output live and exits with the run's code.
    let out = up.run(&[
        "launch",
        "--wait",
        "--",
        "sh",
        "-c",
        "echo hello; echo to-stderr >&2",
    ]);
    let stdout = ok(&out);
    assert!(
        stdout.contains("hello") && stdout.contains("to-stderr"),
        "{stdout}"
    );
    let out = up.run(&[
        "launch",
        "--wait",
        "--",
        "sh",
        "-c",
        "echo about to fail; exit 7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = up.run(&["launch", "--wait", "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot start"),
        "{out:?}"
    );

    let client = up.client();
    let items = client.list_items(&ItemFilter::default()).await.unwrap();
    let (missing, failed, ok_item) = (&items[0], &items[1], &items[2]);
    assert_eq!(ok_item.state, ItemState::Finished);
    let run = ok_item.run_id.clone().unwrap();
    let served = String::from_utf8(client.read_log(&run, 0).await.unwrap()).unwrap();
    assert_eq!(served, "hello\nto-stderr\n", "output captured and served");
    let logs = ok(&up.run(&["logs", run.as_str()]));
    assert_eq!(logs, served);

    let failure = failed.failure.clone().unwrap();
    assert_eq!(failure.phase, Phase::Run);
    assert!(failure.message.contains("code 7"), "{}", failure.message);
    let tail = client
        .item_file(failed.id, "output-tail.log")
        .await
        .unwrap();
    assert!(
        tail.contains("about to fail"),
        "the log tail is attached: {tail}"
    );
    let run = client
        .get_run(failed.run_id.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!((run.state, run.exit_code), (RunState::Failed, Some(7)));

    let failure = missing.failure.clone().unwrap();
    assert!(
        failure.message.contains("/no/such/program"),
        "{}",
        failure.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sees_its_config_and_ids_but_no_secrets() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let state = server.dir.path().join("agent");
    let agent = server.agent_with_env(
        &state,
        &["--queue", "q"],
        &[("TEAM_API_TOKEN", "hunter2"), ("CUDA_VISIBLE_DEVICES", "0")],
    );
    let mut spec = sh("env | sort; cat \"$LIFTOFF_CONFIG_FILE\"");
    spec.overrides
        .run_config
        .insert("lr".into(), serde_json::json!(0.1));
    let id = client.enqueue("q", &spec).await.unwrap().id;
    wait_items_done(&client, &[id], Duration::from_secs(20)).await;
    let item = client.get_item(id).await.unwrap();
    assert_eq!(item.state, ItemState::Finished, "{:?}", item.failure);
    let run = item.run_id.unwrap();
    let out = String::from_utf8(client.read_log(&run, 0).await.unwrap()).unwrap();
    for expected in [
        format!("LIFTOFF_RUN_ID={run}"),
        format!("WANDB_RUN_ID={run}"),
        "WANDB_CONFIG={\"lr\":0.1}".to_string(),
        "LIFTOFF_QUEUE=q".to_string(),
        format!("LIFTOFF_RUN_TOKEN=lfr_{run}."),
        "{\"lr\":0.1}".to_string(),
    ] {
        assert!(out.contains(&expected), "{expected} missing from:\n{out}");
    }
    assert!(
        out.contains("CUDA_VISIBLE_DEVICES=0"),
        "the agent's ordinary environment is inherited"
    );
    assert!(
        !out.contains("LIFTOFF_TOKEN=") && !out.contains(&agent.token),
        "the agent's token never reaches a run"
    );
    assert!(!out.contains("hunter2"), "nor do the agent's other secrets");
    // A run without a config reads `{}` from its config file.
    let bare = client
        .enqueue(
            "q",
            &sh("printf 'config=%s' \"$(cat \"$LIFTOFF_CONFIG_FILE\")\""),
        )
        .await
        .unwrap()
        .id;
    wait_items_done(&client, &[bare], Duration::from_secs(20)).await;
    let bare_run = client.get_item(bare).await.unwrap().run_id.unwrap();
    let bare_out = String::from_utf8(client.read_log(&bare_run, 0).await.unwrap()).unwrap();
    assert_eq!(bare_out, "config={}");
    // The run token reads its own run and nothing else; it dies with the run.
    let line = out
        .lines()
        .find(|l| l.starts_with("LIFTOFF_RUN_TOKEN="))
        .unwrap();
    let run_client = Client::new(
        &server.url(),
        Some(line["LIFTOFF_RUN_TOKEN=".len()..].to_string()),
    )
    .unwrap();
    assert!(run_client.list_queues().await.is_err());
    assert!(
        run_client.get_run(&run).await.is_err(),
        "revoked when the run ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_jobs_bounds_how_many_run_at_once() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let marks = server.dir.path().join("running");
    std::fs::create_dir(&marks).unwrap();
    let seen = server.dir.path().join("seen");
    let state = server.dir.path().join("agent");
    let _agent = server.agent(&state, &["--queue", "q", "--max-jobs", "2"]);
    // Each run marks itself running, records how many are running, and unmarks itself.
    let script = format!(
        "touch {m}/$LIFTOFF_RUN_ID; ls {m} | wc -l >> {s}; sleep 0.3; ls {m} | wc -l >> {s}; rm {m}/$LIFTOFF_RUN_ID",
        m = marks.display(),
        s = seen.display()
    );
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(client.enqueue("q", &sh(&script)).await.unwrap().id);
    }
    wait_items_done(&client, &ids, Duration::from_secs(30)).await;
    for id in &ids {
        assert_eq!(item_state(&client, *id).await, ItemState::Finished);
    }
    let counts: Vec<u32> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 12);
    assert!(
        counts.iter().all(|c| *c <= 2),
        "never more than 2 at once: {counts:?}"
    );
    assert!(counts.contains(&2), "and it did run 2 at once: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_run_every_item_exactly_once() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let effects = server.dir.path().join("effects");
    let script = format!("echo $LIFTOFF_ITEM_ID >> {}", effects.display());
    let mut ids = Vec::new();
    for _ in 0..500 {
        ids.push(client.enqueue("q", &sh(&script)).await.unwrap().id);
    }
    let dir = server.dir.path();
    let _a = server.agent(&dir.join("agent-a"), &["--queue", "q", "--max-jobs", "4"]);
    let _b = server.agent(&dir.join("agent-b"), &["--queue", "q", "--max-jobs", "4"]);
    wait_async("500 items to end", Duration::from_secs(120), || async {
        let d = client.get_queue("q").await.unwrap().depth.unwrap();
        d.finished + d.failed + d.stopped + d.cancelled == 500
    })
    .await;
    assert_eq!(
        client.get_queue("q").await.unwrap().depth.unwrap().finished,
        500
    );
    let lines: Vec<String> = std::fs::read_to_string(&effects)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let unique: HashSet<&String> = lines.iter().collect();
    assert_eq!(lines.len(), 500, "each item ran once");
    assert_eq!(unique.len(), 500, "no item ran twice");
    let runs = client
        .list_runs(&RunFilter {
            limit: Some(1000),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let agents: HashSet<_> = runs.iter().map(|r| r.agent_id).collect();
    assert_eq!(agents.len(), 2, "both agents took work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_every_process_of_the_run() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let state = server.dir.path().join("agent");
    let agent = server.agent(&state, &["--queue", "q"]);
    let id = client
        .enqueue("q", &sh("sleep 1000 & sleep 1000"))
        .await
        .unwrap()
        .id;
    wait_async("the run to be running", Duration::from_secs(20), || async {
        let item = client.get_item(id).await.unwrap();
        let Some(run) = item.run_id else { return false };
        let run = client.get_run(&run).await.unwrap();
        let pid = run.handle["pid"].as_i64().unwrap_or(0) as i32;
        run.state == RunState::Running && group_alive(pid).len() >= 3
    })
    .await;
    let run = client.get_item(id).await.unwrap().run_id.unwrap();
    let pid = client.get_run(&run).await.unwrap().handle["pid"]
        .as_i64()
        .unwrap() as i32;
    ok(&server.run(&["stop", run.as_str()]));
    wait_async(
        "the run's processes to be gone",
        Duration::from_secs(10),
        || async { group_alive(pid).is_empty() },
    )
    .await;
    wait_async("the run to be stopped", Duration::from_secs(10), || async {
        client.get_run(&run).await.unwrap().state == RunState::Stopped
    })
    .await;
    assert_eq!(item_state(&client, id).await, ItemState::Stopped);
    drop(agent);
    kill_group(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_readopts_its_runs_on_restart() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let starts = server.dir.path().join("starts");
    let state = server.dir.path().join("agent");
    let mut agent = server.agent(&state, &["--queue", "q", "--max-jobs", "3"]);
    let mut ids = Vec::new();
    for code in [0, 3, 5] {
        let script = format!(
            "echo $LIFTOFF_ITEM_ID >> {}; sleep 3; exit {code}",
            starts.display()
        );
        ids.push(client.enqueue("q", &sh(&script)).await.unwrap().id);
    }
    // All three at once (the supervisor starts each as soon as it has room).
    wait_async("3 runs alive at once", Duration::from_secs(20), || async {
        for id in &ids {
            if !is_running(&client, *id).await {
                return false;
            }
        }
        std::fs::read_to_string(&starts)
            .map(|s| s.lines().count())
            .unwrap_or(0)
            == 3
    })
    .await;
    agent.kill9();
    let _again = server.agent(&state, &["--queue", "q", "--max-jobs", "3"]);
    wait_items_done(&client, &ids, Duration::from_secs(30)).await;
    let mut ends = Vec::new();
    for id in &ids {
        let item = client.get_item(*id).await.unwrap();
        let run = client.get_run(item.run_id.as_ref().unwrap()).await.unwrap();
        ends.push((item.state, run.state, run.exit_code));
    }
    assert_eq!(
        ends,
        [
            (ItemState::Finished, RunState::Finished, Some(0)),
            (ItemState::Failed, RunState::Failed, Some(3)),
            (ItemState::Failed, RunState::Failed, Some(5)),
        ],
        "re-adopted with their real exit codes"
    );
    let lines = std::fs::read_to_string(&starts).unwrap();
    assert_eq!(lines.lines().count(), 3, "nothing started twice: {lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_vanishes_is_lost_and_its_runs_handled() {
    let server =
        ServerProcess::start_with(&["server", "--bind", "127.0.0.1:0", "--agent-timeout", "2"]);
    let client = server.client();
    client.create_queue(&NewQueue::named("fail")).await.unwrap();
    let mut again = NewQueue::named("again");
    again.requeue_lost = true;
    client.create_queue(&again).await.unwrap();
    let state = server.dir.path().join("agent");
    let mut agent = server.agent(
        &state,
        &["--queue", "fail", "--queue", "again", "--max-jobs", "2"],
    );
    let failing = client.enqueue("fail", &sh("sleep 1000")).await.unwrap().id;
    let requeued = client.enqueue("again", &sh("sleep 1000")).await.unwrap().id;
    wait_async("both runs running", Duration::from_secs(20), || async {
        is_running(&client, failing).await && is_running(&client, requeued).await
    })
    .await;
    let mut pids = Vec::new();
    for id in [failing, requeued] {
        let run = client.get_item(id).await.unwrap().run_id.unwrap();
        pids.push(
            client.get_run(&run).await.unwrap().handle["pid"]
                .as_i64()
                .unwrap() as i32,
        );
    }
    let agent_id = client.list_agents().await.unwrap()[0].id;
    agent.kill9();
    wait_lost(&client, agent_id).await;
    let item = client.get_item(failing).await.unwrap();
    assert_eq!(
        (item.state, item.failure.map(|f| f.phase)),
        (ItemState::Failed, Some(Phase::Agent))
    );
    let item = client.get_item(requeued).await.unwrap();
    assert_eq!(
        (item.state, item.attempts),
        (ItemState::Pending, 1),
        "the queue asked for a requeue"
    );
    for pid in pids {
        kill_group(pid);
    }
}

/// An agent killed for good while its runs go on: the runs end meanwhile, and their ends
/// reach the server all the same (the supervisor reports them), so the server does not
/// declare finished work lost and, on a queue that requeues lost runs, run it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_end_after_their_agent_was_killed_are_reported_not_run_again() {
    let server = ServerProcess::start_with(&[
        "server",
        "--bind",
        "127.0.0.1:0",
        "--agent-timeout",
        "2",
        "--lost-grace",
        "2",
    ]);
    let client = server.client();
    let mut again = NewQueue::named("again");
    again.requeue_lost = true;
    client.create_queue(&again).await.unwrap();
    client
        .create_queue(&NewQueue::named("plain"))
        .await
        .unwrap();
    let state = server.dir.path().join("agent");
    let mut agent = server.agent(
        &state,
        &["--queue", "again", "--queue", "plain", "--max-jobs", "2"],
    );
    let ledger = server.dir.path().join("ledger");
    let script = |then: &str| {
        sh(&format!(
            "echo start >> {l}; sleep 1.5; echo end >> {l}; {then}",
            l = ledger.display()
        ))
    };
    let finishes = client.enqueue("again", &script("exit 0")).await.unwrap().id;
    let fails = client.enqueue("plain", &script("exit 3")).await.unwrap().id;
    wait_async("both runs running", Duration::from_secs(20), || async {
        is_running(&client, finishes).await && is_running(&client, fails).await
    })
    .await;
    let agent_id = client.list_agents().await.unwrap()[0].id;
    agent.kill9();

    wait_state(&client, finishes, ItemState::Finished).await;
    wait_state(&client, fails, ItemState::Failed).await;
    wait_lost(&client, agent_id).await;
    let item = client.get_item(finishes).await.unwrap();
    assert_eq!(
        (item.state, item.attempts),
        (ItemState::Finished, 0),
        "never retried"
    );
    let failed = client.get_item(fails).await.unwrap();
    let failure = failed.failure.expect("a failure");
    assert_eq!(
        (failure.phase, failure.message.as_str()),
        (Phase::Run, "the run exited with code 3"),
        "the run's own exit, not the lost agent"
    );
    assert_eq!(failure.files, ["output-tail.log"]);

    // The agent's return reports the same ends again: nothing changes, nothing runs again.
    let _agent = server.agent(
        &state,
        &["--queue", "again", "--queue", "plain", "--max-jobs", "2"],
    );
    let follow = client.enqueue("again", &sh("exit 0")).await.unwrap().id;
    wait_state(&client, follow, ItemState::Finished).await;
    for (id, state) in [(finishes, ItemState::Finished), (fails, ItemState::Failed)] {
        let item = client.get_item(id).await.unwrap();
        assert_eq!((item.state, item.attempts), (state, 0));
    }
    let lines = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(lines.matches("start").count(), 2, "each ran once: {lines}");
}

#[test]
fn a_bad_agent_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("launch-config.yaml");
    std::fs::write(&config, "max_jobs: -5\nmax_schedulers: lots\nqueus: [a]\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["agent", "--config"])
        .arg(&config)
        .env("LIFTOFF_URL", "http://127.0.0.1:9")
        .env("LIFTOFF_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "max_jobs: -5",
        "max_schedulers: must be a whole number",
        "queus: unknown key",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_within_the_grace_period() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    let config = dir.join("agent.yaml");
    std::fs::write(&config, "stopped_run_timeout: 1\nqueues: [q]\n").unwrap();
    let config = config.to_string_lossy().to_string();
    let mut agent = server.agent(&dir.join("agent"), &["--config", &config]);
    let id = client.enqueue("q", &sh("sleep 1000")).await.unwrap().id;
    let (run, pid) = running(&client, id).await;
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::task::spawn_blocking(move || {
        let status = agent.child.wait().unwrap();
        (status, agent)
    });
    let (status, agent) = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", agent.log());
    assert!(
        group_alive(pid).is_empty(),
        "the run was stopped after the grace period"
    );
    let run = client.get_run(&run).await.unwrap();
    assert_eq!(run.state, RunState::Stopped);
    assert_eq!(item_state(&client, id).await, ItemState::Stopped);
    let agents = client.list_agents().await.unwrap();
    assert_eq!(agents[0].status, AgentStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_while_its_server_is_down_leaves_the_reports_for_its_next_start() {
    let mut server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path().to_path_buf();
    let config = dir.join("agent.yaml");
    std::fs::write(&config, "stopped_run_timeout: 1\nqueues: [q]\n").unwrap();
    let config = config.to_string_lossy().to_string();
    let mut agent = server.agent(&dir.join("agent"), &["--config", &config]);
    let id = client.enqueue("q", &sh("sleep 1000")).await.unwrap().id;
    let (run, pid) = running(&client, id).await;

    // The server goes away; the operator stops the agent.
    server.kill9();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    common::wait_for(
        "the agent to say it waits for the server",
        Duration::from_secs(15),
        || {
            agent
                .log()
                .contains("for the server to take 1 run report(s)")
        },
    );
    assert!(group_alive(pid).is_empty(), "the run was stopped first");
    // Asked again, it leaves at once instead of waiting out the server.
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let exited = tokio::task::spawn_blocking(move || {
        let status = agent.child.wait().unwrap();
        (status, agent)
    });
    let (status, agent) = tokio::time::timeout(Duration::from_secs(10), exited)
        .await
        .expect("the agent exits on the second signal")
        .unwrap();
    assert!(status.success(), "{}", agent.log());

    // Its next start tells the server how the run ended.
    server.restart();
    let _agent = server.spawn_agent(
        &server.url(),
        &agent.token,
        &dir.join("agent"),
        &["--config", &config],
        &[],
    );
    // Stopped by its agent, not killed: the restart reports it so.
    wait_state(&client, id, ItemState::Stopped).await;
    let run = client.get_run(&run).await.unwrap();
    assert_eq!(run.state, RunState::Stopped, "{:?}", run.message);
    assert!(run.message.unwrap().contains("the agent was stopping"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_asked_from_the_server_stops_the_agent() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let mut agent = server.agent(&server.dir.path().join("agent"), &["--queue", "q"]);
    wait_async("the agent to register", Duration::from_secs(20), || async {
        client
            .list_agents()
            .await
            .unwrap()
            .iter()
            .any(|a| a.status == AgentStatus::Polling)
    })
    .await;
    let id = client.list_agents().await.unwrap()[0].id;
    client.stop_agent(id).await.unwrap();
    let exited = tokio::task::spawn_blocking(move || agent.child.wait().map(|s| s.success()));
    let exited = tokio::time::timeout(Duration::from_secs(20), exited)
        .await
        .unwrap()
        .unwrap();
    assert!(exited.unwrap());
    assert_eq!(
        client.list_agents().await.unwrap()[0].status,
        AgentStatus::Stopped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_while_waiting_for_a_slot_never_starts() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let _agent = server.agent(
        &server.dir.path().join("agent"),
        &["--queue", "q", "--max-jobs", "1"],
    );
    // Short runs first, so the agent takes items ahead of its one slot.
    let mut quick = Vec::new();
    for _ in 0..6 {
        quick.push(client.enqueue("q", &sh("true")).await.unwrap().id);
    }
    wait_items_done(&client, &quick, Duration::from_secs(30)).await;
    let long = client.enqueue("q", &sh("sleep 1000")).await.unwrap().id;
    let marker = server.dir.path().join("started");
    let waiting = client
        .enqueue("q", &sh(&format!("touch {}", marker.display())))
        .await
        .unwrap()
        .id;
    wait_async(
        "the second run to wait for the slot",
        Duration::from_secs(20),
        || async { client.get_item(waiting).await.unwrap().state == ItemState::Claimed },
    )
    .await;
    let run = client.get_item(waiting).await.unwrap().run_id.unwrap();
    assert_eq!(
        client.get_run(&run).await.unwrap().state,
        RunState::Starting
    );
    client.stop_run(&run).await.unwrap();
    wait_state(&client, waiting, ItemState::Stopped).await;
    assert!(!marker.exists(), "it never started");
    let (long_run, pid) = running(&client, long).await;
    client.stop_run(&long_run).await.unwrap();
    wait_state(&client, long, ItemState::Stopped).await;
    kill_group(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_runs_one_after_another_keep_flowing_and_reuse_their_directories() {
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let state = server.dir.path().join("agent");
    let _agent = server.agent(&state, &["--queue", "q", "--max-jobs", "1"]);
    // Short enough to make the agent take items ahead, each enqueued once the last ended:
    // an idle agent must keep leasing however few it takes ahead.
    let mut runs = Vec::new();
    for n in 0..10 {
        let id = client.enqueue("q", &sh("sleep 0.05")).await.unwrap().id;
        wait_state(&client, id, ItemState::Finished).await;
        let run = client.get_item(id).await.unwrap().run_id.unwrap();
        let run = client.get_run(&run).await.unwrap();
        // A run this short reports its end only: its start and handle come with it.
        let started = run
            .started_at_ms
            .unwrap_or_else(|| panic!("run {n} has no start"));
        assert!(started <= run.ended_at_ms.unwrap());
        assert!(run.handle["pid"].as_i64().is_some());
        runs.push(run.id);
    }
    // A finished run's directory waits in place for the next run to be renamed from it;
    // a run's end and the next one's start may cross (the next then takes a spare made
    // ahead), so one more may still wait: never the ten of them.
    let runs_dir = state.join("runs");
    let waiting: Vec<_> = runs
        .iter()
        .filter(|run| runs_dir.join(run.as_str()).exists())
        .collect();
    assert!(
        !waiting.is_empty() && waiting.len() <= 2,
        "finished runs' directories were handed on: {waiting:?} still there"
    );
    assert_eq!(std::fs::read_dir(&runs_dir).unwrap().count(), waiting.len());
    assert!(
        std::fs::read_dir(state.join("spare")).unwrap().count() >= 1,
        "spares made ahead"
    );
    // What a finished run leaves in its own directory goes with it (`keep_finished_runs`
    // is 0 by default); a failed run's stays for a day to be looked into.
    let id = client
        .enqueue("q", &sh("echo weights > model.pt"))
        .await
        .unwrap()
        .id;
    wait_state(&client, id, ItemState::Finished).await;
    let run = client.get_item(id).await.unwrap().run_id.unwrap();
    let dir = state.join("runs").join(run.as_str());
    wait_async(
        "the finished run's directory to go",
        Duration::from_secs(10),
        || async { !dir.exists() },
    )
    .await;
    let id = client
        .enqueue("q", &sh("echo weights > model.pt; exit 1"))
        .await
        .unwrap()
        .id;
    wait_state(&client, id, ItemState::Failed).await;
    let run = client.get_item(id).await.unwrap().run_id.unwrap();
    let kept = state.join("runs").join(run.as_str()).join("work/model.pt");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "weights\n");
    // And a reused directory shows the next run nothing of the last one's output.
    let id = client.enqueue("q", &sh("echo first")).await.unwrap().id;
    wait_state(&client, id, ItemState::Finished).await;
    let id = client.enqueue("q", &sh("echo second")).await.unwrap().id;
    wait_state(&client, id, ItemState::Finished).await;
    let run = client.get_item(id).await.unwrap().run_id.unwrap();
    let logs = client.read_log(&run, 0).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&logs), "second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_streams_as_it_comes_and_ends_with_a_failed_run() {
    let up = ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"]);
    let client = up.client();
    let item = client
        .enqueue(
            "default",
            &sh("echo one; sleep 1; echo two; sleep 0.3; exit 4"),
        )
        .await
        .unwrap();
    wait_async("the run to start", Duration::from_secs(20), || async {
        client.get_item(item.id).await.unwrap().run_id.is_some()
    })
    .await;
    let run = client.get_item(item.id).await.unwrap().run_id.unwrap();
    let mut follower = client.follow_log(&run, 0).await.unwrap();
    let mut seen = Vec::new();
    // The first line arrives while the run still sleeps: streamed, not read at the end.
    while !seen.ends_with(b"one\n") {
        let piece = tokio::time::timeout(Duration::from_secs(10), follower.next())
            .await
            .expect("the first line within 10 s")
            .unwrap()
            .expect("more output");
        seen.extend(piece);
    }
    assert!(!item_state(&client, item.id).await.is_terminal());
    let ended = async {
        while let Some(piece) = follower.next().await.unwrap() {
            seen.extend(piece);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), ended)
        .await
        .expect("the follow ends");
    assert_eq!(String::from_utf8_lossy(&seen), "one\ntwo\n");
    assert_eq!(item_state(&client, item.id).await, ItemState::Failed);
    // It ended with the failure, not at the server's periodic recheck (5 s) after it.
    let failed_at = client.get_item(item.id).await.unwrap().updated_at_ms;
    let lag = liftoff_types::now_ms() - failed_at;
    assert!(
        lag < 3_000,
        "the follow ended {lag} ms after the run failed"
    );
}
