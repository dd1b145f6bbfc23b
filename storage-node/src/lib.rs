//! Rondo storage node.
//!
//! Holds audio blobs, content-addressed by BLAKE3, as files beside a redb
//! database that holds the catalog, the blob index, the catalog change log and
//! the outbox ([`store`]). Serves the internal gRPC API ([`grpc`]) and the
//! public HTTPS streaming endpoint with signed, expiring URLs ([`stream`]).
//!
//! The node does not parse audio or decide what a song's tags are (the gateway
//! does), and it does not choose where blobs go (placement is the caller's).

pub mod config;
pub mod error;
pub mod gateways;
pub mod grpc;
pub mod metrics;
pub mod net;
pub mod ring;
pub mod store;
pub mod stream;
pub mod upload;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use rondo_core::{NodeId, signing::UrlSigner};
use rondo_proto::storage::v1::storage_node_server::StorageNodeServer;

pub use config::Config;
pub use error::{Error, Result};

/// Everything the node's servers share.
pub struct NodeState {
    pub node_id: NodeId,
    pub config: Config,
    pub public_url: String,
    pub store: store::Store,
    pub signer: UrlSigner,
    pub metrics: metrics::Metrics,
    pub registry: Registry,
    /// Wakes the outbox relay.
    pub outbox: tokio::sync::Notify,
    /// The control plane, once `run` has started it.
    pub ring: std::sync::OnceLock<ring::RingHandle>,
    /// Gateways that checked in lately (soft state, never persisted).
    pub gateways: gateways::Gateways,
    /// One gRPC channel per peer URL, kept across calls (blob copies and
    /// fetches): a channel multiplexes calls on one HTTP/2 connection and
    /// reconnects by itself.
    channels: Mutex<std::collections::HashMap<String, tonic::transport::Channel>>,
    /// How peers are reached and where the control plane runs.
    pub net: net::Net,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl NodeState {
    /// A storage client of the node at `url` over the cached channel (made
    /// on first use, connected lazily, with the bulk-transfer windows).
    pub fn peer(
        &self,
        url: &str,
    ) -> Result<
        rondo_proto::storage::v1::storage_node_client::StorageNodeClient<tonic::transport::Channel>,
    > {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(url) {
            Some(c) => c.clone(),
            None => {
                let c = tonic::transport::Endpoint::from_shared(url.to_string())
                    .map_err(|e| Error::Unavailable(format!("bad peer URL {url}: {e}")))?
                    .connect_timeout(std::time::Duration::from_secs(2))
                    // A peer cut off mid-call (partition, SIGSTOP) fails the
                    // call within about three seconds instead of hanging it
                    // until TCP gives up.
                    .http2_keep_alive_interval(std::time::Duration::from_secs(1))
                    .keep_alive_timeout(std::time::Duration::from_secs(2))
                    .keep_alive_while_idle(true)
                    .initial_stream_window_size(Some(GRPC_STREAM_WINDOW))
                    .initial_connection_window_size(Some(GRPC_CONNECTION_WINDOW));
                let c = self.net.lazy(c);
                channels.insert(url.to_string(), c.clone());
                c
            }
        };
        Ok(
            rondo_proto::storage::v1::storage_node_client::StorageNodeClient::new(channel)
                .max_decoding_message_size(8 * 1024 * 1024),
        )
    }

    /// Sets the gauges from the store.
    pub fn refresh_gauges(&self) {
        if let Ok(stats) = self.store.stats() {
            self.metrics
                .songs
                .set(i64::try_from(stats.song_count).unwrap_or(i64::MAX));
            self.metrics
                .bytes_stored
                .set(i64::try_from(stats.bytes_stored).unwrap_or(i64::MAX));
        }
    }
}

/// The sockets a node serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub http: std::net::TcpListener,
}

/// Reads the node's id from `dir/node-id`, creating it on first start.
pub fn node_identity(dir: &Path) -> Result<NodeId> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(Error::io("create data dir"))?;
            let id = NodeId::new_random();
            let tmp = dir.join("node-id.tmp");
            std::fs::write(&tmp, id.to_string()).map_err(Error::io("write node id"))?;
            std::fs::rename(&tmp, &path).map_err(Error::io("write node id"))?;
            Ok(id)
        }
        Err(e) => Err(Error::io("read node id")(e)),
    }
}

/// Opens the store and builds the shared state.
pub fn open(config: Config, registry: Registry) -> Result<Arc<NodeState>> {
    open_with(config, registry, net::Net::Real)
}

/// Opens the store and builds the shared state, with the given network.
pub fn open_with(config: Config, registry: Registry, net: net::Net) -> Result<Arc<NodeState>> {
    let node_id = node_identity(&config.data_dir)?;
    let secret =
        std::fs::read(&config.cluster_secret_file).map_err(Error::io("read cluster secret"))?;
    let store = store::Store::open(&config.data_dir)?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{}", config.http_addr))
        .trim_end_matches('/')
        .to_string();
    let mut registry = registry;
    let metrics = metrics::Metrics::default();
    metrics.register(&mut registry);
    let state = Arc::new(NodeState {
        node_id,
        config,
        public_url,
        store,
        signer: UrlSigner::new(secret),
        metrics,
        registry,
        outbox: tokio::sync::Notify::new(),
        ring: std::sync::OnceLock::new(),
        gateways: gateways::Gateways::default(),
        channels: Mutex::new(std::collections::HashMap::new()),
        net,
    });
    state.refresh_gauges();
    Ok(state)
}

/// Crash-point testing: when the environment variable `RONDO_FAILPOINT`
/// names this point, the process aborts here, as a crash would. The fault
/// tests use it to kill a node between an outbox commit and its effect.
pub fn failpoint(name: &str) {
    if std::env::var("RONDO_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::warn!(failpoint = name, "aborting at failpoint");
        std::process::abort();
    }
}

/// HTTP/2 flow-control windows of the gRPC server (see `run`).
const GRPC_STREAM_WINDOW: u32 = 4 << 20;
const GRPC_CONNECTION_WINDOW: u32 = 16 << 20;

/// Runs the node until `shutdown` resolves: the gRPC server, the HTTPS
/// streaming server and the outbox relay.
pub async fn run(
    state: Arc<NodeState>,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tls = rondo_core::tls::server_config(
        &std::fs::read(&state.config.tls_cert).map_err(Error::io("read tls certificate"))?,
        &std::fs::read(&state.config.tls_key).map_err(Error::io("read tls key"))?,
    )?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let outbox = tokio::spawn(relay_outbox(state.clone(), stop_rx.clone()));
    let _ = state.ring.set(ring::start(state.clone())?);

    let handle = axum_server::Handle::new();
    let http_handle = handle.clone();
    let http_stop = wait(stop_rx.clone());
    tokio::spawn(async move {
        http_stop.await;
        http_handle.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    listeners
        .http
        .set_nonblocking(true)
        .map_err(Error::io("http listener"))?;
    let app = stream::router(state.clone());
    let http = axum_server::from_tcp_rustls(
        listeners.http,
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    // Without TCP_NODELAY, Nagle's algorithm holds a response's last, short
    // TLS record until the client acknowledges the previous ones: about 10 ms
    // added to every answer that does not end on a full segment.
    .map(|tls| tls.acceptor(axum_server::accept::NoDelayAcceptor::new()))
    .handle(handle)
    .serve(app.into_make_service());

    // Uploads and blob copies are bulk transfers: HTTP/2's default 64 KiB
    // window would make each one wait for a window update every 64 KiB.
    let grpc = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(GRPC_STREAM_WINDOW))
        .initial_connection_window_size(Some(GRPC_CONNECTION_WINDOW))
        .tcp_nodelay(true)
        .add_service(
            StorageNodeServer::new(grpc::Service::new(state.clone()))
                .max_decoding_message_size(8 * 1024 * 1024),
        )
        .add_service(
            rondo_proto::ring::v1::ring_server::RingServer::new(ring::Service::new(state.clone()))
                .max_decoding_message_size(64 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listeners.grpc),
            wait(stop_rx.clone()),
        );

    tracing::info!(node = %state.node_id, url = %state.public_url, "storage node running");
    let (http_result, grpc_result) = tokio::join!(http, grpc);
    outbox.abort();
    http_result.map_err(Error::io("https server"))?;
    grpc_result.map_err(|e| Error::Io {
        context: "grpc server".into(),
        source: std::io::Error::other(e),
    })?;
    Ok(())
}

/// Carries out outbox tasks after each commit that queues some, and retries
/// failures with backoff: local tasks (removing blob files), blob fetches
/// from other nodes and blob pushes to them.
async fn relay_outbox(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    // When each repair fetch was first seen (it waits for a push first).
    let mut seen = std::collections::HashMap::new();
    loop {
        let st = state.clone();
        let local = match tokio::task::spawn_blocking(move || st.store.run_outbox()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "outbox relay task panicked");
                return;
            }
        };
        let (network, next) = network_tasks(&state, &mut seen).await;
        let result = local.map(|_| ()).and(network);
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        match result {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    () = state.outbox.notified() => {}
                    () = due => {}
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "outbox task failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = state.outbox.notified() => {}
                    () = due => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Network tasks the outbox runs at once (a node that joins fetches every
/// blob of the catalog: one at a time, each waits for its fsyncs).
const NETWORK_CONCURRENCY: usize = 8;

/// Runs the outbox's due network tasks, several at once: blob fetches
/// (each from the node that proposed the song first, then from any other
/// node; the hash is checked before the blob is indexed) and blob pushes.
/// A fetch of a blob whose proposer will push it is due only after
/// `blob_repair_after`. A node's pushes go in batches of one call each
/// (`push_rows`), so a node that is down fails its own batch and holds up
/// no other task for long. Returns the first failure, and when the next
/// waiting fetch is due.
async fn network_tasks(
    state: &Arc<NodeState>,
    seen: &mut std::collections::HashMap<u64, tokio::time::Instant>,
) -> (Result<()>, Option<tokio::time::Instant>) {
    let mut next = None;
    let result = run_network_tasks(state, seen, &mut next).await;
    (result, next)
}

async fn run_network_tasks(
    state: &Arc<NodeState>,
    seen: &mut std::collections::HashMap<u64, tokio::time::Instant>,
    next: &mut Option<tokio::time::Instant>,
) -> Result<()> {
    use futures::StreamExt;
    use store::OutboxTask;
    let st = state.clone();
    let (tasks, low_water) =
        tokio::task::spawn_blocking(move || st.store.network_tasks()).await??;
    let now = tokio::time::Instant::now();
    let repair_after = state.config.blob_repair_after();
    seen.retain(|n, _| tasks.iter().any(|(m, _)| m == n));
    let mut fetches = Vec::new();
    let mut pushes: std::collections::BTreeMap<NodeId, Vec<(u64, store::PushTask)>> =
        std::collections::BTreeMap::new();
    for (n, task) in tasks {
        if let OutboxTask::FetchBlob(f) = &task
            && f.push_expected
        {
            let at = *seen.entry(n).or_insert(now) + repair_after;
            let st = state.clone();
            let hash = f.hash;
            // A pushed blob settles its fetch at once.
            let wanted = tokio::task::spawn_blocking(move || st.store.wants_blob(&hash)).await??;
            if at > now && wanted {
                *next = Some(next.map_or(at, |x| x.min(at)));
                continue;
            }
        }
        match task {
            OutboxTask::FetchBlob(f) => fetches.push((n, f)),
            OutboxTask::PushBlob(p) => pushes.entry(p.to).or_default().push((n, p)),
            OutboxTask::DeleteBlob(_) => {}
        }
    }
    let mut jobs: Vec<futures::future::BoxFuture<'_, Result<()>>> = Vec::new();
    for (n, f) in fetches {
        jobs.push(Box::pin(fetch_task(state, n, f)));
    }
    for (to, rows) in pushes {
        jobs.push(Box::pin(push_rows(state, to, rows, low_water)));
    }
    let results: Vec<Result<()>> = futures::stream::iter(jobs)
        .buffer_unordered(NETWORK_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

/// One fetch task of the outbox: done (and its row removed) once the blob is
/// here, or at once if no song wants it any more.
async fn fetch_task(state: &Arc<NodeState>, n: u64, task: store::FetchTask) -> Result<()> {
    let hash = task.hash;
    let st = state.clone();
    if !tokio::task::spawn_blocking(move || st.store.wants_blob(&hash)).await?? {
        let st = state.clone();
        tokio::task::spawn_blocking(move || st.store.finish_task(n)).await??;
        return Ok(());
    }
    if task.push_expected {
        tracing::info!(%hash, from = %task.from, "no push came: fetching the blob");
    }
    let (peer, _) = pull(state, &hash, task.from, None).await?;
    tracing::info!(%hash, %peer, "fetched blob");
    failpoint("fetch-before-finish");
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.store.finish_task(n)).await??;
    state.refresh_gauges();
    Ok(())
}

/// Pulls a blob that songs wait for into this node's store, from `first`
/// then from any other node, as a delivery from another node's outbox
/// when `delivery` is set. Returns the node it came from.
pub(crate) async fn pull(
    state: &Arc<NodeState>,
    hash: &rondo_core::ContentHash,
    first: NodeId,
    delivery: Option<store::Delivery>,
) -> Result<(NodeId, store::Delivered)> {
    let peers = state.ring.get().map(|r| r.peers()).unwrap_or_default();
    let mut order: Vec<(NodeId, String)> = peers
        .iter()
        .filter(|(id, _)| **id == first)
        .chain(peers.iter().filter(|(id, _)| **id != first))
        .map(|(id, url)| (*id, url.clone()))
        .collect();
    order.dedup_by_key(|(id, _)| *id);
    for (peer, url) in order {
        match download(state, &url, hash).await {
            Ok(staged) => {
                let st = state.clone();
                let done =
                    tokio::task::spawn_blocking(move || st.store.put_wanted(staged, delivery))
                        .await??;
                return Ok((peer, done));
            }
            Err(e) => tracing::debug!(%hash, %peer, error = %e, "blob fetch failed"),
        }
    }
    Err(Error::Unavailable(format!(
        "no node could provide blob {hash}"
    )))
}

/// Rows sent in one `DeliverBlob` call.
const PUSH_BATCH: usize = 256;

/// The push rows of the outbox for one node: tells it to hold the blobs of
/// songs this node proposed, in batches. A row is done (and removed) once
/// the node answered it stored, held or duplicate, or at once if the node
/// left the layout or this node lost the blob; rows the node could not
/// take yet stay, and the relay tries again with backoff.
async fn push_rows(
    state: &Arc<NodeState>,
    to: NodeId,
    rows: Vec<(u64, store::PushTask)>,
    low_water: u64,
) -> Result<()> {
    use rondo_proto::storage::v1::{self as pb, deliver_blob_reply::Outcome};
    failpoint("push-before-send");
    let url = layout_url(state, to).await?;
    let in_layout = url.is_some();
    let st = state.clone();
    let (live, moot) = tokio::task::spawn_blocking(move || {
        let mut live = Vec::new();
        let mut moot = Vec::new();
        for (n, p) in rows {
            match st.store.blob_size(&p.hash)? {
                Some(_) if in_layout => live.push((n, p)),
                _ => moot.push(n),
            }
        }
        st.store.finish_tasks(&moot)?;
        Ok::<_, Error>((live, moot.len()))
    })
    .await??;
    if moot > 0 {
        tracing::debug!(%to, rows = moot, "pushes dropped: node or blob gone");
    }
    let Some(url) = url else {
        return Ok(());
    };
    let mut pending = 0;
    for batch in live.chunks(PUSH_BATCH) {
        let request = pb::DeliverBlobRequest {
            origin: state.node_id.to_string(),
            low_water,
            rows: batch
                .iter()
                .map(|(n, p)| pb::BlobDelivery {
                    outbox_seq: *n,
                    content_hash: p.hash.to_hex(),
                    entry_seq: p.entry_seq,
                })
                .collect(),
        };
        let reply = state
            .peer(&url)?
            .deliver_blob(request)
            .await
            .map_err(|e| Error::Unavailable(format!("push blobs to {to}: {}", e.message())))?
            .into_inner();
        let outcomes = reply.outcomes();
        let done: Vec<u64> = batch
            .iter()
            .zip(outcomes.chain(std::iter::repeat(Outcome::Unspecified)))
            .filter(|(_, o)| matches!(o, Outcome::Stored | Outcome::Held | Outcome::Duplicate))
            .map(|((n, _), _)| *n)
            .collect();
        pending += batch.len() - done.len();
        let st = state.clone();
        tokio::task::spawn_blocking(move || st.store.finish_tasks(&done)).await??;
    }
    state.refresh_gauges();
    if pending > 0 {
        return Err(Error::Unavailable(format!(
            "{pending} pushes to {to} not taken yet"
        )));
    }
    Ok(())
}

/// The gRPC URL of a node of the applied layout.
async fn layout_url(state: &Arc<NodeState>, node: NodeId) -> Result<Option<String>> {
    let st = state.clone();
    let layout = tokio::task::spawn_blocking(move || st.store.ring_layout()).await??;
    Ok(layout.and_then(|l| l.nodes.get(&node).map(|m| m.addr.clone())))
}

/// Copies one blob from the node at `url` into this node's store (hash
/// checked, fsync'd, indexed), as a copy ahead of its song.
pub(crate) async fn fetch_one(
    state: &Arc<NodeState>,
    url: &str,
    hash: &rondo_core::ContentHash,
) -> Result<()> {
    let staged = download(state, url, hash).await?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.store.put_blob(staged)).await??;
    Ok(())
}

/// Reads one blob from the node at `url` into a staged file (hash checked,
/// fsync'd).
async fn download(
    state: &Arc<NodeState>,
    url: &str,
    hash: &rondo_core::ContentHash,
) -> Result<store::StagedBlob> {
    use futures::StreamExt;
    use rondo_proto::storage::v1 as pb;
    let unavailable = |e: String| Error::Unavailable(e);
    let mut client = state.peer(url)?;
    let mut stream = client
        .read_blob(pb::ReadBlobRequest {
            content_hash: hash.to_hex(),
            offset: 0,
            length: 0,
        })
        .await
        .map_err(|e| unavailable(format!("read blob from {url}: {e}")))?
        .into_inner();
    let mut staging = state.store.stage(u64::MAX).await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unavailable(format!("read blob from {url}: {e}")))?;
        staging.write(&chunk.chunk).await?;
    }
    staging.finish(&hash.to_hex()).await
}
