//! Token scopes. A token has exactly one scope; `admin` can do everything.

use crate::item::string_enum;
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// `admin`: everything. `user`: enqueue, read, cancel. `agent`: lease, ack, report, read.
    Scope {
        Admin = "admin",
        User = "user",
        Agent = "agent",
    }
);

/// A token as listings show it: never the secret, never its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at_ms: Millis,
}
