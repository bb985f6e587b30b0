//! SQLite event store: the embedded default. WAL, `synchronous=NORMAL`, one writer connection
//! (`BEGIN IMMEDIATE`, so a second process waits instead of interleaving), pooled readers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::sqlite_outbox;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Rows per multi-row INSERT (14 columns each; SQLite allows 32,766 parameters).
const INSERT_CHUNK: usize = 500;
/// Ids per `IN (…)` lookup.
const LOOKUP_CHUNK: usize = 900;

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`, `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let open_err = |e: sqlx::Error| StoreError::Open {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // 64 MiB page cache; checkpoint the WAL every 64 MiB instead of 4 MiB, so that index
            // pages touched by many consecutive batches are copied back (and fsynced) once.
            .pragma("cache_size", "-65536")
            .pragma("wal_autocheckpoint", "16384")
            .pragma("temp_store", "memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.clone())
            .await
            .map_err(open_err)?;
        // An in-memory database exists once per connection: readers must share the writer's.
        let reader = if memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts.read_only(false).row_buffer_size(1024))
                .await
                .map_err(open_err)?
        };
        Ok(Self { writer, reader })
    }

    /// The writer pool, for modules that add their own tables in later migrations.
    pub fn writer_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The reader pool.
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.reader
    }
}

fn event_row(r: &SqliteRow) -> Result<StoredEvent, StoreError> {
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

fn ledger_row(r: &SqliteRow) -> Result<LedgerRecord, StoreError> {
    ledger_from_row(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)
}

fn reorg_row(r: &SqliteRow) -> Result<ReorgRecord, StoreError> {
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
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn append(&self, batch: &AppendBatch) -> Result<AppendOutcome, StoreError> {
        let (events, dup_in_batch) = validate_batch(batch)?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;

        // Ledgers: compare with what is stored at each sequence and at the one before the first.
        let mut stored = HashMap::new();
        if let (Some(first), Some(last)) = (batch.ledgers.first(), batch.ledgers.last()) {
            let rows =
                sqlx::query("SELECT sequence, hash FROM ledgers WHERE sequence BETWEEN ? AND ?")
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
        for chunk in new_ledgers.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO ledgers (sequence, hash, prev_hash, close_time, ingested_at) ",
            );
            qb.push_values(chunk, |mut b, l| {
                b.push_bind(i64::from(l.sequence))
                    .push_bind(&l.hash)
                    .push_bind(&l.prev_hash)
                    .push_bind(l.close_time)
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }

        // Events: drop the ones already stored, check their ledgers, assign positions.
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
        let mut existing: HashSet<String> = HashSet::new();
        let maybe_stored: Vec<&&NewEvent> = events
            .iter()
            .filter(|e| last_ledger.is_some_and(|ll| i64::from(e.ledger) <= ll))
            .collect();
        for chunk in maybe_stored.chunks(LOOKUP_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT event_id FROM events WHERE event_id IN (");
            let mut sep = qb.separated(", ");
            for e in chunk {
                sep.push_bind(e.event_id.as_str());
            }
            qb.push(")");
            for r in qb.build().fetch_all(&mut *tx).await? {
                existing.insert(r.try_get(0)?);
            }
        }
        let fresh: Vec<&NewEvent> = events
            .into_iter()
            .filter(|e| !existing.contains(&e.event_id))
            .collect();
        let duplicates = dup_in_batch + existing.len();

        let in_batch: HashSet<u32> = batch.ledgers.iter().map(|l| l.sequence).collect();
        let mut checked: HashSet<u32> = HashSet::new();
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
            if in_batch.contains(&e.ledger) || !checked.insert(e.ledger) {
                continue;
            }
            let found = sqlx::query("SELECT 1 FROM ledgers WHERE sequence = ?")
                .bind(i64::from(e.ledger))
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Err(StoreError::UnknownLedger {
                    event_id: e.event_id.clone(),
                    ledger: e.ledger,
                });
            }
        }

        let mut pos = last_pos;
        for chunk in fresh.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT INTO events ({EVENT_COLUMNS}) "));
            let mut err = None;
            qb.push_values(chunk, |mut b, e| {
                pos += 1;
                let topic_xdr = serde_json::to_string(&e.topic_xdr).unwrap_or_else(|x| {
                    err = Some(x.to_string());
                    String::new()
                });
                b.push_bind(pos)
                    .push_bind(&e.event_id)
                    .push_bind(i64::from(e.ledger))
                    .push_bind(&e.tx_hash)
                    .push_bind(i64::from(e.tx_order))
                    .push_bind(i64::from(e.op_index))
                    .push_bind(i64::from(e.event_index))
                    .push_bind(&e.contract_id)
                    .push_bind(&e.topic)
                    .push_bind(e.stream_id.map(|s| s.to_string()))
                    .push_bind(e.decoded.to_string())
                    .push_bind(topic_xdr)
                    .push_bind(&e.data_xdr)
                    .push_bind(&e.function);
            });
            if let Some(x) = err {
                return Err(StoreError::InvalidBatch(format!("topic_xdr: {x}")));
            }
            qb.build().execute(&mut *tx).await?;
        }

        write_projection(&mut tx, &batch.projection).await?;

        // The outbox: one delivery row per (new event, matching endpoint), in this transaction.
        let positioned: Vec<(Position, &NewEvent)> = fresh
            .iter()
            .enumerate()
            .map(|(i, e)| (last_pos + 1 + i as i64, *e))
            .collect();
        let deliveries =
            sqlite_outbox::enqueue(&mut tx, &positioned, &batch.projection.versions, now).await?;

        if let Some(c) = &batch.cursor {
            sqlx::query(
                "INSERT INTO ingest_cursor (id, ledger, hash, updated_at, safe_ledger) \
                 VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET ledger = excluded.ledger, \
                 hash = excluded.hash, updated_at = excluded.updated_at, \
                 safe_ledger = COALESCE(excluded.safe_ledger, ingest_cursor.safe_ledger)",
            )
            .bind(i64::from(c.ledger))
            .bind(&c.hash)
            .bind(now)
            .bind(batch.safe_ledger.map(i64::from))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let appended = fresh.len();
        Ok(AppendOutcome {
            appended,
            duplicates,
            ledgers_added: new_ledgers.len(),
            first_position: (appended > 0).then_some(last_pos + 1),
            last_position: (appended > 0).then_some(pos),
            deliveries,
        })
    }

    async fn rollback_to(&self, req: &RollbackRequest) -> Result<RollbackReport, StoreError> {
        let fork = i64::from(req.fork_ledger);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let removed_ledgers = sqlx::query(
            "SELECT sequence, hash, prev_hash, close_time FROM ledgers WHERE sequence > ? \
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
            "SELECT position FROM events WHERE ledger > ? ORDER BY ledger, position LIMIT 1",
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
                     WHERE position BETWEEN ? AND ? ORDER BY position",
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
            sqlx::query_scalar("SELECT hash FROM ledgers WHERE sequence = ?")
                .bind(fork)
                .fetch_optional(&mut *tx)
                .await?;
        match &fork_hash {
            Some(h) => {
                // The safe ledger never stays above what is stored.
                sqlx::query(
                    "INSERT INTO ingest_cursor (id, ledger, hash, updated_at) VALUES (1, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET ledger = excluded.ledger, \
                     hash = excluded.hash, updated_at = excluded.updated_at, \
                     safe_ledger = MIN(ingest_cursor.safe_ledger, excluded.ledger)",
                )
                .bind(fork)
                .bind(h)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM ingest_cursor WHERE ledger > ?")
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
                    sqlite_outbox::rollback_outbox(&mut tx, p, fork, epoch + 1, now_ms()).await?;
                sqlx::query("DELETE FROM events WHERE position BETWEEN ? AND ?")
                    .bind(p)
                    .bind(last_pos)
                    .execute(&mut *tx)
                    .await?;
            }
            streams.extend(rollback_projection(&mut tx, fork).await?);
            sqlx::query("DELETE FROM ledgers WHERE sequence > ?")
                .bind(fork)
                .execute(&mut *tx)
                .await?;
            epoch += 1;
            sqlx::query("UPDATE store_meta SET value = ? WHERE key = 'epoch'")
                .bind(epoch.to_string())
                .execute(&mut *tx)
                .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO reorgs (fork_ledger, old_tip, old_hash, new_hash, depth, \
                 events_removed, first_position, last_position, streams_affected, reason, epoch, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND position > ? \
             ORDER BY position LIMIT ?"
        ))
        .bind(stream_id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(event_row)
        .collect()
    }

    async fn event_by_id(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?"
        ))
        .bind(event_id)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(event_row)
        .transpose()
    }

    async fn ledger(&self, sequence: u32) -> Result<Option<LedgerRecord>, StoreError> {
        sqlx::query("SELECT sequence, hash, prev_hash, close_time FROM ledgers WHERE sequence = ?")
            .bind(i64::from(sequence))
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(ledger_row)
            .transpose()
    }

    async fn ledgers(&self, from: u32, to: u32) -> Result<Vec<LedgerRecord>, StoreError> {
        sqlx::query(
            "SELECT sequence, hash, prev_hash, close_time FROM ledgers \
             WHERE sequence BETWEEN ? AND ? ORDER BY sequence",
        )
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.reader)
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
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(ledger_row)
        .transpose()
    }

    async fn cursor(&self) -> Result<Option<Cursor>, StoreError> {
        let r = sqlx::query("SELECT ledger, hash FROM ingest_cursor WHERE id = 1")
            .fetch_optional(&self.reader)
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
                .fetch_optional(&self.reader)
                .await?;
        v.flatten().map(|v| u32_col(v, "safe_ledger")).transpose()
    }

    fn webhooks(&self) -> std::sync::Arc<dyn WebhookStore> {
        std::sync::Arc::new(SqliteWebhooks {
            writer: self.writer.clone(),
            reader: self.reader.clone(),
        })
    }

    async fn last_position(&self) -> Result<Position, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn event_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn epoch(&self) -> Result<u64, StoreError> {
        let v: String = sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'epoch'")
            .fetch_one(&self.reader)
            .await?;
        v.parse()
            .map_err(|_| StoreError::Corrupt(format!("epoch `{v}`")))
    }

    async fn reorgs(&self, limit: u32) -> Result<Vec<ReorgRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {REORG_COLUMNS} FROM reorgs ORDER BY id DESC LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(reorg_row)
        .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.reader)
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
            "INSERT INTO store_meta (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn first_ledger(&self) -> Result<Option<u32>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MIN(sequence) FROM ledgers")
            .fetch_one(&self.reader)
            .await?;
        v.map(|v| u32_col(v, "ledgers.sequence")).transpose()
    }

    async fn stream(&self, id: u64) -> Result<Option<StreamState>, StoreError> {
        let st: Option<String> =
            sqlx::query_scalar("SELECT state FROM streams WHERE stream_key = ?")
                .bind(stream_key(id))
                .fetch_optional(&self.reader)
                .await?;
        st.as_deref().map(decode_state).transpose()
    }

    async fn stream_at(&self, id: u64, ledger: u32) -> Result<Option<StreamState>, StoreError> {
        let st: Option<String> = sqlx::query_scalar(
            "SELECT state FROM stream_versions WHERE stream_key = ? AND ledger <= ? \
             ORDER BY ledger DESC LIMIT 1",
        )
        .bind(stream_key(id))
        .bind(i64::from(ledger))
        .fetch_optional(&self.reader)
        .await?;
        st.as_deref().map(decode_state).transpose()
    }

    async fn list_streams(&self, q: &StreamQuery) -> Result<Vec<StreamState>, StoreError> {
        check_status(q)?;
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT state FROM streams WHERE 1 = 1");
        if let Some(s) = &q.status {
            // With a party filter, `+status` keeps the planner (which has no statistics) on the
            // far more selective sender/recipient index instead of the status one.
            if q.sender.is_some() || q.recipient.is_some() {
                qb.push(" AND +status = ").push_bind(s.clone());
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
        let rows: Vec<String> = qb.build_query_scalar().fetch_all(&self.reader).await?;
        rows.iter().map(|s| decode_state(s)).collect()
    }

    async fn stream_status_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM streams GROUP BY status")
            .fetch_all(&self.reader)
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
             WHERE stream_key > ? OR (stream_key = ? AND ledger > ?) \
             ORDER BY stream_key, ledger LIMIT ?"
        ))
        .bind(&k)
        .bind(&k)
        .bind(l)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(version_row)
        .collect()
    }

    async fn flags(&self) -> Result<ContractFlags, StoreError> {
        let st: Option<String> =
            sqlx::query_scalar("SELECT state FROM contract_flags ORDER BY ledger DESC LIMIT 1")
                .fetch_optional(&self.reader)
                .await?;
        Ok(st
            .as_deref()
            .map(decode_flags)
            .transpose()?
            .unwrap_or_default())
    }

    async fn flag_versions(&self) -> Result<Vec<FlagsVersion>, StoreError> {
        let rows = sqlx::query("SELECT ledger, state FROM contract_flags ORDER BY ledger")
            .fetch_all(&self.reader)
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE ledger BETWEEN ? AND ? \
             ORDER BY ledger, position"
        ))
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(event_row)
        .collect()
    }

    async fn fold_inputs(&self, from: u32, to: u32) -> Result<Vec<FoldInput>, StoreError> {
        // One row per ledger, its events joined into one text: a row costs far more than its
        // bytes on this path (value copies, a channel hop each), and a rebuild reads millions.
        let rows = sqlx::query(
            "SELECT ledger, group_concat(line, char(10) ORDER BY position) FROM ( \
             SELECT ledger, position, position || '|' || tx_order || '|' || event_id || '|' || \
             tx_hash || '|' || COALESCE(function, '') || '|' || topic_xdr || '|' || data_xdr \
             AS line FROM events WHERE ledger BETWEEN ? AND ?) GROUP BY ledger ORDER BY ledger",
        )
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let ledger: i64 = r.try_get(0)?;
            let lines: &str = r.try_get(1)?;
            for line in lines.split('\n') {
                out.push(parse_fold_line(ledger, line)?);
            }
        }
        Ok(out)
    }

    async fn stream_entries(
        &self,
        from: u32,
        to: u32,
    ) -> Result<Vec<StreamEntryRecord>, StoreError> {
        // One row per ledger, as in `fold_inputs`.
        let rows = sqlx::query(
            "SELECT ledger, group_concat(line, char(10) ORDER BY tx_order, seq) FROM ( \
             SELECT ledger, tx_order, seq, tx_order || '|' || seq || '|' || stream_id || '|' || \
             tx_hash || '|' || COALESCE(value_xdr, '') AS line FROM stream_entries \
             WHERE ledger BETWEEN ? AND ?) GROUP BY ledger ORDER BY ledger",
        )
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let ledger: i64 = r.try_get(0)?;
            let lines: &str = r.try_get(1)?;
            for line in lines.split('\n') {
                out.push(parse_entry_line(ledger, line)?);
            }
        }
        Ok(out)
    }

    async fn replace_projection(
        &self,
        versions: &[StreamVersion],
        flags: &[FlagsVersion],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for t in ["streams", "stream_versions", "contract_flags"] {
            sqlx::query(&format!("DELETE FROM {t}"))
                .execute(&mut *tx)
                .await?;
        }
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

fn version_row(r: &SqliteRow) -> Result<StreamVersion, StoreError> {
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

/// Writes a batch's projection rows: entries, versions, the latest version of each stream as its
/// current row, flags.
async fn write_projection(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    d: &ProjectionDelta,
) -> Result<(), StoreError> {
    for chunk in d.entries.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO stream_entries (ledger, tx_order, seq, stream_id, tx_hash, value_xdr) ",
        );
        qb.push_values(chunk, |mut b, e| {
            b.push_bind(i64::from(e.ledger))
                .push_bind(i64::from(e.tx_order))
                .push_bind(i64::from(e.seq))
                .push_bind(e.stream_id.to_string())
                .push_bind(&e.tx_hash)
                .push_bind(&e.value_xdr);
        });
        qb.push(" ON CONFLICT DO NOTHING");
        qb.build().execute(&mut **tx).await?;
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
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT INTO {table} ({VERSION_COLUMNS}) "));
            qb.push_values(chunk, |mut b, v| {
                b.push_bind(stream_key(v.stream_id))
                    .push_bind(i64::from(v.ledger))
                    .push_bind(&v.sender)
                    .push_bind(&v.recipient)
                    .push_bind(&v.status)
                    .push_bind(v.verified)
                    .push_bind(&v.state);
            });
            qb.push(format!(" ON CONFLICT {conflict} {VERSION_UPSERT}"));
            qb.build().execute(&mut **tx).await?;
        }
    }
    for chunk in d.flags.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO contract_flags (ledger, state) ");
        qb.push_values(chunk, |mut b, f| {
            b.push_bind(i64::from(f.ledger)).push_bind(&f.state);
        });
        qb.push(" ON CONFLICT (ledger) DO UPDATE SET state = excluded.state");
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Removes projection rows above `fork` and restores each affected stream's current row from
/// its latest remaining version (or removes it when it has none). Returns the affected streams.
async fn rollback_projection(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    fork: i64,
) -> Result<BTreeSet<u64>, StoreError> {
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT stream_key FROM stream_versions WHERE ledger > ?")
            .bind(fork)
            .fetch_all(&mut **tx)
            .await?;
    sqlx::query("DELETE FROM stream_versions WHERE ledger > ?")
        .bind(fork)
        .execute(&mut **tx)
        .await?;
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let mut del: QueryBuilder<Sqlite> =
            QueryBuilder::new("DELETE FROM streams WHERE stream_key IN (");
        let mut sep = del.separated(", ");
        for k in chunk {
            sep.push_bind(k.as_str());
        }
        del.push(")");
        del.build().execute(&mut **tx).await?;
        let mut ins: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "INSERT INTO streams ({VERSION_COLUMNS}) SELECT {VERSION_COLUMNS} FROM stream_versions v \
             WHERE v.ledger = (SELECT MAX(w.ledger) FROM stream_versions w \
             WHERE w.stream_key = v.stream_key) AND v.stream_key IN ("
        ));
        let mut sep = ins.separated(", ");
        for k in chunk {
            sep.push_bind(k.as_str());
        }
        ins.push(")");
        ins.build().execute(&mut **tx).await?;
    }
    for t in ["stream_entries", "contract_flags"] {
        sqlx::query(&format!("DELETE FROM {t} WHERE ledger > ?"))
            .bind(fork)
            .execute(&mut **tx)
            .await?;
    }
    keys.iter().map(|k| parse_stream_key(k)).collect()
}
