//! The `fluxora` binary: parse the command line, validate settings, run the command.

/// mimalloc: far less page churn than glibc malloc for the many short-lived XDR and JSON
/// buffers of ingestion.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use fluxora::cli::{Cli, Command};
use fluxora::config::{Needs, Settings};
use fluxora::store;

fn main() -> ExitCode {
    // An optional `.env` in the working directory; real environment variables win.
    let dotenv_problem = match dotenvy::dotenv() {
        Ok(_) => None,
        Err(e) if e.not_found() => None,
        Err(e) => Some(e.to_string()),
    };
    let cli = Cli::parse();
    if let Some(p) = dotenv_problem {
        eprintln!("invalid configuration (1 problem(s)):\n  .env: {p}");
        return ExitCode::from(2);
    }
    let needs = match &cli.command {
        Command::Migrate
        | Command::Sim { .. }
        | Command::Decode { .. }
        | Command::Demo { .. }
        | Command::Rebuild { .. }
        | Command::Verify
        | Command::Stream { .. } => Needs::default(),
        Command::Serve { no_ingest } => Needs { chain: !no_ingest },
        Command::Config { chain } => Needs { chain: *chain },
    };
    let settings = match cli.settings.validate(needs) {
        Ok(s) => s,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    fluxora::telemetry::init(settings.log_format, &settings.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "command failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints pretty JSON on stdout; a closed pipe (`| head`) is not an error.
fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let text = serde_json::to_string_pretty(v)?;
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Runs a command; `Ok(false)` = it ran and found problems (exit 1).
async fn run(command: Command, settings: Settings) -> anyhow::Result<bool> {
    match command {
        Command::Rebuild { dry_run } => {
            let store = store::open(&settings.database_url).await?;
            let s = fluxora::ops::run_rebuild(&*store, dry_run).await?;
            print_json(&s)?;
            Ok(true)
        }
        Command::Verify => {
            let store = store::open(&settings.database_url).await?;
            let r = fluxora::ops::run_verify(&*store).await?;
            print_json(&r)?;
            if !r.ok {
                eprintln!(
                    "verify: {} chain problem(s), {} projection difference(s)",
                    r.chain.problems.len(),
                    r.projection.comparison.differences
                );
            }
            Ok(r.ok)
        }
        Command::Stream { id, ledger, at } => {
            let store = store::open(&settings.database_url).await?;
            let opts = fluxora::projection::view::ViewOptions {
                decimals: settings.token_decimals,
                contract_id: settings
                    .contract_id
                    .as_ref()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_default(),
            };
            let v = fluxora::ops::stream_view(&*store, id, ledger, at, &opts).await?;
            print_json(&v)?;
            Ok(true)
        }
        Command::Migrate => {
            let store = store::open(&settings.database_url).await?;
            let tip = store.tip().await?;
            tracing::info!(
                backend = store.backend(),
                database = %settings.database_url.redacted(),
                tip = tip.as_ref().map(|t| t.sequence),
                events = store.event_count().await?,
                "database migrated"
            );
            println!(
                "migrated {} database {} (events: {}, tip ledger: {})",
                store.backend(),
                settings.database_url.redacted(),
                store.event_count().await?,
                tip.map_or("none".to_string(), |t| t.sequence.to_string())
            );
            Ok(true)
        }
        Command::Sim {
            scenario,
            listen,
            passphrase,
            meta,
            seed,
            ledgers,
            cadence_ms,
            txs_per_ledger,
            streams,
            fork_every,
            fork_depth,
        } => {
            use fluxora::sim::{generator, http, live};
            let format = match meta {
                fluxora::cli::MetaArg::V3 => fluxora::sim::MetaFormat::V3InLcmV1,
                fluxora::cli::MetaArg::V4 => fluxora::sim::MetaFormat::V4InLcmV2,
            };
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let (state, name, contract, live_task) = match scenario {
                Some(path) => {
                    let s = fluxora::sim::scenario::load(&path, &passphrase, format)?;
                    (http::SimState::new(s.chain), s.name, s.contract_id, None)
                }
                None => {
                    let g = generator::Generator::new(generator::GenConfig {
                        seed,
                        passphrase: passphrase.clone(),
                        format,
                        txs_per_ledger,
                        target_streams: streams,
                        ..Default::default()
                    });
                    let contract = g.contract_strkey();
                    let state = http::SimState::new(g.empty_chain());
                    let cfg = live::LiveConfig {
                        cadence: (cadence_ms > 0)
                            .then(|| std::time::Duration::from_millis(cadence_ms)),
                        max_ledgers: None,
                        fork_every: (fork_every > 0).then_some(fork_every),
                        fork_depth,
                        observed: None,
                        max_fork_depth: fork_depth,
                    };
                    // At least one ledger first, so the network has a tip when clients arrive.
                    let mut g = g;
                    let mut chain = state.chain.write().await;
                    for _ in 0..ledgers.unwrap_or(1).max(1) {
                        g.next_ledger(&mut chain)?;
                    }
                    drop(chain);
                    let task = match ledgers {
                        Some(_) => None,
                        None => Some(tokio::spawn(live::run(state.clone(), g, cfg, stop_rx))),
                    };
                    (state, format!("generated (seed {seed})"), contract, task)
                }
            };
            let server = http::serve(state.clone(), listen).await?;
            let (first, tip) = {
                let chain = state.chain.read().await;
                (chain.first_seq(), chain.tip().map_or(0, |t| t.seq))
            };
            tracing::info!(
                scenario = %name,
                contract = %contract,
                first_ledger = first,
                tip_ledger = tip,
                url = %server.url(),
                "simulator serving"
            );
            println!(
                "serving {name} (contract {contract}, ledgers {first}..={tip})\n  Stellar RPC: {}/\n  Horizon:     {}/ledgers\n  passphrase:  {passphrase}",
                server.url(),
                server.url()
            );
            tokio::signal::ctrl_c().await?;
            let _ = stop_tx.send(true);
            if let Some(t) = live_task {
                t.await??;
            }
            server.stop().await;
            Ok(true)
        }
        Command::Decode { file, contract } => {
            use anyhow::Context;
            let opts = fluxora::decode::DecodeOptions {
                contract,
                source_name: file.clone(),
                limits: None,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary = if file == "-" {
                fluxora::decode::decode(&mut std::io::stdin().lock(), &mut out, &opts)?
            } else {
                let mut f =
                    std::fs::File::open(&file).with_context(|| format!("opening {file}"))?;
                fluxora::decode::decode(&mut f, &mut out, &opts)?
            };
            if summary.unrecognized > 0 {
                eprintln!(
                    "{} events, {} unrecognized",
                    summary.events, summary.unrecognized
                );
            }
            Ok(true)
        }
        Command::Serve { no_ingest } => {
            fluxora::app::serve(settings, !no_ingest).await?;
            Ok(true)
        }
        Command::Demo {
            exit_after_ledgers,
            demo_database,
            seed,
            cadence_ms,
            fork_every,
        } => {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = demo_database.clone().into_os_string();
                p.push(suffix);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => anyhow::bail!("cannot reset the demo database {p:?}: {e}"),
                }
            }
            let opts = fluxora::app::DemoOptions {
                database_url: fluxora::config::DatabaseUrl::Sqlite(format!(
                    "sqlite://{}",
                    demo_database.display()
                )),
                listen_addr: settings.listen_addr,
                http: settings.http.clone(),
                token_decimals: settings.token_decimals,
                seed,
                cadence: std::time::Duration::from_millis(cadence_ms.max(1)),
                fork_every,
                exit_after_ledgers,
                webhooks: settings.webhooks.clone(),
                admin_api_key: settings.admin_api_key.clone(),
            };
            fluxora::app::demo(opts).await?;
            Ok(true)
        }
        Command::Config { .. } => {
            println!("{}", serde_json::to_string_pretty(&settings)?);
            Ok(true)
        }
    }
}
