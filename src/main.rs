//! The `fluxora` binary: parse the command line, validate settings, run the command.

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
        Command::Migrate | Command::Sim { .. } => Needs::default(),
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "command failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
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
            Ok(())
        }
        Command::Sim {
            scenario,
            listen,
            passphrase,
            meta,
        } => {
            let format = match meta {
                fluxora::cli::MetaArg::V3 => fluxora::sim::MetaFormat::V3InLcmV1,
                fluxora::cli::MetaArg::V4 => fluxora::sim::MetaFormat::V4InLcmV2,
            };
            let s = fluxora::sim::scenario::load(&scenario, &passphrase, format)?;
            let (first, tip) = (s.chain.first_seq(), s.chain.tip().map_or(0, |t| t.seq));
            let state = fluxora::sim::http::SimState::new(s.chain);
            let server = fluxora::sim::http::serve(state, listen).await?;
            tracing::info!(
                scenario = %s.name,
                contract = %s.contract_id,
                first_ledger = first,
                tip_ledger = tip,
                url = %server.url(),
                "simulator serving"
            );
            println!(
                "serving scenario {} (contract {}, ledgers {first}..={tip})\n  Stellar RPC: {}/\n  Horizon:     {}/ledgers\n  passphrase:  {passphrase}",
                s.name,
                s.contract_id,
                server.url(),
                server.url()
            );
            tokio::signal::ctrl_c().await?;
            server.stop().await;
            Ok(())
        }
        Command::Config { .. } => {
            println!("{}", serde_json::to_string_pretty(&settings)?);
            Ok(())
        }
    }
}
