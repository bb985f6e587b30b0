//! The simulated chain: ledgers whose headers hash-chain like Stellar's, transactions with real
//! envelopes (hash = sha256 of the signature payload under the network passphrase), and the XDR
//! a node would serve for them: `TransactionMeta` V3/V4 and `LedgerCloseMeta` V1/V2.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use stellar_xdr::{
    ContractDataDurability, ContractEvent, ContractEventBody, ContractEventType, ContractEventV0,
    ContractId, DiagnosticEvent, ExtensionPoint, GeneralizedTransactionSet, Hash, HostFunction,
    InvokeContractArgs, InvokeHostFunctionOp, InvokeHostFunctionResult, LedgerCloseMeta,
    LedgerCloseMetaExt, LedgerEntry, LedgerEntryChangeType, LedgerEntryChanges, LedgerEntryExt,
    LedgerEntryType, LedgerHeader, LedgerHeaderExt, LedgerHeaderHistoryEntry,
    LedgerHeaderHistoryEntryExt, LedgerKey, LedgerKeyContractData, Limited, Limits, Memo,
    MuxedAccount, Operation, OperationBody, OperationResult, OperationResultTr, Preconditions,
    ReadXdr, ScAddress, ScSymbol, ScVal, ScVec, ScpHistoryEntry, SequenceNumber,
    SorobanTransactionMetaExt, SorobanTransactionMetaV2, StellarValue, StellarValueExt, TimePoint,
    Transaction, TransactionEnvelope, TransactionEvent, TransactionExt, TransactionMeta,
    TransactionPhase, TransactionResult, TransactionResultExt, TransactionResultPair,
    TransactionResultResult, TransactionResultSet, TransactionSetV1, TransactionV1Envelope,
    TxSetComponent, TxSetComponentTxsMaybeDiscountedFee, Uint256, UpgradeEntryMeta, VecM, WriteXdr,
};

/// Simulator errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("XDR encoding failed: {0}")]
    Xdr(#[from] stellar_xdr::Error),
    #[error("scenario {file}: {reason}")]
    Scenario { file: String, reason: String },
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("simulator: {0}")]
    Invalid(String),
}

/// Which XDR versions the chain is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaFormat {
    /// Protocol 20–22: `TransactionMeta::V3` inside `LedgerCloseMeta::V1`.
    V3InLcmV1,
    /// Protocol 23+: `TransactionMeta::V4` inside `LedgerCloseMeta::V2`.
    V4InLcmV2,
    /// `TransactionMeta::V4` inside `LedgerCloseMeta::V1` (seen during the P23 transition).
    V4InLcmV1,
}

impl MetaFormat {
    /// The protocol version the headers carry.
    pub fn protocol(self) -> u32 {
        match self {
            Self::V3InLcmV1 => 22,
            Self::V4InLcmV2 | Self::V4InLcmV1 => 23,
        }
    }
}

/// A contract event to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// The emitting contract.
    pub contract: [u8; 32],
    pub topics: Vec<ScVal>,
    pub data: ScVal,
}

/// A change of a `Stream` storage entry.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamChange {
    /// The entry now holds this `Stream` map.
    Set { stream_id: u64, value: ScVal },
    /// The entry was deleted (`closed`).
    Removed { stream_id: u64 },
}

/// A transaction to apply: one `InvokeHostFunction` call of the simulated contract.
#[derive(Debug, Clone, PartialEq)]
pub struct TxSpec {
    pub function: String,
    pub args: Vec<ScVal>,
    pub success: bool,
    /// Every contract event, in emission order (ours and other contracts').
    pub events: Vec<SimEvent>,
    pub stream_changes: Vec<StreamChange>,
}

/// What a transaction did, in brief (the whole [`TxSpec`] is [`SimTx::replay_spec`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxBrief {
    /// The invoked function.
    pub function: String,
    pub success: bool,
    /// Contract events emitted (ours and other contracts'; none when it failed).
    pub events: usize,
}

/// Kind of a stored `Stream` entry change (`LedgerEntryChange` arm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Created,
    Updated,
    State,
    Removed,
}

/// A `Stream` entry change of a stored transaction. The value is the `ScVal`'s XDR, shared with
/// the chain's current entries and with the `State` change of the next transaction that touches
/// the stream: each version of an entry is held once.
#[derive(Debug, Clone)]
struct StoredChange {
    kind: ChangeKind,
    stream_id: u64,
    last_modified: u32,
    value: Option<Arc<[u8]>>,
}

/// A transaction as included in a ledger. The chain keeps what a node stores, its XDR, in a
/// compact form (events and entries as XDR bytes); the `TransactionMeta` is assembled on demand.
#[derive(Debug, Clone)]
pub struct SimTx {
    pub spec: TxBrief,
    /// 1-based application order in its ledger.
    pub application_order: u32,
    pub hash: [u8; 32],
    pub result: TransactionResultPair,
    format: MetaFormat,
    contract: [u8; 32],
    envelope_xdr: Box<[u8]>,
    /// Each emitted `ContractEvent`'s XDR, concatenated (`spec.events` of them).
    events_xdr: Box<[u8]>,
    changes: Box<[StoredChange]>,
}

fn xdr_write<T: WriteXdr>(w: &mut Limited<Vec<u8>>, v: &T) -> Result<(), SimError> {
    v.write_xdr(w).map_err(SimError::Xdr)
}

fn raw_write(w: &mut Limited<Vec<u8>>, bytes: &[u8]) {
    w.inner.extend_from_slice(bytes);
}

fn xdr_writer() -> Limited<Vec<u8>> {
    Limited::new(Vec::new(), Limits::none())
}

fn xdr_len(n: usize) -> Result<u32, SimError> {
    u32::try_from(n).map_err(|_| SimError::Invalid(format!("{n} items do not fit an XDR array")))
}

impl SimTx {
    /// The envelope's XDR.
    pub fn envelope_xdr(&self) -> &[u8] {
        &self.envelope_xdr
    }

    /// The envelope.
    pub fn envelope(&self) -> Result<TransactionEnvelope, SimError> {
        Ok(TransactionEnvelope::from_xdr(
            &self.envelope_xdr,
            Limits::none(),
        )?)
    }

    /// Base64 of the envelope, as Horizon serves it.
    pub fn envelope_b64(&self) -> String {
        B64.encode(&self.envelope_xdr)
    }

    /// Base64 of the `TransactionResult`, as Horizon serves it.
    pub fn result_b64(&self) -> Result<String, SimError> {
        Ok(self.result.result.to_xdr_base64(Limits::none())?)
    }

    /// The emitted contract events (ours and other contracts'), in order.
    pub fn contract_events(&self) -> Result<Vec<ContractEvent>, SimError> {
        let mut r = Limited::new(&self.events_xdr[..], Limits::none());
        (0..self.spec.events)
            .map(|_| ContractEvent::read_xdr(&mut r).map_err(SimError::Xdr))
            .collect()
    }

    /// The `TransactionMeta` XDR (V3 or V4 as the chain's format says).
    pub fn meta_xdr(&self) -> Result<Vec<u8>, SimError> {
        let mut w = xdr_writer();
        self.write_meta(&mut w)?;
        Ok(w.inner)
    }

    /// Base64 of the `TransactionMeta`, as Horizon serves it.
    pub fn meta_b64(&self) -> Result<String, SimError> {
        Ok(B64.encode(self.meta_xdr()?))
    }

    /// The `TransactionMeta`.
    pub fn meta(&self) -> Result<TransactionMeta, SimError> {
        Ok(TransactionMeta::from_xdr(self.meta_xdr()?, Limits::none())?)
    }

    fn write_changes(&self, w: &mut Limited<Vec<u8>>) -> Result<(), SimError> {
        let contract = contract_address(self.contract);
        xdr_write(w, &xdr_len(self.changes.len())?)?;
        for c in self.changes.iter() {
            let key = stream_key(c.stream_id)?;
            match (c.kind, &c.value) {
                (ChangeKind::Removed, _) => {
                    xdr_write(w, &LedgerEntryChangeType::Removed)?;
                    xdr_write(
                        w,
                        &LedgerKey::ContractData(LedgerKeyContractData {
                            contract: contract.clone(),
                            key,
                            durability: ContractDataDurability::Persistent,
                        }),
                    )?;
                }
                (kind, Some(value)) => {
                    xdr_write(
                        w,
                        &match kind {
                            ChangeKind::Created => LedgerEntryChangeType::Created,
                            ChangeKind::Updated => LedgerEntryChangeType::Updated,
                            _ => LedgerEntryChangeType::State,
                        },
                    )?;
                    // LedgerEntry { last_modified, data: ContractData(entry), ext }
                    xdr_write(w, &c.last_modified)?;
                    xdr_write(w, &LedgerEntryType::ContractData)?;
                    xdr_write(w, &ExtensionPoint::V0)?;
                    xdr_write(w, &contract)?;
                    xdr_write(w, &key)?;
                    xdr_write(w, &ContractDataDurability::Persistent)?;
                    raw_write(w, value);
                    xdr_write(w, &LedgerEntryExt::V0)?;
                }
                (_, None) => {
                    return Err(SimError::Invalid(format!(
                        "stored change of stream {} has no value",
                        c.stream_id
                    )))
                }
            }
        }
        Ok(())
    }

    fn write_events(&self, w: &mut Limited<Vec<u8>>) -> Result<(), SimError> {
        xdr_write(w, &xdr_len(self.spec.events)?)?;
        raw_write(w, &self.events_xdr);
        Ok(())
    }

    /// Writes the meta, field by field as `TransactionMetaV3`/`V4` lay them out (the tests check
    /// the bytes against the same meta built as a value).
    fn write_meta(&self, w: &mut Limited<Vec<u8>>) -> Result<(), SimError> {
        let success = self.spec.success;
        match self.format {
            MetaFormat::V3InLcmV1 => {
                xdr_write(w, &3i32)?;
                xdr_write(w, &ExtensionPoint::V0)?;
                xdr_write(w, &LedgerEntryChanges::default())?;
                // operations: one OperationMeta { changes } when it succeeded
                xdr_write(w, &u32::from(success))?;
                if success {
                    self.write_changes(w)?;
                }
                xdr_write(w, &LedgerEntryChanges::default())?;
                // soroban_meta: Some(SorobanTransactionMeta { ext, events, return_value,
                // diagnostic_events }) when it succeeded
                xdr_write(w, &u32::from(success))?;
                if success {
                    xdr_write(w, &SorobanTransactionMetaExt::V0)?;
                    self.write_events(w)?;
                    xdr_write(w, &ScVal::Void)?;
                    xdr_write(w, &VecM::<DiagnosticEvent>::default())?;
                }
            }
            MetaFormat::V4InLcmV2 | MetaFormat::V4InLcmV1 => {
                xdr_write(w, &4i32)?;
                xdr_write(w, &ExtensionPoint::V0)?;
                xdr_write(w, &LedgerEntryChanges::default())?;
                // operations: one OperationMetaV2 { ext, changes, events } when it succeeded
                xdr_write(w, &u32::from(success))?;
                if success {
                    xdr_write(w, &ExtensionPoint::V0)?;
                    self.write_changes(w)?;
                    self.write_events(w)?;
                }
                xdr_write(w, &LedgerEntryChanges::default())?;
                xdr_write(
                    w,
                    &Some(SorobanTransactionMetaV2 {
                        ext: SorobanTransactionMetaExt::V0,
                        return_value: success.then_some(ScVal::Void),
                    }),
                )?;
                xdr_write(w, &VecM::<TransactionEvent>::default())?;
                xdr_write(w, &VecM::<DiagnosticEvent>::default())?;
            }
        }
        Ok(())
    }

    /// The transaction as a [`TxSpec`] again (to replay it on another branch). A failed
    /// transaction emitted nothing, so its spec has no events or entry changes.
    pub fn replay_spec(&self) -> Result<TxSpec, SimError> {
        let args = match self.envelope()? {
            TransactionEnvelope::Tx(e) => {
                e.tx.operations
                    .iter()
                    .find_map(|op| match &op.body {
                        OperationBody::InvokeHostFunction(ih) => match &ih.host_function {
                            HostFunction::InvokeContract(a) => Some(a.args.to_vec()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let events = self
            .contract_events()?
            .into_iter()
            .map(|e| {
                let ContractEventBody::V0(body) = e.body;
                SimEvent {
                    contract: e.contract_id.map_or([0; 32], |c| c.0 .0),
                    topics: body.topics.to_vec(),
                    data: body.data,
                }
            })
            .collect();
        let mut stream_changes = Vec::new();
        for c in self.changes.iter() {
            match (c.kind, &c.value) {
                (ChangeKind::Created | ChangeKind::Updated, Some(v)) => {
                    stream_changes.push(StreamChange::Set {
                        stream_id: c.stream_id,
                        value: ScVal::from_xdr(&v[..], Limits::none())?,
                    })
                }
                (ChangeKind::Removed, _) => stream_changes.push(StreamChange::Removed {
                    stream_id: c.stream_id,
                }),
                _ => {}
            }
        }
        Ok(TxSpec {
            function: self.spec.function.clone(),
            args,
            success: self.spec.success,
            events,
            stream_changes,
        })
    }
}

/// A closed ledger.
#[derive(Debug, Clone)]
pub struct SimLedger {
    pub seq: u32,
    pub close_time: u64,
    pub header: LedgerHeader,
    pub hash: [u8; 32],
    pub txs: Vec<SimTx>,
    /// Which branch produced it (forks replace ledgers with another branch).
    pub branch: u32,
}

impl SimLedger {
    /// Hex hash.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
    /// Hex previous hash.
    pub fn prev_hash_hex(&self) -> String {
        hex::encode(self.header.previous_ledger_hash.0)
    }
}

/// The simulated chain.
#[derive(Debug, Clone)]
pub struct SimChain {
    pub passphrase: String,
    pub network_id: [u8; 32],
    /// The Fluxora contract's id.
    pub contract: [u8; 32],
    pub format: MetaFormat,
    ledgers: Vec<SimLedger>,
    first_seq: u32,
    genesis_prev: [u8; 32],
    /// Current `Stream` entries after the tip (XDR of each `ScVal`), for `State` changes in
    /// metas. A fork takes them back with the dropped transactions' own `State` changes.
    streams: BTreeMap<u64, Arc<[u8]>>,
    source_key: [u8; 32],
    next_source_seq: i64,
    branch: u32,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn vecm<T, const N: u32>(v: Vec<T>) -> Result<VecM<T, N>, SimError> {
    v.try_into().map_err(SimError::Xdr)
}

fn contract_address(c: [u8; 32]) -> ScAddress {
    ScAddress::Contract(ContractId(Hash(c)))
}

/// The `DataKey::Stream(id)` key: `Vec[Symbol("Stream"), U64(id)]`.
pub fn stream_key(stream_id: u64) -> Result<ScVal, SimError> {
    let sym = ScSymbol("Stream".try_into()?);
    Ok(ScVal::Vec(Some(ScVec(vecm(vec![
        ScVal::Symbol(sym),
        ScVal::U64(stream_id),
    ])?))))
}

impl SimChain {
    /// An empty chain whose first ledger will be `first_seq`.
    pub fn new(passphrase: &str, contract: [u8; 32], first_seq: u32, format: MetaFormat) -> Self {
        Self {
            passphrase: passphrase.to_string(),
            network_id: sha256(passphrase.as_bytes()),
            contract,
            format,
            ledgers: Vec::new(),
            first_seq,
            genesis_prev: sha256(format!("fluxora-sim genesis {first_seq}").as_bytes()),
            streams: BTreeMap::new(),
            source_key: sha256(b"fluxora-sim source account"),
            next_source_seq: 1 << 32,
            branch: 0,
        }
    }

    /// All ledgers, ascending.
    pub fn ledgers(&self) -> &[SimLedger] {
        &self.ledgers
    }

    /// One ledger by sequence.
    pub fn ledger(&self, seq: u32) -> Option<&SimLedger> {
        let i = seq.checked_sub(self.first_seq)? as usize;
        self.ledgers.get(i)
    }

    /// The newest ledger.
    pub fn tip(&self) -> Option<&SimLedger> {
        self.ledgers.last()
    }

    /// The first ledger's sequence.
    pub fn first_seq(&self) -> u32 {
        self.first_seq
    }

    /// The sequence the next ledger gets.
    pub fn next_seq(&self) -> u32 {
        self.first_seq + self.ledgers.len() as u32
    }

    /// The `Stream` entries as of the tip (XDR of each `ScVal`).
    pub fn streams(&self) -> &BTreeMap<u64, Arc<[u8]>> {
        &self.streams
    }

    /// Closes a ledger with these transactions, in application order.
    pub fn push_ledger(
        &mut self,
        close_time: u64,
        specs: Vec<TxSpec>,
    ) -> Result<&SimLedger, SimError> {
        let seq = self.next_seq();
        let prev = self.ledgers.last().map_or(self.genesis_prev, |l| l.hash);
        let mut txs = Vec::with_capacity(specs.len());
        let mut envelopes = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let envelope = self.envelope(&spec)?;
            let hash = envelope.hash(self.network_id)?;
            let result = TransactionResultPair {
                transaction_hash: Hash(hash),
                result: TransactionResult {
                    fee_charged: 100_000,
                    result: if spec.success {
                        TransactionResultResult::TxSuccess(vecm(vec![OperationResult::OpInner(
                            OperationResultTr::InvokeHostFunction(
                                InvokeHostFunctionResult::Success(Hash(sha256(&hash))),
                            ),
                        )])?)
                    } else {
                        TransactionResultResult::TxFailed(vecm(vec![OperationResult::OpInner(
                            OperationResultTr::InvokeHostFunction(
                                InvokeHostFunctionResult::Trapped,
                            ),
                        )])?)
                    },
                    ext: TransactionResultExt::V0,
                },
            };
            let (changes, events_xdr, events) = self.apply(seq, &spec)?;
            txs.push(SimTx {
                spec: TxBrief {
                    function: spec.function,
                    success: spec.success,
                    events,
                },
                application_order: i as u32 + 1,
                hash,
                result,
                format: self.format,
                contract: self.contract,
                envelope_xdr: envelope.to_xdr(Limits::none())?.into_boxed_slice(),
                events_xdr,
                changes,
            });
            envelopes.push((hash, envelope));
        }

        // Header: commit to the transaction set and results like stellar-core does.
        let tx_set = tx_set_of(prev, envelopes)?;
        let results = TransactionResultSet {
            results: vecm(txs.iter().map(|t| t.result.clone()).collect())?,
        };
        let header = LedgerHeader {
            ledger_version: self.format.protocol(),
            previous_ledger_hash: Hash(prev),
            scp_value: StellarValue {
                tx_set_hash: Hash(sha256(&tx_set.to_xdr(Limits::none())?)),
                close_time: TimePoint(close_time),
                upgrades: VecM::default(),
                ext: StellarValueExt::Basic,
            },
            tx_set_result_hash: Hash(sha256(&results.to_xdr(Limits::none())?)),
            bucket_list_hash: Hash(sha256(
                format!("fluxora-sim bucket list {seq} branch {}", self.branch).as_bytes(),
            )),
            ledger_seq: seq,
            total_coins: 1_000_000_000_000_000_000,
            fee_pool: 0,
            inflation_seq: 0,
            id_pool: 0,
            base_fee: 100,
            base_reserve: 5_000_000,
            max_tx_set_size: 1_000,
            skip_list: [Hash([0; 32]), Hash([0; 32]), Hash([0; 32]), Hash([0; 32])],
            ext: LedgerHeaderExt::V0,
        };
        let hash = sha256(&header.to_xdr(Limits::none())?);
        self.ledgers.push(SimLedger {
            seq,
            close_time,
            header,
            hash,
            txs,
            branch: self.branch,
        });
        self.ledgers
            .last()
            .ok_or_else(|| SimError::Invalid("no ledger".into()))
    }

    /// Drops every ledger above `seq` and starts a new branch: the next ledgers get different
    /// hashes even with the same content. Returns how many ledgers were dropped.
    pub fn fork_after(&mut self, seq: u32) -> usize {
        let keep = seq.saturating_sub(self.first_seq - 1) as usize;
        let keep = keep.min(self.ledgers.len());
        let dropped = self.ledgers.len() - keep;
        // Take the entries back, newest change first: a `State` change holds the value before
        // the transaction, a `Created` one had none.
        for l in self.ledgers.drain(keep..).rev() {
            for t in l.txs.iter().rev() {
                for c in t.changes.iter().rev() {
                    match (c.kind, &c.value) {
                        (ChangeKind::State, Some(old)) => {
                            self.streams.insert(c.stream_id, old.clone());
                        }
                        (ChangeKind::Created, _) => {
                            self.streams.remove(&c.stream_id);
                        }
                        _ => {}
                    }
                }
            }
        }
        self.branch += 1;
        dropped
    }

    fn envelope(&mut self, spec: &TxSpec) -> Result<TransactionEnvelope, SimError> {
        self.next_source_seq += 1;
        let function_name = ScSymbol(spec.function.as_str().try_into().map_err(|_| {
            SimError::Invalid(format!("function name `{}` is not a symbol", spec.function))
        })?);
        let op = Operation {
            source_account: None,
            body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
                host_function: HostFunction::InvokeContract(InvokeContractArgs {
                    contract_address: contract_address(self.contract),
                    function_name,
                    args: vecm(spec.args.clone())?,
                }),
                auth: VecM::default(),
            }),
        };
        Ok(TransactionEnvelope::Tx(TransactionV1Envelope {
            tx: Transaction {
                source_account: MuxedAccount::Ed25519(Uint256(self.source_key)),
                fee: 1_000_000,
                seq_num: SequenceNumber(self.next_source_seq),
                cond: Preconditions::None,
                memo: Memo::None,
                operations: vecm(vec![op])?,
                ext: TransactionExt::V0,
            },
            signatures: VecM::default(),
        }))
    }

    /// Applies a transaction's stream changes to the current entries; returns its stored
    /// changes (with the `State` before each update or removal), its events' XDR and how many.
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        seq: u32,
        spec: &TxSpec,
    ) -> Result<(Box<[StoredChange]>, Box<[u8]>, usize), SimError> {
        if !spec.success {
            return Ok((Box::default(), Box::default(), 0));
        }
        let mut changes = Vec::new();
        for c in &spec.stream_changes {
            match c {
                StreamChange::Set { stream_id, value } => {
                    let new: Arc<[u8]> = value.to_xdr(Limits::none())?.into();
                    match self.streams.insert(*stream_id, new.clone()) {
                        Some(old) => {
                            changes.push(StoredChange {
                                kind: ChangeKind::State,
                                stream_id: *stream_id,
                                last_modified: seq.saturating_sub(1),
                                value: Some(old),
                            });
                            changes.push(StoredChange {
                                kind: ChangeKind::Updated,
                                stream_id: *stream_id,
                                last_modified: seq,
                                value: Some(new),
                            });
                        }
                        None => changes.push(StoredChange {
                            kind: ChangeKind::Created,
                            stream_id: *stream_id,
                            last_modified: seq,
                            value: Some(new),
                        }),
                    }
                }
                StreamChange::Removed { stream_id } => {
                    if let Some(old) = self.streams.remove(stream_id) {
                        changes.push(StoredChange {
                            kind: ChangeKind::State,
                            stream_id: *stream_id,
                            last_modified: seq.saturating_sub(1),
                            value: Some(old),
                        });
                    }
                    changes.push(StoredChange {
                        kind: ChangeKind::Removed,
                        stream_id: *stream_id,
                        last_modified: seq,
                        value: None,
                    });
                }
            }
        }
        let mut events = xdr_writer();
        for e in &spec.events {
            xdr_write(
                &mut events,
                &ContractEvent {
                    ext: ExtensionPoint::V0,
                    contract_id: Some(ContractId(Hash(e.contract))),
                    type_: ContractEventType::Contract,
                    body: ContractEventBody::V0(ContractEventV0 {
                        topics: vecm(e.topics.clone())?,
                        data: e.data.clone(),
                    }),
                },
            )?;
        }
        Ok((
            changes.into_boxed_slice(),
            events.inner.into_boxed_slice(),
            spec.events.len(),
        ))
    }

    /// The `LedgerHeaderHistoryEntry` RPC serves as `headerXdr`.
    pub fn header_entry(&self, l: &SimLedger) -> LedgerHeaderHistoryEntry {
        LedgerHeaderHistoryEntry {
            hash: Hash(l.hash),
            header: l.header.clone(),
            ext: LedgerHeaderHistoryEntryExt::V0,
        }
    }

    /// The ledger's `LedgerCloseMeta` XDR in the chain's format, assembled from the stored
    /// transactions field by field as `LedgerCloseMetaV1`/`V2` lay them out.
    pub fn close_meta_xdr(&self, l: &SimLedger) -> Result<Vec<u8>, SimError> {
        let prev = l.header.previous_ledger_hash.0;
        let envelopes = l
            .txs
            .iter()
            .map(|t| Ok((t.hash, t.envelope()?)))
            .collect::<Result<Vec<_>, SimError>>()?;
        let tx_set = tx_set_of(prev, envelopes)?;
        let mut w = xdr_writer();
        let v2 = self.format == MetaFormat::V4InLcmV2;
        xdr_write(&mut w, &if v2 { 2i32 } else { 1i32 })?;
        xdr_write(&mut w, &LedgerCloseMetaExt::V0)?;
        xdr_write(&mut w, &self.header_entry(l))?;
        xdr_write(&mut w, &tx_set)?;
        xdr_write(&mut w, &xdr_len(l.txs.len())?)?;
        for t in &l.txs {
            if v2 {
                // TransactionResultMetaV1 { ext, result, fee_processing, tx_apply_processing,
                // post_tx_apply_fee_processing }
                xdr_write(&mut w, &ExtensionPoint::V0)?;
                xdr_write(&mut w, &t.result)?;
                xdr_write(&mut w, &LedgerEntryChanges::default())?;
                t.write_meta(&mut w)?;
                xdr_write(&mut w, &LedgerEntryChanges::default())?;
            } else {
                // TransactionResultMeta { result, fee_processing, tx_apply_processing }
                xdr_write(&mut w, &t.result)?;
                xdr_write(&mut w, &LedgerEntryChanges::default())?;
                t.write_meta(&mut w)?;
            }
        }
        xdr_write(&mut w, &VecM::<UpgradeEntryMeta>::default())?;
        xdr_write(&mut w, &VecM::<ScpHistoryEntry>::default())?;
        xdr_write(&mut w, &0u64)?;
        xdr_write(&mut w, &VecM::<LedgerKey>::default())?;
        if !v2 {
            xdr_write(&mut w, &VecM::<LedgerEntry>::default())?;
        }
        Ok(w.inner)
    }

    /// The ledger's `LedgerCloseMeta` as base64.
    pub fn close_meta_b64(&self, l: &SimLedger) -> Result<String, SimError> {
        Ok(B64.encode(self.close_meta_xdr(l)?))
    }

    /// The ledger's `LedgerCloseMeta` in the chain's format.
    pub fn close_meta(&self, l: &SimLedger) -> Result<LedgerCloseMeta, SimError> {
        Ok(LedgerCloseMeta::from_xdr(
            self.close_meta_xdr(l)?,
            Limits::none(),
        )?)
    }
}

/// The transaction set, ordered by hash as stellar-core does (not by application order).
fn tx_set_of(
    prev: [u8; 32],
    mut envelopes: Vec<([u8; 32], TransactionEnvelope)>,
) -> Result<GeneralizedTransactionSet, SimError> {
    envelopes.sort_by_key(|(h, _)| *h);
    let component =
        TxSetComponent::TxsetCompTxsMaybeDiscountedFee(TxSetComponentTxsMaybeDiscountedFee {
            base_fee: None,
            txs: vecm(envelopes.into_iter().map(|(_, e)| e).collect())?,
        });
    Ok(GeneralizedTransactionSet::V1(TransactionSetV1 {
        previous_ledger_hash: Hash(prev),
        phases: vecm(vec![
            TransactionPhase::V0(VecM::default()),
            TransactionPhase::V0(vecm(vec![component])?),
        ])?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::ReadXdr;

    fn spec(success: bool, id: u64) -> TxSpec {
        TxSpec {
            function: "withdraw".into(),
            args: vec![ScVal::U64(id)],
            success,
            events: vec![SimEvent {
                contract: [9; 32],
                topics: vec![
                    ScVal::Symbol(ScSymbol("withdrew".try_into().unwrap())),
                    ScVal::U64(id),
                ],
                data: ScVal::Void,
            }],
            stream_changes: vec![StreamChange::Set {
                stream_id: id,
                value: ScVal::U32(1),
            }],
        }
    }

    #[test]
    fn headers_hash_chain_and_metas_decode() {
        for format in [
            MetaFormat::V3InLcmV1,
            MetaFormat::V4InLcmV2,
            MetaFormat::V4InLcmV1,
        ] {
            let mut c = SimChain::new("Test SDF Network ; September 2015", [9; 32], 100, format);
            c.push_ledger(1_000, vec![]).unwrap();
            c.push_ledger(1_005, vec![spec(true, 1), spec(false, 2), spec(true, 1)])
                .unwrap();
            let (a, b) = (&c.ledgers()[0], &c.ledgers()[1]);
            assert_eq!(b.header.previous_ledger_hash.0, a.hash);
            assert_eq!(sha256(&b.header.to_xdr(Limits::none()).unwrap()), b.hash);
            // The assembled XDR is canonical: it decodes and encodes back to the same bytes.
            let bytes = c.close_meta_xdr(b).unwrap();
            let lcm = LedgerCloseMeta::from_xdr(&bytes, Limits::none()).unwrap();
            assert_eq!(lcm.to_xdr(Limits::none()).unwrap(), bytes);
            for t in &b.txs {
                let m = t.meta_xdr().unwrap();
                let meta = TransactionMeta::from_xdr(&m, Limits::none()).unwrap();
                assert_eq!(meta.to_xdr(Limits::none()).unwrap(), m);
            }
            // The tx hash is what a client recomputes from the envelope and the passphrase.
            let t = &b.txs[0];
            let net = sha256(b"Test SDF Network ; September 2015");
            assert_eq!(t.envelope().unwrap().hash(net).unwrap(), t.hash);
            assert_eq!(t.result.transaction_hash.0, t.hash);
            // The second update of stream 1 carries the old value as State, then Updated; the
            // failed transaction has no operations meta and no events.
            let changes = match (&b.txs[2].meta().unwrap(), &b.txs[1].meta().unwrap()) {
                (TransactionMeta::V3(m), TransactionMeta::V3(f)) => {
                    assert!(f.operations.is_empty() && f.soroban_meta.is_none());
                    assert_eq!(m.soroban_meta.as_ref().unwrap().events.len(), 1);
                    m.operations[0].changes.0.to_vec()
                }
                (TransactionMeta::V4(m), TransactionMeta::V4(f)) => {
                    assert!(f.operations.is_empty());
                    assert_eq!(m.operations[0].events.len(), 1);
                    m.operations[0].changes.0.to_vec()
                }
                other => panic!("unexpected metas {other:?}"),
            };
            assert!(matches!(
                changes[0],
                stellar_xdr::LedgerEntryChange::State(_)
            ));
            assert!(matches!(
                changes[1],
                stellar_xdr::LedgerEntryChange::Updated(_)
            ));
            // A successful transaction replays as its spec; a failed one emitted nothing.
            assert_eq!(b.txs[2].replay_spec().unwrap(), spec(true, 1));
            let failed = b.txs[1].replay_spec().unwrap();
            assert!(
                !failed.success && failed.events.is_empty() && failed.stream_changes.is_empty()
            );
        }
    }

    #[test]
    fn a_fork_gives_new_hashes_and_restores_stream_entries() {
        let mut c = SimChain::new("p", [9; 32], 1, MetaFormat::V4InLcmV2);
        c.push_ledger(10, vec![spec(true, 1)]).unwrap();
        let h2 = c.push_ledger(15, vec![spec(true, 2)]).unwrap().hash;
        assert_eq!(c.streams().len(), 2);
        assert_eq!(c.fork_after(1), 1);
        assert_eq!(c.streams().len(), 1);
        let h2b = c.push_ledger(15, vec![spec(true, 2)]).unwrap().hash;
        assert_ne!(h2, h2b);
        assert_eq!(
            c.ledger(2).unwrap().header.previous_ledger_hash.0,
            c.ledger(1).unwrap().hash
        );
    }
}
