//! What the API server refuses of a created object, as far as the stand-in's clients could
//! get it wrong: names, and a pod's (or a Job's pod template's) containers.

use crate::store::Kind;
use serde_json::{json, Value};

/// DNS-1123 subdomain rules for object names (and `generateName`, which may end in `-`).
fn name_problem(name: &str, prefix: bool) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && (prefix || name.ends_with(|c: char| c.is_ascii_alphanumeric()));
    (!ok).then(|| {
        format!("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (got {name:?})")
    })
}

pub fn object(kind: Kind, object: &Value) -> Result<(), String> {
    object_inner(kind, object)
}

fn object_inner(kind: Kind, object: &Value) -> Result<(), String> {
    let meta = &object["metadata"];
    if let Some(n) = meta["name"].as_str().filter(|n| !n.is_empty()) {
        if let Some(p) = name_problem(n, false) {
            return Err(format!(
                "{} {n:?} is invalid: metadata.name: Invalid value: {p}",
                kind.name()
            ));
        }
    } else if let Some(g) = meta["generateName"].as_str() {
        if let Some(p) = name_problem(g, true) {
            return Err(format!(
                "{} is invalid: metadata.generateName: Invalid value: {p}",
                kind.name()
            ));
        }
    }
    let spec = match kind {
        Kind::Pod => &object["spec"],
        Kind::Job => {
            let policy = object["spec"]["template"]["spec"]["restartPolicy"].as_str();
            if !matches!(policy, Some("Never" | "OnFailure")) {
                return Err(format!(
                    "Job is invalid: spec.template.spec.restartPolicy: Unsupported value: {:?}: supported values: \"OnFailure\", \"Never\"",
                    policy.unwrap_or("")
                ));
            }
            &object["spec"]["template"]["spec"]
        }
        Kind::JobSet => {
            let jobs = object["spec"]["replicatedJobs"]
                .as_array()
                .filter(|j| !j.is_empty());
            let Some(jobs) = jobs else {
                return Err("JobSet is invalid: spec.replicatedJobs: Required value".into());
            };
            for (i, j) in jobs.iter().enumerate() {
                let job = json!({"spec": j["template"]["spec"]});
                if j["name"].as_str().is_none_or(str::is_empty) {
                    return Err(format!(
                        "JobSet is invalid: spec.replicatedJobs[{i}].name: Required value"
                    ));
                }
                object_inner(Kind::Job, &job)
                    .map_err(|e| format!("spec.replicatedJobs[{i}].template: {e}"))?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    let at = if kind == Kind::Job {
        "spec.template.spec"
    } else {
        "spec"
    };
    let containers = spec["containers"].as_array().filter(|c| !c.is_empty());
    let Some(containers) = containers else {
        return Err(format!(
            "{} is invalid: {at}.containers: Required value",
            kind.name()
        ));
    };
    for (i, c) in containers.iter().enumerate() {
        if c["name"].as_str().is_none_or(str::is_empty) {
            return Err(format!(
                "{} is invalid: {at}.containers[{i}].name: Required value",
                kind.name()
            ));
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            return Err(format!(
                "{} is invalid: {at}.containers[{i}].image: Required value",
                kind.name()
            ));
        }
    }
    Ok(())
}
