//! A real server on a loopback port over a fresh SQLite file, with one token per scope.

#![allow(dead_code)]

use liftoff_client::Client;
use liftoff_server::{Server, ServerConfig};
use liftoff_store::{SqliteStore, Store};
use liftoff_types::{now_ms, Scope};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub struct TestServer {
    pub server: Server,
    pub store: Arc<SqliteStore>,
    pub admin: Client,
    pub user: Client,
    pub agent: Client,
    pub tokens: Vec<(Scope, String)>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let mut config = ServerConfig::local("127.0.0.1:0".parse().unwrap());
        config.reaper_every = Duration::from_millis(50);
        config.body_limit = 64 * 1024;
        TestServer::with_config(config).await
    }

    pub async fn with_config(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("test.db")).unwrap());
        let mut tokens = Vec::new();
        for scope in [Scope::Admin, Scope::User, Scope::Agent] {
            let (token, hash) = liftoff_server::auth::new_token();
            store
                .create_token(scope.as_str(), scope, &hash, now_ms())
                .await
                .unwrap();
            tokens.push((scope, token));
        }
        let server = liftoff_server::start(config, store.clone()).await.unwrap();
        let client = |scope: Scope| {
            let token = tokens.iter().find(|(s, _)| *s == scope).unwrap().1.clone();
            Client::new(&server.url(), Some(token)).unwrap()
        };
        TestServer {
            admin: client(Scope::Admin),
            user: client(Scope::User),
            agent: client(Scope::Agent),
            server,
            store,
            tokens,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }

    pub fn token(&self, scope: Scope) -> &str {
        &self.tokens.iter().find(|(s, _)| *s == scope).unwrap().1
    }
}

/// Waits until `check` is true, polling every 10 ms; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until one long-poll of `server` is parked on `key` (so what follows must wake it).
pub async fn wait_parked(server: &Server, key: &str) {
    let wakers = server.state.wakers.clone();
    wait_for(
        &format!("a long-poll to wait on {key}"),
        Duration::from_secs(5),
        || {
            let n = wakers.waiting(key);
            async move { n == 1 }
        },
    )
    .await;
}
