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
    /// The ledger an indexer of this network has reached, when one is watched (the demo). A fork
    /// then reaches back at least to that ledger (up to `max_fork_depth`), so that the indexer
    /// sees it even while it trails the tip; without it a fork of ledgers the indexer has not
    /// read yet is invisible to it.
    pub observed: Option<tokio::sync::watch::Receiver<Option<u32>>>,
    /// The deepest fork `observed` may ask for.
    pub max_fork_depth: u32,
}

impl LiveConfig {
    /// The depth of the next fork given the current tip.
    fn depth_at(&self, tip: Option<u32>) -> u32 {
        let seen = self.observed.as_ref().and_then(|o| *o.borrow());
        match (tip, seen) {
            (Some(tip), Some(seen)) if seen <= tip => {
                let reach = tip - seen + 1;
                if reach <= self.max_fork_depth {
                    reach.max(self.fork_depth)
                } else {
                    self.fork_depth
                }
            }
            _ => self.fork_depth,
        }
    }
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
                let depth = cfg.depth_at(chain.tip().map(|t| t.seq));
                if every > 0 && closed % every == 0 && chain.ledgers().len() > depth as usize {
                    generator.fork(&mut chain, depth)?;
                    tracing::info!(depth, tip = chain.tip().map(|t| t.seq), "simulator forked");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seen: Option<u32>) -> (LiveConfig, tokio::sync::watch::Sender<Option<u32>>) {
        let (tx, rx) = tokio::sync::watch::channel(seen);
        (
            LiveConfig {
                cadence: None,
                max_ledgers: None,
                fork_every: Some(10),
                fork_depth: 3,
                observed: Some(rx),
                max_fork_depth: 12,
            },
            tx,
        )
    }

    #[test]
    fn forks_reach_back_to_the_ledger_the_indexer_has_seen() {
        let (c, tx) = cfg(None);
        assert_eq!(
            c.depth_at(Some(100)),
            3,
            "nothing seen yet: the default depth"
        );
        tx.send_replace(Some(100));
        assert_eq!(c.depth_at(Some(100)), 3, "at the tip: the default depth");
        tx.send_replace(Some(93));
        assert_eq!(c.depth_at(Some(100)), 8, "8 ledgers replaced: 93..=100");
        tx.send_replace(Some(89));
        assert_eq!(c.depth_at(Some(100)), 12);
        tx.send_replace(Some(88));
        assert_eq!(
            c.depth_at(Some(100)),
            3,
            "too far behind: no deeper than the limit"
        );
        tx.send_replace(Some(101));
        assert_eq!(c.depth_at(Some(100)), 3);
        assert_eq!(c.depth_at(None), 3);
    }
}
