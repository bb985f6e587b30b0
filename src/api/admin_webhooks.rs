//! The webhook admin API under `/api/admin/webhooks`, behind `Authorization: Bearer
//! <ADMIN_API_KEY>` (compared in constant time). No header or a malformed one: 401
//! `UNAUTHORIZED`; a wrong key: 403 `FORBIDDEN`; no `ADMIN_API_KEY` configured: 503
//! `SERVICE_UNAVAILABLE` saying so (the API exists, it is switched off).
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/admin/webhooks/event-types` | the event types endpoints can filter on |
//! | `POST /api/admin/webhooks` | register `{url, description?, eventTypes?, streamIds?, addresses?, enabled?}` → 201 `{endpoint, secret}` (the secret is shown this once) |
//! | `GET /api/admin/webhooks` | `{endpoints}` |
//! | `GET /api/admin/webhooks/{id}` | `{endpoint}` |
//! | `PATCH /api/admin/webhooks/{id}` | change any of the fields above → `{endpoint}` |
//! | `DELETE /api/admin/webhooks/{id}` | the endpoint and its deliveries → `{id, deleted}` |
//! | `POST /api/admin/webhooks/{id}/rotate-secret` | new secret → `{endpoint, secret}`; the old one is still signed with until `endpoint.previousSecretExpiresAt` |
//! | `GET /api/admin/webhooks/{id}/deliveries?status=&limit=&cursor=` | newest first → `{deliveries, has_more, next_cursor}` |
//! | `GET /api/admin/webhooks/{id}/deliveries/{deliveryId}` | `{delivery}` with `attemptsMade` |
//! | `POST /api/admin/webhooks/{id}/deliveries/{deliveryId}/retry` | a dead delivery queued again → 202 `{delivery}` |
//! | `POST /api/admin/webhooks/{id}/replay` | `{fromPosition, toPosition}` → 202 `{enqueued}` |
//! | `POST /api/admin/webhooks/{id}/ping` | a `webhook.ping` delivery → 202 `{delivery}` |

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::envelope::{ok, with_status};
use super::{ApiContext, ApiError};
use crate::webhooks::service::{AdminError, EndpointInput};
use crate::webhooks::WebhookAdmin;

pub fn routes(ctx: ApiContext) -> Router<ApiContext> {
    Router::new()
        .route("/api/admin/webhooks", get(list).post(create))
        .route("/api/admin/webhooks/event-types", get(event_types))
        .route(
            "/api/admin/webhooks/{id}",
            get(get_one).patch(update).delete(delete),
        )
        .route("/api/admin/webhooks/{id}/rotate-secret", post(rotate))
        .route("/api/admin/webhooks/{id}/deliveries", get(deliveries))
        .route(
            "/api/admin/webhooks/{id}/deliveries/{delivery}",
            get(delivery),
        )
        .route(
            "/api/admin/webhooks/{id}/deliveries/{delivery}/retry",
            post(retry),
        )
        .route("/api/admin/webhooks/{id}/replay", post(replay))
        .route("/api/admin/webhooks/{id}/ping", post(ping))
        .route_layer(axum::middleware::from_fn_with_state(ctx, require_admin))
}

/// The bearer check of every admin route.
pub async fn require_admin(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    let Some(key) = &ctx.admin_api_key else {
        return ApiError::unavailable(
            "the admin API is not configured: set ADMIN_API_KEY (at least 16 characters)",
        )
        .into_response();
    };
    let challenge = |msg: &str| {
        let mut r = ApiError::unauthorized(msg).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"fluxora-admin\""),
        );
        r
    };
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return challenge("missing `Authorization: Bearer <ADMIN_API_KEY>`");
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return challenge("the Authorization header is not `Bearer <ADMIN_API_KEY>`");
    };
    // Digests of equal length, compared in constant time: neither the key's length nor a prefix
    // leaks through timing.
    let a = Sha256::digest(token.as_bytes());
    let b = Sha256::digest(key.expose().as_bytes());
    if !bool::from(a.as_slice().ct_eq(b.as_slice())) {
        return ApiError::forbidden("invalid admin API key").into_response();
    }
    next.run(req).await
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(m) => ApiError::not_found(m),
            AdminError::Invalid { field, reason } => ApiError::validation(field, reason),
            AdminError::Conflict(m) => ApiError::conflict(m),
            AdminError::Store(s) => s.into(),
        }
    }
}

fn admin(ctx: &ApiContext) -> &WebhookAdmin {
    &ctx.webhooks
}

/// Parses a JSON body (415 unless `Content-Type: application/json`; 400 naming the problem).
fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send `Content-Type: application/json`",
        ));
    }
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::validation("body", e))
}

/// A stream id, as a decimal string or a number.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum StreamIdIn {
    Text(String),
    Number(u64),
}

/// An endpoint's fields (all optional on update; `url` required on create).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointBody {
    /// http(s) URL of the receiver.
    url: Option<String>,
    description: Option<String>,
    /// Only these event types (see `/api/admin/webhooks/event-types`); empty or absent: all.
    event_types: Option<Vec<String>>,
    /// Only these streams.
    stream_ids: Option<Vec<StreamIdIn>>,
    /// Only streams whose sender or recipient is one of these strkeys.
    addresses: Option<Vec<String>>,
    enabled: Option<bool>,
}

impl From<EndpointBody> for EndpointInput {
    fn from(b: EndpointBody) -> Self {
        EndpointInput {
            url: b.url,
            description: b.description,
            event_types: b.event_types,
            stream_ids: b.stream_ids.map(|v| {
                v.into_iter()
                    .map(|s| match s {
                        StreamIdIn::Text(t) => t.trim().to_string(),
                        StreamIdIn::Number(n) => n.to_string(),
                    })
                    .collect()
            }),
            addresses: b
                .addresses
                .map(|v| v.into_iter().map(|a| a.trim().to_string()).collect()),
            enabled: b.enabled,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/admin/webhooks/event-types",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "The event types endpoints can filter on", body = Object),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn event_types() -> Response {
    ok(json!({ "eventTypes": WebhookAdmin::event_types() }))
}

#[utoipa::path(
    post,
    path = "/api/admin/webhooks",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    request_body(content = EndpointBody, content_type = "application/json"),
    responses(
        (status = 201, description = "`{endpoint, secret}`: the secret is shown this once", body = Object),
        (status = 400, description = "Invalid field", body = super::types::ErrorEnvelope),
        (status = 415, description = "Not JSON", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn create(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: EndpointBody = json_body(&headers, &body)?;
    let (endpoint, secret) = admin(&ctx).create(b.into()).await?;
    Ok(with_status(
        StatusCode::CREATED,
        json!({ "endpoint": endpoint, "secret": secret.expose() }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/admin/webhooks",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "`{endpoints}`", body = Object),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn list(State(ctx): State<ApiContext>) -> Result<Response, ApiError> {
    Ok(ok(json!({ "endpoints": admin(&ctx).list().await? })))
}

#[utoipa::path(
    get,
    path = "/api/admin/webhooks/{id}",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "`{endpoint}`", body = Object),
        (status = 404, description = "Unknown endpoint", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn get_one(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(json!({ "endpoint": admin(&ctx).get(&id).await? })))
}

#[utoipa::path(
    patch,
    path = "/api/admin/webhooks/{id}",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    request_body(content = EndpointBody, content_type = "application/json"),
    responses(
        (status = 200, description = "`{endpoint}`", body = Object),
        (status = 400, description = "Invalid field", body = super::types::ErrorEnvelope),
        (status = 404, description = "Unknown endpoint", body = super::types::ErrorEnvelope),
        (status = 415, description = "Not JSON", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn update(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: EndpointBody = json_body(&headers, &body)?;
    Ok(ok(
        json!({ "endpoint": admin(&ctx).update(&id, b.into()).await? }),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/admin/webhooks/{id}",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "`{id, deleted}`", body = Object),
        (status = 404, description = "Unknown endpoint", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn delete(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&ctx).delete(&id).await?;
    Ok(ok(json!({ "id": id, "deleted": true })))
}

#[utoipa::path(
    post,
    path = "/api/admin/webhooks/{id}/rotate-secret",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "`{endpoint, secret}`", body = Object),
        (status = 404, description = "Unknown endpoint", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn rotate(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (endpoint, secret) = admin(&ctx).rotate(&id).await?;
    Ok(ok(
        json!({ "endpoint": endpoint, "secret": secret.expose() }),
    ))
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn encode_cursor(pk: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("d:{pk}"))
}

fn decode_cursor(c: &str) -> Option<i64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix("d:")?
        .parse()
        .ok()
}

#[utoipa::path(
    get,
    path = "/api/admin/webhooks/{id}/deliveries",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id"), ("status" = Option<String>, Query, description = "pending | delivered | dead | dropped"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"), ("cursor" = Option<String>, Query, description = "From `next_cursor`")),
    responses(
        (status = 200, description = "`{deliveries, has_more, next_cursor}`, newest first", body = Object),
        (status = 400, description = "Invalid parameter", body = super::types::ErrorEnvelope),
        (status = 404, description = "Unknown endpoint", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn deliveries(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                return Err(ApiError::validation(
                    "limit",
                    "must be a whole number 1..=500",
                ))
            }
        },
    };
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            decode_cursor(c).ok_or_else(|| ApiError::validation("cursor", "is not a cursor"))?,
        ),
    };
    let mut rows = admin(&ctx)
        .deliveries(&id, q.status, before, limit + 1)
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if has_more {
        rows.last().map(|d| encode_cursor(d.pk))
    } else {
        None
    };
    Ok(ok(json!({
        "deliveries": rows,
        "has_more": has_more,
        "next_cursor": next,
    })))
}

#[utoipa::path(
    get,
    path = "/api/admin/webhooks/{id}/deliveries/{delivery}",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id"), ("delivery" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "`{delivery}` with its attempts", body = Object),
        (status = 404, description = "Unknown endpoint or delivery", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn delivery(
    State(ctx): State<ApiContext>,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(ok(
        json!({ "delivery": admin(&ctx).delivery(&id, &delivery).await? }),
    ))
}

#[utoipa::path(
    post,
    path = "/api/admin/webhooks/{id}/deliveries/{delivery}/retry",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id"), ("delivery" = String, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "`{delivery}` queued again", body = Object),
        (status = 404, description = "Unknown endpoint or delivery", body = super::types::ErrorEnvelope),
        (status = 409, description = "The delivery is not dead", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn retry(
    State(ctx): State<ApiContext>,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let d = admin(&ctx).retry(&id, &delivery).await?;
    Ok(with_status(StatusCode::ACCEPTED, json!({ "delivery": d })))
}

/// An inclusive range of global event positions.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayBody {
    from_position: i64,
    to_position: i64,
}

#[utoipa::path(
    post,
    path = "/api/admin/webhooks/{id}/replay",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    request_body(content = ReplayBody, content_type = "application/json"),
    responses(
        (status = 202, description = "`{enqueued}`", body = Object),
        (status = 400, description = "Invalid range", body = super::types::ErrorEnvelope),
        (status = 404, description = "Unknown endpoint", body = super::types::ErrorEnvelope),
        (status = 415, description = "Not JSON", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn replay(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ReplayBody = json_body(&headers, &body)?;
    let n = admin(&ctx)
        .replay(&id, b.from_position, b.to_position)
        .await?;
    Ok(with_status(StatusCode::ACCEPTED, json!({ "enqueued": n })))
}

#[utoipa::path(
    post,
    path = "/api/admin/webhooks/{id}/ping",
    tag = "webhooks-admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 202, description = "`{delivery}` of a `webhook.ping`", body = Object),
        (status = 404, description = "Unknown endpoint", body = super::types::ErrorEnvelope),
        (status = 401, description = "No or malformed bearer token", body = super::types::ErrorEnvelope),
        (status = 403, description = "Wrong admin key", body = super::types::ErrorEnvelope),
        (status = 503, description = "ADMIN_API_KEY is not configured", body = super::types::ErrorEnvelope),
    )
)]
pub async fn ping(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = admin(&ctx).ping(&id).await?;
    Ok(with_status(StatusCode::ACCEPTED, json!({ "delivery": d })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("nope"), None);
    }
}
