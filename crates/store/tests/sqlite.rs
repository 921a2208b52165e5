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
