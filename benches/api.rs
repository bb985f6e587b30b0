//! REST API throughput and latency.
//!
//! A store holding 100,000 streams (`FLUXORA_BENCH_STREAMS`): a generated chain is ingested for
//! realistic stream states, which are then replicated under new ids (other senders and
//! recipients) through the store's own append path. The API server runs on loopback; a tokio
//! load generator in the same process (a minimal HTTP/1.1 keep-alive client) keeps 64 connections (`FLUXORA_BENCH_CONNS`) busy for
//! 10 s (`FLUXORA_BENCH_SECS`) per endpoint. Prints, per store and endpoint,
//! `api <endpoint> rps=<n> p50_ms=<n> p99_ms=<n>` (`<store>` in the trailing note).
//!
//! The stream cache is wired as `fluxora serve` wires it, its generation moving every 5 s (a
//! ledger close).
//!
//! Endpoints: `get_stream` (`GET /api/streams/{random id}`) and `list_filtered`
//! (`GET /api/streams?status=active&sender=<a sender>&limit=20`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxora::api::{self, ApiContext};
use fluxora::config::DatabaseUrl;
use fluxora::ingest::{IngestConfig, Ingestor};
use fluxora::projection::view::ViewOptions;
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::SimState;
use fluxora::sim::source::SimSource;
use fluxora::store::{self, AppendBatch, Cursor, LedgerRecord, Store, StreamQuery, StreamVersion};
use fluxora::testing::TempPgDatabase;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills `store` with `want` streams; returns (ids, senders with active streams).
async fn fill(store: Arc<dyn Store>, want: u64) -> Result<(Vec<u64>, Vec<String>), String> {
    let mut g = Generator::new(GenConfig {
        seed: 5,
        txs_per_ledger: 40,
        target_streams: 1_000,
        ..GenConfig::default()
    });
    let first = g.cfg.first_seq;
    let state = SimState::new(g.empty_chain());
    {
        let mut c = state.chain.write().await;
        for _ in 0..200 {
            g.next_ledger(&mut c).map_err(|e| e.to_string())?;
        }
    }
    let tip = state.chain.read().await.tip().map_or(first, |t| t.seq);
    let ing = Ingestor::new(
        store.clone(),
        Arc::new(SimSource::new(state, g.contract)),
        IngestConfig {
            start_ledger: Some(first),
            batch_ledgers: 100,
            network_passphrase: fluxora::sim::DEFAULT_PASSPHRASE.into(),
            stop_at: Some(tip),
            ..Default::default()
        },
    );
    let (_tx, rx) = tokio::sync::watch::channel(false);
    ing.run(rx).await.map_err(|e| e.to_string())?;
    let base = store
        .list_streams(&StreamQuery {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    if base.is_empty() {
        return Err("the generator made no stream".into());
    }
    let mut next_id = base.iter().map(|s| s.stream_id).max().unwrap_or(0) + 1;
    let mut have = base.len() as u64;
    let mut tipl = store
        .tip()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("empty store")?;
    let mut copy = 0u64;
    while have < want {
        copy += 1;
        let mut versions = Vec::new();
        let seq = tipl.sequence + 1;
        for s in &base {
            if have >= want || versions.len() >= 10_000 {
                break;
            }
            let mut n = s.clone();
            n.stream_id = next_id;
            next_id += 1;
            have += 1;
            // Other parties for every copy, so sender/recipient filters stay selective.
            n.sender = rotate(&s.sender, copy);
            n.recipient = rotate(&s.recipient, copy);
            n.updated_ledger = seq;
            versions.push(StreamVersion::of(&n, seq).map_err(|e| e.to_string())?);
        }
        let hash = format!("{:064x}", u64::from(seq) * 7919);
        let l = LedgerRecord {
            sequence: seq,
            hash: hash.clone(),
            prev_hash: tipl.hash.clone(),
            close_time: tipl.close_time + 5,
        };
        store
            .append(&AppendBatch {
                ledgers: vec![l.clone()],
                events: Vec::new(),
                cursor: Some(Cursor { ledger: seq, hash }),
                projection: store::ProjectionDelta {
                    versions,
                    ..Default::default()
                },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        tipl = l;
    }
    let all = store
        .list_streams(&StreamQuery {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let senders = all
        .iter()
        .filter(|s| fluxora::store::status_label(s) == "active")
        .map(|s| s.sender.clone())
        .collect();
    Ok((all.iter().map(|s| s.stream_id).collect(), senders))
}

/// Another valid account strkey derived from `addr` and `k`.
fn rotate(addr: &str, k: u64) -> String {
    let mut key = match stellar_strkey::Strkey::from_string(addr) {
        Ok(stellar_strkey::Strkey::PublicKeyEd25519(p)) => p.0,
        Ok(stellar_strkey::Strkey::Contract(c)) => c.0,
        _ => [0u8; 32],
    };
    for (i, b) in k.to_le_bytes().iter().enumerate() {
        key[24 + i] ^= b;
    }
    stellar_strkey::ed25519::PublicKey(key)
        .to_string()
        .as_str()
        .to_string()
}

/// CPU time (user + system) of this process so far, from /proc (Linux); 0 elsewhere.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

struct Figures {
    rps: u64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// CPU time of the whole process (server and load generator) per request.
    cpu_us_per_req: u64,
}

/// A minimal HTTP/1.1 keep-alive client on one connection: the load generator must cost the
/// shared two cores as little as possible (a full client library costs about as much CPU per
/// request as the server).
struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Self> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufReader::with_capacity(64 * 1024, s),
            host: addr.to_string(),
        })
    }

    /// GET `path`; returns the status code after reading the whole body.
    async fn get(&mut self, path: &str) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(bad("connection closed in the headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().map_err(|_| bad("content-length"))?;
                }
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }
}

/// `conns` workers, each on its own keep-alive connection, for `secs` seconds.
async fn load(
    addr: &str,
    paths: Arc<Vec<String>>,
    conns: usize,
    secs: u64,
) -> Result<Figures, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let start = Instant::now();
    let cpu0 = cpu_time();
    for w in 0..conns {
        let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
        let addr = addr.to_string();
        let paths = paths.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut i = w * 7919;
            while !stop.load(Ordering::Relaxed) {
                let p = &paths[i % paths.len()];
                i += 1;
                let t = Instant::now();
                match conn.get(p).await {
                    Ok(200) => {}
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match Conn::open(&addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
                lat.push(t.elapsed().as_micros() as u32);
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| e.to_string())?;
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    all.sort_unstable();
    let pct = |q: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * q) as usize;
        f64::from(all[i]) / 1000.0
    };
    Ok(Figures {
        rps: (all.len() as f64 / elapsed.as_secs_f64()) as u64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
        cpu_us_per_req: (cpu.as_micros() / (all.len() as u128).max(1)) as u64,
    })
}

async fn run(backend: &str, url: DatabaseUrl) -> Result<(), String> {
    let want = env_u64("FLUXORA_BENCH_STREAMS", 100_000);
    let conns = env_u64("FLUXORA_BENCH_CONNS", 64) as usize;
    let secs = env_u64("FLUXORA_BENCH_SECS", 10);
    let store: Arc<dyn Store> = Arc::from(store::open(&url).await.map_err(|e| e.to_string())?);
    let t = Instant::now();
    let (ids, senders) = fill(store.clone(), want).await?;
    eprintln!(
        "  ({backend}: {} streams stored in {:.1} s)",
        ids.len(),
        t.elapsed().as_secs_f64()
    );
    let mut ctx = ApiContext::new(
        store,
        ViewOptions {
            decimals: 7,
            contract_id: String::new(),
        },
    );
    ctx.http.rate_limit_per_minute = 0;
    // As in `fluxora serve`: the stream cache is invalidated at every commit; a ledger closes
    // every 5 s on Stellar, so the generation moves every 5 s here.
    let (generation, generation_rx) = tokio::sync::watch::channel(0u64);
    ctx.streams = fluxora::api::cache::StreamCache::new(generation_rx);
    let ticker = tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(5));
        loop {
            t.tick().await;
            generation.send_modify(|g| *g += 1);
        }
    });
    let (stop, rx) = tokio::sync::watch::channel(false);
    ctx.shutdown = rx.clone();
    let server = api::serve(
        "127.0.0.1:0".parse().map_err(|_| "addr")?,
        api::router(ctx),
        rx,
    )
    .await
    .map_err(|e| e.to_string())?;
    let base = server.addr.to_string();
    // Spread over the id space (pseudo-random order).
    let mut by_id: Vec<String> = ids.iter().map(|i| format!("/api/streams/{i}")).collect();
    let n = by_id.len();
    for i in 0..n {
        let j = (i * 48_271 + 11) % n;
        by_id.swap(i, j);
    }
    let lists: Vec<String> = senders
        .iter()
        .take(5_000)
        .map(|s| format!("/api/streams?status=active&sender={s}&limit=20"))
        .collect();
    for (name, paths) in [("get_stream", by_id), ("list_filtered", lists)] {
        if paths.is_empty() {
            println!("api {name} skipped: no paths");
            continue;
        }
        // Warm-up.
        load(&base, Arc::new(paths.clone()), conns, 1).await?;
        let f = load(&base, Arc::new(paths), conns, secs).await?;
        println!(
            "api {name} rps={} p50_ms={:.2} p99_ms={:.2}   ({backend}, {conns} connections, {} errors, {} us CPU per request incl. the load generator)",
            f.rps, f.p50_ms, f.p99_ms, f.errors, f.cpu_us_per_req
        );
    }
    let _ = stop.send(true);
    let _ = server.task.await;
    ticker.abort();
    Ok(())
}

#[tokio::main]
async fn main() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            println!("api sqlite failed: {e}");
            return;
        }
    };
    let url = DatabaseUrl::Sqlite(format!("sqlite://{}", dir.path().join("api.db").display()));
    if let Err(e) = run("sqlite", url).await {
        println!("api sqlite failed: {e}");
    }
    if std::env::var("FLUXORA_BENCH_SQLITE_ONLY").is_ok() {
        return;
    }
    match TempPgDatabase::create().await {
        Ok(Some(db)) => {
            if let Err(e) = run("postgres", DatabaseUrl::Postgres(db.url.clone())).await {
                println!("api postgres failed: {e}");
            }
            let _ = db.drop_db().await;
        }
        Ok(None) => println!("api postgres skipped: server not reachable"),
        Err(e) => println!("api postgres failed: {e}"),
    }
}
