//! W&B's sweep config (the YAML users already have), read from JSON values with every problem
//! reported at once, each naming its key path and the rule it breaks.

use crate::param::{Distribution, Param};
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Grid,
    Random,
    Bayes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    Minimize,
    Maximize,
}

impl Goal {
    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Goal::Minimize => a < b,
            Goal::Maximize => a > b,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub goal: Goal,
    /// Stop proposing runs once a run reaches this value.
    pub target: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hyperband {
    pub eta: f64,
    /// The first bracket's step.
    pub min_iter: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SweepConfig {
    pub method: Method,
    pub metric: Option<Metric>,
    pub parameters: Vec<(String, Param)>,
    pub run_cap: Option<u64>,
    pub early_terminate: Option<Hyperband>,
    pub program: Option<String>,
    /// The `command` list, macros unexpanded; `None`: W&B's default.
    pub command: Option<Vec<String>>,
    pub name: Option<String>,
}

const TOP_KEYS: &[&str] = &[
    "program",
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "run_cap",
    "command",
    "name",
    "description",
    "project",
    "entity",
    "job",
    "image_uri",
    "launch",
];

struct Problems(Vec<String>);

impl Problems {
    fn at(&mut self, path: &str, rule: impl std::fmt::Display) {
        // A key is the user's text: an empty one is shown quoted, so the problem still
        // says where.
        let path = if path.is_empty() { "\"\"" } else { path };
        self.0.push(format!("{path}: {rule}"));
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::String(s) => format!("the string {s:?}"),
        other => other.to_string(),
    }
}

impl SweepConfig {
    /// Reads a sweep config. Every problem is listed, as `path: rule`.
    pub fn parse(doc: &Value) -> Result<SweepConfig, Vec<String>> {
        let mut p = Problems(Vec::new());
        let Some(top) = doc.as_object() else {
            return Err(vec!["(top): a sweep config is a mapping of keys".into()]);
        };
        for key in top.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                p.at(key, format!("unknown key (known: {})", TOP_KEYS.join(", ")));
            }
        }
        let method = match top.get("method").and_then(Value::as_str) {
            Some("grid") => Method::Grid,
            Some("random") => Method::Random,
            Some("bayes") => Method::Bayes,
            Some(other) => {
                p.at("method", format!("{other:?} is not grid, random or bayes"));
                Method::Random
            }
            None => {
                p.at("method", "required: grid, random or bayes");
                Method::Random
            }
        };
        let metric = top.get("metric").and_then(|m| metric(m, &mut p));
        if method == Method::Bayes && metric.is_none() && !top.contains_key("metric") {
            p.at("metric", "bayes needs a metric to optimize");
        }
        let parameters = match top.get("parameters") {
            Some(Value::Object(map)) if !map.is_empty() => params(map, "parameters", &mut p),
            _ => {
                p.at(
                    "parameters",
                    "required: a mapping of parameter names to specs",
                );
                Vec::new()
            }
        };
        if method == Method::Grid && check_finite(&parameters, "parameters", &mut p) {
            let leaves = crate::search::leaves(&parameters);
            match crate::search::grid_size(&leaves) {
                Some(n) if n > MAX_GRID_POINTS => p.at(
                    "parameters",
                    format!(
                        "a grid of {n} points is more than {MAX_GRID_POINTS}: fewer values, \
                         or method random with run_cap"
                    ),
                ),
                _ => {}
            }
        }
        let run_cap = match top.get("run_cap") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n),
                _ => {
                    p.at(
                        "run_cap",
                        format!("must be a whole number ≥ 1, not {}", describe(v)),
                    );
                    None
                }
            },
        };
        let early_terminate = top
            .get("early_terminate")
            .and_then(|e| hyperband(e, &mut p));
        if early_terminate.is_some() && metric.is_none() {
            p.at("early_terminate", "needs a metric to compare runs by");
        }
        let command = match top.get("command") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => p.at(&format!("command[{i}]"), "must be a string"),
                    }
                }
                Some(out)
            }
            Some(v) => {
                p.at(
                    "command",
                    format!("must be a list of strings, not {}", describe(v)),
                );
                None
            }
        };
        let text = |k: &str, p: &mut Problems| match top.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                p.at(k, format!("must be a string, not {}", describe(v)));
                None
            }
        };
        let program = text("program", &mut p);
        let name = text("name", &mut p);
        if p.0.is_empty() {
            Ok(SweepConfig {
                method,
                metric,
                parameters,
                run_cap,
                early_terminate,
                program,
                command,
                name,
            })
        } else {
            Err(p.0)
        }
    }
}

fn metric(v: &Value, p: &mut Problems) -> Option<Metric> {
    let Some(m) = v.as_object() else {
        p.at("metric", "must be a mapping with `name` and `goal`");
        return None;
    };
    for key in m.keys() {
        if !["name", "goal", "target"].contains(&key.as_str()) {
            p.at(
                &format!("metric.{key}"),
                "unknown key (known: name, goal, target)",
            );
        }
    }
    let name = match m.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            p.at("metric.name", "required: the metric's name");
            return None;
        }
    };
    let goal = match m.get("goal").and_then(Value::as_str) {
        None | Some("minimize") => Goal::Minimize,
        Some("maximize") => Goal::Maximize,
        Some(other) => {
            p.at(
                "metric.goal",
                format!("{other:?} is not minimize or maximize"),
            );
            return None;
        }
    };
    let target = match m.get("target") {
        None | Some(Value::Null) => None,
        Some(t) => match t.as_f64() {
            Some(x) => Some(x),
            None => {
                p.at("metric.target", "must be a number");
                None
            }
        },
    };
    Some(Metric { name, goal, target })
}

fn hyperband(v: &Value, p: &mut Problems) -> Option<Hyperband> {
    let Some(e) = v.as_object() else {
        p.at(
            "early_terminate",
            "must be a mapping with `type: hyperband`",
        );
        return None;
    };
    for key in e.keys() {
        if !["type", "min_iter", "max_iter", "s", "eta", "strict"].contains(&key.as_str()) {
            p.at(
                &format!("early_terminate.{key}"),
                "unknown key (known: type, min_iter, max_iter, s, eta, strict)",
            );
        }
    }
    if e.get("type").and_then(Value::as_str) != Some("hyperband") {
        p.at("early_terminate.type", "must be hyperband");
        return None;
    }
    let eta = match e.get("eta") {
        None => 3.0,
        Some(v) => match v.as_f64() {
            Some(x) if x > 1.0 => x,
            _ => {
                p.at("early_terminate.eta", "must be a number > 1");
                return None;
            }
        },
    };
    let int = |k: &str, p: &mut Problems| match e.get(k) {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => {
                p.at(
                    &format!("early_terminate.{k}"),
                    "must be a whole number ≥ 1",
                );
                None
            }
        },
    };
    let (min_iter, max_iter, s) = (int("min_iter", p), int("max_iter", p), int("s", p));
    let min_iter = match (min_iter, max_iter, s) {
        (Some(m), _, _) => m,
        (None, Some(max), Some(s)) => ((max as f64) / eta.powi(s as i32)).max(1.0) as u64,
        _ => {
            p.at("early_terminate", "give min_iter, or max_iter and s");
            return None;
        }
    };
    Some(Hyperband { eta, min_iter })
}

fn params(map: &Map<String, Value>, path: &str, p: &mut Problems) -> Vec<(String, Param)> {
    let mut out = Vec::new();
    for (name, spec) in map {
        let here = format!("{path}.{name}");
        if let Some(param) = param(spec, &here, p) {
            out.push((name.clone(), param));
        }
    }
    out
}

fn param(spec: &Value, path: &str, p: &mut Problems) -> Option<Param> {
    let Some(s) = spec.as_object() else {
        p.at(
            path,
            "must be a mapping (value, values, distribution, min/max or parameters)",
        );
        return None;
    };
    if let Some(nested) = s.get("parameters") {
        return match nested.as_object() {
            Some(map) if !map.is_empty() => {
                Some(Param::Nested(params(map, &format!("{path}.parameters"), p)))
            }
            _ => {
                p.at(&format!("{path}.parameters"), "must be a non-empty mapping");
                None
            }
        };
    }
    const KNOWN: &[&str] = &[
        "value",
        "values",
        "probabilities",
        "distribution",
        "min",
        "max",
        "mu",
        "sigma",
        "q",
        "a",
        "b",
    ];
    for key in s.keys() {
        if !KNOWN.contains(&key.as_str()) {
            p.at(
                &format!("{path}.{key}"),
                format!("unknown key (known: {})", KNOWN.join(", ")),
            );
        }
    }
    let num = |k: &str, p: &mut Problems| -> Option<f64> {
        match s.get(k) {
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Some(x),
                _ => {
                    p.at(
                        &format!("{path}.{k}"),
                        format!("must be a number, not {}", describe(v)),
                    );
                    None
                }
            },
            None => {
                p.at(&format!("{path}.{k}"), "required by this distribution");
                None
            }
        }
    };
    let dist = s.get("distribution").and_then(Value::as_str);
    let range = |p: &mut Problems| -> Option<(f64, f64)> {
        let (min, max) = (num("min", p)?, num("max", p)?);
        if min >= max {
            p.at(
                &format!("{path}.min"),
                format!("must be below max ({min} ≥ {max})"),
            );
            return None;
        }
        Some((min, max))
    };
    let positive_range = |p: &mut Problems| -> Option<(f64, f64)> {
        let (min, max) = range(p)?;
        if min <= 0.0 {
            p.at(
                &format!("{path}.min"),
                "must be > 0 for a log distribution of values",
            );
            return None;
        }
        Some((min, max))
    };
    let q = |p: &mut Problems| -> Option<f64> {
        match s.get("q") {
            None => Some(1.0),
            Some(v) => match v.as_f64() {
                Some(x) if x > 0.0 => Some(x),
                _ => {
                    p.at(&format!("{path}.q"), "must be a number > 0");
                    None
                }
            },
        }
    };
    let gauss = |p: &mut Problems| -> Option<(f64, f64)> {
        let mu = s.get("mu").map_or(Some(0.0), |v| v.as_f64());
        let sigma = s.get("sigma").map_or(Some(1.0), |v| v.as_f64());
        match (mu, sigma) {
            (Some(mu), Some(sigma)) if sigma > 0.0 => Some((mu, sigma)),
            _ => {
                p.at(path, "mu must be a number and sigma a number > 0");
                None
            }
        }
    };
    use Distribution as D;
    let d = match dist {
        None if s.contains_key("value") => D::Constant(s["value"].clone()),
        None if s.contains_key("values") => categorical(s, path, p)?,
        None if s.contains_key("min") || s.contains_key("max") => {
            let both_int =
                s.get("min").is_some_and(Value::is_i64) && s.get("max").is_some_and(Value::is_i64);
            let (min, max) = range(p)?;
            if both_int {
                D::IntUniform {
                    min: min as i64,
                    max: max as i64,
                }
            } else {
                D::Uniform { min, max }
            }
        }
        None => {
            p.at(path, "give value, values, min/max or a distribution");
            return None;
        }
        Some("constant") => match s.get("value") {
            Some(v) => D::Constant(v.clone()),
            None => {
                p.at(&format!("{path}.value"), "required by constant");
                return None;
            }
        },
        Some("categorical") => categorical(s, path, p)?,
        Some("int_uniform") => {
            let (min, max) = (
                s.get("min").and_then(Value::as_i64),
                s.get("max").and_then(Value::as_i64),
            );
            match (min, max) {
                (Some(min), Some(max)) if min <= max => D::IntUniform { min, max },
                _ => {
                    p.at(path, "int_uniform needs whole-number min ≤ max");
                    return None;
                }
            }
        }
        Some("uniform") => {
            let (min, max) = range(p)?;
            D::Uniform { min, max }
        }
        Some("q_uniform") => {
            let ((min, max), q) = (range(p)?, q(p)?);
            D::QUniform { min, max, q }
        }
        Some("log_uniform") => {
            let (min, max) = range(p)?;
            D::LogUniform { min, max }
        }
        Some("log_uniform_values") => {
            let (min, max) = positive_range(p)?;
            D::LogUniformValues { min, max }
        }
        Some("q_log_uniform") => {
            let ((min, max), q) = (range(p)?, q(p)?);
            D::QLogUniform { min, max, q }
        }
        Some("q_log_uniform_values") => {
            let ((min, max), q) = (positive_range(p)?, q(p)?);
            D::QLogUniformValues { min, max, q }
        }
        Some("inv_log_uniform") => {
            let (min, max) = range(p)?;
            D::InvLogUniform { min, max }
        }
        Some("inv_log_uniform_values") => {
            let (min, max) = positive_range(p)?;
            D::InvLogUniformValues { min, max }
        }
        Some("normal") => {
            let (mu, sigma) = gauss(p)?;
            D::Normal { mu, sigma }
        }
        Some("q_normal") => {
            let ((mu, sigma), q) = (gauss(p)?, q(p)?);
            D::QNormal { mu, sigma, q }
        }
        Some("log_normal") => {
            let (mu, sigma) = gauss(p)?;
            D::LogNormal { mu, sigma }
        }
        Some("q_log_normal") => {
            let ((mu, sigma), q) = (gauss(p)?, q(p)?);
            D::QLogNormal { mu, sigma, q }
        }
        Some(d @ ("beta" | "q_beta")) => {
            let a = s.get("a").map_or(Some(1.0), |v| v.as_f64());
            let b = s.get("b").map_or(Some(1.0), |v| v.as_f64());
            let (Some(a), Some(b)) = (a, b) else {
                p.at(path, "a and b must be numbers > 0");
                return None;
            };
            if a <= 0.0 || b <= 0.0 {
                p.at(path, "a and b must be numbers > 0");
                return None;
            }
            if d == "beta" {
                D::Beta { a, b }
            } else {
                D::QBeta { a, b, q: q(p)? }
            }
        }
        Some(other) => {
            p.at(
                &format!("{path}.distribution"),
                format!("unknown distribution {other:?}"),
            );
            return None;
        }
    };
    Some(Param::Leaf(d))
}

fn categorical(s: &Map<String, Value>, path: &str, p: &mut Problems) -> Option<Distribution> {
    let values = match s.get("values") {
        Some(Value::Array(v)) if !v.is_empty() => v.clone(),
        _ => {
            p.at(&format!("{path}.values"), "must be a non-empty list");
            return None;
        }
    };
    let probabilities = match s.get("probabilities") {
        None => None,
        Some(Value::Array(ps)) => {
            let ps: Option<Vec<f64>> = ps.iter().map(Value::as_f64).collect();
            match ps {
                Some(ps)
                    if ps.len() == values.len()
                        && ps.iter().all(|x| *x >= 0.0)
                        && (ps.iter().sum::<f64>() - 1.0).abs() < 1e-6 =>
                {
                    Some(ps)
                }
                _ => {
                    p.at(
                        &format!("{path}.probabilities"),
                        "must be one number ≥ 0 per value, summing to 1",
                    );
                    return None;
                }
            }
        }
        Some(_) => {
            p.at(
                &format!("{path}.probabilities"),
                "must be a list of numbers",
            );
            return None;
        }
    };
    Some(Distribution::Categorical {
        values,
        probabilities,
    })
}

/// The most points a grid may have: each proposal walks the grid from its start.
pub const MAX_GRID_POINTS: u128 = 1_000_000;

/// Whether every parameter is finite, naming each that is not.
fn check_finite(params: &[(String, Param)], path: &str, p: &mut Problems) -> bool {
    let mut all = true;
    for (name, param) in params {
        let here = format!("{path}.{name}");
        match param {
            Param::Nested(inner) => {
                all &= check_finite(inner, &format!("{here}.parameters"), p);
            }
            Param::Leaf(d) if d.grid_len().is_none() => {
                all = false;
                p.at(
                    &here,
                    "grid needs finite parameters (value, values or an integer range)",
                );
            }
            Param::Leaf(_) => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_documented_example_parses() {
        let doc = json!({
            "program": "train.py", "method": "bayes",
            "metric": {"name": "val_loss", "goal": "minimize"},
            "parameters": {
                "lr": {"distribution": "log_uniform_values", "min": 0.0001, "max": 0.1},
                "batch": {"values": [16, 32, 64]},
                "optimizer": {"value": "adam"},
                "dropout": {"distribution": "uniform", "min": 0.1, "max": 0.5},
                "layers": {"distribution": "int_uniform", "min": 1, "max": 6},
                "model": {"parameters": {"width": {"values": [128, 256]}}}
            },
            "early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 3},
            "run_cap": 20,
            "command": ["${env}", "${interpreter}", "${program}", "${args}"]
        });
        let c = SweepConfig::parse(&doc).unwrap();
        assert_eq!(c.method, Method::Bayes);
        assert_eq!(c.run_cap, Some(20));
        assert_eq!(c.parameters.len(), 6);
        assert_eq!(
            c.early_terminate,
            Some(Hyperband {
                eta: 3.0,
                min_iter: 3
            })
        );
        let hb = json!({"type": "hyperband", "max_iter": 27, "s": 2});
        let mut p = Problems(Vec::new());
        assert_eq!(hyperband(&hb, &mut p).unwrap().min_iter, 3);
    }

    #[test]
    fn every_problem_is_named_by_path() {
        let doc = json!({
            "method": "bayesian", "colour": 1, "run_cap": 0,
            "metric": {"name": "loss", "goal": "lowest"},
            "parameters": {
                "lr": {"distribution": "log_uniform_values", "min": 0, "max": 1},
                "x": {"distribution": "uniform", "min": 2, "max": 1},
                "y": {"distribution": "gaussian"},
                "z": {"values": []},
                "m": {"parameters": {"w": {"values": [1], "probabilities": [0.5]}}}
            }
        });
        let problems = SweepConfig::parse(&doc).unwrap_err().join("\n");
        for want in [
            "method:",
            "colour:",
            "run_cap:",
            "metric.goal:",
            "parameters.lr.min:",
            "parameters.x.min:",
            "parameters.y.distribution:",
            "parameters.z.values:",
            "parameters.m.parameters.w.probabilities:",
        ] {
            assert!(problems.contains(want), "{want} missing in:\n{problems}");
        }
    }

    #[test]
    fn a_grid_too_large_to_walk_is_refused_without_listing_it() {
        // 2^64 values of one integer range, times two: refused at once, by count.
        let doc = json!({"method": "grid", "parameters": {
            "seed": {"min": i64::MIN, "max": i64::MAX},
            "lr": {"values": [0.1, 0.01]}}});
        let errors = SweepConfig::parse(&doc).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("parameters: a grid of 36893488147419103232 points"));
        let doc = json!({"method": "grid", "parameters": {"seed": {"min": 1, "max": 1000000}}});
        assert!(SweepConfig::parse(&doc).is_ok());
    }

    #[test]
    fn grid_refuses_continuous_parameters() {
        let doc = json!({"method": "grid", "parameters": {"x": {"min": 0.0, "max": 1.0},
            "n": {"min": 1, "max": 3}}});
        let problems = SweepConfig::parse(&doc).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("parameters.x:"));
    }
}
