//! Query-string validation: every parameter is checked and a bad one is named in the 400
//! `VALIDATION_ERROR`. A parameter given twice is an error too (which one would win is not
//! obvious to a client).

use std::collections::BTreeMap;

use super::ApiError;

/// The parsed query string of one request.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses a raw query string (`a=1&b=2`) of an endpoint that takes the parameters
    /// `allowed`; any other parameter is an error naming it.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::validation(
                    &k,
                    if allowed.is_empty() {
                        "is not a parameter of this endpoint (it takes none)".to_string()
                    } else {
                        format!(
                            "is not a parameter of this endpoint (it takes {})",
                            allowed.join(", ")
                        )
                    },
                ));
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ApiError::validation(&k, "is given more than once"));
            }
        }
        Ok(Self(map))
    }

    /// The raw value, when the parameter is present.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An unsigned integer within `min..=max`.
    pub fn u64_in(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.str(name) else {
            return Ok(None);
        };
        let n: u64 = v
            .parse()
            .map_err(|_| ApiError::validation(name, format!("`{v}` is not a whole number")))?;
        if n < min || n > max {
            return Err(ApiError::validation(
                name,
                format!("{n} is out of range {min}..={max}"),
            ));
        }
        Ok(Some(n))
    }

    /// `limit`: 1..=max, default `default`.
    pub fn limit(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        Ok(self
            .u64_in("limit", 1, u64::from(max))?
            .map_or(default, |n| n as u32))
    }

    /// A Stellar address (`G…`, `C…` or `M…` strkey, checksum verified).
    pub fn address(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => check_address(name, v).map(Some),
        }
    }
}

/// Validates a strkey address (checksum included); `name` is the parameter for the error.
pub fn check_address(name: &str, v: &str) -> Result<String, ApiError> {
    crate::config::check_address(v.trim())
        .map(|()| v.trim().to_string())
        .map_err(|reason| ApiError::validation(name, reason))
}

/// A stream id path segment: the contract's `u64`, in decimal.
pub fn stream_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::validation(
            "id",
            format!("`{raw}` is not a stream id (a whole number 0..=18446744073709551615)"),
        )
    })
}

/// A ledger sequence path segment.
pub fn ledger_seq(name: &str, raw: &str) -> Result<u32, ApiError> {
    match raw.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ApiError::validation(
            name,
            format!("`{raw}` is not a ledger sequence (1..=4294967295)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_validated_by_name() {
        let p = Params::parse(Some("limit=0"), &["limit"]).unwrap();
        let e = p.limit(20, 100).unwrap_err();
        assert_eq!(e.code, "VALIDATION_ERROR");
        assert!(e.message.contains("limit"), "{}", e.message);
        assert_eq!(
            Params::parse(Some("limit=100"), &["limit"])
                .unwrap()
                .limit(20, 100)
                .unwrap(),
            100
        );
        assert_eq!(
            Params::parse(None, &["limit"])
                .unwrap()
                .limit(20, 100)
                .unwrap(),
            20
        );
        assert!(Params::parse(Some("limit=abc"), &["limit"])
            .unwrap()
            .limit(20, 100)
            .is_err());
        assert!(Params::parse(Some("limit=1&limit=2"), &["limit"]).is_err());
        assert!(Params::parse(Some("sender=GABC"), &["sender"])
            .unwrap()
            .address("sender")
            .is_err());
        assert!(Params::parse(Some("x=1"), &["limit"]).is_err());
        assert!(Params::parse(Some("limit="), &["limit"])
            .unwrap()
            .limit(20, 100)
            .is_err());
        assert!(stream_id("12").is_ok());
        assert!(stream_id("-1").is_err());
        assert!(stream_id("18446744073709551616").is_err());
        assert!(ledger_seq("seq", "0").is_err());
    }
}
