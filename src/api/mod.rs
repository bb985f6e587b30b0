//! The HTTP edge: every route (REST, health, metrics, OpenAPI, the frontend's flat surface, the
//! WebSocket hub and the webhook admin API mount here), the envelope and the one error type,
//! and the middleware stack (request ids, CORS, body limit, timeout, per-IP rate limit, security
//! headers, metrics).

pub mod admin_webhooks;
pub mod cache;
pub mod cursor;
pub mod envelope;
pub mod error;
pub mod feed;
pub mod frontend;
pub mod health;
pub mod middleware;
pub mod openapi;
pub mod params;
pub mod request_id;
pub mod streams;
pub mod types;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Method};
use axum::Router;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

pub use error::ApiError;

use crate::chain::LedgerSource;
use crate::config::{CorsOrigins, HttpSettings, Secret};
use crate::ingest::IndexerStatus;
use crate::projection::view::ViewOptions;
use crate::store::Store;
use crate::webhooks::WebhookAdmin;

/// `/treasury/metrics` results by treasury with the instant they were computed.
pub type MetricsCache = HashMap<String, (std::time::Instant, Vec<frontend::Metric>)>;

/// Everything a handler may need. Cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    pub store: Arc<dyn Store>,
    /// The ingestor's status (an API-only process holds a receiver that never changes).
    pub status: watch::Receiver<IndexerStatus>,
    /// The chain source, when this process ingests.
    pub source: Option<Arc<dyn LedgerSource>>,
    /// Token decimals and contract id for rendering streams.
    pub view: ViewOptions,
    /// The network passphrase (health).
    pub network: Option<String>,
    pub http: HttpSettings,
    /// Open WebSocket connections (health, metrics).
    pub ws_connections: Arc<AtomicUsize>,
    /// Fires when the server shuts down: long-lived responses (SSE, WebSocket) end on it.
    pub shutdown: watch::Receiver<bool>,
    /// The admin API's bearer key; `None`: the admin API answers 503 (not configured).
    pub admin_api_key: Option<Secret>,
    /// The webhook admin operations (`/api/admin/webhooks`).
    pub webhooks: WebhookAdmin,
    /// The streamed token's symbol (the frontend's `asset`).
    pub asset: String,
    /// `/treasury/metrics` results by treasury, reused for a few seconds.
    pub metrics_cache: Arc<tokio::sync::Mutex<MetricsCache>>,
    /// Current stream states for the hot reads (off unless a generation source is wired).
    pub streams: cache::StreamCache,
    /// The WebSocket hub (`/ws/streams`), when this process runs one.
    pub hub: Option<Arc<crate::hub::Hub>>,
}

impl ApiContext {
    /// A context over `store` with defaults for everything else: no ingestion in this process
    /// (status `not_configured`), default HTTP settings, never shutting down.
    pub fn new(store: Arc<dyn Store>, view: ViewOptions) -> Self {
        let (_, status) = watch::channel(IndexerStatus::new());
        let (_, shutdown) = watch::channel(false);
        let store_for_webhooks = store.clone();
        Self {
            store,
            status,
            source: None,
            view,
            network: None,
            http: HttpSettings::default(),
            ws_connections: Arc::new(AtomicUsize::new(0)),
            shutdown,
            asset: crate::config::DEFAULT_TOKEN_SYMBOL.to_string(),
            metrics_cache: Arc::default(),
            streams: cache::StreamCache::default(),
            admin_api_key: None,
            webhooks: WebhookAdmin::new(
                store_for_webhooks,
                crate::config::TargetPolicy::default(),
                std::time::Duration::from_secs(86_400),
                None,
            ),
            hub: None,
        }
    }
}

/// The whole application router.
pub fn router(ctx: ApiContext) -> Router {
    health::prometheus();
    let limiter = middleware::RateLimit::new(ctx.http.rate_limit_per_minute);
    let routes = Router::new()
        .merge(health::routes())
        .merge(streams::routes())
        .merge(feed::routes())
        .merge(frontend::routes())
        .merge(openapi::routes())
        .merge(admin_webhooks::routes(ctx.clone()))
        .merge(ws::routes())
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .with_state(ctx.clone());
    routes
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            middleware::rate_limit,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(ctx.http.request_timeout_ms),
        ))
        .layer(RequestBodyLimitLayer::new(ctx.http.request_body_limit))
        .layer(DefaultBodyLimit::max(ctx.http.request_body_limit))
        .layer(axum::middleware::from_fn(middleware::envelope_errors))
        .layer(axum::middleware::from_fn(middleware::http_metrics))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(cors(&ctx.http.cors_origins))
        .layer(axum::middleware::from_fn(request_id::request_id))
}

fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| header::HeaderValue::from_str(o).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_NONE_MATCH,
            header::ACCEPT,
            HeaderName::from_static("last-event-id"),
            request_id::X_CORRELATION_ID,
        ])
        .expose_headers([
            request_id::X_REQUEST_ID,
            request_id::X_CORRELATION_ID,
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderName::from_static("x-fluxora-api-version"),
        ])
        .max_age(Duration::from_secs(600))
}

/// A running HTTP server.
pub struct Server {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

/// Binds `addr` and serves `app` until `shutdown` fires; in-flight requests finish first
/// (long-lived ones end on the same signal through [`ApiContext::shutdown`]).
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Server, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    // Small frames (WebSocket updates, short JSON) go out at once instead of waiting on Nagle,
    // and a send buffer that holds a commit's worth of frames: a fresh socket's default (16 KiB)
    // would split a larger write into rounds that wait for the client.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(256 * 1024);
    });
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
    });
    Ok(Server { addr, task })
}
