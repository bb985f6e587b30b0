//! Fluxora stream ledger: an event-sourced indexer for the Fluxora token-streaming contract.
pub mod config;
pub mod store;
