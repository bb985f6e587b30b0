//! `/api/streams`: the stream list (filters, keyset pages), one stream (now, at an instant, or
//! as of a ledger; weak ETags), and a stream's events (a JSON page, or Server-Sent Events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::envelope;
use super::params::{self, Params};
use super::types::{EventObject, EventPage, StreamData, StreamPage};
use super::{cursor, ApiContext, ApiError};
use crate::projection::fold::StreamState;
use crate::projection::view::{stream_object, StreamObject};
use crate::store::{StreamQuery, STREAM_STATUSES};

pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/api/streams", get(list_streams))
        .route("/api/streams/{id}", get(get_stream))
        .route("/api/streams/{id}/events", get(stream_events))
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses the `status` filter (`active`, `paused`, `completed`, `cancelled`, `closed`; any case).
pub fn status_param(p: &Params, name: &str) -> Result<Option<String>, ApiError> {
    match p.str(name) {
        None => Ok(None),
        Some(s) => {
            let lower = s.to_ascii_lowercase();
            if STREAM_STATUSES.contains(&lower.as_str()) {
                Ok(Some(lower))
            } else {
                Err(ApiError::validation(
                    name,
                    format!("`{s}` is not one of {}", STREAM_STATUSES.join(", ")),
                ))
            }
        }
    }
}

/// The stream list: `status`, `sender`, `recipient`, `limit` (1–100, default 20), `cursor`.
#[utoipa::path(
    get,
    path = "/api/streams",
    tag = "streams",
    params(
        ("status" = Option<String>, Query, description = "active | paused | completed | cancelled | closed"),
        ("sender" = Option<String>, Query, description = "Sender strkey (G…, C… or M…)"),
        ("recipient" = Option<String>, Query, description = "Recipient strkey (G…, C… or M…)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)"),
        ("cursor" = Option<String>, Query, description = "Opaque cursor from `next_cursor`"),
    ),
    responses(
        (status = 200, description = "A page of streams, ordered by id", body = super::types::Envelope<StreamPage>),
        (status = 400, description = "A parameter is invalid", body = super::types::ErrorEnvelope),
        (status = 429, description = "Rate limited", body = super::types::ErrorEnvelope),
    )
)]
pub async fn list_streams(
    State(ctx): State<ApiContext>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &["status", "sender", "recipient", "limit", "cursor"],
    )?;
    let status = status_param(&p, "status")?;
    let sender = p.address("sender")?;
    let recipient = p.address("recipient")?;
    let limit = p.limit(20, 100)?;
    let filters =
        cursor::filter_digest(&[status.as_deref(), sender.as_deref(), recipient.as_deref()]);
    let after = match p.str("cursor") {
        Some(c) => Some(cursor::decode(c, &filters)?),
        None => None,
    };
    let mut rows = ctx
        .store
        .list_streams(&StreamQuery {
            status,
            sender,
            recipient,
            after,
            limit: limit + 1,
        })
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(|s| cursor::encode(s.stream_id, &filters))
    } else {
        None
    };
    let now = now_unix();
    let streams = rows
        .iter()
        .map(|s| stream_object(s, now, &ctx.view))
        .collect();
    Ok(envelope::ok(StreamPage {
        streams,
        has_more,
        next_cursor,
    }))
}

/// Loads a stream now (`None`), or as of `ledger`; the instant its amounts are computed at.
pub async fn load_stream(
    ctx: &ApiContext,
    id: u64,
    p: &Params,
) -> Result<(Arc<StreamState>, u64), ApiError> {
    let at = p.u64_in("at", 0, i64::MAX as u64)?;
    let ledger = match p.str("ledger") {
        Some(raw) => Some(params::ledger_seq("ledger", raw)?),
        None => None,
    };
    match ledger {
        None => {
            let s = ctx
                .streams
                .stream(&*ctx.store, id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("stream {id} not found")))?;
            Ok((s, at.unwrap_or_else(now_unix)))
        }
        Some(seq) => {
            let Some(l) = ctx.store.ledger(seq).await? else {
                let tip = ctx.store.tip().await?.map(|t| t.sequence);
                let first = ctx.store.first_ledger().await?;
                return Err(ApiError::not_found(format!(
                    "ledger {seq} is not ingested (stored: {})",
                    match (first, tip) {
                        (Some(f), Some(t)) => format!("{f}..={t}"),
                        _ => "none".into(),
                    }
                )));
            };
            let s = ctx
                .store
                .stream_at(id, seq)
                .await?
                .map(Arc::new)
                .ok_or_else(|| {
                    ApiError::not_found(format!("stream {id} did not exist at ledger {seq}"))
                })?;
            let close = u64::try_from(l.close_time).unwrap_or(0);
            Ok((s, at.unwrap_or(close)))
        }
    }
}

/// Weak ETag of a rendered stream: everything the object is a function of except the instant
/// (the stored state's identity, and the time-dependent amounts), so a stream whose amounts no
/// longer move keeps its tag.
pub fn etag(s: &StreamState, obj: &StreamObject) -> String {
    let mut h = Sha256::new();
    for part in [
        obj.id.as_str(),
        &s.updated_ledger.to_string(),
        s.updated_tx.as_str(),
        &s.created_ledger.to_string(),
        obj.status.as_str(),
        obj.deposit_amount.as_str(),
        obj.streamed_amount.as_str(),
        obj.withdrawn_amount.as_str(),
        obj.withdrawable_amount.as_str(),
        obj.rate_per_second.as_str(),
        obj.recipient.as_str(),
        obj.kind.as_str(),
        obj.contract_id.as_str(),
        if obj.verified { "v" } else { "u" },
        &obj.verification_issues.join("|"),
        &obj.end_time.to_string(),
        &obj.cancelled_at.map(|c| c.to_string()).unwrap_or_default(),
        obj.claim_owner.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("W/\"{}\"", hex::encode(&h.finalize()[..12]))
}

fn etag_matches(headers: &HeaderMap, tag: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    v.split(',')
        .any(|t| t.trim() == "*" || bare(t) == bare(tag))
}

/// One stream: `{stream}`; `?at=<unix seconds>` computes the amounts at that instant,
/// `?ledger=<seq>` gives the state as of that ledger (amounts at its close time unless `at`).
#[utoipa::path(
    get,
    path = "/api/streams/{id}",
    tag = "streams",
    params(
        ("id" = String, Path, description = "Stream id (the contract's u64, decimal)"),
        ("at" = Option<u64>, Query, description = "Unix seconds to compute the amounts at"),
        ("ledger" = Option<u32>, Query, minimum = 1, description = "Ledger sequence: the state as of that ledger (time travel)"),
    ),
    responses(
        (status = 200, description = "The stream", body = super::types::Envelope<StreamData>,
            headers(("ETag" = String, description = "Weak validator"))),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Invalid id or parameter", body = super::types::ErrorEnvelope),
        (status = 404, description = "Unknown stream or ledger", body = super::types::ErrorEnvelope),
    )
)]
pub async fn get_stream(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = params::stream_id(&id)?;
    let p = Params::parse(q.as_deref(), &["at", "ledger"])?;
    let (s, at) = load_stream(&ctx, id, &p).await?;
    let obj = stream_object(&s, at, &ctx.view);
    let tag = etag(&s, &obj);
    let tag_value = HeaderValue::from_str(&tag).map_err(ApiError::internal)?;
    if etag_matches(&headers, &tag) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        resp.headers_mut().insert(header::ETAG, tag_value);
        return Ok(resp);
    }
    let mut resp = envelope::ok(StreamData { stream: obj });
    resp.headers_mut().insert(header::ETAG, tag_value);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// A stream's events: a JSON page (`after` = position, `limit` 1–500, default 100), or, with
/// `Accept: text/event-stream`, Server-Sent Events (`id:` event id, `event: stream_update`,
/// resume with `Last-Event-ID` or `after`, `: heartbeat` comments).
#[utoipa::path(
    get,
    path = "/api/streams/{id}/events",
    tag = "streams",
    params(
        ("id" = String, Path, description = "Stream id"),
        ("after" = Option<u64>, Query, minimum = 0, description = "Only events after this position"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 100)"),
        ("Last-Event-ID" = Option<String>, Header, description = "SSE resume: the last event id received"),
    ),
    responses(
        (status = 200, description = "A page of the stream's events, or an SSE stream (`text/event-stream`)",
            body = super::types::Envelope<EventPage>),
        (status = 400, description = "Invalid parameter", body = super::types::ErrorEnvelope),
        (status = 404, description = "Unknown stream", body = super::types::ErrorEnvelope),
    )
)]
pub async fn stream_events(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = params::stream_id(&id)?;
    let p = Params::parse(q.as_deref(), &["after", "limit"])?;
    let after = p.u64_in("after", 0, i64::MAX as u64)?.map(|a| a as i64);
    if ctx.store.stream(id).await?.is_none() {
        return Err(ApiError::not_found(format!("stream {id} not found")));
    }
    if wants_sse(&headers) {
        let last_event_id = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        return sse(ctx, id, after, last_event_id).await;
    }
    let limit = p.limit(100, 500)?;
    let after = after.unwrap_or(0);
    let mut rows = ctx.store.stream_events(id, after, limit + 1).await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = rows.last().map(|e| e.position.to_string());
    let epoch = ctx.store.epoch().await?;
    let last_position = ctx.store.last_position().await?;
    Ok(envelope::ok(EventPage {
        events: rows
            .iter()
            .map(|e| EventObject::of(e, ctx.view.decimals))
            .collect(),
        has_more,
        next_cursor,
        epoch,
        last_position,
    }))
}

/// How often an SSE response looks for new events.
const SSE_POLL: Duration = Duration::from_millis(250);

async fn sse(
    ctx: ApiContext,
    id: u64,
    after: Option<i64>,
    last_event_id: Option<String>,
) -> Result<Response, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    // Where to start: Last-Event-ID wins over `after`.
    let mut stale = None;
    let mut pos = after.unwrap_or(0);
    if let Some(eid) = last_event_id {
        match ctx.store.event_by_id(&eid).await? {
            Some(e) => pos = e.position,
            None => {
                stale = Some(eid);
                pos = 0;
            }
        }
    }
    let heartbeat = Duration::from_millis(ctx.http.sse_heartbeat_ms.max(10));
    tokio::spawn(async move {
        let send = |ev: Event| {
            let tx = tx.clone();
            async move { tx.send(ev).await.is_ok() }
        };
        let mut epoch = ctx.store.epoch().await.unwrap_or(0);
        if let Some(eid) = stale {
            let data = serde_json::json!({
                "code": "STALE_CURSOR",
                "message": format!("event {eid} is not stored (rolled back, or never existed): replaying the stream's history from the start"),
                "epoch": epoch,
            });
            if !send(Event::default().event("error").data(data.to_string())).await {
                return;
            }
        }
        let mut shutdown = ctx.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return;
            }
            // A rollback since the last look: tell the client, and continue from below it.
            match ctx.store.epoch().await {
                Ok(e) if e != epoch => {
                    epoch = e;
                    let reorg = ctx
                        .store
                        .reorgs(1)
                        .await
                        .ok()
                        .and_then(|r| r.into_iter().next());
                    let to_ledger = reorg.as_ref().map(|r| r.fork_ledger);
                    if let Some(first) = reorg.as_ref().and_then(|r| r.first_position) {
                        pos = pos.min(first - 1);
                    }
                    let data = serde_json::json!({
                        "type": "rollback",
                        "toLedger": to_ledger,
                        "epoch": epoch,
                        "streams": reorg.map(|r| r.streams_affected.iter().map(u64::to_string).collect::<Vec<_>>()).unwrap_or_default(),
                        "position": pos,
                    });
                    if !send(Event::default().event("rollback").data(data.to_string())).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "SSE: cannot read the store; retrying");
                }
            }
            match ctx.store.stream_events(id, pos, 200).await {
                Ok(rows) if !rows.is_empty() => {
                    let state = ctx.store.stream(id).await.ok().flatten();
                    let now = now_unix();
                    for e in &rows {
                        pos = e.position;
                        let data = serde_json::json!({
                            "streamId": id.to_string(),
                            "eventId": e.event.event_id,
                            "position": e.position,
                            "ledger": e.event.ledger,
                            "epoch": epoch,
                            "event": EventObject::of(e, ctx.view.decimals),
                            "stream": state.as_ref().map(|s| stream_object(s, now, &ctx.view)),
                        });
                        let ev = Event::default()
                            .id(e.event.event_id.clone())
                            .event("stream_update")
                            .data(data.to_string());
                        if !send(ev).await {
                            return;
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "SSE: cannot read events; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(SSE_POLL) => {}
                _ = shutdown.changed() => {}
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response())
}
