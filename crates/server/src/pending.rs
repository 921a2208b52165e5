//! Why an item is pending: the first blocker of (1) no agent serves its queue, (2) its sweep
//! is paused, (3) its queue's limit of live runs is reached, (4) every agent on the queue is
//! busy, with an estimated start from the queue's recent run durations. Computed here, from the agents' last
//! heartbeats, so the API, `liftoff items`, `show` and `launch --wait` say the same thing.

use liftoff_store::{Store, StoreResult};
use liftoff_types::api::RunFilter;
use liftoff_types::{now_ms, Agent, AgentStatus, Item, ItemState, RunState, SweepState};
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
    let mut typical: HashMap<String, Option<i64>> = HashMap::new();
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
                // The depth (a count over the queue's items) only for a queue with a cap.
                let capped_at = match store.get_queue(&item.queue, false).await {
                    Ok(q) => q.max_concurrency,
                    Err(_) => None,
                };
                let cap = match capped_at {
                    Some(cap) => {
                        let depth = store.get_queue(&item.queue, true).await.ok();
                        let live = depth.and_then(|q| q.depth).map_or(0, |d| d.live_runs);
                        Some((cap, live))
                    }
                    None => None,
                };
                capped.insert(item.queue.clone(), cap);
            }
            capped[&item.queue]
        } else {
            None
        };
        if !typical.contains_key(&item.queue) {
            let recent = recent_duration(store, &item.queue).await;
            typical.insert(item.queue.clone(), recent);
        }
        let context = Context {
            paused_sweep: sweep_paused,
            cap,
            typical_ms: typical[&item.queue],
        };
        item.pending_reason = Some(reason(item, &agents, context, now));
    }
    Ok(())
}

/// The mean duration of a queue's last finished runs, when there are enough to say.
async fn recent_duration(store: &dyn Store, queue: &str) -> Option<i64> {
    let filter = RunFilter {
        queue: Some(queue.to_string()),
        state: Some(RunState::Finished),
        limit: Some(RECENT_RUNS),
        ..RunFilter::default()
    };
    let runs = store.list_runs(&filter).await.ok()?;
    let took: Vec<i64> = runs
        .iter()
        .filter_map(|r| Some(r.ended_at_ms? - r.started_at_ms?))
        .filter(|&ms| ms >= 0)
        .collect();
    (took.len() >= 3).then(|| took.iter().sum::<i64>() / took.len() as i64)
}

/// Finished runs an estimate is drawn from.
const RECENT_RUNS: u32 = 20;

/// What else decides an item's reason besides the agents.
struct Context {
    paused_sweep: Option<String>,
    /// The queue's `max_concurrency` and its live runs, when it has one.
    cap: Option<(u32, u64)>,
    /// How long the queue's recent runs took, on average.
    typical_ms: Option<i64>,
}

fn reason(item: &Item, agents: &[Agent], context: Context, now: i64) -> String {
    let Context {
        paused_sweep,
        cap,
        typical_ms,
    } = context;
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
                span(now - last)
            ),
            None => format!(
                "no agent serves queue {queue}: start one with `liftoff agent --queue {queue}`"
            ),
        };
    }
    if let Some(sweep) = paused_sweep {
        return format!("its sweep {sweep} is paused");
    }
    if let Some(at) = item.available_at_ms.filter(|at| *at > now) {
        let why = match item.retries.is_empty() {
            true => "its last run's agent was lost: its machine is given time to stop it",
            false => "a retry waits out its backoff",
        };
        return format!("{why}; it may start in {}", span(at - now));
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
        // The item starts when ahead + 1 slots have freed, and the slots free at about
        // one per typical duration each.
        let slots: i64 = live.iter().map(|a| a.max_jobs.max(1)).sum();
        let estimate = typical_ms
            .map(|d| {
                format!(
                    "; it may start in about {} (runs here take about {})",
                    span(d * (ahead as i64 + 1) / slots.max(1)),
                    span(d)
                )
            })
            .unwrap_or_default();
        format!(
            "every agent on queue {queue} is busy: {ahead} ahead, {running} running on {agents}{estimate}"
        )
    } else if ahead == 0 {
        format!("next on queue {queue}; {agents} with free slots will take it")
    } else {
        format!("{ahead} ahead on queue {queue}; {running} running on {agents}")
    }
}

/// A duration for people, to the nearest unit: `45s`, `3m`, `2h`, `4d`.
fn span(ms: i64) -> String {
    let s = (ms.max(0) + 500) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The agents that are up (not lost, not stopped) and serve `queue`: who can take its items
/// (the dashboard's and `/metrics`' "no agent serves this queue").
pub fn serving<'a>(agents: &'a [Agent], queue: &'a str) -> impl Iterator<Item = &'a Agent> {
    agents
        .iter()
        .filter(|a| !matches!(a.status, AgentStatus::Lost | AgentStatus::Stopped))
        .filter(move |a| a.queues.iter().any(|q| q == queue))
}
