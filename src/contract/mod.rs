//! The Fluxora stream contract's ABI as the indexer sees it: ScVal helpers, every event typed
//! ([`ContractEvent`]), and the `Stream` storage entry ([`StreamEntry`]).

pub mod events;
pub mod scval;
pub mod stream;
pub mod xdr;

pub use events::{ContractEvent, Unrecognized};
pub use scval::{Addr, HexBytes, Metadata, I128};
pub use stream::{stream_key_id, StreamEntry, StreamKind, StreamStatus};
