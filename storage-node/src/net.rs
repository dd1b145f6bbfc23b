//! How the node reaches its peers, and where its control plane runs.
//!
//! In production the control plane runs on a thread of its own (its redb
//! commits block) and gRPC channels use TCP. The deterministic simulation
//! (`storage-node/tests/turmoil.rs`) runs the same code as tasks of a
//! simulated host, with the simulator's sockets, its clock and a seeded
//! random source: [`Net::Sim`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint};

/// A byte stream to a peer.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens a stream to `host:port`.
pub type Dial = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send>>
        + Send
        + Sync,
>;

/// The node's network and scheduling.
#[derive(Clone, Default)]
pub enum Net {
    /// TCP; the control plane on its own thread.
    #[default]
    Real,
    /// A simulated network: streams from `dial`; the control plane as a
    /// task of the current runtime (the simulator's); `seed` for every
    /// random choice of the control plane.
    Sim { dial: Dial, seed: u64 },
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Net::Real => f.write_str("Real"),
            Net::Sim { seed, .. } => write!(f, "Sim {{ seed: {seed} }}"),
        }
    }
}

impl Net {
    /// A channel that connects on first use.
    pub fn lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            Net::Real => endpoint.connect_lazy(),
            Net::Sim { dial, .. } => endpoint.connect_with_connector_lazy(connector(dial.clone())),
        }
    }

    /// A channel connected now.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Net::Real => endpoint.connect().await,
            Net::Sim { dial, .. } => {
                endpoint
                    .connect_with_connector(connector(dial.clone()))
                    .await
            }
        }
    }

    /// The random source of the control plane (timer jitter).
    pub fn rng(&self) -> rand::rngs::StdRng {
        use rand::SeedableRng;
        match self {
            Net::Real => rand::rngs::StdRng::from_os_rng(),
            Net::Sim { seed, .. } => rand::rngs::StdRng::seed_from_u64(*seed),
        }
    }

    pub fn is_sim(&self) -> bool {
        matches!(self, Net::Sim { .. })
    }
}

pub use rondo_proto::channel::{CONNECTION_WINDOW, Link, MAX_STORAGE_MESSAGE, STREAM_WINDOW};

/// The endpoint of a peer at `url`, set up for `link`
/// ([`rondo_proto::channel::endpoint`]).
pub fn endpoint(url: &str, link: Link) -> crate::Result<Endpoint> {
    rondo_proto::channel::endpoint(url, link)
        .map_err(|e| crate::Error::Unavailable(format!("bad peer URL {url}: {e}")))
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<hyper_util::rt::TokioIo<Box<dyn Io>>>> + Send>>;

fn connector(
    dial: Dial,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<Box<dyn Io>>,
    Error = std::io::Error,
    Future = Connecting,
> + Clone {
    tower::service_fn(move |uri: http::Uri| {
        let dial = dial.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_string())
                .ok_or_else(|| std::io::Error::other("peer URL without host"))?;
            Ok(hyper_util::rt::TokioIo::new(dial(authority).await?))
        }) as Connecting
    })
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
                let c = net.lazy(endpoint(url, Link::Bulk)?);
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
