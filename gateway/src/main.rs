//! `rondo-gateway`: runs one gateway.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The query path allocates many small, short-lived objects per request;
/// mimalloc serves them faster than glibc's allocator (bench/search.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rondo gateway: the public GraphQL API.
#[derive(Debug, Parser)]
#[command(name = "rondo-gateway", version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, env = "RONDO_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Print the GraphQL schema (SDL) and exit.
    #[arg(long)]
    print_schema: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_schema {
        print!("{}", rondo_gateway::graphql::schema_sdl());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RONDO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = rondo_gateway::Config::from_file(&args.config).map_err(anyhow::Error::msg)?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("bind {}", config.listen))?;
    config.listen = listener.local_addr()?;
    if let Some(path) = &config.address_file {
        std::fs::write(path, format!("{{\"listen\":\"{}\"}}", config.listen))
            .with_context(|| format!("write {}", path.display()))?;
    }
    let state = rondo_gateway::open(config, prometheus_client::registry::Registry::default())?;
    rondo_gateway::run(state, listener, shutdown_signal()).await?;
    tracing::info!("gateway stopped");
    Ok(())
}

async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
