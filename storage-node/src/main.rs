//! `rondo-node`: runs one storage node.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Rondo storage node.
#[derive(Debug, Parser)]
#[command(name = "rondo-node", version = rondo_process::VERSION)]
struct Args {
    /// Configuration file (TOML). Any key can also be set, or overridden,
    /// by a `RONDO_NODE_*` environment variable (`RONDO_NODE_DATA_DIR`,
    /// `RONDO_NODE_RING__SEEDS`; node.example.toml).
    #[arg(long, short, env = "RONDO_NODE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config =
        rondo_node::Config::load(args.config.as_deref(), rondo_process::config::environment())
            .map_err(anyhow::Error::msg)?;
    rondo_process::logging::init(config.log_format);
    tracing::info!(version = rondo_process::VERSION, "starting storage node");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("bind grpc {}", config.grpc_addr))?;
    let http = std::net::TcpListener::bind(config.http_addr)
        .with_context(|| format!("bind https {}", config.http_addr))?;
    config.grpc_addr = grpc.local_addr()?;
    config.http_addr = http.local_addr()?;
    let address_file = config.address_file.clone();
    let text = format!(
        "{{\"grpc\":\"{}\",\"http\":\"{}\"}}",
        config.grpc_addr, config.http_addr
    );
    // Opening the store claims the node's id (`node-id`) first: whoever
    // waits for the address file finds the id there too.
    let state = rondo_node::open(config, prometheus_client::registry::Registry::default())?;
    if let Some(path) = &address_file {
        rondo_process::config::write_atomically(path, text.as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
    }
    rondo_node::run(
        state,
        rondo_node::Listeners { grpc, http },
        rondo_process::shutdown(),
    )
    .await?;
    tracing::info!("storage node stopped");
    Ok(())
}
