//! The conformance suite on the embedded SQLite store, each case on a fresh file.

use liftoff_store::conformance::DynStore;
use liftoff_store::SqliteStore;
use std::sync::Arc;

async fn fresh() -> (Option<DynStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("liftoff.db")).unwrap();
    (Some(Arc::new(store)), dir)
}

liftoff_store::conformance_tests!(fresh);

#[tokio::test]
async fn reopening_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liftoff.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        use liftoff_store::Store;
        store
            .create_queue(liftoff_types::NewQueue::named("kept"), 1)
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    use liftoff_store::Store;
    assert_eq!(store.list_queues().await.unwrap()[0].name, "kept");
}

/// Two writers enqueueing 3,000 items each, flat out, beside a reader listing all along (about
/// 50 MB of WAL without the limit): the WAL never passes its limit by more than a few
/// commits' worth, and a closed store leaves no WAL. Counted in writes, not seconds, so a
/// slow machine tests the same thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_bounded_under_sustained_writes_with_readers() {
    use liftoff_store::{NewItem, Store};
    use liftoff_types::{ItemKind, LaunchSpec, NewQueue, Priority};
    const LIMIT: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liftoff.db");
    let wal = dir.path().join("liftoff.db-wal");
    let store = Arc::new(SqliteStore::open_with_wal_limit(&path, LIMIT).unwrap());
    store.create_queue(NewQueue::named("q"), 1).await.unwrap();
    const WRITES: u64 = 3_000;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..2 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while n < WRITES {
                let spec = LaunchSpec::command(vec![
                    "echo".into(),
                    format!("{w}-{n}-{}", "x".repeat(200)),
                ]);
                let item = NewItem {
                    queue: "q".into(),
                    spec,
                    priority: Priority::Medium,
                    resource_args: serde_json::json!({}),
                    kind: ItemKind::Run,
                };
                store.enqueue(item, 1).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.list_items(&Default::default()).await.unwrap();
            }
        })
    };
    let mut largest = 0;
    // Until every writer is through (or one failed: its error is raised below).
    while !tasks.iter().all(|t| t.is_finished()) {
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.unwrap();
    assert_eq!(written, 2 * WRITES);
    assert!(
        largest <= 4 * LIMIT,
        "the WAL reached {largest} bytes against a limit of {LIMIT} ({written} writes)"
    );
    store.close().await.unwrap();
    let left = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(left, 0, "a closed store leaves its WAL empty");
}
