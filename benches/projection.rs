//! Projection throughput.
//!
//! A generated chain (every lifecycle event, with the `Stream` storage entries real transactions
//! carry) of about 1,000,000 contract events (`FLUXORA_BENCH_EVENTS`). Then:
//!
//! * `fold events_per_sec=<n>`: the chain's ledger bundles (decoded from its XDR 100 ledgers at a
//!   time, not timed) folded in memory by the [`Projector`] live ingestion uses (events,
//!   storage-entry comparison, and the per-ledger stream snapshots the store keeps for time
//!   travel); one core.
//! * `rebuild <store> events_per_sec=<n>`: the chain ingested into a fresh store (not timed), then
//!   `fluxora rebuild`'s computation from the stored events and entries (read, decode the raw XDR
//!   again, fold), timed.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxora::chain::LedgerSource;
use fluxora::config::DatabaseUrl;
use fluxora::ingest::{IngestConfig, Ingestor};
use fluxora::projection::rebuild::rebuild;
use fluxora::projection::Projector;
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::SimState;
use fluxora::sim::source::SimSource;
use fluxora::store::{self, Store};
use fluxora::testing::TempPgDatabase;

/// CPU time of the calling thread (Linux `schedstat`), when available.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn per_sec(n: u64, d: Duration) -> u64 {
    (u128::from(n) * 1_000_000 / d.as_micros().max(1)) as u64
}

async fn ingest(
    store: Arc<dyn Store>,
    state: Arc<SimState>,
    contract: [u8; 32],
    first: u32,
    tip: u32,
) -> Result<(), String> {
    let ing = Ingestor::new(
        store,
        Arc::new(SimSource::new(state, contract)),
        IngestConfig {
            start_ledger: Some(first),
            batch_ledgers: 100,
            network_passphrase: fluxora::sim::DEFAULT_PASSPHRASE.into(),
            stop_at: Some(tip),
            ..Default::default()
        },
    );
    let (_tx, rx) = tokio::sync::watch::channel(false);
    ing.run(rx).await.map_err(|e| e.to_string())
}

async fn bench_rebuild(
    backend: &str,
    url: DatabaseUrl,
    state: Arc<SimState>,
    contract: [u8; 32],
    first: u32,
    tip: u32,
) -> Result<(u64, Duration), String> {
    let store: Arc<dyn Store> = Arc::from(store::open(&url).await.map_err(|e| e.to_string())?);
    let t = Instant::now();
    ingest(store.clone(), state, contract, first, tip).await?;
    eprintln!(
        "  ({backend}: ingested in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let r = rebuild(&*store, &mut |_, _| {})
        .await
        .map_err(|e| e.to_string())?;
    Ok((r.events, t.elapsed()))
}

#[tokio::main]
async fn main() {
    // Profiling aid: FLUXORA_BENCH_SQLITE=<file> keeps the SQLite store there, and when the
    // file already exists, only the rebuild from it is measured.
    let keep = std::env::var("FLUXORA_BENCH_SQLITE").ok();
    if let Some(path) = keep.as_deref().filter(|p| std::path::Path::new(p).exists()) {
        let url = DatabaseUrl::Sqlite(format!("sqlite://{path}"));
        let r = async {
            let store = store::open(&url).await.map_err(|e| e.to_string())?;
            if std::env::var("FLUXORA_BENCH_READ_ONLY").is_ok() {
                // Profiling aid: the reads alone.
                let tip = store
                    .tip()
                    .await
                    .map_err(|e| e.to_string())?
                    .map_or(0, |t| t.sequence);
                let mut from = store
                    .first_ledger()
                    .await
                    .map_err(|e| e.to_string())?
                    .unwrap_or(0);
                let t = Instant::now();
                let mut n = 0u64;
                while from <= tip {
                    let to = (from + 90).min(tip);
                    let what = std::env::var("FLUXORA_BENCH_READ_ONLY").unwrap_or_default();
                    if what != "entries" {
                        n += store
                            .fold_inputs(from, to)
                            .await
                            .map_err(|e| e.to_string())?
                            .len() as u64;
                    }
                    if what != "events" {
                        store
                            .stream_entries(from, to)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    from = to + 1;
                }
                eprintln!("  read {n} events in {:.3} s", t.elapsed().as_secs_f64());
            }
            let t = Instant::now();
            let r = rebuild(&*store, &mut |_, _| {})
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((r.events, t.elapsed()))
        }
        .await;
        match r {
            Ok((n, d)) => println!("rebuild sqlite events_per_sec={}", per_sec(n, d)),
            Err(e) => println!("rebuild sqlite failed: {e}"),
        }
        return;
    }
    let want: u64 = std::env::var("FLUXORA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut g = Generator::new(GenConfig {
        seed: 42,
        txs_per_ledger: 150,
        target_streams: 20_000,
        ..GenConfig::default()
    });
    let first = g.cfg.first_seq;
    let mut chain = g.empty_chain();
    let t = Instant::now();
    let mut events = 0u64;
    while events < want {
        match g.next_ledger(&mut chain) {
            Ok(()) => {}
            Err(e) => {
                println!("fold failed: generator: {e}");
                return;
            }
        }
        events += chain
            .ledgers()
            .last()
            .map_or(0, |l| l.txs.iter().map(|t| t.spec.events as u64).sum());
    }
    let tip = chain.tip().map_or(first, |l| l.seq);
    let state = SimState::new(chain);
    eprintln!(
        "  (generated {} ledgers in {:.1} s)",
        tip - first + 1,
        t.elapsed().as_secs_f64()
    );
    // Fold in memory, one core. The bundles are decoded from the chain's XDR a batch of ledgers
    // at a time (not timed, and never all held at once); each batch is folded (timed).
    let src = SimSource::new(state.clone(), g.contract);
    let mut p = Projector::default();
    let mut n = 0u64;
    let mut folding = Duration::ZERO;
    let mut folding_cpu = Duration::ZERO;
    let mut from = first;
    while from <= tip {
        let bundles = match src.fetch_ledgers(from, 100).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => break,
            Err(e) => {
                println!("fold failed: source: {e}");
                return;
            }
        };
        from = bundles.last().map_or(tip + 1, |l| l.sequence + 1);
        n += bundles
            .iter()
            .map(|b| b.txs.iter().map(|t| t.events.len() as u64).sum::<u64>())
            .sum::<u64>();
        let t = Instant::now();
        let c = thread_cpu();
        for b in &bundles {
            if let Err(e) = p.fold_bundle(b) {
                println!("fold failed: {e}");
                return;
            }
            // What the ingestor does with each batch's rows (they go to the store).
            match p.take_delta() {
                Ok(d) => drop(d),
                Err(e) => {
                    println!("fold failed: {e}");
                    return;
                }
            }
        }
        folding += t.elapsed();
        if let (Some(a), Some(b)) = (c, thread_cpu()) {
            folding_cpu += b.saturating_sub(a);
        }
        drop(bundles);
    }
    let d = folding;
    println!("fold events_per_sec={}", per_sec(n, d));
    if !folding_cpu.is_zero() {
        // Informational, for a loaded machine: the same per second of the thread's CPU time.
        eprintln!("  (fold cpu_events_per_sec={})", per_sec(n, folding_cpu));
    }
    eprintln!(
        "  ({n} events, {} streams, {} skipped, {} mismatches, in {:.3} s)",
        p.projection().streams.len(),
        p.skipped_total(),
        p.projection().mismatches,
        d.as_secs_f64()
    );
    drop(p);

    // Rebuild from each store.
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            println!("rebuild sqlite failed: {e}");
            return;
        }
    };
    let url = DatabaseUrl::Sqlite(match &keep {
        Some(p) => format!("sqlite://{p}"),
        None => format!("sqlite://{}", dir.path().join("r.db").display()),
    });
    match bench_rebuild("sqlite", url, state.clone(), g.contract, first, tip).await {
        Ok((n, d)) => println!("rebuild sqlite events_per_sec={}", per_sec(n, d)),
        Err(e) => println!("rebuild sqlite failed: {e}"),
    }
    match TempPgDatabase::create().await {
        Ok(Some(db)) => {
            let url = DatabaseUrl::Postgres(db.url.clone());
            match bench_rebuild("postgres", url, state.clone(), g.contract, first, tip).await {
                Ok((n, d)) => println!("rebuild postgres events_per_sec={}", per_sec(n, d)),
                Err(e) => println!("rebuild postgres failed: {e}"),
            }
            let _ = db.drop_db().await;
        }
        Ok(None) => println!("rebuild postgres skipped: server not reachable"),
        Err(e) => println!("rebuild postgres failed: {e}"),
    }
}
