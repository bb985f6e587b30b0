//! Append throughput of the event store: 1,000,000 events in batches of 1,000 (one ledger per
//! batch) into SQLite (a fresh file) and PostgreSQL (a fresh database on FLUXORA_TEST_PG_URL).
//!
//! `cargo bench --bench store_append` prints one line per store:
//! `store_append <backend> events_per_sec=<n>`. `FLUXORA_BENCH_EVENTS` changes the total.
//! Only the `append` calls are timed; building the batches is not.

use std::time::{Duration, Instant};

use fluxora::config::DatabaseUrl;
use fluxora::store::{self, AppendBatch, Cursor, Store};
use fluxora::testing::synth::{events, ledgers};
use fluxora::testing::TempPgDatabase;

const BATCH: u32 = 1_000;
const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

async fn run(store: &dyn Store, total: u64) -> Result<(u64, Duration), String> {
    let batches = total.div_ceil(u64::from(BATCH));
    let mut prev = ZERO.to_string();
    let mut spent = Duration::ZERO;
    let mut appended = 0u64;
    for i in 0..batches {
        let seq = u32::try_from(i + 1).map_err(|e| e.to_string())?;
        let ls = ledgers(seq, seq, 0, &prev);
        prev = ls[0].hash.clone();
        let batch = AppendBatch {
            cursor: Some(Cursor {
                ledger: seq,
                hash: prev.clone(),
            }),
            events: events(seq, BATCH, 10_000, 0),
            ledgers: ls,
            ..Default::default()
        };
        let t = Instant::now();
        let out = store.append(&batch).await.map_err(|e| e.to_string())?;
        spent += t.elapsed();
        appended += out.appended as u64;
    }
    Ok((appended, spent))
}

fn report(backend: &str, result: Result<(u64, Duration), String>) {
    match result {
        Ok((n, d)) => {
            let per_sec = (n as u128 * 1_000_000) / d.as_micros().max(1);
            println!("store_append {backend} events_per_sec={per_sec}");
            eprintln!("  ({n} events in {:.3} s)", d.as_secs_f64());
        }
        Err(e) => println!("store_append {backend} failed: {e}"),
    }
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("FLUXORA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);

    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            println!("store_append sqlite failed: no temp dir: {e}");
            return;
        }
    };
    let url = DatabaseUrl::Sqlite(format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ));
    let sqlite = match store::open(&url).await {
        Ok(s) => run(&*s, total).await,
        Err(e) => Err(e.to_string()),
    };
    report("sqlite", sqlite);

    match TempPgDatabase::create().await {
        Ok(Some(db)) => {
            let result = match store::open(&DatabaseUrl::Postgres(db.url.clone())).await {
                Ok(s) => {
                    let r = run(&*s, total).await;
                    drop(s);
                    r
                }
                Err(e) => Err(e.to_string()),
            };
            report("postgres", result);
            if let Err(e) = db.drop_db().await {
                eprintln!("  (could not drop the bench database: {e})");
            }
        }
        Ok(None) => println!("store_append postgres skipped: server not reachable"),
        Err(e) => println!("store_append postgres failed: {e}"),
    }
}
