//! The launch spec: what a user enqueues. Its keys follow W&B Launch's launch spec so that
//! specs written for W&B load unchanged; unknown keys are refused so a typo is not silently
//! dropped.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Priority inside a queue: lower runs first (`critical` = 0 … `low` = 3), as in W&B.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical = 0,
    High = 1,
    #[default]
    Medium = 2,
    Low = 3,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ];

    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.rank() == rank)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .or_else(|| s.parse::<i64>().ok().and_then(Priority::from_rank))
            .ok_or_else(|| {
                format!("priority {s:?} must be one of critical, high, medium, low (or 0 to 3)")
            })
    }
}

/// W&B writes priority as a number (0..3); people write it as a word. Both are accepted.
impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            Value::Number(n) => n
                .as_i64()
                .and_then(Priority::from_rank)
                .ok_or_else(|| serde::de::Error::custom(format!("priority {n} must be 0 to 3"))),
            other => Err(serde::de::Error::custom(format!(
                "priority must be a word or a number, not {other}"
            ))),
        }
    }
}

/// `docker` section of a W&B launch spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
}

/// What a user may change about a job for one launch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Extra arguments appended to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The run's config; deep-merged over the job's default config.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub run_config: Map<String, Value>,
    /// The command to run, as an argv. Alone (without a job) this is an inline command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
}

/// A launch spec as W&B Launch defines it (`../shared/FORMATS.md`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// A job reference such as `name:v3` or `name:latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The run's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_id: Option<String>,
    /// The resource type; when absent the queue's own is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Per-backend arguments, keyed by resource type as W&B does.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub resource_args: Map<String, Value>,
    #[serde(default)]
    pub overrides: Overrides,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub builder: Option<Value>,
    /// Values for the queue's template variables.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub template_variables: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// liftoff's own: the absolute directory an inline command was launched from; it runs
    /// there (on runners that run on the agent machine's files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// liftoff's own: environment variables for the run (`launch --env K=V`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// liftoff's own: retries by cause for this launch, within its queue's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::retry::RetryPolicy>,
}

/// Longest accepted string in a spec's free-text fields, and most argv entries: bounds what a
/// request can make the store keep.
const MAX_TEXT: usize = 1024;
const MAX_ARGV: usize = 4096;
/// Most `env` entries, and the longest value or `cwd`.
const MAX_ENV: usize = 256;
const MAX_VALUE: usize = 32 * 1024;

/// The keys a launch spec and its `overrides` and `docker` sections take (serde's names).
pub const SPEC_KEYS: &[&str] = &[
    "job",
    "docker",
    "entity",
    "project",
    "name",
    "run_id",
    "author",
    "sweep_id",
    "resource",
    "resource_args",
    "overrides",
    "builder",
    "template_variables",
    "priority",
    "cwd",
    "env",
    "retry",
];
const OVERRIDES_KEYS: &[&str] = &["args", "run_config", "entry_point", "dockerfile"];
const DOCKER_KEYS: &[&str] = &["docker_image"];

/// Every unknown key of a spec as JSON, by path with the known ones, so a spec with several
/// typos is fixed in one go (serde stops at the first).
pub fn unknown_keys(spec: &Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut check = |value: Option<&Value>, at: &str, known: &[&str]| {
        let Some(Value::Object(map)) = value else {
            return;
        };
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            let problem = if at.is_empty() && (key == "uri" || key == "git") {
                // W&B's git source: the CLI turns it into a git job; the API takes the job.
                "a git repository runs as a git job: create one (`liftoff job create git`) and \
                 name it in `job`, or launch this spec with `liftoff launch --spec`"
                    .to_string()
            } else {
                format!("unknown key (known: {})", known.join(", "))
            };
            problems.push((path, problem));
        }
    };
    check(Some(spec), "", SPEC_KEYS);
    check(spec.get("overrides"), "overrides", OVERRIDES_KEYS);
    check(spec.get("docker"), "docker", DOCKER_KEYS);
    problems
}

impl LaunchSpec {
    /// Checks what the server can check without the queue: a spec must say what to run, and
    /// its fields must be of sane size. Returns `(field path, problem)` for each problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let has_command = self
            .overrides
            .entry_point
            .as_ref()
            .is_some_and(|argv| !argv.is_empty());
        let has_image = self
            .docker
            .as_ref()
            .is_some_and(|d| d.docker_image.is_some());
        if self.job.is_none() && !has_command && !has_image {
            problems.push((
                "spec".to_string(),
                "needs a job, docker.docker_image, or overrides.entry_point (a command)".into(),
            ));
        }
        if let Some(argv) = &self.overrides.entry_point {
            if argv.is_empty() && self.job.is_none() {
                problems.push(("overrides.entry_point".into(), "is empty".into()));
            }
            if argv.first().is_some_and(|a| a.is_empty()) {
                problems.push((
                    "overrides.entry_point[0]".into(),
                    "is an empty string".into(),
                ));
            }
        }
        for (field, argv) in [
            (
                "overrides.entry_point",
                self.overrides.entry_point.as_deref().unwrap_or(&[]),
            ),
            ("overrides.args", &self.overrides.args[..]),
        ] {
            if argv.len() > MAX_ARGV {
                problems.push((field.into(), format!("has more than {MAX_ARGV} entries")));
            }
            if argv.iter().any(|a| a.contains('\0')) {
                problems.push((field.into(), "contains a NUL byte".into()));
            }
        }
        let texts = [
            ("job", &self.job),
            ("name", &self.name),
            ("entity", &self.entity),
            ("project", &self.project),
            ("author", &self.author),
            ("sweep_id", &self.sweep_id),
            ("run_id", &self.run_id),
            ("resource", &self.resource),
        ];
        for (field, text) in texts {
            if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
                problems.push((field.into(), format!("is longer than {MAX_TEXT} bytes")));
            }
        }
        if let Some(run_id) = &self.run_id {
            if let Err(e) = run_id.parse::<crate::RunId>() {
                problems.push(("run_id".into(), e));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') || cwd.contains('\0') || cwd.len() > MAX_VALUE {
                problems.push((
                    "cwd".into(),
                    "must be an absolute path without NUL bytes".into(),
                ));
            }
        }
        if self.env.len() > MAX_ENV {
            problems.push(("env".into(), format!("has more than {MAX_ENV} entries")));
        }
        for (key, value) in &self.env {
            let field = format!("env.{key}");
            let name_ok = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok {
                problems.push((field, "is not a variable name (letters, digits, _)".into()));
            } else if key.starts_with("LIFTOFF_") {
                problems.push((field, "is liftoff's own, set for every run".into()));
            } else if value.contains('\0') || value.len() > MAX_VALUE {
                problems.push((
                    field,
                    format!("must be at most {MAX_VALUE} bytes, without NUL bytes"),
                ));
            }
        }
        if let Some(retry) = &self.retry {
            problems.extend(retry.validate("retry"));
        }
        problems
    }

    /// An inline command spec: what `liftoff launch -- CMD ARGS...` enqueues.
    pub fn command(argv: Vec<String>) -> LaunchSpec {
        LaunchSpec {
            overrides: Overrides {
                entry_point: Some(argv),
                ..Overrides::default()
            },
            ..LaunchSpec::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wandb_spec_loads_unchanged() {
        let spec: LaunchSpec = serde_json::from_value(serde_json::json!({
            "job": "wandb/proj/job-train:v3",
            "entity": "team", "project": "proj", "name": "try-1",
            "resource": "local-process",
            "resource_args": {"local-process": {}},
            "overrides": {"args": ["--lr", "0.1"], "run_config": {"lr": 0.1}, "entry_point": ["python", "train.py"]},
            "template_variables": {"gpus": 2},
            "priority": 1
        }))
        .unwrap();
        assert_eq!(spec.priority, Some(Priority::High));
        assert!(spec.validate().is_empty());
    }

    #[test]
    fn every_unknown_key_is_named_and_every_known_one_loads() {
        let typos = serde_json::json!({"jobb": "x", "overrides": {"arg": [], "args": []}, "docker": {"image": "y"}});
        let named: Vec<String> = unknown_keys(&typos).into_iter().map(|(k, _)| k).collect();
        assert_eq!(named, ["jobb", "overrides.arg", "docker.image"]);
        let all = serde_json::json!({
            "job": "j", "docker": {"docker_image": "i"}, "entity": "e", "project": "p",
            "name": "n", "run_id": "abcdefgh", "author": "a", "sweep_id": "s", "resource": "r",
            "resource_args": {}, "builder": {}, "template_variables": {}, "priority": 1,
            "cwd": "/x", "env": {"A": "1"},
            "overrides": {"args": [], "run_config": {}, "entry_point": ["x"], "dockerfile": "D"}
        });
        assert!(unknown_keys(&all).is_empty());
        serde_json::from_value::<LaunchSpec>(all).expect("every known key loads");
    }

    #[test]
    fn unknown_keys_and_empty_specs_are_refused() {
        let err = serde_json::from_value::<LaunchSpec>(serde_json::json!({"jobb": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("jobb"), "{err}");
        let problems = LaunchSpec::default().validate();
        assert_eq!(problems[0].0, "spec");
    }

    #[test]
    fn priorities_parse_as_words_and_numbers() {
        assert_eq!("critical".parse::<Priority>().unwrap(), Priority::Critical);
        assert_eq!("3".parse::<Priority>().unwrap(), Priority::Low);
        assert!("urgent".parse::<Priority>().is_err());
        assert!(serde_json::from_str::<Priority>("7").is_err());
    }
}
