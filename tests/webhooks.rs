//! Webhooks end to end, on both stores, with real receivers on loopback: events appended through
//! `Store::append` (the outbox rows commit with them), a real dispatcher signing and POSTing, and
//! receivers that are down, fail, throttle, hang, are gone, or rotate secrets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fluxora::config::{DatabaseUrl, Secret, TargetPolicy};
use fluxora::projection::view::ViewOptions;
use fluxora::store::outbox::{DeliveryQuery, DeliveryRecord};
use fluxora::store::{
    self, format_event_id, AppendBatch, Cursor, NewEvent, ProjectionDelta, RollbackRequest, Store,
    StreamVersion,
};
use fluxora::testing::synth::{ledger_hash, stream_state};
use fluxora::testing::TempPgDatabase;
use fluxora::webhooks::service::EndpointInput;
use fluxora::webhooks::signing::{self, headers as hn};
use fluxora::webhooks::verify::{verify_headers, VerifyCode};
use fluxora::webhooks::{Dispatcher, DispatcherConfig, WebhookAdmin};
use serde_json::Value;
use tokio::sync::watch;

const CONTRACT: &str = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC";

fn address(n: u8) -> String {
    stellar_strkey::ed25519::PublicKey([n; 32])
        .to_string()
        .as_str()
        .to_string()
}

// ---------------------------------------------------------------- store harness

struct H {
    store: Arc<dyn Store>,
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<TempPgDatabase>,
    next: u32,
    prev: String,
}

impl H {
    async fn sqlite() -> H {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("wh.db").display());
        let store = store::open(&DatabaseUrl::Sqlite(url.clone()))
            .await
            .unwrap();
        H {
            store: Arc::from(store),
            url,
            _dir: Some(dir),
            pg: None,
            next: 100,
            prev: "0".repeat(64),
        }
    }

    async fn postgres() -> Option<H> {
        let db = TempPgDatabase::create().await.unwrap()?;
        let store = store::open(&DatabaseUrl::Postgres(db.url.clone()))
            .await
            .unwrap();
        Some(H {
            store: Arc::from(store),
            url: db.url.clone(),
            _dir: None,
            pg: Some(db),
            next: 100,
            prev: "0".repeat(64),
        })
    }

    async fn finish(self) {
        drop(self.store);
        if let Some(db) = self.pg {
            db.drop_db().await.unwrap();
        }
    }

    /// Appends one ledger with one event per entry of `streams` (`created` the first time a
    /// stream is seen by this harness, `withdrew` after), the streams' versions, and the safe
    /// ledger (`None`: this ledger). Returns the ledger.
    async fn ledger(&mut self, streams: &[u64], safe: Option<u32>) -> u32 {
        self.ledger_on(streams, safe, 0).await
    }

    async fn ledger_on(&mut self, streams: &[u64], safe: Option<u32>, branch: u32) -> u32 {
        self.try_ledger(streams, safe, branch).await.unwrap()
    }

    async fn try_ledger(
        &mut self,
        streams: &[u64],
        safe: Option<u32>,
        branch: u32,
    ) -> Result<u32, fluxora::store::StoreError> {
        let seq = self.next;
        let hash = ledger_hash(branch, seq);
        let ledger = fluxora::store::LedgerRecord {
            sequence: seq,
            hash: hash.clone(),
            prev_hash: self.prev.clone(),
            close_time: 1_700_000_000 + i64::from(seq) * 5,
        };
        let mut events = Vec::new();
        let mut versions = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            let tx = i as u32 + 1;
            let topic = if self.store.stream(*s).await.unwrap().is_none()
                && !versions.iter().any(|v: &StreamVersion| v.stream_id == *s)
            {
                "created"
            } else {
                "withdrew"
            };
            events.push(NewEvent {
                event_id: format_event_id(seq, tx, 0, 0),
                ledger: seq,
                tx_hash: ledger_hash(branch + 77, seq * 100 + tx),
                tx_order: tx,
                op_index: 0,
                event_index: 0,
                contract_id: CONTRACT.into(),
                topic: topic.into(),
                stream_id: Some(*s),
                decoded: serde_json::json!({"type": topic}),
                topic_xdr: vec![],
                data_xdr: String::new(),
                function: None,
            });
            if !versions.iter().any(|v: &StreamVersion| v.stream_id == *s) {
                let mut st = stream_state(*s, &address(1), &address(2), seq);
                st.withdrawn_amount = 12_345_678;
                versions.push(StreamVersion::of(&st, seq).unwrap());
            }
        }
        self.store
            .append(&AppendBatch {
                ledgers: vec![ledger],
                events,
                cursor: Some(Cursor {
                    ledger: seq,
                    hash: hash.clone(),
                }),
                projection: ProjectionDelta {
                    versions,
                    ..Default::default()
                },
                safe_ledger: Some(safe.unwrap_or(seq)),
            })
            .await?;
        self.prev = hash;
        self.next += 1;
        Ok(seq)
    }

    fn admin(&self, d: Option<&Dispatcher>) -> WebhookAdmin {
        WebhookAdmin::new(
            self.store.clone(),
            TargetPolicy::Loopback,
            Duration::from_secs(3600),
            d.map(|d| d.waker()),
        )
    }

    async fn deliveries(&self, endpoint: &str) -> Vec<DeliveryRecord> {
        let mut v = self
            .store
            .webhooks()
            .deliveries(&DeliveryQuery {
                endpoint_id: endpoint.into(),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        v.reverse();
        v
    }
}

fn cfg() -> DispatcherConfig {
    DispatcherConfig {
        workers: 2,
        concurrency: 16,
        retry_schedule: vec![Duration::from_millis(150); 12],
        jitter_percent: 0,
        attempt_timeout: Duration::from_millis(600),
        disable_after: Duration::from_secs(3600),
        target_policy: TargetPolicy::Loopback,
        poll_interval: Duration::from_millis(50),
        lease: Duration::from_secs(5),
        max_in_flight_per_endpoint: 8,
        view: ViewOptions {
            decimals: 7,
            contract_id: CONTRACT.into(),
        },
    }
}

struct Running {
    d: Arc<Dispatcher>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(store: &Arc<dyn Store>, c: DispatcherConfig) -> Running {
    let d = Arc::new(Dispatcher::new(&**store, c).unwrap());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(d.clone().run(rx, None));
    Running { d, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("dispatcher stops")
            .unwrap();
    }
}

async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

// ---------------------------------------------------------------- receiver

#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    RetryAfter(u16, u64),
    Hang(Duration),
}

#[derive(Clone, Debug)]
struct Got {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn h(&self, n: &str) -> String {
        self.headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Decide = Box<dyn FnMut(&Got, usize) -> Reply + Send>;

#[derive(Clone)]
struct Rx {
    got: Arc<Mutex<Vec<Got>>>,
    decide: Arc<Mutex<Decide>>,
}

impl Rx {
    fn new() -> Rx {
        Rx {
            got: Arc::new(Mutex::new(Vec::new())),
            decide: Arc::new(Mutex::new(Box::new(|_, _| Reply::Status(200)))),
        }
    }
    fn set(&self, f: impl FnMut(&Got, usize) -> Reply + Send + 'static) {
        *self.decide.lock().unwrap() = Box::new(f);
    }
    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
    /// Requests answered 2xx, by delivery id, first one each.
    fn ok_ids(&self) -> usize {
        self.got()
            .iter()
            .map(|g| g.h(hn::DELIVERY_ID))
            .collect::<HashSet<_>>()
            .len()
    }
}

async fn handle(
    axum::extract::State(rx): axum::extract::State<Rx>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let g = Got {
        at: Instant::now(),
        headers,
        body,
    };
    let seen = rx
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.h(hn::DELIVERY_ID) == g.h(hn::DELIVERY_ID))
        .count();
    let reply = (rx.decide.lock().unwrap())(&g, seen);
    // Every request is logged, whatever the answer.
    rx.got.lock().unwrap().push(g);
    match reply {
        Reply::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Reply::RetryAfter(s, secs) => (
            StatusCode::from_u16(s).unwrap(),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(rx: &Rx, addr: SocketAddr) -> Server {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(handle))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server { addr, task }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/hook")
}

async fn endpoint(admin: &WebhookAdmin, url: String) -> (String, Secret) {
    let (e, s) = admin
        .create(EndpointInput {
            url: Some(url),
            ..Default::default()
        })
        .await
        .unwrap();
    (e.id, s)
}

/// Checks one request's signatures with both schemes: our consumer-side `verify`, and the
/// independent `standardwebhooks` crate.
fn check_signed(g: &Got, secret: &str) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let v = verify_headers(&g.headers, &g.body, secret, now, None);
    assert_eq!(v.code, VerifyCode::Ok, "{v:?}");
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    wh.verify(&g.body, &g.headers)
        .expect("standard webhooks signature");
    assert_eq!(g.h(hn::WEBHOOK_ID), g.h(hn::DELIVERY_ID));
    assert_eq!(g.h(hn::WEBHOOK_TIMESTAMP), g.h(hn::TIMESTAMP));
    assert_eq!(g.h("content-type"), "application/json");
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::H::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(h) = super::H::postgres().await {
                    super::$name(h).await;
                }
            }
        }
    };
}

// ---------------------------------------------------------------- scenarios

/// Down for a while, then up: every delivery arrives (none lost), each stream's in order, each
/// body as the contract says and signed for both kinds of consumers.
async fn down_then_up(mut h: H) {
    // A port nobody listens on yet.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let admin = h.admin(None);
    let (ep, secret) = endpoint(&admin, url(addr)).await;
    for _ in 0..5 {
        h.ledger(&[1, 2, 3, 1, 2, 3], None).await;
    }
    let run = start(&h.store, cfg());
    // Connection refused for a while: attempts fail and are retried.
    wait_for("failed attempts", 10, || async {
        h.deliveries(&ep).await.iter().any(|d| d.attempts >= 2)
    })
    .await;
    let rx = Rx::new();
    let server = serve(&rx, addr).await;
    wait_for("all 30 delivered", 20, || async {
        h.deliveries(&ep)
            .await
            .iter()
            .all(|d| d.state == "delivered")
    })
    .await;
    let got = rx.got();
    assert_eq!(rx.ok_ids(), 30, "every delivery arrived");
    assert_eq!(got.len(), 30, "none twice");
    let mut last: HashMap<String, i64> = HashMap::new();
    for g in &got {
        check_signed(g, secret.expose());
        let b = g.json();
        let d = &b["data"];
        assert_eq!(b["type"], g.h(hn::EVENT));
        assert!(["stream.created", "stream.withdrawn"].contains(&b["type"].as_str().unwrap()));
        assert_eq!(b["id"], d["eventId"]);
        assert!(b["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
        for k in [
            "depositAmount",
            "streamedAmount",
            "remainingAmount",
            "ratePerSecond",
        ] {
            assert!(d[k].is_string(), "{k} is a decimal string");
        }
        assert_eq!(d["withdrawnAmount"], "1.2345678");
        assert!(d["txHash"].as_str().unwrap().len() == 64);
        let pos = d["position"].as_i64().unwrap();
        let stream = d["id"].as_str().unwrap().to_string();
        let prev = last.insert(stream.clone(), pos).unwrap_or(0);
        assert!(pos > prev, "stream {stream}: position {pos} after {prev}");
    }
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(down_then_up);

/// 500 twice, then 200: three attempts of one delivery, same delivery id, attempts recorded.
async fn error_then_ok(mut h: H) {
    let rx = Rx::new();
    rx.set(|_, seen| {
        if seen < 2 {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    });
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let admin = h.admin(None);
    let (ep, secret) = endpoint(&admin, url(server.addr)).await;
    h.ledger(&[7], None).await;
    let run = start(&h.store, cfg());
    wait_for("delivered", 10, || async {
        h.deliveries(&ep)
            .await
            .iter()
            .all(|d| d.state == "delivered")
    })
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 3);
    let ids: HashSet<_> = got.iter().map(|g| g.h(hn::DELIVERY_ID)).collect();
    assert_eq!(ids.len(), 1, "the delivery id is stable across retries");
    let wids: HashSet<_> = got.iter().map(|g| g.h(hn::WEBHOOK_ID)).collect();
    assert_eq!(wids.len(), 1);
    assert_eq!(
        got.iter().map(|g| g.h(hn::ATTEMPT)).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert!(got.windows(2).all(|w| w[0].body == w[1].body), "same body");
    for g in &got {
        check_signed(g, secret.expose());
    }
    let d = &h.deliveries(&ep).await[0];
    let detail = admin.delivery(&ep, &d.delivery_id).await.unwrap();
    let codes: Vec<_> = detail.attempts_made.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    assert_eq!(detail.delivery.attempts, 3);
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(error_then_ok);

/// 429 with `Retry-After: 1`: the next attempt waits at least a second (the schedule says
/// 150 ms).
async fn throttled(mut h: H) {
    let rx = Rx::new();
    rx.set(|_, seen| {
        if seen == 0 {
            Reply::RetryAfter(429, 1)
        } else {
            Reply::Status(204)
        }
    });
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let admin = h.admin(None);
    let (ep, _) = endpoint(&admin, url(server.addr)).await;
    h.ledger(&[3], None).await;
    let run = start(&h.store, cfg());
    wait_for("delivered", 10, || async {
        h.deliveries(&ep)
            .await
            .iter()
            .all(|d| d.state == "delivered")
    })
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(throttled);

/// A receiver that does not answer within the attempt timeout: the attempt is recorded as a
/// timeout and retried.
async fn timeouts(mut h: H) {
    let rx = Rx::new();
    rx.set(|_, seen| {
        if seen == 0 {
            Reply::Hang(Duration::from_secs(3))
        } else {
            Reply::Status(200)
        }
    });
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let admin = h.admin(None);
    let (ep, _) = endpoint(&admin, url(server.addr)).await;
    h.ledger(&[5], None).await;
    let run = start(&h.store, cfg());
    wait_for("delivered", 10, || async {
        h.deliveries(&ep)
            .await
            .iter()
            .all(|d| d.state == "delivered")
    })
    .await;
    let d = &h.deliveries(&ep).await[0];
    let detail = admin.delivery(&ep, &d.delivery_id).await.unwrap();
    assert_eq!(detail.attempts_made.len(), 2);
    let first = &detail.attempts_made[0];
    assert!(
        first.error.as_deref().unwrap().contains("timed out"),
        "{first:?}"
    );
    assert!(
        first.duration_ms >= 550 && first.duration_ms < 2500,
        "{first:?}"
    );
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(timeouts);

/// 410 Gone disables the endpoint; its delivery stays queued and goes out once re-enabled.
async fn gone(mut h: H) {
    let rx = Rx::new();
    rx.set(|_, _| Reply::Status(410));
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let run = start(&h.store, cfg());
    let admin = h.admin(Some(&run.d));
    let (ep, _) = endpoint(&admin, url(server.addr)).await;
    h.ledger(&[4], None).await;
    wait_for("disabled", 10, || async {
        !admin.get(&ep).await.unwrap().enabled
    })
    .await;
    let e = admin.get(&ep).await.unwrap();
    assert!(e.disabled_reason.unwrap().contains("410"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got().len(), 1, "nothing is sent to a disabled endpoint");
    assert_eq!(h.deliveries(&ep).await[0].state, "pending");
    // Events while disabled are not queued for it.
    h.ledger(&[4], None).await;
    assert_eq!(h.deliveries(&ep).await.len(), 1);
    rx.set(|_, _| Reply::Status(200));
    admin
        .update(
            &ep,
            EndpointInput {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_for("delivered after re-enabling", 10, || async {
        h.deliveries(&ep)
            .await
            .iter()
            .all(|d| d.state == "delivered")
    })
    .await;
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(gone);

/// Design invariant 1: outbox rows commit with their batch. A failure writing them (injected in
/// the database) fails the whole append: no ledger, event or cursor of the batch is stored; once
/// the fault is gone the same batch commits with its deliveries.
async fn outbox_rows_commit_with_the_batch(mut h: H) {
    use sqlx::Connection;
    let admin = h.admin(None);
    let (ep, _) = endpoint(&admin, "http://127.0.0.1:9/hook".into()).await;
    h.ledger(&[1], None).await;
    let tip = h.store.tip().await.unwrap().unwrap().sequence;
    let events = h.store.event_count().await.unwrap();
    let pg = h.pg.is_some();
    let db_url = h.url.clone();
    let exec = |sql: &'static str| {
        let url = db_url.clone();
        async move {
            if pg {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            } else {
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    };
    if pg {
        exec(
            "CREATE FUNCTION outbox_poison() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'injected outbox failure'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER outbox_poison BEFORE INSERT ON webhook_deliveries FOR EACH ROW \
             EXECUTE FUNCTION outbox_poison();",
        )
        .await;
    } else {
        exec(
            "CREATE TRIGGER outbox_poison BEFORE INSERT ON webhook_deliveries \
             BEGIN SELECT RAISE(ABORT, 'injected outbox failure'); END;",
        )
        .await;
    }
    let err = h.try_ledger(&[1, 2], None, 0).await.unwrap_err();
    assert!(err.to_string().contains("injected outbox failure"), "{err}");
    assert_eq!(h.store.tip().await.unwrap().unwrap().sequence, tip);
    assert_eq!(h.store.event_count().await.unwrap(), events);
    assert_eq!(h.store.cursor().await.unwrap().unwrap().ledger, tip);
    assert_eq!(h.deliveries(&ep).await.len(), 1);
    if pg {
        exec("DROP TRIGGER outbox_poison ON webhook_deliveries").await;
    } else {
        exec("DROP TRIGGER outbox_poison").await;
    }
    h.ledger(&[1, 2], None).await;
    assert_eq!(h.store.event_count().await.unwrap(), events + 2);
    assert_eq!(h.deliveries(&ep).await.len(), 3);
    h.finish().await;
}
both!(outbox_rows_commit_with_the_batch);

/// An endpoint that keeps failing (no success at all) for `disable_after` is disabled.
async fn failing_too_long(mut h: H) {
    let rx = Rx::new();
    rx.set(|_, _| Reply::Status(502));
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let admin = h.admin(None);
    let (ep, _) = endpoint(&admin, url(server.addr)).await;
    h.ledger(&[1, 2], None).await;
    let mut c = cfg();
    c.retry_schedule = vec![Duration::from_millis(100); 50];
    c.disable_after = Duration::from_millis(700);
    let run = start(&h.store, c);
    let t0 = Instant::now();
    wait_for("disabled", 15, || async {
        !admin.get(&ep).await.unwrap().enabled
    })
    .await;
    assert!(t0.elapsed() >= Duration::from_millis(600));
    let e = admin.get(&ep).await.unwrap();
    assert!(
        e.disabled_reason
            .as_deref()
            .unwrap()
            .contains("failing continuously"),
        "{e:?}"
    );
    assert!(e.failing_since.is_some());
    // Its deliveries stay queued (pending), retryable once it is enabled again.
    assert!(h
        .deliveries(&ep)
        .await
        .iter()
        .all(|d| d.state == "pending" && d.attempts >= 2));
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(failing_too_long);

/// Secret rotation: during the grace window both signatures are sent, so a consumer still on
/// the old secret and one already on the new one both verify (with our `verify` and with the
/// independent Standard Webhooks implementation); after it, only the new one.
async fn rotation(mut h: H) {
    let rx = Rx::new();
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let run = start(&h.store, cfg());
    let admin = h.admin(Some(&run.d));
    let (ep, old) = endpoint(&admin, url(server.addr)).await;
    h.ledger(&[1], None).await;
    wait_for("first", 10, || async { rx.got().len() == 1 }).await;
    check_signed(&rx.got()[0], old.expose());
    assert!(rx.got()[0].headers.get(hn::SIGNATURE_PREVIOUS).is_none());

    let (view, new) = admin.rotate(&ep).await.unwrap();
    assert_ne!(old, new);
    assert!(view.previous_secret_expires_at.is_some());
    h.ledger(&[1], None).await;
    wait_for("second", 10, || async { rx.got().len() == 2 }).await;
    let g = &rx.got()[1];
    check_signed(g, new.expose());
    check_signed(g, old.expose());
    assert_eq!(g.h(hn::WEBHOOK_SIGNATURE).split(' ').count(), 2);
    assert_eq!(
        g.h(hn::SIGNATURE),
        signing::fluxora_signature(new.expose(), &g.h(hn::TIMESTAMP), &g.body)
    );

    // Grace over: only the new secret.
    let admin_short = WebhookAdmin::new(
        h.store.clone(),
        TargetPolicy::Loopback,
        Duration::ZERO,
        Some(run.d.waker()),
    );
    let (_, newest) = admin_short.rotate(&ep).await.unwrap();
    h.ledger(&[1], None).await;
    wait_for("third", 10, || async { rx.got().len() == 3 }).await;
    let g = &rx.got()[2];
    check_signed(g, newest.expose());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(
        verify_headers(&g.headers, &g.body, new.expose(), now, None).code,
        VerifyCode::SignatureMismatch
    );
    assert!(standardwebhooks::Webhook::new(new.expose())
        .unwrap()
        .verify(&g.body, &g.headers)
        .is_err());
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(rotation);

/// The dispatcher is stopped while a delivery waits for its retry; a new one (another
/// "process") takes over from the store: same delivery id, delivered once.
async fn restart_mid_retry(mut h: H) {
    let rx = Rx::new();
    rx.set(|_, _| Reply::Status(503));
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let admin = h.admin(None);
    let (ep, _) = endpoint(&admin, url(server.addr)).await;
    h.ledger(&[9, 10], None).await;
    let mut c = cfg();
    c.retry_schedule = vec![Duration::from_millis(800); 5];
    let run = start(&h.store, c.clone());
    wait_for("a failed attempt of each", 10, || async {
        h.deliveries(&ep).await.iter().all(|d| d.attempts >= 1)
    })
    .await;
    run.stop().await;
    let before = h.deliveries(&ep).await;
    assert!(before.iter().all(|d| d.state == "pending"));
    rx.set(|_, _| Reply::Status(200));
    let run = start(&h.store, c);
    wait_for("delivered by the new dispatcher", 10, || async {
        h.deliveries(&ep)
            .await
            .iter()
            .all(|d| d.state == "delivered")
    })
    .await;
    let ok: Vec<_> = rx
        .got()
        .into_iter()
        .filter(|g| g.h(hn::ATTEMPT) != "1")
        .collect();
    assert_eq!(ok.len(), 2, "each delivered once after the restart");
    let ids: HashSet<_> = rx.got().iter().map(|g| g.h(hn::DELIVERY_ID)).collect();
    assert_eq!(
        ids,
        before.iter().map(|d| d.delivery_id.clone()).collect(),
        "same delivery ids across the restart"
    );
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(restart_mid_retry);

/// Per-(endpoint, stream) order: while stream 1's first event is retrying, its later events
/// wait, and stream 2 and another endpoint are not held up. An exhausted delivery becomes dead,
/// stops holding its stream, and a manual retry delivers it.
async fn order_dead_and_retry(mut h: H) {
    let rx = Rx::new();
    let blocked = Arc::new(Mutex::new(String::new()));
    let b = blocked.clone();
    rx.set(move |g, _| {
        if g.h(hn::DELIVERY_ID) == *b.lock().unwrap() {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    });
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let admin = h.admin(None);
    let (ep, _) = endpoint(&admin, url(server.addr)).await;
    let (ep2, _) = endpoint(&admin, format!("http://{}/hook?second", server.addr)).await;
    h.ledger(&[1], None).await;
    let first = h.deliveries(&ep).await[0].delivery_id.clone();
    *blocked.lock().unwrap() = first.clone();
    h.ledger(&[1, 2], None).await;
    h.ledger(&[2, 1], None).await;
    let mut c = cfg();
    c.retry_schedule = vec![Duration::from_millis(200); 6];
    let run = start(&h.store, c);
    // The other endpoint gets everything; this one stream 2's two events only.
    wait_for("stream 2 and the other endpoint", 10, || async {
        delivered(&h, &ep2).await == 5 && delivered(&h, &ep).await == 2
    })
    .await;
    let ds = h.deliveries(&ep).await;
    let streams: BTreeMap<String, Vec<&str>> = ds.iter().fold(BTreeMap::new(), |mut m, d| {
        m.entry(d.stream_id.clone().unwrap())
            .or_default()
            .push(d.state.as_str());
        m
    });
    assert_eq!(streams["1"], ["pending", "pending", "pending"]);
    assert_eq!(streams["2"], ["delivered", "delivered"]);
    // Exhausted: dead, and stream 1's later events go.
    wait_for("dead, then the rest of stream 1", 15, || async {
        let ds = h.deliveries(&ep).await;
        ds[0].state == "dead" && ds.iter().skip(1).all(|d| d.state == "delivered")
    })
    .await;
    let dead = h.deliveries(&ep).await[0].clone();
    assert_eq!(dead.delivery_id, first);
    assert_eq!(dead.attempts, 7);
    // Kept, visible, retryable.
    blocked.lock().unwrap().clear();
    let again = admin.retry(&ep, &first).await.unwrap();
    assert_eq!(again.state, "pending");
    assert!(admin.retry(&ep, &first).await.is_err(), "only dead ones");
    wait_for("retried by hand", 10, || async {
        h.deliveries(&ep).await[0].state == "delivered"
    })
    .await;
    // Stream 1's later deliveries to `ep` went out in order, after the first was given up.
    let ds = h.deliveries(&ep).await;
    let later: Vec<i64> = ds[1..]
        .iter()
        .filter(|d| d.stream_id.as_deref() == Some("1"))
        .map(|d| d.delivered_at.unwrap())
        .collect();
    assert!(later.windows(2).all(|w| w[0] <= w[1]), "{later:?}");
    assert!(later[0] >= dead.updated_at);
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(order_dead_and_retry);

async fn delivered(h: &H, ep: &str) -> usize {
    h.deliveries(ep)
        .await
        .iter()
        .filter(|d| d.state == "delivered")
        .count()
}

/// Deliveries wait for the safe ledger; a rollback drops undelivered rows of reverted events
/// and sends `stream.reverted` for the delivered ones.
async fn safe_ledger_and_rollback(mut h: H) {
    let rx = Rx::new();
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let run = start(&h.store, cfg());
    let admin = h.admin(Some(&run.d));
    let (ep, secret) = endpoint(&admin, url(server.addr)).await;
    let l1 = h.ledger(&[1], Some(0)).await;
    let l2 = h.ledger(&[1], Some(0)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        rx.got().is_empty(),
        "nothing above the safe ledger goes out"
    );
    let l3 = h.ledger(&[1], Some(l2)).await;
    wait_for("the two safe ones", 10, || async { rx.got().len() == 2 }).await;
    wait_for("recorded", 10, || async { delivered(&h, &ep).await == 2 }).await;
    assert_eq!(h.store.safe_ledger().await.unwrap(), Some(l2));
    let _l4 = h.ledger(&[1], Some(l2)).await;
    // Roll back to l1: l2's delivery was delivered (-> stream.reverted), l3/l4's were not
    // (dropped).
    let report = h
        .store
        .rollback_to(&RollbackRequest {
            fork_ledger: l1,
            new_hash: None,
            reason: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(report.webhooks_reverted, 1);
    assert!(h.store.safe_ledger().await.unwrap().unwrap() <= l1);
    wait_for("stream.reverted", 10, || async { rx.got().len() == 3 }).await;
    let g = &rx.got()[2];
    check_signed(g, secret.expose());
    let b = g.json();
    assert_eq!(b["type"], "stream.reverted");
    assert_eq!(g.h(hn::EVENT), "stream.reverted");
    let reverted_event = rx.got()[1].json();
    assert_eq!(b["id"], reverted_event["id"]);
    assert_eq!(b["data"]["eventId"], reverted_event["id"]);
    assert_eq!(b["data"]["revertedType"], reverted_event["type"]);
    assert_eq!(b["data"]["ledger"], l2);
    assert_eq!(b["data"]["forkLedger"], l1);
    assert_eq!(b["data"]["id"], "1");
    let ds = h.deliveries(&ep).await;
    assert_eq!(
        ds.len(),
        3,
        "2 delivered + 1 reverted kept, l3 and l4 dropped: {ds:?}"
    );
    assert!(ds[1].reverted);
    assert!(ds.iter().all(|d| d.ledger <= l2));
    let _ = l3;
    // The new branch's events are delivered as usual.
    h.next = l1 + 1;
    h.prev = ledger_hash(0, l1);
    h.ledger_on(&[1], None, 5).await;
    wait_for("new branch", 10, || async { rx.got().len() == 4 }).await;
    assert_eq!(rx.got()[3].json()["type"], "stream.withdrawn");
    run.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(safe_ledger_and_rollback);

/// Several dispatchers (as several processes would) share one outbox: each delivery arrives
/// exactly once, and filters route events to the right endpoints.
async fn many_dispatchers_and_filters(mut h: H) {
    let rx = Rx::new();
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let admin = h.admin(None);
    let (all, _) = endpoint(&admin, url(server.addr)).await;
    let (only7, _) = admin
        .create(EndpointInput {
            url: Some(url(server.addr)),
            stream_ids: Some(vec!["7".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let (created, _) = admin
        .create(EndpointInput {
            url: Some(url(server.addr)),
            event_types: Some(vec!["stream.created".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let (nobody, _) = admin
        .create(EndpointInput {
            url: Some(url(server.addr)),
            addresses: Some(vec![address(9)]),
            ..Default::default()
        })
        .await
        .unwrap();
    let (party, _) = admin
        .create(EndpointInput {
            url: Some(url(server.addr)),
            addresses: Some(vec![address(2)]),
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..20u64 {
        h.ledger(&[i % 10, (i + 3) % 10, 7], None).await;
    }
    let a = start(&h.store, cfg());
    let b = start(&h.store, cfg());
    let c = start(&h.store, cfg());
    wait_for("all delivered", 20, || async {
        let counts = h.store.webhooks().delivery_counts().await.unwrap();
        counts.iter().all(|(s, _)| s == "delivered")
    })
    .await;
    let got = rx.got();
    let ids: HashSet<_> = got.iter().map(|g| g.h(hn::DELIVERY_ID)).collect();
    assert_eq!(ids.len(), got.len(), "no delivery sent twice");
    assert_eq!(h.deliveries(&all).await.len(), 60);
    // Stream 7 is in every ledger, and in two more events when i % 10 or (i + 3) % 10 is 7.
    assert_eq!(h.deliveries(&only7.id).await.len(), 24);
    assert_eq!(h.deliveries(&created.id).await.len(), 10);
    assert!(h
        .deliveries(&created.id)
        .await
        .iter()
        .all(|d| d.event_type == "stream.created"));
    assert_eq!(h.deliveries(&nobody.id).await.len(), 0);
    assert_eq!(h.deliveries(&party.id).await.len(), 60);
    assert_eq!(got.len(), 60 + 24 + 10 + 60);
    a.stop().await;
    b.stop().await;
    c.stop().await;
    server.task.abort();
    h.finish().await;
}
both!(many_dispatchers_and_filters);

// ---------------------------------------------------------------- admin API over HTTP

async fn admin_api(mut h: H) {
    use fluxora::api::{self, ApiContext};
    let rx = Rx::new();
    let server = serve(&rx, "127.0.0.1:0".parse().unwrap()).await;
    let run = start(&h.store, cfg());
    let (_st, status) = watch::channel(fluxora::ingest::IndexerStatus::new());
    let (_stop, shutdown) = watch::channel(false);
    let ctx = |key: Option<&str>| ApiContext {
        status: status.clone(),
        shutdown: shutdown.clone(),
        admin_api_key: key.map(Secret::new),
        webhooks: h.admin(Some(&run.d)),
        ..ApiContext::new(h.store.clone(), cfg().view)
    };
    let off = api::serve(
        "127.0.0.1:0".parse().unwrap(),
        api::router(ctx(None)),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let on = api::serve(
        "127.0.0.1:0".parse().unwrap(),
        api::router(ctx(Some("0123456789abcdef-admin"))),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let c = reqwest::Client::new();
    let base = format!("http://{}/api/admin/webhooks", on.addr);
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_string();

    let r = c
        .get(format!("http://{}/api/admin/webhooks", off.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "SERVICE_UNAVAILABLE");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ADMIN_API_KEY"));
    let r = c.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    assert_eq!(code(&r.json().await.unwrap()), "UNAUTHORIZED");
    let r = c
        .get(&base)
        .bearer_auth("wrong-key-wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(code(&r.json().await.unwrap()), "FORBIDDEN");
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth("0123456789abcdef-admin");

    // SSRF and validation.
    for body in [
        serde_json::json!({"url": "http://10.0.0.1/hook"}),
        serde_json::json!({"url": "ftp://example.com/"}),
        serde_json::json!({"url": "http://169.254.169.254/"}),
        serde_json::json!({"url": url(server.addr), "eventTypes": ["stream.exploded"]}),
        serde_json::json!({"url": url(server.addr), "addresses": ["GNOPE"]}),
        serde_json::json!({"url": url(server.addr), "streamIds": ["-1"]}),
        serde_json::json!({"url": url(server.addr), "colour": "blue"}),
        serde_json::json!({}),
    ] {
        let r = auth(c.post(&base)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(code(&r.json().await.unwrap()), "VALIDATION_ERROR");
    }
    let r = auth(c.post(&base)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 415);

    let r = auth(c.post(&base))
        .json(&serde_json::json!({
            "url": url(server.addr),
            "description": "tests",
            "eventTypes": ["stream.created", "stream.withdrawn"],
            "streamIds": [1, "2"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], true);
    let secret = v["data"]["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let id = v["data"]["endpoint"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        v["data"]["endpoint"]["streamIds"],
        serde_json::json!(["1", "2"])
    );
    let listed = auth(c.get(&base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "secret never listed"
    );
    let one: Value = auth(c.get(format!("{base}/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["data"]["endpoint"]["description"], "tests");
    let types: Value = auth(c.get(format!("{base}/event-types")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(types["data"]["eventTypes"]
        .as_array()
        .unwrap()
        .contains(&Value::from("stream.reverted")));
    let r = auth(c.patch(format!("{base}/{id}")))
        .json(&serde_json::json!({"streamIds": [], "description": "all streams"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["endpoint"]["streamIds"], serde_json::json!([]));
    let r = auth(c.get(format!("{base}/ep_nope"))).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Ping.
    let r = auth(c.post(format!("{base}/{id}/ping")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let ping_id = v["data"]["delivery"]["id"].as_str().unwrap().to_string();
    wait_for("ping", 10, || async { !rx.got().is_empty() }).await;
    let g = rx.got()[0].clone();
    assert_eq!(g.json()["type"], "webhook.ping");
    assert_eq!(g.h(hn::DELIVERY_ID), ping_id);
    check_signed(&g, &secret);

    // Events, then the deliveries list and one delivery with its attempts.
    h.ledger(&[1, 2, 3], None).await;
    h.ledger(&[1], None).await;
    wait_for("events", 10, || async { rx.got().len() == 5 }).await;
    wait_for("recorded", 10, || async {
        h.deliveries(&id)
            .await
            .iter()
            .all(|d| d.state == "delivered")
    })
    .await;
    let v: Value = auth(c.get(format!("{base}/{id}/deliveries?limit=2")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"]["has_more"], true);
    let cursor = v["data"]["next_cursor"].as_str().unwrap().to_string();
    let v2: Value = auth(c.get(format!("{base}/{id}/deliveries?limit=10&cursor={cursor}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["data"]["deliveries"].as_array().unwrap().len(), 3);
    assert_eq!(v2["data"]["next_cursor"], Value::Null);
    let did = v["data"]["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v: Value = auth(c.get(format!("{base}/{id}/deliveries/{did}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["delivery"]["state"], "delivered");
    assert_eq!(v["data"]["delivery"]["attemptsMade"][0]["statusCode"], 200);
    let r = auth(c.post(format!("{base}/{id}/deliveries/{did}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "only dead deliveries are retried");
    let r = auth(c.get(format!("{base}/{id}/deliveries?status=lost")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Replay positions 1..=3 (the first ledger's events): new deliveries, same event ids.
    let r = auth(c.post(format!("{base}/{id}/replay")))
        .json(&serde_json::json!({"fromPosition": 1, "toPosition": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["enqueued"], 3);
    wait_for("replayed", 10, || async { rx.got().len() == 8 }).await;
    let replayed: Vec<Value> = rx.got()[5..].iter().map(|g| g.json()).collect();
    let originals: Vec<Value> = rx.got()[1..4].iter().map(|g| g.json()).collect();
    let ev = |v: &Vec<Value>| {
        let mut x: Vec<String> = v.iter().map(|b| b["id"].as_str().unwrap().into()).collect();
        x.sort();
        x
    };
    assert_eq!(ev(&replayed), ev(&originals));
    let r = auth(c.post(format!("{base}/{id}/replay")))
        .json(&serde_json::json!({"fromPosition": 5, "toPosition": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Rotate and delete.
    let v: Value = auth(c.post(format!("{base}/{id}/rotate-secret")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(v["data"]["secret"].as_str().unwrap(), secret);
    assert!(v["data"]["endpoint"]["previousSecretExpiresAt"].is_string());
    let r = auth(c.delete(format!("{base}/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = auth(c.get(format!("{base}/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        h.deliveries(&id).await.len(),
        0,
        "its deliveries went with it"
    );
    run.stop().await;
    server.task.abort();
    off.task.abort();
    on.task.abort();
    h.finish().await;
}
both!(admin_api);

/// The Standard Webhooks signature, checked by an independent implementation (the
/// `standardwebhooks` crate, which uses its own HMAC) on fixed inputs, and Fluxora's published
/// vector.
#[test]
fn signatures_against_independent_implementation() {
    assert_eq!(
        signing::fluxora_signature("topsecret", "1710000000", br#"{"event":"stream.updated"}"#),
        "925006549b879c8d9e91c10a153254fb4b6e2241820a1b072e28aa2fa8caeb79"
    );
    for _ in 0..20 {
        let secret = signing::generate_secret();
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let body = br#"{"id":"0000000000000000001-0000000000","type":"stream.created","data":{}}"#;
        let key = signing::standard_key(secret.expose()).unwrap();
        let ours = signing::standard_signature(&key, "dlv_abc", &ts.to_string(), body);
        let theirs = standardwebhooks::Webhook::new(secret.expose())
            .unwrap()
            .sign("dlv_abc", ts, body)
            .unwrap();
        assert_eq!(ours, theirs);
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "dlv_abc".parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", ours.parse().unwrap());
        standardwebhooks::Webhook::new(secret.expose())
            .unwrap()
            .verify(body, &headers)
            .unwrap();
    }
}
