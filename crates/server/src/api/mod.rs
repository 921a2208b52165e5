//! The HTTP API under `/api/v1`, grouped by resource; the router and the OpenAPI document.
//! Each handler's first line checks the caller's access (see `auth::Access`).

pub mod agents;
pub mod batch;
pub mod items;
pub mod jobs;
pub mod queues;
pub mod runs;
pub mod sweeps;
pub mod tokens;

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "liftoff", description = "Queues, leases, runs and agents of the liftoff launch system."),
    paths(
        queues::create, queues::list, queues::show, queues::delete, queues::enqueue,
        items::list, items::show, items::file, items::cancel,
        items::ack, items::fail, items::warn, items::release,
        agents::register, agents::list, agents::show, agents::heartbeat, agents::lease, agents::stop,
        runs::list, runs::show, runs::stop, runs::update, runs::append_log, runs::logs,
        runs::append_metrics, runs::metrics,
        jobs::upload, jobs::download, jobs::exists, jobs::create, jobs::list, jobs::show, jobs::version,
        sweeps::create, sweeps::list, sweeps::show, sweeps::set_state, sweeps::enqueue_run,
        batch::acks, batch::reports,
        tokens::create, tokens::list, tokens::delete,
        healthz, readyz, openapi, limits, prune, crate::web::session::login_link,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Liveness: answers without touching the store or asking for a token.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()), responses((status = 200, body = Object)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store answers within two seconds (for a load balancer in front of
/// replicas: a replica that cannot reach the database is taken out until it can).
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()),
    responses((status = 200, body = Object), (status = 503, body = liftoff_types::api::ErrorBody)))]
pub async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, crate::error::ApiError> {
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await {
        Ok(answered) => answered?,
        Err(_) => {
            return Err(liftoff_store::StoreError::Unavailable(
                "no answer to a probe within 2 s".into(),
            )
            .into())
        }
    }
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// Remove ended items with their runs, logs and metrics, long-stopped agents and
/// unreferenced code archives, older than `older_than_s` (admin); `dry_run` only counts.
#[utoipa::path(post, path = "/api/v1/prune", tag = "meta", request_body = liftoff_types::api::PruneRequest,
    responses((status = 200, body = Object), (status = 422, body = liftoff_types::api::ErrorBody)))]
pub async fn prune(
    caller: crate::auth::Caller,
    axum::extract::State(state): axum::extract::State<AppState>,
    crate::extract::Body(req): crate::extract::Body<liftoff_types::api::PruneRequest>,
) -> Result<Json<liftoff_store::Pruned>, crate::error::ApiError> {
    caller.require(crate::auth::Access::Admin)?;
    if !(60..=100 * 365 * 86_400).contains(&req.older_than_s) {
        return Err(crate::error::ApiError::invalid(vec![
            liftoff_types::api::FieldError {
                field: "older_than_s".into(),
                message: "must be from 60 seconds to 100 years".into(),
                rule: None,
            },
        ]));
    }
    let cutoff = liftoff_types::now_ms() - (req.older_than_s as i64) * 1000;
    Ok(Json(
        crate::prune::prune(&state, cutoff, req.dry_run).await?,
    ))
}

/// The server's limits, for clients to check against before sending (the archive limit
/// before packing a code directory), and the agent lease's terms: an agent whose heartbeat
/// is not answered for `agent_timeout_ms` stops its runs, within half of `lost_grace_ms`.
#[utoipa::path(get, path = "/api/v1/limits", tag = "meta", responses((status = 200, body = Object)))]
pub async fn limits(
    caller: crate::auth::Caller,
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, crate::error::ApiError> {
    caller.require(crate::auth::Access::Read)?;
    Ok(Json(serde_json::json!({
        "artifact_limit": state.artifact_limit,
        "agent_timeout_ms": state.agent_timeout.as_millis() as u64,
        "lost_grace_ms": state.lost_grace.as_millis() as u64,
        "store_id": state.store_id,
    })))
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()), responses((status = 200, body = Object)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The whole router. `body_limit` bounds every request body (413 past it).
pub fn router(state: AppState, body_limit: usize, artifact_limit: usize) -> Router {
    // Archives may be larger than any other body: their route has its own limit.
    let artifacts = Router::new()
        .route(
            "/artifacts/{digest}",
            axum::routing::put(jobs::upload)
                .get(jobs::download)
                .head(jobs::exists),
        )
        // The upload streams and counts its own limit; this keeps any other body in check.
        .layer(DefaultBodyLimit::max(artifact_limit));
    let v1 = Router::new()
        .route("/queues", post(queues::create).get(queues::list))
        .route("/queues/{name}", get(queues::show).delete(queues::delete))
        .route("/queues/{name}/items", post(queues::enqueue))
        .route("/items", get(items::list))
        .route("/items/{id}", get(items::show))
        .route("/items/{id}/files/{name}", get(items::file))
        .route("/items/{id}/cancel", post(items::cancel))
        .route("/items/{id}/ack", post(items::ack))
        .route("/items/{id}/fail", post(items::fail))
        .route("/items/{id}/warn", post(items::warn))
        .route("/items/{id}/release", post(items::release))
        .route("/agents", post(agents::register).get(agents::list))
        .route("/agents/{id}", get(agents::show))
        .route("/agents/{id}/heartbeat", post(agents::heartbeat))
        .route("/agents/{id}/lease", post(agents::lease))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/stop", post(runs::stop))
        .route("/runs/{id}/state", post(runs::update))
        .route("/runs/{id}/logs", post(runs::append_log).get(runs::logs))
        .route(
            "/runs/{id}/metrics",
            post(runs::append_metrics).get(runs::metrics),
        )
        .route("/jobs", get(jobs::list))
        .route("/jobs/{name}", get(jobs::show))
        .route("/jobs/{name}/versions", post(jobs::create))
        .route("/jobs/{name}/versions/{version}", get(jobs::version))
        .merge(artifacts)
        .route("/sweeps", post(sweeps::create).get(sweeps::list))
        .route("/sweeps/{id}", get(sweeps::show))
        .route("/sweeps/{id}/state", post(sweeps::set_state))
        .route("/sweeps/{id}/runs", post(sweeps::enqueue_run))
        .route("/agents/{id}/stop", post(agents::stop))
        .route("/agents/{id}/acks", post(batch::acks))
        .route("/agents/{id}/reports", post(batch::reports))
        .route("/tokens", post(tokens::create).get(tokens::list))
        .route("/tokens/{id}", axum::routing::delete(tokens::delete))
        .route("/openapi.json", get(openapi))
        .route("/limits", get(limits))
        .route("/prune", post(prune))
        .route("/login-links", post(crate::web::session::login_link));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::serve))
        .nest("/api/v1", v1)
        .merge(crate::web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
