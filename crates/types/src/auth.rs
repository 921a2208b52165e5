//! Token scopes. A token has exactly one scope; `admin` can do everything.

use crate::item::string_enum;
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// `admin`: everything. `user`: enqueue, read, cancel. `agent`: lease, ack, report, read.
    /// `read`: reading only (dashboards, a Prometheus scraper, audits).
    /// `run`: made by the server for one run, which may read only itself (and, later, write
    /// its own metrics); revoked when the run ends.
    Scope {
        Admin = "admin",
        User = "user",
        Agent = "agent",
        Run = "run",
        Read = "read",
    }
);

/// A token as listings show it: never the secret, never its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    /// For a `run` token: the run it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<crate::RunId>,
    pub created_at_ms: Millis,
}
