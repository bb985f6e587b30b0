//! End-to-end ingestion: the simulator serves a generated chain over HTTP on loopback; the real
//! Stellar RPC and Horizon clients fetch and decode it; the ingestor verifies and appends it into
//! each store. Prints `ingest <source> <store> ledgers_per_sec=<n> events_per_sec=<n>`.
//!
//! Then rollback cost: stores of 100k and 1M events (10 events per ledger, so depth 64 removes
//! 640 events at both sizes); prints `rollback <store> store_events=<n> depth=64 ms=<n>`.
//!
//! `FLUXORA_BENCH_LEDGERS` (default 1500) sets the ingested chain's length.

/// mimalloc: far less page churn than glibc malloc for the many short-lived XDR and JSON
/// buffers of ingestion.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxora::chain::horizon::HorizonSource;
use fluxora::chain::http::HttpPolicy;
use fluxora::chain::rpc::RpcSource;
use fluxora::chain::{ContractFilter, LedgerSource};
use fluxora::config::DatabaseUrl;
use fluxora::ingest::{IngestConfig, Ingestor};
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::{serve, SimState};
use fluxora::store::{self, AppendBatch, Cursor, RollbackRequest, Store};
use fluxora::testing::synth::{events, ledgers};
use fluxora::testing::TempPgDatabase;

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

enum Db {
    Sqlite(#[allow(dead_code)] tempfile::TempDir, String),
    Pg(Box<TempPgDatabase>),
}

impl Db {
    async fn new(backend: &str) -> Option<Db> {
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir().ok()?;
                let url = format!("sqlite://{}", dir.path().join("b.db").display());
                Some(Db::Sqlite(dir, url))
            }
            _ => match TempPgDatabase::create().await {
                Ok(Some(db)) => Some(Db::Pg(Box::new(db))),
                Ok(None) => None,
                Err(e) => {
                    println!("postgres unavailable: {e}");
                    None
                }
            },
        }
    }
    fn url(&self) -> DatabaseUrl {
        match self {
            Db::Sqlite(_, u) => DatabaseUrl::Sqlite(u.clone()),
            Db::Pg(db) => DatabaseUrl::Postgres(db.url.clone()),
        }
    }
    async fn close(self) {
        if let Db::Pg(db) = self {
            let _ = db.drop_db().await;
        }
    }
}

async fn ingest_once(
    source_kind: &str,
    backend: &str,
    url: &str,
    contract: [u8; 32],
    first: u32,
    passphrase: &str,
) -> Result<(u32, u64, Duration), String> {
    let Some(db) = Db::new(backend).await else {
        return Err("skipped: server not reachable".into());
    };
    let store: Arc<dyn Store> = Arc::from(store::open(&db.url()).await.map_err(|e| e.to_string())?);
    let filter = ContractFilter::from_bytes(contract);
    let source: Arc<dyn LedgerSource> = match source_kind {
        "rpc" => Arc::new(
            RpcSource::new(
                &format!("{url}/"),
                passphrase,
                filter,
                HttpPolicy::default(),
            )
            .map_err(|e| e.to_string())?,
        ),
        _ => Arc::new(
            HorizonSource::new(url, filter, HttpPolicy::default()).map_err(|e| e.to_string())?,
        ),
    };
    let ing = Ingestor::new(
        store.clone(),
        source,
        IngestConfig {
            start_ledger: Some(first),
            batch_ledgers: 200,
            network_passphrase: passphrase.into(),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let last = ing
        .sync()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(first);
    let spent = t.elapsed();
    let n = store.event_count().await.map_err(|e| e.to_string())?;
    drop(ing);
    drop(store);
    db.close().await;
    Ok((last - first + 1, n, spent))
}

async fn rollback_bench(backend: &str, store_events: u64, per_ledger: u32) {
    let Some(db) = Db::new(backend).await else {
        println!("rollback {backend} skipped: server not reachable");
        return;
    };
    let Ok(store) = store::open(&db.url()).await else {
        println!("rollback {backend} failed to open");
        return;
    };
    let n_ledgers = (store_events / u64::from(per_ledger)) as u32;
    let mut prev = ZERO.to_string();
    let mut seq = 1;
    while seq <= n_ledgers {
        let to = (seq + 1000 / per_ledger.max(1)).min(n_ledgers);
        let ls = ledgers(seq, to, 0, &prev);
        prev = ls.last().map(|l| l.hash.clone()).unwrap_or_default();
        let evs = (seq..=to)
            .flat_map(|s| events(s, per_ledger, 5_000, 0))
            .collect();
        let cursor = Some(Cursor {
            ledger: to,
            hash: prev.clone(),
        });
        if let Err(e) = store
            .append(&AppendBatch {
                ledgers: ls,
                events: evs,
                cursor,
                ..Default::default()
            })
            .await
        {
            println!("rollback {backend} setup failed: {e}");
            return;
        }
        seq = to + 1;
    }
    let t = Instant::now();
    let r = store
        .rollback_to(&RollbackRequest {
            fork_ledger: n_ledgers - 64,
            new_hash: None,
            reason: "bench".into(),
        })
        .await;
    let ms = t.elapsed().as_millis();
    match r {
        Ok(r) => println!(
            "rollback {backend} store_events={store_events} depth=64 ms={ms} (removed {} events)",
            r.removed_event_ids.len()
        ),
        Err(e) => println!("rollback {backend} failed: {e}"),
    }
    drop(store);
    db.close().await;
}

#[tokio::main]
async fn main() {
    let n: u32 = std::env::var("FLUXORA_BENCH_LEDGERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    let mut g = Generator::new(GenConfig {
        seed: 11,
        txs_per_ledger: 40,
        target_streams: 2_000,
        ..GenConfig::default()
    });
    let first = g.cfg.first_seq;
    let passphrase = g.cfg.passphrase.clone();
    let contract = g.contract;
    let mut chain = g.empty_chain();
    for _ in 0..n {
        if let Err(e) = g.next_ledger(&mut chain) {
            println!("ingest failed: cannot generate the chain: {e}");
            return;
        }
    }
    let server = match serve(
        SimState::new(chain),
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            println!("ingest failed: cannot serve the simulator: {e}");
            return;
        }
    };
    let url = server.url();
    for source in ["rpc", "horizon"] {
        for backend in ["sqlite", "postgres"] {
            match ingest_once(source, backend, &url, contract, first, &passphrase).await {
                Ok((ledgers, events, d)) => {
                    let s = d.as_secs_f64().max(1e-9);
                    println!(
                        "ingest {source} {backend} ledgers_per_sec={} events_per_sec={}",
                        (f64::from(ledgers) / s) as u64,
                        (events as f64 / s) as u64
                    );
                    eprintln!("  ({ledgers} ledgers, {events} events in {:.2} s)", s);
                }
                Err(e) => println!("ingest {source} {backend} {e}"),
            }
        }
    }
    server.stop().await;
    for backend in ["sqlite", "postgres"] {
        rollback_bench(backend, 100_000, 10).await;
        rollback_bench(backend, 1_000_000, 10).await;
    }
}
