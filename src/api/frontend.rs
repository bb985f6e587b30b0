//! The Fluxora frontend's flat surface (`client-contracts.md` §2, second half): `{"data": …}`
//! bodies, `StreamRecord` objects, `/treasury/metrics`.

use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::envelope;
use super::params::{self, Params};
use super::streams::{now_unix, status_param};
use super::{ApiContext, ApiError};
use crate::domain::accrual::StreamStatus;
use crate::domain::amount::format_amount;
use crate::projection::fold::StreamState;
use crate::projection::view::{amounts_at, iso8601, ViewOptions};
use crate::store::StreamQuery;

/// Seconds in the frontend's "month" (30 days) for `monthlyRate`.
pub const MONTH_SECONDS: i128 = 30 * 24 * 3600;

pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/streams", get(list))
        .route("/streams/{id}", get(one))
        .route("/recipients/{address}/streams", get(by_recipient))
        .route("/treasury/metrics", get(treasury_metrics))
}

/// The frontend's stream record.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamRecord {
    pub id: String,
    pub recipient_address: String,
    /// The sender.
    pub treasury_address: String,
    /// The streamed token (`TOKEN_SYMBOL`).
    pub asset: String,
    /// `Active` | `Paused` | `Completed` | `Cancelled` (a closed stream shows what it was).
    pub status: String,
    pub deposit_amount: String,
    pub streamed_amount: String,
    pub withdrawable_amount: String,
    /// What the stream still holds: deposit − withdrawn (so `withdrawable ≤ remaining`).
    pub remaining_amount: String,
    /// Streamed share of the deposit, whole percent 0–100.
    pub progress: u8,
    pub start_date: String,
    pub end_date: String,
    pub cliff_date: Option<String>,
    /// The next instant the withdrawable amount grows (none once fully accrued or frozen).
    pub next_unlock_date: Option<String>,
    /// `rate × 30 days`, decimal string.
    pub monthly_rate: String,
    pub closed: bool,
}

/// Renders the frontend record of `s` at `now`.
pub fn record(s: &StreamState, now: u64, view: &ViewOptions, asset: &str) -> StreamRecord {
    let a = amounts_at(s, now);
    let d = view.decimals;
    let status = match s.status {
        StreamStatus::Active => "Active",
        StreamStatus::Paused => "Paused",
        StreamStatus::Completed => "Completed",
        StreamStatus::Cancelled => "Cancelled",
    };
    let remaining = s
        .deposit_amount
        .saturating_sub(s.withdrawn_amount)
        .max(a.withdrawable)
        .max(0);
    let streamed = a.streamed.clamp(0, s.deposit_amount.max(0));
    let progress = match s.deposit_amount {
        d if d <= 0 => 0,
        d if d < i128::MAX / 100 => streamed * 100 / d,
        d => streamed / (d / 100),
    }
    .clamp(0, 100);
    let frozen = s.closed
        || matches!(s.status, StreamStatus::Cancelled | StreamStatus::Completed)
        || a.streamed >= s.deposit_amount;
    let next_unlock = if frozen {
        None
    } else if now < s.cliff_time {
        Some(s.cliff_time)
    } else if now < s.end_time && s.rate_per_second > 0 {
        Some(now + 1)
    } else {
        None
    };
    StreamRecord {
        id: s.stream_id.to_string(),
        recipient_address: s.recipient.clone(),
        treasury_address: s.sender.clone(),
        asset: asset.to_string(),
        status: status.into(),
        deposit_amount: format_amount(a.deposit, d),
        streamed_amount: format_amount(streamed, d),
        withdrawable_amount: format_amount(a.withdrawable.min(remaining), d),
        remaining_amount: format_amount(remaining, d),
        progress: u8::try_from(progress).unwrap_or(100),
        start_date: iso8601(s.start_time),
        end_date: iso8601(s.end_time),
        cliff_date: (s.cliff_time > s.start_time).then(|| iso8601(s.cliff_time)),
        next_unlock_date: next_unlock.map(iso8601),
        monthly_rate: format_amount(s.rate_per_second.saturating_mul(MONTH_SECONDS), d),
        closed: s.closed,
    }
}

fn frontend_status(p: &Params) -> Result<Option<String>, ApiError> {
    status_param(p, "status")
}

const LIST_MAX: u32 = 500;

async fn query(
    ctx: &ApiContext,
    status: Option<String>,
    sender: Option<String>,
    recipient: Option<String>,
    limit: u32,
) -> Result<Vec<StreamRecord>, ApiError> {
    let rows = ctx
        .store
        .list_streams(&StreamQuery {
            status,
            sender,
            recipient,
            after: None,
            limit,
        })
        .await?;
    let now = now_unix();
    Ok(rows
        .iter()
        .map(|s| record(s, now, &ctx.view, &ctx.asset))
        .collect())
}

/// `GET /streams?status=Active|Paused|Completed|Cancelled&recipient=G…&treasury=G…&limit=`
#[utoipa::path(
    get,
    path = "/streams",
    tag = "frontend",
    params(
        ("status" = Option<String>, Query, description = "Active | Paused | Completed | Cancelled (any case)"),
        ("recipient" = Option<String>, Query, description = "Recipient strkey"),
        ("treasury" = Option<String>, Query, description = "Sender strkey"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "`{\"data\": StreamRecord[]}`", body = super::types::Data<Vec<StreamRecord>>),
        (status = 400, description = "Invalid parameter", body = super::types::ErrorEnvelope),
    )
)]
pub async fn list(
    State(ctx): State<ApiContext>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["status", "recipient", "treasury", "limit"])?;
    let status = frontend_status(&p)?;
    let recipient = p.address("recipient")?;
    let sender = p.address("treasury")?;
    let limit = p.limit(100, LIST_MAX)?;
    Ok(envelope::data(
        query(&ctx, status, sender, recipient, limit).await?,
    ))
}

/// `GET /streams/{id}`
#[utoipa::path(
    get,
    path = "/streams/{id}",
    tag = "frontend",
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, description = "`{\"data\": StreamRecord}`", body = super::types::Data<StreamRecord>),
        (status = 400, description = "Invalid id", body = super::types::ErrorEnvelope),
        (status = 404, description = "Unknown stream", body = super::types::ErrorEnvelope),
    )
)]
pub async fn one(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = params::stream_id(&id)?;
    let s = ctx
        .streams
        .stream(&*ctx.store, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("stream {id} not found")))?;
    Ok(envelope::data(record(
        &s,
        now_unix(),
        &ctx.view,
        &ctx.asset,
    )))
}

/// `GET /recipients/{address}/streams`
#[utoipa::path(
    get,
    path = "/recipients/{address}/streams",
    tag = "frontend",
    params(
        ("address" = String, Path, description = "Recipient strkey"),
        ("status" = Option<String>, Query, description = "Active | Paused | Completed | Cancelled"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "`{\"data\": StreamRecord[]}`", body = super::types::Data<Vec<StreamRecord>>),
        (status = 400, description = "Invalid address", body = super::types::ErrorEnvelope),
    )
)]
pub async fn by_recipient(
    State(ctx): State<ApiContext>,
    Path(address): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let recipient = params::check_address("address", &address)?;
    let p = Params::parse(q.as_deref(), &["status", "limit"])?;
    let status = frontend_status(&p)?;
    let limit = p.limit(100, LIST_MAX)?;
    Ok(envelope::data(
        query(&ctx, status, None, Some(recipient), limit).await?,
    ))
}

/// One dashboard figure.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Metric {
    pub label: String,
    /// Decimal string (amounts) or a whole number.
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
}

/// How long computed treasury metrics are reused.
const METRICS_TTL: Duration = Duration::from_secs(5);

/// Sums over every stream (or one treasury's): computed from the projection at `now`.
async fn compute_metrics(
    ctx: &ApiContext,
    treasury: Option<String>,
) -> Result<Vec<Metric>, ApiError> {
    let now = now_unix();
    let (mut deposited, mut streamed, mut withdrawn, mut locked, mut monthly) =
        (0i128, 0i128, 0i128, 0i128, 0i128);
    let (mut active, mut total) = (0u64, 0u64);
    let mut after = None;
    loop {
        let rows = ctx
            .store
            .list_streams(&StreamQuery {
                status: None,
                sender: treasury.clone(),
                recipient: None,
                after,
                limit: 1000,
            })
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.stream_id);
        for s in &rows {
            total += 1;
            let a = amounts_at(s, now);
            deposited = deposited.saturating_add(a.deposit);
            streamed = streamed.saturating_add(a.streamed);
            withdrawn = withdrawn.saturating_add(a.withdrawn);
            if !s.closed && matches!(s.status, StreamStatus::Active | StreamStatus::Paused) {
                locked = locked.saturating_add(a.remaining.max(0));
                if now < s.end_time {
                    active += 1;
                    monthly =
                        monthly.saturating_add(s.rate_per_second.saturating_mul(MONTH_SECONDS));
                }
            }
        }
        if rows.len() < 1000 {
            break;
        }
    }
    let d = ctx.view.decimals;
    let m = |label: &str, value: String, desc: &str| Metric {
        label: label.into(),
        value,
        desc: Some(desc.into()),
    };
    Ok(vec![
        m(
            "Total deposited",
            format_amount(deposited, d),
            "Sum of current deposits of every stream",
        ),
        m(
            "Streamed to date",
            format_amount(streamed, d),
            "Accrued to recipients so far",
        ),
        m(
            "Withdrawn",
            format_amount(withdrawn, d),
            "Paid out to recipients",
        ),
        m(
            "Locked in active streams",
            format_amount(locked, d),
            "Deposits not yet accrued in active and paused streams",
        ),
        m(
            "Monthly outflow",
            format_amount(monthly, d),
            "Rate × 30 days over streams still running",
        ),
        m(
            "Active streams",
            active.to_string(),
            "Active or paused streams before their end time",
        ),
        m(
            "Total streams",
            total.to_string(),
            "Every stream, closed ones included",
        ),
    ])
}

/// `GET /treasury/metrics` (`treasury=G…` narrows to one sender).
#[utoipa::path(
    get,
    path = "/treasury/metrics",
    tag = "frontend",
    params(("treasury" = Option<String>, Query, description = "Only this sender's streams")),
    responses(
        (status = 200, description = "`{\"data\": Metric[]}`", body = super::types::Data<Vec<Metric>>),
        (status = 400, description = "Invalid address", body = super::types::ErrorEnvelope),
    )
)]
pub async fn treasury_metrics(
    State(ctx): State<ApiContext>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["treasury"])?;
    let treasury = p.address("treasury")?;
    let key = treasury.clone().unwrap_or_default();
    {
        let cache = ctx.metrics_cache.lock().await;
        if let Some((at, m)) = cache.get(&key) {
            if at.elapsed() < METRICS_TTL {
                return Ok(envelope::data(m.clone()));
            }
        }
    }
    let m = compute_metrics(&ctx, treasury).await?;
    let mut cache = ctx.metrics_cache.lock().await;
    if cache.len() > 1000 {
        cache.clear();
    }
    cache.insert(key, (Instant::now(), m.clone()));
    Ok(envelope::data(m))
}
