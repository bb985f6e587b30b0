//! Opaque keyset cursors for stream pages: base64url of `v1.<last id>.<filter digest>.<check>`.
//! The check detects a tampered or truncated cursor; the filter digest binds a cursor to the
//! filters it was issued for (a cursor from another query is refused rather than misread).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::ApiError;

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The digest of a query's filters.
pub fn filter_digest(filters: &[Option<&str>]) -> String {
    let parts: Vec<&str> = filters.iter().map(|f| f.unwrap_or("")).collect();
    digest(&parts)
}

/// A cursor continuing after stream `last_id` for the filters with digest `filters`.
pub fn encode(last_id: u64, filters: &str) -> String {
    let body = format!("v1.{last_id}.{filters}");
    let check = digest(&["fluxora-stream-cursor", &body]);
    URL_SAFE_NO_PAD.encode(format!("{body}.{check}"))
}

/// The stream id a cursor continues after; 400 `VALIDATION_ERROR` naming `cursor` otherwise.
pub fn decode(cursor: &str, filters: &str) -> Result<u64, ApiError> {
    let bad = |why: &str| ApiError::validation("cursor", why.to_string());
    let raw = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| bad("is not a cursor issued by this API (not base64url)"))?;
    let text = String::from_utf8(raw).map_err(|_| bad("is not a cursor issued by this API"))?;
    let (body, check) = text
        .rsplit_once('.')
        .ok_or_else(|| bad("is not a cursor issued by this API"))?;
    if digest(&["fluxora-stream-cursor", body]) != check {
        return Err(bad("was altered or truncated"));
    }
    let mut parts = body.split('.');
    let (Some("v1"), Some(id), Some(f), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("has an unknown version"));
    };
    if f != filters {
        return Err(bad(
            "belongs to a query with other filters (status, sender, recipient)",
        ));
    }
    id.parse::<u64>()
        .map_err(|_| bad("is not a cursor issued by this API"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_tampering_is_caught() {
        let f = filter_digest(&[Some("active"), None, None]);
        let c = encode(42, &f);
        assert_eq!(decode(&c, &f).unwrap(), 42);
        // Another query's filters.
        let other = filter_digest(&[None, None, None]);
        assert!(decode(&c, &other).is_err());
        // Flip one character.
        let mut b = c.clone().into_bytes();
        b[3] = if b[3] == b'A' { b'B' } else { b'A' };
        assert!(decode(&String::from_utf8(b).unwrap(), &f).is_err());
        assert!(decode("not*base64", &f).is_err());
        assert!(decode("", &f).is_err());
        // A forged body with a stale check.
        let forged = URL_SAFE_NO_PAD.encode(format!("v1.7.{f}.0000000000000000"));
        assert!(decode(&forged, &f).is_err());
    }
}
