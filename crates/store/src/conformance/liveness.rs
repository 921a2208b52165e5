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

/// A lost agent that comes back finds a run its supervisor saw finish: the server takes that
/// end while nobody else has the item, instead of failing it or running it again.
pub async fn a_lost_run_found_finished_by_its_agent_ends_its_item_finished(store: DynStore) {
    queue(&store, "q").await;
    let mut again = NewQueue::named("again");
    again.requeue_lost = true;
    store.create_queue(again, T0).await.unwrap();
    let a = agent(&store).await;
    let mut started = Vec::new();
    for (queue, run) in [("q", "r-plain"), ("again", "r-held"), ("again", "r-taken")] {
        let item = enqueue(&store, queue, Priority::Medium, run).await;
        let l = lease(&store, a, &[queue], 1, T0).await.remove(0);
        let acked = Ack {
            fence: l.fence,
            run_id: run.parse().unwrap(),
            handle: json!({"pid": 7}),
            state: RunState::Running,
        };
        store.ack(item, acked, T0).await.unwrap();
        started.push((item, run.parse::<liftoff_types::RunId>().unwrap(), l.fence));
    }
    let (hold, later) = (T0 + 50_000, T0 + 60_000);
    store
        .lose_agents(T0 + 30_000, T0 + 40_000, hold)
        .await
        .unwrap();
    // The third is given to another agent before the first comes back.
    let b = agent(&store).await;
    let taken = lease(&store, b, &["again"], 10, hold).await;
    assert_eq!(taken.len(), 2, "both held items go out after the hold");
    let (plain, held, given) = (&started[0], &started[1], &started[2]);
    // The item still back in its queue is the one lease b did not ack: make b hold only
    // `given`'s, by releasing the other.
    for l in &taken {
        if l.item.id == held.0 {
            store.release(l.item.id, l.fence, hold).await.unwrap();
        }
    }
    let finished = |fence| update(fence, RunState::Finished, Some(0));
    store
        .update_run(&plain.1, finished(plain.2), later)
        .await
        .unwrap();
    let item = store.get_item(plain.0).await.unwrap();
    assert_eq!(
        item.state,
        ItemState::Finished,
        "failed as lost, but it finished"
    );
    assert!(item.failure.is_none());
    assert!(item
        .warnings
        .iter()
        .any(|w| w.message == crate::rules::LATE_FINISH));
    assert_eq!(
        store.get_run(&plain.1).await.unwrap().state,
        RunState::Finished
    );
    // Leased again (the fence moved) and released: still another lease's, refused.
    assert!(store
        .update_run(&held.1, finished(held.2), later)
        .await
        .is_err());
    assert!(store
        .update_run(&given.1, finished(given.2), later)
        .await
        .is_err());
    assert_ne!(
        store.get_item(given.0).await.unwrap().state,
        ItemState::Finished
    );
}

/// The same, for an item waiting out its hold: it never runs again.
pub async fn a_held_item_whose_lost_run_is_found_finished_is_not_run_again(store: DynStore) {
    let mut again = NewQueue::named("again");
    again.requeue_lost = true;
    store.create_queue(again, T0).await.unwrap();
    let a = agent(&store).await;
    let item = enqueue(&store, "again", Priority::Medium, "x").await;
    let l = lease(&store, a, &["again"], 1, T0).await.remove(0);
    let acked = Ack {
        fence: l.fence,
        run_id: "r1".parse().unwrap(),
        handle: json!({"pid": 7}),
        state: RunState::Running,
    };
    store.ack(item, acked, T0).await.unwrap();
    let hold = T0 + 50_000;
    store
        .lose_agents(T0 + 30_000, T0 + 40_000, hold)
        .await
        .unwrap();
    assert_eq!(
        store.get_item(item).await.unwrap().state,
        ItemState::Pending
    );
    store
        .update_run(
            &"r1".parse().unwrap(),
            update(l.fence, RunState::Finished, Some(0)),
            T0 + 45_000,
        )
        .await
        .unwrap();
    let shown = store.get_item(item).await.unwrap();
    assert_eq!(shown.state, ItemState::Finished);
    assert_eq!(shown.run_id, Some("r1".parse().unwrap()));
    let b = agent(&store).await;
    assert!(lease(&store, b, &["again"], 10, hold).await.is_empty());
}
