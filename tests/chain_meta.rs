//! LedgerCloseMeta V1 (meta V3) and V2 (meta V4) → bundles: envelope matching, function name,
//! only our contract's events from successful transactions, post-tx Stream entries.

mod common;

use common::*;
use fluxora::chain::meta::{bundle_from_lcm, network_id, ContractFilter};
use fluxora::chain::synth::SynthTx;
use fluxora::chain::StreamChange;
use stellar_xdr::ScVal;

fn check(v2: bool) {
    let mut txs: Vec<SynthTx> = golden_txs("linear_cliff_withdraw_complete_close.json")
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    // An event of another contract in the same ledger must be ignored with our filter.
    let chain = build_chain(500, 3, &txs, txs.len(), v2);
    let nid = network_id(TESTNET);
    let ours = ContractFilter::contract(ORACLE_CONTRACT).unwrap();
    let mut prev: Option<String> = None;
    for (seq, hash, lcm) in &chain.ledgers {
        let b = bundle_from_lcm(lcm, &nid, &ours, Some(hash)).unwrap();
        assert_eq!(b.sequence, *seq);
        assert!(b.header_verified);
        if let Some(p) = &prev {
            assert_eq!(b.prev_hash.as_ref(), Some(p));
        }
        prev = Some(b.hash.clone());
        let successful: Vec<&SynthTx> = txs.iter().filter(|t| t.success).collect();
        // every successful tx invoked our contract, so each is kept
        assert_eq!(b.txs.len(), successful.len());
        for (tb, st) in b.txs.iter().zip(&successful) {
            assert_eq!(tb.function.as_deref(), Some(st.function.as_str()));
            assert_eq!(tb.invoked_contract.as_deref(), Some(ORACLE_CONTRACT));
            assert_eq!(tb.events.len(), st.events.len());
            for (i, e) in tb.events.iter().enumerate() {
                assert!(!e.decoded.is_unrecognized(), "{:?}", e.decoded);
                assert_eq!(e.event_index, i as u32);
                assert_eq!(e.op_index, 0);
                assert_eq!(e.contract_id, ORACLE_CONTRACT);
                assert_eq!(e.function.as_deref(), Some(st.function.as_str()));
                assert_eq!(
                    e.event_id,
                    fluxora::chain::event_id(*seq, tb.application_order, 0, i as u32)
                );
                assert_eq!(e.stream_id, e.decoded.stream_id());
            }
            assert_eq!(tb.stream_changes.len(), st.stream_changes.len());
            for (c, (id, v)) in tb.stream_changes.iter().zip(&st.stream_changes) {
                assert_eq!(c.stream_id, *id);
                match (&c.change, v) {
                    (StreamChange::Upsert { entry, .. }, Some(_)) => {
                        assert_eq!(entry.stream_id, *id)
                    }
                    (StreamChange::Removed, None) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        // Application order is 1-based and failed txs are skipped (gaps in the order).
        assert!(b
            .txs
            .windows(2)
            .all(|w| w[0].application_order < w[1].application_order));
        // Another contract's filter sees nothing.
        let other =
            ContractFilter::contract("CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC")
                .unwrap();
        assert!(bundle_from_lcm(lcm, &nid, &other, Some(hash))
            .unwrap()
            .txs
            .is_empty());
        // Wrong passphrase: envelopes do not match.
        let err = bundle_from_lcm(
            lcm,
            &network_id("Public Global Stellar Network ; September 2015"),
            &ours,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no matching envelope"), "{err}");
        // Wrong claimed hash.
        assert!(bundle_from_lcm(lcm, &nid, &ours, Some(&"ab".repeat(32))).is_err());
    }
    // A failed transaction's events (if any were in meta) are ignored: mark all failed.
    for t in &mut txs {
        t.success = false;
    }
    let chain = build_chain(900, 1, &txs, txs.len(), v2);
    let (_, hash, lcm) = &chain.ledgers[0];
    assert!(bundle_from_lcm(lcm, &nid, &ours, Some(hash))
        .unwrap()
        .txs
        .is_empty());
}

#[test]
fn lcm_v1_meta_v3() {
    check(false);
}

#[test]
fn lcm_v2_meta_v4() {
    check(true);
}

#[test]
fn unrecognized_stream_value_is_kept_raw() {
    let tx = SynthTx {
        function: "weird".into(),
        stream_changes: vec![(3, Some(ScVal::U32(1))), (4, None)],
        success: true,
        seq_num: 1,
        ..Default::default()
    };
    let chain = build_chain(10, 1, &[tx], 1, true);
    let (_, hash, lcm) = &chain.ledgers[0];
    let b = bundle_from_lcm(
        lcm,
        &network_id(TESTNET),
        &ContractFilter::contract(ORACLE_CONTRACT).unwrap(),
        Some(hash),
    )
    .unwrap();
    assert_eq!(b.txs.len(), 1);
    match &b.txs[0].stream_changes[0].change {
        StreamChange::Unrecognized { reason, value_xdr } => {
            assert!(reason.contains("expected Map"), "{reason}");
            assert!(!value_xdr.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.txs[0].stream_changes[1].change, StreamChange::Removed);
}
