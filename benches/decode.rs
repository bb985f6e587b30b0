//! Decode throughput: base64 `LedgerCloseMeta` (V2, meta V4) heavy in Fluxora events → verified
//! ledger bundles with typed events and Stream entries (decoded, with their raw XDR for the
//! store), on one core, through the path the RPC source takes ([`bundle_from_lcm_b64`]). Before
//! timing, every bundle is checked against the generic path (decode all, then bundle).
//!
//! `cargo bench --bench decode` prints `decode contract_events_per_sec=<n>`.

/// The binary's allocator (mimalloc), so the figure is what `fluxora` gets.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::{Duration, Instant};

use fluxora::chain::meta::{
    bundle_from_lcm, bundle_from_lcm_b64, bundle_from_lcm_xdr, decode_b64, network_id,
    ContractFilter, XdrLimits,
};
use fluxora::chain::synth::{ledger_close_meta, SynthTx};
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr, ScVal, WriteXdr};

const PASSPHRASE: &str = "Test SDF Network ; September 2015";
const CONTRACT: &str = "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD2KM";

fn scval(b64: &str) -> Result<ScVal, String> {
    ScVal::from_xdr_base64(
        b64,
        Limits {
            depth: 500,
            len: 1 << 20,
        },
    )
    .map_err(|e| e.to_string())
}

fn golden_txs(dir: &Path) -> Result<Vec<SynthTx>, String> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.to_string_lossy().contains("random_seed")
        })
        .collect();
    files.sort();
    for p in files {
        let text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
        let f: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        for step in f["steps"].as_array().into_iter().flatten() {
            let Some(events) = step["events"].as_array() else {
                continue;
            };
            if events.is_empty() {
                continue;
            }
            let mut evs = Vec::new();
            for e in events {
                let topics = e["topics_xdr"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| scval(t.as_str().unwrap_or_default()))
                    .collect::<Result<Vec<_>, _>>()?;
                evs.push((topics, scval(e["data_xdr"].as_str().unwrap_or_default())?));
            }
            let mut changes = Vec::new();
            if let Some(st) = step["state_after"].as_object() {
                for (id, s) in st {
                    let Ok(id) = id.parse::<u64>() else { continue };
                    if evs.iter().any(|(t, _)| t.get(1) == Some(&ScVal::U64(id))) {
                        changes.push((
                            id,
                            match s["state_scval_xdr"].as_str() {
                                Some(b) => Some(scval(b)?),
                                None => None,
                            },
                        ));
                    }
                }
            }
            out.push(SynthTx {
                function: step["action"]
                    .as_str()
                    .unwrap_or("f")
                    .split('(')
                    .next()
                    .unwrap_or("f")
                    .to_string(),
                args: vec![ScVal::U64(out.len() as u64)],
                events: evs,
                stream_changes: changes,
                success: true,
                seq_num: out.len() as i64 + 1,
            });
        }
    }
    Ok(out)
}

fn main() -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle");
    let txs = golden_txs(&dir)?;
    let contract = match stellar_strkey::Strkey::from_string(CONTRACT) {
        Ok(stellar_strkey::Strkey::Contract(c)) => c.0,
        _ => return Err("bad contract".into()),
    };
    let nid = network_id(PASSPHRASE);
    let payloads = build(&txs, &nid, contract)?;
    let mut bare = txs.clone();
    for t in &mut bare {
        t.stream_changes.clear();
    }
    let bare_payloads = build(&bare, &nid, contract)?;
    let filter = ContractFilter::from_bytes(contract);
    measure(
        &payloads,
        &nid,
        &filter,
        "decode",
        "contract_events_per_sec",
    )?;
    // Informational: the same transactions without their Stream storage entries.
    measure(
        &bare_payloads,
        &nid,
        &filter,
        "decode (events only, no Stream entries)",
        "events_only_per_sec",
    )?;
    Ok(())
}

/// 20 ledgers × 100 transactions, cycling through every golden transaction with events.
fn build(
    txs: &[SynthTx],
    nid: &[u8; 32],
    contract: [u8; 32],
) -> Result<Vec<(String, String)>, String> {
    let nid = *nid;
    let mut payloads = Vec::new();
    let mut prev = [0u8; 32];
    let mut it = txs.iter().cloned().cycle();
    for l in 0..20u32 {
        let chunk: Vec<SynthTx> = (0..100)
            .filter_map(|j| {
                it.next().map(|mut t| {
                    t.seq_num = i64::from(l) * 1000 + j;
                    t
                })
            })
            .collect();
        let (lcm, hash) = ledger_close_meta(
            &nid,
            5_000_000 + l,
            prev,
            1_700_000_000 + u64::from(l) * 5,
            contract,
            &chunk,
            true,
        )
        .map_err(|e| e.to_string())?;
        prev = hash;
        payloads.push((
            hex::encode(hash),
            lcm.to_xdr_base64(Limits::none())
                .map_err(|e| e.to_string())?,
        ));
    }
    Ok(payloads)
}

fn measure(
    payloads: &[(String, String)],
    nid: &[u8; 32],
    filter: &ContractFilter,
    label: &str,
    key: &str,
) -> Result<(), String> {
    let nid = *nid;
    let filter = *filter;
    let limits = XdrLimits::default();
    let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();

    // What the RPC source does with each `getLedgers` entry: base64 → bundle.
    let run = |payloads: &[(String, String)]| -> Result<(usize, usize), String> {
        let mut events = 0usize;
        let mut unrecognized = 0usize;
        for (hash, b64) in payloads {
            let b = bundle_from_lcm_b64(b64, "bench", limits, &nid, &filter, Some(hash))
                .map_err(|e| e.to_string())?;
            for t in &b.txs {
                events += t.events.len();
                unrecognized += t
                    .events
                    .iter()
                    .filter(|e| e.decoded.is_unrecognized())
                    .count();
            }
        }
        Ok((events, unrecognized))
    };
    // The bundles are the ones the generic path (decode everything, then bundle) gives.
    for (hash, b64) in payloads {
        let lcm: LedgerCloseMeta =
            decode_b64("LedgerCloseMeta", "bench", b64, limits).map_err(|e| e.to_string())?;
        let want = bundle_from_lcm(&lcm, &nid, &filter, Some(hash)).map_err(|e| e.to_string())?;
        let got = bundle_from_lcm_b64(b64, "bench", limits, &nid, &filter, Some(hash))
            .map_err(|e| e.to_string())?;
        if got != want {
            return Err(format!("{label}: ledger {} bundles differ", want.sequence));
        }
    }
    if std::env::var("DECODE_BENCH_SPLIT").is_ok() {
        // Where the time goes: base64 alone, then the walk from bytes.
        let t = Instant::now();
        let mut raw = Vec::new();
        for (_, b64) in payloads {
            raw.push(
                base64_simd::STANDARD
                    .decode_to_vec(b64.as_bytes())
                    .map_err(|e| e.to_string())?,
            );
        }
        let d = t.elapsed();
        let t = Instant::now();
        for ((hash, _), bytes) in payloads.iter().zip(&raw) {
            bundle_from_lcm_xdr(bytes, "bench", limits, &nid, &filter, Some(hash))
                .map_err(|e| e.to_string())?;
        }
        println!(
            "{label} split base64_ms={:.2} bundle_ms={:.2}",
            d.as_secs_f64() * 1000.0,
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    // Warm-up.
    let (per_pass, unrecognized) = run(payloads)?;
    if unrecognized > 0 {
        return Err(format!(
            "{unrecognized} unrecognized events in the bench payloads"
        ));
    }
    let start = Instant::now();
    let mut events = 0usize;
    let mut passes = 0usize;
    while start.elapsed() < Duration::from_secs(3) {
        events += run(payloads)?.0;
        passes += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label}: ledgers={} txs_per_ledger=100 events_per_pass={per_pass} base64_bytes_per_pass={bytes} passes={passes}",
        payloads.len()
    );
    println!("{label} {key}={}", (events as f64 / secs) as u64);
    Ok(())
}
