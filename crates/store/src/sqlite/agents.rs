//! Agent rows: registration, heartbeats (which answer with what the agent must stop), show
//! and list.

use super::lease::give_back;
use super::rows::{self, AGENT_COLUMNS};
use crate::{LostAgents, StoreError, StoreResult};
use liftoff_types::{Agent, AgentId, Heartbeat, HeartbeatReply, ItemId, Millis, NewAgent, RunId};
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

pub fn touch(conn: &Connection, id: AgentId, now: Millis) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE agents SET heartbeat_at_ms = max(heartbeat_at_ms, ?2)
         WHERE id = ?1 AND status NOT IN ('lost', 'stopped')",
    )?
    .execute(params![id.0, now])?;
    Ok(())
}

pub fn heartbeat(
    conn: &Connection,
    id: AgentId,
    beat: &Heartbeat,
    now: Millis,
) -> StoreResult<HeartbeatReply> {
    let stop_agent: bool = conn
        .prepare_cached(
            "UPDATE agents SET status = ?2, in_flight = ?3, heartbeat_at_ms = ?4,
                 running_jobs = ?5, running_schedulers = ?6 WHERE id = ?1
             RETURNING stop_requested",
        )?
        .query_row(
            params![
                id.0,
                beat.status.as_str(),
                serde_json::to_string(&beat.in_flight)?,
                now,
                beat.running_jobs,
                beat.running_schedulers
            ],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::not_found("agent", id))?;
    // Stop what a user asked to stop (whether or not the agent listed it yet), and what is no
    // longer this agent's: an item given to another agent or back to its queue, failed by
    // the server (lost with its agent), or deleted with its queue. Items that ended
    // normally are not named: their runs are ending anyway.
    let mut stop_items: Vec<ItemId> = conn
        .prepare_cached(
            "SELECT id FROM items WHERE agent_id = ?1 AND cancel_requested = 1 AND state = 'claimed'",
        )?
        .query_map([id.0], |r| Ok(ItemId(r.get(0)?)))?
        .collect::<Result<_, _>>()?;
    let mut mine = conn.prepare_cached(
        "SELECT agent_id IS ?2 AND state != 'pending'
                AND NOT (state = 'failed' AND fail_phase = 'agent')
         FROM items WHERE id = ?1",
    )?;
    for item in &beat.in_flight {
        let still_mine: Option<bool> = mine
            .query_row(params![item.0, id.0], |r| r.get(0))
            .optional()?;
        if still_mine != Some(true) && !stop_items.contains(item) {
            stop_items.push(*item);
        }
    }
    Ok(HeartbeatReply {
        stop_agent,
        stop_items,
        lease: None,
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

pub fn request_stop(conn: &Connection, id: AgentId, _now: Millis) -> StoreResult<Agent> {
    let n = conn
        .prepare_cached("UPDATE agents SET stop_requested = 1 WHERE id = ?1")?
        .execute([id.0])?;
    if n == 0 {
        return Err(StoreError::not_found("agent", id));
    }
    get(conn, id)
}

/// Declares lost every agent silent since `cutoff`. Its leased items go back at once (it
/// never started them); its runs are `lost`, and the items of those that go back to their
/// queue are not leased again before `hold_until`, when the lost agent's machine has stopped
/// them (see the agent's lease). A run still `starting` with no handle never started: its
/// item goes back without an attempt, whatever the queue's `requeue_lost`.
pub fn lose(
    conn: &Connection,
    cutoff: Millis,
    now: Millis,
    hold_until: Millis,
) -> StoreResult<LostAgents> {
    let stale: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM agents WHERE heartbeat_at_ms < ?1 AND status NOT IN ('lost', 'stopped')",
        )?
        .query_map([cutoff], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = LostAgents::default();
    for agent in stale {
        conn.prepare_cached("UPDATE agents SET status = 'lost' WHERE id = ?1")?
            .execute([agent])?;
        out.agents.push(AgentId(agent));
        let leased: Vec<(i64, String, u32, u32)> = conn
            .prepare_cached(
                "SELECT i.id, q.name, i.attempts, q.max_attempts FROM items i
                 JOIN queues q ON q.id = i.queue_id WHERE i.agent_id = ?1 AND i.state = 'leased'",
            )?
            .query_map([agent], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        for (item, queue, attempts, max) in leased {
            let reason = "the item's agent was lost before it acked";
            if give_back(conn, ItemId(item), attempts, max, reason, now)? {
                out.requeued.push(queue);
            }
        }
        let claimed: Vec<(String, i64, String, bool)> = conn
            .prepare_cached(crate::rules::LOST_RUNS)?
            .query_map([agent], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        for (run, fence, queue, never_started) in claimed {
            let run: RunId = run.parse().map_err(StoreError::Corrupt)?;
            let update = crate::rules::lost_update(AgentId(agent), fence, never_started);
            super::runs::update(conn, &run, &update, now)?;
            let back = conn
                .prepare_cached(
                    "UPDATE items SET available_at_ms = ?2
                     WHERE id = (SELECT item_id FROM runs WHERE id = ?1) AND state = 'pending'",
                )?
                .execute(params![run.as_str(), hold_until])?;
            if back == 1 {
                out.requeued.push(queue);
            }
            out.runs.push(run);
        }
    }
    Ok(out)
}
