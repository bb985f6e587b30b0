//! Stream state as a pure fold of the contract's events (`contract.md` §2–§5).
//!
//! Facts the events do not carry (`kind` for Linear vs CliffSlope, `irrevocable`, `witness`, the
//! `last_withdraw_ledger` of some paths, …) come from the transaction's `Stream` storage entry
//! when the source provides one, else from the invoked function, else stay unknown: never guessed.
//! Whenever an entry is present, every derivable field is compared with the folded state and a
//! difference marks the stream unverified with the reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contract::{ContractEvent, StreamEntry};
use crate::domain::accrual::{accrued_at, AccrualTerms, StreamKind, StreamStatus};

/// A fact that may be unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source", content = "value")]
pub enum Fact<T> {
    /// Not derivable from what was seen.
    Unknown,
    /// From the events (or a rule that makes it certain, e.g. rate 0 ⇒ CliffOnly).
    Events(T),
    /// From the `Stream` storage entry in a transaction's meta.
    Entry(T),
}

impl<T: Clone> Fact<T> {
    /// The value, when known.
    pub fn get(&self) -> Option<T> {
        match self {
            Fact::Unknown => None,
            Fact::Events(v) | Fact::Entry(v) => Some(v.clone()),
        }
    }
}

/// Whether the folded state was checked against the contract's own storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// `true` while every comparison so far matched (and at least one happened).
    pub verified: bool,
    /// Ledger of the last comparison.
    pub checked_ledger: Option<u32>,
    /// The differences found at the last comparison that failed.
    pub reasons: Vec<String>,
}

/// One stream as the fold sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    pub stream_id: u64,
    pub sender: String,
    pub recipient: String,
    pub claim_owner: Option<String>,
    #[serde(with = "super::i128_string")]
    pub deposit_amount: i128,
    #[serde(with = "super::i128_string")]
    pub rate_per_second: i128,
    pub start_time: u64,
    pub cliff_time: u64,
    pub end_time: u64,
    #[serde(with = "super::i128_string")]
    pub withdrawn_amount: i128,
    pub status: StreamStatus,
    /// Storage reclaimed (`closed`).
    pub closed: bool,
    pub cancelled_at: Option<u64>,
    #[serde(with = "super::i128_string")]
    pub checkpointed_amount: i128,
    pub checkpointed_at: u64,
    #[serde(with = "super::i128_string")]
    pub withdraw_dust_threshold: i128,
    pub memo_hex: Option<String>,
    pub kind: Fact<StreamKind>,
    pub irrevocable: Fact<Option<bool>>,
    pub witness: Fact<Option<String>>,
    pub is_pooled: Option<bool>,
    pub decommissioned: Option<bool>,
    pub last_pause_toggle_ledger: u32,
    pub last_withdraw_ledger: Fact<u32>,
    pub last_rate_change_ledger: u32,
    pub paused_at_timestamp: u64,
    pub cumulative_paused_duration: u64,
    pub delegation_depth: u32,
    pub parent_stream_id: Option<u64>,
    pub created_ledger: u32,
    pub created_at: u64,
    pub created_tx: String,
    pub updated_ledger: u32,
    pub updated_at: u64,
    pub updated_tx: String,
    pub verification: Verification,
}

impl StreamState {
    /// Accrual inputs; an unknown kind with a non-zero rate is folded as Linear (the `kind`
    /// fact says it is unknown).
    pub fn terms(&self) -> AccrualTerms {
        AccrualTerms {
            kind: self.kind.get().unwrap_or(StreamKind::Linear),
            status: self.status,
            deposit_amount: self.deposit_amount,
            rate_per_second: self.rate_per_second,
            start_time: self.start_time,
            cliff_time: self.cliff_time,
            end_time: self.end_time,
            checkpointed_amount: self.checkpointed_amount,
            checkpointed_at: self.checkpointed_at,
            withdrawn_amount: self.withdrawn_amount,
            cancelled_at: self.cancelled_at,
        }
    }
}

/// Contract-wide flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractFlags {
    pub global_paused: bool,
    pub creation_paused: bool,
    pub admin: Option<String>,
    pub updated_ledger: u32,
}

/// Where an event happened.
#[derive(Debug, Clone)]
pub struct EventContext<'a> {
    pub ledger: u32,
    /// Ledger close time (unix seconds) = the contract's `env.ledger().timestamp()`.
    pub close_time: u64,
    pub tx_hash: &'a str,
    /// The invoked contract function, when known.
    pub function: Option<&'a str>,
}

/// The projection: every stream ever seen (closed ones kept, flagged) and the contract flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Projection {
    pub streams: BTreeMap<u64, StreamState>,
    pub flags: ContractFlags,
    /// Events the fold could not apply (unknown stream, unrecognized shape): counted, never fatal.
    pub skipped: Vec<String>,
    /// Comparisons with storage entries that found differences.
    pub mismatches: u64,
}

fn kind_of(k: crate::contract::StreamKind) -> StreamKind {
    match k {
        crate::contract::StreamKind::Linear => StreamKind::Linear,
        crate::contract::StreamKind::CliffOnly => StreamKind::CliffOnly,
        crate::contract::StreamKind::CliffSlope => StreamKind::CliffSlope,
    }
}

fn status_of(s: crate::contract::StreamStatus) -> StreamStatus {
    match s {
        crate::contract::StreamStatus::Active => StreamStatus::Active,
        crate::contract::StreamStatus::Paused => StreamStatus::Paused,
        crate::contract::StreamStatus::Completed => StreamStatus::Completed,
        crate::contract::StreamStatus::Cancelled => StreamStatus::Cancelled,
    }
}

/// Functions that set `last_withdraw_ledger` (`contract.md` §5).
const SETS_LAST_WITHDRAW: &[&str] = &[
    "withdraw",
    "batch_withdraw",
    "batch_withdraw_to",
    "delegated_withdraw",
];
/// Functions whose withdrawals never touch `last_withdraw_ledger`.
const KEEPS_LAST_WITHDRAW: &[&str] = &[
    "withdraw_to",
    "trigger_auto_claim",
    "withdraw_from_pool",
    "bulk_cancel_streams",
];

impl Projection {
    /// Applies one event. Returns the ids of the streams it changed.
    pub fn apply(&mut self, ctx: &EventContext<'_>, event: &ContractEvent) -> Vec<u64> {
        use ContractEvent as E;
        let now = ctx.close_time;
        let touched = match event {
            E::Created(c) => {
                let rate = c.rate_per_second.0;
                let s = StreamState {
                    stream_id: c.stream_id,
                    sender: c.sender.0.clone(),
                    recipient: c.recipient.0.clone(),
                    claim_owner: None,
                    deposit_amount: c.deposit_amount.0,
                    rate_per_second: rate,
                    start_time: c.start_time,
                    cliff_time: c.cliff_time,
                    end_time: c.end_time,
                    withdrawn_amount: 0,
                    status: StreamStatus::Active,
                    closed: false,
                    cancelled_at: None,
                    checkpointed_amount: 0,
                    checkpointed_at: c.start_time,
                    withdraw_dust_threshold: c.withdraw_dust_threshold.0,
                    memo_hex: c.memo.as_ref().map(|m| hex::encode(&m.0)),
                    // CliffOnly streams store rate 0; Linear and CliffSlope need more than events.
                    kind: if rate == 0 {
                        Fact::Events(StreamKind::CliffOnly)
                    } else {
                        Fact::Unknown
                    },
                    irrevocable: Fact::Unknown,
                    witness: Fact::Unknown,
                    is_pooled: (c.sender == c.recipient).then_some(true),
                    decommissioned: None,
                    last_pause_toggle_ledger: 0,
                    last_withdraw_ledger: Fact::Events(0),
                    last_rate_change_ledger: 0,
                    paused_at_timestamp: 0,
                    cumulative_paused_duration: 0,
                    delegation_depth: 0,
                    parent_stream_id: None,
                    created_ledger: ctx.ledger,
                    created_at: now,
                    created_tx: ctx.tx_hash.to_string(),
                    updated_ledger: ctx.ledger,
                    updated_at: now,
                    updated_tx: ctx.tx_hash.to_string(),
                    verification: Verification {
                        verified: false,
                        checked_ledger: None,
                        reasons: Vec::new(),
                    },
                };
                self.streams.insert(c.stream_id, s);
                vec![c.stream_id]
            }
            E::Cloned(c) => {
                // `created` came first; the clone copies the source's kind/irrevocable/witness.
                let src = self.streams.get(&c.source_stream_id).cloned();
                match (src, self.streams.get_mut(&c.new_stream_id)) {
                    (Some(src), Some(s)) => {
                        if let Some(k) = src.kind.get() {
                            s.kind = Fact::Events(k);
                        }
                        if let Some(i) = src.irrevocable.get() {
                            s.irrevocable = Fact::Events(i);
                        }
                        if let Some(w) = src.witness.get() {
                            s.witness = Fact::Events(w);
                        }
                        vec![c.new_stream_id]
                    }
                    _ => self.skip(ctx, event, "clone of an unknown stream"),
                }
            }
            E::Withdrew(w) => self.withdraw(ctx, event, w.stream_id, w.amount.0),
            E::WithdrewTo(w) => self.withdraw(ctx, event, w.stream_id, w.amount.0),
            // `ac_trig` is followed by a `wdraw_to` with the same amount: count that one.
            E::AutoClaimTriggered(_) | E::AutoClaimSet(_) | E::AutoClaimRevoked(_) => Vec::new(),
            E::Completed(r) => self.with(ctx, event, r.stream_id, |s| {
                s.status = StreamStatus::Completed;
            }),
            E::Cancelled(r) => self.with(ctx, event, r.stream_id, |s| {
                s.status = StreamStatus::Cancelled;
                s.cancelled_at = Some(now);
            }),
            // The contract does not add the recipient's payout to withdrawn_amount: neither do we.
            E::KeeperCancelled(k) => self.with(ctx, event, k.stream_id, |s| {
                s.status = StreamStatus::Cancelled;
                s.cancelled_at = Some(now);
            }),
            E::Closed(r) => self.with(ctx, event, r.stream_id, |s| {
                s.closed = true;
            }),
            E::Paused(p) => self.with(ctx, event, p.stream_id, |s| {
                s.status = StreamStatus::Paused;
                s.paused_at_timestamp = now;
                s.last_pause_toggle_ledger = ctx.ledger;
            }),
            E::Resumed(r) => self.with(ctx, event, r.stream_id, |s| {
                s.cumulative_paused_duration += now.saturating_sub(s.paused_at_timestamp);
                s.paused_at_timestamp = 0;
                s.status = StreamStatus::Active;
                s.last_pause_toggle_ledger = ctx.ledger;
            }),
            E::RateUpdated(r) => {
                let checkpoints = match ctx.function {
                    Some("update_rate") => Some(false),
                    Some("update_rate_per_second") => Some(true),
                    _ => None,
                };
                match checkpoints {
                    None => self.skip(
                        ctx,
                        event,
                        "rate_upd without the invoking function: cannot tell update_rate \
                         (no checkpoint) from update_rate_per_second (checkpoint)",
                    ),
                    Some(cp) => self.with(ctx, event, r.stream_id, |s| {
                        if cp {
                            s.checkpointed_amount = accrued_at(&s.terms(), r.effective_time);
                            s.checkpointed_at = r.effective_time;
                            s.last_rate_change_ledger = ctx.ledger;
                        }
                        s.rate_per_second = r.new_rate_per_second.0;
                    }),
                }
            }
            E::RateDecreased(r) => self.with(ctx, event, r.stream_id, |s| {
                s.checkpointed_amount = r.checkpointed_amount.0;
                s.checkpointed_at = r.effective_time;
                s.rate_per_second = r.new_rate_per_second.0;
                s.deposit_amount = s.deposit_amount.saturating_sub(r.refund_amount.0);
                s.last_rate_change_ledger = ctx.ledger;
            }),
            E::EndShortened(e) => self.with(ctx, event, e.stream_id, |s| {
                s.deposit_amount = s.deposit_amount.saturating_sub(e.refund_amount.0);
                s.end_time = e.new_end_time;
            }),
            E::EndExtended(e) => self.with(ctx, event, e.stream_id, |s| {
                s.end_time = e.new_end_time;
            }),
            E::ToppedUp(t) => self.with(ctx, event, t.stream_id, |s| {
                s.deposit_amount = t.new_deposit_amount.0;
                s.end_time = t.new_end_time;
            }),
            E::RecipientUpdated(r) => self.with(ctx, event, r.stream_id, |s| {
                s.recipient = r.new_recipient.0.clone();
            }),
            E::ClaimOwnershipTransferred(c) => self.with(ctx, event, c.stream_id, |s| {
                s.claim_owner = Some(c.new_owner.0.clone());
            }),
            E::Decommissioned(d) => self.with(ctx, event, d.stream_id, |s| {
                s.decommissioned = Some(d.decommissioned);
            }),
            E::HealthChanged(h) => self.with(ctx, event, h.stream_id, |_| {}),
            E::RecipientShareDelegated(d) => self.delegate(ctx, event, d),
            // Companions of a `created`, offers (not streams yet) and informational events.
            E::Renewed(_)
            | E::OfferCreated(_)
            | E::OfferAccepted(_)
            | E::OfferCancelled(_)
            | E::RateCapEnforced(_)
            | E::TemplateDefined(_)
            | E::ReservationReleased(_)
            | E::ExcessSwept(_)
            | E::Upgraded(_)
            | E::Upgrade(_) => Vec::new(),
            E::GlobalPaused(p) => {
                self.flags.global_paused = p.paused;
                self.flags.updated_ledger = ctx.ledger;
                Vec::new()
            }
            E::GlobalResumed(_) | E::ProtocolResumed(_) => {
                self.flags.global_paused = false;
                self.flags.updated_ledger = ctx.ledger;
                Vec::new()
            }
            E::ProtocolPaused(_) => {
                self.flags.global_paused = true;
                self.flags.updated_ledger = ctx.ledger;
                Vec::new()
            }
            E::ContractPaused(p) => {
                self.flags.creation_paused = p.paused;
                self.flags.updated_ledger = ctx.ledger;
                Vec::new()
            }
            E::AdminUpdated(a) => {
                self.flags.admin = Some(a.new_admin.0.clone());
                self.flags.updated_ledger = ctx.ledger;
                Vec::new()
            }
            E::Unrecognized(u) => {
                self.skip(ctx, event, &format!("unrecognized event: {}", u.reason))
            }
        };
        touched
    }

    fn skip(&mut self, ctx: &EventContext<'_>, event: &ContractEvent, why: &str) -> Vec<u64> {
        tracing::warn!(
            ledger = ctx.ledger,
            tx = ctx.tx_hash,
            event = event.type_name(),
            reason = why,
            "event not folded"
        );
        self.skipped.push(format!(
            "ledger {} tx {} {}: {why}",
            ctx.ledger,
            ctx.tx_hash,
            event.type_name()
        ));
        Vec::new()
    }

    fn with(
        &mut self,
        ctx: &EventContext<'_>,
        event: &ContractEvent,
        id: u64,
        f: impl FnOnce(&mut StreamState),
    ) -> Vec<u64> {
        match self.streams.get_mut(&id) {
            Some(s) => {
                f(s);
                s.updated_ledger = ctx.ledger;
                s.updated_at = ctx.close_time;
                s.updated_tx = ctx.tx_hash.to_string();
                vec![id]
            }
            None => self.skip(ctx, event, &format!("stream {id} was never created")),
        }
    }

    fn withdraw(
        &mut self,
        ctx: &EventContext<'_>,
        event: &ContractEvent,
        id: u64,
        amount: i128,
    ) -> Vec<u64> {
        let sets = match ctx.function {
            Some(f) if SETS_LAST_WITHDRAW.contains(&f) => Some(true),
            Some(f) if KEEPS_LAST_WITHDRAW.contains(&f) => Some(false),
            _ => None,
        };
        let delegated = ctx.function == Some("delegated_withdraw");
        self.with(ctx, event, id, |s| {
            s.withdrawn_amount = s.withdrawn_amount.saturating_add(amount);
            match sets {
                Some(true) => s.last_withdraw_ledger = Fact::Events(ctx.ledger),
                Some(false) => {}
                None => s.last_withdraw_ledger = Fact::Unknown,
            }
            if delegated {
                // The event carries the net amount; withdrawn_amount grows by the gross one.
                s.verification.verified = false;
                s.verification.reasons =
                    vec!["delegated_withdraw: relayer fee not in the event".into()];
            }
        })
    }

    fn delegate(
        &mut self,
        ctx: &EventContext<'_>,
        event: &ContractEvent,
        d: &crate::contract::events::RecipientShareDelegated,
    ) -> Vec<u64> {
        let now = ctx.close_time;
        let Some(parent) = self.streams.get(&d.parent_stream_id).cloned() else {
            return self.skip(ctx, event, "delegation from an unknown stream");
        };
        let acc = accrued_at(&parent.terms(), now);
        let new_rate = d.new_parent_rate.0;
        let new_parent_deposit = i128::from(parent.end_time.saturating_sub(now))
            .checked_mul(new_rate)
            .and_then(|v| v.checked_add(acc))
            .unwrap_or(parent.deposit_amount);
        let mut child = parent.clone();
        child.stream_id = d.child_stream_id;
        child.recipient = d.delegatee.0.clone();
        child.claim_owner = None;
        child.deposit_amount = parent.deposit_amount.saturating_sub(new_parent_deposit);
        child.rate_per_second = d.child_rate.0;
        child.start_time = now;
        child.cliff_time = parent.cliff_time.max(now);
        child.withdrawn_amount = 0;
        child.status = StreamStatus::Active;
        child.checkpointed_amount = 0;
        child.checkpointed_at = now;
        child.parent_stream_id = Some(parent.stream_id);
        child.delegation_depth = parent.delegation_depth + 1;
        child.last_pause_toggle_ledger = 0;
        child.last_withdraw_ledger = Fact::Events(0);
        child.last_rate_change_ledger = 0;
        child.paused_at_timestamp = 0;
        child.cumulative_paused_duration = 0;
        child.decommissioned = None;
        child.created_ledger = ctx.ledger;
        child.created_at = now;
        child.created_tx = ctx.tx_hash.to_string();
        child.updated_ledger = ctx.ledger;
        child.updated_at = now;
        child.updated_tx = ctx.tx_hash.to_string();
        child.verification = Verification {
            verified: false,
            checked_ledger: None,
            reasons: Vec::new(),
        };
        self.streams.insert(d.child_stream_id, child);
        self.with(ctx, event, d.parent_stream_id, |s| {
            s.checkpointed_amount = acc;
            s.checkpointed_at = now;
            s.rate_per_second = new_rate;
            s.deposit_amount = new_parent_deposit;
        });
        vec![d.parent_stream_id, d.child_stream_id]
    }

    /// Takes the post-transaction `Stream` entry (or its removal, `None`) of stream `id`: fills
    /// the facts events cannot give and compares every derivable field. Returns whether it matched.
    pub fn observe_entry(&mut self, ledger: u32, id: u64, entry: Option<&StreamEntry>) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            if entry.is_some() {
                self.mismatches += 1;
                self.skipped.push(format!(
                    "ledger {ledger}: storage entry for stream {id} that no event created"
                ));
            }
            return entry.is_none();
        };
        let mut diffs = Vec::new();
        match entry {
            None => {
                if !s.closed {
                    diffs.push("storage entry removed but no `closed` event".to_string());
                }
            }
            Some(e) => {
                // Facts first.
                s.kind = Fact::Entry(kind_of(e.kind));
                s.irrevocable = Fact::Entry(e.irrevocable);
                s.witness = Fact::Entry(e.witness.as_ref().map(|w| w.0.clone()));
                if s.last_withdraw_ledger.get().is_none() {
                    s.last_withdraw_ledger = Fact::Entry(e.last_withdraw_ledger);
                }
                // Compared as values; text only for a difference.
                macro_rules! cmp {
                    ($($name:ident: $ours:expr, $theirs:expr;)*) => {$(
                        if $ours != $theirs {
                            diffs.push(format!(
                                "{}: folded {:?}, contract {:?}",
                                stringify!($name), $ours, $theirs
                            ));
                        }
                    )*};
                }
                cmp! {
                    sender: s.sender, e.sender.0;
                    recipient: s.recipient, e.recipient.0;
                    claim_owner: s.claim_owner.as_ref(), e.claim_owner.as_ref().map(|a| &a.0);
                    deposit_amount: s.deposit_amount, e.deposit_amount.0;
                    rate_per_second: s.rate_per_second, e.rate_per_second.0;
                    start_time: s.start_time, e.start_time;
                    cliff_time: s.cliff_time, e.cliff_time;
                    end_time: s.end_time, e.end_time;
                    withdrawn_amount: s.withdrawn_amount, e.withdrawn_amount.0;
                    status: s.status, status_of(e.status);
                    cancelled_at: s.cancelled_at, e.cancelled_at;
                    checkpointed_amount: s.checkpointed_amount, e.checkpointed_amount.0;
                    checkpointed_at: s.checkpointed_at, e.checkpointed_at;
                    withdraw_dust_threshold: s.withdraw_dust_threshold, e.withdraw_dust_threshold.0;
                    last_pause_toggle_ledger: s.last_pause_toggle_ledger, e.last_pause_toggle_ledger;
                    last_rate_change_ledger: s.last_rate_change_ledger, e.last_rate_change_ledger;
                    last_withdraw_ledger: s.last_withdraw_ledger.get(), Some(e.last_withdraw_ledger);
                    paused_at_timestamp: s.paused_at_timestamp, e.paused_at_timestamp;
                    cumulative_paused_duration: s.cumulative_paused_duration, e.cumulative_paused_duration;
                    decommissioned: s.decommissioned, e.decommissioned;
                    is_pooled: s.is_pooled, e.is_pooled;
                    delegation_depth: s.delegation_depth, e.delegation_depth;
                    parent_stream_id: s.parent_stream_id, e.parent_stream_id;
                }
            }
        }
        s.verification.checked_ledger = Some(ledger);
        let ok = diffs.is_empty();
        if ok {
            s.verification.verified = true;
            s.verification.reasons.clear();
        } else {
            tracing::warn!(stream = id, ledger, differences = ?diffs, "folded state differs from the contract's storage");
            self.mismatches += 1;
            s.verification.verified = false;
            s.verification.reasons = diffs;
        }
        ok
    }
}
