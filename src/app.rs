//! The long-running commands: `serve` (ingest a real network) and `demo` (ingest the built-in
//! simulated network), with a health endpoint and a live status line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{self, ApiContext};
use crate::config::HttpSettings;
use crate::hub::{Hub, HubConfig, Wake};
use crate::projection::view::ViewOptions;

use crate::chain::horizon::HorizonSource;
use crate::chain::http::HttpPolicy;
use crate::chain::rpc::RpcSource;
use crate::chain::{ContractFilter, LedgerSource};
use crate::config::{DatabaseUrl, Secret, Settings, SourceKind, TargetPolicy, WebhookSettings};
use crate::ingest::{IndexerState, IndexerStatus, IngestConfig, IngestError, Ingestor};
use crate::store::Store;
use crate::webhooks::{Dispatcher, DispatcherConfig, WebhookAdmin};

/// Errors of the long-running commands.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Sim(#[from] crate::sim::SimError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The API context both commands serve, with its WebSocket hub woken by `wakes`.
#[allow(clippy::too_many_arguments)]
async fn api_context(
    store: Arc<dyn Store>,
    status: watch::Receiver<IndexerStatus>,
    source: Option<Arc<dyn LedgerSource>>,
    view: ViewOptions,
    network: Option<String>,
    http: HttpSettings,
    firehose_key: Option<String>,
    wakes: Vec<Wake>,
    shutdown: watch::Receiver<bool>,
    admin_api_key: Option<Secret>,
    webhooks: WebhookAdmin,
) -> Result<ApiContext, AppError> {
    let ws_connections = Arc::new(AtomicUsize::new(0));
    let hub = Hub::start(
        store.clone(),
        view.clone(),
        hub_config(&http, firehose_key),
        wakes,
        ws_connections.clone(),
        shutdown.clone(),
    )
    .await?;
    Ok(ApiContext {
        status,
        source,
        network,
        http,
        ws_connections,
        shutdown,
        admin_api_key,
        webhooks,
        hub: Some(hub),
        ..ApiContext::new(store, view)
    })
}

/// The hub's settings from the HTTP ones.
pub fn hub_config(http: &HttpSettings, firehose_key: Option<String>) -> HubConfig {
    let ws = &http.ws;
    HubConfig {
        max_connections: ws.max_connections as usize,
        max_connections_per_ip: ws.max_connections_per_ip as usize,
        send_queue: ws.send_queue as usize,
        send_queue_bytes: ws.send_queue_bytes as usize,
        ping_interval: Duration::from_millis(ws.ping_interval_ms),
        resume_window: ws.resume_window,
        firehose_key,
        ..HubConfig::default()
    }
}

/// The webhook dispatcher of this process (none with `WEBHOOK_WORKERS=0`) and the admin
/// operations, which wake it after queueing.
fn webhooks(
    store: &Arc<dyn Store>,
    settings: &WebhookSettings,
    view: &ViewOptions,
) -> Result<(Option<Arc<Dispatcher>>, WebhookAdmin), AppError> {
    let dispatcher = if settings.workers > 0 {
        Some(Arc::new(
            Dispatcher::new(
                &**store,
                DispatcherConfig::from_settings(settings, view.clone()),
            )
            .map_err(AppError::Invalid)?,
        ))
    } else {
        None
    };
    let admin = WebhookAdmin::new(
        store.clone(),
        settings.allow_private_targets,
        settings.rotation_grace,
        dispatcher.as_ref().map(|d| d.waker()),
    );
    Ok((dispatcher, admin))
}

fn spawn_dispatcher(
    d: Option<Arc<Dispatcher>>,
    stop: watch::Receiver<bool>,
    notices: Option<tokio::sync::broadcast::Receiver<crate::ingest::Notice>>,
) -> Option<tokio::task::JoinHandle<()>> {
    d.map(|d| tokio::spawn(d.run(stop, notices)))
}

/// Waits for the dispatcher to record its in-flight attempts (bounded).
async fn stop_dispatcher(task: Option<tokio::task::JoinHandle<()>>, bound: Duration) {
    if let Some(t) = task {
        if tokio::time::timeout(bound, t).await.is_err() {
            tracing::warn!(
                "the webhook dispatcher did not stop in time; its claims expire by lease"
            );
        }
    }
}

async fn start_api(
    addr: SocketAddr,
    ctx: ApiContext,
) -> Result<(api::Server, Option<Arc<Hub>>), AppError> {
    let shutdown = ctx.shutdown.clone();
    let hub = ctx.hub.clone();
    let server = api::serve(addr, api::router(ctx), shutdown)
        .await
        .map_err(|source| AppError::Listen { addr, source })?;
    Ok((server, hub))
}

/// Closes the WebSocket connections (1001, `{"reason":"server_shutdown"}`), then waits for the
/// HTTP server to finish its in-flight requests (both bounded).
async fn stop_api((server, hub): (api::Server, Option<Arc<Hub>>)) {
    if let Some(hub) = hub {
        if !hub.drained(Duration::from_secs(5)).await {
            tracing::warn!(
                open = hub.connections(),
                "WebSocket connections still open after 5 s"
            );
        }
    }
    match tokio::time::timeout(Duration::from_secs(15), server.task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("HTTP server did not finish in-flight requests within 15 s"),
    }
}

/// On a terminal: a progress bar over the ledgers to catch up (ledgers/s, ETA) with the live
/// status as its message. Otherwise: a structured log line every 10 s.
fn spawn_status_line(
    status: watch::Receiver<IndexerStatus>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stdout().is_terminal();
    tokio::spawn(async move {
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(0),
                indicatif::ProgressDrawTarget::stdout(),
            );
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bar:30} {pos}/{len} ledgers ({per_sec}, ETA {eta}) {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let mut start: Option<u32> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(if tty { 250 } else { 10_000 }));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let s = status.borrow().clone();
            let state = match &s.state {
                IndexerState::Halted { reason } => format!("halted: {reason}"),
                other => format!("{other:?}").to_lowercase(),
            };
            match &bar {
                Some(b) => {
                    if let (Some(ledger), Some(tip)) = (s.ledger, s.source_tip) {
                        let first = *start.get_or_insert(ledger);
                        b.set_length(u64::from(tip.saturating_sub(first)));
                        b.set_position(u64::from(ledger.saturating_sub(first)));
                    }
                    b.set_message(format!(
                        "| ledger {} | lag {} | events {} | reorgs {} | epoch {} | {state}",
                        s.ledger.map_or("-".into(), |l| l.to_string()),
                        s.lag_ledgers.map_or("-".into(), |l| l.to_string()),
                        s.events_ingested,
                        s.reorgs,
                        s.epoch,
                    ));
                    b.tick();
                }
                None => tracing::info!(
                    ledger = s.ledger,
                    tip = s.source_tip,
                    lag_ledgers = s.lag_ledgers,
                    lag_ms = s.lag_ms,
                    events = s.events_ingested,
                    reorgs = s.reorgs,
                    epoch = s.epoch,
                    state = %state,
                    "ingest status"
                ),
            }
        }
        if let Some(b) = bar {
            b.abandon();
        }
    })
}

/// Resolves when Ctrl-C (or SIGTERM) arrives, then fires `stop`.
pub fn spawn_signal_handler(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        let _ = stop.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        let _ = stop.send(true);
    });
}

/// The admin key, which also guards the all-streams WebSocket subscription.
fn firehose_key(settings: &Settings) -> Option<String> {
    settings
        .admin_api_key
        .as_ref()
        .map(|k| k.expose().to_string())
}

/// `fluxora serve`: the API, and (unless `ingest` is false) ingestion of the configured network
/// into the store, following the tip.
pub async fn serve(settings: Settings, ingest: bool) -> Result<(), AppError> {
    let store: Arc<dyn Store> = Arc::from(crate::store::open(&settings.database_url).await?);
    let view = ViewOptions {
        decimals: settings.token_decimals,
        contract_id: settings
            .contract_id
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_signal_handler(stop_tx.clone());
    let (dispatcher, admin) = webhooks(&store, &settings.webhooks, &view)?;
    let bound = settings.webhooks.attempt_timeout + Duration::from_secs(5);
    if !ingest {
        let (_status_tx, status_rx) = watch::channel(IndexerStatus::new());
        // Another process ingests: PostgreSQL tells of its commits; the hub's poll covers SQLite.
        let wakes = match &settings.database_url {
            DatabaseUrl::Postgres(url) => vec![Wake::Postgres(url.clone())],
            DatabaseUrl::Sqlite(_) => Vec::new(),
        };
        let mut ctx = api_context(
            store.clone(),
            status_rx,
            None,
            view,
            settings.network_passphrase.clone(),
            settings.http.clone(),
            firehose_key(&settings),
            wakes,
            stop_rx.clone(),
            settings.admin_api_key.clone(),
            admin,
        )
        .await?;
        ctx.asset = settings.token_symbol.clone();
        let server = start_api(settings.listen_addr, ctx).await?;
        tracing::info!(addr = %server.0.addr, "serving the API only (no ingestion)");
        let dispatch = spawn_dispatcher(dispatcher, stop_rx.clone(), None);
        let mut stop = stop_rx;
        let _ = stop.wait_for(|s| *s).await;
        stop_api(server).await;
        stop_dispatcher(dispatch, bound).await;
        return Ok(());
    }
    let contract = settings
        .contract_id
        .as_ref()
        .ok_or_else(|| AppError::Invalid("CONTRACT_ID is required".into()))?;
    let passphrase = settings
        .network_passphrase
        .clone()
        .ok_or_else(|| AppError::Invalid("NETWORK_PASSPHRASE is required".into()))?;
    let filter = ContractFilter::contract(contract.as_str())?;
    let source: Arc<dyn LedgerSource> = match settings.source {
        SourceKind::Rpc => {
            let url = settings
                .stellar_rpc_url
                .as_ref()
                .ok_or_else(|| AppError::Invalid("STELLAR_RPC_URL is required".into()))?;
            Arc::new(RpcSource::new(
                url.as_str(),
                &passphrase,
                filter,
                HttpPolicy::default(),
            )?)
        }
        SourceKind::Horizon => {
            let url = settings
                .horizon_url
                .as_ref()
                .ok_or_else(|| AppError::Invalid("HORIZON_URL is required".into()))?;
            Arc::new(HorizonSource::new(
                url.as_str(),
                filter,
                HttpPolicy::default(),
            )?)
        }
    };
    let ingestor = Ingestor::new(
        store.clone(),
        source.clone(),
        IngestConfig {
            start_ledger: settings.start_ledger,
            finality_depth: settings.finality_depth,
            batch_ledgers: settings.ingest_batch_ledgers,
            network_passphrase: passphrase.clone(),
            ..Default::default()
        },
    );
    let (generation, generation_rx) = watch::channel(0u64);
    let follower = api::cache::follow_notices(ingestor.notices(), generation);
    let mut ctx = api_context(
        store.clone(),
        ingestor.status(),
        Some(source.clone()),
        view,
        Some(passphrase),
        settings.http.clone(),
        firehose_key(&settings),
        vec![Wake::Notices(ingestor.notices())],
        stop_rx.clone(),
        settings.admin_api_key.clone(),
        admin,
    )
    .await?;
    ctx.asset = settings.token_symbol.clone();
    ctx.streams = api::cache::StreamCache::new(generation_rx);
    let server = start_api(settings.listen_addr, ctx).await?;
    tracing::info!(addr = %server.0.addr, source = source.name(), contract = %contract.as_str(), "serving the API; ingesting");
    let dispatch = spawn_dispatcher(dispatcher, stop_rx.clone(), Some(ingestor.notices()));
    let status = spawn_status_line(ingestor.status(), stop_rx.clone());
    let result = ingestor.run(stop_rx.clone()).await;
    if let Err(IngestError::Halted(reason)) = &result {
        // A halt needs an operator: keep the API up so `/health` (503) and the data stay
        // visible until the process is stopped.
        tracing::error!(reason = %reason, "ingestion halted; the API keeps serving until stopped");
        let mut stop = stop_rx;
        let _ = stop.wait_for(|s| *s).await;
    }
    let _ = stop_tx.send(true);
    stop_api(server).await;
    stop_dispatcher(dispatch, bound).await;
    status.abort();
    follower.abort();
    result?;
    Ok(())
}

/// Options of `fluxora demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub database_url: DatabaseUrl,
    pub listen_addr: SocketAddr,
    pub http: HttpSettings,
    pub token_decimals: u32,
    pub seed: u64,
    pub cadence: Duration,
    pub fork_every: u64,
    pub exit_after_ledgers: Option<u32>,
    /// Webhook settings; the demo always allows loopback targets.
    pub webhooks: WebhookSettings,
    /// The admin key; the demo makes one up (and prints it) when none is configured.
    pub admin_api_key: Option<Secret>,
}

/// `fluxora demo`: a simulated network on loopback, ingested through the real RPC client into
/// the store, with `/health` and a live status line; forks now and then.
pub async fn demo(opts: DemoOptions) -> Result<(), AppError> {
    use crate::sim::{generator, http as simhttp, live};
    let store: Arc<dyn Store> = Arc::from(crate::store::open(&opts.database_url).await?);
    // The simulated chain starts a little before now, so that its streams are live for clients
    // reading amounts at the current time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1_750_000_000);
    let g = generator::Generator::new(generator::GenConfig {
        seed: opts.seed,
        txs_per_ledger: 6,
        target_streams: 100,
        first_close_time: now.saturating_sub(300),
        ..Default::default()
    });
    let contract = g.contract;
    let contract_strkey = g.contract_strkey();
    let first = g.cfg.first_seq;
    let passphrase = g.cfg.passphrase.clone();
    let state = simhttp::SimState::new(g.empty_chain());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut g = g;
    {
        let mut chain = state.chain.write().await;
        // A little history before the demo starts, so catch-up shows too.
        for _ in 0..50 {
            g.next_ledger(&mut chain)?;
        }
    }
    // The ledger the indexer has reached, so that the network's forks reach back to it (a fork
    // of ledgers the indexer has not read yet would be invisible to it).
    let (observed_tx, observed_rx) = watch::channel(None::<u32>);
    let net = tokio::spawn(live::run(
        state.clone(),
        g,
        live::LiveConfig {
            cadence: Some(opts.cadence),
            max_ledgers: None,
            fork_every: (opts.fork_every > 0).then_some(opts.fork_every),
            fork_depth: 3,
            observed: Some(observed_rx),
            // Below the demo's finality depth (16): a fork never reaches a final ledger.
            max_fork_depth: 12,
        },
        stop_rx.clone(),
    ));
    let sim = simhttp::serve(
        state.clone(),
        "127.0.0.1:0"
            .parse()
            .map_err(|_| AppError::Invalid("address".into()))?,
    )
    .await
    .map_err(|source| AppError::Listen {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })?;
    let source: Arc<dyn LedgerSource> = Arc::new(RpcSource::new(
        &format!("{}/", sim.url()),
        &passphrase,
        ContractFilter::from_bytes(contract),
        HttpPolicy::default(),
    )?);
    let ingestor = Ingestor::new(
        store.clone(),
        source.clone(),
        IngestConfig {
            start_ledger: Some(first),
            finality_depth: 16,
            batch_ledgers: 100,
            poll_interval: Duration::from_millis(200),
            network_passphrase: passphrase.clone(),
            stop_at: opts.exit_after_ledgers.map(|n| first + n.saturating_sub(1)),
            ..Default::default()
        },
    );
    let observer = {
        let mut status = ingestor.status();
        tokio::spawn(async move {
            loop {
                let ledger = status.borrow_and_update().ledger;
                observed_tx.send_replace(ledger);
                if status.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    spawn_signal_handler(stop_tx.clone());
    let (generation, generation_rx) = watch::channel(0u64);
    let follower = api::cache::follow_notices(ingestor.notices(), generation);
    let view = ViewOptions {
        decimals: opts.token_decimals,
        contract_id: contract_strkey.clone(),
    };
    let mut wh = opts.webhooks.clone();
    if wh.allow_private_targets == TargetPolicy::None {
        wh.allow_private_targets = TargetPolicy::Loopback;
    }
    let (made_up_key, admin_key) = match &opts.admin_api_key {
        Some(k) => (false, k.clone()),
        None => (
            true,
            Secret::new(format!("demo-{}", uuid::Uuid::new_v4().simple())),
        ),
    };
    let (dispatcher, admin) = webhooks(&store, &wh, &view)?;
    let mut ctx = api_context(
        store.clone(),
        ingestor.status(),
        Some(source.clone()),
        view,
        Some(passphrase.clone()),
        opts.http.clone(),
        None,
        vec![Wake::Notices(ingestor.notices())],
        stop_rx.clone(),
        Some(admin_key.clone()),
        admin,
    )
    .await?;
    ctx.streams = api::cache::StreamCache::new(generation_rx);
    let server = start_api(opts.listen_addr, ctx).await?;
    let dispatch = spawn_dispatcher(dispatcher, stop_rx.clone(), Some(ingestor.notices()));
    let addr = server.0.addr;
    println!("Fluxora demo: a simulated Stellar network, indexed live.");
    println!(
        "  simulated network (Stellar RPC): {}/   Horizon: {}/ledgers",
        sim.url(),
        sim.url()
    );
    println!("  contract: {contract_strkey}   passphrase: {passphrase}");
    println!("  database: {}", opts.database_url.redacted());
    println!("  API:      http://{addr}/api/streams   health: http://{addr}/health   metrics: http://{addr}/metrics");
    println!(
        "  webhooks: http://{addr}/api/admin/webhooks   admin key: {}",
        if made_up_key {
            admin_key.expose().to_string()
        } else {
            "(ADMIN_API_KEY)".to_string()
        }
    );
    println!("    register a receiver on this host (deliveries follow 16 ledgers behind the tip):");
    println!(
        "    curl -H 'Authorization: Bearer <admin key>' -H 'Content-Type: application/json' \\"
    );
    println!(
        "      -d '{{\"url\":\"http://127.0.0.1:9000/hook\"}}' http://{addr}/api/admin/webhooks"
    );
    println!("  live:     ws://{addr}/ws/streams   (e.g. {{\"type\":\"subscribe\",\"all\":true}})");
    println!("  (Ctrl-C stops)");
    let status = spawn_status_line(ingestor.status(), stop_rx.clone());
    let result = ingestor.run(stop_rx).await;
    let _ = stop_tx.send(true);
    let _ = net.await;
    status.abort();
    follower.abort();
    observer.abort();
    stop_api(server).await;
    stop_dispatcher(dispatch, wh.attempt_timeout + Duration::from_secs(5)).await;
    sim.stop().await;
    let s = ingestor.status().borrow().clone();
    println!(
        "\ndemo finished: ledger {}, {} events, {} reorgs, epoch {}",
        s.ledger.map_or("-".into(), |l| l.to_string()),
        store.event_count().await?,
        s.reorgs,
        s.epoch
    );
    result?;
    Ok(())
}
