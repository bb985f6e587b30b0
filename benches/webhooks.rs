//! Webhook delivery throughput: 10 endpoints on one local receiver (loopback HTTP), a backlog of
//! events appended through `Store::append` (so the outbox rows are the real ones), drained by one
//! dispatcher process with the default worker settings. Then the same with an 11th endpoint that
//! fails every attempt (HTTP 500), to show what a failing endpoint costs the healthy ones.
//!
//! Prints, for each store:
//! `webhooks <store> deliveries_per_sec=<n>` and
//! `webhooks <store> with_failing_endpoint healthy_deliveries_per_sec=<n> cost_pct=<x>`.
//!
//! `FLUXORA_BENCH_WEBHOOK_EVENTS` (default 3000) sets the events per phase (×10 deliveries).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use fluxora::config::{DatabaseUrl, TargetPolicy, WebhookSettings};
use fluxora::projection::view::ViewOptions;
use fluxora::store::{
    self, format_event_id, AppendBatch, Cursor, LedgerRecord, NewEvent, ProjectionDelta, Store,
    StreamVersion,
};
use fluxora::testing::synth::{ledger_hash, stream_state};
use fluxora::testing::TempPgDatabase;
use fluxora::webhooks::service::EndpointInput;
use fluxora::webhooks::{Dispatcher, DispatcherConfig, WebhookAdmin};
use tokio::sync::watch;

const CONTRACT: &str = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC";
const ENDPOINTS: usize = 10;
const STREAMS: u64 = 500;
const PER_LEDGER: u32 = 20;
/// Alternating rounds of each condition.
const ROUNDS: u64 = 2;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

async fn hook(State(c): State<Arc<Counts>>, Path(which): Path<String>) -> StatusCode {
    if which == "fail" {
        c.failed.fetch_add(1, Ordering::Relaxed);
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        c.ok.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    }
}

async fn receiver(c: Arc<Counts>) -> SocketAddr {
    let app = axum::Router::new()
        .route("/hook/{which}", axum::routing::post(hook))
        .with_state(c);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

fn address(n: u8) -> String {
    stellar_strkey::ed25519::PublicKey([n; 32])
        .to_string()
        .as_str()
        .to_string()
}

/// Appends `events` events (PER_LEDGER per ledger, over STREAMS streams) from ledger `*next`.
async fn backlog(store: &dyn Store, next: &mut u32, prev: &mut String, events: u32) {
    let ledgers = events.div_ceil(PER_LEDGER);
    let (s, r) = (address(1), address(2));
    for _ in 0..ledgers {
        let seq = *next;
        let hash = ledger_hash(0, seq);
        let mut evs = Vec::new();
        let mut versions: Vec<StreamVersion> = Vec::new();
        for i in 0..PER_LEDGER {
            let stream = (u64::from(seq) * u64::from(PER_LEDGER) + u64::from(i)) % STREAMS;
            evs.push(NewEvent {
                event_id: format_event_id(seq, i + 1, 0, 0),
                ledger: seq,
                tx_hash: ledger_hash(7, seq * 100 + i),
                tx_order: i + 1,
                op_index: 0,
                event_index: 0,
                contract_id: CONTRACT.into(),
                topic: "withdrew".into(),
                stream_id: Some(stream),
                decoded: serde_json::json!({"type": "withdrew"}),
                topic_xdr: vec![],
                data_xdr: String::new(),
                function: None,
            });
            if !versions.iter().any(|v| v.stream_id == stream) {
                versions.push(StreamVersion::of(&stream_state(stream, &s, &r, seq), seq).unwrap());
            }
        }
        store
            .append(&AppendBatch {
                ledgers: vec![LedgerRecord {
                    sequence: seq,
                    hash: hash.clone(),
                    prev_hash: prev.clone(),
                    close_time: 1_700_000_000 + i64::from(seq) * 5,
                }],
                events: evs,
                cursor: Some(Cursor {
                    ledger: seq,
                    hash: hash.clone(),
                }),
                projection: ProjectionDelta {
                    versions,
                    ..Default::default()
                },
                safe_ledger: Some(seq),
            })
            .await
            .unwrap();
        *prev = hash;
        *next += 1;
    }
}

async fn drain(store: &Arc<dyn Store>, counts: &Arc<Counts>, want_ok: u64) -> (Duration, u64) {
    let view = ViewOptions {
        decimals: 7,
        contract_id: CONTRACT.into(),
    };
    let settings = WebhookSettings {
        allow_private_targets: TargetPolicy::Loopback,
        ..Default::default()
    };
    let d = Arc::new(
        Dispatcher::new(&**store, DispatcherConfig::from_settings(&settings, view)).unwrap(),
    );
    let (stop, rx) = watch::channel(false);
    let start_ok = counts.ok.load(Ordering::Relaxed);
    let start_failed = counts.failed.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let task = tokio::spawn(d.clone().run(rx, None));
    let deadline = t0 + Duration::from_secs(300);
    // Done when the dispatcher has recorded every healthy delivery.
    while d.stats().delivered.load(Ordering::Relaxed) < want_ok {
        assert!(Instant::now() < deadline, "bench did not finish in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t0.elapsed();
    let _ = stop.send(true);
    let _ = task.await;
    assert!(counts.ok.load(Ordering::Relaxed) - start_ok >= want_ok);
    (took, counts.failed.load(Ordering::Relaxed) - start_failed)
}

async fn run(label: &str, store: Arc<dyn Store>, events: u32) {
    let counts = Arc::new(Counts::default());
    let addr = receiver(counts.clone()).await;
    let admin = WebhookAdmin::new(
        store.clone(),
        TargetPolicy::Loopback,
        Duration::from_secs(3600),
        None,
    );
    for i in 0..ENDPOINTS {
        admin
            .create(EndpointInput {
                url: Some(format!("http://{addr}/hook/{i}")),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut next = 1000u32;
    let mut prev = "0".repeat(64);
    let want = u64::from(events.div_ceil(PER_LEDGER) * PER_LEDGER) * ENDPOINTS as u64;

    // Warm-up: connections, caches.
    backlog(&*store, &mut next, &mut prev, PER_LEDGER * 10).await;
    drain(
        &store,
        &counts,
        u64::from(PER_LEDGER * 10) * ENDPOINTS as u64,
    )
    .await;

    // The failing endpoint (every attempt answered 500) is disabled during the baseline rounds
    // (nothing is queued for it then) and enabled in the others; the order alternates (A-B, B-A)
    // so that the growing tables weigh on both alike.
    let (failing, _) = admin
        .create(EndpointInput {
            url: Some(format!("http://{addr}/hook/fail")),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut base_time = Duration::ZERO;
    let mut fail_time = Duration::ZERO;
    let mut failed_attempts = 0;
    for round in 0..ROUNDS {
        // A-B then B-A: a drift over time (the tables grow) weighs on both conditions alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_failing in order {
            admin
                .update(
                    &failing.id,
                    EndpointInput {
                        enabled: Some(with_failing),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            backlog(&*store, &mut next, &mut prev, events).await;
            let (took, failed) = drain(&store, &counts, want).await;
            if with_failing {
                fail_time += took;
                failed_attempts += failed;
            } else {
                base_time += took;
            }
        }
    }
    let total = (want * ROUNDS) as f64;
    let base = total / base_time.as_secs_f64();
    let healthy = total / fail_time.as_secs_f64();
    let cost = (1.0 - healthy / base) * 100.0;
    println!(
        "webhooks {label} deliveries_per_sec={base:.0} (10 endpoints, {} deliveries in {base_time:.2?})",
        want * ROUNDS
    );
    println!(
        "webhooks {label} with_failing_endpoint healthy_deliveries_per_sec={healthy:.0} cost_pct={cost:.1} (11th endpoint answering 500: {failed_attempts} failed attempts)"
    );
}

fn main() {
    let events: u32 = std::env::var("FLUXORA_BENCH_WEBHOOK_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let s: Arc<dyn Store> = Arc::from(store::open(&DatabaseUrl::Sqlite(url)).await.unwrap());
        run("sqlite", s, events).await;
        match TempPgDatabase::create().await {
            Ok(Some(db)) => {
                let s: Arc<dyn Store> = Arc::from(
                    store::open(&DatabaseUrl::Postgres(db.url.clone()))
                        .await
                        .unwrap(),
                );
                run("postgres", s.clone(), events).await;
                drop(s);
                let _ = db.drop_db().await;
            }
            Ok(None) => println!("webhooks postgres skipped (no server)"),
            Err(e) => panic!("{e}"),
        }
    });
}
