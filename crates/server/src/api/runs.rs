//! Run routes: listings, a user's stop, and the agent's state reports.

use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, Path, Query};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use liftoff_types::api::{ErrorBody, RunFilter};
use liftoff_types::{now_ms, Run, RunId, RunUpdate};

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

/// Show one run.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
) -> Result<Json<Run>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(state.store.get_run(&id).await?))
}

/// Ask for a run to be stopped; its agent hears of it on its next heartbeat.
#[utoipa::path(post, path = "/api/v1/runs/{id}/stop", tag = "runs",
    responses((status = 200, body = Run), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
) -> Result<Json<Run>, ApiError> {
    caller.require(Access::Submit)?;
    Ok(Json(state.store.request_stop(&id, now_ms()).await?))
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
    let mut problems = update
        .handle
        .as_ref()
        .map(super::items::check_handle)
        .unwrap_or_default();
    if update.message.as_ref().is_some_and(|m| m.len() > 4096) {
        problems.push(("message".into(), "is longer than 4096 bytes".into()));
    }
    ApiError::check(problems)?;
    Ok(Json(state.store.update_run(&id, update, now_ms()).await?))
}
