//! Which runners an agent holds: one per resource type its queues run, each built from its
//! config section (`runners:` in the agent config, a mapping from the resource type to its
//! settings; unknown keys refused), or from that type's defaults when the config names none.
//! The agent picks a runner per item by its queue's resource.

use crate::container::{ContainerConfig, ContainerRunner, Pull};
use crate::kubernetes::{KubeConfig, KubeRunner};
use crate::local::{LocalRunner, SupervisorCommand};
use crate::ray::{RayConfig, RayRunner};
use crate::slurm::{SlurmConfig, SlurmRunner};
use crate::Runner;
use liftoff_types::ResourceType;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One backend's settings, tagged by its resource type.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Section {
    LocalProcess(LocalSection),
    #[serde(alias = "local-container")]
    Container(ContainerSection),
    Slurm(SlurmSection),
    Ray(RaySection),
    Kubernetes(KubernetesSection),
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    pub max_jobs: Option<u32>,
    /// A kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig's context (default: its current one).
    pub context: Option<String>,
    /// The namespace of runs whose queue and manifest name none (default: the context's).
    pub namespace: Option<String>,
    /// Seconds an image pull may fail (`ErrImagePull`, `ImagePullBackOff`) before the run
    /// fails; default 30.
    pub image_pull_grace: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// At most this many of the agent's runs on this runner at once (beside `max_jobs`).
    pub max_jobs: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    pub max_jobs: Option<u32>,
    /// Seconds between two `squeue` calls.
    pub poll_interval: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaySection {
    pub max_jobs: Option<u32>,
    /// The cluster's dashboard (`http://HOST:8265`) for queues whose resource args name none.
    pub address: Option<String>,
    /// Seconds between two reads of the cluster's job list.
    pub poll_interval: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSection {
    pub max_jobs: Option<u32>,
    /// The engine's socket, `unix:///var/run/docker.sock` (Docker) or podman's; default
    /// `DOCKER_HOST`, else Docker's socket.
    pub host: Option<String>,
    /// The network runs join: `bridge` (the engine's default), `none` or `host`. The agent's
    /// choice; a launch spec cannot set it.
    pub network: Option<String>,
    /// When to pull a run's image: `missing` (default), `always`, `never`.
    pub pull: Option<Pull>,
    /// The image code jobs are built on (W&B's `builder.base_image`).
    pub base_image: Option<String>,
    /// Where built images are pushed (W&B's `registry.uri`), e.g. `registry.example:5000`.
    pub registry: Option<String>,
}

impl Section {
    pub fn resource(&self) -> ResourceType {
        match self {
            Section::LocalProcess(_) => ResourceType::LocalProcess,
            Section::Container(_) => ResourceType::Container,
            Section::Slurm(_) => ResourceType::Slurm,
            Section::Ray(_) => ResourceType::Ray,
            Section::Kubernetes(_) => ResourceType::Kubernetes,
        }
    }

    fn max_jobs(&self) -> Option<u32> {
        match self {
            Section::LocalProcess(s) => s.max_jobs,
            Section::Container(s) => s.max_jobs,
            Section::Slurm(s) => s.max_jobs,
            Section::Ray(s) => s.max_jobs,
            Section::Kubernetes(s) => s.max_jobs,
        }
    }

    /// The sections of a `runners:` mapping (`{container: {host: ...}, slurm: {}}`): every
    /// problem at once, each naming its key.
    pub fn parse_map(value: serde_json::Value) -> Result<Vec<Section>, Vec<String>> {
        let serde_json::Value::Object(map) = value else {
            return Err(vec![
                "runners: must be a mapping of resource types to their settings".into(),
            ]);
        };
        let mut sections = Vec::new();
        let mut problems = Vec::new();
        for (kind, settings) in map {
            let mut settings = match settings {
                serde_json::Value::Object(m) => m,
                serde_json::Value::Null => serde_json::Map::new(),
                _ => {
                    problems.push(format!("runners.{kind}: must be a mapping of settings"));
                    continue;
                }
            };
            settings.insert("type".into(), serde_json::Value::String(kind.clone()));
            match serde_json::from_value::<Section>(serde_json::Value::Object(settings)) {
                Ok(s)
                    if sections
                        .iter()
                        .any(|o: &Section| o.resource() == s.resource()) =>
                {
                    problems.push(format!("runners.{kind}: {} is set twice", s.resource()))
                }
                Ok(s) => match s.check() {
                    Ok(()) => sections.push(s),
                    Err(p) => problems.push(format!("runners.{kind}: {p}")),
                },
                Err(e) => problems.push(format!(
                    "runners.{kind}: {e} (types: local-process, container, slurm, ray, kubernetes)"
                )),
            }
        }
        if problems.is_empty() {
            Ok(sections)
        } else {
            Err(problems)
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.max_jobs() == Some(0) {
            return Err("max_jobs: must be at least 1 (leave it out for no limit)".into());
        }
        match self {
            Section::Slurm(SlurmSection {
                poll_interval: Some(s),
                ..
            }) if !(0.1..=60.0).contains(s) => {
                Err("poll_interval: must be from 0.1 to 60 seconds".into())
            }
            Section::Ray(RaySection {
                poll_interval: Some(s),
                ..
            }) if !(0.1..=60.0).contains(s) => {
                Err("poll_interval: must be from 0.1 to 60 seconds".into())
            }
            Section::Ray(RaySection {
                address: Some(a), ..
            }) if !(a.starts_with("http://") || a.starts_with("https://")) => Err(format!(
                "address: {a:?} must be the Ray dashboard's URL, http://HOST:8265"
            )),
            Section::Kubernetes(KubernetesSection {
                image_pull_grace: Some(s),
                ..
            }) if !(0.0..=3600.0).contains(s) => {
                Err("image_pull_grace: must be from 0 to 3600 seconds".into())
            }
            Section::Container(c) => {
                if let Some(n) = &c.network {
                    if !["bridge", "none", "host"].contains(&n.as_str()) {
                        return Err(format!("network: {n:?} must be one of bridge, none, host"));
                    }
                }
                if let Some(h) = &c.host {
                    if !h.starts_with("unix://") {
                        return Err(format!(
                            "host: {h:?} must be a unix socket, unix:///path/to/docker.sock"
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// What building runners needs from the agent.
pub struct Context {
    pub state_dir: PathBuf,
    pub hostname: String,
    /// How to start the local runner's supervisor.
    pub supervisor: SupervisorCommand,
    /// The agent's environment (for `DOCKER_HOST`).
    pub env: BTreeMap<String, String>,
    /// The agent-wide Slurm poll interval (`slurm_poll_interval`), unless the section sets one.
    pub slurm_poll_every: Duration,
    /// The agent's `max_jobs` (`None`: unlimited): a runner's own limit is at most this.
    pub max_jobs: Option<u32>,
    /// W&B's `builder.base_image` and `registry.uri`, unless the container section sets them.
    pub base_image: Option<String>,
    pub registry: Option<String>,
}

struct Held {
    runner: Arc<dyn Runner>,
    max_jobs: Option<u32>,
}

/// The runners of one agent, one per resource type.
#[derive(Clone, Default)]
pub struct Runners {
    held: Arc<Vec<Held>>,
}

impl Runners {
    /// One runner per resource in `resources`, from its section or its defaults.
    pub fn build(
        resources: &[ResourceType],
        sections: &[Section],
        ctx: &Context,
    ) -> Result<Runners, String> {
        let mut held = Vec::new();
        for &resource in resources {
            let section = sections.iter().find(|s| s.resource() == resource);
            let runner = make(resource, section, ctx)?;
            held.push(Held {
                runner,
                max_jobs: section.and_then(Section::max_jobs),
            });
        }
        Ok(Runners {
            held: Arc::new(held),
        })
    }

    /// Runners made elsewhere (tests, benches), without limits of their own.
    pub fn of(runners: Vec<Arc<dyn Runner>>) -> Runners {
        let held = runners
            .into_iter()
            .map(|runner| Held {
                runner,
                max_jobs: None,
            })
            .collect();
        Runners {
            held: Arc::new(held),
        }
    }

    pub fn get(&self, resource: ResourceType) -> Option<&Arc<dyn Runner>> {
        self.held
            .iter()
            .find(|h| h.runner.resource() == resource)
            .map(|h| &h.runner)
    }

    /// The runner's own limit on live runs, if its section set one.
    pub fn limit(&self, resource: ResourceType) -> Option<u32> {
        self.held
            .iter()
            .find(|h| h.runner.resource() == resource)
            .and_then(|h| h.max_jobs)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Runner>> {
        self.held.iter().map(|h| &h.runner)
    }

    pub fn resources(&self) -> Vec<ResourceType> {
        self.iter().map(|r| r.resource()).collect()
    }
}

fn make(
    resource: ResourceType,
    section: Option<&Section>,
    ctx: &Context,
) -> Result<Arc<dyn Runner>, String> {
    Ok(match (resource, section) {
        (ResourceType::LocalProcess, _) => {
            Arc::new(LocalRunner::new(&ctx.state_dir, ctx.supervisor.clone()))
        }
        (ResourceType::Slurm, s) => {
            let mut config = SlurmConfig::new(label(ctx));
            config.poll_every = match s {
                Some(Section::Slurm(SlurmSection {
                    poll_interval: Some(p),
                    ..
                })) => Duration::from_secs_f64(*p),
                _ => ctx.slurm_poll_every,
            };
            Arc::new(SlurmRunner::new(config))
        }
        (ResourceType::Container, s) => {
            let section = match s {
                Some(Section::Container(c)) => c.clone(),
                _ => ContainerSection::default(),
            };
            let host = section
                .host
                .or_else(|| ctx.env.get("DOCKER_HOST").cloned())
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
            let config = ContainerConfig {
                host,
                label: label(ctx),
                network: section.network,
                pull: section.pull.unwrap_or_default(),
                base_image: section.base_image.or_else(|| ctx.base_image.clone()),
                registry: section.registry.or_else(|| ctx.registry.clone()),
                max_jobs: match (section.max_jobs, ctx.max_jobs) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            };
            Arc::new(ContainerRunner::new(config).map_err(|e| format!("container runner: {e}"))?)
        }
        (ResourceType::Ray, s) => {
            let mut config = RayConfig::new(label(ctx), &ctx.state_dir);
            if let Some(Section::Ray(section)) = s {
                config.address = section.address.clone();
                if let Some(p) = section.poll_interval {
                    config.poll_every = Duration::from_secs_f64(p);
                }
            }
            // Ray's own variables: the CLI's cluster and the headers it sends.
            if config.address.is_none() {
                config.address = ctx
                    .env
                    .get("RAY_ADDRESS")
                    .filter(|a| a.starts_with("http"))
                    .cloned();
            }
            if let Some(headers) = ctx.env.get("RAY_JOB_HEADERS") {
                config.headers = ray_headers(headers)?;
            }
            Arc::new(RayRunner::new(config))
        }
        (ResourceType::Kubernetes, s) => {
            let mut config = KubeConfig::new(label(ctx).trim_start_matches("liftoff:").to_string());
            // A list of files (`a:b`) is left to the client to merge.
            config.kubeconfig = ctx
                .env
                .get("KUBECONFIG")
                .filter(|p| !p.contains(':'))
                .map(PathBuf::from);
            if let Some(Section::Kubernetes(section)) = s {
                if section.kubeconfig.is_some() {
                    config.kubeconfig = section.kubeconfig.clone();
                }
                config.context = section.context.clone();
                config.namespace_override = section.namespace.clone();
                if let Some(g) = section.image_pull_grace {
                    config.image_pull_grace = Duration::from_secs_f64(g);
                }
            }
            Arc::new(KubeRunner::new(config))
        }
    })
}

/// `RAY_JOB_HEADERS`, a JSON object of header names to values (as Ray's CLI reads it).
fn ray_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|e| {
        format!("RAY_JOB_HEADERS: must be a JSON object of header names to strings: {e}")
    })?;
    Ok(map.into_iter().collect())
}

/// The label on this agent's backend resources (Slurm jobs' comment, containers' label):
/// stable for its state directory on this host, so a restarted agent finds them again.
pub fn label(ctx: &Context) -> String {
    use sha2::Digest;
    let dir = &ctx.state_dir;
    let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let digest = sha2::Sha256::digest(format!("{}:{}", ctx.hostname, path.display()));
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("liftoff:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sections_come_from_a_mapping_keyed_by_type_and_refuse_unknown_keys() {
        let sections = Section::parse_map(json!({
            "local-container": {"host": "unix:///run/podman.sock", "max_jobs": 2, "network": "none"},
            "slurm": {"poll_interval": 1.0},
            "local-process": null,
        }))
        .unwrap();
        assert_eq!(sections.len(), 3);
        assert!(sections.iter().any(|s| matches!(s,
            Section::Container(c) if c.host.as_deref() == Some("unix:///run/podman.sock") && c.max_jobs == Some(2))));
        let err = Section::parse_map(json!({
            "container": {"hots": "x"},
            "slurm": {"poll_interval": 900},
            "kubernetes": {"namespaces": "x"},
            "local-process": {"max_jobs": 0},
        }))
        .unwrap_err();
        assert_eq!(err.len(), 4, "{err:?}");
        let all = err.join("\n");
        for needle in [
            "runners.container: unknown field `hots`",
            "runners.slurm: poll_interval",
            "runners.kubernetes",
            "runners.local-process: max_jobs",
        ] {
            assert!(all.contains(needle), "{needle} not in {all}");
        }
    }
}
