//! Fluxora stream ledger: an event-sourced indexer for the Fluxora token-streaming contract.
pub mod chain;
pub mod config;
pub mod contract;
pub mod decode;
pub mod store;
