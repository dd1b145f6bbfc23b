//! The control plane's links to its peers: one sender task per peer that
//! carries ring messages in order (and marks the link down or up), and the
//! fetch of a snapshot from a peer.

use std::collections::BTreeMap;
use std::time::Duration;

use rondo_core::NodeId;
use rondo_proto::ring::v1 as proto;
use rondo_ring::{Layout, LogPos, RingId};
use tokio::sync::mpsc::UnboundedSender;

use super::{Cmd, Shared};
use crate::error::{Error, Result};
use crate::net::{Link, Net};

/// One sender task per peer with an address in the layout. Senders are
/// never dropped while the node runs: a member removed from the layout may
/// still be in the current ring until it re-forms.
#[derive(Default)]
pub(super) struct Senders {
    by_peer: BTreeMap<NodeId, (String, tokio::sync::mpsc::Sender<proto::Envelope>)>,
    /// The layout last synced: (epoch, number of nodes). The base layout
    /// and the genesis both have epoch 0, with other nodes.
    synced: Option<(u64, usize)>,
}

impl Senders {
    /// Starts senders for the layout's new nodes (or new addresses) and
    /// publishes the peers (other nodes of the layout) to the handle.
    pub(super) fn sync(
        &mut self,
        layout: &Layout,
        me: NodeId,
        net: &Net,
        runtime: &tokio::runtime::Handle,
        cmds: &UnboundedSender<Cmd>,
        shared: &Shared,
    ) {
        let now = (layout.epoch, layout.nodes.len());
        if self.synced == Some(now) {
            return;
        }
        self.synced = Some(now);
        for (id, member) in &layout.nodes {
            if *id == me
                || self
                    .by_peer
                    .get(id)
                    .is_some_and(|(url, _)| *url == member.addr)
            {
                continue;
            }
            let Ok(endpoint) = crate::net::endpoint(&member.addr, Link::Ring) else {
                tracing::warn!(peer = %id, addr = %member.addr, "peer address is not a URL");
                continue;
            };
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            // The channel is made on the runtime that runs the sender (its
            // connection task runs there, not on the driver's thread).
            runtime.spawn(send_loop(*id, net.clone(), endpoint, rx, cmds.clone()));
            self.by_peer.insert(*id, (member.addr.clone(), tx));
        }
        if let Ok(mut p) = shared.peers.lock() {
            *p = layout
                .nodes
                .iter()
                .filter(|(id, _)| **id != me)
                .map(|(id, m)| (*id, m.addr.clone()))
                .collect();
        }
    }

    pub(super) fn get(&self, peer: &NodeId) -> Option<&tokio::sync::mpsc::Sender<proto::Envelope>> {
        self.by_peer.get(peer).map(|(_, tx)| tx)
    }
}

/// How often a peer whose link is down is probed.
const PROBE_EVERY: Duration = Duration::from_millis(300);

/// Sends one peer's messages in order; drops what cannot be delivered.
///
/// A message that times out or is refused marks the link down and tells the
/// core (`Cmd::Link`); while it is down, messages to the peer are dropped
/// (the protocol retransmits what matters) and the peer is probed with
/// `Ping` until it answers, which marks the link up again.
async fn send_loop(
    peer: NodeId,
    net: Net,
    endpoint: tonic::transport::Endpoint,
    mut rx: tokio::sync::mpsc::Receiver<proto::Envelope>,
    core: UnboundedSender<Cmd>,
) {
    let mut client =
        proto::ring_client::RingClient::new(net.lazy(endpoint, crate::net::Expect::Node(peer)));
    let mut up = true;
    // A deadline, not a fresh sleep per message: messages keep coming while
    // the link is down and must not postpone the probe.
    let mut next_probe = tokio::time::Instant::now();
    loop {
        if up {
            let Some(envelope) = rx.recv().await else {
                return;
            };
            let call = client.deliver(envelope);
            let delivered = match tokio::time::timeout(Duration::from_secs(1), call).await {
                Ok(Ok(_)) => true,
                Ok(Err(status)) => {
                    tracing::debug!(%peer, %status, "ring message not delivered");
                    false
                }
                Err(_) => {
                    tracing::debug!(%peer, "ring message timed out");
                    false
                }
            };
            if !delivered {
                up = false;
                next_probe = tokio::time::Instant::now() + PROBE_EVERY;
                if core.send(Cmd::Link(peer, false)).is_err() {
                    return;
                }
            }
        } else {
            tokio::select! {
                envelope = rx.recv() => if envelope.is_none() { return },
                () = tokio::time::sleep_until(next_probe) => {
                    next_probe = tokio::time::Instant::now() + PROBE_EVERY;
                    let ping = client.ping(proto::Received {});
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), ping).await {
                        up = true;
                        if core.send(Cmd::Link(peer, true)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Reads `from`'s applied state as of `at` and hands it to the driver,
/// which installs it if the core still wants it (PROTOCOL.md,
/// "Snapshots").
pub(super) async fn fetch_snapshot(
    net: Net,
    url: String,
    from: NodeId,
    ring: RingId,
    at: LogPos,
    layout: Layout,
    core: UnboundedSender<Cmd>,
) -> Result<()> {
    use futures::StreamExt;
    let unavailable = |e: String| Error::Unavailable(e);
    let channel = net
        .connect(
            crate::net::endpoint(&url, Link::Bulk)?,
            crate::net::Expect::Node(from),
        )
        .await
        .map_err(|e| unavailable(format!("connect to {url}: {e}")))?;
    let mut client = proto::ring_client::RingClient::new(channel)
        .max_decoding_message_size(super::MAX_RING_MESSAGE);
    let mut stream = client
        .read_snapshot(proto::ReadSnapshotRequest { at_seq: at.seq })
        .await
        .map_err(|e| unavailable(format!("snapshot from {from}: {}", e.message())))?
        .into_inner();
    let mut rows = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unavailable(format!("snapshot from {from}: {e}")))?;
        rows.extend(chunk.rows);
    }
    core.send(Cmd::SnapshotReady {
        from,
        ring,
        at,
        layout,
        rows,
    })
    .map_err(|_| unavailable("control plane stopped".into()))
}
