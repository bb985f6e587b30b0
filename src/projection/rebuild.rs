//! `fluxora rebuild` and `fluxora verify`: recompute every projection from the event store (the
//! stored events and `Stream` storage entries, ledger by ledger, through the same [`Projector`]
//! live ingestion uses) and compare with what is stored.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use stellar_xdr::ScVal;

use crate::chain::meta::{decode_b64, XdrLimits};
use crate::contract::{ContractEvent, StreamEntry};
use crate::store::{FlagsVersion, Store, StoreError, StreamVersion};

use super::projector::Projector;

/// Ledgers read per round trip.
const LEDGER_CHUNK: u32 = 2_000;
/// Differences listed in full (all are counted).
const MAX_LISTED: usize = 50;

/// Rebuild errors.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored event {event_id} (position {position}): {reason}")]
    BadEvent {
        event_id: String,
        position: i64,
        reason: String,
    },
    #[error("stored event {event_id} belongs to ledger {ledger}, which is not stored")]
    MissingLedger { event_id: String, ledger: u32 },
}

/// What a rebuild computed.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub projector: Projector,
    pub versions: Vec<StreamVersion>,
    pub flags: Vec<FlagsVersion>,
    pub events: u64,
    pub entries: u64,
    pub ledgers: u64,
    pub elapsed: Duration,
}

/// Progress callback: (ledgers done, ledgers in all).
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) + Send);

fn scval(b64: &str, what: &'static str, loc: &str) -> Result<ScVal, String> {
    decode_b64::<ScVal>(what, loc, b64, XdrLimits::default()).map_err(|e| e.to_string())
}

/// Decodes a stored event's raw XDR again (the raw XDR is the source of truth).
pub fn decode_stored(e: &crate::store::StoredEvent) -> Result<ContractEvent, String> {
    let topics = e
        .event
        .topic_xdr
        .iter()
        .map(|t| scval(t, "event topic", &e.event.event_id))
        .collect::<Result<Vec<_>, _>>()?;
    let data = scval(&e.event.data_xdr, "event data", &e.event.event_id)?;
    Ok(ContractEvent::decode(&topics, &data))
}

/// Folds every stored ledger from the start.
pub async fn rebuild(store: &dyn Store, progress: Progress<'_>) -> Result<Rebuilt, RebuildError> {
    let started = Instant::now();
    let mut out = Rebuilt::default();
    let (Some(first), Some(tip)) = (store.first_ledger().await?, store.tip().await?) else {
        return Ok(out);
    };
    let total = u64::from(tip.sequence - first) + 1;
    let mut p = Projector::default();
    let mut from = first;
    loop {
        let to = from.saturating_add(LEDGER_CHUNK - 1).min(tip.sequence);
        let (ledgers, events, entries) = tokio::try_join!(
            store.ledgers(from, to),
            store.events_in_ledgers(from, to),
            store.stream_entries(from, to)
        )?;
        let close: HashMap<u32, u64> = ledgers
            .iter()
            .map(|l| (l.sequence, u64::try_from(l.close_time).unwrap_or(0)))
            .collect();
        out.events += events.len() as u64;
        out.entries += entries.len() as u64;
        // Decode in parallel on every core; fold in order.
        let decoded = decode_all(&events).await?;
        let mut ei = events.iter().zip(decoded).peekable();
        let mut ni = entries.iter().peekable();
        loop {
            // The next (ledger, tx order) with an event or an entry.
            let next_ev = ei.peek().map(|(e, _)| (e.event.ledger, e.event.tx_order));
            let next_en = ni.peek().map(|n| (n.ledger, n.tx_order));
            let Some(key) = [next_ev, next_en].into_iter().flatten().min() else {
                break;
            };
            let (ledger, tx_order) = key;
            let Some(&ct) = close.get(&ledger) else {
                let event_id = ei
                    .peek()
                    .map(|(e, _)| e.event.event_id.clone())
                    .unwrap_or_default();
                return Err(RebuildError::MissingLedger { event_id, ledger });
            };
            if p.current_ledger() != Some(ledger) {
                p.begin_ledger(ledger, ct)?;
            }
            while let Some((e, ev)) = ei.next_if(|(e, _)| (e.event.ledger, e.event.tx_order) == key)
            {
                p.apply(&e.event.tx_hash, e.event.function.as_deref(), &ev);
            }
            while let Some(n) = ni.next_if(|n| (n.ledger, n.tx_order) == key) {
                match &n.value_xdr {
                    None => p.observe(n.stream_id, None),
                    Some(x) => {
                        let loc = format!("ledger {} tx {}", n.ledger, tx_order);
                        // An entry live ingestion could not read is skipped here too.
                        if let Ok(entry) =
                            scval(x, "Stream entry", &loc).and_then(|v| StreamEntry::from_scval(&v))
                        {
                            p.observe(n.stream_id, Some(&entry));
                        }
                    }
                }
            }
        }
        p.end_ledger()?;
        let d = p.take_delta();
        out.versions.extend(d.versions);
        out.flags.extend(d.flags);
        out.ledgers += u64::from(to - from) + 1;
        progress(out.ledgers, total);
        if to >= tip.sequence {
            break;
        }
        from = to + 1;
    }
    out.projector = p;
    out.elapsed = started.elapsed();
    Ok(out)
}

async fn decode_all(
    events: &[crate::store::StoredEvent],
) -> Result<Vec<ContractEvent>, RebuildError> {
    let bad = |e: &crate::store::StoredEvent, reason: String| RebuildError::BadEvent {
        event_id: e.event.event_id.clone(),
        position: e.position,
        reason,
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    if events.len() < 2_000 || workers == 1 {
        return events
            .iter()
            .map(|e| decode_stored(e).map_err(|r| bad(e, r)))
            .collect();
    }
    let chunk = events.len().div_ceil(workers);
    let results: Vec<Result<Vec<ContractEvent>, (usize, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = events
            .chunks(chunk)
            .enumerate()
            .map(|(ci, part)| {
                s.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, e)| decode_stored(e).map_err(|r| (ci * chunk + i, r)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err((0, "decoder thread panicked".to_string())))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(events.len());
    for r in results {
        match r {
            Ok(v) => out.extend(v),
            Err((i, reason)) => return Err(bad(&events[i.min(events.len() - 1)], reason)),
        }
    }
    Ok(out)
}

/// Differences between the stored projection and a rebuild.
#[derive(Debug, Default, Serialize)]
pub struct Comparison {
    pub stored_versions: u64,
    pub rebuilt_versions: u64,
    pub stored_streams: u64,
    pub differences: u64,
    /// The first differences, each naming the stream, ledger and fields.
    pub listed: Vec<String>,
}

impl Comparison {
    fn push(&mut self, d: String) {
        self.differences += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(d);
        }
    }
}

/// Names the fields that differ between two JSON states.
fn field_diff(a: &str, b: &str) -> String {
    let (Ok(serde_json::Value::Object(x)), Ok(serde_json::Value::Object(y))) = (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) else {
        return "unreadable state".into();
    };
    let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| x.get(*k) != y.get(*k))
        .map(|k| {
            format!(
                "{k}: stored {} rebuilt {}",
                x.get(k).map_or("-".into(), |v| v.to_string()),
                y.get(k).map_or("-".into(), |v| v.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Compares the stored projection (versions, current rows, flags) with a rebuild.
pub async fn compare(store: &dyn Store, rebuilt: &Rebuilt) -> Result<Comparison, StoreError> {
    let mut c = Comparison::default();
    let mut want: BTreeMap<(u64, u32), &StreamVersion> = BTreeMap::new();
    for v in &rebuilt.versions {
        want.insert((v.stream_id, v.ledger), v);
    }
    c.rebuilt_versions = want.len() as u64;
    let mut after = None;
    loop {
        let page = store.stream_versions(after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.stream_id, last.ledger));
        for v in &page {
            c.stored_versions += 1;
            match want.remove(&(v.stream_id, v.ledger)) {
                None => c.push(format!(
                    "stream {} ledger {}: stored version has no rebuilt counterpart",
                    v.stream_id, v.ledger
                )),
                Some(w) if w != v => c.push(format!(
                    "stream {} ledger {}: {}",
                    v.stream_id,
                    v.ledger,
                    if w.state != v.state {
                        field_diff(&v.state, &w.state)
                    } else {
                        format!(
                            "row columns differ (stored {}/{}/{}/{}, rebuilt {}/{}/{}/{})",
                            v.sender,
                            v.recipient,
                            v.status,
                            v.verified,
                            w.sender,
                            w.recipient,
                            w.status,
                            w.verified
                        )
                    }
                )),
                Some(_) => {}
            }
        }
    }
    for ((id, ledger), _) in want {
        c.push(format!(
            "stream {id} ledger {ledger}: rebuilt version missing from the store"
        ));
    }
    // Current rows: each stream's latest rebuilt state.
    let current = &rebuilt.projector.projection().streams;
    let mut seen = 0usize;
    let mut after = None;
    loop {
        let page = store
            .list_streams(&crate::store::StreamQuery {
                after,
                limit: 1_000,
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.stream_id);
        for s in &page {
            c.stored_streams += 1;
            match current.get(&s.stream_id) {
                Some(r) if r == s => seen += 1,
                Some(r) => {
                    seen += 1;
                    let (a, b) = (
                        serde_json::to_string(s).unwrap_or_default(),
                        serde_json::to_string(r).unwrap_or_default(),
                    );
                    c.push(format!(
                        "stream {}: current row differs from the rebuilt state: {}",
                        s.stream_id,
                        field_diff(&a, &b)
                    ))
                }
                None => c.push(format!(
                    "stream {}: stored, but no event creates it",
                    s.stream_id
                )),
            }
        }
    }
    if seen < current.len() {
        c.push(format!(
            "{} rebuilt streams have no current row",
            current.len() - seen
        ));
    }
    let flags = store.flag_versions().await?;
    if flags != rebuilt.flags {
        c.push(format!(
            "contract flags: {} stored versions, {} rebuilt, contents differ",
            flags.len(),
            rebuilt.flags.len()
        ));
    }
    Ok(c)
}

/// Problems in the stored hash chain and event order.
#[derive(Debug, Default, Serialize)]
pub struct ChainCheck {
    pub ledgers: u64,
    pub events: u64,
    pub problems: Vec<String>,
}

/// Re-checks the stored hash chain (each ledger's previous hash is the stored hash of the one
/// before), the cursor, and that positions are gap-free.
pub async fn check_chain(store: &dyn Store) -> Result<ChainCheck, StoreError> {
    let mut c = ChainCheck::default();
    let (Some(first), Some(tip)) = (store.first_ledger().await?, store.tip().await?) else {
        return Ok(c);
    };
    let mut prev: Option<crate::store::LedgerRecord> = None;
    let mut from = first;
    loop {
        let to = from.saturating_add(10_000 - 1).min(tip.sequence);
        for l in store.ledgers(from, to).await? {
            c.ledgers += 1;
            if let Some(p) = &prev {
                if l.sequence != p.sequence + 1 {
                    c.problems.push(format!(
                        "ledger {} follows ledger {}: ledgers missing in between",
                        l.sequence, p.sequence
                    ));
                } else if l.prev_hash != p.hash {
                    c.problems.push(format!(
                        "ledger {}: previous hash {} but ledger {} is stored with hash {}",
                        l.sequence, l.prev_hash, p.sequence, p.hash
                    ));
                }
            }
            prev = Some(l);
        }
        if to >= tip.sequence {
            break;
        }
        from = to + 1;
    }
    match store.cursor().await? {
        Some(cur) if cur.ledger != tip.sequence || cur.hash != tip.hash => {
            c.problems.push(format!(
                "the cursor is at ledger {} ({}), the stored tip is ledger {} ({})",
                cur.ledger, cur.hash, tip.sequence, tip.hash
            ))
        }
        None => c
            .problems
            .push("ledgers are stored but there is no ingest cursor".into()),
        _ => {}
    }
    c.events = store.event_count().await?;
    let last = store.last_position().await?;
    if i64::try_from(c.events).unwrap_or(i64::MAX) != last {
        c.problems.push(format!(
            "{} events stored but the last position is {last}: positions have gaps",
            c.events
        ));
    }
    Ok(c)
}
