//! Seeded, deterministic Fluxora activity: streams of every kind created, withdrawn from, paused,
//! resumed, re-rated, topped up, extended, shortened, cancelled, closed, re-assigned and
//! decommissioned, each transaction valid by the contract's rules (`contract.md` §4) and carrying
//! the events the contract emits and the `Stream` entries it writes.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stellar_xdr::{
    AccountId, ContractId, Hash, Int128Parts, PublicKey, ScAddress, ScMap, ScMapEntry, ScString,
    ScSymbol, ScVal, ScVec, Uint256,
};

use super::chain::{MetaFormat, SimChain, SimError, SimEvent, StreamChange, TxSpec};
use crate::domain::accrual::{accrued_at, AccrualTerms, StreamKind, StreamStatus};

/// Pause/resume and rate-change cooldown, in ledgers.
const COOLDOWN: u32 = 17;

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    pub passphrase: String,
    pub format: MetaFormat,
    /// Sequence and close time of the first ledger.
    pub first_seq: u32,
    pub first_close_time: u64,
    /// Seconds between ledgers.
    pub ledger_interval: u64,
    /// Transactions per ledger (each emits 1–2 events).
    pub txs_per_ledger: u32,
    /// Live streams to aim for.
    pub target_streams: usize,
    /// How many past ledgers a fork may replace.
    pub fork_window: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            passphrase: super::DEFAULT_PASSPHRASE.to_string(),
            format: MetaFormat::V4InLcmV2,
            first_seq: 1_000,
            first_close_time: 1_750_000_000,
            ledger_interval: 5,
            txs_per_ledger: 4,
            target_streams: 200,
            fork_window: 64,
        }
    }
}

/// The contract's `Stream` record.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamModel {
    pub stream_id: u64,
    pub sender: [u8; 32],
    pub recipient: [u8; 32],
    pub claim_owner: Option<[u8; 32]>,
    pub deposit_amount: i128,
    pub rate_per_second: i128,
    pub start_time: u64,
    pub cliff_time: u64,
    pub end_time: u64,
    pub withdrawn_amount: i128,
    pub status: StreamStatus,
    pub cancelled_at: Option<u64>,
    pub checkpointed_amount: i128,
    pub checkpointed_at: u64,
    pub kind: StreamKind,
    pub last_pause_toggle_ledger: u32,
    pub last_withdraw_ledger: u32,
    pub last_rate_change_ledger: u32,
    pub decommissioned: Option<bool>,
    pub paused_at_timestamp: u64,
    pub cumulative_paused_duration: u64,
    pub delegation_depth: u32,
    pub parent_stream_id: Option<u64>,
}

impl StreamModel {
    /// A stream as the contract stores it at creation: nothing withdrawn, checkpoint `0 @ start`,
    /// every lifecycle field at its initial value. `times` is `[start, cliff, end]`.
    pub fn fresh(
        stream_id: u64,
        sender: [u8; 32],
        recipient: [u8; 32],
        kind: StreamKind,
        deposit_amount: i128,
        rate_per_second: i128,
        times: [u64; 3],
    ) -> Self {
        let [start_time, cliff_time, end_time] = times;
        Self {
            stream_id,
            sender,
            recipient,
            claim_owner: None,
            deposit_amount,
            rate_per_second,
            start_time,
            cliff_time,
            end_time,
            withdrawn_amount: 0,
            status: StreamStatus::Active,
            cancelled_at: None,
            checkpointed_amount: 0,
            checkpointed_at: start_time,
            kind,
            last_pause_toggle_ledger: 0,
            last_withdraw_ledger: 0,
            last_rate_change_ledger: 0,
            decommissioned: None,
            paused_at_timestamp: 0,
            cumulative_paused_duration: 0,
            delegation_depth: 0,
            parent_stream_id: None,
        }
    }

    /// The accrual inputs.
    pub fn terms(&self) -> AccrualTerms {
        AccrualTerms {
            kind: self.kind,
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

    fn accrued(&self, now: u64) -> i128 {
        accrued_at(&self.terms(), now)
    }

    /// The `Stream` ScVal map: 29 keys, sorted bytewise, `None` as `Void`.
    pub fn to_scval(&self) -> Result<ScVal, SimError> {
        let opt_u64 = |v: Option<u64>| v.map_or(ScVal::Void, ScVal::U64);
        let opt_bool = |v: Option<bool>| v.map_or(ScVal::Void, ScVal::Bool);
        map(vec![
            ("cancelled_at", opt_u64(self.cancelled_at)),
            ("checkpointed_amount", i128v(self.checkpointed_amount)),
            ("checkpointed_at", ScVal::U64(self.checkpointed_at)),
            (
                "claim_owner",
                self.claim_owner
                    .map_or(ScVal::Void, |a| ScVal::Address(account(a))),
            ),
            ("cliff_time", ScVal::U64(self.cliff_time)),
            (
                "cumulative_paused_duration",
                ScVal::U64(self.cumulative_paused_duration),
            ),
            ("decommissioned", opt_bool(self.decommissioned)),
            ("delegation_depth", ScVal::U32(self.delegation_depth)),
            ("deposit_amount", i128v(self.deposit_amount)),
            ("end_time", ScVal::U64(self.end_time)),
            ("irrevocable", ScVal::Void),
            ("is_pooled", ScVal::Void),
            ("kind", ScVal::U32(kind_u32(self.kind))),
            (
                "last_pause_toggle_ledger",
                ScVal::U32(self.last_pause_toggle_ledger),
            ),
            (
                "last_rate_change_ledger",
                ScVal::U32(self.last_rate_change_ledger),
            ),
            (
                "last_withdraw_ledger",
                ScVal::U32(self.last_withdraw_ledger),
            ),
            ("memo", ScVal::Void),
            ("metadata", ScVal::Void),
            ("parent_stream_id", opt_u64(self.parent_stream_id)),
            ("paused_at_timestamp", ScVal::U64(self.paused_at_timestamp)),
            ("rate_per_second", i128v(self.rate_per_second)),
            ("recipient", ScVal::Address(account(self.recipient))),
            ("sender", ScVal::Address(account(self.sender))),
            ("start_time", ScVal::U64(self.start_time)),
            ("status", ScVal::U32(status_u32(self.status))),
            ("stream_id", ScVal::U64(self.stream_id)),
            ("withdraw_dust_threshold", i128v(0)),
            ("withdrawn_amount", i128v(self.withdrawn_amount)),
            ("witness", ScVal::Void),
        ])
    }
}

fn kind_u32(k: StreamKind) -> u32 {
    match k {
        StreamKind::Linear => 0,
        StreamKind::CliffOnly => 1,
        StreamKind::CliffSlope => 2,
    }
}

fn status_u32(s: StreamStatus) -> u32 {
    match s {
        StreamStatus::Active => 0,
        StreamStatus::Paused => 1,
        StreamStatus::Completed => 2,
        StreamStatus::Cancelled => 3,
    }
}

/// `Symbol(s)`.
pub fn sym(s: &str) -> Result<ScVal, SimError> {
    Ok(ScVal::Symbol(ScSymbol(s.try_into()?)))
}

/// `I128` from hi/lo parts.
pub fn i128v(v: i128) -> ScVal {
    ScVal::I128(Int128Parts {
        hi: (v >> 64) as i64,
        lo: v as u64,
    })
}

/// A `G…` account address.
pub fn account(key: [u8; 32]) -> ScAddress {
    ScAddress::Account(AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key))))
}

/// A `C…` contract address.
pub fn contract(id: [u8; 32]) -> ScAddress {
    ScAddress::Contract(ContractId(Hash(id)))
}

/// A `#[contracttype]` struct: a map with keys sorted bytewise.
pub fn map(mut fields: Vec<(&str, ScVal)>) -> Result<ScVal, SimError> {
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let entries = fields
        .into_iter()
        .map(|(k, v)| {
            Ok(ScMapEntry {
                key: sym(k)?,
                val: v,
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    Ok(ScVal::Map(Some(ScMap(entries.try_into()?))))
}

fn vec_val(items: Vec<ScVal>) -> Result<ScVal, SimError> {
    Ok(ScVal::Vec(Some(ScVec(items.try_into()?))))
}

/// An open offer: (created at, sender, recipient, deposit, rate, start, cliff, end).
type Offer = (u64, [u8; 32], [u8; 32], i128, i128, u64, u64, u64);

#[derive(Debug, Clone, Default)]
struct GenState {
    streams: BTreeMap<u64, StreamModel>,
    /// The keys of `streams`, ascending (random picks index into it).
    ids: Vec<u64>,
    next_id: u64,
    /// Auto-claim destinations (kept outside the `Stream` entry by the contract).
    auto_claims: BTreeMap<u64, [u8; 32]>,
    /// Open offers: (sender, recipient, deposit, rate, start, cliff, end).
    offers: BTreeMap<u64, Offer>,
    global_paused: bool,
}

impl GenState {
    /// Sets (or removes) a stream, keeping `ids` sorted; returns the previous value.
    fn put_stream(&mut self, id: u64, s: Option<StreamModel>) -> Option<StreamModel> {
        let old = match s {
            Some(s) => self.streams.insert(id, s),
            None => self.streams.remove(&id),
        };
        match (old.is_some(), self.streams.contains_key(&id)) {
            (false, true) => {
                if let Err(i) = self.ids.binary_search(&id) {
                    self.ids.insert(i, id);
                }
            }
            (true, false) => {
                if let Ok(i) = self.ids.binary_search(&id) {
                    self.ids.remove(i);
                }
            }
            _ => {}
        }
        old
    }
}

/// One change of the generator's state, with what it replaced (to undo it on a fork).
#[derive(Debug, Clone)]
enum Undo {
    Stream(u64, Option<StreamModel>),
    AutoClaim(u64, Option<[u8; 32]>),
    Offer(u64, Option<Offer>),
}

/// How to take the state back to before ledger `seq`.
#[derive(Debug, Clone)]
struct LedgerUndo {
    seq: u32,
    next_id: u64,
    global_paused: bool,
    /// In the order the changes were made.
    changes: Vec<Undo>,
}

/// The generator. Pair it with the chain from [`Generator::empty_chain`].
#[derive(Debug)]
pub struct Generator {
    pub cfg: GenConfig,
    pub contract: [u8; 32],
    rng: StdRng,
    state: GenState,
    accounts: Vec<[u8; 32]>,
    /// Undo records of the last `fork_window` ledgers (a journal, not copies of the state: the
    /// state holds every live stream, and a copy per ledger costs time and memory).
    history: VecDeque<LedgerUndo>,
    /// Changes of the ledger being generated.
    journal: Vec<Undo>,
    branch: u64,
}

impl Generator {
    /// A generator for `cfg`.
    pub fn new(cfg: GenConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let contract: [u8; 32] = rng.gen();
        let accounts = (0..64).map(|_| rng.gen()).collect();
        Self {
            cfg,
            contract,
            rng,
            state: GenState::default(),
            accounts,
            history: VecDeque::new(),
            journal: Vec::new(),
            branch: 0,
        }
    }

    /// The Fluxora contract id as a `C…` strkey.
    pub fn contract_strkey(&self) -> String {
        stellar_strkey::Contract(self.contract)
            .to_string()
            .as_str()
            .to_string()
    }

    /// An empty chain for this generator's network and contract.
    pub fn empty_chain(&self) -> SimChain {
        SimChain::new(
            &self.cfg.passphrase,
            self.contract,
            self.cfg.first_seq,
            self.cfg.format,
        )
    }

    /// Live streams (not closed).
    pub fn streams(&self) -> &BTreeMap<u64, StreamModel> {
        &self.state.streams
    }

    /// Generates and closes the next ledger of `chain`.
    pub fn next_ledger(&mut self, chain: &mut SimChain) -> Result<(), SimError> {
        let seq = chain.next_seq();
        let now = chain.tip().map_or(self.cfg.first_close_time, |t| {
            t.close_time + self.cfg.ledger_interval
        });
        let (next_id, global_paused) = (self.state.next_id, self.state.global_paused);
        self.journal.clear();
        let mut specs = Vec::new();
        for _ in 0..self.cfg.txs_per_ledger {
            if let Some(spec) = self.random_tx(seq, now)? {
                specs.push(spec);
            }
        }
        chain.push_ledger(now, specs)?;
        self.history.push_back(LedgerUndo {
            seq,
            next_id,
            global_paused,
            changes: std::mem::take(&mut self.journal),
        });
        while self.history.len() > self.cfg.fork_window + 1 {
            self.history.pop_front();
        }
        Ok(())
    }

    /// Replaces the last `k` ledgers by a different branch (other activity, other hashes).
    pub fn fork(&mut self, chain: &mut SimChain, k: u32) -> Result<(), SimError> {
        let Some(tip) = chain.tip().map(|t| t.seq) else {
            return Ok(());
        };
        let fork_seq = tip.saturating_sub(k);
        if k as usize > self.cfg.fork_window {
            return Err(SimError::Invalid(format!(
                "fork depth {k} exceeds the generator's window {}",
                self.cfg.fork_window
            )));
        }
        // Every ledger above the fork point must have its undo record.
        let first_dropped = fork_seq.max(chain.first_seq().saturating_sub(1)) + 1;
        if first_dropped <= tip && !self.history.iter().any(|u| u.seq == first_dropped) {
            return Err(SimError::Invalid(
                "fork below the generator's history".into(),
            ));
        }
        while self.history.back().is_some_and(|u| u.seq > fork_seq) {
            if let Some(u) = self.history.pop_back() {
                self.undo(u);
            }
        }
        chain.fork_after(fork_seq);
        self.branch += 1;
        self.rng = StdRng::seed_from_u64(self.cfg.seed ^ (self.branch << 32) ^ u64::from(fork_seq));
        for _ in 0..k {
            self.next_ledger(chain)?;
        }
        Ok(())
    }

    /// Takes the state back to before the ledger of `u`.
    fn undo(&mut self, u: LedgerUndo) {
        for c in u.changes.into_iter().rev() {
            match c {
                Undo::Stream(id, old) => {
                    self.state.put_stream(id, old);
                }
                Undo::AutoClaim(id, old) => match old {
                    Some(d) => {
                        self.state.auto_claims.insert(id, d);
                    }
                    None => {
                        self.set_auto_claim(id, None);
                    }
                },
                Undo::Offer(id, old) => match old {
                    Some(o) => {
                        self.state.offers.insert(id, o);
                    }
                    None => {
                        self.state.offers.remove(&id);
                    }
                },
            }
        }
        self.state.next_id = u.next_id;
        self.state.global_paused = u.global_paused;
    }

    /// Sets (or with `None` removes) a stream, journaled.
    fn set_stream(&mut self, id: u64, s: Option<StreamModel>) {
        let old = self.state.put_stream(id, s);
        self.journal.push(Undo::Stream(id, old));
    }

    /// Sets (or removes) an auto-claim destination, journaled.
    fn set_auto_claim(&mut self, id: u64, dest: Option<[u8; 32]>) {
        let old = match dest {
            Some(d) => self.state.auto_claims.insert(id, d),
            None => self.state.auto_claims.remove(&id),
        };
        self.journal.push(Undo::AutoClaim(id, old));
    }

    /// Sets (or removes) an open offer, journaled.
    fn set_offer(&mut self, id: u64, offer: Option<Offer>) {
        let old = match offer {
            Some(o) => self.state.offers.insert(id, o),
            None => self.state.offers.remove(&id),
        };
        self.journal.push(Undo::Offer(id, old));
    }

    fn pick_account(&mut self) -> [u8; 32] {
        let i = self.rng.gen_range(0..self.accounts.len());
        self.accounts[i]
    }

    /// An account other than `not` (only pooled streams may stream to their sender).
    fn pick_other(&mut self, not: [u8; 32]) -> [u8; 32] {
        loop {
            let a = self.pick_account();
            if a != not {
                return a;
            }
        }
    }

    fn random_tx(&mut self, seq: u32, now: u64) -> Result<Option<TxSpec>, SimError> {
        if self.state.global_paused {
            // While globally paused the contract refuses stream operations: only resume.
            if self.rng.gen_bool(0.3) {
                self.state.global_paused = false;
                return self
                    .global(
                        "global_resume",
                        "gl_resume",
                        map(vec![("resumed_at", ScVal::U64(now))])?,
                    )
                    .map(Some);
            }
            return Ok(None);
        }
        match self.rng.gen_range(0..400u32) {
            0 => {
                self.state.global_paused = true;
                return self
                    .global(
                        "set_global_emergency_paused",
                        "gl_pause",
                        map(vec![("paused", ScVal::Bool(true))])?,
                    )
                    .map(Some);
            }
            1 => {
                let flag = self.rng.gen_bool(0.5);
                return self
                    .global(
                        "set_contract_paused",
                        "ct_pause",
                        map(vec![("paused", ScVal::Bool(flag))])?,
                    )
                    .map(Some);
            }
            2..=9 => return self.offer(now).map(Some),
            10..=13 => return self.lookback_stream(now).map(Some),
            14..=17 => return self.bulk_cancel(now),
            _ => {}
        }
        let live = self.state.streams.len();
        if live == 0 || (live < self.cfg.target_streams && self.rng.gen_bool(0.35)) {
            return self.create(seq, now).map(Some);
        }
        // A few tries to find an action that is valid for a random stream right now.
        for _ in 0..8 {
            let id = self.state.ids[self.rng.gen_range(0..self.state.ids.len())];
            let action = self.rng.gen_range(0..22u32);
            if let Some(spec) = self.act(action, id, seq, now)? {
                return Ok(Some(spec));
            }
        }
        Ok(None)
    }

    fn create(&mut self, seq: u32, now: u64) -> Result<TxSpec, SimError> {
        let id = self.state.next_id;
        self.state.next_id += 1;
        let kind = match self.rng.gen_range(0..10) {
            0..=5 => StreamKind::Linear,
            6..=7 => StreamKind::CliffSlope,
            _ => StreamKind::CliffOnly,
        };
        let start = now + self.rng.gen_range(0..120);
        let duration = self.rng.gen_range(300..20_000u64);
        let end = start + duration;
        let cliff = if self.rng.gen_bool(0.5) {
            start
        } else {
            start + self.rng.gen_range(0..duration / 3)
        };
        // Mostly USDC-sized amounts; now and then near the i128 limits.
        let big = self.rng.gen_bool(0.03);
        let rate: i128 = if kind == StreamKind::CliffOnly {
            0
        } else if big {
            i128::MAX / (i128::from(duration) * 4)
        } else {
            self.rng.gen_range(1..50_000_000)
        };
        let base = match kind {
            StreamKind::Linear => rate * i128::from(duration),
            StreamKind::CliffSlope => rate * i128::from(end - cliff),
            StreamKind::CliffOnly => self.rng.gen_range(10_000_000..100_000_000_000i128),
        };
        let deposit = if self.rng.gen_bool(0.1) {
            base + base / 10 + 1
        } else {
            base
        };
        let sender = self.pick_account();
        let recipient = self.pick_other(sender);
        let s = StreamModel::fresh(
            id,
            sender,
            recipient,
            kind,
            deposit,
            rate,
            [start, cliff, end],
        );
        let created = map(vec![
            ("cliff_time", ScVal::U64(cliff)),
            ("deposit_amount", i128v(deposit)),
            ("end_time", ScVal::U64(end)),
            ("memo", ScVal::Void),
            ("metadata", ScVal::Void),
            ("rate_per_second", i128v(rate)),
            ("recipient", ScVal::Address(account(recipient))),
            ("sender", ScVal::Address(account(sender))),
            ("start_time", ScVal::U64(start)),
            ("stream_id", ScVal::U64(id)),
            ("withdraw_dust_threshold", i128v(0)),
        ])?;
        let _ = seq;
        let function = match kind {
            StreamKind::Linear => "create_stream",
            StreamKind::CliffOnly => "create_cliff_only_stream",
            StreamKind::CliffSlope => "create_cliff_slope_stream",
        };
        let spec = self.tx(function, vec![], vec![(("created", id), created)], &s)?;
        self.set_stream(id, Some(s));
        Ok(spec)
    }

    fn created_data(&self, c: &StreamModel) -> Result<ScVal, SimError> {
        map(vec![
            ("cliff_time", ScVal::U64(c.cliff_time)),
            ("deposit_amount", i128v(c.deposit_amount)),
            ("end_time", ScVal::U64(c.end_time)),
            ("memo", ScVal::Void),
            ("metadata", ScVal::Void),
            ("rate_per_second", i128v(c.rate_per_second)),
            ("recipient", ScVal::Address(account(c.recipient))),
            ("sender", ScVal::Address(account(c.sender))),
            ("start_time", ScVal::U64(c.start_time)),
            ("stream_id", ScVal::U64(c.stream_id)),
            ("withdraw_dust_threshold", i128v(0)),
        ])
    }

    /// Our contract's events: `((topic, stream id), data)` each.
    fn events(&self, events: Vec<((&str, u64), ScVal)>) -> Result<Vec<SimEvent>, SimError> {
        events
            .into_iter()
            .map(|((topic, id), data)| {
                Ok(SimEvent {
                    contract: self.contract,
                    topics: vec![sym(topic)?, ScVal::U64(id)],
                    data,
                })
            })
            .collect()
    }

    /// A transaction that changes no `Stream` entry.
    fn tx_without_entry(
        &self,
        function: &str,
        args: Vec<ScVal>,
        events: Vec<((&str, u64), ScVal)>,
    ) -> Result<TxSpec, SimError> {
        Ok(TxSpec {
            function: function.to_string(),
            args,
            success: true,
            events: self.events(events)?,
            stream_changes: Vec::new(),
        })
    }

    /// A contract-wide event (single-symbol topic).
    fn global(&self, function: &str, topic: &str, data: ScVal) -> Result<TxSpec, SimError> {
        Ok(TxSpec {
            function: function.to_string(),
            args: Vec::new(),
            success: true,
            events: vec![SimEvent {
                contract: self.contract,
                topics: vec![sym(topic)?],
                data,
            }],
            stream_changes: Vec::new(),
        })
    }

    /// Offers: create one, or accept / cancel an open one.
    fn offer(&mut self, now: u64) -> Result<TxSpec, SimError> {
        if let Some((&offer_id, &o)) = self.state.offers.iter().next() {
            let (created_at, sender, recipient, deposit, rate, start, cliff, end) = o;
            let _ = created_at;
            self.set_offer(offer_id, None);
            if self.rng.gen_bool(0.7) {
                // accept: start = max(offer start, now), schedule shifted by the same offset
                let eff = start.max(now);
                let shift = eff - start;
                let s = StreamModel::fresh(
                    offer_id,
                    sender,
                    recipient,
                    StreamKind::Linear,
                    deposit,
                    rate,
                    [eff, cliff + shift, end + shift],
                );
                let created = self.created_data(&s)?;
                let acc = map(vec![
                    ("effective_start_time", ScVal::U64(eff)),
                    ("offer_id", ScVal::U64(offer_id)),
                    ("recipient", ScVal::Address(account(recipient))),
                ])?;
                let spec = self.tx(
                    "accept_stream_offer",
                    vec![ScVal::U64(offer_id)],
                    vec![
                        (("created", offer_id), created),
                        (("offr_acc", offer_id), acc),
                    ],
                    &s,
                )?;
                self.set_stream(offer_id, Some(s));
                return Ok(spec);
            }
            let data = map(vec![
                ("by", ScVal::Address(account(sender))),
                ("offer_id", ScVal::U64(offer_id)),
                ("refund_amount", i128v(deposit)),
            ])?;
            return self.tx_without_entry(
                "cancel_stream_offer",
                vec![ScVal::U64(offer_id)],
                vec![(("offr_cxl", offer_id), data)],
            );
        }
        // create: the offer id comes from the stream counter
        let offer_id = self.state.next_id;
        self.state.next_id += 1;
        let sender = self.pick_account();
        let recipient = self.pick_other(sender);
        let start = now + self.rng.gen_range(0..600);
        let duration = self.rng.gen_range(600..10_000u64);
        let cliff = start + duration / 4;
        let rate: i128 = self.rng.gen_range(1..10_000_000);
        let deposit = rate * i128::from(duration);
        self.set_offer(
            offer_id,
            Some((
                now,
                sender,
                recipient,
                deposit,
                rate,
                start,
                cliff,
                start + duration,
            )),
        );
        let data = map(vec![
            ("cliff_time", ScVal::U64(cliff)),
            ("created_at", ScVal::U64(now)),
            ("deposit_amount", i128v(deposit)),
            ("end_time", ScVal::U64(start + duration)),
            ("expiry_time", ScVal::Void),
            ("offer_id", ScVal::U64(offer_id)),
            ("rate_per_second", i128v(rate)),
            ("recipient", ScVal::Address(account(recipient))),
            ("sender", ScVal::Address(account(sender))),
            ("start_time", ScVal::U64(start)),
        ])?;
        self.tx_without_entry(
            "create_stream_offer",
            vec![],
            vec![(("offr_crt", offer_id), data)],
        )
    }

    /// `create_stream_with_lookback`: a stream that started (and here ended) in the past, so
    /// that keepers can cancel it.
    fn lookback_stream(&mut self, now: u64) -> Result<TxSpec, SimError> {
        let id = self.state.next_id;
        self.state.next_id += 1;
        let start = now.saturating_sub(30 * 86_400);
        let end = start + 20 * 86_400;
        let rate: i128 = self.rng.gen_range(1..1_000);
        let sender = self.pick_account();
        let recipient = self.pick_other(sender);
        let s = StreamModel::fresh(
            id,
            sender,
            recipient,
            StreamKind::Linear,
            rate * i128::from(end - start),
            rate,
            [start, start, end],
        );
        let created = self.created_data(&s)?;
        let spec = self.tx(
            "create_stream_with_lookback",
            vec![],
            vec![(("created", id), created)],
            &s,
        )?;
        self.set_stream(id, Some(s));
        Ok(spec)
    }

    /// `bulk_cancel_streams`: per stream, the payout (`withdrew`) then `cancelled`.
    fn bulk_cancel(&mut self, now: u64) -> Result<Option<TxSpec>, SimError> {
        let ids: Vec<u64> = self
            .state
            .streams
            .values()
            .filter(|s| matches!(s.status, StreamStatus::Active | StreamStatus::Paused))
            .map(|s| s.stream_id)
            .take(40)
            .collect();
        if ids.len() < 2 {
            return Ok(None);
        }
        let n = self.rng.gen_range(2..=ids.len().min(4));
        let mut events = Vec::new();
        let mut changes = Vec::new();
        for &id in ids.iter().take(n) {
            let Some(mut s) = self.state.streams.get(&id).cloned() else {
                continue;
            };
            let payout = s.accrued(now) - s.withdrawn_amount;
            if payout > 0 {
                s.withdrawn_amount += payout;
                events.push(SimEvent {
                    contract: self.contract,
                    topics: vec![sym("withdrew")?, ScVal::U64(id)],
                    data: map(vec![
                        ("amount", i128v(payout)),
                        ("recipient", ScVal::Address(account(s.recipient))),
                        ("stream_id", ScVal::U64(id)),
                    ])?,
                });
            }
            s.status = StreamStatus::Cancelled;
            s.cancelled_at = Some(now);
            events.push(SimEvent {
                contract: self.contract,
                topics: vec![sym("cancelled")?, ScVal::U64(id)],
                data: vec_val(vec![sym("StreamCancelled")?, ScVal::U64(id)])?,
            });
            changes.push(StreamChange::Set {
                stream_id: id,
                value: s.to_scval()?,
            });
            self.set_stream(id, Some(s));
        }
        Ok(Some(TxSpec {
            function: "bulk_cancel_streams".into(),
            args: Vec::new(),
            success: true,
            events,
            stream_changes: changes,
        }))
    }

    /// A transaction on our contract: events are `((topic, stream id), data)`.
    fn tx(
        &self,
        function: &str,
        args: Vec<ScVal>,
        events: Vec<((&str, u64), ScVal)>,
        after: &StreamModel,
    ) -> Result<TxSpec, SimError> {
        let mut spec = self.tx_without_entry(function, args, events)?;
        spec.stream_changes = vec![StreamChange::Set {
            stream_id: after.stream_id,
            value: after.to_scval()?,
        }];
        Ok(spec)
    }

    fn act(
        &mut self,
        action: u32,
        id: u64,
        seq: u32,
        now: u64,
    ) -> Result<Option<TxSpec>, SimError> {
        let Some(cur) = self.state.streams.get(&id).cloned() else {
            return Ok(None);
        };
        let mut s = cur.clone();
        let idv = ScVal::U64(id);
        let active = s.status == StreamStatus::Active;
        let linear = s.kind == StreamKind::Linear;
        let spec = match action {
            // withdraw / withdraw_to
            0..=3 => {
                let terminal = now >= s.end_time;
                let allowed = match s.status {
                    StreamStatus::Active | StreamStatus::Cancelled => true,
                    StreamStatus::Paused => terminal,
                    StreamStatus::Completed => false,
                };
                let accrued = match s.status {
                    StreamStatus::Cancelled => s.accrued(s.cancelled_at.unwrap_or(now)),
                    _ => s.accrued(now),
                };
                let amount = accrued - s.withdrawn_amount;
                if !allowed || amount <= 0 {
                    return Ok(None);
                }
                s.withdrawn_amount += amount;
                let to = action == 3;
                let mut events = Vec::new();
                if to {
                    let dest = self.pick_account();
                    events.push((
                        ("wdraw_to", id),
                        map(vec![
                            ("amount", i128v(amount)),
                            ("destination", ScVal::Address(account(dest))),
                            ("recipient", ScVal::Address(account(s.recipient))),
                            ("stream_id", ScVal::U64(id)),
                        ])?,
                    ));
                } else {
                    s.last_withdraw_ledger = seq;
                    events.push((
                        ("withdrew", id),
                        map(vec![
                            ("amount", i128v(amount)),
                            ("recipient", ScVal::Address(account(s.recipient))),
                            ("stream_id", ScVal::U64(id)),
                        ])?,
                    ));
                }
                if s.status != StreamStatus::Cancelled && s.withdrawn_amount == s.deposit_amount {
                    s.status = StreamStatus::Completed;
                    events.push((
                        ("completed", id),
                        vec_val(vec![sym("StreamCompleted")?, ScVal::U64(id)])?,
                    ));
                }
                let f = if to { "withdraw_to" } else { "withdraw" };
                self.tx(f, vec![idv], events, &s)?
            }
            // pause / resume
            4 | 5 => {
                let cooled =
                    s.last_pause_toggle_ledger == 0 || seq >= s.last_pause_toggle_ledger + COOLDOWN;
                if now >= s.end_time || !cooled {
                    return Ok(None);
                }
                match s.status {
                    StreamStatus::Active => {
                        s.status = StreamStatus::Paused;
                        s.paused_at_timestamp = now;
                        s.last_pause_toggle_ledger = seq;
                        let data = map(vec![
                            ("reason", ScVal::String(ScString("Operational".try_into()?))),
                            ("stream_id", ScVal::U64(id)),
                        ])?;
                        self.tx("pause_stream", vec![idv], vec![(("paused", id), data)], &s)?
                    }
                    StreamStatus::Paused => {
                        s.cumulative_paused_duration += now - s.paused_at_timestamp;
                        s.paused_at_timestamp = 0;
                        s.status = StreamStatus::Active;
                        s.last_pause_toggle_ledger = seq;
                        let data = vec_val(vec![sym("Resumed")?, ScVal::U64(id)])?;
                        self.tx(
                            "resume_stream",
                            vec![idv],
                            vec![(("resumed", id), data)],
                            &s,
                        )?
                    }
                    _ => return Ok(None),
                }
            }
            // top up
            6 => {
                if !linear || !matches!(s.status, StreamStatus::Active | StreamStatus::Paused) {
                    return Ok(None);
                }
                let amount = self.rng.gen_range(1..1_000_000_000i128);
                let Some(new_deposit) = s.deposit_amount.checked_add(amount) else {
                    return Ok(None);
                };
                s.deposit_amount = new_deposit;
                let data = map(vec![
                    ("new_deposit_amount", i128v(new_deposit)),
                    ("new_end_time", ScVal::U64(s.end_time)),
                    ("stream_id", ScVal::U64(id)),
                    ("top_up_amount", i128v(amount)),
                ])?;
                self.tx("top_up_stream", vec![idv], vec![(("top_up", id), data)], &s)?
            }
            // rate increase (checkpoints)
            7 => {
                let cooled =
                    s.last_rate_change_ledger == 0 || seq >= s.last_rate_change_ledger + COOLDOWN;
                if !linear || !active || now >= s.end_time || now < s.cliff_time || !cooled {
                    return Ok(None);
                }
                let span = i128::from(s.end_time - s.start_time).max(1);
                let max_rate = s.deposit_amount / span;
                if max_rate <= s.rate_per_second {
                    return Ok(None);
                }
                let new = self.rng.gen_range(s.rate_per_second + 1..=max_rate);
                let old = s.rate_per_second;
                s.checkpointed_amount = s.accrued(now);
                s.checkpointed_at = now;
                s.rate_per_second = new;
                s.last_rate_change_ledger = seq;
                let data = map(vec![
                    ("effective_time", ScVal::U64(now)),
                    ("new_rate_per_second", i128v(new)),
                    ("old_rate_per_second", i128v(old)),
                    ("stream_id", ScVal::U64(id)),
                ])?;
                self.tx(
                    "update_rate_per_second",
                    vec![idv, i128v(new)],
                    vec![(("rate_upd", id), data)],
                    &s,
                )?
            }
            // rate decrease (checkpoints, refunds)
            8 => {
                let cooled =
                    s.last_rate_change_ledger == 0 || seq >= s.last_rate_change_ledger + COOLDOWN;
                if !linear || !active || now >= s.end_time || now < s.cliff_time || !cooled {
                    return Ok(None);
                }
                if s.rate_per_second < 2 {
                    return Ok(None);
                }
                let new = self.rng.gen_range(1..s.rate_per_second);
                let old = s.rate_per_second;
                let cp = s.accrued(now);
                let Some(new_deposit) = i128::from(s.end_time - now)
                    .checked_mul(new)
                    .and_then(|v| v.checked_add(cp))
                else {
                    return Ok(None);
                };
                if new_deposit > s.deposit_amount || new_deposit < s.withdrawn_amount {
                    return Ok(None);
                }
                let refund = s.deposit_amount - new_deposit;
                s.checkpointed_amount = cp;
                s.checkpointed_at = now;
                s.rate_per_second = new;
                s.deposit_amount = new_deposit;
                s.last_rate_change_ledger = seq;
                let data = map(vec![
                    ("checkpointed_amount", i128v(cp)),
                    ("effective_time", ScVal::U64(now)),
                    ("new_rate_per_second", i128v(new)),
                    ("old_rate_per_second", i128v(old)),
                    ("refund_amount", i128v(refund)),
                    ("stream_id", ScVal::U64(id)),
                ])?;
                self.tx(
                    "decrease_rate_per_second",
                    vec![idv, i128v(new)],
                    vec![(("rate_dec", id), data)],
                    &s,
                )?
            }
            // extend end time
            9 => {
                if !linear || !active || s.rate_per_second <= 0 || now >= s.end_time {
                    return Ok(None);
                }
                let max_end = s.start_time as i128 + s.deposit_amount / s.rate_per_second;
                let max_end = u64::try_from(max_end).unwrap_or(u64::MAX);
                if max_end <= s.end_time {
                    return Ok(None);
                }
                let new_end = self
                    .rng
                    .gen_range(s.end_time + 1..=max_end.min(s.end_time + 50_000));
                let old_end = s.end_time;
                s.end_time = new_end;
                let data = map(vec![
                    ("new_end_time", ScVal::U64(new_end)),
                    ("old_end_time", ScVal::U64(old_end)),
                    ("stream_id", ScVal::U64(id)),
                ])?;
                self.tx(
                    "extend_stream_end_time",
                    vec![idv],
                    vec![(("end_ext", id), data)],
                    &s,
                )?
            }
            // shorten end time
            10 => {
                if !linear || !active || now + 2 >= s.end_time || s.checkpointed_at != s.start_time
                {
                    return Ok(None);
                }
                let lo = now.max(s.start_time) + 1;
                if lo >= s.end_time {
                    return Ok(None);
                }
                let new_end = self.rng.gen_range(lo..s.end_time);
                let Some(by_rate) =
                    i128::from(new_end.saturating_sub(s.start_time)).checked_mul(s.rate_per_second)
                else {
                    return Ok(None);
                };
                let new_deposit = by_rate.max(s.accrued(now));
                if new_deposit > s.deposit_amount || new_deposit < s.withdrawn_amount {
                    return Ok(None);
                }
                let refund = s.deposit_amount - new_deposit;
                let old_end = s.end_time;
                s.deposit_amount = new_deposit;
                s.end_time = new_end;
                let data = map(vec![
                    ("new_end_time", ScVal::U64(new_end)),
                    ("old_end_time", ScVal::U64(old_end)),
                    ("refund_amount", i128v(refund)),
                    ("stream_id", ScVal::U64(id)),
                ])?;
                self.tx(
                    "shorten_stream_end_time",
                    vec![idv],
                    vec![(("end_shrt", id), data)],
                    &s,
                )?
            }
            // cancel
            11 => {
                if !matches!(s.status, StreamStatus::Active | StreamStatus::Paused) {
                    return Ok(None);
                }
                s.status = StreamStatus::Cancelled;
                s.cancelled_at = Some(now);
                let data = vec_val(vec![sym("StreamCancelled")?, ScVal::U64(id)])?;
                self.tx(
                    "cancel_stream",
                    vec![idv],
                    vec![(("cancelled", id), data)],
                    &s,
                )?
            }
            // close
            12 => {
                let closable = match s.status {
                    StreamStatus::Completed => true,
                    StreamStatus::Cancelled => {
                        s.accrued(s.cancelled_at.unwrap_or(now)) - s.withdrawn_amount <= 0
                    }
                    _ => false,
                };
                if !closable {
                    return Ok(None);
                }
                let data = vec_val(vec![sym("StreamClosed")?, ScVal::U64(id)])?;
                let mut spec = self.tx(
                    "close_completed_stream",
                    vec![idv],
                    vec![(("closed", id), data)],
                    &s,
                )?;
                spec.stream_changes = vec![StreamChange::Removed { stream_id: id }];
                self.set_stream(id, None);
                return Ok(Some(spec));
            }
            // auto-claim: set, revoke, trigger (ac_trig + wdraw_to, counted once)
            14 | 15 => {
                if !matches!(s.status, StreamStatus::Active | StreamStatus::Paused) {
                    return Ok(None);
                }
                match self.state.auto_claims.get(&id).copied() {
                    None => {
                        let dest = self.pick_account();
                        self.set_auto_claim(id, Some(dest));
                        let data = map(vec![
                            ("destination", ScVal::Address(account(dest))),
                            ("stream_id", ScVal::U64(id)),
                        ])?;
                        return Ok(Some(self.tx_without_entry(
                            "set_auto_claim",
                            vec![idv],
                            vec![(("ac_set", id), data)],
                        )?));
                    }
                    Some(_) if action == 14 => {
                        self.set_auto_claim(id, None);
                        let data = map(vec![("stream_id", ScVal::U64(id))])?;
                        return Ok(Some(self.tx_without_entry(
                            "revoke_auto_claim",
                            vec![idv],
                            vec![(("ac_revoke", id), data)],
                        )?));
                    }
                    Some(dest) => {
                        if s.status != StreamStatus::Active {
                            return Ok(None);
                        }
                        let amount = s.accrued(now) - s.withdrawn_amount;
                        if amount <= 0 {
                            return Ok(None);
                        }
                        s.withdrawn_amount += amount;
                        let mut events = vec![
                            (
                                ("ac_trig", id),
                                map(vec![
                                    ("amount", i128v(amount)),
                                    ("destination", ScVal::Address(account(dest))),
                                    ("stream_id", ScVal::U64(id)),
                                ])?,
                            ),
                            (
                                ("wdraw_to", id),
                                map(vec![
                                    ("amount", i128v(amount)),
                                    ("destination", ScVal::Address(account(dest))),
                                    ("recipient", ScVal::Address(account(s.recipient))),
                                    ("stream_id", ScVal::U64(id)),
                                ])?,
                            ),
                        ];
                        if s.withdrawn_amount >= s.deposit_amount {
                            s.status = StreamStatus::Completed;
                            events.push((
                                ("completed", id),
                                vec_val(vec![sym("StreamCompleted")?, ScVal::U64(id)])?,
                            ));
                        }
                        self.tx("trigger_auto_claim", vec![idv], events, &s)?
                    }
                }
            }
            // clone: a new stream with the source's terms (created + cloned)
            16 => {
                if s.kind == StreamKind::CliffOnly && s.deposit_amount <= 0 {
                    return Ok(None);
                }
                let new_id = self.state.next_id;
                self.state.next_id += 1;
                let duration = s.end_time.saturating_sub(s.start_time);
                let start = now;
                let cliff = start + s.cliff_time.saturating_sub(s.start_time);
                let end = start + duration;
                let deposit = match s.kind {
                    StreamKind::Linear => s.rate_per_second * i128::from(duration),
                    StreamKind::CliffSlope => s.rate_per_second * i128::from(end - cliff),
                    StreamKind::CliffOnly => s.deposit_amount,
                };
                if deposit <= 0 {
                    return Ok(None);
                }
                let c = StreamModel::fresh(
                    new_id,
                    s.sender,
                    s.recipient,
                    s.kind,
                    deposit,
                    s.rate_per_second,
                    [start, cliff, end],
                );
                let created = self.created_data(&c)?;
                let cloned = map(vec![
                    ("cliff_time", ScVal::U64(cliff)),
                    ("deposit_amount", i128v(deposit)),
                    ("end_time", ScVal::U64(end)),
                    ("new_stream_id", ScVal::U64(new_id)),
                    ("rate_per_second", i128v(c.rate_per_second)),
                    ("recipient", ScVal::Address(account(c.recipient))),
                    ("sender", ScVal::Address(account(c.sender))),
                    ("source_stream_id", ScVal::U64(id)),
                    ("start_time", ScVal::U64(start)),
                    ("withdraw_dust_threshold", i128v(0)),
                ])?;
                let spec = self.tx(
                    "clone_stream",
                    vec![idv],
                    vec![(("created", new_id), created), (("cloned", new_id), cloned)],
                    &c,
                )?;
                self.set_stream(new_id, Some(c));
                return Ok(Some(spec));
            }
            // renew a completed stream (auto-renew opted in, no event for that)
            17 => {
                if s.status != StreamStatus::Completed {
                    return Ok(None);
                }
                let new_id = self.state.next_id;
                self.state.next_id += 1;
                let duration = s.end_time.saturating_sub(s.start_time);
                let c = StreamModel::fresh(
                    new_id,
                    s.sender,
                    s.recipient,
                    s.kind,
                    s.deposit_amount,
                    s.rate_per_second,
                    [
                        now,
                        now + s.cliff_time.saturating_sub(s.start_time),
                        now + duration,
                    ],
                );
                let created = self.created_data(&c)?;
                let mut spec = self.tx(
                    "renew_stream",
                    vec![idv],
                    vec![(("created", new_id), created)],
                    &c,
                )?;
                spec.events.push(SimEvent {
                    contract: self.contract,
                    topics: vec![sym("renewed")?, ScVal::U64(id), ScVal::U64(new_id)],
                    data: map(vec![
                        ("new_stream_id", ScVal::U64(new_id)),
                        ("old_stream_id", ScVal::U64(id)),
                    ])?,
                });
                self.set_stream(new_id, Some(c));
                return Ok(Some(spec));
            }
            // delegate part of the recipient's share: parent re-checkpointed, child created
            18 => {
                if !linear
                    || !active
                    || now >= s.end_time
                    || now < s.cliff_time
                    || s.rate_per_second < 2
                {
                    return Ok(None);
                }
                let bps: u32 = self.rng.gen_range(1_000..5_000);
                let child_rate = (s.rate_per_second * i128::from(bps) / 10_000).max(1);
                let new_rate = s.rate_per_second - child_rate;
                if new_rate < 1 {
                    return Ok(None);
                }
                let acc = s.accrued(now);
                let Some(new_parent_deposit) = i128::from(s.end_time - now)
                    .checked_mul(new_rate)
                    .and_then(|v| v.checked_add(acc))
                else {
                    return Ok(None);
                };
                let child_deposit = s.deposit_amount - new_parent_deposit;
                if child_deposit <= 0 || new_parent_deposit < s.withdrawn_amount {
                    return Ok(None);
                }
                let child_id = self.state.next_id;
                self.state.next_id += 1;
                let delegatee = self.pick_other(s.sender);
                let child = StreamModel {
                    delegation_depth: s.delegation_depth + 1,
                    parent_stream_id: Some(id),
                    ..StreamModel::fresh(
                        child_id,
                        s.sender,
                        delegatee,
                        s.kind,
                        child_deposit,
                        child_rate,
                        [now, s.cliff_time.max(now), s.end_time],
                    )
                };
                s.checkpointed_amount = acc;
                s.checkpointed_at = now;
                s.rate_per_second = new_rate;
                s.deposit_amount = new_parent_deposit;
                let data = map(vec![
                    ("child_rate", i128v(child_rate)),
                    ("child_stream_id", ScVal::U64(child_id)),
                    ("delegatee", ScVal::Address(account(delegatee))),
                    ("delegator", ScVal::Address(account(s.recipient))),
                    ("new_parent_rate", i128v(new_rate)),
                    ("parent_stream_id", ScVal::U64(id)),
                    ("share_bps", ScVal::U32(bps)),
                ])?;
                let mut spec = self.tx(
                    "delegate_recipient_share",
                    vec![idv],
                    vec![(("del_share", id), data)],
                    &s,
                )?;
                spec.stream_changes.push(StreamChange::Set {
                    stream_id: child_id,
                    value: child.to_scval()?,
                });
                self.set_stream(child_id, Some(child));
                spec
            }
            // keeper cancel, 7 days after the end: pays out without raising withdrawn_amount
            19 => {
                if !matches!(s.status, StreamStatus::Active | StreamStatus::Paused)
                    || now < s.end_time + 7 * 86_400
                {
                    return Ok(None);
                }
                let acc = s.accrued(now);
                let recipient_amount = acc - s.withdrawn_amount;
                let refund = s.deposit_amount - acc;
                let fee = refund / 200;
                s.status = StreamStatus::Cancelled;
                s.cancelled_at = Some(now);
                let keeper = self.pick_account();
                let data = map(vec![
                    ("keeper", ScVal::Address(account(keeper))),
                    ("keeper_fee", i128v(fee)),
                    ("recipient_amount", i128v(recipient_amount)),
                    ("sender_refund", i128v(refund - fee)),
                    ("stream_id", ScVal::U64(id)),
                ])?;
                self.tx(
                    "keeper_cancel",
                    vec![idv],
                    vec![(("kp_cncl", id), data)],
                    &s,
                )?
            }
            // recipient change, claim ownership, decommission flag
            _ => {
                if !matches!(s.status, StreamStatus::Active | StreamStatus::Paused) {
                    return Ok(None);
                }
                match self.rng.gen_range(0..3) {
                    0 => {
                        let new = self.pick_other(s.sender);
                        let old = s.recipient;
                        s.recipient = new;
                        let data = map(vec![
                            ("new_recipient", ScVal::Address(account(new))),
                            ("old_recipient", ScVal::Address(account(old))),
                            ("stream_id", ScVal::U64(id)),
                        ])?;
                        self.tx(
                            "accept_recipient_update",
                            vec![idv],
                            vec![(("recp_upd", id), data)],
                            &s,
                        )?
                    }
                    1 => {
                        let new = self.pick_account();
                        let old = s.claim_owner;
                        s.claim_owner = Some(new);
                        let data = map(vec![
                            ("new_owner", ScVal::Address(account(new))),
                            (
                                "old_owner",
                                old.map_or(ScVal::Void, |o| ScVal::Address(account(o))),
                            ),
                            ("stream_id", ScVal::U64(id)),
                        ])?;
                        self.tx(
                            "transfer_claim_ownership",
                            vec![idv],
                            vec![(("claim_own", id), data)],
                            &s,
                        )?
                    }
                    _ => {
                        let flag = !s.decommissioned.unwrap_or(false);
                        s.decommissioned = Some(flag);
                        let data = map(vec![
                            ("decommissioned", ScVal::Bool(flag)),
                            ("stream_id", ScVal::U64(id)),
                        ])?;
                        self.tx(
                            "set_stream_decommissioned",
                            vec![idv],
                            vec![(("decomm", id), data)],
                            &s,
                        )?
                    }
                }
            }
        };
        self.set_stream(id, Some(s));
        Ok(Some(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, ledgers: u32) -> (Generator, SimChain) {
        let mut g = Generator::new(GenConfig {
            seed,
            txs_per_ledger: 6,
            target_streams: 40,
            ..GenConfig::default()
        });
        let mut c = g.empty_chain();
        for _ in 0..ledgers {
            g.next_ledger(&mut c).unwrap();
        }
        (g, c)
    }

    #[test]
    fn deterministic_from_the_seed() {
        let (_, a) = run(7, 200);
        let (_, b) = run(7, 200);
        let (_, c) = run(8, 200);
        assert_eq!(a.tip().unwrap().hash, b.tip().unwrap().hash);
        assert_ne!(a.tip().unwrap().hash, c.tip().unwrap().hash);
    }

    #[test]
    fn streams_stay_within_the_contract_rules_and_every_topic_appears() {
        let (g, c) = run(3, 2_000);
        let mut topics = std::collections::BTreeSet::new();
        for l in c.ledgers() {
            for t in &l.txs {
                for e in t.contract_events().unwrap() {
                    let stellar_xdr::ContractEventBody::V0(body) = &e.body;
                    if let ScVal::Symbol(s) = &body.topics[0] {
                        topics.insert(s.to_string());
                    }
                }
            }
        }
        for t in [
            "created",
            "withdrew",
            "wdraw_to",
            "completed",
            "paused",
            "resumed",
            "top_up",
            "rate_upd",
            "rate_dec",
            "end_ext",
            "end_shrt",
            "cancelled",
            "closed",
            "recp_upd",
            "claim_own",
            "decomm",
        ] {
            assert!(topics.contains(t), "{t} never generated: {topics:?}");
        }
        for s in g.streams().values() {
            assert!(s.withdrawn_amount >= 0 && s.withdrawn_amount <= s.deposit_amount);
            let now = c.tip().unwrap().close_time;
            assert!(s.accrued(now) <= s.deposit_amount);
            if s.status == StreamStatus::Completed {
                assert_eq!(s.withdrawn_amount, s.deposit_amount);
            }
        }
        // The chain's stream entries are exactly the generator's live streams.
        assert_eq!(
            c.streams().keys().collect::<Vec<_>>(),
            g.streams().keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_fork_replaces_the_last_ledgers_with_other_activity() {
        let (mut g, mut c) = run(5, 100);
        let before: Vec<[u8; 32]> = c.ledgers().iter().map(|l| l.hash).collect();
        g.fork(&mut c, 10).unwrap();
        assert_eq!(c.ledgers().len(), 100);
        for (i, l) in c.ledgers().iter().enumerate() {
            assert_eq!(l.hash == before[i], i < 90, "ledger {i}");
        }
        for w in c.ledgers().windows(2) {
            assert_eq!(w[1].header.previous_ledger_hash.0, w[0].hash);
        }
        assert_eq!(
            c.streams().keys().collect::<Vec<_>>(),
            g.streams().keys().collect::<Vec<_>>()
        );
    }
}
