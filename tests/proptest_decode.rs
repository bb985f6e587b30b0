//! Property tests: random bytes, truncated and bit-flipped real payloads never panic anywhere in
//! the decoding path (XDR limits, typed events, Stream entries, bundles, the decode command).

mod common;

use std::path::Path;

use common::*;
use fluxora::chain::meta::{
    bundle_from_lcm, contract_events, network_id, ContractFilter, TxContext, XdrLimits,
};
use fluxora::contract::{ContractEvent, StreamEntry};
use fluxora::decode::{decode, DecodeOptions};
use proptest::prelude::*;
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr, ScVal, TransactionMeta, WriteXdr};

fn limits(len: usize) -> Limits {
    XdrLimits::default().for_input(len)
}

fn real_lcm_bytes() -> Vec<Vec<u8>> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/stellar/stellar-rpc/fixture_getLedgers_36233_36234_lcmV1_hashchain.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let mut out: Vec<Vec<u8>> = v["response"]["result"]["ledgers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(l["metadataXdr"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    // A synthetic V2 ledger full of Fluxora events.
    let g: Vec<_> = golden_txs("misc_events.json")
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let chain = build_chain(7, 1, &g, 12, true);
    out.push(chain.ledgers[0].2.to_xdr(Limits::none()).unwrap());
    out
}

fn exercise_lcm(bytes: &[u8]) {
    if let Ok(lcm) = LedgerCloseMeta::from_xdr(bytes, limits(bytes.len())) {
        let _ = bundle_from_lcm(&lcm, &network_id(TESTNET), &ContractFilter::all(), None);
    }
}

fn exercise_scval(bytes: &[u8]) {
    if let Ok(v) = ScVal::from_xdr(bytes, limits(bytes.len())) {
        let _ = StreamEntry::from_scval(&v);
        let _ = ContractEvent::decode(std::slice::from_ref(&v), &v);
        let sym = ScVal::Symbol("created".try_into().unwrap());
        let _ = ContractEvent::decode(&[sym, ScVal::U64(0)], &v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise_lcm(&bytes);
        if let Ok(m) = TransactionMeta::from_xdr(&bytes[..], limits(bytes.len())) {
            let _ = contract_events(TxContext { ledger: 1, tx_hash: "", application_order: 1 }, &m, &ContractFilter::all(), None);
        }
        exercise_scval(&bytes);
    }

    #[test]
    fn truncated_and_flipped_real_payloads_never_panic(which in 0usize..3, cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let all = real_lcm_bytes();
        let b = &all[which % all.len()];
        let n = cut.index(b.len());
        exercise_lcm(&b[..n]);
        let mut f = b.clone();
        let i = flip.index(f.len());
        f[i] ^= 1 << bit;
        exercise_lcm(&f);
        exercise_scval(&f[i..]);
    }

    #[test]
    fn decode_command_never_panics_on_garbage(text in ".{0,400}") {
        let mut out = Vec::new();
        let _ = decode(&mut text.as_bytes(), &mut out, &DecodeOptions::default());
        let wrapped = format!("{{\"result\":{{\"ledgers\":[{{\"sequence\":1,\"metadataXdr\":{}}}]}}}}", serde_json::to_string(&text).unwrap());
        let _ = decode(&mut wrapped.as_bytes(), &mut out, &DecodeOptions::default());
    }
}

#[test]
fn deep_nesting_is_refused_by_the_depth_limit() {
    // 1000 nested single-element vecs: under the 500 depth limit this must be an error, not a stack overflow.
    let mut bytes = Vec::new();
    for _ in 0..1000 {
        bytes.extend_from_slice(&16u32.to_be_bytes()); // SCV_VEC
        bytes.extend_from_slice(&1u32.to_be_bytes()); // Some
        bytes.extend_from_slice(&1u32.to_be_bytes()); // len 1
    }
    bytes.extend_from_slice(&1u32.to_be_bytes()); // SCV_VOID
    let r = ScVal::from_xdr(&bytes[..], limits(bytes.len()));
    assert!(r.is_err());
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    };
    let mut out = Vec::new();
    let err = decode(&mut b64.as_bytes(), &mut out, &DecodeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}
