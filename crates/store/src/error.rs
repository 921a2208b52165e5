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
            _ => StoreError::Backend(Box::new(e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Backend(Box::new(e))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }
}
