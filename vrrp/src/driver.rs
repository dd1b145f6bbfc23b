//! The thin tokio driver around [`Machine`]: a raw IP socket for protocol
//! 112 (multicast to 224.0.0.18 or unicast to configured peers), netlink
//! (rtnetlink) to add and remove the virtual addresses, an `AF_PACKET`
//! frame for gratuitous ARP, and an optional health check run in its own
//! task so that a hung check never delays an advertisement.
//!
//! Needs `CAP_NET_RAW` and `CAP_NET_ADMIN` (root, or a network namespace
//! owned by the caller).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rtnetlink::AddressMessageBuilder;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::machine::Config;
use crate::packet::{self, GROUP, PROTOCOL};
use crate::{Action, Advert, ChecksumKind, DecodeError, Error, Machine, State, Version};

/// A virtual address with its prefix length, as configured on the
/// interface by the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vip {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Vip {
    type Err = Error;

    /// `10.0.0.100/24`, or a bare address meaning /32.
    fn from_str(s: &str) -> Result<Vip, Error> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, "32"));
        let bad = || Error::Config(format!("virtual address {s:?}: expected ADDR/PREFIX"));
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Vip { addr, prefix })
    }
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One virtual router on one interface.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The interface that carries the adverts and the virtual addresses.
    pub interface: String,
    pub vrid: u8,
    /// 1–254, or 255 for the owner of the addresses.
    pub priority: u8,
    /// Advertisement interval in centiseconds (1–4095; VRRPv2: whole
    /// seconds).
    pub advert_cs: u16,
    /// Preempt a lower-priority master (off = keepalived's `nopreempt`).
    pub preempt: bool,
    pub vips: Vec<Vip>,
    /// Unicast peers (keepalived's `unicast_peer`); empty means multicast.
    pub unicast_peers: Vec<Ipv4Addr>,
    pub version: Version,
    /// Checksum form sent (VRRPv3); both are accepted.
    pub checksum: ChecksumKind,
    /// Gratuitous ARP frames sent per virtual address on taking over.
    pub garp_count: u8,
    /// While master, repeat one gratuitous ARP every this many adverts
    /// (keepalived's `garp_master_refresh`, in adverts); 0 turns it off.
    pub garp_refresh_adverts: u32,
}

impl RouterConfig {
    /// A VRRPv3 multicast router with keepalived's defaults.
    pub fn new(interface: &str, vrid: u8, priority: u8, vips: Vec<Vip>) -> RouterConfig {
        RouterConfig {
            interface: interface.to_owned(),
            vrid,
            priority,
            advert_cs: 100,
            preempt: true,
            vips,
            unicast_peers: Vec::new(),
            version: Version::V3,
            checksum: ChecksumKind::PseudoHeader,
            garp_count: 3,
            garp_refresh_adverts: 1,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if self.vrid == 0 {
            return bad("vrid must be 1-255");
        }
        if self.priority == 0 {
            return bad("priority must be 1-255");
        }
        if self.advert_cs == 0 || self.advert_cs > 4095 {
            return bad("advert interval must be 10 ms to 40.95 s");
        }
        if self.version == Version::V2 && !self.advert_cs.is_multiple_of(100) {
            return bad("VRRPv2 advert interval must be whole seconds");
        }
        if self.vips.is_empty() {
            return bad("at least one virtual address is needed");
        }
        Ok(())
    }
}

/// Receive and send counters, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub sent: u64,
    pub send_errors: u64,
    /// Accepted VRRPv3 adverts by checksum form.
    pub pseudo_header_checksum: u64,
    pub message_only_checksum: u64,
    pub wrong_ttl: u64,
    pub wrong_version: u64,
    pub wrong_type: u64,
    pub wrong_length: u64,
    pub bad_checksum: u64,
    pub malformed: u64,
    pub unknown_vrid: u64,
    pub address_mismatch: u64,
    /// Unicast mode: from an address that is not a configured peer.
    pub not_from_peer: u64,
    /// Adverts whose interval differs from ours (learned, not refused).
    pub interval_mismatch: u64,
    pub gratuitous_arp: u64,
}

/// What the router is doing now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Priority advertised now.
    pub priority: u8,
    /// This router's own address on the interface.
    pub primary: Ipv4Addr,
    /// The current master as far as this router knows.
    pub master: Option<Ipv4Addr>,
    pub healthy: bool,
    /// When `state` was entered (after the addresses were configured).
    pub since: SystemTime,
    pub counters: Counters,
}

/// What a failing health check does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthMode {
    /// Resign at once (priority 0) and stay out until healthy.
    Fault,
    /// Advertise the configured priority plus this (negative) weight.
    Weight(i16),
}

/// Health tracking for the embedding program.
#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    pub mode: HealthMode,
    pub interval: Duration,
    /// A check that has not answered by then has failed.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become unhealthy.
    pub fall: u32,
}

/// The embedding program's health check: resolves to `true` when healthy.
pub type HealthCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// A running virtual router.
pub struct Router {
    status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
    health_task: Option<JoinHandle<()>>,
}

impl Router {
    /// Opens the sockets (so that a missing interface or permission fails
    /// here), then runs the router in a task.
    pub async fn start(
        config: RouterConfig,
        health: Option<(HealthConfig, HealthCheck)>,
    ) -> Result<Router, Error> {
        config.validate()?;
        let link = Link::lookup(&config)?;
        let socket = open_socket(&config, link.primary)?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::io("netlink"))?;
        tokio::spawn(conn);
        let machine = Machine::new(Config {
            vrid: config.vrid,
            priority: config.priority,
            advert_cs: config.advert_cs,
            preempt: config.preempt,
            primary: link.primary,
            addresses: config.vips.iter().map(|v| v.addr).collect(),
            version: config.version,
        });
        let status = Status {
            state: State::Initialize,
            priority: config.priority,
            primary: link.primary,
            master: None,
            healthy: true,
            since: SystemTime::now(),
            counters: Counters::default(),
        };
        let (status_tx, status_rx) = watch::channel(status.clone());
        let (health_tx, health_rx) = mpsc::channel(4);
        let health_mode = health.as_ref().map(|(c, _)| c.mode);
        let health_task =
            health.map(|(cfg, check)| tokio::spawn(track_health(cfg, check, health_tx)));
        let (stop_tx, stop_rx) = oneshot::channel();
        let driver = Driver {
            machine,
            socket,
            netlink: handle,
            link,
            config,
            status,
            status_tx,
            origin: Instant::now(),
            health_mode,
            last_garp: None,
        };
        let task = tokio::spawn(driver.run(stop_rx, health_rx));
        Ok(Router {
            status: status_rx,
            stop: Some(stop_tx),
            task,
            health_task,
        })
    }

    /// The router's status, updated on every change.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Graceful shutdown: a master sends priority 0 and removes the
    /// addresses, so a backup takes over after its skew time.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.health_task.take() {
            h.abort();
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(Error::Io {
                context: "vrrp task",
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Resolves if the router stops on its own (a netlink or socket
    /// failure); the embedding program should then exit.
    pub async fn failed(&mut self) -> Error {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => Error::Config("router stopped".into()),
            Err(e) => Error::Io {
                context: "vrrp task",
                source: std::io::Error::other(e.to_string()),
            },
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(h) = &self.health_task {
            h.abort();
        }
    }
}

/// The interface as found at startup.
struct Link {
    index: u32,
    mac: [u8; 6],
    primary: Ipv4Addr,
    iface: pnet_datalink::NetworkInterface,
}

impl Link {
    fn lookup(config: &RouterConfig) -> Result<Link, Error> {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == config.interface)
            .ok_or_else(|| Error::NoInterface(config.interface.clone()))?;
        let vips: Vec<Ipv4Addr> = config.vips.iter().map(|v| v.addr).collect();
        let primary = iface
            .ips
            .iter()
            .filter_map(|n| match n.ip() {
                IpAddr::V4(a) if !vips.contains(&a) => Some(a),
                _ => None,
            })
            .next()
            .ok_or_else(|| Error::NoAddress(config.interface.clone()))?;
        let mac = iface
            .mac
            .map(|m| m.octets())
            .ok_or_else(|| Error::NoMac(config.interface.clone()))?;
        Ok(Link {
            index: iface.index,
            mac,
            primary,
            iface,
        })
    }
}

/// The raw socket is driven through tokio's `UdpSocket`, whose
/// `recv`/`send_to` are plain datagram calls that work on any datagram
/// socket, raw ones included (this avoids `unsafe` fd registration).
fn open_socket(config: &RouterConfig, primary: Ipv4Addr) -> Result<UdpSocket, Error> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(PROTOCOL))),
    )
    .map_err(Error::io("raw socket for protocol 112 (needs CAP_NET_RAW)"))?;
    s.bind_device(Some(config.interface.as_bytes()))
        .map_err(Error::io("bind to interface"))?;
    s.set_nonblocking(true).map_err(Error::io("non-blocking"))?;
    s.set_ttl_v4(u32::from(packet::TTL))
        .map_err(Error::io("TTL"))?;
    s.set_multicast_ttl_v4(u32::from(packet::TTL))
        .map_err(Error::io("multicast TTL"))?;
    s.set_multicast_loop_v4(false)
        .map_err(Error::io("multicast loop"))?;
    // Internetwork control precedence, as keepalived sends.
    s.set_tos_v4(0xc0).map_err(Error::io("TOS"))?;
    s.set_multicast_if_v4(&primary)
        .map_err(Error::io("multicast interface"))?;
    if config.unicast_peers.is_empty() {
        s.join_multicast_v4(&GROUP, &primary)
            .map_err(Error::io("join 224.0.0.18"))?;
    }
    UdpSocket::from_std(std::net::UdpSocket::from(s)).map_err(Error::io("register socket"))
}

async fn track_health(cfg: HealthConfig, check: HealthCheck, tx: mpsc::Sender<bool>) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut healthy, mut ok_run, mut fail_run) = (true, 0u32, 0u32);
    loop {
        tick.tick().await;
        let ok = tokio::time::timeout(cfg.timeout, check())
            .await
            .unwrap_or(false);
        if ok {
            ok_run += 1;
            fail_run = 0;
        } else {
            fail_run += 1;
            ok_run = 0;
        }
        let next = if healthy {
            fail_run < cfg.fall.max(1)
        } else {
            ok_run >= cfg.rise.max(1)
        };
        if next != healthy {
            healthy = next;
            tracing::warn!(healthy, "vrrp health check changed");
            if tx.send(healthy).await.is_err() {
                return;
            }
        }
    }
}

struct Driver {
    machine: Machine,
    socket: UdpSocket,
    netlink: rtnetlink::Handle,
    link: Link,
    config: RouterConfig,
    status: Status,
    status_tx: watch::Sender<Status>,
    origin: Instant,
    health_mode: Option<HealthMode>,
    last_garp: Option<Instant>,
}

impl Driver {
    fn now(&self) -> Duration {
        Instant::now().duration_since(self.origin)
    }

    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut health: mpsc::Receiver<bool>,
    ) -> Result<(), Error> {
        let actions = self.machine.startup(self.now());
        self.execute(actions).await?;
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = self.machine.next_deadline().map(|d| self.origin + d);
            tokio::select! {
                // Packets first: adverts queued while the process was
                // paused must be seen before an overdue timer fires.
                biased;
                ready = self.socket.readable() => {
                    ready.map_err(Error::io("wait for socket"))?;
                    let mut actions = Vec::new();
                    loop {
                        match self.socket.try_recv(&mut buf) {
                            Ok(n) => {
                                let now = self.now();
                                actions.extend(self.on_packet(&buf[..n], now));
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "vrrp receive");
                                break;
                            }
                        }
                    }
                    self.execute(actions).await?;
                }
                h = health.recv(), if self.health_mode.is_some() => {
                    if let Some(h) = h {
                        self.on_health(h).await?;
                    }
                }
                _ = &mut stop => {
                    let actions = self.machine.shutdown();
                    self.execute(actions).await?;
                    return Ok(());
                }
                () = sleep_until(deadline) => {
                    let actions = self.machine.poll(self.now());
                    self.execute(actions).await?;
                }
            }
        }
    }

    async fn on_health(&mut self, healthy: bool) -> Result<(), Error> {
        self.status.healthy = healthy;
        let now = self.now();
        let actions = match self.health_mode {
            Some(HealthMode::Fault) => self.machine.set_fault(now, !healthy),
            Some(HealthMode::Weight(w)) => {
                let base = i16::from(self.config.priority);
                let p = if healthy { base } else { base + w };
                self.machine
                    .set_priority(now, u8::try_from(p.clamp(1, 254)).unwrap_or(1))
            }
            None => Vec::new(),
        };
        self.status.priority = self.machine.priority();
        self.execute(actions).await
    }

    fn on_packet(&mut self, packet: &[u8], now: Duration) -> Vec<Action> {
        let c = &mut self.status.counters;
        let r = match packet::decode_ipv4(packet) {
            Ok(r) => r,
            Err(e) => {
                match e {
                    DecodeError::WrongTtl(_) => c.wrong_ttl += 1,
                    DecodeError::WrongVersion(_) => c.wrong_version += 1,
                    DecodeError::WrongType(_) => c.wrong_type += 1,
                    DecodeError::WrongLength { .. } => c.wrong_length += 1,
                    DecodeError::BadChecksum => c.bad_checksum += 1,
                    DecodeError::TooShort { .. }
                    | DecodeError::BadIpHeader
                    | DecodeError::NotVrrp(_)
                    | DecodeError::BadInterval(_) => c.malformed += 1,
                }
                tracing::debug!(error = %e, "vrrp packet refused");
                return Vec::new();
            }
        };
        if r.src == self.link.primary {
            return Vec::new();
        }
        let unicast = !self.config.unicast_peers.is_empty();
        if unicast && !self.config.unicast_peers.contains(&r.src) {
            c.not_from_peer += 1;
            return Vec::new();
        }
        let ad = &r.advert;
        if ad.vrid != self.config.vrid {
            c.unknown_vrid += 1;
            return Vec::new();
        }
        if ad.version != self.config.version {
            c.wrong_version += 1;
            return Vec::new();
        }
        let mut theirs = ad.addresses.clone();
        theirs.sort_unstable();
        let mut ours: Vec<Ipv4Addr> = self.config.vips.iter().map(|v| v.addr).collect();
        ours.sort_unstable();
        if theirs != ours {
            c.address_mismatch += 1;
            tracing::warn!(src = %r.src, "vrrp advert with another address list: refused");
            return Vec::new();
        }
        c.received += 1;
        match r.checksum {
            ChecksumKind::PseudoHeader => c.pseudo_header_checksum += 1,
            ChecksumKind::MessageOnly => c.message_only_checksum += 1,
        }
        if ad.interval_cs != self.config.advert_cs {
            c.interval_mismatch += 1;
        }
        if self.machine.state() == State::Backup {
            self.status.master = (ad.priority > 0).then_some(r.src);
        }
        self.machine.receive(now, r.src, ad)
    }

    async fn execute(&mut self, actions: Vec<Action>) -> Result<(), Error> {
        let mut changed = false;
        for action in actions {
            match action {
                Action::Send(ad) => {
                    self.send(&ad);
                    if ad.priority > 0 {
                        self.refresh_arp();
                    }
                }
                Action::TakeAddresses => {
                    self.take_addresses().await?;
                    self.gratuitous_arp(self.config.garp_count);
                }
                Action::ReleaseAddresses => self.release_addresses().await?,
                Action::Became(state) => {
                    tracing::info!(?state, priority = self.machine.priority(), "vrrp state");
                    self.status.state = state;
                    self.status.master = match state {
                        State::Master => Some(self.link.primary),
                        State::Backup => self.status.master.filter(|m| *m != self.link.primary),
                        State::Initialize | State::Fault => None,
                    };
                    changed = true;
                }
            }
        }
        if changed {
            self.status.since = SystemTime::now();
        }
        self.status.priority = self.machine.priority();
        let status = self.status.clone();
        self.status_tx.send_if_modified(|s| {
            // Counters change on every packet; publish them with the rest
            // but wake watchers only for what they act on.
            let wake = s.state != status.state
                || s.priority != status.priority
                || s.master != status.master
                || s.healthy != status.healthy;
            *s = status;
            wake
        });
        Ok(())
    }

    fn send(&mut self, ad: &Advert) {
        let dsts: Vec<Ipv4Addr> = if self.config.unicast_peers.is_empty() {
            vec![GROUP]
        } else {
            self.config.unicast_peers.clone()
        };
        for dst in dsts {
            let sent = ad
                .encode(self.link.primary, dst, self.config.checksum)
                .map_err(std::io::Error::other)
                .and_then(|m| {
                    let to = SocketAddr::V4(SocketAddrV4::new(dst, 0));
                    self.socket.try_send_to(&m, to)
                });
            match sent {
                Ok(_) => self.status.counters.sent += 1,
                Err(e) => {
                    self.status.counters.send_errors += 1;
                    tracing::warn!(%dst, error = %e, "vrrp send");
                }
            }
        }
    }

    async fn take_addresses(&mut self) -> Result<(), Error> {
        for vip in self.config.vips.clone() {
            let r = self
                .netlink
                .address()
                .add(self.link.index, IpAddr::V4(vip.addr), vip.prefix)
                .execute()
                .await;
            match r {
                Ok(()) => tracing::info!(%vip, "virtual address added"),
                Err(e) if errno(&e) == Some(libc_eexist()) => {}
                Err(e) => {
                    return Err(Error::Netlink {
                        op: "add",
                        addr: vip.addr,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn release_addresses(&mut self) -> Result<(), Error> {
        for vip in self.config.vips.clone() {
            let msg = AddressMessageBuilder::<Ipv4Addr>::new()
                .index(self.link.index)
                .address(vip.addr, vip.prefix)
                .build();
            match self.netlink.address().del(msg).execute().await {
                Ok(()) => tracing::info!(%vip, "virtual address removed"),
                Err(e) if errno(&e) == Some(libc_eaddrnotavail()) => {}
                Err(e) => {
                    return Err(Error::Netlink {
                        op: "remove",
                        addr: vip.addr,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends `count` gratuitous ARP frames per virtual address from a
    /// blocking thread: opening a packet socket is quick, but closing one
    /// waits for an RCU grace period (tens of milliseconds), which must not
    /// delay an advert.
    fn gratuitous_arp(&mut self, count: u8) {
        self.last_garp = Some(Instant::now());
        let frames: Vec<[u8; 42]> = self
            .config
            .vips
            .iter()
            .map(|v| packet::gratuitous_arp(self.link.mac, v.addr))
            .collect();
        self.status.counters.gratuitous_arp += (frames.len() * usize::from(count.max(1))) as u64;
        let iface = self.link.iface.clone();
        tokio::task::spawn_blocking(move || {
            let cfg = pnet_datalink::Config {
                promiscuous: false,
                ..Default::default()
            };
            let mut tx = match pnet_datalink::channel(&iface, cfg) {
                Ok(pnet_datalink::Channel::Ethernet(tx, _rx)) => tx,
                Ok(_) => {
                    tracing::warn!("gratuitous ARP: no Ethernet channel");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gratuitous ARP: open packet socket");
                    return;
                }
            };
            for frame in &frames {
                for _ in 0..count.max(1) {
                    if let Some(Err(e)) = tx.send_to(frame, None) {
                        tracing::warn!(error = %e, "gratuitous ARP");
                    }
                }
            }
        });
    }

    /// While master, one gratuitous ARP per `garp_refresh`: after a
    /// partition heals, the returning master may never hear the other
    /// side's adverts (its own arrive first and the other side yields
    /// silently), so only a refresh bounds how long clients keep a stale
    /// ARP entry.
    fn refresh_arp(&mut self) {
        if self.config.garp_refresh_adverts == 0 {
            return;
        }
        let every = Duration::from_millis(10 * u64::from(self.config.advert_cs))
            * self.config.garp_refresh_adverts;
        if self.machine.state() == State::Master
            && self
                .last_garp
                .is_none_or(|t| t.elapsed() + Duration::from_millis(5) >= every)
        {
            self.gratuitous_arp(1);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The errno of a netlink error reply (the kernel sends it negated).
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

const fn libc_eexist() -> i32 {
    17
}

const fn libc_eaddrnotavail() -> i32 {
    99
}

impl Counters {
    /// Every counter with its name, for logs and metrics.
    pub fn fields(&self) -> [(&'static str, u64); 16] {
        [
            ("received", self.received),
            ("sent", self.sent),
            ("send_errors", self.send_errors),
            ("pseudo_header_checksum", self.pseudo_header_checksum),
            ("message_only_checksum", self.message_only_checksum),
            ("wrong_ttl", self.wrong_ttl),
            ("wrong_version", self.wrong_version),
            ("wrong_type", self.wrong_type),
            ("wrong_length", self.wrong_length),
            ("bad_checksum", self.bad_checksum),
            ("malformed", self.malformed),
            ("unknown_vrid", self.unknown_vrid),
            ("address_mismatch", self.address_mismatch),
            ("not_from_peer", self.not_from_peer),
            ("interval_mismatch", self.interval_mismatch),
            ("gratuitous_arp", self.gratuitous_arp),
        ]
    }
}
