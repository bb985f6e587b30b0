//! Operator commands over the store: `rebuild`, `verify`, `stream` (time travel).

use std::io::IsTerminal;

use serde::Serialize;

use crate::projection::rebuild::{check_chain, compare, rebuild, ChainCheck, Comparison};
use crate::projection::view::{stream_object, ViewOptions};
use crate::store::Store;

/// Errors of the operator commands.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Rebuild(#[from] crate::projection::rebuild::RebuildError),
    #[error("stream {0} is not in the store")]
    UnknownStream(u64),
    #[error("stream {id} did not exist as of ledger {ledger}")]
    NotYet { id: u64, ledger: u32 },
    #[error("ledger {ledger} is not stored (the store holds {range})")]
    UnknownLedger { ledger: u32, range: String },
}

/// What `rebuild` and `verify` print.
#[derive(Debug, Serialize)]
pub struct RebuildSummary {
    pub ledgers: u64,
    pub events: u64,
    pub entries: u64,
    pub streams: usize,
    pub versions: usize,
    pub skipped: u64,
    pub mismatches: u64,
    pub events_per_sec: u64,
    pub elapsed_ms: u128,
    /// How the rebuild compares with the stored (live) projection.
    pub comparison: Comparison,
    /// Whether the stored projection was replaced by the rebuild.
    pub written: bool,
}

fn progress_bar(what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{bar:30}} {{pos}}/{{len}} ledgers ({{per_sec}}, ETA {{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

/// Recomputes every projection from the event store, compares with the stored one and, unless
/// `dry_run`, replaces it.
pub async fn run_rebuild(store: &dyn Store, dry_run: bool) -> Result<RebuildSummary, OpsError> {
    let bar = progress_bar("rebuild");
    let mut report = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let rebuilt = rebuild(store, &mut report).await?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let comparison = compare(store, &rebuilt).await?;
    for d in &comparison.listed {
        tracing::warn!(difference = %d, "stored projection differs from the rebuild");
    }
    let written = !dry_run;
    if written {
        store
            .replace_projection(&rebuilt.versions()?, &rebuilt.flags)
            .await?;
    }
    let secs = rebuilt.elapsed.as_secs_f64();
    Ok(RebuildSummary {
        ledgers: rebuilt.ledgers,
        events: rebuilt.events,
        entries: rebuilt.entries,
        streams: rebuilt.projector.projection().streams.len(),
        versions: rebuilt.snapshots.len(),
        skipped: rebuilt.projector.skipped_total(),
        mismatches: rebuilt.projector.projection().mismatches,
        events_per_sec: rate(rebuilt.events, secs),
        elapsed_ms: rebuilt.elapsed.as_millis(),
        comparison,
        written,
    })
}

/// Integer rate without floating point on amounts (this is a throughput figure).
fn rate(n: u64, secs: f64) -> u64 {
    if secs <= 0.0 {
        return n;
    }
    (n as f64 / secs) as u64
}

/// What `verify` prints.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub chain: ChainCheck,
    pub projection: RebuildSummary,
}

/// Re-checks the stored hash chain and that the projection equals a rebuild. Writes nothing.
pub async fn run_verify(store: &dyn Store) -> Result<VerifyReport, OpsError> {
    let chain = check_chain(store).await?;
    let projection = run_rebuild(store, true).await?;
    Ok(VerifyReport {
        ok: chain.problems.is_empty() && projection.comparison.differences == 0,
        chain,
        projection,
    })
}

/// The client stream object of `id`, now or as of a ledger, amounts at `at` (default: the
/// ledger's close time when `ledger` is given, else now).
pub async fn stream_view(
    store: &dyn Store,
    id: u64,
    ledger: Option<u32>,
    at: Option<u64>,
    opts: &ViewOptions,
) -> Result<serde_json::Value, OpsError> {
    let (state, default_at) = match ledger {
        Some(l) => {
            let Some(rec) = store.ledger(l).await? else {
                let range = match (store.first_ledger().await?, store.tip().await?) {
                    (Some(a), Some(b)) => format!("ledgers {a}..={}", b.sequence),
                    _ => "no ledgers".to_string(),
                };
                return Err(OpsError::UnknownLedger { ledger: l, range });
            };
            let s = store
                .stream_at(id, l)
                .await?
                .ok_or(OpsError::NotYet { id, ledger: l })?;
            (s, u64::try_from(rec.close_time).unwrap_or(0))
        }
        None => (
            store.stream(id).await?.ok_or(OpsError::UnknownStream(id))?,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        ),
    };
    let obj = stream_object(&state, at.unwrap_or(default_at), opts);
    Ok(serde_json::json!({ "stream": obj, "state": state }))
}
