//! Never lost, never twice: agents' liveness as the server judges it, agents that start
//! before their server, items that never started, through the real binaries.

mod common;

use common::{wait_async, ServerProcess};
use liftoff_client::Client;
use liftoff_types::{AgentId, AgentStatus, ItemId, ItemState, LaunchSpec, NewQueue, RunState};
use std::time::{Duration, Instant};

fn sh(script: &str) -> LaunchSpec {
    LaunchSpec::command(vec!["sh".into(), "-c".into(), script.into()])
}

async fn status(client: &Client, id: AgentId) -> AgentStatus {
    let agents = client.list_agents().await.unwrap();
    agents.iter().find(|a| a.id == id).unwrap().status
}

async fn run_state(client: &Client, item: ItemId) -> Option<RunState> {
    let run = client.get_item(item).await.unwrap().run_id?;
    Some(client.get_run(&run).await.unwrap().state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_agent_under_a_short_timeout_is_never_lost_and_a_killed_one_is_on_time() {
    // The agent's heartbeat is held by the server for 10 s, five times the timeout.
    let server =
        ServerProcess::start_with(&["server", "--bind", "127.0.0.1:0", "--agent-timeout", "2"]);
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    let mut agent = server.agent(&dir.join("agent"), &["--queue", "q"]);
    let item = client.enqueue("q", &sh("sleep 8")).await.unwrap().id;
    wait_async("the run to start", Duration::from_secs(20), || async {
        run_state(&client, item).await == Some(RunState::Running)
    })
    .await;
    let agent_id = client.list_agents().await.unwrap()[0].id;
    // Through the whole run, checked twice a second, the agent stays alive.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        assert_ne!(
            status(&client, agent_id).await,
            AgentStatus::Lost,
            "a live agent declared lost"
        );
        if client.get_item(item).await.unwrap().state == ItemState::Finished {
            break;
        }
        assert!(Instant::now() < until, "the run did not finish");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Killed in the middle of a held beat, it is lost one timeout later: not before.
    agent.kill9();
    let killed = Instant::now();
    wait_async("the agent to be lost", Duration::from_secs(15), || async {
        status(&client, agent_id).await == AgentStatus::Lost
    })
    .await;
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_millis(1300) && after <= Duration::from_secs(5),
        "lost {after:?} after the kill, with a 2 s timeout"
    );
}

/// A `python3` that holds `-m venv` while `HOLD` exists (recording its pid in `HELD`), so an
/// agent can be killed between the ack and the launch; anything else is the real python3.
const PYTHON: &str = r#"#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ] && [ -e "$HOLD" ]; then
    echo $$ > "$HELD"
    n=0
    while [ -e "$HOLD" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
fi
exec /usr/bin/python3 "$@"
"#;

/// An item of a queue that allows one attempt, acked by an agent and held in its build (so
/// it never starts), and what it takes to let it go on.
struct Held {
    item: ItemId,
    ledger: std::path::PathBuf,
    hold: std::path::PathBuf,
    held: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl Held {
    async fn make(server: &ServerProcess, state: &std::path::Path) -> (Held, common::AgentProcess) {
        let client = server.client();
        let mut once = NewQueue::named("once");
        once.max_attempts = 1;
        client.create_queue(&once).await.unwrap();
        let dir = server.dir.path();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let python = bin.join("python3");
        std::fs::write(&python, PYTHON).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
        let code = dir.join("code");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::write(code.join("requirements.txt"), "").unwrap();
        let ledger = dir.join("ledger");
        let (hold, held) = (dir.join("hold"), dir.join("held"));
        std::fs::write(&hold, "").unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let env = vec![
            ("PATH".to_string(), path),
            ("HOLD".to_string(), hold.display().to_string()),
            ("HELD".to_string(), held.display().to_string()),
        ];
        let held_item = Held {
            item: ItemId(0),
            ledger,
            hold,
            held,
            env,
        };
        let agent = held_item.agent(server, state);
        let entry = format!("sh -c 'echo ran >> {}'", held_item.ledger.display());
        common::ok(&server.run(&[
            "job",
            "create",
            "code",
            code.to_str().unwrap(),
            "--name",
            "held",
            "--entrypoint",
            &entry,
        ]));
        let spec = LaunchSpec {
            job: Some("held".into()),
            ..LaunchSpec::default()
        };
        let item = client.enqueue("once", &spec).await.unwrap().id;
        // Acked (claimed, its run made) and held in its build: nothing of it has started.
        common::wait_for("the build to be held", Duration::from_secs(30), || {
            held_item.held.exists()
        });
        assert_eq!(
            client.get_item(item).await.unwrap().state,
            ItemState::Claimed
        );
        (Held { item, ..held_item }, agent)
    }

    fn agent(&self, server: &ServerProcess, state: &std::path::Path) -> common::AgentProcess {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        server.agent_with_env(state, &["--queue", "once"], &env)
    }

    /// Ends the held build (its agent was killed) and lets later builds through.
    fn release(&self) {
        let pid: i32 = std::fs::read_to_string(&self.held)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        std::fs::remove_file(&self.hold).unwrap();
    }

    /// The item finished, with no attempt counted, and ran exactly once.
    async fn ran_once(&self, client: &Client) {
        wait_async("the item to end", Duration::from_secs(60), || async {
            client
                .get_item(self.item)
                .await
                .unwrap()
                .state
                .is_terminal()
        })
        .await;
        let shown = client.get_item(self.item).await.unwrap();
        assert_eq!(shown.state, ItemState::Finished, "{:?}", shown.failure);
        assert_eq!(shown.attempts, 0, "a run that never started is no attempt");
        let ran = std::fs::read_to_string(&self.ledger).unwrap();
        assert_eq!(ran, "ran\n", "it ran exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_acked_but_never_started_runs_once_after_its_agent_restarts() {
    let server = ServerProcess::start();
    let client = server.client();
    let state = server.dir.path().join("agent");
    let (held, mut agent) = Held::make(&server, &state).await;
    agent.kill9();
    held.release();
    let _agent = held.agent(&server, &state);
    held.ran_once(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_acked_by_an_agent_gone_for_good_runs_once_elsewhere() {
    // Declared lost 3 s after the kill; the queue allows one attempt and does not requeue
    // lost runs: an item that never started is no lost run.
    let server = ServerProcess::start_with(&[
        "server",
        "--bind",
        "127.0.0.1:0",
        "--agent-timeout",
        "3",
        "--lost-grace",
        "2",
    ]);
    let client = server.client();
    let dir = server.dir.path();
    let (held, mut agent) = Held::make(&server, &dir.join("a")).await;
    agent.kill9();
    held.release();
    let _other = held.agent(&server, &dir.join("b"));
    held.ran_once(&client).await;
    let run = client.get_item(held.item).await.unwrap().run_id.unwrap();
    let runs = client
        .list_runs(&liftoff_types::api::RunFilter::default())
        .await
        .unwrap();
    assert_eq!(
        runs.len(),
        2,
        "the lost, never started run and the one that ran"
    );
    let lost = runs.iter().find(|r| r.id != run).unwrap();
    assert_eq!(lost.state, RunState::Lost);
    assert!(
        lost.message
            .as_deref()
            .unwrap_or("")
            .contains("before the run started"),
        "{:?}",
        lost.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_before_its_server_waits_for_it_and_serves_it() {
    let mut server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let url = server.url();
    // The agent's token is made now; then the server goes and the agent starts without it.
    let token = common::ok(&server.run(&["token", "create", "--scope", "agent", "--name", "a"]));
    server.kill9();
    let state = server.dir.path().join("agent");
    let mut agent = server.spawn_agent(&url, token.trim(), &state, &["--queue", "q"], &[]);
    common::wait_for("the agent to say it waits", Duration::from_secs(20), || {
        agent.log().contains("waiting for the server")
    });
    assert!(agent.is_alive(), "the agent exited: {}", agent.log());
    server.restart();
    let item = client.enqueue("q", &sh("echo served")).await.unwrap().id;
    wait_async("the item to finish", Duration::from_secs(30), || async {
        client.get_item(item).await.unwrap().state == ItemState::Finished
    })
    .await;
}
