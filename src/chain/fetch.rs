//! Bounded fetch-ahead with in-order delivery.
//!
//! Up to `concurrency` batches of `batch` ledgers are in flight; bundles are handed out strictly
//! in sequence order. No ledger is ever skipped: when a batch fails, everything after it is
//! dropped and fetching restarts at the first undelivered ledger. Transient errors (429, 5xx,
//! transport, open breaker) are retried forever with backoff; a permanent error is returned from
//! [`FetchAhead::next`] and the next call retries at the same position.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};

use super::http::HttpPolicy;
use super::{ChainError, LedgerBundle, LedgerSource};

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Ledgers per request.
    pub batch: u32,
    /// Batches in flight at once.
    pub concurrency: usize,
    /// Wait between tip polls once caught up.
    pub poll_interval: Duration,
    /// Backoff between failed batches (jittered, exponential).
    pub retry: HttpPolicy,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            batch: 50,
            concurrency: 4,
            poll_interval: Duration::from_secs(1),
            retry: HttpPolicy::default(),
        }
    }
}

type Batch = (u32, u32, Result<Vec<LedgerBundle>, ChainError>);

pub struct FetchAhead {
    source: Arc<dyn LedgerSource>,
    cfg: FetchConfig,
    next_seq: u32,
    scheduled_until: u32,
    tip: Option<u32>,
    buffer: VecDeque<LedgerBundle>,
    inflight: FuturesOrdered<BoxFuture<'static, Batch>>,
    failures: u32,
}

impl FetchAhead {
    pub fn new(source: Arc<dyn LedgerSource>, start: u32, cfg: FetchConfig) -> Self {
        FetchAhead {
            source,
            cfg,
            next_seq: start,
            scheduled_until: start,
            tip: None,
            buffer: VecDeque::new(),
            inflight: FuturesOrdered::new(),
            failures: 0,
        }
    }

    /// Next ledger sequence [`FetchAhead::next`] will deliver.
    pub fn position(&self) -> u32 {
        self.next_seq
    }

    /// Consecutive failed batches at the current position.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn restart_at(&mut self, seq: u32) {
        self.inflight = FuturesOrdered::new();
        self.buffer.clear();
        self.scheduled_until = seq;
    }

    fn schedule(&mut self, tip: u32) {
        while self.inflight.len() < self.cfg.concurrency.max(1) && self.scheduled_until <= tip {
            let start = self.scheduled_until;
            let n = self.cfg.batch.max(1).min(tip - start + 1);
            let src = Arc::clone(&self.source);
            self.inflight.push_back(Box::pin(async move {
                let r = src.fetch_ledgers(start, n).await;
                (start, n, r)
            }));
            self.scheduled_until = start + n;
        }
    }

    /// The next bundle in sequence order.
    pub async fn next(&mut self) -> Result<LedgerBundle, ChainError> {
        loop {
            if let Some(b) = self.buffer.pop_front() {
                self.next_seq = b.sequence.saturating_add(1);
                return Ok(b);
            }
            if self.inflight.is_empty() {
                self.scheduled_until = self.next_seq;
                match self.tip {
                    Some(t) if t >= self.next_seq => {}
                    _ => match self.source.tip().await {
                        Ok(t) => {
                            self.tip = Some(t.latest_ledger);
                            if t.latest_ledger < self.next_seq {
                                tokio::time::sleep(self.cfg.poll_interval).await;
                                self.tip = None;
                                continue;
                            }
                        }
                        Err(e) if e.is_transient() => {
                            self.backoff(&e).await;
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                }
            }
            if let Some(tip) = self.tip {
                self.schedule(tip);
            }
            let Some((start, n, result)) = self.inflight.next().await else {
                self.tip = None;
                continue;
            };
            match result {
                Ok(bundles) => {
                    let contiguous = bundles
                        .iter()
                        .enumerate()
                        .all(|(i, b)| b.sequence == start + i as u32);
                    if start != self.next_seq || !contiguous || bundles.len() > n as usize {
                        // Cannot happen with a correct source; never deliver out of order.
                        let e = ChainError::Invalid(format!(
                            "{} returned a batch at {start} that does not continue at {}",
                            self.source.name(),
                            self.next_seq
                        ));
                        let at = self.next_seq;
                        self.restart_at(at);
                        return Err(e);
                    }
                    self.failures = 0;
                    let got = bundles.len() as u32;
                    self.buffer.extend(bundles);
                    if got < n {
                        // The source has fewer ledgers than the tip said: refetch the tip.
                        let at = start + got;
                        let buffered = std::mem::take(&mut self.buffer);
                        self.restart_at(at);
                        self.buffer = buffered;
                        self.tip = None;
                        if got == 0 {
                            tokio::time::sleep(self.cfg.poll_interval).await;
                        }
                    }
                }
                Err(e) => {
                    let at = self.next_seq;
                    self.restart_at(at);
                    if e.is_transient() {
                        self.backoff(&e).await;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn backoff(&mut self, e: &ChainError) {
        let wait = self.cfg.retry.backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        tracing::warn!(
            source = self.source.name(),
            ledger = self.next_seq,
            failures = self.failures,
            wait_ms = wait.as_millis() as u64,
            error = %e,
            "ledger fetch failed; retrying at the same ledger"
        );
        tokio::time::sleep(wait).await;
    }
}
