//! What the node's servers and workers share: the store, the control
//! plane's handle, the signer, metrics, the peer channels. Built once by
//! the composition root ([`crate::open_with`]), in dependency order.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use rondo_core::{NodeId, signing::UrlSigner};
use rondo_proto::storage::v1::storage_node_client::StorageNodeClient;
use tonic::transport::Channel;

use crate::config::Config;
use crate::error::Result;
use crate::ring::RingHandle;
use crate::store::Store;
use crate::{gateways, metrics, net};

/// Everything the node's servers share.
pub struct NodeState {
    pub node_id: NodeId,
    pub config: Config,
    pub public_url: String,
    pub store: Arc<Store>,
    pub signer: UrlSigner,
    /// Checks the session a gateway proposes for ([`crate::acting`]).
    pub sessions: rondo_core::session::SessionSigner,
    /// Password checks, bounded per core.
    pub passwords: crate::passwords::Checker,
    pub metrics: metrics::Metrics,
    pub registry: Registry,
    /// Wakes the outbox relay.
    pub outbox: Arc<tokio::sync::Notify>,
    /// Wakes the resync worker when a layout change is applied.
    pub layout_changed: Arc<tokio::sync::Notify>,
    /// The control plane.
    pub ring: RingHandle,
    /// Gateways that checked in lately (soft state, never persisted).
    pub gateways: gateways::Gateways,
    /// One kept gRPC channel per peer, for blob copies and fetches.
    pub channels: net::Channels,
    /// How peers are reached and where the control plane runs.
    pub net: net::Net,
    /// The hash of the bearer token `/metrics` wants (none: it is off).
    pub metrics_token: Option<blake3::Hash>,
    /// Blobs to re-hash at once (reported by peers or by streams).
    pub suspects: crate::suspects::Suspects,
    /// The resync worker's byte rate (`resync_rate_bytes`; 0: no limit).
    pub resync_limit: crate::pace::RateLimit,
    /// The scrub's byte rate (`scrub_rate_bytes`).
    pub scrub_limit: crate::pace::RateLimit,
    /// The partitions in which this node owns blobs it lacks, at the
    /// resync worker's last pass (reported by `Health`).
    pub lacking: std::sync::Mutex<Vec<u32>>,
    /// Copies taken ahead of their records (`ReplicateBlob`), with the
    /// time of the latest take: each is released a grace after its latest
    /// take unless a record uses it by then.
    pub copies_taken:
        std::sync::Mutex<std::collections::HashMap<rondo_core::ContentHash, tokio::time::Instant>>,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl NodeState {
    /// A storage client of the node at `url`, over its kept channel.
    pub fn peer(&self, url: &str) -> Result<StorageNodeClient<Channel>> {
        self.channels.storage(url, &self.net)
    }

    /// The background byte rates in force.
    pub fn rates(&self) -> rondo_proto::storage::v1::Rates {
        rondo_proto::storage::v1::Rates {
            resync_rate_bytes: self.resync_limit.rate(),
            scrub_rate_bytes: self.scrub_limit.rate(),
        }
    }

    /// Sets the gauges from the store.
    pub fn refresh_gauges(&self) {
        self.metrics.refresh(&self.store);
    }
}
