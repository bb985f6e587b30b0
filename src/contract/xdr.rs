//! Reading the contract's structs straight from XDR bytes, without building `ScVal` trees.
//!
//! soroban-sdk encodes a `#[contracttype]` struct as `ScVal::Map` with one entry per field, keyed
//! by the field name's symbol, in field-name order. [`Canon`] reads exactly that shape (and each
//! field's usual type) in place; anything else (another key order, an extra field, an unexpected
//! type, a non-canonical encoding) makes it give up with `None`, and the caller decodes the value
//! with `stellar-xdr` and [`FromScVal`](super::scval::FromScVal) instead. So a value [`Canon`]
//! accepts is valid XDR that `stellar-xdr` decodes, re-encodes to the same bytes, and that
//! `from_scval` maps to the very same struct.
//!
//! Depth: the shapes read here nest at most [`CANON_DEPTH`] XDR levels; callers only use
//! [`Canon`] where at least that much depth is left under their [`Limits`], and account the bytes
//! it consumed against their length limit.

use stellar_xdr::{Limited, Limits, ReadXdr, ScAddress, ScVal, ScValType};

use super::scval::{render_address, Addr, FromScVal, HexBytes, I128};

/// XDR depth a canonical read may use, counted from the value (generous: the deepest shape,
/// stream metadata, uses 14).
pub const CANON_DEPTH: u32 = 32;

/// Depth given to the `stellar-xdr` reads made from inside a canonical read.
const INNER_DEPTH: u32 = 16;

/// A read position in XDR bytes.
#[derive(Debug, Clone)]
pub struct Canon<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Canon<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Canon { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_be_bytes(a))
    }

    fn disc(&mut self, t: ScValType) -> Option<()> {
        (self.u32()? == t as u32).then_some(())
    }

    /// The next `ScValType` without consuming it.
    fn peek_disc(&self) -> Option<u32> {
        let b = self.buf.get(self.pos..self.pos.checked_add(4)?)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Variable-length opaque of at most `max` bytes, with zero padding.
    fn opaque(&mut self, max: u32) -> Option<&'a [u8]> {
        let len = self.u32()?;
        if len > max {
            return None;
        }
        let data = self.take(len as usize)?;
        let pad = self.take((4 - (len as usize % 4)) % 4)?;
        pad.iter().all(|b| *b == 0).then_some(data)
    }

    /// `Map(Some(m))` with exactly `n` entries.
    pub fn map_header(&mut self, n: usize) -> Option<()> {
        self.disc(ScValType::Map)?;
        (self.u32()? == 1).then_some(())?;
        (self.u32()? as usize == n).then_some(())
    }

    /// A map key: `Symbol(name)`.
    pub fn key(&mut self, name: &str) -> Option<()> {
        (self.symbol()? == name.as_bytes()).then_some(())
    }

    /// A `Symbol`'s bytes.
    pub fn symbol(&mut self) -> Option<&'a [u8]> {
        self.disc(ScValType::Symbol)?;
        self.opaque(32)
    }

    /// `Vec(Some(v))` with exactly `n` elements.
    pub fn vec_header(&mut self, n: usize) -> Option<()> {
        self.disc(ScValType::Vec)?;
        (self.u32()? == 1).then_some(())?;
        (self.u32()? as usize == n).then_some(())
    }

    /// Skips one scalar `ScVal` (symbol, integer, bool, void, address) in canonical form;
    /// `None` for any other kind.
    pub fn scalar(&mut self) -> Option<()> {
        let d = self.peek_disc()?;
        match d {
            x if x == ScValType::Symbol as u32 => self.symbol().map(drop),
            x if x == ScValType::U64 as u32 || x == ScValType::I64 as u32 => {
                self.u32()?;
                self.u64().map(drop)
            }
            x if x == ScValType::U32 as u32 || x == ScValType::I32 as u32 => {
                self.u32()?;
                self.u32().map(drop)
            }
            x if x == ScValType::I128 as u32 || x == ScValType::U128 as u32 => {
                self.u32()?;
                self.u64()?;
                self.u64().map(drop)
            }
            x if x == ScValType::Bool as u32 => bool::canon(self).map(drop),
            x if x == ScValType::Void as u32 => self.u32().map(drop),
            x if x == ScValType::Address as u32 => {
                self.u32()?;
                self.xdr::<ScAddress>().map(drop)
            }
            _ => None,
        }
    }

    /// One value read by `stellar-xdr` (with a bounded depth), then converted by `FromScVal`.
    fn generic<T: FromScVal>(&mut self) -> Option<T> {
        let v: ScVal = self.xdr()?;
        T::from_scval(&v).ok()
    }

    /// A value of XDR type `T` read by `stellar-xdr` (with a bounded depth).
    fn xdr<T: ReadXdr>(&mut self) -> Option<T> {
        let rest = self.buf.get(self.pos..)?;
        let mut r = Limited::new(
            rest,
            Limits {
                depth: INNER_DEPTH,
                len: rest.len(),
            },
        );
        let v = T::read_xdr(&mut r).ok()?;
        self.pos += rest.len() - r.inner.len();
        Some(v)
    }
}

/// A field type [`Canon`] can read in place. The default reads the value with `stellar-xdr` and
/// converts it with [`FromScVal`], so every field type works; the common ones are read in place.
pub trait Canonical: FromScVal {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        c.generic()
    }
}

impl Canonical for u64 {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        c.disc(ScValType::U64)?;
        c.u64()
    }
}

impl Canonical for u32 {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        c.disc(ScValType::U32)?;
        c.u32()
    }
}

impl Canonical for I128 {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        c.disc(ScValType::I128)?;
        let hi = c.u64()? as i64;
        let lo = c.u64()?;
        Some(I128((i128::from(hi) << 64) | i128::from(lo)))
    }
}

impl Canonical for bool {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        c.disc(ScValType::Bool)?;
        // `stellar-xdr` reads any other number as `false`; only 0 and 1 are canonical.
        match c.u32()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl Canonical for Addr {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        c.disc(ScValType::Address)?;
        let a: ScAddress = c.xdr()?;
        Some(Addr(render_address(&a)))
    }
}

impl Canonical for HexBytes {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        c.disc(ScValType::Bytes)?;
        Some(HexBytes(c.opaque(u32::MAX)?.to_vec()))
    }
}

impl Canonical for String {}
impl Canonical for super::scval::Metadata {}

impl<T: Canonical> Canonical for Option<T> {
    fn canon(c: &mut Canon<'_>) -> Option<Self> {
        if c.peek_disc()? == ScValType::Void as u32 {
            c.u32()?;
            return Some(None);
        }
        T::canon(c).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use stellar_xdr::{ContractEventBody, Limits, WriteXdr};

    use super::*;
    use crate::contract::events::STREAM_TOPICS;
    use crate::contract::{ContractEvent, StreamEntry};
    use crate::sim::generator::{GenConfig, Generator};
    use crate::sim::{scenario, MetaFormat, SimChain, StreamChange};

    fn chains() -> Vec<SimChain> {
        let mut out = Vec::new();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract-oracle");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "json") {
                out.push(
                    scenario::load(&path, "p", MetaFormat::V4InLcmV2)
                        .unwrap()
                        .chain,
                );
            }
        }
        let mut g = Generator::new(GenConfig {
            seed: 6,
            txs_per_ledger: 10,
            target_streams: 50,
            ..GenConfig::default()
        });
        let mut chain = g.empty_chain();
        for _ in 0..300 {
            g.next_ledger(&mut chain).unwrap();
        }
        out.push(chain);
        out
    }

    /// The contract's own events and Stream values (the oracle fixtures) and the generator's all
    /// take the in-place path, and it gives what decoding the `ScVal`s gives.
    #[test]
    fn contract_values_read_in_place() {
        let (mut events, mut entries) = (0, 0);
        for chain in chains() {
            for l in chain.ledgers() {
                for t in &l.txs {
                    for e in t.contract_events().unwrap() {
                        let ContractEventBody::V0(body) = e.body;
                        let topics: Vec<ScVal> = body.topics.to_vec();
                        let want = ContractEvent::decode(&topics, &body.data);
                        let raw: Vec<Vec<u8>> = topics
                            .iter()
                            .map(|t| t.to_xdr(Limits::none()).unwrap())
                            .collect();
                        let raw_refs: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
                        let mut data = body.data.to_xdr(Limits::none()).unwrap();
                        let len = data.len();
                        data.extend([1, 2, 3, 4]); // what follows is not looked at
                        let got = ContractEvent::decode_canonical(&raw_refs, &data);
                        if STREAM_TOPICS.contains(&want.type_name()) {
                            assert_eq!(got, Some((want, len)));
                            events += 1;
                        } else {
                            assert_eq!(got, None);
                        }
                    }
                    for c in t.replay_spec().unwrap().stream_changes {
                        let StreamChange::Set { value, .. } = c else {
                            continue;
                        };
                        let bytes = value.to_xdr(Limits::none()).unwrap();
                        let mut k = Canon::new(&bytes);
                        let got = StreamEntry::from_xdr_canonical(&mut k).unwrap();
                        assert_eq!(k.pos(), bytes.len());
                        assert_eq!(got, StreamEntry::from_scval(&value).unwrap());
                        assert_eq!(StreamEntry::from_xdr(&bytes).unwrap(), got);
                        entries += 1;
                    }
                }
            }
        }
        assert!(events > 1_000 && entries > 1_000, "{events} {entries}");
    }

    /// Damaged Stream values: whatever the in-place read accepts decodes to the same entry
    /// through `stellar-xdr`, and re-encodes to the same bytes.
    #[test]
    fn damaged_stream_values() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let chain = chains().pop().unwrap();
        let values: Vec<Vec<u8>> = chain
            .streams()
            .values()
            .take(20)
            .map(|v| v.to_vec())
            .collect();
        let mut runner = TestRunner::new(Config::with_cases(2_000));
        runner
            .run(
                &(
                    0..values.len(),
                    proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..3),
                ),
                |(i, edits)| {
                    let mut b = values[i].clone();
                    for (at, v) in &edits {
                        let j = at.index(b.len());
                        b[j] = *v;
                    }
                    let mut k = Canon::new(&b);
                    if let Some(e) = StreamEntry::from_xdr_canonical(&mut k) {
                        let v = ScVal::from_xdr(&b[..k.pos()], Limits::none());
                        prop_assert!(v.is_ok());
                        let v = v.unwrap();
                        prop_assert_eq!(v.to_xdr(Limits::none()).unwrap(), b[..k.pos()].to_vec());
                        prop_assert_eq!(StreamEntry::from_scval(&v), Ok(e));
                    }
                    Ok(())
                },
            )
            .unwrap();
    }
}
