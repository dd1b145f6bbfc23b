//! High availability of the public address. With a `[vrrp]` section the
//! gateway runs a VRRP router (crate `vrrp`, keepalived-compatible) that
//! holds the floating address while this replica is master. Its health
//! check is "a strict majority of the storage nodes answers": a replica cut
//! off from the cluster resigns (fault mode) or lowers its priority (weight
//! mode) so that one that can serve takes over.
//!
//! Every gateway also says who it is with each storage-node health check;
//! the nodes hand the list back, which is how a replica learns about the
//! others (`cluster { gateways }`, `rondo status`).

use std::net::SocketAddr;
use std::time::Duration;

use rondo_proto::storage::v1 as pb;
use tokio::sync::watch;

use crate::config::{Config, VrrpConfig};
use crate::error::Result;

/// This gateway's identity and, with VRRP, its router's status (none
/// until the router runs: the router's health check needs the cluster
/// client, which reports this gateway, so the router starts after both;
/// its status is forwarded into the channel made here).
#[derive(Debug)]
pub struct Ha {
    pub id: uuid::Uuid,
    listen: SocketAddr,
    vip: Option<String>,
    status: watch::Sender<Option<vrrp::Status>>,
}

/// A gateway's VRRP state as clients see it.
pub fn state_name(state: vrrp::State) -> &'static str {
    match state {
        vrrp::State::Master => "master",
        vrrp::State::Backup => "backup",
        vrrp::State::Fault => "fault",
        vrrp::State::Initialize => "initialize",
    }
}

impl Ha {
    /// The gateway `id` (its certificate's) configured by `config`.
    pub fn new(config: &Config, id: uuid::Uuid) -> Ha {
        Ha {
            id,
            listen: config.listen,
            vip: config.vrrp.as_ref().map(|v| v.vip.clone()),
            status: watch::Sender::new(None),
        }
    }

    /// The router's status, if VRRP is configured and started.
    pub fn status(&self) -> Option<vrrp::Status> {
        self.status.borrow().clone()
    }

    /// This gateway as reported to the storage nodes.
    pub fn info(&self) -> pb::GatewayInfo {
        let status = self.status();
        pb::GatewayInfo {
            id: self.id.to_string(),
            address: status
                .as_ref()
                .map_or_else(|| self.listen.ip().to_string(), |s| s.primary.to_string()),
            vrrp_state: status
                .as_ref()
                .map_or("disabled", |s| state_name(s.state))
                .to_owned(),
            priority: status.as_ref().map_or(0, |s| u32::from(s.priority)),
            is_master: status
                .as_ref()
                .is_some_and(|s| s.state == vrrp::State::Master),
            vip: self.vip.clone().unwrap_or_default(),
            age_ms: 0,
        }
    }

    /// Starts the VRRP router with `check` as its health check (the
    /// gateway passes "a strict majority of the storage nodes answers").
    pub async fn start(&self, cfg: &VrrpConfig, check: vrrp::HealthCheck) -> Result<vrrp::Router> {
        let vip: vrrp::Vip = cfg.vip.parse()?;
        let mut rc = vrrp::RouterConfig::new(&cfg.interface, cfg.vrid, cfg.priority, vec![vip]);
        rc.advert_cs = u16::try_from(cfg.advert_ms / 10).unwrap_or(u16::MAX);
        rc.preempt = !cfg.nopreempt;
        rc.unicast_peers.clone_from(&cfg.unicast_peers);
        let timeout = Duration::from_millis(cfg.health_timeout_ms);
        let health = vrrp::HealthConfig {
            mode: cfg
                .health_weight
                .map_or(vrrp::HealthMode::Fault, vrrp::HealthMode::Weight),
            interval: Duration::from_millis(cfg.health_interval_ms),
            timeout,
            rise: cfg.health_rise,
            fall: cfg.health_fall,
        };
        let router = vrrp::Router::start(rc, Some((health, check))).await?;
        let mut status = router.status();
        self.status
            .send_replace(Some(status.borrow_and_update().clone()));
        let publish = self.status.clone();
        tokio::spawn(async move {
            while status.changed().await.is_ok() {
                publish.send_replace(Some(status.borrow_and_update().clone()));
            }
        });
        tracing::info!(interface = %cfg.interface, vip = %cfg.vip, priority = cfg.priority, "vrrp router started");
        Ok(router)
    }
}
