//! Why an item is pending: the first blocker of (1) no agent serves its queue, (2) its sweep
//! is paused, (3) its queue's limit of live runs is reached, (4) every agent on the queue is
//! busy. Computed here, from the agents' last
//! heartbeats, so the API, `liftoff items`, `show` and `launch --wait` say the same thing.

use liftoff_store::{Store, StoreResult};
use liftoff_types::{now_ms, Agent, AgentStatus, Item, ItemState, SweepState};
use std::collections::HashMap;

/// Sets `pending_reason` on every pending item of `items`.
pub async fn explain(store: &dyn Store, items: &mut [Item]) -> StoreResult<()> {
    if !items.iter().any(|i| i.state == ItemState::Pending) {
        return Ok(());
    }
    let agents = store.list_agents().await?;
    let now = now_ms();
    let mut paused: HashMap<String, bool> = HashMap::new();
    let mut capped: HashMap<String, Option<(u32, u64)>> = HashMap::new();
    for item in items.iter_mut().filter(|i| i.state == ItemState::Pending) {
        let sweep_paused = match &item.spec.sweep_id {
            Some(sweep) if item.kind == liftoff_types::ItemKind::Run => {
                if !paused.contains_key(sweep) {
                    let state = store.get_sweep(sweep).await.map(|s| s.state).ok();
                    paused.insert(sweep.clone(), state == Some(SweepState::Paused));
                }
                paused[sweep].then(|| sweep.clone())
            }
            _ => None,
        };
        let cap = if item.kind == liftoff_types::ItemKind::Run {
            if !capped.contains_key(&item.queue) {
                let queue = store.get_queue(&item.queue, true).await.ok();
                let cap = queue.and_then(|q| {
                    let live = q.depth.map_or(0, |d| d.live_runs);
                    q.max_concurrency.map(|cap| (cap, live))
                });
                capped.insert(item.queue.clone(), cap);
            }
            capped[&item.queue]
        } else {
            None
        };
        item.pending_reason = Some(reason(item, &agents, sweep_paused, cap, now));
    }
    Ok(())
}

/// `cap` is the queue's `max_concurrency` and its live runs, when it has one.
fn reason(
    item: &Item,
    agents: &[Agent],
    paused_sweep: Option<String>,
    cap: Option<(u32, u64)>,
    now: i64,
) -> String {
    let queue = &item.queue;
    let on_queue: Vec<&Agent> = agents
        .iter()
        .filter(|a| a.queues.iter().any(|q| q == queue))
        .collect();
    let live: Vec<&&Agent> = on_queue
        .iter()
        .filter(|a| !matches!(a.status, AgentStatus::Stopped | AgentStatus::Lost))
        .collect();
    if live.is_empty() {
        return match on_queue.iter().map(|a| a.heartbeat_at_ms).max() {
            Some(last) => format!(
                "no agent serves queue {queue} (the last one was heard from {} ago)",
                ago(now - last)
            ),
            None => format!(
                "no agent serves queue {queue}: start one with `liftoff agent --queue {queue}`"
            ),
        };
    }
    if let Some(sweep) = paused_sweep {
        return format!("its sweep {sweep} is paused");
    }
    let ahead = item.position.unwrap_or(0);
    if let Some((cap, live)) = cap.filter(|&(cap, live)| live >= u64::from(cap)) {
        return format!(
            "queue {queue} is at its limit of {cap} live runs ({live} live, {ahead} ahead)"
        );
    }
    let free: i64 = live
        .iter()
        .map(|a| match a.max_jobs {
            n if n < 0 => i64::MAX / 2,
            n => (n - i64::from(a.running_jobs)).max(0),
        })
        .sum();
    let running: u32 = live.iter().map(|a| a.running_jobs).sum();
    let agents = match live.len() {
        1 => "1 agent".to_string(),
        n => format!("{n} agents"),
    };
    if free == 0 {
        format!(
            "every agent on queue {queue} is busy: {ahead} ahead, {running} running on {agents}"
        )
    } else if ahead == 0 {
        format!("next on queue {queue}; {agents} with free slots will take it")
    } else {
        format!("{ahead} ahead on queue {queue}; {running} running on {agents}")
    }
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
