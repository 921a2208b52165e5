//! A run's Job, from the queue's manifest (W&B's `resource_args.kubernetes`) merged over
//! W&B's batch/v1 defaults, and the Secret that carries the run's environment (its token
//! among it) so that no secret is a plain value in the Job.

use super::{KubeConfig, AGENT_LABEL, ITEM_LABEL, OUTPUT_ANNOTATION, RUN_ANNOTATION, RUN_LABEL};
use crate::{RunSpec, RunnerError, RunnerResult};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// What a launch creates.
pub struct Made {
    pub namespace: String,
    pub name: String,
    pub container: String,
    pub job: Value,
    pub secret: Value,
    pub output: PathBuf,
    /// `(apiVersion, kind)` of a custom object; `None` for a batch/v1 Job.
    pub custom: Option<(String, String)>,
}

/// A name for the run's objects: lowercase DNS-1123, unique per run id (a hash of the id
/// keeps ids that differ in case or by `_` apart), at most 63 characters.
pub fn object_name(run: &str) -> String {
    let clean: String = run
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(40)
        .collect();
    format!("liftoff-{}-{}", clean.trim_matches('-'), short_hash(run))
}

pub fn short_hash(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    d[..5].iter().map(|b| format!("{b:02x}")).collect()
}

/// A label value for any run id (labels take at most 63 characters).
pub fn run_label(run: &str) -> String {
    if run.len() <= 63 {
        run.to_string()
    } else {
        format!("h-{}", short_hash(run))
    }
}

/// Objects merge key by key; anything else (arrays too) is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn labels(spec: &RunSpec, config: &KubeConfig) -> Value {
    let mut l = json!({
        RUN_LABEL: run_label(spec.run_id.as_str()),
        AGENT_LABEL: config.agent,
    });
    if let Some(item) = &spec.attempt_of {
        l[ITEM_LABEL] = json!(short_hash(item));
    }
    l
}

fn tag(meta: &mut Value, labels: &Value, run: &str) {
    if !meta.is_object() {
        *meta = json!({});
    }
    merge(&mut meta["labels"], labels);
    if !meta["labels"].is_object() {
        meta["labels"] = labels.clone();
    }
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][RUN_ANNOTATION] = json!(run);
}

/// Fills in one pod template (`{metadata, spec: {containers}}`): the run's labels and
/// annotation, no service account token, and in its first container the run's image, argv
/// and the Secret with its environment. Returns that container's name.
fn fill_pod_template(
    template: &mut Value,
    labels: &Value,
    spec: &RunSpec,
    secret_name: &str,
    at: &str,
) -> RunnerResult<String> {
    tag(&mut template["metadata"], labels, spec.run_id.as_str());
    let pod = &mut template["spec"];
    // A run gets no service account token (the namespace's default one included).
    pod["automountServiceAccountToken"] = json!(false);
    if pod["containers"].as_array().is_none_or(|c| c.is_empty()) {
        pod["containers"] = json!([{}]);
    }
    let first = &mut pod["containers"][0];
    if !first.is_object() {
        *first = json!({});
    }
    if first["name"].as_str().is_none_or(str::is_empty) {
        first["name"] = json!("launch0");
    }
    let container = first["name"].as_str().unwrap_or("launch0").to_string();
    match (&spec.image, first["image"].as_str()) {
        (Some(image), _) => first["image"] = json!(image),
        (None, Some(_)) => {}
        (None, None) => {
            return Err(RunnerError::Permanent(format!(
                "a Kubernetes run needs an image: the job's, or {at}.spec.containers[0].image"
            )))
        }
    }
    if !spec.argv.is_empty() {
        first["args"] = json!(spec.argv);
    }
    let mut from = vec![json!({"secretRef": {"name": secret_name}})];
    if let Some(Value::Array(theirs)) = first.get("envFrom") {
        from.extend(theirs.iter().cloned());
    }
    first["envFrom"] = json!(from);
    Ok(container)
}

/// The pod templates of a custom object (a JobSet's replicated jobs', a PyTorchJob's
/// replica specs'): every mapping whose `spec.containers` is a list, with its path.
fn pod_templates<'a>(value: &'a mut Value, path: String, out: &mut Vec<(String, &'a mut Value)>) {
    if value
        .get("spec")
        .and_then(|s| s.get("containers"))
        .is_some_and(Value::is_array)
    {
        out.push((path, value));
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                pod_templates(v, format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                pod_templates(v, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

pub fn build(spec: &RunSpec, config: &KubeConfig) -> RunnerResult<Made> {
    let args = &spec.resource_args;
    let problems = liftoff_types::kubernetes::check(args, "resource_args");
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        return Err(RunnerError::Permanent(text.join("; ")));
    }
    let mut manifest = match args {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let queue_namespace = manifest.remove("namespace");
    let api = manifest
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("batch/v1")
        .to_string();
    let kind = manifest
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Job")
        .to_string();
    let custom = (api.as_str(), kind.as_str()) != ("batch/v1", "Job");
    if custom && !api.contains('/') {
        return Err(RunnerError::Permanent(format!(
            "resource_args.apiVersion: {api:?} must be GROUP/VERSION for a custom object"
        )));
    }
    let namespace = manifest
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| queue_namespace.and_then(|n| n.as_str().map(str::to_string)))
        .unwrap_or_else(|| config.namespace.clone());
    let mut object = if custom {
        Value::Object(manifest)
    } else {
        let mut job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {},
            "spec": {
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": config.ttl_after_finished,
                "template": {"spec": {"restartPolicy": "Never"}},
            },
        });
        merge(&mut job, &Value::Object(manifest));
        job
    };
    let name = object_name(spec.run_id.as_str());
    let run = spec.run_id.as_str();
    let labels = labels(spec, config);
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]["name"] = json!(name);
    object["metadata"]["namespace"] = json!(namespace);
    if let Some(m) = object["metadata"].as_object_mut() {
        m.remove("generateName");
        m.remove("resourceVersion");
        m.remove("uid");
    }
    tag(&mut object["metadata"], &labels, run);
    // Where a restarted agent that finds the Job (not its journal) writes the output.
    object["metadata"]["annotations"][OUTPUT_ANNOTATION] = json!(spec.output.to_string_lossy());
    let secret_name = format!("{name}-env");
    let container = if custom {
        // Every replica runs the run's program (distributed training): each pod template
        // gets the run's image, argv, environment and labels.
        let mut templates = Vec::new();
        pod_templates(
            &mut object["spec"],
            "resource_args.spec".into(),
            &mut templates,
        );
        if templates.is_empty() {
            return Err(RunnerError::Permanent(format!(
                "resource_args: a {kind} needs a pod template (a mapping with spec.containers) to run the run in"
            )));
        }
        let mut first = None;
        for (at, template) in templates {
            let c = fill_pod_template(template, &labels, spec, &secret_name, &at)?;
            first.get_or_insert(c);
        }
        first.unwrap_or_else(|| "launch0".into())
    } else {
        fill_pod_template(
            &mut object["spec"]["template"],
            &labels,
            spec,
            &secret_name,
            "resource_args.spec.template",
        )?
    };
    // The run's own variables only (the agent's PATH and HOME mean nothing in the image),
    // less the files that are on the agent's machine: the pod reads its config from
    // LIFTOFF_CONFIG and posts metrics to the API with its token.
    let env: Map<String, Value> = spec
        .env
        .own
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "LIFTOFF_CONFIG_FILE" | "LIFTOFF_METRICS_FILE"))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name, "namespace": namespace},
        "stringData": env,
    });
    tag(&mut secret["metadata"], &labels, run);
    Ok(Made {
        namespace,
        name,
        container,
        job: object,
        secret,
        output: spec.output.clone(),
        custom: custom.then_some((api, kind)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunEnv;

    fn spec(args: Value) -> RunSpec {
        RunSpec {
            run_id: "Run_A1".parse().unwrap(),
            attempt_of: Some("s/7".into()),
            argv: vec!["python".into(), "train.py".into()],
            env: RunEnv {
                own: [("LIFTOFF_TOKEN".to_string(), "secret-t".to_string())].into(),
                ..Default::default()
            },
            workdir: "/tmp/w".into(),
            output: "/tmp/w/output.log".into(),
            resource_args: args,
            concurrency: None,
            image: Some("trainer:1".into()),
        }
    }

    #[test]
    fn the_manifest_merges_over_wandbs_defaults_and_the_token_rides_in_a_secret() {
        let config = KubeConfig::for_tests();
        let args = json!({"namespace": "ml", "spec": {"activeDeadlineSeconds": 60, "template": {"spec": {
            "containers": [{"resources": {"limits": {"memory": "1Gi"}},
                "env": [{"name": "A", "value": "1"}]}]}}}});
        let made = build(&spec(args), &config).unwrap();
        assert_eq!(made.namespace, "ml");
        assert!(made.name.starts_with("liftoff-run-a1-"), "{}", made.name);
        let job = &made.job;
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 60);
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(
            job["spec"]["template"]["spec"]["automountServiceAccountToken"],
            false
        );
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "launch0");
        assert_eq!(c["image"], "trainer:1");
        assert_eq!(c["args"], json!(["python", "train.py"]));
        assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
        assert_eq!(
            c["envFrom"][0]["secretRef"]["name"],
            format!("{}-env", made.name)
        );
        assert!(
            !job.to_string().contains("secret-t"),
            "the token is in the Job: {job}"
        );
        assert_eq!(made.secret["stringData"]["LIFTOFF_TOKEN"], "secret-t");
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"][RUN_LABEL],
            "Run_A1"
        );
        let err = build(
            &spec(
                json!({"spec": {"template": {"spec": {"volumes": [{"hostPath": {"path": "/"}}]}}}}),
            ),
            &config,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("resource_args.spec.template.spec.volumes[0].hostPath"),
            "{err}"
        );
    }
}
