//! Token routes (admins only). The secret is in the create answer and nowhere else.

use crate::auth::{new_token, Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, Path};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use liftoff_types::api::{CreateTokenRequest, CreatedToken, ErrorBody};
use liftoff_types::{now_ms, TokenInfo};

/// Create a token with one scope.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 422, body = ErrorBody)))]
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Body(req): Body<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(Access::Admin)?;
    if req.name.is_empty() || req.name.len() > 128 {
        ApiError::check(vec![("name".into(), "must be 1 to 128 bytes".into())])?;
    }
    let (token, hash) = new_token();
    let info = state
        .store
        .create_token(&req.name, req.scope, &hash, now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(Access::Admin)?;
    Ok(Json(state.store.list_tokens().await?))
}

/// Revoke a token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Access::Admin)?;
    state.store.delete_token(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
