//! One id everywhere: a command that takes a run takes an item id too (its latest run), and
//! one that takes an item takes a run id (its item). `liftoff launch` prints an item id, so
//! `liftoff logs -f $(liftoff launch ...)` follows the run it becomes.
//!
//! Item ids are numbers; run ids are eight letters and digits, which can be all digits: a
//! number is tried as an item first, then as a run. A miss says what was looked for.

use anyhow::Context;
use liftoff_client::{Client, ClientError};
use liftoff_types::{ItemId, RunId};
use std::time::Duration;

fn not_found(e: &ClientError) -> bool {
    e.status() == Some(liftoff_client::StatusCode::NOT_FOUND)
}

/// What an id names on the server.
enum Named {
    Item(ItemId),
    Run(liftoff_types::Run),
}

/// Looks `id` up: a number as an item first, then as a run.
async fn named(client: &Client, id: &str) -> anyhow::Result<Named> {
    if let Ok(n) = id.parse::<i64>() {
        match client.get_item(ItemId(n)).await {
            Ok(_) => return Ok(Named::Item(ItemId(n))),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(e).context(format!("reading item {n}")),
        }
    }
    let run: RunId = id.parse().map_err(|e: String| {
        anyhow::anyhow!("{id:?} is neither an item id (a number) nor a run id: {e}")
    })?;
    match client.get_run(&run).await {
        Ok(r) => Ok(Named::Run(r)),
        Err(e) if not_found(&e) => anyhow::bail!("no item or run {id} on this server"),
        Err(e) => Err(e).context(format!("reading run {id}")),
    }
}

/// The run `id` names: the run itself, or an item's latest run. `wait`: an item that has no
/// run yet is waited for (until it starts or ends); otherwise that is an error saying so.
pub async fn run_of(client: &Client, id: &str, wait: bool) -> anyhow::Result<RunId> {
    match named(client, id).await? {
        Named::Item(item) => item_run(client, item, wait).await,
        Named::Run(run) => Ok(run.id),
    }
}

/// The item `id` names: the item itself, or a run's item.
pub async fn item_of(client: &Client, id: &str) -> anyhow::Result<ItemId> {
    Ok(match named(client, id).await? {
        Named::Item(item) => item,
        Named::Run(run) => run.item_id,
    })
}

/// An item's latest run; with `wait`, once it has one.
async fn item_run(client: &Client, item: ItemId, wait: bool) -> anyhow::Result<RunId> {
    let mut pause = Duration::from_millis(20);
    loop {
        let it = client.get_item(item).await?;
        if let Some(run) = it.run_id {
            return Ok(run);
        }
        if it.state.is_terminal() {
            anyhow::bail!("item {item} ended {} without a run", it.state);
        }
        if !wait {
            anyhow::bail!(
                "item {item} has no run yet: it is {} on queue {} (logs -f waits for it)",
                it.state,
                it.queue
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
