//! Agent rows: registration, heartbeats (which answer with what the agent must stop), show
//! and list.

use super::rows::{self, AGENT_COLUMNS};
use crate::{StoreError, StoreResult};
use liftoff_types::{Agent, AgentId, Heartbeat, HeartbeatReply, ItemId, Millis, NewAgent};
use rusqlite::{params, Connection, OptionalExtension};

pub fn register(conn: &Connection, a: &NewAgent, now: Millis) -> StoreResult<Agent> {
    // The name needs the id, so insert with a placeholder name and set it after.
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO agents (name, hostname, queues, max_jobs, max_schedulers, version,
                 status, in_flight, registered_at_ms, heartbeat_at_ms)
             VALUES ('', ?1, ?2, ?3, ?4, ?5, 'starting', '[]', ?6, ?6)
             RETURNING id",
        )?
        .query_row(
            params![
                a.hostname,
                serde_json::to_string(&a.queues)?,
                a.max_jobs,
                a.max_schedulers,
                a.version,
                now
            ],
            |r| r.get(0),
        )?;
    let host = if a.hostname.is_empty() {
        "agent"
    } else {
        &a.hostname
    };
    conn.prepare_cached("UPDATE agents SET name = ?2 WHERE id = ?1")?
        .execute(params![id, format!("{host}-{id}")])?;
    get(conn, AgentId(id))
}

pub fn heartbeat(
    conn: &Connection,
    id: AgentId,
    beat: &Heartbeat,
    now: Millis,
) -> StoreResult<HeartbeatReply> {
    let stop_agent: bool = conn
        .prepare_cached(
            "UPDATE agents SET status = ?2, in_flight = ?3, heartbeat_at_ms = ?4 WHERE id = ?1
             RETURNING stop_requested",
        )?
        .query_row(
            params![
                id.0,
                beat.status.as_str(),
                serde_json::to_string(&beat.in_flight)?,
                now
            ],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::not_found("agent", id))?;
    let mut stop_items = Vec::new();
    let mut flagged =
        conn.prepare_cached("SELECT cancel_requested FROM items WHERE id = ?1 AND agent_id = ?2")?;
    for item in &beat.in_flight {
        let flag: Option<bool> = flagged
            .query_row(params![item.0, id.0], |r| r.get(0))
            .optional()?;
        if flag == Some(true) {
            stop_items.push(ItemId(item.0));
        }
    }
    Ok(HeartbeatReply {
        stop_agent,
        stop_items,
    })
}

pub fn get(conn: &Connection, id: AgentId) -> StoreResult<Agent> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([id.0], rows::agent)
        .optional()?
        .ok_or_else(|| StoreError::not_found("agent", id))
}

pub fn list(conn: &Connection) -> StoreResult<Vec<Agent>> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let agents = stmt.query_map([], rows::agent)?;
    Ok(agents.collect::<Result<_, _>>()?)
}
