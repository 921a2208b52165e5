//! The conformance suite on PostgreSQL, each case on a fresh database of the server named by
//! `LIFTOFF_TEST_POSTGRES`, plus what only a shared database has: cross-process wake-ups.

use liftoff_store::conformance::postgres::{fresh_database, fresh_store, TestDatabase};
use liftoff_store::conformance::DynStore;
use liftoff_store::{PostgresStore, Store};
use std::sync::Arc;
use std::time::Duration;

/// A store, or `None` when PostgreSQL is absent outside CI (the case then passes vacuously).
async fn fresh() -> (Option<DynStore>, Option<TestDatabase>) {
    match fresh_store().await {
        Some((store, db)) => (Some(Arc::new(store)), Some(db)),
        None => (None, None),
    }
}

liftoff_store::conformance_tests!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_published_by_one_store_reaches_the_other() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let a = PostgresStore::connect(&db.url).await.unwrap();
    let b = PostgresStore::connect(&db.url).await.unwrap();
    let mut heard_by_b = b.subscribe().expect("postgres has a subscription");
    let mut heard_by_a = a.subscribe().expect("postgres has a subscription");
    // Each listener first says "look again" once it is listening.
    for rx in [&mut heard_by_a, &mut heard_by_b] {
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(
            first.unwrap().as_deref(),
            Some(liftoff_store::WAKE_EVERYONE)
        );
    }
    a.publish(vec!["queue:gpu".into(), "run:r1".into()])
        .await
        .unwrap();
    for expected in ["queue:gpu", "run:r1"] {
        let got = tokio::time::timeout(Duration::from_secs(10), heard_by_b.recv()).await;
        assert_eq!(got.unwrap().as_deref(), Some(expected));
    }
    // A replica does not hear itself.
    let own = tokio::time::timeout(Duration::from_millis(300), heard_by_a.recv()).await;
    assert!(own.is_err(), "a replica heard its own wake-up: {own:?}");
}

/// Two replicas reaping at once hand each expired lease back exactly once, and a silent agent
/// is declared lost by one of them only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_reaping_at_once_hand_each_item_back_once() {
    use liftoff_store::{LeaseParams, NewItem};
    use liftoff_types::{LaunchSpec, NewAgent, NewQueue, Priority};
    let Some(db) = fresh_database().await else {
        return;
    };
    let a = Arc::new(PostgresStore::connect(&db.url).await.unwrap());
    let b = Arc::new(PostgresStore::connect(&db.url).await.unwrap());
    let t0 = 1_700_000_000_000;
    a.create_queue(NewQueue::named("q"), t0).await.unwrap();
    for _ in 0..300 {
        let item = NewItem {
            queue: "q".into(),
            spec: LaunchSpec::command(vec!["true".into()]),
            priority: Priority::Medium,
            resource_args: serde_json::json!({}),
            kind: liftoff_types::ItemKind::Run,
        };
        a.enqueue(item, t0).await.unwrap();
    }
    let agent = a.register_agent(NewAgent::default(), t0).await.unwrap().id;
    let params = LeaseParams {
        agent,
        queues: vec!["q".into()],
        max: 300,
        lease_ms: 1_000,
        runs: true,
        schedulers: true,
    };
    assert_eq!(a.lease(params, t0).await.unwrap().len(), 300);
    let later = t0 + 60_000;
    let (ra, rb) = tokio::join!(async { a.expire_leases(later).await.unwrap() }, async {
        b.expire_leases(later).await.unwrap()
    },);
    let mut back: Vec<_> = ra
        .requeued
        .iter()
        .chain(&rb.requeued)
        .map(|(id, _)| *id)
        .collect();
    back.sort();
    back.dedup();
    assert_eq!(
        ra.requeued.len() + rb.requeued.len(),
        300,
        "each item handed back once"
    );
    assert_eq!(back.len(), 300);
    let (la, lb) = tokio::join!(
        async { a.lose_agents(later, later, later).await.unwrap() },
        async { b.lose_agents(later, later, later).await.unwrap() },
    );
    assert_eq!(
        la.agents.len() + lb.agents.len(),
        1,
        "lost once: {la:?} {lb:?}"
    );
    let items = a
        .list_items(&liftoff_types::api::ItemFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        items.iter().all(|i| i.attempts == 1),
        "one attempt counted per item"
    );
}
