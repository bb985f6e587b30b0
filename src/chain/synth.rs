//! Builders for synthetic but well-formed XDR (envelopes, TransactionMeta V3/V4, LedgerCloseMeta
//! V1/V2 with a verifiable header): used by the loopback source tests, the decode benchmark and
//! the simulator. Every value is built with `stellar-xdr` itself.

use stellar_xdr::{
    ContractDataDurability, ContractDataEntry, ContractEvent, ContractEventBody, ContractEventType,
    ContractEventV0, ContractId, ExtensionPoint, GeneralizedTransactionSet, Hash, HostFunction,
    InvokeContractArgs, InvokeHostFunctionOp, LedgerCloseMeta, LedgerCloseMetaExt,
    LedgerCloseMetaV1, LedgerCloseMetaV2, LedgerEntry, LedgerEntryChange, LedgerEntryChanges,
    LedgerEntryData, LedgerEntryExt, LedgerHeader, LedgerHeaderHistoryEntry,
    LedgerHeaderHistoryEntryExt, LedgerKey, LedgerKeyContractData, Memo, MuxedAccount, Operation,
    OperationBody, OperationMeta, OperationMetaV2, Preconditions, ScAddress, ScSymbol, ScVal,
    ScVec, SequenceNumber, SorobanTransactionMeta, SorobanTransactionMetaExt,
    SorobanTransactionMetaV2, TimePoint, Transaction, TransactionEnvelope, TransactionExt,
    TransactionMeta, TransactionMetaV3, TransactionMetaV4, TransactionPhase, TransactionResult,
    TransactionResultExt, TransactionResultMeta, TransactionResultMetaV1, TransactionResultPair,
    TransactionResultResult, TransactionSetV1, TransactionV1Envelope, TxSetComponent,
    TxSetComponentTxsMaybeDiscountedFee, Uint256, VecM,
};

use super::meta::header_hash;
use super::ChainError;

fn xdr_err(what: &'static str) -> impl Fn(stellar_xdr::Error) -> ChainError {
    move |e| ChainError::Xdr {
        what,
        location: "synthetic builder".into(),
        message: e.to_string(),
    }
}

fn vecm<T, const N: u32>(v: Vec<T>, what: &'static str) -> Result<VecM<T, N>, ChainError> {
    v.try_into().map_err(xdr_err(what))
}

/// `Symbol` ScVal.
pub fn sym(s: &str) -> Result<ScVal, ChainError> {
    Ok(ScVal::Symbol(ScSymbol(
        s.try_into().map_err(xdr_err("ScSymbol"))?,
    )))
}

/// The `Stream` storage key `Vec[Symbol("Stream"), U64(id)]`.
pub fn stream_key(id: u64) -> Result<ScVal, ChainError> {
    Ok(ScVal::Vec(Some(ScVec(vecm(
        vec![sym("Stream")?, ScVal::U64(id)],
        "ScVec",
    )?))))
}

/// One synthetic transaction.
#[derive(Debug, Clone, Default)]
pub struct SynthTx {
    pub function: String,
    pub args: Vec<ScVal>,
    /// `(topics, data)` emitted by the contract.
    pub events: Vec<(Vec<ScVal>, ScVal)>,
    /// `(stream id, Some(new value) | None = removed)`.
    pub stream_changes: Vec<(u64, Option<ScVal>)>,
    pub success: bool,
    /// Distinguishes envelopes (sequence number).
    pub seq_num: i64,
}

/// An envelope invoking `contract.function(args)`.
pub fn envelope(contract: [u8; 32], tx: &SynthTx) -> Result<TransactionEnvelope, ChainError> {
    let op = Operation {
        source_account: None,
        body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
            host_function: HostFunction::InvokeContract(InvokeContractArgs {
                contract_address: ScAddress::Contract(ContractId(Hash(contract))),
                function_name: ScSymbol(
                    tx.function
                        .as_str()
                        .try_into()
                        .map_err(xdr_err("function name"))?,
                ),
                args: vecm(tx.args.clone(), "args")?,
            }),
            auth: VecM::default(),
        }),
    };
    Ok(TransactionEnvelope::Tx(TransactionV1Envelope {
        tx: Transaction {
            source_account: MuxedAccount::Ed25519(Uint256([7; 32])),
            fee: 100,
            seq_num: SequenceNumber(tx.seq_num),
            cond: Preconditions::None,
            memo: Memo::None,
            operations: vecm(vec![op], "operations")?,
            ext: TransactionExt::V0,
        },
        signatures: VecM::default(),
    }))
}

fn events_xdr(contract: [u8; 32], tx: &SynthTx) -> Result<Vec<ContractEvent>, ChainError> {
    tx.events
        .iter()
        .map(|(topics, data)| {
            Ok(ContractEvent {
                ext: ExtensionPoint::V0,
                contract_id: Some(ContractId(Hash(contract))),
                type_: ContractEventType::Contract,
                body: ContractEventBody::V0(ContractEventV0 {
                    topics: vecm(topics.clone(), "topics")?,
                    data: data.clone(),
                }),
            })
        })
        .collect()
}

fn changes_xdr(
    contract: [u8; 32],
    ledger: u32,
    tx: &SynthTx,
) -> Result<LedgerEntryChanges, ChainError> {
    let mut v = Vec::new();
    for (id, val) in &tx.stream_changes {
        let key = stream_key(*id)?;
        let addr = ScAddress::Contract(ContractId(Hash(contract)));
        v.push(match val {
            Some(val) => LedgerEntryChange::Updated(LedgerEntry {
                last_modified_ledger_seq: ledger,
                data: LedgerEntryData::ContractData(ContractDataEntry {
                    ext: ExtensionPoint::V0,
                    contract: addr,
                    key,
                    durability: ContractDataDurability::Persistent,
                    val: val.clone(),
                }),
                ext: LedgerEntryExt::V0,
            }),
            None => LedgerEntryChange::Removed(LedgerKey::ContractData(LedgerKeyContractData {
                contract: addr,
                key,
                durability: ContractDataDurability::Persistent,
            })),
        });
    }
    Ok(LedgerEntryChanges(vecm(v, "changes")?))
}

/// `TransactionMeta::V3` (events in `soroban_meta.events`).
pub fn meta_v3(
    contract: [u8; 32],
    ledger: u32,
    tx: &SynthTx,
) -> Result<TransactionMeta, ChainError> {
    let events = if tx.success {
        events_xdr(contract, tx)?
    } else {
        Vec::new()
    };
    Ok(TransactionMeta::V3(TransactionMetaV3 {
        ext: ExtensionPoint::V0,
        tx_changes_before: LedgerEntryChanges::default(),
        operations: vecm(
            vec![OperationMeta {
                changes: changes_xdr(contract, ledger, tx)?,
            }],
            "operations",
        )?,
        tx_changes_after: LedgerEntryChanges::default(),
        soroban_meta: Some(SorobanTransactionMeta {
            ext: SorobanTransactionMetaExt::V0,
            events: vecm(events, "events")?,
            return_value: ScVal::Void,
            diagnostic_events: VecM::default(),
        }),
    }))
}

/// `TransactionMeta::V4` (events per operation).
pub fn meta_v4(
    contract: [u8; 32],
    ledger: u32,
    tx: &SynthTx,
) -> Result<TransactionMeta, ChainError> {
    let events = if tx.success {
        events_xdr(contract, tx)?
    } else {
        Vec::new()
    };
    Ok(TransactionMeta::V4(TransactionMetaV4 {
        ext: ExtensionPoint::V0,
        tx_changes_before: LedgerEntryChanges::default(),
        operations: vecm(
            vec![OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: changes_xdr(contract, ledger, tx)?,
                events: vecm(events, "events")?,
            }],
            "operations",
        )?,
        tx_changes_after: LedgerEntryChanges::default(),
        soroban_meta: Some(SorobanTransactionMetaV2 {
            ext: SorobanTransactionMetaExt::V0,
            return_value: Some(ScVal::Void),
        }),
        events: VecM::default(),
        diagnostic_events: VecM::default(),
    }))
}

/// A ledger header (hash = sha256 of its XDR).
pub fn header(seq: u32, prev_hash: [u8; 32], close_time: u64) -> LedgerHeader {
    LedgerHeader {
        ledger_version: 23,
        previous_ledger_hash: Hash(prev_hash),
        ledger_seq: seq,
        scp_value: stellar_xdr::StellarValue {
            close_time: TimePoint(close_time),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn result_of(success: bool) -> TransactionResult {
    TransactionResult {
        fee_charged: 100,
        result: if success {
            TransactionResultResult::TxSuccess(VecM::default())
        } else {
            TransactionResultResult::TxFailed(VecM::default())
        },
        ext: TransactionResultExt::V0,
    }
}

/// A `LedgerCloseMeta` (V1 with meta V3 when `v2 == false`, V2 with meta V4 otherwise) holding
/// `txs` for `contract`; returns it with the ledger hash.
pub fn ledger_close_meta(
    network_id: &[u8; 32],
    seq: u32,
    prev_hash: [u8; 32],
    close_time: u64,
    contract: [u8; 32],
    txs: &[SynthTx],
    v2: bool,
) -> Result<(LedgerCloseMeta, [u8; 32]), ChainError> {
    let h = header(seq, prev_hash, close_time);
    let hash = header_hash(&h)?;
    let entry = LedgerHeaderHistoryEntry {
        hash: Hash(hash),
        header: h,
        ext: LedgerHeaderHistoryEntryExt::V0,
    };
    let mut envs = Vec::with_capacity(txs.len());
    let mut hashes = Vec::with_capacity(txs.len());
    for tx in txs {
        let env = envelope(contract, tx)?;
        hashes.push(
            env.hash(*network_id)
                .map_err(xdr_err("TransactionEnvelope"))?,
        );
        envs.push(env);
    }
    let tx_set = GeneralizedTransactionSet::V1(TransactionSetV1 {
        previous_ledger_hash: Hash(prev_hash),
        phases: vecm(
            vec![TransactionPhase::V0(vecm(
                vec![TxSetComponent::TxsetCompTxsMaybeDiscountedFee(
                    TxSetComponentTxsMaybeDiscountedFee {
                        base_fee: None,
                        txs: vecm(envs, "txs")?,
                    },
                )],
                "components",
            )?)],
            "phases",
        )?,
    });
    let lcm = if v2 {
        let mut proc = Vec::with_capacity(txs.len());
        for (tx, h) in txs.iter().zip(&hashes) {
            proc.push(TransactionResultMetaV1 {
                ext: ExtensionPoint::V0,
                result: TransactionResultPair {
                    transaction_hash: Hash(*h),
                    result: result_of(tx.success),
                },
                fee_processing: LedgerEntryChanges::default(),
                tx_apply_processing: meta_v4(contract, seq, tx)?,
                post_tx_apply_fee_processing: LedgerEntryChanges::default(),
            });
        }
        LedgerCloseMeta::V2(LedgerCloseMetaV2 {
            ext: LedgerCloseMetaExt::V0,
            ledger_header: entry,
            tx_set,
            tx_processing: vecm(proc, "tx_processing")?,
            upgrades_processing: VecM::default(),
            scp_info: VecM::default(),
            total_byte_size_of_live_soroban_state: 0,
            evicted_keys: VecM::default(),
        })
    } else {
        let mut proc = Vec::with_capacity(txs.len());
        for (tx, h) in txs.iter().zip(&hashes) {
            proc.push(TransactionResultMeta {
                result: TransactionResultPair {
                    transaction_hash: Hash(*h),
                    result: result_of(tx.success),
                },
                fee_processing: LedgerEntryChanges::default(),
                tx_apply_processing: meta_v3(contract, seq, tx)?,
            });
        }
        LedgerCloseMeta::V1(LedgerCloseMetaV1 {
            ext: LedgerCloseMetaExt::V0,
            ledger_header: entry,
            tx_set,
            tx_processing: vecm(proc, "tx_processing")?,
            upgrades_processing: VecM::default(),
            scp_info: VecM::default(),
            total_byte_size_of_live_soroban_state: 0,
            evicted_keys: VecM::default(),
            unused: VecM::default(),
        })
    };
    Ok((lcm, hash))
}
