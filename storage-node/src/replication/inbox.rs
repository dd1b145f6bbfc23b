//! The receiving side of pushes (`DeliverBlob`): another node's outbox
//! asks this one to hold the blobs of songs it proposed. Each row is
//! sorted in one transaction (done before, done already, or to pull) and
//! recorded in the inbox with its effect, so a row sent again is a no-op.

use std::sync::Arc;

use rondo_core::{ContentHash, NodeId};
use rondo_proto::storage::v1::deliver_blob_reply::Outcome;

use super::transfer::pull;
use crate::error::Result;
use crate::state::NodeState;
use crate::store::{Delivered, Delivery};

/// One pushed row: (origin's outbox seq, blob, ring entry of its song).
pub type Row = (u64, ContentHash, u64);

/// Carries out a batch of rows from `origin`, whose outbox holds nothing
/// below `low_water`: one outcome per row, in order. A row whose entry is
/// not applied here yet is `NotApplied` (whether a song still wants the
/// blob is known only once its entry is applied); a row whose blob could
/// not be pulled is `Failed`. Both stay in the origin's outbox.
pub async fn deliver(
    state: &Arc<NodeState>,
    origin: NodeId,
    low_water: u64,
    rows: Vec<Row>,
) -> Result<Vec<Outcome>> {
    let st = state.clone();
    let (applied, _) = tokio::task::spawn_blocking(move || st.store.ring_applied()).await??;
    let ready: Vec<(u64, ContentHash)> = rows
        .iter()
        .filter(|(_, _, entry)| *entry <= applied)
        .map(|(n, h, _)| (*n, *h))
        .collect();
    let st = state.clone();
    let sorted =
        tokio::task::spawn_blocking(move || st.store.deliver_batch(origin, low_water, &ready))
            .await??;
    let mut decided = sorted.into_iter();
    let mut outcomes = Vec::with_capacity(rows.len());
    for (seq, hash, entry) in rows {
        if entry > applied {
            outcomes.push(Outcome::NotApplied);
            continue;
        }
        let done = match decided.next().flatten() {
            Some(d) => Ok(d),
            None => {
                let delivery = Delivery {
                    origin,
                    outbox_seq: seq,
                    low_water,
                };
                pull(state, &hash, origin, Some(delivery), None)
                    .await
                    .map(|(_, d)| d)
            }
        };
        outcomes.push(match done {
            Ok(Delivered::Stored) => {
                state.metrics.inbox_applied.inc();
                state.outbox.notify_one();
                Outcome::Stored
            }
            Ok(Delivered::Held) => {
                state.metrics.inbox_applied.inc();
                Outcome::Held
            }
            Ok(Delivered::Duplicate) => {
                state.metrics.inbox_duplicates.inc();
                tracing::info!(%hash, %origin, seq, "duplicate delivery ignored");
                Outcome::Duplicate
            }
            Err(e) => {
                tracing::debug!(%hash, %origin, seq, error = %e, "pushed blob not fetched");
                Outcome::Failed
            }
        });
    }
    // The crash point is after a row was carried out (the blob stored, or
    // the inbox row written) and before the answer; a batch whose rows all
    // wait (`NotApplied`) or failed carried nothing out.
    if outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Stored | Outcome::Held))
    {
        crate::failpoint("deliver-before-ack");
    }
    state.refresh_gauges();
    Ok(outcomes)
}
