//! Runs: one execution of an item, with the state every runner maps its backend onto.

use crate::ids::{AgentId, ItemId, RunId};
use crate::item::string_enum;
use crate::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// `queued → starting → running → (stopping →) finished | failed | stopped | preempted | lost`.
    RunState {
        Queued = "queued",
        Starting = "starting",
        Running = "running",
        Stopping = "stopping",
        Finished = "finished",
        Failed = "failed",
        Stopped = "stopped",
        Preempted = "preempted",
        Lost = "lost",
    }
);

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Finished
                | RunState::Failed
                | RunState::Stopped
                | RunState::Preempted
                | RunState::Lost
        )
    }
}

/// A run as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub id: RunId,
    pub item_id: ItemId,
    pub queue: String,
    pub agent_id: AgentId,
    pub state: RunState,
    /// The backend's handle: pid and start time, a Slurm job id, a pod name...
    #[schema(value_type = Object)]
    pub handle: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The backend's word on the state: Slurm's pending reason, a failure message...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A user asked to stop the run; the agent is told through its lease or heartbeat.
    pub stop_requested: bool,
    pub created_at_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<Millis>,
    pub updated_at_ms: Millis,
}

/// A report from an agent about a run: its new state and what goes with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunUpdate {
    pub fence: i64,
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Replaces the run's handle (a Slurm job id known only after submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub handle: Option<Value>,
    /// When the run started, for a run whose `running` was never reported on its own (a
    /// short run's end report says it all; the agent sends `running` only for runs that
    /// outlive a moment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<crate::Millis>,
    /// With `lost`: nothing of the run was ever started (its agent restarted after the ack,
    /// before the launch). The item goes back to its queue without counting an attempt,
    /// whatever the queue's `requeue_lost`: a run that never ran has not failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_started: bool,
}
