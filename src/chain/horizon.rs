//! Horizon source: `/ledgers?order=asc&cursor=&limit=200` for headers (verified where
//! `header_xdr` is present), then each ledger's transactions with `envelope_xdr` and
//! `result_meta_xdr`, following HAL `next` links.

use async_trait::async_trait;
use serde_json::Value;
use stellar_xdr::{TransactionEnvelope, TransactionMeta};

use super::http::{HttpClient, HttpPolicy, SourceHealth};
use super::meta::{decode_b64, tx_bundle, verify_header_b64, ContractFilter, TxContext, XdrLimits};
use super::{ChainError, LedgerBundle, LedgerSource, TipInfo};

/// Maximum `limit` Horizon accepts.
pub const MAX_PAGE: u32 = 200;
/// Guard against a server that pages forever.
const MAX_TX_PAGES: usize = 10_000;

pub struct HorizonSource {
    base: String,
    http: HttpClient,
    filter: ContractFilter,
    limits: XdrLimits,
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn num(v: &Value, k: &str) -> Option<u64> {
    match v.get(k)? {
        Value::Number(n) => n.as_u64(),
        Value::String(x) => x.parse().ok(),
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS(.fff)Z` → unix seconds (Horizon `closed_at`).
pub fn parse_rfc3339_utc(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !t.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

impl HorizonSource {
    pub fn new(
        base_url: &str,
        filter: ContractFilter,
        policy: HttpPolicy,
    ) -> Result<Self, ChainError> {
        Ok(HorizonSource {
            base: base_url.trim_end_matches('/').to_string(),
            http: HttpClient::new("horizon", policy)?,
            filter,
            limits: XdrLimits::default(),
        })
    }

    fn abs(&self, href: &str) -> String {
        if href.starts_with("http://") || href.starts_with("https://") {
            href.to_string()
        } else {
            format!("{}/{}", self.base, href.trim_start_matches('/'))
        }
    }

    async fn get(&self, url: &str, requested: u32) -> Result<Value, ChainError> {
        match self.http.request(url, None).await {
            Err(ChainError::Problem {
                status: 410,
                problem_type,
                detail,
                ..
            }) if problem_type.contains("before_history") || problem_type.is_empty() => {
                let (oldest, latest) =
                    match self.http.request(&format!("{}/", self.base), None).await {
                        Ok(root) => (
                            num(&root, "history_elder_ledger")
                                .map_or("?".into(), |x| x.to_string()),
                            num(&root, "history_latest_ledger")
                                .map_or("?".into(), |x| x.to_string()),
                        ),
                        Err(_) => ("?".into(), "?".into()),
                    };
                Err(ChainError::BeforeHistory {
                    url: url.to_string(),
                    requested,
                    oldest,
                    latest,
                    detail,
                })
            }
            other => other,
        }
    }

    async fn transactions(&self, seq: u32) -> Result<Vec<super::TxBundle>, ChainError> {
        let mut url = format!(
            "{}/ledgers/{seq}/transactions?order=asc&limit={MAX_PAGE}&include_failed=false",
            self.base
        );
        let mut out = Vec::new();
        for _ in 0..MAX_TX_PAGES {
            let page = self.get(&url, seq).await?;
            let records = page
                .pointer("/_embedded/records")
                .and_then(Value::as_array)
                .ok_or_else(|| ChainError::MissingField {
                    location: url.clone(),
                    field: "_embedded.records",
                })?;
            for (i, r) in records.iter().enumerate() {
                let loc = format!("{url} record {i}");
                if r.get("successful").and_then(Value::as_bool) == Some(false) {
                    continue;
                }
                if num(r, "ledger").is_some_and(|l| l != u64::from(seq)) {
                    return Err(ChainError::Invalid(format!(
                        "{loc}: transaction of ledger {:?} listed under ledger {seq}",
                        num(r, "ledger")
                    )));
                }
                let Some(meta_b64) = s(r, "result_meta_xdr") else {
                    return Err(ChainError::SkipTxMeta {
                        url: self.base.clone(),
                        ledger: seq,
                    });
                };
                let hash = s(r, "hash").ok_or(ChainError::MissingField {
                    location: loc.clone(),
                    field: "hash",
                })?;
                let env_b64 = s(r, "envelope_xdr").ok_or(ChainError::MissingField {
                    location: loc.clone(),
                    field: "envelope_xdr",
                })?;
                let order = num(r, "paging_token")
                    .map(|pt| ((pt >> 12) & 0xF_FFFF) as u32)
                    .ok_or(ChainError::MissingField {
                        location: loc.clone(),
                        field: "paging_token",
                    })?;
                let env: TransactionEnvelope = decode_b64(
                    "TransactionEnvelope",
                    &format!("{loc} envelope_xdr"),
                    env_b64,
                    self.limits,
                )?;
                let meta: TransactionMeta = decode_b64(
                    "TransactionMeta",
                    &format!("{loc} result_meta_xdr"),
                    meta_b64,
                    self.limits,
                )?;
                let ctx = TxContext {
                    ledger: seq,
                    tx_hash: hash,
                    application_order: order,
                };
                if let Some(tb) = tx_bundle(ctx, Some(&env), &meta, &self.filter) {
                    out.push(tb);
                }
            }
            if records.len() < MAX_PAGE as usize {
                break;
            }
            match page.pointer("/_links/next/href").and_then(Value::as_str) {
                Some(next) => url = self.abs(next),
                None => break,
            }
        }
        out.sort_by_key(|t| t.application_order);
        Ok(out)
    }
}

#[async_trait]
impl LedgerSource for HorizonSource {
    fn name(&self) -> &'static str {
        "horizon"
    }

    async fn tip(&self) -> Result<TipInfo, ChainError> {
        let url = format!("{}/", self.base);
        let root = self.http.request(&url, None).await?;
        let latest = num(&root, "history_latest_ledger")
            .or_else(|| num(&root, "core_latest_ledger"))
            .ok_or(ChainError::MissingField {
                location: url.clone(),
                field: "history_latest_ledger",
            })?;
        Ok(TipInfo {
            latest_ledger: u32::try_from(latest).map_err(|_| {
                ChainError::Invalid(format!("{url}: latest ledger {latest} out of range"))
            })?,
            oldest_ledger: num(&root, "history_elder_ledger").and_then(|x| u32::try_from(x).ok()),
            network_passphrase: s(&root, "network_passphrase").map(str::to_string),
        })
    }

    async fn fetch_ledgers(&self, start: u32, limit: u32) -> Result<Vec<LedgerBundle>, ChainError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let cursor = if start <= 1 {
            String::new()
        } else {
            (u64::from(start - 1) << 32).to_string()
        };
        let url = format!(
            "{}/ledgers?order=asc&cursor={cursor}&limit={limit}",
            self.base
        );
        let page = self.get(&url, start).await?;
        let records = page
            .pointer("/_embedded/records")
            .and_then(Value::as_array)
            .ok_or_else(|| ChainError::MissingField {
                location: url.clone(),
                field: "_embedded.records",
            })?;
        let mut out = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let expected = start + i as u32;
            let loc = format!("{url} record {i}");
            let seq = num(r, "sequence").ok_or(ChainError::MissingField {
                location: loc.clone(),
                field: "sequence",
            })?;
            if seq != u64::from(expected) {
                return Err(ChainError::Invalid(format!(
                    "{loc}: Horizon returned ledger {seq} where {expected} was expected"
                )));
            }
            let hash = s(r, "hash")
                .ok_or(ChainError::MissingField {
                    location: loc.clone(),
                    field: "hash",
                })?
                .to_lowercase();
            let prev_hash = s(r, "prev_hash").map(str::to_lowercase);
            let mut close_time = s(r, "closed_at").and_then(parse_rfc3339_utc);
            let mut header_verified = false;
            if let Some(h) = s(r, "header_xdr") {
                let info =
                    verify_header_b64(h, Some(&hash), &format!("{loc} header_xdr"), self.limits)?;
                if info.sequence != expected {
                    return Err(ChainError::Invalid(format!(
                        "{loc}: header_xdr is ledger {} not {expected}",
                        info.sequence
                    )));
                }
                if prev_hash.as_deref().is_some_and(|p| p != info.prev_hash) {
                    return Err(ChainError::Invalid(format!(
                        "{loc}: prev_hash disagrees with header_xdr"
                    )));
                }
                close_time = Some(info.close_time);
                header_verified = true;
            }
            let close_time = close_time.ok_or(ChainError::MissingField {
                location: loc.clone(),
                field: "closed_at",
            })?;
            let tx_count = num(r, "successful_transaction_count")
                .or_else(|| num(r, "transaction_count"))
                .unwrap_or(1);
            let txs = if tx_count > 0 {
                self.transactions(expected).await?
            } else {
                Vec::new()
            };
            out.push(LedgerBundle {
                sequence: expected,
                hash,
                prev_hash,
                close_time,
                header_verified,
                txs,
            });
        }
        Ok(out)
    }

    fn health(&self) -> SourceHealth {
        self.http.health()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_utc;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2019-12-06T22:39:32Z"),
            Some(1_575_671_972)
        );
        assert_eq!(parse_rfc3339_utc("2019-12-06 22:39:32"), None);
        assert_eq!(parse_rfc3339_utc("x"), None);
    }
}
