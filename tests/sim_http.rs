//! The simulator over real HTTP: what it serves must be what real nodes serve, verifiably
//! (hash chain, tx hashes under the passphrase, decodable metas), and every fault knob must show.

use std::path::Path;
use std::time::Duration;

use fluxora::sim::http::{serve, Fault, SimServer, SimState};
use fluxora::sim::{scenario, MetaFormat, DEFAULT_PASSPHRASE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stellar_xdr::{
    LedgerCloseMeta, LedgerHeader, LedgerHeaderHistoryEntry, Limits, ReadXdr, TransactionMeta,
    WriteXdr,
};

fn limits() -> Limits {
    Limits {
        depth: 500,
        len: 32 << 20,
    }
}

async fn start(file: &str, format: MetaFormat) -> (SimServer, scenario::Scenario) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/contract-oracle")
        .join(file);
    let s = scenario::load(&path, DEFAULT_PASSPHRASE, format).unwrap();
    let server = serve(
        SimState::new(s.chain.clone()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    (server, s)
}

async fn rpc(url: &str, method: &str, params: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
}

async fn rpc_json(url: &str, method: &str, params: Value) -> Value {
    rpc(url, method, params).await.json().await.unwrap()
}

#[tokio::test]
async fn rpc_get_ledgers_serves_a_verifiable_chain_with_every_fixture_event() {
    for format in [MetaFormat::V3InLcmV1, MetaFormat::V4InLcmV2] {
        let (server, s) = start("misc_events.json", format).await;
        let url = server.url();
        let network_id: [u8; 32] = Sha256::digest(DEFAULT_PASSPHRASE.as_bytes()).into();
        let mut cursor: Option<String> = None;
        let mut prev_hash: Option<String> = None;
        let mut seen = 0u32;
        let mut our_events = 0usize;
        let contract = s.chain.contract;
        for _page in 0..1_000 {
            let params = match &cursor {
                None => json!({"startLedger": s.chain.first_seq(), "pagination": {"limit": 200}}),
                Some(c) => json!({"pagination": {"cursor": c, "limit": 200}}),
            };
            let r = rpc_json(&url, "getLedgers", params).await;
            let ledgers = r["result"]["ledgers"].as_array().unwrap().clone();
            if ledgers.is_empty() {
                break;
            }
            for l in &ledgers {
                let entry = LedgerHeaderHistoryEntry::from_xdr_base64(
                    l["headerXdr"].as_str().unwrap(),
                    limits(),
                )
                .unwrap();
                let h = hex::encode(Sha256::digest(entry.header.to_xdr(Limits::none()).unwrap()));
                assert_eq!(h, l["hash"].as_str().unwrap());
                assert_eq!(
                    entry.header.ledger_seq as u64,
                    l["sequence"].as_u64().unwrap()
                );
                if let Some(p) = &prev_hash {
                    assert_eq!(&hex::encode(entry.header.previous_ledger_hash.0), p);
                }
                prev_hash = Some(h);
                let lcm =
                    LedgerCloseMeta::from_xdr_base64(l["metadataXdr"].as_str().unwrap(), limits())
                        .unwrap();
                let (envelopes, metas): (Vec<_>, Vec<(_, TransactionMeta)>) = match (&lcm, format) {
                    (LedgerCloseMeta::V1(v), MetaFormat::V3InLcmV1) => {
                        let stellar_xdr::GeneralizedTransactionSet::V1(set) = &v.tx_set;
                        (
                            set.phases.to_vec(),
                            v.tx_processing
                                .iter()
                                .map(|t| {
                                    (t.result.transaction_hash.0, t.tx_apply_processing.clone())
                                })
                                .collect(),
                        )
                    }
                    (LedgerCloseMeta::V2(v), MetaFormat::V4InLcmV2) => {
                        let stellar_xdr::GeneralizedTransactionSet::V1(set) = &v.tx_set;
                        (
                            set.phases.to_vec(),
                            v.tx_processing
                                .iter()
                                .map(|t| {
                                    (t.result.transaction_hash.0, t.tx_apply_processing.clone())
                                })
                                .collect(),
                        )
                    }
                    other => panic!("unexpected LedgerCloseMeta for {format:?}: {:?}", other.0),
                };
                // Every result's hash is the hash of an envelope in the set, under the passphrase.
                let mut hashes = Vec::new();
                for phase in &envelopes {
                    if let stellar_xdr::TransactionPhase::V0(comps) = phase {
                        for stellar_xdr::TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) in
                            comps.iter()
                        {
                            for e in c.txs.iter() {
                                hashes.push(e.hash(network_id).unwrap());
                            }
                        }
                    }
                }
                for (h, meta) in &metas {
                    assert!(hashes.contains(h), "result without an envelope");
                    let events: Vec<_> = match meta {
                        TransactionMeta::V3(m) => m
                            .soroban_meta
                            .iter()
                            .flat_map(|s| s.events.to_vec())
                            .collect(),
                        TransactionMeta::V4(m) => m
                            .operations
                            .iter()
                            .flat_map(|o| o.events.to_vec())
                            .collect(),
                        _ => panic!("classic meta"),
                    };
                    our_events += events
                        .iter()
                        .filter(|e| e.contract_id.as_ref().is_some_and(|c| c.0 .0 == contract))
                        .count();
                }
                seen += 1;
            }
            cursor = r["result"]["cursor"].as_str().map(str::to_string);
        }
        assert_eq!(seen, s.chain.tip().unwrap().seq - s.chain.first_seq() + 1);
        let doc: Value = serde_json::from_slice(
            &std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fixtures/contract-oracle/misc_events.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let expected: usize = doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["events"].as_array().map_or(0, |e| e.len()))
            .sum();
        assert_eq!(
            our_events, expected,
            "every fixture event is served exactly once"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn rpc_health_latest_and_range_errors() {
    let (server, s) = start("pause_resume.json", MetaFormat::V4InLcmV2).await;
    let url = server.url();
    let tip = s.chain.tip().unwrap().seq;
    let h = rpc_json(&url, "getHealth", json!(null)).await;
    assert_eq!(h["result"]["status"], "healthy");
    assert_eq!(h["result"]["latestLedger"], tip);
    let l = rpc_json(&url, "getLatestLedger", json!(null)).await;
    let header =
        LedgerHeader::from_xdr_base64(l["result"]["headerXdr"].as_str().unwrap(), limits())
            .unwrap();
    assert_eq!(header.ledger_seq, tip);

    server.state.faults.lock().await.retention = Some(100);
    let r = rpc_json(
        &url,
        "getLedgers",
        json!({"startLedger": s.chain.first_seq()}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32600);
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("{} - {}", tip - 99, tip)), "{msg}");

    server.state.faults.lock().await.lag_ledgers = 10;
    let h = rpc_json(&url, "getHealth", json!(null)).await;
    assert_eq!(
        h["result"]["latestLedger"],
        tip - 10,
        "a lagging node reports an older tip"
    );
    let unknown = rpc_json(&url, "getFoo", json!(null)).await;
    assert_eq!(unknown["error"]["code"], -32601);
    server.stop().await;
}

#[tokio::test]
async fn injected_faults_show_on_the_wire() {
    let (server, s) = start("pause_resume.json", MetaFormat::V4InLcmV2).await;
    let url = server.url();
    let first = s.chain.first_seq();
    let st = &server.state;

    st.inject(Fault::TooManyRequests {
        retry_after_secs: 3,
    })
    .await;
    let r = rpc(&url, "getLedgers", json!({"startLedger": first})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let body: Value = r.json().await.unwrap();
    assert!(body["type"]
        .as_str()
        .unwrap()
        .ends_with("rate_limit_exceeded"));

    st.inject(Fault::ServerError(503)).await;
    assert_eq!(rpc(&url, "getHealth", json!(null)).await.status(), 503);

    st.inject(Fault::TruncatedBody).await;
    let text = rpc(&url, "getLedgers", json!({"startLedger": first}))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "body must be cut"
    );

    st.inject(Fault::MalformedXdr).await;
    let r = rpc_json(
        &url,
        "getLedgers",
        json!({"startLedger": first, "pagination": {"limit": 1}}),
    )
    .await;
    let meta = r["result"]["ledgers"][0]["metadataXdr"].as_str().unwrap();
    assert!(LedgerCloseMeta::from_xdr_base64(meta, limits()).is_err());

    st.inject(Fault::Delay(Duration::from_millis(600))).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let err = client
        .get(format!("{url}/ledgers"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());

    // After the queue drains, requests are served normally again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ok = rpc_json(
        &url,
        "getLedgers",
        json!({"startLedger": first, "pagination": {"limit": 1}}),
    )
    .await;
    assert!(ok["result"]["ledgers"][0]["metadataXdr"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn horizon_pages_ledgers_and_transactions_and_can_omit_meta() {
    let (server, s) = start("misc_events.json", MetaFormat::V4InLcmV2).await;
    let url = server.url();
    let client = reqwest::Client::new();
    // Page through the first 450 ledgers following `next` links.
    let mut next = format!("{url}/ledgers?order=asc&limit=200&cursor=");
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let page: Value = client
            .get(&next)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in page["_embedded"]["records"].as_array().unwrap() {
            let header =
                LedgerHeader::from_xdr_base64(r["header_xdr"].as_str().unwrap(), limits()).unwrap();
            let h = hex::encode(Sha256::digest(header.to_xdr(Limits::none()).unwrap()));
            assert_eq!(h, r["hash"].as_str().unwrap());
            seqs.push(r["sequence"].as_u64().unwrap() as u32);
        }
        next = format!("{url}{}", page["_links"]["next"]["href"].as_str().unwrap());
    }
    let expected: Vec<u32> = (s.chain.first_seq()..s.chain.first_seq() + 600).collect();
    assert_eq!(seqs, expected);

    // A ledger with a failed step: failed txs only with include_failed=true.
    let busy = s
        .chain
        .ledgers()
        .iter()
        .find(|l| l.txs.iter().any(|t| !t.spec.success))
        .expect("misc_events has a failed step");
    let txs: Value = client
        .get(format!(
            "{url}/ledgers/{}/transactions?limit=200&include_failed=true",
            busy.seq
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recs = txs["_embedded"]["records"].as_array().unwrap();
    assert_eq!(recs.len(), busy.txs.len());
    for r in recs {
        TransactionMeta::from_xdr_base64(r["result_meta_xdr"].as_str().unwrap(), limits()).unwrap();
    }
    let ok_only: Value = client
        .get(format!("{url}/ledgers/{}/transactions?limit=200", busy.seq))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ok_only["_embedded"]["records"].as_array().unwrap().len() < recs.len());

    server.state.faults.lock().await.horizon_without_meta = true;
    let bare: Value = client
        .get(format!(
            "{url}/ledgers/{}/transactions?include_failed=true",
            busy.seq
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(bare["_embedded"]["records"][0]
        .get("result_meta_xdr")
        .is_none());

    server.state.faults.lock().await.retention = Some(10);
    let gone = client
        .get(format!("{url}/ledgers/{}", s.chain.first_seq()))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
    let p: Value = gone.json().await.unwrap();
    assert!(p["type"].as_str().unwrap().ends_with("before_history"));
    assert!(p["detail"].as_str().unwrap().contains("oldest ledger"));
    server.stop().await;
}

#[tokio::test]
async fn a_refork_replaces_the_last_ledgers_with_new_hashes() {
    let (server, s) = start("rate_changes.json", MetaFormat::V4InLcmV2).await;
    let tip = s.chain.tip().unwrap().seq;
    let before: Vec<String> = s.chain.ledgers().iter().map(|l| l.hash_hex()).collect();
    server.state.refork_last(5).await.unwrap();
    let chain = server.state.chain.read().await;
    let after: Vec<String> = chain.ledgers().iter().map(|l| l.hash_hex()).collect();
    assert_eq!(after.len(), before.len());
    let n = before.len();
    assert_eq!(before[..n - 5], after[..n - 5]);
    for i in n - 5..n {
        assert_ne!(before[i], after[i]);
    }
    assert_eq!(chain.tip().unwrap().seq, tip);
    for w in chain.ledgers().windows(2) {
        assert_eq!(w[1].header.previous_ledger_hash.0, w[0].hash);
    }
    drop(chain);
    server.stop().await;
}
