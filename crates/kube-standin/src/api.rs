//! The HTTP side: the real API's paths for what liftoff's runner and everyday clients
//! (kubectl, the Python client) use: discovery, namespaced create / get / list / watch /
//! delete of pods, jobs, secrets and events, and `pods/{name}/log`. Errors are `Status`
//! objects with the API's reasons and codes.

use crate::store::{Fields, Kind, Selector};
use crate::Shared;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::discovery::{
    batch_resources, core_resources, core_versions, groups, jobset_resources, version,
};
use crate::patch::patch_core;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api", get(core_versions))
        .route("/api/v1", get(core_resources))
        .route("/apis", get(groups))
        .route("/apis/batch/v1", get(batch_resources))
        .route("/api/v1/{plural}", get(all_namespaces))
        .route("/apis/batch/v1/jobs", get(all_jobs))
        .route(
            "/api/v1/namespaces/{ns}/{plural}",
            get(list_core).post(create_core),
        )
        .route(
            "/api/v1/namespaces/{ns}/{plural}/{name}",
            get(get_core).delete(delete_core).patch(patch_core),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(log))
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs",
            get(list_jobs).post(create_job),
        )
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
            get(get_job).delete(delete_job),
        )
        .route("/apis/jobset.x-k8s.io/v1alpha2", get(jobset_resources))
        .route(
            "/apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets",
            get(list_jobsets).post(create_jobset),
        )
        .route(
            "/apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets/{name}",
            get(get_jobset).delete(delete_jobset),
        )
        .route(
            "/standin/namespaces/{ns}/pods/{name}/preempt",
            post(preempt),
        )
        .route("/standin/requests", get(requests))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it (the Python client sends
/// `True`).
fn truth(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// A `Status` error, as the API sends it.
pub fn status(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

pub(crate) fn not_found(kind: Kind, name: &str) -> Response {
    status(
        404,
        "NotFound",
        format!("{}.{} \"{name}\" not found", kind.plural(), group(kind)),
    )
}

fn group(kind: Kind) -> &'static str {
    match kind {
        Kind::Job => "batch",
        Kind::JobSet => "jobset.x-k8s.io",
        _ => "",
    }
    .trim_end_matches('.')
}

/// Bearer-token auth (when the stand-in was given a token) and the request count by verb.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.config.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return status(401, "Unauthorized", "Unauthorized");
        }
    }
    if !request.uri().path().starts_with("/standin/") {
        let verb = verb(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let mut counts = shared.lock_requests();
        // Bounded: any path reaches here, routed or not.
        if counts.len() < 256 || counts.contains_key(&verb) {
            *counts.entry(verb).or_default() += 1;
        }
    }
    next.run(request).await
}

/// `VERB RESOURCE` as the API's audit log names a request (`watch pods`, `get pods/log`).
fn verb(method: &Method, path: &str, query: Option<&str>) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let at = parts.iter().position(|p| *p == "namespaces");
    let (resource, named) = match at {
        Some(i) if parts.len() > i + 2 => {
            let sub = parts
                .get(i + 4)
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            (format!("{}{sub}", parts[i + 2]), parts.len() > i + 3)
        }
        _ => (parts.last().unwrap_or(&"").to_string(), false),
    };
    let watching = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.strip_prefix("watch=").is_some_and(truth))
    });
    let verb = match *method {
        Method::POST => "create",
        Method::DELETE => "delete",
        Method::PATCH => "patch",
        Method::PUT => "update",
        _ if watching => "watch",
        _ if named => "get",
        _ => "list",
    };
    format!("{verb} {resource}")
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!(*shared.lock_requests())).into_response()
}

async fn list_jobsets(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    params: Params,
) -> Response {
    list_or_watch(shared, Kind::JobSet, Some(ns), params.0).await
}

async fn create_jobset(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    create(&shared, Kind::JobSet, &ns, &body)
}

async fn get_jobset(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    get_one(&shared, Kind::JobSet, &ns, &name)
}

async fn delete_jobset(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> Response {
    delete(&shared, Kind::JobSet, &ns, &name, &params.0, &body)
}

/// The query of a list or watch.
type Params = Query<HashMap<String, String>>;

pub(crate) fn kind_of(plural: &str) -> Result<Kind, Box<Response>> {
    match Kind::from_plural(plural) {
        Some(Kind::Job | Kind::JobSet) | None => Err(Box::new(status(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({plural})"),
        ))),
        Some(kind) => Ok(kind),
    }
}

async fn all_namespaces(
    State(shared): State<Arc<Shared>>,
    Path(plural): Path<String>,
    params: Params,
) -> Response {
    if plural == "namespaces" {
        let names: std::collections::BTreeSet<String> = [Kind::Pod, Kind::Job, Kind::Secret]
            .iter()
            .flat_map(|k| shared.lock().names(*k))
            .map(|(ns, _)| ns)
            .chain(["default".to_string()])
            .collect();
        let items: Vec<Value> = names
            .into_iter()
            .map(|n| json!({"metadata": {"name": n}, "status": {"phase": "Active"}}))
            .collect();
        let version = shared.lock().version();
        return axum::Json(json!({
            "kind": "NamespaceList", "apiVersion": "v1",
            "metadata": {"resourceVersion": version.to_string()}, "items": items,
        }))
        .into_response();
    }
    match kind_of(&plural) {
        Ok(kind) => list_or_watch(shared, kind, None, params.0).await,
        Err(e) => *e,
    }
}

async fn all_jobs(State(shared): State<Arc<Shared>>, params: Params) -> Response {
    list_or_watch(shared, Kind::Job, None, params.0).await
}

async fn list_core(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural)): Path<(String, String)>,
    params: Params,
) -> Response {
    match kind_of(&plural) {
        Ok(kind) => list_or_watch(shared, kind, Some(ns), params.0).await,
        Err(e) => *e,
    }
}

async fn list_jobs(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    params: Params,
) -> Response {
    list_or_watch(shared, Kind::Job, Some(ns), params.0).await
}

struct Filter {
    labels: Selector,
    fields: Fields,
}

impl Filter {
    fn of(params: &HashMap<String, String>) -> Result<Filter, Box<Response>> {
        let labels = Selector::parse(params.get("labelSelector").map_or("", |s| s))
            .map_err(|e| Box::new(status(400, "BadRequest", e)))?;
        let fields = Fields::parse(params.get("fieldSelector").map_or("", |s| s))
            .map_err(|e| Box::new(status(400, "BadRequest", e)))?;
        Ok(Filter { labels, fields })
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&object["metadata"]["labels"]) && self.fields.matches(object)
    }
}

async fn list_or_watch(
    shared: Arc<Shared>,
    kind: Kind,
    ns: Option<String>,
    params: HashMap<String, String>,
) -> Response {
    let filter = match Filter::of(&params) {
        Ok(f) => f,
        Err(e) => return *e,
    };
    let watching = params.get("watch").is_some_and(|v| truth(v));
    if watching {
        let from = match params.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(v) => match v.parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    return status(400, "BadRequest", format!("invalid resourceVersion {v:?}"))
                }
            },
        };
        let bookmarks = params.get("allowWatchBookmarks").is_some_and(|v| truth(v));
        let timeout = params
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(|t| Duration::from_secs(t.min(86_400)))
            .unwrap_or(Duration::from_secs(1800));
        return watch(shared, kind, ns, filter, from, bookmarks, timeout);
    }
    let store = shared.lock();
    let items: Vec<Value> = store
        .list(kind, ns.as_deref())
        .filter(|o| filter.matches(o))
        .cloned()
        .collect();
    axum::Json(json!({
        "kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": store.version().to_string()},
        "items": items,
    }))
    .into_response()
}

/// A chunked stream of newline-delimited watch events: the objects there now first (when no
/// version was given), then every change after the version, bookmarks when quiet, and a 410
/// `ERROR` event when the version is no longer kept.
fn watch(
    shared: Arc<Shared>,
    kind: Kind,
    ns: Option<String>,
    filter: Filter,
    from: Option<u64>,
    bookmarks: bool,
    timeout: Duration,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let bookmark_every = shared.config.bookmark_every;
    tokio::spawn(async move {
        let line = |what: &str, object: &Value| {
            let mut text =
                serde_json::to_vec(&json!({"type": what, "object": object})).unwrap_or_default();
            text.push(b'\n');
            Bytes::from(text)
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ended = shared.watches.subscribe();
        let (mut at, mut tick) = {
            let store = shared.lock();
            (store.version(), store.tick.subscribe())
        };
        match from {
            None => {
                let now: Vec<Bytes> = shared
                    .lock()
                    .list(kind, ns.as_deref())
                    .filter(|o| filter.matches(o))
                    .map(|o| line("ADDED", o))
                    .collect();
                for l in now {
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
            }
            Some(v) => at = v,
        }
        loop {
            let changes = shared.lock().changes_after(at);
            let Some(changes) = changes else {
                let oldest = shared.lock().oldest();
                let gone = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {at} ({oldest})"),
                    "reason": "Expired", "code": 410,
                });
                let _ = tx.send(line("ERROR", &gone)).await;
                return;
            };
            for c in changes {
                at = c.version;
                let ours = c.kind == kind && ns.as_ref().is_none_or(|n| *n == c.namespace);
                if ours
                    && filter.matches(&c.object)
                    && tx.send(line(c.what, &c.object)).await.is_err()
                {
                    return;
                }
            }
            tokio::select! {
                changed = tick.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(bookmark_every) => if bookmarks {
                    let mark = json!({
                        "kind": kind.name(), "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": at.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "false"}},
                    });
                    if tx.send(line("BOOKMARK", &mark)).await.is_err() {
                        return;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = ended.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    streamed(rx, "application/json")
}

fn streamed(rx: mpsc::Receiver<Bytes>, content_type: &'static str) -> Response {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| status(500, "InternalError", "response"))
}

async fn get_core(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Response {
    match kind_of(&plural) {
        Ok(kind) => get_one(&shared, kind, &ns, &name),
        Err(e) => *e,
    }
}

async fn get_job(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    get_one(&shared, Kind::Job, &ns, &name)
}

fn get_one(shared: &Shared, kind: Kind, ns: &str, name: &str) -> Response {
    match shared.lock().get(kind, ns, name) {
        Some(o) => axum::Json(o.clone()).into_response(),
        None => not_found(kind, name),
    }
}

async fn create_core(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match kind_of(&plural) {
        Ok(Kind::Event) => status(405, "MethodNotAllowed", "events are the stand-in's own"),
        Ok(kind) => create(&shared, kind, &ns, &body),
        Err(e) => *e,
    }
}

async fn create_job(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    create(&shared, Kind::Job, &ns, &body)
}

/// Letters the API uses for `generateName` suffixes (no vowels, no look-alikes).
const SUFFIX: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..5)
        .map(|_| SUFFIX[rng.random_range(0..SUFFIX.len())] as char)
        .collect()
}

fn create(shared: &Shared, kind: Kind, ns: &str, body: &[u8]) -> Response {
    let mut object: Value = match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Value::Object(o),
        Ok(_) => return status(400, "BadRequest", "the body must be an object"),
        Err(e) => {
            return status(
                400,
                "BadRequest",
                format!("the body of the request was in an unknown format: {e}"),
            )
        }
    };
    for (field, want) in [("kind", kind.name()), ("apiVersion", kind.api_version())] {
        // Missing is taken from the path, as the API server does (the Python client sends
        // none unless set).
        match object.get(field).and_then(Value::as_str) {
            None | Some("") => {}
            Some(got) if got == want => {}
            got => {
                return status(
                    400,
                    "BadRequest",
                    format!("{field} {got:?} does not match the expected {want:?}"),
                )
            }
        }
    }
    if let Some(other) = object["metadata"]["namespace"].as_str() {
        if other != ns {
            return status(
                400,
                "BadRequest",
                format!("the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"),
            );
        }
    }
    if let Err(message) = crate::validate::object(kind, &object) {
        return status(422, "Invalid", message);
    }
    let mut store = shared.lock();
    let name = match (
        object["metadata"]["name"].as_str(),
        object["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(g)) if !g.is_empty() => loop {
            let n = format!("{g}{}", suffix());
            if store.get(kind, ns, &n).is_none() {
                break n;
            }
        },
        _ => {
            return status(
                422,
                "Invalid",
                format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    kind.name()
                ),
            )
        }
    };
    if store.get(kind, ns, &name).is_some() {
        return status(
            409,
            "AlreadyExists",
            format!(
                "{}.{} \"{name}\" already exists",
                kind.plural(),
                group(kind)
            ),
        );
    }
    let meta = &mut object["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(crate::uid());
    meta["creationTimestamp"] = json!(crate::now());
    match kind {
        Kind::Pod => object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"}),
        Kind::Job | Kind::JobSet => object["status"] = json!({}),
        Kind::Secret => {
            // `stringData` is write-only: merged into `data`, base64-encoded.
            if let Some(Value::Object(plain)) =
                object.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                use base64::Engine;
                for (k, v) in plain {
                    let text = v.as_str().unwrap_or_default().to_string();
                    object["data"][k] =
                        json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
            if object.get("type").is_none() {
                object["type"] = json!("Opaque");
            }
        }
        Kind::Event => {}
    }
    let stored = store.put(kind, object);
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

async fn delete_core(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    params: Params,
    body: Bytes,
) -> Response {
    match kind_of(&plural) {
        Ok(kind) => delete(&shared, kind, &ns, &name, &params.0, &body),
        Err(e) => *e,
    }
}

async fn delete_job(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> Response {
    delete(&shared, Kind::Job, &ns, &name, &params.0, &body)
}

/// A delete: pods end gracefully (the node stops their container, then the pod goes);
/// a Job without a propagation policy orphans its pods, as batch/v1's default does.
fn delete(
    shared: &Shared,
    kind: Kind,
    ns: &str,
    name: &str,
    params: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    let options: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return status(400, "BadRequest", "DeleteOptions must be a JSON object"),
        }
    };
    let policy = options["propagationPolicy"]
        .as_str()
        .or(params.get("propagationPolicy").map(String::as_str))
        .map(str::to_string);
    let grace = options["gracePeriodSeconds"].as_i64().or(params
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok()));
    match policy.as_deref() {
        None | Some("Orphan" | "Background" | "Foreground") => {}
        Some(other) => {
            return status(
                422,
                "Invalid",
                format!("propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""),
            )
        }
    }
    let mut store = shared.lock();
    let Some(object) = store.get(kind, ns, name).cloned() else {
        return not_found(kind, name);
    };
    match kind {
        Kind::Pod => {
            let grace = grace
                .or(object["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            let now = crate::now();
            let marked = store.update(kind, ns, name, |p| {
                if p["metadata"]["deletionTimestamp"].is_null() {
                    p["metadata"]["deletionTimestamp"] = json!(now);
                    p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                }
            });
            drop(store);
            shared.node.notify_one();
            axum::Json(marked.unwrap_or(object)).into_response()
        }
        _ => {
            let uid = object["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            store.remove(kind, ns, name);
            let cascade = !matches!(policy.as_deref(), None | Some("Orphan"));
            // The garbage collector deletes dependents with their own grace, as a real one
            // does: a Job delete's gracePeriodSeconds does not reach its pods.
            crate::node::dependents(&mut store, ns, &uid, cascade, None);
            drop(store);
            shared.node.notify_one();
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": group(kind), "kind": kind.plural(),
                    "uid": uid},
            }))
            .into_response()
        }
    }
}

/// `pods/{name}/log`: the container's log from the engine, followed while it runs.
async fn log(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    params: Params,
) -> Response {
    let Some(pod) = shared.lock().get(Kind::Pod, &ns, &name).cloned() else {
        return not_found(Kind::Pod, &name);
    };
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match params.get("container") {
        Some(c) if containers.contains(&c.as_str()) => c.clone(),
        Some(c) => {
            return status(
                400,
                "BadRequest",
                format!("container {c} is not valid for pod {name}"),
            )
        }
        None if containers.len() == 1 => containers[0].to_string(),
        None => {
            return status(
                400,
                "BadRequest",
                format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                ),
            )
        }
    };
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let state = statuses.iter().find(|s| s["name"] == container.as_str());
    let id = state
        .and_then(|s| s["containerID"].as_str())
        .and_then(|id| id.strip_prefix("docker://"))
        .map(str::to_string);
    let Some(id) = id else {
        let reason = state
            .and_then(|s| s["state"]["waiting"]["reason"].as_str())
            .unwrap_or("ContainerCreating");
        return status(
            400,
            "BadRequest",
            format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"),
        );
    };
    let flag = |k: &str| params.get(k).is_some_and(|v| truth(v));
    let options = bollard::query_parameters::LogsOptions {
        follow: flag("follow"),
        stdout: true,
        stderr: true,
        timestamps: flag("timestamps"),
        tail: params
            .get("tailLines")
            .cloned()
            .unwrap_or_else(|| "all".into()),
        since: params
            .get("sinceSeconds")
            .and_then(|s| s.parse::<i32>().ok())
            .map(|s| (chrono::Utc::now().timestamp() as i32).saturating_sub(s))
            .unwrap_or(0),
        ..Default::default()
    };
    let docker = shared.docker.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut stream = docker.logs(&id, Some(options));
        while let Some(frame) = stream.next().await {
            let Ok(frame) = frame else { return };
            if tx.send(frame.into_bytes()).await.is_err() {
                return;
            }
        }
    });
    streamed(rx, "text/plain")
}

/// A test's way to preempt a pod as the scheduler would: the `DisruptionTarget` condition,
/// then its container stopped.
async fn preempt(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let now = crate::now();
    let done = shared.lock().update(Kind::Pod, &ns, &name, |pod| {
        let conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c["type"] != "DisruptionTarget")
            .collect();
        conditions.push(json!({
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": "standin-node: preempting to accommodate a higher priority pod",
            "lastTransitionTime": now,
        }));
        pod["status"]["conditions"] = json!(conditions);
    });
    match done {
        Some(pod) => {
            shared.preempted(&ns, &name);
            axum::Json(pod).into_response()
        }
        None => not_found(Kind::Pod, &name),
    }
}
