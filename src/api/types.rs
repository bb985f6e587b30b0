//! Response shapes of the REST API, with their OpenAPI schemas.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::amount::format_amount;
use crate::projection::view::StreamObject;
use crate::store::{LedgerRecord, ReorgRecord, StoredEvent};

/// `meta` of the success envelope.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// ISO-8601 with milliseconds, UTC.
    pub timestamp: String,
    pub request_id: String,
}

/// The success envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T: ToSchema> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
    pub meta: Meta,
}

/// The frontend's flat body: `{"data": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T: ToSchema> {
    pub data: T,
}

/// `error` of the error envelope.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What clients key on: `VALIDATION_ERROR`, `NOT_FOUND`, `RATE_LIMIT_EXCEEDED`, …
    pub code: String,
    pub message: String,
    /// For `VALIDATION_ERROR`: `{"parameter", "reason"}`.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    pub request_id: String,
}

/// The error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorBody,
}

/// A page of streams.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamPage {
    pub streams: Vec<StreamObject>,
    pub has_more: bool,
    /// Opaque; pass as `cursor` for the next page. `null` at the end.
    pub next_cursor: Option<String>,
}

/// One stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamData {
    pub stream: StreamObject,
}

/// Names of the event fields that are token amounts (rendered in `amounts`).
const AMOUNT_FIELDS: [&str; 18] = [
    "amount",
    "attempted_rate",
    "checkpointed_amount",
    "child_rate",
    "deposit_amount",
    "keeper_fee",
    "max_rate_per_second",
    "new_deposit_amount",
    "new_parent_rate",
    "new_rate_per_second",
    "old_rate_per_second",
    "rate_per_second",
    "recipient_amount",
    "refund_amount",
    "remaining_balance",
    "sender_refund",
    "top_up_amount",
    "withdraw_dust_threshold",
];

/// A stored contract event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventObject {
    /// Global position: gap-free, ascending; resume after it.
    pub position: i64,
    /// Stellar event id `{TOID:019}-{index:010}` (as RPC `getEvents` gives it).
    pub event_id: String,
    pub ledger: u32,
    pub tx_hash: String,
    /// Application order of the transaction in its ledger (1-based).
    pub tx_order: u32,
    pub contract_id: String,
    /// The contract's topic symbol (`created`, `withdrew`, …) or `unrecognized`.
    #[serde(rename = "type")]
    pub kind: String,
    pub stream_id: Option<String>,
    /// The invoked contract function, when the source gave the envelope.
    pub function: Option<String>,
    /// The event's fields as the contract names them; amounts as raw integer strings (token
    /// units).
    #[schema(value_type = Object)]
    pub fields: Value,
    /// The amount fields again, as decimal strings with the token's decimals.
    pub amounts: BTreeMap<String, String>,
}

impl EventObject {
    pub fn of(e: &StoredEvent, decimals: u32) -> Self {
        let fields = e
            .event
            .decoded
            .get("fields")
            .cloned()
            .unwrap_or_else(|| e.event.decoded.clone());
        let mut amounts = BTreeMap::new();
        if let Some(map) = fields.as_object() {
            for (k, v) in map {
                if !AMOUNT_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(raw) = v.as_str().and_then(|s| s.parse::<i128>().ok()) {
                    amounts.insert(k.clone(), format_amount(raw, decimals));
                }
            }
        }
        Self {
            position: e.position,
            event_id: e.event.event_id.clone(),
            ledger: e.event.ledger,
            tx_hash: e.event.tx_hash.clone(),
            tx_order: e.event.tx_order,
            contract_id: e.event.contract_id.clone(),
            kind: e.event.topic.clone(),
            stream_id: e.event.stream_id.map(|s| s.to_string()),
            function: e.event.function.clone(),
            fields,
            amounts,
        }
    }
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub events: Vec<EventObject>,
    #[serde(rename = "has_more")]
    pub has_more: bool,
    /// The position to pass as `after` for the next page (`null` when there is none yet).
    #[serde(rename = "next_cursor")]
    pub next_cursor: Option<String>,
    /// The store's epoch: it changes on every rollback; positions above a rollback point are
    /// reused by the new branch.
    pub epoch: u64,
    /// The last stored position.
    pub last_position: i64,
}

/// A stored ledger header.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerObject {
    pub sequence: u32,
    pub hash: String,
    pub prev_hash: String,
    /// Unix seconds.
    pub close_time: i64,
    /// ISO-8601.
    pub closed_at: String,
    /// The Fluxora events of this ledger.
    pub events: Vec<EventObject>,
}

impl LedgerObject {
    pub fn of(l: &LedgerRecord, events: Vec<EventObject>) -> Self {
        Self {
            sequence: l.sequence,
            hash: l.hash.clone(),
            prev_hash: l.prev_hash.clone(),
            close_time: l.close_time,
            closed_at: crate::projection::view::iso8601(u64::try_from(l.close_time).unwrap_or(0)),
            events,
        }
    }
}

/// A rollback recorded in the reorg log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReorgObject {
    pub id: i64,
    /// Everything above this ledger was removed.
    pub fork_ledger: u32,
    pub old_tip: u32,
    pub old_hash: String,
    pub new_hash: Option<String>,
    pub depth: u32,
    pub events_removed: u64,
    pub first_position: Option<i64>,
    pub last_position: Option<i64>,
    pub streams_affected: Vec<String>,
    pub reason: String,
    /// The epoch after the rollback.
    pub epoch: u64,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<ReorgRecord> for ReorgObject {
    fn from(r: ReorgRecord) -> Self {
        Self {
            id: r.id,
            fork_ledger: r.fork_ledger,
            old_tip: r.old_tip,
            old_hash: r.old_hash,
            new_hash: r.new_hash,
            depth: r.depth,
            events_removed: r.events_removed,
            first_position: r.first_position,
            last_position: r.last_position,
            streams_affected: r.streams_affected.iter().map(u64::to_string).collect(),
            reason: r.reason,
            epoch: r.epoch,
            created_at: r.created_at,
        }
    }
}

/// The reorg log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReorgPage {
    pub reorgs: Vec<ReorgObject>,
}
