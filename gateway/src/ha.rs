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
use crate::error::{Error, Result};

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
        let interface = resolve_interface(&cfg.interface)?;
        let mut rc = vrrp::RouterConfig::new(&interface, cfg.vrid, cfg.priority, vec![vip]);
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
        tracing::info!(%interface, vip = %cfg.vip, priority = cfg.priority, "vrrp router started");
        Ok(router)
    }
}

/// The interface `spec` names: itself, or, for a network (`10.77.1.0/24`),
/// the interface with an IPv4 address in it (in a container, the name of
/// the interface on a given network depends on the order networks were
/// attached in).
pub fn resolve_interface(spec: &str) -> Result<String> {
    let Some((net, prefix)) = spec.split_once('/') else {
        return Ok(spec.to_string());
    };
    let bad = || {
        Error::Interface(format!(
            "{spec:?} is neither an interface nor a network ADDR/PREFIX"
        ))
    };
    let net: std::net::Ipv4Addr = net.parse().map_err(|_| bad())?;
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| Error::Interface(format!("list interfaces: {e}")))?;
    for ifa in addrs {
        let Some(addr) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        if u32::from(addr.ip()) & mask == u32::from(net) & mask {
            return Ok(ifa.interface_name);
        }
    }
    Err(Error::Interface(format!(
        "no interface has an address in {spec}"
    )))
}

#[cfg(test)]
mod interface_tests {
    #[test]
    fn an_interface_is_found_by_its_network() {
        assert_eq!(super::resolve_interface("eth7").unwrap(), "eth7");
        // Loopback is on every machine.
        assert_eq!(super::resolve_interface("127.0.0.0/8").unwrap(), "lo");
        // Class E, reserved: on no interface.
        assert!(super::resolve_interface("240.0.0.0/8").is_err());
        assert!(super::resolve_interface("10.0.0.0/40").is_err());
        assert!(super::resolve_interface("x/24").is_err());
    }
}
