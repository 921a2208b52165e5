//! Queues: a named run queue with a resource type, a config template and its variables, a
//! prioritization mode and an attempt limit.

use crate::template::TemplateVariable;
use crate::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The backends a queue can send its runs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceType {
    LocalProcess,
    Container,
    Slurm,
    Kubernetes,
    Ray,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [
        ResourceType::LocalProcess,
        ResourceType::Container,
        ResourceType::Slurm,
        ResourceType::Kubernetes,
        ResourceType::Ray,
    ];

    /// Whether runs on this resource are container images (image jobs may go there).
    pub fn runs_images(self) -> bool {
        matches!(self, ResourceType::Container | ResourceType::Kubernetes)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::LocalProcess => "local-process",
            ResourceType::Container => "container",
            ResourceType::Slurm => "slurm",
            ResourceType::Kubernetes => "kubernetes",
            ResourceType::Ray => "ray",
        }
    }
}

/// Handles and configs written before there was a choice were local processes.
impl Default for ResourceType {
    fn default() -> ResourceType {
        ResourceType::LocalProcess
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // W&B calls the container backend `local-container`.
        let s = if s == "local-container" {
            "container"
        } else {
            s
        };
        ResourceType::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "resource {s:?} must be one of local-process, container, slurm, kubernetes, ray"
                )
            })
    }
}

fn default_true() -> bool {
    true
}

/// The attempt limit W&B effectively has (a lease lost three times is not a fluke).
pub fn default_max_attempts() -> u32 {
    3
}

/// What a user sends to create a queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQueue {
    pub name: String,
    #[serde(default = "default_resource")]
    pub resource: ResourceType,
    /// Default resource args for the queue's runs; strings may hold `{{variable}}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    #[serde(default)]
    pub template_variables: BTreeMap<String, TemplateVariable>,
    /// When off, items run in enqueue order whatever priority they carry.
    #[serde(default = "default_true")]
    pub prioritization: bool,
    /// Lease expiries (and lost agents) an item survives before it fails with phase `agent`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Put a run whose agent was lost back on the queue instead of failing it.
    #[serde(default)]
    pub requeue_lost: bool,
    /// At most this many of the queue's runs live at once (leased or claimed), across all
    /// agents; none when absent. Sweep schedulers do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Retries by cause (see [`crate::retry`]); absent: W&B's (preempted runs go back, at most
    /// 5 times), and lost runs as `requeue_lost` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::retry::RetryPolicy>,
}

fn default_resource() -> ResourceType {
    ResourceType::LocalProcess
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl NewQueue {
    pub fn named(name: &str) -> NewQueue {
        NewQueue {
            name: name.to_string(),
            resource: ResourceType::LocalProcess,
            config: empty_object(),
            template_variables: BTreeMap::new(),
            prioritization: true,
            max_attempts: default_max_attempts(),
            requeue_lost: false,
            max_concurrency: None,
            retry: None,
        }
    }

    /// Every problem with the definition, as `(field, problem)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Err(e) = crate::ids::check_queue_name(&self.name) {
            problems.push(("name".to_string(), e));
        }
        if !self.config.is_object() {
            problems.push(("config".into(), "must be a JSON object".into()));
        }
        if !(1..=100).contains(&self.max_attempts) {
            problems.push(("max_attempts".into(), "must be from 1 to 100".into()));
        }
        if self
            .max_concurrency
            .is_some_and(|n| !(1..=1_000_000).contains(&n))
        {
            problems.push((
                "max_concurrency".into(),
                "must be from 1 to 1000000 (leave it out for no limit)".into(),
            ));
        }
        if let Some(retry) = &self.retry {
            problems.extend(retry.validate("retry"));
        }
        for name in self.template_variables.keys() {
            if name.is_empty() || name.len() > 64 || name.contains(['{', '}']) {
                problems.push((
                    format!("template_variables.{name}"),
                    "a variable name must be 1 to 64 characters without braces".into(),
                ));
            }
        }
        problems.extend(crate::template::check_definitions(
            &self.template_variables,
            &self.config,
        ));
        problems
    }
}

/// A queue as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Queue {
    pub name: String,
    pub resource: ResourceType,
    #[schema(value_type = Object)]
    pub config: Value,
    pub template_variables: BTreeMap<String, TemplateVariable>,
    pub prioritization: bool,
    pub max_attempts: u32,
    pub requeue_lost: bool,
    /// At most this many of the queue's runs live at once; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Retries by cause as the queue was given them (absent: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::retry::RetryPolicy>,
    pub created_at_ms: Millis,
    /// Item counts by state; filled by `show`, absent in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<QueueDepth>,
}

/// How many items of a queue are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueDepth {
    pub pending: u64,
    pub leased: u64,
    pub claimed: u64,
    pub finished: u64,
    pub failed: u64,
    pub stopped: u64,
    pub cancelled: u64,
    /// Runs leased or claimed (sweep schedulers left out): what `max_concurrency` caps.
    #[serde(default)]
    pub live_runs: u64,
}
