//! Reports to the server that must arrive: retried while the server is unreachable, given up
//! on a conflict (the item moved on: the work is no longer ours to report).

use liftoff_client::{ClientError, ClientResult};
use std::future::Future;
use std::time::Duration;

/// How long a report keeps trying before the agent gives up on it (the journal keeps the
/// run, so a restarted agent tries again).
const GIVE_UP: Duration = Duration::from_secs(600);

pub async fn retry<T, F, Fut>(what: &str, call: F) -> ClientResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ClientResult<T>>,
{
    retry_while(what, ClientError::is_transient, call).await
}

/// [`retry`], for the errors `again` picks.
pub async fn retry_while<T, F, Fut>(
    what: &str,
    again: impl Fn(&ClientError) -> bool,
    mut call: F,
) -> ClientResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ClientResult<T>>,
{
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Err(e) if again(&e) && start.elapsed() < GIVE_UP => {
                tracing::warn!(error = %e, "{what}: retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// A call the agent cannot start without: tried until the server answers, however long it
/// is away (an agent started with or before its server, or during its restart, waits for
/// it instead of exiting and leaving its runs unwatched). Says so once, then every minute.
pub async fn until_answered<T, F, Fut>(what: &str, url: &str, mut call: F) -> ClientResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ClientResult<T>>,
{
    let start = tokio::time::Instant::now();
    let mut said: Option<tokio::time::Instant> = None;
    let mut pause = Duration::from_millis(200);
    loop {
        match call().await {
            Err(e) if e.is_transient() => {
                if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    eprintln!(
                        "liftoff agent: {what}: {e}; waiting for the server at {url} ({}s so far)",
                        start.elapsed().as_secs()
                    );
                    said = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// A conflict (or the run gone) means the server has moved on from this run.
pub fn moved_on(e: &ClientError) -> bool {
    e.is_conflict() || e.status() == Some(liftoff_client::StatusCode::NOT_FOUND)
}
