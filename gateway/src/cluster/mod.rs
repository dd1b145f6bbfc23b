//! The gateway's view of the storage nodes: one client per node, a task per
//! node that follows its catalog change stream into the [`index`](crate::index),
//! and liveness from health checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rondo_core::{NodeId, SongId};
use rondo_proto::channel::{self, Link};
use rondo_proto::mtls::{ClusterTls, Expect, Links};
use rondo_proto::storage::v1::{self as pb, storage_node_client::StorageNodeClient};
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::index::{Catalog, Snapshot};

mod requests;
pub use requests::{
    AccountUpdate, Layout, LayoutMember, LayoutOp, LayoutPlan, ListeningEdit, NodeMove,
    PlaylistEdit, Probed, UserEdit, probe,
};

/// How long a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often nodes are health-checked.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// What the gateway last learned about a node.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub id: Option<NodeId>,
    pub stream_base_url: String,
    pub up: bool,
    pub song_count: u64,
    pub bytes_stored: u64,
    /// Side effects waiting in the node's outbox (blob fetches and pushes,
    /// removals).
    pub outbox_len: u64,
    /// The resync worker's work at its last pass: blobs the node owns and
    /// lacks, copies it holds and does not own.
    pub blobs_to_fetch: u64,
    pub copies_to_give_up: u64,
    /// The bytes of `blobs_to_fetch`.
    pub bytes_to_fetch: u64,
    /// Bytes the node's resync worker fetched since it started, and when
    /// that was read; the rate it fetched at between the last two reads
    /// (bytes per second, smoothed).
    pub resync_received_bytes: u64,
    pub resync_read_at: Option<std::time::Instant>,
    pub resync_bytes_per_second: f64,
    /// Partitions in which the node owns blobs it lacks.
    pub partitions_lacking: Vec<u32>,
    /// The node's background byte rates (bytes per second, 0: no limit).
    pub resync_rate_bytes: u64,
    pub scrub_rate_bytes: u64,
    /// The control plane as the node last reported it.
    pub ring: Option<pb::RingStatus>,
    /// Token passes per second this node saw between the last two health
    /// checks.
    pub passes_per_second: f64,
    /// When the ring status was read (for the rate).
    pub ring_read_at: Option<std::time::Instant>,
}

impl NodeInfo {
    /// Notes the resync worker's progress at `now`: its fetch rate (half
    /// the last interval's, half the rate before, so that one quiet
    /// interval does not zero it) and what is left.
    fn note_resync(&mut self, received: u64, to_fetch: u64, now: std::time::Instant) {
        if let Some(at) = self.resync_read_at {
            let secs = now.duration_since(at).as_secs_f64();
            if received < self.resync_received_bytes {
                // The node restarted: its counter began again.
                self.resync_bytes_per_second = 0.0;
            } else if secs > 0.0 {
                let rate = (received - self.resync_received_bytes) as f64 / secs;
                self.resync_bytes_per_second = if self.resync_bytes_per_second > 0.0 {
                    0.5 * (rate + self.resync_bytes_per_second)
                } else {
                    rate
                };
            }
        }
        self.resync_received_bytes = received;
        self.resync_read_at = Some(now);
        self.bytes_to_fetch = to_fetch;
        if to_fetch == 0 {
            self.resync_bytes_per_second = 0.0;
        }
    }

    /// Seconds until the resync worker has fetched what it lacks at its
    /// recent rate; none with nothing to fetch or no progress seen yet.
    pub fn resync_eta(&self) -> Option<u64> {
        (self.bytes_to_fetch > 0 && self.resync_bytes_per_second > 0.0)
            .then(|| (self.bytes_to_fetch as f64 / self.resync_bytes_per_second).ceil() as u64)
    }
}

/// A node's control plane as the resolvers see it (no wire types).
#[derive(Clone, Debug, PartialEq)]
pub struct RingView {
    /// `counter:representative` of the ring it is in or forming.
    pub id: String,
    pub phase: String,
    pub last_applied_seq: u64,
    pub catalog_digest: String,
    pub is_voter: bool,
}

impl NodeInfo {
    /// The node's control plane, as it last reported it.
    pub fn ring_view(&self) -> Option<RingView> {
        self.ring.as_ref().map(|r| RingView {
            id: format!("{}:{}", r.ring_counter, r.ring_rep),
            phase: r.phase.clone(),
            last_applied_seq: r.last_applied_seq,
            catalog_digest: r.catalog_digest.clone(),
            is_voter: r.is_voter,
        })
    }
}

/// The ring that orders the catalog now, as the nodes that answer report
/// it: of the rings whose members report a majority of the voters (the
/// node's own `quorate`, the one quorum rule), the greatest id.
#[derive(Clone, Debug, PartialEq)]
pub struct PrimaryRing {
    /// `counter:representative`.
    pub id: String,
    pub members: Vec<String>,
    /// The member that reported the most token rotations (an estimate of
    /// where the token is: it moves many times a second).
    pub token_holder: Option<NodeId>,
    /// Highest catalog update sequence applied by a member.
    pub last_seq: u64,
    /// Full token rotations per second, from the members' token counters.
    pub rotations_per_second: f64,
}

/// See [`PrimaryRing`]; none while no ring has a quorum.
pub fn primary_ring(infos: &[NodeInfo]) -> Option<PrimaryRing> {
    let live: Vec<(&NodeInfo, &pb::RingStatus)> = infos
        .iter()
        .filter(|i| i.up)
        .filter_map(|i| i.ring.as_ref().map(|r| (i, r)))
        .filter(|(_, r)| r.quorate)
        .collect();
    let (_, best) = live
        .iter()
        .max_by(|a, b| (a.1.ring_counter, &a.1.ring_rep).cmp(&(b.1.ring_counter, &b.1.ring_rep)))?;
    let same =
        |r: &pb::RingStatus| r.ring_counter == best.ring_counter && r.ring_rep == best.ring_rep;
    let in_ring: Vec<_> = live.iter().filter(|(_, r)| same(r)).collect();
    let members = best.members.len().max(1) as f64;
    let passes = in_ring
        .iter()
        .map(|(i, _)| i.passes_per_second)
        .fold(0.0_f64, f64::max);
    Some(PrimaryRing {
        id: format!("{}:{}", best.ring_counter, best.ring_rep),
        members: best.members.clone(),
        token_holder: in_ring
            .iter()
            .max_by_key(|(_, r)| r.rotations)
            .and_then(|(i, _)| i.id),
        last_seq: in_ring
            .iter()
            .map(|(_, r)| r.last_applied_seq)
            .max()
            .unwrap_or(0),
        rotations_per_second: passes / members,
    })
}

/// One storage node.
#[derive(Debug)]
pub struct Node {
    /// The node's gRPC URL.
    pub grpc_url: String,
    pub client: StorageNodeClient<Channel>,
    info: RwLock<NodeInfo>,
}

impl Node {
    /// A snapshot of what is known about the node.
    pub fn info(&self) -> NodeInfo {
        self.info.read().map(|i| i.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut NodeInfo)) {
        if let Ok(mut info) = self.info.write() {
            f(&mut info);
        }
    }

    pub(super) async fn check_health(
        &self,
        me: Option<pb::GatewayInfo>,
    ) -> Result<pb::HealthResponse> {
        let mut client = self.client.clone();
        let request = pb::HealthRequest { gateway: me };
        let reply = tokio::time::timeout(HEALTH_TIMEOUT, client.health(request))
            .await
            .map_err(|_| Error::Unavailable(format!("{} health check timed out", self.grpc_url)))?
            .map_err(|status| Error::Node {
                node: self.grpc_url.clone(),
                status: Box::new(status),
            })?
            .into_inner();
        let id: NodeId = reply.node_id.parse()?;
        self.update(|info| {
            info.id = Some(id);
            info.stream_base_url = reply.stream_base_url.clone();
            info.up = true;
            info.song_count = reply.song_count;
            info.bytes_stored = reply.bytes_stored;
            info.outbox_len = reply.outbox_len;
            info.blobs_to_fetch = reply.blobs_to_fetch;
            info.copies_to_give_up = reply.copies_to_give_up;
            if let Some(rates) = &reply.rates {
                info.resync_rate_bytes = rates.resync_rate_bytes;
                info.scrub_rate_bytes = rates.scrub_rate_bytes;
            }
            let now = std::time::Instant::now();
            info.note_resync(reply.resync_received_bytes, reply.bytes_to_fetch, now);
            info.partitions_lacking = reply.partitions_lacking.clone();
            if let (Some(old), Some(new), Some(at)) = (&info.ring, &reply.ring, info.ring_read_at)
                && old.ring_counter == new.ring_counter
                && old.ring_rep == new.ring_rep
                && new.rotations >= old.rotations
            {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    info.passes_per_second = (new.rotations - old.rotations) as f64 / secs;
                }
            }
            // A reply sent before a layout change but read after a newer
            // one (two health checks in flight) keeps the newer layout.
            let mut ring = reply.ring.clone();
            if let (Some(new), Some(old)) = (&mut ring, &info.ring)
                && let (Some(nl), Some(ol)) = (&new.layout, &old.layout)
                && nl.epoch < ol.epoch
            {
                new.layout = old.layout.clone();
            }
            info.ring = ring;
            info.ring_read_at = Some(now);
        });
        Ok(reply)
    }
}

/// All nodes and the catalog index built from their change streams. The
/// nodes are those of the configuration plus every node of the layout the
/// nodes report (a node added at runtime is found there).
#[derive(Debug)]
pub struct Cluster {
    nodes: RwLock<Vec<Arc<Node>>>,
    /// Stops the background tasks ([`Cluster::shutdown`]).
    stop: watch::Sender<bool>,
    catalog: Mutex<Catalog>,
    /// Highest change sequence applied from each node.
    applied: Mutex<HashMap<NodeId, u64>>,
    dirty: Notify,
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// Gateways as the nodes last reported them, by id, with when.
    gateways: Mutex<HashMap<String, (pb::GatewayInfo, std::time::Instant)>>,
    /// This gateway, as told to the nodes.
    me: Arc<crate::ha::Ha>,
    /// This gateway's cluster certificate: every call to a node is mutual
    /// TLS ([`rondo_proto::mtls`]).
    links: Links,
}

impl Cluster {
    /// Clients for the given gRPC URLs (connections are made lazily), for
    /// the gateway `me`.
    pub fn new(
        urls: &[String],
        me: Arc<crate::ha::Ha>,
        tls: ClusterTls,
        sealer: Arc<rondo_core::sealing::Sealer>,
    ) -> Result<Arc<Cluster>> {
        let links = Links::tcp(Arc::new(tls));
        let nodes = urls
            .iter()
            .map(|u| node_client(u, &links))
            .collect::<Result<_>>()?;
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
        Ok(Arc::new(Cluster {
            nodes: RwLock::new(nodes),
            stop: watch::Sender::new(false),
            catalog: Mutex::new(Catalog::with_sealer(sealer)),
            applied: Mutex::new(HashMap::new()),
            dirty: Notify::new(),
            snapshot,
            gateways: Mutex::new(HashMap::new()),
            me,
            links,
        }))
    }

    /// The current catalog snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Every node known: configured or found in the layout.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.read().map(|n| n.clone()).unwrap_or_default()
    }

    /// The node with this id, if known.
    pub fn node(&self, id: NodeId) -> Option<Arc<Node>> {
        self.nodes().into_iter().find(|n| n.info().id == Some(id))
    }

    /// The newest layout any node reports (greatest epoch).
    /// The newest layout the nodes reported (see [`freshness`]).
    pub fn layout(&self) -> Option<Layout> {
        self.nodes()
            .iter()
            .filter_map(|n| n.info().ring.and_then(|r| r.layout))
            .max_by_key(freshness)
            .as_ref()
            .map(Layout::from)
    }

    /// How many partitions have fewer than R verified copies, as the nodes
    /// report them: those an owner lacks blobs of (its resync worker's last
    /// pass), and every partition a down owner owns. None before a layout
    /// is known.
    pub fn partitions_below_replication(&self) -> Option<usize> {
        let infos: Vec<NodeInfo> = self.nodes().iter().map(|n| n.info()).collect();
        let layout = infos
            .iter()
            .filter_map(|i| i.ring.as_ref().and_then(|r| r.layout.clone()))
            .max_by_key(freshness)?;
        let (bits, owners): (u32, std::collections::BTreeMap<String, Vec<u32>>) =
            match &layout.placement {
                Some(p) => {
                    let r = usize::try_from(p.replicas).unwrap_or(1).max(1);
                    let mut owners: std::collections::BTreeMap<String, Vec<u32>> =
                        std::collections::BTreeMap::new();
                    for (k, pair) in p.table.chunks_exact(2).enumerate() {
                        let i = usize::from(u16::from_le_bytes([pair[0], pair[1]]));
                        if let (Some(id), Ok(part)) = (p.nodes.get(i), u32::try_from(k / r)) {
                            owners.entry(id.clone()).or_default().push(part);
                        }
                    }
                    (p.bits, owners)
                }
                None => {
                    let bits = u32::from(rondo_core::partitions::PARTITION_BITS);
                    let all: Vec<u32> = (0..1u32 << bits).collect();
                    let owners = layout
                        .nodes
                        .iter()
                        .map(|m| (m.id.clone(), all.clone()))
                        .collect();
                    (bits, owners)
                }
            };
        let mut below = std::collections::BTreeSet::new();
        for (id, parts) in &owners {
            let info = infos
                .iter()
                .find(|i| i.id.is_some_and(|n| n.to_string() == *id));
            match info {
                Some(i) if i.up => below.extend(
                    i.partitions_lacking
                        .iter()
                        .copied()
                        .filter(|p| *p < 1u32 << bits.min(16)),
                ),
                _ => below.extend(parts.iter().copied()),
            }
        }
        Some(below.len())
    }

    /// The owners of a blob in the newest placement the nodes reported, in
    /// the placement's order (empty without a placement: every node owns
    /// every blob).
    pub fn owners_of(&self, hash: &rondo_core::ContentHash) -> Vec<NodeId> {
        let layout = self
            .nodes()
            .iter()
            .filter_map(|n| n.info().ring.and_then(|r| r.layout))
            .max_by_key(freshness);
        let Some(p) = layout.and_then(|l| l.placement) else {
            return Vec::new();
        };
        let (Ok(bits), Ok(r)) = (u8::try_from(p.bits), usize::try_from(p.replicas)) else {
            return Vec::new();
        };
        let part = rondo_core::partitions::partition_of(hash, bits);
        p.table
            .chunks_exact(2)
            .skip(part * r)
            .take(r)
            .filter_map(|pair| {
                p.nodes
                    .get(usize::from(u16::from_le_bytes([pair[0], pair[1]])))
            })
            .filter_map(|id| id.parse().ok())
            .collect()
    }

    /// Whether the node is in the newest layout (or no layout is known yet).
    /// A node removed from the layout serves nothing more.
    pub fn in_layout(&self, layout: Option<&Layout>, id: NodeId) -> bool {
        layout.is_none_or(|l| {
            l.members.is_empty() || l.members.iter().any(|m| m.id == id.to_string())
        })
    }

    /// Ids of the nodes that are up and in the layout.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let layout = self.layout();
        self.nodes()
            .iter()
            .map(|n| n.info())
            .filter(|i| i.up)
            .filter_map(|i| i.id)
            .filter(|id| self.in_layout(layout.as_ref(), *id))
            .collect()
    }

    /// Where to send a write: the live nodes in an operational ring with a
    /// majority of the voters, as they last reported it (a node cut off in a
    /// minority would hold the upload for its whole write timeout and then
    /// refuse it). When none reports one (a ring still forming, or every
    /// node cut off), every live node: the node then waits for a ring, and
    /// says why if none comes.
    pub fn write_targets(&self) -> Vec<NodeId> {
        let layout = self.layout();
        let infos: Vec<NodeInfo> = self
            .nodes()
            .iter()
            .map(|n| n.info())
            .filter(|i| i.up)
            .filter(|i| i.id.is_some_and(|id| self.in_layout(layout.as_ref(), id)))
            .collect();
        let quorate = |i: &NodeInfo| i.ring.as_ref().is_some_and(|r| r.quorate);
        let writable: Vec<NodeId> = infos
            .iter()
            .filter(|i| quorate(i))
            .filter_map(|i| i.id)
            .collect();
        if writable.is_empty() {
            infos.iter().filter_map(|i| i.id).collect()
        } else {
            writable
        }
    }

    /// A node that is up, with its id: the first of `preferred` that is,
    /// else any.
    pub fn pick_live(
        &self,
        preferred: impl IntoIterator<Item = NodeId>,
    ) -> Result<(NodeId, Arc<Node>)> {
        let live = self.live_nodes();
        let target = preferred
            .into_iter()
            .find(|n| live.contains(n))
            .or_else(|| live.first().copied())
            .ok_or_else(|| Error::Unavailable("no storage node is up".into()))?;
        Ok((target, self.known_node(target)?))
    }

    /// The node with this id, or `UNAVAILABLE` if it is no longer known.
    pub(crate) fn known_node(&self, id: NodeId) -> Result<Arc<Node>> {
        self.node(id)
            .ok_or_else(|| Error::Unavailable(format!("node {id} vanished")))
    }

    /// Waits until the snapshot includes change `seq` of `node`.
    pub async fn wait_applied(&self, node: NodeId, seq: u64) -> Result<()> {
        let mut rx = self.snapshot.subscribe();
        let wait = rx.wait_for(|s| s.applied.get(&node).copied().unwrap_or(0) >= seq);
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Unavailable(format!(
                "node {node} did not report change {seq} in time"
            ))),
        }
    }

    /// Waits until this gateway's index has the song `id` (a song another
    /// upload stored first, which a node named as the one these bytes
    /// are), and returns it.
    pub async fn wait_song(&self, id: SongId) -> Result<Arc<crate::index::SongRec>> {
        let mut rx = self.snapshot.subscribe();
        let wait = rx.wait_for(|s| s.song(id).is_some());
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(snap)) => snap
                .song(id)
                .cloned()
                .ok_or_else(|| Error::Unavailable(format!("song {id} is not indexed yet"))),
            _ => Err(Error::Unavailable(format!(
                "song {id} was stored but is not indexed yet"
            ))),
        }
    }

    /// Whether a strict majority of the storage nodes answers a health
    /// check within `timeout` (the VRRP health check). It answers as soon
    /// as a majority has: a node that does not answer at all (cut off, its
    /// packets dropped) must not hold the check up until the caller's own
    /// timeout, of the same length, fails it; that made a gateway with two
    /// of three nodes flap into fault and drop the floating address.
    pub async fn quorum_reachable(&self, timeout: Duration) -> bool {
        let layout = self.layout();
        let nodes: Vec<Arc<Node>> = self
            .nodes()
            .into_iter()
            .filter(|n| {
                n.info()
                    .id
                    .is_none_or(|id| self.in_layout(layout.as_ref(), id))
            })
            .collect();
        let checks = nodes.iter().map(|n| {
            let mut client = n.client.clone();
            async move {
                matches!(
                    tokio::time::timeout(timeout, client.health(pb::HealthRequest::default()))
                        .await,
                    Ok(Ok(_))
                )
            }
        });
        let mut pending: futures::stream::FuturesUnordered<_> = checks.collect();
        let mut up = 0;
        while let Some(ok) = futures::StreamExt::next(&mut pending).await {
            if ok {
                up += 1;
                if 2 * up > nodes.len() {
                    return true;
                }
            }
        }
        false
    }

    /// The gateways the nodes know of, this one's entry live.
    pub fn gateways(&self) -> Vec<pb::GatewayInfo> {
        let now = std::time::Instant::now();
        let mut map: HashMap<String, pb::GatewayInfo> = self
            .gateways
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|(_, (_, at))| now.duration_since(*at) < Duration::from_secs(10))
                    .map(|(id, (info, at))| {
                        let mut info = info.clone();
                        let since = u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(0);
                        info.age_ms = info.age_ms.saturating_add(since);
                        (id.clone(), info)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let info = self.me.info();
        map.insert(info.id.clone(), info);
        let mut out: Vec<_> = map.into_values().collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn heard_gateways(&self, reported: &[pb::GatewayInfo]) {
        let now = std::time::Instant::now();
        let Ok(mut map) = self.gateways.lock() else {
            return;
        };
        for g in reported {
            let at = now - Duration::from_millis(g.age_ms.min(60_000));
            let fresher = map.get(&g.id).is_none_or(|(_, old)| at >= *old);
            if fresher {
                map.insert(
                    g.id.clone(),
                    (
                        pb::GatewayInfo {
                            age_ms: 0,
                            ..g.clone()
                        },
                        at,
                    ),
                );
            }
        }
        map.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(30));
    }

    pub(super) fn me(&self) -> Option<pb::GatewayInfo> {
        Some(self.me.info())
    }

    /// Starts the background tasks: one follower per node, the health
    /// checker and the snapshot rebuilder, until [`Cluster::shutdown`].
    pub fn start(self: &Arc<Self>) {
        let stop = self.stop.subscribe();
        for node in self.nodes() {
            tokio::spawn(self.clone().follow(node, stop.clone()));
        }
        tokio::spawn(self.clone().rebuild_loop(stop.clone()));
        tokio::spawn(self.clone().health_loop(stop));
    }

    /// Stops the background tasks.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    async fn health_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            for node in self.nodes() {
                match node.check_health(self.me()).await {
                    Ok(reply) => self.heard_gateways(&reply.gateways),
                    Err(e) => {
                        if node.info().up {
                            tracing::warn!(node = %node.grpc_url, error = %e, "node down");
                        }
                        node.update(|i| i.up = false);
                    }
                }
            }
            self.discover();
            tokio::select! {
                () = tokio::time::sleep(HEALTH_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Adds the nodes of the newest layout that this gateway does not know
    /// yet (added at runtime), and follows them.
    fn discover(self: &Arc<Self>) {
        let Some(layout) = self.layout() else { return };
        for member in &layout.members {
            let known = self.nodes().iter().any(|n| {
                n.grpc_url == member.address
                    || n.info().id.is_some_and(|id| id.to_string() == member.id)
            });
            if known {
                continue;
            }
            match node_client(&member.address, &self.links) {
                Ok(node) => {
                    tracing::info!(node = %member.id, addr = %member.address, "new node in the layout");
                    if let Ok(mut nodes) = self.nodes.write() {
                        nodes.push(node.clone());
                    }
                    tokio::spawn(self.clone().follow(node, self.stop.subscribe()));
                }
                Err(e) => tracing::warn!(node = %member.id, error = %e, "unusable node address"),
            }
        }
    }

    async fn rebuild_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = self.dirty.notified() => {}
                _ = stop.changed() => return,
            }
            let this = self.clone();
            let built = tokio::task::spawn_blocking(move || {
                let applied = this.applied.lock().map(|a| a.clone()).unwrap_or_default();
                let catalog = this.catalog.lock().unwrap_or_else(|p| p.into_inner());
                catalog.snapshot(applied)
            })
            .await;
            match built {
                Ok(snap) => {
                    self.snapshot.send_replace(Arc::new(snap));
                }
                Err(e) => tracing::error!(error = %e, "index rebuild failed"),
            }
        }
    }

    /// Follows one node's change stream, reconnecting with backoff.
    async fn follow(self: Arc<Self>, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                r = self.follow_once(&node) => r,
                _ = stop.changed() => return,
            };
            if let Err(e) = result {
                tracing::debug!(node = %node.grpc_url, error = %e, ?backoff, "change stream interrupted");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn follow_once(&self, node: &Node) -> Result<()> {
        let health = node.check_health(self.me()).await?;
        let id: NodeId = health.node_id.parse()?;
        let after = self
            .applied
            .lock()
            .ok()
            .and_then(|a| a.get(&id).copied())
            .unwrap_or(0);
        let mut client = node.client.clone();
        let mut stream = client
            .watch_catalog(pb::WatchCatalogRequest { after_seq: after })
            .await
            .map_err(|status| Error::Node {
                node: node.grpc_url.clone(),
                status: Box::new(status),
            })?
            .into_inner();
        if health.last_seq <= after {
            // Nothing to catch up on: make sure the node's id shows as applied.
            self.mark_applied(id, after);
        }
        while let Some(change) = stream.message().await.map_err(|status| Error::Node {
            node: node.grpc_url.clone(),
            status: Box::new(status),
        })? {
            let seq = change.seq;
            if let Some(c) = change.change {
                let mut catalog = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = catalog.apply(id, c) {
                    tracing::error!(node = %id, seq, error = %e, "skipping malformed catalog change");
                }
            }
            self.mark_applied(id, seq);
        }
        Ok(())
    }

    fn mark_applied(&self, node: NodeId, seq: u64) {
        if let Ok(mut applied) = self.applied.lock() {
            applied.insert(node, seq);
        }
        self.dirty.notify_one();
    }
}

/// A client for one node's gRPC URL; the connection is made lazily.
fn node_client(url: &str, links: &Links) -> Result<Arc<Node>> {
    let endpoint = channel::endpoint(url, Link::Client)
        .map_err(|e| Error::BadUserInput(format!("node url {url:?}: {e}")))?;
    let client = StorageNodeClient::new(links.lazy(endpoint, Expect::AnyNode))
        .max_decoding_message_size(channel::MAX_STORAGE_MESSAGE);
    Ok(Arc::new(Node {
        grpc_url: url.to_string(),
        client,
        info: RwLock::new(NodeInfo::default()),
    }))
}

/// How new a reported layout is: its epoch, then its syncs and
/// retirements, which an ordered `Synced` changes without a new epoch.
fn freshness(l: &rondo_proto::ring::v1::Layout) -> (u64, u64, u64) {
    (
        l.epoch,
        l.retirements.last().map_or(0, |r| r.seq),
        l.synced
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.epoch)),
    )
}

#[cfg(test)]
mod tests {
    use super::NodeInfo;
    use std::time::{Duration, Instant};

    #[test]
    fn the_resync_eta_follows_the_rate_seen_between_health_checks() {
        let mut info = NodeInfo::default();
        let t0 = Instant::now();
        info.note_resync(0, 10_000, t0);
        assert_eq!(info.resync_eta(), None, "no progress seen yet");
        // 1000 bytes in 2 s: 500 B/s, 9000 bytes left: 18 s.
        info.note_resync(1000, 9000, t0 + Duration::from_secs(2));
        assert_eq!(info.resync_eta(), Some(18));
        // 3000 more in 2 s (1500 B/s) smooths to 1000 B/s: 6 s for 6000.
        info.note_resync(4000, 6000, t0 + Duration::from_secs(4));
        assert_eq!(info.resync_eta(), Some(6));
        // Done: no ETA; a restarted node's counter starts again at 0.
        info.note_resync(10_000, 0, t0 + Duration::from_secs(6));
        assert_eq!(info.resync_eta(), None);
        info.note_resync(0, 500, t0 + Duration::from_secs(8));
        assert_eq!(info.resync_eta(), None, "no rate across a restart");
    }
}
