//! Items: one launch spec on a queue, and the lease protocol's wire shapes.
//!
//! Lifecycle: `pending → leased → claimed → finished | failed | stopped`, with `cancelled`
//! reachable from any non-terminal state and an expired lease going back to `pending`.

use crate::ids::{AgentId, ItemId, RunId};
use crate::spec::{LaunchSpec, Priority};
use crate::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("{:?} is not one of {}", s, all.join(", "))
                })
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// Where an item is in its lifecycle.
    ItemState {
        Pending = "pending",
        Leased = "leased",
        Claimed = "claimed",
        Finished = "finished",
        Failed = "failed",
        Stopped = "stopped",
        Cancelled = "cancelled",
    }
);

impl ItemState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemState::Finished | ItemState::Failed | ItemState::Stopped | ItemState::Cancelled
        )
    }
}

string_enum!(
    /// What an item is: a run to launch, or a sweep's scheduler (which an agent runs as a
    /// task of its own, counted against `max_schedulers`).
    #[derive(Default)]
    ItemKind {
        #[default]
        Run = "run",
        Scheduler = "scheduler",
    }
);

string_enum!(
    /// Where a failure happened: W&B's stages plus `scheduler`.
    Phase {
        Agent = "agent",
        Build = "build",
        Run = "run",
        Scheduler = "scheduler",
    }
);

/// Why an item failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub message: String,
    pub phase: Phase,
    /// Names of the files attached to the failure (fetch them from the item's `files`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// A file kept with a failure: the log tail, the error, a build log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub name: String,
    pub content: String,
}

/// A warning an agent recorded about an item; an item may carry several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Warning {
    pub message: String,
    pub at_ms: Millis,
}

/// An item as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Item {
    pub id: ItemId,
    pub queue: String,
    #[serde(default)]
    pub kind: ItemKind,
    pub state: ItemState,
    pub priority: Priority,
    pub spec: LaunchSpec,
    /// The queue's config template with the template variables substituted.
    #[schema(value_type = Object)]
    pub resource_args: Value,
    /// Leases that ended without an ack (expired or lost with their agent), and retries.
    pub attempts: u32,
    /// A pending item waiting out a retry's backoff or a lost run's hold is not leased
    /// before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at_ms: Option<Millis>,
    /// Retries so far, by cause (see [`crate::retry`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub retries: crate::retry::RetryCounts,
    /// Grows with every lease; every write about the item must carry the current one.
    pub fence: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// A user asked to cancel the item while its run was live; the agent stops the run.
    pub cancel_requested: bool,
    /// For a sweep's run: its place in the sweep (0, 1, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_index: Option<u32>,
    /// For a pending item: how many items of its queue will be leased before it (0 = next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    pub created_at_ms: Millis,
    pub updated_at_ms: Millis,
    /// When its latest run started and ended (its process, not its queueing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<Millis>,
    /// For a pending item: why it has not started (no agent serves the queue, its sweep is
    /// paused, every agent on it is busy), as the server sees it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
}

/// An item handed to an agent: the item with its lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    pub item: Item,
    pub fence: i64,
    pub expires_at_ms: Millis,
}
