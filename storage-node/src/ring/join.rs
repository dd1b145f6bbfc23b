//! Joining by itself (`[ring] auto_join`): a node started with seeds and a
//! certificate of the cluster CA asks a seed to add it to the layout
//! (`StorageNode.Join`), instead of waiting for `rondo node add`. The seed
//! orders the addition, without a vote (votes are the operator's), then
//! the node's zone and capacity, so that placement gives it its share.

use std::sync::Arc;
use std::time::Duration;

use rondo_core::NodeId;
use rondo_proto::storage::v1 as pb;
use rondo_ring::{Layout, LayoutChange, LayoutOp};

use super::{RingHandle, Shared};
use crate::error::{Error, Result};
use crate::net::Net;

/// How many changes ordered by others a join lets pass before it gives up
/// (the joiner asks again later).
const ATTEMPTS: usize = 8;

/// Orders the next step `node` needs to be in the layout at `addr` with
/// `zone` and `capacity` (the seed's side): its addition, or, once it is a
/// member, its storage; against the newest layout this node applied, again
/// when another change came first. One step per request: once added, the
/// joiner must start its ring before the next layout change can be
/// ordered (the ring re-forms with it), so it asks for its storage from
/// there ([`settle`]). Answers the layout after the step and the applied
/// seq.
pub async fn join(
    ring: &RingHandle,
    node: NodeId,
    addr: String,
    zone: String,
    capacity: u64,
) -> Result<(Layout, u64)> {
    for _ in 0..ATTEMPTS {
        let status = ring.status();
        let layout = status
            .layout
            .map(super::wire::layout_from_wire)
            .transpose()?
            .unwrap_or_default();
        let op = match layout.nodes.get(&node) {
            None => LayoutOp::Add {
                node,
                addr: addr.clone(),
                voter: false,
            },
            // Its storage, only while it has never held a placement's
            // share (never synced): afterwards zone and capacity are the
            // operator's, and a node must not undo a drain by asking.
            Some(m)
                if (m.zone != zone || m.capacity != capacity)
                    && !layout.synced.contains_key(&node) =>
            {
                LayoutOp::SetStorage {
                    node,
                    zone: zone.clone(),
                    capacity,
                    placement: None,
                }
            }
            Some(m) if m.zone != zone || m.capacity != capacity => {
                return Err(Error::NotAllowed(format!(
                    "node {node} is a member that has held a share: its zone and capacity are set by an operator (rondo node set)"
                )));
            }
            Some(_) => return Ok((layout, status.last_applied_seq)),
        };
        tracing::info!(%node, %addr, ?op, "ordering a join");
        let change = LayoutChange {
            expect_epoch: layout.epoch,
            proposal: String::new(),
            op,
        };
        match ring.propose_layout(change).await {
            Ok(done) => return Ok(done),
            Err(Error::StaleLayout(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Unavailable(format!(
        "the layout changed {ATTEMPTS} times while node {node} joined; it asks again"
    )))
}

/// How long a joining node waits between two requests.
pub(super) const ASK_AGAIN: Duration = Duration::from_secs(3);

/// What this node asks for (`[ring]` `grpc_url`, `zone`, `capacity`).
fn request(config: &crate::Config) -> pb::JoinRequest {
    let ring = &config.ring;
    pb::JoinRequest {
        grpc_url: ring
            .grpc_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", config.grpc_addr)),
        zone: ring
            .zone
            .clone()
            .unwrap_or_else(|| rondo_ring::DEFAULT_ZONE.into()),
        capacity: ring.capacity.unwrap_or(rondo_ring::DEFAULT_CAPACITY),
    }
}

/// What a request to join came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Asked {
    /// A seed ordered the next step.
    Done,
    /// None could now; ask again later.
    Again,
    /// A seed refused for good (joins are off, or the storage is the
    /// operator's now): asking again changes nothing.
    Refused,
}

/// Asks the seeds, one after the other until one has ordered it, to add
/// this node to the layout with its zone and capacity (the joiner's side),
/// and logs why not.
pub(super) async fn ask(net: &Net, config: &crate::Config) -> Asked {
    let request = request(config);
    for seed in &config.ring.seeds {
        let Ok(endpoint) = crate::net::endpoint(
            seed,
            crate::net::Link::Probe {
                connect: Duration::from_secs(1),
                // The seed probes this node back and orders two changes.
                answer: Duration::from_secs(30),
            },
        ) else {
            continue;
        };
        let Ok(channel) = net.connect(endpoint, crate::net::Expect::AnyNode).await else {
            continue;
        };
        let mut client = pb::storage_node_client::StorageNodeClient::new(channel);
        match client.join(request.clone()).await {
            Ok(_) => {
                tracing::info!(%seed, url = %request.grpc_url, "asked to join: in the layout");
                return Asked::Done;
            }
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                tracing::error!(%seed, error = %status.message(), "asked to join: refused");
                return Asked::Refused;
            }
            Err(status) => {
                tracing::warn!(%seed, error = %status.message(), "asked to join: not yet");
            }
        }
    }
    Asked::Again
}

/// After a node that joined by itself starts its ring: once it is in a
/// quorate ring, asks until the layout it applied gives it the zone and
/// capacity it asked for. Only at the start that joined: later, an
/// operator may have changed them.
pub(super) async fn settle(net: Net, config: crate::Config, me: NodeId, shared: Arc<Shared>) {
    let want = request(&config);
    loop {
        tokio::time::sleep(ASK_AGAIN).await;
        let status = shared.status.lock().ok().map(|s| s.clone());
        let Some(status) = status.filter(|s| s.quorate) else {
            continue;
        };
        let Some(layout) = status
            .layout
            .and_then(|l| super::wire::layout_from_wire(l).ok())
        else {
            continue;
        };
        match layout.nodes.get(&me) {
            Some(m) if m.zone == want.zone && m.capacity == want.capacity => {
                tracing::info!(zone = %m.zone, capacity = m.capacity, "joined with the storage asked for");
                return;
            }
            // Removed meanwhile: nothing to settle.
            None if layout.epoch > 0 => return,
            _ => {
                if ask(&net, &config).await == Asked::Refused {
                    return;
                }
            }
        }
    }
}
