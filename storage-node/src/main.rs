//! `rondo-node`: runs one storage node.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Rondo storage node.
#[derive(Debug, Parser)]
#[command(name = "rondo-node", version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, env = "RONDO_NODE_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RONDO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut config = rondo_node::Config::from_file(&args.config).map_err(anyhow::Error::msg)?;
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("bind grpc {}", config.grpc_addr))?;
    let http = std::net::TcpListener::bind(config.http_addr)
        .with_context(|| format!("bind https {}", config.http_addr))?;
    config.grpc_addr = grpc.local_addr()?;
    config.http_addr = http.local_addr()?;
    if let Some(path) = &config.address_file {
        let text = format!(
            "{{\"grpc\":\"{}\",\"http\":\"{}\"}}",
            config.grpc_addr, config.http_addr
        );
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    let state = rondo_node::open(config, prometheus_client::registry::Registry::default())?;
    rondo_node::run(
        state,
        rondo_node::Listeners { grpc, http },
        rondo_process::shutdown(),
    )
    .await?;
    tracing::info!("storage node stopped");
    Ok(())
}
