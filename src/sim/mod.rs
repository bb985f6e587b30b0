//! Deterministic chain simulator: ledgers with real XDR, served over HTTP as Horizon and Stellar
//! RPC, so that tests, benches and the demo exercise the real clients.
pub mod chain;
pub mod generator;
pub mod http;
pub mod live;
pub mod scenario;
pub mod source;

pub use chain::{MetaFormat, SimChain, SimError, SimEvent, SimLedger, SimTx, StreamChange, TxSpec};

/// Passphrase of the simulated network.
pub const DEFAULT_PASSPHRASE: &str = "Fluxora Simulated Network ; 2026";
