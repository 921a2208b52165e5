//! The whole item lifecycle over HTTP against a real server, and the long-poll.

mod common;

use common::TestServer;
use liftoff_types::api::{
    AckRequest, FailRequest, ItemFilter, LeaseRequest, RunFilter, WarnRequest,
};
use liftoff_types::{
    AgentId, AgentStatus, Attachment, Heartbeat, ItemId, ItemState, LaunchSpec, Lease, NewAgent,
    NewQueue, Phase, Priority, RunState, RunUpdate,
};
use serde_json::json;
use std::time::{Duration, Instant};

fn lease_req(queue: &str, wait_ms: u64) -> LeaseRequest {
    LeaseRequest {
        queues: vec![queue.into()],
        max: 1,
        wait_ms,
        lease_ms: 60_000,
        runs: true,
        schedulers: true,
    }
}

fn update(fence: i64, state: RunState, exit_code: Option<i32>) -> RunUpdate {
    RunUpdate {
        started_at_ms: None,
        fence,
        state,
        exit_code,
        message: None,
        handle: None,
        not_started: false,
    }
}

/// Queue `q` and a registered agent.
async fn queue_and_agent(t: &TestServer) -> AgentId {
    t.admin.create_queue(&NewQueue::named("q")).await.unwrap();
    t.agent
        .register_agent(&NewAgent::on("test", &["q"]))
        .await
        .unwrap()
        .id
}

/// Enqueues `spec` on queue `q` and leases it for `agent`.
async fn enqueue_and_lease(t: &TestServer, agent: AgentId, spec: &LaunchSpec) -> (ItemId, Lease) {
    let id = t.user.enqueue("q", spec).await.unwrap().id;
    let lease = t
        .agent
        .lease(agent, &lease_req("q", 0))
        .await
        .unwrap()
        .leases
        .remove(0);
    assert_eq!(lease.item.id, id);
    (id, lease)
}

async fn gpu_queue(t: &TestServer) {
    let queue: NewQueue = serde_json::from_value(json!({
        "name": "gpu",
        "resource": "local-process",
        "config": {"env": {"GPUS": "{{gpus}}"}, "partition": "{{partition}}"},
        "template_variables": {
            "gpus": {"type": "integer", "default": 1, "minimum": 0, "maximum": 8},
            "partition": {"type": "string", "enum": ["debug", "long"], "default": "debug"}
        }
    }))
    .unwrap();
    t.admin.create_queue(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle() {
    let t = TestServer::start().await;
    gpu_queue(&t).await;
    let mut spec = LaunchSpec::command(vec!["python".into(), "train.py".into()]);
    spec.template_variables.insert("gpus".into(), json!(4));
    spec.priority = Some(Priority::High);
    let item = t.user.enqueue("gpu", &spec).await.unwrap();
    assert_eq!(item.state, ItemState::Pending);
    assert_eq!(
        item.resource_args,
        json!({"env": {"GPUS": 4}, "partition": "debug"})
    );
    assert_eq!(t.user.get_item(item.id).await.unwrap().position, Some(0));

    let agent = t
        .agent
        .register_agent(&NewAgent {
            hostname: "box".into(),
            queues: vec!["gpu".into()],
            ..NewAgent::default()
        })
        .await
        .unwrap();
    assert_eq!(agent.name, format!("box-{}", agent.id));
    let lease = t
        .agent
        .lease(agent.id, &lease_req("gpu", 0))
        .await
        .unwrap()
        .leases
        .remove(0);
    assert_eq!(
        (lease.item.id, lease.item.state),
        (item.id, ItemState::Leased)
    );
    let warn = WarnRequest {
        fence: lease.fence,
        message: "image cache cold".into(),
    };
    t.agent.warn(item.id, &warn).await.unwrap();
    let ack = AckRequest {
        fence: lease.fence,
        run_id: "run-a1".parse().unwrap(),
        handle: json!({"pid": 7, "start": 1}),
        state: None,
    };
    let run = t.agent.ack(item.id, &ack).await.unwrap().run;
    assert_eq!(run.state, RunState::Starting);
    let beat = Heartbeat {
        status: AgentStatus::Running,
        in_flight: vec![item.id],
        running_jobs: 0,
        running_schedulers: 0,
        wait_ms: 0,
    };
    assert!(t
        .agent
        .heartbeat(agent.id, &beat)
        .await
        .unwrap()
        .stop_items
        .is_empty());
    t.agent
        .update_run(&run.id, &update(lease.fence, RunState::Running, None))
        .await
        .unwrap();
    let done = t
        .agent
        .update_run(&run.id, &update(lease.fence, RunState::Finished, Some(0)))
        .await
        .unwrap();
    assert_eq!((done.state, done.exit_code), (RunState::Finished, Some(0)));

    let item = t.user.get_item(item.id).await.unwrap();
    assert_eq!(item.state, ItemState::Finished);
    assert_eq!(item.warnings[0].message, "image cache cold");
    let runs = t.user.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    let depth = t.user.get_queue("gpu").await.unwrap().depth.unwrap();
    assert_eq!((depth.finished, depth.pending), (1, 0));
    let agents = t.user.list_agents().await.unwrap();
    assert_eq!(
        (agents[0].status, agents[0].in_flight.clone()),
        (AgentStatus::Running, vec![item.id])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_release_cancel_and_stop() {
    let t = TestServer::start().await;
    t.admin.create_queue(&NewQueue::named("q")).await.unwrap();
    let spec = LaunchSpec::command(vec!["false".into()]);
    let agent = t
        .agent
        .register_agent(&NewAgent::on("test", &["q"]))
        .await
        .unwrap()
        .id;

    // Fail with phase and files.
    let (a, lease) = enqueue_and_lease(&t, agent, &spec).await;
    let fail = FailRequest {
        fence: lease.fence,
        exit_code: None,
        message: "exit code 1".into(),
        phase: Phase::Run,
        files: vec![Attachment {
            name: "output.log".into(),
            content: "Traceback...\nValueError".into(),
        }],
        cause: None,
    };
    let failed = t.agent.fail(a, &fail).await.unwrap();
    assert_eq!(failed.failure.as_ref().unwrap().phase, Phase::Run);
    assert_eq!(
        t.user.item_file(a, "output.log").await.unwrap(),
        "Traceback...\nValueError"
    );

    // Release: back to pending, no attempt counted.
    let (b, lease) = enqueue_and_lease(&t, agent, &spec).await;
    t.agent.release(b, lease.fence).await.unwrap();
    let item = t.user.get_item(b).await.unwrap();
    assert_eq!((item.state, item.attempts), (ItemState::Pending, 0));

    // Cancel pending.
    assert_eq!(
        t.user.cancel_item(b).await.unwrap().state,
        ItemState::Cancelled
    );
    let err = t.user.cancel_item(b).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");

    // Stop a running run: the agent hears it in its heartbeat.
    let (c, lease) = enqueue_and_lease(&t, agent, &spec).await;
    let ack = AckRequest {
        fence: lease.fence,
        run_id: "run-c".parse().unwrap(),
        handle: json!({}),
        state: Some(RunState::Running),
    };
    let run = t.agent.ack(c, &ack).await.unwrap().run;
    assert!(t.user.stop_run(&run.id).await.unwrap().stop_requested);
    let beat = Heartbeat {
        status: AgentStatus::Running,
        in_flight: vec![c],
        running_jobs: 0,
        running_schedulers: 0,
        wait_ms: 0,
    };
    assert_eq!(
        t.agent.heartbeat(agent, &beat).await.unwrap().stop_items,
        vec![c]
    );
    t.agent
        .update_run(&run.id, &update(lease.fence, RunState::Stopped, Some(-15)))
        .await
        .unwrap();
    assert_eq!(t.user.get_item(c).await.unwrap().state, ItemState::Stopped);

    let states: Vec<ItemState> = t
        .user
        .list_items(&ItemFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|i| i.state)
        .collect();
    assert_eq!(
        states,
        [ItemState::Stopped, ItemState::Cancelled, ItemState::Failed],
        "newest first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_woken_by_an_enqueue() {
    let t = TestServer::start().await;
    let agent = queue_and_agent(&t).await;
    let client = t.agent.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move { client.lease(agent, &lease_req("q", 30_000)).await });
    common::wait_parked(&t.server, "queue:q").await;
    let enqueued_at = Instant::now();
    let item = t
        .user
        .enqueue("q", &LaunchSpec::command(vec!["true".into()]))
        .await
        .unwrap();
    let leases = poll.await.unwrap().unwrap().leases;
    let woke_after = enqueued_at.elapsed();
    assert_eq!(leases.len(), 1, "the waiting lease got the item");
    assert_eq!(leases[0].item.id, item.id);
    assert!(
        woke_after < Duration::from_secs(2),
        "woken {woke_after:?} after the enqueue"
    );
    assert!(
        started.elapsed() < Duration::from_secs(29),
        "it was woken, not timed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_with_nothing_to_take_ends_at_its_deadline() {
    let t = TestServer::start().await;
    t.admin.create_queue(&NewQueue::named("q")).await.unwrap();
    t.admin
        .create_queue(&NewQueue::named("other"))
        .await
        .unwrap();
    let agent = t
        .agent
        .register_agent(&NewAgent::on("test", &["q"]))
        .await
        .unwrap()
        .id;
    let started = Instant::now();
    let client = t.agent.clone();
    let poll = tokio::spawn(async move { client.lease(agent, &lease_req("q", 300)).await });
    // An item on another queue must not end this wait.
    t.user
        .enqueue("other", &LaunchSpec::command(vec!["true".into()]))
        .await
        .unwrap();
    let leases = poll.await.unwrap().unwrap().leases;
    assert!(leases.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_goes_back_and_wakes_a_waiting_agent() {
    let t = TestServer::start().await;
    t.admin.create_queue(&NewQueue::named("q")).await.unwrap();
    let (slow, fast) = (
        t.agent
            .register_agent(&NewAgent::on("test", &["q"]))
            .await
            .unwrap()
            .id,
        t.agent
            .register_agent(&NewAgent::on("test", &["q"]))
            .await
            .unwrap()
            .id,
    );
    let id = t
        .user
        .enqueue("q", &LaunchSpec::command(vec!["true".into()]))
        .await
        .unwrap()
        .id;
    let short = LeaseRequest {
        queues: vec!["q".into()],
        max: 1,
        wait_ms: 0,
        lease_ms: 1_000,
        runs: true,
        schedulers: true,
    };
    let first = t.agent.lease(slow, &short).await.unwrap().leases.remove(0);
    // The second agent waits; the reaper returns the item when the first lease expires.
    let second = t
        .agent
        .lease(fast, &lease_req("q", 10_000))
        .await
        .unwrap()
        .leases
        .remove(0);
    assert_eq!(second.item.id, id);
    assert_eq!(second.item.attempts, 1);
    assert!(second.fence > first.fence);
    let stale = AckRequest {
        fence: first.fence,
        run_id: "late".parse().unwrap(),
        handle: json!({}),
        state: None,
    };
    assert!(t.agent.ack(id, &stale).await.unwrap_err().is_conflict());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answer_each_entry_on_its_own() {
    use liftoff_types::api::ItemAck;
    let t = TestServer::start().await;
    let agent = queue_and_agent(&t).await;
    let spec = LaunchSpec::command(vec!["true".into()]);
    let (a, la) = enqueue_and_lease(&t, agent, &spec).await;
    let (b, lb) = enqueue_and_lease(&t, agent, &spec).await;
    let ack = |fence, run: &str| AckRequest {
        fence,
        run_id: run.parse().unwrap(),
        handle: json!({}),
        state: None,
    };
    let answers = t
        .agent
        .ack_batch(
            agent,
            vec![
                ItemAck {
                    item_id: a,
                    ack: ack(la.fence, "ra"),
                },
                ItemAck {
                    item_id: b,
                    ack: ack(lb.fence + 9, "rb"),
                },
            ],
        )
        .await
        .unwrap();
    assert!(answers[0].is_ok());
    assert!(
        answers[1].as_ref().unwrap_err().is_conflict(),
        "a stale fence is refused alone"
    );
    let reports = vec![
        liftoff_types::api::RunReport {
            run_id: "ra".parse().unwrap(),
            update: update(la.fence, RunState::Finished, Some(0)),
        },
        liftoff_types::api::RunReport {
            run_id: "nope".parse().unwrap(),
            update: update(1, RunState::Finished, Some(0)),
        },
    ];
    let answers = t.agent.report_batch(agent, reports).await.unwrap();
    assert_eq!(answers[0].as_ref().unwrap().state, RunState::Finished);
    assert_eq!(
        answers[1].as_ref().unwrap_err().status(),
        Some(reqwest::StatusCode::NOT_FOUND)
    );
    assert_eq!(t.user.get_item(a).await.unwrap().state, ItemState::Finished);
    assert_eq!(t.user.get_item(b).await.unwrap().state, ItemState::Leased);
}
