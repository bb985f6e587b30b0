//! The global event feed (`/api/events`), ledgers (`/api/ledgers/{seq}`) and the reorg log
//! (`/api/reorgs`).

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::envelope;
use super::params::{self, Params};
use super::types::{EventObject, EventPage, LedgerObject, ReorgObject, ReorgPage};
use super::{ApiContext, ApiError};

pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/api/events", get(events))
        .route("/api/ledgers/{seq}", get(ledger))
        .route("/api/reorgs", get(reorgs))
}

/// Every stored event after a position, ascending: `after` (default 0), `limit` (1–1000,
/// default 100). Resume with `next_cursor`; when `epoch` changes, a rollback happened (see
/// `/api/reorgs`).
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(
        ("after" = Option<u64>, Query, minimum = 0, description = "Only events after this position (default 0)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
    ),
    responses(
        (status = 200, description = "A page of the global feed", body = super::types::Envelope<EventPage>),
        (status = 400, description = "Invalid parameter", body = super::types::ErrorEnvelope),
    )
)]
pub async fn events(
    State(ctx): State<ApiContext>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["after", "limit"])?;
    let after = p.u64_in("after", 0, i64::MAX as u64)?.unwrap_or(0) as i64;
    let limit = p.limit(100, 1000)?;
    // Read the epoch first: if a rollback lands during the read, the client sees the new epoch
    // next time and re-checks.
    let epoch = ctx.store.epoch().await?;
    let mut rows = ctx.store.events_after(after, limit + 1).await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let last_position = ctx.store.last_position().await?;
    Ok(envelope::ok(EventPage {
        next_cursor: rows.last().map(|e| e.position.to_string()),
        events: rows
            .iter()
            .map(|e| EventObject::of(e, ctx.view.decimals))
            .collect(),
        has_more,
        epoch,
        last_position,
    }))
}

/// One ingested ledger with its Fluxora events.
#[utoipa::path(
    get,
    path = "/api/ledgers/{seq}",
    tag = "ledgers",
    params(("seq" = u32, Path, minimum = 1, description = "Ledger sequence")),
    responses(
        (status = 200, description = "The ledger", body = super::types::Envelope<LedgerObject>),
        (status = 400, description = "Invalid sequence", body = super::types::ErrorEnvelope),
        (status = 404, description = "Not ingested", body = super::types::ErrorEnvelope),
    )
)]
pub async fn ledger(
    State(ctx): State<ApiContext>,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    let seq = params::ledger_seq("seq", &seq)?;
    let l = ctx
        .store
        .ledger(seq)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("ledger {seq} is not ingested")))?;
    let events = ctx.store.events_in_ledgers(seq, seq).await?;
    Ok(envelope::ok(LedgerObject::of(
        &l,
        events
            .iter()
            .map(|e| EventObject::of(e, ctx.view.decimals))
            .collect(),
    )))
}

/// The reorg log, newest first (`limit` 1–100, default 20).
#[utoipa::path(
    get,
    path = "/api/reorgs",
    tag = "ledgers",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many (default 20)")),
    responses(
        (status = 200, description = "Recorded rollbacks", body = super::types::Envelope<ReorgPage>),
        (status = 400, description = "Invalid parameter", body = super::types::ErrorEnvelope),
    )
)]
pub async fn reorgs(
    State(ctx): State<ApiContext>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["limit"])?;
    let limit = p.limit(20, 100)?;
    let rows = ctx.store.reorgs(limit).await?;
    Ok(envelope::ok(ReorgPage {
        reorgs: rows.into_iter().map(ReorgObject::from).collect(),
    }))
}
