//! Fluxora stream ledger: an event-sourced indexer for the Fluxora token-streaming contract on
//! Stellar (Soroban). See the README for the layout.
pub mod api;
pub mod app;
pub mod chain;
pub mod cli;
pub mod config;
pub mod contract;
pub mod decode;
pub mod domain;
pub mod hub;
pub mod ingest;
pub mod ops;
pub mod projection;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod webhooks;
