//! The simulated chain: ledgers whose headers hash-chain like Stellar's, transactions with real
//! envelopes (hash = sha256 of the signature payload under the network passphrase), and the XDR
//! a node would serve for them: `TransactionMeta` V3/V4 and `LedgerCloseMeta` V1/V2.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use stellar_xdr::{
    ContractDataDurability, ContractDataEntry, ContractEvent, ContractEventBody, ContractEventType,
    ContractEventV0, ContractId, ExtensionPoint, GeneralizedTransactionSet, Hash, HostFunction,
    InvokeContractArgs, InvokeHostFunctionOp, InvokeHostFunctionResult, LedgerCloseMeta,
    LedgerCloseMetaExt, LedgerCloseMetaV1, LedgerCloseMetaV2, LedgerEntry, LedgerEntryChange,
    LedgerEntryChanges, LedgerEntryData, LedgerEntryExt, LedgerHeader, LedgerHeaderExt,
    LedgerHeaderHistoryEntry, LedgerHeaderHistoryEntryExt, LedgerKey, LedgerKeyContractData,
    Limits, Memo, MuxedAccount, Operation, OperationBody, OperationMeta, OperationMetaV2,
    OperationResult, OperationResultTr, Preconditions, ScAddress, ScSymbol, ScVal, ScVec,
    SequenceNumber, SorobanTransactionMeta, SorobanTransactionMetaExt, SorobanTransactionMetaV2,
    StellarValue, StellarValueExt, TimePoint, Transaction, TransactionEnvelope, TransactionExt,
    TransactionMeta, TransactionMetaV3, TransactionMetaV4, TransactionPhase, TransactionResult,
    TransactionResultExt, TransactionResultMeta, TransactionResultMetaV1, TransactionResultPair,
    TransactionResultResult, TransactionResultSet, TransactionSetV1, TransactionV1Envelope,
    TxSetComponent, TxSetComponentTxsMaybeDiscountedFee, Uint256, VecM, WriteXdr,
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

/// A transaction as included in a ledger.
#[derive(Debug, Clone)]
pub struct SimTx {
    pub spec: TxSpec,
    /// 1-based application order in its ledger.
    pub application_order: u32,
    pub envelope: TransactionEnvelope,
    pub hash: [u8; 32],
    pub result: TransactionResultPair,
    pub meta: TransactionMeta,
    /// Base64 of `envelope`, `result.result` and `meta`, as Horizon serves them.
    pub envelope_b64: String,
    pub result_b64: String,
    pub meta_b64: String,
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
    /// Base64 `LedgerCloseMeta`, encoded once on first use (a node serves stored XDR).
    pub lcm_b64: std::sync::OnceLock<Result<String, String>>,
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
    /// Current `Stream` entries after the tip, for `State` changes in metas.
    streams: BTreeMap<u64, std::sync::Arc<ScVal>>,
    /// `streams` as of the end of each ledger that changed them (for forks).
    /// (Values are shared: a snapshot copies pointers, not the 29-field maps.)
    stream_history: Vec<(u32, BTreeMap<u64, std::sync::Arc<ScVal>>)>,
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
            stream_history: Vec::new(),
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

    /// The `Stream` entries as of the tip.
    pub fn streams(&self) -> &BTreeMap<u64, std::sync::Arc<ScVal>> {
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
        let mut changed = false;
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
            if spec.success && !spec.stream_changes.is_empty() {
                changed = true;
            }
            let meta = self.meta(seq, &spec)?;
            txs.push(SimTx {
                spec,
                application_order: i as u32 + 1,
                envelope_b64: envelope.to_xdr_base64(Limits::none())?,
                result_b64: result.result.to_xdr_base64(Limits::none())?,
                meta_b64: meta.to_xdr_base64(Limits::none())?,
                envelope,
                hash,
                result,
                meta,
            });
        }
        if changed {
            self.stream_history.push((seq, self.streams.clone()));
        }

        // Header: commit to the transaction set and results like stellar-core does.
        let tx_set = self.tx_set(prev, &txs)?;
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
            lcm_b64: std::sync::OnceLock::new(),
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
        self.ledgers.truncate(keep);
        self.stream_history.retain(|(s, _)| *s <= seq);
        self.streams = self
            .stream_history
            .last()
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
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

    fn entry(&self, seq: u32, stream_id: u64, value: ScVal) -> Result<LedgerEntry, SimError> {
        Ok(LedgerEntry {
            last_modified_ledger_seq: seq,
            data: LedgerEntryData::ContractData(ContractDataEntry {
                ext: ExtensionPoint::V0,
                contract: contract_address(self.contract),
                key: stream_key(stream_id)?,
                durability: ContractDataDurability::Persistent,
                val: value,
            }),
            ext: LedgerEntryExt::V0,
        })
    }

    /// Builds the meta and applies the stream changes to the current entries.
    fn meta(&mut self, seq: u32, spec: &TxSpec) -> Result<TransactionMeta, SimError> {
        let mut changes = Vec::new();
        if spec.success {
            for c in &spec.stream_changes {
                match c {
                    StreamChange::Set { stream_id, value } => {
                        match self.streams.get(stream_id) {
                            Some(old) => {
                                changes.push(LedgerEntryChange::State(self.entry(
                                    seq.saturating_sub(1),
                                    *stream_id,
                                    ScVal::clone(old),
                                )?));
                                changes.push(LedgerEntryChange::Updated(self.entry(
                                    seq,
                                    *stream_id,
                                    value.clone(),
                                )?));
                            }
                            None => changes.push(LedgerEntryChange::Created(self.entry(
                                seq,
                                *stream_id,
                                value.clone(),
                            )?)),
                        }
                        self.streams
                            .insert(*stream_id, std::sync::Arc::new(value.clone()));
                    }
                    StreamChange::Removed { stream_id } => {
                        if let Some(old) = self.streams.remove(stream_id) {
                            changes.push(LedgerEntryChange::State(self.entry(
                                seq.saturating_sub(1),
                                *stream_id,
                                ScVal::clone(&old),
                            )?));
                        }
                        changes.push(LedgerEntryChange::Removed(LedgerKey::ContractData(
                            LedgerKeyContractData {
                                contract: contract_address(self.contract),
                                key: stream_key(*stream_id)?,
                                durability: ContractDataDurability::Persistent,
                            },
                        )));
                    }
                }
            }
        }
        let events: Vec<ContractEvent> = if spec.success {
            spec.events
                .iter()
                .map(|e| {
                    Ok(ContractEvent {
                        ext: ExtensionPoint::V0,
                        contract_id: Some(ContractId(Hash(e.contract))),
                        type_: ContractEventType::Contract,
                        body: ContractEventBody::V0(ContractEventV0 {
                            topics: vecm(e.topics.clone())?,
                            data: e.data.clone(),
                        }),
                    })
                })
                .collect::<Result<_, SimError>>()?
        } else {
            Vec::new()
        };
        let changes: LedgerEntryChanges = LedgerEntryChanges(vecm(changes)?);
        let events: VecM<ContractEvent> = vecm(events)?;
        Ok(match self.format {
            MetaFormat::V3InLcmV1 => TransactionMeta::V3(TransactionMetaV3 {
                ext: ExtensionPoint::V0,
                tx_changes_before: LedgerEntryChanges::default(),
                operations: if spec.success {
                    vecm(vec![OperationMeta { changes }])?
                } else {
                    VecM::default()
                },
                tx_changes_after: LedgerEntryChanges::default(),
                soroban_meta: spec.success.then(|| SorobanTransactionMeta {
                    ext: SorobanTransactionMetaExt::V0,
                    events,
                    return_value: ScVal::Void,
                    diagnostic_events: VecM::default(),
                }),
            }),
            MetaFormat::V4InLcmV2 | MetaFormat::V4InLcmV1 => {
                TransactionMeta::V4(TransactionMetaV4 {
                    ext: ExtensionPoint::V0,
                    tx_changes_before: LedgerEntryChanges::default(),
                    operations: if spec.success {
                        vecm(vec![OperationMetaV2 {
                            ext: ExtensionPoint::V0,
                            changes,
                            events,
                        }])?
                    } else {
                        VecM::default()
                    },
                    tx_changes_after: LedgerEntryChanges::default(),
                    soroban_meta: Some(SorobanTransactionMetaV2 {
                        ext: SorobanTransactionMetaExt::V0,
                        return_value: spec.success.then_some(ScVal::Void),
                    }),
                    events: VecM::default(),
                    diagnostic_events: VecM::default(),
                })
            }
        })
    }

    /// The transaction set, ordered by hash as stellar-core does (not by application order).
    fn tx_set(&self, prev: [u8; 32], txs: &[SimTx]) -> Result<GeneralizedTransactionSet, SimError> {
        let mut by_hash: Vec<&SimTx> = txs.iter().collect();
        by_hash.sort_by_key(|t| t.hash);
        let envelopes: Vec<TransactionEnvelope> =
            by_hash.iter().map(|t| t.envelope.clone()).collect();
        let component =
            TxSetComponent::TxsetCompTxsMaybeDiscountedFee(TxSetComponentTxsMaybeDiscountedFee {
                base_fee: None,
                txs: vecm(envelopes)?,
            });
        Ok(GeneralizedTransactionSet::V1(TransactionSetV1 {
            previous_ledger_hash: Hash(prev),
            phases: vecm(vec![
                TransactionPhase::V0(VecM::default()),
                TransactionPhase::V0(vecm(vec![component])?),
            ])?,
        }))
    }

    /// The ledger's `LedgerCloseMeta` as base64, encoded once.
    pub fn close_meta_b64(&self, l: &SimLedger) -> Result<String, SimError> {
        l.lcm_b64
            .get_or_init(|| {
                self.close_meta(l)
                    .and_then(|m| m.to_xdr_base64(Limits::none()).map_err(SimError::Xdr))
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(SimError::Invalid)
    }

    /// Encodes every ledger's `LedgerCloseMeta` now, as a node holds them stored.
    pub fn precompute_xdr(&self) -> Result<(), SimError> {
        for l in &self.ledgers {
            self.close_meta_b64(l)?;
        }
        Ok(())
    }

    /// The `LedgerHeaderHistoryEntry` RPC serves as `headerXdr`.
    pub fn header_entry(&self, l: &SimLedger) -> LedgerHeaderHistoryEntry {
        LedgerHeaderHistoryEntry {
            hash: Hash(l.hash),
            header: l.header.clone(),
            ext: LedgerHeaderHistoryEntryExt::V0,
        }
    }

    /// The ledger's `LedgerCloseMeta` in the chain's format.
    pub fn close_meta(&self, l: &SimLedger) -> Result<LedgerCloseMeta, SimError> {
        let prev = l.header.previous_ledger_hash.0;
        let tx_set = self.tx_set(prev, &l.txs)?;
        Ok(match self.format {
            MetaFormat::V3InLcmV1 | MetaFormat::V4InLcmV1 => {
                LedgerCloseMeta::V1(LedgerCloseMetaV1 {
                    ext: LedgerCloseMetaExt::V0,
                    ledger_header: self.header_entry(l),
                    tx_set,
                    tx_processing: vecm(
                        l.txs
                            .iter()
                            .map(|t| TransactionResultMeta {
                                result: t.result.clone(),
                                fee_processing: LedgerEntryChanges::default(),
                                tx_apply_processing: t.meta.clone(),
                            })
                            .collect(),
                    )?,
                    upgrades_processing: VecM::default(),
                    scp_info: VecM::default(),
                    total_byte_size_of_live_soroban_state: 0,
                    evicted_keys: VecM::default(),
                    unused: VecM::default(),
                })
            }
            MetaFormat::V4InLcmV2 => LedgerCloseMeta::V2(LedgerCloseMetaV2 {
                ext: LedgerCloseMetaExt::V0,
                ledger_header: self.header_entry(l),
                tx_set,
                tx_processing: vecm(
                    l.txs
                        .iter()
                        .map(|t| TransactionResultMetaV1 {
                            ext: ExtensionPoint::V0,
                            result: t.result.clone(),
                            fee_processing: LedgerEntryChanges::default(),
                            tx_apply_processing: t.meta.clone(),
                            post_tx_apply_fee_processing: LedgerEntryChanges::default(),
                        })
                        .collect(),
                )?,
                upgrades_processing: VecM::default(),
                scp_info: VecM::default(),
                total_byte_size_of_live_soroban_state: 0,
                evicted_keys: VecM::default(),
            }),
        })
    }
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
            let lcm = c.close_meta(b).unwrap();
            let bytes = lcm.to_xdr(Limits::none()).unwrap();
            let back = LedgerCloseMeta::from_xdr(&bytes, Limits::none()).unwrap();
            assert_eq!(back, lcm);
            // The tx hash is what a client recomputes from the envelope and the passphrase.
            let t = &b.txs[0];
            let net = sha256(b"Test SDF Network ; September 2015");
            assert_eq!(t.envelope.hash(net).unwrap(), t.hash);
            assert_eq!(t.result.transaction_hash.0, t.hash);
            // The second update of stream 1 carries the old value as State, then Updated; the
            // failed transaction has no operations meta and no events.
            let changes = match (&b.txs[2].meta, &b.txs[1].meta) {
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
            assert!(matches!(changes[0], LedgerEntryChange::State(_)));
            assert!(matches!(changes[1], LedgerEntryChange::Updated(_)));
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
