//! The one error type of the HTTP edge. Handlers return `ApiError`; every error response,
//! from a handler, an extractor, the body limit or an unknown route, has the same JSON body
//! ([`ErrorBody`]) so clients parse one shape.
//!
//! Which to use: store errors convert by `?`; request-shape problems are `invalid` (422, with
//! field paths) or `bad_request` (400, unparseable); auth problems are `unauthorized` (401, no
//! or unknown token) and `forbidden` (403, the token's scope does not allow the route).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use liftoff_store::StoreError;
use liftoff_types::api::{ErrorBody, ErrorDetail, FieldError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub fields: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 422 with every problem by field path; the message names the first.
    pub fn invalid(mut fields: Vec<FieldError>) -> ApiError {
        // A key is the caller's text, and may be empty: shown quoted, it still says where.
        for f in &mut fields {
            if f.field.is_empty() {
                f.field = "\"\"".into();
            }
        }
        let message = match fields.first() {
            Some(f) if fields.len() == 1 => format!("{}: {}", f.field, f.message),
            Some(f) => format!("{}: {} (and {} more)", f.field, f.message, fields.len() - 1),
            None => "invalid request".to_string(),
        };
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message,
            fields,
        }
    }

    /// 422 from `(field, problem)` pairs; `Ok(())` when there are none.
    pub fn check(problems: Vec<(String, String)>) -> Result<(), ApiError> {
        if problems.is_empty() {
            return Ok(());
        }
        let fields = problems
            .into_iter()
            .map(|(field, message)| FieldError {
                field,
                message,
                rule: None,
            })
            .collect();
        Err(ApiError::invalid(fields))
    }

    /// The entry of a batch this error stands for.
    pub fn entry(self) -> liftoff_types::api::EntryError {
        liftoff_types::api::EntryError {
            status: self.status.as_u16(),
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.message,
                fields: self.fields,
            },
        }
    }

    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_server_error() => "internal",
            _ => "error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.message,
                fields: self.fields,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            StoreError::Invalid { field, message } => ApiError::invalid(vec![FieldError {
                field,
                message,
                rule: None,
            }]),
            StoreError::Busy(m) => {
                tracing::warn!(error = %m, "store busy");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is busy; try again",
                )
            }
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "the database cannot be reached");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server cannot reach its database; try again",
                )
            }
            StoreError::Full(m) => {
                tracing::error!(error = %m, "the database's disk is full: writes are refused until space is freed");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "the server's disk is full; nothing was written, try again once space is freed",
                )
            }
            other => {
                // The chain goes to the log, not to the caller.
                let mut chain = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::error!(error = %chain, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rej: JsonRejection) -> ApiError {
        let status = rej.status();
        let text = rej.body_text();
        if status != StatusCode::UNPROCESSABLE_ENTITY {
            return ApiError::new(status, text);
        }
        // axum says "Failed to deserialize the JSON body into the target type: <path>: <why>";
        // the path and the why are what a person needs.
        let detail = match text.split_once("target type: ") {
            Some((_, rest)) => rest.to_string(),
            None => text,
        };
        // At the top level serde's path is empty (": unknown field ..."): the body itself.
        let (field, detail) = match detail.split_once(": ") {
            Some(("", why)) => ("body".to_string(), why.to_string()),
            Some((path, _)) if !path.contains(' ') => (path.to_string(), detail),
            _ => ("body".to_string(), detail),
        };
        ApiError::invalid(vec![FieldError {
            field,
            message: detail,
            rule: None,
        }])
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rej: QueryRejection) -> ApiError {
        ApiError::bad_request(rej.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rej: PathRejection) -> ApiError {
        ApiError::bad_request(rej.body_text())
    }
}
