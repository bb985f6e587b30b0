//! Every fault the simulator can inject, met by the real ingestor through the real Horizon and
//! Stellar RPC clients over HTTP: it either retries until the store is exactly what a fault-free
//! ingestion gives (no ledger skipped or duplicated), or halts with a reason that names the cause.

use std::sync::Arc;
use std::time::Duration;

use fluxora::chain::horizon::HorizonSource;
use fluxora::chain::http::HttpPolicy;
use fluxora::chain::rpc::RpcSource;
use fluxora::chain::{ContractFilter, LedgerSource};
use fluxora::config::DatabaseUrl;
use fluxora::ingest::{IngestConfig, IngestError, Ingestor};
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::{serve, Fault, SimServer, SimState};
use fluxora::sim::source::SimSource;
use fluxora::sim::SimChain;
use fluxora::store::{self, Store, StoredEvent};

const LEDGERS: u32 = 120;

struct Net {
    server: SimServer,
    contract: [u8; 32],
    first: u32,
    tip: u32,
    passphrase: String,
}

fn chain(seed: u64, n: u32) -> (SimChain, [u8; 32], u32, String) {
    let mut g = Generator::new(GenConfig {
        seed,
        txs_per_ledger: 4,
        target_streams: 30,
        ..GenConfig::default()
    });
    let mut c = g.empty_chain();
    for _ in 0..n {
        g.next_ledger(&mut c).unwrap();
    }
    (c, g.contract, g.cfg.first_seq, g.cfg.passphrase.clone())
}

async fn net() -> Net {
    let (c, contract, first, passphrase) = chain(21, LEDGERS);
    let tip = c.tip().unwrap().seq;
    let server = serve(SimState::new(c), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Net {
        server,
        contract,
        first,
        tip,
        passphrase,
    }
}

fn policy() -> HttpPolicy {
    HttpPolicy {
        total_timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_millis(400),
        max_attempts: 2,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        breaker_threshold: 1_000,
        ..HttpPolicy::default()
    }
}

fn source(kind: &str, n: &Net, passphrase: &str) -> Arc<dyn LedgerSource> {
    let filter = ContractFilter::from_bytes(n.contract);
    match kind {
        "rpc" => Arc::new(
            RpcSource::new(
                &format!("{}/", n.server.url()),
                passphrase,
                filter,
                policy(),
            )
            .unwrap(),
        ),
        _ => Arc::new(HorizonSource::new(&n.server.url(), filter, policy()).unwrap()),
    }
}

async fn new_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite(format!("sqlite://{}", dir.path().join("f.db").display()));
    (Arc::from(store::open(&url).await.unwrap()), dir)
}

fn ingestor(store: Arc<dyn Store>, src: Arc<dyn LedgerSource>, n: &Net, finality: u32) -> Ingestor {
    Ingestor::new(
        store,
        src,
        IngestConfig {
            start_ledger: Some(n.first),
            finality_depth: finality,
            batch_ledgers: 25,
            poll_interval: Duration::from_millis(20),
            retry_base: Duration::from_millis(5),
            network_passphrase: n.passphrase.clone(),
            stop_at: Some(n.tip),
            ..Default::default()
        },
    )
}

async fn run(ing: &Ingestor) -> Result<(), IngestError> {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(Duration::from_secs(60), ing.run(rx))
        .await
        .expect("ingestion finished in time")
}

/// What a fault-free ingestion of the same chain stores.
async fn reference(n: &Net) -> (Vec<StoredEvent>, Vec<fluxora::store::LedgerRecord>) {
    let (s, _dir) = new_store().await;
    let src = Arc::new(SimSource::new(n.server.state.clone(), n.contract));
    ingestor(s.clone(), src, n, 16).sync().await.unwrap();
    (
        s.events_after(0, u32::MAX).await.unwrap(),
        s.ledgers(0, u32::MAX).await.unwrap(),
    )
}

async fn retried_to_the_same_store(kind: &str, faults: Vec<Fault>) {
    let n = net().await;
    let want = reference(&n).await;
    for f in &faults {
        n.server.state.inject(f.clone()).await;
    }
    let (s, _dir) = new_store().await;
    let ing = ingestor(s.clone(), source(kind, &n, &n.passphrase), &n, 16);
    run(&ing)
        .await
        .unwrap_or_else(|e| panic!("{kind} with {faults:?}: {e}"));
    assert!(
        n.server.state.faults.lock().await.queue.is_empty(),
        "every injected fault was met"
    );
    let got = (
        s.events_after(0, u32::MAX).await.unwrap(),
        s.ledgers(0, u32::MAX).await.unwrap(),
    );
    assert_eq!(got.1.len() as u32, n.tip - n.first + 1, "no ledger skipped");
    assert_eq!(
        got, want,
        "{kind} with {faults:?}: store differs from a fault-free run"
    );
    n.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_with_retry_after_are_waited_out() {
    for kind in ["rpc", "horizon"] {
        retried_to_the_same_store(
            kind,
            vec![
                Fault::TooManyRequests {
                    retry_after_secs: 1,
                },
                Fault::TooManyRequests {
                    retry_after_secs: 1,
                },
            ],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    for kind in ["rpc", "horizon"] {
        retried_to_the_same_store(
            kind,
            vec![
                Fault::ServerError(503),
                Fault::ServerError(500),
                Fault::ServerError(502),
                Fault::ServerError(504),
            ],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retried() {
    for kind in ["rpc", "horizon"] {
        retried_to_the_same_store(
            kind,
            vec![
                Fault::Delay(Duration::from_millis(900)),
                Fault::Delay(Duration::from_millis(900)),
                Fault::Delay(Duration::from_millis(900)),
            ],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_are_retried() {
    for kind in ["rpc", "horizon"] {
        retried_to_the_same_store(
            kind,
            vec![
                Fault::TruncatedBody,
                Fault::TruncatedBody,
                Fault::TruncatedBody,
            ],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_xdr_is_refused_and_refetched() {
    for kind in ["rpc", "horizon"] {
        retried_to_the_same_store(kind, vec![Fault::MalformedXdr, Fault::MalformedXdr]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_within_the_timeout_are_fine() {
    let n = net().await;
    let want = reference(&n).await;
    n.server.state.faults.lock().await.latency = Some(Duration::from_millis(3));
    let (s, _dir) = new_store().await;
    run(&ingestor(
        s.clone(),
        source("rpc", &n, &n.passphrase),
        &n,
        16,
    ))
    .await
    .unwrap();
    assert_eq!(s.events_after(0, u32::MAX).await.unwrap(), want.0);
    n.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_is_waited_for_not_skipped() {
    for kind in ["rpc", "horizon"] {
        let n = net().await;
        let want = reference(&n).await;
        n.server.state.faults.lock().await.lag_ledgers = 40;
        let (s, _dir) = new_store().await;
        let ing = ingestor(s.clone(), source(kind, &n, &n.passphrase), &n, 16);
        let state = n.server.state.clone();
        let catch_up = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            state.faults.lock().await.lag_ledgers = 0;
        });
        run(&ing).await.unwrap();
        catch_up.await.unwrap();
        let ledgers = s.ledgers(0, u32::MAX).await.unwrap();
        assert_eq!(ledgers, want.1, "{kind}: every ledger once, in order");
        assert_eq!(s.events_after(0, u32::MAX).await.unwrap(), want.0);
        n.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_horizon_without_tx_meta_halts_naming_skip_txmeta() {
    let n = net().await;
    n.server.state.faults.lock().await.horizon_without_meta = true;
    let (s, _dir) = new_store().await;
    let ing = ingestor(s.clone(), source("horizon", &n, &n.passphrase), &n, 16);
    let err = run(&ing).await.unwrap_err().to_string();
    assert!(err.contains("SKIP_TXMETA") && err.contains("RPC"), "{err}");
    let status = ing.status().borrow().clone();
    assert!(matches!(
        status.state,
        fluxora::ingest::IndexerState::Halted { .. }
    ));
    // Nothing was stored past what could be verified: the first ledger with transactions stops it.
    let stored = s.ledgers(0, u32::MAX).await.unwrap();
    for w in stored.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence + 1);
    }
    n.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_halts() {
    let n = net().await;
    let (s, _dir) = new_store().await;
    let ing = Ingestor::new(
        s.clone(),
        source("rpc", &n, "Test SDF Network ; September 2015"),
        IngestConfig {
            start_ledger: Some(n.first),
            network_passphrase: "Test SDF Network ; September 2015".into(),
            retry_base: Duration::from_millis(5),
            stop_at: Some(n.tip),
            ..Default::default()
        },
    );
    let err = run(&ing).await.unwrap_err().to_string();
    assert!(err.contains("passphrase"), "{err}");
    n.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_deeper_than_the_finality_window_halts_with_an_operator_message() {
    let n = net().await;
    let (s, _dir) = new_store().await;
    run(&ingestor(
        s.clone(),
        source("rpc", &n, &n.passphrase),
        &n,
        5,
    ))
    .await
    .unwrap();
    let before = s.events_after(0, u32::MAX).await.unwrap();
    n.server.state.refork_last(12).await.unwrap();
    let ing = Ingestor::new(
        s.clone(),
        source("rpc", &n, &n.passphrase),
        IngestConfig {
            finality_depth: 5,
            network_passphrase: n.passphrase.clone(),
            retry_base: Duration::from_millis(5),
            poll_interval: Duration::from_millis(10),
            ..Default::default()
        },
    );
    let err = run(&ing).await.unwrap_err().to_string();
    assert!(err.contains("FINALITY_DEPTH=5"), "{err}");
    assert_eq!(
        s.events_after(0, u32::MAX).await.unwrap(),
        before,
        "nothing rolled back"
    );
    assert_eq!(s.epoch().await.unwrap(), 0);
    n.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_inside_the_window_is_rolled_back_and_reingested() {
    let n = net().await;
    let (s, _dir) = new_store().await;
    run(&ingestor(
        s.clone(),
        source("horizon", &n, &n.passphrase),
        &n,
        16,
    ))
    .await
    .unwrap();
    n.server.state.refork_last(6).await.unwrap();
    let want = reference(&n).await;
    // Following the tail (no stop ledger).
    let ing = Ingestor::new(
        s.clone(),
        source("horizon", &n, &n.passphrase),
        IngestConfig {
            finality_depth: 16,
            network_passphrase: n.passphrase.clone(),
            retry_base: Duration::from_millis(5),
            poll_interval: Duration::from_millis(10),
            ..Default::default()
        },
    );
    let mut notices = ing.notices();
    // Caught up at the tip: the re-read of the stored tip finds the new hash.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let h = tokio::spawn(async move {
        let r = ing.run(rx).await;
        (ing, r)
    });
    let notice = tokio::time::timeout(Duration::from_secs(20), notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(notice, fluxora::ingest::Notice::RolledBack { epoch: 1, .. }),
        "{notice:?}"
    );
    for _ in 0..200 {
        if s.ledgers(0, u32::MAX).await.unwrap() == want.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(true).unwrap();
    let (_ing, r) = h.await.unwrap();
    r.unwrap();
    assert_eq!(s.ledgers(0, u32::MAX).await.unwrap(), want.1);
    assert_eq!(s.events_after(0, u32::MAX).await.unwrap(), want.0);
    let log = s.reorgs(5).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].fork_ledger, n.tip - 6);
    n.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_reset_halts_with_instructions() {
    let n = net().await;
    let (s, _dir) = new_store().await;
    run(&ingestor(
        s.clone(),
        source("rpc", &n, &n.passphrase),
        &n,
        5,
    ))
    .await
    .unwrap();
    // The network restarts from scratch: same sequence numbers, a much lower tip.
    let (fresh, _, _, _) = chain(99, 20);
    *n.server.state.chain.write().await = fresh;
    let ing = Ingestor::new(
        s.clone(),
        source("rpc", &n, &n.passphrase),
        IngestConfig {
            finality_depth: 5,
            network_passphrase: n.passphrase.clone(),
            retry_base: Duration::from_millis(5),
            ..Default::default()
        },
    );
    let err = run(&ing).await.unwrap_err().to_string();
    assert!(
        err.contains("reset") && err.contains("fresh database"),
        "{err}"
    );
    n.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_that_stops_closing_ledgers_is_reported_stalled() {
    let n = net().await;
    let (s, _dir) = new_store().await;
    let ing = Ingestor::new(
        s.clone(),
        source("rpc", &n, &n.passphrase),
        IngestConfig {
            start_ledger: Some(n.first),
            network_passphrase: n.passphrase.clone(),
            poll_interval: Duration::from_millis(20),
            stall_after: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let mut status = ing.status();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let h = tokio::spawn(async move { ing.run(rx).await });
    let mut seen_healthy = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = status.borrow().state.clone();
        match state {
            fluxora::ingest::IndexerState::Healthy => seen_healthy = true,
            fluxora::ingest::IndexerState::Stalled if seen_healthy => break,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported stalled"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
    }
    assert_eq!(status.borrow().ledger, Some(n.tip));
    tx.send(true).unwrap();
    h.await.unwrap().unwrap();
    n.server.stop().await;
}
