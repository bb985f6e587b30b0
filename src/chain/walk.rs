//! `LedgerCloseMeta` XDR → [`LedgerBundle`] in one pass over the bytes.
//!
//! The generic path ([`super::meta::bundle_from_lcm`]) decodes the whole `LedgerCloseMeta` into
//! `stellar-xdr` values and then re-encodes the pieces the store keeps. Here the meta is walked
//! in place: the envelopes, results, headers and everything of no interest are still read by
//! `stellar-xdr`, but the walk keeps the raw bytes of each contract event's topics and data and of
//! each `Stream` entry (what the store keeps, as base64, without re-encoding), and reads `Stream`
//! values straight from their bytes ([`StreamEntry::from_xdr_canonical`]) instead of building
//! 29-field `ScVal` maps.
//!
//! Every read counts depth and length exactly as `stellar-xdr` does under the same [`Limits`].
//! Whatever the walk cannot take (any error, a hash mismatch, bytes left over) sends the caller
//! back to the generic path, so both accept the same inputs, give the same bundles and the same
//! errors: `tests/chain_meta.rs` and the proptests compare them.

use std::collections::HashMap;

use stellar_xdr::{
    ContractDataDurability, ContractEventType, ContractId, Error, ExtensionPoint,
    GeneralizedTransactionSet, LedgerCloseMetaExt, LedgerEntryChange, LedgerEntryChangeType,
    LedgerEntryExt, LedgerEntryType, LedgerHeaderHistoryEntry, LedgerKey, Limited, Limits, ReadXdr,
    ScAddress, ScVal, ScpHistoryEntry, SorobanTransactionMetaExt, SorobanTransactionMetaV2,
    TransactionEnvelope, TransactionResultPair, TransactionSet, UpgradeEntryMeta, VecM,
};

use super::meta::{
    gen_set_envelopes, invocation_of, raw_event_with_xdr, tx_successful, verify_header,
    warn_unrecognized, ContractFilter, TxContext,
};
use super::{
    event_id, ChainError, LedgerBundle, RawContractEvent, StreamChange, StreamEntryChange, TxBundle,
};
use crate::contract::events::{b64_encode as b64, xdr_b64};
use crate::contract::scval::render_address;
use crate::contract::xdr::{Canon, CANON_DEPTH};
use crate::contract::{stream_key_id, ContractEvent, StreamEntry};

type R<T> = Result<T, Error>;

/// A read position with the depth and length still allowed, as a `stellar-xdr` reader has them.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
    len: usize,
}

impl<'a> Cur<'a> {
    /// A value of XDR type `T`, read by `stellar-xdr` under the remaining limits.
    fn read<T: ReadXdr>(&mut self) -> R<T> {
        let rest = self.buf.get(self.pos..).ok_or(Error::Invalid)?;
        let mut r = Limited::new(
            rest,
            Limits {
                depth: self.depth,
                len: self.len,
            },
        );
        let v = T::read_xdr(&mut r)?;
        self.advance(rest.len() - r.inner.len())?;
        Ok(v)
    }

    /// A value of type `T` with its bytes.
    fn read_raw<T: ReadXdr>(&mut self) -> R<(T, &'a [u8])> {
        let start = self.pos;
        let v = self.read::<T>()?;
        Ok((v, &self.buf[start..self.pos]))
    }

    fn advance(&mut self, n: usize) -> R<()> {
        self.len = self.len.checked_sub(n).ok_or(Error::LengthLimitExceeded)?;
        self.pos += n;
        Ok(())
    }

    /// A 4-byte primitive (`stellar-xdr` reads each primitive one level deeper).
    fn word(&mut self) -> R<[u8; 4]> {
        if self.depth == 0 {
            return Err(Error::DepthLimitExceeded);
        }
        let b = self.buf.get(self.pos..self.pos + 4).ok_or(Error::Invalid)?;
        let w = [b[0], b[1], b[2], b[3]];
        self.advance(4)?;
        Ok(w)
    }

    fn u32(&mut self) -> R<u32> {
        self.word().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> R<i32> {
        self.word().map(i32::from_be_bytes)
    }

    /// The 4-byte word `off` bytes ahead, not consumed.
    fn peek(&self, off: usize) -> Option<i32> {
        let at = self.pos.checked_add(off)?;
        let b = self.buf.get(at..at.checked_add(4)?)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// One level of nesting for the duration of `f` (a struct, union, array or typedef read).
    fn nest<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        self.depth = self.depth.checked_sub(1).ok_or(Error::DepthLimitExceeded)?;
        let r = f(self);
        self.depth += 1;
        r
    }

    /// A `VecM<T>` (unbounded) walked element by element.
    fn array(&mut self, mut f: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.nest(|c| {
            let n = c.u32()?;
            for _ in 0..n {
                f(c)?;
            }
            Ok(())
        })
    }

    /// An XDR `Option<T>` walked by `f` when present.
    fn option(&mut self, f: impl FnOnce(&mut Self) -> R<()>) -> R<()> {
        self.nest(|c| match c.u32()? {
            0 => Ok(()),
            1 => f(c),
            _ => Err(Error::Invalid),
        })
    }
}

/// One contract event of the filtered contract(s) as found in the meta.
struct WalkedEvent<'a> {
    op_index: u32,
    event_index: u32,
    contract: ContractId,
    /// The topics' and the data's raw XDR.
    topics_raw: Vec<&'a [u8]>,
    data_raw: &'a [u8],
    body: EventBody,
}

enum EventBody {
    /// Decoded in place ([`ContractEvent::decode_canonical`]).
    Canonical(ContractEvent),
    /// Read by `stellar-xdr`, to be decoded from the values.
    Values { topics: Vec<ScVal>, data: ScVal },
}

/// What a transaction's meta holds for the bundle.
#[derive(Default)]
struct WalkedMeta<'a> {
    events: Vec<WalkedEvent<'a>>,
    /// Post-change `Stream` entries of the filtered contract(s), in application order.
    changes: Vec<(u64, StreamChange)>,
}

struct Walker<'f> {
    filter: &'f ContractFilter,
}

impl Walker<'_> {
    fn contract_event<'a>(
        &self,
        c: &mut Cur<'a>,
        op_index: u32,
        event_index: u32,
        out: &mut WalkedMeta<'a>,
    ) -> R<()> {
        c.nest(|c| {
            c.read::<ExtensionPoint>()?;
            let contract = c.read::<Option<ContractId>>()?;
            let type_ = c.read::<ContractEventType>()?;
            let ours = match contract {
                Some(id)
                    if type_ == ContractEventType::Contract && self.filter.matches_id(&id.0 .0) =>
                {
                    Some(id)
                }
                _ => None,
            };
            c.nest(|c| match c.i32()? {
                0 => c.nest(|c| {
                    let Some(contract) = ours else {
                        c.read::<VecM<ScVal>>()?;
                        c.read::<ScVal>()?;
                        return Ok(());
                    };
                    if let Some((topics_raw, data_raw, event)) = canonical_event(c)? {
                        out.events.push(WalkedEvent {
                            op_index,
                            event_index,
                            contract,
                            topics_raw,
                            data_raw,
                            body: EventBody::Canonical(event),
                        });
                        return Ok(());
                    }
                    let mut topics = Vec::new();
                    let mut topics_raw = Vec::new();
                    c.array(|c| {
                        let (v, raw) = c.read_raw::<ScVal>()?;
                        topics.push(v);
                        topics_raw.push(raw);
                        Ok(())
                    })?;
                    let (data, data_raw) = c.read_raw::<ScVal>()?;
                    out.events.push(WalkedEvent {
                        op_index,
                        event_index,
                        contract,
                        topics_raw,
                        data_raw,
                        body: EventBody::Values { topics, data },
                    });
                    Ok(())
                }),
                _ => Err(Error::Invalid),
            })
        })
    }

    fn events<'a>(&self, c: &mut Cur<'a>, op_index: u32, out: &mut WalkedMeta<'a>) -> R<()> {
        let mut i = 0u32;
        c.array(|c| {
            self.contract_event(c, op_index, i, out)?;
            i += 1;
            Ok(())
        })
    }

    /// A `Stream` value of ours: read in place when canonical, else by `stellar-xdr`.
    fn stream_value<'a>(&self, c: &mut Cur<'a>, keep: bool) -> R<Option<StreamChange>> {
        if c.depth >= CANON_DEPTH {
            let rest = c.buf.get(c.pos..).ok_or(Error::Invalid)?;
            let mut canon = Canon::new(rest);
            if let Some(entry) = StreamEntry::from_xdr_canonical(&mut canon) {
                let n = canon.pos();
                let raw = &rest[..n];
                c.advance(n)?;
                return Ok(keep.then(|| StreamChange::Upsert {
                    entry: Box::new(entry),
                    value_xdr: b64(raw),
                }));
            }
        }
        let val = c.read::<ScVal>()?;
        Ok(keep.then(|| {
            let value_xdr = xdr_b64(&val);
            match StreamEntry::from_scval(&val) {
                Ok(entry) => StreamChange::Upsert {
                    entry: Box::new(entry),
                    value_xdr,
                },
                Err(reason) => StreamChange::Unrecognized { reason, value_xdr },
            }
        }))
    }

    /// A `LedgerEntryChange` holding a `ContractData` entry, walked to its value.
    fn contract_data_change(&self, c: &mut Cur<'_>, out: &mut WalkedMeta<'_>) -> R<()> {
        c.nest(|c| {
            let kind = c.read::<LedgerEntryChangeType>()?;
            c.nest(|c| {
                c.u32()?; // last_modified_ledger_seq
                c.nest(|c| {
                    if c.read::<LedgerEntryType>()? != LedgerEntryType::ContractData {
                        return Err(Error::Invalid);
                    }
                    c.nest(|c| {
                        c.read::<ExtensionPoint>()?;
                        let contract = c.read::<ScAddress>()?;
                        let key = c.read::<ScVal>()?;
                        c.read::<ContractDataDurability>()?;
                        let id = if self.filter.matches_address(&contract) {
                            stream_key_id(&key)
                        } else {
                            None
                        };
                        match id {
                            Some(id) => {
                                // `State` is the value before the transaction: not kept.
                                let keep = kind != LedgerEntryChangeType::State;
                                if let Some(change) = self.stream_value(c, keep)? {
                                    out.changes.push((id, change));
                                }
                            }
                            None => {
                                c.read::<ScVal>()?;
                            }
                        }
                        Ok(())
                    })
                })?;
                c.read::<LedgerEntryExt>()?;
                Ok(())
            })
        })
    }

    fn changes(&self, c: &mut Cur<'_>, out: &mut WalkedMeta<'_>) -> R<()> {
        // `LedgerEntryChanges` is a typedef of the array: one more level.
        c.nest(|c| {
            c.array(|c| {
                let kind = c.peek(0).ok_or(Error::Invalid)?;
                // change type, then (for an entry) last_modified, then the entry's type
                let data = c.peek(8);
                let removed = kind == LedgerEntryChangeType::Removed as i32;
                if !removed && data == Some(LedgerEntryType::ContractData as i32) {
                    return self.contract_data_change(c, out);
                }
                if let LedgerEntryChange::Removed(LedgerKey::ContractData(k)) =
                    c.read::<LedgerEntryChange>()?
                {
                    if self.filter.matches_address(&k.contract) {
                        if let Some(id) = stream_key_id(&k.key) {
                            out.changes.push((id, StreamChange::Removed));
                        }
                    }
                }
                Ok(())
            })
        })
    }

    /// `OperationMeta { changes }`.
    fn operation_meta(&self, c: &mut Cur<'_>, out: &mut WalkedMeta<'_>) -> R<()> {
        c.nest(|c| self.changes(c, out))
    }

    fn transaction_meta<'a>(&self, c: &mut Cur<'a>) -> R<WalkedMeta<'a>> {
        let mut out = WalkedMeta::default();
        c.nest(|c| {
            match c.i32()? {
                0 => c.array(|c| self.operation_meta(c, &mut out))?,
                1 => c.nest(|c| {
                    self.changes(c, &mut out)?;
                    c.array(|c| self.operation_meta(c, &mut out))
                })?,
                2 => c.nest(|c| {
                    self.changes(c, &mut out)?;
                    c.array(|c| self.operation_meta(c, &mut out))?;
                    self.changes(c, &mut out)
                })?,
                3 => c.nest(|c| {
                    c.read::<ExtensionPoint>()?;
                    self.changes(c, &mut out)?;
                    c.array(|c| self.operation_meta(c, &mut out))?;
                    self.changes(c, &mut out)?;
                    // soroban_meta: SorobanTransactionMeta { ext, events, return_value,
                    // diagnostic_events }; its events belong to operation 0
                    c.option(|c| {
                        c.nest(|c| {
                            c.read::<SorobanTransactionMetaExt>()?;
                            self.events(c, 0, &mut out)?;
                            c.read::<ScVal>()?;
                            c.read::<VecM<stellar_xdr::DiagnosticEvent>>()?;
                            Ok(())
                        })
                    })
                })?,
                4 => c.nest(|c| {
                    c.read::<ExtensionPoint>()?;
                    self.changes(c, &mut out)?;
                    // operations: OperationMetaV2 { ext, changes, events }
                    let mut op = 0u32;
                    c.array(|c| {
                        c.nest(|c| {
                            c.read::<ExtensionPoint>()?;
                            self.changes(c, &mut out)?;
                            self.events(c, op, &mut out)
                        })?;
                        op += 1;
                        Ok(())
                    })?;
                    self.changes(c, &mut out)?;
                    c.read::<Option<SorobanTransactionMetaV2>>()?;
                    c.read::<VecM<stellar_xdr::TransactionEvent>>()?;
                    c.read::<VecM<stellar_xdr::DiagnosticEvent>>()?;
                    Ok(())
                })?,
                _ => return Err(Error::Invalid),
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The topics (`VecM<ScVal>`) and data of one of our events decoded in place, when they have
/// the contract's canonical shapes; the read position moves past them only then.
#[allow(clippy::type_complexity)]
fn canonical_event<'a>(c: &mut Cur<'a>) -> R<Option<(Vec<&'a [u8]>, &'a [u8], ContractEvent)>> {
    if c.depth < CANON_DEPTH {
        return Ok(None);
    }
    let rest = c.buf.get(c.pos..).ok_or(Error::Invalid)?;
    let mut k = Canon::new(rest);
    let Some(n) = k.u32() else { return Ok(None) };
    // Our events have two or three topics.
    if n > 4 {
        return Ok(None);
    }
    let mut topics = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let start = k.pos();
        if k.scalar().is_none() {
            return Ok(None);
        }
        topics.push(&rest[start..k.pos()]);
    }
    let data_start = k.pos();
    let Some((event, len)) = ContractEvent::decode_canonical(&topics, &rest[data_start..]) else {
        return Ok(None);
    };
    c.advance(data_start + len)?;
    Ok(Some((topics, &rest[data_start..data_start + len], event)))
}

/// A bundle's transaction from its walked meta (the same rules as [`super::meta::tx_bundle`]).
fn tx_bundle(
    ctx: TxContext<'_>,
    envelope: Option<&TransactionEnvelope>,
    meta: WalkedMeta<'_>,
    filter: &ContractFilter,
) -> Option<TxBundle> {
    let inv = envelope.and_then(invocation_of);
    let function = inv.as_ref().map(|i| i.function.as_str());
    let mut events = Vec::new();
    let mut last_cid: Option<([u8; 32], String)> = None;
    for ev in meta.events {
        let cid = ev.contract.0 .0;
        let cid_str = match &last_cid {
            Some((bytes, s)) if *bytes == cid => s.clone(),
            _ => {
                let s = render_address(&ScAddress::Contract(ev.contract.clone()));
                last_cid = Some((cid, s.clone()));
                s
            }
        };
        events.push(match ev.body {
            EventBody::Canonical(decoded) => {
                // Canonical values re-encode to their own bytes: keep them as they are.
                let topic = Canon::new(ev.topics_raw.first().copied().unwrap_or_default())
                    .symbol()
                    .map(|s| String::from_utf8_lossy(s).into_owned());
                RawContractEvent {
                    event_id: event_id(
                        ctx.ledger,
                        ctx.application_order,
                        ev.op_index,
                        ev.event_index,
                    ),
                    ledger: ctx.ledger,
                    tx_hash: ctx.tx_hash.to_string(),
                    application_order: ctx.application_order,
                    op_index: ev.op_index,
                    event_index: ev.event_index,
                    contract_id: cid_str,
                    topic,
                    stream_id: decoded.stream_id(),
                    topics_xdr: ev.topics_raw.iter().map(|t| b64(t)).collect(),
                    data_xdr: b64(ev.data_raw),
                    decoded,
                    function: function.map(str::to_string),
                }
            }
            EventBody::Values { topics, data } => {
                let topics_xdr = topics
                    .iter()
                    .zip(&ev.topics_raw)
                    .map(|(v, raw)| raw_b64(v, raw))
                    .collect();
                let data_xdr = raw_b64(&data, ev.data_raw);
                let raw = raw_event_with_xdr(
                    ctx,
                    ev.op_index,
                    ev.event_index,
                    cid_str,
                    &topics,
                    &data,
                    topics_xdr,
                    data_xdr,
                    function,
                );
                warn_unrecognized(ctx, &raw, filter);
                raw
            }
        });
    }
    // The last change per stream id, in first-seen order.
    let mut order: Vec<u64> = Vec::new();
    let mut last: HashMap<u64, StreamChange> = HashMap::new();
    for (id, change) in meta.changes {
        if last.insert(id, change).is_none() {
            order.push(id);
        }
    }
    let stream_changes: Vec<StreamEntryChange> = order
        .into_iter()
        .filter_map(|id| {
            last.remove(&id).map(|change| StreamEntryChange {
                stream_id: id,
                change,
            })
        })
        .collect();
    super::meta::assemble(ctx, inv, filter, events, stream_changes)
}

/// Base64 of a value's XDR: its raw bytes, which are the canonical encoding unless the value
/// holds a `Bool` (`stellar-xdr` reads any non-1 word as `false`): then it is re-encoded, as the
/// generic path does.
fn raw_b64(v: &ScVal, raw: &[u8]) -> String {
    if has_bool(v) {
        xdr_b64(v)
    } else {
        b64(raw)
    }
}

fn has_bool(v: &ScVal) -> bool {
    match v {
        ScVal::Bool(_) => true,
        ScVal::Vec(Some(items)) => items.iter().any(has_bool),
        ScVal::Map(Some(m)) => m.iter().any(|e| has_bool(&e.key) || has_bool(&e.val)),
        ScVal::ContractInstance(i) => i
            .storage
            .as_ref()
            .is_some_and(|m| m.iter().any(|e| has_bool(&e.key) || has_bool(&e.val))),
        _ => false,
    }
}

/// The ledger header entry, verified as [`super::meta::bundle_from_lcm`] does.
fn header(
    c: &mut Cur<'_>,
    claimed_hash: Option<&str>,
) -> Result<(u32, super::meta::HeaderInfo), ChainError> {
    let entry = c.read::<LedgerHeaderHistoryEntry>().map_err(xdr_error)?;
    let seq = entry.header.ledger_seq;
    let location = format!("LedgerCloseMeta of ledger {seq}");
    let info = verify_header(&entry.header, claimed_hash, &location)?;
    if hex::encode(entry.hash.0) != info.hash {
        return Err(ChainError::HashMismatch {
            ledger: seq,
            claimed: hex::encode(entry.hash.0),
            computed: info.hash,
        });
    }
    Ok((seq, info))
}

enum TxSet {
    Classic(TransactionSet),
    Generalized(GeneralizedTransactionSet),
}

fn xdr_error(e: Error) -> ChainError {
    ChainError::Xdr {
        what: "LedgerCloseMeta",
        location: "walk".into(),
        message: e.to_string(),
    }
}

/// Walks a `LedgerCloseMeta` (V0/V1/V2) into its bundle. Any error: the caller falls back to the
/// generic path (which gives the definitive answer).
pub(crate) fn bundle(
    bytes: &[u8],
    limits: Limits,
    network_id: &[u8; 32],
    filter: &ContractFilter,
    claimed_hash: Option<&str>,
) -> Result<LedgerBundle, ChainError> {
    let mut c = Cur {
        buf: bytes,
        pos: 0,
        depth: limits.depth,
        len: limits.len,
    };
    let w = Walker { filter };
    let mut out: Option<LedgerBundle> = None;
    let mut failure: Option<ChainError> = None;
    let r = c.nest(|c| {
        let v = c.i32()?;
        c.nest(|c| {
            if v != 0 {
                c.read::<LedgerCloseMetaExt>()?;
            }
            let (seq, info) = match header(c, claimed_hash) {
                Ok(h) => h,
                Err(e) => {
                    failure = Some(e);
                    return Err(Error::Invalid);
                }
            };
            let set = match v {
                0 => TxSet::Classic(c.read::<TransactionSet>()?),
                1 | 2 => TxSet::Generalized(c.read::<GeneralizedTransactionSet>()?),
                _ => return Err(Error::Invalid),
            };
            let envelopes: Vec<&TransactionEnvelope> = match &set {
                TxSet::Classic(s) => s.txs.iter().collect(),
                TxSet::Generalized(g) => gen_set_envelopes(g),
            };
            let mut by_hash: Option<HashMap<[u8; 32], &TransactionEnvelope>> = None;
            let mut txs = Vec::new();
            let mut i = 0u32;
            c.array(|c| {
                let pair = c.nest(|c| {
                    if v == 2 {
                        c.read::<ExtensionPoint>()?;
                    }
                    let pair = c.read::<TransactionResultPair>()?;
                    c.read::<stellar_xdr::LedgerEntryChanges>()?; // fee processing
                    let meta = w.transaction_meta(c)?;
                    if v == 2 {
                        c.read::<stellar_xdr::LedgerEntryChanges>()?; // post-apply fee processing
                    }
                    Ok((pair, meta))
                })?;
                i += 1;
                let (pair, meta) = pair;
                if !tx_successful(&pair.result) {
                    return Ok(());
                }
                if by_hash.is_none() {
                    let mut map = HashMap::with_capacity(envelopes.len());
                    for env in &envelopes {
                        map.insert(env.hash(*network_id)?, *env);
                    }
                    by_hash = Some(map);
                }
                let hash = &pair.transaction_hash.0;
                let tx_hash = hex::encode(hash);
                let env = by_hash.as_ref().and_then(|m| m.get(hash).copied());
                if env.is_none() {
                    failure = Some(ChainError::EnvelopeNotFound {
                        ledger: seq,
                        tx_hash,
                    });
                    return Err(Error::Invalid);
                }
                let ctx = TxContext {
                    ledger: seq,
                    tx_hash: &tx_hash,
                    application_order: i,
                };
                if let Some(tb) = tx_bundle(ctx, env, meta, filter) {
                    txs.push(tb);
                }
                Ok(())
            })?;
            c.read::<VecM<UpgradeEntryMeta>>()?;
            c.read::<VecM<ScpHistoryEntry>>()?;
            if v != 0 {
                c.read::<u64>()?;
                c.read::<VecM<LedgerKey>>()?;
            }
            if v == 1 {
                c.read::<VecM<stellar_xdr::LedgerEntry>>()?;
            }
            out = Some(LedgerBundle {
                sequence: seq,
                hash: info.hash,
                prev_hash: Some(info.prev_hash),
                close_time: info.close_time,
                header_verified: true,
                txs,
            });
            Ok(())
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    r.map_err(xdr_error)?;
    if c.pos != bytes.len() {
        return Err(xdr_error(Error::Invalid));
    }
    out.ok_or_else(|| xdr_error(Error::Invalid))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use stellar_xdr::{Limits, WriteXdr};

    use super::*;
    use crate::chain::meta::{bundle_from_lcm, bundle_from_lcm_xdr, decode_bytes, XdrLimits};
    use crate::sim::generator::{GenConfig, Generator};
    use crate::sim::{scenario, MetaFormat, SimChain};

    const TESTNET: &str = "Test SDF Network ; September 2015";

    /// The generic path: decode everything, then bundle.
    fn generic(
        bytes: &[u8],
        limits: XdrLimits,
        nid: &[u8; 32],
        filter: &ContractFilter,
        claimed: Option<&str>,
    ) -> Result<LedgerBundle, String> {
        let lcm =
            decode_bytes("LedgerCloseMeta", "test", bytes, limits).map_err(|e| e.to_string())?;
        bundle_from_lcm(&lcm, nid, filter, claimed).map_err(|e| e.to_string())
    }

    /// The walk alone (no fallback).
    fn walked(
        bytes: &[u8],
        limits: XdrLimits,
        nid: &[u8; 32],
        filter: &ContractFilter,
        claimed: Option<&str>,
    ) -> Result<LedgerBundle, String> {
        bundle(bytes, limits.for_input(bytes.len()), nid, filter, claimed)
            .map_err(|e| e.to_string())
    }

    /// Every ledger of `chain` walks (without falling back) to the generic path's bundle, with
    /// the contract's filter and with none.
    fn walks_like_the_generic_path(chain: &SimChain) -> usize {
        let mut events = 0;
        for filter in [
            ContractFilter::from_bytes(chain.contract),
            ContractFilter::all(),
        ] {
            for l in chain.ledgers() {
                let bytes = chain.close_meta_xdr(l).unwrap();
                let hash = l.hash_hex();
                let want = generic(
                    &bytes,
                    XdrLimits::default(),
                    &chain.network_id,
                    &filter,
                    Some(&hash),
                )
                .unwrap();
                let got = walked(
                    &bytes,
                    XdrLimits::default(),
                    &chain.network_id,
                    &filter,
                    Some(&hash),
                )
                .unwrap();
                assert_eq!(got, want, "ledger {}", l.seq);
                events += got.event_count();
            }
        }
        events
    }

    #[test]
    fn generated_chains_in_every_format() {
        for (seed, format) in [
            (3, MetaFormat::V4InLcmV2),
            (4, MetaFormat::V3InLcmV1),
            (5, MetaFormat::V4InLcmV1),
        ] {
            let mut g = Generator::new(GenConfig {
                seed,
                format,
                txs_per_ledger: 12,
                target_streams: 60,
                ..GenConfig::default()
            });
            let mut chain = g.empty_chain();
            for _ in 0..150 {
                g.next_ledger(&mut chain).unwrap();
            }
            assert!(walks_like_the_generic_path(&chain) > 1_000);
        }
    }

    #[test]
    fn oracle_scenarios() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            for format in [MetaFormat::V4InLcmV2, MetaFormat::V3InLcmV1] {
                let s = scenario::load(&path, TESTNET, format).unwrap();
                n += walks_like_the_generic_path(&s.chain);
            }
        }
        assert!(n > 100, "{n}");
    }

    #[test]
    fn real_testnet_ledgers() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "fixtures/stellar/stellar-rpc/fixture_getLedgers_36233_36234_lcmV1_hashchain.json",
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let nid = crate::chain::meta::network_id(TESTNET);
        for l in v["response"]["result"]["ledgers"].as_array().unwrap() {
            let bytes = base64_simd::STANDARD
                .decode_to_vec(l["metadataXdr"].as_str().unwrap())
                .unwrap();
            let hash = l["hash"].as_str();
            for filter in [ContractFilter::all(), ContractFilter::from_bytes([7; 32])] {
                let want = generic(&bytes, XdrLimits::default(), &nid, &filter, hash).unwrap();
                let got = walked(&bytes, XdrLimits::default(), &nid, &filter, hash).unwrap();
                assert_eq!(got, want);
            }
            // A wrong network: the same error either way.
            let other =
                crate::chain::meta::network_id("Public Global Stellar Network ; September 2015");
            let f = ContractFilter::all();
            assert_eq!(
                bundle_from_lcm_xdr(&bytes, "test", XdrLimits::default(), &other, &f, hash)
                    .map_err(|e| e.to_string()),
                generic(&bytes, XdrLimits::default(), &other, &f, hash)
            );
        }
    }

    fn sample_ledger() -> (Vec<u8>, [u8; 32], [u8; 32], String) {
        let mut g = Generator::new(GenConfig {
            seed: 8,
            txs_per_ledger: 6,
            target_streams: 20,
            ..GenConfig::default()
        });
        let mut chain = g.empty_chain();
        for _ in 0..30 {
            g.next_ledger(&mut chain).unwrap();
        }
        let l = chain.tip().unwrap();
        (
            chain.close_meta_xdr(l).unwrap(),
            chain.network_id,
            chain.contract,
            l.hash_hex(),
        )
    }

    #[test]
    fn tight_limits_behave_the_same() {
        let (bytes, nid, contract, hash) = sample_ledger();
        let f = ContractFilter::from_bytes(contract);
        for depth in [0, 1, 5, 10, 12, 14, 16, 20, 24, 30, 33, 40, 500] {
            for max_len in [0, 100, bytes.len() - 1, bytes.len(), 64 << 20] {
                let limits = XdrLimits { depth, max_len };
                assert_eq!(
                    bundle_from_lcm_xdr(&bytes, "test", limits, &nid, &f, Some(&hash))
                        .map_err(|e| e.to_string()),
                    generic(&bytes, limits, &nid, &f, Some(&hash)),
                    "depth {depth} max_len {max_len}"
                );
            }
        }
    }

    #[test]
    fn a_non_canonical_bool_is_stored_re_encoded() {
        // A `health` event and a Stream entry carry Bools; written as 2, stellar-xdr reads
        // `false`. Both paths store the canonical encoding (the walk re-encodes such values).
        use crate::chain::synth::{ledger_close_meta, sym, SynthTx};
        use crate::sim::generator::{map, StreamModel};
        let contract = [9u8; 32];
        let nid = crate::chain::meta::network_id(TESTNET);
        let mut s = StreamModel::fresh(
            1,
            [1; 32],
            [2; 32],
            crate::domain::accrual::StreamKind::Linear,
            1_000,
            1,
            [10, 10, 1_010],
        );
        s.decommissioned = Some(true);
        let health = map(vec![
            ("is_underfunded", ScVal::Bool(true)),
            ("remaining_balance", crate::sim::generator::i128v(0)),
            ("seconds_remaining", ScVal::U64(0)),
            ("stream_id", ScVal::U64(1)),
        ])
        .unwrap();
        let tx = SynthTx {
            function: "f".into(),
            args: vec![],
            events: vec![(vec![sym("health").unwrap(), ScVal::U64(1)], health)],
            stream_changes: vec![(1, Some(s.to_scval().unwrap()))],
            success: true,
            seq_num: 1,
        };
        let (lcm, hash) = ledger_close_meta(&nid, 10, [0; 32], 100, contract, &[tx], true).unwrap();
        let hash = hex::encode(hash);
        let bytes = lcm.to_xdr(Limits::none()).unwrap();
        let f = ContractFilter::from_bytes(contract);
        let want = generic(&bytes, XdrLimits::default(), &nid, &f, Some(&hash)).unwrap();
        assert_eq!(
            walked(&bytes, XdrLimits::default(), &nid, &f, Some(&hash)).unwrap(),
            want
        );
        let mut b = bytes.clone();
        let mut mutated = 0;
        for key in ["is_underfunded", "decommissioned"] {
            let mut pat = sym(key).unwrap().to_xdr(Limits::none()).unwrap();
            pat.extend(ScVal::Bool(true).to_xdr(Limits::none()).unwrap());
            let at = (0..b.len() - pat.len())
                .find(|&i| b[i..i + pat.len()] == pat[..])
                .unwrap();
            b[at + pat.len() - 1] = 2;
            mutated += 1;
        }
        assert_eq!(mutated, 2);
        let got = walked(&b, XdrLimits::default(), &nid, &f, Some(&hash)).unwrap();
        assert_eq!(
            Ok(got.clone()),
            generic(&b, XdrLimits::default(), &nid, &f, Some(&hash))
        );
        assert_ne!(got, want);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Damaged XDR: whenever the walk takes it, the generic path gives the same bundle; and
        /// the public entry point always answers as the generic path does.
        #[test]
        fn damaged_meta(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            thread_local! {
                static SAMPLE: (Vec<u8>, [u8; 32], [u8; 32], String) = sample_ledger();
            }
            SAMPLE.with(|(bytes, nid, contract, hash)| {
                let mut b = bytes.clone();
                for (at, v) in &edits {
                    let i = at.index(b.len());
                    b[i] = *v;
                }
                if let Some(c) = cut {
                    b.truncate(c.index(b.len()));
                }
                for f in [ContractFilter::from_bytes(*contract), ContractFilter::all()] {
                    for claimed in [Some(hash.as_str()), None] {
                        let want = generic(&b, XdrLimits::default(), nid, &f, claimed);
                        if let Ok(got) = walked(&b, XdrLimits::default(), nid, &f, claimed) {
                            prop_assert_eq!(Ok(got), want.clone());
                        }
                        let public = bundle_from_lcm_xdr(&b, "test", XdrLimits::default(), nid, &f, claimed)
                            .map_err(|e| e.to_string());
                        prop_assert_eq!(public, want);
                    }
                }
                Ok(())
            })?;
        }
    }
}
