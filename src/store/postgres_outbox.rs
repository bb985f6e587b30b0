//! The webhook outbox on PostgreSQL (see the SQLite twin for the rules). Claims take rows with
//! `FOR UPDATE SKIP LOCKED` and set a lease, so several workers and processes share the queue
//! without waiting on each other and without sending a row twice within a lease; bulk writes go
//! through `UNNEST`. Admin writes (replay, ping, retry) `NOTIFY fluxora_webhooks`.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::outbox::*;
use super::sqlite_outbox::{
    endpoint_from, endpoint_signals, outcome_columns, reverted_payload, stream_of_key, u32_of,
    Signals, DELIVERY_COLUMNS, ENDPOINT_COLUMNS,
};
use super::{parse_stream_key, stream_key, NewEvent, Position, StoreError, StreamVersion};
use crate::config::Secret;

/// `LISTEN` channel: deliveries were queued outside an append (replay, ping, manual retry).
pub const NOTIFY_WEBHOOKS: &str = "fluxora_webhooks";

/// Advisory-lock class of outbox lines ("wh").
const LINE_LOCK_CLASS: i32 = 0x7768;

/// Takes the lines' transaction-scoped locks (in hash order: no deadlock between writers) and sets
/// `head` on each line's first pending in-line row. The locks make a writer that adds rows to a
/// line and one that finishes its head see each other's work: without them both could miss the
/// row to promote under READ COMMITTED.
pub(super) async fn ensure_heads(
    tx: &mut Transaction<'_, Postgres>,
    lines: &super::sqlite_outbox::Lines,
) -> Result<(), StoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    let e: Vec<String> = lines.iter().map(|l| l.0.clone()).collect();
    let k: Vec<String> = lines.iter().map(|l| l.1.clone()).collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock($3, h) FROM (SELECT DISTINCT hashtext(e || '/' || k) AS h \
         FROM UNNEST($1::text[], $2::text[]) AS g(e, k) ORDER BY 1) x",
    )
    .bind(&e)
    .bind(&k)
    .bind(LINE_LOCK_CLASS)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET head = TRUE WHERE NOT head AND id IN (SELECT (SELECT \
         MIN(d.id) FROM webhook_deliveries d WHERE d.state = 'pending' AND d.in_line \
         AND d.endpoint_id = g.e AND d.order_key = g.k) FROM UNNEST($1::text[], $2::text[]) \
         AS g(e, k))",
    )
    .bind(&e)
    .bind(&k)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// See `sqlite_outbox::enqueue`.
pub(super) async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
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
    let missing: Vec<String> = streams_to_look_up(fresh, versions)
        .into_iter()
        .map(stream_key)
        .collect();
    if !missing.is_empty() {
        for r in sqlx::query(
            "SELECT stream_key, sender, recipient FROM streams WHERE stream_key = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(&mut **tx)
        .await?
        {
            stored.insert(
                parse_stream_key(r.try_get(0)?)?,
                (r.try_get(1)?, r.try_get(2)?),
            );
        }
    }
    let events = route_events(fresh, versions, &stored);
    let routed = route(&endpoints, &events);
    if routed.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, kind, event_type, event_id, \
         position, ledger, order_key, state, next_attempt_at, created_at, updated_at) \
         SELECT i, ep, 'event', t, ev, p, l, k, 'pending', $8, $8, $8 FROM UNNEST($1::text[], \
         $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[]) \
         AS u(i, ep, t, ev, p, l, k)",
    )
    .bind(
        routed
            .iter()
            .map(|r| r.delivery_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        routed
            .iter()
            .map(|r| r.endpoint_id.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        routed
            .iter()
            .map(|r| r.event.event_type.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        routed
            .iter()
            .map(|r| r.event.event_id.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(routed.iter().map(|r| r.event.position).collect::<Vec<_>>())
    .bind(
        routed
            .iter()
            .map(|r| i64::from(r.event.ledger))
            .collect::<Vec<_>>(),
    )
    .bind(
        routed
            .iter()
            .map(|r| stream_key(r.event.stream_id))
            .collect::<Vec<_>>(),
    )
    .bind(now)
    .execute(&mut **tx)
    .await?;
    ensure_heads(tx, &routed_lines(&routed)).await?;
    Ok(routed.len())
}

/// See `sqlite_outbox::rollback_outbox`.
pub(super) async fn rollback_outbox(
    tx: &mut Transaction<'_, Postgres>,
    first_removed: Position,
    fork: i64,
    epoch: u64,
    now: i64,
) -> Result<usize, StoreError> {
    let rows = sqlx::query(
        "SELECT d.id, d.delivery_id, d.endpoint_id, d.event_type, d.event_id, d.position, \
         d.ledger, d.order_key, d.state, d.lease_until, e.tx_hash FROM webhook_deliveries d \
         LEFT JOIN events e ON e.position = d.position AND e.event_id = d.event_id \
         WHERE d.position >= $1 AND d.kind IN ('event', 'replay') AND NOT d.reverted \
         FOR UPDATE OF d",
    )
    .bind(first_removed)
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = Vec::new();
    let mut endpoint = Vec::new();
    let mut event_ids = Vec::new();
    let mut keys = Vec::new();
    let mut payloads = Vec::new();
    let mut dropped = Vec::new();
    let mut mark = Vec::new();
    let mut lines = super::sqlite_outbox::Lines::new();
    for r in &rows {
        let pk: i64 = r.try_get(0)?;
        if let Some(k) = r.try_get::<Option<String>, _>(7)? {
            lines.insert((r.try_get(2)?, k));
        }
        let state: String = r.try_get(8)?;
        let lease: Option<i64> = r.try_get(9)?;
        let in_flight = state == STATE_PENDING && lease.is_some_and(|l| l > now);
        if state == STATE_DELIVERED || in_flight {
            let event_id: Option<String> = r.try_get(4)?;
            payloads.push(reverted_payload(
                r.try_get(1)?,
                r.try_get(3)?,
                event_id.clone(),
                r.try_get(5)?,
                r.try_get(10)?,
                r.try_get(6)?,
                fork,
                epoch,
            ));
            ids.push(new_delivery_id());
            endpoint.push(r.try_get::<String, _>(2)?);
            event_ids.push(event_id);
            keys.push(r.try_get::<Option<String>, _>(7)?);
        }
        if state == STATE_DELIVERED {
            mark.push(pk);
        } else {
            dropped.push(pk);
        }
    }
    if !dropped.is_empty() {
        sqlx::query("DELETE FROM webhook_deliveries WHERE id = ANY($1)")
            .bind(&dropped)
            .execute(&mut **tx)
            .await?;
    }
    if !mark.is_empty() {
        sqlx::query("UPDATE webhook_deliveries SET reverted = TRUE WHERE id = ANY($1)")
            .bind(&mark)
            .execute(&mut **tx)
            .await?;
    }
    if !ids.is_empty() {
        sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, kind, event_type, \
             event_id, position, ledger, order_key, payload, state, next_attempt_at, created_at, \
             updated_at) SELECT i, ep, 'reverted', 'stream.reverted', ev, NULL, 0, k, p, \
             'pending', $6, $6, $6 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[]) AS u(i, ep, ev, k, p)",
        )
        .bind(&ids)
        .bind(&endpoint)
        .bind(&event_ids)
        .bind(&keys)
        .bind(&payloads)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    ensure_heads(tx, &lines).await?;
    Ok(ids.len())
}

fn endpoint_row(r: &PgRow) -> Result<EndpointRecord, StoreError> {
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

fn delivery_row(r: &PgRow) -> Result<DeliveryRecord, StoreError> {
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

/// The PostgreSQL [`WebhookStore`].
#[derive(Clone, Debug)]
pub struct PgWebhooks {
    pub(super) pool: PgPool,
}

impl PgWebhooks {
    async fn notify(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_WEBHOOKS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl WebhookStore for PgWebhooks {
    async fn create_endpoint(&self, e: &NewEndpoint) -> Result<EndpointRecord, StoreError> {
        let now = super::now_ms();
        let r = sqlx::query(&format!(
            "INSERT INTO webhook_endpoints (id, url, description, event_types, stream_ids, \
             addresses, enabled, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(&e.id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(json_list(&e.filter.event_types))
        .bind(json_list(&e.filter.stream_ids))
        .bind(json_list(&e.filter.addresses))
        .bind(e.enabled)
        .bind(e.secret.expose())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        endpoint_row(&r)
    }

    async fn endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(endpoint_row)
        .collect()
    }

    async fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(endpoint_row)
        .transpose()
    }

    async fn update_endpoint(
        &self,
        id: &str,
        p: &EndpointPatch,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let mut qb: QueryBuilder<Postgres> =
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
        qb.push(format!(" RETURNING {ENDPOINT_COLUMNS}"));
        let r = qb.build().fetch_optional(&self.pool).await?;
        if p.enabled == Some(true) {
            self.notify().await?;
        }
        r.as_ref().map(endpoint_row).transpose()
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
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
        sqlx::query(&format!(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $1, \
             previous_secret_expires_at = $2, updated_at = $3 WHERE id = $4 \
             RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(secret.expose())
        .bind(previous_expires_at)
        .bind(super::now_ms())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(endpoint_row)
        .transpose()
    }

    async fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
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
            .fetch_all(&self.pool)
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
             WHERE endpoint_id = $1 AND delivery_id = $2"
        ))
        .bind(endpoint_id)
        .bind(delivery_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(delivery_row)
        .transpose()
    }

    async fn attempts(&self, delivery_pk: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempt, started_at, duration_ms, status_code, error, response_body, worker \
             FROM webhook_attempts WHERE delivery_pk = $1 ORDER BY attempt",
        )
        .bind(delivery_pk)
        .fetch_all(&self.pool)
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
            "UPDATE webhook_deliveries SET state = 'pending', tries = 0, next_attempt_at = $1, \
             updated_at = $1, head = TRUE, in_line = FALSE WHERE id = $2 AND state = 'dead'",
        )
        .bind(now)
        .bind(pk)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n > 0 {
            self.notify().await?;
        }
        Ok(n > 0)
    }

    async fn insert_deliveries(&self, rows: &[NewDelivery], now: i64) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, kind, event_type, \
             event_id, position, ledger, order_key, payload, state, next_attempt_at, created_at, \
             updated_at, head) SELECT i, ep, k, t, ev, p, l, o, pl, 'pending', $10, $10, $10, \
             o IS NULL \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::text[], $9::text[]) AS u(i, ep, k, t, ev, p, l, o, pl)",
        )
        .bind(rows.iter().map(|r| r.delivery_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.endpoint_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind.to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.event_type.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| i64::from(r.ledger)).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.stream_id.map(stream_key))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.payload.clone()).collect::<Vec<_>>())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        ensure_heads(&mut tx, &new_delivery_lines(rows)).await?;
        tx.commit().await?;
        self.notify().await
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
        // Losing a lease or an outcome in a crash only means sending again (at least once), so
        // these transactions do not wait for the WAL flush.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "WITH c AS (SELECT d.id FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
             AND (d.lease_until IS NULL OR d.lease_until <= $1) \
             AND d.head AND (d.ledger = 0 OR d.ledger <= COALESCE((SELECT safe_ledger \
             FROM ingest_cursor WHERE id = 1), -1)) \
             AND NOT (d.endpoint_id = ANY($5)) \
             ORDER BY d.next_attempt_at, d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED) \
             UPDATE webhook_deliveries w SET lease_owner = $2, lease_until = $3 FROM c \
             WHERE w.id = c.id RETURNING w.id",
        )
        .bind(now)
        .bind(owner)
        .bind(lease_until)
        .bind(i64::from(limit))
        .bind(exclude)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = super::sqlite_outbox::CLAIM_DETAILS.replace("d.id IN (", "d.id = ANY($1");
        let rows = sqlx::query(&format!("{sql}) ORDER BY d.id"))
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
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
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND id = ANY($2)",
        )
        .bind(owner)
        .bind(pks)
        .execute(&self.pool)
        .await?;
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let mut ids = Vec::with_capacity(results.len());
        let mut states = Vec::with_capacity(results.len());
        let mut next = Vec::with_capacity(results.len());
        let mut status = Vec::with_capacity(results.len());
        let mut errors = Vec::with_capacity(results.len());
        let mut delivered = Vec::with_capacity(results.len());
        for r in results {
            let (s, n, d) = outcome_columns(r.outcome, now);
            ids.push(r.pk);
            states.push(s.to_string());
            next.push(n);
            status.push(r.attempt.status_code.map(i64::from));
            errors.push(r.attempt.error.clone());
            delivered.push(d);
        }
        let updated: Vec<(i64, i64, String, Option<String>, bool, String)> = sqlx::query_as(
            "UPDATE webhook_deliveries d SET state = u.s, attempts = d.attempts + 1, \
             tries = d.tries + 1, next_attempt_at = u.n, lease_owner = NULL, lease_until = NULL, \
             last_status = u.st, last_error = u.er, delivered_at = COALESCE(u.dl, d.delivered_at), \
             updated_at = $7, head = CASE WHEN u.s = 'pending' THEN d.head ELSE FALSE END \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], \
             $5::text[], $6::bigint[]) AS u(id, s, n, st, er, dl) \
             WHERE d.id = u.id AND d.lease_owner = $8 \
             RETURNING d.id, d.attempts, d.endpoint_id, d.order_key, d.in_line, d.state",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&next)
        .bind(&status)
        .bind(&errors)
        .bind(&delivered)
        .bind(now)
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        let lines: super::sqlite_outbox::Lines = updated
            .iter()
            .filter(|u| u.4 && u.5 != STATE_PENDING)
            .filter_map(|u| u.3.clone().map(|k| (u.2.clone(), k)))
            .collect();
        ensure_heads(&mut tx, &lines).await?;
        let attempt_no: HashMap<i64, i64> = updated.into_iter().map(|u| (u.0, u.1)).collect();
        let done: Vec<(&AttemptResult, i64)> = results
            .iter()
            .filter_map(|r| attempt_no.get(&r.pk).map(|n| (r, *n)))
            .collect();
        if !done.is_empty() {
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_pk, attempt, started_at, duration_ms, \
                 status_code, error, response_body, worker) SELECT * FROM UNNEST($1::bigint[], \
                 $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], \
                 $8::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(done.iter().map(|(r, _)| r.pk).collect::<Vec<_>>())
            .bind(done.iter().map(|(_, n)| *n).collect::<Vec<_>>())
            .bind(
                done.iter()
                    .map(|(r, _)| r.attempt.started_at)
                    .collect::<Vec<_>>(),
            )
            .bind(
                done.iter()
                    .map(|(r, _)| r.attempt.duration_ms as i64)
                    .collect::<Vec<_>>(),
            )
            .bind(
                done.iter()
                    .map(|(r, _)| r.attempt.status_code.map(i64::from))
                    .collect::<Vec<_>>(),
            )
            .bind(
                done.iter()
                    .map(|(r, _)| r.attempt.error.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                done.iter()
                    .map(|(r, _)| r.attempt.response_body.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                done.iter()
                    .map(|(r, _)| r.attempt.worker.clone())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        let mut disabled = Vec::new();
        for (ep, sig) in endpoint_signals(results) {
            match sig {
                Signals::Healthy => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET failing_since = NULL \
                         WHERE id = $1 AND failing_since IS NOT NULL",
                    )
                    .bind(ep)
                    .execute(&mut *tx)
                    .await?;
                }
                Signals::Failing(since) => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET failing_since = $1 \
                         WHERE id = $2 AND failing_since IS NULL",
                    )
                    .bind(since)
                    .bind(ep)
                    .execute(&mut *tx)
                    .await?;
                    let n = sqlx::query(
                        "UPDATE webhook_endpoints SET enabled = FALSE, updated_at = $1, \
                         disabled_reason = 'failing continuously since ' || failing_since || \
                         ' (unix ms)' WHERE id = $2 AND enabled AND failing_since <= $3",
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
                        "UPDATE webhook_endpoints SET enabled = FALSE, updated_at = $1, \
                         disabled_reason = 'the endpoint answered 410 Gone' \
                         WHERE id = $2 AND enabled",
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
             AND head AND next_attempt_at > $1",
        )
        .bind(after)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn delivery_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)?.max(0) as u64)))
            .collect()
    }

    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<()>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([
                super::NOTIFY_COMMITS,
                super::NOTIFY_ROLLBACKS,
                NOTIFY_WEBHOOKS,
            ])
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        let _ = tx.try_send(());
                    }
                    Err(e) => {
                        if tx.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %e, "webhook LISTEN connection failed; reconnecting");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }
}
