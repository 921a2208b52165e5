//! Queue routes (admins manage queues; everyone reads them) and enqueue (users).

use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, Path, Query};
use crate::state::AppState;
use crate::wake::queue_key;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use liftoff_store::NewItem;
use liftoff_types::api::{ErrorBody, FieldError};
use liftoff_types::{now_ms, template, Item, ItemKind, LaunchSpec, NewQueue, Queue, ResourceType};
use serde::Deserialize;

/// Create a queue.
#[utoipa::path(post, path = "/api/v1/queues", tag = "queues", request_body = NewQueue,
    responses((status = 201, body = Queue), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Body(queue): Body<NewQueue>,
) -> Result<(StatusCode, Json<Queue>), ApiError> {
    caller.require(Access::Admin)?;
    ApiError::check(queue.validate())?;
    ApiError::check(resource_problems(
        queue.resource,
        &queue.config,
        "config",
        true,
    ))?;
    let queue = state.store.create_queue(queue, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(queue)))
}

/// List queues.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues", responses((status = 200, body = Vec<Queue>)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<Queue>>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(state.store.list_queues().await?))
}

/// Show a queue with its item counts by state.
#[utoipa::path(get, path = "/api/v1/queues/{name}", tag = "queues",
    responses((status = 200, body = Queue), (status = 404, body = ErrorBody)))]
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Queue>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(state.store.get_queue(&name, true).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Delete even with live items (they are cancelled; running runs are asked to stop).
    #[serde(default)]
    force: bool,
}

/// Delete a queue: only when it has no live items, unless `force`.
#[utoipa::path(delete, path = "/api/v1/queues/{name}", tag = "queues", params(DeleteParams),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    caller.require(Access::Admin)?;
    state
        .store
        .delete_queue(&name, params.force, now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enqueue a launch spec. The queue's template variables are filled from the spec's
/// `template_variables` (and defaults), checked, and substituted into the queue's config.
#[utoipa::path(post, path = "/api/v1/queues/{name}/items", tag = "items", request_body = LaunchSpec,
    responses((status = 201, body = Item), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn enqueue(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Body(raw): Body<serde_json::Value>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    caller.require(Access::Submit)?;
    ApiError::check(liftoff_types::spec::unknown_keys(&raw))?;
    // Read as axum reads a body, so a wrong type is a 422 naming its path.
    let bytes = serde_json::to_vec(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Json(spec) = Json::<LaunchSpec>::from_bytes(&bytes)?;
    let item = new_item(&state, &name, spec, ItemKind::Run).await?;
    let item = state.store.enqueue(item, now_ms()).await?;
    state.wakers.wake_one(&queue_key(&item.queue), item.kind);
    Ok((StatusCode::CREATED, Json(item)))
}

/// A spec checked against its queue, its template variables resolved and substituted:
/// what the store takes (an enqueue, or a sweep's run).
pub async fn new_item(
    state: &AppState,
    name: &str,
    mut spec: LaunchSpec,
    kind: ItemKind,
) -> Result<NewItem, ApiError> {
    ApiError::check(spec.validate())?;
    let job_kind = super::jobs::resolve(state, &mut spec).await?;
    let queue = state.store.get_queue(name, false).await?;
    check_resource(&spec, &queue)?;
    if let Some(own) = &spec.retry {
        let allowed = liftoff_types::RetryPolicy::effective(
            queue.retry.as_ref(),
            queue.requeue_lost,
            queue.max_attempts,
        );
        if let Err(problems) = own.within(&allowed) {
            ApiError::check(problems)?;
        }
    }
    check_image(&spec, job_kind, &queue)?;
    let values = template::resolve(&queue.template_variables, &spec.template_variables).map_err(
        |errors| {
            ApiError::invalid(
                errors
                    .into_iter()
                    .map(|e| FieldError {
                        field: format!("template_variables.{}", e.variable),
                        message: e.message,
                        rule: Some(e.rule),
                    })
                    .collect(),
            )
        },
    )?;
    let mut resource_args = template::substitute(&queue.config, &values);
    if let Some(own) = spec_resource_args(&spec, queue.resource) {
        // Which cluster an agent sends its Ray credentials and the run's token to is the
        // admin's choice (the queue's config), never a launcher's.
        if queue.resource == ResourceType::Ray && own.get("address").is_some() {
            ApiError::check(vec![(
                "resource_args.ray.address".into(),
                format!(
                    "the cluster is the queue's to name (queue {:?}'s config), not a launch's",
                    queue.name
                ),
            )])?;
        }
        merge(&mut resource_args, own, queue.resource);
    }
    ApiError::check(resource_problems(
        queue.resource,
        &resource_args,
        "resource_args",
        false,
    ))?;
    Ok(NewItem {
        queue: queue.name.clone(),
        priority: spec.priority.unwrap_or_default(),
        resource_args,
        spec,
        kind,
    })
}

/// The spec's own resource args for a resource, under its name or W&B's (`local-container`).
fn spec_resource_args(spec: &LaunchSpec, resource: ResourceType) -> Option<&serde_json::Value> {
    spec.resource_args
        .iter()
        .find(|(key, _)| key.parse::<ResourceType>().ok() == Some(resource))
        .map(|(_, v)| v)
}

/// The spec's resource args under the queue's: they add what the queue's config leaves
/// unset, never change what it sets (admins constrain users through the template).
/// For containers a key counts as set under any of its spellings (`m`, `--memory`).
fn merge(base: &mut serde_json::Value, under: &serde_json::Value, resource: ResourceType) {
    if let (serde_json::Value::Object(b), serde_json::Value::Object(u)) = (base, under) {
        for (k, v) in u {
            if let Some(slot) = b.get_mut(k) {
                merge(slot, v, resource);
                continue;
            }
            let spelled_otherwise = resource == ResourceType::Container
                && b.keys()
                    .any(|set| liftoff_types::container::same_flag(set, k));
            if !spelled_otherwise {
                b.insert(k.clone(), v.clone());
            }
        }
    }
}

/// What a backend would refuse in its resource args, checked where they enter: a queue's
/// config (`templated`: placeholders still unfilled) and each enqueued item.
fn resource_problems(
    resource: ResourceType,
    args: &serde_json::Value,
    at: &str,
    templated: bool,
) -> Vec<(String, String)> {
    match resource {
        ResourceType::Container => liftoff_types::container::check(args, templated)
            .into_iter()
            .map(|p| {
                let field = match p.field.strip_prefix("resource_args") {
                    Some(rest) => format!("{at}{rest}"),
                    None => p.field,
                };
                (field, p.message)
            })
            .collect(),
        ResourceType::Slurm => liftoff_types::slurm::check_keys(args, at),
        ResourceType::Ray => liftoff_types::ray::check(args, at, templated),
        ResourceType::Kubernetes => liftoff_types::kubernetes::check(args, at),
        _ => Vec::new(),
    }
}

/// An image (an image job, or `docker.docker_image`) runs only on a queue whose resource
/// runs images: refused here, not by an agent later.
fn check_image(
    spec: &LaunchSpec,
    job: Option<liftoff_types::JobKind>,
    queue: &Queue,
) -> Result<(), ApiError> {
    if queue.resource.runs_images() {
        return Ok(());
    }
    let field = if job == Some(liftoff_types::JobKind::Image) {
        "job"
    } else if spec
        .docker
        .as_ref()
        .is_some_and(|d| d.docker_image.is_some())
    {
        "docker.docker_image"
    } else {
        return Ok(());
    };
    ApiError::check(vec![(
        field.into(),
        format!(
            "runs an image, and queue {:?} runs {}, which runs no images: use a container or kubernetes queue",
            queue.name, queue.resource
        ),
    )])
}

/// A spec that names a resource must name its queue's.
fn check_resource(spec: &LaunchSpec, queue: &Queue) -> Result<(), ApiError> {
    let Some(resource) = &spec.resource else {
        return Ok(());
    };
    let problem = match resource.parse::<ResourceType>() {
        Ok(r) if r == queue.resource => return Ok(()),
        Ok(r) => format!("is {r}, but queue {:?} runs {}", queue.name, queue.resource),
        Err(e) => e,
    };
    ApiError::check(vec![("resource".into(), problem)])
}

#[cfg(test)]
mod tests {
    use super::merge;
    use liftoff_types::ResourceType;
    use serde_json::json;

    #[test]
    fn a_users_resource_args_add_to_the_queues_never_change_them() {
        let mut args = json!({"gpus": false, "memory": "1g", "env": ["A=1"]});
        let user =
            json!({"--gpus": "all", "m": "8g", "memory": "9g", "shm-size": "1g", "env": ["B=2"]});
        merge(&mut args, &user, ResourceType::Container);
        assert_eq!(
            args,
            json!({"gpus": false, "memory": "1g", "env": ["A=1"], "shm-size": "1g"})
        );
    }
}
