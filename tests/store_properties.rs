//! Property test: any sequence of appends, re-appends and rollbacks leaves the store equal to a
//! simple in-memory model (same events at the same gap-free positions, same ledgers, cursor,
//! epoch and reorg log). Run against SQLite and PostgreSQL.

use fluxora::config::DatabaseUrl;
use fluxora::store::{self, AppendBatch, Cursor, LedgerRecord, NewEvent, RollbackRequest, Store};
use fluxora::testing::synth::{events, ledgers};
use fluxora::testing::TempPgDatabase;
use proptest::prelude::*;

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone)]
enum Op {
    /// Append `ledgers` new ledgers with `per` events each, on a fresh branch id.
    Append { ledgers: u32, per: u32 },
    /// Append the previous batch again (must be a no-op).
    Repeat,
    /// Roll back `depth` ledgers below the tip.
    Rollback { depth: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..4, 0u32..6).prop_map(|(ledgers, per)| Op::Append { ledgers, per }),
        1 => Just(Op::Repeat),
        2 => (0u32..6).prop_map(|depth| Op::Rollback { depth }),
    ]
}

#[derive(Default)]
struct Model {
    ledgers: Vec<LedgerRecord>,
    events: Vec<NewEvent>,
    cursor: Option<Cursor>,
    epoch: u64,
    reorgs: usize,
}

async fn run_ops(s: &dyn Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    let mut last: Option<AppendBatch> = None;
    let mut branch = 0u32;
    for op in ops {
        match op {
            Op::Append { ledgers: n, per } => {
                branch += 1;
                let start = m.ledgers.last().map_or(1, |l| l.sequence + 1);
                let prev = m
                    .ledgers
                    .last()
                    .map_or(ZERO.to_string(), |l| l.hash.clone());
                let ls = ledgers(start, start + n - 1, branch, &prev);
                let evs: Vec<NewEvent> = (start..start + n)
                    .flat_map(|seq| events(seq, *per, 5, branch))
                    .collect();
                let cursor = ls.last().map(|l| Cursor {
                    ledger: l.sequence,
                    hash: l.hash.clone(),
                });
                let b = AppendBatch {
                    ledgers: ls.clone(),
                    events: evs.clone(),
                    cursor: cursor.clone(),
                    ..Default::default()
                };
                let out = s
                    .append(&b)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(out.appended, evs.len());
                m.ledgers.extend(ls);
                m.events.extend(evs);
                m.cursor = cursor;
                last = Some(b);
            }
            Op::Repeat => {
                if let Some(b) = &last {
                    // Only meaningful while the batch's ledgers are still the stored ones.
                    let still_there = b.ledgers.iter().all(|l| m.ledgers.iter().any(|x| x == l));
                    if still_there && !b.ledgers.is_empty() {
                        let out = s
                            .append(b)
                            .await
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(out.appended, 0);
                        prop_assert_eq!(out.duplicates, b.events.len());
                        m.cursor = b.cursor.clone();
                    }
                }
            }
            Op::Rollback { depth } => {
                let tip = m.ledgers.last().map_or(0, |l| l.sequence);
                let fork = tip.saturating_sub(*depth);
                let r = s
                    .rollback_to(&RollbackRequest {
                        fork_ledger: fork,
                        new_hash: None,
                        reason: "property test".into(),
                    })
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let removed: Vec<LedgerRecord> = m
                    .ledgers
                    .iter()
                    .filter(|l| l.sequence > fork)
                    .cloned()
                    .collect();
                let removed_events: Vec<String> = m
                    .events
                    .iter()
                    .filter(|e| e.ledger > fork)
                    .map(|e| e.event_id.clone())
                    .collect();
                prop_assert_eq!(&r.removed_ledgers, &removed);
                prop_assert_eq!(&r.removed_event_ids, &removed_events);
                if !removed.is_empty() {
                    m.epoch += 1;
                    m.reorgs += 1;
                }
                m.ledgers.retain(|l| l.sequence <= fork);
                m.events.retain(|e| e.ledger <= fork);
                m.cursor = match (&m.cursor, m.ledgers.last()) {
                    (Some(c), _) if c.ledger <= fork => Some(c.clone()),
                    (_, Some(l)) if l.sequence == fork => Some(Cursor {
                        ledger: l.sequence,
                        hash: l.hash.clone(),
                    }),
                    _ => None,
                };
            }
        }
        // The store equals the model after every step.
        let stored = s
            .events_after(0, u32::MAX)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (i, e) in stored.iter().enumerate() {
            prop_assert_eq!(e.position, i as i64 + 1);
        }
        let bodies: Vec<NewEvent> = stored.into_iter().map(|e| e.event).collect();
        prop_assert_eq!(&bodies, &m.events);
        let ls = s
            .ledgers(0, u32::MAX)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&ls, &m.ledgers);
        let cursor = s
            .cursor()
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&cursor, &m.cursor);
        prop_assert_eq!(
            s.epoch()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?,
            m.epoch
        );
        let log = s
            .reorgs(1000)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(log.len(), m.reorgs);
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn sqlite_store_matches_model(ops in prop::collection::vec(op(), 1..25)) {
        let rt = runtime();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("p.db").display());
            let s = store::open(&DatabaseUrl::Sqlite(url)).await.unwrap();
            run_ops(&*s, &ops).await
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn postgres_store_matches_model(ops in prop::collection::vec(op(), 1..25)) {
        let rt = runtime();
        rt.block_on(async {
            let Some(db) = TempPgDatabase::create().await.unwrap() else { return Ok(()) };
            let s = store::open(&DatabaseUrl::Postgres(db.url.clone())).await.unwrap();
            let r = run_ops(&*s, &ops).await;
            drop(s);
            db.drop_db().await.unwrap();
            r
        })?;
    }
}
