//! Rondo storage node.
//!
//! Holds audio blobs, content-addressed by BLAKE3, as files beside a redb
//! database that holds the catalog, the blob index, the catalog change log,
//! the outbox and the control plane's log ([`store`]). Orders catalog and
//! layout updates with the other nodes on a token ring ([`ring`]), copies
//! blobs between nodes ([`replication`]), serves the internal gRPC API
//! ([`grpc`]), direct uploads ([`upload`]) and the public HTTPS streaming
//! endpoint with signed, expiring URLs ([`stream`]), and keeps its copies
//! sound ([`scrub`]).
//!
//! This file is the composition root: [`open_with`] builds the components
//! in dependency order (store, control plane, shared state) and hands each
//! its dependencies; [`run`] serves until shutdown.
//!
//! The node does not decide what a song's tags are beyond the media checks
//! of `rondo-media`, and it does not choose where blobs go (placement is the
//! caller's).

pub mod acting;
pub mod art;
pub mod authz;
pub mod clock;
pub mod config;
pub mod error;
pub mod gateways;
pub mod grpc;
pub mod metrics;
pub mod net;
pub mod pace;
pub mod passwords;
pub mod reinspect;
pub mod replication;
pub mod ring;
pub mod scrub;
pub mod state;
pub mod store;
pub mod stream;
pub mod suspects;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use rondo_core::signing::UrlSigner;
use rondo_proto::storage::v1::storage_node_server::StorageNodeServer;

pub use config::Config;
pub use error::{Error, Result};
pub use state::NodeState;
pub use store::{claim_node_id, node_identity};

/// The sockets a node serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub http: std::net::TcpListener,
}

/// Opens the store, starts the control plane and builds the shared state.
/// Must be called inside a tokio runtime.
pub fn open(config: Config, registry: Registry) -> Result<Arc<NodeState>> {
    open_with(config, registry, net::Transport::Tcp)
}

/// Opens the store, starts the control plane and builds the shared state,
/// with the given transport. Must be called inside a tokio runtime (the
/// simulator's, under [`net::Transport::Sim`]).
pub fn open_with(
    config: Config,
    registry: Registry,
    transport: net::Transport,
) -> Result<Arc<NodeState>> {
    let secret =
        std::fs::read(&config.cluster_secret_file).map_err(Error::io("read cluster secret"))?;
    let tls = net::ClusterTls::from_files(
        &config.cluster_ca,
        &config.cluster_cert,
        &config.cluster_key,
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    let Some(cert_id) = tls.identity().node() else {
        return Err(Error::Config(format!(
            "{} names {}, not a storage node",
            config.cluster_cert.display(),
            tls.identity()
        )));
    };
    store::claim_node_id(&config.data_dir, cert_id)?;
    let net = net::Net::new(transport, tls);
    let metrics_token = match &config.metrics_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(Error::io("read metrics token"))?;
            if text.trim().is_empty() {
                return Err(Error::Config(format!("{} is empty", path.display())));
            }
            Some(blake3::hash(text.trim().as_bytes()))
        }
        None => None,
    };
    let store = Arc::new(store::Store::open(&config.data_dir)?);
    let node_id = store.node_id();
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{}", config.http_addr))
        .trim_end_matches('/')
        .to_string();
    let mut registry = registry;
    let metrics = metrics::Metrics::default();
    metrics.register(&mut registry);
    let outbox = Arc::new(tokio::sync::Notify::new());
    let layout_changed = Arc::new(tokio::sync::Notify::new());
    let ring = ring::start(ring::Context {
        me: node_id,
        config: config.clone(),
        store: store.clone(),
        net: net.clone(),
        outbox: outbox.clone(),
        layout_changed: layout_changed.clone(),
        metrics: metrics.clone(),
    })?;
    let resync_rate = config.resync_rate_bytes.unwrap_or(0);
    let scrub_rate = config.scrub_rate_bytes();
    let state = Arc::new(NodeState {
        node_id,
        config,
        public_url,
        store,
        signer: UrlSigner::new(secret.clone()),
        sessions: rondo_core::session::SessionSigner::new(secret),
        passwords: passwords::Checker::default(),
        metrics,
        registry,
        outbox,
        layout_changed,
        ring,
        gateways: gateways::Gateways::default(),
        channels: net::Channels::default(),
        net,
        metrics_token,
        suspects: suspects::Suspects::default(),
        resync_limit: pace::RateLimit::new(resync_rate),
        scrub_limit: pace::RateLimit::new(scrub_rate),
        lacking: std::sync::Mutex::default(),
        copies_taken: std::sync::Mutex::default(),
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

    let outbox = tokio::spawn(replication::relay::run(state.clone(), stop_rx.clone()));
    let resync = tokio::spawn(replication::resync::run(state.clone(), stop_rx.clone()));
    let standing = tokio::spawn(ring::standing::run(state.clone(), stop_rx.clone()));
    let scrub = tokio::spawn(scrub::run(state.clone(), stop_rx.clone()));
    let reinspect = tokio::spawn(reinspect::run(state.clone(), stop_rx.clone()));

    let handle = axum_server::Handle::new();
    let http_handle = handle.clone();
    let http_stop = wait(stop_rx.clone());
    tokio::spawn(async move {
        http_stop.await;
        http_handle.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let app = stream::router(state.clone());
    let http =
        rondo_process::https::server(listeners.http, tls, state.config.listener_limits(), handle)
            .map_err(Error::io("http listener"))?
            .serve(app.into_make_service());

    // Uploads and blob copies are bulk transfers: wide HTTP/2 windows.
    let ring_service =
        ring::Service::new(state.ring.clone(), state.store.clone(), state.net.clone());
    let grpc = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(net::STREAM_WINDOW))
        .initial_connection_window_size(Some(net::CONNECTION_WINDOW))
        .tcp_nodelay(true)
        .add_service(
            StorageNodeServer::new(grpc::Service::new(state.clone()))
                .max_decoding_message_size(net::MAX_STORAGE_MESSAGE),
        )
        .add_service(
            rondo_proto::ring::v1::ring_server::RingServer::new(ring_service)
                .max_decoding_message_size(ring::MAX_RING_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            state
                .net
                .tls()
                .incoming(rondo_proto::mtls::tcp_accepted(listeners.grpc)),
            wait(stop_rx.clone()),
        );

    tracing::info!(node = %state.node_id, url = %state.public_url, "storage node running");
    let (http_result, grpc_result) = tokio::join!(http, grpc);
    outbox.abort();
    resync.abort();
    standing.abort();
    scrub.abort();
    reinspect.abort();
    http_result.map_err(Error::io("https server"))?;
    grpc_result.map_err(|e| Error::Io {
        context: "grpc server".into(),
        source: std::io::Error::other(e),
    })?;
    Ok(())
}
