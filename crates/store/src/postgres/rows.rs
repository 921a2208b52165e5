//! Mapping between PostgreSQL rows and domain types. The column lists are the SQLite
//! store's, so both stores answer with the same shapes; they live next to the code that
//! reads them.

use super::Tx;
use crate::{StoreError, StoreResult};
use liftoff_types::{
    Agent, AgentId, AgentStatus, Failure, Item, ItemId, ItemKind, ItemState, Phase, Priority,
    Queue, ResourceType, Run, RunId, RunState, Scope, Sweep, SweepState, TokenInfo, Warning,
};
use std::str::FromStr;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

pub use crate::rules::{
    AGENT_COLUMNS, ITEM_COLUMNS, ITEM_SHOWN_COLUMNS, ITEM_SHOWN_FROM, QUEUE_COLUMNS, RUN_COLUMNS,
    SWEEP_COLUMNS, SWEEP_FROM, TOKEN_COLUMNS,
};

pub fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get(idx).map_err(StoreError::from)
}

/// A column that must parse as one of our enums; a failure means corrupt data.
fn parse<T: FromStr<Err = String>>(text: String) -> StoreResult<T> {
    text.parse().map_err(StoreError::Corrupt)
}

fn json<T: serde::de::DeserializeOwned>(text: String) -> StoreResult<T> {
    Ok(serde_json::from_str(&text)?)
}

pub fn item(row: &Row) -> StoreResult<Item> {
    let fail_message: Option<String> = get(row, 11)?;
    let fail_phase: Option<String> = get(row, 12)?;
    let fail_files: Option<String> = get(row, 13)?;
    let failure = match (fail_message, fail_phase) {
        (Some(message), Some(phase)) => Some(Failure {
            message,
            phase: parse::<Phase>(phase)?,
            files: fail_files.map(json).transpose()?.unwrap_or_default(),
        }),
        _ => None,
    };
    let run_id: Option<String> = get(row, 10)?;
    Ok(Item {
        id: ItemId(get(row, 0)?),
        queue: get(row, 1)?,
        state: parse::<ItemState>(get(row, 2)?)?,
        priority: Priority::from_rank(get(row, 3)?).unwrap_or_default(),
        spec: json(get(row, 4)?)?,
        resource_args: json(get(row, 5)?)?,
        attempts: get::<i64>(row, 6)? as u32,
        fence: get(row, 7)?,
        agent_id: get::<Option<i64>>(row, 8)?.map(AgentId),
        lease_expires_at_ms: get(row, 9)?,
        run_id: run_id.map(parse::<RunId>).transpose()?,
        failure,
        warnings: Vec::new(),
        cancel_requested: get(row, 14)?,
        position: None,
        created_at_ms: get(row, 15)?,
        updated_at_ms: get(row, 16)?,
        kind: parse::<ItemKind>(get(row, 17)?)?,
        sweep_index: get::<Option<i64>>(row, 18)?.map(|n| n as u32),
        retries: json(get(row, 19)?)?,
        available_at_ms: get(row, 20)?,
        started_at_ms: None,
        ended_at_ms: None,
        pending_reason: None,
    })
}

pub fn sweep(row: &Row) -> StoreResult<Sweep> {
    Ok(Sweep {
        id: get(row, 0)?,
        name: get(row, 1)?,
        queue: get(row, 2)?,
        state: parse::<SweepState>(get(row, 3)?)?,
        message: get(row, 4)?,
        config: json(get(row, 5)?)?,
        concurrency: get::<i64>(row, 6)? as u32,
        scheduler_item: ItemId(get(row, 7)?),
        created_at_ms: get(row, 8)?,
        updated_at_ms: get(row, 9)?,
    })
}

pub fn queue(row: &Row) -> StoreResult<Queue> {
    Ok(Queue {
        name: get(row, 0)?,
        resource: parse::<ResourceType>(get(row, 1)?)?,
        config: json(get(row, 2)?)?,
        template_variables: json(get(row, 3)?)?,
        prioritization: get(row, 4)?,
        max_attempts: get::<i64>(row, 5)? as u32,
        requeue_lost: get(row, 6)?,
        created_at_ms: get(row, 7)?,
        max_concurrency: get::<Option<i64>>(row, 8)?.map(|n| n as u32),
        retry: get::<Option<String>>(row, 9)?.map(json).transpose()?,
        depth: None,
    })
}

pub fn run(row: &Row) -> StoreResult<Run> {
    Ok(Run {
        id: parse::<RunId>(get(row, 0)?)?,
        item_id: ItemId(get(row, 1)?),
        queue: get(row, 2)?,
        agent_id: AgentId(get(row, 3)?),
        state: parse::<RunState>(get(row, 4)?)?,
        handle: json(get(row, 5)?)?,
        exit_code: get(row, 6)?,
        message: get(row, 7)?,
        stop_requested: get(row, 8)?,
        created_at_ms: get(row, 9)?,
        started_at_ms: get(row, 10)?,
        ended_at_ms: get(row, 11)?,
        updated_at_ms: get(row, 12)?,
    })
}

pub fn agent(row: &Row) -> StoreResult<Agent> {
    Ok(Agent {
        id: AgentId(get(row, 0)?),
        name: get(row, 1)?,
        hostname: get(row, 2)?,
        queues: json(get(row, 3)?)?,
        max_jobs: get(row, 4)?,
        max_schedulers: get(row, 5)?,
        version: get(row, 6)?,
        status: parse::<AgentStatus>(get(row, 7)?)?,
        in_flight: json(get(row, 8)?)?,
        stop_requested: get(row, 9)?,
        registered_at_ms: get(row, 10)?,
        heartbeat_at_ms: get(row, 11)?,
        running_jobs: get::<i64>(row, 12)? as u32,
        running_schedulers: get::<i64>(row, 13)? as u32,
    })
}

pub fn token(row: &Row) -> StoreResult<TokenInfo> {
    Ok(TokenInfo {
        id: get(row, 0)?,
        name: get(row, 1)?,
        scope: parse::<Scope>(get(row, 2)?)?,
        created_at_ms: get(row, 3)?,
        run_id: get::<Option<String>>(row, 4)?
            .map(parse::<RunId>)
            .transpose()?,
    })
}

/// An item read with [`ITEM_SHOWN_COLUMNS`]: its latest run's times too.
pub fn shown_item(row: &Row) -> StoreResult<Item> {
    let mut found = item(row)?;
    found.started_at_ms = get(row, 21)?;
    found.ended_at_ms = get(row, 22)?;
    Ok(found)
}

/// Loads one item by id with its warnings (not its position).
pub async fn load_item(tx: &Tx<'_>, id: ItemId) -> StoreResult<Item> {
    let sql = format!("SELECT {ITEM_SHOWN_COLUMNS} FROM {ITEM_SHOWN_FROM} WHERE i.id = $1");
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&id.0])
        .await?
        .ok_or_else(|| StoreError::not_found("item", id))?;
    let mut item = shown_item(&row)?;
    item.warnings = warnings(tx, id).await?;
    Ok(item)
}

pub async fn warnings(tx: &Tx<'_>, id: ItemId) -> StoreResult<Vec<Warning>> {
    let stmt = tx
        .prepare_cached("SELECT message, at_ms FROM item_warnings WHERE item_id = $1 ORDER BY seq")
        .await?;
    tx.query(&stmt, &[&id.0])
        .await?
        .iter()
        .map(|r| {
            Ok(Warning {
                message: get(r, 0)?,
                at_ms: get(r, 1)?,
            })
        })
        .collect()
}

pub async fn load_run(tx: &Tx<'_>, id: &RunId) -> StoreResult<Run> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .ok_or_else(|| StoreError::not_found("run", id))?;
    run(&row)
}

/// The id of a queue by name, or `NotFound`.
pub async fn queue_id(tx: &Tx<'_>, name: &str) -> StoreResult<i64> {
    let stmt = tx
        .prepare_cached("SELECT id FROM queues WHERE name = $1")
        .await?;
    let row = tx
        .query_opt(&stmt, &[&name])
        .await?
        .ok_or_else(|| StoreError::not_found("queue", name))?;
    get(&row, 0)
}
