//! Request and response bodies of the HTTP API that are not domain types themselves.

use crate::agent::Agent;
use crate::auth::{Scope, TokenInfo};
use crate::ids::{AgentId, RunId};
use crate::item::{Attachment, ItemState, Lease, Phase};
use crate::run::RunState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most items one lease call may take.
pub const MAX_LEASE_BATCH: u32 = 256;
/// Longest a lease call may wait for an item.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Default lease length: the agent has this long to ack before the item goes back.
pub const DEFAULT_LEASE_MS: u64 = 60_000;

fn one() -> u32 {
    1
}

fn default_lease_ms() -> u64 {
    DEFAULT_LEASE_MS
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Queues to take from, round-robin.
    pub queues: Vec<String>,
    /// Most items to take (1 to 256).
    #[serde(default = "one")]
    pub max: u32,
    /// How long to wait for an item when none is pending (0 to 60000 ms).
    #[serde(default)]
    pub wait_ms: u64,
    /// How long the agent has to ack each item (1000 to 3600000 ms).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Whether to take items of kind `run` (an agent with every job slot busy but a free
    /// scheduler slot asks for schedulers only).
    #[serde(default = "yes")]
    pub runs: bool,
    /// Whether to take sweep schedulers (an agent at `max_schedulers` does not).
    #[serde(default = "yes")]
    pub schedulers: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseResponse {
    pub leases: Vec<Lease>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub fence: i64,
    pub run_id: RunId,
    /// The backend handle: pid and start time, Slurm job id, pod name...
    #[serde(default)]
    #[schema(value_type = Object)]
    pub handle: Value,
    /// The run's state right after the ack (default `starting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
}

/// The answer to an ack: the run, and a token scoped to it for the run's own use (shown
/// once; give it to the run as `LIFTOFF_RUN_TOKEN`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AckResponse {
    pub run: crate::Run,
    pub run_token: String,
}

/// Most entries in one batch of acks or run reports.
pub const MAX_BATCH: usize = 256;

/// One ack in a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemAck {
    pub item_id: crate::ItemId,
    pub ack: AckRequest,
}

/// Several acks in one request (an agent taking many short runs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBatch {
    pub acks: Vec<ItemAck>,
}

/// One run report in a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    pub run_id: RunId,
    pub update: crate::RunUpdate,
}

/// Several run reports in one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    pub reports: Vec<RunReport>,
}

/// Why one entry of a batch was refused: the status it would have had alone, and the error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntryError {
    pub status: u16,
    pub error: ErrorDetail,
}

/// An ack of a batch, stored: the run's token. The agent that sent the ack has the rest of
/// the run, so a batch does not carry each run back (reading and encoding every run was a
/// good part of an ack's cost to a busy agent of short runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AckedRun {
    pub run_id: RunId,
    pub run_token: String,
}

/// The answer to one ack of a batch, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AckOutcome {
    Ok(AckedRun),
    Error(EntryError),
}

/// A report of a batch, stored: the run's state now (the reported one). The whole run is
/// `GET /api/v1/runs/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportedRun {
    pub run_id: RunId,
    pub state: RunState,
}

/// The answer to one report of a batch, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportOutcome {
    Ok(ReportedRun),
    Error(EntryError),
}

/// Largest log chunk one request may append.
pub const MAX_LOG_CHUNK: usize = 1024 * 1024;
/// Most log bytes the server keeps per run; the agent keeps the whole file.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// Where a log append goes: the byte offset in the run's output, and the fence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogAppend {
    pub fence: i64,
    pub offset: u64,
}

/// Reading a run's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Start at this byte.
    #[serde(default)]
    pub offset: u64,
    /// Keep the response open and stream output as it comes, until the run ends.
    #[serde(default)]
    pub follow: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub fence: i64,
    pub message: String,
    pub phase: Phase,
    /// The run's exit code, when it ran and exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub files: Vec<Attachment>,
    /// Why it failed, when the phase and exit code do not say (`start-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cause: Option<crate::retry::RetryCause>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarnRequest {
    pub fence: i64,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub fence: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    pub scope: Scope,
}

/// A new token: the secret is shown this once and never again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: TokenInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    pub agent: Agent,
}

/// Filters for item listings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ItemFilter {
    pub queue: Option<String>,
    /// Only the runs of this sweep (its scheduler item not included).
    pub sweep: Option<String>,
    pub state: Option<ItemState>,
    /// Only the items of this job (any version: `name`; one version: `name:v3`).
    pub job: Option<String>,
    /// Only items whose id is above this, oldest first (for paging forward).
    pub after: Option<i64>,
    /// Only items whose id is below this (for paging back through the newest-first order).
    pub before: Option<i64>,
    /// At most this many (1 to 1000, default 100), newest first unless `after` is given.
    pub limit: Option<u32>,
}

/// `POST /prune`: what to remove.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Remove what ended (or stopped) longer ago than this many seconds (at least 60).
    pub older_than_s: u64,
    /// Only count what would go.
    #[serde(default)]
    pub dry_run: bool,
}

/// How to cancel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CancelQuery {
    /// End a running item now, without its agent's confirmation (its run becomes `lost`).
    #[serde(default)]
    pub force: bool,
}

/// Filters for run listings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    pub queue: Option<String>,
    pub state: Option<RunState>,
    pub agent: Option<AgentId>,
    /// Only the runs of this sweep.
    #[serde(default)]
    pub sweep: Option<String>,
    /// Only the runs of this job (`name` for any version, `name:v3` for one).
    #[serde(default)]
    pub job: Option<String>,
    /// At most this many, newest first (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// One problem with a request, by field path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// For template variables: the rule broken (`type`, `minimum`, `maximum`, `enum`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable kind: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `invalid`, `internal`.
    pub code: String,
    /// One line for people.
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}
