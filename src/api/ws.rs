//! `GET /ws/streams`: the WebSocket upgrade into the hub (`crate::hub`), with the per-IP and
//! global connection caps applied before the handshake (429 / 503 error envelopes).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiContext, ApiError};
use crate::hub::conn::{self, Credentials};
use crate::hub::Refused;

/// Largest WebSocket message the server reads at all; between the protocol's 4096 bytes and
/// this, a message is answered with `PAYLOAD_TOO_LARGE` and the socket stays open; beyond it the
/// connection is closed with 1009.
pub const MAX_WS_READ: usize = 64 * 1024;

pub fn routes() -> Router<ApiContext> {
    Router::new().route("/ws/streams", get(upgrade))
}

fn credentials(parts: &axum::http::request::Parts) -> Credentials {
    if let Some(v) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ").map(str::trim) {
            return Credentials::Token(t.to_string());
        }
    }
    if let Some(q) = parts.uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k == "token" {
                return Credentials::Token(v.into_owned());
            }
        }
    }
    Credentials::None
}

async fn upgrade(State(ctx): State<ApiContext>, req: Request) -> Response {
    let Some(hub) = ctx.hub.clone() else {
        return ApiError::unavailable("the WebSocket hub is not running in this process")
            .into_response();
    };
    let (mut parts, _body) = req.into_parts();
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let creds = credentials(&parts);
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &ctx).await {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                format!("/ws/streams expects a WebSocket upgrade: {e}"),
            )
            .into_response()
        }
    };
    let slot = match hub.admit(ip) {
        Ok(s) => s,
        Err(Refused::PerIp(n)) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                format!("at most {n} WebSocket connections per client address"),
            )
            .with_details(serde_json::json!({ "maxConnectionsPerIp": n }));
            e.retry_after = Some(5);
            return e.into_response();
        }
        Err(Refused::Full(n)) => {
            let mut e = ApiError::unavailable(format!(
                "the server holds its maximum of {n} WebSocket connections"
            ));
            e.retry_after = Some(5);
            return e.into_response();
        }
        Err(Refused::ShuttingDown) => {
            return ApiError::unavailable("the server is shutting down").into_response()
        }
    };
    // Client messages are small: a small read buffer keeps idle connections cheap.
    ws.max_message_size(MAX_WS_READ)
        .max_frame_size(MAX_WS_READ)
        .read_buffer_size(4096)
        .on_upgrade(move |socket| conn::serve(hub, socket, slot, creds))
}
