//! Golden tests: every event of every scenario in `fixtures/contract-oracle/` decodes to exactly
//! the values the real contract emitted (compared with the `decoded/` copies where present, and
//! always with stellar-xdr's own JSON form of the ScVal), and every `state_after` Stream entry
//! decodes to the fixture's values. Iterates the directory: new scenario files are picked up.

use std::path::{Path, PathBuf};

use fluxora::contract::events::{GLOBAL_TOPICS, STREAM_TOPICS};
use fluxora::contract::{ContractEvent, StreamEntry};
use serde_json::{json, Map, Value};
use stellar_xdr::{Limits, ReadXdr, ScVal};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle")
}

fn scenario_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    assert!(v.len() >= 9, "expected the golden scenarios in {:?}", dir());
    v
}

fn scval(b64: &str) -> ScVal {
    ScVal::from_xdr_base64(
        b64,
        Limits {
            depth: 500,
            len: 1 << 20,
        },
    )
    .unwrap()
}

/// stellar-xdr serde JSON of an ScVal → the plain JSON the decode output uses.
fn plain(v: &Value) -> Value {
    if v == "void" {
        return Value::Null;
    }
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("unexpected ScVal JSON {v}"));
    let (k, inner) = obj.iter().next().unwrap();
    match k.as_str() {
        "u64" | "u32" => match inner {
            Value::String(s) => json!(s.parse::<u64>().unwrap()),
            other => other.clone(),
        },
        "i128" => match inner {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        },
        "bool" | "address" | "string" | "symbol" => inner.clone(),
        "bytes" => json!(inner.as_str().unwrap().to_lowercase()),
        "vec" => Value::Array(inner.as_array().unwrap().iter().map(plain).collect()),
        "map" => {
            let entries = inner.as_array().unwrap();
            if entries.iter().all(|e| e["key"].get("symbol").is_some()) {
                let mut m = Map::new();
                for e in entries {
                    m.insert(
                        e["key"]["symbol"].as_str().unwrap().to_string(),
                        plain(&e["val"]),
                    );
                }
                Value::Object(m)
            } else {
                Value::Array(
                    entries
                        .iter()
                        .map(|e| json!([plain(&e["key"]), plain(&e["val"])]))
                        .collect(),
                )
            }
        }
        other => panic!("unexpected ScVal arm {other}"),
    }
}

/// The fields the typed decoder must produce, from the ScVal JSON of topics and data.
fn expected_fields(sym: &str, topics: &[Value], data: &Value) -> Value {
    let d = plain(data);
    let t = |i: usize| plain(&topics[i]);
    match sym {
        "completed" | "cancelled" | "closed" | "resumed" => json!({"stream_id": d[1]}),
        "AdminUpd" => json!({"old_admin": d[0], "new_admin": d[1]}),
        "res_rel" => {
            json!({"holder": t(1), "start_id": d[0], "count": d[1], "consumed": d[2], "reclaimed": d[3]})
        }
        "upgrade" => {
            json!({"new_wasm_hash": d[0], "version_0": d[1], "version_1": d[2], "admin": d[3]})
        }
        "pr_pause" | "pr_resume" => {
            let mut m = d.as_object().unwrap().clone();
            m.insert("admin".into(), t(1));
            Value::Object(m)
        }
        _ => d,
    }
}

#[test]
fn every_golden_event_decodes_to_exact_values() {
    let mut total = 0usize;
    let mut types = std::collections::BTreeSet::new();
    for path in scenario_files() {
        let name = path.file_name().unwrap().to_owned();
        let f: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let decoded_path = dir().join("decoded").join(&name);
        let decoded: Option<Value> = decoded_path.exists().then(|| {
            serde_json::from_str(&std::fs::read_to_string(&decoded_path).unwrap()).unwrap()
        });
        for (si, step) in f["steps"].as_array().unwrap().iter().enumerate() {
            let events = step["events"].as_array().unwrap();
            if !step["result"].as_str().unwrap().starts_with("Ok") {
                assert!(
                    events.is_empty(),
                    "{name:?} step {si}: failed step with events"
                );
            }
            for (ei, ev) in events.iter().enumerate() {
                let where_ = format!("{name:?} step {si} event {ei}");
                let topics: Vec<ScVal> = ev["topics_xdr"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| scval(t.as_str().unwrap()))
                    .collect();
                let data = scval(ev["data_xdr"].as_str().unwrap());
                let typed = ContractEvent::decode(&topics, &data);
                assert!(!typed.is_unrecognized(), "{where_}: {typed:?}");
                // Independent JSON of the ScVals: the decoded/ copy when present, else stellar-xdr's serde.
                let (tj, dj): (Vec<Value>, Value) = match &decoded {
                    Some(dec) => {
                        let dev = &dec["steps"][si]["events"][ei];
                        assert_eq!(
                            dev["data_xdr"], ev["data_xdr"],
                            "{where_}: decoded/ copy out of sync"
                        );
                        (
                            dev["topics_decoded"].as_array().unwrap().clone(),
                            dev["data_decoded"].clone(),
                        )
                    }
                    None => (
                        topics
                            .iter()
                            .map(|t| serde_json::to_value(t).unwrap())
                            .collect(),
                        serde_json::to_value(&data).unwrap(),
                    ),
                };
                let sym = tj[0]["symbol"].as_str().unwrap();
                assert_eq!(typed.type_name(), sym, "{where_}");
                assert!(
                    STREAM_TOPICS.contains(&sym) || GLOBAL_TOPICS.contains(&sym),
                    "{where_}"
                );
                if STREAM_TOPICS.contains(&sym) {
                    assert_eq!(
                        json!(typed.stream_id()),
                        plain(&tj[1]),
                        "{where_}: stream id"
                    );
                } else {
                    assert_eq!(typed.stream_id(), None, "{where_}");
                }
                let got = serde_json::to_value(&typed).unwrap();
                assert_eq!(got, expected_fields(sym, &tj, &dj), "{where_}");
                types.insert(sym.to_string());
                total += 1;
            }
        }
    }
    assert!(total >= 138, "only {total} events");
    assert!(types.len() >= 30, "types seen: {types:?}");
}

#[test]
fn every_stream_state_decodes_to_the_fixture_values() {
    let mut n = 0usize;
    for path in scenario_files() {
        let f: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (si, step) in f["steps"].as_array().unwrap().iter().enumerate() {
            for (id, st) in step["state_after"].as_object().unwrap() {
                if st.is_null() {
                    continue;
                }
                let entry =
                    StreamEntry::from_scval(&scval(st["state_scval_xdr"].as_str().unwrap()))
                        .unwrap_or_else(|e| panic!("{path:?} step {si} stream {id}: {e}"));
                let mut want = st.as_object().unwrap().clone();
                want.remove("state_scval_xdr");
                let memo = want.remove("memo_hex").unwrap();
                want.insert("memo".into(), memo);
                let md = want.remove("metadata_hex").unwrap();
                want.insert("metadata".into(), md);
                let got = serde_json::to_value(&entry).unwrap();
                assert_eq!(got, Value::Object(want), "{path:?} step {si} stream {id}");
                assert_eq!(got.as_object().unwrap().len(), 29);
                assert_eq!(entry.stream_id.to_string(), *id);
                n += 1;
            }
        }
    }
    assert!(n > 100, "only {n} states");
}

#[test]
fn unknown_topics_and_wrong_shapes_are_unrecognized_not_fatal() {
    // A real `withdrew` event, then mutated.
    let f: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("linear_cliff_withdraw_complete_close.json")).unwrap(),
    )
    .unwrap();
    let ev = f["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["events"].as_array().unwrap().iter())
        .find(|e| e["topics_xdr"][0] == "AAAADwAAAAh3aXRoZHJldw==")
        .unwrap()
        .clone();
    let topics: Vec<ScVal> = ev["topics_xdr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| scval(t.as_str().unwrap()))
        .collect();
    let data = scval(ev["data_xdr"].as_str().unwrap());
    assert_eq!(
        ContractEvent::decode(&topics, &data).type_name(),
        "withdrew"
    );

    // Wrong data type.
    match ContractEvent::decode(&topics, &ScVal::U32(1)) {
        ContractEvent::Unrecognized(u) => {
            assert!(
                u.reason.contains("withdrew data: expected Map"),
                "{}",
                u.reason
            );
            assert_eq!(u.topic.as_deref(), Some("withdrew"));
            assert_eq!(
                u.topics_xdr,
                ev["topics_xdr"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            );
        }
        other => panic!("{other:?}"),
    }
    // Unknown topic.
    let mut t2 = topics.clone();
    t2[0] = ScVal::Symbol("sndr_xfr".try_into().unwrap());
    match ContractEvent::decode(&t2, &data) {
        ContractEvent::Unrecognized(u) => assert!(u.reason.contains("unknown topic `sndr_xfr`")),
        other => panic!("{other:?}"),
    }
    // Topic id disagreeing with the data.
    let mut t3 = topics.clone();
    t3[1] = ScVal::U64(987654);
    assert!(ContractEvent::decode(&t3, &data).is_unrecognized());
    // Missing topic[1].
    assert!(ContractEvent::decode(&topics[..1], &data).is_unrecognized());
    // No topics at all.
    assert!(ContractEvent::decode(&[], &data).is_unrecognized());
}
