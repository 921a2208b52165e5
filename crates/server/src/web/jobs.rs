//! `/jobs` and `/jobs/NAME`: a job's versions with their source, entrypoint and input
//! schema, and a form that launches a version with config values, checked by the API
//! against the job's schema (each problem shown beside its field).

use super::session::{check_form, Viewer};
use super::{ago, pretty};
use crate::error::ApiError;
use crate::extract::{Body as ApiBody, Path as ApiPath};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use liftoff_types::{JobVersion, LaunchSpec};
use maud::{html, Markup};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where a config value's problems are reported by the API.
const CONFIG_PATH: &str = "overrides.run_config";

pub async fn list_page(viewer: Viewer, State(state): State<AppState>) -> Response {
    super::page(&state, &viewer, "Jobs", "/jobs", html! {}).await
}

pub async fn list_live(state: &AppState) -> Result<Markup, ApiError> {
    let versions = state.store.list_job_versions(None).await?;
    let mut latest: BTreeMap<&str, &JobVersion> = BTreeMap::new();
    for v in &versions {
        let e = latest.entry(v.name.as_str()).or_insert(v);
        if v.version > e.version {
            *e = v;
        }
    }
    Ok(html! {
        h1 { "Jobs" }
        @if latest.is_empty() {
            p.empty { "No jobs yet: " code { "liftoff job create NAME --code DIR -- python train.py" } }
        } @else {
            table.jobs {
                thead { tr { th { "Job" } th.num { "Latest" } th { "Kind" } th { "Entrypoint" } th { "Made" } } }
                tbody { @for (name, v) in &latest {
                    tr {
                        td { a href={ "/jobs/" (name) } { (name) } }
                        td.num { "v" (v.version) }
                        td { (v.spec.kind) }
                        td { code { (v.spec.entrypoint.join(" ")) } }
                        td { (ago(v.created_at_ms)) }
                    }
                } }
            }
        }
    })
}

pub async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    let form = match launch_form(&state, &viewer, &name, &Filled::default()).await {
        Ok(form) => form,
        Err(e) => return super::error_page(e),
    };
    let rest = html! { (schema_part(&state, &name).await) (form) };
    let path = format!("/jobs/{}", super::session::encode(&name));
    super::page(&state, &viewer, &format!("Job {name}"), &path, rest).await
}

pub async fn live(state: &AppState, name: &str) -> Result<Markup, ApiError> {
    let mut versions = state.store.list_job_versions(Some(name)).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no job named {name:?}")));
    }
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let latest = &versions[0];
    Ok(html! {
        h1 { "Job " (name) }
        p.facts { "latest " strong { "v" (latest.version) } " · " (latest.spec.kind) " · entrypoint " code { (latest.spec.entrypoint.join(" ")) } }
        table.versions {
            thead { tr { th.num { "Version" } th { "Source" } th { "Entrypoint" } th { "Made" } } }
            tbody { @for v in &versions {
                tr {
                    td.num { "v" (v.version) }
                    td { code { (source(v)) } }
                    td { code { (v.spec.entrypoint.join(" ")) } }
                    td { (ago(v.created_at_ms)) }
                }
            } }
        }
    })
}

/// What a reader may unfold: outside the live part, so it stays open.
async fn schema_part(state: &AppState, name: &str) -> Markup {
    let Ok(latest) = state.store.get_job_version(name, None).await else {
        return html! {};
    };
    html! {
        @if let Some(schema) = &latest.spec.input_schema {
            details { summary { "Input schema (v" (latest.version) ")" } pre.json { (pretty(schema)) } }
        }
        @if !latest.spec.default_config.is_empty() {
            details { summary { "Default config (v" (latest.version) ")" } pre.json { (pretty(&Value::Object(latest.spec.default_config.clone()))) } }
        }
    }
}

fn source(v: &JobVersion) -> String {
    let s = &v.spec.source;
    match (&s.digest, &s.repo, &s.commit, &s.image) {
        (Some(d), _, _, _) => format!("code {d}"),
        (_, Some(r), Some(c), _) => format!("git {r} @ {c}"),
        (_, _, _, Some(i)) => format!("image {i}"),
        _ => String::new(),
    }
}

/// What the form held when it was sent back, with the API's problems by field.
#[derive(Default)]
struct Filled {
    queue: String,
    version: String,
    values: BTreeMap<String, String>,
    problems: BTreeMap<String, Vec<String>>,
    general: Vec<String>,
}

/// The launch form: the queue, the version, and a field per property of the latest
/// version's input schema (or of its default config when it has none).
async fn launch_form(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
    filled: &Filled,
) -> Result<Markup, ApiError> {
    if !viewer.may_submit() {
        return Ok(html! {});
    }
    let mut versions = state.store.list_job_versions(Some(name)).await?;
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let Some(latest) = versions.first() else {
        return Err(ApiError::not_found(format!("no job named {name:?}")));
    };
    let queues = state.store.list_queues().await?;
    let fields = fields_of(latest);
    Ok(html! {
        section.launch {
            h2 { "Launch" }
            form #launch method="post" action={ "/jobs/" (name) } novalidate {
                (super::csrf(viewer))
                @for g in &filled.general { p.error role="alert" { (g) } }
                label for="queue" { "Queue" }
                select #queue name="queue" {
                    @for q in &queues {
                        option value=(q.name) selected[q.name == filled.queue] { (q.name) " (" (q.resource) ")" }
                    }
                }
                label for="version" { "Version" }
                select #version name="version" {
                    @for v in &versions {
                        option value=(v.version) selected[v.version.to_string() == filled.version] { "v" (v.version) }
                    }
                }
                fieldset {
                    legend { "Config (empty: the job's default)" }
                    @for f in &fields {
                        @let key = &f.key;
                        @let id = format!("cfg-{key}");
                        @let path = format!("{CONFIG_PATH}.{key}");
                        @let errors = filled.problems.get(&path);
                        @let typed = filled.values.get(key).map_or("", String::as_str);
                        div.field.invalid[errors.is_some()] {
                            label for=(id) { (key) " " small { (f.hint) } }
                            @if let Some(d) = &f.description { p.hint { (d) } }
                            @if f.allowed.is_empty() {
                                input id=(id) name={ "cfg." (key) } value=(typed)
                                    placeholder=(f.default) aria-invalid=[errors.map(|_| "true")];
                            } @else {
                                select id=(id) name={ "cfg." (key) } aria-invalid=[errors.map(|_| "true")] {
                                    option value="" selected[typed.is_empty()] { "(default" @if !f.default.is_empty() { ": " (f.default) } ")" }
                                    @for v in &f.allowed {
                                        option value=(v) selected[typed == v.as_str()] { (v) }
                                    }
                                }
                            }
                            @if let Some(errors) = errors {
                                @for e in errors { span.error role="alert" data-field=(path) { (e) } }
                            }
                        }
                    }
                }
                button type="submit" { "Launch" }
            }
        }
    })
}

/// One config key of the launch form.
struct Field {
    key: String,
    /// Its type, bounds and whether it is required.
    hint: String,
    /// The schema's default, else the job's default config value, as text.
    default: String,
    /// The schema's `enum`, as the texts a form sends (a string as itself, else JSON).
    allowed: Vec<String>,
    description: Option<String>,
}

/// A field per config key: the schema's properties, else the default config's keys.
fn fields_of(v: &JobVersion) -> Vec<Field> {
    let mut out = Vec::new();
    let props = v
        .spec
        .input_schema
        .as_ref()
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let required: Vec<&str> = v
        .spec
        .input_schema
        .as_ref()
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let text = |d: &Value| match d {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let default_text = |k: &str, p: Option<&Value>| {
        p.and_then(|p| p.get("default"))
            .or_else(|| v.spec.default_config.get(k))
            .map_or(String::new(), text)
    };
    match props {
        Some(props) => {
            for (k, p) in props {
                let mut hint = Vec::new();
                if let Some(t) = p.get("type").and_then(Value::as_str) {
                    hint.push(t.to_string());
                }
                if let Some(min) = p.get("minimum") {
                    hint.push(format!("≥ {min}"));
                }
                if let Some(max) = p.get("maximum") {
                    hint.push(format!("≤ {max}"));
                }
                let allowed: Vec<String> = p
                    .get("enum")
                    .and_then(Value::as_array)
                    .map(|e| e.iter().map(text).collect())
                    .unwrap_or_default();
                if required.contains(&k.as_str()) {
                    hint.push("required".into());
                }
                out.push(Field {
                    key: k.clone(),
                    hint: hint.join(", "),
                    default: default_text(k, Some(p)),
                    allowed,
                    description: p
                        .get("description")
                        .and_then(Value::as_str)
                        .map(String::from),
                });
            }
        }
        None => {
            for (k, d) in &v.spec.default_config {
                let kind = match d {
                    Value::Number(_) => "number",
                    Value::Bool(_) => "boolean",
                    Value::String(_) => "string",
                    _ => "JSON",
                };
                out.push(Field {
                    key: k.clone(),
                    hint: kind.into(),
                    default: default_text(k, None),
                    allowed: Vec::new(),
                    description: None,
                });
            }
        }
    }
    out
}

/// `POST /jobs/NAME`: enqueue the chosen version with the form's config, through the API.
pub async fn launch(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| {
        form.iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if let Err(e) = check_form(&headers, &viewer, &get("csrf")) {
        return super::error_page(e);
    }
    let mut filled = Filled {
        queue: get("queue"),
        version: get("version"),
        ..Filled::default()
    };
    let schema = state
        .store
        .get_job_version(&name, filled.version.parse().ok())
        .await
        .ok()
        .and_then(|v| v.spec.input_schema);
    let mut config = Map::new();
    for (k, v) in &form {
        let Some(key) = k.strip_prefix("cfg.") else {
            continue;
        };
        filled.values.insert(key.to_string(), v.clone());
        if v.trim().is_empty() {
            continue;
        }
        config.insert(key.to_string(), typed(v, schema.as_ref(), key));
    }
    let mut spec = LaunchSpec {
        job: Some(format!("{name}:v{}", filled.version)),
        ..LaunchSpec::default()
    };
    spec.overrides.run_config = config;
    let body = serde_json::to_value(&spec).unwrap_or_default();
    let result = crate::api::queues::enqueue(
        viewer.caller(),
        State(state.clone()),
        ApiPath(filled.queue.clone()),
        ApiBody(body),
    )
    .await;
    match result {
        Ok((_, axum::Json(item))) => Redirect::to(&format!("/items/{}", item.id)).into_response(),
        Err(e)
            if e.status == StatusCode::UNPROCESSABLE_ENTITY
                || e.status == StatusCode::NOT_FOUND =>
        {
            for f in &e.fields {
                if f.field.starts_with(CONFIG_PATH) {
                    // A nested problem shows beside its top-level field.
                    let top = f.field[CONFIG_PATH.len()..]
                        .trim_start_matches('.')
                        .split('.')
                        .next()
                        .unwrap_or("");
                    let at = if top.is_empty() {
                        CONFIG_PATH.to_string()
                    } else {
                        format!("{CONFIG_PATH}.{top}")
                    };
                    let text = if f.field == at {
                        f.message.clone()
                    } else {
                        format!("{}: {}", f.field, f.message)
                    };
                    filled.problems.entry(at).or_default().push(text);
                } else {
                    filled.general.push(format!("{}: {}", f.field, f.message));
                }
            }
            if e.fields.is_empty() {
                filled.general.push(e.message.clone());
            }
            let form = match launch_form(&state, &viewer, &name, &filled).await {
                Ok(form) => html! { (schema_part(&state, &name).await) (form) },
                Err(e) => return super::error_page(e),
            };
            let path = format!("/jobs/{}", super::session::encode(&name));
            let mut response =
                super::page(&state, &viewer, &format!("Job {name}"), &path, form).await;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            response
        }
        Err(e) => super::error_page(e),
    }
}

/// A form value as the schema wants it: text for a string property, else JSON when it
/// reads as JSON (`0.1`, `true`, `[1, 2]`), else text (so the API names the type problem).
fn typed(text: &str, schema: Option<&Value>, key: &str) -> Value {
    let wants = schema
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.get(key))
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str);
    if wants == Some("string") {
        return Value::String(text.to_string());
    }
    serde_json::from_str(text.trim()).unwrap_or_else(|_| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_values_take_the_schema_type() {
        let schema = json!({"properties": {"name": {"type": "string"}, "lr": {"type": "number"}}});
        assert_eq!(typed("12", Some(&schema), "name"), json!("12"));
        assert_eq!(typed("0.1", Some(&schema), "lr"), json!(0.1));
        assert_eq!(typed("fast", Some(&schema), "lr"), json!("fast"));
        assert_eq!(typed("true", None, "x"), json!(true));
    }
}
