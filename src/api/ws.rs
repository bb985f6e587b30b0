//! `GET /ws/streams`: the WebSocket upgrade into the hub (`crate::hub`), with the per-IP and
//! global connection caps applied before the handshake (429 / 503 error envelopes).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiContext, ApiError};
use crate::hub::conn::{self, Credentials};
use crate::hub::Refused;

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
    let accept = match handshake(&mut parts) {
        Ok(h) => h,
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
    let (on_upgrade, key) = accept;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => conn::serve(hub, upgraded, slot, creds).await,
            Err(e) => tracing::debug!(error = %e, "ws upgrade did not complete"),
        }
    });
    let mut res = Response::new(axum::body::Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// Does the header hold this token (comma-separated, any case)?
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Checks an RFC 6455 opening handshake (HTTP/1.1 only) and takes the connection's upgrade:
/// the future of the upgraded socket and the `Sec-WebSocket-Accept` value. The socket is kept as
/// it is (no framing layer on the write side, see `hub::wire`).
fn handshake(
    parts: &mut axum::http::request::Parts,
) -> Result<(hyper::upgrade::OnUpgrade, String), &'static str> {
    if parts.version != Version::HTTP_11 {
        return Err("WebSocket upgrades are served over HTTP/1.1");
    }
    if parts.method != Method::GET {
        return Err("the request method must be GET");
    }
    if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
        return Err("the Connection header must include 'upgrade'");
    }
    if !has_token(&parts.headers, header::UPGRADE, "websocket") {
        return Err("the Upgrade header must be 'websocket'");
    }
    if parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err("the Sec-WebSocket-Version header must be 13");
    }
    let key = parts
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("the Sec-WebSocket-Key header is missing")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or("this connection cannot be upgraded")?;
    Ok((on_upgrade, accept))
}
