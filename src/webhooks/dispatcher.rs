//! The dispatcher: workers that claim due deliveries from the outbox, sign and POST them, and
//! write the outcome back.
//!
//! * **Claims.** Each worker claims as many due deliveries as it has free slots
//!   ([`WebhookStore::claim`]: `FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on
//!   SQLite) and holds them under a lease of `2 × attempt timeout + 10 s`, so several workers and
//!   processes share one outbox, a row is never sent twice within a lease, and a crashed worker's
//!   rows are taken again once the lease has passed. Only the first undelivered row of each
//!   (endpoint, stream) is claimable, so a stream's events reach an endpoint in order while other
//!   streams and endpoints go on; a dead row no longer holds its successors.
//! * **Sending.** Attempts run concurrently (`WEBHOOK_CONCURRENCY` per worker, and at most a
//!   quarter of the process's slots per endpoint, so one slow endpoint cannot take them all).
//!   Names are resolved through the SSRF guard and redirects are not followed.
//! * **Outcomes.** One completer task writes results in batches (one transaction each) and then
//!   wakes the workers: the next event of a stream becomes claimable as soon as its predecessor
//!   is recorded.
//! * **Wake-ups.** The ingestor's notices (this process), `LISTEN` on PostgreSQL (other
//!   processes), the admin API, and a poll every `WEBHOOK_POLL_INTERVAL` as a fallback; a worker
//!   also sleeps no longer than the next scheduled retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch, Notify, Semaphore};

use super::payload;
use super::retry::{self, Verdict};
use super::signing::{headers as h, signature_headers};
use super::ssrf;
use crate::config::{TargetPolicy, WebhookSettings};
use crate::ingest::Notice;
use crate::projection::view::ViewOptions;
use crate::store::outbox::{
    AttemptRecord, AttemptResult, ClaimedDelivery, EndpointSignal, Outcome,
};
use crate::store::{Store, WebhookStore};

/// Response bytes kept with an attempt.
const RESPONSE_SNIPPET: usize = 1024;
/// Results written per transaction at most.
const FLUSH_MAX: usize = 512;
/// How long the completer gathers results before writing.
const FLUSH_EVERY: Duration = Duration::from_millis(10);

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub workers: u32,
    /// Attempts in flight per worker.
    pub concurrency: u32,
    pub retry_schedule: Vec<Duration>,
    pub jitter_percent: u32,
    pub attempt_timeout: Duration,
    pub disable_after: Duration,
    pub target_policy: TargetPolicy,
    pub poll_interval: Duration,
    /// How long a claim is ours.
    pub lease: Duration,
    /// Attempts in flight per endpoint in this process.
    pub max_in_flight_per_endpoint: u32,
    /// How stream objects are rendered.
    pub view: ViewOptions,
}

impl DispatcherConfig {
    /// From the validated settings.
    pub fn from_settings(s: &WebhookSettings, view: ViewOptions) -> Self {
        let total = s.workers.max(1) * s.concurrency;
        Self {
            workers: s.workers,
            concurrency: s.concurrency,
            retry_schedule: s.retry_schedule.clone(),
            jitter_percent: s.retry_jitter_percent,
            attempt_timeout: s.attempt_timeout,
            disable_after: s.disable_after,
            target_policy: s.allow_private_targets,
            poll_interval: s.poll_interval,
            lease: s.attempt_timeout * 2 + Duration::from_secs(10),
            max_in_flight_per_endpoint: (total / 4).max(8),
            view,
        }
    }
}

/// Counters since start (also exported as Prometheus metrics).
#[derive(Debug, Default, Serialize)]
pub struct DispatcherStats {
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
    pub endpoints_disabled: AtomicU64,
}

/// Wakes every worker of a dispatcher (cheap to clone).
#[derive(Clone, Default)]
pub struct Waker(Arc<Vec<Arc<Notify>>>);

impl Waker {
    /// Each worker claims again now (or as soon as it waits next).
    pub fn wake(&self) {
        for n in self.0.iter() {
            n.notify_one();
        }
    }
}

/// The dispatcher of one process.
pub struct Dispatcher {
    ws: Arc<dyn WebhookStore>,
    cfg: DispatcherConfig,
    client: reqwest::Client,
    notifies: Vec<Arc<Notify>>,
    waker: Waker,
    stats: Arc<DispatcherStats>,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    process: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Dispatcher {
    /// A dispatcher over `store`'s outbox.
    pub fn new(store: &dyn Store, cfg: DispatcherConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(ssrf::resolver(cfg.target_policy))
            .no_proxy()
            .timeout(cfg.attempt_timeout)
            .connect_timeout(cfg.attempt_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(256)
            .user_agent(concat!("fluxora-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        let notifies: Vec<Arc<Notify>> = (0..cfg.workers.max(1))
            .map(|_| Arc::new(Notify::new()))
            .collect();
        Ok(Self {
            ws: store.webhooks(),
            waker: Waker(Arc::new(notifies.clone())),
            notifies,
            client,
            cfg,
            stats: Arc::new(DispatcherStats::default()),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            process: format!(
                "{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        })
    }

    /// Wakes the workers (the admin API uses it after queueing deliveries).
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Counters since start.
    pub fn stats(&self) -> Arc<DispatcherStats> {
        self.stats.clone()
    }

    /// Runs until `stop` fires: workers, the completer, and the wake-up feeds. In-flight attempts
    /// finish (bounded by the attempt timeout) and their outcomes are written before it returns;
    /// anything else stays in the outbox for the next run.
    pub async fn run(
        self: Arc<Self>,
        stop: watch::Receiver<bool>,
        notices: Option<broadcast::Receiver<Notice>>,
    ) {
        if self.cfg.workers == 0 {
            return;
        }
        tracing::info!(
            workers = self.cfg.workers,
            concurrency = self.cfg.concurrency,
            process = %self.process,
            "webhook dispatcher started"
        );
        let feeds = self.spawn_feeds(notices, stop.clone()).await;
        let (tx, rx) = mpsc::unbounded_channel::<(usize, AttemptResult)>();
        let completer = tokio::spawn(self.clone().completer(rx));
        let mut workers = Vec::new();
        for i in 0..self.cfg.workers as usize {
            workers.push(tokio::spawn(self.clone().worker(
                i,
                tx.clone(),
                stop.clone(),
            )));
        }
        drop(tx);
        for w in workers {
            let _ = w.await;
        }
        let _ = completer.await;
        for f in feeds {
            f.abort();
        }
        tracing::info!("webhook dispatcher stopped");
    }

    async fn spawn_feeds(
        &self,
        notices: Option<broadcast::Receiver<Notice>>,
        mut stop: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut out = Vec::new();
        if let Some(mut rx) = notices {
            let waker = self.waker.clone();
            out.push(tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => waker.wake(),
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        match self.ws.listen().await {
            Ok(Some(mut rx)) => {
                let waker = self.waker.clone();
                out.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            m = rx.recv() => match m {
                                Some(()) => waker.wake(),
                                None => return,
                            },
                            _ = stop.changed() => return,
                        }
                    }
                }));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "webhook dispatcher cannot LISTEN; polling only"),
        }
        out
    }

    fn saturated(&self) -> Vec<String> {
        let m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(_, n)| **n >= self.cfg.max_in_flight_per_endpoint)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Counts `d` in flight unless its endpoint is at its cap.
    fn take_slot(&self, endpoint: &str) -> bool {
        let mut m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(endpoint.to_string()).or_insert(0);
        if *n >= self.cfg.max_in_flight_per_endpoint {
            return false;
        }
        *n += 1;
        true
    }

    fn free_slot(&self, endpoint: &str) {
        let mut m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(endpoint);
            }
        }
    }

    /// The lease owner: one per process (a lease keeps a row from every other claim; the owner
    /// only says whose outcome may be written), so one transaction records all workers' results.
    fn owner(&self, _worker: usize) -> String {
        self.process.clone()
    }

    async fn worker(
        self: Arc<Self>,
        idx: usize,
        results: mpsc::UnboundedSender<(usize, AttemptResult)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let owner = self.owner(idx);
        let notify = self.notifies[idx].clone();
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency as usize));
        let lease_ms = self.cfg.lease.as_millis() as i64;
        loop {
            if *stop.borrow() {
                break;
            }
            let free = slots.available_permits();
            let mut full = false;
            // Claim in batches: a claim is a transaction, worth it for a quarter of the slots.
            let batch = (self.cfg.concurrency as usize / 4).max(1);
            if free >= batch
                || (free > 0 && slots.available_permits() == self.cfg.concurrency as usize)
            {
                let exclude = self.saturated();
                match self
                    .ws
                    .claim(&owner, now_ms(), lease_ms, free as u32, &exclude)
                    .await
                {
                    Ok(rows) => {
                        full = rows.len() == free;
                        let mut give_back = Vec::new();
                        let timeout_ms = self.cfg.attempt_timeout.as_millis() as i64;
                        for d in rows {
                            // Never start an attempt that could outlive the lease: another
                            // worker may claim the row once it has passed.
                            if now_ms() + timeout_ms >= d.lease_until {
                                give_back.push(d.pk);
                                continue;
                            }
                            if !self.take_slot(&d.endpoint_id) {
                                give_back.push(d.pk);
                                continue;
                            }
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                self.free_slot(&d.endpoint_id);
                                give_back.push(d.pk);
                                continue;
                            };
                            let me = self.clone();
                            let tx = results.clone();
                            tokio::spawn(async move {
                                let r = me.attempt(&d, idx).await;
                                drop(permit);
                                let _ = tx.send((idx, r));
                            });
                        }
                        if !give_back.is_empty() {
                            full = false;
                            if let Err(e) = self.ws.release(&owner, &give_back).await {
                                tracing::warn!(error = %e, "cannot release webhook claims");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook claim failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                }
            }
            if full {
                continue;
            }
            let now = now_ms();
            let mut wait = self.cfg.poll_interval;
            if let Ok(Some(next)) = self.ws.next_due(now).await {
                wait = wait.min(Duration::from_millis((next - now).max(1) as u64));
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        // Let in-flight attempts finish, bounded.
        let all = self.cfg.concurrency;
        let _ = tokio::time::timeout(
            self.cfg.attempt_timeout + Duration::from_secs(1),
            slots.acquire_many(all),
        )
        .await;
    }

    /// Writes results in batches, then wakes the workers.
    async fn completer(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<(usize, AttemptResult)>) {
        let mut buf: Vec<(usize, AttemptResult)> = Vec::new();
        loop {
            let Some(first) = rx.recv().await else { break };
            buf.push(first);
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            while buf.len() < FLUSH_MAX {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => buf.push(r),
                    Ok(None) | Err(_) => break,
                }
            }
            self.flush(std::mem::take(&mut buf)).await;
            self.waker.wake();
        }
    }

    async fn flush(&self, batch: Vec<(usize, AttemptResult)>) {
        let mut by_worker: HashMap<usize, Vec<AttemptResult>> = HashMap::new();
        for (w, r) in batch {
            by_worker.entry(w).or_default().push(r);
        }
        for (w, results) in by_worker {
            let owner = self.owner(w);
            let mut tries = 0;
            loop {
                let now = now_ms();
                let disable_before = now - self.cfg.disable_after.as_millis() as i64;
                match self
                    .ws
                    .complete(&owner, &results, now, disable_before)
                    .await
                {
                    Ok(disabled) => {
                        for ep in disabled {
                            self.stats
                                .endpoints_disabled
                                .fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("fluxora_webhook_endpoints_disabled_total")
                                .increment(1);
                            tracing::warn!(endpoint = %ep, "webhook endpoint disabled");
                        }
                        break;
                    }
                    Err(e) if tries < 20 => {
                        tries += 1;
                        tracing::warn!(error = %e, attempt = tries, "cannot record webhook attempts; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => {
                        // The leases run out and the rows are sent again: at least once.
                        tracing::error!(error = %e, results = results.len(), "webhook attempt results lost; those deliveries will be retried after their lease");
                        break;
                    }
                }
            }
            for r in &results {
                self.free_slot(&r.endpoint_id);
            }
        }
    }

    /// One attempt of `d`.
    async fn attempt(&self, d: &ClaimedDelivery, worker: usize) -> AttemptResult {
        let started_at = now_ms();
        let t0 = Instant::now();
        let attempt_no = d.attempts + 1;
        let now_unix = (started_at / 1000).max(0) as u64;
        let record =
            |status: Option<u16>, error: Option<String>, body: Option<String>| AttemptRecord {
                attempt: attempt_no,
                started_at,
                duration_ms: t0.elapsed().as_millis() as u64,
                status_code: status,
                error,
                response_body: body,
                worker: self.owner(worker),
            };
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let body = match payload::render(d, &self.cfg.view, now_unix) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(delivery = %d.delivery_id, error = %e, "cannot render a webhook body");
                return self.finish(
                    d,
                    Verdict::Retry { retry_after: None },
                    EndpointSignal::Neutral,
                    record(None, Some(format!("cannot render the body: {e}")), None),
                );
            }
        };
        let ts = now_unix.to_string();
        let previous = d
            .previous_secret
            .as_ref()
            .filter(|_| d.previous_secret_expires_at.is_some_and(|t| t > started_at));
        let mut hm = HeaderMap::new();
        let mut put = |k: &str, v: &str| {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                hm.insert(k, v);
            }
        };
        put(CONTENT_TYPE.as_str(), "application/json");
        put(h::DELIVERY_ID, &d.delivery_id);
        put(h::TIMESTAMP, &ts);
        put(h::EVENT, &d.event_type);
        put(h::ATTEMPT, &attempt_no.to_string());
        put(h::WEBHOOK_ID, &d.delivery_id);
        put(h::WEBHOOK_TIMESTAMP, &ts);
        for (k, v) in signature_headers(&d.delivery_id, &ts, &body, &d.secret, previous) {
            put(k, &v);
        }
        let url = match url::Url::parse(&d.url) {
            Ok(u) => u,
            Err(e) => {
                return self.finish(
                    d,
                    Verdict::Permanent,
                    EndpointSignal::Failing,
                    record(None, Some(format!("invalid URL: {e}")), None),
                )
            }
        };
        if let Err(e) = ssrf::check_literal(&url, self.cfg.target_policy) {
            return self.finish(
                d,
                Verdict::Retry { retry_after: None },
                EndpointSignal::Failing,
                record(None, Some(format!("refused target: {e}")), None),
            );
        }
        let send = async {
            let resp = self.client.post(url).headers(hm).body(body).send().await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry::parse_retry_after);
            let mut snippet = Vec::new();
            let mut resp = resp;
            while snippet.len() < RESPONSE_SNIPPET {
                match resp.chunk().await {
                    Ok(Some(c)) => snippet.extend_from_slice(&c),
                    _ => break,
                }
            }
            snippet.truncate(RESPONSE_SNIPPET);
            Ok::<_, reqwest::Error>((status, retry_after, snippet))
        };
        match tokio::time::timeout(self.cfg.attempt_timeout, send).await {
            Ok(Ok((status, retry_after, snippet))) => {
                let text =
                    (!snippet.is_empty()).then(|| String::from_utf8_lossy(&snippet).into_owned());
                let verdict = retry::classify(status, retry_after);
                let signal = match verdict {
                    Verdict::Delivered => EndpointSignal::Healthy,
                    Verdict::Gone => EndpointSignal::Gone,
                    _ => EndpointSignal::Failing,
                };
                let err =
                    (!matches!(verdict, Verdict::Delivered)).then(|| format!("HTTP {status}"));
                self.finish(d, verdict, signal, record(Some(status), err, text))
            }
            Ok(Err(e)) => {
                let what = if e.is_timeout() {
                    format!(
                        "timed out after {} ms",
                        self.cfg.attempt_timeout.as_millis()
                    )
                } else {
                    transport_error(&e)
                };
                self.finish(
                    d,
                    Verdict::Retry { retry_after: None },
                    EndpointSignal::Failing,
                    record(None, Some(what), None),
                )
            }
            Err(_) => self.finish(
                d,
                Verdict::Retry { retry_after: None },
                EndpointSignal::Failing,
                record(
                    None,
                    Some(format!(
                        "timed out after {} ms",
                        self.cfg.attempt_timeout.as_millis()
                    )),
                    None,
                ),
            ),
        }
    }

    fn finish(
        &self,
        d: &ClaimedDelivery,
        verdict: Verdict,
        signal: EndpointSignal,
        attempt: AttemptRecord,
    ) -> AttemptResult {
        let now = now_ms();
        let outcome = match verdict {
            Verdict::Delivered => Outcome::Delivered,
            // Stays queued: it goes out when the endpoint is enabled again.
            Verdict::Gone => Outcome::Retry(now),
            Verdict::Permanent => Outcome::Dead,
            Verdict::Retry { retry_after } => match retry::next_delay(
                &self.cfg.retry_schedule,
                d.tries + 1,
                self.cfg.jitter_percent,
                retry_after,
            ) {
                Some(delay) => Outcome::Retry(now + delay.as_millis() as i64),
                None => Outcome::Dead,
            },
        };
        let label = match outcome {
            Outcome::Delivered => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                "delivered"
            }
            Outcome::Retry(_) => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                "retry"
            }
            Outcome::Dead => {
                self.stats.dead.fetch_add(1, Ordering::Relaxed);
                "dead"
            }
        };
        metrics::counter!("fluxora_webhook_attempts_total", "outcome" => label).increment(1);
        metrics::histogram!("fluxora_webhook_attempt_duration_seconds")
            .record(attempt.duration_ms as f64 / 1000.0);
        match outcome {
            Outcome::Delivered => tracing::debug!(
                delivery = %d.delivery_id, endpoint = %d.endpoint_id, attempt = attempt.attempt,
                "webhook delivered"
            ),
            Outcome::Retry(at) => tracing::debug!(
                delivery = %d.delivery_id, endpoint = %d.endpoint_id, attempt = attempt.attempt,
                status = ?attempt.status_code, error = ?attempt.error, retry_at_ms = at,
                "webhook attempt failed; retrying"
            ),
            Outcome::Dead => tracing::warn!(
                delivery = %d.delivery_id, endpoint = %d.endpoint_id, attempt = attempt.attempt,
                status = ?attempt.status_code, error = ?attempt.error,
                "webhook delivery is dead (retry it from the admin API)"
            ),
        }
        AttemptResult {
            pk: d.pk,
            endpoint_id: d.endpoint_id.clone(),
            outcome,
            signal,
            attempt,
        }
    }
}

/// A transport error with its causes (connection refused, reset, DNS refusal, …).
fn transport_error(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
