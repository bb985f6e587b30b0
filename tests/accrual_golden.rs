//! Golden conformance of the accrual rules: for every step of every scenario in
//! `fixtures/contract-oracle/` (a file added later is picked up without code changes), the
//! contract's own `state_after` fed to our accrual must give exactly the contract's own
//! `calculate_accrued` and `get_withdrawable` views at the step's ledger time.

use std::path::Path;

use fluxora::domain::accrual::{
    calculate_accrued, get_withdrawable_view, AccrualTerms, StreamKind, StreamStatus,
};
use serde_json::Value;

fn i128_of(v: &Value, field: &str) -> i128 {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("{field}: {e}"))
}

fn u64_of(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a u64: {v}"))
}

fn terms(v: &Value) -> AccrualTerms {
    let kind = match v["kind"].as_str() {
        Some("Linear") => StreamKind::Linear,
        Some("CliffOnly") => StreamKind::CliffOnly,
        Some("CliffSlope") => StreamKind::CliffSlope,
        other => panic!("unknown kind {other:?}"),
    };
    let status = match v["status"].as_str() {
        Some("Active") => StreamStatus::Active,
        Some("Paused") => StreamStatus::Paused,
        Some("Completed") => StreamStatus::Completed,
        Some("Cancelled") => StreamStatus::Cancelled,
        other => panic!("unknown status {other:?}"),
    };
    AccrualTerms {
        kind,
        status,
        deposit_amount: i128_of(v, "deposit_amount"),
        rate_per_second: i128_of(v, "rate_per_second"),
        start_time: u64_of(v, "start_time"),
        cliff_time: u64_of(v, "cliff_time"),
        end_time: u64_of(v, "end_time"),
        checkpointed_amount: i128_of(v, "checkpointed_amount"),
        checkpointed_at: u64_of(v, "checkpointed_at"),
        withdrawn_amount: i128_of(v, "withdrawn_amount"),
        cancelled_at: v["cancelled_at"].as_u64(),
    }
}

#[test]
fn accrual_matches_the_contract_views_in_every_scenario() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "scenarios missing from {}", dir.display());
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for file in &files {
        let doc: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let name = doc["scenario"].as_str().unwrap_or("?").to_string();
        for step in doc["steps"].as_array().unwrap() {
            let now = u64_of(step, "ledger_timestamp");
            let Some(views) = step["views_after"].as_object() else {
                continue;
            };
            for (id, view) in views {
                let state = &step["state_after"][id];
                if view.is_null() {
                    // The contract answers StreamNotFound: the stream is closed or never existed.
                    assert!(state.is_null(), "{name}: view missing for live stream {id}");
                    continue;
                }
                assert!(
                    !state.is_null(),
                    "{name}: view for stream {id} without state"
                );
                let t = terms(state);
                let want_acc: i128 = view["calculate_accrued"].as_str().unwrap().parse().unwrap();
                let want_wd: i128 = view["get_withdrawable"].as_str().unwrap().parse().unwrap();
                let got_acc = calculate_accrued(&t, now);
                let balance = step["contract_token_balance"]
                    .as_str()
                    .map(|b| b.parse::<i128>().unwrap());
                let got_wd = get_withdrawable_view(&t, now, balance);
                if (got_acc, got_wd) != (want_acc, want_wd) {
                    mismatches.push(format!(
                        "{name} step {} `{}` stream {id}: accrued {got_acc} vs {want_acc}, \
                         withdrawable {got_wd} vs {want_wd}",
                        step["index"],
                        step["action"].as_str().unwrap_or("")
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(checked > 3_000, "only {checked} views checked");
}
