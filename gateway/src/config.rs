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
    /// Lifetime of a signed stream URL, in seconds.
    #[serde(default = "default_ttl")]
    pub stream_url_ttl_secs: u64,
    /// Largest accepted upload in bytes.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
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
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_ttl() -> u64 {
    3600
}

/// 200 MiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 200 * 1024 * 1024;

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
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))
    }
}
