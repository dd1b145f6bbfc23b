//! How the node reaches its peers, and where its control plane runs.
//!
//! In production the control plane runs on a thread of its own (its redb
//! commits block) and gRPC channels use TCP. The deterministic simulation
//! (`storage-node/tests/turmoil.rs`) runs the same code as tasks of a
//! simulated host, with the simulator's sockets, its clock and a seeded
//! random source: [`Transport::Sim`]. Either way every connection is
//! mutual TLS with the node's cluster certificate.

use std::sync::Arc;

pub use rondo_proto::mtls::{ClusterTls, Dial, Expect, Io, Links};
use tonic::transport::{Channel, Endpoint};

/// How the node's bytes travel and where its control plane runs.
#[derive(Clone, Default)]
pub enum Transport {
    /// TCP; the control plane on its own thread.
    #[default]
    Tcp,
    /// A simulated network: streams from `dial`; the control plane as a
    /// task of the current runtime (the simulator's); `seed` for every
    /// random choice of the control plane.
    Sim { dial: Dial, seed: u64 },
}

/// The node's network: its transport and its cluster certificate. Every
/// channel it opens is mutual TLS ([`rondo_proto::mtls`]).
#[derive(Clone)]
pub struct Net {
    transport: Transport,
    links: Links,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Tcp => f.write_str("Tcp"),
            Transport::Sim { seed, .. } => write!(f, "Sim {{ seed: {seed} }}"),
        }
    }
}

impl Net {
    pub fn new(transport: Transport, tls: ClusterTls) -> Net {
        let dial = match &transport {
            Transport::Tcp => rondo_proto::mtls::tcp_dial(),
            Transport::Sim { dial, .. } => dial.clone(),
        };
        Net {
            transport,
            links: Links::new(Arc::new(tls), dial),
        }
    }

    /// This node's certificate and the cluster CA.
    pub fn tls(&self) -> &ClusterTls {
        self.links.tls()
    }

    /// A channel that connects on first use.
    pub fn lazy(&self, endpoint: Endpoint, expect: Expect) -> Channel {
        self.links.lazy(endpoint, expect)
    }

    /// A channel connected now.
    pub async fn connect(
        &self,
        endpoint: Endpoint,
        expect: Expect,
    ) -> Result<Channel, tonic::transport::Error> {
        self.links.connect(endpoint, expect).await
    }

    /// The random source of the control plane (timer jitter).
    pub fn rng(&self) -> rand::rngs::StdRng {
        use rand::SeedableRng;
        match &self.transport {
            Transport::Tcp => rand::rngs::StdRng::from_os_rng(),
            Transport::Sim { seed, .. } => rand::rngs::StdRng::seed_from_u64(*seed),
        }
    }

    pub fn is_sim(&self) -> bool {
        matches!(self.transport, Transport::Sim { .. })
    }
}

pub use rondo_proto::channel::{CONNECTION_WINDOW, Link, MAX_STORAGE_MESSAGE, STREAM_WINDOW};

/// The endpoint of a peer at `url`, set up for `link`
/// ([`rondo_proto::channel::endpoint`]).
pub fn endpoint(url: &str, link: Link) -> crate::Result<Endpoint> {
    rondo_proto::channel::endpoint(url, link)
        .map_err(|e| crate::Error::Unavailable(format!("bad peer URL {url}: {e}")))
}

/// One kept gRPC channel per peer URL, for blob copies and fetches: a
/// channel multiplexes calls on one HTTP/2 connection and reconnects by
/// itself.
#[derive(Debug, Default)]
pub struct Channels {
    by_url: std::sync::Mutex<std::collections::HashMap<String, Channel>>,
}

impl Channels {
    /// A storage client of the node at `url` over the kept channel (made on
    /// first use, connected lazily, with the bulk-transfer windows).
    pub fn storage(
        &self,
        url: &str,
        net: &Net,
    ) -> crate::Result<rondo_proto::storage::v1::storage_node_client::StorageNodeClient<Channel>>
    {
        let mut channels = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(url) {
            Some(c) => c.clone(),
            None => {
                let c = net.lazy(endpoint(url, Link::Bulk)?, Expect::AnyNode);
                channels.insert(url.to_string(), c.clone());
                c
            }
        };
        Ok(
            rondo_proto::storage::v1::storage_node_client::StorageNodeClient::new(channel)
                .max_decoding_message_size(MAX_STORAGE_MESSAGE),
        )
    }
}
