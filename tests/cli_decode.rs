//! Black-box: the `fluxora decode` binary.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fluxora"))
}

fn fixture(rel: &str) -> String {
    format!("{}/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn decodes_a_scenario_file_to_json_lines() {
    let out = bin()
        .args([
            "decode",
            "--contract",
            "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD2KM",
            &fixture("contract-oracle/pause_resume.json"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["type"] == "paused" && l["fields"]["reason"].is_string()));
    assert!(lines.iter().any(|l| l["type"] == "resumed"));
    for l in &lines {
        for k in [
            "ledger",
            "tx_hash",
            "event_id",
            "contract_id",
            "type",
            "stream_id",
            "fields",
        ] {
            assert!(l.get(k).is_some(), "missing {k} in {l}");
        }
    }
}

#[test]
fn reads_stdin_and_base64_scval() {
    let mut child = bin()
        .args(["decode", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // ScVal Symbol("transfer")
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"AAAADwAAAAh0cmFuc2Zlcg==\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "scval");
    assert_eq!(v["value"]["symbol"], "transfer");
}

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let out = bin()
        .args(["decode", &fixture("stellar/README.md")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("README.md: line 1"), "{err}");
    let out = bin()
        .args(["decode", "/nonexistent/file.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.json"));
}

#[test]
fn get_transaction_fixture_carries_the_hash() {
    let out = bin()
        .args([
            "decode",
            &fixture("stellar/stellar-rpc/fixture_getTransaction_p23_metaV4_contract_event.json"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        v["tx_hash"],
        "32f7e5c3afd281fcaa99c0e990adf62f33e3bb341b1641a5c8b0b4a4dc55c487"
    );
    assert_eq!(v["ledger"], 490252);
}
