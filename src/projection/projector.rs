//! Drives the fold ledger by ledger and produces the rows the store writes with each batch.
//!
//! Live ingestion and `fluxora rebuild` go through the same [`Projector`], so the rows a rebuild
//! computes are byte-for-byte the rows live ingestion wrote (the `verify` command checks it).
//!
//! Order within a ledger: transactions in application order; within a transaction its events in
//! emission order, then its post-transaction `Stream` storage entries.

use std::collections::BTreeSet;

use crate::chain::{LedgerBundle, StreamChange};
use crate::contract::{ContractEvent, StreamEntry};
use crate::store::{FlagsVersion, ProjectionDelta, StoreError, StreamEntryRecord, StreamVersion};

use super::fold::{EventContext, Projection};

/// Stateful driver of [`Projection`] that records what changed in each ledger.
#[derive(Debug, Default)]
pub struct Projector {
    projection: Projection,
    ledger: Option<(u32, u64)>,
    touched: BTreeSet<u64>,
    flags_before: Option<super::ContractFlags>,
    delta: ProjectionDelta,
    /// The state of each stream after each ledger that changed it (rows are encoded on take).
    snapshots: Vec<(u32, super::StreamState)>,
    /// Skip messages not yet taken by [`Projector::take_skipped`].
    skipped: Vec<String>,
    skipped_total: u64,
}

impl Projector {
    /// Continues from a projection (e.g. loaded from the store).
    pub fn new(projection: Projection) -> Self {
        Projector {
            projection,
            ..Default::default()
        }
    }

    /// The projection as folded so far.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// Consumes the projector.
    pub fn into_projection(self) -> Projection {
        self.projection
    }

    /// The open ledger, if any.
    pub fn current_ledger(&self) -> Option<u32> {
        self.ledger.map(|(l, _)| l)
    }

    /// Starts a ledger. A ledger still open is ended first.
    pub fn begin_ledger(&mut self, sequence: u32, close_time: u64) -> Result<(), StoreError> {
        if self.ledger.is_some() {
            self.end_ledger()?;
        }
        self.ledger = Some((sequence, close_time));
        self.flags_before = Some(self.projection.flags.clone());
        Ok(())
    }

    /// Applies one event of the open ledger.
    pub fn apply(&mut self, tx_hash: &str, function: Option<&str>, event: &ContractEvent) {
        let Some((ledger, close_time)) = self.ledger else {
            return;
        };
        let ctx = EventContext {
            ledger,
            close_time,
            tx_hash,
            function,
        };
        let touched = self.projection.apply(&ctx, event);
        self.touched.extend(touched);
        self.collect_skipped();
    }

    /// Takes a post-transaction storage entry (`None`: removed) of the open ledger.
    pub fn observe(&mut self, stream_id: u64, entry: Option<&StreamEntry>) {
        let Some((ledger, _)) = self.ledger else {
            return;
        };
        self.projection.observe_entry(ledger, stream_id, entry);
        if self.projection.streams.contains_key(&stream_id) {
            self.touched.insert(stream_id);
        }
        self.collect_skipped();
    }

    fn collect_skipped(&mut self) {
        if !self.projection.skipped.is_empty() {
            self.skipped_total += self.projection.skipped.len() as u64;
            self.skipped.append(&mut self.projection.skipped);
        }
    }

    /// Ends the open ledger: snapshots every stream it changed, and the flags if they changed.
    pub fn end_ledger(&mut self) -> Result<(), StoreError> {
        let Some((ledger, _)) = self.ledger.take() else {
            return Ok(());
        };
        for id in std::mem::take(&mut self.touched) {
            if let Some(s) = self.projection.streams.get(&id) {
                self.snapshots.push((ledger, s.clone()));
            }
        }
        if let Some(before) = self.flags_before.take() {
            if before != self.projection.flags {
                self.delta.flags.push(FlagsVersion {
                    ledger,
                    state: serde_json::to_string(&self.projection.flags)
                        .map_err(|e| StoreError::InvalidBatch(format!("contract flags: {e}")))?,
                });
            }
        }
        Ok(())
    }

    /// Folds a whole ledger bundle from a chain source, recording its storage entries too.
    pub fn fold_bundle(&mut self, b: &LedgerBundle) -> Result<(), StoreError> {
        self.begin_ledger(b.sequence, b.close_time)?;
        for tx in &b.txs {
            for e in &tx.events {
                self.apply(&tx.tx_hash, tx.function.as_deref(), &e.decoded);
            }
            for (seq, c) in tx.stream_changes.iter().enumerate() {
                let (entry, value_xdr) = match &c.change {
                    StreamChange::Upsert { entry, value_xdr } => {
                        (Some(entry.as_ref()), Some(value_xdr.clone()))
                    }
                    // Kept raw; the fold has nothing it can compare.
                    StreamChange::Unrecognized { value_xdr, reason } => {
                        tracing::warn!(
                            ledger = b.sequence,
                            stream_id = c.stream_id,
                            %reason,
                            "unrecognized Stream storage entry"
                        );
                        self.delta.entries.push(StreamEntryRecord {
                            ledger: b.sequence,
                            tx_order: tx.application_order,
                            seq: seq as u32,
                            stream_id: c.stream_id,
                            tx_hash: tx.tx_hash.clone(),
                            value_xdr: Some(value_xdr.clone()),
                        });
                        continue;
                    }
                    StreamChange::Removed => (None, None),
                };
                self.observe(c.stream_id, entry);
                self.delta.entries.push(StreamEntryRecord {
                    ledger: b.sequence,
                    tx_order: tx.application_order,
                    seq: seq as u32,
                    stream_id: c.stream_id,
                    tx_hash: tx.tx_hash.clone(),
                    value_xdr,
                });
            }
        }
        self.end_ledger()
    }

    /// The rows produced since the last call, encoded for the store.
    pub fn take_delta(&mut self) -> Result<ProjectionDelta, StoreError> {
        let mut d = std::mem::take(&mut self.delta);
        d.versions = std::mem::take(&mut self.snapshots)
            .iter()
            .map(|(ledger, s)| StreamVersion::of(s, *ledger))
            .collect::<Result<_, _>>()?;
        Ok(d)
    }

    /// The stream snapshots `(ledger, state)` and flag versions produced since the last call,
    /// not encoded (storage entries produced meanwhile are dropped: they are already stored).
    pub fn take_snapshots(&mut self) -> (Vec<(u32, super::StreamState)>, Vec<FlagsVersion>) {
        let d = std::mem::take(&mut self.delta);
        (std::mem::take(&mut self.snapshots), d.flags)
    }

    /// Events or entries the fold could not apply since the last call (each names why).
    pub fn take_skipped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.skipped)
    }

    /// How many were skipped in all.
    pub fn skipped_total(&self) -> u64 {
        self.skipped_total
    }
}
