//! Store errors. They say what went wrong in the caller's terms (not found, conflict,
//! invalid) so the HTTP edge can map them to status codes; backend failures keep their source.

use thiserror::Error;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Error)]
pub enum StoreError {
    /// `what` is the kind of thing (`queue`, `item`, `run`, `agent`, `token`, `file`).
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The write lost a race or came too late: a stale fence, a finished item, a name taken.
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but breaks a rule the store enforces.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store is shut down")]
    Closed,
    /// The database gave up on the write because of a concurrent one (a deadlock or a
    /// serialization failure) more times than the store retries; the caller may try again.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// The database's disk (or quota) is full: nothing was written; the same write goes
    /// through once space is freed.
    #[error("the database's disk is full: {0}")]
    Full(String),
    /// The database could not be reached, or it went away (restarting, shutting down, the
    /// connection cut). Never retried inside the store: a write whose connection broke at
    /// its commit may or may not have been committed, and only the caller's own key (a
    /// fence, an item id) can tell a second try from a new write.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn not_found(what: &'static str, id: impl ToString) -> StoreError {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return StoreError::Full(e.to_string());
        }
        StoreError::Backend(Box::new(e))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                StoreError::Busy(e.to_string())
            }
            Some(c) if *c == SqlState::DISK_FULL => StoreError::Full(e.to_string()),
            Some(c) if is_unavailable_state(c) => StoreError::Unavailable(describe(&e)),
            None if connection_lost(&e) => StoreError::Unavailable(describe(&e)),
            _ => StoreError::Backend(Box::new(e)),
        }
    }
}

/// SQLSTATE class 08 (connection exceptions) and the server going down or not yet up
/// (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
fn is_unavailable_state(state: &tokio_postgres::error::SqlState) -> bool {
    let code = state.code();
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// A client-side failure with no SQLSTATE: the connection closed, or a socket error on the
/// way (refused, reset, timed out).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The error with its causes, for the log ("error connecting to server: Connection refused").
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        use deadpool_postgres::PoolError;
        match e {
            // Making a new connection failed: as a query's failure would.
            PoolError::Backend(e) => StoreError::from(e),
            PoolError::Timeout(_) => StoreError::Unavailable(describe(&e)),
            PoolError::Closed => StoreError::Closed,
            other => StoreError::Backend(Box::new(other)),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }
}
