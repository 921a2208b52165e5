//! Jobs: reusable, versioned recipes (W&B Launch's job model). A job version is a source (a
//! code archive by digest, a git repository at a commit, or a container image), an
//! entrypoint, a default config and an optional input schema. The same content under the
//! same name is the same version; a new version (`v0`, `v1`, ...) comes only with a change.

use crate::item::string_enum;
use crate::Millis;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// Where a job's code comes from.
    JobKind {
        Code = "code",
        Git = "git",
        Image = "image",
    }
);

/// A job's source, by kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSource {
    /// `code`: the SHA-256 of the uploaded archive (`sha256:HEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `git`: the repository (a URL, a `file://` URL or a local path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// `git`: the full commit id (a ref is resolved at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `image`: the container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// What makes a job version: posted to `POST /jobs/{name}/versions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub kind: JobKind,
    pub source: JobSource,
    /// The command, as an argv, run in the source's directory.
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub default_config: Map<String, Value>,
    /// A JSON Schema (the subset [`check_schema`] knows) that a run's config must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
}

/// A stored job version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobVersion {
    pub name: String,
    pub version: u32,
    #[serde(flatten)]
    pub spec: JobSpec,
    pub created_at_ms: Millis,
}

impl JobVersion {
    /// `name:vN`, the reference a pinned launch spec carries.
    pub fn reference(&self) -> String {
        format!("{}:v{}", self.name, self.version)
    }
}

/// Whether a job version was new (`POST` answers 201) or the same content again (200).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobVersionCreated {
    pub job: JobVersion,
    pub created: bool,
}

/// A parsed job reference: `name`, `name:latest` or `name:vN` (W&B also writes
/// `entity/project/name:v3`; the last path segment is the name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRef {
    pub name: String,
    /// `None`: the latest version.
    pub version: Option<u32>,
}

impl FromStr for JobRef {
    type Err = String;
    fn from_str(s: &str) -> Result<JobRef, String> {
        let (path, tag) = match s.rsplit_once(':') {
            Some((p, t)) => (p, Some(t)),
            None => (s, None),
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        check_job_name(name)?;
        let version = match tag {
            None | Some("latest") => None,
            Some(t) => Some(
                t.strip_prefix('v')
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| {
                        format!("job reference {s:?}: the version must be latest or vN")
                    })?,
            ),
        };
        Ok(JobRef {
            name: name.to_string(),
            version,
        })
    }
}

/// A job name: 1 to 128 characters of `a-z A-Z 0-9 . _ -`, starting with a letter or digit.
pub fn check_job_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "job name {name:?} must be 1 to 128 characters of a-z, A-Z, 0-9, '.', '_' or '-'"
        ))
    }
}

impl JobSpec {
    /// Shape checks: the source fits the kind; sizes are sane; the schema is one we know.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let s = &self.source;
        let want = |p: &mut Vec<(String, String)>, field: &str, v: &Option<String>| {
            if v.as_ref().is_none_or(|v| v.is_empty()) {
                p.push((
                    format!("source.{field}"),
                    "is required for this kind".into(),
                ));
            }
        };
        match self.kind {
            JobKind::Code => {
                want(&mut p, "digest", &s.digest);
                if let Some(d) = &s.digest {
                    let hex = d.strip_prefix("sha256:").unwrap_or("");
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        p.push((
                            "source.digest".into(),
                            "must be sha256: and 64 hex digits".into(),
                        ));
                    }
                }
            }
            JobKind::Git => {
                want(&mut p, "repo", &s.repo);
                want(&mut p, "commit", &s.commit);
                if let Some(c) = &s.commit {
                    if !(7..=64).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                        p.push(("source.commit".into(), "must be a commit id (hex)".into()));
                    }
                }
                if s.repo.as_ref().is_some_and(|r| r.starts_with('-')) {
                    p.push(("source.repo".into(), "must not start with '-'".into()));
                }
            }
            JobKind::Image => want(&mut p, "image", &s.image),
        }
        for (field, v) in [("repo", &s.repo), ("image", &s.image)] {
            if v.as_ref()
                .is_some_and(|v| v.len() > 2048 || v.chars().any(char::is_control))
            {
                p.push((
                    format!("source.{field}"),
                    "is too long or has control characters".into(),
                ));
            }
        }
        if self.entrypoint.first().is_none_or(|a| a.is_empty()) {
            p.push(("entrypoint".into(), "needs a command".into()));
        }
        if self.entrypoint.len() > 4096 || self.entrypoint.iter().any(|a| a.contains('\0')) {
            p.push(("entrypoint".into(), "is too long or has a NUL byte".into()));
        }
        if let Some(schema) = &self.input_schema {
            if let Err(e) = check_schema_shape(schema, "input_schema") {
                p.push(e);
            }
        }
        p
    }
}

/// Deep-merges `over` onto `base`: objects merge key by key, anything else replaces.
pub fn deep_merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

const SCHEMA_KEYS: &[&str] = &[
    "type",
    "properties",
    "required",
    "minimum",
    "maximum",
    "enum",
    "items",
    "additionalProperties",
    "description",
    "title",
    "default",
    "$schema",
];

fn check_schema_shape(schema: &Value, at: &str) -> Result<(), (String, String)> {
    let Some(obj) = schema.as_object() else {
        return Err((at.to_string(), "a schema is an object".into()));
    };
    for key in obj.keys() {
        if !SCHEMA_KEYS.contains(&key.as_str()) {
            return Err((
                format!("{at}.{key}"),
                format!("is not supported (known: {})", SCHEMA_KEYS.join(", ")),
            ));
        }
    }
    if let Some(t) = obj.get("type") {
        let ok = t.as_str().is_some_and(|t| {
            [
                "object", "string", "number", "integer", "boolean", "array", "null",
            ]
            .contains(&t)
        });
        if !ok {
            return Err((
                format!("{at}.type"),
                format!("{t} is not a JSON Schema type"),
            ));
        }
    }
    if let Some(props) = obj.get("properties") {
        let Some(props) = props.as_object() else {
            return Err((format!("{at}.properties"), "must be an object".into()));
        };
        for (name, sub) in props {
            check_schema_shape(sub, &format!("{at}.properties.{name}"))?;
        }
    }
    if let Some(items) = obj.get("items") {
        check_schema_shape(items, &format!("{at}.items"))?;
    }
    Ok(())
}

/// Checks `value` against a schema (type, properties, required, minimum, maximum, enum,
/// items, additionalProperties: false). Returns every violation as `(path, problem)`.
pub fn check_schema(schema: &Value, value: &Value, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, value, path, &mut out);
    out
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let Some(s) = schema.as_object() else { return };
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "null" => value.is_null(),
            _ => true,
        };
        if !ok {
            out.push((
                path.to_string(),
                format!("must be of type {t}, not {value}"),
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            out.push((
                path.to_string(),
                format!("{value} is not one of {}", list.join(", ")),
            ));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if n < min {
                out.push((path.to_string(), format!("{n} is below the minimum {min}")));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if n > max {
                out.push((path.to_string(), format!("{n} is above the maximum {max}")));
            }
        }
    }
    if let Some(obj) = value.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(name) {
                out.push((format!("{path}.{name}"), "is required".into()));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => walk(sub, v, &format!("{path}.{k}"), out),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    out.push((format!("{path}.{k}"), "is not allowed by the schema".into()));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            walk(items, v, &format!("{path}[{i}]"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references() {
        let r: JobRef = "train:v3".parse().unwrap();
        assert_eq!((r.name.as_str(), r.version), ("train", Some(3)));
        assert_eq!("train:latest".parse::<JobRef>().unwrap().version, None);
        assert_eq!("team/proj/train".parse::<JobRef>().unwrap().name, "train");
        assert!("train:v".parse::<JobRef>().is_err());
        assert!("a b:v1".parse::<JobRef>().is_err() && "..:v1".parse::<JobRef>().is_err());
    }

    #[test]
    fn schema_violations_are_all_named_by_path() {
        let schema = json!({"type": "object", "required": ["lr", "epochs"],
            "additionalProperties": false,
            "properties": {
                "lr": {"type": "number", "minimum": 0.0, "maximum": 1.0},
                "epochs": {"type": "integer", "minimum": 1},
                "opt": {"enum": ["adam", "sgd"]},
                "model": {"type": "object", "properties": {"width": {"type": "integer"}}}}});
        let bad = json!({"lr": 3.0, "opt": "rmsprop", "model": {"width": 1.5}, "extra": 1});
        let got = check_schema(&schema, &bad, "run_config");
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "run_config.epochs",
            "run_config.lr",
            "run_config.opt",
            "run_config.model.width",
            "run_config.extra",
        ] {
            assert!(paths.contains(&want), "{want} in {got:?}");
        }
        let good = json!({"lr": 0.1, "epochs": 3, "opt": "adam"});
        assert!(check_schema(&schema, &good, "run_config").is_empty());
    }

    #[test]
    fn merges_are_deep() {
        let mut base = json!({"a": 1, "m": {"x": 1, "y": 2}})
            .as_object()
            .unwrap()
            .clone();
        let over = json!({"m": {"y": 3}, "b": 2}).as_object().unwrap().clone();
        deep_merge(&mut base, &over);
        assert_eq!(
            Value::Object(base),
            json!({"a": 1, "b": 2, "m": {"x": 1, "y": 3}})
        );
    }

    #[test]
    fn sources_must_fit_their_kind() {
        let spec = JobSpec {
            kind: JobKind::Git,
            source: JobSource {
                repo: Some("/r".into()),
                commit: Some("zz".into()),
                digest: None,
                image: None,
            },
            entrypoint: vec![],
            default_config: Map::new(),
            input_schema: Some(json!({"type": "object", "pattern": "x"})),
        };
        let fields: Vec<String> = spec.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["source.commit", "entrypoint", "input_schema.pattern"]
        );
    }
}
