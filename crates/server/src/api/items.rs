//! Item routes: listings and cancel (users), and the agent's side of the lease protocol
//! about one item (ack, fail, warn, release).

use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, Path, Query};
use crate::state::AppState;
use crate::wake::{agent_key, queue_key};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use liftoff_store::Ack;
use liftoff_types::api::{
    AckRequest, AckResponse, AckedRun, CancelQuery, ErrorBody, FailRequest, ItemFilter,
    ReleaseRequest, WarnRequest,
};
use liftoff_types::{now_ms, Item, ItemId, RunState};

/// Longest failure message, warning or file name, and most attached files and their size:
/// an agent cannot make the store keep more than this about one item.
const MAX_MESSAGE: usize = 64 * 1024;
const MAX_WARNING: usize = 4 * 1024;
const MAX_FILES: usize = 16;
const MAX_FILE: usize = 1024 * 1024;
/// Largest backend handle, serialized.
pub const MAX_HANDLE: usize = 16 * 1024;

/// List items, newest first (oldest first from `after`, for paging); pending items carry their position in their queue.
#[utoipa::path(get, path = "/api/v1/items", tag = "items", params(ItemFilter),
    responses((status = 200, body = Vec<Item>), (status = 404, body = ErrorBody)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(filter): Query<ItemFilter>,
) -> Result<Json<Vec<Item>>, ApiError> {
    caller.require(Access::Read)?;
    let mut items = state.store.list_items(&filter).await?;
    crate::pending::explain(state.store.as_ref(), &mut items).await?;
    Ok(Json(items))
}

/// Show one item.
#[utoipa::path(get, path = "/api/v1/items/{id}", tag = "items",
    responses((status = 200, body = Item), (status = 404, body = ErrorBody)))]
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
) -> Result<Json<Item>, ApiError> {
    caller.require(Access::Read)?;
    let mut item = state.store.get_item(id).await?;
    crate::pending::explain(state.store.as_ref(), std::slice::from_mut(&mut item)).await?;
    Ok(Json(item))
}

/// A file attached to an item's failure, as text.
#[utoipa::path(get, path = "/api/v1/items/{id}/files/{name}", tag = "items",
    responses((status = 200, body = String, content_type = "text/plain"), (status = 404, body = ErrorBody)))]
pub async fn file(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, name)): Path<(ItemId, String)>,
) -> Result<String, ApiError> {
    caller.require(Access::Read)?;
    Ok(state.store.item_file(id, &name).await?)
}

/// Cancel an item: pending and leased items end at once; a running one is stopped by its agent.
/// With `force`, a running one ends now (its run `lost`), for an agent that is gone for good.
#[utoipa::path(post, path = "/api/v1/items/{id}/cancel", tag = "items", params(CancelQuery),
    responses((status = 200, body = Item), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    Query(query): Query<CancelQuery>,
) -> Result<Json<Item>, ApiError> {
    caller.require(Access::Submit)?;
    let item = if query.force {
        let found = state.store.get_item(id).await?;
        let agent = match found.agent_id {
            Some(a) => format!("agent {a}"),
            None => "its agent".to_string(),
        };
        let reason = format!(
            "cancelled with --force: {agent} did not confirm the stop; \
             whatever it started may still be running on its machine"
        );
        let item = state.store.force_cancel(id, &reason, now_ms()).await?;
        if found.state == liftoff_types::ItemState::Claimed {
            state.metrics.run_lost(&item.queue, "force_cancel");
        }
        item
    } else {
        state.store.cancel(id, now_ms()).await?
    };
    if let Some(agent) = item.agent_id {
        state.wakers.wake(&agent_key(agent));
    }
    if item.state.is_terminal() {
        state.run_slot_freed(&item.queue).await;
    }
    Ok(Json(item))
}

/// Bind a run id and backend handle to a leased item. The answer carries a token scoped to
/// the run, for the run itself.
#[utoipa::path(post, path = "/api/v1/items/{id}/ack", tag = "lease", request_body = AckRequest,
    responses((status = 200, body = AckResponse), (status = 409, body = ErrorBody)))]
pub async fn ack(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    Body(req): Body<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    caller.require(Access::Work)?;
    Ok(Json(apply_ack(&state, id, req).await?))
}

/// An ack, checked and stored, with its run token (shared by the single and batch routes).
pub async fn apply_ack(
    state: &AppState,
    id: ItemId,
    req: AckRequest,
) -> Result<AckResponse, ApiError> {
    let (ack, run_token) = checked_ack(state, id, req)?;
    let run = state.store.ack(id, ack, now_ms()).await?;
    Ok(AckResponse { run, run_token })
}

/// An ack of an agent's batch: stored as [`apply_ack`] stores it, answered with the token
/// only (the agent has the rest of the run).
pub async fn apply_ack_quietly(
    state: &AppState,
    id: ItemId,
    req: AckRequest,
) -> Result<AckedRun, ApiError> {
    let (ack, run_token) = checked_ack(state, id, req)?;
    let run_id = ack.run_id.clone();
    state.store.ack_quietly(id, ack, now_ms()).await?;
    Ok(AckedRun { run_id, run_token })
}

/// An ack request checked, as the store takes it, with the run's token (signed, not
/// stored: the same ack again gets the same token).
fn checked_ack(state: &AppState, id: ItemId, req: AckRequest) -> Result<(Ack, String), ApiError> {
    ApiError::check(check_handle(&req.handle))?;
    let run_token = state.auth.run_token(&req.run_id, id);
    let ack = Ack {
        fence: req.fence,
        run_id: req.run_id,
        handle: req.handle,
        state: req.state.unwrap_or(RunState::Starting),
    };
    Ok((ack, run_token))
}

pub fn check_handle(handle: &serde_json::Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if !(handle.is_object() || handle.is_null()) {
        problems.push(("handle".into(), "must be a JSON object".into()));
    } else if handle.to_string().len() > MAX_HANDLE {
        problems.push((
            "handle".into(),
            format!("is larger than {MAX_HANDLE} bytes"),
        ));
    }
    problems
}

/// Fail a leased or claimed item with a message, a phase and attached files.
#[utoipa::path(post, path = "/api/v1/items/{id}/fail", tag = "lease", request_body = FailRequest,
    responses((status = 200, body = Item), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn fail(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    Body(req): Body<FailRequest>,
) -> Result<Json<Item>, ApiError> {
    caller.require(Access::Work)?;
    ApiError::check(check_failure(&req))?;
    let item = state.store.fail(id, req, now_ms()).await?;
    state.run_slot_freed(&item.queue).await;
    state.item_back(&item);
    // A follower of the run's log ends with the run (it waited up to its recheck, 5 s).
    if let Some(run) = &item.run_id {
        state.wakers.wake(&crate::wake::run_key(run));
    }
    Ok(Json(item))
}

fn check_failure(req: &FailRequest) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if req.message.is_empty() || req.message.len() > MAX_MESSAGE {
        problems.push((
            "message".into(),
            format!("must be 1 to {MAX_MESSAGE} bytes"),
        ));
    }
    if req.files.len() > MAX_FILES {
        problems.push(("files".into(), format!("at most {MAX_FILES} files")));
    }
    for (n, file) in req.files.iter().enumerate() {
        let name_ok = !file.name.is_empty()
            && file.name.len() <= 128
            && !file.name.starts_with('.')
            && file
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            problems.push((
                format!("files[{n}].name"),
                "must be 1 to 128 characters of letters, digits, '.', '_' or '-', not starting with '.'".into(),
            ));
        }
        if file.content.len() > MAX_FILE {
            problems.push((
                format!("files[{n}].content"),
                format!("is larger than {MAX_FILE} bytes"),
            ));
        }
    }
    problems
}

/// Record a warning about a leased or claimed item.
#[utoipa::path(post, path = "/api/v1/items/{id}/warn", tag = "lease", request_body = WarnRequest,
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn warn(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    Body(req): Body<WarnRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(Access::Work)?;
    if req.message.is_empty() || req.message.len() > MAX_WARNING {
        ApiError::check(vec![(
            "message".into(),
            format!("must be 1 to {MAX_WARNING} bytes"),
        )])?;
    }
    state
        .store
        .warn(id, req.fence, &req.message, now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give a leased item back without counting an attempt.
#[utoipa::path(post, path = "/api/v1/items/{id}/release", tag = "lease", request_body = ReleaseRequest,
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn release(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    Body(req): Body<ReleaseRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(Access::Work)?;
    state.store.release(id, req.fence, now_ms()).await?;
    if let Ok(item) = state.store.get_item(id).await {
        state.wakers.wake(&queue_key(&item.queue));
    }
    Ok(StatusCode::NO_CONTENT)
}
