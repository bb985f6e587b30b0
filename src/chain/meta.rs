//! XDR → bundle: `TransactionMeta` V3/V4 events and `Stream` entry changes, `LedgerCloseMeta`
//! V0/V1/V2 with envelope matching by hash, and ledger header verification. Every decode runs
//! under explicit depth and length limits ([`XdrLimits`]).

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use stellar_xdr::{
    ContractEvent as XdrContractEvent, ContractEventBody, ContractEventType,
    FeeBumpTransactionInnerTx, GeneralizedTransactionSet, HostFunction,
    InnerTransactionResultResult, LedgerCloseMeta, LedgerEntryChange, LedgerEntryData,
    LedgerHeader, LedgerHeaderHistoryEntry, LedgerKey, Limits, OperationBody, ReadXdr, ScAddress,
    TransactionEnvelope, TransactionMeta, TransactionPhase, TransactionResult,
    TransactionResultResult, TxSetComponent, WriteXdr,
};

use super::{
    event_id, ChainError, LedgerBundle, RawContractEvent, StreamChange, StreamEntryChange, TxBundle,
};
use crate::contract::{events::xdr_b64, stream_key_id, ContractEvent, StreamEntry};

/// Depth and length limits for every XDR decode of outside data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdrLimits {
    /// Maximum nesting depth (the Soroban host uses 500).
    pub depth: u32,
    /// Maximum decoded bytes of one payload.
    pub max_len: usize,
}

impl Default for XdrLimits {
    fn default() -> Self {
        XdrLimits {
            depth: 500,
            max_len: 64 * 1024 * 1024,
        }
    }
}

impl XdrLimits {
    /// Limits for one payload of `input_len` bytes (base64 or raw): never more than `max_len`.
    pub fn for_input(&self, input_len: usize) -> Limits {
        Limits {
            depth: self.depth,
            len: input_len.min(self.max_len),
        }
    }
}

/// Decode base64 XDR of type `T` under `limits`, naming `what` and `location` on failure.
pub fn decode_b64<T: ReadXdr>(
    what: &'static str,
    location: &str,
    b64: &str,
    limits: XdrLimits,
) -> Result<T, ChainError> {
    let bytes = decode_base64(what, location, b64, limits)?;
    decode_bytes(what, location, &bytes, limits)
}

/// The bytes of a base64 payload (surrounding whitespace ignored) that may hold at most
/// `limits.max_len` bytes of XDR.
fn decode_base64(
    what: &'static str,
    location: &str,
    b64: &str,
    limits: XdrLimits,
) -> Result<Vec<u8>, ChainError> {
    let b64 = b64.trim();
    if b64.len() > limits.max_len.saturating_mul(2) {
        return Err(ChainError::Xdr {
            what,
            location: location.to_string(),
            message: format!("payload of {} bytes exceeds the limit", b64.len()),
        });
    }
    // Decoding base64 in one go is much faster than stellar-xdr's streaming base64 reader, and
    // SIMD faster still. Both accept exactly canonical padded base64; on an error the `base64`
    // crate says what is wrong.
    if let Ok(bytes) = base64_simd::STANDARD.decode_to_vec(b64.as_bytes()) {
        return Ok(bytes);
    }
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ChainError::Xdr {
            what,
            location: location.to_string(),
            message: format!("invalid base64: {e}"),
        })
}

/// Decode raw XDR bytes of type `T` under `limits` (trailing bytes are an error).
pub fn decode_bytes<T: ReadXdr>(
    what: &'static str,
    location: &str,
    bytes: &[u8],
    limits: XdrLimits,
) -> Result<T, ChainError> {
    T::from_xdr(bytes, limits.for_input(bytes.len())).map_err(|e| ChainError::Xdr {
        what,
        location: location.to_string(),
        message: e.to_string(),
    })
}

/// Which contract's events and storage a bundle keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContractFilter {
    id: Option<[u8; 32]>,
}

impl ContractFilter {
    /// Every contract.
    pub fn all() -> Self {
        ContractFilter { id: None }
    }

    /// Only the contract with this `C…` strkey.
    pub fn contract(strkey: &str) -> Result<Self, ChainError> {
        match stellar_strkey::Strkey::from_string(strkey) {
            Ok(stellar_strkey::Strkey::Contract(c)) => Ok(ContractFilter { id: Some(c.0) }),
            _ => Err(ChainError::Invalid(format!(
                "`{strkey}` is not a contract strkey (C…)"
            ))),
        }
    }

    pub fn from_bytes(id: [u8; 32]) -> Self {
        ContractFilter { id: Some(id) }
    }

    /// True when every contract matches.
    pub fn is_all(&self) -> bool {
        self.id.is_none()
    }

    pub fn matches_id(&self, id: &[u8; 32]) -> bool {
        self.id.as_ref().is_none_or(|mine| mine == id)
    }

    pub fn matches_address(&self, a: &ScAddress) -> bool {
        match a {
            ScAddress::Contract(c) => self.matches_id(&c.0 .0),
            _ => false,
        }
    }
}

/// Network id = sha256(passphrase).
pub fn network_id(passphrase: &str) -> [u8; 32] {
    Sha256::digest(passphrase.as_bytes()).into()
}

/// Whether a transaction result is a success (including fee-bump inner success).
pub fn tx_successful(r: &TransactionResult) -> bool {
    match &r.result {
        TransactionResultResult::TxSuccess(_) => true,
        TransactionResultResult::TxFeeBumpInnerSuccess(inner) => {
            matches!(
                inner.result.result,
                InnerTransactionResultResult::TxSuccess(_)
            )
        }
        _ => false,
    }
}

/// The contract invocation of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Strkey of the invoked contract.
    pub contract: String,
    /// Its id, when it is a contract address.
    pub contract_id: Option<[u8; 32]>,
    pub function: String,
    /// Arguments, base64 XDR `ScVal` each.
    pub args_xdr: Vec<String>,
}

impl Invocation {
    /// Whether it invokes a contract the filter keeps.
    pub fn ours(&self, filter: &ContractFilter) -> bool {
        self.contract_id.is_some_and(|id| filter.matches_id(&id))
    }
}

/// The contract invocation of an envelope (its first `InvokeHostFunction` operation).
pub fn invocation_of(env: &TransactionEnvelope) -> Option<Invocation> {
    let ops = match env {
        TransactionEnvelope::TxV0(e) => &e.tx.operations,
        TransactionEnvelope::Tx(e) => &e.tx.operations,
        TransactionEnvelope::TxFeeBump(e) => match &e.tx.inner_tx {
            FeeBumpTransactionInnerTx::Tx(inner) => &inner.tx.operations,
        },
    };
    ops.iter().find_map(|op| match &op.body {
        OperationBody::InvokeHostFunction(ih) => match &ih.host_function {
            HostFunction::InvokeContract(a) => Some(Invocation {
                contract: crate::contract::scval::render_address(&a.contract_address),
                contract_id: match &a.contract_address {
                    ScAddress::Contract(c) => Some(c.0 .0),
                    _ => None,
                },
                function: String::from_utf8_lossy(a.function_name.0.as_slice()).into_owned(),
                args_xdr: a.args.iter().map(xdr_b64).collect(),
            }),
            _ => None,
        },
        _ => None,
    })
}

/// The contract invocation of an envelope: (contract strkey, function name, args base64).
pub fn invocation(env: &TransactionEnvelope) -> Option<(String, String, Vec<String>)> {
    invocation_of(env).map(|i| (i.contract, i.function, i.args_xdr))
}

/// Identity of one transaction while its meta is decoded.
#[derive(Debug, Clone, Copy)]
pub struct TxContext<'a> {
    pub ledger: u32,
    pub tx_hash: &'a str,
    /// 1-based.
    pub application_order: u32,
}

/// Contract events of a meta, per operation: `(op_index, events)`. Only V3 and V4 carry them.
fn events_per_op(meta: &TransactionMeta) -> Vec<(u32, &[XdrContractEvent])> {
    match meta {
        TransactionMeta::V3(v3) => match &v3.soroban_meta {
            Some(sm) => vec![(0, sm.events.as_slice())],
            None => Vec::new(),
        },
        TransactionMeta::V4(v4) => v4
            .operations
            .iter()
            .enumerate()
            .map(|(i, op)| (i as u32, op.events.as_slice()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Every `LedgerEntryChange` of the meta, in application order.
fn all_changes(meta: &TransactionMeta) -> Vec<&LedgerEntryChange> {
    let mut out = Vec::new();
    match meta {
        TransactionMeta::V0(ops) => {
            for op in ops.iter() {
                out.extend(op.changes.0.iter());
            }
        }
        TransactionMeta::V1(m) => {
            out.extend(m.tx_changes.0.iter());
            for op in m.operations.iter() {
                out.extend(op.changes.0.iter());
            }
        }
        TransactionMeta::V2(m) => {
            out.extend(m.tx_changes_before.0.iter());
            for op in m.operations.iter() {
                out.extend(op.changes.0.iter());
            }
            out.extend(m.tx_changes_after.0.iter());
        }
        TransactionMeta::V3(m) => {
            out.extend(m.tx_changes_before.0.iter());
            for op in m.operations.iter() {
                out.extend(op.changes.0.iter());
            }
            out.extend(m.tx_changes_after.0.iter());
        }
        TransactionMeta::V4(m) => {
            out.extend(m.tx_changes_before.0.iter());
            for op in m.operations.iter() {
                out.extend(op.changes.0.iter());
            }
            out.extend(m.tx_changes_after.0.iter());
        }
    }
    out
}

/// Post-transaction `Stream` entries of the filtered contract(s): the last change per id.
pub fn stream_changes(meta: &TransactionMeta, filter: &ContractFilter) -> Vec<StreamEntryChange> {
    let mut order: Vec<u64> = Vec::new();
    let mut last: HashMap<u64, StreamChange> = HashMap::new();
    for ch in all_changes(meta) {
        let (id, change) = match ch {
            LedgerEntryChange::Created(e)
            | LedgerEntryChange::Updated(e)
            | LedgerEntryChange::Restored(e) => {
                let LedgerEntryData::ContractData(cd) = &e.data else {
                    continue;
                };
                if !filter.matches_address(&cd.contract) {
                    continue;
                }
                let Some(id) = stream_key_id(&cd.key) else {
                    continue;
                };
                let value_xdr = xdr_b64(&cd.val);
                let change = match StreamEntry::from_scval(&cd.val) {
                    Ok(entry) => StreamChange::Upsert {
                        entry: Box::new(entry),
                        value_xdr,
                    },
                    Err(reason) => StreamChange::Unrecognized { reason, value_xdr },
                };
                (id, change)
            }
            LedgerEntryChange::Removed(LedgerKey::ContractData(k)) => {
                if !filter.matches_address(&k.contract) {
                    continue;
                }
                let Some(id) = stream_key_id(&k.key) else {
                    continue;
                };
                (id, StreamChange::Removed)
            }
            _ => continue,
        };
        if last.insert(id, change).is_none() {
            order.push(id);
        }
    }
    order
        .into_iter()
        .filter_map(|id| {
            last.remove(&id).map(|change| StreamEntryChange {
                stream_id: id,
                change,
            })
        })
        .collect()
}

/// Decode one XDR contract event into a [`RawContractEvent`].
pub fn raw_event(
    ctx: TxContext<'_>,
    op_index: u32,
    event_index: u32,
    contract_id: String,
    topics: &[stellar_xdr::ScVal],
    data: &stellar_xdr::ScVal,
    function: Option<&str>,
) -> RawContractEvent {
    raw_event_with_xdr(
        ctx,
        op_index,
        event_index,
        contract_id,
        topics,
        data,
        topics.iter().map(xdr_b64).collect(),
        xdr_b64(data),
        function,
    )
}

/// [`raw_event`] with the topics' and data's base64 XDR already at hand.
#[allow(clippy::too_many_arguments)]
pub(crate) fn raw_event_with_xdr(
    ctx: TxContext<'_>,
    op_index: u32,
    event_index: u32,
    contract_id: String,
    topics: &[stellar_xdr::ScVal],
    data: &stellar_xdr::ScVal,
    topics_xdr: Vec<String>,
    data_xdr: String,
    function: Option<&str>,
) -> RawContractEvent {
    let decoded = ContractEvent::decode(topics, data);
    let topic = topics
        .first()
        .and_then(crate::contract::scval::as_symbol)
        .map(|s| String::from_utf8_lossy(s).into_owned());
    RawContractEvent {
        event_id: event_id(ctx.ledger, ctx.application_order, op_index, event_index),
        ledger: ctx.ledger,
        tx_hash: ctx.tx_hash.to_string(),
        application_order: ctx.application_order,
        op_index,
        event_index,
        contract_id,
        topic,
        stream_id: decoded.stream_id(),
        topics_xdr,
        data_xdr,
        decoded,
        function: function.map(str::to_string),
    }
}

pub(crate) fn warn_unrecognized(
    ctx: TxContext<'_>,
    raw: &RawContractEvent,
    filter: &ContractFilter,
) {
    if !filter.is_all() {
        if let ContractEvent::Unrecognized(u) = &raw.decoded {
            tracing::warn!(
                ledger = ctx.ledger,
                tx_hash = ctx.tx_hash,
                event_id = %raw.event_id,
                topic = u.topic.as_deref().unwrap_or(""),
                reason = %u.reason,
                "unrecognized contract event kept raw"
            );
        }
    }
}

/// Contract events (type `Contract`, contract id matching `filter`) of one meta, in emission order.
pub fn contract_events(
    ctx: TxContext<'_>,
    meta: &TransactionMeta,
    filter: &ContractFilter,
    function: Option<&str>,
) -> Vec<RawContractEvent> {
    let mut out = Vec::new();
    // Strkey-encoding the same contract id for every event is measurable; cache the last one.
    let mut last_cid: Option<([u8; 32], String)> = None;
    for (op_index, events) in events_per_op(meta) {
        for (i, ev) in events.iter().enumerate() {
            if ev.type_ != ContractEventType::Contract {
                continue;
            }
            let Some(cid) = &ev.contract_id else { continue };
            if !filter.matches_id(&cid.0 .0) {
                continue;
            }
            let ContractEventBody::V0(body) = &ev.body;
            let cid_str = match &last_cid {
                Some((bytes, s)) if *bytes == cid.0 .0 => s.clone(),
                _ => {
                    let s = cid.to_string();
                    last_cid = Some((cid.0 .0, s.clone()));
                    s
                }
            };
            let raw = raw_event(
                ctx,
                op_index,
                i as u32,
                cid_str,
                body.topics.as_slice(),
                &body.data,
                function,
            );
            warn_unrecognized(ctx, &raw, filter);
            out.push(raw);
        }
    }
    out
}

/// Build the [`TxBundle`] of one **successful** transaction, or `None` when it did not touch the
/// filtered contract (no event, no `Stream` change, no invocation of it).
pub fn tx_bundle(
    ctx: TxContext<'_>,
    envelope: Option<&TransactionEnvelope>,
    meta: &TransactionMeta,
    filter: &ContractFilter,
) -> Option<TxBundle> {
    let inv = envelope.and_then(invocation_of);
    let function = inv.as_ref().map(|i| i.function.as_str());
    let events = contract_events(ctx, meta, filter, function);
    let changes = stream_changes(meta, filter);
    assemble(ctx, inv, filter, events, changes)
}

/// A transaction's bundle from its invocation, events and `Stream` changes (however they were
/// decoded), or `None` when it does not concern the filtered contract.
pub(crate) fn assemble(
    ctx: TxContext<'_>,
    inv: Option<Invocation>,
    filter: &ContractFilter,
    events: Vec<RawContractEvent>,
    stream_changes: Vec<StreamEntryChange>,
) -> Option<TxBundle> {
    let invoked_ours = inv.as_ref().is_some_and(|i| i.ours(filter));
    if events.is_empty() && stream_changes.is_empty() && !invoked_ours {
        return None;
    }
    let (invoked_contract, function, args_xdr) = match inv {
        Some(i) => (Some(i.contract), Some(i.function), i.args_xdr),
        None => (None, None, Vec::new()),
    };
    Some(TxBundle {
        tx_hash: ctx.tx_hash.to_string(),
        application_order: ctx.application_order,
        function,
        invoked_contract,
        args_xdr,
        events,
        stream_changes,
    })
}

/// Verified header facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub sequence: u32,
    pub hash: String,
    pub prev_hash: String,
    pub close_time: u64,
}

/// Hash a header: hex sha256 of its XDR.
pub fn header_hash(h: &LedgerHeader) -> Result<[u8; 32], ChainError> {
    let bytes = h.to_xdr(Limits::none()).map_err(|e| ChainError::Xdr {
        what: "LedgerHeader",
        location: "re-encoding for hashing".into(),
        message: e.to_string(),
    })?;
    Ok(Sha256::digest(&bytes).into())
}

/// Check a header against the hash the server claims, returning its facts.
pub fn verify_header(
    h: &LedgerHeader,
    claimed_hash: Option<&str>,
    location: &str,
) -> Result<HeaderInfo, ChainError> {
    let computed = hex::encode(header_hash(h)?);
    if let Some(claimed) = claimed_hash {
        if !claimed.eq_ignore_ascii_case(&computed) {
            return Err(ChainError::HashMismatch {
                ledger: h.ledger_seq,
                claimed: claimed.to_string(),
                computed,
            });
        }
    }
    let _ = location;
    Ok(HeaderInfo {
        sequence: h.ledger_seq,
        hash: computed,
        prev_hash: hex::encode(h.previous_ledger_hash.0),
        close_time: h.scp_value.close_time.0,
    })
}

/// Decode a base64 header that may be a bare `LedgerHeader` (Horizon `header_xdr`, RPC
/// `getLatestLedger`) or a `LedgerHeaderHistoryEntry` (RPC `getLedgers`), and verify it.
pub fn verify_header_b64(
    b64: &str,
    claimed_hash: Option<&str>,
    location: &str,
    limits: XdrLimits,
) -> Result<HeaderInfo, ChainError> {
    if let Ok(entry) =
        decode_b64::<LedgerHeaderHistoryEntry>("LedgerHeaderHistoryEntry", location, b64, limits)
    {
        let info = verify_header(&entry.header, claimed_hash, location)?;
        if hex::encode(entry.hash.0) != info.hash {
            return Err(ChainError::HashMismatch {
                ledger: info.sequence,
                claimed: hex::encode(entry.hash.0),
                computed: info.hash,
            });
        }
        return Ok(info);
    }
    let h: LedgerHeader = decode_b64(
        "LedgerHeader (or LedgerHeaderHistoryEntry)",
        location,
        b64,
        limits,
    )?;
    verify_header(&h, claimed_hash, location)
}

/// The envelopes of a generalized transaction set, in set order.
pub(crate) fn gen_set_envelopes(s: &GeneralizedTransactionSet) -> Vec<&TransactionEnvelope> {
    let GeneralizedTransactionSet::V1(v1) = s;
    let mut out = Vec::new();
    for phase in v1.phases.iter() {
        match phase {
            TransactionPhase::V0(comps) => {
                for c in comps.iter() {
                    let TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) = c;
                    out.extend(c.txs.iter());
                }
            }
            TransactionPhase::V1(par) => {
                for stage in par.execution_stages.iter() {
                    for cluster in stage.0.iter() {
                        out.extend(cluster.0.iter());
                    }
                }
            }
        }
    }
    out
}

fn tx_set_envelopes(lcm: &LedgerCloseMeta) -> Vec<&TransactionEnvelope> {
    match lcm {
        LedgerCloseMeta::V0(m) => m.tx_set.txs.iter().collect(),
        LedgerCloseMeta::V1(m) => gen_set_envelopes(&m.tx_set),
        LedgerCloseMeta::V2(m) => gen_set_envelopes(&m.tx_set),
    }
}

/// `(tx hash, result, meta)` of one processed transaction.
pub type TxResultRef<'a> = (&'a [u8; 32], &'a TransactionResult, &'a TransactionMeta);

/// The processed transactions of a `LedgerCloseMeta`, in application order.
pub fn lcm_results(lcm: &LedgerCloseMeta) -> Vec<TxResultRef<'_>> {
    match lcm {
        LedgerCloseMeta::V0(m) => m
            .tx_processing
            .iter()
            .map(|t| {
                (
                    &t.result.transaction_hash.0,
                    &t.result.result,
                    &t.tx_apply_processing,
                )
            })
            .collect(),
        LedgerCloseMeta::V1(m) => m
            .tx_processing
            .iter()
            .map(|t| {
                (
                    &t.result.transaction_hash.0,
                    &t.result.result,
                    &t.tx_apply_processing,
                )
            })
            .collect(),
        LedgerCloseMeta::V2(m) => m
            .tx_processing
            .iter()
            .map(|t| {
                (
                    &t.result.transaction_hash.0,
                    &t.result.result,
                    &t.tx_apply_processing,
                )
            })
            .collect(),
    }
}

/// Sequence number of a `LedgerCloseMeta`.
pub fn lcm_sequence(lcm: &LedgerCloseMeta) -> u32 {
    match lcm {
        LedgerCloseMeta::V0(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V1(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V2(m) => m.ledger_header.header.ledger_seq,
    }
}

/// Build a [`LedgerBundle`] from a `LedgerCloseMeta` (V0/V1/V2). Verifies sha256(header) against
/// the entry's hash and `claimed_hash`; matches envelopes to results by hash under `network_id`.
pub fn bundle_from_lcm(
    lcm: &LedgerCloseMeta,
    network_id: &[u8; 32],
    filter: &ContractFilter,
    claimed_hash: Option<&str>,
) -> Result<LedgerBundle, ChainError> {
    let entry = match lcm {
        LedgerCloseMeta::V0(m) => &m.ledger_header,
        LedgerCloseMeta::V1(m) => &m.ledger_header,
        LedgerCloseMeta::V2(m) => &m.ledger_header,
    };
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
    let results = lcm_results(lcm);
    let mut envelopes: Option<HashMap<[u8; 32], &TransactionEnvelope>> = None;
    let mut txs = Vec::new();
    for (i, (hash, result, meta)) in results.into_iter().enumerate() {
        if !tx_successful(result) {
            continue;
        }
        let tx_hash = hex::encode(hash);
        let ctx = TxContext {
            ledger: seq,
            tx_hash: &tx_hash,
            application_order: i as u32 + 1,
        };
        // Cheap pre-check without the envelope; if nothing of ours is in the meta we still need
        // the envelope to see whether the tx invoked our contract.
        if envelopes.is_none() {
            let mut map = HashMap::new();
            for env in tx_set_envelopes(lcm) {
                let h = env.hash(*network_id).map_err(|e| ChainError::Xdr {
                    what: "TransactionEnvelope",
                    location: format!("{location}, hashing an envelope"),
                    message: e.to_string(),
                })?;
                map.insert(h, env);
            }
            envelopes = Some(map);
        }
        let env = envelopes.as_ref().and_then(|m| m.get(hash).copied());
        if env.is_none() {
            return Err(ChainError::EnvelopeNotFound {
                ledger: seq,
                tx_hash,
            });
        }
        if let Some(tb) = tx_bundle(ctx, env, meta, filter) {
            txs.push(tb);
        }
    }
    Ok(LedgerBundle {
        sequence: seq,
        hash: info.hash,
        prev_hash: Some(info.prev_hash),
        close_time: info.close_time,
        header_verified: true,
        txs,
    })
}

/// [`bundle_from_lcm`] from the XDR bytes of a `LedgerCloseMeta`, decoded under `limits`: the
/// meta is walked in place (see [`super::walk`]), keeping the events' and `Stream` entries' raw
/// XDR instead of decoding and re-encoding them. The same bundle (or error) as decoding with
/// [`decode_bytes`] and calling [`bundle_from_lcm`], which is what happens whenever the walk
/// cannot take the input.
pub fn bundle_from_lcm_xdr(
    bytes: &[u8],
    location: &str,
    limits: XdrLimits,
    network_id: &[u8; 32],
    filter: &ContractFilter,
    claimed_hash: Option<&str>,
) -> Result<LedgerBundle, ChainError> {
    match super::walk::bundle(
        bytes,
        limits.for_input(bytes.len()),
        network_id,
        filter,
        claimed_hash,
    ) {
        Ok(b) => Ok(b),
        Err(_) => {
            let lcm: LedgerCloseMeta = decode_bytes("LedgerCloseMeta", location, bytes, limits)?;
            bundle_from_lcm(&lcm, network_id, filter, claimed_hash)
        }
    }
}

/// [`bundle_from_lcm_xdr`] from base64 (as RPC's `metadataXdr`), with [`decode_b64`]'s checks.
pub fn bundle_from_lcm_b64(
    b64: &str,
    location: &str,
    limits: XdrLimits,
    network_id: &[u8; 32],
    filter: &ContractFilter,
    claimed_hash: Option<&str>,
) -> Result<LedgerBundle, ChainError> {
    let bytes = decode_base64("LedgerCloseMeta", location, b64, limits)?;
    bundle_from_lcm_xdr(&bytes, location, limits, network_id, filter, claimed_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_filter() {
        let f =
            ContractFilter::contract("CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD2KM")
                .unwrap();
        assert!(!f.is_all());
        let Ok(stellar_strkey::Strkey::Contract(c)) = stellar_strkey::Strkey::from_string(
            "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD2KM",
        ) else {
            panic!("strkey")
        };
        assert!(f.matches_id(&c.0));
        assert!(!f.matches_id(&[0xff; 32]));
        assert!(ContractFilter::all().matches_id(&[0u8; 32]));
        assert!(ContractFilter::contract(
            "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAGO6V"
        )
        .is_err());
        assert!(ContractFilter::contract("nonsense").is_err());
    }

    #[test]
    fn stream_key() {
        let k = crate::chain::synth::stream_key(42).unwrap();
        assert_eq!(stream_key_id(&k), Some(42));
        assert_eq!(stream_key_id(&stellar_xdr::ScVal::U64(42)), None);
        let other = stellar_xdr::ScVal::Vec(Some(stellar_xdr::ScVec(
            vec![
                crate::chain::synth::sym("Config").unwrap(),
                stellar_xdr::ScVal::U64(1),
            ]
            .try_into()
            .unwrap(),
        )));
        assert_eq!(stream_key_id(&other), None);
    }

    #[test]
    fn limits_bound_the_input() {
        let l = XdrLimits {
            depth: 7,
            max_len: 100,
        };
        assert_eq!(l.for_input(50).len, 50);
        assert_eq!(l.for_input(500).len, 100);
        assert_eq!(l.for_input(500).depth, 7);
        let err = decode_b64::<stellar_xdr::ScVal>("ScVal", "here", "!!!", l).unwrap_err();
        assert!(err.to_string().contains("ScVal") && err.to_string().contains("here"));
    }

    proptest::proptest! {
        /// The SIMD base64 decoder accepts exactly what the `base64` crate accepts, with the
        /// same bytes.
        #[test]
        fn base64_decoders_agree(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            noise in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..3),
        ) {
            use base64::Engine;
            let mut s = base64::engine::general_purpose::STANDARD.encode(&bytes).into_bytes();
            for (at, v) in noise {
                if !s.is_empty() {
                    let i = at.index(s.len());
                    let alphabet = b"AQgz09+/= \n-_";
                    s[i] = alphabet[usize::from(v) % alphabet.len()];
                }
            }
            let a = base64::engine::general_purpose::STANDARD.decode(&s).ok();
            let b = base64_simd::STANDARD.decode_to_vec(&s).ok();
            proptest::prop_assert_eq!(a, b);
        }
    }
}
