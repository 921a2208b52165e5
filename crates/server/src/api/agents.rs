//! Agent routes: register, heartbeat, the long-polling lease, and listings.

use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, Path};
use crate::state::AppState;
use crate::wake::{agent_key, queue_key, LeaseWaiter, PassOn};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use liftoff_store::LeaseParams;
use liftoff_types::api::{ErrorBody, LeaseRequest, LeaseResponse, MAX_LEASE_BATCH, MAX_WAIT_MS};
use liftoff_types::ids::check_queue_name;
use liftoff_types::{now_ms, Agent, AgentId, Heartbeat, HeartbeatReply, NewAgent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

const MAX_QUEUES: usize = 64;
const MAX_IN_FLIGHT: usize = 10_000;

/// Register an agent; the server gives it an id and a unique name.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = NewAgent,
    responses((status = 201, body = Agent), (status = 422, body = ErrorBody)))]
pub async fn register(
    caller: Caller,
    State(state): State<AppState>,
    Body(raw): Body<serde_json::Value>,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    caller.require(Access::Work)?;
    // A registration is an object that says where the agent runs and what it serves: serde
    // alone would take `{}` (every field defaults) and even `[]` (a struct read as a list).
    if !raw.is_object() {
        ApiError::check(vec![(
            "body".into(),
            "must be a JSON object: {\"hostname\": ..., \"queues\": [...]}".into(),
        )])?;
    }
    let bytes = serde_json::to_vec(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Json(agent) = Json::<NewAgent>::from_bytes(&bytes)?;
    let mut problems = check_queues(&agent.queues);
    if agent.queues.is_empty() {
        problems.push(("queues".into(), "name at least one queue".into()));
    }
    if agent.hostname.is_empty() {
        problems.push(("hostname".into(), "is required".into()));
    }
    for (field, value) in [
        ("max_jobs", agent.max_jobs),
        ("max_schedulers", agent.max_schedulers),
    ] {
        if value < -1 {
            problems.push((
                field.into(),
                format!("is {value}; use -1 for unlimited or a count ≥ 0"),
            ));
        }
    }
    let host_ok = agent.hostname.len() <= 253
        && agent
            .hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
    if !host_ok {
        problems.push((
            "hostname".into(),
            "must be up to 253 characters of a-z, 0-9, '.', '-', '_'".into(),
        ));
    }
    if agent.version.len() > 64 {
        problems.push(("version".into(), "is longer than 64 bytes".into()));
    }
    ApiError::check(problems)?;
    let agent = state.store.register_agent(agent, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

fn check_queues(queues: &[String]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if queues.len() > MAX_QUEUES {
        problems.push(("queues".into(), format!("at most {MAX_QUEUES} queues")));
    }
    for (n, q) in queues.iter().enumerate() {
        if let Err(e) = check_queue_name(q) {
            problems.push((format!("queues[{n}]"), e));
        }
    }
    problems
}

/// Report status and in-flight items; the answer says what to stop.
#[utoipa::path(post, path = "/api/v1/agents/{id}/heartbeat", tag = "agents", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatReply), (status = 404, body = ErrorBody)))]
pub async fn heartbeat(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
    Body(beat): Body<Heartbeat>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    caller.require(Access::Work)?;
    if beat.in_flight.len() > MAX_IN_FLIGHT {
        ApiError::check(vec![(
            "in_flight".into(),
            format!("at most {MAX_IN_FLIGHT} items"),
        )])?;
    }
    if beat.status == liftoff_types::AgentStatus::Lost {
        ApiError::check(vec![(
            "status".into(),
            "lost is set by the server, not reported".into(),
        )])?;
    }
    if beat.wait_ms > MAX_WAIT_MS {
        ApiError::check(vec![(
            "wait_ms".into(),
            format!("must be at most {MAX_WAIT_MS}"),
        )])?;
    }
    let deadline = Instant::now() + Duration::from_millis(beat.wait_ms);
    let keys = [agent_key(id)];
    let waiter = Arc::new(Notify::new());
    let touch_every = touch_interval(state.agent_timeout);
    let mut held = Held {
        state: state.clone(),
        agent: id,
        answered: false,
    };
    loop {
        // Register before reading, so a stop asked in between still wakes us.
        state.wakers.register(&keys, &waiter);
        let reply = state.store.heartbeat(id, beat.clone(), now_ms()).await?;
        let news = reply.stop_agent || !reply.stop_items.is_empty();
        if news || Instant::now() >= deadline {
            held.answered = true;
            return Ok(with_terms(reply, &state));
        }
        // While the beat is held the agent is alive (its connection is open): the stored
        // time is kept fresh, so no agent timeout is too short for the hold.
        loop {
            let wake = deadline.min(Instant::now() + touch_every);
            match tokio::time::timeout_at(wake, waiter.notified()).await {
                Ok(()) => break,
                Err(_) if Instant::now() >= deadline => {
                    held.answered = true;
                    state.store.touch_agent(id, now_ms()).await?;
                    return Ok(with_terms(reply, &state));
                }
                Err(_) => state.store.touch_agent(id, now_ms()).await?,
            }
        }
    }
}

/// A heartbeat's answer with the agent lease's terms.
fn with_terms(mut reply: HeartbeatReply, state: &AppState) -> Json<HeartbeatReply> {
    reply.lease = Some(liftoff_types::LeaseTerms {
        agent_timeout_ms: state.agent_timeout.as_millis() as u64,
        lost_grace_ms: state.lost_grace.as_millis() as u64,
    });
    Json(reply)
}

/// How often a held heartbeat marks its agent as heard from: often enough that the stored
/// time is never more than a third of the timeout old.
fn touch_interval(agent_timeout: Duration) -> Duration {
    (agent_timeout / 3).max(Duration::from_millis(250))
}

/// A held heartbeat. When its connection goes before the answer (the agent was killed,
/// or its machine went), the agent was last heard from now: that time is stored, so it is
/// declared lost one timeout after it went, not up to one hold earlier.
struct Held {
    state: AppState,
    agent: AgentId,
    answered: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (store, agent, now) = (self.state.store.clone(), self.agent, now_ms());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.touch_agent(agent, now).await;
            });
        }
    }
}

/// Ask an agent to stop: it stops leasing, lets its runs finish within its grace period,
/// then stops them. It hears of it at once through its heartbeat.
#[utoipa::path(post, path = "/api/v1/agents/{id}/stop", tag = "agents",
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn stop(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
) -> Result<Json<Agent>, ApiError> {
    // An agent serves everyone on its queues: stopping it is the operator's call.
    caller.require(Access::Admin)?;
    let agent = state.store.request_agent_stop(id, now_ms()).await?;
    state.wakers.wake(&agent_key(id));
    Ok(Json(agent))
}

/// Lease items from the agent's queues. Waits up to `wait_ms` for an item when none is
/// pending, and answers the moment one is enqueued.
#[utoipa::path(post, path = "/api/v1/agents/{id}/lease", tag = "lease", request_body = LeaseRequest,
    responses((status = 200, body = LeaseResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn lease(
    caller: Caller,
    State(state): State<AppState>,
    Path(agent): Path<AgentId>,
    Body(req): Body<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    caller.require(Access::Work)?;
    ApiError::check(check_lease(&req))?;
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms);
    let params = LeaseParams {
        agent,
        queues: req.queues.clone(),
        max: req.max,
        lease_ms: req.lease_ms,
        runs: req.runs,
        schedulers: req.schedulers,
    };
    let keys: Vec<String> = req.queues.iter().map(|q| queue_key(q)).collect();
    let waiter = Arc::new(LeaseWaiter::new(req.runs, req.schedulers));
    let _open = crate::metrics::PollOpen::new(&state.metrics.lease_polls_open);
    // Wakes this call is given and does not use go to another waiter (see `wake.rs`).
    let mut pass = PassOn {
        wakers: &state.wakers,
        waiter: &waiter,
        owed: Vec::new(),
    };
    loop {
        // Register before trying, so an enqueue between the try and the wait is not missed.
        state.wakers.register_lease(&keys, &waiter);
        pass.cover();
        let leases = state.store.lease(params.clone(), now_ms()).await?;
        if !leases.is_empty() || Instant::now() >= deadline {
            let now = now_ms();
            for lease in &leases {
                pass.used(&lease.item.queue, lease.item.kind);
                let wait = (now - lease.item.created_at_ms).max(0) as f64 / 1000.0;
                state
                    .metrics
                    .admission_wait
                    .get_or_create(&crate::metrics::QueueLabels {
                        queue: lease.item.queue.clone(),
                    })
                    .observe(wait);
            }
            return Ok(Json(LeaseResponse { leases }));
        }
        pass.spent();
        if tokio::time::timeout_at(deadline, waiter.notify.notified())
            .await
            .is_err()
        {
            return Ok(Json(LeaseResponse { leases: Vec::new() }));
        }
    }
}

fn check_lease(req: &LeaseRequest) -> Vec<(String, String)> {
    let mut problems = check_queues(&req.queues);
    if req.queues.is_empty() {
        problems.push(("queues".into(), "name at least one queue".into()));
    }
    if !(1..=MAX_LEASE_BATCH).contains(&req.max) {
        problems.push((
            "max".into(),
            format!("is {}; must be 1 to {MAX_LEASE_BATCH}", req.max),
        ));
    }
    if req.wait_ms > MAX_WAIT_MS {
        problems.push((
            "wait_ms".into(),
            format!("is {}; must be at most {MAX_WAIT_MS}", req.wait_ms),
        ));
    }
    if !(1_000..=3_600_000).contains(&req.lease_ms) {
        problems.push((
            "lease_ms".into(),
            format!("is {}; must be 1000 to 3600000", req.lease_ms),
        ));
    }
    problems
}

/// List agents.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", responses((status = 200, body = Vec<Agent>)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<Agent>>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(state.store.list_agents().await?))
}

/// Show one agent.
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents",
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
) -> Result<Json<Agent>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(state.store.get_agent(id).await?))
}
