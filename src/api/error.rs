//! The one error type at the HTTP edge: every failure a client sees is the error envelope of
//! `client-contracts.md` §1, `{"success":false,"error":{"code","message","details"?,"requestId"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::request_id::current_request_id;
use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// The machine-readable code clients key on (`VALIDATION_ERROR`, `NOT_FOUND`, …).
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 `VALIDATION_ERROR` naming the offending parameter (also in `details.parameter`).
    pub fn validation(param: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("invalid `{param}`: {reason}"),
        )
        .with_details(json!({ "parameter": param, "reason": reason.to_string() }))
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", what)
    }

    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", msg)
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", msg)
    }

    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", msg)
    }

    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", msg)
    }

    /// 500 with a generic message; the cause goes to the log with the request id, not to the
    /// client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(request_id = %current_request_id(), error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error; the request id identifies it in the server log",
        )
    }

    /// The code conventionally used for a bare status (errors produced by layers and by the
    /// router itself, turned into envelopes by [`super::middleware::envelope_errors`]).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status.as_u16() {
            400 => ("VALIDATION_ERROR", "the request is malformed"),
            401 => ("UNAUTHORIZED", "authentication required"),
            403 => ("FORBIDDEN", "not allowed"),
            404 => ("NOT_FOUND", "no such resource"),
            405 => ("METHOD_NOT_ALLOWED", "method not allowed on this resource"),
            406 => ("NOT_ACCEPTABLE", "no acceptable representation"),
            408 => ("REQUEST_TIMEOUT", "the request took too long"),
            409 => ("CONFLICT", "conflict"),
            413 => ("PAYLOAD_TOO_LARGE", "request body too large"),
            415 => ("UNSUPPORTED_MEDIA_TYPE", "unsupported media type"),
            422 => ("VALIDATION_ERROR", "the request body is invalid"),
            429 => ("RATE_LIMIT_EXCEEDED", "too many requests"),
            503 => ("SERVICE_UNAVAILABLE", "service unavailable"),
            504 => ("GATEWAY_TIMEOUT", "gateway timeout"),
            _ => ("INTERNAL_ERROR", "internal error"),
        };
        Self::new(status, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => {
                tracing::warn!(request_id = %current_request_id(), error = %e, "database unavailable");
                let mut err = Self::unavailable("the database is unavailable");
                err.retry_after = Some(5);
                err
            }
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "requestId": current_request_id(),
        });
        if let (Some(d), Some(obj)) = (self.details, error.as_object_mut()) {
            obj.insert("details".into(), d);
        }
        let mut resp = (
            self.status,
            Json(json!({ "success": false, "error": error })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        // Marks an enveloped error so the fix-up layer leaves it alone.
        resp.extensions_mut().insert(Enveloped);
        resp
    }
}

/// Response extension: the body is already an envelope.
#[derive(Debug, Clone, Copy)]
pub struct Enveloped;
