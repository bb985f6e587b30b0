//! The success envelope: `{"success":true,"data":<payload>,"meta":{"timestamp","requestId"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::request_id::current_request_id;

/// Now as ISO-8601 with milliseconds, UTC (`2026-11-25T15:08:45.123Z`).
pub fn now_iso_ms() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&fmt)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// `200` with `data` in the success envelope.
pub fn ok<T: Serialize>(data: T) -> Response {
    with_status(StatusCode::OK, data)
}

/// `status` with `data` in the success envelope (serialized straight from the typed payload).
pub fn with_status<T: Serialize>(status: StatusCode, data: T) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        timestamp: String,
        request_id: String,
    }
    #[derive(Serialize)]
    struct Body<T> {
        success: bool,
        data: T,
        meta: Meta,
    }
    let body = Body {
        success: true,
        data,
        meta: Meta {
            timestamp: now_iso_ms(),
            request_id: current_request_id(),
        },
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => (
            status,
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => {
            super::ApiError::internal(format!("cannot serialize a response: {e}")).into_response()
        }
    }
}

/// The frontend's flat surface: `{"data": …}`.
pub fn data<T: Serialize>(data: T) -> Response {
    Json(json!({ "data": data })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_is_iso_with_milliseconds() {
        let t = now_iso_ms();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    }
}
