//! Down is not out (PROTOCOL.md, "Down is not out"): a node that owns
//! partitions and has been absent from the quorate ring for the down-out
//! interval is marked out of placement by the ring's representative, so
//! that its partitions get new owners and are copied back to R; once it
//! is back in the ring for `mark_in_after`, it is marked in again.
//!
//! Every node notes, by its own clock, since when each member of the
//! layout has been absent from (or present in) its ring, while that ring is
//! operational and quorate (a minority's ring would see the majority
//! absent); out of such a ring it forgets its record. Only the
//! representative of a quorate ring acts, so a ring whose representative
//! changes acts on the new one's record, which began no earlier than that
//! node's last entry into a quorate ring: an out comes late, never early. The guards (never below R nodes in,
//! at most one automatic out, 75 % of the capacity in, the zones the
//! replicas span) are checked again in `Layout::apply`, so a proposal that
//! races another change is refused the same way on every node. Automatic
//! changes move data only; they never change who votes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rondo_core::NodeId;
use rondo_ring::{LayoutChange, LayoutOp, Standing};
use tokio::time::Instant;

use crate::error::Error;
use crate::state::NodeState;

/// How often the watcher looks at the ring: often enough for intervals of
/// seconds in tests.
fn tick(down_out: Duration) -> Duration {
    (down_out / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Since when each member of the layout has been absent from, or present
/// in, this node's ring.
#[derive(Debug, Default)]
struct Seen {
    absent: BTreeMap<NodeId, Instant>,
    present: BTreeMap<NodeId, Instant>,
}

impl Seen {
    /// Notes the ring's `members` among the layout's `nodes` at `now`.
    fn note(&mut self, nodes: impl Iterator<Item = NodeId>, members: &[NodeId], now: Instant) {
        let mut absent = BTreeMap::new();
        let mut present = BTreeMap::new();
        for n in nodes {
            if members.contains(&n) {
                present.insert(n, *self.present.get(&n).unwrap_or(&now));
            } else {
                absent.insert(n, *self.absent.get(&n).unwrap_or(&now));
            }
        }
        self.absent = absent;
        self.present = present;
    }
}

/// Runs the watcher until `stop` turns true.
pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let down_out = state.config.down_out_interval();
    let mark_in = state.config.mark_in_after();
    let mut seen = Seen::default();
    // The last refusal logged, so that a guard holding for hours logs once.
    let mut refused: Option<(u64, NodeId)> = None;
    let mut withheld = std::collections::BTreeSet::new();
    loop {
        let next = next_change(&state, &mut seen, down_out, mark_in, &mut withheld);
        if let Some((node, standing, change)) = next {
            let key = (change.expect_epoch, node);
            match state.ring.propose_layout(change).await {
                Ok((layout, _)) => {
                    let standing = rondo_ring::standing_name(standing);
                    tracing::warn!(%node, standing, epoch = layout.epoch, "placement standing changed automatically");
                    state.metrics.auto_standing_changes.inc();
                }
                Err(e @ Error::StaleLayout(_)) => {
                    tracing::debug!(error = %e, "automatic standing change lost to another change");
                }
                Err(e) => {
                    if refused != Some(key) {
                        tracing::info!(%node, error = %e, "automatic standing change not made");
                        refused = Some(key);
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(tick(down_out)) => {}
        }
    }
}

/// The standing change to propose now, if this node is the representative
/// of a quorate ring and a node is due: the longest-absent node that may
/// be marked out once it has been absent for `down_out`, if the guards let
/// it go (else it is counted as withheld), or else a node out
/// automatically that has been back for `mark_in`.
fn next_change(
    state: &NodeState,
    seen: &mut Seen,
    down_out: Duration,
    mark_in: Duration,
    withheld: &mut std::collections::BTreeSet<(u64, NodeId)>,
) -> Option<(NodeId, Standing, LayoutChange)> {
    let status = state.ring.status();
    let layout = state.store.ring_layout().ok().flatten()?;
    let members: Vec<NodeId> = status
        .members
        .iter()
        .filter_map(|m| m.parse().ok())
        .collect();
    let now = Instant::now();
    if status.phase != "operational" || !status.quorate {
        // Only a quorate ring's view counts: a minority's ring sees the
        // majority "absent", and a record kept through a gap would date an
        // absence from before it. The record starts again.
        *seen = Seen::default();
        return None;
    }
    seen.note(layout.nodes.keys().copied(), &members, now);
    if status.ring_rep != state.node_id.to_string() {
        return None;
    }
    let change = |node: NodeId, standing: Standing| {
        let change = LayoutChange {
            expect_epoch: layout.epoch,
            op: LayoutOp::SetStanding {
                node,
                standing,
                placement: None,
            },
            proposal: String::new(),
        };
        (node, standing, change)
    };
    withheld.retain(|(epoch, _)| *epoch == layout.epoch);
    let mut due: Vec<(Instant, NodeId)> = seen
        .absent
        .iter()
        .filter(|(n, since)| layout.may_auto_out(**n) && now - **since >= down_out)
        .map(|(n, since)| (*since, *n))
        .collect();
    due.sort();
    // The longest absent first; one a guard holds back does not hold back
    // the next (a zone's last node may stay while another may go).
    for (_, node) in due {
        let (node, standing, change) = change(node, Standing::Out { auto: true });
        // The guards, checked here first so that a held-back out orders
        // nothing (`apply` checks them again).
        match layout.plan(change.op.clone()) {
            Ok(_) => return Some((node, standing, change)),
            Err(refusal) => {
                let guard = match &refusal {
                    rondo_ring::Refusal::Guarded(g, _) => g.name(),
                    _ => "placement",
                };
                state
                    .metrics
                    .auto_outs_withheld
                    .get_or_create(&crate::metrics::GuardLabel {
                        guard: guard.into(),
                    })
                    .inc();
                if !withheld.contains(&(layout.epoch, node)) {
                    tracing::warn!(%node, %refusal, "a node is down past the down-out interval, but stays in");
                    withheld.insert((layout.epoch, node));
                }
            }
        }
    }
    let back = layout
        .auto_out()
        .filter(|n| seen.present.get(n).is_some_and(|s| now - *s >= mark_in))?;
    Some(change(back, Standing::In))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn absence_and_presence_are_dated_from_their_first_sight() {
        let (a, b) = (
            NodeId(uuid::Uuid::from_u128(1)),
            NodeId(uuid::Uuid::from_u128(2)),
        );
        let mut seen = Seen::default();
        let t0 = Instant::now();
        seen.note([a, b].into_iter(), &[a], t0);
        tokio::time::advance(Duration::from_secs(5)).await;
        let t1 = Instant::now();
        seen.note([a, b].into_iter(), &[a], t1);
        assert_eq!(seen.absent[&b], t0, "absent since first seen absent");
        assert_eq!(seen.present[&a], t0);
        // Back: present from now, its absence forgotten; a member that
        // left the layout is forgotten too.
        seen.note([a, b].into_iter(), &[a, b], t1);
        assert_eq!(seen.present[&b], t1);
        assert!(seen.absent.is_empty());
        seen.note([a].into_iter(), &[a], t1);
        assert!(!seen.present.contains_key(&b));
    }
}
