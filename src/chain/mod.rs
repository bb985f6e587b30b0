//! Chain sources: the normalized **ledger bundle**, the [`LedgerSource`] trait, and the Horizon
//! and Stellar RPC implementations sharing one HTTP policy ([`http`]).
//!
//! ## Event id convention
//! `event_id = format!("{:019}-{:010}", toid, event_index)` with
//! `toid = ledger << 32 | application_order << 12 | op_index` (RPC `getEvents` layout;
//! `application_order` is 1-based as in Horizon paging tokens and RPC `applicationOrder`).
//! `event_index` is the 0-based position of the event among the **contract events of that
//! operation** (`soroban_meta.events` for meta V3, `operations[op].events` for V4), counting the
//! events of every contract (not only ours) so the id is stable whatever the filter. Transaction-level
//! fee events are not counted (RPC files them under other TOIDs: `{ledger,0,0}` before all txs,
//! `{ledger,tx,0xFFF}` after a tx). This is the same numbering stellar-rpc uses when it ingests
//! operation events (`cmd/stellar-rpc/internal/db/event.go`), so our ids equal `getEvents` ids.

pub mod fetch;
pub mod horizon;
pub mod http;
pub mod meta;
pub mod rpc;
pub mod synth;
mod walk;

use async_trait::async_trait;
use serde::Serialize;

use crate::contract::{ContractEvent, StreamEntry};

pub use fetch::{FetchAhead, FetchConfig};
pub use horizon::HorizonSource;
pub use http::{BreakerState, HttpClient, HttpPolicy, SourceHealth};
pub use meta::{ContractFilter, XdrLimits};
pub use rpc::RpcSource;

/// One closed ledger, normalized. Only successful transactions that touched the configured
/// contract are kept (all contracts when no filter is configured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerBundle {
    pub sequence: u32,
    /// Hex SHA-256 of the XDR `LedgerHeader`.
    pub hash: String,
    /// Hex hash of the previous ledger (`None` only for ledger 1 on Horizon).
    pub prev_hash: Option<String>,
    /// Unix seconds (ledger close time, `scpValue.closeTime`).
    pub close_time: u64,
    /// True when the header XDR was present and `sha256(header) == hash` was checked.
    pub header_verified: bool,
    pub txs: Vec<TxBundle>,
}

impl LedgerBundle {
    /// Events of this ledger the decoder could not type (kept raw, counted, never fatal).
    pub fn unrecognized_events(&self) -> usize {
        self.txs
            .iter()
            .flat_map(|t| &t.events)
            .filter(|e| e.decoded.is_unrecognized())
            .count()
    }

    /// Number of contract events in the bundle.
    pub fn event_count(&self) -> usize {
        self.txs.iter().map(|t| t.events.len()).sum()
    }
}

/// One successful transaction that touched the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxBundle {
    /// Hex transaction hash (outer hash for fee bumps).
    pub tx_hash: String,
    /// 1-based application order inside the ledger.
    pub application_order: u32,
    /// Invoked contract function (from the envelope's `InvokeHostFunction` op), if any.
    pub function: Option<String>,
    /// The invoked contract (strkey), if any.
    pub invoked_contract: Option<String>,
    /// Arguments of the invocation, base64 XDR `ScVal` each.
    pub args_xdr: Vec<String>,
    /// Contract events in emission order.
    pub events: Vec<RawContractEvent>,
    /// Post-transaction `Stream` entries (last change per stream id, in first-seen order).
    pub stream_changes: Vec<StreamEntryChange>,
}

/// One contract event with everything the event store needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawContractEvent {
    /// `{TOID:019}-{index:010}`, see the module docs.
    pub event_id: String,
    pub ledger: u32,
    pub tx_hash: String,
    pub application_order: u32,
    pub op_index: u32,
    pub event_index: u32,
    /// Strkey `C…` of the emitting contract.
    pub contract_id: String,
    /// topic[0] when it is a symbol.
    pub topic: Option<String>,
    /// Stream id the event is keyed by, when there is one.
    pub stream_id: Option<u64>,
    pub topics_xdr: Vec<String>,
    pub data_xdr: String,
    pub decoded: ContractEvent,
    /// Invoked function of the transaction (copied from the [`TxBundle`]).
    pub function: Option<String>,
}

/// A post-transaction `Stream` storage entry (`ContractData` keyed `Vec[Symbol("Stream"), U64(id)]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamEntryChange {
    pub stream_id: u64,
    pub change: StreamChange,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamChange {
    /// Created/updated/restored: the new value, decoded, and its raw XDR (base64 `ScVal`).
    Upsert {
        entry: Box<StreamEntry>,
        value_xdr: String,
    },
    /// The value is there but does not have the expected shape; kept raw, never fatal.
    Unrecognized { reason: String, value_xdr: String },
    /// Entry deleted (`closed`).
    Removed,
}

/// What the source knows about the chain tip and its retention window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TipInfo {
    pub latest_ledger: u32,
    /// Oldest ledger the server can serve, when it says so.
    pub oldest_ledger: Option<u32>,
    pub network_passphrase: Option<String>,
}

/// Errors of the chain layer. Each names what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("could not decode {what} as XDR at {location}: {message}")]
    Xdr {
        what: &'static str,
        location: String,
        message: String,
    },
    #[error("could not parse JSON {what} from {location}: {message}")]
    Json {
        what: &'static str,
        location: String,
        message: String,
    },
    #[error("{location}: field `{field}` is missing or has the wrong type")]
    MissingField {
        location: String,
        field: &'static str,
    },
    #[error("ledger {ledger}: header hash mismatch: server says {claimed}, sha256(header XDR) is {computed}")]
    HashMismatch {
        ledger: u32,
        claimed: String,
        computed: String,
    },
    #[error("ledger {ledger}: transaction result {tx_hash} has no matching envelope in the tx set (wrong network passphrase?)")]
    EnvelopeNotFound { ledger: u32, tx_hash: String },
    #[error("Horizon at {url} omits result_meta_xdr for ledger {ledger}, which has transactions: the server runs with SKIP_TXMETA=true (as SDF's public instances do). Point Fluxora at a Horizon with tx meta enabled, or use the Stellar RPC source (getLedgers).")]
    SkipTxMeta { url: String, ledger: u32 },
    #[error("{url}: HTTP {status} {problem_type}: {title}: {detail}")]
    Problem {
        url: String,
        status: u16,
        problem_type: String,
        title: String,
        detail: String,
    },
    #[error("Horizon at {url} does not keep ledger {requested} (410 before_history): it keeps ledgers {oldest}..={latest}; {detail}")]
    BeforeHistory {
        url: String,
        requested: u32,
        oldest: String,
        latest: String,
        detail: String,
    },
    #[error("Stellar RPC at {url}: start ledger {requested} is outside the retention window; the server has ledgers {oldest}..={latest}")]
    OutOfRetention {
        url: String,
        requested: u32,
        oldest: u32,
        latest: u32,
    },
    #[error("Stellar RPC at {url}: JSON-RPC error {code}: {message}")]
    Rpc {
        url: String,
        code: i64,
        message: String,
    },
    #[error("{url}: HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: transport error: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: circuit breaker open after repeated failures; next probe in {retry_in_ms} ms")]
    CircuitOpen { url: String, retry_in_ms: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl ChainError {
    /// Whether retrying the same request may succeed (429, 5xx, transport, open breaker).
    pub fn is_transient(&self) -> bool {
        match self {
            ChainError::Transport { .. } | ChainError::CircuitOpen { .. } => true,
            // JSON-RPC internal error: the server failed, not the request.
            ChainError::Rpc { code, .. } => *code == -32603,
            ChainError::Http { status, .. } | ChainError::Problem { status, .. } => {
                *status == 429 || *status >= 500
            }
            _ => false,
        }
    }
}

/// A source of ledger bundles (Horizon, Stellar RPC, the simulator).
///
/// Object-safe: the ingestor holds `Box<dyn LedgerSource>` / `Arc<dyn LedgerSource>`.
#[async_trait]
pub trait LedgerSource: Send + Sync {
    /// Short name for logs (`"horizon"`, `"rpc"`).
    fn name(&self) -> &'static str;

    /// Latest closed ledger and retention window.
    async fn tip(&self) -> Result<TipInfo, ChainError>;

    /// Consecutive bundles starting **exactly** at `start`, at most `limit` of them, in order.
    /// An empty vector means `start` is not closed yet. Never skips a ledger: a bundle that
    /// cannot be built is an error, not an omission.
    async fn fetch_ledgers(&self, start: u32, limit: u32) -> Result<Vec<LedgerBundle>, ChainError>;

    /// Health snapshot (circuit breaker state, consecutive failures).
    fn health(&self) -> SourceHealth;
}

/// Which upstream API a source talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Horizon,
    Rpc,
}

/// Build a boxed source for `contract` (a `C…` strkey). The RPC source needs the network
/// passphrase to match envelopes to results; Horizon ignores it.
pub fn build_source(
    kind: SourceKind,
    url: &str,
    network_passphrase: &str,
    contract: &str,
    policy: HttpPolicy,
) -> Result<Box<dyn LedgerSource>, ChainError> {
    let filter = ContractFilter::contract(contract)?;
    Ok(match kind {
        SourceKind::Horizon => Box::new(HorizonSource::new(url, filter, policy)?),
        SourceKind::Rpc => Box::new(RpcSource::new(url, network_passphrase, filter, policy)?),
    })
}

/// `TOID` as used by Horizon paging tokens and RPC event ids.
pub fn toid(ledger: u32, application_order: u32, op_index: u32) -> u64 {
    (u64::from(ledger) << 32)
        | (u64::from(application_order & 0xF_FFFF) << 12)
        | u64::from(op_index & 0xFFF)
}

/// `{TOID:019}-{index:010}`.
pub fn event_id(ledger: u32, application_order: u32, op_index: u32, event_index: u32) -> String {
    format!(
        "{:019}-{:010}",
        toid(ledger, application_order, op_index),
        event_index
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_source_checks_the_contract() {
        let ok = build_source(
            SourceKind::Rpc,
            "http://127.0.0.1:1",
            "Test SDF Network ; September 2015",
            "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD2KM",
            HttpPolicy::default(),
        );
        assert_eq!(ok.map(|s| s.name()).ok(), Some("rpc"));
        let bad = build_source(
            SourceKind::Horizon,
            "http://x",
            "",
            "GBAD",
            HttpPolicy::default(),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn event_id_matches_rpc_layout() {
        // From the real getEvents fixture: ledger 3727845, tx 5, op 0.
        assert_eq!(toid(3727845, 5, 0), 16010972359577600);
        assert_eq!(event_id(3727845, 5, 0, 1), "0016010972359577600-0000000001");
    }
}
