//! What a run's container is made of: its name, image, command, environment, labels, mounts
//! and the engine's form of W&B's resource args. Pure: no call to the engine.

use super::{ContainerConfig, AGENT_LABEL, ITEM_LABEL, RUN_LABEL};
use crate::{RunSpec, RunnerError, RunnerResult};
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, ResourcesUlimits};
use liftoff_types::container::{ContainerArgs, Gpus};
use std::path::{Path, PathBuf};

/// Where the run's `box/` directory (its metrics file) is mounted inside its container, with
/// its config file read-only beside: the container sees nothing else of the agent's.
pub const RUN_DIR: &str = "/liftoff";

/// The host's variables that mean nothing inside an image (its own `PATH` wins).
const HOST_ONLY: &[&str] = &["PATH", "VIRTUAL_ENV", "HOME", "PWD", "SHELL", "USER"];

pub struct Container {
    pub name: String,
    pub image: String,
    pub platform: Option<String>,
    pub body: ContainerCreateBody,
    pub output: PathBuf,
}

impl Container {
    pub fn new(spec: &RunSpec, config: &ContainerConfig) -> RunnerResult<Container> {
        let image = spec.image.clone().ok_or_else(|| {
            RunnerError::Permanent(
                "a container run needs an image: an image job, `docker.docker_image` in the launch spec, or a code job".into(),
            )
        })?;
        let args = liftoff_types::container::parse(&spec.resource_args).map_err(|problems| {
            RunnerError::Permanent(
                problems
                    .into_iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let run_dir = spec
            .output
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .join("box");
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| format!("liftoff-{}", spec.run_id));
        let cmd = if spec.argv.is_empty() {
            args.command.clone()
        } else {
            Some(spec.argv.clone())
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd,
            env: Some(environment(spec, &args, &run_dir)),
            working_dir: args.workdir.clone(),
            labels: Some(
                [
                    (RUN_LABEL.to_string(), spec.run_id.to_string()),
                    (AGENT_LABEL.to_string(), config.label.clone()),
                ]
                .into_iter()
                .chain(
                    spec.attempt_of
                        .clone()
                        .map(|item| (ITEM_LABEL.to_string(), item)),
                )
                .collect(),
            ),
            host_config: Some(host_config(spec, &args, config, &run_dir)),
            ..Default::default()
        };
        Ok(Container {
            name,
            image,
            platform: args.platform.clone(),
            body,
            output: spec.output.clone(),
        })
    }
}

/// The run's own variables (never the agent's inherited ones: they describe the host), the
/// run's files as seen inside, then the resource args' `env`.
fn environment(spec: &RunSpec, args: &ContainerArgs, run_dir: &Path) -> Vec<String> {
    let mut env: Vec<(String, String)> = spec
        .env
        .own
        .iter()
        .filter(|(k, _)| !HOST_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), inside(v, run_dir)))
        .collect();
    if let Some(slot) = env.iter_mut().find(|(k, _)| k == "LIFTOFF_CONFIG_FILE") {
        slot.1 = format!("{RUN_DIR}/config.json");
    }
    for (k, v) in &args.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A path under the run's directory, as the container sees it.
fn inside(value: &str, run_dir: &Path) -> String {
    match Path::new(value).strip_prefix(run_dir) {
        Ok(rest) if value.starts_with('/') => format!("{RUN_DIR}/{}", rest.display()),
        _ => value.to_string(),
    }
}

fn host_config(
    spec: &RunSpec,
    args: &ContainerArgs,
    config: &ContainerConfig,
    run_dir: &Path,
) -> HostConfig {
    let mut binds = vec![format!("{}:{RUN_DIR}", run_dir.display())];
    if let Some(file) = spec.env.own.get("LIFTOFF_CONFIG_FILE") {
        binds.push(format!("{file}:{RUN_DIR}/config.json:ro"));
    }
    HostConfig {
        binds: Some(binds),
        network_mode: config.network.clone(),
        nano_cpus: args.nano_cpus,
        cpu_shares: args.cpu_shares,
        cpu_period: args.cpu_period,
        cpu_quota: args.cpu_quota,
        cpuset_cpus: args.cpuset_cpus.clone(),
        cpuset_mems: args.cpuset_mems.clone(),
        memory: args.memory,
        memory_swap: args.memory_swap,
        memory_reservation: args.memory_reservation,
        memory_swappiness: args.memory_swappiness,
        shm_size: args.shm_size,
        pids_limit: args.pids_limit,
        ulimits: (!args.ulimits.is_empty()).then(|| {
            args.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        device_requests: args.gpus.as_ref().map(|g| vec![gpu_request(g)]),
        ..Default::default()
    }
}

/// `--gpus` as the engine's device request.
fn gpu_request(gpus: &Gpus) -> DeviceRequest {
    let (count, device_ids) = match gpus {
        Gpus::All => (Some(-1), None),
        Gpus::Count(n) => (Some(*n), None),
        Gpus::Devices(ids) => (None, Some(ids.clone())),
    };
    DeviceRequest {
        driver: Some(String::new()),
        count,
        device_ids,
        capabilities: Some(vec![vec!["gpu".to_string()]]),
        options: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Pull;
    use std::collections::BTreeMap;

    fn config() -> ContainerConfig {
        ContainerConfig {
            host: "unix:///x".into(),
            label: "liftoff:abc".into(),
            network: Some("none".into()),
            pull: Pull::Missing,
            base_image: None,
            registry: None,
            max_jobs: None,
        }
    }

    fn spec(args: serde_json::Value) -> RunSpec {
        RunSpec {
            attempt_of: None,
            run_id: "r1".parse().unwrap(),
            argv: vec!["python3".into(), "train.py".into()],
            env: crate::RunEnv {
                base: std::sync::Arc::new(BTreeMap::from([(
                    "LIFTOFF_TOKEN".to_string(),
                    "agent-secret".to_string(),
                )])),
                own: BTreeMap::from([
                    ("LIFTOFF_RUN_TOKEN".to_string(), "lfr_x".to_string()),
                    ("PATH".to_string(), "/host/venv/bin:/usr/bin".to_string()),
                    (
                        "LIFTOFF_METRICS_FILE".to_string(),
                        "/state/runs/r1/box/metrics.jsonl".to_string(),
                    ),
                    (
                        "LIFTOFF_CONFIG_FILE".to_string(),
                        "/state/empty-config.json".to_string(),
                    ),
                ]),
            },
            workdir: PathBuf::from("/state/runs/r1/work"),
            output: PathBuf::from("/state/runs/r1/output.log"),
            resource_args: args,
            concurrency: None,
            image: Some("python:3.11".into()),
        }
    }

    #[test]
    fn a_container_gets_the_runs_own_environment_files_and_limits() {
        let args = serde_json::json!({"gpus": "all", "env": ["A=1"], "memory": "1g", "cpus": 2});
        let c = Container::new(&spec(args), &config()).unwrap();
        assert_eq!(c.name, "liftoff-r1");
        let env = c.body.env.clone().unwrap();
        assert!(env.contains(&"LIFTOFF_RUN_TOKEN=lfr_x".to_string()));
        assert!(env.contains(&"LIFTOFF_METRICS_FILE=/liftoff/metrics.jsonl".to_string()));
        assert!(env.contains(&"LIFTOFF_CONFIG_FILE=/liftoff/config.json".to_string()));
        assert!(env.contains(&"A=1".to_string()));
        assert!(
            !env.iter()
                .any(|e| e.starts_with("PATH=") || e.contains("agent-secret")),
            "{env:?}"
        );
        let host = c.body.host_config.unwrap();
        assert_eq!(
            host.binds.unwrap(),
            [
                "/state/runs/r1/box:/liftoff",
                "/state/empty-config.json:/liftoff/config.json:ro"
            ]
        );
        assert_eq!(host.memory, Some(1 << 30));
        assert_eq!(host.nano_cpus, Some(2_000_000_000));
        assert_eq!(host.device_requests.unwrap()[0].count, Some(-1));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(
            c.body.labels.unwrap().get(RUN_LABEL).map(String::as_str),
            Some("r1")
        );
    }

    #[test]
    fn refused_args_and_a_missing_image_are_said() {
        let err = Container::new(&spec(serde_json::json!({"privileged": true})), &config())
            .err()
            .unwrap();
        assert!(err.to_string().contains("privileged"), "{err}");
        let mut no_image = spec(serde_json::json!({}));
        no_image.image = None;
        let err = Container::new(&no_image, &config()).err().unwrap();
        assert!(err.to_string().contains("needs an image"), "{err}");
    }
}
