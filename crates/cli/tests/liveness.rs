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

