//! The gateway's configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Configuration of one gateway, read from a TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS address of the GraphQL API.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: PathBuf,
    /// PEM private key for HTTPS.
    pub tls_key: PathBuf,
    /// gRPC URLs of the storage nodes, e.g. `http://127.0.0.1:7400`.
    pub nodes: Vec<String>,
    /// File holding the admin bearer token that mutations require.
    pub admin_token_file: PathBuf,
    /// File holding the cluster secret that signs stream URLs.
    pub cluster_secret_file: PathBuf,
    /// The cluster CA's certificate (PEM): calls to the storage nodes are
    /// mutual TLS with certificates it issued.
    pub cluster_ca: PathBuf,
    /// This gateway's certificate from the cluster CA (PEM); it names the
    /// gateway's id (`rondo cert issue --gateway`).
    pub cluster_cert: PathBuf,
    /// The private key of `cluster_cert` (PEM).
    pub cluster_key: PathBuf,
    /// Lifetime of a signed stream URL, in seconds.
    #[serde(default = "default_ttl")]
    pub stream_url_ttl_secs: u64,
    /// Lifetime of a signed direct upload URL (`createUpload`), in seconds.
    #[serde(default = "default_ttl")]
    pub upload_url_ttl_secs: u64,
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
    /// Largest accepted GraphQL request body that is not an upload (JSON:
    /// the query and its variables), in bytes (default 1 MiB).
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// Origins allowed by CORS; `"*"` allows any.
    #[serde(default = "default_cors")]
    pub cors_allowed_origins: Vec<String>,
    /// Deepest accepted query.
    #[serde(default = "default_depth")]
    pub max_query_depth: usize,
    /// Highest accepted query complexity (one per field, list fields times
    /// their page size).
    #[serde(default = "default_complexity")]
    pub max_query_complexity: usize,
    /// If set, the bound address is written here as JSON after start-up
    /// (`{"listen": …}`), so that port 0 can be used.
    #[serde(default)]
    pub address_file: Option<PathBuf>,
    /// Directory of a built web app to serve at `/` (optional).
    #[serde(default)]
    pub webapp_dir: Option<PathBuf>,
    /// Whether anyone may open a listener's account (`register`): `"open"`
    /// (the default) or `"closed"` (admins create accounts).
    #[serde(default)]
    pub registration: Registration,
    /// Password checks (logins, password changes) one account takes a
    /// minute, whoever asks; also the burst (default 5).
    #[serde(default = "default_guesses")]
    pub login_attempts_per_name: u32,
    /// How long a session token stays valid, in seconds (default 7 days,
    /// at most [`MAX_SESSION_TTL_SECS`]).
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// This gateway's UUID; if set, it must be the one its cluster
    /// certificate names (which is the id used when unset).
    #[serde(default)]
    pub id: Option<uuid::Uuid>,
    /// A floating address shared with other gateway replicas by VRRP
    /// (optional; needs CAP_NET_ADMIN and CAP_NET_RAW).
    #[serde(default)]
    pub vrrp: Option<VrrpConfig>,
    /// How log lines are written: `"text"` (the default; colours only on
    /// a terminal) or `"json"`, one object per line.
    #[serde(default)]
    pub log_format: rondo_process::logging::LogFormat,
}

/// Who may open an account.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    #[default]
    Open,
    Closed,
}

/// The longest a session lasts, whatever the configuration says: 30 days.
pub const MAX_SESSION_TTL_SECS: u64 = 30 * 24 * 3600;

/// The `[vrrp]` section: keepalived's `vrrp_instance` in Rondo's words.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpConfig {
    /// Interface that carries the adverts and the floating address: its
    /// name, or a network (`10.77.1.0/24`) to use the interface with an
    /// address in it (in a container, where names follow the order the
    /// networks were attached in).
    pub interface: String,
    /// The floating address with its prefix, e.g. `10.0.0.100/24`.
    pub vip: String,
    /// Virtual router id, 1-255; the same on every replica.
    #[serde(default = "default_vrid")]
    pub vrid: u8,
    /// 1-254 (the highest healthy replica holds the address), or 255 for
    /// the owner.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Advertisement interval in milliseconds (10 ms steps).
    #[serde(default = "default_advert_ms")]
    pub advert_ms: u32,
    /// Do not take the address from a lower-priority master.
    #[serde(default)]
    pub nopreempt: bool,
    /// Unicast peers instead of multicast (networks without multicast).
    #[serde(default)]
    pub unicast_peers: Vec<std::net::Ipv4Addr>,
    /// How often the gateway checks that it reaches a quorum of storage
    /// nodes, in milliseconds.
    #[serde(default = "default_health_interval")]
    pub health_interval_ms: u64,
    /// A check not answered by then has failed, in milliseconds.
    #[serde(default = "default_health_timeout")]
    pub health_timeout_ms: u64,
    /// Consecutive failures before the gateway counts as unhealthy.
    #[serde(default = "default_fall")]
    pub health_fall: u32,
    /// Consecutive successes before it counts as healthy again.
    #[serde(default = "default_rise")]
    pub health_rise: u32,
    /// Unset: an unhealthy gateway resigns at once (fault mode). A negative
    /// number: it keeps advertising with its priority lowered by that much.
    #[serde(default)]
    pub health_weight: Option<i16>,
}

fn default_guesses() -> u32 {
    crate::limits::PER_NAME_BURST
}

fn default_session_ttl() -> u64 {
    7 * 24 * 3600
}

fn default_vrid() -> u8 {
    51
}

fn default_priority() -> u8 {
    100
}

fn default_advert_ms() -> u32 {
    1000
}

fn default_health_interval() -> u64 {
    500
}

fn default_health_timeout() -> u64 {
    400
}

fn default_fall() -> u32 {
    2
}

fn default_rise() -> u32 {
    2
}

impl VrrpConfig {
    /// A configuration with defaults for everything but the interface and
    /// the address (for the command-line flags).
    pub fn new(interface: String, vip: String) -> VrrpConfig {
        VrrpConfig {
            interface,
            vip,
            vrid: default_vrid(),
            priority: default_priority(),
            advert_ms: default_advert_ms(),
            nopreempt: false,
            unicast_peers: Vec::new(),
            health_interval_ms: default_health_interval(),
            health_timeout_ms: default_health_timeout(),
            health_fall: default_fall(),
            health_rise: default_rise(),
            health_weight: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_ttl() -> u64 {
    3600
}

/// 200 MiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 200 * 1024 * 1024;

fn default_max_request() -> usize {
    1 << 20
}

fn default_max_upload() -> u64 {
    DEFAULT_MAX_UPLOAD
}

fn default_cors() -> Vec<String> {
    vec!["*".to_string()]
}

fn default_depth() -> usize {
    10
}

fn default_complexity() -> usize {
    2000
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

    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        Self::load(Some(path), std::iter::empty())
    }

    /// Reads the configuration from a TOML file (if any) with the
    /// `RONDO_GATEWAY_*` variables of `env` over it
    /// (`RONDO_GATEWAY_VRRP__VIP` sets `[vrrp] vip`;
    /// `RONDO_GATEWAY_CONFIG` names the file).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, String> {
        rondo_process::config::load(file, "RONDO_GATEWAY_", &["RONDO_GATEWAY_CONFIG"], env)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// gateway.example.toml parses with its [vrrp] section uncommented,
    /// and the environment overrides it.
    #[test]
    fn the_example_parses_and_the_environment_overrides_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.example.toml");
        let c = super::Config::from_file(&path).unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert!(c.vrrp.is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        let vrrp = text
            .split_once("# [vrrp]")
            .unwrap()
            .1
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let full = format!("{}[vrrp]{vrrp}", text.split_once("# [vrrp]").unwrap().0);
        let c: super::Config = toml::from_str(&full).unwrap();
        assert_eq!(c.vrrp.as_ref().map(|v| v.unicast_peers.len()), Some(2));
        let env =
            [("RONDO_GATEWAY_REGISTRATION", "closed")].map(|(k, v)| (k.to_string(), v.to_string()));
        let c = super::Config::load(Some(&path), env).unwrap();
        assert!(matches!(c.registration, super::Registration::Closed));
    }
}
