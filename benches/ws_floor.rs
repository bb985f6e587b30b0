//! The machine's floor under `benches/ws.rs`: the same fan-out without WebSocket, hub, store or
//! ingestion. A server process accepts 10,000 loopback TCP connections and, 4 times a second,
//! sends one buffer of `FLUXORA_FLOOR_BYTES` (default 5,000: about what one commit of the ws
//! bench sends each subscriber, three ~1.6 KB frames) to every connection; a child process (this
//! binary re-executed, one thread, as the ws bench's swarm) reads them and records the latency
//! from the send time stamped in the buffer.
//!
//! Two ways to write: by default each connection has its own task and bounded queue (as the
//! hub's writer tasks used to write every frame); `FLUXORA_FLOOR_DIRECT=1` writes as the hub's
//! fan-out does now, from one plain thread per CPU, pinned to it, taking sockets from a shared
//! cursor (the kernel's share alone).
//!
//! Prints `ws_floor subscribers=<n> bytes=<n> mode=<tasks|direct> p50_ms=<n> p99_ms=<n>`. Read
//! the ws bench's p99 against the direct mode's: what lies between is the hub's own cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

#[path = "common/stamp.rs"]
mod stamp;

use stamp::now_us;

const CHILD: &str = "FLUXORA_FLOOR_CHILD";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env_usize("FLUXORA_FLOOR_SUBSCRIBERS", 10_000);
    let size = env_usize("FLUXORA_FLOOR_BYTES", 5_000).max(8);
    if let Ok(addr) = std::env::var(CHILD) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(receivers(addr, n, size));
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(sender(n, size));
    }
}

async fn receivers(addr: String, n: usize, size: usize) {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let s = stamp::Stamped::new(s).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(size * 8);
            // (kernel, application) latencies.
            let mut lat = Vec::new();
            loop {
                buf.reserve(size * 2);
                let (r, kernel_us) = s.read(&mut buf).await.unwrap_or((0, None));
                if r == 0 {
                    break;
                }
                let app = now_us();
                let kernel = kernel_us.unwrap_or(app);
                let mut at = 0;
                while buf.len() - at >= size {
                    let sent = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
                    lat.push((kernel.saturating_sub(sent), app.saturating_sub(sent)));
                    at += size;
                }
                buf.drain(..at);
            }
            lat
        }));
    }
    let (mut lat, mut app) = (Vec::new(), Vec::new());
    for t in tasks {
        for (k, a) in t.await.unwrap() {
            lat.push(k);
            app.push(a);
        }
    }
    lat.sort_unstable();
    app.sort_unstable();
    let pct = |v: &[u64], q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    println!(
        "{} {:.1} {:.1} {:.1} {:.1}",
        lat.len(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&app, 0.50),
        pct(&app, 0.99)
    );
}

async fn sender(n: usize, size: usize) {
    let direct = std::env::var("FLUXORA_FLOOR_DIRECT").is_ok();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, addr.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stamped = || {
        let mut v = vec![b'x'; size];
        v[0..8].copy_from_slice(&now_us().to_le_bytes());
        Arc::<[u8]>::from(v)
    };
    let window = Duration::from_secs(10);
    if direct {
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            socks.push(s.into_std().unwrap());
        }
        let socks = Arc::new(socks);
        // As the hub's fan-out threads (`src/hub/fanout.rs`): one per CPU, pinned to it, each
        // taking the next 32 sockets from a shared cursor.
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        while start.elapsed() < window {
            let b = stamped();
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let threads: Vec<_> = (0..cpus)
                .map(|t| {
                    let (socks, b, next) = (socks.clone(), b.clone(), next.clone());
                    let core = cores.get(t).copied();
                    std::thread::spawn(move || {
                        use std::io::Write;
                        if let Some(c) = core {
                            core_affinity::set_for_current(c);
                        }
                        loop {
                            let from = next.fetch_add(32, std::sync::atomic::Ordering::Relaxed);
                            if from >= socks.len() {
                                break;
                            }
                            for mut s in &socks[from..(from + 32).min(socks.len())] {
                                let _ = s.write(&b);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    } else {
        let mut queues = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<[u8]>>(64);
            queues.push(tx);
            tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if s.write_all(&b).await.is_err() {
                        break;
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        while start.elapsed() < window {
            let b = stamped();
            for q in &queues {
                let _ = q.try_send(b.clone());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Dropping the sockets (or queues, whose tasks then drop theirs) ends the receivers.
    tokio::task::yield_now().await;
    let out = child.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 5 {
        eprintln!("ws_floor: the receivers printed {text:?}");
        std::process::exit(1);
    }
    println!(
        "ws_floor subscribers={n} bytes={size} mode={} p50_ms={} p99_ms={} app_p50_ms={} app_p99_ms={} (messages={})",
        if direct { "direct" } else { "tasks" },
        f[1],
        f[2],
        f[3],
        f[4],
        f[0]
    );
}
