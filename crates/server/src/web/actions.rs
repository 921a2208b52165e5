//! The dashboard's buttons: each checks its form came from our page, then calls the API's
//! own handler as the signed-in token, so a page can do exactly what that token may do
//! through the API (a read token's forged post is refused the same way).

use super::session::{check_form, Viewer};
use crate::api::{items, queues, runs, sweeps};
use crate::error::ApiError;
use crate::extract::{Body, OptionalBody, Path as ApiPath, Query as ApiQuery};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use liftoff_types::api::CancelQuery;
use liftoff_types::sweep::SweepStateChange;
use liftoff_types::{ItemId, ItemKind, SweepState};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Plain {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct StateForm {
    #[serde(default)]
    csrf: String,
    state: SweepState,
}

fn done(result: Result<String, ApiError>) -> Response {
    match result {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => super::error_page(e),
    }
}

/// Stop the item's run.
pub async fn stop(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    headers: HeaderMap,
    Form(form): Form<Plain>,
) -> Response {
    done(
        async {
            check_form(&headers, &viewer, &form.csrf)?;
            let item = state.store.get_item(id).await?;
            let run = item.run_id.ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    format!("item {id} has no run to stop"),
                )
            })?;
            let _ = runs::stop(
                viewer.caller(),
                State(state.clone()),
                ApiPath(run),
                OptionalBody(None),
            )
            .await?;
            Ok(format!("/items/{id}"))
        }
        .await,
    )
}

/// Cancel the item (pending, leased, or running: its agent stops it).
pub async fn cancel(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    headers: HeaderMap,
    Form(form): Form<Plain>,
) -> Response {
    done(
        async {
            check_form(&headers, &viewer, &form.csrf)?;
            let _ = items::cancel(
                viewer.caller(),
                State(state.clone()),
                ApiPath(id),
                ApiQuery(CancelQuery::default()),
            )
            .await?;
            Ok(format!("/items/{id}"))
        }
        .await,
    )
}

/// The item's spec on its queue again, outside any sweep, as `liftoff rerun` does.
pub async fn rerun(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    headers: HeaderMap,
    Form(form): Form<Plain>,
) -> Response {
    done(async {
        check_form(&headers, &viewer, &form.csrf)?;
        let item = state.store.get_item(id).await?;
        if item.kind == ItemKind::Scheduler {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!("item {id} is the scheduler of a sweep; rerun its runs, or create the sweep again"),
            ));
        }
        let mut spec = item.spec.clone();
        spec.sweep_id = None;
        spec.run_id = None;
        let body = serde_json::to_value(&spec).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let (_, axum::Json(new)) =
            queues::enqueue(viewer.caller(), State(state.clone()), ApiPath(item.queue.clone()), Body(body)).await?;
        Ok(format!("/items/{}", new.id))
    }
    .await)
}

/// Pause, resume or cancel a sweep.
pub async fn sweep_state(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<StateForm>,
) -> Response {
    done(
        async {
            check_form(&headers, &viewer, &form.csrf)?;
            let change = SweepStateChange {
                state: form.state,
                message: Some("from the dashboard".into()),
            };
            let _ = sweeps::set_state(
                viewer.caller(),
                State(state.clone()),
                ApiPath(id.clone()),
                Body(change),
            )
            .await?;
            Ok(format!("/sweeps/{}", super::session::encode(&id)))
        }
        .await,
    )
}
