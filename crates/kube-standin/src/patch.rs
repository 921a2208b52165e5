//! PATCH: JSON merge patches of an object (what the runner sends to make a run's Secret
//! its Job's dependent).

use crate::api::{kind_of, not_found, status};
use crate::Shared;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;

/// A merge patch (RFC 7386, `application/merge-patch+json`; a strategic merge patch is
/// taken as one, which it is for the maps the stand-in's clients patch). Names, namespace,
/// uid and resourceVersion stay.
pub(crate) async fn patch_core(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = match kind_of(&plural) {
        Ok(kind) => kind,
        Err(e) => return *e,
    };
    let merge = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.starts_with("application/merge-patch+json")
                || t.starts_with("application/strategic-merge-patch+json")
        });
    if !merge {
        return status(
            415,
            "UnsupportedMediaType",
            "the stand-in takes merge patches only (application/merge-patch+json)",
        );
    }
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(p @ Value::Object(_)) => p,
        _ => return status(400, "BadRequest", "a merge patch must be a JSON object"),
    };
    let mut store = shared.lock();
    let Some(mut object) = store.get(kind, &ns, &name).cloned() else {
        return not_found(kind, &name);
    };
    let keep = object["metadata"].clone();
    merge_patch(&mut object, &patch);
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        object["metadata"][field] = keep[field].clone();
    }
    axum::Json(store.put(kind, object)).into_response()
}

fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in p {
        if v.is_null() {
            if let Some(t) = target.as_object_mut() {
                t.remove(k);
            }
        } else {
            merge_patch(&mut target[k.as_str()], v);
        }
    }
}
