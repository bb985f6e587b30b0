//! Token amounts: raw `i128` units inside, decimal strings at the edges.
//!
//! `format_amount(10_000_000, 7) == "1"`, `format_amount(-5, 7) == "-0.0000005"`: plain decimal
//! notation, trailing fractional zeros stripped, no exponent. Exact over the whole `i128` range:
//! values that fit `rust_decimal` (96-bit mantissa, scale ≤ 28) go through it; larger ones
//! (`i128::MAX` has 39 digits) are rendered from their exact digits, never rounded.

use rust_decimal::Decimal;

/// Largest number of decimals supported (`i128::MAX` has 39 digits).
pub const MAX_DECIMALS: u32 = 38;

/// Why a decimal string was refused. The variant names map to the API's decimal detail codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount `{0}` is not a decimal number like `1000.5`")]
    InvalidFormat(String),
    #[error("amount `{value}` has more than {decimals} fractional digits")]
    PrecisionExceeded { value: String, decimals: u32 },
    #[error("amount `{0}` is outside the i128 range of raw token units")]
    OutOfRange(String),
    #[error("token decimals {0} exceed the supported maximum of 38")]
    BadDecimals(u32),
}

impl AmountError {
    /// The API's decimal detail code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "DECIMAL_EMPTY_VALUE",
            Self::InvalidFormat(_) | Self::BadDecimals(_) => "DECIMAL_INVALID_FORMAT",
            Self::PrecisionExceeded { .. } => "DECIMAL_PRECISION_EXCEEDED",
            Self::OutOfRange(_) => "DECIMAL_OUT_OF_RANGE",
        }
    }
}

/// Renders raw units as a decimal string with `decimals` fractional digits, trailing zeros
/// stripped.
pub fn format_amount(raw: i128, decimals: u32) -> String {
    if decimals <= 28 {
        if let Ok(d) = Decimal::try_from_i128_with_scale(raw, decimals) {
            // `normalize` strips trailing zeros; Display never uses an exponent.
            return d.normalize().to_string();
        }
    }
    format_digits(raw, decimals)
}

/// The exact digit path, used beyond `rust_decimal`'s range.
fn format_digits(raw: i128, decimals: u32) -> String {
    let negative = raw < 0;
    let digits = raw.unsigned_abs().to_string();
    let d = decimals as usize;
    let (int_part, frac_part) = if digits.len() > d {
        let (i, f) = digits.split_at(digits.len() - d);
        (i.to_string(), f.to_string())
    } else {
        (
            "0".to_string(),
            format!("{}{}", "0".repeat(d - digits.len()), digits),
        )
    };
    let frac = frac_part.trim_end_matches('0');
    let mut out = String::with_capacity(int_part.len() + frac.len() + 2);
    if negative {
        out.push('-');
    }
    out.push_str(&int_part);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// Parses a decimal string (`"1000.5"`, `"-0.25"`, `"7"`) into raw units with `decimals`
/// fractional digits. Exact; refuses exponents, signs in odd places, too many fractional digits
/// and values outside `i128`.
pub fn parse_amount(text: &str, decimals: u32) -> Result<i128, AmountError> {
    if decimals > MAX_DECIMALS {
        return Err(AmountError::BadDecimals(decimals));
    }
    let s = text.trim();
    if s.is_empty() {
        return Err(AmountError::Empty);
    }
    let invalid = || AmountError::InvalidFormat(text.to_string());
    let (negative, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || (body.contains('.') && frac_part.is_empty() && int_part.is_empty())
    {
        return Err(invalid());
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > decimals as usize {
        return Err(AmountError::PrecisionExceeded {
            value: text.to_string(),
            decimals,
        });
    }
    let out_of_range = || AmountError::OutOfRange(text.to_string());
    // Accumulate the magnitude as a negative number so that i128::MIN is reachable.
    let mut acc: i128 = 0;
    let scale_digits = int_part
        .bytes()
        .chain(frac_trimmed.bytes())
        .chain(std::iter::repeat_n(
            b'0',
            decimals as usize - frac_trimmed.len(),
        ));
    for b in scale_digits {
        let digit = i128::from(b - b'0');
        acc = acc
            .checked_mul(10)
            .and_then(|v| v.checked_sub(digit))
            .ok_or_else(out_of_range)?;
    }
    if negative {
        Ok(acc)
    } else {
        acc.checked_neg().ok_or_else(out_of_range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_like_the_clients_expect() {
        assert_eq!(format_amount(10_000_000, 7), "1");
        assert_eq!(format_amount(10_005_000_000, 7), "1000.5");
        assert_eq!(format_amount(0, 7), "0");
        assert_eq!(format_amount(-5, 7), "-0.0000005");
        assert_eq!(format_amount(123, 0), "123");
        assert_eq!(
            format_amount(i128::MAX, 7),
            "17014118346046923173168730371588.4105727"
        );
        assert_eq!(
            format_amount(i128::MIN, 7),
            "-17014118346046923173168730371588.4105728"
        );
        assert_eq!(
            format_amount(i128::MAX, 38),
            "1.70141183460469231731687303715884105727"
        );
        assert_eq!(
            format_amount(1, 38),
            "0.00000000000000000000000000000000000001"
        );
    }

    #[test]
    fn parses_and_refuses_with_the_right_code() {
        assert_eq!(parse_amount("1000.5", 7), Ok(10_005_000_000));
        assert_eq!(parse_amount("-0.0000005", 7), Ok(-5));
        assert_eq!(parse_amount("1.50000000", 7), Ok(15_000_000));
        assert_eq!(parse_amount(".5", 1), Ok(5));
        assert_eq!(parse_amount("5.", 1), Ok(50));
        assert_eq!(
            parse_amount("-17014118346046923173168730371588.4105728", 7),
            Ok(i128::MIN)
        );
        assert_eq!(
            parse_amount("", 7).unwrap_err().code(),
            "DECIMAL_EMPTY_VALUE"
        );
        for bad in [
            "1e5", "1.2.3", "--1", "abc", ".", "-", " 1 2", "0x10", "1,5",
        ] {
            assert_eq!(
                parse_amount(bad, 7).unwrap_err().code(),
                "DECIMAL_INVALID_FORMAT",
                "{bad}"
            );
        }
        assert_eq!(
            parse_amount("0.00000001", 7).unwrap_err().code(),
            "DECIMAL_PRECISION_EXCEEDED"
        );
        assert_eq!(
            parse_amount("17014118346046923173168730371588.4105728", 7)
                .unwrap_err()
                .code(),
            "DECIMAL_OUT_OF_RANGE"
        );
    }

    proptest! {
        #[test]
        fn round_trips_over_the_whole_i128_range(raw in any::<i128>(), decimals in 0u32..=38) {
            let text = format_amount(raw, decimals);
            prop_assert_eq!(parse_amount(&text, decimals), Ok(raw), "{}", text);
            prop_assert!(!text.contains('e') && !text.contains('E'));
            if text.contains('.') {
                prop_assert!(!text.ends_with('0'), "trailing zero in {}", text);
            }
        }

        #[test]
        fn rust_decimal_and_digit_paths_agree(raw in any::<i64>().prop_map(i128::from), decimals in 0u32..=28) {
            prop_assert_eq!(format_amount(raw, decimals), format_digits(raw, decimals));
        }

        #[test]
        fn edges_round_trip(pick in 0usize..6, decimals in 0u32..=38) {
            let raw = [i128::MAX, i128::MIN, i128::MAX - 1, i128::MIN + 1, 0, 1][pick];
            prop_assert_eq!(parse_amount(&format_amount(raw, decimals), decimals), Ok(raw));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,60}", decimals in 0u32..=40) {
            let _ = parse_amount(&s, decimals);
        }
    }
}
