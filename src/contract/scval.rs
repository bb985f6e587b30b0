//! Small, allocation-light helpers to read `ScVal`s the way soroban-sdk 21 encodes them
//! (see `spec/contract.md` §1): structs are maps keyed by field-name symbols, looked up by key.

use serde::{Serialize, Serializer};
use stellar_xdr::{ScAddress, ScMap, ScVal};

/// Raw `i128` token amount; serialised as a decimal string so no consumer ever sees a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct I128(pub i128);

impl Serialize for I128 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Opaque bytes (`Bytes`, `BytesN<32>`), serialised as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

/// `Map<Bytes, Bytes>` (stream metadata), in on-wire order; serialised as `[[key_hex, val_hex], …]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Metadata(pub Vec<(HexBytes, HexBytes)>);

/// A Stellar address rendered as its strkey (`G…`, `C…`, `M…`, …).
pub type Address = String;

/// Human name of an `ScVal` arm, for error messages.
pub fn kind(v: &ScVal) -> &'static str {
    v.name()
}

/// Conversion of one `ScVal` into a Rust value; the error is a short description of the mismatch.
pub trait FromScVal: Sized {
    fn from_scval(v: &ScVal) -> Result<Self, String>;
}

fn mismatch(expected: &str, v: &ScVal) -> String {
    format!("expected {expected}, found {}", kind(v))
}

impl FromScVal for u64 {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match v {
            ScVal::U64(x) => Ok(*x),
            other => Err(mismatch("U64", other)),
        }
    }
}

impl FromScVal for u32 {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match v {
            ScVal::U32(x) => Ok(*x),
            other => Err(mismatch("U32", other)),
        }
    }
}

impl FromScVal for bool {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match v {
            ScVal::Bool(x) => Ok(*x),
            other => Err(mismatch("Bool", other)),
        }
    }
}

impl FromScVal for I128 {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match v {
            ScVal::I128(p) => Ok(I128((i128::from(p.hi) << 64) | i128::from(p.lo))),
            other => Err(mismatch("I128", other)),
        }
    }
}

/// Strings (`soroban_sdk::String`) must be UTF-8.
impl FromScVal for String {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match v {
            ScVal::String(s) => {
                s.0.to_utf8_string()
                    .map_err(|_| "String is not valid UTF-8".to_string())
            }
            other => Err(mismatch("String", other)),
        }
    }
}

impl FromScVal for HexBytes {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match v {
            ScVal::Bytes(b) => Ok(HexBytes(b.0.as_vec().clone())),
            other => Err(mismatch("Bytes", other)),
        }
    }
}

impl FromScVal for Metadata {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        let m = as_map(v)?;
        let mut out = Vec::with_capacity(m.0.len());
        for e in m.0.iter() {
            let k = HexBytes::from_scval(&e.key).map_err(|e| format!("metadata key: {e}"))?;
            let val = HexBytes::from_scval(&e.val).map_err(|e| format!("metadata value: {e}"))?;
            out.push((k, val));
        }
        Ok(Metadata(out))
    }
}

/// `Option<T>`: `Void` is `None`.
impl<T: FromScVal> FromScVal for Option<T> {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match v {
            ScVal::Void => Ok(None),
            other => T::from_scval(other).map(Some),
        }
    }
}

/// Address wrapper so `String` (soroban String) and addresses stay distinct in the type system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Addr(pub Address);

/// Addresses rendered lately, per thread: the same few senders, recipients and contracts recur
/// in every ledger, and rendering a strkey (base32 and a checksum) costs more than a lookup.
const ADDRESS_CACHE: usize = 4096;

thread_local! {
    static ADDRESSES: std::cell::RefCell<std::collections::HashMap<ScAddress, String>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The strkey of an address (`G…`, `C…`, `M…`, …), as `ScAddress`'s `Display` renders it.
pub fn render_address(a: &ScAddress) -> String {
    ADDRESSES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(s) = cache.get(a) {
            return s.clone();
        }
        let s = a.to_string();
        if cache.len() >= ADDRESS_CACHE {
            cache.clear();
        }
        cache.insert(a.clone(), s.clone());
        s
    })
}

impl FromScVal for Addr {
    fn from_scval(v: &ScVal) -> Result<Self, String> {
        match v {
            ScVal::Address(a) => Ok(Addr(render_address(a))),
            other => Err(mismatch("Address", other)),
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The map inside `ScVal::Map(Some(..))`.
pub fn as_map(v: &ScVal) -> Result<&ScMap, String> {
    match v {
        ScVal::Map(Some(m)) => Ok(m),
        ScVal::Map(None) => Err("expected Map, found an absent map".into()),
        other => Err(mismatch("Map", other)),
    }
}

/// The elements of `ScVal::Vec(Some(..))`.
pub fn as_vec(v: &ScVal) -> Result<&[ScVal], String> {
    match v {
        ScVal::Vec(Some(items)) => Ok(items.0.as_slice()),
        ScVal::Vec(None) => Err("expected Vec, found an absent vec".into()),
        other => Err(mismatch("Vec", other)),
    }
}

/// The text of a `Symbol` (symbols are `[a-zA-Z0-9_]`, so never lossy in practice).
pub fn as_symbol(v: &ScVal) -> Option<&[u8]> {
    match v {
        ScVal::Symbol(s) => Some(s.0.as_slice()),
        _ => None,
    }
}

/// Look a struct field up by its symbol key (never by position).
pub fn map_get<'a>(m: &'a ScMap, key: &str) -> Option<&'a ScVal> {
    m.0.iter()
        .find(|e| as_symbol(&e.key) == Some(key.as_bytes()))
        .map(|e| &e.val)
}

/// Required field of type `T`.
pub fn field<T: FromScVal>(m: &ScMap, key: &str) -> Result<T, String> {
    let v = map_get(m, key).ok_or_else(|| format!("missing field `{key}`"))?;
    T::from_scval(v).map_err(|e| format!("field `{key}`: {e}"))
}

/// Like [`field`], but tries entry `*hint` first (maps are sorted by key, and callers ask for
/// fields in that order), falling back to a full lookup; the key is always checked.
pub fn field_hinted<T: FromScVal>(m: &ScMap, key: &str, hint: &mut usize) -> Result<T, String> {
    let v = match m.0.get(*hint) {
        Some(e) if as_symbol(&e.key) == Some(key.as_bytes()) => {
            *hint += 1;
            &e.val
        }
        _ => map_get(m, key).ok_or_else(|| format!("missing field `{key}`"))?,
    };
    T::from_scval(v).map_err(|e| format!("field `{key}`: {e}"))
}

/// Element `i` of a tuple (`Vec`) of type `T`.
pub fn elem<T: FromScVal>(items: &[ScVal], i: usize, what: &str) -> Result<T, String> {
    let v = items
        .get(i)
        .ok_or_else(|| format!("missing element {i} ({what})"))?;
    T::from_scval(v).map_err(|e| format!("element {i} ({what}): {e}"))
}

/// Declares a `#[contracttype]` struct decoded from a map by field name.
macro_rules! map_struct {
    ($(#[$m:meta])* $name:ident { $($f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
        pub struct $name { $(pub $f: $t),* }
        impl $name {
            /// Decode from the contract's `ScVal::Map`, by field name.
            pub fn from_scval(v: &stellar_xdr::ScVal) -> Result<Self, String> {
                let m = $crate::contract::scval::as_map(v)?;
                let mut hint = 0usize;
                Ok(Self { $($f: $crate::contract::scval::field_hinted::<$t>(m, stringify!($f), &mut hint)?),* })
            }

            /// Reads the value in place from XDR in its canonical shape (the fields in
            /// declaration order, see [`crate::contract::xdr`]); `None` when it is not exactly
            /// that shape (then decode it with `from_scval`, which gives the same result or
            /// says why not).
            pub fn from_xdr_canonical(c: &mut $crate::contract::xdr::Canon<'_>) -> Option<Self> {
                c.map_header([$(stringify!($f)),*].len())?;
                Some(Self {
                    $($f: {
                        c.key(stringify!($f))?;
                        <$t as $crate::contract::xdr::Canonical>::canon(c)?
                    }),*
                })
            }
        }
    };
}
pub(crate) use map_struct;

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{Int128Parts, ScMapEntry, ScSymbol};

    fn sym(s: &str) -> ScVal {
        ScVal::Symbol(ScSymbol(s.try_into().unwrap()))
    }

    #[test]
    fn i128_from_hi_lo() {
        for x in [
            0i128,
            1,
            -1,
            i128::MAX,
            i128::MIN,
            10_000_000_000,
            -(1 << 64),
        ] {
            let v = ScVal::I128(Int128Parts {
                hi: (x >> 64) as i64,
                lo: x as u64,
            });
            assert_eq!(I128::from_scval(&v).unwrap(), I128(x));
        }
        assert_eq!(
            serde_json::to_string(&I128(i128::MIN)).unwrap(),
            format!("\"{}\"", i128::MIN)
        );
    }

    #[test]
    fn lookup_by_key_not_position() {
        let m = ScMap(
            vec![
                ScMapEntry {
                    key: sym("b"),
                    val: ScVal::U64(2),
                },
                ScMapEntry {
                    key: sym("a"),
                    val: ScVal::U64(1),
                },
            ]
            .try_into()
            .unwrap(),
        );
        assert_eq!(field::<u64>(&m, "a").unwrap(), 1);
        assert_eq!(field::<u64>(&m, "b").unwrap(), 2);
        assert!(field::<u64>(&m, "c")
            .unwrap_err()
            .contains("missing field `c`"));
        assert!(field::<u32>(&m, "a").unwrap_err().contains("expected U32"));
        assert_eq!(Option::<u64>::from_scval(&ScVal::Void).unwrap(), None);
        // The sorted-order hint never trusts position: out-of-order maps still decode by key.
        let mut hint = 0;
        assert_eq!(field_hinted::<u64>(&m, "a", &mut hint).unwrap(), 1);
        assert_eq!(field_hinted::<u64>(&m, "b", &mut hint).unwrap(), 2);
        let mut hint = 0;
        assert!(field_hinted::<u64>(&m, "z", &mut hint).is_err());
    }
}
