//! One HTTP policy for every chain source: connect and total timeouts, retries with exponential
//! backoff and full jitter on 429 / 5xx / transport errors, `Retry-After` honoured, and a circuit
//! breaker whose state is visible through [`SourceHealth`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use super::ChainError;

/// Tunables of the shared policy.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    pub connect_timeout: Duration,
    /// Whole request, body included.
    pub total_timeout: Duration,
    /// Attempts per request before the error is returned (the fetch pipeline retries again).
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Upper bound on a server's `Retry-After`.
    pub max_retry_after: Duration,
    /// Consecutive failed attempts that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one half-open probe.
    pub breaker_cooldown: Duration,
    pub user_agent: String,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_attempts: 5,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            breaker_threshold: 8,
            breaker_cooldown: Duration::from_secs(15),
            user_agent: concat!("fluxora/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

impl HttpPolicy {
    /// Exponential backoff with full jitter for retry `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        let ms = exp.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }
}

/// Circuit breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Health snapshot of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceHealth {
    pub source: &'static str,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub total_failures: u64,
    pub total_requests: u64,
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    total_failures: u64,
    total_requests: u64,
    last_error: Option<String>,
}

/// HTTP client with the shared policy.
#[derive(Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    policy: HttpPolicy,
    source: &'static str,
    breaker: Mutex<Breaker>,
}

/// A non-success HTTP answer, before the caller interprets it.
#[derive(Debug)]
struct Failure {
    error: ChainError,
    retry_after: Option<Duration>,
}

fn parse_retry_after(h: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let s = h?.to_str().ok()?.trim();
    s.parse::<u64>().ok().map(Duration::from_secs)
}

fn problem_or_http(url: &str, status: u16, body: &str) -> ChainError {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        if v.get("type").is_some() || v.get("title").is_some() {
            let s = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            return ChainError::Problem {
                url: url.to_string(),
                status,
                problem_type: s("type"),
                title: s("title"),
                detail: s("detail"),
            };
        }
    }
    let mut body = body.to_string();
    body.truncate(500);
    ChainError::Http {
        url: url.to_string(),
        status,
        body,
    }
}

impl HttpClient {
    pub fn new(source: &'static str, policy: HttpPolicy) -> Result<Self, ChainError> {
        let client = reqwest::Client::builder()
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.total_timeout)
            .user_agent(policy.user_agent.clone())
            .build()
            .map_err(|e| ChainError::Invalid(format!("building the HTTP client: {e}")))?;
        Ok(HttpClient {
            client,
            policy,
            source,
            breaker: Mutex::new(Breaker {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                open_until: None,
                total_failures: 0,
                total_requests: 0,
                last_error: None,
            }),
        })
    }

    pub fn policy(&self) -> &HttpPolicy {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn health(&self) -> SourceHealth {
        let mut b = self.lock();
        if b.state == BreakerState::Open && b.open_until.is_some_and(|t| Instant::now() >= t) {
            b.state = BreakerState::HalfOpen;
        }
        SourceHealth {
            source: self.source,
            breaker: b.state,
            consecutive_failures: b.consecutive_failures,
            total_failures: b.total_failures,
            total_requests: b.total_requests,
            last_error: b.last_error.clone(),
        }
    }

    /// Whether a request may go out now; otherwise how long until the next probe.
    fn admit(&self) -> Result<(), Duration> {
        let mut b = self.lock();
        match b.state {
            BreakerState::Closed | BreakerState::HalfOpen => Ok(()),
            BreakerState::Open => {
                let now = Instant::now();
                match b.open_until {
                    Some(t) if now < t => Err(t - now),
                    _ => {
                        b.state = BreakerState::HalfOpen;
                        Ok(())
                    }
                }
            }
        }
    }

    fn record(&self, outcome: Result<(), &ChainError>) {
        let mut b = self.lock();
        b.total_requests += 1;
        match outcome {
            Ok(()) => {
                b.state = BreakerState::Closed;
                b.consecutive_failures = 0;
                b.open_until = None;
            }
            Err(e) => {
                b.total_failures += 1;
                b.consecutive_failures += 1;
                b.last_error = Some(e.to_string());
                if b.state == BreakerState::HalfOpen
                    || b.consecutive_failures >= self.policy.breaker_threshold
                {
                    if b.state != BreakerState::Open {
                        tracing::warn!(source = self.source, failures = b.consecutive_failures, error = %e, "circuit breaker open");
                    }
                    b.state = BreakerState::Open;
                    b.open_until = Some(Instant::now() + self.policy.breaker_cooldown);
                }
            }
        }
    }

    async fn attempt(&self, url: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let req = match body {
            Some(b) => self.client.post(url).json(b),
            None => self.client.get(url),
        };
        let resp = req
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| Failure {
                error: ChainError::Transport {
                    url: url.to_string(),
                    message: e.to_string(),
                },
                retry_after: None,
            })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
        let text = resp.text().await.map_err(|e| Failure {
            error: ChainError::Transport {
                url: url.to_string(),
                message: format!("reading the body: {e}"),
            },
            retry_after: None,
        })?;
        if !(200..300).contains(&status) {
            return Err(Failure {
                error: problem_or_http(url, status, &text),
                retry_after,
            });
        }
        serde_json::from_str(&text).map_err(|e| Failure {
            error: ChainError::Json {
                what: "response body",
                location: url.to_string(),
                message: e.to_string(),
            },
            retry_after: None,
        })
    }

    /// GET (`body = None`) or POST JSON, with retries, backoff, `Retry-After` and the breaker.
    /// Non-transient errors (4xx other than 429, bad JSON) return at once.
    pub async fn request(&self, url: &str, body: Option<&Value>) -> Result<Value, ChainError> {
        let mut attempt = 0u32;
        loop {
            if let Err(wait) = self.admit() {
                // Fail fast while open; the caller's retry loop (fetch pipeline) backs off.
                return Err(ChainError::CircuitOpen {
                    url: url.to_string(),
                    retry_in_ms: wait.as_millis() as u64,
                });
            }
            let started = Instant::now();
            let result = self.attempt(url, body).await;
            metrics::histogram!(
                "fluxora_source_request_duration_seconds",
                "source" => self.source,
                "outcome" => if result.is_ok() { "ok" } else { "error" }
            )
            .record(started.elapsed().as_secs_f64());
            match result {
                Ok(v) => {
                    self.record(Ok(()));
                    return Ok(v);
                }
                Err(f) => {
                    let transient = f.error.is_transient();
                    if transient {
                        self.record(Err(&f.error));
                    } else {
                        // The server answered: it is up, whatever it said.
                        self.record(Ok(()));
                        return Err(f.error);
                    }
                    attempt += 1;
                    if attempt >= self.policy.max_attempts {
                        return Err(f.error);
                    }
                    let wait = match f.retry_after {
                        Some(ra) => ra.min(self.policy.max_retry_after),
                        None => self.policy.backoff(attempt - 1),
                    };
                    tracing::warn!(source = self.source, url, attempt, wait_ms = wait.as_millis() as u64, error = %f.error, "retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = HttpPolicy {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..HttpPolicy::default()
        };
        for _ in 0..50 {
            let b0 = p.backoff(0);
            assert!(b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(400) && b3 <= Duration::from_millis(800));
            assert!(p.backoff(30) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn breaker_opens_after_threshold_and_half_opens() {
        let c = HttpClient::new(
            "t",
            HttpPolicy {
                breaker_threshold: 2,
                breaker_cooldown: Duration::from_millis(20),
                ..HttpPolicy::default()
            },
        )
        .unwrap();
        let e = ChainError::Transport {
            url: "u".into(),
            message: "m".into(),
        };
        c.record(Err(&e));
        assert_eq!(c.health().breaker, BreakerState::Closed);
        c.record(Err(&e));
        assert_eq!(c.health().breaker, BreakerState::Open);
        assert!(c.admit().is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.health().breaker, BreakerState::HalfOpen);
        assert!(c.admit().is_ok());
        c.record(Err(&e));
        assert_eq!(c.health().breaker, BreakerState::Open);
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.admit().is_ok());
        c.record(Ok(()));
        assert_eq!(c.health().breaker, BreakerState::Closed);
        assert_eq!(c.health().consecutive_failures, 0);
    }

    #[test]
    fn problem_json_is_parsed() {
        let e = problem_or_http(
            "u",
            410,
            r#"{"type":"https://stellar.org/horizon-errors/before_history","title":"Data Requested Is Before Recorded History","status":410,"detail":"d"}"#,
        );
        match e {
            ChainError::Problem {
                problem_type,
                status,
                detail,
                ..
            } => {
                assert!(problem_type.ends_with("before_history"));
                assert_eq!(status, 410);
                assert_eq!(detail, "d");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            problem_or_http("u", 502, "<html>"),
            ChainError::Http { status: 502, .. }
        ));
    }
}
