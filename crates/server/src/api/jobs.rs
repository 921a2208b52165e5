//! Job routes: code archives uploaded by digest, job versions created (one per distinct
//! content: the same content again answers the version already there), listed and shown;
//! and the resolution of a launch spec's job reference at enqueue.

use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, Path};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use liftoff_artifacts::{ArtifactStore, Digest};
use liftoff_types::api::{ErrorBody, FieldError};
use liftoff_types::job::{
    check_job_name, check_schema, deep_merge, JobKind, JobRef, JobVersionCreated,
};
use liftoff_types::{now_ms, JobSpec, JobVersion, LaunchSpec};
use std::sync::Arc;

fn store(state: &AppState) -> Result<Arc<dyn ArtifactStore>, ApiError> {
    state
        .artifacts
        .clone()
        .ok_or_else(|| ApiError::not_found("this server keeps no artifacts"))
}

fn digest(text: &str) -> Result<Digest, ApiError> {
    text.parse::<Digest>()
        .map_err(|e| ApiError::bad_request(format!("digest: {e}")))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Upload a code archive (a gzipped tar) under its SHA-256; the same bytes are kept once.
/// The body is streamed to a staging file beside the store, hashed on the way: memory stays
/// flat whatever its size, and past the server's `artifact_limit` it is refused (413).
#[utoipa::path(put, path = "/api/v1/artifacts/{digest}", tag = "jobs",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Object), (status = 200, body = Object), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload(
    caller: Caller,
    State(state): State<AppState>,
    Path(text): Path<String>,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    use futures_util::StreamExt;
    use sha2::Digest as _;
    use tokio::io::AsyncWriteExt;
    caller.require(Access::Submit)?;
    let want = digest(&text)?;
    let store = store(&state)?;
    let limit = state.artifact_limit as u64;
    let staged = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.stage())
            .await
            .map_err(internal)?
            .map_err(internal)?
    };
    let mut file = tokio::fs::File::from_std(staged.reopen().map_err(internal)?);
    let mut hash = sha2::Sha256::new();
    let mut size: u64 = 0;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the archive is larger than this server's artifact limit of {limit} bytes \
                     (liftoff server --artifact-limit)"
                ),
            ));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    file.sync_all().await.map_err(internal)?;
    let got: Digest = hex::encode(hash.finalize()).parse().map_err(internal)?;
    if got != want {
        return Err(ApiError::invalid(vec![FieldError {
            field: "digest".into(),
            message: format!("the body's SHA-256 is {got}, not {want}"),
            rule: None,
        }]));
    }
    let kept = got.clone();
    let new = tokio::task::spawn_blocking(move || store.keep(staged, &kept))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::json!({"digest": got.to_string(), "new": new})),
    ))
}

/// Whether the server has an archive (200) or not (404): a client uploads only what is new.
#[utoipa::path(head, path = "/api/v1/artifacts/{digest}", tag = "jobs",
    responses((status = 200), (status = 404)))]
pub async fn exists(
    caller: Caller,
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Access::Read)?;
    let d = digest(&text)?;
    Ok(if store(&state)?.has(&d) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

/// Download a code archive, streamed from its file.
#[utoipa::path(get, path = "/api/v1/artifacts/{digest}", tag = "jobs",
    responses((status = 200, body = Vec<u8>, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
pub async fn download(
    caller: Caller,
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<Response, ApiError> {
    use tokio::io::AsyncReadExt;
    caller.require(Access::Read)?;
    let d = digest(&text)?;
    let store = store(&state)?;
    let name = d.to_string();
    let Some(path) = store.path_of(&d) else {
        return Err(ApiError::not_found(format!("artifact {name} not found")));
    };
    let file = tokio::fs::File::open(&path).await.map_err(internal)?;
    let len = file.metadata().await.map_err(internal)?.len();
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// Create a job version; the same content under the same name answers the version already
/// there (200) instead of a new one (201).
#[utoipa::path(post, path = "/api/v1/jobs/{name}/versions", tag = "jobs", request_body = JobSpec,
    responses((status = 201, body = JobVersionCreated), (status = 200, body = JobVersionCreated), (status = 422, body = ErrorBody)))]
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Body(spec): Body<JobSpec>,
) -> Result<(StatusCode, Json<JobVersionCreated>), ApiError> {
    caller.require(Access::Submit)?;
    let mut problems = spec.validate();
    if let Err(e) = check_job_name(&name) {
        problems.push(("name".into(), e));
    }
    ApiError::check(problems)?;
    if spec.kind == JobKind::Code {
        let d = digest(spec.source.digest.as_deref().unwrap_or(""))?;
        if !store(&state)?.has(&d) {
            ApiError::check(vec![(
                "source.digest".into(),
                format!("no artifact {d} was uploaded"),
            )])?;
        }
    }
    let canonical = serde_json::to_string(&spec)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let key = Digest::of(canonical.as_bytes()).to_string();
    let (job, created) = state
        .store
        .put_job_version(&name, &key, spec, now_ms())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(JobVersionCreated { job, created })))
}

/// Every version of every job, by name then version.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", responses((status = 200, body = Vec<JobVersion>)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<JobVersion>>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(state.store.list_job_versions(None).await?))
}

/// One job's versions.
#[utoipa::path(get, path = "/api/v1/jobs/{name}", tag = "jobs",
    responses((status = 200, body = Vec<JobVersion>), (status = 404, body = ErrorBody)))]
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<JobVersion>>, ApiError> {
    caller.require(Access::Read)?;
    let versions = state.store.list_job_versions(Some(&name)).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("job {name} not found")));
    }
    Ok(Json(versions))
}

/// One version: `vN`, `N` or `latest`.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/versions/{version}", tag = "jobs",
    responses((status = 200, body = JobVersion), (status = 404, body = ErrorBody)))]
pub async fn version(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<JobVersion>, ApiError> {
    caller.require(Access::Read)?;
    let number = match version.as_str() {
        "latest" => None,
        v => Some(
            v.strip_prefix('v')
                .unwrap_or(v)
                .parse::<u32>()
                .map_err(|_| ApiError::bad_request("the version must be latest, vN or N"))?,
        ),
    };
    check_job_name(&name).map_err(ApiError::bad_request)?;
    Ok(Json(state.store.get_job_version(&name, number).await?))
}

/// At enqueue: pins a spec's job reference to its version (`name:vN`), merges the run config
/// over the job's defaults, and checks it against the job's input schema (422 naming every
/// violation by path).
/// Returns the job's kind, when the spec names a job.
pub async fn resolve(
    state: &AppState,
    spec: &mut LaunchSpec,
) -> Result<Option<liftoff_types::JobKind>, ApiError> {
    let Some(reference) = spec.job.clone() else {
        return Ok(None);
    };
    let r: JobRef = reference
        .parse()
        .map_err(|e: String| ApiError::invalid(vec![field("job", e)]))?;
    let job = state
        .store
        .get_job_version(&r.name, r.version)
        .await
        .map_err(|e| ApiError::invalid(vec![field("job", e.to_string())]))?;
    let mut config = job.spec.default_config.clone();
    deep_merge(&mut config, &spec.overrides.run_config);
    if let Some(schema) = &job.spec.input_schema {
        let problems = check_schema(
            schema,
            &serde_json::Value::Object(config.clone()),
            "overrides.run_config",
        );
        if !problems.is_empty() {
            return Err(ApiError::invalid(
                problems.into_iter().map(|(f, m)| field(&f, m)).collect(),
            ));
        }
    }
    spec.overrides.run_config = config;
    spec.job = Some(job.reference());
    Ok(Some(job.spec.kind))
}

fn field(name: &str, message: String) -> FieldError {
    FieldError {
        field: name.to_string(),
        message,
        rule: None,
    }
}
