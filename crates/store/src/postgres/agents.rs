//! Agent rows on PostgreSQL: registration, heartbeats (which answer with what the agent must
//! stop), show, list, and the liveness check, which is safe when several replicas run it at
//! once: the agent's row is flipped to `lost` by exactly one of them.

use super::lease::give_back;
use super::rows::{self, get, AGENT_COLUMNS};
use super::Tx;
use crate::{LostAgents, StoreError, StoreResult};
use liftoff_types::{Agent, AgentId, Heartbeat, HeartbeatReply, ItemId, Millis, NewAgent, RunId};

pub async fn register(tx: &Tx<'_>, a: &NewAgent, now: Millis) -> StoreResult<Agent> {
    let host = if a.hostname.is_empty() {
        "agent"
    } else {
        &a.hostname
    };
    // The name needs the id: take the id from the sequence first, in the same statement.
    let sql = format!(
        "WITH n AS (SELECT nextval(pg_get_serial_sequence('agents', 'id')) AS id)
         INSERT INTO agents (id, name, hostname, queues, max_jobs, max_schedulers, version,
             status, in_flight, registered_at_ms, heartbeat_at_ms)
         SELECT n.id, $1 || '-' || n.id, $2, $3, $4, $5, $6, 'starting', '[]', $7, $7 FROM n
         RETURNING {AGENT_COLUMNS}"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &host,
                &a.hostname,
                &serde_json::to_string(&a.queues)?,
                &a.max_jobs,
                &a.max_schedulers,
                &a.version,
                &now,
            ],
        )
        .await?;
    rows::agent(&row)
}

pub async fn touch(tx: &Tx<'_>, id: AgentId, now: Millis) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached(
            "UPDATE agents SET heartbeat_at_ms = GREATEST(heartbeat_at_ms, $2)
             WHERE id = $1 AND status NOT IN ('lost', 'stopped')",
        )
        .await?;
    tx.execute(&stmt, &[&id.0, &now]).await?;
    Ok(())
}

pub async fn heartbeat(
    tx: &Tx<'_>,
    id: AgentId,
    beat: &Heartbeat,
    now: Millis,
) -> StoreResult<HeartbeatReply> {
    let stmt = tx
        .prepare_cached(
            "UPDATE agents SET status = $2, in_flight = $3, heartbeat_at_ms = $4,
                 running_jobs = $5, running_schedulers = $6 WHERE id = $1
             RETURNING stop_requested",
        )
        .await?;
    let row = tx
        .query_opt(
            &stmt,
            &[
                &id.0,
                &beat.status.as_str(),
                &serde_json::to_string(&beat.in_flight)?,
                &now,
                &i64::from(beat.running_jobs),
                &i64::from(beat.running_schedulers),
            ],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("agent", id))?;
    let stop_agent: bool = get(&row, 0)?;
    // Stop what a user asked to stop, and what is no longer this agent's (see the SQLite
    // store for the cases).
    let asked = tx
        .prepare_cached(
            "SELECT id FROM items WHERE agent_id = $1 AND cancel_requested AND state = 'claimed'",
        )
        .await?;
    let mut stop_items: Vec<ItemId> = tx
        .query(&asked, &[&id.0])
        .await?
        .iter()
        .map(|r| Ok(ItemId(get(r, 0)?)))
        .collect::<StoreResult<_>>()?;
    if !beat.in_flight.is_empty() {
        let ids: Vec<i64> = beat.in_flight.iter().map(|i| i.0).collect();
        let mine = tx
            .prepare_cached(
                "SELECT id FROM items WHERE id = ANY($1) AND agent_id = $2 AND state != 'pending'
                   AND NOT (state = 'failed' AND fail_phase = 'agent')",
            )
            .await?;
        let still: Vec<i64> = tx
            .query(&mine, &[&ids, &id.0])
            .await?
            .iter()
            .map(|r| get(r, 0))
            .collect::<StoreResult<_>>()?;
        for item in &beat.in_flight {
            if !still.contains(&item.0) && !stop_items.contains(item) {
                stop_items.push(*item);
            }
        }
    }
    Ok(HeartbeatReply {
        stop_agent,
        stop_items,
        lease: None,
    })
}

pub async fn get_agent(tx: &Tx<'_>, id: AgentId) -> StoreResult<Agent> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1");
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&id.0])
        .await?
        .ok_or_else(|| StoreError::not_found("agent", id))?;
    rows::agent(&row)
}

pub async fn list(tx: &Tx<'_>) -> StoreResult<Vec<Agent>> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY id");
    let stmt = tx.prepare_cached(&sql).await?;
    tx.query(&stmt, &[])
        .await?
        .iter()
        .map(rows::agent)
        .collect()
}

pub async fn request_stop(tx: &Tx<'_>, id: AgentId) -> StoreResult<Agent> {
    let sql =
        format!("UPDATE agents SET stop_requested = TRUE WHERE id = $1 RETURNING {AGENT_COLUMNS}");
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&id.0])
        .await?
        .ok_or_else(|| StoreError::not_found("agent", id))?;
    rows::agent(&row)
}

/// See the SQLite store's `lose`.
pub async fn lose(
    tx: &Tx<'_>,
    cutoff: Millis,
    now: Millis,
    hold_until: Millis,
) -> StoreResult<LostAgents> {
    // The UPDATE re-checks its condition on rows another replica changed meanwhile, so each
    // silent agent is declared lost (and its work handed back) by one replica only.
    let stale = tx
        .prepare_cached(
            "UPDATE agents SET status = 'lost'
             WHERE heartbeat_at_ms < $1 AND status NOT IN ('lost', 'stopped') RETURNING id",
        )
        .await?;
    let stale: Vec<i64> = tx
        .query(&stale, &[&cutoff])
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect::<StoreResult<_>>()?;
    let mut out = LostAgents::default();
    for agent in stale {
        out.agents.push(AgentId(agent));
        let leased = tx
            .prepare_cached(
                "SELECT i.id, q.name, i.attempts, q.max_attempts FROM items i
                 JOIN queues q ON q.id = i.queue_id
                 WHERE i.agent_id = $1 AND i.state = 'leased' FOR UPDATE OF i",
            )
            .await?;
        for row in tx.query(&leased, &[&agent]).await? {
            let (item, queue): (i64, String) = (get(&row, 0)?, get(&row, 1)?);
            let (attempts, max): (i64, i64) = (get(&row, 2)?, get(&row, 3)?);
            let reason = "the item's agent was lost before it acked";
            if give_back(tx, ItemId(item), attempts, max, reason, now).await? {
                out.requeued.push(queue);
            }
        }
        let claimed = tx
            .prepare_cached(&crate::rules::LOST_RUNS.replace("?1", "$1"))
            .await?;
        for row in tx.query(&claimed, &[&agent]).await? {
            let (run, fence, queue): (String, i64, String) =
                (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
            let run: RunId = run.parse().map_err(StoreError::Corrupt)?;
            let update = crate::rules::lost_update(AgentId(agent), fence, get(&row, 3)?);
            // A report that ended the run since the select above wins: nothing to declare.
            match super::runs::update(tx, &run, &update, now).await {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
            let back = tx
                .prepare_cached(
                    "UPDATE items SET available_at_ms = $2
                     WHERE id = (SELECT item_id FROM runs WHERE id = $1) AND state = 'pending'",
                )
                .await?;
            if tx.execute(&back, &[&run.as_str(), &hold_until]).await? == 1 {
                out.requeued.push(queue);
            }
            out.runs.push(run);
        }
    }
    Ok(out)
}
