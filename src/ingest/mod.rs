//! The ingest loop: ledgers from a [`LedgerSource`] into the event store, one transaction per
//! batch, with the hash chain verified against what is stored, reorgs rolled back to the common
//! ancestor inside the finality window, and a halt with an operator message outside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::chain::{ChainError, LedgerBundle, LedgerSource};
use crate::projection::{Projection, Projector};
use crate::store::{
    AppendBatch, Cursor, LedgerRecord, NewEvent, ProjectionDelta, RollbackReport, RollbackRequest,
    Store, StoreError, StreamQuery,
};

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// First ledger when the store has no cursor (`None`: the source's tip).
    pub start_ledger: Option<u32>,
    /// Ledgers below `tip - finality_depth` are final: a mismatch there halts.
    pub finality_depth: u32,
    /// Ledgers per fetch and per committed batch.
    pub batch_ledgers: u32,
    /// Wait between polls once caught up.
    pub poll_interval: Duration,
    /// No progress for this long while behind = `stalled`.
    pub stall_after: Duration,
    /// The network passphrase the store belongs to.
    pub network_passphrase: String,
    /// Stop after committing this ledger (scripted runs, tests).
    pub stop_at: Option<u32>,
    /// First retry delay after a source error (doubles up to 30 s).
    pub retry_base: Duration,
    /// Batches fetched at once while catching up (committed in order).
    pub fetch_ahead: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            start_ledger: None,
            finality_depth: crate::config::DEFAULT_FINALITY_DEPTH,
            batch_ledgers: 200,
            poll_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(60),
            network_passphrase: String::new(),
            stop_at: None,
            retry_base: Duration::from_millis(200),
            fetch_ahead: 3,
        }
    }
}

/// Indexer state for health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IndexerState {
    Starting,
    Healthy,
    Stalled,
    Halted { reason: String },
}

/// What health reports about ingestion.
#[derive(Debug, Clone, Serialize)]
pub struct IndexerStatus {
    pub state: IndexerState,
    /// Last committed ledger.
    pub ledger: Option<u32>,
    pub ledger_close_time: Option<u64>,
    /// The source's tip as last seen.
    pub source_tip: Option<u32>,
    pub lag_ledgers: Option<u32>,
    /// Wall-clock age of the last committed ledger's close time, in ms.
    pub lag_ms: Option<u64>,
    /// `tip - finality_depth`.
    pub last_safe_ledger: Option<u32>,
    pub reorgs: u64,
    pub last_reorg: Option<RollbackReport>,
    pub epoch: u64,
    pub events_ingested: u64,
    pub last_error: Option<String>,
    /// Events and storage entries the fold could not apply, since start (each is logged).
    pub projection_skipped: u64,
    /// Storage-entry comparisons that found a difference, in the loaded projection.
    pub projection_mismatches: u64,
    /// Unix ms of the last successful exchange with the source (a commit, or a poll that found
    /// nothing new).
    pub last_sync_at_ms: Option<u64>,
    /// No progress for this long while behind (or no new ledger while caught up) = stalled.
    pub stall_threshold_ms: u64,
}

impl Default for IndexerStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexerStatus {
    /// The status before anything happened (also what an API-only process reports).
    pub fn new() -> Self {
        Self {
            state: IndexerState::Starting,
            ledger: None,
            ledger_close_time: None,
            source_tip: None,
            lag_ledgers: None,
            lag_ms: None,
            last_safe_ledger: None,
            reorgs: 0,
            last_reorg: None,
            epoch: 0,
            events_ingested: 0,
            projection_skipped: 0,
            projection_mismatches: 0,
            last_error: None,
            last_sync_at_ms: None,
            stall_threshold_ms: 60_000,
        }
    }
}

/// What the ingestor tells in-process subscribers (hub, dispatcher).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    /// A batch committed: positions `first..=last` (none when it had no events) up to `ledger`.
    Committed {
        ledger: u32,
        first_position: Option<i64>,
        last_position: Option<i64>,
        epoch: u64,
    },
    /// Everything above `fork_ledger` was removed; the epoch is now `epoch`.
    RolledBack {
        fork_ledger: u32,
        epoch: u64,
        streams: Vec<u64>,
        first_removed_position: Option<i64>,
    },
}

/// Why ingestion stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("halted: {0}")]
    Halted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("source error: {0}")]
    Source(#[from] ChainError),
}

/// The ingestor.
pub struct Ingestor {
    store: Arc<dyn Store>,
    source: Arc<dyn LedgerSource>,
    cfg: IngestConfig,
    status: watch::Sender<IndexerStatus>,
    notices: broadcast::Sender<Notice>,
    /// The projection as committed, loaded from the store on first use and dropped (to be
    /// reloaded) after a failed append or a rollback.
    projector: tokio::sync::Mutex<Option<Projector>>,
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The store rows of one bundle's events.
pub fn bundle_events(b: &LedgerBundle) -> Vec<NewEvent> {
    let unrecognized = b.unrecognized_events();
    if unrecognized > 0 {
        metrics::counter!("fluxora_decode_unrecognized_events_total")
            .increment(unrecognized as u64);
    }
    b.txs
        .iter()
        .flat_map(|tx| tx.events.iter())
        .map(|e| {
            let type_name = e.decoded.type_name();
            NewEvent {
                event_id: e.event_id.clone(),
                ledger: e.ledger,
                tx_hash: e.tx_hash.clone(),
                tx_order: e.application_order,
                op_index: e.op_index,
                event_index: e.event_index,
                contract_id: e.contract_id.clone(),
                topic: e
                    .topic
                    .clone()
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| type_name.to_string()),
                stream_id: e.stream_id,
                decoded: serde_json::json!({
                    "type": type_name,
                    "fields": serde_json::to_value(&e.decoded).unwrap_or(serde_json::Value::Null),
                }),
                topic_xdr: e.topics_xdr.clone(),
                data_xdr: e.data_xdr.clone(),
                function: e.function.clone(),
            }
        })
        .collect()
}

fn ledger_record(b: &LedgerBundle) -> LedgerRecord {
    LedgerRecord {
        sequence: b.sequence,
        hash: b.hash.clone(),
        prev_hash: b.prev_hash.clone().unwrap_or_else(|| "0".repeat(64)),
        close_time: i64::try_from(b.close_time).unwrap_or(i64::MAX),
    }
}

enum Step {
    /// Committed up to this ledger.
    Progress(u32),
    /// Nothing new yet.
    CaughtUp,
    /// Rolled back; resume after the fork.
    RolledBack,
}

impl Ingestor {
    /// An ingestor over `store` and `source`.
    pub fn new(store: Arc<dyn Store>, source: Arc<dyn LedgerSource>, cfg: IngestConfig) -> Self {
        let (status, _) = watch::channel(IndexerStatus {
            stall_threshold_ms: cfg.stall_after.as_millis() as u64,
            ..IndexerStatus::new()
        });
        let (notices, _) = broadcast::channel(4096);
        Self {
            store,
            source,
            cfg,
            status,
            notices,
            projector: tokio::sync::Mutex::new(None),
        }
    }

    /// Live status, for health.
    pub fn status(&self) -> watch::Receiver<IndexerStatus> {
        self.status.subscribe()
    }

    /// Commit and rollback notices.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut IndexerStatus)) {
        self.status.send_modify(f);
    }

    fn halt(&self, reason: String) -> IngestError {
        tracing::error!(reason = %reason, "ingestion halted");
        self.update(|s| {
            s.state = IndexerState::Halted {
                reason: reason.clone(),
            }
        });
        IngestError::Halted(reason)
    }

    /// Runs until `stop` fires, `cfg.stop_at` is committed, or a halt.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<(), IngestError> {
        self.check_network().await?;
        let mut next = self.start_ledger(&mut stop).await?;
        let mut last_progress = Instant::now();
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if self.cfg.stop_at.is_some_and(|s| next > s) {
                return Ok(());
            }
            match self.step(next).await {
                Ok(Step::Progress(ledger)) => {
                    failures = 0;
                    last_progress = Instant::now();
                    next = ledger + 1;
                    self.update(|s| {
                        s.state = IndexerState::Healthy;
                        s.last_error = None;
                    });
                    continue;
                }
                Ok(Step::RolledBack) => {
                    failures = 0;
                    next = match self.store.cursor().await? {
                        Some(c) => c.ledger + 1,
                        None => self.cfg.start_ledger.unwrap_or(next),
                    };
                    continue;
                }
                Ok(Step::CaughtUp) => {
                    failures = 0;
                    // Caught up, but no new ledger for too long: the network (or the source)
                    // has stopped closing ledgers.
                    let stalled = last_progress.elapsed() >= self.cfg.stall_after;
                    self.update(|s| {
                        s.last_sync_at_ms = Some(now_unix_ms());
                        if !matches!(s.state, IndexerState::Halted { .. }) {
                            s.state = if stalled {
                                IndexerState::Stalled
                            } else {
                                IndexerState::Healthy
                            };
                        }
                    });
                    self.sleep(self.cfg.poll_interval, &mut stop).await;
                }
                Err(StepError::Halt(reason)) => return Err(self.halt(reason)),
                Err(StepError::Store(e)) => return Err(IngestError::Store(e)),
                Err(StepError::Source(e)) if fatal(&e) => {
                    return Err(self.halt(format!("{e}")));
                }
                Err(StepError::Source(e)) => {
                    failures += 1;
                    let delay = self
                        .cfg
                        .retry_base
                        .saturating_mul(1u32 << failures.min(8))
                        .min(Duration::from_secs(30));
                    tracing::warn!(ledger = next, error = %e, attempt = failures, retry_in_ms = delay.as_millis() as u64, "source error; retrying the same ledger");
                    let stalled = last_progress.elapsed() >= self.cfg.stall_after;
                    self.update(|s| {
                        s.last_error = Some(e.to_string());
                        if stalled {
                            s.state = IndexerState::Stalled;
                        }
                    });
                    self.sleep(delay, &mut stop).await;
                }
            }
        }
    }

    /// Ingests until caught up with the source, without waiting or retrying: a source error is
    /// returned. Returns the last committed ledger.
    pub async fn sync(&self) -> Result<Option<u32>, IngestError> {
        self.check_network().await?;
        let start = match self.cfg.start_ledger {
            Some(s) => s,
            None => self.source.tip().await?.latest_ledger,
        };
        let mut next = match self.store.cursor().await? {
            Some(c) => c.ledger + 1,
            None => start,
        };
        loop {
            match self.step(next).await {
                Ok(Step::Progress(l)) => next = l + 1,
                Ok(Step::RolledBack) => {
                    next = self.store.cursor().await?.map_or(start, |c| c.ledger + 1)
                }
                Ok(Step::CaughtUp) => return Ok(self.store.cursor().await?.map(|c| c.ledger)),
                Err(StepError::Halt(r)) => return Err(self.halt(r)),
                Err(StepError::Store(e)) => return Err(e.into()),
                Err(StepError::Source(e)) => return Err(e.into()),
            }
        }
    }

    async fn sleep(&self, d: Duration, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.changed() => {}
        }
    }

    /// The store belongs to one network: a different passphrase is a halt, never a mix.
    async fn check_network(&self) -> Result<(), IngestError> {
        let want = &self.cfg.network_passphrase;
        match self.store.get_meta("network_passphrase").await? {
            Some(have) if have != *want => Err(self.halt(format!(
                "the store holds ledgers of network `{have}` but NETWORK_PASSPHRASE is `{want}`: \
                 point DATABASE_URL at a fresh database for the new network (or fix the passphrase)"
            ))),
            Some(_) => Ok(()),
            None => {
                self.store.set_meta("network_passphrase", want).await?;
                Ok(())
            }
        }
    }

    async fn start_ledger(&self, stop: &mut watch::Receiver<bool>) -> Result<u32, IngestError> {
        let epoch = self.store.epoch().await?;
        if let Some(c) = self.store.cursor().await? {
            let tip = self.store.ledger(c.ledger).await?;
            self.update(|s| {
                s.ledger = Some(c.ledger);
                s.ledger_close_time = tip.map(|t| t.close_time.max(0) as u64);
                s.epoch = epoch;
            });
            tracing::info!(cursor = c.ledger, "resuming from the stored cursor");
            return Ok(c.ledger + 1);
        }
        if let Some(s) = self.cfg.start_ledger {
            return Ok(s);
        }
        // No cursor and no START_LEDGER: begin at the source's tip.
        let mut failures = 0u32;
        loop {
            match self.source.tip().await {
                Ok(t) => return Ok(t.latest_ledger),
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "cannot read the source tip; retrying");
                    self.update(|s| s.last_error = Some(e.to_string()));
                    if *stop.borrow() {
                        return Err(self.halt("stopped before the source answered".into()));
                    }
                    let d = self.cfg.retry_base.saturating_mul(1u32 << failures.min(8));
                    self.sleep(d.min(Duration::from_secs(30)), stop).await;
                }
            }
        }
    }

    async fn step(&self, next: u32) -> Result<Step, StepError> {
        let tip = self.source.tip().await.map_err(StepError::Source)?;
        let stored_tip = self.store.tip().await?;
        // A source far behind what we already hold: a network reset or the wrong provider.
        if let Some(st) = &stored_tip {
            if tip.latest_ledger.saturating_add(self.cfg.finality_depth) < st.sequence {
                return Err(StepError::Halt(format!(
                    "the source's tip is ledger {} but the store already holds ledger {}: the \
                     network was reset (testnet/futurenet) or the source is another network. \
                     Re-index into a fresh database, or point the source back at the right network",
                    tip.latest_ledger, st.sequence
                )));
            }
        }
        let safe = tip.latest_ledger.saturating_sub(self.cfg.finality_depth);
        self.update(|s| {
            s.source_tip = Some(tip.latest_ledger);
            s.last_safe_ledger = Some(safe);
            s.lag_ledgers = Some(tip.latest_ledger.saturating_sub(next.saturating_sub(1)));
        });
        if next > tip.latest_ledger {
            // Caught up: re-read our tip; a changed hash there is a reorg too.
            if let Some(st) = stored_tip {
                let again = self
                    .source
                    .fetch_ledgers(st.sequence, 1)
                    .await
                    .map_err(StepError::Source)?;
                if let Some(b) = again.first() {
                    if b.hash != st.hash {
                        tracing::warn!(ledger = st.sequence, stored = %st.hash, source = %b.hash, "stored ledger changed on re-read");
                        return self.reorg(st.sequence, Some(b.hash.clone())).await;
                    }
                }
            }
            self.refresh_lag().await;
            return Ok(Step::CaughtUp);
        }
        let last_wanted = tip
            .latest_ledger
            .min(self.cfg.stop_at.unwrap_or(u32::MAX))
            .max(next);
        let batch = self.cfg.batch_ledgers.max(1);
        // Several ranges in flight while behind; their ledgers are committed in order.
        let mut ranges = Vec::new();
        let mut from = next;
        while from <= last_wanted && ranges.len() < self.cfg.fetch_ahead.max(1) as usize {
            let n = batch.min(last_wanted - from + 1);
            ranges.push((from, n));
            from += n;
        }
        // Each range is its own task, so fetching and decoding run on every core.
        let tasks: Vec<_> = ranges
            .iter()
            .map(|&(from, n)| {
                let src = Arc::clone(&self.source);
                tokio::spawn(async move { src.fetch_ledgers(from, n).await })
            })
            .collect();
        let mut fetched = Vec::with_capacity(tasks.len());
        for t in tasks {
            fetched.push(match t.await {
                Ok(r) => r,
                Err(e) => Err(ChainError::Invalid(format!("fetch task failed: {e}"))),
            });
        }
        let mut bundles: Vec<LedgerBundle> = Vec::new();
        for ((from, _), r) in ranges.iter().zip(fetched) {
            match r {
                // Keep only a gap-free prefix: a later range is used only after all before it.
                Ok(b) if bundles.last().map_or(next, |l| l.sequence + 1) == *from => {
                    let full = b.len() as u32;
                    bundles.extend(b);
                    if full == 0 {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) if bundles.is_empty() => return Err(StepError::Source(e)),
                Err(e) => {
                    tracing::debug!(from, error = %e, "a fetched-ahead range failed; it is fetched again");
                    break;
                }
            }
        }
        let Some(first) = bundles.first() else {
            return Ok(Step::CaughtUp);
        };
        if first.sequence != next {
            return Err(StepError::Source(ChainError::Invalid(format!(
                "asked for ledger {next}, the source returned {} first",
                first.sequence
            ))));
        }
        // The first ledger must chain onto the stored one before it.
        if let Some(prev) = self.store.ledger(next.saturating_sub(1)).await? {
            if first.prev_hash.as_deref() != Some(prev.hash.as_str()) {
                tracing::warn!(
                    ledger = next,
                    stored_prev = %prev.hash,
                    incoming_prev = ?first.prev_hash,
                    "previous-hash mismatch"
                );
                return self.reorg(next.saturating_sub(1), None).await;
            }
        }
        // Inside the batch, each ledger chains onto the one before.
        for w in bundles.windows(2) {
            if w[1].sequence != w[0].sequence + 1 || w[1].prev_hash.as_deref() != Some(&w[0].hash) {
                return Err(StepError::Source(ChainError::Invalid(format!(
                    "the source returned ledger {} that does not chain onto ledger {}",
                    w[1].sequence, w[0].sequence
                ))));
            }
        }
        let last = bundles.last().map_or(next, |b| b.sequence);
        let last_hash = bundles.last().map(|b| b.hash.clone()).unwrap_or_default();
        let mut guard = self.projector.lock().await;
        let projector = match guard.as_mut() {
            Some(p) => p,
            None => guard.insert(load_projector(&*self.store).await?),
        };
        let mut delta = ProjectionDelta::default();
        for b in &bundles {
            if let Err(e) = projector.fold_bundle(b) {
                *guard = None;
                return Err(e.into());
            }
        }
        match projector.take_delta() {
            Ok(d) => delta.extend(d),
            Err(e) => {
                *guard = None;
                return Err(e.into());
            }
        }
        let skipped = projector.take_skipped();
        let skipped_total = projector.skipped_total();
        let mismatches = projector.projection().mismatches;
        for reason in &skipped {
            tracing::warn!(%reason, "the fold skipped an event or entry");
        }
        let batch = AppendBatch {
            ledgers: bundles.iter().map(ledger_record).collect(),
            events: bundles.iter().flat_map(bundle_events).collect(),
            cursor: Some(Cursor {
                ledger: last,
                hash: last_hash,
            }),
            projection: delta,
            // Stored with the cursor: dispatchers in any process gate deliveries on it.
            safe_ledger: Some(safe),
        };
        let out = match self.store.append(&batch).await {
            Ok(o) => o,
            Err(e) => {
                // The in-memory fold ran ahead of the store: reload it next time.
                *guard = None;
                return Err(e.into());
            }
        };
        drop(guard);
        self.update(|s| {
            s.projection_skipped = skipped_total;
            s.projection_mismatches = mismatches;
        });
        let epoch = self.store.epoch().await?;
        let close = bundles.last().map(|b| b.close_time);
        self.update(|s| {
            s.ledger = Some(last);
            s.ledger_close_time = close;
            s.events_ingested += out.appended as u64;
            s.last_sync_at_ms = Some(now_unix_ms());
            s.epoch = epoch;
            s.lag_ledgers = s.source_tip.map(|t| t.saturating_sub(last));
            s.lag_ms = close.map(|c| now_unix().saturating_sub(c) * 1000);
        });
        let _ = self.notices.send(Notice::Committed {
            ledger: last,
            first_position: out.first_position,
            last_position: out.last_position,
            epoch,
        });
        tracing::debug!(
            from = next,
            to = last,
            events = out.appended,
            "batch committed"
        );
        Ok(Step::Progress(last))
    }

    async fn refresh_lag(&self) {
        self.update(|s| {
            s.lag_ms = s
                .ledger_close_time
                .map(|c| now_unix().saturating_sub(c) * 1000);
        });
    }

    /// `suspect` is the highest stored ledger that may be on the wrong branch. Walks back to the
    /// common ancestor and rolls back above it, or halts below the finality window.
    async fn reorg(&self, suspect: u32, new_hash: Option<String>) -> Result<Step, StepError> {
        let Some(stored_tip) = self.store.tip().await? else {
            return Ok(Step::RolledBack);
        };
        let mut k = suspect;
        let mut incoming = new_hash;
        let ancestor = loop {
            let Some(stored) = self.store.ledger(k).await? else {
                // Below the first stored ledger: everything stored is on the old branch.
                break k;
            };
            let theirs = self
                .source
                .fetch_ledgers(k, 1)
                .await
                .map_err(StepError::Source)?;
            let Some(theirs) = theirs.into_iter().next() else {
                return Err(StepError::Source(ChainError::Invalid(format!(
                    "the source no longer serves ledger {k} while checking for a reorg"
                ))));
            };
            if theirs.hash == stored.hash {
                break k;
            }
            incoming = Some(theirs.hash.clone());
            let depth = stored_tip.sequence - k + 1;
            if depth > self.cfg.finality_depth {
                return Err(StepError::Halt(format!(
                    "ledger {k} changed hash (stored {}, source {}) {depth} ledgers below our \
                     tip {}, deeper than FINALITY_DEPTH={}: refusing to roll back final ledgers. \
                     Check the source (a lagging or inconsistent node, a provider switch, a \
                     network reset); if the new branch is right, re-index into a fresh database \
                     or raise FINALITY_DEPTH",
                    stored.hash, theirs.hash, stored_tip.sequence, self.cfg.finality_depth
                )));
            }
            if k == 0 {
                break 0;
            }
            k -= 1;
        };
        // The projection is restored by the store; the in-memory copy is reloaded.
        let mut guard = self.projector.lock().await;
        *guard = None;
        let report = self
            .store
            .rollback_to(&RollbackRequest {
                fork_ledger: ancestor,
                new_hash: incoming,
                reason: format!(
                    "hash mismatch above ledger {ancestor} (stored tip {})",
                    stored_tip.sequence
                ),
            })
            .await?;
        tracing::warn!(
            fork_ledger = ancestor,
            depth = report.removed_ledgers.len(),
            events_removed = report.removed_event_ids.len(),
            streams = ?report.streams_affected,
            epoch = report.epoch,
            "reorg: rolled back to the common ancestor"
        );
        let _ = self.notices.send(Notice::RolledBack {
            fork_ledger: ancestor,
            epoch: report.epoch,
            streams: report.streams_affected.clone(),
            first_removed_position: report.first_removed_position,
        });
        drop(guard);
        self.update(|s| {
            s.reorgs += 1;
            s.epoch = report.epoch;
            s.ledger = Some(ancestor);
            s.last_reorg = Some(report);
        });
        Ok(Step::RolledBack)
    }
}

/// Loads the committed projection: every stream's current state and the contract flags.
pub async fn load_projector(store: &dyn Store) -> Result<Projector, StoreError> {
    let mut p = Projection {
        flags: store.flags().await?,
        ..Default::default()
    };
    let mut after = None;
    loop {
        let page = store
            .list_streams(&StreamQuery {
                after,
                limit: 5_000,
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.stream_id);
        for s in page {
            p.streams.insert(s.stream_id, s);
        }
    }
    Ok(Projector::new(p))
}

/// Source errors that no retry can fix: the configuration or the provider must change.
fn fatal(e: &ChainError) -> bool {
    matches!(
        e,
        ChainError::SkipTxMeta { .. }
            | ChainError::EnvelopeNotFound { .. }
            | ChainError::OutOfRetention { .. }
            | ChainError::BeforeHistory { .. }
    )
}

enum StepError {
    Source(ChainError),
    Store(StoreError),
    Halt(String),
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::Store(e)
    }
}
