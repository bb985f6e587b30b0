//! Command-line interface: `fluxora <command>`, settings from flags, environment and `.env`.

use clap::{Parser, Subcommand};

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
    /// Validate the configuration and print the effective settings (secrets redacted) as JSON.
    Config {
        /// Also require the chain settings the ingestor needs (source URL, contract, passphrase).
        #[arg(long)]
        chain: bool,
    },
}
