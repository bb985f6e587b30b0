//! The `Stream` persistent storage entry (`spec/contract.md` §3): key
//! `Vec[Symbol("Stream"), U64(id)]`, value a 29-field map.

use serde::Serialize;
use stellar_xdr::ScVal;

use super::scval::{as_symbol, map_struct, Addr, FromScVal, HexBytes, Metadata, I128};
use super::xdr::{Canon, Canonical};

/// `StreamStatus` (`U32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum StreamStatus {
    Active,
    Paused,
    Completed,
    Cancelled,
}

impl FromScVal for StreamStatus {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match u32::from_scval(v)? {
            0 => Ok(Self::Active),
            1 => Ok(Self::Paused),
            2 => Ok(Self::Completed),
            3 => Ok(Self::Cancelled),
            n => Err(format!("unknown StreamStatus {n}")),
        }
    }
}

impl Canonical for StreamStatus {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        Self::from_scval(&ScVal::U32(u32::canon(c)?)).ok()
    }
}

/// `StreamKind` (`U32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum StreamKind {
    Linear,
    CliffOnly,
    CliffSlope,
}

impl FromScVal for StreamKind {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match u32::from_scval(v)? {
            0 => Ok(Self::Linear),
            1 => Ok(Self::CliffOnly),
            2 => Ok(Self::CliffSlope),
            n => Err(format!("unknown StreamKind {n}")),
        }
    }
}

impl Canonical for StreamKind {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        Self::from_scval(&ScVal::U32(u32::canon(c)?)).ok()
    }
}

map_struct!(
    /// The contract's `Stream` struct, all 29 fields.
    StreamEntry {
        cancelled_at: Option<u64>,
        checkpointed_amount: I128,
        checkpointed_at: u64,
        claim_owner: Option<Addr>,
        cliff_time: u64,
        cumulative_paused_duration: u64,
        decommissioned: Option<bool>,
        delegation_depth: u32,
        deposit_amount: I128,
        end_time: u64,
        irrevocable: Option<bool>,
        is_pooled: Option<bool>,
        kind: StreamKind,
        last_pause_toggle_ledger: u32,
        last_rate_change_ledger: u32,
        last_withdraw_ledger: u32,
        memo: Option<HexBytes>,
        metadata: Option<Metadata>,
        parent_stream_id: Option<u64>,
        paused_at_timestamp: u64,
        rate_per_second: I128,
        recipient: Addr,
        sender: Addr,
        start_time: u64,
        status: StreamStatus,
        stream_id: u64,
        withdraw_dust_threshold: I128,
        withdrawn_amount: I128,
        witness: Option<Addr>,
    }
);

impl StreamEntry {
    /// Decodes a `Stream` value from its XDR (an `ScVal`): in place when it has the canonical
    /// shape, else through `stellar-xdr` and [`StreamEntry::from_scval`] (same result either way).
    pub fn from_xdr(bytes: &[u8]) -> Result<StreamEntry, String> {
        let mut c = Canon::new(bytes);
        if let Some(e) = StreamEntry::from_xdr_canonical(&mut c) {
            if c.pos() == bytes.len() {
                return Ok(e);
            }
        }
        use stellar_xdr::{Limits, ReadXdr};
        let v = ScVal::from_xdr(
            bytes,
            Limits {
                depth: 500,
                len: bytes.len(),
            },
        )
        .map_err(|e| format!("Stream value is not an XDR ScVal: {e}"))?;
        StreamEntry::from_scval(&v)
    }
}

/// If `key` is `Vec[Symbol("Stream"), U64(id)]`, the id.
pub fn stream_key_id(key: &ScVal) -> Option<u64> {
    match key {
        ScVal::Vec(Some(items)) if items.len() == 2 => {
            if as_symbol(&items[0]) != Some(b"Stream".as_slice()) {
                return None;
            }
            match &items[1] {
                ScVal::U64(id) => Some(*id),
                _ => None,
            }
        }
        _ => None,
    }
}
