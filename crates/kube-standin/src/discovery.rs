//! Discovery: `/version`, `/api`, `/api/v1`, `/apis` and each group's resource list, what
//! kubectl and the clients read before anything else.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub(crate) async fn version() -> Response {
    axum::Json(json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0+liftoff-standin",
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    }))
    .into_response()
}

pub(crate) async fn core_versions(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    axum::Json(json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }))
    .into_response()
}

fn resource(name: &str, kind: &str, short: &[&str], verbs: &[&str]) -> Value {
    json!({
        "name": name, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind,
        "verbs": verbs, "shortNames": short,
    })
}

pub(crate) async fn core_resources() -> Response {
    let all = ["create", "delete", "get", "list", "watch"];
    axum::Json(json!({
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [
            resource("pods", "Pod", &["po"], &all),
            {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
            resource("secrets", "Secret", &[], &all),
            resource("events", "Event", &["ev"], &["get", "list", "watch"]),
            {"name": "namespaces", "singularName": "namespace", "namespaced": false,
             "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]},
        ],
    }))
    .into_response()
}

pub(crate) async fn groups() -> Response {
    axum::Json(json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [{
            "name": "batch",
            "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"},
        }, {
            "name": "jobset.x-k8s.io",
            "versions": [{"groupVersion": "jobset.x-k8s.io/v1alpha2", "version": "v1alpha2"}],
            "preferredVersion": {"groupVersion": "jobset.x-k8s.io/v1alpha2", "version": "v1alpha2"},
        }],
    }))
    .into_response()
}

pub(crate) async fn batch_resources() -> Response {
    axum::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "batch/v1",
        "resources": [resource("jobs", "Job", &[], &["create", "delete", "get", "list", "watch"])],
    }))
    .into_response()
}

pub(crate) async fn jobset_resources() -> Response {
    axum::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "jobset.x-k8s.io/v1alpha2",
        "resources": [resource("jobsets", "JobSet", &[], &["create", "delete", "get", "list", "watch"])],
    }))
    .into_response()
}
