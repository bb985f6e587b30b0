//! The generator's activity, decoded through the real XDR path, folded by the projection (which
//! the golden fixtures validate against the real contract), must match the `Stream` entries the
//! generator wrote after every transaction: the simulated network follows the contract's rules.

use fluxora::chain::meta::network_id;
use fluxora::chain::{ContractFilter, LedgerSource, StreamChange};
use fluxora::projection::{EventContext, Projection};
use fluxora::sim::generator::{GenConfig, Generator};
use fluxora::sim::http::SimState;
use fluxora::sim::source::SimSource;

#[tokio::test]
async fn generated_streams_follow_the_contract_rules() {
    for seed in [1u64, 2, 3] {
        let mut g = Generator::new(GenConfig {
            seed,
            txs_per_ledger: 8,
            target_streams: 60,
            ..GenConfig::default()
        });
        let mut chain = g.empty_chain();
        for _ in 0..800 {
            g.next_ledger(&mut chain).unwrap();
            if seed == 2 && chain.ledgers().len() % 97 == 0 {
                g.fork(&mut chain, 4).unwrap();
            }
        }
        let first = chain.first_seq();
        let tip = chain.tip().unwrap().seq;
        let _ = network_id(&chain.passphrase);
        let _ = ContractFilter::from_bytes(g.contract);
        let source = SimSource::new(SimState::new(chain), g.contract);
        let mut p = Projection::default();
        let mut compared = 0;
        let mut failures: Vec<String> = Vec::new();
        let mut seq = first;
        while seq <= tip {
            for b in source.fetch_ledgers(seq, 200).await.unwrap() {
                for tx in &b.txs {
                    let ctx = EventContext {
                        ledger: b.sequence,
                        close_time: b.close_time,
                        tx_hash: &tx.tx_hash,
                        function: tx.function.as_deref(),
                    };
                    for e in &tx.events {
                        p.apply(&ctx, &e.decoded);
                    }
                    for c in &tx.stream_changes {
                        let entry = match &c.change {
                            StreamChange::Upsert { entry, .. } => Some(entry.as_ref()),
                            StreamChange::Removed => None,
                            StreamChange::Unrecognized { reason, .. } => {
                                panic!("seed {seed}: unrecognized Stream entry: {reason}")
                            }
                        };
                        if !p.observe_entry(b.sequence, c.stream_id, entry) {
                            failures.push(format!(
                                "ledger {} {:?} stream {}: {:?}",
                                b.sequence,
                                tx.function,
                                c.stream_id,
                                p.streams
                                    .get(&c.stream_id)
                                    .map(|s| s.verification.reasons.clone())
                            ));
                        }
                        compared += 1;
                    }
                }
                seq = b.sequence + 1;
            }
        }
        let bad: Vec<String> = p
            .streams
            .values()
            .filter(|s| !s.verification.reasons.is_empty())
            .map(|s| format!("stream {}: {:?}", s.stream_id, s.verification.reasons))
            .collect();
        assert!(bad.is_empty(), "seed {seed}: {}", bad.join("\n"));
        assert!(p.skipped.is_empty(), "seed {seed}: {:?}", p.skipped);
        assert!(
            failures.is_empty(),
            "seed {seed}: {} failed comparisons, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(
            compared > 1_000,
            "seed {seed}: only {compared} entries compared"
        );
    }
}
