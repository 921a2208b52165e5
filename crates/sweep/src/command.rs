//! The sweep's `command` list and its macros, expanded for one run.

use serde_json::Value;
use std::collections::BTreeMap;

/// W&B's default command when the sweep gives none.
pub const DEFAULT: &[&str] = &["${env}", "${interpreter}", "${program}", "${args}"];

/// What the macros refer to.
pub struct Context<'a> {
    pub program: Option<&'a str>,
    /// The interpreter for `${interpreter}` (`python3`).
    pub interpreter: &'a str,
    /// The run's parameters (a JSON object, nested parameters as objects).
    pub params: &'a Value,
    /// For `${envvar:NAME}`.
    pub env: &'a BTreeMap<String, String>,
    /// For `${args_json_file}`: where the run's parameters are written as JSON.
    pub args_json_file: Option<&'a str>,
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn flat(params: &Value) -> Vec<(String, &Value)> {
    params
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default()
}

/// Expands the command into an argv. `${env}` becomes nothing (the runner passes the
/// environment); a macro that expands to several arguments (`${args}`) must stand alone.
pub fn expand(command: &[String], cx: &Context) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    for (i, word) in command.iter().enumerate() {
        match word.as_str() {
            "${env}" => {}
            "${interpreter}" => argv.push(cx.interpreter.to_string()),
            "${program}" => match cx.program {
                Some(p) => argv.push(p.to_string()),
                None => {
                    return Err(format!(
                        "command[{i}]: ${{program}} but the sweep has no program"
                    ))
                }
            },
            "${args}" => argv.extend(
                flat(cx.params)
                    .iter()
                    .map(|(k, v)| format!("--{k}={}", render(v))),
            ),
            "${args_no_equals}" => {
                for (k, v) in flat(cx.params) {
                    argv.push(format!("--{k}"));
                    argv.push(render(v));
                }
            }
            "${args_no_hyphens}" => argv.extend(
                flat(cx.params)
                    .iter()
                    .map(|(k, v)| format!("{k}={}", render(v))),
            ),
            "${args_no_boolean_flags}" => {
                for (k, v) in flat(cx.params) {
                    match v {
                        Value::Bool(true) => argv.push(format!("--{k}")),
                        Value::Bool(false) => {}
                        other => argv.push(format!("--{k}={}", render(other))),
                    }
                }
            }
            "${args_json}" => argv.push(cx.params.to_string()),
            "${args_json_file}" => match cx.args_json_file {
                Some(f) => argv.push(f.to_string()),
                None => {
                    return Err(format!(
                        "command[{i}]: ${{args_json_file}} has no file here"
                    ))
                }
            },
            other => argv.push(expand_inline(other, cx).map_err(|e| format!("command[{i}]: {e}"))?),
        }
    }
    if argv.is_empty() {
        return Err("the command expands to nothing".into());
    }
    Ok(argv)
}

/// `${envvar:NAME}` inside a word; any other `${...}` is an error.
fn expand_inline(word: &str, cx: &Context) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = word;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            return Err(format!("unclosed macro in {word:?}"));
        };
        let name = &rest[start + 2..start + end];
        match name.strip_prefix("envvar:") {
            Some(var) => out.push_str(cx.env.get(var).map_or("", String::as_str)),
            None => {
                return Err(format!(
                    "unknown macro ${{{name}}} (or one that must stand alone)"
                ))
            }
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cx<'a>(params: &'a Value, env: &'a BTreeMap<String, String>) -> Context<'a> {
        Context {
            program: Some("train.py"),
            interpreter: "python3",
            params,
            env,
            args_json_file: None,
        }
    }

    #[test]
    fn macros_expand() {
        let params = json!({"lr": 0.1, "opt": "adam", "fast": true, "m": {"w": 128}});
        let env = BTreeMap::from([("DATA".to_string(), "/d".to_string())]);
        let cmd: Vec<String> = DEFAULT.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            expand(&cmd, &cx(&params, &env)).unwrap(),
            vec![
                "python3",
                "train.py",
                "--fast=true",
                "--lr=0.1",
                "--m={\"w\":128}",
                "--opt=adam"
            ]
        );
        let cmd = vec![
            "${program}".to_string(),
            "${args_no_boolean_flags}".into(),
            "--data=${envvar:DATA}".into(),
        ];
        let argv = expand(&cmd, &cx(&params, &env)).unwrap();
        assert!(argv.contains(&"--fast".to_string()));
        assert_eq!(argv.last().unwrap(), "--data=/d");
        let cmd = vec!["${args_no_hyphens}".to_string()];
        assert!(expand(&cmd, &cx(&params, &env))
            .unwrap()
            .contains(&"lr=0.1".to_string()));
        assert!(expand(&["x${args}".to_string()], &cx(&params, &env)).is_err());
        assert!(expand(&["${env}".to_string()], &cx(&params, &env)).is_err());
    }
}
