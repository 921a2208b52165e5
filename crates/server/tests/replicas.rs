//! Two server replicas on one PostgreSQL database (`LIFTOFF_TEST_POSTGRES`): what one takes
//! in, the other serves, and a long-poll held by one is woken by an enqueue through the other.

mod common;

use liftoff_client::Client;
use liftoff_server::{Server, ServerConfig};
use liftoff_store::conformance::postgres::fresh_database;
use liftoff_store::PostgresStore;
use liftoff_types::api::LeaseRequest;
use liftoff_types::{now_ms, LaunchSpec, NewAgent, NewQueue, Scope};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn replica(url: &str) -> Server {
    let store = Arc::new(PostgresStore::connect(url).await.unwrap());
    let config = ServerConfig::local("127.0.0.1:0".parse().unwrap());
    liftoff_server::start(config, store).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_replica_is_woken_by_an_enqueue_through_the_other() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (a, b) = (replica(&db.url).await, replica(&db.url).await);
    // A token made through one replica's store is good on both.
    let (token, hash) = liftoff_server::auth::new_token();
    a.state
        .store
        .create_token("admin", Scope::Admin, &hash, now_ms())
        .await
        .unwrap();
    let via_a = Client::new(&a.url(), Some(token.clone())).unwrap();
    let via_b = Client::new(&b.url(), Some(token)).unwrap();
    via_a.create_queue(&NewQueue::named("q")).await.unwrap();
    let agent = via_b
        .register_agent(&NewAgent::on("test", &["q"]))
        .await
        .unwrap()
        .id;

    let started = Instant::now();
    let poller = via_b.clone();
    let poll = tokio::spawn(async move {
        let req = LeaseRequest {
            queues: vec!["q".into()],
            max: 1,
            wait_ms: 30_000,
            lease_ms: 60_000,
            runs: true,
            schedulers: true,
        };
        poller.lease(agent, &req).await
    });
    common::wait_parked(&b, "queue:q").await;
    let enqueued_at = Instant::now();
    let item = via_a
        .enqueue("q", &LaunchSpec::command(vec!["true".into()]))
        .await
        .unwrap();
    let leases = poll.await.unwrap().unwrap().leases;
    let woke_after = enqueued_at.elapsed();
    assert_eq!(
        leases.len(),
        1,
        "the long-poll on B got the item enqueued through A"
    );
    assert_eq!(leases[0].item.id, item.id);
    assert!(
        woke_after < Duration::from_secs(2),
        "woken {woke_after:?} after the enqueue"
    );
    assert!(
        started.elapsed() < Duration::from_secs(29),
        "woken, not timed out"
    );
    a.stop().await;
    b.stop().await;
}
