//! Support for tests and benches that need a real PostgreSQL: a fresh database per run.
//!
//! The server is `FLUXORA_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`). When it
//! cannot be reached, tests skip with a message, except when `CI` is set: then it is a failure.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

/// Default PostgreSQL server for tests.
pub const DEFAULT_TEST_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server tests use.
pub fn test_pg_url() -> String {
    std::env::var("FLUXORA_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_PG_URL.to_string())
}

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// A database created for one test and dropped by [`TempPgDatabase::drop_db`].
#[derive(Debug)]
pub struct TempPgDatabase {
    admin: PgConnectOptions,
    name: String,
    /// URL of the fresh database.
    pub url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TempPgDatabase {
    /// Creates a fresh database. `Ok(None)` means the server is unreachable outside CI (skip);
    /// under CI that is an error.
    pub async fn create() -> Result<Option<Self>, String> {
        let base = test_pg_url();
        let admin = PgConnectOptions::from_str(&base).map_err(|e| format!("{base}: {e}"))?;
        let mut conn = match admin.connect().await {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("PostgreSQL at {base} is not reachable: {e}");
                if in_ci() {
                    return Err(format!("{msg} (CI is set: PostgreSQL tests must not skip)"));
                }
                eprintln!("SKIP: {msg}");
                return Ok(None);
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "fluxora_t_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        let _ = conn.close().await;
        let mut url = url::Url::parse(&base).map_err(|e| format!("{base}: {e}"))?;
        url.set_path(&format!("/{name}"));
        Ok(Some(Self {
            admin,
            name,
            url: url.to_string(),
        }))
    }

    /// Drops the database (closing other sessions first).
    pub async fn drop_db(self) -> Result<(), String> {
        let mut conn = self.admin.connect().await.map_err(|e| e.to_string())?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Synthetic chain data for store tests and benches (not contract-valid; see the simulator for that).
pub mod synth {
    use sha2::{Digest, Sha256};

    use crate::domain::accrual::{StreamKind, StreamStatus};
    use crate::projection::{Fact, StreamState, Verification};
    use crate::store::{format_event_id, LedgerRecord, NewEvent};

    /// A plausible Linear stream created at `ledger` (for store and API tests and benches).
    pub fn stream_state(id: u64, sender: &str, recipient: &str, ledger: u32) -> StreamState {
        let start = 1_700_000_000 + u64::from(ledger) * 5;
        StreamState {
            stream_id: id,
            sender: sender.to_string(),
            recipient: recipient.to_string(),
            claim_owner: None,
            deposit_amount: 1_000_000_000,
            rate_per_second: 100,
            start_time: start,
            cliff_time: start,
            end_time: start + 10_000_000,
            withdrawn_amount: 0,
            status: StreamStatus::Active,
            closed: false,
            cancelled_at: None,
            checkpointed_amount: 0,
            checkpointed_at: start,
            withdraw_dust_threshold: 0,
            memo_hex: None,
            kind: Fact::Entry(StreamKind::Linear),
            irrevocable: Fact::Entry(Some(false)),
            witness: Fact::Entry(None),
            is_pooled: Some(false),
            decommissioned: Some(false),
            last_pause_toggle_ledger: 0,
            last_withdraw_ledger: Fact::Entry(0),
            last_rate_change_ledger: 0,
            paused_at_timestamp: 0,
            cumulative_paused_duration: 0,
            delegation_depth: 0,
            parent_stream_id: None,
            created_ledger: ledger,
            created_at: start,
            created_tx: ledger_hash(9, ledger),
            updated_ledger: ledger,
            updated_at: start,
            updated_tx: ledger_hash(9, ledger),
            verification: Verification {
                verified: true,
                checked_ledger: Some(ledger),
                reasons: Vec::new(),
            },
        }
    }

    /// A deterministic ledger hash for `(branch, sequence)`.
    pub fn ledger_hash(branch: u32, sequence: u32) -> String {
        let mut h = Sha256::new();
        h.update(branch.to_be_bytes());
        h.update(sequence.to_be_bytes());
        hex::encode(h.finalize())
    }

    /// Ledgers `from..=to` of `branch`, chained; the first one's previous hash is `prev_hash`.
    pub fn ledgers(from: u32, to: u32, branch: u32, prev_hash: &str) -> Vec<LedgerRecord> {
        let mut prev = prev_hash.to_string();
        (from..=to)
            .map(|seq| {
                let l = LedgerRecord {
                    sequence: seq,
                    hash: ledger_hash(branch, seq),
                    prev_hash: prev.clone(),
                    close_time: 1_700_000_000 + i64::from(seq) * 5,
                };
                prev = l.hash.clone();
                l
            })
            .collect()
    }

    /// `n` events in `ledger`, four per transaction, each transaction about one of `streams`
    /// stream ids (as real Fluxora transactions are), ids in event-id order.
    pub fn events(ledger: u32, n: u32, streams: u64, branch: u32) -> Vec<NewEvent> {
        (0..n)
            .map(|i| {
                let tx = 1 + i / 4;
                let stream = (u64::from(ledger) * 7919 + u64::from(tx)) % streams.max(1);
                NewEvent {
                    event_id: format_event_id(ledger, tx, 0, i % 4),
                    ledger,
                    tx_hash: ledger_hash(
                        branch ^ 0xABCD,
                        ledger.wrapping_mul(1000).wrapping_add(tx),
                    ),
                    tx_order: tx,
                    op_index: 0,
                    event_index: i % 4,
                    contract_id: "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC".into(),
                    topic: "withdrew".into(),
                    stream_id: Some(stream),
                    decoded: serde_json::json!({
                        "type": "withdrew",
                        "stream_id": stream.to_string(),
                        "amount": (u64::from(i) * 1_000_003).to_string(),
                        "branch": branch,
                    }),
                    topic_xdr: vec!["AAAADwAAAAh3aXRoZHJldw==".into(), "AAAABQAAAAAAAAAB".into()],
                    data_xdr: "AAAAEQAAAAE=".into(),
                    function: Some("withdraw".into()),
                }
            })
            .collect()
    }
}
