//! The simulated chain as an in-process [`LedgerSource`]: every ledger goes through the same XDR
//! (`LedgerCloseMeta`) a node would serve and the same decoder the RPC source uses, without the
//! HTTP hop. For property tests and benches of the ingest logic; black-box tests use HTTP.

use std::sync::Arc;

use async_trait::async_trait;

use super::http::SimState;
use crate::chain::http::{BreakerState, SourceHealth};
use crate::chain::meta::{bundle_from_lcm_xdr, network_id, XdrLimits};
use crate::chain::{ChainError, ContractFilter, LedgerBundle, LedgerSource, TipInfo};

/// An in-process source over a simulator's state.
#[derive(Debug, Clone)]
pub struct SimSource {
    state: Arc<SimState>,
    filter: ContractFilter,
}

impl SimSource {
    /// A source of `state` keeping only `contract`'s events.
    pub fn new(state: Arc<SimState>, contract: [u8; 32]) -> Self {
        Self {
            state,
            filter: ContractFilter::from_bytes(contract),
        }
    }
}

#[async_trait]
impl LedgerSource for SimSource {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn tip(&self) -> Result<TipInfo, ChainError> {
        let chain = self.state.chain.read().await;
        let tip = chain
            .tip()
            .map(|t| t.seq)
            .ok_or_else(|| ChainError::Invalid("the simulated chain has no ledger yet".into()))?;
        let lag = self.state.faults.lock().await.lag_ledgers;
        Ok(TipInfo {
            latest_ledger: tip.saturating_sub(lag).max(chain.first_seq()),
            oldest_ledger: Some(chain.first_seq()),
            network_passphrase: Some(chain.passphrase.clone()),
        })
    }

    async fn fetch_ledgers(&self, start: u32, limit: u32) -> Result<Vec<LedgerBundle>, ChainError> {
        let chain = self.state.chain.read().await;
        let lag = self.state.faults.lock().await.lag_ledgers;
        let tip = chain.tip().map_or(0, |t| t.seq).saturating_sub(lag);
        if start < chain.first_seq() {
            return Err(ChainError::OutOfRetention {
                url: "sim".into(),
                requested: start,
                oldest: chain.first_seq(),
                latest: tip,
            });
        }
        let net = network_id(&chain.passphrase);
        let mut out = Vec::new();
        let mut seq = start;
        while seq <= tip && out.len() < limit as usize {
            let Some(l) = chain.ledger(seq) else { break };
            let lcm = chain
                .close_meta_xdr(l)
                .map_err(|e| ChainError::Invalid(e.to_string()))?;
            out.push(bundle_from_lcm_xdr(
                &lcm,
                &format!("simulated ledger {seq}"),
                XdrLimits::default(),
                &net,
                &self.filter,
                Some(&l.hash_hex()),
            )?);
            seq += 1;
        }
        Ok(out)
    }

    fn health(&self) -> SourceHealth {
        SourceHealth {
            source: "sim",
            breaker: BreakerState::Closed,
            consecutive_failures: 0,
            total_failures: 0,
            total_requests: 0,
            last_error: None,
        }
    }
}
