//! Projections: per-stream state and contract-wide flags, a pure fold of the event store.
//!
//! * [`fold`]: the fold of one event / one storage entry into [`Projection`].
//! * [`projector`]: drives the fold ledger by ledger (live ingestion and `rebuild` share it) and
//!   produces the rows the store writes with each batch: the state of every stream after each
//!   ledger that changed it (history for time travel) and the contract flags.
//! * [`rebuild`]: recomputes everything from the stored events and entries and compares.
//! * [`view`]: the client stream object (amounts as decimal strings at an instant).
pub mod fold;
pub mod json;
pub mod projector;
pub mod rebuild;
pub mod view;

pub use fold::{ContractFlags, EventContext, Fact, Projection, StreamState, Verification};
pub use projector::Projector;

/// Serde for `i128` amounts as decimal strings (exact in every JSON reader and database).
pub mod i128_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse::<i128>()
            .map_err(|e| D::Error::custom(format!("amount `{s}`: {e}")))
    }
}
