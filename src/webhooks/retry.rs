//! Retry policy: which answers are retried, the Svix-like schedule with jitter, `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// How an attempt ended, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// 408, 425, 429, 5xx or a transport error (connect, timeout, reset): try again later,
    /// not before `retry_after` when the receiver said so.
    Retry { retry_after: Option<Duration> },
    /// 410 Gone: the endpoint is disabled.
    Gone,
    /// Any other answer (3xx, 4xx): permanent, the delivery is dead (retryable by hand).
    Permanent,
}

/// The verdict of an HTTP status.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        408 | 425 | 429 | 500..=599 => Verdict::Retry { retry_after },
        _ => Verdict::Permanent,
    }
}

/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Parses `Retry-After`: delta seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// The delay before the next attempt after `tries` failed attempts in this round (1 after the
/// first failure), or `None` when the schedule is used up. Each delay is spread by ±`jitter_pct`
/// percent, and is never shorter than the receiver's `Retry-After`.
pub fn next_delay(
    schedule: &[Duration],
    tries: u32,
    jitter_pct: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let base = *schedule.get(tries.checked_sub(1)? as usize)?;
    let ms = base.as_millis() as u64;
    let spread = ms * u64::from(jitter_pct.min(100)) / 100;
    let jittered = if spread == 0 {
        ms
    } else {
        rand::thread_rng().gen_range(ms - spread..=ms + spread)
    };
    let d = Duration::from_millis(jittered);
    Some(match retry_after {
        Some(r) => d.max(r),
        None => d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify(200, None), Verdict::Delivered);
        assert_eq!(classify(204, None), Verdict::Delivered);
        assert_eq!(classify(410, None), Verdict::Gone);
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert!(matches!(classify(s, None), Verdict::Retry { .. }), "{s}");
        }
        for s in [301, 302, 400, 401, 403, 404, 409, 413, 422] {
            assert_eq!(classify(s, None), Verdict::Permanent, "{s}");
        }
    }

    #[test]
    fn schedule_with_jitter_and_retry_after() {
        let s =
            crate::config::parse_schedule(crate::config::DEFAULT_WEBHOOK_RETRY_SCHEDULE).unwrap();
        for _ in 0..100 {
            let d = next_delay(&s, 1, 20, None).unwrap();
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
        assert_eq!(
            next_delay(&s, 2, 0, None).unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            next_delay(&s, 7, 0, None).unwrap(),
            Duration::from_secs(36_000)
        );
        assert_eq!(next_delay(&s, 8, 20, None), None);
        assert_eq!(next_delay(&s, 0, 20, None), None);
        assert_eq!(
            next_delay(&s, 1, 0, Some(Duration::from_secs(60))).unwrap(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
        let soon = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("later"), None);
    }
}
