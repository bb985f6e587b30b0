//! `fluxora rebuild` and `fluxora verify`: recompute every projection from the event store (the
//! stored events and `Stream` storage entries, ledger by ledger, through the same [`Projector`]
//! live ingestion uses) and compare with what is stored.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use stellar_xdr::ScVal;

use crate::chain::meta::{decode_b64, XdrLimits};
use crate::contract::{ContractEvent, StreamEntry};
use crate::store::{FlagsVersion, FoldInput, Store, StoreError, StreamVersion};

use super::projector::Projector;

/// Events aimed at per read (the ledger range of each read adapts to the events' density).
const EVENTS_PER_CHUNK: u64 = 16_000;
/// Largest ledger range of one read.
const MAX_CHUNK: u32 = 10_000;
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
    /// `(ledger, state)` of each stream after each ledger that changed it, in ledger order.
    pub snapshots: Vec<(u32, super::StreamState)>,
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

type Chunk = (
    Vec<crate::store::LedgerRecord>,
    Vec<FoldInput>,
    Vec<crate::store::StreamEntryRecord>,
);

async fn fetch(store: &dyn Store, from: u32, to: u32) -> Result<Chunk, StoreError> {
    tokio::try_join!(
        store.ledgers(from, to),
        store.fold_inputs(from, to),
        store.stream_entries(from, to)
    )
}

/// Folds every stored ledger from the start. Ranges of ledgers sized for about
/// [`EVENTS_PER_CHUNK`] events are read two at a time (two reader connections) while the
/// previous range is decoded and folded.
pub async fn rebuild(store: &dyn Store, progress: Progress<'_>) -> Result<Rebuilt, RebuildError> {
    use futures::StreamExt;

    let started = Instant::now();
    let mut out = Rebuilt::default();
    let (Some(first), Some(tip)) = (store.first_ledger().await?, store.tip().await?) else {
        return Ok(out);
    };
    let total = u64::from(tip.sequence - first) + 1;
    let per_ledger = (store.event_count().await? / total).max(1);
    let len = (EVENTS_PER_CHUNK / per_ledger).clamp(1, u64::from(MAX_CHUNK)) as u32;
    let mut ranges = Vec::new();
    let mut from = first;
    loop {
        let to = from.saturating_add(len - 1).min(tip.sequence);
        ranges.push((from, to));
        if to >= tip.sequence {
            break;
        }
        from = to + 1;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(u32, u32, Chunk), StoreError>>(2);
    let producer = async move {
        let mut chunks = futures::stream::iter(ranges)
            .map(|(f, t)| async move { fetch(store, f, t).await.map(|c| (f, t, c)) })
            .buffered(2);
        while let Some(c) = chunks.next().await {
            let failed = c.is_err();
            if tx.send(c).await.is_err() || failed {
                break;
            }
        }
    };
    let consumer = async {
        let mut p = Projector::default();
        while let Some(c) = rx.recv().await {
            let (from, to, chunk) = c?;
            out.events += chunk.1.len() as u64;
            out.entries += chunk.2.len() as u64;
            let (p2, r) = tokio::task::spawn_blocking(move || {
                let r = fold_chunk(&mut p, &chunk);
                (p, r)
            })
            .await
            .map_err(|e| RebuildError::BadEvent {
                event_id: String::new(),
                position: 0,
                reason: format!("fold task failed: {e}"),
            })?;
            p = p2;
            let (snaps, flags) = r?;
            out.snapshots.extend(snaps);
            out.flags.extend(flags);
            out.ledgers += u64::from(to - from) + 1;
            progress(out.ledgers, total);
        }
        out.projector = p;
        Ok::<_, RebuildError>(())
    };
    let ((), r) = tokio::join!(producer, consumer);
    r?;
    out.elapsed = started.elapsed();
    Ok(out)
}

/// Decodes (on every core) and folds one chunk of ledgers; returns the rows it produced.
fn fold_chunk(p: &mut Projector, chunk: &Chunk) -> Result<Snapshots, RebuildError> {
    let (ledgers, events, entries) = chunk;
    let close: HashMap<u32, u64> = ledgers
        .iter()
        .map(|l| (l.sequence, u64::try_from(l.close_time).unwrap_or(0)))
        .collect();
    let decoded = decode_all(events)?;
    let decoded_entries = decode_entries(entries);
    let mut ei = events.iter().zip(decoded).peekable();
    let mut ni = entries.iter().zip(decoded_entries).peekable();
    loop {
        // The next (ledger, tx order) with an event or an entry.
        let next_ev = ei.peek().map(|(e, _)| (e.ledger, e.tx_order));
        let next_en = ni.peek().map(|(n, _)| (n.ledger, n.tx_order));
        let Some(key) = [next_ev, next_en].into_iter().flatten().min() else {
            break;
        };
        let ledger = key.0;
        let Some(&ct) = close.get(&ledger) else {
            let event_id = ei
                .peek()
                .map(|(e, _)| e.event_id.clone())
                .unwrap_or_default();
            return Err(RebuildError::MissingLedger { event_id, ledger });
        };
        if p.current_ledger() != Some(ledger) {
            p.begin_ledger(ledger, ct)?;
        }
        while let Some((e, ev)) = ei.next_if(|(e, _)| (e.ledger, e.tx_order) == key) {
            p.apply(&e.tx_hash, e.function.as_deref(), &ev);
        }
        while let Some((n, entry)) = ni.next_if(|(n, _)| (n.ledger, n.tx_order) == key) {
            match (&n.value_xdr, entry) {
                (None, _) => p.observe(n.stream_id, None),
                (Some(_), Some(entry)) => p.observe(n.stream_id, Some(&entry)),
                (Some(_), None) => {}
            }
        }
    }
    p.end_ledger()?;
    Ok(p.take_snapshots())
}

type Snapshots = (Vec<(u32, super::StreamState)>, Vec<FlagsVersion>);

impl Rebuilt {
    /// The rebuilt rows as the store keeps them.
    pub fn versions(&self) -> Result<Vec<StreamVersion>, StoreError> {
        self.snapshots
            .iter()
            .map(|(l, s)| StreamVersion::of(s, *l))
            .collect()
    }
}

/// Maps `f` over `items` on every core (scoped threads), keeping order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    if items.len() < 512 || workers == 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                // A panicking decoder is a bug; re-raise it here rather than lose items.
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    })
}

fn decode_all(events: &[FoldInput]) -> Result<Vec<ContractEvent>, RebuildError> {
    par_map(events, |e| {
        decode_input(e).map_err(|reason| RebuildError::BadEvent {
            event_id: e.event_id.clone(),
            position: e.position,
            reason,
        })
    })
    .into_iter()
    .collect()
}

/// Decodes stored storage entries; `None` for a removal or an entry live ingestion could not
/// read either (skipped there too).
fn decode_entries(entries: &[crate::store::StreamEntryRecord]) -> Vec<Option<StreamEntry>> {
    par_map(entries, |n| {
        let x = n.value_xdr.as_deref()?;
        // In place from the XDR when canonical (the usual case), else through `ScVal`.
        if let Some(bytes) = base64(x) {
            return StreamEntry::from_xdr(&bytes).ok();
        }
        let loc = format!("ledger {} tx {}", n.ledger, n.tx_order);
        scval(x, "Stream entry", &loc)
            .and_then(|v| StreamEntry::from_scval(&v))
            .ok()
    })
}

/// The bytes of stored base64, when it is valid.
fn base64(b64: &str) -> Option<Vec<u8>> {
    base64_simd::STANDARD.decode_to_vec(b64.as_bytes()).ok()
}

/// Decodes a stored event's raw XDR again (the raw XDR is the source of truth).
pub fn decode_input(e: &FoldInput) -> Result<ContractEvent, String> {
    // In place from the XDR when the event has the contract's canonical shape (the same event
    // decoding the values gives); else, and for any error, through the values.
    let raw: Option<Vec<Vec<u8>>> = e.topic_xdr.iter().map(|t| base64(t)).collect();
    if let (Some(raw), Some(data)) = (raw, base64(&e.data_xdr)) {
        let topics: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
        if let Some((ev, len)) = ContractEvent::decode_canonical(&topics, &data) {
            if len == data.len() {
                return Ok(ev);
            }
        }
    }
    let topics = e
        .topic_xdr
        .iter()
        .map(|t| scval(t, "event topic", &e.event_id))
        .collect::<Result<Vec<_>, _>>()?;
    let data = scval(&e.data_xdr, "event data", &e.event_id)?;
    Ok(ContractEvent::decode(&topics, &data))
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
    let mut want: BTreeMap<(u64, u32), &super::StreamState> = BTreeMap::new();
    for (l, s) in &rebuilt.snapshots {
        want.insert((s.stream_id, *l), s);
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
                Some(w) => {
                    let w = StreamVersion::of(w, v.ledger)?;
                    if w != *v {
                        c.push(format!(
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
                        ));
                    }
                }
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
