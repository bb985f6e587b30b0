//! A live simulated network: the generator closes ledgers into the served chain at a cadence
//! (or as fast as possible), forking now and then.

use std::sync::Arc;
use std::time::Duration;

use super::generator::Generator;
use super::http::SimState;
use super::SimError;

/// How the live network behaves.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Time between ledgers; `None` = as fast as possible.
    pub cadence: Option<Duration>,
    /// Stop after this many new ledgers (`None`: run until cancelled).
    pub max_ledgers: Option<u64>,
    /// Every this many ledgers, replace the last `fork_depth` ones by another branch.
    pub fork_every: Option<u64>,
    pub fork_depth: u32,
}

/// Runs the network until `max_ledgers` or until `stop` fires. Returns how many ledgers closed.
pub async fn run(
    state: Arc<SimState>,
    mut generator: Generator,
    cfg: LiveConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<u64, SimError> {
    let mut closed = 0u64;
    loop {
        if *stop.borrow() || cfg.max_ledgers.is_some_and(|m| closed >= m) {
            return Ok(closed);
        }
        {
            let mut chain = state.chain.write().await;
            generator.next_ledger(&mut chain)?;
            closed += 1;
            if let Some(every) = cfg.fork_every {
                if every > 0
                    && closed % every == 0
                    && chain.ledgers().len() > cfg.fork_depth as usize
                {
                    generator.fork(&mut chain, cfg.fork_depth)?;
                    tracing::info!(
                        depth = cfg.fork_depth,
                        tip = chain.tip().map(|t| t.seq),
                        "simulator forked"
                    );
                }
            }
        }
        match cfg.cadence {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.changed() => {}
                }
            }
            None => tokio::task::yield_now().await,
        }
    }
}
