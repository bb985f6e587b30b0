//! Secrets and signatures.
//!
//! An endpoint's secret is one string, `whsec_<base64 of 32 random bytes>`, shown once. Each
//! attempt is signed twice with it:
//!
//! * `x-fluxora-signature` (Fluxora's contract, `client-contracts.md` §3): lowercase hex of
//!   `HMAC-SHA256(key = the whole secret string as UTF-8, msg = "<timestamp>.<raw body>")`, the key
//!   Fluxora's verifier takes from its configuration as is;
//! * `webhook-signature` (Standard Webhooks): `v1,<base64 HMAC-SHA256(key = base64-decoded part
//!   after "whsec_", msg = "<id>.<timestamp>.<raw body>")>`, as Standard Webhooks and Svix
//!   libraries derive the key from the same string.
//!
//! So a consumer of either kind verifies with the secret exactly as shown. While a rotated-out
//! secret is in its grace window, `webhook-signature` lists both signatures (space-separated, as
//! the standard allows) and the previous secret's Fluxora signature goes in
//! `x-fluxora-signature-previous` (the main header keeps one signature, by the current secret).

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every generated secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Header names of an attempt.
pub mod headers {
    pub const DELIVERY_ID: &str = "x-fluxora-delivery-id";
    pub const TIMESTAMP: &str = "x-fluxora-timestamp";
    pub const SIGNATURE: &str = "x-fluxora-signature";
    /// Fluxora signature by the previous secret, during a rotation's grace window.
    pub const SIGNATURE_PREVIOUS: &str = "x-fluxora-signature-previous";
    pub const EVENT: &str = "x-fluxora-event";
    /// 1 for the first attempt of a delivery, 2 for the first retry, …
    pub const ATTEMPT: &str = "x-fluxora-attempt";
    pub const WEBHOOK_ID: &str = "webhook-id";
    pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
    pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
}

/// A new random secret, `whsec_` + base64 of 32 bytes from the OS.
pub fn generate_secret() -> Secret {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    Secret::new(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// The bytes Fluxora signs: `"<timestamp>." + raw body`.
pub fn signing_payload(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + 1 + body.len());
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// `x-fluxora-signature`: lowercase hex HMAC-SHA256 keyed with the secret string's UTF-8 bytes.
pub fn fluxora_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    hex::encode(hmac(secret.as_bytes(), &[timestamp.as_bytes(), b".", body]))
}

/// The Standard Webhooks key of a secret: the base64-decoded part after `whsec_` (the whole
/// string when it has no prefix). `None` when that is not base64.
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// One Standard Webhooks signature, `v1,<base64>`.
pub fn standard_signature(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = hmac(
        key,
        &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

/// The signature headers of one attempt: `(name, value)` pairs.
pub fn signature_headers(
    delivery_id: &str,
    timestamp: &str,
    body: &[u8],
    secret: &Secret,
    previous: Option<&Secret>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(3);
    out.push((
        headers::SIGNATURE,
        fluxora_signature(secret.expose(), timestamp, body),
    ));
    let mut standard = Vec::with_capacity(2);
    for s in std::iter::once(secret).chain(previous) {
        if let Some(key) = standard_key(s.expose()) {
            standard.push(standard_signature(&key, delivery_id, timestamp, body));
        }
    }
    if let Some(p) = previous {
        out.push((
            headers::SIGNATURE_PREVIOUS,
            fluxora_signature(p.expose(), timestamp, body),
        ));
    }
    if !standard.is_empty() {
        out.push((headers::WEBHOOK_SIGNATURE, standard.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fluxora_published_vector() {
        // client-contracts.md §3, from Fluxora's own tests.
        assert_eq!(
            fluxora_signature("topsecret", "1710000000", br#"{"event":"stream.updated"}"#),
            "925006549b879c8d9e91c10a153254fb4b6e2241820a1b072e28aa2fa8caeb79"
        );
        assert_eq!(
            signing_payload("1710000000", b"{\"ok\":true}\n"),
            b"1710000000.{\"ok\":true}\n".to_vec()
        );
    }

    #[test]
    fn standard_webhooks_vector() {
        // The example of the Standard Webhooks specification.
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            standard_signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_prefixed_base64_and_random() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(standard_key(a.expose()).unwrap().len(), 32);
        assert_eq!(format!("{a:?}"), "Secret(***)");
    }

    #[test]
    fn both_signatures_during_rotation() {
        let cur = generate_secret();
        let prev = generate_secret();
        let h = signature_headers("dlv_1", "1710000000", b"{}", &cur, Some(&prev));
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get(headers::SIGNATURE).unwrap(),
            fluxora_signature(cur.expose(), "1710000000", b"{}")
        );
        assert_eq!(
            get(headers::SIGNATURE_PREVIOUS).unwrap(),
            fluxora_signature(prev.expose(), "1710000000", b"{}")
        );
        assert_eq!(
            get(headers::WEBHOOK_SIGNATURE).unwrap().split(' ').count(),
            2
        );
        let h = signature_headers("dlv_1", "1710000000", b"{}", &cur, None);
        assert_eq!(h.len(), 2);
    }
}
