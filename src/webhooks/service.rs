//! What the admin API does with endpoints and deliveries, behind its HTTP shapes (`api/` owns
//! the routes): validation (SSRF guard, event types, stream ids, addresses), secret generation
//! and rotation, replay, test pings, manual retries.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::dispatcher::Waker;
use super::signing::generate_secret;
use super::ssrf;
use crate::config::{check_address, Secret, TargetPolicy};
use crate::store::outbox::{
    event_type_of, AttemptRecord, DeliveryQuery, DeliveryRecord, EndpointFilter, EndpointPatch,
    EndpointRecord, NewDelivery, NewEndpoint, EVENT_TYPES, KIND_PING, KIND_REPLAY, STATE_DEAD,
};
use crate::store::{Store, StoreError};

/// Longest replay range (positions) in one request.
pub const MAX_REPLAY: i64 = 100_000;

/// Why an admin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// An endpoint as the admin API shows it (never its secrets).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub stream_ids: Vec<String>,
    pub addresses: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// ISO-8601: the endpoint has been failing since then.
    pub failing_since: Option<String>,
    /// ISO-8601: until then the previous secret is still signed with too.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Unix ms as ISO-8601 with milliseconds, UTC.
pub fn iso_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_else(|_| ms.to_string())
}

impl EndpointView {
    fn of(e: &EndpointRecord, now: i64) -> Self {
        EndpointView {
            id: e.id.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.filter.event_types.clone(),
            stream_ids: e.filter.stream_ids.clone(),
            addresses: e.filter.addresses.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            failing_since: e.failing_since.map(iso_ms),
            previous_secret_expires_at: e
                .previous_secret_expires_at
                .filter(|t| *t > now && e.previous_secret.is_some())
                .map(iso_ms),
            created_at: iso_ms(e.created_at),
            updated_at: iso_ms(e.updated_at),
        }
    }
}

/// A delivery with its attempts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryRecord,
    pub attempts_made: Vec<AttemptRecord>,
}

/// Fields of a new endpoint or an update (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub stream_ids: Option<Vec<String>>,
    pub addresses: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// The webhook admin operations.
#[derive(Clone)]
pub struct WebhookAdmin {
    store: Arc<dyn Store>,
    policy: TargetPolicy,
    grace: Duration,
    waker: Option<Waker>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl WebhookAdmin {
    /// `policy` guards target URLs; `grace` is how long a rotated-out secret stays valid;
    /// `waker` (when this process dispatches) is woken after queueing.
    pub fn new(
        store: Arc<dyn Store>,
        policy: TargetPolicy,
        grace: Duration,
        waker: Option<Waker>,
    ) -> Self {
        Self {
            store,
            policy,
            grace,
            waker,
        }
    }

    fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake();
        }
    }

    /// The event types endpoints can filter on.
    pub fn event_types() -> &'static [&'static str] {
        &EVENT_TYPES
    }

    fn check(&self, i: &EndpointInput) -> Result<(), AdminError> {
        if let Some(u) = &i.url {
            if u.len() > 2048 {
                return Err(invalid("url", "is longer than 2048 characters"));
            }
            ssrf::check_url(u, self.policy).map_err(|e| invalid("url", e))?;
        }
        if let Some(d) = &i.description {
            if d.chars().count() > 500 {
                return Err(invalid("description", "is longer than 500 characters"));
            }
        }
        if let Some(ts) = &i.event_types {
            for t in ts {
                if !EVENT_TYPES.contains(&t.as_str()) {
                    return Err(invalid(
                        "eventTypes",
                        format!("`{t}` is not one of {}", EVENT_TYPES.join(", ")),
                    ));
                }
            }
        }
        if let Some(ids) = &i.stream_ids {
            for s in ids {
                if s.parse::<u64>().is_err() || s.starts_with('+') {
                    return Err(invalid(
                        "streamIds",
                        format!("`{s}` is not a stream id (a u64 in decimal)"),
                    ));
                }
            }
        }
        if let Some(a) = &i.addresses {
            for x in a {
                check_address(x).map_err(|e| invalid("addresses", e))?;
            }
        }
        for (field, n) in [
            ("eventTypes", i.event_types.as_ref().map_or(0, Vec::len)),
            ("streamIds", i.stream_ids.as_ref().map_or(0, Vec::len)),
            ("addresses", i.addresses.as_ref().map_or(0, Vec::len)),
        ] {
            if n > 1000 {
                return Err(invalid(field, "lists more than 1000 values"));
            }
        }
        Ok(())
    }

    fn dedup(v: Option<Vec<String>>) -> Option<Vec<String>> {
        v.map(|mut v| {
            let mut seen = std::collections::BTreeSet::new();
            v.retain(|x| seen.insert(x.clone()));
            v
        })
    }

    /// Registers an endpoint; returns it and its secret (shown once).
    pub async fn create(&self, i: EndpointInput) -> Result<(EndpointView, Secret), AdminError> {
        let url = i.url.clone().ok_or_else(|| invalid("url", "is required"))?;
        self.check(&i)?;
        let secret = generate_secret();
        let e = self
            .store
            .webhooks()
            .create_endpoint(&NewEndpoint {
                id: format!("ep_{}", uuid::Uuid::new_v4().simple()),
                url: url.trim().to_string(),
                description: i.description.unwrap_or_default(),
                filter: EndpointFilter {
                    event_types: Self::dedup(i.event_types).unwrap_or_default(),
                    stream_ids: Self::dedup(i.stream_ids).unwrap_or_default(),
                    addresses: Self::dedup(i.addresses).unwrap_or_default(),
                },
                enabled: i.enabled.unwrap_or(true),
                secret: secret.clone(),
            })
            .await?;
        tracing::info!(endpoint = %e.id, url = %e.url, "webhook endpoint registered");
        Ok((EndpointView::of(&e, now_ms()), secret))
    }

    pub async fn list(&self) -> Result<Vec<EndpointView>, AdminError> {
        let now = now_ms();
        Ok(self
            .store
            .webhooks()
            .endpoints()
            .await?
            .iter()
            .map(|e| EndpointView::of(e, now))
            .collect())
    }

    async fn record(&self, id: &str) -> Result<EndpointRecord, AdminError> {
        self.store
            .webhooks()
            .endpoint(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no webhook endpoint `{id}`")))
    }

    pub async fn get(&self, id: &str) -> Result<EndpointView, AdminError> {
        Ok(EndpointView::of(&self.record(id).await?, now_ms()))
    }

    pub async fn update(&self, id: &str, i: EndpointInput) -> Result<EndpointView, AdminError> {
        self.check(&i)?;
        let e = self
            .store
            .webhooks()
            .update_endpoint(
                id,
                &EndpointPatch {
                    url: i.url.map(|u| u.trim().to_string()),
                    description: i.description,
                    event_types: Self::dedup(i.event_types),
                    stream_ids: Self::dedup(i.stream_ids),
                    addresses: Self::dedup(i.addresses),
                    enabled: i.enabled,
                },
            )
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no webhook endpoint `{id}`")))?;
        if i.enabled == Some(true) {
            self.wake();
        }
        Ok(EndpointView::of(&e, now_ms()))
    }

    pub async fn delete(&self, id: &str) -> Result<(), AdminError> {
        if self.store.webhooks().delete_endpoint(id).await? {
            tracing::info!(endpoint = %id, "webhook endpoint deleted");
            Ok(())
        } else {
            Err(AdminError::NotFound(format!("no webhook endpoint `{id}`")))
        }
    }

    /// A new secret (shown once); the previous one stays valid, and is signed with too, for the
    /// grace window.
    pub async fn rotate(&self, id: &str) -> Result<(EndpointView, Secret), AdminError> {
        let secret = generate_secret();
        let now = now_ms();
        let e = self
            .store
            .webhooks()
            .rotate_secret(id, &secret, now + self.grace.as_millis() as i64)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no webhook endpoint `{id}`")))?;
        tracing::info!(endpoint = %id, "webhook secret rotated");
        Ok((EndpointView::of(&e, now), secret))
    }

    /// Deliveries of an endpoint, newest first.
    pub async fn deliveries(
        &self,
        id: &str,
        state: Option<String>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, AdminError> {
        self.record(id).await?;
        if let Some(s) = &state {
            if !["pending", "delivered", "dead"].contains(&s.as_str()) {
                return Err(invalid("status", "must be pending, delivered or dead"));
            }
        }
        Ok(self
            .store
            .webhooks()
            .deliveries(&DeliveryQuery {
                endpoint_id: id.to_string(),
                state,
                before,
                limit,
            })
            .await?)
    }

    pub async fn delivery(&self, id: &str, delivery: &str) -> Result<DeliveryDetail, AdminError> {
        let ws = self.store.webhooks();
        let d = ws
            .delivery(id, delivery)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no delivery `{delivery}` of `{id}`")))?;
        let attempts = ws.attempts(d.pk).await?;
        Ok(DeliveryDetail {
            delivery: d,
            attempts_made: attempts,
        })
    }

    /// Queues a dead delivery again (same delivery id) for one more round of the schedule.
    pub async fn retry(&self, id: &str, delivery: &str) -> Result<DeliveryRecord, AdminError> {
        let ws = self.store.webhooks();
        let d = ws
            .delivery(id, delivery)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no delivery `{delivery}` of `{id}`")))?;
        if d.state != STATE_DEAD || !ws.retry_dead(d.pk, now_ms()).await? {
            return Err(AdminError::Conflict(format!(
                "delivery `{delivery}` is {}, only dead deliveries can be retried",
                d.state
            )));
        }
        self.wake();
        Ok(ws.delivery(id, delivery).await?.unwrap_or(d))
    }

    /// Queues, for this endpoint, new deliveries (new delivery ids, kind `replay`) of the stored
    /// events with `from <= position <= to` that its filters match, in position order. Returns
    /// how many.
    pub async fn replay(&self, id: &str, from: i64, to: i64) -> Result<usize, AdminError> {
        if from < 1 {
            return Err(invalid("fromPosition", "must be at least 1"));
        }
        if to < from {
            return Err(invalid("toPosition", "must not be below fromPosition"));
        }
        if to - from + 1 > MAX_REPLAY {
            return Err(invalid(
                "toPosition",
                format!("a replay covers at most {MAX_REPLAY} positions"),
            ));
        }
        let ep = self.record(id).await?;
        let mut rows = Vec::new();
        let mut after = from - 1;
        while after < to {
            let page = self.store.events_after(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for e in page.iter().filter(|e| e.position <= to) {
                let (Some(t), Some(sid)) = (event_type_of(&e.event.topic), e.event.stream_id)
                else {
                    continue;
                };
                let Some(s) = self.store.stream_at(sid, e.event.ledger).await? else {
                    continue;
                };
                if !ep.filter.matches(t, sid, &s.sender, &s.recipient) {
                    continue;
                }
                rows.push(NewDelivery {
                    delivery_id: crate::store::outbox::new_delivery_id(),
                    endpoint_id: ep.id.clone(),
                    kind: KIND_REPLAY,
                    event_type: t.to_string(),
                    event_id: Some(e.event.event_id.clone()),
                    position: Some(e.position),
                    ledger: e.event.ledger,
                    stream_id: Some(sid),
                    payload: None,
                });
            }
        }
        self.store
            .webhooks()
            .insert_deliveries(&rows, now_ms())
            .await?;
        tracing::info!(endpoint = %id, from, to, deliveries = rows.len(), "webhook replay queued");
        self.wake();
        Ok(rows.len())
    }

    /// Queues a `webhook.ping` delivery to the endpoint.
    pub async fn ping(&self, id: &str) -> Result<DeliveryRecord, AdminError> {
        let ep = self.record(id).await?;
        let delivery_id = crate::store::outbox::new_delivery_id();
        let ws = self.store.webhooks();
        ws.insert_deliveries(
            &[NewDelivery {
                delivery_id: delivery_id.clone(),
                endpoint_id: ep.id.clone(),
                kind: KIND_PING,
                event_type: "webhook.ping".into(),
                event_id: None,
                position: None,
                ledger: 0,
                stream_id: None,
                payload: Some(
                    serde_json::json!({
                        "endpointId": ep.id,
                        "message": "Test ping from the Fluxora stream ledger",
                    })
                    .to_string(),
                ),
            }],
            now_ms(),
        )
        .await?;
        self.wake();
        ws.delivery(id, &delivery_id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("ping `{delivery_id}` vanished")))
    }
}
