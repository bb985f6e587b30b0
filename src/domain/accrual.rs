//! Accrual exactly as the Fluxora contract computes it (`accrual::calculate_accrued_amount_checkpointed`,
//! spec `contract.md` §4.1), plus the contract's two views built on it.
//!
//! Everything is checked `i128` arithmetic with the contract's own overflow rules: the Linear
//! product falls back to `deposit` on overflow, CliffSlope saturates, results are clamped to
//! `[0, deposit]`.

use serde::{Deserialize, Serialize};

/// `StreamKind` (on chain `U32`: Linear=0, CliffOnly=1, CliffSlope=2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamKind {
    Linear,
    CliffOnly,
    CliffSlope,
}

impl StreamKind {
    /// From the on-chain discriminant.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Linear),
            1 => Some(Self::CliffOnly),
            2 => Some(Self::CliffSlope),
            _ => None,
        }
    }
}

/// `StreamStatus` (on chain `U32`: Active=0, Paused=1, Completed=2, Cancelled=3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamStatus {
    Active,
    Paused,
    Completed,
    Cancelled,
}

impl StreamStatus {
    /// From the on-chain discriminant.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Active),
            1 => Some(Self::Paused),
            2 => Some(Self::Completed),
            3 => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// The stream fields accrual reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccrualTerms {
    pub kind: StreamKind,
    pub status: StreamStatus,
    pub deposit_amount: i128,
    pub rate_per_second: i128,
    pub start_time: u64,
    pub cliff_time: u64,
    pub end_time: u64,
    pub checkpointed_amount: i128,
    pub checkpointed_at: u64,
    pub withdrawn_amount: i128,
    pub cancelled_at: Option<u64>,
}

fn clamp(v: i128, deposit: i128) -> i128 {
    v.clamp(0, deposit.max(0))
}

/// `calculate_accrued_amount_checkpointed(state, rate, now)`: accrued at `now`, ignoring status.
pub fn accrued_at(t: &AccrualTerms, now: u64) -> i128 {
    if now < t.cliff_time {
        return 0;
    }
    if t.deposit_amount <= 0 {
        return 0;
    }
    match t.kind {
        StreamKind::CliffOnly => t.deposit_amount,
        StreamKind::CliffSlope => {
            let elapsed = i128::from(now.min(t.end_time).saturating_sub(t.cliff_time));
            clamp(elapsed.saturating_mul(t.rate_per_second), t.deposit_amount)
        }
        StreamKind::Linear => {
            if t.rate_per_second < 0 {
                return 0;
            }
            if t.checkpointed_at >= t.end_time {
                return clamp(t.checkpointed_amount, t.deposit_amount);
            }
            let elapsed = i128::from(now.min(t.end_time).saturating_sub(t.checkpointed_at));
            let added = elapsed
                .checked_mul(t.rate_per_second)
                .unwrap_or(t.deposit_amount);
            clamp(
                t.checkpointed_amount.saturating_add(added),
                t.deposit_amount,
            )
        }
    }
}

/// The `calculate_accrued` view: `deposit` once Completed, frozen at `cancelled_at` once
/// Cancelled, else accrued at `now`.
pub fn calculate_accrued(t: &AccrualTerms, now: u64) -> i128 {
    match t.status {
        StreamStatus::Completed => t.deposit_amount,
        StreamStatus::Cancelled => accrued_at(t, t.cancelled_at.unwrap_or(now)),
        StreamStatus::Active | StreamStatus::Paused => accrued_at(t, now),
    }
}

/// What the recipient could withdraw at `now` (`accrued − withdrawn`, at least 0). Unlike the
/// contract's `get_withdrawable` view this does not report 0 for Paused streams past their end
/// (`withdraw` pays those); see [`get_withdrawable_view`] for the view's exact value.
pub fn withdrawable(t: &AccrualTerms, now: u64) -> i128 {
    match t.status {
        StreamStatus::Completed => 0,
        _ => calculate_accrued(t, now)
            .saturating_sub(t.withdrawn_amount)
            .max(0),
    }
}

/// The contract's `get_withdrawable` view, quirks included: 0 for Paused streams, and capped by
/// the contract's token balance when that is known (it matters after `keeper_cancel`, which pays
/// the recipient without raising `withdrawn_amount`).
pub fn get_withdrawable_view(t: &AccrualTerms, now: u64, token_balance: Option<i128>) -> i128 {
    let w = match t.status {
        StreamStatus::Paused => 0,
        _ => withdrawable(t, now),
    };
    match token_balance {
        Some(b) => w.min(b.max(0)),
        None => w,
    }
}

/// The refund a cancel at `at` sends the sender: `deposit − accrued(at)`.
pub fn refund_at_cancel(t: &AccrualTerms, at: u64) -> i128 {
    t.deposit_amount.saturating_sub(accrued_at(t, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linear() -> AccrualTerms {
        AccrualTerms {
            kind: StreamKind::Linear,
            status: StreamStatus::Active,
            deposit_amount: 1_000,
            rate_per_second: 1,
            start_time: 100,
            cliff_time: 200,
            end_time: 1_100,
            checkpointed_amount: 0,
            checkpointed_at: 100,
            withdrawn_amount: 0,
            cancelled_at: None,
        }
    }

    #[test]
    fn linear_jumps_at_the_cliff_and_caps_at_deposit() {
        let t = linear();
        assert_eq!(accrued_at(&t, 199), 0);
        assert_eq!(accrued_at(&t, 200), 100);
        assert_eq!(accrued_at(&t, 600), 500);
        assert_eq!(accrued_at(&t, 5_000), 1_000);
    }

    #[test]
    fn overflow_falls_back_to_deposit() {
        let t = AccrualTerms {
            rate_per_second: i128::MAX / 2,
            deposit_amount: i128::MAX,
            ..linear()
        };
        assert_eq!(accrued_at(&t, 1_000), i128::MAX);
        let s = AccrualTerms {
            kind: StreamKind::CliffSlope,
            ..t
        };
        assert_eq!(accrued_at(&s, 1_000), i128::MAX);
    }

    #[test]
    fn kinds_and_views() {
        let only = AccrualTerms {
            kind: StreamKind::CliffOnly,
            rate_per_second: 0,
            ..linear()
        };
        assert_eq!(accrued_at(&only, 199), 0);
        assert_eq!(accrued_at(&only, 200), 1_000);
        let slope = AccrualTerms {
            kind: StreamKind::CliffSlope,
            ..linear()
        };
        assert_eq!(
            accrued_at(&slope, 300),
            100,
            "CliffSlope accrues from the cliff"
        );
        let cancelled = AccrualTerms {
            status: StreamStatus::Cancelled,
            cancelled_at: Some(400),
            withdrawn_amount: 50,
            ..linear()
        };
        assert_eq!(calculate_accrued(&cancelled, 9_999), 300);
        assert_eq!(withdrawable(&cancelled, 9_999), 250);
        assert_eq!(refund_at_cancel(&cancelled, 400), 700);
        let paused = AccrualTerms {
            status: StreamStatus::Paused,
            ..linear()
        };
        assert_eq!(get_withdrawable_view(&paused, 5_000, None), 0);
        assert_eq!(get_withdrawable_view(&linear(), 5_000, Some(10)), 10);
        assert_eq!(withdrawable(&paused, 5_000), 1_000);
        let done = AccrualTerms {
            status: StreamStatus::Completed,
            withdrawn_amount: 1_000,
            ..linear()
        };
        assert_eq!(calculate_accrued(&done, 0), 1_000);
    }

    proptest! {
        #[test]
        fn accrual_is_bounded_and_monotone(
            deposit in any::<i128>(), rate in any::<i128>(), cp in any::<i128>(),
            start in 0u64..2_000_000_000, cliff_off in 0u64..1_000_000, len in 0u64..1_000_000_000,
            cp_off in 0u64..2_000_000_000, now in any::<u64>(), later in 0u64..1_000_000_000,
            kind in 0u32..3,
        ) {
            let t = AccrualTerms {
                kind: StreamKind::from_u32(kind).unwrap(),
                status: StreamStatus::Active,
                deposit_amount: deposit,
                rate_per_second: rate,
                start_time: start,
                cliff_time: start + cliff_off,
                end_time: start + len,
                checkpointed_amount: cp,
                checkpointed_at: start.saturating_add(cp_off),
                withdrawn_amount: 0,
                cancelled_at: None,
            };
            let a = accrued_at(&t, now);
            prop_assert!(a >= 0);
            prop_assert!(a <= deposit.max(0));
            if rate >= 0 {
                prop_assert!(accrued_at(&t, now.saturating_add(later)) >= a);
            }
        }
    }
}
