//! PostgreSQL event store. Writers serialize on a transaction-scoped advisory lock, so positions
//! stay gap-free even with several writer processes; bulk inserts go through `UNNEST`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::postgres_outbox;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Advisory lock key every writer takes ("Flux" in ASCII).
/// `LISTEN` channel: a batch committed; payload JSON `{"ledger","first_position","last_position"}`.
pub const NOTIFY_COMMITS: &str = "fluxora_commits";
/// `LISTEN` channel: a rollback committed; payload JSON
/// `{"fork_ledger","epoch","streams":[ids],"first_removed_position"}`.
pub const NOTIFY_ROLLBACKS: &str = "fluxora_rollbacks";

pub const WRITER_LOCK: i64 = 0x466c_7578;

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let open_err = |e: sqlx::Error| StoreError::Open {
            url: crate::config::DatabaseUrl::Postgres(url.to_string()).redacted(),
            reason: e.to_string(),
        };
        let opts = PgConnectOptions::from_str(url).map_err(open_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        Ok(Self { pool })
    }

    /// The pool, for modules that add their own tables in later migrations.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_writer(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITER_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

fn event_row(r: &PgRow) -> Result<StoredEvent, StoreError> {
    EventRow {
        position: r.try_get(0)?,
        event_id: r.try_get(1)?,
        ledger: r.try_get(2)?,
        tx_hash: r.try_get(3)?,
        tx_order: r.try_get(4)?,
        op_index: r.try_get(5)?,
        event_index: r.try_get(6)?,
        contract_id: r.try_get(7)?,
        topic: r.try_get(8)?,
        stream_id: r.try_get(9)?,
        decoded: r.try_get(10)?,
        topic_xdr: r.try_get(11)?,
        data_xdr: r.try_get(12)?,
        function: r.try_get(13)?,
    }
    .into_event()
}

fn ledger_row(r: &PgRow) -> Result<LedgerRecord, StoreError> {
    ledger_from_row(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)
}

fn reorg_row(r: &PgRow) -> Result<ReorgRecord, StoreError> {
    let u32_of = |i: usize| -> Result<u32, StoreError> {
        let v: i64 = r.try_get(i)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("reorg column {i}: {v}")))
    };
    let u64_of = |i: usize| -> Result<u64, StoreError> {
        let v: i64 = r.try_get(i)?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("reorg column {i}: {v}")))
    };
    Ok(ReorgRecord {
        id: r.try_get(0)?,
        fork_ledger: u32_of(1)?,
        old_tip: u32_of(2)?,
        old_hash: r.try_get(3)?,
        new_hash: r.try_get(4)?,
        depth: u32_of(5)?,
        events_removed: u64_of(6)?,
        first_position: r.try_get(7)?,
        last_position: r.try_get(8)?,
        streams_affected: parse_streams(&r.try_get::<String, _>(9)?)?,
        reason: r.try_get(10)?,
        epoch: u64_of(11)?,
        created_at: r.try_get(12)?,
    })
}

const REORG_COLUMNS: &str = "id, fork_ledger, old_tip, old_hash, new_hash, depth, events_removed, \
     first_position, last_position, streams_affected, reason, epoch, created_at";

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn append(&self, batch: &AppendBatch) -> Result<AppendOutcome, StoreError> {
        let (events, dup_in_batch) = validate_batch(batch)?;
        let mut tx = self.begin_writer().await?;

        let mut stored = HashMap::new();
        if let (Some(first), Some(last)) = (batch.ledgers.first(), batch.ledgers.last()) {
            let rows =
                sqlx::query("SELECT sequence, hash FROM ledgers WHERE sequence BETWEEN $1 AND $2")
                    .bind(i64::from(first.sequence) - 1)
                    .bind(i64::from(last.sequence))
                    .fetch_all(&mut *tx)
                    .await?;
            for r in rows {
                let seq: i64 = r.try_get(0)?;
                stored.insert(seq as u32, r.try_get::<String, _>(1)?);
            }
        }
        let new_ledgers = ledgers_to_insert(batch, &stored)?;
        let now = now_ms();
        if !new_ledgers.is_empty() {
            sqlx::query(
                "INSERT INTO ledgers (sequence, hash, prev_hash, close_time, ingested_at) \
                 SELECT s, h, p, c, $5 FROM UNNEST($1::bigint[], $2::text[], $3::text[], \
                 $4::bigint[]) AS t(s, h, p, c)",
            )
            .bind(
                new_ledgers
                    .iter()
                    .map(|l| i64::from(l.sequence))
                    .collect::<Vec<_>>(),
            )
            .bind(
                new_ledgers
                    .iter()
                    .map(|l| l.hash.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                new_ledgers
                    .iter()
                    .map(|l| l.prev_hash.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(new_ledgers.iter().map(|l| l.close_time).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }

        let (last_pos, last_ledger): (i64, Option<i64>) = {
            let r =
                sqlx::query("SELECT position, ledger FROM events ORDER BY position DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            match r {
                Some(r) => (r.try_get(0)?, Some(r.try_get(1)?)),
                None => (0, None),
            }
        };
        // An event id encodes its ledger and stored events never go past the last one's ledger,
        // so only events at or below that ledger can already be stored.
        let ids: Vec<String> = events
            .iter()
            .filter(|e| last_ledger.is_some_and(|ll| i64::from(e.ledger) <= ll))
            .map(|e| e.event_id.clone())
            .collect();
        let existing: HashSet<String> = if ids.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_scalar("SELECT event_id FROM events WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
        };
        let fresh: Vec<&NewEvent> = events
            .into_iter()
            .filter(|e| !existing.contains(&e.event_id))
            .collect();
        let duplicates = dup_in_batch + existing.len();

        let in_batch: HashSet<u32> = batch.ledgers.iter().map(|l| l.sequence).collect();
        let mut outside: Vec<i64> = Vec::new();
        for e in &fresh {
            if let Some(ll) = last_ledger {
                if i64::from(e.ledger) < ll {
                    return Err(StoreError::InvalidBatch(format!(
                        "event {} is for ledger {}, older than ledger {} of the last stored event: \
                         positions must follow ledger order",
                        e.event_id, e.ledger, ll
                    )));
                }
            }
            if !in_batch.contains(&e.ledger) && !outside.contains(&i64::from(e.ledger)) {
                outside.push(i64::from(e.ledger));
            }
        }
        if !outside.is_empty() {
            let found: HashSet<i64> =
                sqlx::query_scalar("SELECT sequence FROM ledgers WHERE sequence = ANY($1)")
                    .bind(&outside)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
            if let Some(e) = fresh
                .iter()
                .find(|e| !in_batch.contains(&e.ledger) && !found.contains(&i64::from(e.ledger)))
            {
                return Err(StoreError::UnknownLedger {
                    event_id: e.event_id.clone(),
                    ledger: e.ledger,
                });
            }
        }

        let n = fresh.len();
        if n > 0 {
            let mut topic_xdr = Vec::with_capacity(n);
            for e in &fresh {
                topic_xdr.push(
                    serde_json::to_string(&e.topic_xdr)
                        .map_err(|x| StoreError::InvalidBatch(format!("topic_xdr: {x}")))?,
                );
            }
            sqlx::query(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM UNNEST(\
                 $1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], \
                 $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                 $13::text[], $14::text[])"
            ))
            .bind((1..=n as i64).map(|i| last_pos + i).collect::<Vec<_>>())
            .bind(fresh.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>())
            .bind(
                fresh
                    .iter()
                    .map(|e| i64::from(e.ledger))
                    .collect::<Vec<_>>(),
            )
            .bind(fresh.iter().map(|e| e.tx_hash.clone()).collect::<Vec<_>>())
            .bind(
                fresh
                    .iter()
                    .map(|e| i64::from(e.tx_order))
                    .collect::<Vec<_>>(),
            )
            .bind(
                fresh
                    .iter()
                    .map(|e| i64::from(e.op_index))
                    .collect::<Vec<_>>(),
            )
            .bind(
                fresh
                    .iter()
                    .map(|e| i64::from(e.event_index))
                    .collect::<Vec<_>>(),
            )
            .bind(
                fresh
                    .iter()
                    .map(|e| e.contract_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(fresh.iter().map(|e| e.topic.clone()).collect::<Vec<_>>())
            .bind(
                fresh
                    .iter()
                    .map(|e| e.stream_id.map(|s| s.to_string()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                fresh
                    .iter()
                    .map(|e| e.decoded.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(topic_xdr)
            .bind(fresh.iter().map(|e| e.data_xdr.clone()).collect::<Vec<_>>())
            .bind(fresh.iter().map(|e| e.function.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        write_projection(&mut tx, &batch.projection).await?;

        // The outbox: one delivery row per (new event, matching endpoint), in this transaction.
        let positioned: Vec<(Position, &NewEvent)> = fresh
            .iter()
            .enumerate()
            .map(|(i, e)| (last_pos + 1 + i as i64, *e))
            .collect();
        let deliveries =
            postgres_outbox::enqueue(&mut tx, &positioned, &batch.projection.versions, now).await?;

        if let Some(c) = &batch.cursor {
            sqlx::query(
                "INSERT INTO ingest_cursor (id, ledger, hash, updated_at, safe_ledger) \
                 VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET \
                 ledger = excluded.ledger, hash = excluded.hash, updated_at = excluded.updated_at, \
                 safe_ledger = COALESCE(excluded.safe_ledger, ingest_cursor.safe_ledger)",
            )
            .bind(i64::from(c.ledger))
            .bind(&c.hash)
            .bind(now)
            .bind(batch.safe_ledger.map(i64::from))
            .execute(&mut *tx)
            .await?;
        }
        // Other processes (API-only hubs, dispatchers) learn of the commit; delivered on commit.
        let payload = serde_json::json!({
            "ledger": batch.cursor.as_ref().map(|c| c.ledger),
            "first_position": (n > 0).then_some(last_pos + 1),
            "last_position": (n > 0).then_some(last_pos + n as i64),
        });
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_COMMITS)
            .bind(payload.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AppendOutcome {
            appended: n,
            duplicates,
            ledgers_added: new_ledgers.len(),
            first_position: (n > 0).then_some(last_pos + 1),
            last_position: (n > 0).then_some(last_pos + n as i64),
            deliveries,
        })
    }

    async fn rollback_to(&self, req: &RollbackRequest) -> Result<RollbackReport, StoreError> {
        let fork = i64::from(req.fork_ledger);
        let mut tx = self.begin_writer().await?;
        let removed_ledgers = sqlx::query(
            "SELECT sequence, hash, prev_hash, close_time FROM ledgers WHERE sequence > $1 \
             ORDER BY sequence",
        )
        .bind(fork)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(ledger_row)
        .collect::<Result<Vec<_>, _>>()?;
        let epoch: String = sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'epoch'")
            .fetch_one(&mut *tx)
            .await?;
        let mut epoch: u64 = epoch
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("epoch `{epoch}`")))?;

        // Positions follow ledger order, so the events above the fork are exactly the positions
        // from the first one above it: an index lookup, then primary-key ranges (cost follows the
        // rolled-back range, not the store's size).
        let first_above: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM events WHERE ledger > $1 ORDER BY ledger, position LIMIT 1",
        )
        .bind(fork)
        .fetch_optional(&mut *tx)
        .await?;
        // A two-sided range: planners without statistics take a one-sided one for a third of
        // the table and scan it all.
        let last_pos: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&mut *tx)
            .await?;
        let rows = match first_above {
            Some(p) => {
                sqlx::query(
                    "SELECT position, event_id, stream_id FROM events \
                     WHERE position BETWEEN $1 AND $2 ORDER BY position",
                )
                .bind(p)
                .bind(last_pos)
                .fetch_all(&mut *tx)
                .await?
            }
            None => Vec::new(),
        };
        let mut removed_event_ids = Vec::with_capacity(rows.len());
        let mut streams = BTreeSet::new();
        let mut first = None;
        let mut last = None;
        for r in &rows {
            let p: i64 = r.try_get(0)?;
            first.get_or_insert(p);
            last = Some(p);
            removed_event_ids.push(r.try_get::<String, _>(1)?);
            if let Some(s) = r.try_get::<Option<String>, _>(2)? {
                streams.insert(
                    s.parse::<u64>()
                        .map_err(|_| StoreError::Corrupt(format!("stream_id `{s}`")))?,
                );
            }
        }

        let fork_hash: Option<String> =
            sqlx::query_scalar("SELECT hash FROM ledgers WHERE sequence = $1")
                .bind(fork)
                .fetch_optional(&mut *tx)
                .await?;
        match &fork_hash {
            Some(h) => {
                sqlx::query(
                    "INSERT INTO ingest_cursor (id, ledger, hash, updated_at) \
                     VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET \
                     ledger = excluded.ledger, hash = excluded.hash, \
                     updated_at = excluded.updated_at, \
                     safe_ledger = LEAST(ingest_cursor.safe_ledger, excluded.ledger)",
                )
                .bind(fork)
                .bind(h)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM ingest_cursor WHERE ledger > $1")
                    .bind(fork)
                    .execute(&mut *tx)
                    .await?;
            }
        }

        let mut reorg_id = None;
        let mut webhooks_reverted = 0;
        if let (Some(first_l), Some(last_l)) = (removed_ledgers.first(), removed_ledgers.last()) {
            if let Some(p) = first_above {
                webhooks_reverted =
                    postgres_outbox::rollback_outbox(&mut tx, p, fork, epoch + 1, now_ms()).await?;
                sqlx::query("DELETE FROM events WHERE position BETWEEN $1 AND $2")
                    .bind(p)
                    .bind(last_pos)
                    .execute(&mut *tx)
                    .await?;
            }
            streams.extend(rollback_projection(&mut tx, fork).await?);
            sqlx::query("DELETE FROM ledgers WHERE sequence > $1")
                .bind(fork)
                .execute(&mut *tx)
                .await?;
            epoch += 1;
            sqlx::query("UPDATE store_meta SET value = $1 WHERE key = 'epoch'")
                .bind(epoch.to_string())
                .execute(&mut *tx)
                .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO reorgs (fork_ledger, old_tip, old_hash, new_hash, depth, \
                 events_removed, first_position, last_position, streams_affected, reason, epoch, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 RETURNING id",
            )
            .bind(fork)
            .bind(i64::from(last_l.sequence))
            .bind(&first_l.hash)
            .bind(&req.new_hash)
            .bind(removed_ledgers.len() as i64)
            .bind(removed_event_ids.len() as i64)
            .bind(first)
            .bind(last)
            .bind(streams_json(&streams))
            .bind(&req.reason)
            .bind(epoch as i64)
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await?;
            reorg_id = Some(id);
            let payload = serde_json::json!({
                "fork_ledger": req.fork_ledger,
                "epoch": epoch,
                "streams": &streams,
                "first_removed_position": first,
            });
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_ROLLBACKS)
                .bind(payload.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(RollbackReport {
            fork_ledger: req.fork_ledger,
            removed_ledgers,
            removed_event_ids,
            first_removed_position: first,
            last_removed_position: last,
            streams_affected: streams.into_iter().collect(),
            epoch,
            reorg_id,
            webhooks_reverted,
        })
    }

    async fn events_after(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_row)
        .collect()
    }

    async fn stream_events(
        &self,
        stream_id: u64,
        after: Position,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND position > $2 \
             ORDER BY position LIMIT $3"
        ))
        .bind(stream_id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_row)
        .collect()
    }

    async fn event_by_id(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(event_row)
        .transpose()
    }

    async fn ledger(&self, sequence: u32) -> Result<Option<LedgerRecord>, StoreError> {
        sqlx::query("SELECT sequence, hash, prev_hash, close_time FROM ledgers WHERE sequence = $1")
            .bind(i64::from(sequence))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(ledger_row)
            .transpose()
    }

    async fn ledgers(&self, from: u32, to: u32) -> Result<Vec<LedgerRecord>, StoreError> {
        sqlx::query(
            "SELECT sequence, hash, prev_hash, close_time FROM ledgers \
             WHERE sequence BETWEEN $1 AND $2 ORDER BY sequence",
        )
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(ledger_row)
        .collect()
    }

    async fn tip(&self) -> Result<Option<LedgerRecord>, StoreError> {
        sqlx::query(
            "SELECT sequence, hash, prev_hash, close_time FROM ledgers \
             ORDER BY sequence DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(ledger_row)
        .transpose()
    }

    async fn cursor(&self) -> Result<Option<Cursor>, StoreError> {
        let r = sqlx::query("SELECT ledger, hash FROM ingest_cursor WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        match r {
            None => Ok(None),
            Some(r) => {
                let l: i64 = r.try_get(0)?;
                Ok(Some(Cursor {
                    ledger: u32::try_from(l)
                        .map_err(|_| StoreError::Corrupt(format!("cursor ledger {l}")))?,
                    hash: r.try_get(1)?,
                }))
            }
        }
    }

    async fn safe_ledger(&self) -> Result<Option<u32>, StoreError> {
        let v: Option<Option<i64>> =
            sqlx::query_scalar("SELECT safe_ledger FROM ingest_cursor WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        v.flatten().map(|v| u32_col(v, "safe_ledger")).transpose()
    }

    fn webhooks(&self) -> std::sync::Arc<dyn WebhookStore> {
        std::sync::Arc::new(PgWebhooks {
            pool: self.pool.clone(),
        })
    }

    async fn last_position(&self) -> Result<Position, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0)::bigint FROM events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn event_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn epoch(&self) -> Result<u64, StoreError> {
        let v: String = sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'epoch'")
            .fetch_one(&self.pool)
            .await?;
        v.parse()
            .map_err(|_| StoreError::Corrupt(format!("epoch `{v}`")))
    }

    async fn reorgs(&self, limit: u32) -> Result<Vec<ReorgRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {REORG_COLUMNS} FROM reorgs ORDER BY id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(reorg_row)
        .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        if key == "epoch" {
            return Err(StoreError::InvalidBatch(
                "`epoch` is maintained by rollbacks and cannot be set".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO store_meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn first_ledger(&self) -> Result<Option<u32>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MIN(sequence) FROM ledgers")
            .fetch_one(&self.pool)
            .await?;
        v.map(|v| u32_col(v, "ledgers.sequence")).transpose()
    }

    async fn stream(&self, id: u64) -> Result<Option<StreamState>, StoreError> {
        let st: Option<String> =
            sqlx::query_scalar("SELECT state FROM streams WHERE stream_key = $1")
                .bind(stream_key(id))
                .fetch_optional(&self.pool)
                .await?;
        st.as_deref().map(decode_state).transpose()
    }

    async fn stream_at(&self, id: u64, ledger: u32) -> Result<Option<StreamState>, StoreError> {
        let st: Option<String> = sqlx::query_scalar(
            "SELECT state FROM stream_versions WHERE stream_key = $1 AND ledger <= $2 \
             ORDER BY ledger DESC LIMIT 1",
        )
        .bind(stream_key(id))
        .bind(i64::from(ledger))
        .fetch_optional(&self.pool)
        .await?;
        st.as_deref().map(decode_state).transpose()
    }

    async fn list_streams(&self, q: &StreamQuery) -> Result<Vec<StreamState>, StoreError> {
        check_status(q)?;
        let mut qb: sqlx::QueryBuilder<Postgres> =
            sqlx::QueryBuilder::new("SELECT state FROM streams WHERE 1 = 1");
        if let Some(s) = &q.status {
            // With a party filter, keep the planner on the far more selective sender/recipient
            // index (generic plans and fresh tables have no useful statistics).
            if q.sender.is_some() || q.recipient.is_some() {
                qb.push(" AND (status || '') = ").push_bind(s.clone());
            } else {
                qb.push(" AND status = ").push_bind(s.clone());
            }
        }
        if let Some(s) = &q.sender {
            qb.push(" AND sender = ").push_bind(s.clone());
        }
        if let Some(r) = &q.recipient {
            qb.push(" AND recipient = ").push_bind(r.clone());
        }
        if let Some(a) = q.after {
            qb.push(" AND stream_key > ").push_bind(stream_key(a));
        }
        qb.push(" ORDER BY stream_key LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows: Vec<String> = qb.build_query_scalar().fetch_all(&self.pool).await?;
        rows.iter().map(|s| decode_state(s)).collect()
    }

    async fn stream_status_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM streams GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let n: i64 = r.try_get(1)?;
            out.insert(r.try_get::<String, _>(0)?, n.max(0) as u64);
        }
        Ok(out)
    }

    async fn stream_versions(
        &self,
        after: Option<(u64, u32)>,
        limit: u32,
    ) -> Result<Vec<StreamVersion>, StoreError> {
        let (k, l) = match after {
            Some((id, l)) => (stream_key(id), i64::from(l)),
            None => (String::new(), -1),
        };
        sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM stream_versions \
             WHERE (stream_key, ledger) > ($1, $2) ORDER BY stream_key, ledger LIMIT $3"
        ))
        .bind(&k)
        .bind(l)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(version_row)
        .collect()
    }

    async fn flags(&self) -> Result<ContractFlags, StoreError> {
        let st: Option<String> =
            sqlx::query_scalar("SELECT state FROM contract_flags ORDER BY ledger DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(st
            .as_deref()
            .map(decode_flags)
            .transpose()?
            .unwrap_or_default())
    }

    async fn flag_versions(&self) -> Result<Vec<FlagsVersion>, StoreError> {
        let rows = sqlx::query("SELECT ledger, state FROM contract_flags ORDER BY ledger")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FlagsVersion {
                    ledger: u32_col(r.try_get(0)?, "contract_flags.ledger")?,
                    state: r.try_get(1)?,
                })
            })
            .collect()
    }

    async fn events_in_ledgers(&self, from: u32, to: u32) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE ledger BETWEEN $1 AND $2 \
             ORDER BY ledger, position"
        ))
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_row)
        .collect()
    }

    async fn fold_inputs(&self, from: u32, to: u32) -> Result<Vec<FoldInput>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {FOLD_COLUMNS} FROM events WHERE ledger BETWEEN $1 AND $2 \
             ORDER BY ledger, position"
        ))
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r: &PgRow| {
                fold_input(
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                    r.try_get::<&str, _>(6)?,
                    r.try_get(7)?,
                )
            })
            .collect()
    }

    async fn stream_entries(
        &self,
        from: u32,
        to: u32,
    ) -> Result<Vec<StreamEntryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT ledger, tx_order, seq, stream_id, tx_hash, value_xdr FROM stream_entries \
             WHERE ledger BETWEEN $1 AND $2 ORDER BY ledger, tx_order, seq",
        )
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(3)?;
                Ok(StreamEntryRecord {
                    ledger: u32_col(r.try_get(0)?, "stream_entries.ledger")?,
                    tx_order: u32_col(r.try_get(1)?, "stream_entries.tx_order")?,
                    seq: u32_col(r.try_get(2)?, "stream_entries.seq")?,
                    stream_id: id.parse().map_err(|_| {
                        StoreError::Corrupt(format!("stream_entries.stream_id `{id}`"))
                    })?,
                    tx_hash: r.try_get(4)?,
                    value_xdr: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn replace_projection(
        &self,
        versions: &[StreamVersion],
        flags: &[FlagsVersion],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_writer().await?;
        sqlx::query("TRUNCATE streams, stream_versions, contract_flags")
            .execute(&mut *tx)
            .await?;
        let delta = ProjectionDelta {
            versions: versions.to_vec(),
            flags: flags.to_vec(),
            entries: Vec::new(),
        };
        write_projection(&mut tx, &delta).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn u32_col(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: {v}")))
}

fn version_row(r: &PgRow) -> Result<StreamVersion, StoreError> {
    Ok(StreamVersion {
        stream_id: parse_stream_key(&r.try_get::<String, _>(0)?)?,
        ledger: u32_col(r.try_get(1)?, "stream_versions.ledger")?,
        sender: r.try_get(2)?,
        recipient: r.try_get(3)?,
        status: r.try_get(4)?,
        verified: r.try_get(5)?,
        state: r.try_get(6)?,
    })
}

/// Writes a batch's projection rows (see the SQLite twin), with UNNEST arrays.
async fn write_projection(
    tx: &mut Transaction<'_, Postgres>,
    d: &ProjectionDelta,
) -> Result<(), StoreError> {
    if !d.entries.is_empty() {
        let e = &d.entries;
        sqlx::query(
            "INSERT INTO stream_entries (ledger, tx_order, seq, stream_id, tx_hash, value_xdr) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], \
             $5::text[], $6::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(e.iter().map(|x| i64::from(x.ledger)).collect::<Vec<_>>())
        .bind(e.iter().map(|x| i64::from(x.tx_order)).collect::<Vec<_>>())
        .bind(e.iter().map(|x| i64::from(x.seq)).collect::<Vec<_>>())
        .bind(
            e.iter()
                .map(|x| x.stream_id.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(e.iter().map(|x| x.tx_hash.clone()).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.value_xdr.clone()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let latest = latest_versions(&d.versions);
    for (table, conflict, rows) in [
        (
            "stream_versions",
            "(stream_key, ledger)",
            d.versions.iter().collect::<Vec<_>>(),
        ),
        ("streams", "(stream_key)", latest),
    ] {
        if rows.is_empty() {
            continue;
        }
        sqlx::query(&format!(
            "INSERT INTO {table} ({VERSION_COLUMNS}) SELECT * FROM UNNEST($1::text[], \
             $2::bigint[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::text[]) \
             ON CONFLICT {conflict} {VERSION_UPSERT}"
        ))
        .bind(
            rows.iter()
                .map(|v| stream_key(v.stream_id))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|v| i64::from(v.ledger)).collect::<Vec<_>>())
        .bind(rows.iter().map(|v| v.sender.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|v| v.recipient.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|v| v.status.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|v| v.verified).collect::<Vec<_>>())
        .bind(rows.iter().map(|v| v.state.clone()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    if !d.flags.is_empty() {
        sqlx::query(
            "INSERT INTO contract_flags (ledger, state) SELECT * FROM UNNEST($1::bigint[], \
             $2::text[]) ON CONFLICT (ledger) DO UPDATE SET state = excluded.state",
        )
        .bind(
            d.flags
                .iter()
                .map(|f| i64::from(f.ledger))
                .collect::<Vec<_>>(),
        )
        .bind(d.flags.iter().map(|f| f.state.clone()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Removes projection rows above `fork` and restores each affected stream's current row from its
/// latest remaining version (or removes it). Returns the affected streams.
async fn rollback_projection(
    tx: &mut Transaction<'_, Postgres>,
    fork: i64,
) -> Result<BTreeSet<u64>, StoreError> {
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT stream_key FROM stream_versions WHERE ledger > $1")
            .bind(fork)
            .fetch_all(&mut **tx)
            .await?;
    sqlx::query("DELETE FROM stream_versions WHERE ledger > $1")
        .bind(fork)
        .execute(&mut **tx)
        .await?;
    if !keys.is_empty() {
        sqlx::query("DELETE FROM streams WHERE stream_key = ANY($1)")
            .bind(&keys)
            .execute(&mut **tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO streams ({VERSION_COLUMNS}) SELECT DISTINCT ON (stream_key) \
             {VERSION_COLUMNS} FROM stream_versions WHERE stream_key = ANY($1) \
             ORDER BY stream_key, ledger DESC"
        ))
        .bind(&keys)
        .execute(&mut **tx)
        .await?;
    }
    for t in ["stream_entries", "contract_flags"] {
        sqlx::query(&format!("DELETE FROM {t} WHERE ledger > $1"))
            .bind(fork)
            .execute(&mut **tx)
            .await?;
    }
    keys.iter().map(|k| parse_stream_key(k)).collect()
}
