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
