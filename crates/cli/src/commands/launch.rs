//! `liftoff launch`: build a launch spec from flags (or a W&B launch spec file) and enqueue it.

use crate::connect::{Global, Output};
use anyhow::bail;
use clap::Args;
use liftoff_types::{LaunchSpec, Priority};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// The queue to put the run on.
    #[arg(long, short = 'q', default_value = "default")]
    pub queue: String,
    /// critical, high, medium or low.
    #[arg(long)]
    pub priority: Option<Priority>,
    /// A value for one of the queue's template variables: NAME=VALUE.
    #[arg(long = "set-var", value_name = "NAME=VALUE")]
    pub set_vars: Vec<String>,
    /// A run config entry: KEY=VALUE (dots nest: model.width=128).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// The run config from a JSON or YAML file; --config entries go over it.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// The run's name.
    #[arg(long)]
    pub name: Option<String>,
    /// A whole launch spec in W&B's JSON form; the flags above go over it.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// A job to run: NAME, NAME:latest or NAME:vN; words after `--` are extra arguments.
    #[arg(long)]
    pub job: Option<String>,
    /// An environment variable for the run: KEY=VALUE.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Retries by cause for this run, within its queue's: lost=N, preempted=N,
    /// start-timeout=N, build=N, exit-code=N[:CODE,...], max=N, backoff=SECONDS.
    #[arg(long = "retry", value_name = "CAUSE=N")]
    pub retry: Vec<String>,
    /// Ship this directory with the run (as a code job: content-addressed, .gitignore
    /// honoured) instead of running the command where it was launched from.
    #[arg(long, value_name = "DIR", conflicts_with = "job")]
    pub code: Option<PathBuf>,
    /// Follow the run's output live and exit with its exit code.
    #[arg(long)]
    pub wait: bool,
    /// The command to run, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Enqueues; returns the exit code (the run's own with `--wait`).
pub async fn run(g: &Global, args: LaunchArgs) -> anyhow::Result<u8> {
    let client = g.client()?;
    let queue = args.queue.clone();
    let wait = args.wait;
    let code = args.code.clone();
    let (mut spec, git) = build_spec(args)?;
    let shipped = match (code, git) {
        (Some(dir), _) => Some(super::job::ship_code(&client, &dir, &spec).await?),
        (None, Some(git)) => Some(super::job::ship_git(&client, &git, &spec).await?),
        (None, None) => None,
    };
    if let Some(job) = shipped {
        spec.overrides.entry_point = None;
        spec.cwd = None;
        spec.job = Some(job);
    }
    let item = client.enqueue(&queue, &spec).await?;
    if wait {
        // Ctrl-C leaves the run alone: say so, and how to reach it again.
        return tokio::select! {
            code = super::follow::wait(&client, item.id) => code,
            _ = tokio::signal::ctrl_c() => {
                let id = item.id;
                eprintln!(
                    "\nitem {id} goes on: `liftoff logs -f {id}` follows it again, `liftoff stop {id}` stops it"
                );
                Ok(130)
            }
        };
    }
    match g.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&item)?),
        Output::Table => println!("{}", item.id),
    }
    Ok(0)
}

/// A git source a W&B spec names with `uri` (the repository) and `git` (`remote`, `commit`).
#[derive(Debug, Clone, PartialEq)]
pub struct GitSource {
    pub remote: String,
    /// A commit or a ref (branch, tag); HEAD when absent.
    pub version: Option<String>,
}

/// Takes W&B's `uri` and `git` out of a spec: `uri` is the repository (W&B's `launch --uri`),
/// `git.remote` may name it instead, `git.commit` pins the commit.
fn take_git_source(raw: &mut Value, path: &Path) -> anyhow::Result<Option<GitSource>> {
    let Some(map) = raw.as_object_mut() else {
        return Ok(None);
    };
    let uri = map.remove("uri");
    let git = map.remove("git");
    if uri.is_none() && git.is_none() {
        return Ok(None);
    }
    let at = path.display();
    let uri = match uri {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::Null) | None => None,
        Some(_) => bail!("{at}: uri must be the repository's URL as a string"),
    };
    let (mut remote, mut version) = (None, None);
    match git {
        Some(Value::Object(g)) => {
            for (key, value) in g {
                let Value::String(s) = value else {
                    bail!("{at}: git.{key} must be a string");
                };
                match key.as_str() {
                    "remote" => remote = Some(s),
                    "commit" => version = Some(s),
                    _ => bail!("{at}: git.{key}: unknown key (known: remote, commit)"),
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(_) => bail!("{at}: git must be a mapping with remote and commit"),
    }
    let Some(remote) = uri.or(remote) else {
        bail!("{at}: git needs the repository: give uri or git.remote");
    };
    if map.contains_key("job") {
        bail!("{at}: a spec runs a job or a git repository (uri), not both");
    }
    Ok(Some(GitSource { remote, version }))
}

/// The spec, and the git repository it names when it has W&B's `uri`/`git` keys (launched
/// as a git job, the way W&B turns a URI into a job).
pub fn build_spec(args: LaunchArgs) -> anyhow::Result<(LaunchSpec, Option<GitSource>)> {
    let mut git = None;
    let mut spec = match &args.spec {
        Some(path) => {
            let mut raw: Value = super::read_document(path)?;
            git = take_git_source(&mut raw, path)?;
            let unknown = liftoff_types::spec::unknown_keys(&raw);
            if !unknown.is_empty() {
                let lines: Vec<String> = unknown.iter().map(|(k, m)| format!("{k}: {m}")).collect();
                bail!(
                    "{} is not a launch spec:\n  {}",
                    path.display(),
                    lines.join("\n  ")
                );
            }
            serde_json::from_value(raw).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => LaunchSpec::default(),
    };
    if let Some(job) = args.job {
        spec.job = Some(job);
    }
    if spec.job.is_some() {
        // With a job, words after `--` are extra arguments to its entrypoint.
        spec.overrides.args.extend(args.command);
    } else if !args.command.is_empty() {
        spec.overrides.entry_point = Some(args.command);
        // An inline command runs where it was launched from, as `sbatch` and pueue do.
        if spec.cwd.is_none() && args.code.is_none() {
            let cwd = std::env::current_dir()
                .map_err(|e| anyhow::anyhow!("finding the current directory: {e}"))?;
            spec.cwd = Some(cwd.to_string_lossy().into_owned());
        }
    }
    if let Some(retry) = super::retry::parse(&args.retry)? {
        spec.retry = Some(retry);
    }
    for entry in &args.env {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env {entry:?} must be KEY=VALUE"))?;
        spec.env.insert(key.to_string(), value.to_string());
    }
    if git.is_none()
        && spec.job.is_none()
        && spec.overrides.entry_point.is_none()
        && spec.docker.is_none()
    {
        bail!("nothing to run: give a command after `--` (liftoff launch -- python train.py), --job or --spec");
    }
    if let Some(path) = &args.config_file {
        let config: Value = super::read_document(path)?;
        let Value::Object(config) = config else {
            bail!("{} must hold a mapping of config keys", path.display());
        };
        deep_merge(&mut spec.overrides.run_config, config);
    }
    for entry in &args.config {
        let (key, value) = super::key_value(entry)?;
        set_dotted(&mut spec.overrides.run_config, &key, value)?;
    }
    for var in &args.set_vars {
        let (key, value) = super::key_value(var)?;
        spec.template_variables.insert(key, value);
    }
    if args.priority.is_some() {
        spec.priority = args.priority;
    }
    if args.name.is_some() {
        spec.name = args.name;
    }
    Ok((spec, git))
}

/// Merges `over` into `base`, recursing into mappings present in both.
pub fn deep_merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => deep_merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

pub(crate) fn set_dotted(
    map: &mut Map<String, Value>,
    key: &str,
    value: Value,
) -> anyhow::Result<()> {
    let mut parts = key.split('.').peekable();
    let mut current = map;
    while let Some(part) = parts.next() {
        if part.is_empty() {
            bail!("--config key {key:?} has an empty part");
        }
        if parts.peek().is_none() {
            current.insert(part.to_string(), value);
            return Ok(());
        }
        let next = current
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        current = next.as_object_mut().expect("made an object above");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_keys_nest_and_merge() {
        let mut m = Map::new();
        set_dotted(&mut m, "model.width", json!(128)).unwrap();
        set_dotted(&mut m, "model.depth", json!(4)).unwrap();
        set_dotted(&mut m, "lr", json!(0.1)).unwrap();
        assert_eq!(
            Value::Object(m.clone()),
            json!({"model": {"width": 128, "depth": 4}, "lr": 0.1})
        );
        deep_merge(
            &mut m,
            json!({"model": {"width": 256}})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(m["model"], json!({"width": 256, "depth": 4}));
        assert!(set_dotted(&mut m, "a..b", json!(1)).is_err());
    }
}
