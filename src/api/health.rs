//! `GET /health` (not enveloped, 503 when halted or the database is down), `GET /metrics`
//! (Prometheus text) and `GET /version`.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::envelope::now_iso_ms;
use super::ApiContext;
use crate::ingest::{IndexerState, IndexerStatus};

/// The API version clients see in `x-fluxora-api-version` and `GET /version`.
pub const API_VERSION: &str = "1.0";

pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/version", get(version))
}

fn indexer_label(s: &IndexerStatus, ingesting: bool) -> &'static str {
    if !ingesting {
        return "not_configured";
    }
    match s.state {
        IndexerState::Starting => "starting",
        IndexerState::Healthy => "healthy",
        IndexerState::Stalled => "stalled",
        IndexerState::Halted { .. } => "halted",
    }
}

fn summary(s: &IndexerStatus, ingesting: bool) -> String {
    if !ingesting {
        return "this process does not ingest (API only); another process does".into();
    }
    match &s.state {
        IndexerState::Starting => "starting: no ledger committed yet".into(),
        IndexerState::Healthy => format!(
            "ingesting: ledger {} of {}, {} behind",
            s.ledger.map_or("-".into(), |l| l.to_string()),
            s.source_tip.map_or("-".into(), |l| l.to_string()),
            s.lag_ledgers.unwrap_or(0)
        ),
        IndexerState::Stalled => format!(
            "stalled: no new ledger for {} ms or more{}",
            s.stall_threshold_ms,
            s.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ),
        IndexerState::Halted { reason } => format!("halted: {reason}"),
    }
}

/// Service health: indexer status, lag, safe ledger, reorgs, WebSocket connections, source and
/// database state. 503 when ingestion halted or the database is down.
#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    responses(
        (status = 200, description = "Serving (status `ok`, or `degraded` while starting or stalled)", body = Object),
        (status = 503, description = "Halted, or the database is down", body = Object),
    )
)]
pub async fn health(State(ctx): State<ApiContext>) -> Response {
    let s = ctx.status.borrow().clone();
    let ingesting = ctx.source.is_some();
    let db_ok = ctx.store.ping().await.is_ok();
    // An API-only process reads what another process ingested: report the store's cursor.
    let (ledger, epoch) = if ingesting {
        (s.ledger, s.epoch)
    } else {
        let c = ctx.store.cursor().await.ok().flatten().map(|c| c.ledger);
        let e = ctx.store.epoch().await.unwrap_or(0);
        (c, e)
    };
    let halted = matches!(s.state, IndexerState::Halted { .. });
    let healthy = db_ok && (!ingesting || s.state == IndexerState::Healthy);
    let last_reorg = if ingesting {
        s.last_reorg
            .as_ref()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
    } else {
        ctx.store
            .reorgs(1)
            .await
            .ok()
            .and_then(|r| r.into_iter().next())
            .map(|r| serde_json::to_value(r).unwrap_or_default())
    };
    let reorg_detected = s.reorgs > 0 || last_reorg.is_some();
    let ws = ctx.ws_connections.load(Ordering::Relaxed);
    let indexer = json!({
        "status": indexer_label(&s, ingesting),
        "lagMs": s.lag_ms,
        "lagLedgers": s.lag_ledgers,
        "thresholdMs": s.stall_threshold_ms,
        "lastSuccessfulSyncAt": s.last_sync_at_ms.map(|ms| crate::projection::view::iso8601(ms / 1000)),
        "summary": summary(&s, ingesting),
        "lastSafeLedger": s.last_safe_ledger,
        "reorgDetected": reorg_detected,
        "lastReorg": last_reorg,
        "ledger": ledger,
        "sourceTip": s.source_tip,
        "epoch": epoch,
        "eventsIngested": s.events_ingested,
        "projectionMismatches": s.projection_mismatches,
        "projectionSkipped": s.projection_skipped,
        "haltReason": match &s.state { IndexerState::Halted { reason } => Some(reason.clone()), _ => None },
        "lastError": s.last_error,
    });
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "service": "fluxora",
        "version": env!("CARGO_PKG_VERSION"),
        "network": ctx.network,
        "contractAddresses": [ctx.view.contract_id.clone()],
        "timestamp": now_iso_ms(),
        "indexer": indexer,
        "wsConnections": ws,
        "dependencies": {
            "indexer": {
                "status": indexer_label(&s, ingesting),
                "lastSafeLedger": s.last_safe_ledger,
                "reorgDetected": reorg_detected,
                "ledger": ledger,
                "epoch": epoch,
            },
            "database": { "backend": ctx.store.backend(), "ok": db_ok },
            "source": ctx.source.as_ref().map(|src| serde_json::to_value(src.health()).unwrap_or_default()),
        },
    });
    let code = if halted || !db_ok {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

/// Gauges read from the indexer status at scrape time.
fn record_status(ctx: &ApiContext, s: &IndexerStatus) {
    let g = |name: &'static str, v: Option<u64>| {
        if let Some(v) = v {
            metrics::gauge!(name).set(v as f64);
        }
    };
    g("fluxora_ingest_ledger", s.ledger.map(u64::from));
    g("fluxora_ingest_source_tip", s.source_tip.map(u64::from));
    g("fluxora_ingest_lag_ledgers", s.lag_ledgers.map(u64::from));
    g("fluxora_ingest_lag_ms", s.lag_ms);
    g(
        "fluxora_ingest_last_safe_ledger",
        s.last_safe_ledger.map(u64::from),
    );
    g("fluxora_ingest_epoch", Some(s.epoch));
    g("fluxora_ingest_events_total", Some(s.events_ingested));
    g("fluxora_reorgs_total", Some(s.reorgs));
    g(
        "fluxora_projection_skipped_total",
        Some(s.projection_skipped),
    );
    g(
        "fluxora_projection_mismatches",
        Some(s.projection_mismatches),
    );
    g(
        "fluxora_ws_connections",
        Some(ctx.ws_connections.load(Ordering::Relaxed) as u64),
    );
    let up = match s.state {
        IndexerState::Healthy => 1,
        _ => 0,
    };
    g("fluxora_ingest_healthy", Some(up));
    if let Some(src) = &ctx.source {
        let h = src.health();
        g("fluxora_source_requests_total", Some(h.total_requests));
        g("fluxora_source_failures_total", Some(h.total_failures));
        g(
            "fluxora_source_breaker_open",
            Some(u64::from(!matches!(
                h.breaker,
                crate::chain::http::BreakerState::Closed
            ))),
        );
    }
}

async fn metrics_text(State(ctx): State<ApiContext>) -> Response {
    let s = ctx.status.borrow().clone();
    record_status(&ctx, &s);
    match prometheus() {
        Some(h) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            h.render(),
        )
            .into_response(),
        None => {
            super::ApiError::unavailable("the metrics recorder is not installed").into_response()
        }
    }
}

/// The API version (also in the `x-fluxora-api-version` header).
#[utoipa::path(
    get,
    path = "/version",
    tag = "ops",
    responses((status = 200, description = "`{\"version\": \"1.0\", \"data\": {…}}`", body = Object))
)]
pub async fn version() -> Response {
    let info = json!({
        "version": API_VERSION,
        "service": "fluxora",
        "build": env!("CARGO_PKG_VERSION"),
    });
    let mut resp = Json(json!({ "version": API_VERSION, "data": info })).into_response();
    resp.headers_mut().insert(
        header::HeaderName::from_static("x-fluxora-api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    resp
}
