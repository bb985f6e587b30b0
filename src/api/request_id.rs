//! Request ids: every response carries `x-request-id` and `x-correlation-id`; an incoming UUID
//! `x-correlation-id` is reused, anything else replaced. The id is visible to the handler's task
//! (envelopes, error logs) through a task-local.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static REQUEST_ID: String;
}

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The id of the request being served (empty outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default()
}

/// The id to use for a request whose `x-correlation-id` header is `incoming`.
pub fn choose_id(incoming: Option<&HeaderValue>) -> String {
    incoming
        .and_then(|v| v.to_str().ok())
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
        .map(|u| u.hyphenated().to_string())
        .unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string())
}

/// Middleware: assigns the id, runs the request inside its scope, stamps the response.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = choose_id(req.headers().get(&X_CORRELATION_ID));
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID, v.clone());
        resp.headers_mut().insert(X_CORRELATION_ID, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_correlation_id_is_reused_anything_else_replaced() {
        let u = "0b9c3f0e-6f4e-4b7e-9a59-2f7f7f0c1d2e";
        assert_eq!(choose_id(Some(&HeaderValue::from_static(u))), u);
        let other = choose_id(Some(&HeaderValue::from_static("not-a-uuid")));
        assert_ne!(other, "not-a-uuid");
        assert!(uuid::Uuid::parse_str(&other).is_ok());
        assert!(uuid::Uuid::parse_str(&choose_id(None)).is_ok());
    }
}
