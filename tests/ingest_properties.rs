//! Property test of the ingestor: random chains with random forks up to the finality window's
//! depth, ingested as they grow; the store must end equal to a fresh ingestion of the final
//! chain (same events at the same positions, same ledgers, same projection rows, which also equal
//! a rebuild from the stored events). Both stores.

use std::sync::Arc;

use fluxora::config::DatabaseUrl;
use fluxora::ingest::{IngestConfig, Ingestor};
use fluxora::projection::rebuild::{compare, rebuild};
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::SimState;
use fluxora::sim::source::SimSource;
use fluxora::store::{self, Store, StreamQuery};
use fluxora::testing::TempPgDatabase;
use proptest::prelude::*;

const WINDOW: u32 = 6;

#[derive(Debug, Clone)]
enum Op {
    Grow(u32),
    Fork(u32),
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..12).prop_map(Op::Grow),
        1 => (1u32..=WINDOW).prop_map(Op::Fork),
        2 => Just(Op::Sync),
    ]
}

fn ingestor(
    store: Arc<dyn Store>,
    state: Arc<SimState>,
    contract: [u8; 32],
    first: u32,
) -> Ingestor {
    Ingestor::new(
        store,
        Arc::new(SimSource::new(state, contract)),
        IngestConfig {
            start_ledger: Some(first),
            finality_depth: WINDOW,
            batch_ledgers: 7,
            network_passphrase: fluxora::sim::DEFAULT_PASSPHRASE.into(),
            ..Default::default()
        },
    )
}

async fn check(
    live: Arc<dyn Store>,
    fresh: Arc<dyn Store>,
    seed: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut g = Generator::new(GenConfig {
        seed,
        txs_per_ledger: 3,
        target_streams: 15,
        fork_window: WINDOW as usize,
        ..GenConfig::default()
    });
    let first = g.cfg.first_seq;
    let state = SimState::new(g.empty_chain());
    {
        let mut c = state.chain.write().await;
        g.next_ledger(&mut c).unwrap();
    }
    let ing = ingestor(live.clone(), state.clone(), g.contract, first);
    for op in ops {
        match op {
            Op::Grow(n) => {
                let mut c = state.chain.write().await;
                for _ in 0..*n {
                    g.next_ledger(&mut c).unwrap();
                }
            }
            Op::Fork(k) => {
                let mut c = state.chain.write().await;
                if c.ledgers().len() > *k as usize {
                    g.fork(&mut c, *k).unwrap();
                }
            }
            Op::Sync => {
                ing.sync()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
    }
    ing.sync()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let reference = ingestor(fresh.clone(), state.clone(), g.contract, first);
    reference
        .sync()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;

    let a = live.events_after(0, u32::MAX).await.unwrap();
    let b = fresh.events_after(0, u32::MAX).await.unwrap();
    prop_assert_eq!(a.len(), b.len());
    prop_assert_eq!(&a, &b);
    let la = live.ledgers(0, u32::MAX).await.unwrap();
    let lb = fresh.ledgers(0, u32::MAX).await.unwrap();
    prop_assert_eq!(&la, &lb);
    prop_assert_eq!(live.cursor().await.unwrap(), fresh.cursor().await.unwrap());

    // Projections: what rollbacks restored equals a fresh fold, and both equal a rebuild.
    let va = live.stream_versions(None, u32::MAX).await.unwrap();
    let vb = fresh.stream_versions(None, u32::MAX).await.unwrap();
    prop_assert!(!vb.is_empty() || b.is_empty());
    prop_assert_eq!(&va, &vb);
    prop_assert_eq!(
        live.flag_versions().await.unwrap(),
        fresh.flag_versions().await.unwrap()
    );
    let all = StreamQuery {
        limit: u32::MAX,
        ..Default::default()
    };
    prop_assert_eq!(
        live.list_streams(&all).await.unwrap(),
        fresh.list_streams(&all).await.unwrap()
    );
    let rebuilt = rebuild(&*live, &mut |_, _| {}).await.unwrap();
    let cmp = compare(&*live, &rebuilt).await.unwrap();
    prop_assert_eq!(cmp.differences, 0, "{:?}", cmp.listed);
    Ok(())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn sqlite_pair() -> (Arc<dyn Store>, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let open = |n: &str| DatabaseUrl::Sqlite(format!("sqlite://{}", dir.path().join(n).display()));
    let a = store::open(&open("live.db")).await.unwrap();
    let b = store::open(&open("fresh.db")).await.unwrap();
    (Arc::from(a), Arc::from(b), dir)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn sqlite_ingest_with_forks_equals_fresh_ingestion(seed in 0u64..1000, ops in prop::collection::vec(op(), 1..30)) {
        rt().block_on(async {
            let (a, b, _dir) = sqlite_pair().await;
            check(a, b, seed, &ops).await
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    #[test]
    fn postgres_ingest_with_forks_equals_fresh_ingestion(seed in 0u64..1000, ops in prop::collection::vec(op(), 1..30)) {
        rt().block_on(async {
            let Some(da) = TempPgDatabase::create().await.unwrap() else { return Ok(()) };
            let db = TempPgDatabase::create().await.unwrap().unwrap();
            let a: Arc<dyn Store> = Arc::from(store::open(&DatabaseUrl::Postgres(da.url.clone())).await.unwrap());
            let b: Arc<dyn Store> = Arc::from(store::open(&DatabaseUrl::Postgres(db.url.clone())).await.unwrap());
            let r = check(a.clone(), b.clone(), seed, &ops).await;
            drop((a, b));
            da.drop_db().await.unwrap();
            db.drop_db().await.unwrap();
            r
        })?;
    }
}
