//! Domain and wire types shared by every part of liftoff: ids, launch specs, queues and their
//! template variables, items and their lifecycle, runs, agents, tokens and API bodies.
//!
//! Nothing here does I/O. Logic that only needs these types (template substitution, state
//! predicates) lives here too so that the server, the store and the agent agree on it.

pub mod agent;
pub mod api;
pub mod auth;
pub mod container;
pub mod ids;
pub mod item;
pub mod job;
pub mod kubernetes;
pub mod queue;
pub mod ray;
pub mod retry;
pub mod run;
pub mod slurm;
pub mod spec;
pub mod sweep;
pub mod template;

pub use agent::{Agent, AgentStatus, Heartbeat, HeartbeatReply, LeaseTerms, NewAgent};
pub use auth::{Scope, TokenInfo};
pub use ids::{AgentId, ItemId, RunId};
pub use item::{Attachment, Failure, Item, ItemKind, ItemState, Lease, Phase, Warning};
pub use job::{JobKind, JobSpec, JobVersion};
pub use queue::{NewQueue, Queue, QueueDepth, ResourceType};
pub use retry::{ExitCodeRetry, RetryCause, RetryCounts, RetryPolicy};
pub use run::{Run, RunState, RunUpdate};
pub use spec::{LaunchSpec, Priority};
pub use sweep::{Sweep, SweepState};
pub use template::{TemplateVariable, VarType};

/// Milliseconds since the Unix epoch, UTC: the one time representation on the wire and in
/// the stores, so that deadlines compare as integers.
pub type Millis = i64;

/// The current wall-clock time in [`Millis`]. Logic with deadlines takes `now` as a parameter
/// instead of calling this, so that tests can move time by hand.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A time in [`Millis`] as its UTC date and time of day: `(year, month, day, ms into the
/// day)`, for people reading times (the CLI's `show`, the dashboard).
pub fn utc_parts(ms: Millis) -> (i64, i64, i64, i64) {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest)
}

/// The file a local server writes into its data directory so that the CLI on the same
/// machine finds it with no set-up: `<data_dir>/client.json`, mode 0600.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClientFile {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl ClientFile {
    pub const NAME: &'static str = "client.json";
}
