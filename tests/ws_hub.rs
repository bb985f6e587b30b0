//! The WebSocket hub through real `tokio-tungstenite` clients: every client message and error,
//! acknowledgements, filters and de-duplication, batching, replay, resume during live traffic,
//! rollback notices, slow consumers, limits, pings, shutdown; and fan-out by an API-only process
//! (`fluxora serve --no-ingest`) of what another process ingests into PostgreSQL.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use fluxora::api::{self, ApiContext};
use fluxora::config::{DatabaseUrl, HttpSettings};
use fluxora::hub::{Hub, HubConfig, Wake};
use fluxora::ingest::{IndexerStatus, IngestConfig, Ingestor};
use fluxora::projection::view::ViewOptions;
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::SimState;
use fluxora::sim::source::SimSource;
use fluxora::store::{self, Store, StreamQuery};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A simulated network ingested into a fresh store, with the API and hub on loopback.
struct Env {
    store: Arc<dyn Store>,
    state: Arc<SimState>,
    gen: Generator,
    ingestor: Arc<Ingestor>,
    hub: Arc<Hub>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn quick(cfg: HubConfig) -> HubConfig {
    HubConfig {
        poll_interval: Duration::from_millis(200),
        ..cfg
    }
}

impl Env {
    async fn new(cfg: HubConfig) -> Env {
        Self::with_url(cfg, None).await
    }

    async fn with_url(cfg: HubConfig, url: Option<String>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = match url {
            Some(u) => DatabaseUrl::Postgres(u),
            None => DatabaseUrl::Sqlite(format!("sqlite://{}/ws.db", dir.path().display())),
        };
        let store: Arc<dyn Store> = Arc::from(store::open(&url).await.unwrap());
        let gen = Generator::new(GenConfig {
            seed: 11,
            txs_per_ledger: 4,
            target_streams: 12,
            ..Default::default()
        });
        let state = SimState::new(gen.empty_chain());
        let ingestor = Arc::new(Ingestor::new(
            store.clone(),
            Arc::new(SimSource::new(state.clone(), gen.contract)),
            IngestConfig {
                start_ledger: Some(gen.cfg.first_seq),
                finality_depth: 16,
                batch_ledgers: 10,
                network_passphrase: gen.cfg.passphrase.clone(),
                ..Default::default()
            },
        ));
        let (stop, stop_rx) = watch::channel(false);
        let view = ViewOptions {
            decimals: 7,
            contract_id: gen.contract_strkey(),
        };
        let conns = Arc::new(AtomicUsize::new(0));
        let hub = Hub::start(
            store.clone(),
            view.clone(),
            quick(cfg),
            vec![Wake::Notices(ingestor.notices())],
            conns.clone(),
            stop_rx.clone(),
        )
        .await
        .unwrap();
        let (_status_tx, status) = watch::channel(IndexerStatus::new());
        let ctx = ApiContext {
            status,
            http: HttpSettings {
                rate_limit_per_minute: 0,
                ..HttpSettings::default()
            },
            ws_connections: conns,
            shutdown: stop_rx.clone(),
            hub: Some(hub.clone()),
            ..ApiContext::new(store.clone(), view)
        };
        let server = api::serve("127.0.0.1:0".parse().unwrap(), api::router(ctx), stop_rx)
            .await
            .unwrap();
        Env {
            store,
            state,
            gen,
            ingestor,
            hub,
            addr: server.addr,
            stop,
            _dir: dir,
        }
    }

    /// Closes `n` more ledgers and ingests them.
    async fn advance(&mut self, n: u32) {
        {
            let mut chain = self.state.chain.write().await;
            for _ in 0..n {
                self.gen.next_ledger(&mut chain).unwrap();
            }
        }
        self.ingestor.sync().await.unwrap();
        self.settle().await;
    }

    /// Replaces the last `k` ledgers by another branch and ingests it (a rollback).
    async fn fork(&mut self, k: u32) {
        {
            let mut chain = self.state.chain.write().await;
            self.gen.fork(&mut chain, k).unwrap();
        }
        self.ingestor.sync().await.unwrap();
        self.settle().await;
    }

    /// Waits until the hub has dispatched everything stored.
    async fn settle(&self) {
        let last = self.store.last_position().await.unwrap();
        for _ in 0..500 {
            if self.hub.head().0 == last {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the hub did not catch up with position {last}");
    }

    fn url(&self) -> String {
        format!("ws://{}/ws/streams", self.addr)
    }

    async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// A WebSocket whose socket has a 2 KiB receive buffer: what it does not read soon fills
    /// the server's side.
    async fn small_buffer_ws(&self) -> Ws {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(2048).unwrap();
        let tcp = sock.connect(self.addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(self.url(), MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        ws
    }

    /// A stream with events, and its parties.
    async fn some_stream(&self) -> (u64, String, String) {
        let streams = self
            .store
            .list_streams(&StreamQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut best = None;
        for s in streams {
            let n = self
                .store
                .stream_events(s.stream_id, 0, 1000)
                .await
                .unwrap()
                .len();
            if best.as_ref().is_none_or(|(m, _)| n > *m) {
                best = Some((n, s));
            }
        }
        let s = best.unwrap().1;
        (s.stream_id, s.sender, s.recipient)
    }
}

struct Client {
    ws: Ws,
}

const WAIT: Duration = Duration::from_secs(10);

impl Client {
    async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next JSON frame (pings answered by the library, skipped).
    async fn recv(&mut self) -> Value {
        self.try_recv(WAIT)
            .await
            .unwrap_or_else(|| panic!("no frame within {WAIT:?}"))
    }

    async fn try_recv(&mut self, d: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match m.unwrap() {
                Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Frames until one satisfies `done` (included).
    async fn until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.recv().await;
            let stop = done(&v);
            out.push(v);
            if stop {
                return out;
            }
        }
    }

    /// Frames until the events received include position `last` (none expected: a short
    /// wait), then whatever follows within a short quiet period (extras and duplicates show).
    async fn upto(&mut self, last: Option<i64>) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(last) = last {
            while !positions(&out).contains(&last) {
                out.push(self.recv().await);
            }
        }
        out.extend(self.drain(Duration::from_millis(300)).await);
        out
    }

    /// Frames until none arrives for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.try_recv(quiet).await {
            out.push(v);
        }
        out
    }

    /// Reads until the server closes; its close code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    return (u16::from(f.code), f.reason.to_string())
                }
                Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("error instead of a close frame: {e}"),
                Ok(None) => panic!("ended without a close frame"),
                Err(_) => panic!("no close within {WAIT:?}"),
            }
        }
    }

    async fn subscribe(&mut self, v: Value) -> Value {
        let mut m = v;
        m["type"] = json!("subscribe");
        self.send(m).await;
        let ack = self.until(|v| v["type"] != "stream_update").await;
        let ack = ack.last().unwrap().clone();
        assert_eq!(ack["type"], "subscribed", "{ack}");
        ack
    }
}

/// How the hub routes a stored event: (stream, sender, recipient). The stream's parties as of
/// the event's ledger; an event that is not about a stream (an offer) names no stream, and its
/// parties are the ones its data names.
async fn routing(
    store: &Arc<dyn Store>,
    e: &fluxora::store::StoredEvent,
) -> (Option<u64>, Option<String>, Option<String>) {
    if let Some(s) = e.event.stream_id {
        if let Some(st) = store.stream_at(s, e.event.ledger).await.unwrap() {
            return (Some(s), Some(st.sender), Some(st.recipient));
        }
    }
    let f = |k: &str| e.event.decoded["fields"][k].as_str().map(str::to_string);
    (None, f("sender"), f("recipient"))
}

fn positions(frames: &[Value]) -> Vec<i64> {
    let mut out = Vec::new();
    for f in frames {
        match f["type"].as_str() {
            Some("stream_update") => out.push(f["position"].as_i64().unwrap()),
            Some("stream_update_batch") => {
                for e in f["events"].as_array().unwrap() {
                    out.push(e["position"].as_i64().unwrap());
                }
            }
            _ => {}
        }
    }
    out
}

fn assert_frame_meta(f: &Value) {
    for k in ["position", "ledger", "epoch"] {
        assert!(f[k].is_u64() || f[k].is_i64(), "`{k}` missing in {f}");
    }
}

#[tokio::test]
async fn all_streams_subscription_gets_every_event_once_in_order_with_state() {
    let mut env = Env::new(HubConfig::default()).await;
    env.advance(5).await;
    env.settle().await;
    let mut c = env.client().await;
    let ack = c.subscribe(json!({"all": true})).await;
    assert_frame_meta(&ack);
    assert_eq!(ack["subscription"], json!({"all": true}));
    let head = ack["position"].as_i64().unwrap();
    assert_eq!(head, env.store.last_position().await.unwrap());
    env.advance(6).await;
    let last = env.store.last_position().await.unwrap();
    assert!(last > head + 5, "the generator made events");
    let frames = c
        .until(|v| v["position"].as_i64() == Some(last) && v["type"] == "stream_update")
        .await;
    assert_eq!(positions(&frames), ((head + 1)..=last).collect::<Vec<_>>());
    let stored = env.store.events_after(head, 1000).await.unwrap();
    for (f, e) in frames.iter().zip(&stored) {
        assert_frame_meta(f);
        assert_eq!(f["eventId"], e.event.event_id);
        assert_eq!(f["ledger"], e.event.ledger);
        assert_eq!(f["epoch"], 0);
        assert_eq!(f["payload"]["event"]["eventId"], e.event.event_id);
        assert_eq!(f["payload"]["event"]["topic"], e.event.topic);
        assert_eq!(f["payload"]["event"]["position"], e.position);
        let Some(id) = e.event.stream_id else {
            assert_eq!(f["streamId"], Value::Null);
            continue;
        };
        // The state after the event's ledger, as the store has it (offers have none: their id
        // is an offer's, and the frame names no stream).
        let Some(st) = env.store.stream_at(id, e.event.ledger).await.unwrap() else {
            assert!(f["payload"].get("id").is_none(), "{f}");
            assert_eq!(f["streamId"], Value::Null, "{f}");
            continue;
        };
        assert_eq!(f["streamId"], id.to_string());
        let p = &f["payload"];
        assert_eq!(p["id"], id.to_string());
        for k in [
            "depositAmount",
            "streamedAmount",
            "remainingAmount",
            "ratePerSecond",
            "withdrawnAmount",
            "withdrawableAmount",
        ] {
            let s = p[k]
                .as_str()
                .unwrap_or_else(|| panic!("{k} not a string: {p}"));
            assert!(s.parse::<rust_decimal::Decimal>().is_ok(), "{k} = {s}");
        }
        assert_eq!(p["recipient"], st.recipient);
        assert_eq!(p["sender"], st.sender);
        assert_eq!(p["status"], fluxora::store::status_label(&st));
    }
    // `ping` is answered; nothing else is pending.
    c.send(json!({"type":"ping"})).await;
    let pong = c.recv().await;
    assert_eq!(pong["type"], "pong");
    assert_frame_meta(&pong);
}

/// Enough connections for the fan-out threads to write them (see `hub::fanout`): each gets
/// every event once, in order, and answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fan_out_reaches_every_connection_once_in_order() {
    let mut env = Env::new(HubConfig {
        max_connections_per_ip: 0,
        ..HubConfig::default()
    })
    .await;
    env.advance(2).await;
    let mut clients = Vec::new();
    for _ in 0..600 {
        let mut c = env.client().await;
        c.subscribe(json!({"all": true})).await;
        clients.push(c);
    }
    let head = env.store.last_position().await.unwrap();
    env.advance(6).await;
    let last = env.store.last_position().await.unwrap();
    let expect: Vec<i64> = ((head + 1)..=last).collect();
    assert!(!expect.is_empty());
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut frames = Vec::new();
                while positions(&frames).last().copied() < Some(last) {
                    frames.push(c.recv().await);
                }
                frames.extend(c.drain(Duration::from_millis(200)).await);
                c.send(json!({"type":"ping"})).await;
                let pong = c.recv().await;
                (positions(&frames), pong)
            })
        })
        .collect();
    for r in readers {
        let (got, pong) = r.await.unwrap();
        assert_eq!(got, expect);
        assert_eq!(pong["type"], "pong");
    }
}

#[tokio::test]
async fn filters_aliases_and_one_delivery_per_event() {
    let mut env = Env::new(HubConfig::default()).await;
    env.advance(30).await;
    let (id, sender, recipient) = env.some_stream().await;

    // stream_id (and the camelCase alias), recipient, sender.
    let mut by_id = env.client().await;
    let ack = by_id.subscribe(json!({"streamId": id.to_string()})).await;
    assert_eq!(ack["subscription"], json!({"stream_id": id.to_string()}));
    let mut by_recipient = env.client().await;
    by_recipient
        .subscribe(json!({"recipient_address": recipient}))
        .await;
    let mut by_sender = env.client().await;
    by_sender.subscribe(json!({"senderAddress": sender})).await;
    // Two subscriptions matching the same events: each event arrives once.
    let mut both = env.client().await;
    both.subscribe(json!({"stream_id": id.to_string()})).await;
    both.subscribe(json!({"recipientAddress": recipient})).await;
    let again = both.subscribe(json!({"stream_id": id.to_string()})).await;
    assert_eq!(again["alreadySubscribed"], true);

    env.settle().await;
    let head = env.store.last_position().await.unwrap();
    env.advance(60).await;
    let stored = env.store.events_after(head, 10_000).await.unwrap();
    let mut of_id = Vec::new();
    let mut of_recipient = Vec::new();
    let mut of_sender = Vec::new();
    for e in &stored {
        let (st, s, r) = routing(&env.store, e).await;
        if st == Some(id) {
            of_id.push(e.position);
        }
        if r.as_deref() == Some(recipient.as_str()) {
            of_recipient.push(e.position);
        }
        if s.as_deref() == Some(sender.as_str()) {
            of_sender.push(e.position);
        }
    }
    assert!(
        !of_id.is_empty(),
        "stream {id} had no new event; pick another seed"
    );
    let quiet = Duration::from_millis(700);
    assert_eq!(positions(&by_id.upto(of_id.last().copied()).await), of_id);
    assert_eq!(
        positions(&by_recipient.upto(of_recipient.last().copied()).await),
        of_recipient
    );
    assert_eq!(
        positions(&by_sender.upto(of_sender.last().copied()).await),
        of_sender
    );
    let union: BTreeSet<i64> = of_id.iter().chain(&of_recipient).copied().collect();
    let union: Vec<i64> = union.into_iter().collect();
    assert_eq!(positions(&both.upto(union.last().copied()).await), union);

    // Unsubscribe stops the flow and is acknowledged.
    by_id
        .send(json!({"type":"unsubscribe","stream_id": id.to_string()}))
        .await;
    let ack = by_id.recv().await;
    assert_eq!(ack["type"], "unsubscribed");
    assert_frame_meta(&ack);
    env.advance(20).await;
    assert!(positions(&by_id.drain(quiet).await).is_empty());
}

#[tokio::test]
async fn every_error_code_and_the_socket_stays_open() {
    let key = "a-firehose-key-of-some-length";
    let mut env = Env::new(HubConfig {
        firehose_key: Some(key.into()),
        ..HubConfig::default()
    })
    .await;
    env.advance(3).await;
    let mut c = env.client().await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "INVALID_MESSAGE"),
        (Message::text("[1,2]"), "INVALID_MESSAGE"),
        (Message::text(r#"{"type":"dance"}"#), "UNKNOWN_TYPE"),
        (Message::text(r#"{"type":"subscribe"}"#), "INVALID_MESSAGE"),
        (
            Message::text(r#"{"type":"subscribe","stream_id":"1","all":true}"#),
            "INVALID_MESSAGE",
        ),
        (
            Message::text(r#"{"type":"subscribe","recipient_address":"GNOTANADDRESS"}"#),
            "INVALID_MESSAGE",
        ),
        (
            Message::text(r#"{"type":"subscribe","stream_id":"999999999"}"#),
            "NOT_FOUND",
        ),
        (
            Message::text(r#"{"type":"unsubscribe","stream_id":"1"}"#),
            "NOT_FOUND",
        ),
        (Message::binary(vec![1u8, 2, 3]), "BINARY_NOT_SUPPORTED"),
        (
            Message::text(format!(
                r#"{{"type":"subscribe","all":true,"pad":"{}"}}"#,
                "x".repeat(5000)
            )),
            "PAYLOAD_TOO_LARGE",
        ),
        (
            Message::text(r#"{"type":"subscribe","all":true}"#),
            "UNAUTHORIZED",
        ),
        (
            Message::text(r#"{"type":"replay","afterEventId":"0000004294967296000-0000000000"}"#),
            "STALE_CURSOR",
        ),
        (
            Message::text(r#"{"type":"subscribe","all":true,"resume_from":999999}"#),
            "UNAUTHORIZED",
        ),
    ];
    for (m, code) in cases {
        c.send_raw(m).await;
        let e = c.recv().await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], code, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_frame_meta(&e);
    }
    // A wrong key is FORBIDDEN, the right one subscribes.
    let mut wrong = Client::connect(&format!("{}?token=nope", env.url())).await;
    wrong.send(json!({"type":"subscribe","all":true})).await;
    assert_eq!(wrong.recv().await["code"], "FORBIDDEN");
    let mut right = Client::connect(&format!("{}?token={key}", env.url())).await;
    let ack = right
        .subscribe(json!({"all": true, "resume_from": 0, "epoch": 0}))
        .await;
    assert_eq!(ack["resumeFrom"], 0);
    // STALE_CURSOR on a resume from a position that does not exist, with the current epoch.
    let (id, _, _) = env.some_stream().await;
    right
        .send(json!({"type":"subscribe","stream_id": id.to_string(),"resume_from": 1_000_000}))
        .await;
    let frames = right.until(|v| v["type"] == "error").await;
    let e = frames.last().unwrap();
    assert_eq!(e["code"], "STALE_CURSOR", "{e}");
    assert_eq!(e["epoch"], 0);
    // The rate limit: 30 messages per 10 s; the rest get RATE_LIMIT_EXCEEDED, the socket stays.
    let mut r = env.client().await;
    for _ in 0..35 {
        r.send(json!({"type":"ping"})).await;
    }
    let mut frames = Vec::new();
    while frames.len() < 35 {
        frames.push(r.recv().await);
    }
    frames.extend(r.drain(Duration::from_millis(200)).await);
    let pongs = frames.iter().filter(|f| f["type"] == "pong").count();
    let limited = frames
        .iter()
        .filter(|f| f["code"] == "RATE_LIMIT_EXCEEDED")
        .count();
    assert_eq!((pongs, limited), (30, 5), "{frames:?}");
    // Errors never closed the sockets.
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
    // A store failure is INTERNAL_ERROR (details in the server log), and the socket stays.
    let db = env._dir.path().join("ws.db");
    let admin = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("ALTER TABLE streams RENAME TO streams_gone")
        .execute(&admin)
        .await
        .unwrap();
    c.send(json!({"type":"subscribe","stream_id":"1"})).await;
    let e = c.recv().await;
    assert_eq!(e["code"], "INTERNAL_ERROR", "{e}");
    assert_frame_meta(&e);
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
}

#[tokio::test]
async fn batching_groups_a_streams_events() {
    let mut env = Env::new(HubConfig::default()).await;
    env.advance(3).await;
    let mut c = env.client().await;
    c.subscribe(json!({"all": true, "batching": true})).await;
    let head = env.store.last_position().await.unwrap();
    env.advance(40).await;
    let last = env.store.last_position().await.unwrap();
    let frames = c.upto(Some(last)).await;
    assert!(frames.iter().all(|f| f["type"] == "stream_update_batch"));
    assert!(
        frames
            .iter()
            .any(|f| f["events"].as_array().unwrap().len() > 1),
        "some batch holds several events"
    );
    for f in &frames {
        assert_frame_meta(f);
        let sid = &f["streamId"];
        for e in f["events"].as_array().unwrap() {
            // The stream object when the event is about a stream (offers carry only the event).
            let id = &e["payload"]["id"];
            assert!(id.is_null() || id == sid, "{f}");
        }
    }
    let mut got = positions(&frames);
    got.sort();
    assert_eq!(got, ((head + 1)..=last).collect::<Vec<_>>());
}

#[tokio::test]
async fn replay_pages_through_stored_events() {
    let mut env = Env::new(HubConfig::default()).await;
    env.advance(20).await;
    let all = env.store.events_after(0, 10_000).await.unwrap();
    let mut c = env.client().await;
    c.send(json!({"type":"replay","limit":7})).await;
    let frames = c.until(|v| v["type"] == "stream_replay_complete").await;
    let done = frames.last().unwrap();
    assert_eq!(done["hasMore"], true);
    assert_frame_meta(done);
    let replayed: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "stream_replay")
        .collect();
    assert_eq!(replayed.len(), 7);
    for (f, e) in replayed.iter().zip(&all) {
        assert_eq!(f["eventId"], e.event.event_id);
        assert_eq!(f["ledger"], e.event.ledger);
        assert_eq!(f["topic"], e.event.topic);
        assert!(f["happenedAt"].as_str().is_some());
        assert!(f["payload"].is_object());
    }
    // Continue from the cursor to the end.
    let cursor = done["cursor"].as_str().unwrap().to_string();
    c.send(json!({"type":"replay","afterEventId": cursor, "limit": 1000}))
        .await;
    let frames = c.until(|v| v["type"] == "stream_replay_complete").await;
    let done = frames.last().unwrap();
    assert_eq!(done["cursor"], Value::Null);
    assert_eq!(done["hasMore"], false);
    assert_eq!(frames.len() - 1, all.len() - 7);
    // By ledger and stream.
    let (id, _, _) = env.some_stream().await;
    let from = all[all.len() / 2].event.ledger;
    c.send(json!({"type":"replay","fromLedger": from, "stream_id": id.to_string(), "limit": 1000}))
        .await;
    let frames = c.until(|v| v["type"] == "stream_replay_complete").await;
    let mut want: Vec<&str> = Vec::new();
    for e in &all {
        if e.event.ledger >= from && routing(&env.store, e).await.0 == Some(id) {
            want.push(e.event.event_id.as_str());
        }
    }
    let got: Vec<&str> = frames[..frames.len() - 1]
        .iter()
        .map(|f| f["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);
    // By position (resume_from) too.
    let p = all[3].position;
    c.send(json!({"type":"replay","resume_from": p, "epoch": 0, "limit": 2}))
        .await;
    let frames = c.until(|v| v["type"] == "stream_replay_complete").await;
    assert_eq!(frames[0]["position"], p + 1);
}

#[tokio::test]
async fn resume_during_live_traffic_has_no_gap_and_no_duplicate() {
    let mut env = Env::new(HubConfig::default()).await;
    env.advance(40).await;
    let (id, _, recipient) = env.some_stream().await;
    let mut watcher = env.client().await;
    watcher.subscribe(json!({"all": true})).await;
    let start = env.store.last_position().await.unwrap();
    let mid = start / 3;
    // Traffic keeps arriving while the resumes replay.
    let traffic = {
        let state = env.state.clone();
        let ingestor = env.ingestor.clone();
        let mut gen = std::mem::replace(
            &mut env.gen,
            Generator::new(GenConfig {
                seed: 99,
                ..Default::default()
            }),
        );
        tokio::spawn(async move {
            for _ in 0..40 {
                {
                    let mut chain = state.chain.write().await;
                    gen.next_ledger(&mut chain).unwrap();
                }
                ingestor.sync().await.unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            gen
        })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut all = env.client().await;
    let ack = all
        .subscribe(json!({"all": true, "resume_from": mid, "epoch": 0}))
        .await;
    assert_eq!(ack["resumeFrom"], mid);
    let mut one = env.client().await;
    one.subscribe(json!({"stream_id": id.to_string(), "resume_from": 0, "epoch": 0}))
        .await;
    let mut party = env.client().await;
    party
        .subscribe(json!({"recipient_address": recipient, "resume_from": mid, "epoch": 0, "batching": true}))
        .await;
    env.gen = traffic.await.unwrap();
    let last = env.store.last_position().await.unwrap();
    let frames = all.upto(Some(last)).await;
    assert!(frames.iter().any(|f| f["type"] == "resumed"));
    assert!(frames.iter().any(|f| f["replay"] == true));
    assert_eq!(positions(&frames), ((mid + 1)..=last).collect::<Vec<_>>());
    let stored = env.store.events_after(0, 100_000).await.unwrap();
    let mut of_id = Vec::new();
    let mut of_party = Vec::new();
    for e in &stored {
        let (st, _, r) = routing(&env.store, e).await;
        if st == Some(id) {
            of_id.push(e.position);
        }
        if e.position > mid && r.as_deref() == Some(recipient.as_str()) {
            of_party.push(e.position);
        }
    }
    assert_eq!(positions(&one.upto(of_id.last().copied()).await), of_id);
    let mut got = positions(&party.upto(of_party.last().copied()).await);
    got.sort();
    assert_eq!(got, of_party);
    // The live watcher saw every event exactly once too.
    assert_eq!(
        positions(&watcher.upto(Some(last)).await),
        ((start + 1)..=last).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_reorg_is_announced_before_the_new_branch_and_old_cursors_go_stale() {
    let mut env = Env::new(HubConfig::default()).await;
    env.advance(20).await;
    let (id, _, _) = env.some_stream().await;
    let mut all = env.client().await;
    all.subscribe(json!({"all": true})).await;
    let mut one = env.client().await;
    one.subscribe(json!({"stream_id": id.to_string()})).await;
    let mut unrelated = env.client().await;
    let nobody = stellar_strkey::ed25519::PublicKey([7u8; 32])
        .to_string()
        .as_str()
        .to_string();
    unrelated
        .subscribe(json!({"recipient_address": nobody}))
        .await;
    env.advance(10).await;
    let old_last = env.store.last_position().await.unwrap();
    let before = all.upto(Some(old_last)).await;
    assert_eq!(positions(&before).last().copied(), Some(old_last));
    env.fork(4).await;
    let reorg = env.store.reorgs(1).await.unwrap().remove(0);
    assert_eq!(reorg.epoch, 1);
    let new_last = env.store.last_position().await.unwrap();
    let mut frames = Vec::new();
    while !frames.iter().any(|f: &Value| {
        f["epoch"] == 1 && f["position"] == new_last && f["type"] == "stream_update"
    }) {
        frames.push(all.recv().await);
    }
    frames.extend(all.drain(Duration::from_millis(300)).await);
    let rb = frames
        .iter()
        .position(|f| f["type"] == "rollback")
        .expect("a rollback notice");
    let notice = &frames[rb];
    assert_eq!(notice["toLedger"], reorg.fork_ledger);
    assert_eq!(notice["epoch"], 1);
    assert_frame_meta(notice);
    let streams: Vec<String> = reorg.streams_affected.iter().map(u64::to_string).collect();
    assert_eq!(notice["streams"], json!(streams));
    // Nothing of the new branch before the notice; everything after it is epoch 1, continuing
    // from the first removed position.
    assert!(frames[..rb].iter().all(|f| f["epoch"] == 0));
    let after: Vec<&Value> = frames[rb + 1..].iter().collect();
    assert!(after.iter().all(|f| f["epoch"] == 1));
    let first_removed = reorg.first_position.unwrap();
    assert_eq!(
        positions(&frames[rb + 1..]),
        (first_removed..=new_last).collect::<Vec<_>>()
    );
    // The stream's subscriber hears of it when its stream was affected; an unrelated one not.
    if reorg.streams_affected.contains(&id) {
        let f = one.until(|v| v["type"] == "rollback").await;
        assert_eq!(f.last().unwrap()["toLedger"], reorg.fork_ledger);
    }
    assert!(unrelated
        .drain(Duration::from_millis(300))
        .await
        .iter()
        .all(|f| f["type"] != "rollback"));
    // Resuming from a rolled-back position of epoch 0 is stale, with the current epoch.
    let mut late = env.client().await;
    late.send(json!({"type":"subscribe","all":true,"resume_from": old_last, "epoch": 0}))
        .await;
    let e = late.recv().await;
    assert_eq!(e["code"], "STALE_CURSOR", "{e}");
    assert_eq!(e["epoch"], 1);
    assert_eq!(e["reason"], "rolled_back");
    // …and so is one without an epoch (the hub cannot tell which branch it saw).
    late.send(json!({"type":"subscribe","all":true,"resume_from": old_last}))
        .await;
    assert_eq!(late.recv().await["code"], "STALE_CURSOR");
    // A position below the fork resumes fine across epochs.
    late.send(json!({"type":"subscribe","all":true,"resume_from": first_removed - 1, "epoch": 0}))
        .await;
    let frames = late.until(|v| v["type"] == "resumed").await;
    assert_eq!(frames[0]["type"], "subscribed");
    assert_eq!(
        positions(&frames),
        (first_removed..=new_last).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_never_delays_the_others() {
    slow_consumer(HubConfig {
        send_queue: 64,
        ..HubConfig::default()
    })
    .await;
}

/// The byte limit alone: the queue could take many more chunks.
#[tokio::test]
async fn a_slow_consumer_over_the_byte_limit_is_closed() {
    slow_consumer(HubConfig {
        send_queue: 1_000_000,
        send_queue_bytes: 256 * 1024,
        ..HubConfig::default()
    })
    .await;
}

/// A client that stops reading while much more than the socket buffers hold is sent, within the
/// queue's limits: the writes the socket refused are finished by the connection's writer task
/// once the client reads again, and every event arrives once, in order, with no close.
#[tokio::test]
async fn a_paused_reader_gets_everything_in_order_when_it_reads_again() {
    let mut env = Env::new(HubConfig::default()).await;
    env.advance(2).await;
    let mut paused = Client {
        ws: env.small_buffer_ws().await,
    };
    paused.subscribe(json!({"all": true})).await;
    let mut live = env.client().await;
    live.subscribe(json!({"all": true})).await;
    let head = env.store.last_position().await.unwrap();
    // Several MiB of frames against a few hundred KiB of socket buffers; the live client reads
    // along, the paused one does not.
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(f) = live.try_recv(Duration::from_secs(3)).await {
            frames.push(f);
        }
        frames
    });
    env.advance(600).await;
    let last = env.store.last_position().await.unwrap();
    let expect: Vec<i64> = ((head + 1)..=last).collect();
    assert!(expect.len() > 2000, "{} events", expect.len());
    assert_eq!(positions(&reader.await.unwrap()), expect);
    // Now the paused client reads: everything, once, in order.
    let mut frames = Vec::new();
    while positions(&frames).last().copied() < Some(last) {
        frames.push(paused.recv().await);
    }
    frames.extend(paused.drain(Duration::from_millis(300)).await);
    assert_eq!(positions(&frames), expect);
    // Still open and answering.
    paused.send(json!({"type":"ping"})).await;
    assert_eq!(paused.recv().await["type"], "pong");
}

async fn slow_consumer(cfg: HubConfig) {
    let mut env = Env::new(cfg).await;
    env.advance(2).await;
    // A client with a tiny receive buffer that never reads.
    let mut slow = env.small_buffer_ws().await;
    slow.send(Message::text(r#"{"type":"subscribe","all":true}"#))
        .await
        .unwrap();
    let mut fast = env.client().await;
    fast.subscribe(json!({"all": true})).await;
    let head = env.store.last_position().await.unwrap();
    // The fast one reads as the events come.
    let (target_tx, target) = watch::channel(i64::MAX);
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        loop {
            if let Some(f) = fast.try_recv(Duration::from_millis(100)).await {
                frames.push(f);
            }
            if positions(&frames).last().copied() >= Some(*target.borrow()) {
                return frames;
            }
        }
    });
    // Enough to fill the loopback socket buffers (up to 4 MiB) behind the slow one.
    let t = std::time::Instant::now();
    env.advance(800).await;
    let last = env.store.last_position().await.unwrap();
    target_tx.send(last).unwrap();
    let frames = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the fast client got everything")
        .unwrap();
    assert_eq!(positions(&frames), ((head + 1)..=last).collect::<Vec<_>>());
    eprintln!("{} events in {:?}", last - head, t.elapsed());
    // The slow one finds a close frame after its backlog.
    let (code, reason) = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    break (u16::from(f.code), f.reason.to_string())
                }
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 4008);
    assert_eq!(reason, r#"{"reason":"slow_consumer"}"#);
}

#[tokio::test]
async fn unanswered_pings_close_the_socket() {
    let env = Env::new(HubConfig {
        ping_interval: Duration::from_millis(100),
        ..HubConfig::default()
    })
    .await;
    // A client that answers (it reads) stays.
    let mut ok = env.client().await;
    // One that does not read answers no ping.
    let (mut mute, _) = tokio_tungstenite::connect_async(env.url()).await.unwrap();
    let _ = ok.drain(Duration::from_millis(600)).await;
    ok.send(json!({"type":"ping"})).await;
    assert_eq!(ok.recv().await["type"], "pong");
    let mut pings = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, mute.next()).await.unwrap() {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            other => panic!("{other:?}"),
        }
    };
    assert!(pings >= 2);
    assert_eq!(code, (4000, r#"{"reason":"ping_timeout"}"#.to_string()));
}

#[tokio::test]
async fn connection_caps_refuse_the_upgrade() {
    let env = Env::new(HubConfig {
        max_connections_per_ip: 2,
        ..HubConfig::default()
    })
    .await;
    let a = env.client().await;
    let _b = env.client().await;
    // /health counts them.
    let health: Value = reqwest::get(format!("http://{}/health", env.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["wsConnections"], 2, "{health}");
    match tokio_tungstenite::connect_async(env.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "TOO_MANY_REQUESTS");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // A closed connection frees its slot.
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.hub.connections(), 1);
    let _c = env.client().await;
}

#[tokio::test]
async fn shutdown_closes_with_1001_and_server_shutdown() {
    let env = Env::new(HubConfig::default()).await;
    let mut a = env.client().await;
    a.subscribe(json!({"all": true})).await;
    let mut b = env.client().await;
    env.stop.send(true).unwrap();
    for c in [&mut a, &mut b] {
        let (code, reason) = c.closed().await;
        assert_eq!(code, u16::from(CloseCode::Away));
        assert_eq!(reason, r#"{"reason":"server_shutdown"}"#);
    }
    assert!(env.hub.drained(Duration::from_secs(5)).await);
}

/// An API-only process (`fluxora serve --no-ingest`) fans out what this test ingests into
/// PostgreSQL: it learns of commits and rollbacks only through LISTEN/NOTIFY (and its poll),
/// even across a lost LISTEN connection.
#[tokio::test]
async fn an_api_only_process_fans_out_what_another_process_ingests() {
    let Some(db) = fluxora::testing::TempPgDatabase::create().await.unwrap() else {
        return;
    };
    let mut env = Env::with_url(HubConfig::default(), Some(db.url.clone())).await;
    env.advance(5).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fluxora"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "--database-url",
            &db.url,
            "--listen-addr",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
            "serve",
            "--no-ingest",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws/streams");
    let mut c = None;
    for _ in 0..100 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            c = Some(Client { ws });
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = c.expect("the API-only process serves /ws/streams");
    let ack = c.subscribe(json!({"all": true})).await;
    let head = ack["position"].as_i64().unwrap();
    assert_eq!(head, env.store.last_position().await.unwrap());
    env.advance(8).await;
    let last = env.store.last_position().await.unwrap();
    let frames = c
        .until(|v| v["position"].as_i64() == Some(last) && v["type"] == "stream_update")
        .await;
    assert_eq!(positions(&frames), ((head + 1)..=last).collect::<Vec<_>>());

    // Its LISTEN connection dies: what is committed meanwhile still arrives, in order.
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the API-only process LISTENs");
    admin.close().await;
    env.advance(8).await;
    let last2 = env.store.last_position().await.unwrap();
    let frames = c
        .until(|v| v["position"].as_i64() == Some(last2) && v["type"] == "stream_update")
        .await;
    assert_eq!(positions(&frames), ((last + 1)..=last2).collect::<Vec<_>>());

    // A rollback reaches it as a notice before the new branch.
    env.fork(3).await;
    let reorg = env.store.reorgs(1).await.unwrap().remove(0);
    let new_last = env.store.last_position().await.unwrap();
    let frames = c
        .until(|v| {
            v["position"].as_i64() == Some(new_last)
                && v["epoch"] == 1
                && v["type"] == "stream_update"
        })
        .await;
    let rb = frames.iter().position(|f| f["type"] == "rollback").unwrap();
    assert_eq!(frames[rb]["toLedger"], reorg.fork_ledger);
    assert_eq!(
        positions(&frames[rb + 1..]),
        (reorg.first_position.unwrap()..=new_last).collect::<Vec<_>>()
    );
    let _ = child.kill().await;
    drop(env);
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_resume_older_than_the_window_is_stale() {
    let mut env = Env::new(HubConfig {
        resume_window: 5,
        ..HubConfig::default()
    })
    .await;
    env.advance(10).await;
    let last = env.store.last_position().await.unwrap();
    assert!(last > 6);
    let mut c = env.client().await;
    c.send(json!({"type":"subscribe","all":true,"resume_from": last - 6, "epoch": 0}))
        .await;
    let e = c.recv().await;
    assert_eq!(e["code"], "STALE_CURSOR", "{e}");
    assert_eq!(e["reason"], "beyond_retention");
    assert_eq!(e["epoch"], 0);
    // Within the window it resumes.
    let ack = c
        .subscribe(json!({"all": true, "resume_from": last - 5, "epoch": 0}))
        .await;
    assert_eq!(ack["replayThrough"], last);
    let frames = c.until(|v| v["type"] == "resumed").await;
    assert_eq!(positions(&frames), ((last - 4)..=last).collect::<Vec<_>>());
    assert_eq!(frames.last().unwrap()["replayed"], 5);
}

#[tokio::test]
async fn client_pings_get_pongs_and_a_client_close_is_answered() {
    let env = Env::new(HubConfig::default()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(env.url()).await.unwrap();
    // Protocol pings (not the JSON one): tungstenite answers them through the hub's writer.
    for i in 0..3u8 {
        ws.send(Message::Ping(vec![i, 42].into())).await.unwrap();
        let pong = loop {
            match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
                Some(Ok(Message::Pong(p))) => break p,
                Some(Ok(_)) => {}
                other => panic!("no pong: {other:?}"),
            }
        };
        assert_eq!(pong.as_ref(), &[i, 42]);
    }
    // The JSON protocol still answers between them.
    ws.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    let text = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(_)) => {}
            other => panic!("no pong message: {other:?}"),
        }
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "pong");
    // A close from the client gets one close back, then the connection ends and frees its slot.
    ws.close(None).await.unwrap();
    let mut closes = 0;
    while let Ok(Some(m)) = tokio::time::timeout(WAIT, ws.next()).await {
        match m {
            Ok(Message::Close(_)) => closes += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(closes, 1, "one close frame back");
    for _ in 0..50 {
        if env.hub.connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.hub.connections(), 0);
}

#[tokio::test]
async fn a_request_that_is_not_a_websocket_upgrade_is_told_what_is_missing() {
    let env = Env::new(HubConfig::default()).await;
    let base = format!("http://{}/ws/streams", env.addr);
    let http = reqwest::Client::new();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "Connection header must include 'upgrade'"),
        (
            &[("connection", "keep-alive, Upgrade"), ("upgrade", "h2c")],
            "Upgrade header must be 'websocket'",
        ),
        (
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "8"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            "Sec-WebSocket-Version header must be 13",
        ),
        (
            &[
                ("connection", "upgrade"),
                ("upgrade", "WebSocket"),
                ("sec-websocket-version", "13"),
            ],
            "Sec-WebSocket-Key header is missing",
        ),
    ];
    for (headers, expect) in cases {
        let mut req = http.get(&base);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 400, "{headers:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(expect), "{msg}");
    }
    assert_eq!(env.hub.connections(), 0);
}
