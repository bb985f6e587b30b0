//! Stellar RPC source: `getHealth` / `getLatestLedger` for the tip and retention window,
//! `getLedgers` (`LedgerCloseMeta` V0/V1/V2) for bundles, headers verified, envelopes matched to
//! results by hash under the network passphrase.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::http::{HttpClient, HttpPolicy, SourceHealth};
use super::meta::{bundle_from_lcm_b64, network_id, verify_header_b64, ContractFilter, XdrLimits};
use super::{ChainError, LedgerBundle, LedgerSource, TipInfo};

/// Maximum `pagination.limit` of `getLedgers`.
pub const MAX_LEDGERS: u32 = 200;

pub struct RpcSource {
    url: String,
    http: HttpClient,
    filter: ContractFilter,
    passphrase: String,
    network_id: [u8; 32],
    limits: XdrLimits,
    next_id: AtomicU64,
}

fn num(v: &Value, k: &str) -> Option<u64> {
    match v.get(k)? {
        Value::Number(n) => n.as_u64(),
        Value::String(x) => x.parse().ok(),
        _ => None,
    }
}

fn num32(v: &Value, k: &str, loc: &str) -> Result<u32, ChainError> {
    num(v, k)
        .and_then(|x| u32::try_from(x).ok())
        .ok_or(ChainError::MissingField {
            location: loc.to_string(),
            field: match k {
                "latestLedger" => "latestLedger",
                "oldestLedger" => "oldestLedger",
                "sequence" => "sequence",
                _ => "number",
            },
        })
}

impl RpcSource {
    pub fn new(
        url: &str,
        network_passphrase: &str,
        filter: ContractFilter,
        policy: HttpPolicy,
    ) -> Result<Self, ChainError> {
        Ok(RpcSource {
            url: url.to_string(),
            http: HttpClient::new("rpc", policy)?,
            filter,
            passphrase: network_passphrase.to_string(),
            network_id: network_id(network_passphrase),
            limits: XdrLimits::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// One JSON-RPC call; a JSON-RPC `error` becomes [`ChainError::Rpc`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ChainError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = self.http.request(&self.url, Some(&body)).await?;
        if let Some(err) = resp.get("error") {
            return Err(ChainError::Rpc {
                url: self.url.clone(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        resp.get("result").cloned().ok_or(ChainError::MissingField {
            location: format!("{} {method} response", self.url),
            field: "result",
        })
    }

    /// `getLatestLedger`: (sequence, hash hex).
    pub async fn latest_ledger(&self) -> Result<(u32, String), ChainError> {
        let r = self.call("getLatestLedger", json!({})).await?;
        let loc = format!("{} getLatestLedger", self.url);
        let seq = num32(&r, "sequence", &loc)?;
        let id = r
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(h) = r.get("headerXdr").and_then(Value::as_str) {
            verify_header_b64(h, Some(&id), &format!("{loc} headerXdr"), self.limits)?;
        }
        Ok((seq, id))
    }
}

#[async_trait]
impl LedgerSource for RpcSource {
    fn name(&self) -> &'static str {
        "rpc"
    }

    async fn tip(&self) -> Result<TipInfo, ChainError> {
        let r = self.call("getHealth", json!({})).await?;
        let loc = format!("{} getHealth", self.url);
        if let Some(status) = r.get("status").and_then(Value::as_str) {
            if status != "healthy" {
                tracing::warn!(url = %self.url, status, "Stellar RPC reports it is not healthy");
            }
        }
        let latest = match num32(&r, "latestLedger", &loc) {
            Ok(x) => x,
            Err(_) => self.latest_ledger().await?.0,
        };
        Ok(TipInfo {
            latest_ledger: latest,
            oldest_ledger: num(&r, "oldestLedger").and_then(|x| u32::try_from(x).ok()),
            network_passphrase: Some(self.passphrase.clone()),
        })
    }

    async fn fetch_ledgers(&self, start: u32, limit: u32) -> Result<Vec<LedgerBundle>, ChainError> {
        let limit = limit.clamp(1, MAX_LEDGERS);
        let params = json!({"startLedger": start, "pagination": {"limit": limit}});
        let r = match self.call("getLedgers", params).await {
            Ok(r) => r,
            Err(ChainError::Rpc { code, message, .. })
                if code == -32600 || message.contains("ledger range") =>
            {
                let tip = self.tip().await?;
                let oldest = tip.oldest_ledger.unwrap_or(0);
                if start > tip.latest_ledger {
                    return Ok(Vec::new());
                }
                if start < oldest {
                    return Err(ChainError::OutOfRetention {
                        url: self.url.clone(),
                        requested: start,
                        oldest,
                        latest: tip.latest_ledger,
                    });
                }
                return Err(ChainError::Rpc {
                    url: self.url.clone(),
                    code,
                    message,
                });
            }
            Err(e) => return Err(e),
        };
        let loc = format!("{} getLedgers(startLedger={start})", self.url);
        let ledgers =
            r.get("ledgers")
                .and_then(Value::as_array)
                .ok_or(ChainError::MissingField {
                    location: loc.clone(),
                    field: "ledgers",
                })?;
        let mut out = Vec::with_capacity(ledgers.len());
        for (i, l) in ledgers.iter().enumerate() {
            let expected = start + i as u32;
            let lloc = format!("{loc} ledgers[{i}]");
            let seq = num32(l, "sequence", &lloc)?;
            if seq != expected {
                return Err(ChainError::Invalid(format!(
                    "{lloc}: got ledger {seq} where {expected} was expected"
                )));
            }
            let hash = l
                .get("hash")
                .and_then(Value::as_str)
                .ok_or(ChainError::MissingField {
                    location: lloc.clone(),
                    field: "hash",
                })?
                .to_lowercase();
            if let Some(h) = l.get("headerXdr").and_then(Value::as_str) {
                verify_header_b64(h, Some(&hash), &format!("{lloc}.headerXdr"), self.limits)?;
            }
            let meta_b64 =
                l.get("metadataXdr")
                    .and_then(Value::as_str)
                    .ok_or(ChainError::MissingField {
                        location: lloc.clone(),
                        field: "metadataXdr",
                    })?;
            let b = bundle_from_lcm_b64(
                meta_b64,
                &format!("{lloc}.metadataXdr"),
                self.limits,
                &self.network_id,
                &self.filter,
                Some(&hash),
            )?;
            if b.sequence != expected {
                return Err(ChainError::Invalid(format!(
                    "{lloc}: metadataXdr is ledger {} not {expected}",
                    b.sequence
                )));
            }
            out.push(b);
        }
        Ok(out)
    }

    fn health(&self) -> SourceHealth {
        self.http.health()
    }
}
