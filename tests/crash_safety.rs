//! Crash safety through the real binaries: `fluxora sim` serves a fixed generated chain over
//! HTTP; `fluxora serve` ingests it over Stellar RPC and is killed with SIGKILL at random moments
//! (24 trials), restarted each time. The final store must equal an uninterrupted run's: same
//! events at the same positions, same ledgers, same cursor.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fluxora::config::DatabaseUrl;
use fluxora::store::{self, Store};
use rand::{Rng, SeedableRng};

const LEDGERS: u32 = 3_000;
const FIRST: u32 = 1_000;
const TRIALS: usize = 24;

struct Sim {
    child: Child,
    url: String,
    contract: String,
    passphrase: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim() -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxora"))
        .args([
            "sim",
            "--seed",
            "9",
            "--ledgers",
            &LEDGERS.to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut url, mut contract, mut passphrase) = (None, None, None);
    let mut seen = Vec::new();
    for line in out.lines().take(6) {
        let line = line.unwrap();
        seen.push(line.clone());
        if let Some(rest) = line.split("(contract ").nth(1) {
            contract = rest.split(',').next().map(str::to_string);
        }
        if let Some(rest) = line.trim().strip_prefix("Stellar RPC:") {
            url = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("passphrase:") {
            passphrase = Some(rest.trim().to_string());
            break;
        }
    }
    Sim {
        child,
        url: url.unwrap_or_else(|| panic!("sim did not print its RPC URL: {seen:?}")),
        contract: contract.expect("sim printed its contract"),
        passphrase: passphrase.expect("sim printed its passphrase"),
    }
}

fn serve(sim: &Sim, db: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fluxora"))
        .arg("serve")
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("SOURCE", "rpc")
        .env("STELLAR_RPC_URL", &sim.url)
        .env("CONTRACT_ID", &sim.contract)
        .env("NETWORK_PASSPHRASE", &sim.passphrase)
        .env("START_LEDGER", FIRST.to_string())
        .env("INGEST_BATCH_LEDGERS", "20")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_LEVEL", "warn")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn cursor_of(db: &Path) -> Option<u32> {
    if !db.exists() {
        return None;
    }
    let s = store::open(&DatabaseUrl::Sqlite(format!("sqlite://{}", db.display())))
        .await
        .ok()?;
    s.cursor().await.ok().flatten().map(|c| c.ledger)
}

/// Runs `serve` until the store's cursor reaches the chain's tip, then stops it.
async fn run_to_tip(sim: &Sim, db: &Path) -> Duration {
    let t = Instant::now();
    let mut child = serve(sim, db);
    let tip = FIRST + LEDGERS - 1;
    for _ in 0..1_200 {
        if cursor_of(db).await == Some(tip) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        cursor_of(db).await,
        Some(tip),
        "serve did not reach the tip in time"
    );
    t.elapsed()
}

async fn open(db: &Path) -> Box<dyn Store> {
    store::open(&DatabaseUrl::Sqlite(format!("sqlite://{}", db.display())))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_leaves_the_same_store_as_an_uninterrupted_run() {
    let sim = start_sim();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.db");
    let full = run_to_tip(&sim, &reference).await;

    let crashed = dir.path().join("crashed.db");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let window = full.as_millis().max(200) as u64;
    let mut progress = Vec::new();
    for _ in 0..TRIALS {
        let mut child = serve(&sim, &crashed);
        // Short random runs, so that the kills land all along the ingestion.
        let after = rng.gen_range(5..window * 2 / TRIALS as u64 + 10);
        tokio::time::sleep(Duration::from_millis(after)).await;
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        progress.push(cursor_of(&crashed).await);
    }
    run_to_tip(&sim, &crashed).await;
    eprintln!("cursor after each kill: {progress:?}");
    // The kills must have landed at several different points of the ingestion.
    let mut distinct = progress.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() >= 3,
        "kills did not interrupt ingestion at varied points: {progress:?}"
    );

    let (a, b) = (open(&reference).await, open(&crashed).await);
    let ea = a.events_after(0, u32::MAX).await.unwrap();
    let eb = b.events_after(0, u32::MAX).await.unwrap();
    assert!(!ea.is_empty());
    assert_eq!(ea.len(), eb.len());
    assert_eq!(ea, eb, "events and positions must be identical");
    assert_eq!(
        a.ledgers(0, u32::MAX).await.unwrap(),
        b.ledgers(0, u32::MAX).await.unwrap()
    );
    assert_eq!(a.cursor().await.unwrap(), b.cursor().await.unwrap());
}
