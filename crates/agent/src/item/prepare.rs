//! What a run is made of before it starts: its command (the spec's entrypoint or its job's),
//! its id, its source and what it runs in (a Python environment, or an image the runner
//! builds), its directory (a reused one when there is a spare), its config file and
//! environment, and its resource args with W&B's agent-side macros expanded.

use crate::state::Agent;
use liftoff_runner::{BuildRequest, RunEnv, RunSpec, Runner};
use liftoff_types::job::JobKind;
use liftoff_types::{Item, JobVersion, LaunchSpec, RunId};
use rand::Rng;
use std::sync::Arc;

/// The argv of an item: the entrypoint (the spec's override, else the job's) and its extra
/// args.
pub(crate) fn command(spec: &LaunchSpec, job: Option<&JobVersion>) -> Result<Vec<String>, String> {
    if let Some(job) = job {
        let mut argv = spec
            .overrides
            .entry_point
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| job.spec.entrypoint.clone());
        argv.extend(spec.overrides.args.iter().cloned());
        return Ok(argv);
    }
    let mut argv = spec.overrides.entry_point.clone().unwrap_or_default();
    // An image runs its own command when the spec gives none.
    let image = spec
        .docker
        .as_ref()
        .is_some_and(|d| d.docker_image.is_some());
    if !image && argv.first().is_none_or(|p| p.is_empty()) {
        return Err("the launch spec has no command (overrides.entry_point)".into());
    }
    argv.extend(spec.overrides.args.iter().cloned());
    Ok(argv)
}

pub(crate) fn run_id_for(item: &Item) -> Result<RunId, String> {
    match &item.spec.run_id {
        Some(id) => id.parse(),
        None => {
            const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let mut rng = rand::rng();
            let id: String = (0..8)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect();
            id.parse()
        }
    }
}

/// The run's directory, files and environment; `python`: the job's virtual environment.
pub(crate) async fn prepare(
    agent: &Agent,
    item: &Item,
    run_id: &RunId,
    token: &str,
    argv: Vec<String>,
    python: Option<&std::path::Path>,
    sandboxed: bool,
) -> Result<RunSpec, String> {
    let dir = agent.journal.run_dir(run_id);
    let config = serde_json::Value::Object(item.spec.overrides.run_config.clone()).to_string();
    // Most runs of a busy agent have no config; they share one read-only `{}` file instead of
    // costing a file each (file creation dominates short runs on a journaling file system).
    let own_config = !item.spec.overrides.run_config.is_empty();
    make_dir(agent, &dir, own_config.then(|| config.clone())).await?;
    let config_file = if own_config {
        dir.join("config.json")
    } else {
        agent.journal.empty_config()
    };
    let metrics_file = liftoff_runner::metrics_file(&dir, sandboxed);
    if sandboxed {
        let shared = dir.join("box");
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(&shared))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot create the run's box directory: {e}"))?;
    }
    let workdir = workdir(agent, item, &dir, sandboxed).await?;
    let output = dir.join("output.log");
    let vars = crate::env::RunVars {
        run_id: run_id.as_str(),
        run_name: item.spec.name.as_deref(),
        item_id: item.id.0,
        queue: &item.queue,
        api_url: &agent.api_url,
        run_token: token,
        config_json: &config,
        config_file: &config_file.to_string_lossy(),
        metrics_file: &metrics_file.to_string_lossy(),
        sweep_id: item.spec.sweep_id.as_deref(),
        project: item.spec.project.as_deref(),
        attempt: 1
            + item.attempts
            + item
                .retries
                .get(&liftoff_types::RetryCause::Preempted)
                .copied()
                .unwrap_or(0),
    };
    let resource_args = expand_macros(&item.resource_args, &macros(item, run_id));
    let mut own = crate::env::run_env(&agent.config.env, &vars);
    // The spec's own variables (`launch --env`); liftoff's own names are refused at enqueue,
    // so these cannot change how the run reaches the server.
    for (key, value) in &item.spec.env {
        own.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let mut env = RunEnv {
        base: agent.base_env.clone(),
        own,
    };
    // The resource args as the runner got them (templates substituted, macros expanded), for
    // runs on backends that have none of their own to read them from.
    env.own
        .insert("LIFTOFF_RESOURCE_ARGS".into(), resource_args.to_string());
    if let Some(venv) = python {
        let path = env.get("PATH").cloned().unwrap_or_default();
        let bin = venv.join("bin").to_string_lossy().into_owned();
        env.own.insert("PATH".into(), format!("{bin}:{path}"));
        env.own
            .insert("VIRTUAL_ENV".into(), venv.to_string_lossy().into_owned());
    }
    Ok(RunSpec {
        attempt_of: agent.store_id.as_ref().map(|s| format!("{s}/{}", item.id)),
        run_id: run_id.clone(),
        argv,
        env,
        workdir,
        output,
        resource_args,
        // The runner holds runs in line so that a slot that frees starts the next at once.
        concurrency: u32::try_from(agent.config.max_jobs).ok(),
        image: None,
    })
}

/// Where the run starts: an inline command in the directory it was launched from (as
/// `sbatch` and pueue do), when the runner runs on this machine's files; a job, an image or a
/// spec without one in its own `work/`. A launch directory this machine does not have fails
/// the run now, naming it, rather than the command later with "file not found".
async fn workdir(
    agent: &Agent,
    item: &Item,
    dir: &std::path::Path,
    sandboxed: bool,
) -> Result<std::path::PathBuf, String> {
    let spec = &item.spec;
    let image = spec
        .docker
        .as_ref()
        .is_some_and(|d| d.docker_image.is_some());
    let cwd = match &spec.cwd {
        Some(cwd) if spec.job.is_none() && !image && !sandboxed => cwd,
        _ => return Ok(dir.join("work")),
    };
    match tokio::fs::metadata(cwd).await {
        Ok(m) if m.is_dir() => Ok(cwd.into()),
        Ok(_) => Err(format!(
            "the run was launched from {cwd}, which is not a directory on {}",
            agent.config.hostname
        )),
        Err(e) => Err(format!(
            "the run was launched from {cwd}, which this agent's machine ({}) cannot enter: {e}; \
             launch it with `--code {cwd}` to ship that directory with the run",
            agent.config.hostname
        )),
    }
}

/// Makes the run's directory `dir` (with `work/`, and `config.json` when the run has a
/// config of its own): a spare renamed into place when there is one (one call), or else made
/// on a blocking thread. New files can take a long while on a busy file system (ext4 just
/// after many deletions: ~100 ms for the 64 runs an agent takes ahead at once) and the agent's
/// one runtime thread, which `liftoff up`'s server shares, must not wait for them.
async fn make_dir(
    agent: &Agent,
    dir: &std::path::Path,
    config: Option<String>,
) -> Result<(), String> {
    let taken = agent.spares.take(dir);
    if taken && config.is_none() {
        return Ok(());
    }
    let dir = dir.to_path_buf();
    let made = tokio::task::spawn_blocking(move || {
        let work = dir.join("work");
        if !taken {
            std::fs::create_dir_all(&work)
                .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
        }
        if let Some(config) = config {
            let file = dir.join("config.json");
            std::fs::write(&file, config)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        }
        Ok(())
    })
    .await;
    made.unwrap_or_else(|e| Err(format!("making the run's directory failed: {e}")))
}

/// The values of W&B's agent-side macros for one run.
fn macros(item: &Item, run_id: &RunId) -> Vec<(&'static str, String)> {
    let spec = &item.spec;
    vec![
        ("${run_id}", run_id.to_string()),
        (
            "${run_name}",
            spec.name.clone().unwrap_or_else(|| run_id.to_string()),
        ),
        ("${project_name}", spec.project.clone().unwrap_or_default()),
        (
            "${image_uri}",
            spec.docker
                .as_ref()
                .and_then(|d| d.docker_image.clone())
                .unwrap_or_default(),
        ),
        ("${author}", spec.author.clone().unwrap_or_default()),
    ]
}

/// Expands the macros in every string of the resource args (keys stay as they are).
fn expand_macros(value: &serde_json::Value, macros: &[(&str, String)]) -> serde_json::Value {
    liftoff_types::template::map_strings(value, &|s| {
        let mut out = s.to_string();
        if s.contains("${") {
            for (name, v) in macros {
                out = out.replace(name, v);
            }
        }
        serde_json::Value::String(out)
    })
}

/// The run's source and what it runs in: a job's source unpacked into the run's `work/`,
/// then a Python environment for it (local runs) or an image built from it (runners that
/// run images); an image job's or an inline spec's image as it is.
pub(super) async fn source_ready(
    agent: &Agent,
    runner: &Arc<dyn Runner>,
    item: &Item,
    job: Option<&JobVersion>,
    run_id: &liftoff_types::RunId,
) -> Result<(Option<std::path::PathBuf>, Option<String>), crate::source::NotReady> {
    let inline_image = item
        .spec
        .docker
        .as_ref()
        .and_then(|d| d.docker_image.clone());
    let Some(job) = job else {
        return Ok((None, inline_image));
    };
    if job.spec.kind == JobKind::Image {
        return Ok((None, job.spec.source.image.clone()));
    }
    let work = agent.journal.run_dir(run_id).join("work");
    agent.cache.checkout(&agent.client, job, &work).await?;
    if runner.capabilities().ships_source {
        return Ok((None, None));
    }
    if !runner.capabilities().images {
        return Ok((agent.cache.python_env(&work).await?, None));
    }
    let request = BuildRequest {
        job: job.name.clone(),
        source: work,
    };
    match runner.build(&request).await {
        Ok(built) => {
            tracing::info!(image = %built.image, built = built.built, "the job's image is ready");
            Ok((None, Some(built.image)))
        }
        Err(e) => Err(crate::source::NotReady {
            message: e.message,
            log: Some(e.log),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::expand_macros;
    use serde_json::json;

    #[test]
    fn macros_expand_in_every_string() {
        let args = json!({"job-name": "lo-${run_id}", "labels": ["${author}", 3], "x": {"n": "${run_name}/${project_name}"}});
        let m = vec![
            ("${run_id}", "r1".to_string()),
            ("${run_name}", "try".to_string()),
            ("${project_name}", "p".to_string()),
            ("${author}", "ann".to_string()),
        ];
        assert_eq!(
            expand_macros(&args, &m),
            json!({"job-name": "lo-r1", "labels": ["ann", 3], "x": {"n": "try/p"}})
        );
    }
}
