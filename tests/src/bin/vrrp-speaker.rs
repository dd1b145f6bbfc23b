//! A standalone VRRP router on the `vrrp` crate, for the interop tests and
//! the failover benchmark: the same flags as `rondo-gateway --vrrp-*`, and
//! one JSON line on stdout per state change, with a wall-clock timestamp,
//! so that a test can line it up with adverts seen on the wire.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::json;
use vrrp::{ChecksumKind, HealthConfig, HealthMode, Router, RouterConfig, Version, Vip};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    interface: String,
    #[arg(long)]
    vip: Vec<Vip>,
    #[arg(long, default_value_t = 51)]
    vrid: u8,
    #[arg(long, default_value_t = 100)]
    priority: u8,
    #[arg(long, default_value_t = 1000)]
    advert_ms: u32,
    #[arg(long)]
    nopreempt: bool,
    #[arg(long)]
    unicast_peer: Vec<Ipv4Addr>,
    #[arg(long)]
    v2: bool,
    #[arg(long)]
    message_only: bool,
    /// Healthy while this file exists; while `<file>.hang` exists the check
    /// never answers (a hung check, which must fail by timeout).
    #[arg(long)]
    health_file: Option<PathBuf>,
    /// `fault` or a negative weight such as `-60`.
    #[arg(long, default_value = "fault")]
    health_mode: String,
    #[arg(long, default_value_t = 100)]
    health_interval_ms: u64,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RONDO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let a = Args::parse();
    let mut config = RouterConfig::new(&a.interface, a.vrid, a.priority, a.vip);
    config.advert_cs = u16::try_from(a.advert_ms / 10)?;
    config.preempt = !a.nopreempt;
    config.unicast_peers = a.unicast_peer;
    if a.v2 {
        config.version = Version::V2;
    }
    if a.message_only {
        config.checksum = ChecksumKind::MessageOnly;
    }
    let health = match a.health_file {
        Some(path) => {
            let mode = match a.health_mode.as_str() {
                "fault" => HealthMode::Fault,
                w => HealthMode::Weight(w.parse()?),
            };
            let cfg = HealthConfig {
                mode,
                interval: Duration::from_millis(a.health_interval_ms),
                timeout: Duration::from_millis(a.health_interval_ms),
                rise: 1,
                fall: 1,
            };
            let check: vrrp::HealthCheck = Arc::new(move || {
                let path = path.clone();
                Box::pin(async move {
                    if path.with_extension("hang").exists() {
                        std::future::pending::<()>().await;
                    }
                    path.exists()
                })
            });
            Some((cfg, check))
        }
        None => None,
    };
    let router = Router::start(config, health).await?;
    let mut status = router.status();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    println!("{}", json!({"t": now(), "event": "started"}));
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                println!("{}", json!({
                    "t": secs(s.since),
                    "event": "state",
                    "state": format!("{:?}", s.state),
                    "priority": s.priority,
                    "master": s.master.map(|m| m.to_string()),
                    "healthy": s.healthy,
                }));
            }
            _ = term.recv() => break,
        }
    }
    let counters = status.borrow().counters.clone();
    router.stop().await?;
    let fields: serde_json::Map<String, serde_json::Value> = counters
        .fields()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    println!(
        "{}",
        json!({"t": now(), "event": "stopped", "counters": fields})
    );
    Ok(())
}
