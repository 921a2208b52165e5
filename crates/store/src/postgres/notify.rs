//! Wake-ups across server replicas with `LISTEN/NOTIFY`.
//!
//! A server wakes its own long-polls directly; with a shared database it also publishes the
//! key (`queue:NAME`, `agent:ID`, `run:ID`) on one channel, so a long-poll held by another
//! replica is woken by an enqueue through this one. Payloads carry the sender's replica id,
//! and a replica ignores its own.
//!
//! The listener holds one dedicated connection. When it is lost, the listener reconnects and
//! then wakes every local waiter (`*`): a notification sent while it was away is gone, and a
//! waiter woken for nothing simply looks again.

use crate::StoreResult;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

pub const CHANNEL: &str = "liftoff_wake";

/// Publishes `keys` in one round trip.
pub async fn publish(pool: &Pool, replica: &str, keys: Vec<String>) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = keys.iter().map(|k| format!("{replica} {k}")).collect();
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT pg_notify($1, p) FROM unnest($2::TEXT[]) AS p")
        .await?;
    client.execute(&stmt, &[&CHANNEL, &payloads]).await?;
    Ok(())
}

/// Starts the listener; it runs until the receiver is dropped.
pub fn subscribe(
    config: tokio_postgres::Config,
    replica: String,
) -> mpsc::UnboundedReceiver<String> {
    let (out, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = listen(&config, &replica, &out) => {}
                () = out.closed() => return,
            }
            if out.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

/// One connection's life: listen and forward other replicas' keys until it fails.
async fn listen(
    config: &tokio_postgres::Config,
    replica: &str,
    out: &mpsc::UnboundedSender<String>,
) {
    let (client, mut conn) = match config.connect(tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "cannot connect the wake-up listener; retrying");
            return;
        }
    };
    let (tx, mut payloads) = mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "wake-up listener connection failed");
                    return;
                }
            }
        }
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        tracing::warn!(error = %e, "LISTEN failed");
        driver.abort();
        return;
    }
    // Whatever was published while this replica was not listening is lost: look again.
    let _ = out.send(crate::WAKE_EVERYONE.to_string());
    while let Some(payload) = payloads.recv().await {
        let Some((from, key)) = payload.split_once(' ') else {
            continue;
        };
        if from != replica && out.send(key.to_string()).is_err() {
            break;
        }
    }
    driver.abort();
}
