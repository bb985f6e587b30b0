use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fluxora", version, about = "Fluxora stream ledger")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a chain payload (Horizon/RPC JSON, golden scenario, or base64 XDR) into one JSON
    /// line per contract event.
    Decode {
        /// Input file, or `-` for stdin.
        file: String,
        /// Only events of this contract (C…); default: every contract.
        #[arg(long)]
        contract: Option<String>,
    },
}

fn run_decode(file: &str, contract: Option<String>) -> anyhow::Result<()> {
    let opts = fluxora::decode::DecodeOptions {
        contract,
        source_name: file.to_string(),
        limits: None,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = if file == "-" {
        fluxora::decode::decode(&mut std::io::stdin().lock(), &mut out, &opts)?
    } else {
        let mut f = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
        fluxora::decode::decode(&mut f, &mut out, &opts)?
    };
    if summary.unrecognized > 0 {
        eprintln!(
            "{} events, {} unrecognized",
            summary.events, summary.unrecognized
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode { file, contract } => run_decode(&file, contract),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
