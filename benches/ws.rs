//! WebSocket fan-out: 1,000 and 10,000 subscribers on loopback, events at a fixed rate.
//!
//! The server process runs what `fluxora serve` runs: a simulated network's ledgers are closed at
//! a fixed cadence (4 per second, `FLUXORA_BENCH_LEDGERS_PER_SEC`; Stellar closes one about every
//! 5 s): the event rate is fixed, and the cadence sets how many frames each commit bursts out
//! (about 3 events × 10,000 subscribers at 4 a second; at 2 a second, twice that, and the last
//! subscriber of a burst waits about twice as long) and ingested by the real [`Ingestor`] into a fresh SQLite
//! store; the hub fans every committed event out to every subscriber (each holds an all-streams
//! subscription, the worst case of fan-out). The subscribers are minimal RFC 6455 clients
//! ([`LeanClient`]) on one thread in a child process (this same binary re-executed), so that each
//! process stays within
//! its open-file limit and `rss_mb` is the server's alone. The ingest rate is chosen so that
//! about 120,000 messages a second are due (`FLUXORA_BENCH_MSGS` to change).
//!
//! Latency is from the batch commit (the ingestor's commit notice, wall clock) to the client's
//! receipt of the frame (wall clock, same machine), over every message of the measured window:
//! `p*_ms` when the kernel queued the bytes on the subscriber's socket (`SO_TIMESTAMPNS`),
//! `app_p*_ms` when the swarm's one thread read them. Prints, per subscriber count:
//! `ws subscribers=<n> msgs_per_sec=<n> p50_ms=<n> p99_ms=<n> rss_mb=<n> app_p50_ms=<n> app_p99_ms=<n>`.
//!
//! `FLUXORA_BENCH_SUBSCRIBERS` (e.g. `1000,10000`), `FLUXORA_BENCH_SECS` (measured seconds,
//! default 10, after 2 s of warm-up); `FLUXORA_BENCH_DEBUG` prints the latency spread of every
//! commit. On stderr: the cores the server, the subscribers and the whole machine used.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::watch;

use fluxora::api::{self, ApiContext};
use fluxora::config::{DatabaseUrl, HttpSettings};
use fluxora::hub::{Hub, HubConfig, Wake};
use fluxora::ingest::{IndexerStatus, IngestConfig, Ingestor, Notice};
use fluxora::projection::view::ViewOptions;
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::SimState;
use fluxora::sim::source::SimSource;
use fluxora::store::{self, Store};

#[path = "common/stamp.rs"]
mod stamp;

use stamp::now_us;

const CHILD: &str = "FLUXORA_WS_BENCH_CHILD";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the `(comm)`, which may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

/// (busy, total) jiffies of the whole machine, from `/proc/stat`.
fn machine_jiffies() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn main() {
    if std::env::var(CHILD).is_ok() {
        if let Ok(n) = std::env::var("FLUXORA_BENCH_NICE") {
            // SAFETY: plain syscall on this process.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n.parse().unwrap_or(0)) };
        }
        // The swarm on one thread: fewer context switches, more of the 2 cores left to the
        // server it measures (0.18 instead of 0.22 cores at 10,000 subscribers).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(child());
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(parent());
    }
}

/// The subscriber swarm: connects, subscribes, reports `ready`, then records the receipt time of
/// every event frame until stdin says `end`; then reads the commit times the server wrote on
/// stdin and prints the latencies of the measured window.
async fn child() {
    let url = std::env::var("FLUXORA_WS_URL").unwrap();
    let n = env_u64("FLUXORA_WS_N", 1000) as usize;
    // One oneshot per subscriber: polling it is an atomic load, where a shared `watch` took a
    // mutex on every wake-up of every subscriber (the swarm shares the 2 cores with the server).
    let mut stops = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    let permits = Arc::new(tokio::sync::Semaphore::new(128));
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for _ in 0..n {
        let addr = addr.clone();
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop_tx);
        let ready = ready_tx.clone();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await.unwrap();
            let mut c = loop {
                match LeanClient::connect(&addr).await {
                    Ok(c) => break c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            c.send_text(br#"{"type":"subscribe","all":true}"#)
                .await
                .unwrap();
            drop(permit);
            let mut got: Vec<(i64, u64, u64)> = Vec::with_capacity(4096);
            let mut acked = false;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    r = c.read_frames(|op, payload, kernel_us, app_us| {
                        if op != 1 {
                            return;
                        }
                        if payload.starts_with(b"{\"type\":\"stream_update\"") {
                            if let Some(p) = position(payload) {
                                got.push((p, kernel_us, app_us));
                            }
                        } else if !acked && memfind(payload, b"\"subscribed\"") {
                            acked = true;
                            let _ = ready.try_send(());
                        }
                    }) => if r.is_err() { break },
                }
            }
            got
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        ready_rx.recv().await.unwrap();
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    // Commit times: `c <first> <last> <unix_us>`, then `w <from_us> <to_us>` (the measured window),
    // then `end`.
    let mut commits: Vec<(i64, i64, u64)> = Vec::new();
    let mut window = (0u64, u64::MAX);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.first().copied() {
            Some("c") => commits.push((
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )),
            Some("w") => window = (f[1].parse().unwrap(), f[2].parse().unwrap()),
            Some("end") => break,
            _ => {}
        }
    }
    // Let the last frames land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stops);
    let mut commit_of: HashMap<i64, u64> = HashMap::new();
    for (a, b, t) in &commits {
        for p in *a..=*b {
            commit_of.insert(p, *t);
        }
    }
    let mut lat: Vec<u64> = Vec::new();
    let mut app_lat: Vec<u64> = Vec::new();
    let mut debug_samples: Vec<(u64, u64)> = Vec::new();
    let mut total = 0u64;
    for t in tasks {
        for (p, at, app_at) in t.await.unwrap() {
            total += 1;
            if let Some(c) = commit_of.get(&p) {
                if *c >= window.0 && *c < window.1 {
                    lat.push(at.saturating_sub(*c));
                    app_lat.push(app_at.saturating_sub(*c));
                    debug_samples.push((*c, at.saturating_sub(*c)));
                }
            }
        }
    }
    if std::env::var("FLUXORA_BENCH_DEBUG").is_ok() {
        // Per commit: the spread of its messages' latencies.
        let mut per: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        for t in &debug_samples {
            per.entry(t.0).or_default().push(t.1);
        }
        for (c, mut v) in per {
            v.sort_unstable();
            eprintln!(
                "commit at +{}ms: n={} min={}ms p50={}ms max={}ms",
                (c - window.0) / 1000,
                v.len(),
                v[0] / 1000,
                v[v.len() / 2] / 1000,
                v[v.len() - 1] / 1000
            );
        }
    }
    lat.sort_unstable();
    app_lat.sort_unstable();
    let pct_of = |lat: &[u64], q: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0
    };
    let pct = |q: f64| pct_of(&lat, q);
    let secs = (window.1 - window.0) as f64 / 1e6;
    println!(
        "result msgs={} msgs_per_sec={} p50_ms={:.1} p99_ms={:.1} app_p50_ms={:.1} app_p99_ms={:.1} received={}",
        lat.len(),
        (lat.len() as f64 / secs) as u64,
        pct(0.50),
        pct(0.99),
        pct_of(&app_lat, 0.50),
        pct_of(&app_lat, 0.99),
        total
    );
}

fn memfind(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

fn position(t: &[u8]) -> Option<i64> {
    let key = b"\"position\":";
    let i = t.windows(key.len()).position(|w| w == key)? + key.len();
    let mut v: i64 = 0;
    let mut any = false;
    for &b in &t[i..] {
        if !b.is_ascii_digit() {
            break;
        }
        v = v * 10 + i64::from(b - b'0');
        any = true;
    }
    any.then_some(v)
}

/// A minimal WebSocket client for the swarm (ten thousand `tokio-tungstenite` clients cost more
/// CPU than the server they measure): the RFC 6455 handshake, masked text and pong frames out,
/// unfragmented frames in, parsed in place from one read buffer.
struct LeanClient {
    sock: stamp::Stamped,
    buf: Vec<u8>,
    start: usize,
}

impl LeanClient {
    async fn connect(addr: &str) -> std::io::Result<LeanClient> {
        use tokio::io::AsyncReadExt;
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let req = format!(
            "GET /ws/streams HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 0];
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed during the handshake"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&buf[..end]).to_string(),
            ));
        }
        buf.drain(..end);
        Ok(LeanClient {
            sock: stamp::Stamped::new(tcp)?,
            buf,
            start: 0,
        })
    }

    async fn send_frame(&mut self, op: u8, payload: &[u8]) -> std::io::Result<()> {
        assert!(payload.len() < 126);
        let mask = [0x11u8, 0x22, 0x33, 0x44];
        let mut f = vec![0x80 | op, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.sock.write_all(&f).await
    }

    async fn send_text(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.send_frame(1, payload).await
    }

    /// Reads once and hands every complete frame to `f` with two receipt times: the kernel's
    /// (when the bytes reached this socket, `SO_TIMESTAMPNS`) and the swarm's (after its read).
    async fn read_frames(&mut self, mut f: impl FnMut(u8, &[u8], u64, u64)) -> std::io::Result<()> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(16 * 1024);
        let (n, kernel_us) = self.sock.read(&mut self.buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        let app_us = now_us();
        let kernel_us = kernel_us.unwrap_or(app_us);
        let mut pings = Vec::new();
        loop {
            let b = &self.buf[self.start..];
            if b.len() < 2 {
                break;
            }
            let op = b[0] & 0x0f;
            let (len, hdr) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                l => (usize::from(l), 2),
            };
            if b.len() < hdr + len {
                break;
            }
            let payload = &b[hdr..hdr + len];
            match op {
                8 => return Err(std::io::Error::other("close")),
                9 => pings.push(payload.to_vec()),
                _ => f(op, payload, kernel_us, app_us),
            }
            self.start += hdr + len;
        }
        for p in pings {
            self.send_frame(10, &p).await?;
        }
        Ok(())
    }
}

async fn parent() {
    if std::env::var("FLUXORA_BENCH_DEBUG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("fluxora::hub=trace")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let counts: Vec<u64> = std::env::var("FLUXORA_BENCH_SUBSCRIBERS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let secs = env_u64("FLUXORA_BENCH_SECS", 10);
    let target_msgs = env_u64("FLUXORA_BENCH_MSGS", 120_000);
    for n in counts {
        match run(n, secs, target_msgs).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("ws bench with {n} subscribers failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

async fn run(n: u64, secs: u64, target_msgs: u64) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = DatabaseUrl::Sqlite(format!("sqlite://{}/ws.db", dir.path().display()));
    let store: Arc<dyn Store> = Arc::from(store::open(&url).await.map_err(|e| e.to_string())?);
    // `rate` ledgers a second carrying about target/n events a second in all.
    let rate = env_u64("FLUXORA_BENCH_LEDGERS_PER_SEC", 4).max(1);
    let per_ledger = (target_msgs as f64 / n as f64 / rate as f64).max(0.5);
    let txs = ((per_ledger / 1.1).round() as u32).max(1);
    let mut gen = Generator::new(GenConfig {
        seed: 5,
        txs_per_ledger: txs,
        target_streams: 500,
        ..Default::default()
    });
    let state = SimState::new(gen.empty_chain());
    {
        let mut chain = state.chain.write().await;
        for _ in 0..20 {
            gen.next_ledger(&mut chain).map_err(|e| e.to_string())?;
        }
    }
    let ingestor = Arc::new(Ingestor::new(
        store.clone(),
        Arc::new(SimSource::new(state.clone(), gen.contract)),
        IngestConfig {
            start_ledger: Some(gen.cfg.first_seq),
            network_passphrase: gen.cfg.passphrase.clone(),
            ..Default::default()
        },
    ));
    ingestor.sync().await.map_err(|e| e.to_string())?;
    let (stop_tx, stop) = watch::channel(false);
    let conns = Arc::new(AtomicUsize::new(0));
    let view = ViewOptions {
        decimals: 7,
        contract_id: gen.contract_strkey(),
    };
    let hub = Hub::start(
        store.clone(),
        view.clone(),
        HubConfig {
            max_connections: 0,
            max_connections_per_ip: 0,
            ..HubConfig::default()
        },
        vec![Wake::Notices(ingestor.notices())],
        conns.clone(),
        stop.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let (_s, status) = watch::channel(IndexerStatus::new());
    let ctx = ApiContext {
        status,
        http: HttpSettings {
            rate_limit_per_minute: 0,
            ..HttpSettings::default()
        },
        ws_connections: conns,
        shutdown: stop.clone(),
        hub: Some(hub.clone()),
        ..ApiContext::new(store.clone(), view)
    };
    let server = api::serve(
        "127.0.0.1:0".parse().unwrap(),
        api::router(ctx),
        stop.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .env(CHILD, "1")
        .env("FLUXORA_WS_URL", format!("ws://{}/ws/streams", server.addr))
        .env("FLUXORA_WS_N", n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdin = child.stdin.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let t = std::time::Instant::now();
    match tokio::time::timeout(Duration::from_secs(300), out.next_line()).await {
        Ok(Ok(Some(l))) if l == "ready" => {}
        other => return Err(format!("the subscribers did not get ready: {other:?}")),
    }
    eprintln!(
        "  ({n} subscribers connected and acknowledged in {:.1} s; {} per ledger)",
        t.elapsed().as_secs_f64(),
        txs
    );
    // Commit times, as the ingestor announces its commits.
    let (ctx_tx, mut ctx_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut notices = ingestor.notices();
    let recorder = tokio::spawn(async move {
        while let Ok(n) = notices.recv().await {
            if let Notice::Committed {
                first_position: Some(a),
                last_position: Some(b),
                ..
            } = n
            {
                let _ = ctx_tx.send(format!("c {a} {b} {}\n", now_us()));
            }
        }
    });
    let forward = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(l) = ctx_rx.recv().await {
            if stdin.write_all(l.as_bytes()).await.is_err() {
                break;
            }
        }
        stdin
    });
    // Ledgers at the fixed cadence: 2 s of warm-up, then the measured window.
    let warmup = Duration::from_secs(2);
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window_from = 0;
    let mut rss_peak = 0;
    let child_pid = child.id().map(|p| p.to_string()).unwrap_or_default();
    let mut cpu0 = (0.0, 0.0, (0.0, 0.0));
    let debug = std::env::var("FLUXORA_BENCH_DEBUG").is_ok();
    loop {
        tick.tick().await;
        let el = start.elapsed();
        if el >= warmup && window_from == 0 {
            window_from = now_us();
            cpu0 = (cpu_secs("self"), cpu_secs(&child_pid), machine_jiffies());
        }
        if el >= warmup + Duration::from_secs(secs) {
            break;
        }
        let t_gen = std::time::Instant::now();
        {
            let mut chain = state.chain.write().await;
            gen.next_ledger(&mut chain).map_err(|e| e.to_string())?;
        }
        let t_sync = std::time::Instant::now();
        ingestor.sync().await.map_err(|e| e.to_string())?;
        if debug && window_from > 0 {
            eprintln!(
                "tick at +{}ms: generate {}us, ingest {}us",
                (now_us() - window_from) / 1000,
                (t_sync - t_gen).as_micros(),
                t_sync.elapsed().as_micros()
            );
        }
        rss_peak = rss_peak.max(rss_mb());
    }
    let window_to = now_us();
    let wsecs = (window_to - window_from) as f64 / 1e6;
    let (busy, total) = machine_jiffies();
    eprintln!(
        "  (cores used in the window: server {:.2}, subscribers {:.2}, whole machine {:.2} of {})",
        (cpu_secs("self") - cpu0.0) / wsecs,
        (cpu_secs(&child_pid) - cpu0.1) / wsecs,
        (busy - cpu0.2 .0) / (total - cpu0.2 .1).max(1.0)
            * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    recorder.abort();
    let mut stdin = {
        // The recorder is gone: the forwarder drains and returns stdin.
        forward.await.map_err(|e| e.to_string())?
    };
    stdin
        .write_all(format!("w {window_from} {window_to}\nend\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stdin.flush().await.map_err(|e| e.to_string())?;
    let result = match tokio::time::timeout(Duration::from_secs(120), out.next_line()).await {
        Ok(Ok(Some(l))) => l,
        other => return Err(format!("no result from the subscribers: {other:?}")),
    };
    let _ = child.wait().await;
    let _ = stop_tx.send(true);
    let _ = server.task.await;
    let field = |k: &str| -> String {
        result
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or("0")
            .to_string()
    };
    Ok(format!(
        "ws subscribers={n} msgs_per_sec={} p50_ms={} p99_ms={} rss_mb={} app_p50_ms={} app_p99_ms={}",
        field("msgs_per_sec"),
        field("p50_ms"),
        field("p99_ms"),
        rss_peak.max(rss_mb()),
        field("app_p50_ms"),
        field("app_p99_ms")
    ))
}
