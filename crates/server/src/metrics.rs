//! Prometheus metrics at `GET /metrics` (text format, a `read` token), named as operators
//! know them from Kueue and Buildkite's agent metrics.
//!
//! Two kinds: what requests move as they pass (HTTP requests and their latency, lease
//! long-polls open, admission wait from enqueue to lease), kept in memory; and what the
//! store holds (items per queue and state, live runs per queue and runner, agents by status,
//! free slots), read at each scrape. The store's figures are the same on every replica; the
//! in-memory ones are this server's own (sum them across replicas).

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueStateLabels {
    pub queue: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabels {
    pub queue: String,
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub queue: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndedLabels {
    pub queue: String,
    pub state: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub queue: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerLabels {
    pub queue: String,
    pub runner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub agent: String,
}

/// Buckets for store transactions, in seconds: 50 µs to 2.5 s.
fn commit_buckets() -> impl Iterator<Item = f64> {
    [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5,
    ]
    .into_iter()
}

/// Latency buckets for requests and waits, in seconds: 1 ms to 10 min.
fn buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0, 600.0,
    ]
    .into_iter()
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<RouteLabels, Histogram>,
    pub lease_polls_open: Gauge,
    pub admission_wait: Family<QueueLabels, Histogram>,
    /// Runs declared lost, by queue and cause: `agent_timeout` (the reaper), `force_cancel`.
    pub lost_runs: Family<CauseLabels, Counter>,
    pub store_commit: Histogram,
    requeues: Family<CauseLabels, Gauge>,
    pending: Family<QueueLabels, Gauge>,
    pending_priority: Family<PriorityLabels, Gauge>,
    pending_reason: Family<ReasonLabels, Gauge>,
    ended: Family<EndedLabels, Gauge>,
    items: Family<QueueStateLabels, Gauge>,
    running: Family<RunnerLabels, Gauge>,
    agents: Family<StatusLabels, Gauge>,
    free_slots: Family<AgentLabels, Gauge>,
    /// One scrape at a time: a scrape clears and refills the store's gauges.
    scraping: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let hist = || Histogram::new(buckets());
        let mut m = Metrics {
            registry: Registry::with_prefix("liftoff"),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(hist),
            lease_polls_open: Gauge::default(),
            admission_wait: Family::new_with_constructor(hist),
            lost_runs: Family::default(),
            store_commit: Histogram::new(commit_buckets()),
            requeues: Family::default(),
            pending: Family::default(),
            pending_priority: Family::default(),
            pending_reason: Family::default(),
            ended: Family::default(),
            items: Family::default(),
            running: Family::default(),
            agents: Family::default(),
            free_slots: Family::default(),
            scraping: tokio::sync::Mutex::new(()),
        };
        let r = &mut m.registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route (long-polls included)",
            m.http_seconds.clone(),
        );
        r.register(
            "lease_polls_open",
            "Lease long-polls this server holds now",
            m.lease_polls_open.clone(),
        );
        r.register(
            "admission_wait_time_seconds",
            "Time from an item's enqueue to its lease by an agent, by queue",
            m.admission_wait.clone(),
        );
        r.register(
            "pending_items",
            "Items waiting in each queue",
            m.pending.clone(),
        );
        r.register(
            "pending_items_by_priority",
            "Items waiting in each queue, by priority (critical, high, medium, low)",
            m.pending_priority.clone(),
        );
        r.register(
            "pending_items_by_reason",
            "Items waiting in each queue, by why the queue's items wait: no_agent (no live \
             agent serves it), queue_limit (its max_concurrency is reached), agents_busy (every \
             agent serving it is full), dispatching (an agent can take them now)",
            m.pending_reason.clone(),
        );
        r.register(
            "ended_items",
            "Ended items per queue, state and failure phase (none unless failed)",
            m.ended.clone(),
        );
        r.register(
            "lost_runs",
            "Runs declared lost, by queue and cause: agent_timeout (their agent stopped \
             answering), force_cancel (cancelled with --force) (this server's)",
            m.lost_runs.clone(),
        );
        r.register(
            "requeues",
            "Retries of the stored items, by queue and cause (lost, preempted, start-timeout, \
             build, exit-code)",
            m.requeues.clone(),
        );
        r.register(
            "store_commit_duration_seconds",
            "Time of one store transaction from begin to commit (SQLite: one group commit)",
            m.store_commit.clone(),
        );
        r.register(
            "items",
            "Items per queue and state (pending, leased, claimed, finished, failed, stopped, cancelled)",
            m.items.clone(),
        );
        r.register(
            "running_runs",
            "Runs leased or started, per queue and the runner its queue uses",
            m.running.clone(),
        );
        r.register("agents", "Agents by status", m.agents.clone());
        r.register(
            "agent_free_slots",
            "Runs each live agent could still take (agents without a limit left out)",
            m.free_slots.clone(),
        );
        m
    }
}

impl Metrics {
    /// Counts a run declared lost.
    pub fn run_lost(&self, queue: &str, cause: &str) {
        self.lost_runs
            .get_or_create(&CauseLabels {
                queue: queue.into(),
                cause: cause.into(),
            })
            .inc();
    }

    /// The text exposition, after reading the store's figures.
    pub async fn scrape(
        &self,
        store: &dyn liftoff_store::Store,
    ) -> liftoff_store::StoreResult<String> {
        let _one = self.scraping.lock().await;
        let queues = store.list_queues().await?;
        let agents = store.list_agents().await?;
        self.pending.clear();
        self.pending_reason.clear();
        self.items.clear();
        self.running.clear();
        for queue in &queues {
            let depth = store
                .get_queue(&queue.name, true)
                .await?
                .depth
                .unwrap_or_default();
            let q = || QueueLabels {
                queue: queue.name.clone(),
            };
            self.pending.get_or_create(&q()).set(depth.pending as i64);
            let reason = ReasonLabels {
                queue: queue.name.clone(),
                reason: pending_reason(queue, &depth, &agents).into(),
            };
            self.pending_reason
                .get_or_create(&reason)
                .set(depth.pending as i64);
            for (state, n) in [
                ("pending", depth.pending),
                ("leased", depth.leased),
                ("claimed", depth.claimed),
                ("finished", depth.finished),
                ("failed", depth.failed),
                ("stopped", depth.stopped),
                ("cancelled", depth.cancelled),
            ] {
                let labels = QueueStateLabels {
                    queue: queue.name.clone(),
                    state: state.into(),
                };
                self.items.get_or_create(&labels).set(n as i64);
            }
            let labels = RunnerLabels {
                queue: queue.name.clone(),
                runner: queue.resource.to_string(),
            };
            self.running
                .get_or_create(&labels)
                .set(depth.live_runs as i64);
        }
        let counts = store.item_counts().await?;
        self.pending_priority.clear();
        self.ended.clear();
        self.requeues.clear();
        for (queue, cause, n) in counts.requeues {
            self.requeues
                .get_or_create(&CauseLabels { queue, cause })
                .set(n as i64);
        }
        for (queue, priority, n) in counts.pending {
            let labels = PriorityLabels {
                queue,
                priority: priority_name(priority).into(),
            };
            self.pending_priority.get_or_create(&labels).set(n as i64);
        }
        for (queue, state, phase, n) in counts.ended {
            let labels = EndedLabels {
                queue,
                state,
                phase: phase.unwrap_or_else(|| "none".into()),
            };
            self.ended.get_or_create(&labels).set(n as i64);
        }
        self.agents.clear();
        self.free_slots.clear();
        for status in ["starting", "polling", "running", "stopped", "lost"] {
            self.agents
                .get_or_create(&StatusLabels {
                    status: status.into(),
                })
                .set(0);
        }
        for agent in &agents {
            let status = agent.status.to_string();
            self.agents
                .get_or_create(&StatusLabels {
                    status: status.clone(),
                })
                .inc();
            let live = !matches!(status.as_str(), "stopped" | "lost");
            if live && agent.max_jobs >= 0 {
                let free = (agent.max_jobs - i64::from(agent.running_jobs)).max(0);
                self.free_slots
                    .get_or_create(&AgentLabels {
                        agent: format!("{} ({})", agent.name, agent.id),
                    })
                    .set(free);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| liftoff_store::StoreError::Backend(Box::new(e)))?;
        Ok(text)
    }
}

fn priority_name(p: i64) -> &'static str {
    match p {
        0 => "critical",
        1 => "high",
        2 => "medium",
        _ => "low",
    }
}

/// Why a queue's pending items wait, as one word (the per-item reasons, in words, are the
/// API's `pending_reason`).
fn pending_reason(
    queue: &liftoff_types::Queue,
    depth: &liftoff_types::QueueDepth,
    agents: &[liftoff_types::Agent],
) -> &'static str {
    let serving: Vec<_> = crate::pending::serving(agents, &queue.name).collect();
    if serving.is_empty() {
        return "no_agent";
    }
    if queue
        .max_concurrency
        .is_some_and(|cap| depth.live_runs >= u64::from(cap))
    {
        return "queue_limit";
    }
    let full =
        |a: &&liftoff_types::Agent| a.max_jobs >= 0 && i64::from(a.running_jobs) >= a.max_jobs;
    if serving.iter().all(full) {
        return "agents_busy";
    }
    "dispatching"
}

/// Counts and times every request by its route's pattern (`/api/v1/runs/:id`, never the
/// id itself: one series per route, not per run). Parameters are written `:id` rather than
/// axum's `{id}`: a brace in a label value trips simple text-format parsers.
pub async fn track(
    State(state): State<crate::state::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(
        || "unmatched".to_string(),
        |p| p.as_str().replace('{', ":").replace('}', ""),
    );
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    // Live pages re-read what they show after a write: told at its start (a held heartbeat
    // wrote on arrival) and at its end.
    let writes =
        req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD;
    if writes {
        state.wakers.changed();
    }
    let response = next.run(req).await;
    if writes {
        state.wakers.changed();
    }
    let m = &state.metrics;
    m.http_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics`.
pub async fn serve(
    caller: crate::auth::Caller,
    State(state): State<crate::state::AppState>,
) -> Result<Response, crate::error::ApiError> {
    caller.require(crate::auth::Access::Read)?;
    let text = state.metrics.scrape(state.store.as_ref()).await?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Holds a lease long-poll in the open-polls gauge while it lives.
pub struct PollOpen<'a>(&'a Gauge);

impl<'a> PollOpen<'a> {
    pub fn new(gauge: &'a Gauge) -> PollOpen<'a> {
        gauge.inc();
        PollOpen(gauge)
    }
}

impl Drop for PollOpen<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
