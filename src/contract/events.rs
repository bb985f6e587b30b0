//! Every event the Fluxora stream contract publishes (`spec/contract.md` §2.1 and §2.2), typed.
//!
//! Decoding is by map key, never by position. Anything that does not match the catalogue (an
//! unknown topic, a missing field, a wrong type, a wrong topic arity) becomes
//! [`ContractEvent::Unrecognized`] with the reason and the raw XDR: never fatal.

use serde::Serialize;
use stellar_xdr::{Limits, ScVal, WriteXdr};

use super::scval::{
    as_symbol, as_vec, elem, map_struct, Addr, FromScVal, HexBytes, Metadata, I128,
};

map_struct!(
    /// `created`
    StreamCreated {
        cliff_time: u64,
        deposit_amount: I128,
        end_time: u64,
        memo: Option<HexBytes>,
        metadata: Option<Metadata>,
        rate_per_second: I128,
        recipient: Addr,
        sender: Addr,
        start_time: u64,
        stream_id: u64,
        withdraw_dust_threshold: I128,
    }
);
map_struct!(
    /// `withdrew`
    Withdrawal { amount: I128, recipient: Addr, stream_id: u64 }
);
map_struct!(
    /// `wdraw_to`
    WithdrawalTo { amount: I128, destination: Addr, recipient: Addr, stream_id: u64 }
);
map_struct!(
    /// `kp_cncl`
    KeeperCancelled {
        keeper: Addr,
        keeper_fee: I128,
        recipient_amount: I128,
        sender_refund: I128,
        stream_id: u64,
    }
);
map_struct!(
    /// `paused`
    StreamPaused { reason: String, stream_id: u64 }
);
map_struct!(
    /// `rate_upd`
    RateUpdated {
        effective_time: u64,
        new_rate_per_second: I128,
        old_rate_per_second: I128,
        stream_id: u64,
    }
);
map_struct!(
    /// `rate_dec`
    RateDecreased {
        checkpointed_amount: I128,
        effective_time: u64,
        new_rate_per_second: I128,
        old_rate_per_second: I128,
        refund_amount: I128,
        stream_id: u64,
    }
);
map_struct!(
    /// `rate_cap` (never observable on chain: the transaction fails)
    RateCapEnforced { attempted_rate: I128, max_rate_per_second: I128, stream_id: u64 }
);
map_struct!(
    /// `end_shrt`
    StreamEndShortened { new_end_time: u64, old_end_time: u64, refund_amount: I128, stream_id: u64 }
);
map_struct!(
    /// `end_ext`
    StreamEndExtended { new_end_time: u64, old_end_time: u64, stream_id: u64 }
);
map_struct!(
    /// `top_up`
    StreamToppedUp {
        new_deposit_amount: I128,
        new_end_time: u64,
        stream_id: u64,
        top_up_amount: I128,
    }
);
map_struct!(
    /// `health`
    StreamHealthChanged {
        is_underfunded: bool,
        remaining_balance: I128,
        seconds_remaining: u64,
        stream_id: u64,
    }
);
map_struct!(
    /// `recp_upd`
    RecipientUpdated { new_recipient: Addr, old_recipient: Addr, stream_id: u64 }
);
map_struct!(
    /// `claim_own`
    ClaimOwnershipTransferred { new_owner: Addr, old_owner: Option<Addr>, stream_id: u64 }
);
map_struct!(
    /// `del_share` (topic[1] = parent id)
    RecipientShareDelegated {
        child_rate: I128,
        child_stream_id: u64,
        delegatee: Addr,
        delegator: Addr,
        new_parent_rate: I128,
        parent_stream_id: u64,
        share_bps: u32,
    }
);
map_struct!(
    /// `cloned` (topic[1] = new id)
    StreamCloned {
        cliff_time: u64,
        deposit_amount: I128,
        end_time: u64,
        new_stream_id: u64,
        rate_per_second: I128,
        recipient: Addr,
        sender: Addr,
        source_stream_id: u64,
        start_time: u64,
        withdraw_dust_threshold: I128,
    }
);
map_struct!(
    /// `renewed` (topics `[renewed, old_id, new_id]`)
    StreamRenewed { new_stream_id: u64, old_stream_id: u64 }
);
map_struct!(
    /// `decomm`
    StreamDecommissioned { decommissioned: bool, stream_id: u64 }
);
map_struct!(
    /// `ac_set`
    AutoClaimSet { destination: Addr, stream_id: u64 }
);
map_struct!(
    /// `ac_revoke`
    AutoClaimRevoked { stream_id: u64 }
);
map_struct!(
    /// `ac_trig`
    AutoClaimTriggered { amount: I128, destination: Addr, stream_id: u64 }
);
map_struct!(
    /// `offr_crt` (topic[1] = offer id = future stream id)
    StreamOfferCreated {
        cliff_time: u64,
        created_at: u64,
        deposit_amount: I128,
        end_time: u64,
        expiry_time: Option<u64>,
        offer_id: u64,
        rate_per_second: I128,
        recipient: Addr,
        sender: Addr,
        start_time: u64,
    }
);
map_struct!(
    /// `offr_acc`
    StreamOfferAccepted { effective_start_time: u64, offer_id: u64, recipient: Addr }
);
map_struct!(
    /// `offr_cxl`
    StreamOfferCancelled { by: Addr, offer_id: u64, refund_amount: I128 }
);
map_struct!(
    /// `gl_pause` / `ct_pause`
    PausedFlag { paused: bool }
);
map_struct!(
    /// `gl_resume`
    GlobalResumed { resumed_at: u64 }
);
map_struct!(
    /// `tmpl_def` (topic[1] = template id)
    StreamScheduleTemplate {
        cliff_delay: u64,
        duration: u64,
        owner: Addr,
        start_delay: u64,
        template_id: u64,
    }
);
map_struct!(
    /// `upgraded`
    ContractUpgraded {
        new_version: u32,
        new_wasm_hash: HexBytes,
        upgraded_at: u64,
        upgraded_by: Addr,
    }
);

/// Data of the unit-like `StreamEvent::…(id)` events (`completed`, `cancelled`, `closed`, `resumed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamRef {
    pub stream_id: u64,
}

/// `pr_pause` (admin from topic[1]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolPaused {
    pub admin: Addr,
    pub paused_at: u64,
    pub reason: String,
}

/// `pr_resume` (admin from topic[1]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolResumed {
    pub admin: Addr,
    pub resumed_at: u64,
}

/// `ex_swept` (`to` is also topic[1]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExcessSwept {
    pub amount: I128,
    pub to: Addr,
}

/// `AdminUpd`: data tuple `(old, new)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminUpdated {
    pub old_admin: Addr,
    pub new_admin: Addr,
}

/// `res_rel`: holder from topic[1], data tuple `(start_id, count, consumed, reclaimed)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationReleased {
    pub holder: Addr,
    pub start_id: u64,
    pub count: u32,
    pub consumed: u32,
    pub reclaimed: u32,
}

/// `upgrade`: data tuple `(wasm_hash, version, version, admin)`; the two versions are kept in
/// tuple order (`version_0`, `version_1`) because the contract gives them no names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradeTuple {
    pub new_wasm_hash: HexBytes,
    pub version_0: u32,
    pub version_1: u32,
    pub admin: Addr,
}

/// An event the decoder could not type: kept with the reason and its raw XDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unrecognized {
    pub reason: String,
    /// topic[0] when it is a symbol.
    pub topic: Option<String>,
    pub topics_xdr: Vec<String>,
    pub data_xdr: String,
}

/// One Fluxora contract event. Serialises (untagged) to its field map; the type name is
/// [`ContractEvent::type_name`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ContractEvent {
    Created(StreamCreated),
    Withdrew(Withdrawal),
    WithdrewTo(WithdrawalTo),
    Completed(StreamRef),
    Cancelled(StreamRef),
    KeeperCancelled(KeeperCancelled),
    Closed(StreamRef),
    Paused(StreamPaused),
    Resumed(StreamRef),
    RateUpdated(RateUpdated),
    RateDecreased(RateDecreased),
    RateCapEnforced(RateCapEnforced),
    EndShortened(StreamEndShortened),
    EndExtended(StreamEndExtended),
    ToppedUp(StreamToppedUp),
    HealthChanged(StreamHealthChanged),
    RecipientUpdated(RecipientUpdated),
    ClaimOwnershipTransferred(ClaimOwnershipTransferred),
    RecipientShareDelegated(RecipientShareDelegated),
    Cloned(StreamCloned),
    Renewed(StreamRenewed),
    Decommissioned(StreamDecommissioned),
    AutoClaimSet(AutoClaimSet),
    AutoClaimRevoked(AutoClaimRevoked),
    AutoClaimTriggered(AutoClaimTriggered),
    OfferCreated(StreamOfferCreated),
    OfferAccepted(StreamOfferAccepted),
    OfferCancelled(StreamOfferCancelled),
    GlobalPaused(PausedFlag),
    GlobalResumed(GlobalResumed),
    ContractPaused(PausedFlag),
    ProtocolPaused(ProtocolPaused),
    ProtocolResumed(ProtocolResumed),
    ExcessSwept(ExcessSwept),
    AdminUpdated(AdminUpdated),
    TemplateDefined(StreamScheduleTemplate),
    ReservationReleased(ReservationReleased),
    Upgraded(ContractUpgraded),
    Upgrade(UpgradeTuple),
    Unrecognized(Unrecognized),
}

/// Every topic symbol of §2.1 (stream-keyed: topic[1] is a `U64`).
pub const STREAM_TOPICS: &[&str] = &[
    "created",
    "withdrew",
    "wdraw_to",
    "completed",
    "cancelled",
    "kp_cncl",
    "closed",
    "paused",
    "resumed",
    "rate_upd",
    "rate_dec",
    "rate_cap",
    "end_shrt",
    "end_ext",
    "top_up",
    "health",
    "recp_upd",
    "claim_own",
    "del_share",
    "cloned",
    "renewed",
    "decomm",
    "ac_set",
    "ac_revoke",
    "ac_trig",
    "offr_crt",
    "offr_acc",
    "offr_cxl",
];

/// Every topic symbol of §2.2.
pub const GLOBAL_TOPICS: &[&str] = &[
    "gl_pause",
    "gl_resume",
    "ct_pause",
    "pr_pause",
    "pr_resume",
    "ex_swept",
    "AdminUpd",
    "tmpl_def",
    "res_rel",
    "upgraded",
    "upgrade",
];

impl ContractEvent {
    /// The event's topic symbol (`"created"`, …), or `"unrecognized"`.
    pub fn type_name(&self) -> &'static str {
        use ContractEvent::*;
        match self {
            Created(_) => "created",
            Withdrew(_) => "withdrew",
            WithdrewTo(_) => "wdraw_to",
            Completed(_) => "completed",
            Cancelled(_) => "cancelled",
            KeeperCancelled(_) => "kp_cncl",
            Closed(_) => "closed",
            Paused(_) => "paused",
            Resumed(_) => "resumed",
            RateUpdated(_) => "rate_upd",
            RateDecreased(_) => "rate_dec",
            RateCapEnforced(_) => "rate_cap",
            EndShortened(_) => "end_shrt",
            EndExtended(_) => "end_ext",
            ToppedUp(_) => "top_up",
            HealthChanged(_) => "health",
            RecipientUpdated(_) => "recp_upd",
            ClaimOwnershipTransferred(_) => "claim_own",
            RecipientShareDelegated(_) => "del_share",
            Cloned(_) => "cloned",
            Renewed(_) => "renewed",
            Decommissioned(_) => "decomm",
            AutoClaimSet(_) => "ac_set",
            AutoClaimRevoked(_) => "ac_revoke",
            AutoClaimTriggered(_) => "ac_trig",
            OfferCreated(_) => "offr_crt",
            OfferAccepted(_) => "offr_acc",
            OfferCancelled(_) => "offr_cxl",
            GlobalPaused(_) => "gl_pause",
            GlobalResumed(_) => "gl_resume",
            ContractPaused(_) => "ct_pause",
            ProtocolPaused(_) => "pr_pause",
            ProtocolResumed(_) => "pr_resume",
            ExcessSwept(_) => "ex_swept",
            AdminUpdated(_) => "AdminUpd",
            TemplateDefined(_) => "tmpl_def",
            ReservationReleased(_) => "res_rel",
            Upgraded(_) => "upgraded",
            Upgrade(_) => "upgrade",
            Unrecognized(_) => "unrecognized",
        }
    }

    /// The stream the event is keyed by (= topic[1]): the new id for `cloned`, the old id for
    /// `renewed`, the parent for `del_share`, the offer id (future stream id) for offers.
    pub fn stream_id(&self) -> Option<u64> {
        use ContractEvent::*;
        Some(match self {
            Created(e) => e.stream_id,
            Withdrew(e) => e.stream_id,
            WithdrewTo(e) => e.stream_id,
            Completed(e) | Cancelled(e) | Closed(e) | Resumed(e) => e.stream_id,
            KeeperCancelled(e) => e.stream_id,
            Paused(e) => e.stream_id,
            RateUpdated(e) => e.stream_id,
            RateDecreased(e) => e.stream_id,
            RateCapEnforced(e) => e.stream_id,
            EndShortened(e) => e.stream_id,
            EndExtended(e) => e.stream_id,
            ToppedUp(e) => e.stream_id,
            HealthChanged(e) => e.stream_id,
            RecipientUpdated(e) => e.stream_id,
            ClaimOwnershipTransferred(e) => e.stream_id,
            RecipientShareDelegated(e) => e.parent_stream_id,
            Cloned(e) => e.new_stream_id,
            Renewed(e) => e.old_stream_id,
            Decommissioned(e) => e.stream_id,
            AutoClaimSet(e) => e.stream_id,
            AutoClaimRevoked(e) => e.stream_id,
            AutoClaimTriggered(e) => e.stream_id,
            OfferCreated(e) => e.offer_id,
            OfferAccepted(e) => e.offer_id,
            OfferCancelled(e) => e.offer_id,
            _ => return None,
        })
    }

    pub fn is_unrecognized(&self) -> bool {
        matches!(self, ContractEvent::Unrecognized(_))
    }

    /// Decode one contract event from its topics and data. Never fails: a mismatch yields
    /// [`ContractEvent::Unrecognized`].
    pub fn decode(topics: &[ScVal], data: &ScVal) -> ContractEvent {
        match decode_inner(topics, data) {
            Ok(ev) => ev,
            Err(reason) => ContractEvent::Unrecognized(Unrecognized {
                reason,
                topic: topics
                    .first()
                    .and_then(as_symbol)
                    .map(|s| String::from_utf8_lossy(s).into_owned()),
                topics_xdr: topics.iter().map(xdr_b64).collect(),
                data_xdr: xdr_b64(data),
            }),
        }
    }
}

/// Base64 XDR of an already-decoded value (re-encoding cannot fail for decoded values; an empty
/// string would only appear if it somehow did).
pub fn xdr_b64(v: &ScVal) -> String {
    // Encoding the bytes in one go is several times faster than the streaming base64 writer.
    match v.to_xdr(Limits::none()) {
        Ok(bytes) => b64_encode(&bytes),
        Err(_) => String::new(),
    }
}

/// Standard base64 (with padding) of `bytes`, SIMD-accelerated where the CPU allows.
pub fn b64_encode(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

fn topic_u64(topics: &[ScVal], i: usize) -> Result<u64, String> {
    let v = topics.get(i).ok_or_else(|| format!("missing topic[{i}]"))?;
    u64::from_scval(v).map_err(|e| format!("topic[{i}]: {e}"))
}

fn topic_addr(topics: &[ScVal], i: usize) -> Result<Addr, String> {
    let v = topics.get(i).ok_or_else(|| format!("missing topic[{i}]"))?;
    Addr::from_scval(v).map_err(|e| format!("topic[{i}]: {e}"))
}

fn arity(topics: &[ScVal], n: usize) -> Result<(), String> {
    if topics.len() == n {
        Ok(())
    } else {
        Err(format!("expected {n} topics, found {}", topics.len()))
    }
}

/// `Vec[Symbol(variant), U64 id]` (a `StreamEvent` enum variant).
fn stream_ref(data: &ScVal, variant: &str) -> Result<StreamRef, String> {
    let items = as_vec(data).map_err(|e| format!("data: {e}"))?;
    if items.len() != 2 || as_symbol(&items[0]) != Some(variant.as_bytes()) {
        return Err(format!("data: expected Vec[Symbol(\"{variant}\"), U64]"));
    }
    Ok(StreamRef {
        stream_id: elem(items, 1, "stream_id")?,
    })
}

fn same_id(topic_id: u64, data_id: u64) -> Result<(), String> {
    if topic_id == data_id {
        Ok(())
    } else {
        Err(format!(
            "topic[1] id {topic_id} disagrees with the data's id {data_id}"
        ))
    }
}

impl ContractEvent {
    /// Decodes a stream event (§2.1) straight from the XDR of its topics and of its data (`data`
    /// starts with the data; what follows it is not looked at), when they have the shapes the
    /// contract emits (see [`crate::contract::xdr`]). Returns the event with its topic[0] and
    /// the data's length in bytes; `None` for anything else (global events too): decode the
    /// `ScVal`s with [`ContractEvent::decode`] then, which gives the same event or says why not.
    pub fn decode_canonical(topics: &[&[u8]], data: &[u8]) -> Option<(ContractEvent, usize)> {
        use super::xdr::Canon;
        use ContractEvent as E;
        let t0 = topics.first()?;
        let mut c = Canon::new(t0);
        let sym = c.symbol()?;
        if c.pos() != t0.len() {
            return None;
        }
        let sym = std::str::from_utf8(sym).ok()?;
        if !STREAM_TOPICS.contains(&sym) {
            return None;
        }
        let n = if sym == "renewed" { 3 } else { 2 };
        if topics.len() != n {
            return None;
        }
        let topic_u64 = |i: usize| -> Option<u64> {
            let t = topics.get(i)?;
            let mut c = Canon::new(t);
            let v = <u64 as super::xdr::Canonical>::canon(&mut c)?;
            (c.pos() == t.len()).then_some(v)
        };
        let tid = topic_u64(1)?;
        let mut c = Canon::new(data);
        macro_rules! d {
            ($t:ident) => {
                $t::from_xdr_canonical(&mut c)?
            };
        }
        let stream_ref = |c: &mut Canon<'_>, variant: &str| -> Option<StreamRef> {
            c.vec_header(2)?;
            (c.symbol()? == variant.as_bytes()).then_some(())?;
            Some(StreamRef {
                stream_id: <u64 as super::xdr::Canonical>::canon(c)?,
            })
        };
        let ev = match sym {
            "created" => E::Created(d!(StreamCreated)),
            "withdrew" => E::Withdrew(d!(Withdrawal)),
            "wdraw_to" => E::WithdrewTo(d!(WithdrawalTo)),
            "completed" => E::Completed(stream_ref(&mut c, "StreamCompleted")?),
            "cancelled" => E::Cancelled(stream_ref(&mut c, "StreamCancelled")?),
            "kp_cncl" => E::KeeperCancelled(d!(KeeperCancelled)),
            "closed" => E::Closed(stream_ref(&mut c, "StreamClosed")?),
            "paused" => E::Paused(d!(StreamPaused)),
            "resumed" => E::Resumed(stream_ref(&mut c, "Resumed")?),
            "rate_upd" => E::RateUpdated(d!(RateUpdated)),
            "rate_dec" => E::RateDecreased(d!(RateDecreased)),
            "rate_cap" => E::RateCapEnforced(d!(RateCapEnforced)),
            "end_shrt" => E::EndShortened(d!(StreamEndShortened)),
            "end_ext" => E::EndExtended(d!(StreamEndExtended)),
            "top_up" => E::ToppedUp(d!(StreamToppedUp)),
            "health" => E::HealthChanged(d!(StreamHealthChanged)),
            "recp_upd" => E::RecipientUpdated(d!(RecipientUpdated)),
            "claim_own" => E::ClaimOwnershipTransferred(d!(ClaimOwnershipTransferred)),
            "del_share" => E::RecipientShareDelegated(d!(RecipientShareDelegated)),
            "cloned" => E::Cloned(d!(StreamCloned)),
            "renewed" => {
                let r = d!(StreamRenewed);
                (topic_u64(2)? == r.new_stream_id).then_some(())?;
                E::Renewed(r)
            }
            "decomm" => E::Decommissioned(d!(StreamDecommissioned)),
            "ac_set" => E::AutoClaimSet(d!(AutoClaimSet)),
            "ac_revoke" => E::AutoClaimRevoked(d!(AutoClaimRevoked)),
            "ac_trig" => E::AutoClaimTriggered(d!(AutoClaimTriggered)),
            "offr_crt" => E::OfferCreated(d!(StreamOfferCreated)),
            "offr_acc" => E::OfferAccepted(d!(StreamOfferAccepted)),
            "offr_cxl" => E::OfferCancelled(d!(StreamOfferCancelled)),
            _ => return None,
        };
        if ev.stream_id().is_some_and(|id| id != tid) {
            return None;
        }
        Some((ev, c.pos()))
    }
}

fn decode_inner(topics: &[ScVal], data: &ScVal) -> Result<ContractEvent, String> {
    use ContractEvent as E;
    let t0 = topics.first().ok_or("event has no topics")?;
    let sym =
        as_symbol(t0).ok_or_else(|| format!("topic[0]: expected Symbol, found {}", t0.name()))?;
    let sym = std::str::from_utf8(sym).map_err(|_| "topic[0]: symbol is not UTF-8".to_string())?;
    macro_rules! d {
        ($e:expr) => {
            ($e).map_err(|e| format!("{sym} data: {e}"))
        };
    }

    if STREAM_TOPICS.contains(&sym) {
        let n = if sym == "renewed" { 3 } else { 2 };
        arity(topics, n)?;
        let tid = topic_u64(topics, 1)?;
        let ev = match sym {
            "created" => E::Created(d!(StreamCreated::from_scval(data))?),
            "withdrew" => E::Withdrew(d!(Withdrawal::from_scval(data))?),
            "wdraw_to" => E::WithdrewTo(d!(WithdrawalTo::from_scval(data))?),
            "completed" => E::Completed(stream_ref(data, "StreamCompleted")?),
            "cancelled" => E::Cancelled(stream_ref(data, "StreamCancelled")?),
            "kp_cncl" => E::KeeperCancelled(d!(KeeperCancelled::from_scval(data))?),
            "closed" => E::Closed(stream_ref(data, "StreamClosed")?),
            "paused" => E::Paused(d!(StreamPaused::from_scval(data))?),
            "resumed" => E::Resumed(stream_ref(data, "Resumed")?),
            "rate_upd" => E::RateUpdated(d!(RateUpdated::from_scval(data))?),
            "rate_dec" => E::RateDecreased(d!(RateDecreased::from_scval(data))?),
            "rate_cap" => E::RateCapEnforced(d!(RateCapEnforced::from_scval(data))?),
            "end_shrt" => E::EndShortened(d!(StreamEndShortened::from_scval(data))?),
            "end_ext" => E::EndExtended(d!(StreamEndExtended::from_scval(data))?),
            "top_up" => E::ToppedUp(d!(StreamToppedUp::from_scval(data))?),
            "health" => E::HealthChanged(d!(StreamHealthChanged::from_scval(data))?),
            "recp_upd" => E::RecipientUpdated(d!(RecipientUpdated::from_scval(data))?),
            "claim_own" => {
                E::ClaimOwnershipTransferred(d!(ClaimOwnershipTransferred::from_scval(data))?)
            }
            "del_share" => {
                E::RecipientShareDelegated(d!(RecipientShareDelegated::from_scval(data))?)
            }
            "cloned" => E::Cloned(d!(StreamCloned::from_scval(data))?),
            "renewed" => {
                let r = d!(StreamRenewed::from_scval(data))?;
                same_id(topic_u64(topics, 2)?, r.new_stream_id)?;
                E::Renewed(r)
            }
            "decomm" => E::Decommissioned(d!(StreamDecommissioned::from_scval(data))?),
            "ac_set" => E::AutoClaimSet(d!(AutoClaimSet::from_scval(data))?),
            "ac_revoke" => E::AutoClaimRevoked(d!(AutoClaimRevoked::from_scval(data))?),
            "ac_trig" => E::AutoClaimTriggered(d!(AutoClaimTriggered::from_scval(data))?),
            "offr_crt" => E::OfferCreated(d!(StreamOfferCreated::from_scval(data))?),
            "offr_acc" => E::OfferAccepted(d!(StreamOfferAccepted::from_scval(data))?),
            "offr_cxl" => E::OfferCancelled(d!(StreamOfferCancelled::from_scval(data))?),
            _ => return Err(format!("unknown topic `{sym}`")),
        };
        if let Some(id) = ev.stream_id() {
            same_id(tid, id)?;
        }
        return Ok(ev);
    }

    Ok(match sym {
        "gl_pause" => {
            arity(topics, 1)?;
            E::GlobalPaused(d!(PausedFlag::from_scval(data))?)
        }
        "gl_resume" => {
            arity(topics, 1)?;
            E::GlobalResumed(d!(GlobalResumed::from_scval(data))?)
        }
        "ct_pause" => {
            arity(topics, 1)?;
            E::ContractPaused(d!(PausedFlag::from_scval(data))?)
        }
        "pr_pause" => {
            arity(topics, 2)?;
            let m = d!(super::scval::as_map(data))?;
            E::ProtocolPaused(ProtocolPaused {
                admin: topic_addr(topics, 1)?,
                paused_at: d!(super::scval::field(m, "paused_at"))?,
                reason: d!(super::scval::field(m, "reason"))?,
            })
        }
        "pr_resume" => {
            arity(topics, 2)?;
            let m = d!(super::scval::as_map(data))?;
            E::ProtocolResumed(ProtocolResumed {
                admin: topic_addr(topics, 1)?,
                resumed_at: d!(super::scval::field(m, "resumed_at"))?,
            })
        }
        "ex_swept" => {
            arity(topics, 2)?;
            topic_addr(topics, 1)?;
            let m = d!(super::scval::as_map(data))?;
            E::ExcessSwept(ExcessSwept {
                amount: d!(super::scval::field(m, "amount"))?,
                to: d!(super::scval::field(m, "to"))?,
            })
        }
        "AdminUpd" => {
            arity(topics, 1)?;
            let items = d!(as_vec(data))?;
            if items.len() != 2 {
                return Err(format!(
                    "AdminUpd data: expected 2 elements, found {}",
                    items.len()
                ));
            }
            E::AdminUpdated(AdminUpdated {
                old_admin: elem(items, 0, "old admin")?,
                new_admin: elem(items, 1, "new admin")?,
            })
        }
        "tmpl_def" => {
            arity(topics, 2)?;
            let tid = topic_u64(topics, 1)?;
            let t = d!(StreamScheduleTemplate::from_scval(data))?;
            same_id(tid, t.template_id)?;
            E::TemplateDefined(t)
        }
        "res_rel" => {
            arity(topics, 2)?;
            let items = d!(as_vec(data))?;
            if items.len() != 4 {
                return Err(format!(
                    "res_rel data: expected 4 elements, found {}",
                    items.len()
                ));
            }
            E::ReservationReleased(ReservationReleased {
                holder: topic_addr(topics, 1)?,
                start_id: elem(items, 0, "start_id")?,
                count: elem(items, 1, "count")?,
                consumed: elem(items, 2, "consumed")?,
                reclaimed: elem(items, 3, "reclaimed")?,
            })
        }
        "upgraded" => {
            arity(topics, 1)?;
            E::Upgraded(d!(ContractUpgraded::from_scval(data))?)
        }
        "upgrade" => {
            arity(topics, 1)?;
            let items = d!(as_vec(data))?;
            if items.len() != 4 {
                return Err(format!(
                    "upgrade data: expected 4 elements, found {}",
                    items.len()
                ));
            }
            E::Upgrade(UpgradeTuple {
                new_wasm_hash: elem(items, 0, "wasm hash")?,
                version_0: elem(items, 1, "version")?,
                version_1: elem(items, 2, "version")?,
                admin: elem(items, 3, "admin")?,
            })
        }
        other => return Err(format!("unknown topic `{other}`")),
    })
}

#[cfg(test)]
mod tests {
    //! Events the golden scenarios do not cover (`health`, `ac_revoke`, `rate_cap`, `tmpl_def`,
    //! `res_rel`, `upgraded`, `upgrade`), built the way soroban-sdk 21 encodes them (§1).
    use super::*;
    use stellar_xdr::{
        AccountId, ContractId, Hash, Int128Parts, PublicKey, ScAddress, ScBytes, ScMap, ScMapEntry,
        ScString, ScVec, Uint256,
    };

    fn sym(s: &str) -> ScVal {
        ScVal::Symbol(s.try_into().unwrap())
    }
    fn map(mut entries: Vec<(&str, ScVal)>) -> ScVal {
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let v: Vec<ScMapEntry> = entries
            .into_iter()
            .map(|(k, val)| ScMapEntry { key: sym(k), val })
            .collect();
        ScVal::Map(Some(ScMap(v.try_into().unwrap())))
    }
    fn vec(items: Vec<ScVal>) -> ScVal {
        ScVal::Vec(Some(ScVec(items.try_into().unwrap())))
    }
    fn i128v(x: i128) -> ScVal {
        ScVal::I128(Int128Parts {
            hi: (x >> 64) as i64,
            lo: x as u64,
        })
    }
    fn contract(b: u8) -> ScVal {
        ScVal::Address(ScAddress::Contract(ContractId(Hash([b; 32]))))
    }
    fn account(b: u8) -> ScVal {
        ScVal::Address(ScAddress::Account(AccountId(
            PublicKey::PublicKeyTypeEd25519(Uint256([b; 32])),
        )))
    }
    fn json(e: &ContractEvent) -> serde_json::Value {
        serde_json::to_value(e).unwrap()
    }

    #[test]
    fn health_ac_revoke_rate_cap() {
        let e = ContractEvent::decode(
            &[sym("health"), ScVal::U64(4)],
            &map(vec![
                ("is_underfunded", ScVal::Bool(false)),
                ("remaining_balance", i128v(0)),
                ("seconds_remaining", ScVal::U64(0)),
                ("stream_id", ScVal::U64(4)),
            ]),
        );
        assert_eq!(e.type_name(), "health");
        assert_eq!(e.stream_id(), Some(4));
        assert_eq!(json(&e)["remaining_balance"], "0");

        let e = ContractEvent::decode(
            &[sym("ac_revoke"), ScVal::U64(9)],
            &map(vec![("stream_id", ScVal::U64(9))]),
        );
        assert_eq!((e.type_name(), e.stream_id()), ("ac_revoke", Some(9)));

        let e = ContractEvent::decode(
            &[sym("rate_cap"), ScVal::U64(1)],
            &map(vec![
                ("attempted_rate", i128v(i128::MAX)),
                ("max_rate_per_second", i128v(-5)),
                ("stream_id", ScVal::U64(1)),
            ]),
        );
        assert_eq!(json(&e)["attempted_rate"], i128::MAX.to_string());
        assert_eq!(json(&e)["max_rate_per_second"], "-5");
    }

    #[test]
    fn global_events_with_topic_fields() {
        let e = ContractEvent::decode(
            &[sym("tmpl_def"), ScVal::U64(3)],
            &map(vec![
                ("cliff_delay", ScVal::U64(10)),
                ("duration", ScVal::U64(100)),
                ("owner", account(1)),
                ("start_delay", ScVal::U64(5)),
                ("template_id", ScVal::U64(3)),
            ]),
        );
        assert_eq!(e.type_name(), "tmpl_def");
        assert_eq!(e.stream_id(), None);
        assert!(json(&e)["owner"].as_str().unwrap().starts_with('G'));
        // template id in topic and data must agree
        let bad = ContractEvent::decode(
            &[sym("tmpl_def"), ScVal::U64(4)],
            &map(vec![
                ("cliff_delay", ScVal::U64(10)),
                ("duration", ScVal::U64(100)),
                ("owner", account(1)),
                ("start_delay", ScVal::U64(5)),
                ("template_id", ScVal::U64(3)),
            ]),
        );
        assert!(bad.is_unrecognized());

        let e = ContractEvent::decode(
            &[sym("res_rel"), contract(2)],
            &vec(vec![
                ScVal::U64(40),
                ScVal::U32(5),
                ScVal::U32(2),
                ScVal::U32(3),
            ]),
        );
        assert_eq!(
            json(&e),
            serde_json::json!({"holder": ScAddress::Contract(ContractId(Hash([2; 32]))).to_string(), "start_id": 40, "count": 5, "consumed": 2, "reclaimed": 3})
        );

        let e = ContractEvent::decode(
            &[sym("upgraded")],
            &map(vec![
                ("new_version", ScVal::U32(9)),
                (
                    "new_wasm_hash",
                    ScVal::Bytes(ScBytes(vec![0xab; 32].try_into().unwrap())),
                ),
                ("upgraded_at", ScVal::U64(1_700_000_000)),
                ("upgraded_by", contract(3)),
            ]),
        );
        assert_eq!(json(&e)["new_wasm_hash"], "ab".repeat(32));
        assert_eq!(json(&e)["new_version"], 9);

        let e = ContractEvent::decode(
            &[sym("upgrade")],
            &vec(vec![
                ScVal::Bytes(ScBytes(vec![1; 32].try_into().unwrap())),
                ScVal::U32(9),
                ScVal::U32(10),
                contract(3),
            ]),
        );
        assert_eq!(e.type_name(), "upgrade");
        assert_eq!(json(&e)["version_1"], 10);

        let e = ContractEvent::decode(
            &[sym("pr_pause"), contract(1)],
            &map(vec![
                ("paused_at", ScVal::U64(5)),
                ("reason", ScVal::String(ScString("x".try_into().unwrap()))),
            ]),
        );
        assert_eq!(json(&e)["reason"], "x");
        // wrong arity for a global event
        assert!(ContractEvent::decode(
            &[sym("gl_pause"), ScVal::U64(1)],
            &map(vec![("paused", ScVal::Bool(true))])
        )
        .is_unrecognized());
        // Option field given the wrong type
        let e = ContractEvent::decode(
            &[sym("claim_own"), ScVal::U64(1)],
            &map(vec![
                ("new_owner", contract(1)),
                ("old_owner", ScVal::U64(3)),
                ("stream_id", ScVal::U64(1)),
            ]),
        );
        match e {
            ContractEvent::Unrecognized(u) => assert!(
                u.reason.contains("field `old_owner`: expected Address"),
                "{}",
                u.reason
            ),
            other => panic!("{other:?}"),
        }
    }
}
