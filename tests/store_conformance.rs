//! One conformance suite, run unchanged against both stores: SQLite (always) and PostgreSQL (a
//! fresh database per test; missing server = skip locally, failure under CI).

use std::sync::Arc;

use fluxora::config::DatabaseUrl;
use fluxora::domain::accrual::StreamStatus;
use fluxora::projection::{ContractFlags, StreamState};
use fluxora::store::{
    self, AppendBatch, Cursor, NewEvent, RollbackRequest, Store, StoreError, StoredEvent,
    StreamQuery,
};
use fluxora::testing::synth;
use fluxora::testing::synth::{events, ledger_hash, ledgers};
use fluxora::testing::TempPgDatabase;
use sqlx::Connection;

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A store under test plus what is needed to reach its database directly (fault injection).
struct Harness {
    store: Arc<dyn Store>,
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<TempPgDatabase>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        let store = store::open(&DatabaseUrl::Sqlite(url.clone()))
            .await
            .unwrap();
        Harness {
            store: Arc::from(store),
            url,
            _dir: Some(dir),
            pg: None,
        }
    }

    async fn postgres() -> Option<Harness> {
        let db = TempPgDatabase::create().await.unwrap()?;
        let store = store::open(&DatabaseUrl::Postgres(db.url.clone()))
            .await
            .unwrap();
        Some(Harness {
            store: Arc::from(store),
            url: db.url.clone(),
            _dir: None,
            pg: Some(db),
        })
    }

    /// Makes the database itself fail the insert of `event_id` (a real error mid-transaction).
    async fn poison(&self, event_id: &str) {
        if self.pg.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(&format!(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
                 IF NEW.event_id = '{event_id}' THEN RAISE EXCEPTION 'injected failure'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            ))
            .execute(&mut c)
            .await
            .unwrap();
            sqlx::query(
                "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW \
                 EXECUTE FUNCTION poison()",
            )
            .execute(&mut c)
            .await
            .unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query(&format!(
                "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.event_id = '{event_id}' \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            ))
            .execute(&mut c)
            .await
            .unwrap();
        }
    }

    async fn unpoison(&self) {
        if self.pg.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query("DROP TRIGGER poison ON events")
                .execute(&mut c)
                .await
                .unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query("DROP TRIGGER poison")
                .execute(&mut c)
                .await
                .unwrap();
        }
    }

    async fn finish(self) {
        drop(self.store);
        if let Some(db) = self.pg {
            db.drop_db().await.unwrap();
        }
    }
}

async fn all_events(s: &dyn Store) -> Vec<StoredEvent> {
    s.events_after(0, u32::MAX).await.unwrap()
}

fn cursor_of(l: &fluxora::store::LedgerRecord) -> Option<Cursor> {
    Some(Cursor {
        ledger: l.sequence,
        hash: l.hash.clone(),
    })
}

/// Ledgers `from..=to` of branch 0 with `per` events each, as one batch.
fn batch(from: u32, to: u32, per: u32, prev: &str) -> AppendBatch {
    let ls = ledgers(from, to, 0, prev);
    let evs: Vec<NewEvent> = (from..=to).flat_map(|s| events(s, per, 7, 0)).collect();
    let cursor = ls.last().and_then(cursor_of);
    AppendBatch {
        ledgers: ls,
        events: evs,
        cursor,
        ..Default::default()
    }
}

fn assert_gap_free(evs: &[StoredEvent]) {
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.position, i as i64 + 1, "position gap at index {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// The suite. Each function takes a harness and is run once per backend by the macro below.

async fn append_and_read_back(h: &Harness) {
    let s = &*h.store;
    let b = batch(100, 102, 5, ZERO);
    let out = s.append(&b).await.unwrap();
    assert_eq!(
        (out.appended, out.duplicates, out.ledgers_added),
        (15, 0, 3)
    );
    assert_eq!((out.first_position, out.last_position), (Some(1), Some(15)));

    let got = all_events(s).await;
    assert_gap_free(&got);
    let bodies: Vec<NewEvent> = got.iter().map(|e| e.event.clone()).collect();
    assert_eq!(
        bodies, b.events,
        "events read back must equal what was appended"
    );

    let one = s.event_by_id(&b.events[3].event_id).await.unwrap().unwrap();
    assert_eq!(one.position, 4);
    assert!(s
        .event_by_id("0000000000000000001-0000000000")
        .await
        .unwrap()
        .is_none());

    let stream3 = s.stream_events(3, 0, 100).await.unwrap();
    assert!(!stream3.is_empty());
    assert!(stream3.iter().all(|e| e.event.stream_id == Some(3)));
    assert!(stream3.windows(2).all(|w| w[0].position < w[1].position));
    let after = s.stream_events(3, stream3[0].position, 100).await.unwrap();
    assert_eq!(after.len(), stream3.len() - 1);

    assert_eq!(
        s.events_after(10, 3)
            .await
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        [11, 12, 13]
    );
    assert_eq!(s.ledger(101).await.unwrap().unwrap(), b.ledgers[1]);
    assert!(s.ledger(99).await.unwrap().is_none());
    assert_eq!(s.ledgers(99, 200).await.unwrap(), b.ledgers);
    assert_eq!(s.tip().await.unwrap().unwrap(), b.ledgers[2]);
    assert_eq!(s.cursor().await.unwrap(), b.cursor);
    assert_eq!(s.last_position().await.unwrap(), 15);
    assert_eq!(s.event_count().await.unwrap(), 15);
    assert_eq!(s.epoch().await.unwrap(), 0);
    assert!(s.reorgs(10).await.unwrap().is_empty());
    s.ping().await.unwrap();
    assert_eq!(s.get_meta("network_passphrase").await.unwrap(), None);
    s.set_meta("network_passphrase", "Test SDF Network ; September 2015")
        .await
        .unwrap();
    s.set_meta(
        "network_passphrase",
        "Public Global Stellar Network ; September 2015",
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_meta("network_passphrase").await.unwrap().as_deref(),
        Some("Public Global Stellar Network ; September 2015")
    );
    assert!(s.set_meta("epoch", "9").await.is_err());
    assert_eq!(s.epoch().await.unwrap(), 0);
}

async fn failed_batch_leaves_nothing(h: &Harness) {
    let s = &*h.store;
    let first = batch(1, 2, 10, ZERO);
    s.append(&first).await.unwrap();
    let before = (
        all_events(s).await,
        s.ledgers(0, 1000).await.unwrap(),
        s.cursor().await.unwrap(),
    );

    // 3 ledgers of 500 events: the database fails on an event near the end, after the ledgers
    // and more than a thousand events were written inside the transaction.
    let second = batch(3, 5, 500, &first.ledgers[1].hash);
    let poisoned = second.events[1400].event_id.clone();
    h.poison(&poisoned).await;
    let err = s.append(&second).await.unwrap_err();
    assert!(
        err.to_string().contains("injected failure"),
        "unexpected error: {err}"
    );
    let after = (
        all_events(s).await,
        s.ledgers(0, 1000).await.unwrap(),
        s.cursor().await.unwrap(),
    );
    assert_eq!(before, after, "a failed batch must leave nothing behind");

    // The same batch goes through once the fault is gone, positions continuing without a gap.
    h.unpoison().await;
    let out = s.append(&second).await.unwrap();
    assert_eq!(out.appended, 1500);
    assert_eq!(out.first_position, Some(21));
    let evs = all_events(s).await;
    assert_eq!(evs.len(), 1520);
    assert_gap_free(&evs);
}

async fn reappend_is_idempotent(h: &Harness) {
    let s = &*h.store;
    let b = batch(10, 12, 4, ZERO);
    s.append(&b).await.unwrap();
    let snapshot = all_events(s).await;

    let again = s.append(&b).await.unwrap();
    assert_eq!(
        (again.appended, again.duplicates, again.ledgers_added),
        (0, 12, 0)
    );
    assert_eq!(again.first_position, None);
    assert_eq!(
        all_events(s).await,
        snapshot,
        "re-append must change nothing"
    );

    // Old and new events mixed, plus a repeat inside the batch: only the new ones get positions.
    let mut mixed = batch(13, 13, 4, &b.ledgers[2].hash);
    mixed.events.insert(0, b.events[11].clone());
    mixed.events.insert(0, b.events[10].clone());
    mixed.events.push(mixed.events[3].clone());
    let out = s.append(&mixed).await.unwrap();
    assert_eq!((out.appended, out.duplicates), (4, 3));
    assert_eq!(
        (out.first_position, out.last_position),
        (Some(13), Some(16))
    );
    let evs = all_events(s).await;
    assert_gap_free(&evs);
    assert_eq!(evs.len(), 16);
    assert_eq!(&evs[..12], &snapshot[..]);
}

async fn positions_are_gap_free_and_ordered(h: &Harness) {
    let s = &*h.store;
    let mut prev = ZERO.to_string();
    let mut expected: Vec<String> = Vec::new();
    let mut seq = 1;
    for (i, per) in [0u32, 3, 17, 1, 250, 0, 9, 64].iter().enumerate() {
        let b = batch(seq, seq + i as u32 % 3, *per, &prev);
        expected.extend(b.events.iter().map(|e| e.event_id.clone()));
        prev = b.ledgers.last().unwrap().hash.clone();
        seq = b.ledgers.last().unwrap().sequence + 1;
        s.append(&b).await.unwrap();
    }
    let evs = all_events(s).await;
    assert_gap_free(&evs);
    let ids: Vec<String> = evs.iter().map(|e| e.event.event_id.clone()).collect();
    assert_eq!(ids, expected, "positions must follow append order");
    assert_eq!(s.last_position().await.unwrap(), expected.len() as i64);
}

async fn rollback_removes_exactly_the_ledgers_above_the_fork(h: &Harness) {
    let s = &*h.store;
    let b = batch(1, 20, 3, ZERO);
    s.append(&b).await.unwrap();
    let kept: Vec<StoredEvent> = all_events(s)
        .await
        .into_iter()
        .filter(|e| e.event.ledger <= 12)
        .collect();

    let new_hash = ledger_hash(1, 13);
    let report = s
        .rollback_to(&RollbackRequest {
            fork_ledger: 12,
            new_hash: Some(new_hash.clone()),
            reason: "test fork".into(),
        })
        .await
        .unwrap();
    assert_eq!(report.removed_ledgers, b.ledgers[12..].to_vec());
    assert_eq!(report.removed_event_ids.len(), 24);
    assert_eq!(report.first_removed_position, Some(37));
    assert_eq!(report.last_removed_position, Some(60));
    let expected_streams: std::collections::BTreeSet<u64> = b
        .events
        .iter()
        .filter(|e| e.ledger > 12)
        .filter_map(|e| e.stream_id)
        .collect();
    assert_eq!(
        report.streams_affected,
        expected_streams.into_iter().collect::<Vec<_>>()
    );
    assert_eq!(report.epoch, 1);

    assert_eq!(
        all_events(s).await,
        kept,
        "events at or below the fork must be untouched"
    );
    assert_eq!(s.ledgers(0, 100).await.unwrap(), b.ledgers[..12].to_vec());
    assert_eq!(s.tip().await.unwrap().unwrap().sequence, 12);
    assert_eq!(s.cursor().await.unwrap(), cursor_of(&b.ledgers[11]));
    assert_eq!(s.epoch().await.unwrap(), 1);
    let log = s.reorgs(10).await.unwrap();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(
        (r.fork_ledger, r.old_tip, r.depth, r.events_removed),
        (12, 20, 8, 24)
    );
    assert_eq!(r.old_hash, b.ledgers[12].hash);
    assert_eq!(r.new_hash.as_deref(), Some(new_hash.as_str()));
    assert_eq!(Some(r.id), report.reorg_id);
    assert_eq!(r.epoch, 1);

    // The new branch chains onto the fork ledger; positions continue after the last kept one.
    let ls = ledgers(13, 15, 1, &b.ledgers[11].hash);
    let evs: Vec<NewEvent> = (13..=15).flat_map(|s| events(s, 2, 7, 1)).collect();
    let out = s
        .append(&AppendBatch {
            cursor: cursor_of(&ls[2]),
            ledgers: ls.clone(),
            events: evs,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.first_position, Some(37));
    let all = all_events(s).await;
    assert_gap_free(&all);
    assert_eq!(all.len(), 42);
    assert_eq!(s.ledger(13).await.unwrap().unwrap().hash, ls[0].hash);

    // Rolling back to or above the tip removes nothing and does not bump the epoch.
    let none = s
        .rollback_to(&RollbackRequest {
            fork_ledger: 15,
            new_hash: None,
            reason: "no-op".into(),
        })
        .await
        .unwrap();
    assert!(none.removed_ledgers.is_empty() && none.removed_event_ids.is_empty());
    assert_eq!((none.epoch, none.reorg_id), (1, None));
    assert_eq!(s.reorgs(10).await.unwrap().len(), 1);

    // Rolling back below everything empties the store and clears the cursor.
    let all_gone = s
        .rollback_to(&RollbackRequest {
            fork_ledger: 0,
            new_hash: None,
            reason: "network reset".into(),
        })
        .await
        .unwrap();
    assert_eq!(all_gone.removed_ledgers.len(), 15);
    assert_eq!(all_gone.epoch, 2);
    assert!(all_events(s).await.is_empty());
    assert!(s.cursor().await.unwrap().is_none());
    assert_eq!(s.last_position().await.unwrap(), 0);
    let log = s.reorgs(10).await.unwrap();
    assert_eq!(
        log.iter().map(|r| r.fork_ledger).collect::<Vec<_>>(),
        [0, 12],
        "newest first"
    );
}

async fn readers_see_only_committed_batches(h: &Harness) {
    const PER: u32 = 250;
    const BATCHES: u32 = 30;
    let writer_store = h.store.clone();
    let writer = tokio::spawn(async move {
        let mut prev = ZERO.to_string();
        for seq in 1..=BATCHES {
            let b = batch(seq, seq, PER, &prev);
            prev = b.ledgers[0].hash.clone();
            writer_store.append(&b).await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let s = &*h.store;
    let mut observations = 0;
    let mut partial = Vec::new();
    for _ in 0..100_000 {
        let done = writer.is_finished();
        let n = s.event_count().await.unwrap();
        if n % u64::from(PER) != 0 {
            partial.push(format!("count {n}"));
        }
        let evs = s.events_after(0, u32::MAX).await.unwrap();
        if evs.len() % PER as usize != 0 {
            partial.push(format!("scan {}", evs.len()));
        }
        for (i, e) in evs.iter().enumerate() {
            if e.position != i as i64 + 1 {
                partial.push(format!("gap at {i}"));
                break;
            }
        }
        let last = s.last_position().await.unwrap();
        if last % i64::from(PER) != 0 {
            partial.push(format!("last {last}"));
        }
        observations += 1;
        if done {
            break;
        }
    }
    writer.await.unwrap();
    assert!(
        partial.is_empty(),
        "reader saw uncommitted state: {partial:?}"
    );
    assert!(
        observations > 1,
        "the reader must have run alongside the writer"
    );
    assert_eq!(s.event_count().await.unwrap(), u64::from(PER * BATCHES));
}

async fn bad_batches_are_refused_with_the_reason(h: &Harness) {
    let s = &*h.store;
    let b = batch(50, 52, 2, ZERO);
    s.append(&b).await.unwrap();
    let snapshot = all_events(s).await;

    // Same sequence, different hash: must roll back first.
    let mut conflicting = batch(52, 52, 0, &b.ledgers[1].hash);
    conflicting.ledgers[0].hash = ledger_hash(9, 52);
    match s.append(&conflicting).await {
        Err(StoreError::LedgerConflict { sequence: 52, .. }) => {}
        other => panic!("expected LedgerConflict, got {other:?}"),
    }
    // Next ledger whose previous hash is not the stored one.
    let broken = batch(53, 53, 1, &ledger_hash(9, 52));
    match s.append(&broken).await {
        Err(StoreError::ChainBreak { sequence: 53, .. }) => {}
        other => panic!("expected ChainBreak, got {other:?}"),
    }
    // An event for a ledger nobody stored.
    let orphan = AppendBatch {
        events: events(60, 1, 1, 0),
        ..Default::default()
    };
    match s.append(&orphan).await {
        Err(StoreError::UnknownLedger { ledger: 60, .. }) => {}
        other => panic!("expected UnknownLedger, got {other:?}"),
    }
    // An event older than the last stored event's ledger would break position order.
    let mut late = events(50, 9, 1, 0);
    late.drain(..8);
    let err = s
        .append(&AppendBatch {
            events: late,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("positions must follow ledger order"),
        "{err}"
    );
    // A malformed event id.
    let mut bad_id = events(52, 1, 1, 7);
    bad_id[0].event_id = "42".into();
    let err = s
        .append(&AppendBatch {
            events: bad_id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("event id `42`"), "{err}");
    assert_eq!(
        all_events(s).await,
        snapshot,
        "refused batches change nothing"
    );
}

async fn events_are_append_only_in_the_database(h: &Harness) {
    let s = &*h.store;
    s.append(&batch(1, 1, 1, ZERO)).await.unwrap();
    let res = if h.pg.is_some() {
        let mut c = sqlx::PgConnection::connect(&h.url).await.unwrap();
        sqlx::query("UPDATE events SET topic = 'x'")
            .execute(&mut c)
            .await
            .map(|_| ())
    } else {
        let mut c = sqlx::SqliteConnection::connect(&h.url).await.unwrap();
        sqlx::query("UPDATE events SET topic = 'x'")
            .execute(&mut c)
            .await
            .map(|_| ())
    };
    let err = res.expect_err("an UPDATE of events must be refused by the database");
    assert!(err.to_string().contains("append-only"), "{err}");
}

fn version(
    id: u64,
    ledger: u32,
    sender: &str,
    status: StreamStatus,
) -> (StreamState, store::StreamVersion) {
    let mut st = synth::stream_state(id, sender, "GRECIPIENT", ledger);
    st.status = status;
    st.updated_ledger = ledger;
    let v = store::StreamVersion::of(&st, ledger).unwrap();
    (st, v)
}

async fn projection_rows_follow_batches_and_rollbacks(h: &Harness) {
    let s = &*h.store;
    let (s1a, v1a) = version(1, 1, "GA", StreamStatus::Active);
    let (s1b, v1b) = version(1, 3, "GA", StreamStatus::Paused);
    let (s2, v2) = version(2, 2, "GB", StreamStatus::Active);
    let flags = store::FlagsVersion {
        ledger: 2,
        state: serde_json::to_string(&ContractFlags {
            global_paused: true,
            ..Default::default()
        })
        .unwrap(),
    };
    let entry = store::StreamEntryRecord {
        ledger: 1,
        tx_order: 1,
        seq: 0,
        stream_id: 1,
        tx_hash: ledger_hash(5, 1),
        value_xdr: Some("AAAAAQ==".into()),
    };
    let mut b = batch(1, 3, 1, ZERO);
    b.projection = store::ProjectionDelta {
        versions: vec![v1a, v2, v1b],
        flags: vec![flags.clone()],
        entries: vec![entry.clone()],
    };
    s.append(&b).await.unwrap();

    // Current rows, history, filters, keyset pages, counts.
    assert_eq!(s.stream(1).await.unwrap(), Some(s1b.clone()));
    assert_eq!(s.stream_at(1, 2).await.unwrap(), Some(s1a.clone()));
    assert_eq!(s.stream_at(1, 3).await.unwrap(), Some(s1b.clone()));
    assert_eq!(s.stream_at(1, 0).await.unwrap(), None);
    assert_eq!(s.stream(3).await.unwrap(), None);
    let q = |status: Option<&str>, sender: Option<&str>, after: Option<u64>| StreamQuery {
        status: status.map(str::to_string),
        sender: sender.map(str::to_string),
        recipient: Some("GRECIPIENT".into()),
        after,
        limit: 10,
    };
    let ids = |v: Vec<StreamState>| v.iter().map(|s| s.stream_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_streams(&q(None, None, None)).await.unwrap()),
        [1, 2]
    );
    assert_eq!(
        ids(s
            .list_streams(&q(Some("paused"), None, None))
            .await
            .unwrap()),
        [1]
    );
    assert_eq!(
        ids(s.list_streams(&q(None, Some("GB"), None)).await.unwrap()),
        [2]
    );
    assert_eq!(
        ids(s.list_streams(&q(None, None, Some(1))).await.unwrap()),
        [2]
    );
    assert!(s.list_streams(&q(Some("bogus"), None, None)).await.is_err());
    let counts = s.stream_status_counts().await.unwrap();
    assert_eq!(counts.get("paused"), Some(&1));
    assert_eq!(counts.get("active"), Some(&1));
    assert!(s.flags().await.unwrap().global_paused);
    assert_eq!(s.stream_entries(0, 10).await.unwrap(), vec![entry.clone()]);
    assert_eq!(s.stream_versions(None, 100).await.unwrap().len(), 3);
    assert_eq!(
        s.stream_versions(Some((1, 3)), 100).await.unwrap()[0].stream_id,
        2
    );
    assert_eq!(s.first_ledger().await.unwrap(), Some(1));

    // Rolling back ledger 3 restores stream 1's version of ledger 1.
    let r = s
        .rollback_to(&RollbackRequest {
            fork_ledger: 2,
            new_hash: None,
            reason: "test".into(),
        })
        .await
        .unwrap();
    assert!(r.streams_affected.contains(&1));
    assert_eq!(s.stream(1).await.unwrap(), Some(s1a.clone()));
    assert_eq!(s.stream(2).await.unwrap(), Some(s2.clone()));
    assert!(s.flags().await.unwrap().global_paused);

    // Rolling back to before everything removes every projection row.
    s.rollback_to(&RollbackRequest {
        fork_ledger: 0,
        new_hash: None,
        reason: "test".into(),
    })
    .await
    .unwrap();
    assert_eq!(s.stream(1).await.unwrap(), None);
    assert_eq!(s.stream(2).await.unwrap(), None);
    assert!(!s.flags().await.unwrap().global_paused);
    assert!(s.stream_entries(0, 10).await.unwrap().is_empty());
    assert!(s.stream_versions(None, 100).await.unwrap().is_empty());

    // replace_projection swaps every row at once.
    let (_, v9) = version(9, 1, "GC", StreamStatus::Cancelled);
    s.replace_projection(&[v9], &[flags]).await.unwrap();
    assert_eq!(
        ids(s.list_streams(&q(None, None, None)).await.unwrap()),
        [9]
    );
    assert_eq!(
        s.stream_status_counts().await.unwrap().get("cancelled"),
        Some(&1)
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = super::Harness::sqlite().await;
                    super::$name(&h).await;
                    h.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = super::Harness::postgres().await else { return };
                    super::$name(&h).await;
                    h.finish().await;
                }
            )*
        }
    };
}

conformance!(
    append_and_read_back,
    failed_batch_leaves_nothing,
    reappend_is_idempotent,
    positions_are_gap_free_and_ordered,
    rollback_removes_exactly_the_ledgers_above_the_fork,
    readers_see_only_committed_batches,
    bad_batches_are_refused_with_the_reason,
    events_are_append_only_in_the_database,
    projection_rows_follow_batches_and_rollbacks,
);
