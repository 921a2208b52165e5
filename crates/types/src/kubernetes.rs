//! The Kubernetes queue's resource args: a manifest merged over W&B's batch/v1 Job
//! defaults, checked where it enters (queue create, enqueue) against wandb 0.31's
//! refusals: anything that would let a run's pod leave its sandbox (host paths, host
//! namespaces and ports, a security context, another service account or its token,
//! Bidirectional mount propagation, unconfined AppArmor or seccomp) is a 422 naming its
//! path, wherever in the manifest it is (a pod template, a JobSet's replicated jobs...).

use serde_json::Value;

/// Keys refused anywhere in a manifest, with why.
const REFUSED: &[(&str, &str)] = &[
    (
        "securityContext",
        "a security context could run the pod as root or privileged",
    ),
    (
        "hostPath",
        "a host path would mount the node's files into the pod",
    ),
    ("hostPID", "the node's process namespace is the node's"),
    ("hostIPC", "the node's IPC namespace is the node's"),
    ("hostNetwork", "the node's network is the node's"),
    ("hostPort", "a host port binds the node's network"),
    ("hostUsers", "the node's user namespace is the node's"),
    (
        "serviceAccountName",
        "runs get the agent's service account rules, not another's",
    ),
    (
        "serviceAccount",
        "runs get the agent's service account rules, not another's",
    ),
    (
        "automountServiceAccountToken",
        "a run gets no service account token",
    ),
    (
        "shareProcessNamespace",
        "a shared process namespace lets containers see each other",
    ),
    (
        "serviceAccountToken",
        "a projected service account token is another's credentials",
    ),
];

/// The keys the runner reads beside the manifest's own.
pub const OWN_KEYS: &[&str] = &["namespace"];

/// Every problem of a manifest, each with its path under `at`.
pub fn check(args: &Value, at: &str) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let map = match args {
        Value::Null => return problems,
        Value::Object(map) => map,
        _ => return vec![(at.to_string(), "must be a manifest (a mapping)".into())],
    };
    for key in ["apiVersion", "kind"] {
        if let Some(v) = map.get(key) {
            if !v.is_string() {
                problems.push((format!("{at}.{key}"), "must be a string".into()));
            }
        }
    }
    if let Some(ns) = map.get("namespace") {
        if !ns.as_str().is_some_and(namespace_ok) {
            problems.push((
                format!("{at}.namespace"),
                "must be a namespace name (lowercase letters, digits and '-', at most 63)".into(),
            ));
        }
    }
    if let Some(meta) = map.get("metadata") {
        if !meta.is_object() {
            problems.push((format!("{at}.metadata"), "must be a mapping".into()));
        } else if let Some(ns) = meta.get("namespace") {
            if !ns.as_str().is_some_and(namespace_ok) {
                problems.push((
                    format!("{at}.metadata.namespace"),
                    "must be a namespace name".into(),
                ));
            }
        }
    }
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("Job");
    let api = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("batch/v1");
    if (api, kind) == ("batch/v1", "Job") {
        job_shape(args, at, &mut problems);
    }
    walk(args, at, &mut problems, 0);
    problems
}

/// A Job's parts the runner fills in must be of the right shape, and its retries are
/// liftoff's (per queue, by cause): a Job that restarts its own pods would be reported
/// ended while it retries.
fn job_shape(args: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    let mappings = [
        "/metadata",
        "/metadata/labels",
        "/metadata/annotations",
        "/spec",
        "/spec/template",
        "/spec/template/metadata",
        "/spec/template/metadata/labels",
        "/spec/template/metadata/annotations",
        "/spec/template/spec",
    ];
    for pointer in mappings {
        if let Some(v) = args.pointer(pointer) {
            if !v.is_object() && !v.is_null() {
                let path = pointer.replace('/', ".");
                problems.push((format!("{at}{path}"), "must be a mapping".into()));
            }
        }
    }
    match args.pointer("/spec/template/spec/containers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, c) in items.iter().enumerate() {
                if !c.is_object() {
                    problems.push((
                        format!("{at}.spec.template.spec.containers[{i}]"),
                        "must be a mapping".into(),
                    ));
                }
            }
        }
        Some(_) => problems.push((
            format!("{at}.spec.template.spec.containers"),
            "must be a list of containers".into(),
        )),
    }
    if let Some(v) = args.pointer("/spec/backoffLimit") {
        if v.as_u64() != Some(0) {
            problems.push((
                format!("{at}.spec.backoffLimit"),
                "must be 0: liftoff retries runs itself, by cause (the queue's retry rules)".into(),
            ));
        }
    }
    if let Some(v) = args.pointer("/spec/template/spec/restartPolicy") {
        if v.as_str() != Some("Never") {
            problems.push((
                format!("{at}.spec.template.spec.restartPolicy"),
                "must be Never: liftoff retries runs itself, by cause (the queue's retry rules)"
                    .into(),
            ));
        }
    }
}

fn namespace_ok(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

fn walk(value: &Value, path: &str, problems: &mut Vec<(String, String)>, depth: usize) {
    if depth > 64 {
        problems.push((
            path.to_string(),
            "is nested too deep (more than 64 levels)".into(),
        ));
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{path}.{key}");
                if let Some((_, why)) = REFUSED.iter().find(|(k, _)| k == key) {
                    problems.push((
                        here,
                        format!("is refused: {why} (as wandb 0.31 refuses it)"),
                    ));
                    continue;
                }
                if key == "mountPropagation" && v.as_str() == Some("Bidirectional") {
                    problems.push((
                        here,
                        "Bidirectional is refused: mounts would reach back into the node".into(),
                    ));
                    continue;
                }
                if key == "annotations" {
                    annotations(v, &here, problems);
                }
                walk(v, &here, problems, depth + 1);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{path}[{i}]"), problems, depth + 1);
            }
        }
        _ => {}
    }
}

/// AppArmor and seccomp were set by annotations before they were fields.
fn annotations(value: &Value, path: &str, problems: &mut Vec<(String, String)>) {
    for (key, v) in value.as_object().into_iter().flatten() {
        let sandbox = key.starts_with("container.apparmor.security.beta.kubernetes.io/")
            || key.starts_with("seccomp.security.alpha.kubernetes.io/")
            || key.starts_with("container.seccomp.security.alpha.kubernetes.io/");
        if sandbox && v.as_str().is_some_and(|s| s.contains("unconfined")) {
            problems.push((
                format!("{path}.{key}"),
                "unconfined is refused: the pod would run without its sandbox profile".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_name_the_path_anywhere_in_the_manifest() {
        let manifest = json!({
            "kind": "Job",
            "spec": {"template": {
                "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/launch0": "unconfined"}},
                "spec": {
                    "hostNetwork": true,
                    "containers": [{"name": "x", "securityContext": {"privileged": true},
                        "ports": [{"hostPort": 80}],
                        "volumeMounts": [{"name": "v", "mountPath": "/m", "mountPropagation": "Bidirectional"}]}],
                    "volumes": [{"name": "v", "hostPath": {"path": "/"}}],
                }}},
        });
        let problems = check(&manifest, "resource_args");
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "resource_args.spec.template.spec.volumes[0].hostPath",
            "resource_args.spec.template.spec.hostNetwork",
            "resource_args.spec.template.spec.containers[0].securityContext",
            "resource_args.spec.template.spec.containers[0].ports[0].hostPort",
            "resource_args.spec.template.spec.containers[0].volumeMounts[0].mountPropagation",
            "resource_args.spec.template.metadata.annotations.container.apparmor.security.beta.kubernetes.io/launch0",
        ] {
            assert!(paths.contains(&want), "{want} not in {paths:?}");
        }
        assert_eq!(paths.len(), 6, "{problems:?}");
        let shapes = check(
            &json!({"metadata": {"annotations": "x"}, "spec": {"backoffLimit": 2,
            "template": {"spec": {"restartPolicy": "OnFailure", "containers": [1]}}}}),
            "r",
        );
        let paths: Vec<&str> = shapes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "r.metadata.annotations",
                "r.spec.template.spec.containers[0]",
                "r.spec.backoffLimit",
                "r.spec.template.spec.restartPolicy"
            ]
        );
        let fine = json!({"namespace": "ml", "spec": {"template": {"spec": {"containers": [
            {"resources": {"limits": {"memory": "1Gi"}}}]}}}});
        assert!(check(&fine, "r").is_empty());
        assert_eq!(
            check(&json!({"namespace": "Bad_NS"}), "r")[0].0,
            "r.namespace"
        );
        assert_eq!(check(&json!([1]), "r")[0].0, "r");
    }
}
