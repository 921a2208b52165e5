//! One module per subcommand family.

pub mod agent;
pub mod follow;
pub mod ids;
pub mod job;
pub mod launch;
pub mod list;
pub mod prune;
pub mod queue;
pub mod retry;
pub mod server;
pub mod show;
pub mod sweep;
pub mod token;
pub mod up;
pub mod upload;

/// Reads a `KEY=VALUE` flag. The value is JSON when it parses as JSON (`2`, `0.1`, `true`,
/// `[1,2]`), else the plain string, so `--set-var gpus=2` sends a number and
/// `--set-var partition=gpu` a string.
pub fn key_value(arg: &str) -> anyhow::Result<(String, serde_json::Value)> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{arg:?} must be KEY=VALUE"))?;
    if key.is_empty() {
        anyhow::bail!("{arg:?} has an empty key");
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
    Ok((key.to_string(), value))
}

/// Reads a JSON or YAML document from a file (YAML is a superset of JSON).
pub fn read_document<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn values_are_json_when_they_can_be() {
        assert_eq!(super::key_value("a=2").unwrap(), ("a".into(), json!(2)));
        assert_eq!(
            super::key_value("a=gpu").unwrap(),
            ("a".into(), json!("gpu"))
        );
        assert_eq!(
            super::key_value("a=x=y").unwrap(),
            ("a".into(), json!("x=y"))
        );
        assert!(super::key_value("novalue").is_err());
        assert!(super::key_value("=1").is_err());
    }
}
