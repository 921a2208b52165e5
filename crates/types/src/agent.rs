//! Agents: registration, heartbeats and the status the seed's `update_status` reports.

use crate::ids::{AgentId, ItemId};
use crate::item::string_enum;
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// An agent's status: what it reports, plus `lost`, which only the server sets.
    AgentStatus {
        Starting = "starting",
        Polling = "polling",
        Running = "running",
        Stopped = "stopped",
        Lost = "lost",
    }
);

/// What an agent sends to register.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub queues: Vec<String>,
    /// -1 = unlimited.
    #[serde(default = "one")]
    pub max_jobs: i64,
    #[serde(default = "one")]
    pub max_schedulers: i64,
    #[serde(default)]
    pub version: String,
}

fn one() -> i64 {
    1
}

impl NewAgent {
    /// A registration of one slot each for `queues` on `hostname`.
    pub fn on(hostname: &str, queues: &[&str]) -> NewAgent {
        NewAgent {
            hostname: hostname.to_string(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            ..NewAgent::default()
        }
    }
}

/// An agent as the server knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: AgentId,
    /// Server-assigned, unique: `<hostname>-<id>`.
    pub name: String,
    pub hostname: String,
    pub queues: Vec<String>,
    pub max_jobs: i64,
    pub max_schedulers: i64,
    pub version: String,
    pub status: AgentStatus,
    pub in_flight: Vec<ItemId>,
    /// The seed's `num_running_jobs` and `num_running_schedulers`, as of the last heartbeat.
    #[serde(default)]
    pub running_jobs: u32,
    #[serde(default)]
    pub running_schedulers: u32,
    pub stop_requested: bool,
    pub registered_at_ms: Millis,
    pub heartbeat_at_ms: Millis,
}

/// A heartbeat: the agent's status and the items it is working on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub status: AgentStatus,
    #[serde(default)]
    pub in_flight: Vec<ItemId>,
    /// The seed's `num_running_jobs`: runs in flight (schedulers not counted).
    #[serde(default)]
    pub running_jobs: u32,
    /// The seed's `num_running_schedulers`.
    #[serde(default)]
    pub running_schedulers: u32,
    /// Hold the answer up to this long (at most 60000 ms) unless there is something to stop:
    /// a stop is pushed to the agent the moment it is asked for.
    #[serde(default)]
    pub wait_ms: u64,
}

/// The server's answer to a heartbeat: what the agent must stop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatReply {
    /// The agent itself was asked to stop.
    pub stop_agent: bool,
    /// In-flight items whose runs must stop: a user asked, or the item is no longer this
    /// agent's (it was declared lost, cancelled, or deleted).
    pub stop_items: Vec<ItemId>,
    /// The terms of the agent's lease on its runs, as this server has them now (they change
    /// when the server restarts with other flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseTerms>,
}

/// How long the server waits before it declares a silent agent lost, and how long it then
/// holds the agent's started items before they go out again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseTerms {
    pub agent_timeout_ms: u64,
    pub lost_grace_ms: u64,
}
