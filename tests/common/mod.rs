//! Shared helpers for the chain tests: golden Fluxora events and synthetic chains.
#![allow(dead_code)]

use std::path::Path;

use fluxora::chain::synth::{ledger_close_meta, SynthTx};
use serde_json::Value;
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr, ScVal, WriteXdr};

pub const TESTNET: &str = "Test SDF Network ; September 2015";
pub const ORACLE_CONTRACT: &str = "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD2KM";

pub fn contract_bytes(strkey: &str) -> [u8; 32] {
    match stellar_strkey::Strkey::from_string(strkey).unwrap() {
        stellar_strkey::Strkey::Contract(c) => c.0,
        _ => panic!("not a contract"),
    }
}

pub fn scval(b64: &str) -> ScVal {
    ScVal::from_xdr_base64(
        b64,
        Limits {
            depth: 500,
            len: 1 << 20,
        },
    )
    .unwrap()
}

/// Successful steps of a golden scenario as synthetic transactions: (function, events, state
/// changes from `state_after` of the ids the step's events touch).
pub fn golden_txs(file: &str) -> Vec<(u32, SynthTx)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/contract-oracle")
        .join(file);
    let f: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let mut out = Vec::new();
    for (i, step) in f["steps"].as_array().unwrap().iter().enumerate() {
        let function = step["action"]
            .as_str()
            .unwrap()
            .split('(')
            .next()
            .unwrap()
            .to_string();
        let events: Vec<(Vec<ScVal>, ScVal)> = step["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["topics_xdr"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| scval(t.as_str().unwrap()))
                        .collect(),
                    scval(e["data_xdr"].as_str().unwrap()),
                )
            })
            .collect();
        let mut changes = Vec::new();
        for (id, st) in step["state_after"].as_object().unwrap() {
            let id: u64 = id.parse().unwrap();
            let touched = events
                .iter()
                .any(|(t, _)| t.get(1) == Some(&ScVal::U64(id)));
            if touched {
                changes.push((
                    id,
                    if st.is_null() {
                        None
                    } else {
                        Some(scval(st["state_scval_xdr"].as_str().unwrap()))
                    },
                ));
            }
        }
        out.push((
            step["ledger_seq"].as_u64().unwrap() as u32,
            SynthTx {
                function,
                args: vec![ScVal::U64(i as u64)],
                events,
                stream_changes: changes,
                success: step["result"].as_str().unwrap().starts_with("Ok"),
                seq_num: i as i64 + 1,
            },
        ));
    }
    out
}

/// A synthetic chain `first..first+n` whose ledgers carry the given txs round-robin.
pub struct Chain {
    pub ledgers: Vec<(u32, String, LedgerCloseMeta)>,
}

pub fn build_chain(first: u32, n: u32, txs: &[SynthTx], per_ledger: usize, v2: bool) -> Chain {
    let nid = fluxora::chain::meta::network_id(TESTNET);
    let contract = contract_bytes(ORACLE_CONTRACT);
    let mut prev = [9u8; 32];
    let mut ledgers = Vec::new();
    let mut it = txs.iter().cloned().cycle();
    for i in 0..n {
        let seq = first + i;
        let chunk: Vec<SynthTx> = if txs.is_empty() {
            Vec::new()
        } else {
            (0..per_ledger).map(|_| it.next().unwrap()).collect()
        };
        let chunk: Vec<SynthTx> = chunk
            .into_iter()
            .enumerate()
            .map(|(j, mut t)| {
                t.seq_num = i64::from(seq) * 1000 + j as i64;
                t
            })
            .collect();
        let (lcm, hash) = ledger_close_meta(
            &nid,
            seq,
            prev,
            1_700_000_000 + u64::from(i) * 5,
            contract,
            &chunk,
            v2,
        )
        .unwrap();
        ledgers.push((seq, hex::encode(hash), lcm));
        prev = hash;
    }
    Chain { ledgers }
}

pub fn b64<T: WriteXdr>(v: &T) -> String {
    v.to_xdr_base64(Limits::none()).unwrap()
}
