//! Projections: per-stream state and contract-wide flags, a pure fold of the event store.
pub mod fold;

pub use fold::{ContractFlags, EventContext, Fact, Projection, StreamState, Verification};
