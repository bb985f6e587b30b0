//! Every real payload in `fixtures/stellar/` decodes; hash chain verified on the getLedgers pair
//! and the Horizon ledger; V3 and V4 metas; the SAC transfer is recognised as another contract's.

use std::path::{Path, PathBuf};

use fluxora::chain::meta::{
    bundle_from_lcm, contract_events, decode_b64, network_id, verify_header_b64, ContractFilter,
    TxContext, XdrLimits,
};
use fluxora::decode::{decode, DecodeOptions};
use serde_json::Value;
use stellar_xdr::{LedgerCloseMeta, TransactionMeta};

const TESTNET: &str = "Test SDF Network ; September 2015";
const FLUXORA_ORACLE: &str = "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD2KM";
const SAC: &str = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC";

fn fx(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/stellar")
        .join(rel)
}

fn json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fx(rel)).unwrap()).unwrap()
}

fn run_decode(path: &Path, contract: Option<&str>) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let opts = DecodeOptions {
        contract: contract.map(str::to_string),
        source_name: path.display().to_string(),
        limits: None,
    };
    let mut f = std::fs::File::open(path).unwrap();
    decode(&mut f, &mut out, &opts).map_err(|e| e.to_string())?;
    Ok(String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect())
}

#[test]
fn every_stellar_fixture_decodes() {
    let mut n = 0;
    for sub in ["horizon", "stellar-rpc"] {
        for e in std::fs::read_dir(fx(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                run_decode(&p, None).unwrap_or_else(|e| panic!("{p:?}: {e}"));
                n += 1;
            }
        }
    }
    assert!(n >= 15);
}

#[test]
fn get_ledgers_pair_hash_chain_and_lcm_v1() {
    let v = json("stellar-rpc/fixture_getLedgers_36233_36234_lcmV1_hashchain.json");
    let ledgers = v["response"]["result"]["ledgers"].as_array().unwrap();
    assert_eq!(ledgers.len(), 2);
    let mut bundles = Vec::new();
    for l in ledgers {
        let hash = l["hash"].as_str().unwrap();
        let info = verify_header_b64(
            l["headerXdr"].as_str().unwrap(),
            Some(hash),
            "test",
            XdrLimits::default(),
        )
        .unwrap();
        assert_eq!(info.sequence as u64, l["sequence"].as_u64().unwrap());
        assert_eq!(
            info.close_time.to_string(),
            l["ledgerCloseTime"].as_str().unwrap()
        );
        let lcm: LedgerCloseMeta = decode_b64(
            "LedgerCloseMeta",
            "test",
            l["metadataXdr"].as_str().unwrap(),
            XdrLimits::default(),
        )
        .unwrap();
        assert!(matches!(lcm, LedgerCloseMeta::V1(_)));
        let b = bundle_from_lcm(
            &lcm,
            &network_id(TESTNET),
            &ContractFilter::all(),
            Some(hash),
        )
        .unwrap();
        assert_eq!(b.hash, hash);
        assert!(b.header_verified);
        bundles.push(b);
    }
    assert_eq!(
        bundles[1].prev_hash.as_deref(),
        Some(bundles[0].hash.as_str())
    );
    // A wrong claimed hash is detected.
    let l = &ledgers[0];
    let err = verify_header_b64(
        l["headerXdr"].as_str().unwrap(),
        Some(ledgers[1]["hash"].as_str().unwrap()),
        "test",
        XdrLimits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    // The wrong network passphrase cannot match envelopes of a ledger with transactions.
    let lcm: LedgerCloseMeta = decode_b64(
        "LedgerCloseMeta",
        "t",
        ledgers[1]["metadataXdr"].as_str().unwrap(),
        XdrLimits::default(),
    )
    .unwrap();
    let tx_count = match &lcm {
        LedgerCloseMeta::V1(m) => m.tx_processing.len(),
        _ => 0,
    };
    assert_eq!(tx_count, 4);
    let res = bundle_from_lcm(
        &lcm,
        &network_id("Public Global Stellar Network ; September 2015"),
        &ContractFilter::all(),
        None,
    );
    let succeeded =
        bundle_from_lcm(&lcm, &network_id(TESTNET), &ContractFilter::all(), None).is_ok();
    assert!(succeeded);
    // Only successful txs are considered; if any is successful the wrong network must fail.
    if let Err(e) = res {
        assert!(e.to_string().contains("wrong network passphrase"), "{e}");
    }
}

#[test]
fn horizon_ledger_header_verified() {
    let v = json("horizon/RetrieveALedger.json");
    let info = verify_header_b64(
        v["header_xdr"].as_str().unwrap(),
        Some(v["hash"].as_str().unwrap()),
        "h",
        XdrLimits::default(),
    )
    .unwrap();
    assert_eq!(info.sequence as u64, v["sequence"].as_u64().unwrap());
    assert_eq!(info.prev_hash, v["prev_hash"].as_str().unwrap());
    let bad = verify_header_b64(
        v["header_xdr"].as_str().unwrap(),
        Some(&"00".repeat(32)),
        "h",
        XdrLimits::default(),
    );
    assert!(bad.is_err());
}

fn meta_of(rel: &str, ptr: &str) -> TransactionMeta {
    let v = json(rel);
    decode_b64(
        "TransactionMeta",
        rel,
        v.pointer(ptr).unwrap().as_str().unwrap(),
        XdrLimits::default(),
    )
    .unwrap()
}

#[test]
fn v3_meta_decodes_with_no_contract_events() {
    let m = meta_of(
        "stellar-rpc/fixture_getTransaction_p21_metaV3_soroban.json",
        "/result/resultMetaXdr",
    );
    assert!(matches!(m, TransactionMeta::V3(_)));
    let ctx = TxContext {
        ledger: 2540064,
        tx_hash: "x",
        application_order: 1,
    };
    assert!(contract_events(ctx, &m, &ContractFilter::all(), None).is_empty());
}

#[test]
fn v4_meta_custom_contract_event() {
    let m = meta_of(
        "stellar-rpc/fixture_getTransaction_p23_metaV4_contract_event.json",
        "/result/resultMetaXdr",
    );
    assert!(matches!(m, TransactionMeta::V4(_)));
    let ctx = TxContext {
        ledger: 490252,
        tx_hash: "32f7",
        application_order: 1,
    };
    let evs = contract_events(ctx, &m, &ContractFilter::all(), None);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].topic.as_deref(), Some("reflector"));
    assert!(evs[0].decoded.is_unrecognized());
    // Not ours: nothing with the Fluxora filter.
    assert!(contract_events(
        ctx,
        &m,
        &ContractFilter::contract(FLUXORA_ORACLE).unwrap(),
        None
    )
    .is_empty());
}

#[test]
fn sac_transfer_is_another_contracts_event() {
    let v = json("stellar-rpc/fixture_getTransactions_p23_metaV4_sac_transfer.json");
    let txs = v
        .pointer("/result/transactions")
        .unwrap()
        .as_array()
        .unwrap();
    let ok = txs.iter().find(|t| t["status"] == "SUCCESS").unwrap();
    let m: TransactionMeta = decode_b64(
        "TransactionMeta",
        "t",
        ok["resultMetaXdr"].as_str().unwrap(),
        XdrLimits::default(),
    )
    .unwrap();
    assert!(matches!(m, TransactionMeta::V4(_)));
    let ctx = TxContext {
        ledger: 337272,
        tx_hash: "973699db",
        application_order: 2,
    };
    let all = contract_events(ctx, &m, &ContractFilter::all(), None);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].contract_id, SAC);
    assert_eq!(all[0].topic.as_deref(), Some("transfer"));
    assert!(contract_events(
        ctx,
        &m,
        &ContractFilter::contract(FLUXORA_ORACLE).unwrap(),
        None
    )
    .is_empty());
    assert_eq!(
        contract_events(ctx, &m, &ContractFilter::contract(SAC).unwrap(), None).len(),
        1
    );

    // Through the decode command: the failed fee-bump tx contributes nothing; --contract filters.
    let p = fx("stellar-rpc/fixture_getTransactions_p23_metaV4_sac_transfer.json");
    let lines = run_decode(&p, None).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["contract_id"], SAC);
    assert_eq!(lines[0]["ledger"], 337272);
    assert!(run_decode(&p, Some(FLUXORA_ORACLE)).unwrap().is_empty());
}

#[test]
fn get_events_ids_are_kept() {
    let lines = run_decode(&fx("stellar-rpc/fixture_getEvents_sac_transfer.json"), None).unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event_id"], "0016010972359577600-0000000001");
    assert_eq!(lines[0]["contract_id"], SAC);
}

#[test]
fn bad_input_names_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    std::fs::write(
        &p,
        r#"{"result":{"ledgers":[{"sequence":1,"metadataXdr":"AAAA!!"}]}}"#,
    )
    .unwrap();
    let e = run_decode(&p, None).unwrap_err();
    assert!(
        e.contains("LedgerCloseMeta") && e.contains("$.result.ledgers[0].metadataXdr"),
        "{e}"
    );
    std::fs::write(&p, "{ not json").unwrap();
    let e = run_decode(&p, None).unwrap_err();
    assert!(e.contains("invalid JSON") && e.contains("line 1"), "{e}");
    std::fs::write(&p, r#"{"foo":1}"#).unwrap();
    assert!(run_decode(&p, None)
        .unwrap_err()
        .contains("unrecognized JSON"));
    std::fs::write(&p, "AAAA\n").unwrap();
    let e = run_decode(&p, None).unwrap_err();
    assert!(e.contains("line 1") && e.contains("base64 XDR"), "{e}");
    assert!(run_decode(&p, Some("GBAD"))
        .unwrap_err()
        .contains("not a contract strkey"));
}

#[test]
fn scenario_file_through_decode_command() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle/misc_events.json");
    let lines = run_decode(&p, Some(FLUXORA_ORACLE)).unwrap();
    assert!(lines.len() > 30);
    assert!(lines
        .iter()
        .all(|l| l["contract_id"] == FLUXORA_ORACLE && l["type"] != "unrecognized"));
    let created = lines.iter().find(|l| l["type"] == "created").unwrap();
    assert!(created["fields"]["deposit_amount"].is_string());
    assert_eq!(created["stream_id"], 0);
}
