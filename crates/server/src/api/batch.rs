//! Batches for agents running many short runs: several acks, or several run reports, in one
//! request. Each entry is checked and stored as it would be alone (the store commits them
//! together) and answered in order, with its own status.

use super::items::apply_ack_quietly;
use super::runs::apply_update_quietly;
use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, Path};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use futures_util::future::join_all;
use liftoff_types::api::{AckBatch, AckOutcome, ErrorBody, ReportBatch, ReportOutcome, MAX_BATCH};
use liftoff_types::AgentId;

fn check_size(n: usize) -> Result<(), ApiError> {
    if n > MAX_BATCH {
        return ApiError::check(vec![(
            "batch".into(),
            format!("holds {n} entries; at most {MAX_BATCH}"),
        )]);
    }
    Ok(())
}

/// Ack several leased items at once.
#[utoipa::path(post, path = "/api/v1/agents/{id}/acks", tag = "lease", request_body = AckBatch,
    responses((status = 200, body = Vec<AckOutcome>), (status = 422, body = ErrorBody)))]
pub async fn acks(
    caller: Caller,
    State(state): State<AppState>,
    Path(_agent): Path<AgentId>,
    Body(batch): Body<AckBatch>,
) -> Result<Json<Vec<AckOutcome>>, ApiError> {
    caller.require(Access::Work)?;
    check_size(batch.acks.len())?;
    let answers = join_all(
        batch
            .acks
            .into_iter()
            .map(|a| apply_ack_quietly(&state, a.item_id, a.ack)),
    )
    .await;
    Ok(Json(
        answers
            .into_iter()
            .map(|r| match r {
                Ok(ack) => AckOutcome::Ok(ack),
                Err(e) => AckOutcome::Error(e.entry()),
            })
            .collect(),
    ))
}

/// Report the states of several runs at once.
#[utoipa::path(post, path = "/api/v1/agents/{id}/reports", tag = "lease", request_body = ReportBatch,
    responses((status = 200, body = Vec<ReportOutcome>), (status = 422, body = ErrorBody)))]
pub async fn reports(
    caller: Caller,
    State(state): State<AppState>,
    Path(_agent): Path<AgentId>,
    Body(batch): Body<ReportBatch>,
) -> Result<Json<Vec<ReportOutcome>>, ApiError> {
    caller.require(Access::Work)?;
    check_size(batch.reports.len())?;
    let state = &state;
    let answers = join_all(
        batch
            .reports
            .into_iter()
            .map(|r| async move { apply_update_quietly(state, &r.run_id, r.update).await }),
    )
    .await;
    Ok(Json(
        answers
            .into_iter()
            .map(|r| match r {
                Ok(run) => ReportOutcome::Ok(run),
                Err(e) => ReportOutcome::Error(e.entry()),
            })
            .collect(),
    ))
}
