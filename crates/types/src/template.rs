//! Queue config templates: typed template variables, the checks the server applies to the
//! values a user gives, and the `{{name}}` substitution into a queue's resource args.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    String,
    Number,
    Integer,
}

/// The schema of one template variable, as W&B queues define it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateVariable {
    #[serde(rename = "type")]
    pub var_type: VarType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub allowed: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A value that broke a variable's schema: which variable, which rule, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateError {
    pub variable: String,
    /// `unknown`, `missing`, `type`, `minimum`, `maximum` or `enum`.
    pub rule: String,
    pub message: String,
}

impl TemplateError {
    fn new(variable: &str, rule: &str, message: String) -> TemplateError {
        TemplateError {
            variable: variable.to_string(),
            rule: rule.to_string(),
            message,
        }
    }
}

impl TemplateVariable {
    /// Checks (and, for a number given to a string variable, converts) one value.
    pub fn check(&self, name: &str, value: &Value) -> Result<Value, TemplateError> {
        let value = match (self.var_type, value) {
            (VarType::String, Value::String(_)) => value.clone(),
            (VarType::String, Value::Number(n)) => Value::String(n.to_string()),
            (VarType::Number, Value::Number(_)) => value.clone(),
            (VarType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => value.clone(),
            (VarType::Integer, Value::Number(n))
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) =>
            {
                Value::from(n.as_f64().unwrap_or_default() as i64)
            }
            (t, v) => {
                let want = format!("{t:?}").to_lowercase();
                return Err(TemplateError::new(
                    name,
                    "type",
                    format!("template variable {name:?} must be of type {want}, got {v}"),
                ));
            }
        };
        if let Some(n) = value.as_f64() {
            if let Some(min) = self.minimum.filter(|m| n < *m) {
                return Err(TemplateError::new(
                    name,
                    "minimum",
                    format!("template variable {name:?} is {n}, below its minimum {min}"),
                ));
            }
            if let Some(max) = self.maximum.filter(|m| n > *m) {
                return Err(TemplateError::new(
                    name,
                    "maximum",
                    format!("template variable {name:?} is {n}, above its maximum {max}"),
                ));
            }
        }
        if let Some(allowed) = &self.allowed {
            let same =
                |a: &Value| a == &value || (a.as_f64().is_some() && a.as_f64() == value.as_f64());
            if !allowed.iter().any(same) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                return Err(TemplateError::new(
                    name,
                    "enum",
                    format!(
                        "template variable {name:?} is {value}, not one of [{}]",
                        list.join(", ")
                    ),
                ));
            }
        }
        Ok(value)
    }
}

/// Checks a queue's variable definitions against its config template: every `{{name}}` used
/// must be defined, and every default must pass its own schema.
pub fn check_definitions(
    vars: &BTreeMap<String, TemplateVariable>,
    template: &Value,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (name, var) in vars {
        if let Some(default) = &var.default {
            if let Err(e) = var.check(name, default) {
                problems.push((format!("template_variables.{name}.default"), e.message));
            }
        }
        if let (Some(min), Some(max)) = (var.minimum, var.maximum) {
            if min > max {
                problems.push((
                    format!("template_variables.{name}"),
                    format!("minimum {min} is above maximum {max}"),
                ));
            }
        }
    }
    let mut used = Vec::new();
    placeholders(template, &mut used);
    for name in used {
        if !vars.contains_key(&name) {
            problems.push((
                "config".to_string(),
                format!("uses {{{{{name}}}}} but no template variable {name:?} is defined"),
            ));
        }
    }
    problems
}

/// Fills the values a user gave with defaults and checks each one. Every problem is
/// reported, not only the first.
pub fn resolve(
    vars: &BTreeMap<String, TemplateVariable>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<TemplateError>> {
    let mut errors = Vec::new();
    for name in given.keys().filter(|n| !vars.contains_key(*n)) {
        let known: Vec<&str> = vars.keys().map(String::as_str).collect();
        errors.push(TemplateError::new(
            name,
            "unknown",
            format!(
                "template variable {name:?} is not defined by this queue (it defines: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let mut values = Map::new();
    for (name, var) in vars {
        match given.get(name).or(var.default.as_ref()) {
            None => errors.push(TemplateError::new(
                name,
                "missing",
                format!("template variable {name:?} has no default and was not set"),
            )),
            Some(v) => match var.check(name, v) {
                Ok(v) => {
                    values.insert(name.clone(), v);
                }
                Err(e) => errors.push(e),
            },
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// Replaces `{{name}}` in every string of `template`. A string that is exactly one
/// placeholder takes the value with its type (so `"{{gpus}}"` becomes the number 2).
pub fn substitute(template: &Value, values: &Map<String, Value>) -> Value {
    map_strings(template, &|s| substitute_str(s, values))
}

/// `value` with every string in it (not the keys) replaced by what `f` makes of it.
pub fn map_strings(value: &Value, f: &impl Fn(&str) -> Value) -> Value {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => Value::Array(items.iter().map(|v| map_strings(v, f)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), map_strings(v, f)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_str(s: &str, values: &Map<String, Value>) -> Value {
    let trimmed = s.trim();
    if let Some(name) = whole_placeholder(trimmed) {
        if let Some(v) = values.get(name) {
            return v.clone();
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        match values.get(name) {
            Some(Value::String(v)) => out.push_str(v),
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str(&rest[start..start + len + 4]),
        }
        rest = &rest[start + len + 4..];
    }
    out.push_str(rest);
    Value::String(out)
}

fn whole_placeholder(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then(|| inner.trim())
}

fn placeholders(template: &Value, out: &mut Vec<String>) {
    match template {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let Some(len) = rest[start + 2..].find("}}") else {
                    break;
                };
                out.push(rest[start + 2..start + 2 + len].trim().to_string());
                rest = &rest[start + len + 4..];
            }
        }
        Value::Array(items) => items.iter().for_each(|v| placeholders(v, out)),
        Value::Object(map) => map.values().for_each(|v| placeholders(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> BTreeMap<String, TemplateVariable> {
        serde_json::from_value(json!({
            "gpus": {"type": "integer", "default": 1, "minimum": 0, "maximum": 8},
            "partition": {"type": "string", "enum": ["debug", "gpu"]},
            "mem": {"type": "number", "default": 4.5}
        }))
        .unwrap()
    }

    fn rule_of(given: Value) -> Vec<(String, String)> {
        resolve(&vars(), given.as_object().unwrap())
            .unwrap_err()
            .into_iter()
            .map(|e| (e.variable, e.rule))
            .collect()
    }

    #[test]
    fn every_rule_is_enforced_and_named() {
        let p = |v: &str, r: &str| vec![(v.to_string(), r.to_string())];
        assert_eq!(
            rule_of(json!({"partition": "debug", "gpus": 9})),
            p("gpus", "maximum")
        );
        assert_eq!(
            rule_of(json!({"partition": "debug", "gpus": -1})),
            p("gpus", "minimum")
        );
        assert_eq!(
            rule_of(json!({"partition": "debug", "gpus": "two"})),
            p("gpus", "type")
        );
        assert_eq!(
            rule_of(json!({"partition": "debug", "gpus": 1.5})),
            p("gpus", "type")
        );
        assert_eq!(rule_of(json!({"partition": "cpu"})), p("partition", "enum"));
        assert_eq!(rule_of(json!({})), p("partition", "missing"));
        assert_eq!(
            rule_of(json!({"partition": "gpu", "colour": 1})),
            p("colour", "unknown")
        );
    }

    #[test]
    fn defaults_fill_and_values_substitute_with_their_type() {
        let values = resolve(&vars(), json!({"partition": "gpu"}).as_object().unwrap()).unwrap();
        let template =
            json!({"gres": "gpu:{{gpus}}", "n": "{{ gpus }}", "p": ["{{partition}}"], "x": 3});
        let out = substitute(&template, &values);
        assert_eq!(out, json!({"gres": "gpu:1", "n": 1, "p": ["gpu"], "x": 3}));
    }

    #[test]
    fn definitions_are_checked_against_the_template() {
        let problems = check_definitions(&vars(), &json!({"a": "{{nope}}"}));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("nope"));
        let bad: BTreeMap<String, TemplateVariable> =
            serde_json::from_value(json!({"g": {"type": "integer", "default": 20, "maximum": 8}}))
                .unwrap();
        assert_eq!(check_definitions(&bad, &json!({})).len(), 1);
    }
}
