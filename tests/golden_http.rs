//! Golden conformance through the real path: every scenario in `fixtures/contract-oracle/` (a
//! file added later is picked up without code changes) is served by the simulator as a Stellar
//! RPC node over loopback HTTP, ingested by the real RPC client and ingestor into a real store
//! (SQLite and PostgreSQL), and then, after the last step of every ledger, every derivable field
//! of the contract's `state_after` and its `views_after` values must equal the stored projection
//! as of that ledger (time travel), with the amounts computed at the ledger's close time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fluxora::chain::http::HttpPolicy;
use fluxora::chain::rpc::RpcSource;
use fluxora::chain::{ContractFilter, LedgerSource};
use fluxora::config::DatabaseUrl;
use fluxora::domain::accrual::{calculate_accrued, get_withdrawable_view};
use fluxora::domain::amount::format_amount;
use fluxora::ingest::{IngestConfig, Ingestor};
use fluxora::projection::view::{stream_object, ViewOptions};
use fluxora::projection::StreamState;
use fluxora::sim::http::{serve, SimState};
use fluxora::sim::{scenario, MetaFormat, DEFAULT_PASSPHRASE};
use fluxora::store::{self, Store};
use fluxora::testing::TempPgDatabase;
use serde_json::{json, Value};

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert!(v.len() >= 9, "the oracle scenarios are missing");
    v
}

/// Our state rendered with the fixture's field names and encodings.
fn as_fixture(s: &StreamState) -> Value {
    let fact = |v: Value| v.get("value").cloned().unwrap_or(Value::Null);
    let ours = serde_json::to_value(s).unwrap();
    json!({
        "stream_id": s.stream_id,
        "sender": s.sender,
        "recipient": s.recipient,
        "claim_owner": s.claim_owner,
        "deposit_amount": s.deposit_amount.to_string(),
        "rate_per_second": s.rate_per_second.to_string(),
        "start_time": s.start_time,
        "cliff_time": s.cliff_time,
        "end_time": s.end_time,
        "withdrawn_amount": s.withdrawn_amount.to_string(),
        "status": ours["status"],
        "cancelled_at": s.cancelled_at,
        "checkpointed_amount": s.checkpointed_amount.to_string(),
        "checkpointed_at": s.checkpointed_at,
        "withdraw_dust_threshold": s.withdraw_dust_threshold.to_string(),
        "memo_hex": s.memo_hex,
        "kind": fact(ours["kind"].clone()),
        "last_pause_toggle_ledger": s.last_pause_toggle_ledger,
        "last_withdraw_ledger": fact(ours["last_withdraw_ledger"].clone()),
        "irrevocable": fact(ours["irrevocable"].clone()),
        "witness": fact(ours["witness"].clone()),
        "is_pooled": s.is_pooled,
        "last_rate_change_ledger": s.last_rate_change_ledger,
        "delegation_depth": s.delegation_depth,
        "parent_stream_id": s.parent_stream_id,
        "decommissioned": s.decommissioned,
        "paused_at_timestamp": s.paused_at_timestamp,
        "cumulative_paused_duration": s.cumulative_paused_duration,
    })
}

fn policy() -> HttpPolicy {
    HttpPolicy {
        total_timeout: Duration::from_secs(10),
        max_attempts: 3,
        base_backoff: Duration::from_millis(5),
        ..HttpPolicy::default()
    }
}

/// Serves one scenario over HTTP, ingests it into `store`, compares; returns the problems.
async fn check(path: &Path, store: Arc<dyn Store>) -> (Vec<String>, usize) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let sc = scenario::load(path, DEFAULT_PASSPHRASE, MetaFormat::V4InLcmV2).unwrap();
    let first = sc.chain.first_seq();
    let tip = sc.chain.tip().unwrap().seq;
    let server = serve(
        SimState::new(sc.chain.clone()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let source: Arc<dyn LedgerSource> = Arc::new(
        RpcSource::new(
            &format!("{}/", server.url()),
            DEFAULT_PASSPHRASE,
            ContractFilter::from_bytes(sc.chain.contract),
            policy(),
        )
        .unwrap(),
    );
    let ing = Ingestor::new(
        store.clone(),
        source,
        IngestConfig {
            start_ledger: Some(first),
            batch_ledgers: 50,
            network_passphrase: DEFAULT_PASSPHRASE.into(),
            stop_at: Some(tip),
            ..Default::default()
        },
    );
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(Duration::from_secs(120), ing.run(rx))
        .await
        .expect("ingestion finished in time")
        .unwrap();
    server.stop().await;

    let opts = ViewOptions {
        decimals: 7,
        contract_id: sc.contract_id.clone(),
    };
    // The last successful-or-not step of each ledger: state_after is the state after it.
    let mut last_of_ledger: BTreeMap<u64, &Value> = BTreeMap::new();
    for step in doc["steps"].as_array().unwrap() {
        last_of_ledger.insert(step["ledger_seq"].as_u64().unwrap(), step);
    }
    let mut problems = Vec::new();
    let mut compared = 0;
    for (ledger, step) in last_of_ledger {
        let ledger = ledger as u32;
        let now = step["ledger_timestamp"].as_u64().unwrap();
        let stored_close = store.ledger(ledger).await.unwrap().unwrap().close_time;
        assert_eq!(
            stored_close as u64, now,
            "{name}: close time of ledger {ledger}"
        );
        let balance = step["contract_token_balance"]
            .as_str()
            .map(|b| b.parse::<i128>().unwrap());
        let tag = format!("{name} ledger {ledger} (step {})", step["index"]);
        for (id, want) in step["state_after"].as_object().unwrap() {
            let id: u64 = id.parse().unwrap();
            let got = store.stream_at(id, ledger).await.unwrap();
            let Some(got) = got else {
                if !want.is_null() {
                    problems.push(format!("{tag}: stream {id} missing from the store"));
                }
                continue;
            };
            if want.is_null() {
                if !got.closed {
                    problems.push(format!(
                        "{tag}: stream {id} removed on chain, not closed here"
                    ));
                }
                continue;
            }
            compared += 1;
            let ours = as_fixture(&got);
            for (k, v) in ours.as_object().unwrap() {
                if want.get(k) != Some(v) {
                    problems.push(format!(
                        "{tag} stream {id} `{k}`: contract {} stored {v}",
                        want.get(k).map_or("-".into(), |w| w.to_string())
                    ));
                }
            }
            if !got.verification.verified {
                problems.push(format!(
                    "{tag} stream {id}: not verified: {:?}",
                    got.verification.reasons
                ));
            }
            // The views, from the stored state at the ledger's close time.
            if let Some(view) = step["views_after"].get(id.to_string()) {
                if !view.is_null() {
                    let t = got.terms();
                    let acc = calculate_accrued(&t, now);
                    let wd = get_withdrawable_view(&t, now, balance);
                    let want_acc: i128 =
                        view["calculate_accrued"].as_str().unwrap().parse().unwrap();
                    let want_wd: i128 = view["get_withdrawable"].as_str().unwrap().parse().unwrap();
                    if (acc, wd) != (want_acc, want_wd) {
                        problems.push(format!(
                            "{tag} stream {id}: accrued {acc} vs {want_acc}, withdrawable {wd} vs {want_wd}"
                        ));
                    }
                    // And the client object shows the same accrued amount as a decimal string.
                    let obj = stream_object(&got, now, &opts);
                    if obj.streamed_amount != format_amount(want_acc, 7) {
                        problems.push(format!(
                            "{tag} stream {id}: streamedAmount {} vs {}",
                            obj.streamed_amount,
                            format_amount(want_acc, 7)
                        ));
                    }
                }
            }
        }
    }
    (problems, compared)
}

fn report(problems: Vec<String>, compared: usize) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(compared > 500, "only {compared} stream states compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_through_http_and_sqlite_matches_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (mut problems, mut compared) = (Vec::new(), 0);
    for (i, path) in scenarios().iter().enumerate() {
        let url = DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            dir.path().join(format!("s{i}.db")).display()
        ));
        let s: Arc<dyn Store> = Arc::from(store::open(&url).await.unwrap());
        let (p, c) = check(path, s).await;
        problems.extend(p);
        compared += c;
    }
    report(problems, compared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_through_http_and_postgres_matches_the_contract() {
    let (mut problems, mut compared) = (Vec::new(), 0);
    for path in scenarios() {
        // No server and CI unset: TempPgDatabase said so and the test has nothing to run.
        let Some(db) = TempPgDatabase::create().await.unwrap() else {
            return;
        };
        let s: Arc<dyn Store> = Arc::from(
            store::open(&DatabaseUrl::Postgres(db.url.clone()))
                .await
                .unwrap(),
        );
        let (p, c) = check(&path, s.clone()).await;
        problems.extend(p);
        compared += c;
        drop(s);
        db.drop_db().await.unwrap();
    }
    report(problems, compared);
}
