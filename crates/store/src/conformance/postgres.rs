//! Fresh PostgreSQL databases for tests, on the server named by `LIFTOFF_TEST_POSTGRES`
//! (`scripts/services.sh start` starts one and says how to set it).

use crate::PostgresStore;

/// Drops its database when the test ends.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// The server's URL. Without one a test is skipped (returns `None`), except under CI
/// (`CI=true`), where a missing PostgreSQL fails the test.
pub fn server_url() -> Option<String> {
    match std::env::var("LIFTOFF_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but LIFTOFF_TEST_POSTGRES is not set: PostgreSQL is missing")
        }
        _ => {
            eprintln!("skipped: set LIFTOFF_TEST_POSTGRES (scripts/services.sh start)");
            None
        }
    }
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> Option<TestDatabase> {
    let admin_url = server_url()?;
    let name = format!("liftoff_test_{:016x}", rand::random::<u64>());
    let url = crate::postgres::admin::create_database(&admin_url, &name)
        .await
        .unwrap_or_else(|e| panic!("cannot create a database on PostgreSQL at {admin_url}: {e:?}"));
    Some(TestDatabase {
        url,
        admin_url,
        name,
    })
}

/// A store on a fresh database.
pub async fn fresh_store() -> Option<(PostgresStore, TestDatabase)> {
    let db = fresh_database().await?;
    let store = PostgresStore::connect(&db.url)
        .await
        .expect("connect to the test database");
    Some((store, db))
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: use a thread with a runtime of its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let _ = crate::postgres::admin::drop_database(&admin_url, &name).await;
            });
        })
        .join();
    }
}
