//! The client stream object (`client-contracts.md` §2): the ten keys every client reads, in
//! order, then the additions. Amounts are decimal strings computed at an instant from the folded
//! state (time-dependent amounts are never stored).

use serde::Serialize;

use crate::domain::accrual::{calculate_accrued, withdrawable, StreamKind};
use crate::domain::amount::format_amount;

use super::fold::StreamState;

/// Raw amounts of a stream at an instant (token units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amounts {
    pub deposit: i128,
    /// Accrued per the contract's rules: frozen at `cancelled_at`, the deposit once completed.
    pub streamed: i128,
    /// `deposit − streamed`.
    pub remaining: i128,
    pub withdrawn: i128,
    /// What a `withdraw` would pay now: `streamed − withdrawn`, at least 0.
    pub withdrawable: i128,
}

/// The amounts of `s` at unix second `now`.
pub fn amounts_at(s: &StreamState, now: u64) -> Amounts {
    let t = s.terms();
    let streamed = calculate_accrued(&t, now);
    Amounts {
        deposit: s.deposit_amount,
        streamed,
        remaining: s.deposit_amount.saturating_sub(streamed),
        withdrawn: s.withdrawn_amount,
        withdrawable: withdrawable(&t, now),
    }
}

/// How to render: token decimals and the contract id.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    pub decimals: u32,
    pub contract_id: String,
}

/// The stream object as serialized to clients (REST, WebSocket, webhooks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamObject {
    pub id: String,
    pub sender: String,
    pub recipient: String,
    pub deposit_amount: String,
    pub streamed_amount: String,
    pub remaining_amount: String,
    pub rate_per_second: String,
    pub start_time: u64,
    pub end_time: u64,
    pub status: String,
    pub withdrawn_amount: String,
    pub withdrawable_amount: String,
    pub cliff_time: u64,
    pub cancelled_at: Option<u64>,
    /// `linear`, `cliff_only`, `cliff_slope`, or `unknown` when neither events nor storage said.
    pub kind: String,
    pub contract_id: String,
    pub created_ledger: u32,
    pub updated_ledger: u32,
    /// The transaction that created the stream.
    pub transaction_hash: String,
    /// The transaction of the last change.
    pub updated_transaction_hash: String,
    /// ISO-8601 (UTC) of the creating ledger's close time.
    pub created_at: String,
    /// ISO-8601 (UTC) of the last change's ledger close time.
    pub updated_at: String,
    /// Whether the folded state matched the contract's own storage at the last comparison.
    pub verified: bool,
    /// The differences found when `verified` is false.
    pub verification_issues: Vec<String>,
    pub claim_owner: Option<String>,
    pub parent_stream_id: Option<String>,
    /// The instant (unix seconds) the amounts were computed at.
    pub as_of: u64,
}

/// ISO-8601 with milliseconds, UTC.
pub fn iso8601(unix: u64) -> String {
    let t = i64::try_from(unix).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Renders `s` at unix second `now`.
pub fn stream_object(s: &StreamState, now: u64, opts: &ViewOptions) -> StreamObject {
    let a = amounts_at(s, now);
    let d = opts.decimals;
    StreamObject {
        id: s.stream_id.to_string(),
        sender: s.sender.clone(),
        recipient: s.recipient.clone(),
        deposit_amount: format_amount(a.deposit, d),
        streamed_amount: format_amount(a.streamed, d),
        remaining_amount: format_amount(a.remaining, d),
        rate_per_second: format_amount(s.rate_per_second, d),
        start_time: s.start_time,
        end_time: s.end_time,
        status: crate::store::status_label(s).to_string(),
        withdrawn_amount: format_amount(a.withdrawn, d),
        withdrawable_amount: format_amount(a.withdrawable, d),
        cliff_time: s.cliff_time,
        cancelled_at: s.cancelled_at,
        kind: match s.kind.get() {
            Some(StreamKind::Linear) => "linear",
            Some(StreamKind::CliffOnly) => "cliff_only",
            Some(StreamKind::CliffSlope) => "cliff_slope",
            None => "unknown",
        }
        .to_string(),
        contract_id: opts.contract_id.clone(),
        created_ledger: s.created_ledger,
        updated_ledger: s.updated_ledger,
        transaction_hash: s.created_tx.clone(),
        updated_transaction_hash: s.updated_tx.clone(),
        created_at: iso8601(s.created_at),
        updated_at: iso8601(s.updated_at),
        verified: s.verification.verified,
        verification_issues: s.verification.reasons.clone(),
        claim_owner: s.claim_owner.clone(),
        parent_stream_id: s.parent_stream_id.map(|p| p.to_string()),
        as_of: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_renders_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_710_000_000), "2024-03-09T16:00:00Z");
    }
}
