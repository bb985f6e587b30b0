//! Typed settings from flags, environment and an optional `.env`, validated at start-up.
//!
//! Every setting is read as text first (flag, then environment, then `.env`, then the default) and
//! validated in one pass, so that an operator sees **every** bad or missing field at once, each with
//! its name and the reason. The binary prints them and exits with status 2.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use clap::Args;
use serde::Serialize;
use url::Url;

/// Default database: an SQLite file in the working directory, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://fluxora.db";
/// Where the Fluxora frontend looks for its backend by default.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8787";
/// Stellar classic assets (and so USDC through its SAC) have 7 decimals.
pub const DEFAULT_TOKEN_DECIMALS: u32 = 7;
/// Default symbol of the streamed token (the frontend's `asset`).
pub const DEFAULT_TOKEN_SYMBOL: &str = "USDC";
/// Ledgers below `tip - FINALITY_DEPTH` are treated as final.
pub const DEFAULT_FINALITY_DEPTH: u32 = 16;
/// Largest finality window accepted (about a week of ledgers at 5 s).
pub const MAX_FINALITY_DEPTH: u32 = 120_960;
/// `i128::MAX` has 39 digits; more decimals than that would make every amount `0.000…`.
pub const MAX_TOKEN_DECIMALS: u32 = 38;
/// Shortest admin key accepted: anything shorter is guessable.
pub const MIN_ADMIN_KEY_LEN: usize = 16;
/// Default largest request body (bytes).
pub const DEFAULT_REQUEST_BODY_LIMIT: usize = 64 * 1024;
/// Default per-request timeout (ms).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default requests per minute per client IP.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 1_200;

/// The raw settings as clap sees them: every value is text so that validation can report all
/// problems together instead of stopping at the first one.
#[derive(Args, Debug, Clone, Default)]
pub struct RawSettings {
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Chain source: `horizon` or `rpc`.
    #[arg(long, env = "SOURCE", global = true)]
    pub source: Option<String>,
    /// Horizon base URL (needed when SOURCE=horizon).
    #[arg(long, env = "HORIZON_URL", global = true)]
    pub horizon_url: Option<String>,
    /// Stellar RPC URL (needed when SOURCE=rpc).
    #[arg(long, env = "STELLAR_RPC_URL", global = true)]
    pub stellar_rpc_url: Option<String>,
    /// The Fluxora stream contract id (`C…` strkey).
    #[arg(long, env = "CONTRACT_ID", global = true)]
    pub contract_id: Option<String>,
    /// The network passphrase, e.g. `Test SDF Network ; September 2015`.
    #[arg(long, env = "NETWORK_PASSPHRASE", global = true)]
    pub network_passphrase: Option<String>,
    /// First ledger to ingest when the store has no cursor yet.
    #[arg(long, env = "START_LEDGER", global = true)]
    pub start_ledger: Option<String>,
    /// Ledgers behind the tip that may still be rolled back.
    #[arg(long, env = "FINALITY_DEPTH", global = true)]
    pub finality_depth: Option<String>,
    /// Ledgers per fetch and per committed batch (1..=200, default 100).
    #[arg(long, env = "INGEST_BATCH_LEDGERS", global = true)]
    pub ingest_batch_ledgers: Option<String>,
    /// Decimals of the streamed token (default 7).
    #[arg(long, env = "TOKEN_DECIMALS", global = true)]
    pub token_decimals: Option<String>,
    /// Symbol of the streamed token shown to the frontend (default USDC).
    #[arg(long, env = "TOKEN_SYMBOL", global = true)]
    pub token_symbol: Option<String>,
    /// Address the HTTP server listens on (default 127.0.0.1:8787).
    #[arg(long, env = "LISTEN_ADDR", global = true)]
    pub listen_addr: Option<String>,
    /// Bearer key for the admin API (at least 16 characters).
    #[arg(long, env = "ADMIN_API_KEY", global = true, hide_env_values = true)]
    pub admin_api_key: Option<String>,
    /// Origins allowed by CORS: `*` (default) or a comma-separated list of `scheme://host[:port]`.
    #[arg(long, env = "CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,
    /// Largest accepted request body in bytes (default 65536).
    #[arg(long, env = "REQUEST_BODY_LIMIT", global = true)]
    pub request_body_limit: Option<String>,
    /// Per-request timeout in milliseconds (default 10000).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", global = true)]
    pub request_timeout_ms: Option<String>,
    /// Requests per minute per client IP on the REST API (default 1200; 0 disables the limit).
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", global = true)]
    pub rate_limit_per_minute: Option<String>,
    /// Webhook retry delays after each failed attempt, e.g. `5s,5m,30m,2h,5h,10h,10h` (the
    /// default); a delivery is dead once they are used up.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", global = true)]
    pub webhook_retry_schedule: Option<String>,
    /// Random spread of each retry delay, in percent (0..=100, default 20).
    #[arg(long, env = "WEBHOOK_RETRY_JITTER_PERCENT", global = true)]
    pub webhook_retry_jitter_percent: Option<String>,
    /// Per-attempt timeout (whole response), e.g. `30s` (the default).
    #[arg(long, env = "WEBHOOK_ATTEMPT_TIMEOUT", global = true)]
    pub webhook_attempt_timeout: Option<String>,
    /// An endpoint failing continuously for this long is disabled (default `5d`).
    #[arg(long, env = "WEBHOOK_DISABLE_AFTER", global = true)]
    pub webhook_disable_after: Option<String>,
    /// Webhook targets allowed besides public addresses: `none` (default), `loopback`, `all`.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_TARGETS", global = true)]
    pub webhook_allow_private_targets: Option<String>,
    /// How long a rotated-out secret is still signed with (default `24h`).
    #[arg(long, env = "WEBHOOK_ROTATION_GRACE", global = true)]
    pub webhook_rotation_grace: Option<String>,
    /// Dispatcher workers in this process (0..=64, default 2; 0 runs no dispatcher).
    #[arg(long, env = "WEBHOOK_WORKERS", global = true)]
    pub webhook_workers: Option<String>,
    /// Attempts in flight per worker (1..=1024, default 64).
    #[arg(long, env = "WEBHOOK_CONCURRENCY", global = true)]
    pub webhook_concurrency: Option<String>,
    /// Fallback poll of the outbox when no notification arrives (default `1s`).
    #[arg(long, env = "WEBHOOK_POLL_INTERVAL", global = true)]
    pub webhook_poll_interval: Option<String>,
    /// WebSocket connections per client IP at most (default 20; 0: no cap).
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_IP", global = true)]
    pub ws_max_connections_per_ip: Option<String>,
    /// WebSocket connections at most (default 20000; 0: no cap).
    #[arg(long, env = "WS_MAX_CONNECTIONS", global = true)]
    pub ws_max_connections: Option<String>,
    /// Items (frames, or pages for all-streams-only connections) queued per WebSocket connection
    /// before it is closed as a slow consumer (default 1024).
    #[arg(long, env = "WS_SEND_QUEUE", global = true)]
    pub ws_send_queue: Option<String>,
    /// Bytes queued per WebSocket connection before it is closed as a slow consumer (default
    /// 16777216).
    #[arg(long, env = "WS_SEND_QUEUE_BYTES", global = true)]
    pub ws_send_queue_bytes: Option<String>,
    /// Milliseconds between server pings; two unanswered ones close the socket (default 30000).
    #[arg(long, env = "WS_PING_INTERVAL_MS", global = true)]
    pub ws_ping_interval_ms: Option<String>,
    /// Positions behind the head a WebSocket resume may start from (default 1000000; 0: any).
    #[arg(long, env = "WS_RESUME_WINDOW", global = true)]
    pub ws_resume_window: Option<String>,
    /// Log format: `json` (production) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Log filter, `tracing` env-filter syntax (default `info`).
    #[arg(long, env = "LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
}

/// Which chain source the ingestor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Horizon,
    Rpc,
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "horizon" => Ok(Self::Horizon),
            "rpc" => Ok(Self::Rpc),
            other => Err(format!("must be `horizon` or `rpc`, got `{other}`")),
        }
    }
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("must be `json` or `pretty`, got `{other}`")),
        }
    }
}

/// A parsed database URL; the scheme picks the store.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://path`, `sqlite:path` or `sqlite::memory:`.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses a database URL, choosing the backend by scheme.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("is empty".into());
        }
        if let Some(rest) = raw.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            if path.is_empty() {
                return Err("names no SQLite file (expected `sqlite://PATH`)".into());
            }
            return Ok(Self::Sqlite(raw.to_string()));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let url = Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
            if url.host_str().unwrap_or("").is_empty() {
                return Err("has no host".into());
            }
            return Ok(Self::Postgres(raw.to_string()));
        }
        let scheme = raw.split(':').next().unwrap_or(raw);
        Err(format!(
            "has unsupported scheme `{scheme}` (expected `sqlite://PATH` or `postgres://…`)"
        ))
    }

    /// The URL with any password replaced, safe to log.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(s) => s.clone(),
            Self::Postgres(s) => match Url::parse(s) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    u.to_string()
                }
                Err(_) => "postgres://***".into(),
            },
        }
    }

    /// The backend name, `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// A secret string: never printed, never serialized in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's value, for the one place that must compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A Soroban contract id, checked as a `C…` strkey (checksum included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ContractId(String);

impl ContractId {
    /// Parses and checks a `C…` strkey.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        match stellar_strkey::Strkey::from_string(raw) {
            Ok(stellar_strkey::Strkey::Contract(_)) => Ok(Self(raw.to_string())),
            Ok(_) => Err(format!(
                "`{raw}` is a valid strkey but not a contract id (`C…`)"
            )),
            Err(e) => Err(format!("`{raw}` is not a valid contract strkey: {e}")),
        }
    }
    /// The strkey text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a Stellar address (`G…` account, `M…` muxed account or `C…` contract), checksum included.
pub fn check_address(raw: &str) -> Result<(), String> {
    match stellar_strkey::Strkey::from_string(raw) {
        Ok(stellar_strkey::Strkey::PublicKeyEd25519(_))
        | Ok(stellar_strkey::Strkey::MuxedAccountEd25519(_))
        | Ok(stellar_strkey::Strkey::Contract(_)) => Ok(()),
        Ok(_) => Err(format!(
            "`{raw}` is a strkey but not an address (expected `G…`, `M…` or `C…`)"
        )),
        Err(e) => Err(format!("`{raw}` is not a valid Stellar address: {e}")),
    }
}

/// Which non-public webhook targets are allowed (SSRF guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TargetPolicy {
    /// Public addresses only (default): loopback, private, link-local, CGNAT, multicast,
    /// reserved and unspecified targets are refused.
    #[default]
    None,
    /// Public addresses and loopback (tests, the demo, a receiver on the same host).
    Loopback,
    /// Any address.
    All,
}

impl FromStr for TargetPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "false" | "no" => Ok(Self::None),
            "loopback" => Ok(Self::Loopback),
            "all" | "true" | "yes" => Ok(Self::All),
            other => Err(format!(
                "must be `none`, `loopback` or `all`, got `{other}`"
            )),
        }
    }
}

/// Parses a duration with a unit: `250ms`, `5s`, `5m`, `2h`, `1d`.
pub fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    let t = raw.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{t}` has no unit (use ms, s, m, h or d, e.g. `5s`)"))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{t}` is not a number with a unit like `5s`"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        u => return Err(format!("`{t}`: unknown unit `{u}` (use ms, s, m, h or d)")),
    }
    .ok_or_else(|| format!("`{t}` is too long"))?;
    Ok(std::time::Duration::from_millis(ms))
}

/// Renders a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis() as u64;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn ser_duration<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn ser_durations<S: serde::Serializer>(d: &[std::time::Duration], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(d.iter().map(|d| format_duration(*d)))
}

/// Default retry schedule (Svix-like): delays after the 1st, 2nd, … failed attempt.
pub const DEFAULT_WEBHOOK_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// Settings of the webhook dispatcher and admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookSettings {
    #[serde(serialize_with = "ser_durations")]
    pub retry_schedule: Vec<std::time::Duration>,
    pub retry_jitter_percent: u32,
    #[serde(serialize_with = "ser_duration")]
    pub attempt_timeout: std::time::Duration,
    #[serde(serialize_with = "ser_duration")]
    pub disable_after: std::time::Duration,
    pub allow_private_targets: TargetPolicy,
    #[serde(serialize_with = "ser_duration")]
    pub rotation_grace: std::time::Duration,
    pub workers: u32,
    pub concurrency: u32,
    #[serde(serialize_with = "ser_duration")]
    pub poll_interval: std::time::Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        use std::time::Duration as D;
        Self {
            retry_schedule: parse_schedule(DEFAULT_WEBHOOK_RETRY_SCHEDULE).unwrap_or_default(),
            retry_jitter_percent: 20,
            attempt_timeout: D::from_secs(30),
            disable_after: D::from_secs(5 * 86_400),
            allow_private_targets: TargetPolicy::None,
            rotation_grace: D::from_secs(86_400),
            workers: 2,
            concurrency: 64,
            poll_interval: D::from_secs(1),
        }
    }
}

/// Parses a comma-separated retry schedule (1 to 50 delays, each at most 7 days).
pub fn parse_schedule(raw: &str) -> Result<Vec<std::time::Duration>, String> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d = parse_duration(part)?;
        if d > std::time::Duration::from_secs(7 * 86_400) {
            return Err(format!("`{part}` is longer than 7d"));
        }
        out.push(d);
    }
    if out.is_empty() || out.len() > 50 {
        return Err(format!(
            "needs 1 to 50 delays like `{DEFAULT_WEBHOOK_RETRY_SCHEDULE}`, got {}",
            out.len()
        ));
    }
    Ok(out)
}

fn duration_in(
    raw: &str,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let d = parse_duration(raw)?;
    if d < min || d > max {
        return Err(format!(
            "{} is out of range {}..={}",
            format_duration(d),
            format_duration(min),
            format_duration(max)
        ));
    }
    Ok(d)
}

/// What a command needs beyond the database and logging.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// The command reads a real chain: source, its URL, contract id and passphrase are required.
    pub chain: bool,
}

/// Validated settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    pub source: SourceKind,
    pub horizon_url: Option<Url>,
    pub stellar_rpc_url: Option<Url>,
    pub contract_id: Option<ContractId>,
    pub network_passphrase: Option<String>,
    pub start_ledger: Option<u32>,
    pub finality_depth: u32,
    pub ingest_batch_ledgers: u32,
    pub token_decimals: u32,
    pub token_symbol: String,
    pub listen_addr: SocketAddr,
    pub admin_api_key: Option<Secret>,
    pub http: HttpSettings,
    pub webhooks: WebhookSettings,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// Which origins CORS allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CorsOrigins {
    /// `*`
    Any,
    /// Exactly these origins (`scheme://host[:port]`).
    List(Vec<String>),
}

/// Settings of the HTTP edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpSettings {
    pub cors_origins: CorsOrigins,
    pub request_body_limit: usize,
    pub request_timeout_ms: u64,
    /// 0: no limit.
    pub rate_limit_per_minute: u32,
    /// Interval of `: heartbeat` comments on Server-Sent Events.
    pub sse_heartbeat_ms: u64,
    /// The WebSocket hub.
    pub ws: WsSettings,
}

/// Settings of the WebSocket hub (`/ws/streams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WsSettings {
    /// 0: no cap.
    pub max_connections_per_ip: u32,
    /// 0: no cap.
    pub max_connections: u32,
    pub send_queue: u32,
    pub send_queue_bytes: u32,
    pub ping_interval_ms: u64,
    /// 0: no limit.
    pub resume_window: u64,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            max_connections_per_ip: 20,
            max_connections: 20_000,
            send_queue: 1024,
            send_queue_bytes: 16 * 1024 * 1024,
            ping_interval_ms: 30_000,
            resume_window: 1_000_000,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            cors_origins: CorsOrigins::Any,
            request_body_limit: DEFAULT_REQUEST_BODY_LIMIT,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
            sse_heartbeat_ms: 30_000,
            ws: WsSettings::default(),
        }
    }
}

fn parse_cors_origins(raw: &str) -> Result<CorsOrigins, String> {
    if raw.trim() == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut out = Vec::new();
    for o in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let url = Url::parse(o).map_err(|e| format!("`{o}` is not an origin: {e}"))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.path() != "/"
            || url.query().is_some()
            || o.ends_with('/')
        {
            return Err(format!(
                "`{o}` is not an origin like https://app.example.com (scheme, host, optional port)"
            ));
        }
        out.push(o.to_string());
    }
    if out.is_empty() {
        return Err("lists no origin (use `*` to allow any)".into());
    }
    Ok(CorsOrigins::List(out))
}

/// One invalid or missing setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The environment name of the setting, e.g. `DATABASE_URL`.
    pub name: &'static str,
    /// Why it was refused.
    pub reason: String,
}

/// Every problem found in the settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(
                f,
                "  {} (--{}): {}",
                e.name,
                e.name.to_ascii_lowercase().replace('_', "-"),
                e.reason
            )?;
        }
        Ok(())
    }
}

struct Collector(Vec<FieldError>);

impl Collector {
    fn push(&mut self, name: &'static str, reason: impl Into<String>) {
        self.0.push(FieldError {
            name,
            reason: reason.into(),
        });
    }
    fn parse<T>(
        &mut self,
        name: &'static str,
        raw: Option<&str>,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = raw?;
        match f(raw) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.push(name, reason);
                None
            }
        }
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_u32_in(raw: &str, min: u32, max: u32) -> Result<u32, String> {
    let n: u64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("`{raw}` is not a whole number"))?;
    if n < u64::from(min) || n > u64::from(max) {
        return Err(format!("{n} is out of range {min}..={max}"));
    }
    u32::try_from(n).map_err(|_| format!("{n} is out of range {min}..={max}"))
}

fn parse_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("`{raw}` is not a valid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        s => return Err(format!("scheme `{s}` is not http or https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` has no host"));
    }
    Ok(url)
}

impl RawSettings {
    fn validate_webhooks(&self, c: &mut Collector) -> Option<WebhookSettings> {
        use std::time::Duration as D;
        let d = WebhookSettings::default();
        let schedule = match non_empty(&self.webhook_retry_schedule) {
            None => Some(d.retry_schedule),
            raw => c.parse("WEBHOOK_RETRY_SCHEDULE", raw, parse_schedule),
        };
        let jitter = match non_empty(&self.webhook_retry_jitter_percent) {
            None => Some(d.retry_jitter_percent),
            raw => c.parse("WEBHOOK_RETRY_JITTER_PERCENT", raw, |r| {
                parse_u32_in(r, 0, 100)
            }),
        };
        let timeout = match non_empty(&self.webhook_attempt_timeout) {
            None => Some(d.attempt_timeout),
            raw => c.parse("WEBHOOK_ATTEMPT_TIMEOUT", raw, |r| {
                duration_in(r, D::from_millis(100), D::from_secs(300))
            }),
        };
        let disable_after = match non_empty(&self.webhook_disable_after) {
            None => Some(d.disable_after),
            raw => c.parse("WEBHOOK_DISABLE_AFTER", raw, |r| {
                duration_in(r, D::from_secs(1), D::from_secs(365 * 86_400))
            }),
        };
        let policy = match non_empty(&self.webhook_allow_private_targets) {
            None => Some(d.allow_private_targets),
            raw => c.parse("WEBHOOK_ALLOW_PRIVATE_TARGETS", raw, TargetPolicy::from_str),
        };
        let grace = match non_empty(&self.webhook_rotation_grace) {
            None => Some(d.rotation_grace),
            raw => c.parse("WEBHOOK_ROTATION_GRACE", raw, |r| {
                duration_in(r, D::from_secs(0), D::from_secs(30 * 86_400))
            }),
        };
        let workers = match non_empty(&self.webhook_workers) {
            None => Some(d.workers),
            raw => c.parse("WEBHOOK_WORKERS", raw, |r| parse_u32_in(r, 0, 64)),
        };
        let concurrency = match non_empty(&self.webhook_concurrency) {
            None => Some(d.concurrency),
            raw => c.parse("WEBHOOK_CONCURRENCY", raw, |r| parse_u32_in(r, 1, 1024)),
        };
        let poll = match non_empty(&self.webhook_poll_interval) {
            None => Some(d.poll_interval),
            raw => c.parse("WEBHOOK_POLL_INTERVAL", raw, |r| {
                duration_in(r, D::from_millis(10), D::from_secs(600))
            }),
        };
        Some(WebhookSettings {
            retry_schedule: schedule?,
            retry_jitter_percent: jitter?,
            attempt_timeout: timeout?,
            disable_after: disable_after?,
            allow_private_targets: policy?,
            rotation_grace: grace?,
            workers: workers?,
            concurrency: concurrency?,
            poll_interval: poll?,
        })
    }

    /// Validates every field and returns the settings, or every problem found.
    pub fn validate(&self, needs: Needs) -> Result<Settings, ConfigErrors> {
        let mut c = Collector(Vec::new());

        let database_url = c.parse(
            "DATABASE_URL",
            Some(non_empty(&self.database_url).unwrap_or(DEFAULT_DATABASE_URL)),
            DatabaseUrl::parse,
        );
        let source = c.parse(
            "SOURCE",
            Some(non_empty(&self.source).unwrap_or("rpc")),
            SourceKind::from_str,
        );
        let horizon_url = c.parse("HORIZON_URL", non_empty(&self.horizon_url), parse_http_url);
        let stellar_rpc_url = c.parse(
            "STELLAR_RPC_URL",
            non_empty(&self.stellar_rpc_url),
            parse_http_url,
        );
        let contract_id = c.parse(
            "CONTRACT_ID",
            non_empty(&self.contract_id),
            ContractId::parse,
        );
        let network_passphrase = non_empty(&self.network_passphrase).map(str::to_string);
        let start_ledger = c.parse("START_LEDGER", non_empty(&self.start_ledger), |r| {
            parse_u32_in(r, 1, u32::MAX)
        });
        let finality_depth = match non_empty(&self.finality_depth) {
            None => Some(DEFAULT_FINALITY_DEPTH),
            raw => c.parse("FINALITY_DEPTH", raw, |r| {
                parse_u32_in(r, 0, MAX_FINALITY_DEPTH)
            }),
        };
        let ingest_batch_ledgers = match non_empty(&self.ingest_batch_ledgers) {
            None => Some(100),
            raw => c.parse("INGEST_BATCH_LEDGERS", raw, |r| parse_u32_in(r, 1, 200)),
        };
        let token_decimals = match non_empty(&self.token_decimals) {
            None => Some(DEFAULT_TOKEN_DECIMALS),
            raw => c.parse("TOKEN_DECIMALS", raw, |r| {
                parse_u32_in(r, 0, MAX_TOKEN_DECIMALS)
            }),
        };
        let token_symbol = c.parse(
            "TOKEN_SYMBOL",
            Some(non_empty(&self.token_symbol).unwrap_or(DEFAULT_TOKEN_SYMBOL)),
            |r| {
                if r.len() <= 12 && r.chars().all(|c| c.is_ascii_alphanumeric()) {
                    Ok(r.to_string())
                } else {
                    Err(format!(
                        "`{r}` is not a token symbol (1 to 12 letters or digits)"
                    ))
                }
            },
        );
        let listen_addr = c.parse(
            "LISTEN_ADDR",
            Some(non_empty(&self.listen_addr).unwrap_or(DEFAULT_LISTEN_ADDR)),
            |r| {
                r.parse::<SocketAddr>()
                    .map_err(|_| format!("`{r}` is not a socket address like 127.0.0.1:8787"))
            },
        );
        let admin_api_key = c.parse("ADMIN_API_KEY", non_empty(&self.admin_api_key), |r| {
            if r.chars().count() < MIN_ADMIN_KEY_LEN {
                Err(format!(
                    "is too short ({} characters; at least {MIN_ADMIN_KEY_LEN} required)",
                    r.chars().count()
                ))
            } else {
                Ok(Secret(r.to_string()))
            }
        });
        let cors_origins = c.parse(
            "CORS_ORIGINS",
            Some(non_empty(&self.cors_origins).unwrap_or("*")),
            parse_cors_origins,
        );
        let request_body_limit = match non_empty(&self.request_body_limit) {
            None => Some(DEFAULT_REQUEST_BODY_LIMIT as u32),
            raw => c.parse("REQUEST_BODY_LIMIT", raw, |r| {
                parse_u32_in(r, 1024, 64 * 1024 * 1024)
            }),
        };
        let request_timeout_ms = match non_empty(&self.request_timeout_ms) {
            None => Some(DEFAULT_REQUEST_TIMEOUT_MS as u32),
            raw => c.parse("REQUEST_TIMEOUT_MS", raw, |r| parse_u32_in(r, 100, 600_000)),
        };
        let rate_limit_per_minute = match non_empty(&self.rate_limit_per_minute) {
            None => Some(DEFAULT_RATE_LIMIT_PER_MINUTE),
            raw => c.parse("RATE_LIMIT_PER_MINUTE", raw, |r| {
                parse_u32_in(r, 0, 10_000_000)
            }),
        };
        let d = WsSettings::default();
        let mut ws_num =
            |name: &'static str, raw: &Option<String>, default: u32, min, max| match non_empty(raw)
            {
                None => Some(default),
                raw => c.parse(name, raw, |r| parse_u32_in(r, min, max)),
            };
        let ws = (
            ws_num(
                "WS_MAX_CONNECTIONS_PER_IP",
                &self.ws_max_connections_per_ip,
                d.max_connections_per_ip,
                0,
                1_000_000,
            ),
            ws_num(
                "WS_MAX_CONNECTIONS",
                &self.ws_max_connections,
                d.max_connections,
                0,
                10_000_000,
            ),
            ws_num(
                "WS_SEND_QUEUE",
                &self.ws_send_queue,
                d.send_queue,
                16,
                1_000_000,
            ),
            ws_num(
                "WS_SEND_QUEUE_BYTES",
                &self.ws_send_queue_bytes,
                d.send_queue_bytes,
                65_536,
                u32::MAX,
            ),
            ws_num(
                "WS_PING_INTERVAL_MS",
                &self.ws_ping_interval_ms,
                d.ping_interval_ms as u32,
                100,
                3_600_000,
            ),
            ws_num(
                "WS_RESUME_WINDOW",
                &self.ws_resume_window,
                d.resume_window as u32,
                0,
                u32::MAX,
            ),
        );
        let ws = match ws {
            (Some(a), Some(b), Some(q), Some(qb), Some(p), Some(w)) => Some(WsSettings {
                max_connections_per_ip: a,
                max_connections: b,
                send_queue: q,
                send_queue_bytes: qb,
                ping_interval_ms: u64::from(p),
                resume_window: u64::from(w),
            }),
            _ => None,
        };
        let http = match (
            cors_origins,
            request_body_limit,
            request_timeout_ms,
            rate_limit_per_minute,
            ws,
        ) {
            (Some(cors_origins), Some(bl), Some(tm), Some(rl), Some(ws)) => Some(HttpSettings {
                cors_origins,
                request_body_limit: bl as usize,
                request_timeout_ms: u64::from(tm),
                rate_limit_per_minute: rl,
                sse_heartbeat_ms: 30_000,
                ws,
            }),
            _ => None,
        };
        let webhooks = self.validate_webhooks(&mut c);
        let log_format = c.parse(
            "LOG_FORMAT",
            Some(non_empty(&self.log_format).unwrap_or("pretty")),
            LogFormat::from_str,
        );
        let log_level = non_empty(&self.log_level)
            .unwrap_or("info,sqlx=warn")
            .to_string();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            c.push(
                "LOG_LEVEL",
                format!("`{log_level}` is not a valid filter: {e}"),
            );
        }

        if needs.chain {
            match source {
                Some(SourceKind::Horizon)
                    if self
                        .horizon_url
                        .as_deref()
                        .is_none_or(|s| s.trim().is_empty()) =>
                {
                    c.push("HORIZON_URL", "is required when SOURCE=horizon")
                }
                Some(SourceKind::Rpc)
                    if self
                        .stellar_rpc_url
                        .as_deref()
                        .is_none_or(|s| s.trim().is_empty()) =>
                {
                    c.push("STELLAR_RPC_URL", "is required when SOURCE=rpc")
                }
                _ => {}
            }
            if non_empty(&self.contract_id).is_none() {
                c.push(
                    "CONTRACT_ID",
                    "is required (the Fluxora contract's `C…` id)",
                );
            }
            if network_passphrase.is_none() {
                c.push(
                    "NETWORK_PASSPHRASE",
                    "is required (e.g. `Test SDF Network ; September 2015`)",
                );
            }
        }

        match (
            database_url,
            source,
            finality_depth,
            ingest_batch_ledgers,
            token_decimals,
            listen_addr,
            log_format,
            http,
            token_symbol,
            webhooks,
        ) {
            (
                Some(database_url),
                Some(source),
                Some(fd),
                Some(bl),
                Some(td),
                Some(la),
                Some(lf),
                Some(http),
                Some(token_symbol),
                Some(webhooks),
            ) if c.0.is_empty() => Ok(Settings {
                database_url,
                source,
                horizon_url,
                stellar_rpc_url,
                contract_id,
                network_passphrase,
                start_ledger,
                finality_depth: fd,
                ingest_batch_ledgers: bl,
                token_decimals: td,
                token_symbol,
                listen_addr: la,
                admin_api_key,
                http,
                webhooks,
                log_format: lf,
                log_level,
            }),
            _ => Err(ConfigErrors(c.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC";

    #[test]
    fn defaults_are_valid() {
        let s = RawSettings::default().validate(Needs::default()).unwrap();
        assert_eq!(
            s.database_url,
            DatabaseUrl::Sqlite("sqlite://fluxora.db".into())
        );
        assert_eq!(s.token_decimals, 7);
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:8787");
        assert_eq!(s.source, SourceKind::Rpc);
        assert_eq!(s.log_format, LogFormat::Pretty);
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let raw = RawSettings {
            database_url: Some("mysql://x".into()),
            source: Some("ftp".into()),
            horizon_url: Some("not a url".into()),
            stellar_rpc_url: Some("ftp://host".into()),
            // checksum broken: last character changed
            contract_id: Some(format!("{}A", &CONTRACT[..CONTRACT.len() - 1])),
            network_passphrase: None,
            start_ledger: Some("0".into()),
            finality_depth: Some("-3".into()),
            ingest_batch_ledgers: Some("0".into()),
            token_decimals: Some("39".into()),
            token_symbol: Some("U S D".into()),
            listen_addr: Some("localhost".into()),
            admin_api_key: Some("short".into()),
            cors_origins: Some("https://ok.example, ftp://x".into()),
            request_body_limit: Some("12".into()),
            request_timeout_ms: Some("soon".into()),
            rate_limit_per_minute: Some("-1".into()),
            webhook_retry_schedule: Some("5s,soon".into()),
            webhook_retry_jitter_percent: Some("101".into()),
            webhook_attempt_timeout: Some("10".into()),
            webhook_disable_after: Some("0s".into()),
            webhook_allow_private_targets: Some("maybe".into()),
            webhook_rotation_grace: Some("31d".into()),
            webhook_workers: Some("65".into()),
            webhook_concurrency: Some("0".into()),
            webhook_poll_interval: Some("1ms".into()),
            ws_max_connections_per_ip: Some("many".into()),
            ws_max_connections: Some("-5".into()),
            ws_send_queue: Some("3".into()),
            ws_send_queue_bytes: Some("1k".into()),
            ws_ping_interval_ms: Some("1".into()),
            ws_resume_window: Some("x".into()),
            log_format: Some("xml".into()),
            log_level: Some("info,[".into()),
        };
        let errs = raw.validate(Needs { chain: true }).unwrap_err();
        let names: Vec<_> = errs.0.iter().map(|e| e.name).collect();
        for n in [
            "DATABASE_URL",
            "SOURCE",
            "HORIZON_URL",
            "STELLAR_RPC_URL",
            "CONTRACT_ID",
            "NETWORK_PASSPHRASE",
            "START_LEDGER",
            "FINALITY_DEPTH",
            "INGEST_BATCH_LEDGERS",
            "TOKEN_DECIMALS",
            "TOKEN_SYMBOL",
            "LISTEN_ADDR",
            "ADMIN_API_KEY",
            "CORS_ORIGINS",
            "REQUEST_BODY_LIMIT",
            "REQUEST_TIMEOUT_MS",
            "RATE_LIMIT_PER_MINUTE",
            "WS_MAX_CONNECTIONS_PER_IP",
            "WS_MAX_CONNECTIONS",
            "WS_SEND_QUEUE",
            "WS_SEND_QUEUE_BYTES",
            "WS_PING_INTERVAL_MS",
            "WS_RESUME_WINDOW",
            "LOG_FORMAT",
            "LOG_LEVEL",
            "WEBHOOK_RETRY_SCHEDULE",
            "WEBHOOK_RETRY_JITTER_PERCENT",
            "WEBHOOK_ATTEMPT_TIMEOUT",
            "WEBHOOK_DISABLE_AFTER",
            "WEBHOOK_ALLOW_PRIVATE_TARGETS",
            "WEBHOOK_ROTATION_GRACE",
            "WEBHOOK_WORKERS",
            "WEBHOOK_CONCURRENCY",
            "WEBHOOK_POLL_INTERVAL",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let text = errs.to_string();
        assert!(text.contains("--database-url"));
        assert!(!text.contains("short\n"), "secret value must not be echoed");
    }

    #[test]
    fn chain_commands_require_source_fields() {
        let errs = RawSettings::default()
            .validate(Needs { chain: true })
            .unwrap_err();
        let names: Vec<_> = errs.0.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            ["STELLAR_RPC_URL", "CONTRACT_ID", "NETWORK_PASSPHRASE"]
        );
        let raw = RawSettings {
            source: Some("horizon".into()),
            ..Default::default()
        };
        let errs = raw.validate(Needs { chain: true }).unwrap_err();
        assert_eq!(errs.0[0].name, "HORIZON_URL");
    }

    #[test]
    fn full_chain_config_is_accepted() {
        let raw = RawSettings {
            database_url: Some("postgres://postgres:pw@127.0.0.1:5432/test".into()),
            stellar_rpc_url: Some("https://soroban-testnet.stellar.org".into()),
            contract_id: Some(CONTRACT.into()),
            network_passphrase: Some("Test SDF Network ; September 2015".into()),
            start_ledger: Some("4294967295".into()),
            admin_api_key: Some("0123456789abcdef".into()),
            log_format: Some("JSON".into()),
            ..Default::default()
        };
        let s = raw.validate(Needs { chain: true }).unwrap();
        assert_eq!(s.start_ledger, Some(u32::MAX));
        assert_eq!(s.log_format, LogFormat::Json);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("pw@"), "password leaked: {json}");
        assert!(!json.contains("0123456789abcdef"), "admin key leaked");
        assert!(format!("{s:?}").contains("Secret(***)"));
    }

    #[test]
    fn strkeys_are_checked() {
        let account = stellar_strkey::ed25519::PublicKey([7u8; 32])
            .to_string()
            .as_str()
            .to_string();
        assert!(ContractId::parse(CONTRACT).is_ok());
        assert!(ContractId::parse(&account).is_err());
        assert!(check_address(&account).is_ok());
        assert!(check_address(CONTRACT).is_ok());
        // flip one character: the checksum must catch it
        let mut broken = account.clone().into_bytes();
        let i = broken.len() - 3;
        broken[i] = if broken[i] == b'A' { b'B' } else { b'A' };
        assert!(check_address(&String::from_utf8(broken).unwrap()).is_err());
    }

    #[test]
    fn cors_origins() {
        assert_eq!(parse_cors_origins("*"), Ok(CorsOrigins::Any));
        assert_eq!(
            parse_cors_origins("http://localhost:5173, https://app.fluxora.io"),
            Ok(CorsOrigins::List(vec![
                "http://localhost:5173".into(),
                "https://app.fluxora.io".into()
            ]))
        );
        assert!(parse_cors_origins("https://a.example/path").is_err());
        assert!(parse_cors_origins(" , ").is_err());
    }

    #[test]
    fn webhook_settings() {
        let s = RawSettings::default().validate(Needs::default()).unwrap();
        assert_eq!(s.webhooks, WebhookSettings::default());
        assert_eq!(s.webhooks.retry_schedule.len(), 7);
        let json = serde_json::to_value(&s.webhooks).unwrap();
        assert_eq!(
            json["retry_schedule"],
            serde_json::json!(["5s", "5m", "30m", "2h", "5h", "10h", "10h"])
        );
        assert_eq!(json["disable_after"], "5d");
        let raw = RawSettings {
            webhook_retry_schedule: Some("50ms, 1s".into()),
            webhook_allow_private_targets: Some("loopback".into()),
            webhook_attempt_timeout: Some("1500ms".into()),
            ..Default::default()
        };
        let s = raw.validate(Needs::default()).unwrap();
        assert_eq!(
            s.webhooks.retry_schedule,
            vec![
                std::time::Duration::from_millis(50),
                std::time::Duration::from_secs(1)
            ]
        );
        assert_eq!(s.webhooks.allow_private_targets, TargetPolicy::Loopback);
        assert_eq!(format_duration(s.webhooks.attempt_timeout), "1500ms");
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn database_urls() {
        assert!(matches!(
            DatabaseUrl::parse("sqlite::memory:"),
            Ok(DatabaseUrl::Sqlite(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("sqlite:data.db"),
            Ok(DatabaseUrl::Sqlite(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgresql://u@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("redis://h")
            .unwrap_err()
            .contains("redis"));
    }
}
