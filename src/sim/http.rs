//! The simulator over HTTP on loopback, as Stellar RPC (`POST /`, JSON-RPC 2.0: `getHealth`,
//! `getLatestLedger`, `getLedgers`, `getEvents`) and as Horizon (`GET /`, `/ledgers`,
//! `/ledgers/{seq}`, `/ledgers/{seq}/transactions`, HAL paging, problem+json errors), with fault
//! injection knobs for tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stellar_xdr::{ContractEventBody, Limits, WriteXdr};
use tokio::sync::{Mutex, RwLock};

use super::chain::{SimChain, SimError, SimLedger, SimTx};

/// A fault to inject into the next request(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After` (seconds) and a `rate_limit_exceeded` problem.
    TooManyRequests { retry_after_secs: u64 },
    /// A 5xx with a problem body.
    ServerError(u16),
    /// Wait this long before answering (a client with a shorter timeout gives up).
    Delay(Duration),
    /// The response body cut in half.
    TruncatedBody,
    /// The ledger/transaction XDR in the response replaced by bytes that do not decode.
    MalformedXdr,
}

/// Fault knobs. Queued faults apply to the next requests in order, one each.
#[derive(Debug, Default)]
pub struct Faults {
    pub queue: VecDeque<Fault>,
    /// Added to every response.
    pub latency: Option<Duration>,
    /// Horizon omits `result_meta_xdr` (a server running with SKIP_TXMETA).
    pub horizon_without_meta: bool,
    /// The node reports and serves a tip this many ledgers behind the real one.
    pub lag_ledgers: u32,
    /// Ledgers older than `tip - retention + 1` are gone (RPC range error, Horizon 410).
    pub retention: Option<u32>,
}

/// Shared simulator state.
#[derive(Debug)]
pub struct SimState {
    pub chain: RwLock<SimChain>,
    pub faults: Mutex<Faults>,
    /// Highest ledger published so far (`None`: all of them).
    pub published: RwLock<Option<u32>>,
    /// Requests served, for tests.
    pub requests: std::sync::atomic::AtomicU64,
}

impl SimState {
    /// State serving the whole chain.
    pub fn new(chain: SimChain) -> Arc<Self> {
        Arc::new(Self {
            chain: RwLock::new(chain),
            faults: Mutex::new(Faults::default()),
            published: RwLock::new(None),
            requests: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Queues a fault for the next request.
    pub async fn inject(&self, fault: Fault) {
        self.faults.lock().await.queue.push_back(fault);
    }

    /// Replaces the last `k` ledgers with the same transactions on a new branch: every one of
    /// them gets a new hash (what a reorg, a testnet reset or a provider switch looks like).
    pub async fn refork_last(&self, k: u32) -> Result<(), SimError> {
        let mut chain = self.chain.write().await;
        let Some(tip) = chain.tip().map(|t| t.seq) else {
            return Ok(());
        };
        let fork = tip
            .saturating_sub(k)
            .max(chain.first_seq().saturating_sub(1));
        let replay: Vec<(u64, Vec<super::chain::TxSpec>)> = chain
            .ledgers()
            .iter()
            .filter(|l| l.seq > fork)
            .map(|l| {
                Ok((
                    l.close_time,
                    l.txs
                        .iter()
                        .map(SimTx::replay_spec)
                        .collect::<Result<_, SimError>>()?,
                ))
            })
            .collect::<Result<_, SimError>>()?;
        chain.fork_after(fork);
        for (t, specs) in replay {
            chain.push_ledger(t, specs)?;
        }
        Ok(())
    }
}

/// A running simulator server.
#[derive(Debug)]
pub struct SimServer {
    pub addr: SocketAddr,
    pub state: Arc<SimState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Base URL, e.g. `http://127.0.0.1:41234` (RPC at `/`, Horizon under it).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Serves `state` on `addr` (port 0 picks a free one).
pub async fn serve(state: Arc<SimState>, addr: SocketAddr) -> std::io::Result<SimServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}

/// The router (RPC and Horizon on one port).
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/", post(rpc).get(horizon_root))
        .route("/ledgers", get(horizon_ledgers))
        .route("/ledgers/{seq}", get(horizon_ledger))
        .route("/ledgers/{seq}/transactions", get(horizon_ledger_txs))
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not_found",
                "Resource Missing",
                "no such resource",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), faults))
        .with_state(state)
}

fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    let body = json!({
        "type": format!("https://stellar.org/horizon-errors/{slug}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json; charset=utf-8"),
    );
    r
}

/// Applies latency and queued faults around every request.
async fn faults(State(state): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    state
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (fault, latency) = {
        let mut f = state.faults.lock().await;
        // MalformedXdr is consumed by the handlers that serve XDR.
        let fault = match f.queue.front() {
            Some(Fault::MalformedXdr) | None => None,
            Some(_) => f.queue.pop_front(),
        };
        (fault, f.latency)
    };
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    match fault {
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate Limit Exceeded",
                "The rate limit for the requesting IP address is over its alloted limit.",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Some(Fault::ServerError(code)) => problem(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "server_error",
            "Internal Server Error",
            "injected server error",
        ),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::TruncatedBody) => {
            let r = next.run(req).await;
            let (parts, body) = r.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let cut = bytes.slice(..bytes.len() / 2);
            let mut r = Response::from_parts(parts, Body::from(cut));
            r.headers_mut().remove(header::CONTENT_LENGTH);
            r
        }
        Some(Fault::MalformedXdr) | None => next.run(req).await,
    }
}

async fn take_malformed(state: &SimState) -> bool {
    let mut f = state.faults.lock().await;
    if f.queue.front() == Some(&Fault::MalformedXdr) {
        f.queue.pop_front();
        true
    } else {
        false
    }
}

/// Base64 that does not decode as the XDR it claims to be.
const MALFORMED_XDR: &str = "AAAAAgAAAAEAAAA=";

/// The ledgers a client can see: (oldest, latest), after lag and retention.
async fn window(state: &SimState, chain: &SimChain) -> Option<(u32, u32)> {
    let tip = chain.tip()?.seq;
    let published = state.published.read().await.unwrap_or(tip).min(tip);
    let f = state.faults.lock().await;
    let latest = published
        .saturating_sub(f.lag_ledgers)
        .max(chain.first_seq());
    let oldest = match f.retention {
        Some(r) if r > 0 => latest.saturating_sub(r - 1).max(chain.first_seq()),
        _ => chain.first_seq(),
    };
    Some((oldest, latest))
}

fn b64<T: WriteXdr>(v: &T) -> String {
    v.to_xdr_base64(Limits::none()).unwrap_or_default()
}

fn rfc3339(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// Stellar RPC

fn rpc_error(id: &Value, code: i64, message: &str) -> Json<Value> {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

fn rpc_ok(id: &Value, result: Value) -> Json<Value> {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

async fn rpc(State(state): State<Arc<SimState>>, body: axum::body::Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(&Value::Null, -32700, &format!("parse error: {e}")).into_response()
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = req.get("method").and_then(Value::as_str).unwrap_or("");
    let params = req.get("params").cloned().unwrap_or(Value::Null);
    let chain = state.chain.read().await;
    let Some((oldest, latest)) = window(&state, &chain).await else {
        return rpc_error(&id, -32603, "no ledgers yet").into_response();
    };
    let close = |seq: u32| chain.ledger(seq).map_or(0, |l| l.close_time);
    match method {
        "getHealth" => rpc_ok(
            &id,
            json!({
                "status": "healthy",
                "latestLedger": latest,
                "latestLedgerCloseTime": close(latest).to_string(),
                "oldestLedger": oldest,
                "oldestLedgerCloseTime": close(oldest).to_string(),
                "ledgerRetentionWindow": latest - oldest + 1,
            }),
        )
        .into_response(),
        "getNetwork" => rpc_ok(
            &id,
            json!({"passphrase": chain.passphrase, "protocolVersion": chain.format.protocol()}),
        )
        .into_response(),
        "getLatestLedger" => {
            let Some(l) = chain.ledger(latest) else {
                return rpc_error(&id, -32603, "no ledgers yet").into_response();
            };
            let meta = match chain.close_meta_b64(l) {
                Ok(m) => m,
                Err(e) => return rpc_error(&id, -32603, &e.to_string()).into_response(),
            };
            rpc_ok(
                &id,
                json!({
                    "id": l.hash_hex(),
                    "protocolVersion": chain.format.protocol(),
                    "sequence": l.seq,
                    "closeTime": l.close_time.to_string(),
                    "headerXdr": b64(&l.header),
                    "metadataXdr": meta,
                }),
            )
            .into_response()
        }
        "getLedgers" => {
            let malformed = take_malformed(&state).await;
            get_ledgers(&chain, &id, &params, oldest, latest, malformed).into_response()
        }
        "getEvents" => get_events(&chain, &id, &params, oldest, latest).into_response(),
        other => rpc_error(&id, -32601, &format!("method not found: {other}")).into_response(),
    }
}

#[derive(Deserialize, Default)]
struct Pagination {
    cursor: Option<String>,
    limit: Option<u32>,
}

fn get_ledgers(
    chain: &SimChain,
    id: &Value,
    params: &Value,
    oldest: u32,
    latest: u32,
    malformed: bool,
) -> Json<Value> {
    let pagination: Pagination = params
        .get("pagination")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    let start_param = params.get("startLedger").and_then(Value::as_u64);
    let start = match (&pagination.cursor, start_param) {
        (Some(_), Some(_)) => {
            return rpc_error(id, -32602, "startLedger and cursor cannot both be set")
        }
        (Some(c), None) => match c.parse::<u32>() {
            Ok(c) => c.saturating_add(1),
            Err(_) => return rpc_error(id, -32602, &format!("invalid cursor: {c}")),
        },
        (None, Some(s)) => match u32::try_from(s) {
            Ok(s) => s,
            Err(_) => return rpc_error(id, -32602, "startLedger out of range"),
        },
        (None, None) => return rpc_error(id, -32602, "startLedger or cursor is required"),
    };
    if start < oldest || (pagination.cursor.is_none() && start > latest) {
        return rpc_error(
            id,
            -32600,
            &format!("startLedger must be within the ledger range: {oldest} - {latest}"),
        );
    }
    let limit = pagination.limit.unwrap_or(50);
    if limit == 0 || limit > 200 {
        return rpc_error(
            id,
            -32602,
            &format!("limit must be between 1 and 200, got {limit}"),
        );
    }
    let mut ledgers = Vec::new();
    let mut seq = start;
    while seq <= latest && ledgers.len() < limit as usize {
        let Some(l) = chain.ledger(seq) else { break };
        let meta = if malformed && ledgers.is_empty() {
            MALFORMED_XDR.to_string()
        } else {
            match chain.close_meta_b64(l) {
                Ok(m) => m,
                Err(e) => return rpc_error(id, -32603, &e.to_string()),
            }
        };
        ledgers.push(json!({
            "hash": l.hash_hex(),
            "sequence": l.seq,
            "ledgerCloseTime": l.close_time.to_string(),
            "headerXdr": b64(&chain.header_entry(l)),
            "metadataXdr": meta,
        }));
        seq += 1;
    }
    let cursor = ledgers
        .last()
        .and_then(|l| l["sequence"].as_u64())
        .unwrap_or(u64::from(start.saturating_sub(1)));
    let close = |s: u32| chain.ledger(s).map_or(0, |l| l.close_time);
    rpc_ok(
        id,
        json!({
            "ledgers": ledgers,
            "latestLedger": latest,
            "latestLedgerCloseTime": close(latest),
            "oldestLedger": oldest,
            "oldestLedgerCloseTime": close(oldest),
            "cursor": cursor.to_string(),
        }),
    )
}

/// `%019d-%010d` of TOID(ledger, tx, op) and the event's index in its transaction.
fn event_id(ledger: u32, tx: u32, op: u32, index: u32) -> String {
    crate::store::format_event_id(ledger, tx, op, index)
}

fn contract_strkey(c: &[u8; 32]) -> String {
    stellar_strkey::Contract(*c)
        .to_string()
        .as_str()
        .to_string()
}

fn get_events(
    chain: &SimChain,
    id: &Value,
    params: &Value,
    oldest: u32,
    latest: u32,
) -> Json<Value> {
    let pagination: Pagination = params
        .get("pagination")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    let limit = pagination.limit.unwrap_or(100).clamp(1, 10_000) as usize;
    let (start, after_id) = match (
        &pagination.cursor,
        params.get("startLedger").and_then(Value::as_u64),
    ) {
        (Some(_), Some(_)) => {
            return rpc_error(id, -32602, "ledger ranges and cursor cannot both be set")
        }
        (Some(c), None) => match crate::store::parse_event_id(c) {
            Ok((l, ..)) => (l, Some(c.clone())),
            Err(e) => return rpc_error(id, -32602, &format!("invalid cursor: {e}")),
        },
        (None, Some(s)) => (u32::try_from(s).unwrap_or(u32::MAX), None),
        (None, None) => return rpc_error(id, -32602, "startLedger or cursor is required"),
    };
    if start < oldest || start > latest {
        return rpc_error(
            id,
            -32600,
            &format!("startLedger must be within the ledger range: {oldest} - {latest}"),
        );
    }
    let end = params
        .get("endLedger")
        .and_then(Value::as_u64)
        .and_then(|e| u32::try_from(e).ok())
        .unwrap_or(u32::MAX)
        .min(latest.saturating_add(1))
        .min(start.saturating_add(10_000));
    let contract_filter: Option<Vec<String>> = params
        .get("filters")
        .and_then(Value::as_array)
        .map(|fs| {
            fs.iter()
                .flat_map(|f| {
                    f.get("contractIds")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty());
    let mut events = Vec::new();
    let mut last_id = None;
    'ledgers: for seq in start..end {
        let Some(l) = chain.ledger(seq) else { break };
        for tx in &l.txs {
            let evs = match contract_events(tx) {
                Ok(e) => e,
                Err(e) => return rpc_error(id, -32603, &e.to_string()),
            };
            for (index, (op, e)) in evs.into_iter().enumerate() {
                let eid = event_id(seq, tx.application_order, op, index as u32);
                if after_id.as_ref().is_some_and(|a| eid <= *a) {
                    continue;
                }
                let cid = e
                    .contract_id
                    .as_ref()
                    .map(|c| contract_strkey(&c.0 .0))
                    .unwrap_or_default();
                if contract_filter.as_ref().is_some_and(|f| !f.contains(&cid)) {
                    continue;
                }
                let ContractEventBody::V0(body) = &e.body;
                events.push(json!({
                    "type": "contract",
                    "ledger": seq,
                    "ledgerClosedAt": rfc3339(l.close_time),
                    "contractId": cid,
                    "id": eid,
                    "transactionIndex": tx.application_order,
                    "operationIndex": op,
                    "inSuccessfulContractCall": true,
                    "topic": body.topics.iter().map(b64).collect::<Vec<_>>(),
                    "value": b64(&body.data),
                    "txHash": hex::encode(tx.hash),
                }));
                last_id = Some(eid);
                if events.len() >= limit {
                    break 'ledgers;
                }
            }
        }
    }
    let cursor = if events.len() >= limit {
        last_id.unwrap_or_default()
    } else {
        event_id(end.saturating_sub(1), 0, 0, 0)
    };
    let close = |s: u32| chain.ledger(s).map_or(0, |l| l.close_time);
    rpc_ok(
        id,
        json!({
            "events": events,
            "latestLedger": latest,
            "oldestLedger": oldest,
            "latestLedgerCloseTime": close(latest).to_string(),
            "oldestLedgerCloseTime": close(oldest).to_string(),
            "cursor": cursor,
        }),
    )
}

/// The contract events of a successful transaction with their operation index (the simulator's
/// transactions have one operation).
fn contract_events(tx: &SimTx) -> Result<Vec<(u32, stellar_xdr::ContractEvent)>, SimError> {
    Ok(tx.contract_events()?.into_iter().map(|e| (0, e)).collect())
}

// ------------------------------------------------------------------------------------------
// Horizon

async fn horizon_root(State(state): State<Arc<SimState>>) -> Response {
    let chain = state.chain.read().await;
    let (oldest, latest) = window(&state, &chain).await.unwrap_or((0, 0));
    Json(json!({
        "horizon_version": concat!("fluxora-sim ", env!("CARGO_PKG_VERSION")),
        "core_version": "fluxora-sim",
        "ingest_latest_ledger": latest,
        "history_latest_ledger": latest,
        "history_latest_ledger_closed_at": rfc3339(chain.ledger(latest).map_or(0, |l| l.close_time)),
        "history_elder_ledger": oldest,
        "core_latest_ledger": latest,
        "network_passphrase": chain.passphrase,
        "current_protocol_version": chain.format.protocol(),
        "supported_protocol_version": chain.format.protocol(),
        "core_supported_protocol_version": chain.format.protocol(),
    }))
    .into_response()
}

fn ledger_record(base: &str, l: &SimLedger, protocol: u32) -> Value {
    let ok = l.txs.iter().filter(|t| t.spec.success).count();
    let paging = (u64::from(l.seq)) << 32;
    json!({
        "_links": {
            "self": {"href": format!("{base}/ledgers/{}", l.seq)},
            "transactions": {"href": format!("{base}/ledgers/{}/transactions{{?cursor,limit,order}}", l.seq), "templated": true},
        },
        "id": l.hash_hex(),
        "paging_token": paging.to_string(),
        "hash": l.hash_hex(),
        "prev_hash": l.prev_hash_hex(),
        "sequence": l.seq,
        "successful_transaction_count": ok,
        "failed_transaction_count": l.txs.len() - ok,
        "operation_count": ok,
        "tx_set_operation_count": l.txs.len(),
        "closed_at": rfc3339(l.close_time),
        "total_coins": "100000000000.0000000",
        "fee_pool": "0.0000000",
        "base_fee_in_stroops": 100,
        "base_reserve_in_stroops": 5000000,
        "max_tx_set_size": 1000,
        "protocol_version": protocol,
        "header_xdr": b64(&l.header),
    })
}

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<String>,
    order: Option<String>,
    include_failed: Option<String>,
}

/// The page size, or `None` when it is not 1..=200.
fn parse_limit(q: &PageQuery) -> Option<usize> {
    match &q.limit {
        None => Some(10),
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=200).contains(n)),
    }
}

fn bad_limit() -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "Bad Request",
        "The request you sent was invalid in some way. limit: must be between 1 and 200",
    )
}

fn before_history(oldest: u32) -> Response {
    problem(
        StatusCode::GONE,
        "before_history",
        "Data Requested Is Before Recorded History",
        &format!(
            "This horizon instance is configured to only track a portion of the stellar network's \
             latest history. This request is asking for results prior to the recorded history. \
             The oldest ledger this server keeps is {oldest}."
        ),
    )
}

async fn horizon_ledgers(
    State(state): State<Arc<SimState>>,
    Query(q): Query<PageQuery>,
) -> Response {
    let Some(limit) = parse_limit(&q) else {
        return bad_limit();
    };
    let chain = state.chain.read().await;
    let Some((oldest, latest)) = window(&state, &chain).await else {
        return Json(json!({"_links": {}, "_embedded": {"records": []}})).into_response();
    };
    let desc = q.order.as_deref() == Some("desc");
    let cursor: Option<u64> = match q.cursor.as_deref() {
        None | Some("") => None,
        Some("now") => Some(u64::from(latest) << 32),
        Some(c) => match c.parse() {
            Ok(c) => Some(c),
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Bad Request",
                    "cursor: invalid",
                )
            }
        },
    };
    let from_seq = cursor.map(|c| (c >> 32) as u32);
    if from_seq.is_some_and(|s| s != 0 && s < oldest.saturating_sub(1)) {
        return before_history(oldest);
    }
    let seqs: Vec<u32> = if desc {
        let top = from_seq.map_or(latest, |s| s.saturating_sub(1)).min(latest);
        (oldest..=top).rev().take(limit).collect()
    } else {
        let bottom = from_seq.map_or(oldest, |s| s.saturating_add(1)).max(oldest);
        (bottom..=latest).take(limit).collect()
    };
    let base = "";
    let records: Vec<Value> = seqs
        .iter()
        .filter_map(|s| chain.ledger(*s))
        .map(|l| ledger_record(base, l, chain.format.protocol()))
        .collect();
    let next_cursor = records
        .last()
        .and_then(|r| r["paging_token"].as_str().map(str::to_string))
        .or_else(|| q.cursor.clone())
        .unwrap_or_default();
    let order = if desc { "desc" } else { "asc" };
    Json(json!({
        "_links": {
            "self": {"href": format!("/ledgers?cursor={}&limit={limit}&order={order}", q.cursor.clone().unwrap_or_default())},
            "next": {"href": format!("/ledgers?cursor={next_cursor}&limit={limit}&order={order}")},
        },
        "_embedded": {"records": records},
    }))
    .into_response()
}

async fn horizon_ledger(State(state): State<Arc<SimState>>, Path(seq): Path<String>) -> Response {
    let Ok(seq) = seq.parse::<u32>() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad Request",
            "sequence: invalid",
        );
    };
    let chain = state.chain.read().await;
    let Some((oldest, latest)) = window(&state, &chain).await else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "Resource Missing",
            "no ledgers yet",
        );
    };
    if seq < oldest {
        return before_history(oldest);
    }
    match chain.ledger(seq).filter(|_| seq <= latest) {
        Some(l) => Json(ledger_record("", l, chain.format.protocol())).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "Resource Missing",
            "The resource at the url requested was not found.",
        ),
    }
}

async fn horizon_ledger_txs(
    State(state): State<Arc<SimState>>,
    Path(seq): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let Ok(seq) = seq.parse::<u32>() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad Request",
            "sequence: invalid",
        );
    };
    let Some(limit) = parse_limit(&q) else {
        return bad_limit();
    };
    let malformed = take_malformed(&state).await;
    let without_meta = state.faults.lock().await.horizon_without_meta;
    let chain = state.chain.read().await;
    let Some((oldest, latest)) = window(&state, &chain).await else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "Resource Missing",
            "no ledgers yet",
        );
    };
    if seq < oldest {
        return before_history(oldest);
    }
    let Some(l) = chain.ledger(seq).filter(|_| seq <= latest) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "Resource Missing",
            "The resource at the url requested was not found.",
        );
    };
    let include_failed = q.include_failed.as_deref() == Some("true");
    let after: u64 = q
        .cursor
        .as_deref()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let source = stellar_strkey::ed25519::PublicKey(match &l.txs.first().map(SimTx::envelope) {
        Some(Ok(stellar_xdr::TransactionEnvelope::Tx(e))) => match &e.tx.source_account {
            stellar_xdr::MuxedAccount::Ed25519(k) => k.0,
            stellar_xdr::MuxedAccount::MuxedEd25519(m) => m.ed25519.0,
        },
        _ => [0; 32],
    })
    .to_string()
    .as_str()
    .to_string();
    let mut records = Vec::new();
    for t in &l.txs {
        let paging = (u64::from(l.seq) << 32) | (u64::from(t.application_order) << 12);
        if paging <= after || (!t.spec.success && !include_failed) {
            continue;
        }
        if records.len() >= limit {
            break;
        }
        let xdr = t.result_b64().and_then(|r| {
            Ok((
                r,
                if without_meta {
                    None
                } else {
                    Some(t.meta_b64()?)
                },
            ))
        });
        let (result_b64, meta_b64) = match xdr {
            Ok(x) => x,
            Err(e) => {
                return problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "Internal Server Error",
                    &e.to_string(),
                )
            }
        };
        let mut r = json!({
            "id": hex::encode(t.hash),
            "paging_token": paging.to_string(),
            "successful": t.spec.success,
            "hash": hex::encode(t.hash),
            "ledger": l.seq,
            "created_at": rfc3339(l.close_time),
            "source_account": source,
            "fee_account": source,
            "fee_charged": "100000",
            "max_fee": "1000000",
            "operation_count": 1,
            "envelope_xdr": t.envelope_b64(),
            "result_xdr": result_b64,
            "fee_meta_xdr": "AAAAAA==",
            "memo_type": "none",
            "signatures": [],
        });
        if !without_meta {
            r["result_meta_xdr"] = Value::String(if malformed && records.is_empty() {
                MALFORMED_XDR.to_string()
            } else {
                meta_b64.unwrap_or_default()
            });
        }
        records.push(r);
    }
    let next = records
        .last()
        .and_then(|r| r["paging_token"].as_str().map(str::to_string))
        .unwrap_or_else(|| after.to_string());
    let failed = if include_failed {
        "&include_failed=true"
    } else {
        ""
    };
    Json(json!({
        "_links": {
            "self": {"href": format!("/ledgers/{seq}/transactions?cursor={after}&limit={limit}&order=asc{failed}")},
            "next": {"href": format!("/ledgers/{seq}/transactions?cursor={next}&limit={limit}&order=asc{failed}")},
        },
        "_embedded": {"records": records},
    }))
    .into_response()
}
