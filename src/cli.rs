//! Command-line interface: `fluxora <command>`, settings from flags, environment and `.env`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::RawSettings;

/// Fluxora stream ledger: an event-sourced indexer for the Fluxora token-streaming contract.
#[derive(Parser, Debug)]
#[command(name = "fluxora", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub settings: RawSettings,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands. Each one is added only when it really works.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the database if missing and apply every pending migration.
    Migrate,
    /// Ingest the configured network (SOURCE, CONTRACT_ID, NETWORK_PASSPHRASE, …) into the store,
    /// following the tip; `/health` on LISTEN_ADDR.
    Serve {
        /// Serve the API only: read what another process ingests into the same database
        /// (PostgreSQL: live updates arrive through LISTEN/NOTIFY).
        #[arg(long)]
        no_ingest: bool,
    },
    /// No setup needed: a simulated Stellar network on loopback, indexed live into a fresh
    /// SQLite file through the real RPC client, forking now and then.
    Demo {
        /// Stop once this many ledgers are indexed (scripted runs).
        #[arg(long)]
        exit_after_ledgers: Option<u32>,
        /// SQLite file for the demo (recreated at each run).
        #[arg(long, default_value = "fluxora-demo.db")]
        demo_database: PathBuf,
        /// Seed of the simulated activity.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Milliseconds between simulated ledgers.
        #[arg(long, default_value_t = 500)]
        cadence_ms: u64,
        /// Fork the simulated network every N ledgers (0: never).
        #[arg(long, default_value_t = 40)]
        fork_every: u64,
    },
    /// Serve a simulated chain over HTTP on loopback, as Stellar RPC (`POST /`) and as Horizon
    /// (`GET /ledgers`, …), until interrupted.
    Sim {
        /// A golden-fixture scenario file to serve as the chain (otherwise: generated activity).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Seed of the generated activity.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Generate exactly this many ledgers up front and stop growing (a fixed chain).
        #[arg(long)]
        ledgers: Option<u32>,
        /// Milliseconds between generated ledgers (0: as fast as possible).
        #[arg(long, default_value_t = 1000)]
        cadence_ms: u64,
        /// Transactions per generated ledger.
        #[arg(long, default_value_t = 4)]
        txs_per_ledger: u32,
        /// Live streams the generator aims for.
        #[arg(long, default_value_t = 200)]
        streams: usize,
        /// Fork every N generated ledgers (0: never).
        #[arg(long, default_value_t = 0)]
        fork_every: u64,
        /// Depth of each fork.
        #[arg(long, default_value_t = 3)]
        fork_depth: u32,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// Network passphrase of the simulated network (transaction hashes depend on it).
        #[arg(long, default_value = crate::sim::DEFAULT_PASSPHRASE)]
        passphrase: String,
        /// XDR generation to serve.
        #[arg(long, value_enum, default_value_t = MetaArg::V4)]
        meta: MetaArg,
    },
    /// Decode a chain payload (Horizon/RPC JSON, a golden scenario file, or base64 XDR) into one
    /// JSON line per contract event.
    Decode {
        /// Input file, or `-` for standard input.
        file: String,
        /// Only events of this contract (`C…`); default: every contract.
        #[arg(long)]
        contract: Option<String>,
    },
    /// Recompute every projection from the stored events and storage entries (progress bar on
    /// a terminal), report how it differs from the stored (live) projection, and replace it.
    /// Stop the ingestor first. Prints a JSON summary.
    Rebuild {
        /// Only compare; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-check the stored hash chain, the cursor, gap-free positions, and that the stored
    /// projection equals a rebuild. Writes nothing; exits 1 on any difference. Prints JSON.
    Verify,
    /// Print one stream as clients see it (JSON), now or as of an ingested ledger.
    Stream {
        /// Stream id.
        id: u64,
        /// The state as of this ledger (time travel); amounts at its close time unless --at.
        #[arg(long)]
        ledger: Option<u32>,
        /// Compute amounts at this unix time.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Validate the configuration and print the effective settings (secrets redacted) as JSON.
    Config {
        /// Also require the chain settings the ingestor needs (source URL, contract, passphrase).
        #[arg(long)]
        chain: bool,
    },
}

/// XDR generation served by `fluxora sim`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MetaArg {
    /// Protocol 22: TransactionMeta V3 in LedgerCloseMeta V1.
    V3,
    /// Protocol 23+: TransactionMeta V4 in LedgerCloseMeta V2.
    V4,
}
