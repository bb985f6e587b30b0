//! Shared HTTP policy placeholder.
use serde::Serialize;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceHealth {
    pub breaker: BreakerState,
}
