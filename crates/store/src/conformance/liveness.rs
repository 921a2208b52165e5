//! Conformance cases for agents that go silent: what their runs' items do, and when.

use super::{agent, enqueue, lease, queue, update, DynStore, T0};
use crate::Ack;
use liftoff_types::{ItemState, NewQueue, Priority, RunState};
use serde_json::json;

/// An agent's machine stops its runs by the time the agent is declared lost plus a grace
/// (the agent's lease): until then another agent must not start the item again. A run the
/// lost agent never started costs no attempt and goes back even without `requeue_lost`.
pub async fn a_lost_agents_items_wait_out_the_hold_and_unstarted_runs_cost_nothing(
    store: DynStore,
) {
    queue(&store, "q").await;
    let mut again = NewQueue::named("again");
    again.requeue_lost = true;
    store.create_queue(again, T0).await.unwrap();
    let a = agent(&store).await;
    let waiting = enqueue(&store, "q", Priority::Medium, "waiting").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    // Acked as the agent acks (an empty handle, `starting`), then never launched.
    let acked = Ack {
        fence: l.fence,
        run_id: "r-waiting".parse().unwrap(),
        handle: json!({}),
        state: RunState::Starting,
    };
    store.ack(waiting, acked, T0).await.unwrap();
    let started = enqueue(&store, "again", Priority::Medium, "started").await;
    let l2 = lease(&store, a, &["again"], 1, T0).await.remove(0);
    let acked = Ack {
        fence: l2.fence,
        run_id: "r-started".parse().unwrap(),
        handle: json!({}),
        state: RunState::Starting,
    };
    store.ack(started, acked, T0).await.unwrap();
    let mut running = update(l2.fence, RunState::Running, None);
    running.handle = Some(json!({"pid": 42}));
    store
        .update_run(&"r-started".parse().unwrap(), running, T0 + 1)
        .await
        .unwrap();

    let (now, hold) = (T0 + 40_000, T0 + 50_000);
    let lost = store.lose_agents(T0 + 30_000, now, hold).await.unwrap();
    assert_eq!(lost.agents, vec![a]);
    let item = store.get_item(waiting).await.unwrap();
    assert_eq!(
        (item.state, item.attempts),
        (ItemState::Pending, 0),
        "never started: back without an attempt, though its queue does not requeue lost runs"
    );
    let run = store.get_run(&"r-waiting".parse().unwrap()).await.unwrap();
    assert_eq!(run.state, RunState::Lost);
    assert!(
        run.message
            .as_deref()
            .unwrap()
            .contains("before the run started"),
        "{:?}",
        run.message
    );
    let item = store.get_item(started).await.unwrap();
    assert_eq!((item.state, item.attempts), (ItemState::Pending, 1));

    let b = agent(&store).await;
    assert!(
        lease(&store, b, &["q", "again"], 10, hold - 1)
            .await
            .is_empty(),
        "nothing is given out before the lost runs' machine has stopped them"
    );
    let mut taken: Vec<_> = lease(&store, b, &["q", "again"], 10, hold)
        .await
        .into_iter()
        .map(|l| l.item.id)
        .collect();
    taken.sort();
    let mut want = vec![waiting, started];
    want.sort();
    assert_eq!(taken, want, "both go out once the hold is over");
}
