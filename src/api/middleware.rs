//! Middleware of the HTTP edge and the router's own fallbacks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::error::{ApiError, Enveloped};

/// Unknown route: 404 envelope.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Known route, wrong method: 405 envelope (the `Allow` header is kept by
/// [`envelope_errors`]).
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// `X-Content-Type-Options: nosniff`, and no server banner.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.remove(header::SERVER);
    h.remove(header::HeaderName::from_static("x-powered-by"));
    resp
}

/// Turns any error response that is not an envelope yet (produced by a layer: timeout, body
/// limit, an extractor's rejection) into the error envelope, keeping its headers (`Allow`,
/// `Retry-After`, …) and, when it is short text, its message.
pub async fn envelope_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.extensions().get::<Enveloped>().is_some()
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let mut err = ApiError::from_status(status);
    if let Ok(bytes) = axum::body::to_bytes(body, 2048).await {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let text = text.trim();
            if !text.is_empty() && !text.starts_with('{') {
                err.message = text.to_string();
            }
        }
    }
    let mut out = err.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Request counter and latency histogram per method, route template and status.
pub async fn http_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("fluxora_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("fluxora_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

type KeyedLimiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// Per-client-IP rate limit (GCRA via `governor`): `per_minute` requests a minute, bursting up
/// to the same number.
#[derive(Clone)]
pub struct RateLimit {
    inner: Option<Arc<KeyedLimiter>>,
    per_minute: u32,
}

impl RateLimit {
    /// `per_minute == 0`: no limit.
    pub fn new(per_minute: u32) -> Self {
        let inner = NonZeroU32::new(per_minute).map(|n| {
            let limiter = Arc::new(
                RateLimiter::keyed(Quota::per_minute(n))
                    .with_middleware::<StateInformationMiddleware>(),
            );
            // Forget idle clients now and then so the key map stays small.
            let weak = Arc::downgrade(&limiter);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(60));
                    loop {
                        tick.tick().await;
                        match weak.upgrade() {
                            Some(l) => {
                                l.retain_recent();
                                l.shrink_to_fit();
                            }
                            None => break,
                        }
                    }
                });
            }
            limiter
        });
        Self { inner, per_minute }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Paths the rate limit does not apply to.
fn exempt(path: &str) -> bool {
    matches!(path, "/health" | "/metrics")
}

/// Applies [`RateLimit`]: `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (Unix
/// seconds) on every limited response; 429 `RATE_LIMIT_EXCEEDED` with `Retry-After` when over.
pub async fn rate_limit(State(rl): State<RateLimit>, req: Request, next: Next) -> Response {
    let Some(limiter) = rl.inner.as_ref() else {
        return next.run(req).await;
    };
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let per_token = Duration::from_secs(60) / rl.per_minute.max(1);
    match limiter.check_key(&ip) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let used = rl.per_minute.saturating_sub(remaining);
            // The bucket is full again once the used tokens have been replenished.
            let reset = unix_now() + (per_token * used).as_secs().max(1);
            let mut resp = next.run(req).await;
            set_limit_headers(&mut resp, rl.per_minute, remaining, reset);
            resp
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                format!(
                    "rate limit of {} requests per minute exceeded; retry in {retry_after} s",
                    rl.per_minute
                ),
            )
            .with_details(serde_json::json!({
                "limit": rl.per_minute,
                "windowSeconds": 60,
                "retryAfter": retry_after,
            }));
            err.retry_after = Some(retry_after.max(1));
            let mut resp = err.into_response();
            set_limit_headers(&mut resp, rl.per_minute, 0, unix_now() + retry_after.max(1));
            resp
        }
    }
}

fn set_limit_headers(resp: &mut Response<Body>, limit: u32, remaining: u32, reset: u64) {
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(header::HeaderName::from_static(name), v);
        }
    }
}
