//! The Ray queue's resource args: where the cluster's Jobs API is and what a run's driver
//! asks of it, checked where they enter (queue create, enqueue) so that a misspelt key or a
//! `runtime_env` key liftoff does not pass on is a 422 naming it, not a failed run later.
//!
//! ```yaml
//! address: http://127.0.0.1:8265       # the dashboard's Jobs API (else the agent's default)
//! entrypoint_num_cpus: 1
//! entrypoint_num_gpus: 0
//! entrypoint_memory: 1000000000          # bytes
//! entrypoint_resources: {accelerator: 1}
//! runtime_env: {pip: [numpy], env_vars: {A: "1"}}
//! metadata: {team: vision}
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;

/// The keys of a Ray queue's resource args.
pub const KEYS: &[&str] = &[
    "address",
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
    "runtime_env",
    "metadata",
];

/// The `runtime_env` keys passed on to Ray. Left out on purpose: `working_dir` and
/// `py_modules` (a run's code is its job's source, which liftoff ships itself; a local path
/// there would name a file of the agent's machine), `excludes` (liftoff packs the source
/// itself; the job's `.gitignore` already left files out at `job create`), `image_uri` and `container` (a Ray queue
/// runs no images), and plugins liftoff has not tried.
pub const RUNTIME_ENV_KEYS: &[&str] = &["pip", "uv", "conda", "env_vars", "config"];

/// A Ray queue's resource args, as the runner uses them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RayArgs {
    pub address: Option<String>,
    pub entrypoint_num_cpus: Option<f64>,
    pub entrypoint_num_gpus: Option<f64>,
    pub entrypoint_memory: Option<u64>,
    #[serde(default)]
    pub entrypoint_resources: BTreeMap<String, f64>,
    #[serde(default)]
    pub runtime_env: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl RayArgs {
    /// The args of one run (placeholders filled): every problem at once, by path under `at`.
    pub fn parse(args: &serde_json::Value, at: &str) -> Result<RayArgs, Vec<(String, String)>> {
        let problems = check(args, at, false);
        if !problems.is_empty() {
            return Err(problems);
        }
        if args.is_null() {
            return Ok(RayArgs::default());
        }
        serde_json::from_value(args.clone()).map_err(|e| vec![(at.to_string(), e.to_string())])
    }
}

/// A string still holding a queue template's `{{var}}`.
fn placeholder(v: &serde_json::Value) -> bool {
    v.as_str().is_some_and(|s| s.contains("{{"))
}

/// The problems with Ray resource args, by path under `at`. `templated`: a queue's config,
/// whose values may still be placeholders.
pub fn check(args: &serde_json::Value, at: &str, templated: bool) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let map = match args {
        serde_json::Value::Null => return problems,
        serde_json::Value::Object(map) => map,
        _ => return vec![(at.to_string(), "must be a mapping".into())],
    };
    let mut bad = |path: String, message: &str| problems.push((path, message.to_string()));
    for (key, value) in map {
        let path = format!("{at}.{key}");
        if templated && placeholder(value) {
            continue;
        }
        match key.as_str() {
            "address" => match value.as_str() {
                Some(a) if a.starts_with("http://") || a.starts_with("https://") => {}
                _ => bad(
                    path,
                    "must be the Ray dashboard's URL, http://HOST:8265 (the Jobs API)",
                ),
            },
            "entrypoint_num_cpus" | "entrypoint_num_gpus" => match value.as_f64() {
                Some(n) if (0.0..=1e6).contains(&n) => {}
                _ => bad(path, "must be a number from 0 up"),
            },
            "entrypoint_memory" => {
                if value.as_u64().is_none() {
                    bad(path, "must be a whole number of bytes")
                }
            }
            "entrypoint_resources" => match value.as_object() {
                Some(m) => {
                    for (name, n) in m {
                        if !(n.as_f64().is_some_and(|n| n >= 0.0) || templated && placeholder(n)) {
                            bad(format!("{path}.{name}"), "must be a number from 0 up");
                        }
                    }
                }
                None => bad(path, "must be a mapping of resource names to amounts"),
            },
            "metadata" => match value.as_object() {
                Some(m) => {
                    for (name, v) in m {
                        if !v.is_string() {
                            bad(format!("{path}.{name}"), "must be a string");
                        } else if name.starts_with("liftoff") {
                            bad(format!("{path}.{name}"), "liftoff's own metadata key");
                        }
                    }
                }
                None => bad(path, "must be a mapping of strings"),
            },
            "runtime_env" => match value.as_object() {
                Some(m) => {
                    for (name, v) in m {
                        let at = format!("{path}.{name}");
                        if !RUNTIME_ENV_KEYS.contains(&name.as_str()) {
                            bad(
                                at,
                                &format!(
                                    "not a runtime_env key liftoff passes on to Ray (known: {}; \
                                     a run's code is its job's source)",
                                    RUNTIME_ENV_KEYS.join(", ")
                                ),
                            );
                        } else if name == "env_vars" {
                            check_env_vars(v, &at, &mut bad);
                        }
                    }
                }
                None => bad(path, "must be a mapping"),
            },
            _ => bad(
                path,
                &format!(
                    "not a Ray resource arg liftoff passes on (known: {})",
                    KEYS.join(", ")
                ),
            ),
        }
    }
    problems
}

fn check_env_vars(v: &serde_json::Value, at: &str, bad: &mut impl FnMut(String, &str)) {
    let Some(vars) = v.as_object() else {
        return bad(at.to_string(), "must be a mapping of names to strings");
    };
    for (name, value) in vars {
        if name.to_ascii_uppercase().starts_with("LIFTOFF_") {
            bad(
                format!("{at}.{name}"),
                "liftoff's own variable: the agent sets it",
            );
        } else if !value.is_string() {
            bad(format!("{at}.{name}"), "must be a string");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_is_named_by_its_path() {
        let args = json!({
            "address": "127.0.0.1:8265",
            "entrypoint_num_gpus": -1,
            "entrypoint_memory": "1g",
            "entrypoint_resources": {"tpu": "x"},
            "runtime_env": {"working_dir": "/home/me", "pip": ["numpy"], "env_vars": {"LIFTOFF_RUN_TOKEN": "x", "N": 3}},
            "metadata": {"liftoff_run": "r"},
            "gpus": 1,
        });
        let problems = check(&args, "resource_args", false);
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "resource_args.address",
                "resource_args.entrypoint_memory",
                "resource_args.entrypoint_num_gpus",
                "resource_args.entrypoint_resources.tpu",
                "resource_args.gpus",
                "resource_args.metadata.liftoff_run",
                "resource_args.runtime_env.env_vars.LIFTOFF_RUN_TOKEN",
                "resource_args.runtime_env.env_vars.N",
                "resource_args.runtime_env.working_dir",
            ],
            "{problems:?}"
        );
        assert!(problems[4].1.contains("entrypoint_num_cpus"));
    }

    #[test]
    fn a_queue_template_may_hold_placeholders() {
        let args = json!({"address": "{{cluster}}", "entrypoint_num_gpus": "{{gpus}}"});
        assert!(check(&args, "config", true).is_empty());
        assert_eq!(check(&args, "resource_args", false).len(), 2);
    }

    #[test]
    fn good_args_parse() {
        let args = json!({"address": "http://127.0.0.1:8265", "entrypoint_num_cpus": 0.5,
            "entrypoint_resources": {"a": 1}, "runtime_env": {"pip": ["x"]}, "metadata": {"team": "v"}});
        let parsed = RayArgs::parse(&args, "resource_args").unwrap();
        assert_eq!(parsed.entrypoint_num_cpus, Some(0.5));
        assert_eq!(parsed.metadata["team"], "v");
        assert_eq!(
            RayArgs::parse(&json!(null), "x").unwrap(),
            RayArgs::default()
        );
    }
}
