//! Consumer-side verification of a Fluxora webhook (`client-contracts.md` §3): the rules and
//! result codes of Fluxora's reference verifier, in its check order.
//!
//! ```
//! use fluxora::webhooks::verify::{verify, VerifyInput, VerifyCode};
//! use fluxora::webhooks::signing::fluxora_signature;
//!
//! let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
//! let body = br#"{"id":"0000000000000000001-0000000000","type":"stream.updated"}"#;
//! let sig = fluxora_signature(secret, "1710000000", body);
//! let r = verify(&VerifyInput {
//!     secret: Some(secret),
//!     delivery_id: Some("dlv_1"),
//!     timestamp: Some("1710000000"),
//!     signature: Some(&sig),
//!     raw_body: body,
//!     now: 1_710_000_100,
//!     ..VerifyInput::default()
//! });
//! assert_eq!(r.code, VerifyCode::Ok);
//! assert_eq!(r.status, 200);
//! ```
//!
//! `examples/webhook_receiver.rs` is a complete receiver built on it.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// Default tolerance between the sender's timestamp and now.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// Default largest body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// Default grace window of a rotated-out secret.
pub const DEFAULT_GRACE_WINDOW: Duration = Duration::from_secs(86_400);

/// The reference verifier's result codes, in check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyCode {
    MissingSecret,
    MissingDeliveryId,
    MissingTimestamp,
    MissingSignature,
    PayloadTooLarge,
    InvalidTimestamp,
    TimestampOutsideTolerance,
    SignatureMismatch,
    PreviousSecretExpired,
    DuplicateDelivery,
    Ok,
}

impl VerifyCode {
    /// The code as text (`signature_mismatch`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSecret => "missing_secret",
            Self::MissingDeliveryId => "missing_delivery_id",
            Self::MissingTimestamp => "missing_timestamp",
            Self::MissingSignature => "missing_signature",
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TimestampOutsideTolerance => "timestamp_outside_tolerance",
            Self::SignatureMismatch => "signature_mismatch",
            Self::PreviousSecretExpired => "previous_secret_expired",
            Self::DuplicateDelivery => "duplicate_delivery",
            Self::Ok => "ok",
        }
    }
}

/// What a receiver has in hand. Header values are passed as received.
#[derive(Default)]
pub struct VerifyInput<'a> {
    /// The endpoint's secret exactly as shown (`whsec_…`).
    pub secret: Option<&'a str>,
    /// The previous secret, accepted during its grace window.
    pub previous_secret: Option<&'a str>,
    /// Unix seconds when the previous secret was rotated out; with it the previous secret is
    /// accepted for `grace_window` only (without it, always: the reference's compatibility rule).
    pub previous_secret_rotated_at: Option<i64>,
    /// `None`: [`DEFAULT_GRACE_WINDOW`].
    pub grace_window: Option<Duration>,
    /// `x-fluxora-delivery-id`.
    pub delivery_id: Option<&'a str>,
    /// `x-fluxora-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `x-fluxora-signature` (hex; case and surrounding whitespace do not matter). Several
    /// candidates separated by commas or spaces are accepted, e.g. the value joined with
    /// `x-fluxora-signature-previous`.
    pub signature: Option<&'a str>,
    /// The body bytes exactly as received.
    pub raw_body: &'a [u8],
    /// `None`: [`DEFAULT_TOLERANCE`].
    pub tolerance: Option<Duration>,
    /// Unix seconds now.
    pub now: i64,
    /// `None`: [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: Option<usize>,
    /// Whether this delivery id was already processed.
    pub is_duplicate: Option<&'a dyn Fn(&str) -> bool>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// The HTTP status a receiver should answer: 200, 400, 401, 409 or 413.
    pub status: u16,
    pub code: VerifyCode,
    pub message: String,
    /// The previous (rotating-out) secret matched, not the current one.
    pub used_previous_secret: bool,
}

fn fail(status: u16, code: VerifyCode, message: impl Into<String>) -> Verification {
    Verification {
        ok: false,
        status,
        code,
        message: message.into(),
        used_previous_secret: false,
    }
}

/// The expected signature bytes, compared in constant time by HMAC's `verify_slice`.
fn matches(secret: &str, timestamp: &str, body: &[u8], candidate: &[u8]) -> bool {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(candidate).is_ok()
}

/// Verifies a delivery by the reference rules: missing secret / delivery id / timestamp /
/// signature, body size (413), timestamp format (400) and tolerance (401), signature by the
/// current or (within its grace window) previous secret (401), duplicate (409), then ok.
pub fn verify(input: &VerifyInput<'_>) -> Verification {
    let Some(secret) = input.secret.filter(|s| !s.is_empty()) else {
        return fail(401, VerifyCode::MissingSecret, "Webhook secret is required");
    };
    let Some(delivery_id) = input.delivery_id.filter(|s| !s.is_empty()) else {
        return fail(
            401,
            VerifyCode::MissingDeliveryId,
            "Missing x-fluxora-delivery-id header",
        );
    };
    let Some(timestamp) = input.timestamp.filter(|s| !s.is_empty()) else {
        return fail(
            401,
            VerifyCode::MissingTimestamp,
            "Missing x-fluxora-timestamp header",
        );
    };
    let Some(signature) = input.signature.filter(|s| !s.is_empty()) else {
        return fail(
            401,
            VerifyCode::MissingSignature,
            "Missing x-fluxora-signature header",
        );
    };
    let max = input.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if input.raw_body.len() > max {
        return fail(
            413,
            VerifyCode::PayloadTooLarge,
            format!("Payload exceeds {max} bytes"),
        );
    }
    let ts: i64 = match timestamp.parse::<i64>() {
        Ok(t) if t > 0 && timestamp.bytes().all(|b| b.is_ascii_digit()) => t,
        _ => {
            return fail(
                400,
                VerifyCode::InvalidTimestamp,
                "Timestamp must be a positive Unix seconds value",
            )
        }
    };
    let tolerance = input.tolerance.unwrap_or(DEFAULT_TOLERANCE).as_secs() as i64;
    if (input.now - ts).abs() > tolerance {
        return fail(
            401,
            VerifyCode::TimestampOutsideTolerance,
            format!("Timestamp is outside the {tolerance} second verification window"),
        );
    }
    let grace = input.grace_window.unwrap_or(DEFAULT_GRACE_WINDOW).as_secs() as i64;
    let previous_expired = match (input.previous_secret, input.previous_secret_rotated_at) {
        (Some(_), Some(at)) => input.now - at > grace,
        _ => false,
    };
    let mut secrets = vec![(secret, false)];
    if let Some(p) = input.previous_secret.filter(|p| !p.is_empty()) {
        if !previous_expired {
            secrets.push((p, true));
        }
    }
    let candidates: Vec<Vec<u8>> = signature
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .filter_map(|s| hex::decode(s.to_ascii_lowercase()).ok())
        .collect();
    let mut matched = None;
    'outer: for (s, previous) in &secrets {
        for c in &candidates {
            if matches(s, timestamp, input.raw_body, c) {
                matched = Some(*previous);
                break 'outer;
            }
        }
    }
    let Some(used_previous) = matched else {
        if previous_expired {
            return fail(
                401,
                VerifyCode::PreviousSecretExpired,
                "Previous webhook secret has expired; rotate to the current secret",
            );
        }
        return fail(
            401,
            VerifyCode::SignatureMismatch,
            "Webhook signature verification failed",
        );
    };
    if input.is_duplicate.is_some_and(|f| f(delivery_id)) {
        return fail(409, VerifyCode::DuplicateDelivery, "Duplicate delivery id");
    }
    Verification {
        ok: true,
        status: 200,
        code: VerifyCode::Ok,
        message: "Webhook signature verified".into(),
        used_previous_secret: used_previous,
    }
}

/// Reads the Fluxora headers from a request and verifies it (`x-fluxora-signature` and, during a
/// rotation, `x-fluxora-signature-previous` are both tried).
pub fn verify_headers(
    headers: &http::HeaderMap,
    raw_body: &[u8],
    secret: &str,
    now: i64,
    is_duplicate: Option<&dyn Fn(&str) -> bool>,
) -> Verification {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let sig = match (
        get(super::signing::headers::SIGNATURE),
        get(super::signing::headers::SIGNATURE_PREVIOUS),
    ) {
        (Some(a), Some(b)) => Some(format!("{a},{b}")),
        (Some(a), None) => Some(a.to_string()),
        (None, _) => None,
    };
    verify(&VerifyInput {
        secret: Some(secret),
        delivery_id: get(super::signing::headers::DELIVERY_ID),
        timestamp: get(super::signing::headers::TIMESTAMP),
        signature: sig.as_deref(),
        raw_body,
        now,
        is_duplicate,
        ..VerifyInput::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::signing::fluxora_signature;

    const BODY: &[u8] = br#"{"event":"stream.updated"}"#;
    const SIG: &str = "925006549b879c8d9e91c10a153254fb4b6e2241820a1b072e28aa2fa8caeb79";

    fn input<'a>() -> VerifyInput<'a> {
        VerifyInput {
            secret: Some("topsecret"),
            delivery_id: Some("deliv_1"),
            timestamp: Some("1710000000"),
            signature: Some(SIG),
            raw_body: BODY,
            now: 1_710_000_000,
            ..VerifyInput::default()
        }
    }

    #[test]
    fn accepts_the_published_vector_in_any_case_and_padding() {
        assert_eq!(verify(&input()).code, VerifyCode::Ok);
        let upper = format!("  {}  ", SIG.to_uppercase());
        let r = verify(&VerifyInput {
            signature: Some(&upper),
            ..input()
        });
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn result_codes_in_check_order() {
        let c = |i: VerifyInput| verify(&i).code;
        assert_eq!(
            c(VerifyInput {
                secret: Some(""),
                delivery_id: None,
                ..input()
            }),
            VerifyCode::MissingSecret
        );
        assert_eq!(
            c(VerifyInput {
                delivery_id: None,
                timestamp: None,
                ..input()
            }),
            VerifyCode::MissingDeliveryId
        );
        assert_eq!(
            c(VerifyInput {
                timestamp: None,
                signature: None,
                ..input()
            }),
            VerifyCode::MissingTimestamp
        );
        assert_eq!(
            c(VerifyInput {
                signature: Some(""),
                ..input()
            }),
            VerifyCode::MissingSignature
        );
        let big = vec![b'a'; DEFAULT_MAX_BODY_BYTES + 1];
        let r = verify(&VerifyInput {
            raw_body: &big,
            timestamp: Some("x"),
            ..input()
        });
        assert_eq!((r.code, r.status), (VerifyCode::PayloadTooLarge, 413));
        for bad in ["0", "-1", "1710000000.5", "soon"] {
            let r = verify(&VerifyInput {
                timestamp: Some(bad),
                ..input()
            });
            assert_eq!(
                (r.code, r.status),
                (VerifyCode::InvalidTimestamp, 400),
                "{bad}"
            );
        }
        let r = verify(&VerifyInput {
            now: 1_710_000_301,
            ..input()
        });
        assert_eq!(r.code, VerifyCode::TimestampOutsideTolerance);
        assert!(
            verify(&VerifyInput {
                now: 1_710_000_300,
                ..input()
            })
            .ok
        );
        for sig in ["deadbeef", "abc", &"a".repeat(256), "zz\u{0}"] {
            let r = verify(&VerifyInput {
                signature: Some(sig),
                ..input()
            });
            assert_eq!((r.code, r.status), (VerifyCode::SignatureMismatch, 401));
        }
        let dup = |id: &str| id == "deliv_1";
        let r = verify(&VerifyInput {
            is_duplicate: Some(&dup),
            ..input()
        });
        assert_eq!((r.code, r.status), (VerifyCode::DuplicateDelivery, 409));
    }

    #[test]
    fn previous_secret_within_and_after_grace() {
        let sig = fluxora_signature("old", "1710000000", BODY);
        let within = verify(&VerifyInput {
            secret: Some("new"),
            previous_secret: Some("old"),
            previous_secret_rotated_at: Some(1_709_990_000),
            signature: Some(&sig),
            ..input()
        });
        assert!(within.ok && within.used_previous_secret);
        let after = verify(&VerifyInput {
            secret: Some("new"),
            previous_secret: Some("old"),
            previous_secret_rotated_at: Some(1_709_000_000),
            signature: Some(&sig),
            ..input()
        });
        assert_eq!(after.code, VerifyCode::PreviousSecretExpired);
        // Both headers joined: the current one matches.
        let both = format!("{},{sig}", fluxora_signature("new", "1710000000", BODY));
        let r = verify(&VerifyInput {
            secret: Some("new"),
            signature: Some(&both),
            ..input()
        });
        assert!(r.ok && !r.used_previous_secret);
    }
}
