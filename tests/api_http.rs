//! Black-box tests of the REST API over real HTTP: a store filled by the simulator (served as a
//! Stellar RPC node over loopback, ingested by the real client, with a fork so the reorg log is
//! not empty), then the API server on a loopback port, queried with reqwest. Both stores.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fluxora::api::{self, ApiContext};
use fluxora::chain::http::HttpPolicy;
use fluxora::chain::rpc::RpcSource;
use fluxora::chain::{ContractFilter, LedgerSource};
use fluxora::config::DatabaseUrl;
use fluxora::ingest::{IngestConfig, Ingestor};
use fluxora::projection::view::ViewOptions;
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::{serve, SimState};
use fluxora::sim::DEFAULT_PASSPHRASE;
use fluxora::store::{self, Store, StreamQuery};
use fluxora::testing::TempPgDatabase;
use reqwest::StatusCode;
use serde_json::Value;

struct Filled {
    store: Arc<dyn Store>,
    contract: String,
}

async fn ingest_to_tip(store: Arc<dyn Store>, url: &str, contract: [u8; 32], first: u32, tip: u32) {
    let source: Arc<dyn LedgerSource> = Arc::new(
        RpcSource::new(
            url,
            DEFAULT_PASSPHRASE,
            ContractFilter::from_bytes(contract),
            HttpPolicy {
                total_timeout: Duration::from_secs(10),
                base_backoff: Duration::from_millis(5),
                ..HttpPolicy::default()
            },
        )
        .unwrap(),
    );
    let ing = Ingestor::new(
        store,
        source,
        IngestConfig {
            start_ledger: Some(first),
            finality_depth: 8,
            batch_ledgers: 20,
            network_passphrase: DEFAULT_PASSPHRASE.into(),
            stop_at: Some(tip),
            ..Default::default()
        },
    );
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(Duration::from_secs(60), ing.run(rx))
        .await
        .expect("ingestion timed out")
        .expect("ingestion failed");
}

/// 80 generated ledgers, a 3-ledger fork, 10 more: ingested over HTTP into `store`.
async fn fill(store: Arc<dyn Store>) -> Filled {
    let mut g = Generator::new(GenConfig {
        seed: 11,
        txs_per_ledger: 6,
        target_streams: 40,
        fork_window: 8,
        ..GenConfig::default()
    });
    let first = g.cfg.first_seq;
    let contract = g.contract;
    let strkey = g.contract_strkey();
    let state = SimState::new(g.empty_chain());
    {
        let mut c = state.chain.write().await;
        for _ in 0..80 {
            g.next_ledger(&mut c).unwrap();
        }
    }
    let sim = serve(state.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("{}/", sim.url());
    let tip = state.chain.read().await.tip().unwrap().seq;
    ingest_to_tip(store.clone(), &url, contract, first, tip).await;
    let tip = {
        let mut c = state.chain.write().await;
        g.fork(&mut c, 3).unwrap();
        for _ in 0..10 {
            g.next_ledger(&mut c).unwrap();
        }
        c.tip().unwrap().seq
    };
    ingest_to_tip(store.clone(), &url, contract, first, tip).await;
    sim.stop().await;
    assert!(
        !store.reorgs(10).await.unwrap().is_empty(),
        "the fork was not seen"
    );
    Filled {
        store,
        contract: strkey,
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    server: api::Server,
}

async fn start(f: &Filled, tweak: impl FnOnce(&mut ApiContext)) -> Api {
    let mut ctx = ApiContext::new(
        f.store.clone(),
        ViewOptions {
            decimals: 7,
            contract_id: f.contract.clone(),
        },
    );
    ctx.http.rate_limit_per_minute = 0;
    ctx.http.sse_heartbeat_ms = 200;
    let (stop, rx) = tokio::sync::watch::channel(false);
    ctx.shutdown = rx.clone();
    tweak(&mut ctx);
    let server = api::serve("127.0.0.1:0".parse().unwrap(), api::router(ctx), rx)
        .await
        .unwrap();
    Api {
        base: format!("http://{}", server.addr),
        http: reqwest::Client::new(),
        stop,
        server,
    }
}

impl Api {
    async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, body)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.server.task)
            .await
            .expect("graceful shutdown hung")
            .unwrap()
            .unwrap();
    }
}

/// A 400 `VALIDATION_ERROR` naming `param`.
fn assert_validation(status: StatusCode, body: &Value, param: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{body}");
    assert_eq!(body["error"]["details"]["parameter"], param, "{body}");
    assert!(body["error"]["requestId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
}

const KEYS: [&str; 10] = [
    "id",
    "sender",
    "recipient",
    "depositAmount",
    "streamedAmount",
    "remainingAmount",
    "ratePerSecond",
    "startTime",
    "endTime",
    "status",
];

async fn suite(f: Filled) {
    let api = start(&f, |_| {}).await;
    let all = f
        .store
        .list_streams(&StreamQuery {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.len() > 20, "too few streams generated: {}", all.len());

    // Envelope and the ten keys, in order.
    let (st, h, body) = api.get("/api/streams?limit=3").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["success"], true);
    assert!(body["meta"]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body["meta"]["requestId"].as_str().unwrap(),
        h["x-request-id"].to_str().unwrap()
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.get("server").is_none());
    let first = &body["data"]["streams"][0];
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    for k in KEYS.iter().chain(&[
        "withdrawnAmount",
        "withdrawableAmount",
        "cliffTime",
        "cancelledAt",
        "kind",
        "contractId",
        "createdLedger",
        "updatedLedger",
        "transactionHash",
        "verified",
    ]) {
        assert!(keys.iter().any(|x| x == k), "key {k} missing: {first}");
    }
    for k in [
        "depositAmount",
        "streamedAmount",
        "remainingAmount",
        "ratePerSecond",
    ] {
        assert!(first[k].is_string(), "{k} must be a string: {first}");
    }
    assert!(first["id"].is_string() && first["startTime"].is_u64());

    // Keyset pages walk every stream exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/streams?limit=7&cursor={c}"),
            None => "/api/streams?limit=7".into(),
        };
        let (st, _, body) = api.get(&path).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let d = &body["data"];
        for s in d["streams"].as_array().unwrap() {
            seen.push(s["id"].as_str().unwrap().parse::<u64>().unwrap());
        }
        assert!(
            d.get("next_cursor").is_some(),
            "next_cursor must always be present"
        );
        if d["has_more"] == false {
            assert!(d["next_cursor"].is_null());
            break;
        }
        cursor = Some(d["next_cursor"].as_str().unwrap().to_string());
    }
    let want: Vec<u64> = all.iter().map(|s| s.stream_id).collect();
    assert_eq!(seen, want);

    // Filters.
    let s0 = &all[0];
    for (param, value) in [("sender", &s0.sender), ("recipient", &s0.recipient)] {
        let (st, _, body) = api
            .get(&format!("/api/streams?{param}={value}&limit=100"))
            .await;
        assert_eq!(st, StatusCode::OK);
        let got = body["data"]["streams"].as_array().unwrap();
        assert!(!got.is_empty());
        assert!(
            got.iter().all(|s| s[param] == value.as_str()),
            "{param} filter"
        );
    }
    for status in ["active", "cancelled", "closed", "completed", "paused"] {
        let (st, _, body) = api
            .get(&format!("/api/streams?status={status}&limit=100"))
            .await;
        assert_eq!(st, StatusCode::OK);
        let n = all
            .iter()
            .filter(|s| fluxora::store::status_label(s) == status)
            .count()
            .min(100);
        let got = body["data"]["streams"].as_array().unwrap();
        assert_eq!(got.len(), n, "status {status}");
        assert!(got.iter().all(|s| s["status"] == status));
    }

    // Validation, each naming its parameter.
    for (path, param) in [
        ("/api/streams?limit=0", "limit"),
        ("/api/streams?limit=101", "limit"),
        ("/api/streams?limit=ten", "limit"),
        ("/api/streams?status=running", "status"),
        ("/api/streams?sender=GABC", "sender"),
        ("/api/streams?recipient=nonsense", "recipient"),
        ("/api/streams?cursor=%%%", "cursor"),
        ("/api/streams?limit=1&limit=2", "limit"),
        ("/api/streams/abc", "id"),
        ("/api/streams/-1", "id"),
        ("/api/streams/1?at=yesterday", "at"),
        ("/api/streams/1?ledger=0", "ledger"),
        ("/api/streams/1/events?after=-4", "after"),
        ("/api/events?limit=1001", "limit"),
        ("/api/ledgers/zero", "seq"),
        ("/api/reorgs?limit=0", "limit"),
        ("/streams?treasury=GXYZ", "treasury"),
        ("/recipients/GNOPE/streams", "address"),
    ] {
        let (st, _, body) = api.get(path).await;
        assert_validation(st, &body, param);
    }
    // A strkey with a broken checksum.
    let mut broken = s0.sender.clone().into_bytes();
    let i = broken.len() - 2;
    broken[i] = if broken[i] == b'A' { b'B' } else { b'A' };
    let broken = String::from_utf8(broken).unwrap();
    let (st, _, body) = api.get(&format!("/api/streams?sender={broken}")).await;
    assert_validation(st, &body, "sender");
    // A tampered cursor, and a cursor replayed with other filters.
    let (_, _, body) = api.get("/api/streams?limit=2").await;
    let c = body["data"]["next_cursor"].as_str().unwrap().to_string();
    let mut t = c.clone().into_bytes();
    t[5] = if t[5] == b'x' { b'y' } else { b'x' };
    let (st, _, body) = api
        .get(&format!(
            "/api/streams?limit=2&cursor={}",
            String::from_utf8(t).unwrap()
        ))
        .await;
    assert_validation(st, &body, "cursor");
    let (st, _, body) = api
        .get(&format!("/api/streams?limit=2&status=active&cursor={c}"))
        .await;
    assert_validation(st, &body, "cursor");

    // Not found, wrong method, unknown route.
    let (st, _, body) = api.get("/api/streams/999999999").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let (st, _, body) = api.get("/api/nothing/here").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let r = api
        .http
        .delete(format!("{}/api/streams/1", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");

    // One stream; amounts at an instant; weak ETag and 304.
    let id = all
        .iter()
        .find(|s| s.rate_per_second > 0 && !s.closed)
        .map(|s| s.stream_id)
        .unwrap_or(s0.stream_id);
    let (st, h, body) = api.get(&format!("/api/streams/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["data"]["stream"]["id"], id.to_string());
    let tag = h["etag"].to_str().unwrap().to_string();
    assert!(tag.starts_with("W/\""), "{tag}");
    let r = api
        .http
        .get(format!("{}/api/streams/{id}", api.base))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"], tag.as_str());
    let s = f.store.stream(id).await.unwrap().unwrap();
    for at in [
        s.start_time,
        s.cliff_time,
        (s.start_time + s.end_time) / 2,
        s.end_time + 10,
    ] {
        let (_, _, body) = api.get(&format!("/api/streams/{id}?at={at}")).await;
        let want = fluxora::projection::view::stream_object(
            &s,
            at,
            &ViewOptions {
                decimals: 7,
                contract_id: f.contract.clone(),
            },
        );
        assert_eq!(body["data"]["stream"], serde_json::to_value(&want).unwrap());
    }

    // Time travel: as of every ledger that changed the stream.
    let versions = f.store.stream_versions(None, 100_000).await.unwrap();
    let mut checked = 0;
    for v in versions.iter().filter(|v| v.stream_id == id) {
        let (st, _, body) = api
            .get(&format!("/api/streams/{id}?ledger={}", v.ledger))
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["stream"]["updatedLedger"], v.ledger);
        checked += 1;
    }
    assert!(checked > 0);
    let created = versions.iter().find(|v| v.stream_id == id).unwrap().ledger;
    if created > 1000 {
        let (st, _, _) = api
            .get(&format!("/api/streams/{id}?ledger={}", created - 1))
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    let (st, _, _) = api
        .get(&format!("/api/streams/{id}?ledger=4000000000"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // The stream's events and the global feed.
    let (st, _, body) = api
        .get(&format!("/api/streams/{id}/events?limit=500"))
        .await;
    assert_eq!(st, StatusCode::OK);
    let evs = body["data"]["events"].as_array().unwrap();
    assert!(!evs.is_empty());
    let sid = id.to_string();
    assert!(evs
        .iter()
        .all(|e| e["streamId"].as_str() == Some(sid.as_str())));
    let total = f.store.event_count().await.unwrap();
    let mut after = 0i64;
    let mut positions = Vec::new();
    loop {
        let (st, _, body) = api
            .get(&format!("/api/events?after={after}&limit=97"))
            .await;
        assert_eq!(st, StatusCode::OK);
        for e in body["data"]["events"].as_array().unwrap() {
            positions.push(e["position"].as_i64().unwrap());
            for (k, v) in e["amounts"].as_object().unwrap() {
                assert!(v.is_string() && e["fields"][k].is_string(), "{e}");
            }
        }
        if body["data"]["has_more"] == false {
            break;
        }
        after = body["data"]["next_cursor"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    }
    assert_eq!(positions, (1..=total as i64).collect::<Vec<_>>());

    // Ledgers and reorgs.
    let tip = f.store.tip().await.unwrap().unwrap();
    let (st, _, body) = api.get(&format!("/api/ledgers/{}", tip.sequence)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["data"]["hash"], tip.hash);
    let (st, _, body) = api.get("/api/ledgers/1").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, _, body) = api.get("/api/reorgs").await;
    assert_eq!(st, StatusCode::OK);
    assert!(!body["data"]["reorgs"].as_array().unwrap().is_empty());

    // The frontend's surface.
    let (st, _, body) = api.get("/streams?limit=500").await;
    assert_eq!(st, StatusCode::OK);
    let recs = body["data"].as_array().unwrap();
    assert_eq!(recs.len(), all.len().min(500));
    for r in recs {
        let d =
            fluxora::domain::amount::parse_amount(r["depositAmount"].as_str().unwrap(), 7).unwrap();
        let s = fluxora::domain::amount::parse_amount(r["streamedAmount"].as_str().unwrap(), 7)
            .unwrap();
        let w = fluxora::domain::amount::parse_amount(r["withdrawableAmount"].as_str().unwrap(), 7)
            .unwrap();
        let rem = fluxora::domain::amount::parse_amount(r["remainingAmount"].as_str().unwrap(), 7)
            .unwrap();
        assert!(0 <= s && s <= d, "streamed outside 0..=deposit: {r}");
        assert!(w <= rem, "withdrawable above remaining: {r}");
        assert!(
            ["Active", "Paused", "Completed", "Cancelled"].contains(&r["status"].as_str().unwrap())
        );
        assert!(r["progress"].as_u64().unwrap() <= 100);
    }
    let (st, _, body) = api.get("/streams?status=Active").await;
    assert_eq!(st, StatusCode::OK);
    assert!(body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "Active"));
    let (st, _, body) = api.get(&format!("/streams/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["data"]["id"], id.to_string());
    let (st, _, _) = api.get("/streams/424242424").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, body) = api
        .get(&format!("/recipients/{}/streams", s0.recipient))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["recipientAddress"] == s0.recipient.as_str()));
    let (st, _, body) = api.get("/treasury/metrics").await;
    assert_eq!(st, StatusCode::OK);
    let labels: BTreeSet<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains("Total streams"));
    assert!(body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["value"].is_string()));
    let (st, h, body) = api.get("/version").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-fluxora-api-version"], "1.0");
    assert_eq!(body["version"], "1.0");

    // Health, metrics, OpenAPI.
    let (st, _, body) = api.get("/health").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["indexer"]["status"], "not_configured");
    assert!(body["indexer"].get("lastSafeLedger").is_some());
    assert!(body["indexer"]["reorgDetected"].as_bool().unwrap());
    assert_eq!(body["wsConnections"], 0);
    assert_eq!(body["dependencies"]["database"]["ok"], true);
    let (st, _, body) = api.get("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(text.contains("fluxora_http_requests_total"), "{text}");
    let (st, _, body) = api.get("/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    for p in [
        "/api/streams",
        "/api/streams/{id}",
        "/api/events",
        "/health",
        "/streams",
    ] {
        assert!(
            body["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite(format!("sqlite://{}", dir.path().join("a.db").display()));
    let store: Arc<dyn Store> = Arc::from(store::open(&url).await.unwrap());
    suite(fill(store).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_on_postgres() {
    let Some(db) = TempPgDatabase::create().await.unwrap() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::from(
        store::open(&DatabaseUrl::Postgres(db.url.clone()))
            .await
            .unwrap(),
    );
    suite(fill(store.clone()).await).await;
    drop(store);
    db.drop_db().await.unwrap();
}

async fn sqlite_filled() -> (tempfile::TempDir, Filled) {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite(format!("sqlite://{}", dir.path().join("a.db").display()));
    let store: Arc<dyn Store> = Arc::from(store::open(&url).await.unwrap());
    let f = fill(store).await;
    (dir, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_and_429() {
    let (_dir, f) = sqlite_filled().await;
    let api = start(&f, |c| c.http.rate_limit_per_minute = 5).await;
    for i in 0..5u32 {
        let (st, h, _) = api.get("/api/streams?limit=1").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h["x-ratelimit-limit"], "5");
        assert_eq!(h["x-ratelimit-remaining"], (4 - i).to_string().as_str());
        assert!(
            h["x-ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1_700_000_000
        );
    }
    let (st, h, body) = api.get("/api/streams?limit=1").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(h["x-ratelimit-remaining"], "0");
    // Health and metrics are exempt.
    for _ in 0..3 {
        assert_eq!(api.get("/health").await.0, StatusCode::OK);
        assert_eq!(api.get("/metrics").await.0, StatusCode::OK);
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_cors_and_body_limit() {
    let (_dir, f) = sqlite_filled().await;
    let api = start(&f, |c| {
        c.http.cors_origins =
            fluxora::config::CorsOrigins::List(vec!["https://app.example".into()]);
        c.http.request_body_limit = 1024;
    })
    .await;
    // A UUID correlation id is reused; anything else is replaced.
    let id = "6f1c1a5e-8f0e-4c1e-9d0a-0b7f9b1f2a3c";
    let r = api
        .http
        .get(format!("{}/api/streams", api.base))
        .header("x-correlation-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], id);
    assert_eq!(r.headers()["x-correlation-id"], id);
    let r = api
        .http
        .get(format!("{}/api/streams", api.base))
        .header("x-correlation-id", "<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "<script>");
    // CORS: the configured origin is allowed, another is not.
    let pre = |origin: &'static str| {
        api.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/streams", api.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let r = pre("https://app.example").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = pre("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A body above the limit.
    let r = api
        .http
        .post(format!("{}/api/streams", api.base))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    api.stop().await;
}

/// Reads SSE frames until `n` events of type `event` arrived (bounded).
async fn read_sse(
    resp: reqwest::Response,
    n: usize,
    heartbeats: usize,
) -> (Vec<(String, String, Value)>, usize) {
    let mut resp = resp;
    let mut buf = String::new();
    let mut out = Vec::new();
    let mut beats = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n || beats < heartbeats {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("SSE timed out")
            .unwrap()
            .expect("SSE ended early");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame = buf[..end].to_string();
            buf.drain(..end + 2);
            let (mut id, mut ev, mut data) = (String::new(), String::new(), String::new());
            for line in frame.lines() {
                if line.starts_with(':') {
                    beats += 1;
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("event:") {
                    ev = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !ev.is_empty() {
                out.push((id, ev, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    (out, beats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_resume_and_heartbeat() {
    let (_dir, f) = sqlite_filled().await;
    let api = start(&f, |_| {}).await;
    // The stream with the most events.
    let all = f
        .store
        .list_streams(&StreamQuery {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut best = (0, 0);
    for s in &all {
        let n = f
            .store
            .stream_events(s.stream_id, 0, 1000)
            .await
            .unwrap()
            .len();
        if n > best.1 {
            best = (s.stream_id, n);
        }
    }
    let (id, n) = best;
    assert!(n >= 3, "need a stream with several events");
    let stored = f.store.stream_events(id, 0, 1000).await.unwrap();
    let url = format!("{}/api/streams/{id}/events", api.base);
    let r = api
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (events, beats) = read_sse(r, n, 1).await;
    assert!(beats >= 1, "no heartbeat comment");
    let ids: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    let want: Vec<&str> = stored.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, want);
    assert!(events.iter().all(
        |e| e.1 == "stream_update" && e.2["streamId"].as_str() == Some(id.to_string().as_str())
    ));
    assert!(events[0].2["stream"]["depositAmount"].is_string());
    // Resume after the second event: exactly the rest, no duplicate.
    let r = api
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("last-event-id", want[1])
        .send()
        .await
        .unwrap();
    let (events, _) = read_sse(r, n - 2, 0).await;
    let ids: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, want[2..].to_vec());
    // An unknown Last-Event-ID: STALE_CURSOR, then the history from the start.
    let r = api
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("last-event-id", "0000000000000000001-0000000000")
        .send()
        .await
        .unwrap();
    let (events, _) = read_sse(r, n + 1, 0).await;
    assert_eq!(events[0].1, "error");
    assert_eq!(events[0].2["code"], "STALE_CURSOR");
    assert_eq!(events[1].0, want[0]);
    // Shutdown ends open SSE responses and the server finishes.
    let _open = api
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    api.stop().await;
}

/// Real slowness from PostgreSQL: another session holds an exclusive lock on `streams`, so the
/// API's read waits. With a short per-request timeout the client gets 408 `REQUEST_TIMEOUT`;
/// with a long one, a shutdown begun while the request waits lets it finish (200) first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_and_graceful_shutdown_on_postgres() {
    use sqlx::Connection;
    let Some(db) = TempPgDatabase::create().await.unwrap() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::from(
        store::open(&DatabaseUrl::Postgres(db.url.clone()))
            .await
            .unwrap(),
    );
    let f = fill(store.clone()).await;
    let id = f
        .store
        .list_streams(&StreamQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .stream_id;
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();

    // 1. Timeout.
    let api = start(&f, |c| c.http.request_timeout_ms = 300).await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE streams IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let (st, _, body) = api.get(&format!("/api/streams/{id}")).await;
    assert_eq!(st, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");
    assert!(t.elapsed() < Duration::from_secs(5));
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    api.stop().await;

    // 2. Graceful shutdown finishes the in-flight request.
    let api = start(&f, |c| c.http.request_timeout_ms = 20_000).await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE streams IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let url = format!("{}/api/streams/{id}", api.base);
    let client = api.http.clone();
    let inflight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = api.stop.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !api.server.task.is_finished(),
        "the server quit with a request in flight"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), inflight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), api.server.task)
        .await
        .expect("server did not finish after its last request")
        .unwrap()
        .unwrap();
    drop(locker);
    drop(f);
    drop(store);
    db.drop_db().await.unwrap();
}
