//! Webhooks: signing, the outbox dispatcher, the retry schedule, the SSRF guard, the admin
//! operations, and the consumer-side [`verify`] function.
//!
//! How it fits together (see the README's *Webhooks* section for the operator's view):
//!
//! 1. **Outbox.** `Store::append` routes every new event whose type is in
//!    [`EVENT_TYPES`] to each enabled endpoint whose filters match and writes one delivery row
//!    per match **in the same transaction** as the event (`store::outbox`). `Store::rollback_to`
//!    drops the undelivered rows of reverted events and queues a `stream.reverted` delivery for
//!    each one already delivered (or in flight), in its transaction too.
//! 2. **Safe ledger.** The ingestor stores `source tip − FINALITY_DEPTH` with the cursor on every
//!    commit (`ingest_cursor.safe_ledger`; a rollback lowers it to the fork ledger). A delivery is
//!    claimed only once its ledger is at or below it, so a dispatcher in any process needs
//!    nothing but the store.
//! 3. **Dispatch.** [`Dispatcher`] workers claim, sign ([`signing`]) and POST; outcomes follow
//!    the [`retry`] policy; see [`dispatcher`] for ordering, leases and wake-ups.
//! 4. **Admin.** [`WebhookAdmin`] is what `/api/admin/webhooks` does (routes in `api/`).
//!
//! This module never imports `api/`.

pub mod dispatcher;
pub mod payload;
pub mod retry;
pub mod service;
pub mod signing;
pub mod ssrf;
pub mod verify;

pub use crate::store::outbox::{event_type_of, EVENT_TYPES};
pub use dispatcher::{Dispatcher, DispatcherConfig, DispatcherStats, Waker};
pub use service::{AdminError, WebhookAdmin};
pub use verify::{verify, Verification, VerifyCode, VerifyInput};
