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
#[command(name = "rondo-gateway", version = rondo_process::VERSION)]
struct Args {
    /// Configuration file (TOML). Any key can also be set, or overridden,
    /// by a `RONDO_GATEWAY_*` environment variable
    /// (`RONDO_GATEWAY_LISTEN`, `RONDO_GATEWAY_VRRP__VIP`;
    /// gateway.example.toml).
    #[arg(long, short, env = "RONDO_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Print the GraphQL schema (SDL) and exit.
    #[arg(long)]
    print_schema: bool,
    /// Share a floating address with other replicas by VRRP on this
    /// interface (overrides `[vrrp] interface`).
    #[arg(long, requires = "vip")]
    vrrp_interface: Option<String>,
    /// The floating address, `ADDR/PREFIX`.
    #[arg(long)]
    vip: Option<String>,
    /// VRRP virtual router id (default 51).
    #[arg(long)]
    vrid: Option<u8>,
    /// VRRP priority, 1-255 (default 100).
    #[arg(long)]
    priority: Option<u8>,
    /// VRRP advertisement interval in milliseconds (default 1000).
    #[arg(long)]
    advert_ms: Option<u32>,
    /// Do not take the address from a lower-priority master.
    #[arg(long)]
    nopreempt: bool,
    /// Unicast VRRP peer (repeat for several); multicast if none.
    #[arg(long)]
    unicast_peer: Vec<std::net::Ipv4Addr>,
}

impl Args {
    /// Applies the VRRP flags over the configuration file's `[vrrp]`.
    fn apply_vrrp(&self, config: &mut rondo_gateway::Config) -> anyhow::Result<()> {
        if let (Some(interface), Some(vip)) = (&self.vrrp_interface, &self.vip) {
            let v = config.vrrp.get_or_insert_with(|| {
                rondo_gateway::config::VrrpConfig::new(interface.clone(), vip.clone())
            });
            v.interface.clone_from(interface);
            v.vip.clone_from(vip);
        }
        let flags_used = self.vrid.is_some()
            || self.priority.is_some()
            || self.advert_ms.is_some()
            || self.nopreempt
            || !self.unicast_peer.is_empty();
        let Some(v) = config.vrrp.as_mut() else {
            anyhow::ensure!(
                !flags_used,
                "VRRP flags need --vrrp-interface and --vip (or a [vrrp] section)"
            );
            return Ok(());
        };
        if let Some(n) = self.vrid {
            v.vrid = n;
        }
        if let Some(p) = self.priority {
            v.priority = p;
        }
        if let Some(ms) = self.advert_ms {
            v.advert_ms = ms;
        }
        if self.nopreempt {
            v.nopreempt = true;
        }
        if !self.unicast_peer.is_empty() {
            v.unicast_peers.clone_from(&self.unicast_peer);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_schema {
        print!("{}", rondo_gateway::graphql::schema_sdl());
        return Ok(());
    }
    let mut config =
        rondo_gateway::Config::load(args.config.as_deref(), rondo_process::config::environment())
            .map_err(anyhow::Error::msg)?;
    rondo_process::logging::init(config.log_format);
    tracing::info!(version = rondo_process::VERSION, "starting gateway");
    let _ = rustls::crypto::ring::default_provider().install_default();
    args.apply_vrrp(&mut config)?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("bind {}", config.listen))?;
    config.listen = listener.local_addr()?;
    if let Some(path) = &config.address_file {
        let text = format!("{{\"listen\":\"{}\"}}", config.listen);
        rondo_process::config::write_atomically(path, text.as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
    }
    let state = rondo_gateway::open(config, prometheus_client::registry::Registry::default())?;
    rondo_gateway::run(state, listener, rondo_process::shutdown()).await?;
    tracing::info!("gateway stopped");
    Ok(())
}
