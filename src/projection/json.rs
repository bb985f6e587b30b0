//! The stored JSON of a [`StreamState`], written directly.
//!
//! Every version of every stream is stored as this JSON (about 1.2 KB each), so writing it is a
//! large share of folding. The output is byte for byte what `serde_json` makes of the derived
//! `Serialize` (the tests compare both on many states); keys are written as they are, and
//! strings that need no escaping too, the rest goes through `serde_json`.

use super::fold::{Fact, StreamState};
use crate::domain::accrual::{StreamKind, StreamStatus};

struct Out(Vec<u8>);

impl Out {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// `,"key":` (without the comma for the first field).
    fn key(&mut self, k: &str) {
        if self.0.last() != Some(&b'{') {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.raw(k);
        self.raw("\":");
    }

    fn str(&mut self, s: &str) {
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.0.push(b'"');
            self.raw(s);
            self.0.push(b'"');
        } else {
            // serde_json's escaping, for the rare string that needs it.
            let _ = serde_json::to_writer(&mut self.0, s);
        }
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    fn uint(&mut self, v: u64) {
        self.raw(itoa::Buffer::new().format(v));
    }

    fn opt_uint(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.uint(v),
            None => self.raw("null"),
        }
    }

    fn amount(&mut self, v: i128) {
        self.0.push(b'"');
        self.raw(itoa::Buffer::new().format(v));
        self.0.push(b'"');
    }

    fn bool(&mut self, v: bool) {
        self.raw(if v { "true" } else { "false" });
    }

    fn opt_bool(&mut self, v: Option<bool>) {
        match v {
            Some(v) => self.bool(v),
            None => self.raw("null"),
        }
    }

    /// `{"source":"unknown"}`, `{"source":"events","value":…}`, `{"source":"entry","value":…}`.
    fn fact<T>(&mut self, f: &Fact<T>, value: impl FnOnce(&mut Self, &T)) {
        match f {
            Fact::Unknown => self.raw("{\"source\":\"unknown\"}"),
            Fact::Events(v) | Fact::Entry(v) => {
                self.raw(if matches!(f, Fact::Events(_)) {
                    "{\"source\":\"events\",\"value\":"
                } else {
                    "{\"source\":\"entry\",\"value\":"
                });
                value(self, v);
                self.0.push(b'}');
            }
        }
    }
}

fn kind(k: StreamKind) -> &'static str {
    match k {
        StreamKind::Linear => "\"Linear\"",
        StreamKind::CliffOnly => "\"CliffOnly\"",
        StreamKind::CliffSlope => "\"CliffSlope\"",
    }
}

fn status(s: StreamStatus) -> &'static str {
    match s {
        StreamStatus::Active => "\"Active\"",
        StreamStatus::Paused => "\"Paused\"",
        StreamStatus::Completed => "\"Completed\"",
        StreamStatus::Cancelled => "\"Cancelled\"",
    }
}

/// The state's JSON, as `serde_json::to_string(state)` writes it.
pub fn state_json(s: &StreamState) -> String {
    let mut o = Out(Vec::with_capacity(1536));
    o.0.push(b'{');
    o.key("stream_id");
    o.uint(s.stream_id);
    o.key("sender");
    o.str(&s.sender);
    o.key("recipient");
    o.str(&s.recipient);
    o.key("claim_owner");
    o.opt_str(s.claim_owner.as_deref());
    o.key("deposit_amount");
    o.amount(s.deposit_amount);
    o.key("rate_per_second");
    o.amount(s.rate_per_second);
    o.key("start_time");
    o.uint(s.start_time);
    o.key("cliff_time");
    o.uint(s.cliff_time);
    o.key("end_time");
    o.uint(s.end_time);
    o.key("withdrawn_amount");
    o.amount(s.withdrawn_amount);
    o.key("status");
    o.raw(status(s.status));
    o.key("closed");
    o.bool(s.closed);
    o.key("cancelled_at");
    o.opt_uint(s.cancelled_at);
    o.key("checkpointed_amount");
    o.amount(s.checkpointed_amount);
    o.key("checkpointed_at");
    o.uint(s.checkpointed_at);
    o.key("withdraw_dust_threshold");
    o.amount(s.withdraw_dust_threshold);
    o.key("memo_hex");
    o.opt_str(s.memo_hex.as_deref());
    o.key("kind");
    o.fact(&s.kind, |o, k| o.raw(kind(*k)));
    o.key("irrevocable");
    o.fact(&s.irrevocable, |o, v| o.opt_bool(*v));
    o.key("witness");
    o.fact(&s.witness, |o, v| o.opt_str(v.as_deref()));
    o.key("is_pooled");
    o.opt_bool(s.is_pooled);
    o.key("decommissioned");
    o.opt_bool(s.decommissioned);
    o.key("last_pause_toggle_ledger");
    o.uint(u64::from(s.last_pause_toggle_ledger));
    o.key("last_withdraw_ledger");
    o.fact(&s.last_withdraw_ledger, |o, v| o.uint(u64::from(*v)));
    o.key("last_rate_change_ledger");
    o.uint(u64::from(s.last_rate_change_ledger));
    o.key("paused_at_timestamp");
    o.uint(s.paused_at_timestamp);
    o.key("cumulative_paused_duration");
    o.uint(s.cumulative_paused_duration);
    o.key("delegation_depth");
    o.uint(u64::from(s.delegation_depth));
    o.key("parent_stream_id");
    o.opt_uint(s.parent_stream_id);
    o.key("created_ledger");
    o.uint(u64::from(s.created_ledger));
    o.key("created_at");
    o.uint(s.created_at);
    o.key("created_tx");
    o.str(&s.created_tx);
    o.key("updated_ledger");
    o.uint(u64::from(s.updated_ledger));
    o.key("updated_at");
    o.uint(s.updated_at);
    o.key("updated_tx");
    o.str(&s.updated_tx);
    o.key("verification");
    o.0.push(b'{');
    o.key("verified");
    o.bool(s.verification.verified);
    o.key("checked_ledger");
    o.opt_uint(s.verification.checked_ledger.map(u64::from));
    o.key("reasons");
    o.0.push(b'[');
    for (i, r) in s.verification.reasons.iter().enumerate() {
        if i > 0 {
            o.0.push(b',');
        }
        o.str(r);
    }
    o.raw("]}}");
    // Only valid UTF-8 was written (whole `str`s and ASCII).
    String::from_utf8(o.0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::projection::fold::Verification;

    fn fact<T: std::fmt::Debug + Clone>(
        v: impl Strategy<Value = T> + Clone,
    ) -> impl Strategy<Value = Fact<T>> {
        prop_oneof![
            Just(Fact::Unknown),
            v.clone().prop_map(Fact::Events),
            v.prop_map(Fact::Entry),
        ]
    }

    fn text() -> impl Strategy<Value = String> + Clone {
        prop_oneof![
            "[A-Z2-7]{56}",
            "[0-9a-f]{64}",
            any::<String>(),
            Just("quote \" back \\ nl \n tab \t ctl \u{1} del \u{7f} é ✓".to_string()),
        ]
    }

    prop_compose! {
        fn state()(
            ids in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            times in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            amounts in (any::<i128>(), any::<i128>(), any::<i128>(), any::<i128>(), any::<i128>()),
            ledgers in (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
            strs in (text(), text(), proptest::option::of(text()), proptest::option::of(text()), text(), text()),
            flags in (any::<bool>(), proptest::option::of(any::<bool>()), proptest::option::of(any::<bool>()), any::<bool>()),
            opts in (proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()), proptest::option::of(any::<u32>())),
            status in prop_oneof![Just(StreamStatus::Active), Just(StreamStatus::Paused), Just(StreamStatus::Completed), Just(StreamStatus::Cancelled)],
            kind in fact(prop_oneof![Just(StreamKind::Linear), Just(StreamKind::CliffOnly), Just(StreamKind::CliffSlope)]),
            irrevocable in fact(proptest::option::of(any::<bool>())),
            witness in fact(proptest::option::of(text())),
            lwl in fact(any::<u32>()),
            reasons in proptest::collection::vec(text(), 0..3),
        ) -> StreamState {
            StreamState {
                stream_id: ids.0,
                sender: strs.0,
                recipient: strs.1,
                claim_owner: strs.2,
                deposit_amount: amounts.0,
                rate_per_second: amounts.1,
                start_time: times.0,
                cliff_time: times.1,
                end_time: times.2,
                withdrawn_amount: amounts.2,
                status,
                closed: flags.0,
                cancelled_at: opts.0,
                checkpointed_amount: amounts.3,
                checkpointed_at: times.3,
                withdraw_dust_threshold: amounts.4,
                memo_hex: strs.3,
                kind,
                irrevocable,
                witness,
                is_pooled: flags.1,
                decommissioned: flags.2,
                last_pause_toggle_ledger: ledgers.0,
                last_withdraw_ledger: lwl,
                last_rate_change_ledger: ledgers.1,
                paused_at_timestamp: times.4,
                cumulative_paused_duration: times.5,
                delegation_depth: ledgers.2,
                parent_stream_id: opts.1,
                created_ledger: ledgers.3,
                created_at: ids.1,
                created_tx: strs.4,
                updated_ledger: ledgers.4,
                updated_at: ids.2,
                updated_tx: strs.5,
                verification: Verification {
                    verified: flags.3,
                    checked_ledger: opts.2,
                    reasons,
                },
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn same_bytes_as_serde_json(s in state()) {
            prop_assert_eq!(state_json(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
