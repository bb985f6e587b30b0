//! The fold against the real contract: every oracle scenario's events, folded in order, must give
//! exactly the contract's own `Stream` state after every step (every field the storage entry
//! holds), with no event skipped.

use std::path::Path;

use fluxora::contract::{ContractEvent, StreamEntry};
use fluxora::projection::{EventContext, Projection};
use serde_json::Value;
use stellar_xdr::{Limits, ReadXdr, ScVal};

fn scval(b64: &str) -> ScVal {
    ScVal::from_xdr_base64(
        b64,
        Limits {
            depth: 500,
            len: b64.len(),
        },
    )
    .unwrap()
}

fn scenarios() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// Folds a scenario; with `entries`, every step's `state_after` is also observed as the
/// transaction's storage entries. Without, the events-only state is compared (on a copy) with
/// the contract's state after every step, and the differences are returned.
fn fold(doc: &Value, entries: bool) -> (Projection, Vec<String>) {
    let mut p = Projection::default();
    let mut diffs = Vec::new();
    for step in doc["steps"].as_array().unwrap() {
        if !step["result"].as_str().unwrap().starts_with("Ok(") {
            continue;
        }
        let ledger = step["ledger_seq"].as_u64().unwrap() as u32;
        let function = step["action"]
            .as_str()
            .unwrap()
            .split('(')
            .next()
            .unwrap()
            .trim()
            .to_string();
        let tx = format!("step-{}", step["index"]);
        let ctx = EventContext {
            ledger,
            close_time: step["ledger_timestamp"].as_u64().unwrap(),
            tx_hash: &tx,
            function: Some(&function),
        };
        for e in step["events"].as_array().unwrap() {
            let topics: Vec<ScVal> = e["topics_xdr"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| scval(t.as_str().unwrap()))
                .collect();
            let ev = ContractEvent::decode(&topics, &scval(e["data_xdr"].as_str().unwrap()));
            p.apply(&ctx, &ev);
        }
        let mut copy = p.clone();
        let target = if entries { &mut p } else { &mut copy };
        {
            let p = target;
            for (id, st) in step["state_after"].as_object().unwrap() {
                let id: u64 = id.parse().unwrap();
                let entry = st
                    .get("state_scval_xdr")
                    .and_then(Value::as_str)
                    .map(|x| StreamEntry::from_scval(&scval(x)).unwrap());
                if entry.is_none() && !p.streams.contains_key(&id) {
                    continue; // an offer or an unused id
                }
                if !p.observe_entry(ledger, id, entry.as_ref()) && !entries {
                    diffs.push(format!(
                        "step {} stream {id}: {:?}",
                        step["index"], p.streams[&id].verification.reasons
                    ));
                }
            }
        }
    }
    (p, diffs)
}

#[test]
fn events_alone_give_the_contract_state_after_every_step() {
    let mut report = Vec::new();
    for path in scenarios() {
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let (_, diffs) = fold(&doc, false);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        report.extend(diffs.into_iter().map(|d| format!("{name} {d}")));
    }
    assert!(
        report.is_empty(),
        "{} problems:\n{}",
        report.len(),
        report.join("\n")
    );
}

#[test]
fn folded_state_equals_the_contract_storage_after_every_step() {
    let mut report = Vec::new();
    let mut checked = 0;
    for path in scenarios() {
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let (p, _) = fold(&doc, true);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for s in p.streams.values() {
            if !s.verification.reasons.is_empty() {
                report.push(format!(
                    "{name} stream {}: {:?}",
                    s.stream_id, s.verification.reasons
                ));
            }
        }
        checked += p
            .streams
            .values()
            .filter(|s| s.verification.checked_ledger.is_some())
            .count();
        for s in p.streams.values() {
            if !s.closed && !s.verification.verified {
                report.push(format!("{name} stream {}: never verified", s.stream_id));
            }
        }
        for k in &p.skipped {
            report.push(format!("{name}: skipped {k}"));
        }
    }
    assert!(
        report.is_empty(),
        "{} problems:\n{}",
        report.len(),
        report.join("\n")
    );
    assert!(
        checked >= 72,
        "only {checked} streams were compared with the contract's storage"
    );
}
