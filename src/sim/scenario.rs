//! Golden-fixture scenario files (`contract.md` §9) served as a chain.
//!
//! Each step is one transaction invoking the step's entrypoint (the name before `(` in `action`;
//! the fixture carries no machine-readable arguments, so the envelope's argument list is empty),
//! with the step's events (other contracts' events first, then the stream contract's, each group
//! in emission order) and, in its meta, the `Stream` entries whose `state_scval_xdr` changed (or
//! their removal). Steps sharing a `ledger_seq` are successive transactions of that ledger; the
//! ledgers between steps exist, empty, with close times rising between the steps' timestamps.
//! Failed steps (`result` starting with `Err`) are failed transactions without events.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use stellar_xdr::{Limits, ReadXdr, ScVal};

use super::chain::{MetaFormat, SimChain, SimError, SimEvent, StreamChange, TxSpec};

/// Depth and length limits for fixture XDR.
fn limits(len: usize) -> Limits {
    Limits { depth: 500, len }
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(default)]
    contract_id: Option<String>,
    topics_xdr: Vec<String>,
    data_xdr: String,
}

#[derive(Debug, Deserialize)]
struct RawStep {
    index: u64,
    action: String,
    result: String,
    ledger_seq: u32,
    ledger_timestamp: u64,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default)]
    other_contract_events: Vec<RawEvent>,
    #[serde(default)]
    state_after: BTreeMap<String, Option<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct RawScenario {
    scenario: String,
    contract_id: String,
    steps: Vec<RawStep>,
}

/// A loaded scenario and the chain that serves it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// The Fluxora contract's `C…` id.
    pub contract_id: String,
    pub chain: SimChain,
    /// For each step index: (ledger sequence, application order of its transaction).
    pub step_positions: Vec<(u32, u32)>,
}

fn contract_bytes(file: &str, strkey: &str) -> Result<[u8; 32], SimError> {
    match stellar_strkey::Strkey::from_string(strkey) {
        Ok(stellar_strkey::Strkey::Contract(c)) => Ok(c.0),
        _ => Err(SimError::Scenario {
            file: file.to_string(),
            reason: format!("`{strkey}` is not a contract strkey"),
        }),
    }
}

fn scval(file: &str, where_: &str, b64: &str) -> Result<ScVal, SimError> {
    ScVal::from_xdr_base64(b64, limits(b64.len())).map_err(|e| SimError::Scenario {
        file: file.to_string(),
        reason: format!("{where_}: not a base64 ScVal: {e}"),
    })
}

/// Loads a scenario file and builds its chain.
pub fn load(path: &Path, passphrase: &str, format: MetaFormat) -> Result<Scenario, SimError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| SimError::Io {
        file: file.clone(),
        source,
    })?;
    parse(&file, &bytes, passphrase, format)
}

/// Builds a scenario's chain from the file's bytes (`file` names it in errors).
pub fn parse(
    file: &str,
    bytes: &[u8],
    passphrase: &str,
    format: MetaFormat,
) -> Result<Scenario, SimError> {
    let bad = |reason: String| SimError::Scenario {
        file: file.to_string(),
        reason,
    };
    let raw: RawScenario =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a scenario file: {e}")))?;
    let contract = contract_bytes(file, &raw.contract_id)?;
    let first = raw
        .steps
        .first()
        .ok_or_else(|| bad("has no steps".into()))?;
    let mut chain = SimChain::new(passphrase, contract, first.ledger_seq, format);

    // Group steps by ledger, keeping order; check sequences and times never go backwards.
    let mut groups: Vec<(u32, u64, Vec<&RawStep>)> = Vec::new();
    for step in &raw.steps {
        match groups.last_mut() {
            Some((seq, ts, steps)) if *seq == step.ledger_seq => {
                if *ts != step.ledger_timestamp {
                    return Err(bad(format!(
                        "step {}: ledger {} has two close times",
                        step.index, step.ledger_seq
                    )));
                }
                steps.push(step);
            }
            Some((seq, ts, _)) if step.ledger_seq < *seq || step.ledger_timestamp < *ts => {
                return Err(bad(format!(
                    "step {}: ledger {} at {} goes back from ledger {seq} at {ts}",
                    step.index, step.ledger_seq, step.ledger_timestamp
                )));
            }
            _ => groups.push((step.ledger_seq, step.ledger_timestamp, vec![step])),
        }
    }

    let mut state: BTreeMap<u64, String> = BTreeMap::new();
    let mut step_positions = Vec::new();
    let mut prev: Option<(u32, u64)> = None;
    for (seq, ts, steps) in groups {
        // Empty ledgers in between, close times interpolated.
        if let Some((pseq, pts)) = prev {
            let gap = u64::from(seq - pseq);
            for i in 1..gap {
                let t = pts + (ts - pts) * i / gap;
                chain.push_ledger(t, Vec::new())?;
            }
        }
        let mut specs = Vec::with_capacity(steps.len());
        for step in steps {
            let function = step
                .action
                .split('(')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if function.is_empty() {
                return Err(bad(format!(
                    "step {}: no entrypoint in `{}`",
                    step.index, step.action
                )));
            }
            let success = step.result.starts_with("Ok(");
            let mut events = Vec::new();
            for (k, e) in step.other_contract_events.iter().enumerate() {
                let cid = e.contract_id.as_deref().ok_or_else(|| {
                    bad(format!(
                        "step {} other event {k}: no contract_id",
                        step.index
                    ))
                })?;
                events.push(SimEvent {
                    contract: contract_bytes(file, cid)?,
                    topics: e
                        .topics_xdr
                        .iter()
                        .map(|t| scval(file, &format!("step {} other event {k}", step.index), t))
                        .collect::<Result<_, _>>()?,
                    data: scval(
                        file,
                        &format!("step {} other event {k}", step.index),
                        &e.data_xdr,
                    )?,
                });
            }
            for (k, e) in step.events.iter().enumerate() {
                let where_ = format!("step {} event {k}", step.index);
                events.push(SimEvent {
                    contract,
                    topics: e
                        .topics_xdr
                        .iter()
                        .map(|t| scval(file, &where_, t))
                        .collect::<Result<_, _>>()?,
                    data: scval(file, &where_, &e.data_xdr)?,
                });
            }
            let mut stream_changes = Vec::new();
            if success {
                for (id, v) in &step.state_after {
                    let id: u64 = id
                        .parse()
                        .map_err(|_| bad(format!("step {}: stream id `{id}`", step.index)))?;
                    let xdr = v
                        .as_ref()
                        .and_then(|v| v.get("state_scval_xdr"))
                        .and_then(|x| x.as_str());
                    match (xdr, state.get(&id)) {
                        (Some(x), Some(old)) if x == old => {}
                        (Some(x), _) => {
                            stream_changes.push(StreamChange::Set {
                                stream_id: id,
                                value: scval(file, &format!("step {} stream {id}", step.index), x)?,
                            });
                            state.insert(id, x.to_string());
                        }
                        (None, Some(_)) => {
                            stream_changes.push(StreamChange::Removed { stream_id: id });
                            state.remove(&id);
                        }
                        (None, None) => {}
                    }
                }
            } else if !step.events.is_empty() {
                return Err(bad(format!("step {} failed but has events", step.index)));
            }
            specs.push(TxSpec {
                function,
                args: Vec::new(),
                success,
                events: if success { events } else { Vec::new() },
                stream_changes,
            });
        }
        let n = specs.len() as u32;
        chain.push_ledger(ts, specs)?;
        for order in 1..=n {
            step_positions.push((seq, order));
        }
        prev = Some((seq, ts));
    }
    Ok(Scenario {
        name: raw.scenario,
        contract_id: raw.contract_id,
        chain,
        step_positions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_scenario_becomes_a_chain() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let s = load(
                &path,
                "Test SDF Network ; September 2015",
                MetaFormat::V4InLcmV2,
            )
            .unwrap();
            let first = s.chain.first_seq();
            let tip = s.chain.tip().unwrap();
            assert_eq!(s.chain.ledgers().len() as u32, tip.seq - first + 1);
            for w in s.chain.ledgers().windows(2) {
                assert_eq!(w[1].header.previous_ledger_hash.0, w[0].hash);
                assert!(w[1].close_time >= w[0].close_time);
            }
            n += 1;
        }
        assert!(n >= 9);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = parse("x.json", b"{}", "p", MetaFormat::V4InLcmV2).unwrap_err();
        assert!(e.to_string().contains("x.json"), "{e}");
        let e = parse(
            "y.json",
            br#"{"scenario":"s","contract_id":"GABC","steps":[]}"#,
            "p",
            MetaFormat::V4InLcmV2,
        )
        .unwrap_err();
        assert!(e.to_string().contains("GABC"), "{e}");
    }
}
