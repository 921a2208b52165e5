//! Mapping between SQLite rows and domain types. Column lists live here next to the code
//! that reads them, so a query and its mapping cannot drift apart.

use crate::{StoreError, StoreResult};
use liftoff_types::{
    Agent, AgentId, AgentStatus, Failure, Item, ItemId, ItemKind, ItemState, Phase, Priority,
    Queue, ResourceType, Run, RunId, RunState, Scope, Sweep, SweepState, TokenInfo,
};
use rusqlite::{Connection, OptionalExtension, Row};
use std::str::FromStr;

pub use crate::rules::{
    AGENT_COLUMNS, ITEM_SHOWN_COLUMNS, ITEM_SHOWN_FROM, QUEUE_COLUMNS, RUN_COLUMNS, SWEEP_COLUMNS,
    SWEEP_FROM, TOKEN_COLUMNS,
};

/// A row value that must parse as one of our enums or JSON; a failure means a corrupt file.
fn parse<T: FromStr<Err = String>>(text: String) -> rusqlite::Result<T> {
    text.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn json<T: serde::de::DeserializeOwned>(text: String) -> rusqlite::Result<T> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub fn item(row: &Row) -> rusqlite::Result<Item> {
    let fail_message: Option<String> = row.get(11)?;
    let fail_phase: Option<String> = row.get(12)?;
    let fail_files: Option<String> = row.get(13)?;
    let failure = match (fail_message, fail_phase) {
        (Some(message), Some(phase)) => Some(Failure {
            message,
            phase: parse::<Phase>(phase)?,
            files: fail_files.map(json).transpose()?.unwrap_or_default(),
        }),
        _ => None,
    };
    let run_id: Option<String> = row.get(10)?;
    Ok(Item {
        id: ItemId(row.get(0)?),
        queue: row.get(1)?,
        state: parse::<ItemState>(row.get(2)?)?,
        priority: Priority::from_rank(row.get(3)?).unwrap_or_default(),
        spec: json(row.get(4)?)?,
        resource_args: json(row.get(5)?)?,
        attempts: row.get(6)?,
        fence: row.get(7)?,
        agent_id: row.get::<_, Option<i64>>(8)?.map(AgentId),
        lease_expires_at_ms: row.get(9)?,
        run_id: run_id.map(parse::<RunId>).transpose()?,
        failure,
        warnings: Vec::new(),
        cancel_requested: row.get(14)?,
        position: None,
        created_at_ms: row.get(15)?,
        updated_at_ms: row.get(16)?,
        kind: parse::<ItemKind>(row.get(17)?)?,
        sweep_index: row.get(18)?,
        retries: json(row.get(19)?)?,
        available_at_ms: row.get(20)?,
        started_at_ms: None,
        ended_at_ms: None,
        pending_reason: None,
    })
}

pub fn sweep(row: &Row) -> rusqlite::Result<Sweep> {
    Ok(Sweep {
        id: row.get(0)?,
        name: row.get(1)?,
        queue: row.get(2)?,
        state: parse::<SweepState>(row.get(3)?)?,
        message: row.get(4)?,
        config: json(row.get(5)?)?,
        concurrency: row.get(6)?,
        scheduler_item: ItemId(row.get(7)?),
        created_at_ms: row.get(8)?,
        updated_at_ms: row.get(9)?,
    })
}

pub fn queue(row: &Row) -> rusqlite::Result<Queue> {
    Ok(Queue {
        name: row.get(0)?,
        resource: parse::<ResourceType>(row.get(1)?)?,
        config: json(row.get(2)?)?,
        template_variables: json(row.get(3)?)?,
        prioritization: row.get(4)?,
        max_attempts: row.get(5)?,
        requeue_lost: row.get(6)?,
        created_at_ms: row.get(7)?,
        max_concurrency: row.get(8)?,
        retry: row.get::<_, Option<String>>(9)?.map(json).transpose()?,
        depth: None,
    })
}

pub fn run(row: &Row) -> rusqlite::Result<Run> {
    Ok(Run {
        id: parse::<RunId>(row.get(0)?)?,
        item_id: ItemId(row.get(1)?),
        queue: row.get(2)?,
        agent_id: AgentId(row.get(3)?),
        state: parse::<RunState>(row.get(4)?)?,
        handle: json(row.get(5)?)?,
        exit_code: row.get(6)?,
        message: row.get(7)?,
        stop_requested: row.get(8)?,
        created_at_ms: row.get(9)?,
        started_at_ms: row.get(10)?,
        ended_at_ms: row.get(11)?,
        updated_at_ms: row.get(12)?,
    })
}

pub fn agent(row: &Row) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: AgentId(row.get(0)?),
        name: row.get(1)?,
        hostname: row.get(2)?,
        queues: json(row.get(3)?)?,
        max_jobs: row.get(4)?,
        max_schedulers: row.get(5)?,
        version: row.get(6)?,
        status: parse::<AgentStatus>(row.get(7)?)?,
        in_flight: json(row.get(8)?)?,
        stop_requested: row.get(9)?,
        registered_at_ms: row.get(10)?,
        heartbeat_at_ms: row.get(11)?,
        running_jobs: row.get(12)?,
        running_schedulers: row.get(13)?,
    })
}

pub fn token(row: &Row) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        scope: parse::<Scope>(row.get(2)?)?,
        created_at_ms: row.get(3)?,
        run_id: row
            .get::<_, Option<String>>(4)?
            .map(parse::<RunId>)
            .transpose()?,
    })
}

/// An item read with [`ITEM_SHOWN_COLUMNS`]: its latest run's times too.
pub fn shown_item(row: &Row) -> rusqlite::Result<Item> {
    let mut found = item(row)?;
    found.started_at_ms = row.get(21)?;
    found.ended_at_ms = row.get(22)?;
    Ok(found)
}

/// Loads one item by id with its warnings (not its position).
pub fn load_item(conn: &Connection, id: ItemId) -> StoreResult<Item> {
    let sql = format!("SELECT {ITEM_SHOWN_COLUMNS} FROM {ITEM_SHOWN_FROM} WHERE i.id = ?1");
    let found = conn
        .prepare_cached(&sql)?
        .query_row([id.0], shown_item)
        .optional()?;
    let mut item = found.ok_or_else(|| StoreError::not_found("item", id))?;
    item.warnings = warnings(conn, id)?;
    Ok(item)
}

pub fn warnings(conn: &Connection, id: ItemId) -> StoreResult<Vec<liftoff_types::Warning>> {
    let mut stmt = conn.prepare_cached(
        "SELECT message, at_ms FROM item_warnings WHERE item_id = ?1 ORDER BY rowid",
    )?;
    let rows = stmt.query_map([id.0], |r| {
        Ok(liftoff_types::Warning {
            message: r.get(0)?,
            at_ms: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn load_run(conn: &Connection, id: &RunId) -> StoreResult<Run> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([id.as_str()], run)
        .optional()?
        .ok_or_else(|| StoreError::not_found("run", id))
}

/// The id of a queue by name, or `NotFound`.
pub fn queue_id(conn: &Connection, name: &str) -> StoreResult<i64> {
    conn.prepare_cached("SELECT id FROM queues WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::not_found("queue", name))
}
