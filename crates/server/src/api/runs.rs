//! Run routes: listings, a user's stop, the agent's state reports, and output (appended by
//! the agent, read or followed by anyone who may read the run).

use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, OptionalBody, Path, Query};
use crate::state::AppState;
use crate::wake::{agent_key, run_key};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use liftoff_store::LogChunk;
use liftoff_types::api::{ErrorBody, LogAppend, LogQuery, ReportedRun, RunFilter, MAX_LOG_CHUNK};
use liftoff_types::sweep::{
    MetricsAppend, RunMetrics, StopRequest, MAX_METRICS_BATCH, MAX_METRIC_RECORD,
};
use liftoff_types::{now_ms, Run, RunId, RunUpdate};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// List runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunFilter), responses((status = 200, body = Vec<Run>)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(filter): Query<RunFilter>,
) -> Result<Json<Vec<Run>>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(state.store.list_runs(&filter).await?))
}

/// Show one run (a run's own token may read it).
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
) -> Result<Json<Run>, ApiError> {
    caller.require_run(&id)?;
    Ok(Json(state.store.get_run(&id).await?))
}

/// Ask for a run to be stopped; its agent hears of it at once (through its heartbeat). An
/// optional `reason` becomes the stopped run's message (hyperband records its cut so).
#[utoipa::path(post, path = "/api/v1/runs/{id}/stop", tag = "runs", request_body(content = Option<StopRequest>),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
    OptionalBody(req): OptionalBody<StopRequest>,
) -> Result<Json<Run>, ApiError> {
    caller.require_steer()?;
    let reason = req.and_then(|r| r.reason);
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
        ApiError::check(vec![(
            "reason".into(),
            format!("is longer than {MAX_REASON} bytes"),
        )])?;
    }
    let run = state.store.request_stop(&id, reason, now_ms()).await?;
    state.wakers.wake(&agent_key(run.agent_id));
    Ok(Json(run))
}

/// Longest stop reason.
const MAX_REASON: usize = 4096;

/// Append metric records to a live run: by its agent (shipping the run's metrics file, with
/// the first line's number so that a batch sent twice is kept once) or by the run itself
/// with its run token.
#[utoipa::path(post, path = "/api/v1/runs/{id}/metrics", tag = "runs", request_body = MetricsAppend,
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn append_metrics(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
    Body(req): Body<MetricsAppend>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_run_write(&id)?;
    let mut problems = Vec::new();
    if req.records.len() > MAX_METRICS_BATCH {
        problems.push((
            "records".to_string(),
            format!("has more than {MAX_METRICS_BATCH} records"),
        ));
    }
    for (i, record) in req.records.iter().enumerate() {
        let size = serde_json::to_string(record).map(|s| s.len()).unwrap_or(0);
        if size > MAX_METRIC_RECORD {
            problems.push((
                format!("records[{i}]"),
                format!("is larger than {MAX_METRIC_RECORD} bytes"),
            ));
        }
    }
    ApiError::check(problems)?;
    let count = state
        .store
        .append_metrics(&id, req.first_line, req.records, now_ms())
        .await?;
    Ok(Json(serde_json::json!({ "count": count })))
}

/// A run's metric records and a summary per metric (last, min, max, step of the last).
#[utoipa::path(get, path = "/api/v1/runs/{id}/metrics", tag = "runs",
    responses((status = 200, body = RunMetrics), (status = 404, body = ErrorBody)))]
pub async fn metrics(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
) -> Result<Json<RunMetrics>, ApiError> {
    caller.require_run(&id)?;
    let records = state.store.read_metrics(&id).await?;
    Ok(Json(RunMetrics::summarize(records)))
}

/// An agent's report of a run's state; a terminal state ends the item.
#[utoipa::path(post, path = "/api/v1/runs/{id}/state", tag = "lease", request_body = RunUpdate,
    responses((status = 200, body = Run), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
    Body(update): Body<RunUpdate>,
) -> Result<Json<Run>, ApiError> {
    caller.require(Access::Work)?;
    Ok(Json(apply_update(&state, &id, update).await?))
}

/// A run report, checked and stored (the single route).
pub async fn apply_update(
    state: &AppState,
    id: &RunId,
    update: RunUpdate,
) -> Result<Run, ApiError> {
    check_update(&update)?;
    let retried = may_go_back(update.state);
    let run = state.store.update_run(id, update, now_ms()).await?;
    state.wakers.wake(&run_key(id));
    if run.state.is_terminal() {
        state.run_slot_freed(&run.queue).await;
    }
    if retried {
        if let Ok(item) = state.store.get_item(run.item_id).await {
            state.item_back(&item);
        }
    }
    Ok(run)
}

/// A run report of an agent's batch: stored as [`apply_update`] stores it, answered with the
/// reported state only.
pub async fn apply_update_quietly(
    state: &AppState,
    id: &RunId,
    update: RunUpdate,
) -> Result<ReportedRun, ApiError> {
    check_update(&update)?;
    let reported = update.state;
    state.store.update_run_quietly(id, update, now_ms()).await?;
    state.wakers.wake(&run_key(id));
    if reported.is_terminal() {
        if let Ok(run) = state.store.get_run(id).await {
            state.run_slot_freed(&run.queue).await;
            if may_go_back(reported) {
                if let Ok(item) = state.store.get_item(run.item_id).await {
                    state.item_back(&item);
                }
            }
        }
    }
    Ok(ReportedRun {
        run_id: id.clone(),
        state: reported,
    })
}

/// Whether a report in this state may put its item back in its queue (read only then: a
/// finish, the common report, costs no extra read).
fn may_go_back(state: liftoff_types::RunState) -> bool {
    use liftoff_types::RunState::*;
    matches!(state, Preempted | Lost | Failed)
}

fn check_update(update: &RunUpdate) -> Result<(), ApiError> {
    let mut problems = update
        .handle
        .as_ref()
        .map(super::items::check_handle)
        .unwrap_or_default();
    if update.message.as_ref().is_some_and(|m| m.len() > 4096) {
        problems.push(("message".into(), "is longer than 4096 bytes".into()));
    }
    ApiError::check(problems)
}

/// Append output at a byte offset (the body is the raw bytes). Bytes the server already has
/// are skipped, so a retry is harmless. Answers the stored length.
#[utoipa::path(post, path = "/api/v1/runs/{id}/logs", tag = "lease", params(LogAppend),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Object), (status = 409, body = ErrorBody)))]
pub async fn append_log(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
    Query(at): Query<LogAppend>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Access::Work)?;
    check_offset(at.offset)?;
    if body.len() > MAX_LOG_CHUNK {
        ApiError::check(vec![(
            "body".into(),
            format!("a chunk may hold at most {MAX_LOG_CHUNK} bytes"),
        )])?;
    }
    let length = state
        .store
        .append_log(&id, at, body.to_vec(), now_ms())
        .await?;
    state.wakers.wake(&run_key(&id));
    Ok(Json(serde_json::json!({ "length": length })))
}

/// A run's output from `offset`; with `follow`, the response stays open and streams output as
/// it comes until the run ends.
#[utoipa::path(get, path = "/api/v1/runs/{id}/logs", tag = "runs", params(LogQuery),
    responses((status = 200, body = Vec<u8>, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
pub async fn logs(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    caller.require_run(&id)?;
    check_offset(query.offset)?;
    let first = state.store.read_log(&id, query.offset, READ_CHUNK).await?;
    let octets = [(header::CONTENT_TYPE, "application/octet-stream")];
    if !query.follow {
        return Ok((octets, first.data).into_response());
    }
    let stream = futures_util::stream::unfold(
        Follow {
            state,
            id,
            chunk: first,
            waiter: Arc::new(Notify::new()),
        },
        follow_next,
    );
    Ok((octets, axum::body::Body::from_stream(stream)).into_response())
}

const READ_CHUNK: usize = 256 * 1024;

/// A byte offset the stores can hold (theirs are signed 64-bit): past it, a 422 rather than
/// the database's out-of-range error.
fn check_offset(offset: u64) -> Result<(), ApiError> {
    if i64::try_from(offset).is_err() {
        ApiError::check(vec![(
            "offset".into(),
            format!("is {offset}; must be at most {}", i64::MAX),
        )])?;
    }
    Ok(())
}
/// A follower re-reads at least this often even without a wake-up (another replica may
/// have written).
const FOLLOW_RECHECK: Duration = Duration::from_secs(5);

struct Follow {
    state: AppState,
    id: RunId,
    chunk: LogChunk,
    waiter: Arc<Notify>,
}

type Step = Option<(Result<Bytes, std::io::Error>, Follow)>;

/// The next piece of a followed log: what is there, else wait for a wake-up; the end once
/// the run has ended and everything was sent.
async fn follow_next(mut f: Follow) -> Step {
    loop {
        if !f.chunk.data.is_empty() {
            let data = std::mem::take(&mut f.chunk.data);
            return Some((Ok(Bytes::from(data)), f));
        }
        if f.chunk.ended {
            return None;
        }
        // Register before reading, so output written in between still wakes us.
        f.state.wakers.register(&[run_key(&f.id)], &f.waiter);
        match f
            .state
            .store
            .read_log(&f.id, f.chunk.next_offset, READ_CHUNK)
            .await
        {
            Ok(c) if c.data.is_empty() && !c.ended => {
                let _ = tokio::time::timeout(FOLLOW_RECHECK, f.waiter.notified()).await;
            }
            Ok(c) => f.chunk = c,
            Err(e) => {
                f.chunk.ended = true;
                return Some((Err(std::io::Error::other(e.to_string())), f));
            }
        }
    }
}
