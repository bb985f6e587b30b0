//! Horizon and Stellar RPC sources against real HTTP servers on loopback, serving the real
//! fixture payloads and synthetic chains built with stellar-xdr: 429 + Retry-After, 5xx,
//! problem+json, 410 before_history, SKIP_TXMETA omission, RPC retention window, fetch-ahead
//! in order, circuit breaker.

mod common;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use fluxora::chain::synth::SynthTx;
use fluxora::chain::{
    toid, BreakerState, ChainError, ContractFilter, FetchAhead, FetchConfig, HorizonSource,
    HttpPolicy, LedgerSource, RpcSource,
};
use serde_json::{json, Value};
use stellar_xdr::{GeneralizedTransactionSet, LedgerCloseMeta, TransactionPhase, TxSetComponent};

fn fast_policy() -> HttpPolicy {
    HttpPolicy {
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(10),
        max_attempts: 4,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
        breaker_threshold: 50,
        breaker_cooldown: Duration::from_millis(100),
        ..HttpPolicy::default()
    }
}

fn fetch_cfg(batch: u32, concurrency: usize) -> FetchConfig {
    FetchConfig {
        batch,
        concurrency,
        poll_interval: Duration::from_millis(20),
        retry: fast_policy(),
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn failure(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap();
    if status == 429 {
        (code, [("retry-after", "1"), ("content-type", "application/problem+json")], r#"{"type":"https://stellar.org/horizon-errors/rate_limit_exceeded","title":"Rate Limit Exceeded","status":429,"detail":"slow down"}"#).into_response()
    } else {
        (code, "upstream trouble").into_response()
    }
}

// ------------------------------------------------------------------ Horizon fake

#[derive(Default)]
struct Horizon {
    ledgers: Vec<Value>,
    txs: HashMap<u32, Vec<Value>>,
    elder: u32,
    fail: Mutex<VecDeque<u16>>,
    hits: AtomicUsize,
    omit_meta: AtomicBool,
}

fn problem(status: u16, slug: &str, title: &str, detail: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/problem+json")],
        json!({"type": format!("https://stellar.org/horizon-errors/{slug}"), "title": title, "status": status, "detail": detail}).to_string(),
    )
        .into_response()
}

async fn h_root(State(s): State<Arc<Horizon>>) -> Response {
    let latest = s
        .ledgers
        .last()
        .and_then(|l| l["sequence"].as_u64())
        .unwrap_or(0);
    Json(json!({"history_latest_ledger": latest, "history_elder_ledger": s.elder, "core_latest_ledger": latest, "network_passphrase": TESTNET})).into_response()
}

async fn h_ledgers(
    State(s): State<Arc<Horizon>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(st) = s.fail.lock().unwrap().pop_front() {
        return failure(st);
    }
    let cursor: u64 = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|c| c.parse().ok()).unwrap_or(10);
    let start = (cursor >> 32) + 1;
    if start == 777 {
        return problem(
            400,
            "bad_request",
            "Bad Request",
            "The request you sent was invalid in some way.",
        );
    }
    if start < u64::from(s.elder) {
        return problem(410, "before_history", "Data Requested Is Before Recorded History", "This horizon instance is configured to only track a portion of the stellar network's latest history.");
    }
    let recs: Vec<Value> = s
        .ledgers
        .iter()
        .filter(|l| l["sequence"].as_u64().unwrap() >= start)
        .take(limit)
        .cloned()
        .collect();
    Json(json!({"_links": {"self": {"href": ""}}, "_embedded": {"records": recs}})).into_response()
}

async fn h_txs(
    State(s): State<Arc<Horizon>>,
    UrlPath(seq): UrlPath<u32>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let cursor: u64 = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|c| c.parse().ok()).unwrap_or(10);
    let all = s.txs.get(&seq).cloned().unwrap_or_default();
    let mut recs: Vec<Value> = all
        .into_iter()
        .filter(|t| t["paging_token"].as_str().unwrap().parse::<u64>().unwrap() > cursor)
        .take(limit)
        .collect();
    if s.omit_meta.load(Ordering::SeqCst) {
        for r in &mut recs {
            r.as_object_mut().unwrap().remove("result_meta_xdr");
        }
    }
    let last = recs
        .last()
        .map(|r| r["paging_token"].as_str().unwrap().to_string())
        .unwrap_or_else(|| cursor.to_string());
    Json(json!({
        "_links": {"next": {"href": format!("/ledgers/{seq}/transactions?cursor={last}&limit={limit}&order=asc")}},
        "_embedded": {"records": recs}
    }))
    .into_response()
}

async fn horizon(state: Arc<Horizon>) -> String {
    let app = Router::new()
        .route("/", get(h_root))
        .route("/ledgers", get(h_ledgers))
        .route("/ledgers/{seq}/transactions", get(h_txs))
        .with_state(state);
    serve(app).await
}

fn envelopes(lcm: &LedgerCloseMeta) -> Vec<stellar_xdr::TransactionEnvelope> {
    let set = match lcm {
        LedgerCloseMeta::V1(m) => &m.tx_set,
        LedgerCloseMeta::V2(m) => &m.tx_set,
        LedgerCloseMeta::V0(_) => panic!("unused"),
    };
    let GeneralizedTransactionSet::V1(v1) = set;
    let mut out = Vec::new();
    for p in v1.phases.iter() {
        if let TransactionPhase::V0(comps) = p {
            for c in comps.iter() {
                let TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) = c;
                out.extend(c.txs.iter().cloned());
            }
        }
    }
    out
}

/// Horizon records for a synthetic chain (meta V3 from LCM V1).
fn horizon_state(chain: &Chain, elder: u32) -> Horizon {
    let mut h = Horizon {
        elder,
        ..Default::default()
    };
    for (seq, hash, lcm) in &chain.ledgers {
        let LedgerCloseMeta::V1(m) = lcm else {
            panic!()
        };
        let envs = envelopes(lcm);
        let mut recs = Vec::new();
        let mut ok = 0;
        for (i, (t, env)) in m.tx_processing.iter().zip(&envs).enumerate() {
            let success = fluxora::chain::meta::tx_successful(&t.result.result);
            ok += usize::from(success);
            recs.push(json!({
                "hash": hex::encode(t.result.transaction_hash.0),
                "ledger": seq,
                "paging_token": toid(*seq, i as u32 + 1, 0).to_string(),
                "successful": success,
                "envelope_xdr": b64(env),
                "result_meta_xdr": b64(&t.tx_apply_processing),
            }));
        }
        h.txs.insert(*seq, recs);
        h.ledgers.push(json!({
            "sequence": seq,
            "hash": hash,
            "prev_hash": hex::encode(m.ledger_header.header.previous_ledger_hash.0),
            "paging_token": toid(*seq, 0, 0).to_string(),
            "closed_at": "2023-11-14T22:13:20Z",
            "successful_transaction_count": ok,
            "failed_transaction_count": envs.len() - ok,
            "header_xdr": b64(&m.ledger_header.header),
        }));
    }
    h
}

fn golden() -> Vec<SynthTx> {
    golden_txs("linear_cliff_withdraw_complete_close.json")
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

fn ours() -> ContractFilter {
    ContractFilter::contract(ORACLE_CONTRACT).unwrap()
}

async fn collect(
    src: Arc<dyn LedgerSource>,
    start: u32,
    n: usize,
    cfg: FetchConfig,
) -> Vec<fluxora::chain::LedgerBundle> {
    let mut f = FetchAhead::new(src, start, cfg);
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            tokio::time::timeout(Duration::from_secs(20), f.next())
                .await
                .expect("fetch timed out")
                .unwrap(),
        );
    }
    out
}

fn assert_chain(bundles: &[fluxora::chain::LedgerBundle], first: u32) {
    for (i, b) in bundles.iter().enumerate() {
        assert_eq!(b.sequence, first + i as u32, "in order, nothing skipped");
        assert!(b.header_verified);
        if i > 0 {
            assert_eq!(b.prev_hash.as_deref(), Some(bundles[i - 1].hash.as_str()));
        }
    }
}

#[tokio::test]
async fn horizon_synthetic_chain_with_hal_paging_429_and_5xx() {
    let g = golden();
    let ok_per_round = g.iter().filter(|t| t.success).count();
    // Ledger 2 gets > 200 transactions so its transactions span two HAL pages.
    let rounds = 210 / g.len() + 1;
    let mut chain = build_chain(100, 3, &g, g.len(), false);
    let big = build_chain(101, 1, &g, g.len() * rounds, false);
    // Re-link: build 3 ledgers where the middle one is big, hashes chained.
    let nid = fluxora::chain::meta::network_id(TESTNET);
    let c = contract_bytes(ORACLE_CONTRACT);
    let _ = big;
    let mut prev = [1u8; 32];
    chain.ledgers.clear();
    for (i, n) in [g.len(), g.len() * rounds, g.len()].into_iter().enumerate() {
        let seq = 100 + i as u32;
        let txs: Vec<SynthTx> = g
            .iter()
            .cloned()
            .cycle()
            .take(n)
            .enumerate()
            .map(|(j, mut t)| {
                t.seq_num = j as i64 + 1;
                t
            })
            .collect();
        let (lcm, hash) = fluxora::chain::synth::ledger_close_meta(
            &nid,
            seq,
            prev,
            1_700_000_000 + u64::from(seq),
            c,
            &txs,
            false,
        )
        .unwrap();
        chain.ledgers.push((seq, hex::encode(hash), lcm));
        prev = hash;
    }
    let state = Arc::new(horizon_state(&chain, 50));
    state.fail.lock().unwrap().extend([429, 503]);
    let url = horizon(state.clone()).await;
    let src: Arc<dyn LedgerSource> =
        Arc::new(HorizonSource::new(&url, ours(), fast_policy()).unwrap());
    let t0 = Instant::now();
    let bundles = collect(src.clone(), 100, 3, fetch_cfg(2, 2)).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 must be honoured"
    );
    assert_chain(&bundles, 100);
    assert_eq!(bundles[0].txs.len(), ok_per_round);
    assert_eq!(
        bundles[1].txs.len(),
        ok_per_round * rounds,
        "all HAL pages followed"
    );
    assert!(bundles[1].txs.len() > 200);
    let tb = &bundles[0].txs[0];
    assert_eq!(
        tb.function.as_deref(),
        Some(g.iter().find(|t| t.success).unwrap().function.as_str())
    );
    assert!(bundles[0]
        .txs
        .iter()
        .all(|t| t.events.iter().all(|e| !e.decoded.is_unrecognized())));
    assert_eq!(src.health().breaker, BreakerState::Closed);
    assert!(src.health().total_failures >= 2);
    assert_eq!(src.tip().await.unwrap().latest_ledger, 102);
}

#[tokio::test]
async fn horizon_without_tx_meta_is_a_skip_txmeta_error() {
    let chain = build_chain(100, 2, &golden(), 3, false);
    let state = Arc::new(horizon_state(&chain, 1));
    state.omit_meta.store(true, Ordering::SeqCst);
    let url = horizon(state).await;
    let src = HorizonSource::new(&url, ours(), fast_policy()).unwrap();
    let err = src.fetch_ledgers(100, 2).await.unwrap_err();
    assert!(
        matches!(err, ChainError::SkipTxMeta { ledger: 100, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("SKIP_TXMETA") && msg.contains("Stellar RPC"),
        "{msg}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn horizon_before_history_and_problem_json() {
    let chain = build_chain(100, 2, &golden(), 1, false);
    let url = horizon(Arc::new(horizon_state(&chain, 100))).await;
    let src = HorizonSource::new(&url, ours(), fast_policy()).unwrap();
    let err = src.fetch_ledgers(10, 5).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ChainError::BeforeHistory { requested: 10, .. }),
        "{msg}"
    );
    assert!(msg.contains("keeps ledgers 100..=101"), "{msg}");
    let err = src.fetch_ledgers(777, 5).await.unwrap_err();
    match &err {
        ChainError::Problem {
            status,
            title,
            detail,
            problem_type,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(title, "Bad Request");
            assert!(detail.contains("invalid"));
            assert!(problem_type.ends_with("bad_request"));
        }
        other => panic!("{other}"),
    }
    // Beyond the tip: an empty page, not an error.
    assert!(src.fetch_ledgers(500, 5).await.unwrap().is_empty());
}

#[tokio::test]
async fn horizon_real_ledger_fixture_header_verified() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stellar/horizon");
    let ledger: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("RetrieveALedger.json")).unwrap())
            .unwrap();
    let txs: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("RetrieveALedgersTransactions.json")).unwrap(),
    )
    .unwrap();
    let seq = ledger["sequence"].as_u64().unwrap() as u32;
    let mut recs = txs["_embedded"]["records"].as_array().unwrap().clone();
    for (i, r) in recs.iter_mut().enumerate() {
        r["ledger"] = json!(seq);
        r["paging_token"] = json!(toid(seq, i as u32 + 1, 0).to_string());
    }
    let state = Horizon {
        ledgers: vec![ledger.clone()],
        txs: HashMap::from([(seq, recs)]),
        elder: 1,
        ..Default::default()
    };
    let url = horizon(Arc::new(state)).await;
    let src = HorizonSource::new(&url, ContractFilter::all(), fast_policy()).unwrap();
    let b = src.fetch_ledgers(seq, 1).await.unwrap();
    assert_eq!(b.len(), 1);
    assert!(b[0].header_verified);
    assert_eq!(b[0].hash, ledger["hash"].as_str().unwrap());
    assert_eq!(b[0].prev_hash.as_deref(), ledger["prev_hash"].as_str());
    assert_eq!(b[0].close_time, 1_575_671_972);
    assert!(
        b[0].txs.is_empty(),
        "classic transactions carry no contract events"
    );

    // A tampered hash is caught.
    let mut bad = ledger.clone();
    bad["hash"] = json!("00".repeat(32));
    let url = horizon(Arc::new(Horizon {
        ledgers: vec![bad],
        elder: 1,
        ..Default::default()
    }))
    .await;
    let src = HorizonSource::new(&url, ContractFilter::all(), fast_policy()).unwrap();
    let err = src.fetch_ledgers(seq, 1).await.unwrap_err();
    assert!(matches!(err, ChainError::HashMismatch { .. }), "{err}");
}

// ------------------------------------------------------------------ RPC fake

#[derive(Default)]
struct Rpc {
    ledgers: Vec<Value>,
    oldest: u32,
    latest: u32,
    fail: Mutex<VecDeque<u16>>,
    always_fail: AtomicBool,
    hits: AtomicUsize,
    /// `getLedgers` ranges containing this ledger answer 500 this many times.
    fail_ledger: Mutex<Option<(u32, usize)>>,
    /// This ledger's `metadataXdr` is served corrupted while set.
    corrupt: Mutex<Option<u32>>,
}

async fn rpc_handler(State(s): State<Arc<Rpc>>, Json(req): Json<Value>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if s.always_fail.load(Ordering::SeqCst) {
        return failure(503);
    }
    if let Some(st) = s.fail.lock().unwrap().pop_front() {
        return failure(st);
    }
    let id = req["id"].clone();
    let ok =
        |result: Value| Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response();
    match req["method"].as_str().unwrap_or_default() {
        "getHealth" => ok(json!({"status": "healthy", "latestLedger": s.latest, "oldestLedger": s.oldest, "ledgerRetentionWindow": 120960})),
        "getLatestLedger" => ok(json!({"id": s.ledgers.last().map(|l| l["hash"].clone()), "sequence": s.latest, "protocolVersion": 23})),
        "getLedgers" => {
            let start = req["params"]["startLedger"].as_u64().unwrap_or(0) as u32;
            let limit = req["params"]["pagination"]["limit"].as_u64().unwrap_or(5) as usize;
            if start < s.oldest || start > s.latest {
                return Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": format!("startLedger must be within the ledger range: {} - {}", s.oldest, s.latest)}})).into_response();
            }
            let mut ls: Vec<Value> = s.ledgers.iter().filter(|l| l["sequence"].as_u64().unwrap() as u32 >= start).take(limit).cloned().collect();
            let covers = |x: u32| ls.iter().any(|l| l["sequence"].as_u64() == Some(u64::from(x)));
            {
                let mut fl = s.fail_ledger.lock().unwrap();
                if let Some((x, n)) = *fl {
                    if n > 0 && covers(x) {
                        *fl = Some((x, n - 1));
                        return failure(500);
                    }
                }
            }
            if let Some(x) = *s.corrupt.lock().unwrap() {
                for l in &mut ls {
                    if l["sequence"].as_u64() == Some(u64::from(x)) {
                        l["metadataXdr"] = json!("AAAAAgAAAAA=");
                    }
                }
            }
            ok(json!({"ledgers": ls, "latestLedger": s.latest, "oldestLedger": s.oldest, "cursor": ls.last().map(|l| l["sequence"].to_string())}))
        }
        other => Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("method not found: {other}")}})).into_response(),
    }
}

async fn rpc(state: Arc<Rpc>) -> String {
    serve(
        Router::new()
            .route("/", post(rpc_handler))
            .with_state(state),
    )
    .await
}

fn rpc_state(chain: &Chain) -> Rpc {
    let ledgers: Vec<Value> = chain
        .ledgers
        .iter()
        .map(|(seq, hash, lcm)| {
            let entry = match lcm {
                LedgerCloseMeta::V1(m) => &m.ledger_header,
                LedgerCloseMeta::V2(m) => &m.ledger_header,
                LedgerCloseMeta::V0(m) => &m.ledger_header,
            };
            json!({"hash": hash, "sequence": seq, "ledgerCloseTime": entry.header.scp_value.close_time.0.to_string(), "headerXdr": b64(entry), "metadataXdr": b64(lcm)})
        })
        .collect();
    Rpc {
        oldest: chain.ledgers[0].0,
        latest: chain.ledgers.last().unwrap().0,
        ledgers,
        ..Default::default()
    }
}

#[tokio::test]
async fn rpc_real_get_ledgers_pair() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/stellar/stellar-rpc/fixture_getLedgers_36233_36234_lcmV1_hashchain.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let ledgers = v["response"]["result"]["ledgers"]
        .as_array()
        .unwrap()
        .clone();
    let state = Arc::new(Rpc {
        ledgers,
        oldest: 36233,
        latest: 36234,
        ..Default::default()
    });
    let url = rpc(state).await;
    let src: Arc<dyn LedgerSource> =
        Arc::new(RpcSource::new(&url, TESTNET, ContractFilter::all(), fast_policy()).unwrap());
    let tip = src.tip().await.unwrap();
    assert_eq!((tip.oldest_ledger, tip.latest_ledger), (Some(36233), 36234));
    let direct = RpcSource::new(&url, TESTNET, ContractFilter::all(), fast_policy()).unwrap();
    let (seq, hash) = direct.latest_ledger().await.unwrap();
    assert_eq!(seq, 36234);
    assert_eq!(
        hash,
        "201f38ca43cfad09d00287ee70d77edc8c88a61e018683fd466e71688222a217"
    );
    let bundles = collect(src.clone(), 36233, 2, fetch_cfg(1, 2)).await;
    assert_chain(&bundles, 36233);
    assert_eq!(
        bundles[0].hash,
        "434de11b427aa4b6f8cda259ac2111a6aa148d2ab6b4c7affe864e94a9f4bd80"
    );
    // Retention window: a start before the oldest ledger names the range.
    let err = src.fetch_ledgers(100, 10).await.unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::OutOfRetention {
                requested: 100,
                oldest: 36233,
                latest: 36234,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("36233..=36234"));
    // Beyond the tip: nothing yet.
    assert!(src.fetch_ledgers(36235, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn rpc_synthetic_v2_chain_in_order_through_failures() {
    let g = golden();
    let chain = build_chain(1000, 9, &g, 4, true);
    let state = Arc::new(rpc_state(&chain));
    state.fail.lock().unwrap().extend([500, 429, 502, 503]);
    let url = rpc(state.clone()).await;
    let src: Arc<dyn LedgerSource> =
        Arc::new(RpcSource::new(&url, TESTNET, ours(), fast_policy()).unwrap());
    let t0 = Instant::now();
    let bundles = collect(src.clone(), 1000, 9, fetch_cfg(2, 3)).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    assert_chain(&bundles, 1000);
    let events: usize = bundles
        .iter()
        .flat_map(|b| &b.txs)
        .map(|t| t.events.len())
        .sum();
    assert!(events > 0);
    for b in &bundles {
        for t in &b.txs {
            assert!(t.function.is_some());
            for e in &t.events {
                assert!(e
                    .event_id
                    .starts_with(&format!("{:019}", toid(b.sequence, t.application_order, 0))));
                assert!(!e.decoded.is_unrecognized());
            }
        }
    }
    assert_eq!(src.health().breaker, BreakerState::Closed);
}

#[tokio::test]
async fn rpc_breaker_opens_and_is_visible() {
    let chain = build_chain(1, 2, &[], 0, true);
    let state = Arc::new(rpc_state(&chain));
    state.always_fail.store(true, Ordering::SeqCst);
    let url = rpc(state.clone()).await;
    let policy = HttpPolicy {
        breaker_threshold: 3,
        max_attempts: 3,
        breaker_cooldown: Duration::from_secs(30),
        ..fast_policy()
    };
    let src = RpcSource::new(&url, TESTNET, ours(), policy).unwrap();
    let err = src.fetch_ledgers(1, 1).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(src.health().breaker, BreakerState::Open);
    let hits = state.hits.load(Ordering::SeqCst);
    // While open, requests fail fast without reaching the server.
    let err = src.fetch_ledgers(1, 1).await.unwrap_err();
    assert!(matches!(err, ChainError::CircuitOpen { .. }), "{err}");
    assert_eq!(state.hits.load(Ordering::SeqCst), hits);
}

#[tokio::test]
async fn transport_errors_are_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let policy = HttpPolicy {
        max_attempts: 2,
        ..fast_policy()
    };
    let src = RpcSource::new(&format!("http://{addr}"), TESTNET, ours(), policy).unwrap();
    let err = src.tip().await.unwrap_err();
    assert!(matches!(err, ChainError::Transport { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn fetch_ahead_never_skips_a_failing_ledger() {
    let chain = build_chain(2000, 8, &golden(), 2, true);
    let state = Arc::new(rpc_state(&chain));
    *state.fail_ledger.lock().unwrap() = Some((2003, 6));
    *state.corrupt.lock().unwrap() = Some(2006);
    let url = rpc(state.clone()).await;
    let src: Arc<dyn LedgerSource> = Arc::new(
        RpcSource::new(
            &url,
            TESTNET,
            ours(),
            HttpPolicy {
                max_attempts: 1,
                ..fast_policy()
            },
        )
        .unwrap(),
    );
    let mut f = FetchAhead::new(src, 2000, fetch_cfg(2, 3));
    let mut got = Vec::new();
    // 2000..=2005: ledger 2003 fails six times (transient) and is retried until it comes.
    for _ in 0..6 {
        got.push(
            tokio::time::timeout(Duration::from_secs(20), f.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_chain(&got, 2000);
    assert_eq!(state.fail_ledger.lock().unwrap().unwrap().1, 0);
    // 2006 is corrupt (permanent): an error naming it, and the position does not move.
    for _ in 0..2 {
        let err = tokio::time::timeout(Duration::from_secs(20), f.next())
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("ledgers[0].metadataXdr"), "{err}");
        assert!(err.to_string().contains("startLedger=2006"), "{err}");
        assert_eq!(f.position(), 2006);
    }
    // Once the server serves it correctly, delivery resumes exactly there.
    *state.corrupt.lock().unwrap() = None;
    for _ in 0..2 {
        got.push(
            tokio::time::timeout(Duration::from_secs(20), f.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_chain(&got, 2000);
    assert_eq!(got.len(), 8);
}
