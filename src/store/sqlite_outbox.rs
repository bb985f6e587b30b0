//! The webhook outbox on SQLite: routing inside `append`, the rollback rule inside `rollback_to`,
//! and the [`WebhookStore`] queries. Writes go through the store's one writer connection
//! (`BEGIN IMMEDIATE`), so claims by several workers or processes serialize there; the lease
//! keeps a claimed row from being claimed again until it expires.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::outbox::*;
use super::{parse_stream_key, stream_key, NewEvent, Position, StoreError, StreamVersion};
use crate::config::Secret;

/// Rows per multi-row INSERT.
const CHUNK: usize = 400;

pub(super) const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, stream_ids, \
     addresses, enabled, disabled_reason, secret, previous_secret, previous_secret_expires_at, \
     failing_since, created_at, updated_at";

pub(super) const DELIVERY_COLUMNS: &str = "id, delivery_id, endpoint_id, kind, event_type, \
     event_id, position, ledger, order_key, state, attempts, next_attempt_at, last_status, \
     last_error, reverted, created_at, updated_at, delivered_at";

/// Lines `(endpoint, order key)`.
pub(super) type Lines = std::collections::BTreeSet<(String, String)>;

/// Sets `head` on the first pending in-line row of each line (a no-op where it is set).
pub(super) async fn ensure_heads(
    tx: &mut Transaction<'_, Sqlite>,
    lines: &Lines,
) -> Result<(), StoreError> {
    let lines: Vec<&(String, String)> = lines.iter().collect();
    for chunk in lines.chunks(CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("WITH g(e, k) AS (");
        qb.push_values(chunk, |mut b, (e, k)| {
            b.push_bind(e.as_str()).push_bind(k.as_str());
        });
        qb.push(
            ") UPDATE webhook_deliveries SET head = TRUE WHERE head = FALSE AND id IN \
             (SELECT (SELECT MIN(d.id) FROM webhook_deliveries d WHERE d.state = 'pending' \
             AND d.in_line AND d.endpoint_id = g.e AND d.order_key = g.k) FROM g)",
        );
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Routes the batch's fresh events to the enabled endpoints and inserts their delivery rows, in
/// the append transaction. Returns how many rows were written.
pub(super) async fn enqueue(
    tx: &mut Transaction<'_, Sqlite>,
    fresh: &[(Position, &NewEvent)],
    versions: &[StreamVersion],
    now: i64,
) -> Result<usize, StoreError> {
    if fresh.is_empty() {
        return Ok(0);
    }
    let rows = sqlx::query(ROUTE_ENDPOINTS_SQL)
        .fetch_all(&mut **tx)
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let endpoints = rows
        .iter()
        .map(route_endpoint)
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut stored = HashMap::new();
    for chunk in streams_to_look_up(fresh, versions).chunks(CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT stream_key, sender, recipient FROM streams WHERE stream_key IN (",
        );
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(stream_key(*id));
        }
        qb.push(")");
        for r in qb.build().fetch_all(&mut **tx).await? {
            stored.insert(
                parse_stream_key(r.try_get(0)?)?,
                (r.try_get(1)?, r.try_get(2)?),
            );
        }
    }
    let events = route_events(fresh, versions, &stored);
    let routed = route(&endpoints, &events);
    for chunk in routed.chunks(CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, kind, event_type, event_id, \
             position, ledger, order_key, state, next_attempt_at, created_at, updated_at) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(&r.delivery_id)
                .push_bind(r.endpoint_id)
                .push_bind(KIND_EVENT)
                .push_bind(r.event.event_type)
                .push_bind(r.event.event_id)
                .push_bind(r.event.position)
                .push_bind(i64::from(r.event.ledger))
                .push_bind(stream_key(r.event.stream_id))
                .push_bind(STATE_PENDING)
                .push_bind(now)
                .push_bind(now)
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await?;
    }
    ensure_heads(tx, &routed_lines(&routed)).await?;
    Ok(routed.len())
}

/// The outbox side of a rollback, before the events at `first_removed..` are deleted: undelivered
/// rows of those events are dropped; for each one delivered (or in flight: it may have arrived) a
/// `stream.reverted` delivery is queued to the same endpoint, and a delivered row is marked
/// `reverted`.
pub(super) async fn rollback_outbox(
    tx: &mut Transaction<'_, Sqlite>,
    first_removed: Position,
    fork: i64,
    epoch: u64,
    now: i64,
) -> Result<usize, StoreError> {
    let rows = sqlx::query(
        "SELECT d.id, d.delivery_id, d.endpoint_id, d.event_type, d.event_id, d.position, \
         d.ledger, d.order_key, d.state, d.lease_until, e.tx_hash FROM webhook_deliveries d \
         LEFT JOIN events e ON e.position = d.position AND e.event_id = d.event_id \
         WHERE d.position >= ? AND d.kind IN ('event', 'replay') AND d.reverted = FALSE",
    )
    .bind(first_removed)
    .fetch_all(&mut **tx)
    .await?;
    let mut reverted = Vec::new();
    let mut dropped = Vec::new();
    let mut mark = Vec::new();
    let mut lines = Lines::new();
    for r in &rows {
        let pk: i64 = r.try_get(0)?;
        if let Some(k) = r.try_get::<Option<String>, _>(7)? {
            lines.insert((r.try_get(2)?, k));
        }
        let state: String = r.try_get(8)?;
        let lease: Option<i64> = r.try_get(9)?;
        let in_flight = state == STATE_PENDING && lease.is_some_and(|l| l > now);
        if state == STATE_DELIVERED || in_flight {
            let order_key: Option<String> = r.try_get(7)?;
            let event_id: Option<String> = r.try_get(4)?;
            let payload = reverted_payload(
                r.try_get(1)?,
                r.try_get(3)?,
                event_id.clone(),
                r.try_get(5)?,
                r.try_get(10)?,
                r.try_get(6)?,
                fork,
                epoch,
            );
            reverted.push(NewReverted {
                endpoint_id: r.try_get(2)?,
                event_id,
                order_key,
                payload,
            });
        }
        if state == STATE_DELIVERED {
            mark.push(pk);
        } else {
            dropped.push(pk);
        }
    }
    for (sql, ids) in [
        ("DELETE FROM webhook_deliveries WHERE id IN (", &dropped),
        (
            "UPDATE webhook_deliveries SET reverted = TRUE WHERE id IN (",
            &mark,
        ),
    ] {
        for chunk in ids.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(sql);
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build().execute(&mut **tx).await?;
        }
    }
    for chunk in reverted.chunks(CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, kind, event_type, event_id, \
             position, ledger, order_key, payload, state, next_attempt_at, created_at, updated_at) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(new_delivery_id())
                .push_bind(&r.endpoint_id)
                .push_bind(KIND_REVERTED)
                .push_bind("stream.reverted")
                .push_bind(&r.event_id)
                .push_bind(None::<i64>)
                .push_bind(0i64)
                .push_bind(&r.order_key)
                .push_bind(&r.payload)
                .push_bind(STATE_PENDING)
                .push_bind(now)
                .push_bind(now)
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await?;
    }
    ensure_heads(tx, &lines).await?;
    Ok(reverted.len())
}

pub(super) struct NewReverted {
    pub endpoint_id: String,
    pub event_id: Option<String>,
    pub order_key: Option<String>,
    pub payload: String,
}

/// What a `stream.reverted` delivery keeps about the event it reverts (merged into `data`).
#[allow(clippy::too_many_arguments)]
pub(super) fn reverted_payload(
    delivery_id: String,
    event_type: String,
    event_id: Option<String>,
    position: Option<i64>,
    tx_hash: Option<String>,
    ledger: i64,
    fork: i64,
    epoch: u64,
) -> String {
    serde_json::json!({
        "revertedDeliveryId": delivery_id,
        "revertedType": event_type,
        "eventId": event_id,
        "position": position,
        "txHash": tx_hash,
        "ledger": ledger,
        "forkLedger": fork,
        "epoch": epoch,
    })
    .to_string()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn endpoint_from(
    id: String,
    url: String,
    description: String,
    lists: [&str; 3],
    enabled: bool,
    disabled_reason: Option<String>,
    secrets: (String, Option<String>, Option<i64>),
    times: (Option<i64>, i64, i64),
) -> Result<EndpointRecord, StoreError> {
    Ok(EndpointRecord {
        id,
        url,
        description,
        filter: EndpointFilter {
            event_types: parse_list(lists[0], "event_types")?,
            stream_ids: parse_list(lists[1], "stream_ids")?,
            addresses: parse_list(lists[2], "addresses")?,
        },
        enabled,
        disabled_reason,
        secret: Secret::new(secrets.0),
        previous_secret: secrets.1.map(Secret::new),
        previous_secret_expires_at: secrets.2,
        failing_since: times.0,
        created_at: times.1,
        updated_at: times.2,
    })
}

fn endpoint_row(r: &SqliteRow) -> Result<EndpointRecord, StoreError> {
    endpoint_from(
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        [r.try_get(3)?, r.try_get(4)?, r.try_get(5)?],
        r.try_get(6)?,
        r.try_get(7)?,
        (r.try_get(8)?, r.try_get(9)?, r.try_get(10)?),
        (r.try_get(11)?, r.try_get(12)?, r.try_get(13)?),
    )
}

pub(super) fn u32_of(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: {v}")))
}

pub(super) fn stream_of_key(k: Option<String>) -> Result<Option<u64>, StoreError> {
    k.as_deref().map(parse_stream_key).transpose()
}

fn delivery_row(r: &SqliteRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        pk: r.try_get(0)?,
        delivery_id: r.try_get(1)?,
        endpoint_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        event_type: r.try_get(4)?,
        event_id: r.try_get(5)?,
        position: r.try_get(6)?,
        ledger: u32_of(r.try_get(7)?, "webhook_deliveries.ledger")?,
        stream_id: stream_of_key(r.try_get(8)?)?.map(|s| s.to_string()),
        state: r.try_get(9)?,
        attempts: u32_of(r.try_get(10)?, "webhook_deliveries.attempts")?,
        next_attempt_at: r.try_get(11)?,
        last_status: r
            .try_get::<Option<i64>, _>(12)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get(13)?,
        reverted: r.try_get(14)?,
        created_at: r.try_get(15)?,
        updated_at: r.try_get(16)?,
        delivered_at: r.try_get(17)?,
    })
}

/// The SQLite [`WebhookStore`].
#[derive(Clone, Debug)]
pub struct SqliteWebhooks {
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
}

#[async_trait]
impl WebhookStore for SqliteWebhooks {
    async fn create_endpoint(&self, e: &NewEndpoint) -> Result<EndpointRecord, StoreError> {
        let now = super::now_ms();
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, description, event_types, stream_ids, \
             addresses, enabled, secret, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(json_list(&e.filter.event_types))
        .bind(json_list(&e.filter.stream_ids))
        .bind(json_list(&e.filter.addresses))
        .bind(e.enabled)
        .bind(e.secret.expose())
        .bind(now)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.endpoint_on(&self.writer, &e.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("endpoint vanished after insert".into()))
    }

    async fn endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
        ))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(endpoint_row)
        .collect()
    }

    async fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        self.endpoint_on(&self.reader, id).await
    }

    async fn update_endpoint(
        &self,
        id: &str,
        p: &EndpointPatch,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE webhook_endpoints SET updated_at = ");
        qb.push_bind(super::now_ms());
        if let Some(u) = &p.url {
            qb.push(", url = ").push_bind(u.clone());
        }
        if let Some(d) = &p.description {
            qb.push(", description = ").push_bind(d.clone());
        }
        if let Some(v) = &p.event_types {
            qb.push(", event_types = ").push_bind(json_list(v));
        }
        if let Some(v) = &p.stream_ids {
            qb.push(", stream_ids = ").push_bind(json_list(v));
        }
        if let Some(v) = &p.addresses {
            qb.push(", addresses = ").push_bind(json_list(v));
        }
        match p.enabled {
            Some(true) => {
                qb.push(", enabled = TRUE, disabled_reason = NULL, failing_since = NULL");
            }
            Some(false) => {
                qb.push(", enabled = FALSE, disabled_reason = 'disabled by an operator'");
            }
            None => {}
        }
        qb.push(" WHERE id = ").push_bind(id.to_string());
        let n = qb.build().execute(&self.writer).await?.rows_affected();
        if n == 0 {
            return Ok(None);
        }
        self.endpoint_on(&self.writer, id).await
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn rotate_secret(
        &self,
        id: &str,
        secret: &Secret,
        previous_expires_at: i64,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = ?, \
             previous_secret_expires_at = ?, updated_at = ? WHERE id = ?",
        )
        .bind(secret.expose())
        .bind(previous_expires_at)
        .bind(super::now_ms())
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        self.endpoint_on(&self.writer, id).await
    }

    async fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = "
        ));
        qb.push_bind(q.endpoint_id.clone());
        if let Some(s) = &q.state {
            qb.push(" AND state = ").push_bind(s.clone());
        }
        if let Some(b) = q.before {
            qb.push(" AND id < ").push_bind(b);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        qb.build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(delivery_row)
            .collect()
    }

    async fn delivery(
        &self,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE endpoint_id = ? AND delivery_id = ?"
        ))
        .bind(endpoint_id)
        .bind(delivery_id)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(delivery_row)
        .transpose()
    }

    async fn attempts(&self, delivery_pk: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempt, started_at, duration_ms, status_code, error, response_body, worker \
             FROM webhook_attempts WHERE delivery_pk = ? ORDER BY attempt",
        )
        .bind(delivery_pk)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRecord {
                    attempt: u32_of(r.try_get(0)?, "webhook_attempts.attempt")?,
                    started_at: r.try_get(1)?,
                    duration_ms: r.try_get::<i64, _>(2)?.max(0) as u64,
                    status_code: r
                        .try_get::<Option<i64>, _>(3)?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: r.try_get(4)?,
                    response_body: r.try_get(5)?,
                    worker: r.try_get(6)?,
                })
            })
            .collect()
    }

    async fn retry_dead(&self, pk: i64, now: i64) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', tries = 0, next_attempt_at = ?, \
             updated_at = ?, head = TRUE, in_line = FALSE WHERE id = ? AND state = 'dead'",
        )
        .bind(now)
        .bind(now)
        .bind(pk)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn insert_deliveries(&self, rows: &[NewDelivery], now: i64) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in rows.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, kind, event_type, \
                 event_id, position, ledger, order_key, payload, state, next_attempt_at, \
                 created_at, updated_at, head) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&r.delivery_id)
                    .push_bind(&r.endpoint_id)
                    .push_bind(r.kind)
                    .push_bind(&r.event_type)
                    .push_bind(&r.event_id)
                    .push_bind(r.position)
                    .push_bind(i64::from(r.ledger))
                    .push_bind(r.stream_id.map(stream_key))
                    .push_bind(&r.payload)
                    .push_bind(STATE_PENDING)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(r.stream_id.is_none());
            });
            qb.build().execute(&mut *tx).await?;
        }
        ensure_heads(&mut tx, &new_delivery_lines(rows)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: u32,
        exclude: &[String],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let lease_until = now + lease_ms;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE webhook_deliveries SET lease_owner = ");
        qb.push_bind(owner.to_string())
            .push(", lease_until = ")
            .push_bind(lease_until)
            .push(
                " WHERE id IN (SELECT d.id FROM webhook_deliveries d \
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled \
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ",
            )
            .push_bind(now)
            .push(" AND (d.lease_until IS NULL OR d.lease_until <= ")
            .push_bind(now)
            .push(
                ") AND d.head AND (d.ledger = 0 OR d.ledger <= COALESCE((SELECT safe_ledger \
                 FROM ingest_cursor WHERE id = 1), -1))",
            );
        if !exclude.is_empty() {
            qb.push(" AND d.endpoint_id NOT IN (");
            let mut sep = qb.separated(", ");
            for e in exclude {
                sep.push_bind(e.clone());
            }
            qb.push(")");
        }
        qb.push(" ORDER BY d.next_attempt_at, d.id LIMIT ")
            .push_bind(i64::from(limit))
            .push(") RETURNING id");
        let ids: Vec<i64> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(CLAIM_DETAILS);
        let mut sep = qb.separated(", ");
        for id in &ids {
            sep.push_bind(*id);
        }
        qb.push(") ORDER BY d.id");
        let rows = qb.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedDelivery {
                    pk: r.try_get(0)?,
                    delivery_id: r.try_get(1)?,
                    endpoint_id: r.try_get(2)?,
                    url: r.try_get(3)?,
                    secret: Secret::new(r.try_get::<String, _>(4)?),
                    previous_secret: r.try_get::<Option<String>, _>(5)?.map(Secret::new),
                    previous_secret_expires_at: r.try_get(6)?,
                    kind: r.try_get(7)?,
                    event_type: r.try_get(8)?,
                    event_id: r.try_get(9)?,
                    position: r.try_get(10)?,
                    ledger: u32_of(r.try_get(11)?, "webhook_deliveries.ledger")?,
                    stream_id: stream_of_key(r.try_get(12)?)?,
                    payload: r.try_get(13)?,
                    attempts: u32_of(r.try_get(14)?, "webhook_deliveries.attempts")?,
                    tries: u32_of(r.try_get(15)?, "webhook_deliveries.tries")?,
                    created_at: r.try_get(16)?,
                    tx_hash: r.try_get(17)?,
                    close_time: r.try_get(18)?,
                    state_at: r.try_get(19)?,
                    state_now: r.try_get(20)?,
                    lease_until,
                })
            })
            .collect()
    }

    async fn release(&self, owner: &str, pks: &[i64]) -> Result<(), StoreError> {
        for chunk in pks.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL \
                 WHERE lease_owner = ",
            );
            qb.push_bind(owner.to_string()).push(" AND id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build().execute(&self.writer).await?;
        }
        Ok(())
    }

    async fn complete(
        &self,
        owner: &str,
        results: &[AttemptResult],
        now: i64,
        disable_before: i64,
    ) -> Result<Vec<String>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut done: Vec<(&AttemptResult, i64)> = Vec::with_capacity(results.len());
        let mut lines = Lines::new();
        for r in results {
            let (state, next, delivered) = outcome_columns(r.outcome, now);
            let row = sqlx::query(
                "UPDATE webhook_deliveries SET state = ?1, attempts = attempts + 1, \
                 tries = tries + 1, next_attempt_at = ?2, lease_owner = NULL, lease_until = NULL, \
                 last_status = ?3, last_error = ?4, delivered_at = COALESCE(?5, delivered_at), \
                 updated_at = ?6, head = CASE WHEN ?1 = 'pending' THEN head ELSE FALSE END \
                 WHERE id = ?7 AND lease_owner = ?8 RETURNING attempts, endpoint_id, order_key, \
                 in_line",
            )
            .bind(state)
            .bind(next)
            .bind(r.attempt.status_code.map(i64::from))
            .bind(&r.attempt.error)
            .bind(delivered)
            .bind(now)
            .bind(r.pk)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                done.push((r, row.try_get(0)?));
                let key: Option<String> = row.try_get(2)?;
                let in_line: bool = row.try_get(3)?;
                if let (Some(k), true, false) = (key, in_line, state == STATE_PENDING) {
                    lines.insert((row.try_get(1)?, k));
                }
            }
        }
        ensure_heads(&mut tx, &lines).await?;
        for chunk in done.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO webhook_attempts (delivery_pk, attempt, started_at, duration_ms, \
                 status_code, error, response_body, worker) ",
            );
            qb.push_values(chunk, |mut b, (r, n)| {
                b.push_bind(r.pk)
                    .push_bind(*n)
                    .push_bind(r.attempt.started_at)
                    .push_bind(r.attempt.duration_ms as i64)
                    .push_bind(r.attempt.status_code.map(i64::from))
                    .push_bind(&r.attempt.error)
                    .push_bind(&r.attempt.response_body)
                    .push_bind(&r.attempt.worker);
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *tx).await?;
        }
        let mut disabled = Vec::new();
        for (ep, sig) in endpoint_signals(results) {
            match sig {
                Signals::Healthy => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET failing_since = NULL \
                         WHERE id = ? AND failing_since IS NOT NULL",
                    )
                    .bind(ep)
                    .execute(&mut *tx)
                    .await?;
                }
                Signals::Failing(since) => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET failing_since = ? \
                         WHERE id = ? AND failing_since IS NULL",
                    )
                    .bind(since)
                    .bind(ep)
                    .execute(&mut *tx)
                    .await?;
                    let n = sqlx::query(
                        "UPDATE webhook_endpoints SET enabled = FALSE, updated_at = ?, \
                         disabled_reason = 'failing continuously since ' || failing_since || \
                         ' (unix ms)' WHERE id = ? AND enabled AND failing_since <= ?",
                    )
                    .bind(now)
                    .bind(ep)
                    .bind(disable_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n > 0 {
                        disabled.push(ep.to_string());
                    }
                }
                Signals::Gone => {
                    let n = sqlx::query(
                        "UPDATE webhook_endpoints SET enabled = FALSE, updated_at = ?, \
                         disabled_reason = 'the endpoint answered 410 Gone' \
                         WHERE id = ? AND enabled",
                    )
                    .bind(now)
                    .bind(ep)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n > 0 {
                        disabled.push(ep.to_string());
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(disabled)
    }

    async fn next_due(&self, after: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending' \
             AND head AND next_attempt_at > ?",
        )
        .bind(after)
        .fetch_one(&self.reader)
        .await?)
    }

    async fn delivery_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)?.max(0) as u64)))
            .collect()
    }

    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<()>>, StoreError> {
        Ok(None)
    }
}

impl SqliteWebhooks {
    async fn endpoint_on(
        &self,
        pool: &SqlitePool,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(endpoint_row)
        .transpose()
    }
}

/// The columns a claim returns (both dialects; the id list follows).
pub(super) const CLAIM_DETAILS: &str = "SELECT d.id, d.delivery_id, d.endpoint_id, e.url, \
     e.secret, e.previous_secret, e.previous_secret_expires_at, d.kind, d.event_type, d.event_id, \
     d.position, d.ledger, d.order_key, d.payload, d.attempts, d.tries, d.created_at, ev.tx_hash, \
     l.close_time, \
     (SELECT v.state FROM stream_versions v WHERE v.stream_key = d.order_key \
      AND v.ledger <= d.ledger ORDER BY v.ledger DESC LIMIT 1), \
     (SELECT s.state FROM streams s WHERE s.stream_key = d.order_key AND d.kind = 'reverted') \
     FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
     LEFT JOIN events ev ON ev.position = d.position AND ev.event_id = d.event_id \
     LEFT JOIN ledgers l ON l.sequence = d.ledger WHERE d.id IN (";

/// `(state, next_attempt_at, delivered_at)` of an outcome.
pub(super) fn outcome_columns(o: Outcome, now: i64) -> (&'static str, i64, Option<i64>) {
    match o {
        Outcome::Delivered => (STATE_DELIVERED, now, Some(now)),
        Outcome::Retry(at) => (STATE_PENDING, at, None),
        Outcome::Dead => (STATE_DEAD, now, None),
    }
}

pub(super) enum Signals {
    Healthy,
    /// Failing since this unix ms (the earliest failed attempt of the flush).
    Failing(i64),
    Gone,
}

/// What a flush of results says about each endpoint: gone beats healthy beats failing (one
/// success ends a run of failures).
pub(super) fn endpoint_signals(results: &[AttemptResult]) -> Vec<(&str, Signals)> {
    let mut by: std::collections::BTreeMap<&str, Signals> = std::collections::BTreeMap::new();
    for r in results {
        if r.signal == EndpointSignal::Neutral {
            continue;
        }
        let e = by.entry(r.endpoint_id.as_str()).or_insert(match r.signal {
            EndpointSignal::Healthy | EndpointSignal::Neutral => Signals::Healthy,
            EndpointSignal::Failing => Signals::Failing(r.attempt.started_at),
            EndpointSignal::Gone => Signals::Gone,
        });
        *e = match (std::mem::replace(e, Signals::Healthy), r.signal) {
            (prev, EndpointSignal::Neutral) => prev,
            (Signals::Gone, _) | (_, EndpointSignal::Gone) => Signals::Gone,
            (Signals::Healthy, _) | (_, EndpointSignal::Healthy) => Signals::Healthy,
            (Signals::Failing(a), EndpointSignal::Failing) => {
                Signals::Failing(a.min(r.attempt.started_at))
            }
        };
    }
    by.into_iter().collect()
}
