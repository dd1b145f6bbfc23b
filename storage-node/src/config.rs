//! The storage node's configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Configuration of one storage node, read from a TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the node's database and blobs; created if missing.
    pub data_dir: PathBuf,
    /// Internal gRPC address (node to node, gateway to node).
    #[serde(default = "default_grpc_addr")]
    pub grpc_addr: SocketAddr,
    /// HTTPS streaming address, reachable by clients.
    #[serde(default = "default_http_addr")]
    pub http_addr: SocketAddr,
    /// Base URL clients use to reach `http_addr` (defaults to
    /// `https://<http_addr>`); stream URLs are built on it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// PEM certificate chain for the HTTPS endpoint.
    pub tls_cert: PathBuf,
    /// PEM private key for the HTTPS endpoint.
    pub tls_key: PathBuf,
    /// File holding the cluster secret that signs stream URLs.
    pub cluster_secret_file: PathBuf,
    /// The cluster CA's certificate (PEM): internal gRPC connections, both
    /// ways, are mutual TLS with certificates it issued.
    pub cluster_ca: PathBuf,
    /// This node's certificate from the cluster CA (PEM); it names the
    /// node's id (`rondo cert issue --node`), which the data directory must
    /// agree with.
    pub cluster_cert: PathBuf,
    /// The private key of `cluster_cert` (PEM).
    pub cluster_key: PathBuf,
    /// File holding the bearer token `/metrics` wants; without it the
    /// node's metrics are not served (they are on the public listener).
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// If set, the bound addresses are written here as JSON after start-up
    /// (`{"grpc": …, "http": …}`), so that port 0 can be used.
    #[serde(default)]
    pub address_file: Option<PathBuf>,
    /// Connections the public HTTPS listener holds at once (default 4096);
    /// one more is closed at once.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// How long a client may take to start a request after its TLS
    /// handshake, and to send the request's headers (milliseconds, default
    /// 10000). A connection quiet both ways for 120 s is closed too.
    #[serde(default)]
    pub header_timeout_ms: Option<u64>,
    /// Largest accepted upload in bytes.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// The control plane (token ring).
    #[serde(default)]
    pub ring: RingConfig,
    /// How long a node waits for the push of a song's blob from the node
    /// that proposed it before it fetches the blob itself (milliseconds,
    /// default 5000). Blobs of songs ordered before this node joined are
    /// fetched at once.
    #[serde(default)]
    pub blob_repair_after_ms: Option<u64>,
    /// How often the resync worker compares this node's holdings with what
    /// the placement asks of it (milliseconds, default 10000).
    #[serde(default)]
    pub resync_interval_ms: Option<u64>,
    /// How long a copy this node gave up (its owners hold the blob) stays
    /// on disk so that streams already signed for it finish (milliseconds,
    /// default 600000: ten minutes).
    #[serde(default)]
    pub release_linger_ms: Option<u64>,
    /// How long a node that owns partitions may be absent from the quorate
    /// ring before the ring's representative marks it out of placement, so
    /// that its partitions are copied to others (milliseconds, default
    /// 600000: ten minutes; PROTOCOL.md, "Down is not out").
    #[serde(default)]
    pub down_out_interval_ms: Option<u64>,
    /// How long a node marked out automatically must be back in the ring
    /// before it is marked in again (milliseconds, default 60000).
    #[serde(default)]
    pub mark_in_after_ms: Option<u64>,
    /// How often every indexed blob's file is checked for presence and
    /// length (milliseconds, default 600000: ten minutes).
    #[serde(default)]
    pub check_interval_ms: Option<u64>,
    /// How long from the end of one scrub pass (every blob re-hashed) to
    /// the start of the next (milliseconds, default 604800000: 7 days).
    #[serde(default)]
    pub scrub_interval_ms: Option<u64>,
    /// The most bytes per second the scrub reads (default 33554432: 32
    /// MiB/s; 0: no limit), so that streams keep the disk. `rondo node
    /// rates` changes it at runtime.
    #[serde(default)]
    pub scrub_rate_bytes: Option<u64>,
    /// The most bytes per second the resync worker fetches (default 0: no
    /// limit), shared by its concurrent fetches. `rondo node rates`
    /// changes it at runtime.
    #[serde(default)]
    pub resync_rate_bytes: Option<u64>,
    /// The resync worker fetches nothing while the data directory's file
    /// system is fuller than this percentage (default 90).
    #[serde(default)]
    pub resync_max_disk_percent: Option<u8>,
    /// How log lines are written: `"text"` (the default; colours only on
    /// a terminal) or `"json"`, one object per line.
    #[serde(default)]
    pub log_format: rondo_process::logging::LogFormat,
}

impl Config {
    /// The limits of the public HTTPS listener.
    pub fn listener_limits(&self) -> rondo_process::https::ListenerLimits {
        let default = rondo_process::https::ListenerLimits::default();
        rondo_process::https::ListenerLimits {
            max_connections: self.max_connections.unwrap_or(default.max_connections),
            header_timeout: self
                .header_timeout_ms
                .map_or(default.header_timeout, std::time::Duration::from_millis),
            ..default
        }
    }

    /// See `resync_interval_ms`.
    pub fn resync_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.resync_interval_ms.unwrap_or(10_000).max(10))
    }

    /// See `release_linger_ms`.
    pub fn release_linger(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.release_linger_ms.unwrap_or(600_000))
    }

    /// See `down_out_interval_ms`.
    pub fn down_out_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.down_out_interval_ms.unwrap_or(600_000))
    }

    /// See `mark_in_after_ms`.
    pub fn mark_in_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.mark_in_after_ms.unwrap_or(60_000))
    }

    /// See `check_interval_ms`.
    pub fn check_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.check_interval_ms.unwrap_or(600_000).max(10))
    }

    /// See `scrub_interval_ms`.
    pub fn scrub_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.scrub_interval_ms.unwrap_or(7 * 24 * 3_600_000))
    }

    /// See `scrub_rate_bytes`.
    pub fn scrub_rate_bytes(&self) -> u64 {
        self.scrub_rate_bytes.unwrap_or(32 << 20)
    }

    /// See `blob_repair_after_ms`.
    pub fn blob_repair_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.blob_repair_after_ms.unwrap_or(5000))
    }
}

/// Configuration of the control plane (storage-node/PROTOCOL.md).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingConfig {
    /// TOML file listing every node of the cluster (`[[node]]` tables with
    /// `id` and `grpc_url`): the initial voters. The node waits until the
    /// file names it and gives every node an address, so a deployment can
    /// write it once all nodes have bound their ports. Without it the node
    /// is a cluster of one.
    #[serde(default)]
    pub peers_file: Option<PathBuf>,
    /// gRPC URLs of running nodes, for a node that joins a running cluster
    /// (instead of `peers_file`): it waits until an operator adds it to the
    /// layout (`rondo node add`), then joins the ring and catches up.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// With `seeds`: ask a seed to add this node to the layout instead of
    /// waiting for an operator (`rondo node add`). Its certificate of the
    /// cluster CA is the credential. It joins without a vote (`rondo node
    /// voter ID on` gives one), with `zone` and `capacity`.
    #[serde(default)]
    pub auto_join: bool,
    /// Refuse to order the addition of a node that asks to join
    /// (`auto_join` on its side): only operators add nodes. By default a
    /// node certificate of the cluster CA is enough.
    #[serde(default)]
    pub refuse_joins: bool,
    /// The URL the other nodes reach this node's gRPC at, given when it
    /// joins by itself (default `https://<grpc_addr>`; in a container, its
    /// host name: `https://node4:7400`).
    #[serde(default)]
    pub grpc_url: Option<String>,
    /// The failure domain this node asks for when it joins by itself
    /// (default "default").
    #[serde(default)]
    pub zone: Option<String>,
    /// The bytes this node offers for audio when it joins by itself
    /// (default 1 TiB, what a node added without one gets; 0 stores none).
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Token loss timeout in milliseconds; every other protocol timeout is
    /// scaled with it. Default: 3000 plus 650 per node above two, as
    /// corosync.
    #[serde(default)]
    pub token_timeout_ms: Option<u64>,
    /// How long a write may wait to be ordered and applied before it is
    /// withdrawn and refused as unavailable (milliseconds, default 10000).
    #[serde(default)]
    pub write_timeout_ms: Option<u64>,
    /// Log entries per page when a node catches up from a ring's source
    /// (default 1024; each page is one gRPC message).
    #[serde(default)]
    pub fetch_entries: Option<usize>,
    /// Applied log entries kept (default 10000; 0: never compact). Once
    /// twice as many are kept the older ones are dropped, and a node that
    /// falls further behind catches up from a snapshot of a member's
    /// applied state instead of the entries.
    #[serde(default)]
    pub keep_entries: Option<usize>,
}

fn default_grpc_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}

fn default_http_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

/// 200 MiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 200 * 1024 * 1024;

fn default_max_upload() -> u64 {
    DEFAULT_MAX_UPLOAD
}

impl Config {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        Self::load(Some(path), std::iter::empty())
    }

    /// Reads the configuration from a TOML file (if any) with the
    /// `RONDO_NODE_*` variables of `env` over it (`RONDO_NODE_RING__SEEDS`
    /// sets `[ring] seeds`; `RONDO_NODE_CONFIG` names the file).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, String> {
        let config: Config =
            rondo_process::config::load(file, "RONDO_NODE_", &["RONDO_NODE_CONFIG"], env)?;
        let ring = &config.ring;
        if ring.auto_join && ring.grpc_url.is_none() && config.grpc_addr.ip().is_unspecified() {
            return Err(format!(
                "[ring] auto_join with grpc_addr {} needs [ring] grpc_url: the URL the others reach this node at",
                config.grpc_addr
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// node.example.toml parses, and the environment overrides it.
    #[test]
    fn the_example_parses_and_the_environment_overrides_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("node.example.toml");
        let c = super::Config::from_file(&path).unwrap();
        assert_eq!(c.grpc_addr.port(), 7400);
        assert_eq!(c.scrub_rate_bytes(), 32 << 20);
        assert!(c.ring.peers_file.is_some());
        let env = [
            ("RONDO_NODE_PUBLIC_URL", "https://10.77.1.11:7443"),
            ("RONDO_NODE_RING__AUTO_JOIN", "true"),
            ("RONDO_NODE_LOG_FORMAT", "json"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        // Joining by itself from a wildcard address needs the URL the
        // others reach it at: the seed would otherwise probe itself.
        let e = super::Config::load(Some(&path), env.clone()).unwrap_err();
        assert!(e.contains("needs [ring] grpc_url"), "{e}");
        let mut env = env.to_vec();
        env.push((
            "RONDO_NODE_RING__GRPC_URL".into(),
            "https://10.77.0.14:7400".into(),
        ));
        let c = super::Config::load(Some(&path), env).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://10.77.1.11:7443"));
        assert!(c.ring.auto_join);
        assert_eq!(c.log_format, rondo_process::logging::LogFormat::Json);
    }
}
