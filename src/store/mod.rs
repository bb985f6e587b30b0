//! The append-only event store: ledgers, events, the ingest cursor and the reorg log.
//!
//! Two implementations of one [`Store`] trait, chosen by the database URL's scheme:
//! [`SqliteStore`] (the embedded default) and [`PgStore`]. Both pass the same conformance suite
//! (`tests/store_conformance.rs`).
//!
//! Rules every implementation keeps:
//! * [`Store::append`] commits a whole batch (ledgers, events, cursor) in one transaction or nothing.
//! * Events are never updated; appending an event id that is already stored is a no-op.
//! * Positions are assigned by the writer as `max(position) + 1` inside the batch's transaction,
//!   under a writer lock, so they are gap-free and in append order.
//! * The only deletion is [`Store::rollback_to`], which removes every ledger and event above a fork
//!   ledger, records the reorg and increments the epoch, atomically.

pub mod outbox;
mod postgres;
mod postgres_outbox;
mod sqlite;
mod sqlite_outbox;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use outbox::WebhookStore;
pub use postgres::{PgStore, NOTIFY_COMMITS, NOTIFY_ROLLBACKS};
pub use postgres_outbox::{PgWebhooks, NOTIFY_WEBHOOKS};
pub use sqlite::SqliteStore;
pub use sqlite_outbox::SqliteWebhooks;

use crate::config::DatabaseUrl;
use crate::projection::{ContractFlags, StreamState};

/// A global event position: 1, 2, 3, … with no gaps.
pub type Position = i64;

/// A ledger in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub sequence: u32,
    /// Lowercase hex of sha256(XDR(LedgerHeader)).
    pub hash: String,
    /// Lowercase hex hash of ledger `sequence - 1`.
    pub prev_hash: String,
    /// Close time, unix seconds.
    pub close_time: i64,
}

/// A contract event to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Stellar event id `{TOID:019}-{index:010}`.
    pub event_id: String,
    pub ledger: u32,
    pub tx_hash: String,
    /// Transaction application order within the ledger (1-based).
    pub tx_order: u32,
    pub op_index: u32,
    pub event_index: u32,
    pub contract_id: String,
    /// `topic[0]` symbol, e.g. `created`.
    pub topic: String,
    pub stream_id: Option<u64>,
    /// The decoded event.
    pub decoded: serde_json::Value,
    /// Base64 XDR of each topic ScVal.
    pub topic_xdr: Vec<String>,
    /// Base64 XDR of the data ScVal.
    pub data_xdr: String,
    /// The invoked contract function, when known.
    pub function: Option<String>,
}

/// An event as stored, with its global position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub position: Position,
    #[serde(flatten)]
    pub event: NewEvent,
}

/// Where ingestion resumes: the last committed ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub ledger: u32,
    pub hash: String,
}

/// One atomic unit of ingestion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendBatch {
    /// Ledgers in ascending order, each chaining onto the one before it.
    pub ledgers: Vec<LedgerRecord>,
    /// Events in order of position to assign; each must belong to a ledger of this batch or one
    /// already stored.
    pub events: Vec<NewEvent>,
    /// The cursor to store with the batch.
    pub cursor: Option<Cursor>,
    /// Projection rows folded from this batch, committed with it.
    pub projection: ProjectionDelta,
    /// The safe ledger (source tip − finality depth) to store with the cursor: webhook
    /// deliveries go out only at or below it (any dispatcher process reads it from the store).
    pub safe_ledger: Option<u32>,
}

/// The state of one stream after a ledger that changed it (a `stream_versions` row; the latest
/// one per stream is also its `streams` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamVersion {
    pub stream_id: u64,
    pub ledger: u32,
    pub sender: String,
    pub recipient: String,
    /// `active`, `paused`, `completed`, `cancelled` or `closed`.
    pub status: String,
    pub verified: bool,
    /// JSON of the [`StreamState`] (amounts as strings).
    pub state: String,
}

impl StreamVersion {
    /// The row of `state` as it is after `ledger`.
    pub fn of(state: &StreamState, ledger: u32) -> Result<Self, StoreError> {
        Ok(StreamVersion {
            stream_id: state.stream_id,
            ledger,
            sender: state.sender.clone(),
            recipient: state.recipient.clone(),
            status: status_label(state).to_string(),
            verified: state.verification.verified,
            state: state_json(state)?,
        })
    }

    /// The folded state this row holds.
    pub fn decode(&self) -> Result<StreamState, StoreError> {
        decode_state(&self.state)
    }
}

/// The JSON of a folded state, as the store keeps it.
fn state_json(state: &StreamState) -> Result<String, StoreError> {
    Ok(crate::projection::json::state_json(state))
}

/// The status clients see: `closed` once the storage was reclaimed, else the contract's status.
pub fn status_label(s: &StreamState) -> &'static str {
    use crate::domain::accrual::StreamStatus as S;
    if s.closed {
        return "closed";
    }
    match s.status {
        S::Active => "active",
        S::Paused => "paused",
        S::Completed => "completed",
        S::Cancelled => "cancelled",
    }
}

/// The statuses [`StreamQuery::status`] accepts.
pub const STREAM_STATUSES: [&str; 5] = ["active", "paused", "completed", "cancelled", "closed"];

pub(crate) fn decode_state(json: &str) -> Result<StreamState, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("stream state: {e}")))
}

pub(crate) fn decode_flags(json: &str) -> Result<ContractFlags, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("contract flags: {e}")))
}

/// The key that sorts stream ids numerically as text.
pub(crate) fn stream_key(id: u64) -> String {
    format!("{id:020}")
}

pub(crate) fn parse_stream_key(k: &str) -> Result<u64, StoreError> {
    k.parse()
        .map_err(|_| StoreError::Corrupt(format!("stream key `{k}`")))
}

/// The contract flags after a ledger that changed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagsVersion {
    pub ledger: u32,
    /// JSON of the [`ContractFlags`].
    pub state: String,
}

/// A post-transaction `Stream` storage entry from a transaction's meta (or its removal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamEntryRecord {
    pub ledger: u32,
    pub tx_order: u32,
    /// Order within the transaction.
    pub seq: u32,
    pub stream_id: u64,
    pub tx_hash: String,
    /// Base64 XDR of the entry's `ScVal`; `None` when the entry was removed.
    pub value_xdr: Option<String>,
}

/// What the fold of a batch produced, written in the batch's transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectionDelta {
    /// Stream states after each ledger that changed them, in ledger order.
    pub versions: Vec<StreamVersion>,
    /// Contract flags after each ledger that changed them, in ledger order.
    pub flags: Vec<FlagsVersion>,
    /// The storage entries of the batch's transactions.
    pub entries: Vec<StreamEntryRecord>,
}

impl ProjectionDelta {
    /// Appends another delta (later ledgers).
    pub fn extend(&mut self, other: ProjectionDelta) {
        self.versions.extend(other.versions);
        self.flags.extend(other.flags);
        self.entries.extend(other.entries);
    }
}

/// A stored event as the fold reads it again: its place and raw XDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldInput {
    pub position: Position,
    pub event_id: String,
    pub ledger: u32,
    pub tx_order: u32,
    pub tx_hash: String,
    pub function: Option<String>,
    /// Base64 XDR of each topic.
    pub topic_xdr: Vec<String>,
    pub data_xdr: String,
}

pub(crate) const FOLD_COLUMNS: &str =
    "position, event_id, ledger, tx_order, tx_hash, function, topic_xdr, data_xdr";

/// Parses `position|tx_order|event_id|tx_hash|function|topic_xdr|data_xdr` (none of the fields
/// can hold `|`: digits, hex, a symbol, base64 and a JSON array of base64).
pub(crate) fn parse_fold_line(ledger: i64, line: &str) -> Result<FoldInput, StoreError> {
    let bad = || StoreError::Corrupt(format!("ledger {ledger}: unreadable event line `{line}`"));
    let mut f = line.splitn(7, '|');
    let mut next = || f.next().ok_or_else(bad);
    let position: i64 = next()?.parse().map_err(|_| bad())?;
    let tx_order: i64 = next()?.parse().map_err(|_| bad())?;
    let event_id = next()?.to_string();
    let tx_hash = next()?.to_string();
    let function = Some(next()?).filter(|s| !s.is_empty()).map(str::to_string);
    let topic_xdr = next()?;
    let data_xdr = next()?.to_string();
    fold_input(
        position, event_id, ledger, tx_order, tx_hash, function, topic_xdr, data_xdr,
    )
}

/// Parses `tx_order|seq|stream_id|tx_hash|value_xdr` (an empty value: removed).
pub(crate) fn parse_entry_line(ledger: i64, line: &str) -> Result<StreamEntryRecord, StoreError> {
    let bad = || StoreError::Corrupt(format!("ledger {ledger}: unreadable entry line `{line}`"));
    let mut f = line.splitn(5, '|');
    let mut next = || f.next().ok_or_else(bad);
    Ok(StreamEntryRecord {
        ledger: u32::try_from(ledger).map_err(|_| bad())?,
        tx_order: next()?.parse().map_err(|_| bad())?,
        seq: next()?.parse().map_err(|_| bad())?,
        stream_id: next()?.parse().map_err(|_| bad())?,
        tx_hash: next()?.to_string(),
        value_xdr: Some(next()?).filter(|v| !v.is_empty()).map(str::to_string),
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn fold_input(
    position: i64,
    event_id: String,
    ledger: i64,
    tx_order: i64,
    tx_hash: String,
    function: Option<String>,
    topic_xdr: &str,
    data_xdr: String,
) -> Result<FoldInput, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("event {event_id}: {what}"));
    Ok(FoldInput {
        position,
        ledger: u32::try_from(ledger).map_err(|_| bad("ledger"))?,
        tx_order: u32::try_from(tx_order).map_err(|_| bad("tx_order"))?,
        topic_xdr: serde_json::from_str(topic_xdr).map_err(|_| bad("topic_xdr"))?,
        event_id,
        tx_hash,
        function,
        data_xdr,
    })
}

/// A page of streams, ordered by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// One of [`STREAM_STATUSES`].
    pub status: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    /// Only ids greater than this (keyset pagination).
    pub after: Option<u64>,
    pub limit: u32,
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppendOutcome {
    /// Events newly stored.
    pub appended: usize,
    /// Events whose id was already stored (or repeated in the batch): skipped.
    pub duplicates: usize,
    /// Ledgers newly stored.
    pub ledgers_added: usize,
    /// Positions given to the new events, when any.
    pub first_position: Option<Position>,
    pub last_position: Option<Position>,
    /// Webhook delivery rows written with the batch (one per event and matching endpoint).
    pub deliveries: usize,
}

/// Why a rollback happened, and what the source reports now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackRequest {
    /// The last ledger to keep (common ancestor).
    pub fork_ledger: u32,
    /// The hash the source now reports for `fork_ledger + 1`, when known.
    pub new_hash: Option<String>,
    /// Operator-readable reason.
    pub reason: String,
}

/// What a rollback removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    pub fork_ledger: u32,
    /// Removed ledgers, ascending.
    pub removed_ledgers: Vec<LedgerRecord>,
    /// Removed event ids, in position order.
    pub removed_event_ids: Vec<String>,
    pub first_removed_position: Option<Position>,
    pub last_removed_position: Option<Position>,
    /// Streams that had events removed, ascending.
    pub streams_affected: Vec<u64>,
    /// Epoch after the rollback (unchanged when nothing was removed).
    pub epoch: u64,
    /// The reorg-log row, when anything was removed.
    pub reorg_id: Option<i64>,
    /// `stream.reverted` webhook deliveries queued for removed events that had been delivered.
    pub webhooks_reverted: usize,
}

/// A reorg-log row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReorgRecord {
    pub id: i64,
    pub fork_ledger: u32,
    pub old_tip: u32,
    pub old_hash: String,
    pub new_hash: Option<String>,
    pub depth: u32,
    pub events_removed: u64,
    pub first_position: Option<Position>,
    pub last_position: Option<Position>,
    pub streams_affected: Vec<u64>,
    pub reason: String,
    pub epoch: u64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Store errors. Each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error(
        "ledger {sequence} is already stored with hash {stored}, the batch has {incoming}: roll back first"
    )]
    LedgerConflict {
        sequence: u32,
        stored: String,
        incoming: String,
    },
    #[error(
        "ledger {sequence} does not chain: its previous hash is {prev_hash} but ledger {} is stored with hash {stored}",
        sequence.saturating_sub(1)
    )]
    ChainBreak {
        sequence: u32,
        prev_hash: String,
        stored: String,
    },
    #[error(
        "event {event_id} belongs to ledger {ledger}, which is neither in the batch nor stored"
    )]
    UnknownLedger { event_id: String, ledger: u32 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open database {url}: {reason}")]
    Open { url: String, reason: String },
}

/// The event store. Object-safe so that the application can hold `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Appends a batch atomically. See [`AppendBatch`].
    async fn append(&self, batch: &AppendBatch) -> Result<AppendOutcome, StoreError>;
    /// Removes every ledger and event above `req.fork_ledger`, records the reorg and bumps the
    /// epoch, atomically; sets the cursor to the fork ledger.
    async fn rollback_to(&self, req: &RollbackRequest) -> Result<RollbackReport, StoreError>;
    /// Events with `after < position`, ascending, at most `limit`.
    async fn events_after(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Events of one stream with `after < position`, ascending, at most `limit`.
    async fn stream_events(
        &self,
        stream_id: u64,
        after: Position,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The event with this Stellar event id.
    async fn event_by_id(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError>;
    /// One ledger.
    async fn ledger(&self, sequence: u32) -> Result<Option<LedgerRecord>, StoreError>;
    /// Ledgers with `from <= sequence <= to`, ascending.
    async fn ledgers(&self, from: u32, to: u32) -> Result<Vec<LedgerRecord>, StoreError>;
    /// The lowest stored ledger.
    async fn first_ledger(&self) -> Result<Option<u32>, StoreError>;
    /// The highest stored ledger.
    async fn tip(&self) -> Result<Option<LedgerRecord>, StoreError>;
    /// The ingest cursor.
    async fn cursor(&self) -> Result<Option<Cursor>, StoreError>;
    /// The safe ledger stored with the cursor (see [`AppendBatch::safe_ledger`]).
    async fn safe_ledger(&self) -> Result<Option<u32>, StoreError>;
    /// The webhook outbox queries of this store.
    fn webhooks(&self) -> std::sync::Arc<dyn WebhookStore>;
    /// The highest position (0 when empty).
    async fn last_position(&self) -> Result<Position, StoreError>;
    /// How many events are stored.
    async fn event_count(&self) -> Result<u64, StoreError>;
    /// The current epoch: 0, plus one per rollback that removed anything.
    async fn epoch(&self) -> Result<u64, StoreError>;
    /// Reorg-log rows, newest first.
    async fn reorgs(&self, limit: u32) -> Result<Vec<ReorgRecord>, StoreError>;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A store-wide setting (e.g. `network_passphrase`, written by the ingestor on first run).
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a store-wide setting. `epoch` is reserved for rollbacks.
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// The current state of a stream.
    async fn stream(&self, id: u64) -> Result<Option<StreamState>, StoreError>;
    /// The state of a stream as it was after `ledger` (its latest version at or below it).
    async fn stream_at(&self, id: u64, ledger: u32) -> Result<Option<StreamState>, StoreError>;
    /// Streams matching the query, ascending by id.
    async fn list_streams(&self, q: &StreamQuery) -> Result<Vec<StreamState>, StoreError>;
    /// How many streams have each status (see [`status_label`]).
    async fn stream_status_counts(&self) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Stream versions after `(stream id, ledger)` in (id, ledger) order, at most `limit`.
    async fn stream_versions(
        &self,
        after: Option<(u64, u32)>,
        limit: u32,
    ) -> Result<Vec<StreamVersion>, StoreError>;
    /// The current contract flags (default when nothing set them).
    async fn flags(&self) -> Result<ContractFlags, StoreError>;
    /// Every contract-flags version, in ledger order.
    async fn flag_versions(&self) -> Result<Vec<FlagsVersion>, StoreError>;
    /// Events of ledgers `from..=to`, in position order.
    async fn events_in_ledgers(&self, from: u32, to: u32) -> Result<Vec<StoredEvent>, StoreError>;
    /// What the fold needs of the events of ledgers `from..=to` (raw XDR, no decoded JSON), in
    /// position order: the input of `rebuild`.
    async fn fold_inputs(&self, from: u32, to: u32) -> Result<Vec<FoldInput>, StoreError>;
    /// Storage entries of ledgers `from..=to`, in (ledger, tx order, seq) order.
    async fn stream_entries(
        &self,
        from: u32,
        to: u32,
    ) -> Result<Vec<StreamEntryRecord>, StoreError>;
    /// Replaces every projection row (streams, versions, flags) in one transaction: `rebuild`.
    async fn replace_projection(
        &self,
        versions: &[StreamVersion],
        flags: &[FlagsVersion],
    ) -> Result<(), StoreError>;
}

/// Opens the store the URL names (creating an SQLite file if missing) and applies migrations.
pub async fn open(url: &DatabaseUrl) -> Result<Box<dyn Store>, StoreError> {
    let store: Box<dyn Store> = match url {
        DatabaseUrl::Sqlite(u) => Box::new(SqliteStore::connect(u).await?),
        DatabaseUrl::Postgres(u) => Box::new(PgStore::connect(u).await?),
    };
    store.migrate().await?;
    Ok(store)
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn is_hex_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses a Stellar event id `{TOID:019}-{index:010}` into (ledger, tx order, op index, index).
pub fn parse_event_id(id: &str) -> Result<(u32, u32, u32, u32), String> {
    let (toid, index) = id
        .split_once('-')
        .ok_or_else(|| format!("event id `{id}` is not `{{TOID:019}}-{{index:010}}`"))?;
    if toid.len() != 19
        || index.len() != 10
        || !toid.bytes().all(|b| b.is_ascii_digit())
        || !index.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "event id `{id}` is not `{{TOID:019}}-{{index:010}}`"
        ));
    }
    let toid: u64 = toid
        .parse()
        .map_err(|_| format!("event id `{id}`: TOID out of range"))?;
    let index: u32 = index
        .parse()
        .map_err(|_| format!("event id `{id}`: index out of range"))?;
    let ledger = u32::try_from(toid >> 32).map_err(|_| format!("event id `{id}`: bad TOID"))?;
    let tx = ((toid >> 12) & 0xF_FFFF) as u32;
    let op = (toid & 0xFFF) as u32;
    Ok((ledger, tx, op, index))
}

/// Formats a Stellar event id from its parts (the RPC `getEvents` convention).
pub fn format_event_id(ledger: u32, tx_order: u32, op_index: u32, index: u32) -> String {
    let toid = (u64::from(ledger) << 32)
        | (u64::from(tx_order & 0xF_FFFF) << 12)
        | u64::from(op_index & 0xFFF);
    format!("{toid:019}-{index:010}")
}

/// Checks a batch before it touches the database. Returns the events to insert (duplicates
/// inside the batch removed, first occurrence kept) and how many were dropped.
pub(crate) fn validate_batch(batch: &AppendBatch) -> Result<(Vec<&NewEvent>, usize), StoreError> {
    let bad = |m: String| Err(StoreError::InvalidBatch(m));
    for (i, l) in batch.ledgers.iter().enumerate() {
        if !is_hex_hash(&l.hash) {
            return bad(format!(
                "ledger {}: hash `{}` is not 64 lowercase hex digits",
                l.sequence, l.hash
            ));
        }
        if !is_hex_hash(&l.prev_hash) {
            return bad(format!(
                "ledger {}: previous hash `{}` is not 64 lowercase hex digits",
                l.sequence, l.prev_hash
            ));
        }
        if l.close_time < 0 {
            return bad(format!("ledger {}: negative close time", l.sequence));
        }
        if i > 0 {
            let p = &batch.ledgers[i - 1];
            if p.sequence.checked_add(1) != Some(l.sequence) {
                return bad(format!(
                    "ledgers must be consecutive: {} follows {}",
                    l.sequence, p.sequence
                ));
            }
            if l.prev_hash != p.hash {
                return Err(StoreError::ChainBreak {
                    sequence: l.sequence,
                    prev_hash: l.prev_hash.clone(),
                    stored: p.hash.clone(),
                });
            }
        }
    }
    if let Some(c) = &batch.cursor {
        if !is_hex_hash(&c.hash) {
            return bad(format!(
                "cursor hash `{}` is not 64 lowercase hex digits",
                c.hash
            ));
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(batch.events.len());
    let mut dups = 0;
    let mut prev_ledger = 0u32;
    for e in &batch.events {
        let (ledger, _, _, _) = parse_event_id(&e.event_id).map_err(StoreError::InvalidBatch)?;
        if ledger != e.ledger {
            return bad(format!(
                "event {} names ledger {} in its id but {} in its ledger field",
                e.event_id, ledger, e.ledger
            ));
        }
        if e.ledger < prev_ledger {
            return bad(format!(
                "events must be in ledger order: {} (ledger {}) after ledger {}",
                e.event_id, e.ledger, prev_ledger
            ));
        }
        prev_ledger = e.ledger;
        if e.topic.is_empty() {
            return bad(format!("event {} has an empty topic", e.event_id));
        }
        if seen.insert(e.event_id.as_str()) {
            out.push(e);
        } else {
            dups += 1;
        }
    }
    Ok((out, dups))
}

/// Columns of the events table in insert order.
pub(crate) const EVENT_COLUMNS: &str = "position, event_id, ledger, tx_hash, tx_order, op_index, \
     event_index, contract_id, topic, stream_id, decoded, topic_xdr, data_xdr, function";

/// An event row as text and integers, shared by both backends' row mapping.
pub(crate) struct EventRow {
    pub position: i64,
    pub event_id: String,
    pub ledger: i64,
    pub tx_hash: String,
    pub tx_order: i64,
    pub op_index: i64,
    pub event_index: i64,
    pub contract_id: String,
    pub topic: String,
    pub stream_id: Option<String>,
    pub decoded: String,
    pub topic_xdr: String,
    pub data_xdr: String,
    pub function: Option<String>,
}

fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is out of u32 range")))
}

impl EventRow {
    pub(crate) fn into_event(self) -> Result<StoredEvent, StoreError> {
        let ctx = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("event {}: {what}: {e}", self.event_id))
        };
        let stream_id = match &self.stream_id {
            Some(s) => Some(s.parse::<u64>().map_err(|e| ctx("stream_id", &e))?),
            None => None,
        };
        let decoded = serde_json::from_str(&self.decoded).map_err(|e| ctx("decoded", &e))?;
        let topic_xdr = serde_json::from_str(&self.topic_xdr).map_err(|e| ctx("topic_xdr", &e))?;
        Ok(StoredEvent {
            position: self.position,
            event: NewEvent {
                ledger: to_u32(self.ledger, "ledger")?,
                tx_order: to_u32(self.tx_order, "tx_order")?,
                op_index: to_u32(self.op_index, "op_index")?,
                event_index: to_u32(self.event_index, "event_index")?,
                event_id: self.event_id,
                tx_hash: self.tx_hash,
                contract_id: self.contract_id,
                topic: self.topic,
                stream_id,
                decoded,
                topic_xdr,
                data_xdr: self.data_xdr,
                function: self.function,
            },
        })
    }
}

pub(crate) fn ledger_from_row(
    sequence: i64,
    hash: String,
    prev_hash: String,
    close_time: i64,
) -> Result<LedgerRecord, StoreError> {
    Ok(LedgerRecord {
        sequence: to_u32(sequence, "ledger sequence")?,
        hash,
        prev_hash,
        close_time,
    })
}

pub(crate) fn parse_streams(json: &str) -> Result<Vec<u64>, StoreError> {
    let v: Vec<String> = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("streams_affected: {e}")))?;
    v.iter()
        .map(|s| {
            s.parse::<u64>()
                .map_err(|e| StoreError::Corrupt(format!("streams_affected `{s}`: {e}")))
        })
        .collect()
}

pub(crate) fn streams_json(ids: &BTreeSet<u64>) -> String {
    let v: Vec<String> = ids.iter().map(u64::to_string).collect();
    serde_json::Value::from(v).to_string()
}

/// The ledger-and-chain checks against what is stored, shared by both backends: for each batch
/// ledger, `stored` gives the stored hash at `sequence` and at `sequence - 1` if any. Returns the
/// ledgers not yet stored.
pub(crate) fn ledgers_to_insert<'a>(
    batch: &'a AppendBatch,
    stored: &std::collections::HashMap<u32, String>,
) -> Result<Vec<&'a LedgerRecord>, StoreError> {
    let mut out = Vec::new();
    for (i, l) in batch.ledgers.iter().enumerate() {
        if let Some(h) = stored.get(&l.sequence) {
            if *h != l.hash {
                return Err(StoreError::LedgerConflict {
                    sequence: l.sequence,
                    stored: h.clone(),
                    incoming: l.hash.clone(),
                });
            }
            continue;
        }
        if i == 0 {
            if let Some(prev) = l.sequence.checked_sub(1).and_then(|p| stored.get(&p)) {
                if *prev != l.prev_hash {
                    return Err(StoreError::ChainBreak {
                        sequence: l.sequence,
                        prev_hash: l.prev_hash.clone(),
                        stored: prev.clone(),
                    });
                }
            }
        }
        out.push(l);
    }
    Ok(out)
}

/// The last version of each stream in `versions` (which are in ledger order).
pub(crate) fn latest_versions(versions: &[StreamVersion]) -> Vec<&StreamVersion> {
    let mut last: BTreeMap<u64, &StreamVersion> = BTreeMap::new();
    for v in versions {
        match last.get(&v.stream_id) {
            Some(p) if p.ledger > v.ledger => {}
            _ => {
                last.insert(v.stream_id, v);
            }
        }
    }
    last.into_values().collect()
}

pub(crate) const VERSION_COLUMNS: &str =
    "stream_key, ledger, sender, recipient, status, verified, state";

/// `ON CONFLICT` clause shared by both dialects for version-shaped rows.
pub(crate) const VERSION_UPSERT: &str = "DO UPDATE SET ledger = excluded.ledger, \
     sender = excluded.sender, recipient = excluded.recipient, status = excluded.status, \
     verified = excluded.verified, state = excluded.state";

pub(crate) fn check_status(q: &StreamQuery) -> Result<(), StoreError> {
    match &q.status {
        Some(s) if !STREAM_STATUSES.contains(&s.as_str()) => Err(StoreError::InvalidBatch(
            format!("status `{s}` is not one of {}", STREAM_STATUSES.join(", ")),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let id = format_event_id(3727845, 5, 0, 1);
        assert_eq!(id, "0016010972359577600-0000000001");
        assert_eq!(parse_event_id(&id).unwrap(), (3727845, 5, 0, 1));
        assert!(parse_event_id("16010972359577600-0000000001").is_err());
        assert!(parse_event_id("0016010972359577600_0000000001").is_err());
        assert!(parse_event_id("000000000000000000a-0000000001").is_err());
    }

    #[test]
    fn batch_checks_name_the_problem() {
        let l = |seq: u32, h: u8, p: u8| LedgerRecord {
            sequence: seq,
            hash: format!("{h:02x}").repeat(32),
            prev_hash: format!("{p:02x}").repeat(32),
            close_time: 10,
        };
        let b = AppendBatch {
            ledgers: vec![l(1, 1, 0), l(3, 3, 1)],
            ..Default::default()
        };
        assert!(validate_batch(&b)
            .unwrap_err()
            .to_string()
            .contains("consecutive"));
        let b = AppendBatch {
            ledgers: vec![l(1, 1, 0), l(2, 2, 9)],
            ..Default::default()
        };
        assert!(matches!(
            validate_batch(&b),
            Err(StoreError::ChainBreak { sequence: 2, .. })
        ));
        let mut bad = l(1, 1, 0);
        bad.hash = "XYZ".into();
        let b = AppendBatch {
            ledgers: vec![bad],
            ..Default::default()
        };
        assert!(validate_batch(&b).unwrap_err().to_string().contains("hex"));
    }
}
