//! Conformance cases for how items end for good: `cancel --force` and retention.

use super::{ack, agent, enqueue, lease, queue, update, DynStore, T0};
use liftoff_types::{AgentStatus, Heartbeat, ItemState, NewAgent, Priority, RunState};

pub async fn force_cancel_ends_an_item_whose_agent_is_gone(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    store.ack(id, ack(l.fence, "r1"), T0).await.unwrap();
    let item = store
        .force_cancel(id, "forced: agent gone", T0 + 1)
        .await
        .unwrap();
    assert_eq!(item.state, ItemState::Cancelled);
    assert!(item
        .warnings
        .iter()
        .any(|w| w.message == "forced: agent gone"));
    let run = store.get_run(&"r1".parse().unwrap()).await.unwrap();
    assert_eq!(
        (run.state, run.message.as_deref(), run.ended_at_ms),
        (RunState::Lost, Some("forced: agent gone"), Some(T0 + 1))
    );
    let late = store
        .update_run(
            &run.id,
            update(l.fence, RunState::Finished, Some(0)),
            T0 + 2,
        )
        .await;
    assert!(late.is_err(), "the gone agent's late report is refused");
    assert_eq!(
        store.get_item(id).await.unwrap().state,
        ItemState::Cancelled
    );
    store.delete_queue("q", false, T0 + 3).await.unwrap();
}

pub async fn prune_removes_only_what_ended_long_ago(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let old = enqueue(&store, "q", Priority::Medium, "old").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    store.ack(old, ack(l.fence, "r-old"), T0).await.unwrap();
    store
        .update_run(
            &"r-old".parse().unwrap(),
            update(l.fence, RunState::Finished, Some(0)),
            T0,
        )
        .await
        .unwrap();
    let held = enqueue(&store, "q", Priority::Medium, "held").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    store.ack(held, ack(l.fence, "r-held"), T0).await.unwrap();
    let pending = enqueue(&store, "q", Priority::Low, "pending").await;
    let recent = enqueue(&store, "q", Priority::Low, "recent").await;
    store.cancel(recent, T0 + 10_000).await.unwrap();
    // An agent stopped long ago that holds nothing goes; one holding a claimed item stays.
    let gone = store
        .register_agent(NewAgent::default(), T0)
        .await
        .unwrap()
        .id;
    let beat = Heartbeat {
        status: AgentStatus::Stopped,
        in_flight: Vec::new(),
        running_jobs: 0,
        running_schedulers: 0,
        wait_ms: 0,
    };
    store.heartbeat(gone, beat.clone(), T0).await.unwrap();
    store.heartbeat(a, beat, T0).await.unwrap();

    let cutoff = T0 + 5_000;
    let counted = store.prune(cutoff, true).await.unwrap();
    assert_eq!((counted.items, counted.runs, counted.agents), (1, 1, 1));
    assert!(
        store.get_item(old).await.is_ok(),
        "a dry run removes nothing"
    );
    let pruned = store.prune(cutoff, false).await.unwrap();
    assert_eq!(pruned, counted);
    assert!(store.get_item(old).await.is_err());
    assert!(store.get_run(&"r-old".parse().unwrap()).await.is_err());
    assert!(store.get_agent(gone).await.is_err());
    for (id, state) in [
        (held, ItemState::Claimed),
        (pending, ItemState::Pending),
        (recent, ItemState::Cancelled),
    ] {
        assert_eq!(
            store.get_item(id).await.unwrap().state,
            state,
            "item {id} kept"
        );
    }
    assert_eq!(
        store.get_agent(a).await.unwrap().id,
        a,
        "the agent holding an item stays"
    );
    assert_eq!(
        store
            .get_run(&"r-held".parse().unwrap())
            .await
            .unwrap()
            .state,
        RunState::Starting
    );
}

pub async fn queue_concurrency_caps_live_runs_across_agents(store: DynStore) {
    let mut capped = liftoff_types::NewQueue::named("capped");
    capped.max_concurrency = Some(3);
    store.create_queue(capped, T0).await.unwrap();
    queue(&store, "free").await;
    let mut items = Vec::new();
    for k in 0..8 {
        items.push(enqueue(&store, "capped", Priority::Medium, &format!("c{k}")).await);
        enqueue(&store, "free", Priority::Medium, &format!("f{k}")).await;
    }
    // Four agents lease at once: the cap holds across them, whatever replica each hits.
    let agents = [
        agent(&store).await,
        agent(&store).await,
        agent(&store).await,
        agent(&store).await,
    ];
    let tasks: Vec<_> = agents
        .iter()
        .map(|&a| {
            let store = store.clone();
            tokio::spawn(async move { lease(&store, a, &["capped"], 2, T0).await })
        })
        .collect();
    let mut leased = Vec::new();
    for t in tasks {
        leased.extend(t.await.unwrap());
    }
    assert_eq!(leased.len(), 3, "at most 3 live runs on the capped queue");
    let depth = store
        .get_queue("capped", true)
        .await
        .unwrap()
        .depth
        .unwrap();
    assert_eq!((depth.live_runs, depth.pending), (3, 5));
    // Other queues are not held back by it.
    assert_eq!(
        lease(&store, agents[0], &["capped", "free"], 4, T0)
            .await
            .len(),
        4
    );
    // A claimed run still counts; one that ends makes room for exactly one more.
    let l = leased.remove(0);
    store
        .ack(l.item.id, ack(l.fence, "cap-r1"), T0)
        .await
        .unwrap();
    assert!(lease(&store, agents[1], &["capped"], 2, T0)
        .await
        .is_empty());
    store
        .update_run(
            &"cap-r1".parse().unwrap(),
            update(l.fence, RunState::Finished, Some(0)),
            T0 + 1,
        )
        .await
        .unwrap();
    let next = lease(&store, agents[1], &["capped"], 2, T0 + 1).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].item.id, items[3], "the next in queue order");
}

pub async fn runs_are_listed_by_job_name_or_version(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    for (k, job) in ["mnist:v0", "mnist:v1", "mnistx:v0"].iter().enumerate() {
        let spec = liftoff_types::LaunchSpec {
            job: Some(job.to_string()),
            ..Default::default()
        };
        let item = crate::NewItem {
            queue: "q".into(),
            spec,
            priority: Priority::Medium,
            resource_args: serde_json::json!({}),
            kind: liftoff_types::ItemKind::Run,
        };
        let id = store.enqueue(item, T0).await.unwrap().id;
        let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
        store
            .ack(id, ack(l.fence, &format!("job-r{k}")), T0)
            .await
            .unwrap();
    }
    let listed = |job: &'static str| {
        let store = store.clone();
        async move {
            let filter = liftoff_types::api::RunFilter {
                job: Some(job.into()),
                ..Default::default()
            };
            let mut ids: Vec<String> = store
                .list_runs(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id.to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(listed("mnist").await, ["job-r0", "job-r1"]);
    assert_eq!(listed("mnist:v1").await, ["job-r1"]);
    assert!(listed("mnis").await.is_empty());
}

pub async fn the_last_admin_token_cannot_be_revoked(store: DynStore) {
    use liftoff_types::Scope;
    let first = store
        .create_token("admin", Scope::Admin, "h-admin-1", T0)
        .await
        .unwrap();
    let user = store
        .create_token("user", Scope::User, "h-user", T0)
        .await
        .unwrap();
    let last = store.delete_token(first.id).await;
    assert!(
        matches!(&last, Err(crate::StoreError::Conflict(m)) if m.contains("last admin token")),
        "{last:?}"
    );
    assert!(store.token_by_hash("h-admin-1").await.unwrap().is_some());
    store.delete_token(user.id).await.unwrap();
    // With a second admin token, either may go, but not both, even when revoked at once.
    let second = store
        .create_token("admin2", Scope::Admin, "h-admin-2", T0)
        .await
        .unwrap();
    let (a, b) = tokio::join!(store.delete_token(first.id), store.delete_token(second.id));
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one of two went: {a:?} {b:?}"
    );
    let admins = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.scope == Scope::Admin)
        .count();
    assert_eq!(admins, 1);
}
