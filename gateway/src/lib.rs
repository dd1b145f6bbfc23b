//! Rondo gateway: the public GraphQL API.
//!
//! Answers catalog queries from an in-memory [`index`] fed by the storage
//! nodes' ordered change streams ([`cluster`]), accepts uploads and deletions
//! ([`ingest`], after [`media`] has recognised and checked the audio) and
//! hands out signed, expiring stream URLs that point at a live node holding
//! the song. The schema lives in [`graphql`], the HTTP surface in [`http`].
//!
//! The gateway stores nothing durable: every fact it serves comes from the
//! nodes, and a restarted gateway rebuilds its index from their change logs.
//! It never serves audio bytes itself.

pub mod accounts;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fold;
pub mod graphql;
pub mod ha;
pub mod http;
pub mod index;
pub mod ingest;
pub mod limits;
pub mod plays;
pub mod subsonic;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rondo_core::signing::UrlSigner;

pub use config::Config;
pub use error::{Error, Result};

/// The gateway's metrics.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub graphql_requests: Counter,
    pub uploads: Counter,
    pub indexed_songs: Gauge,
    pub nodes_up: Gauge,
}

/// Everything the gateway's handlers share.
pub struct AppState {
    pub config: Config,
    pub cluster: Arc<cluster::Cluster>,
    /// This gateway's identity and floating-address status.
    pub ha: Arc<ha::Ha>,
    pub signer: UrlSigner,
    /// Signs and checks session tokens (the cluster secret, shared by every
    /// gateway).
    pub sessions: rondo_core::session::SessionSigner,
    pub admin_token_hash: blake3::Hash,
    pub names: tokio::sync::Mutex<ingest::Names>,
    /// Turn of the next direct upload among the live nodes.
    pub upload_turn: std::sync::atomic::AtomicUsize,
    pub metrics: Metrics,
    pub registry: Registry,
    /// Rate limits on logins and registrations, and the password hashing
    /// bound.
    pub limits: limits::Limits,
    /// Plays gathered into ring entries, and "now playing".
    pub plays: Arc<plays::Plays>,
    /// Seals new app passwords (the cluster secret's key for them).
    pub sealer: Arc<rondo_core::sealing::Sealer>,
    /// Account passwords Subsonic clients sent, checked lately.
    pub subsonic_passwords: subsonic::auth::PasswordCache,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// A signed stream URL for the song on a live node holding it, preferring
    /// the song's placement order so that repeated plays hit the same node.
    pub fn stream_url(&self, song: &index::SongRec) -> Option<String> {
        let hash = song.content_hash;
        let holders: Vec<rondo_core::NodeId> = song.replicas.iter().copied().collect();
        let live = self.cluster.live_nodes();
        let node_id = rondo_core::placement::place(&hash, &holders, holders.len())
            .into_iter()
            .find(|n| live.contains(n))?;
        let base = self.cluster.node(node_id)?.info().stream_base_url;
        let expires = clock::unix_now() + self.config.stream_url_ttl_secs;
        Some(format!(
            "{base}/stream/{}?{}",
            song.id,
            self.signer.query(song.id, node_id, expires)
        ))
    }
}

impl AppState {
    /// A signed URL of a picture at a size (the longer side; see
    /// [`rondo_media::art::variant_size`]), on a live node: an owner of
    /// the picture's blob first (it holds it), else any (it reads it from
    /// an owner once). Size 0 is the picture as stored. The expiry is rounded up to the next day so that a
    /// picture's URL stays the same for a day and browsers cache it.
    pub fn art_url(&self, art: &index::ArtRec, size: u32) -> Option<String> {
        let size = match size {
            0 => 0,
            s => rondo_media::art::variant_size(s),
        };
        let live = self.cluster.live_nodes();
        let owners = self.cluster.owners_of(&art.hash);
        let node_id = owners
            .into_iter()
            .chain(rondo_core::placement::place(&art.hash, &live, live.len()))
            .find(|n| live.contains(n))?;
        let base = self.cluster.node(node_id)?.info().stream_base_url;
        const DAY: u64 = 86_400;
        let expires = (clock::unix_now() / DAY + 2) * DAY;
        Some(format!(
            "{base}/art/{}?{}",
            art.hash.to_hex(),
            self.signer.art_query(&art.hash, size, expires)
        ))
    }
}

fn read_secret(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(Error::io(what))?;
    Ok(String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec())
}

/// Builds the gateway state (no I/O beyond reading the secret files).
pub fn open(config: Config, registry: Registry) -> Result<Arc<AppState>> {
    let admin_token = read_secret(&config.admin_token_file, "read admin token")?;
    if admin_token.is_empty() {
        return Err(Error::BadUserInput("admin token file is empty".into()));
    }
    let secret =
        std::fs::read(&config.cluster_secret_file).map_err(Error::io("read cluster secret"))?;
    let tls = rondo_proto::mtls::ClusterTls::from_files(
        &config.cluster_ca,
        &config.cluster_cert,
        &config.cluster_key,
    )
    .map_err(|e| Error::BadUserInput(e.to_string()))?;
    let id = match tls.identity() {
        rondo_core::tls::Identity::Gateway(id) if config.id.is_none_or(|c| c == id) => id,
        other => {
            return Err(Error::BadUserInput(format!(
                "{} names {other}, not this gateway{}",
                config.cluster_cert.display(),
                config.id.map(|c| format!(" ({c})")).unwrap_or_default()
            )));
        }
    };
    let ha = Arc::new(ha::Ha::new(&config, id));
    let sealer = Arc::new(rondo_core::sealing::Sealer::new(&secret));
    let cluster = cluster::Cluster::new(&config.nodes, ha.clone(), tls, sealer.clone())?;
    let metrics = Metrics::default();
    let mut registry = registry;
    registry.register(
        "rondo_gateway_graphql_requests",
        "GraphQL requests",
        metrics.graphql_requests.clone(),
    );
    registry.register(
        "rondo_gateway_uploads",
        "Songs uploaded",
        metrics.uploads.clone(),
    );
    registry.register(
        "rondo_gateway_indexed_songs",
        "Songs in the index",
        metrics.indexed_songs.clone(),
    );
    registry.register(
        "rondo_gateway_nodes_up",
        "Storage nodes up",
        metrics.nodes_up.clone(),
    );
    let limits = limits::Limits::new(config.login_attempts_per_name);
    Ok(Arc::new(AppState {
        ha,
        config,
        cluster,
        signer: UrlSigner::new(secret.clone()),
        sessions: rondo_core::session::SessionSigner::new(secret),
        admin_token_hash: blake3::hash(&admin_token),
        names: tokio::sync::Mutex::new(ingest::Names::default()),
        upload_turn: std::sync::atomic::AtomicUsize::new(0),
        metrics,
        registry,
        limits,
        subsonic_passwords: Default::default(),
        sealer,
        plays: Arc::default(),
    }))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stops the cluster's background tasks when dropped.
struct StopOnDrop(Arc<cluster::Cluster>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Runs the gateway's HTTPS server and background tasks until `shutdown`.
pub async fn run(
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tls = rondo_core::tls::server_config(
        &std::fs::read(&state.config.tls_cert).map_err(Error::io("read tls certificate"))?,
        &std::fs::read(&state.config.tls_key).map_err(Error::io("read tls key"))?,
    )?;
    state.cluster.start();
    // The cluster's tasks stop with this function, however it ends.
    let _stop = StopOnDrop(state.cluster.clone());
    let router = match &state.config.vrrp {
        Some(cfg) => {
            // The health check: a strict majority of the storage nodes answers.
            let cluster = state.cluster.clone();
            let timeout = Duration::from_millis(cfg.health_timeout_ms);
            let check: vrrp::HealthCheck = Arc::new(move || {
                let cluster = cluster.clone();
                Box::pin(async move { cluster.quorum_reachable(timeout).await })
            });
            Some(state.ha.start(cfg, check).await?)
        }
        None => None,
    };
    // Idle rate-limit keys are forgotten every minute.
    let forget = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                state.limits.forget_idle();
            }
        })
    };
    let _forget = AbortOnDrop(forget);
    // Plays are gathered and ordered with a short operator session.
    let gather = {
        let plays = state.plays.clone();
        let cluster = state.cluster.clone();
        let st = state.clone();
        tokio::spawn(plays.run(cluster, move || {
            st.sessions.sign(&rondo_core::session::Session::operator(
                clock::unix_now_ms(),
                *uuid::Uuid::new_v4().as_bytes(),
            ))
        }))
    };
    let _gather = AbortOnDrop(gather);
    let cluster = state.cluster.clone();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<Error>();
    tokio::spawn(async move {
        let mut router = router;
        let failure = match router.as_mut() {
            Some(r) => tokio::select! {
                () = shutdown => None,
                e = r.failed() => Some(e),
            },
            None => {
                shutdown.await;
                None
            }
        };
        match failure {
            Some(e) => {
                tracing::error!(error = %e, "vrrp router failed: stopping");
                let _ = failed_tx.send(Error::Vrrp(e));
            }
            // Resign first (priority 0), so that a backup takes the
            // floating address while this replica drains.
            None => {
                if let Some(r) = router
                    && let Err(e) = r.stop().await
                {
                    tracing::warn!(error = %e, "vrrp shutdown");
                }
            }
        }
        cluster.shutdown();
        h.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let addr = listener.local_addr().map_err(Error::io("listener"))?;
    tracing::info!(%addr, nodes = state.cluster.nodes().len(), "gateway running");
    let limits = state.config.listener_limits();
    rondo_process::https::server(listener, tls, limits, handle)
        .map_err(Error::io("listener"))?
        .serve(http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await
        .map_err(Error::io("https server"))?;
    match failed_rx.await {
        Ok(e) => Err(e),
        Err(_) => Ok(()),
    }
}
