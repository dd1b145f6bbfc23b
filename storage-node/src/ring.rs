//! The control plane's driver: runs the sans-IO token-ring core
//! (`rondo-ring`, protocol in `storage-node/PROTOCOL.md`) on a dedicated
//! thread, persists its state in the node's redb database, and carries its
//! messages over gRPC (`rondo.ring.v1.Ring`).
//!
//! The thread owns the core. It takes commands (a message from a peer, a
//! local proposal) from a channel, fires the core's timers itself, carries
//! out every output in order (persistence in one durable transaction before
//! any send that follows it) and hands messages to one sender task per peer.
//! A sender that cannot reach its peer drops the message: to the protocol
//! the network is lossy, and it recovers by retransmission and by forming a
//! new ring.
//!
//! Applied entries go to the store (`Store::apply_update`), and a proposal's
//! waiter is answered when its entry is applied here. `Health` reports the
//! ring as this node sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use rand::Rng;
use rondo_core::NodeId;
use rondo_proto::ring::v1::{self as wire, envelope::Message as W};
use rondo_proto::storage::v1 as pb;
use rondo_ring::{
    Body, Config, Entry, Input, Layout, LayoutChange, LayoutOp, LogPos, Member, Message, Node,
    Output, Phase, RingId, Timer,
};
use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::NodeState;
use crate::error::{Error, Result};
use crate::store::Applied;

type Payload = Vec<u8>;

/// What the driver thread is told.
enum Cmd {
    Receive(NodeId, Message<Payload>),
    Propose {
        id: String,
        payload: Payload,
        reply: tokio::sync::oneshot::Sender<Result<Applied>>,
    },
    ProposeLayout {
        change: LayoutChange,
        reply: tokio::sync::oneshot::Sender<Result<(Layout, u64)>>,
    },
    /// Give up on a proposal that is not ordered yet.
    Withdraw(String),
    /// Messages to a peer fail (`false`) or go through again (`true`).
    Link(NodeId, bool),
    /// A snapshot the core asked for is here, to install if it still
    /// wants it.
    SnapshotReady {
        from: NodeId,
        ring: RingId,
        at: LogPos,
        layout: Layout,
        rows: Vec<wire::SnapshotRow>,
    },
}

/// Proposals of this node waiting to be applied, by proposal id.
#[derive(Default)]
struct Waiters {
    /// Catalog updates: (payload, reply).
    updates: BTreeMap<String, (Payload, tokio::sync::oneshot::Sender<Result<Applied>>)>,
    /// Layout changes: the layout after the change and the entry's seq.
    layouts: BTreeMap<String, tokio::sync::oneshot::Sender<Result<(Layout, u64)>>>,
}

/// The running control plane of one node (clones share it).
#[derive(Clone, Debug)]
pub struct RingHandle {
    me: NodeId,
    cmds: UnboundedSender<Cmd>,
    status: Arc<Mutex<pb::RingStatus>>,
    write_timeout: Duration,
    peers: Arc<Mutex<BTreeMap<NodeId, String>>>,
}

impl RingHandle {
    /// The other nodes of the cluster with their gRPC URLs (empty until
    /// the peers file is complete).
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.peers.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// How long a write may wait to be ordered and applied.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// The ring as this node sees it now.
    pub fn status(&self) -> pb::RingStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Orders a catalog update through the ring and waits until this node
    /// has applied it (so every member of the ring holds it durably). If it
    /// is not applied within the write timeout it is withdrawn, if still
    /// possible, and the error names the reason (typically: no quorum).
    pub async fn propose(&self, mut update: pb::CatalogUpdate) -> Result<Applied> {
        use prost::Message as _;
        let id = uuid::Uuid::new_v4().to_string();
        update.origin = self.me.to_string();
        update.proposal = id.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cmd = Cmd::Propose {
            id: id.clone(),
            payload: update.encode_to_vec(),
            reply: tx,
        };
        self.order(cmd, id, rx, "write").await
    }

    /// Hands a proposal to the driver and waits for its outcome for up to
    /// the write timeout; then withdraws it, if it is not ordered yet, and
    /// says why (typically: no quorum).
    async fn order<T>(
        &self,
        cmd: Cmd,
        id: String,
        rx: tokio::sync::oneshot::Receiver<Result<T>>,
        what: &str,
    ) -> Result<T> {
        let stopped = || Error::Unavailable("the control plane has stopped".into());
        self.cmds.send(cmd).map_err(|_| stopped())?;
        match tokio::time::timeout(self.write_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => {
                let _ = self.cmds.send(Cmd::Withdraw(id));
                Err(Error::Unavailable(format!(
                    "{what} not committed within {:?}: {}",
                    self.write_timeout,
                    self.no_quorum()
                )))
            }
        }
    }

    /// Orders a layout change and waits until this node applied it: the
    /// layout after it and the seq of its entry, or why it was refused
    /// (`StaleLayout` when another change was ordered first).
    pub async fn propose_layout(&self, mut change: LayoutChange) -> Result<(Layout, u64)> {
        let id = uuid::Uuid::new_v4().to_string();
        change.proposal = id.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.order(
            Cmd::ProposeLayout { change, reply: tx },
            id,
            rx,
            "layout change",
        )
        .await
    }

    /// Why this node's ring cannot commit now, as users see it.
    pub fn no_quorum(&self) -> String {
        let s = self.status();
        format!(
            "no quorum: this node's control plane is in phase {} with {} of {} voters in its ring",
            s.phase,
            s.members.len(),
            s.voters
        )
    }

    /// Whether this node is operational in a ring of a majority of voters.
    pub fn quorate(&self) -> bool {
        let s = self.status();
        s.phase == "operational" && 2 * s.members.len() > s.voters as usize
    }
}

/// The layout before the log has one (PROTOCOL.md, "Layout changes"):
/// - with a peers file, the genesis layout it describes (every node a
///   voter), once it names this node and gives every node an address;
/// - with seeds (a node joining a running cluster) and an empty log, the
///   layout a seed reports once an operator added this node to it, with no
///   voters (the ring's quorum is counted in its source's layout; a node
///   that joins must never bootstrap a cluster of its own);
/// - otherwise a cluster of this node alone.
///
/// Proposals that arrive meanwhile are kept and returned.
async fn base_layout(
    state: &NodeState,
    log_empty: bool,
    rx: &mut UnboundedReceiver<Cmd>,
    status: &Mutex<pb::RingStatus>,
) -> (Layout, Vec<Cmd>) {
    let me = state.node_id;
    if let Some(path) = &state.config.ring.peers_file {
        let (peers, kept) = wait_for_peers(path, me, rx).await;
        return (Layout::genesis(peers), kept);
    }
    let seeds = &state.config.ring.seeds;
    if seeds.is_empty() {
        let url = format!("http://{}", state.config.grpc_addr);
        return (Layout::genesis([(me, url)].into()), Vec::new());
    }
    if !log_empty {
        // The log carries the genesis layout and every change since.
        return (Layout::default(), Vec::new());
    }
    if let Ok(mut s) = status.lock() {
        s.phase = "joining".into();
    }
    tracing::info!(?seeds, "waiting to be added to the cluster's layout");
    let mut kept = Vec::new();
    loop {
        for seed in seeds {
            if let Some(layout) = seed_layout(state, seed).await
                && layout.nodes.contains_key(&me)
            {
                tracing::info!(%seed, epoch = layout.epoch, "added to the layout; joining");
                let mut base = layout;
                for m in base.nodes.values_mut() {
                    m.voter = false;
                }
                return (base, kept);
            }
        }
        match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            Ok(Some(Cmd::Receive(..))) | Err(_) => {}
            Ok(Some(cmd)) => kept.push(cmd),
            Ok(None) => return (Layout::default(), kept),
        }
    }
}

/// The layout a running node reports, if it answers.
async fn seed_layout(state: &NodeState, url: &str) -> Option<Layout> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let channel = state.net.connect(endpoint).await.ok()?;
    let mut client = pb::storage_node_client::StorageNodeClient::new(channel);
    let health = client
        .health(pb::HealthRequest::default())
        .await
        .ok()?
        .into_inner();
    layout_from_wire(health.ring?.layout?).ok()
}

/// One node of the cluster, as listed in the peers file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub id: NodeId,
    pub grpc_url: String,
}

/// The peers file: every node of the cluster (the initial voters).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeersFile {
    #[serde(default)]
    pub node: Vec<PeerEntry>,
}

fn read_peers(path: &Path) -> Option<PeersFile> {
    let text = std::fs::read_to_string(path).ok()?;
    match toml::from_str(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable peers file");
            None
        }
    }
}

/// Protocol timeouts: corosync's defaults for `nodes` nodes, all scaled so
/// that the token timeout is `token_timeout_ms` when that is set.
fn protocol_config(nodes: usize, token_timeout_ms: Option<u64>) -> Config {
    let base = Config::for_nodes(nodes);
    let Some(ms) = token_timeout_ms else {
        return base;
    };
    let scale = |d: Duration| {
        let base_ms = base.token_timeout.as_millis().max(1) as f64;
        d.mul_f64(ms as f64 / base_ms)
    };
    Config {
        token_timeout: scale(base.token_timeout),
        token_retransmit: scale(base.token_retransmit),
        hold: scale(base.hold),
        join_window: scale(base.join_window),
        consensus_timeout: scale(base.consensus_timeout),
        max_messages: base.max_messages,
        max_fetch: base.max_fetch,
        keep_log: base.keep_log,
    }
}

/// Starts the driver and the peer senders. Must be called inside a tokio
/// runtime (the senders run on it). The driver runs on a thread of its own
/// (its redb commits block), or as a task of the simulator's runtime
/// ([`crate::net::Net::Sim`]).
pub fn start(state: Arc<NodeState>) -> Result<RingHandle> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(pb::RingStatus {
        phase: "starting".into(),
        ..Default::default()
    }));
    let runtime = tokio::runtime::Handle::current();
    let handle = RingHandle {
        me: state.node_id,
        cmds: tx,
        status: status.clone(),
        write_timeout: Duration::from_millis(state.config.ring.write_timeout_ms.unwrap_or(10_000)),
        peers: Arc::new(Mutex::new(BTreeMap::new())),
    };
    let peers_out = handle.peers.clone();
    let cmds = handle.cmds.clone();
    let sim = state.net.is_sim();
    let run = async move {
        if let Err(e) = drive(&state, rx, &cmds, &status, &runtime, &peers_out).await {
            // The protocol assumes crash-recovery: a node that cannot
            // persist or apply (a storage error) stops as a whole and
            // comes back from its durable state, rather than serving on
            // without a control plane.
            tracing::error!(error = %e, "control plane failed; stopping the node");
            if state.net.is_sim() {
                panic!("control plane failed: {e}");
            }
            std::process::exit(70);
        }
    };
    if sim {
        tokio::spawn(run);
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("start ring runtime"))?;
        std::thread::Builder::new()
            .name("ring".into())
            .spawn(move || rt.block_on(run))
            .map_err(Error::io("start ring thread"))?;
    }
    Ok(handle)
}

async fn drive(
    state: &Arc<NodeState>,
    mut rx: UnboundedReceiver<Cmd>,
    cmds: &UnboundedSender<Cmd>,
    status: &Mutex<pb::RingStatus>,
    runtime: &tokio::runtime::Handle,
    peers_out: &Mutex<BTreeMap<NodeId, String>>,
) -> Result<()> {
    let me = state.node_id;
    let durable = state.store.ring_load()?;
    let (base, deferred) = base_layout(state, durable.last().seq == 0, &mut rx, status).await;
    let mut rng = state.net.rng();
    // A snapshot was installed: the digest changed without an `Apply`.
    let mut installed = false;
    let mut node = Node::new(me, Config::for_nodes(1), base.clone(), durable);
    let mut config = protocol_config(
        node.layout().nodes.len().max(1),
        state.config.ring.token_timeout_ms,
    );
    if let Some(n) = state.config.ring.fetch_entries {
        config.max_fetch = n.max(1);
    }
    if let Some(n) = state.config.ring.keep_entries {
        config.keep_log = n;
    }
    node.set_config(config);
    let mut applied_layout = state.store.ring_layout()?;
    tracing::info!(node = %me, nodes = node.layout().nodes.len(), epoch = node.layout().epoch, promised = ?node.durable().promised, applied = node.durable().applied, "control plane starting");

    let mut senders = Senders::default();
    let mut timers: BTreeMap<Timer, Instant> = BTreeMap::new();
    let mut waiters = Waiters::default();
    let mut outputs = node.handle(Input::Start);
    for cmd in deferred {
        outputs.extend(take(&mut node, &mut waiters, cmd));
    }
    loop {
        senders.sync(&node, me, &state.net, runtime, cmds, peers_out);
        carry_out(
            state,
            &mut Driver {
                me,
                base: &base,
                senders: &senders,
                runtime,
                cmds,
                peers: peers_out,
                rng: &mut rng,
            },
            &mut timers,
            &mut waiters,
            &outputs,
            &mut applied_layout,
        )?;
        let applied = installed || outputs.iter().any(|o| matches!(o, Output::Apply(_)));
        installed = false;
        publish(state, &node, applied_layout.as_ref(), status, applied);
        // Wait for a command or the next timer.
        let next = timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at));
        let cmd = match next {
            Some((timer, at)) => {
                if at <= Instant::now() {
                    timers.remove(&timer);
                    outputs = node.handle(Input::Fired(timer));
                    continue;
                }
                tokio::select! {
                    biased;
                    cmd = rx.recv() => match cmd {
                        Some(cmd) => cmd,
                        None => return Ok(()),
                    },
                    () = tokio::time::sleep_until(at) => {
                        timers.remove(&timer);
                        outputs = node.handle(Input::Fired(timer));
                        continue;
                    }
                }
            }
            None => match rx.recv().await {
                Some(cmd) => cmd,
                None => return Ok(()),
            },
        };
        if let Cmd::SnapshotReady {
            from,
            ring,
            at,
            layout,
            rows,
        } = cmd
        {
            outputs = Vec::new();
            if node.wants_snapshot(ring, at) {
                let n = rows.len();
                state.store.install_snapshot(at, &layout, from, rows)?;
                tracing::info!(%from, at = at.seq, rows = n, "snapshot installed");
                state.outbox.notify_one();
                state.refresh_gauges();
                applied_layout = Some(layout.clone());
                installed = true;
                outputs = node.handle(Input::SnapshotInstalled { ring, at, layout });
            }
            continue;
        }
        outputs = take(&mut node, &mut waiters, cmd);
    }
}

/// Hands one command to the core.
fn take(node: &mut Node<Payload>, waiters: &mut Waiters, cmd: Cmd) -> Vec<Output<Payload>> {
    match cmd {
        Cmd::Receive(from, msg) => node.handle(Input::Receive { from, msg }),
        Cmd::Propose { id, payload, reply } => {
            waiters.updates.insert(id, (payload.clone(), reply));
            node.handle(Input::Propose(payload))
        }
        Cmd::ProposeLayout { change, reply } => {
            waiters.layouts.insert(change.proposal.clone(), reply);
            node.handle(Input::ProposeLayout(change))
        }
        Cmd::Withdraw(id) => {
            if let Some((payload, _)) = waiters.updates.remove(&id) {
                node.withdraw(|b| matches!(b, Body::Update(p) if *p == payload));
            }
            if waiters.layouts.remove(&id).is_some() {
                node.withdraw(|b| matches!(b, Body::Layout(c) if c.proposal == id));
            }
            Vec::new()
        }
        Cmd::Link(peer, up) => {
            tracing::info!(%peer, up, "link to peer");
            node.handle(Input::Link { peer, up })
        }
        Cmd::SnapshotReady { .. } => Vec::new(),
    }
}

/// One sender task per peer with an address in the layout. Senders are
/// never dropped while the node runs: a member removed from the layout may
/// still be in the current ring until it re-forms.
#[derive(Default)]
struct Senders {
    by_peer: BTreeMap<NodeId, (String, tokio::sync::mpsc::Sender<wire::Envelope>)>,
    /// The layout last synced: (epoch, number of nodes). The base layout
    /// and the genesis both have epoch 0, with other nodes.
    synced: Option<(u64, usize)>,
}

impl Senders {
    /// Starts senders for the layout's new nodes (or new addresses) and
    /// publishes the peers (other nodes of the layout) to the node.
    fn sync(
        &mut self,
        node: &Node<Payload>,
        me: NodeId,
        net: &crate::net::Net,
        runtime: &tokio::runtime::Handle,
        cmds: &UnboundedSender<Cmd>,
        peers_out: &Mutex<BTreeMap<NodeId, String>>,
    ) {
        let layout = node.layout();
        let now = (layout.epoch, layout.nodes.len());
        if self.synced == Some(now) {
            return;
        }
        self.synced = Some(now);
        for (id, member) in &layout.nodes {
            if *id == me
                || self
                    .by_peer
                    .get(id)
                    .is_some_and(|(url, _)| *url == member.addr)
            {
                continue;
            }
            let Ok(endpoint) = tonic::transport::Endpoint::from_shared(member.addr.clone()) else {
                tracing::warn!(peer = %id, addr = %member.addr, "peer address is not a URL");
                continue;
            };
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            runtime.spawn(send_loop(*id, net.clone(), endpoint, rx, cmds.clone()));
            self.by_peer.insert(*id, (member.addr.clone(), tx));
        }
        if let Ok(mut p) = peers_out.lock() {
            *p = layout
                .nodes
                .iter()
                .filter(|(id, _)| **id != me)
                .map(|(id, m)| (*id, m.addr.clone()))
                .collect();
        }
    }

    fn get(&self, peer: &NodeId) -> Option<&tokio::sync::mpsc::Sender<wire::Envelope>> {
        self.by_peer.get(peer).map(|(_, tx)| tx)
    }
}

/// Reads the peers file until it names this node and gives every node an
/// address (a deployment writes it once all nodes have bound their ports).
/// Protocol messages that arrive meanwhile are dropped (peers retransmit);
/// proposals are kept and returned, to be queued once the ring runs.
async fn wait_for_peers(
    path: &Path,
    me: NodeId,
    rx: &mut UnboundedReceiver<Cmd>,
) -> (BTreeMap<NodeId, String>, Vec<Cmd>) {
    let mut warned = false;
    let mut kept = Vec::new();
    loop {
        if let Some(file) = read_peers(path)
            && file.node.iter().any(|n| n.id == me)
            && file.node.iter().all(|n| !n.grpc_url.is_empty())
        {
            let peers = file.node.into_iter().map(|n| (n.id, n.grpc_url)).collect();
            return (peers, kept);
        }
        if !warned {
            tracing::info!(path = %path.display(), "waiting for the peers file to list every node");
            warned = true;
        }
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(Cmd::Receive(..))) | Err(_) => {}
            Ok(Some(cmd)) => kept.push(cmd),
            Ok(None) => return (BTreeMap::new(), kept),
        }
    }
}

/// What `carry_out` needs of the driver.
struct Driver<'a> {
    me: NodeId,
    base: &'a Layout,
    senders: &'a Senders,
    runtime: &'a tokio::runtime::Handle,
    cmds: &'a UnboundedSender<Cmd>,
    peers: &'a Mutex<BTreeMap<NodeId, String>>,
    rng: &'a mut rand::rngs::StdRng,
}

/// Carries out the core's outputs in order: consecutive persistence
/// outputs go in one transaction, before the sends that follow them.
fn carry_out(
    state: &Arc<NodeState>,
    driver: &mut Driver<'_>,
    timers: &mut BTreeMap<Timer, Instant>,
    waiters: &mut Waiters,
    outputs: &[Output<Payload>],
    applied_layout: &mut Option<Layout>,
) -> Result<()> {
    let mut batch: Vec<&Output<Payload>> = Vec::new();
    for o in outputs {
        match o {
            Output::PersistPromise(_)
            | Output::Truncate { .. }
            | Output::PersistEntries(_)
            | Output::Compact(_) => batch.push(o),
            Output::Apply(entry) => {
                state.store.ring_persist(&batch)?;
                batch.clear();
                apply(state, driver.base, entry, waiters, applied_layout)?;
            }
            Output::InstallSnapshot {
                from,
                ring,
                at,
                layout,
            } => {
                state.store.ring_persist(&batch)?;
                batch.clear();
                let url = driver.peers.lock().ok().and_then(|p| p.get(from).cloned());
                let Some(url) = url else {
                    tracing::warn!(%from, "snapshot source has no address");
                    continue;
                };
                tracing::info!(%from, at = at.seq, "behind the source's compacted log: taking its snapshot");
                let task = fetch_snapshot(
                    state.net.clone(),
                    url,
                    *from,
                    *ring,
                    *at,
                    layout.clone(),
                    driver.cmds.clone(),
                );
                driver.runtime.spawn(async move {
                    if let Err(e) = task.await {
                        // The ring times out and forms again.
                        tracing::warn!(error = %e, "snapshot not installed");
                    }
                });
            }
            Output::Send { to, msg } => {
                state.store.ring_persist(&batch)?;
                batch.clear();
                if let Some(tx) = driver.senders.get(to) {
                    let envelope = message_to_wire(driver.me, msg);
                    if tx.try_send(envelope).is_err() {
                        tracing::debug!(peer = %to, "ring send queue full; message dropped");
                    }
                }
            }
            Output::SetTimer { timer, after } => {
                let jitter = match timer {
                    // Spread competing candidates (PROTOCOL.md, "Gather").
                    Timer::JoinWindow | Timer::Consensus => {
                        after.mul_f64(driver.rng.random_range(0.0..0.5))
                    }
                    _ => Duration::ZERO,
                };
                timers.insert(*timer, Instant::now() + *after + jitter);
            }
            Output::CancelTimer(timer) => {
                timers.remove(timer);
            }
        }
    }
    state.store.ring_persist(&batch)
}

/// Applies one safe entry (one transaction with `last_applied`) and answers
/// the client if this node proposed it.
fn apply(
    state: &NodeState,
    base: &Layout,
    entry: &Entry<Payload>,
    waiters: &mut Waiters,
    applied_layout: &mut Option<Layout>,
) -> Result<()> {
    use prost::Message as _;
    match &entry.body {
        Body::RingStart { genesis, .. } => {
            state.store.apply_marker(entry.seq, genesis.as_ref())?;
            if let Some(g) = genesis {
                *applied_layout = Some(g.clone());
            }
            Ok(())
        }
        Body::Layout(change) => {
            let before = applied_layout.clone().unwrap_or_else(|| base.clone());
            let outcome = state.store.apply_layout(entry.seq, change, &before)?;
            match &outcome {
                Ok(layout) => {
                    tracing::info!(seq = entry.seq, epoch = layout.epoch, op = ?change.op, "layout changed");
                    *applied_layout = Some(layout.clone());
                }
                Err(refusal) => {
                    tracing::info!(seq = entry.seq, op = ?change.op, %refusal, "layout change refused")
                }
            }
            if let Some(reply) = waiters.layouts.remove(&change.proposal) {
                let _ = reply.send(match outcome {
                    Ok(layout) => Ok((layout, entry.seq)),
                    Err(r @ rondo_ring::Refusal::Stale { .. }) => Err(Error::StaleLayout(r)),
                    Err(r) => Err(Error::LayoutRefused(r)),
                });
            }
            Ok(())
        }
        Body::Update(payload) => {
            let applied = state.store.apply_update(entry.seq, payload)?;
            if matches!(
                applied,
                Applied::Stored {
                    change_seq: None,
                    ..
                }
            ) {
                // The fetch task is committed with the entry; not yet run.
                crate::failpoint("apply-before-fetch");
            }
            state.outbox.notify_one();
            let proposal = pb::CatalogUpdate::decode(payload.as_slice())
                .map(|u| u.proposal)
                .unwrap_or_default();
            if let Some((_, reply)) = waiters.updates.remove(&proposal) {
                let _ = reply.send(Ok(applied));
            }
            Ok(())
        }
    }
}

fn publish(
    state: &NodeState,
    node: &Node<Payload>,
    applied_layout: Option<&Layout>,
    status: &Mutex<pb::RingStatus>,
    applied: bool,
) {
    let layout = applied_layout.unwrap_or_else(|| node.layout());
    let voters = layout.voters();
    // The digest is read from the store only when something was applied,
    // not on every token pass.
    let previous = status
        .lock()
        .map(|s| s.catalog_digest.clone())
        .unwrap_or_default();
    let digest = if applied || previous.is_empty() {
        state
            .store
            .ring_applied()
            .map(|(_, d)| d)
            .unwrap_or_default()
    } else {
        previous
    };
    let d = node.durable();
    let (ring, members) = match node.ring() {
        Some((id, m)) => (id, m.iter().map(ToString::to_string).collect()),
        None => (d.promised, Vec::new()),
    };
    let s = pb::RingStatus {
        phase: match node.phase() {
            _ if node.removed() => "removed",
            Phase::Gather => "gather",
            Phase::Recover => "recover",
            Phase::Operational => "operational",
        }
        .into(),
        ring_counter: ring.counter,
        ring_rep: ring.rep.to_string(),
        members,
        last_applied_seq: d.applied,
        last_log_seq: d.last().seq,
        compacted_seq: d.compacted_seq(),
        rotations: node.last_rotation(),
        catalog_digest: digest,
        voters: u32::try_from(voters.len()).unwrap_or(u32::MAX),
        is_voter: voters.contains(&state.node_id),
        layout: Some(layout_to_wire(layout)),
    };
    if let Ok(mut guard) = status.lock() {
        *guard = s;
    }
}

/// How often a peer whose link is down is probed.
const PROBE_EVERY: Duration = Duration::from_millis(300);

/// Sends one peer's messages in order; drops what cannot be delivered.
///
/// A message that times out or is refused marks the link down and tells the
/// core (`Cmd::Link`); while it is down, messages to the peer are dropped
/// (the protocol retransmits what matters) and the peer is probed with
/// `Ping` until it answers, which marks the link up again.
async fn send_loop(
    peer: NodeId,
    net: crate::net::Net,
    endpoint: tonic::transport::Endpoint,
    mut rx: tokio::sync::mpsc::Receiver<wire::Envelope>,
    core: UnboundedSender<Cmd>,
) {
    // HTTP/2 keepalive: a connection that stalled (a partition, a peer
    // that froze) is found dead within three seconds and made again,
    // instead of every call on it timing out until TCP gives up.
    let endpoint = endpoint
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true);
    let mut client = wire::ring_client::RingClient::new(net.lazy(endpoint));
    let mut up = true;
    // A deadline, not a fresh sleep per message: messages keep coming while
    // the link is down and must not postpone the probe.
    let mut next_probe = tokio::time::Instant::now();
    loop {
        if up {
            let Some(envelope) = rx.recv().await else {
                return;
            };
            let call = client.deliver(envelope);
            let delivered = match tokio::time::timeout(Duration::from_secs(1), call).await {
                Ok(Ok(_)) => true,
                Ok(Err(status)) => {
                    tracing::debug!(%peer, %status, "ring message not delivered");
                    false
                }
                Err(_) => {
                    tracing::debug!(%peer, "ring message timed out");
                    false
                }
            };
            if !delivered {
                up = false;
                next_probe = tokio::time::Instant::now() + PROBE_EVERY;
                if core.send(Cmd::Link(peer, false)).is_err() {
                    return;
                }
            }
        } else {
            tokio::select! {
                envelope = rx.recv() => if envelope.is_none() { return },
                () = tokio::time::sleep_until(next_probe) => {
                    next_probe = tokio::time::Instant::now() + PROBE_EVERY;
                    let ping = client.ping(wire::Received {});
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), ping).await {
                        up = true;
                        if core.send(Cmd::Link(peer, true)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The gRPC front of the control plane.
#[derive(Clone, Debug)]
pub struct Service {
    state: Arc<NodeState>,
}

impl Service {
    pub fn new(state: Arc<NodeState>) -> Self {
        Service { state }
    }
}

#[tonic::async_trait]
impl wire::ring_server::Ring for Service {
    async fn deliver(
        &self,
        request: Request<wire::Envelope>,
    ) -> std::result::Result<Response<wire::Received>, Status> {
        let envelope = request.into_inner();
        let (from, msg) = message_from_wire(envelope).map_err(Status::from)?;
        let Some(ring) = self.state.ring.get() else {
            return Err(Status::unavailable("control plane not started"));
        };
        ring.cmds
            .send(Cmd::Receive(from, msg))
            .map_err(|_| Status::unavailable("control plane stopped"))?;
        Ok(Response::new(wire::Received {}))
    }

    async fn ping(
        &self,
        _request: Request<wire::Received>,
    ) -> std::result::Result<Response<wire::Received>, Status> {
        Ok(Response::new(wire::Received {}))
    }

    type ReadSnapshotStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = std::result::Result<wire::SnapshotChunk, Status>> + Send>,
    >;

    async fn read_snapshot(
        &self,
        request: Request<wire::ReadSnapshotRequest>,
    ) -> std::result::Result<Response<Self::ReadSnapshotStream>, Status> {
        let at = request.into_inner().at_seq;
        let state = self.state.clone();
        // Under the simulator every step runs on its one thread, in order.
        let rows = if state.net.is_sim() {
            state.store.export_snapshot(at)?
        } else {
            tokio::task::spawn_blocking(move || state.store.export_snapshot(at))
                .await
                .map_err(Error::from)??
        };
        tracing::info!(at, rows = rows.len(), "serving a snapshot");
        let chunks: Vec<std::result::Result<wire::SnapshotChunk, Status>> = rows
            .chunks(SNAPSHOT_CHUNK_ROWS)
            .map(|c| Ok(wire::SnapshotChunk { rows: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

/// Rows per `SnapshotChunk` (a row is a song, an account, a playlist: a
/// chunk stays well under the message size limit).
const SNAPSHOT_CHUNK_ROWS: usize = 1024;

/// Reads `from`'s applied state as of `at` and hands it to the driver
/// thread, which installs it if the core still wants it (PROTOCOL.md,
/// "Snapshots").
async fn fetch_snapshot(
    net: crate::net::Net,
    url: String,
    from: NodeId,
    ring: RingId,
    at: LogPos,
    layout: Layout,
    core: UnboundedSender<Cmd>,
) -> Result<()> {
    use futures::StreamExt;
    let unavailable = |e: String| Error::Unavailable(e);
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| unavailable(format!("bad peer URL {url}: {e}")))?
        .connect_timeout(Duration::from_secs(2));
    let channel = net
        .connect(endpoint)
        .await
        .map_err(|e| unavailable(format!("connect to {url}: {e}")))?;
    let mut client =
        wire::ring_client::RingClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let mut stream = client
        .read_snapshot(wire::ReadSnapshotRequest { at_seq: at.seq })
        .await
        .map_err(|e| unavailable(format!("snapshot from {from}: {}", e.message())))?
        .into_inner();
    let mut rows = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unavailable(format!("snapshot from {from}: {e}")))?;
        rows.extend(chunk.rows);
    }
    core.send(Cmd::SnapshotReady {
        from,
        ring,
        at,
        layout,
        rows,
    })
    .map_err(|_| unavailable("control plane stopped".into()))
}

// Wire conversions. Every field that comes off the network is checked: a
// malformed message is refused with an error, never a panic.

fn bad(what: &'static str) -> Error {
    Error::Invalid { what }
}

pub(crate) fn ring_id_to_wire(id: RingId) -> wire::RingId {
    wire::RingId {
        counter: id.counter,
        rep: id.rep.to_string(),
    }
}

pub(crate) fn ring_id_from_wire(id: Option<wire::RingId>) -> Result<RingId> {
    let id = id.ok_or(bad("ring id missing"))?;
    Ok(RingId {
        counter: id.counter,
        rep: id.rep.parse()?,
    })
}

pub(crate) fn pos_to_wire(p: LogPos) -> wire::LogPos {
    wire::LogPos {
        ring: Some(ring_id_to_wire(p.ring)),
        seq: p.seq,
    }
}

pub(crate) fn pos_from_wire(p: Option<wire::LogPos>) -> Result<LogPos> {
    let p = p.ok_or(bad("log position missing"))?;
    Ok(LogPos {
        ring: ring_id_from_wire(p.ring)?,
        seq: p.seq,
    })
}

fn members_to_wire(m: &BTreeSet<NodeId>) -> Vec<String> {
    m.iter().map(ToString::to_string).collect()
}

fn members_from_wire(m: Vec<String>) -> Result<BTreeSet<NodeId>> {
    m.iter().map(|s| Ok(s.parse::<NodeId>()?)).collect()
}

pub(crate) fn layout_to_wire(l: &Layout) -> wire::Layout {
    wire::Layout {
        epoch: l.epoch,
        nodes: l
            .nodes
            .iter()
            .map(|(id, m)| wire::LayoutMember {
                id: id.to_string(),
                addr: m.addr.clone(),
                voter: m.voter,
            })
            .collect(),
        replication: l.replication,
    }
}

pub(crate) fn layout_from_wire(l: wire::Layout) -> Result<Layout> {
    Ok(Layout {
        epoch: l.epoch,
        nodes: l
            .nodes
            .into_iter()
            .map(|m| {
                let member = Member {
                    addr: m.addr,
                    voter: m.voter,
                };
                Ok((m.id.parse::<NodeId>()?, member))
            })
            .collect::<Result<_>>()?,
        replication: l.replication,
    })
}

pub(crate) fn change_to_wire(c: &LayoutChange) -> wire::LayoutChange {
    use wire::layout_change::Op;
    wire::LayoutChange {
        expect_epoch: c.expect_epoch,
        op: Some(match &c.op {
            LayoutOp::Add { node, addr, voter } => Op::Add(wire::AddNode {
                id: node.to_string(),
                addr: addr.clone(),
                voter: *voter,
            }),
            LayoutOp::Remove { node } => Op::Remove(wire::RemoveNode {
                id: node.to_string(),
            }),
            LayoutOp::SetVoter { node, voter } => Op::SetVoter(wire::SetVoter {
                id: node.to_string(),
                voter: *voter,
            }),
            LayoutOp::SetReplication { factor } => {
                Op::SetReplication(wire::SetReplication { factor: *factor })
            }
        }),
        proposal: c.proposal.clone(),
    }
}

pub(crate) fn change_from_wire(c: wire::LayoutChange) -> Result<LayoutChange> {
    use wire::layout_change::Op;
    let op = match c.op.ok_or(bad("layout change without an operation"))? {
        Op::Add(a) => {
            if a.addr.is_empty() {
                return Err(bad("a node is added with its address"));
            }
            LayoutOp::Add {
                node: a.id.parse()?,
                addr: a.addr,
                voter: a.voter,
            }
        }
        Op::Remove(r) => LayoutOp::Remove {
            node: r.id.parse()?,
        },
        Op::SetVoter(v) => LayoutOp::SetVoter {
            node: v.id.parse()?,
            voter: v.voter,
        },
        Op::SetReplication(r) => LayoutOp::SetReplication { factor: r.factor },
    };
    Ok(LayoutChange {
        expect_epoch: c.expect_epoch,
        op,
        proposal: c.proposal,
    })
}

pub(crate) fn entry_to_wire(e: &Entry<Payload>) -> wire::Entry {
    use wire::entry::Body as WB;
    wire::Entry {
        seq: e.seq,
        ring: Some(ring_id_to_wire(e.ring)),
        body: Some(match &e.body {
            Body::RingStart { members, genesis } => WB::RingStart(wire::RingStart {
                members: members_to_wire(members),
                genesis: genesis.as_ref().map(layout_to_wire),
            }),
            Body::Layout(c) => WB::Layout(change_to_wire(c)),
            Body::Update(p) => WB::Update(p.clone()),
        }),
    }
}

pub(crate) fn entry_from_wire(e: wire::Entry) -> Result<Entry<Payload>> {
    use wire::entry::Body as WB;
    Ok(Entry {
        seq: e.seq,
        ring: ring_id_from_wire(e.ring)?,
        body: match e.body.ok_or(bad("entry body missing"))? {
            WB::RingStart(r) => Body::RingStart {
                members: members_from_wire(r.members)?,
                genesis: r.genesis.map(layout_from_wire).transpose()?,
            },
            WB::Layout(c) => Body::Layout(change_from_wire(c)?),
            WB::Update(p) => Body::Update(p),
        },
    })
}

fn message_to_wire(from: NodeId, msg: &Message<Payload>) -> wire::Envelope {
    let message = match msg {
        Message::Token(t) => W::Token(wire::Token {
            ring: Some(ring_id_to_wire(t.ring)),
            rotation: t.rotation,
            seq: t.seq,
            aru: t.aru,
            rot_min: t.rot_min,
            rtr: t.rtr.iter().copied().collect(),
            down: t
                .down
                .iter()
                .map(|(from, to)| wire::Link {
                    from: from.to_string(),
                    to: to.to_string(),
                })
                .collect(),
            layout_seq: t.layout_seq,
        }),
        Message::Mcast { ring, entry } => W::Mcast(wire::Mcast {
            ring: Some(ring_id_to_wire(*ring)),
            entry: Some(entry_to_wire(entry)),
        }),
        Message::Join { proposed } => W::Join(wire::Join {
            proposed: Some(ring_id_to_wire(*proposed)),
        }),
        Message::Promise {
            proposed,
            last,
            applied,
            unreachable,
            nodes,
            voters,
        } => W::Promise(wire::Promise {
            proposed: Some(ring_id_to_wire(*proposed)),
            last: Some(pos_to_wire(*last)),
            applied: *applied,
            unreachable: members_to_wire(unreachable),
            voters: members_to_wire(voters),
            nodes: members_to_wire(nodes),
        }),
        Message::Nack {
            promised,
            excluded_at,
        } => W::Nack(wire::Nack {
            promised: Some(ring_id_to_wire(*promised)),
            excluded_at: excluded_at.map(pos_to_wire),
        }),
        Message::Install {
            ring,
            members,
            source,
            source_last,
        } => W::Install(wire::Install {
            ring: Some(ring_id_to_wire(*ring)),
            members: members_to_wire(members),
            source: source.to_string(),
            source_last: Some(pos_to_wire(*source_last)),
        }),
        Message::Fetch { ring, after } => W::Fetch(wire::Fetch {
            ring: Some(ring_id_to_wire(*ring)),
            after: *after,
        }),
        Message::Entries {
            ring,
            after,
            entries,
            more,
        } => W::Entries(wire::Entries {
            ring: Some(ring_id_to_wire(*ring)),
            after: *after,
            more: *more,
            entries: entries.iter().map(entry_to_wire).collect(),
        }),
        Message::Ready { ring, last } => W::Ready(wire::Ready {
            ring: Some(ring_id_to_wire(*ring)),
            last: *last,
        }),
        Message::Snapshot {
            ring,
            after,
            at,
            layout,
        } => W::Snapshot(wire::Snapshot {
            ring: Some(ring_id_to_wire(*ring)),
            after: *after,
            at: Some(pos_to_wire(*at)),
            layout: Some(layout_to_wire(layout)),
        }),
    };
    wire::Envelope {
        from: from.to_string(),
        message: Some(message),
    }
}

fn message_from_wire(e: wire::Envelope) -> Result<(NodeId, Message<Payload>)> {
    let from: NodeId = e.from.parse()?;
    let msg = match e.message.ok_or(bad("empty ring message"))? {
        W::Token(t) => Message::Token(rondo_ring::Token {
            ring: ring_id_from_wire(t.ring)?,
            rotation: t.rotation,
            seq: t.seq,
            aru: t.aru,
            rot_min: t.rot_min,
            rtr: t.rtr.into_iter().collect(),
            down: t
                .down
                .into_iter()
                .map(|l| Ok((l.from.parse()?, l.to.parse()?)))
                .collect::<Result<_>>()?,
            layout_seq: t.layout_seq,
        }),
        W::Mcast(m) => Message::Mcast {
            ring: ring_id_from_wire(m.ring)?,
            entry: entry_from_wire(m.entry.ok_or(bad("mcast without entry"))?)?,
        },
        W::Join(j) => Message::Join {
            proposed: ring_id_from_wire(j.proposed)?,
        },
        W::Promise(p) => Message::Promise {
            proposed: ring_id_from_wire(p.proposed)?,
            last: pos_from_wire(p.last)?,
            applied: p.applied,
            unreachable: members_from_wire(p.unreachable)?,
            voters: members_from_wire(p.voters)?,
            nodes: members_from_wire(p.nodes)?,
        },
        W::Nack(n) => Message::Nack {
            promised: ring_id_from_wire(n.promised)?,
            excluded_at: n.excluded_at.map(|p| pos_from_wire(Some(p))).transpose()?,
        },
        W::Install(i) => Message::Install {
            ring: ring_id_from_wire(i.ring)?,
            members: members_from_wire(i.members)?,
            source: i.source.parse()?,
            source_last: pos_from_wire(i.source_last)?,
        },
        W::Fetch(f) => Message::Fetch {
            ring: ring_id_from_wire(f.ring)?,
            after: f.after,
        },
        W::Entries(en) => Message::Entries {
            ring: ring_id_from_wire(en.ring)?,
            after: en.after,
            more: en.more,
            entries: en
                .entries
                .into_iter()
                .map(entry_from_wire)
                .collect::<Result<_>>()?,
        },
        W::Ready(r) => Message::Ready {
            ring: ring_id_from_wire(r.ring)?,
            last: r.last,
        },
        W::Snapshot(sn) => Message::Snapshot {
            ring: ring_id_from_wire(sn.ring)?,
            after: sn.after,
            at: pos_from_wire(sn.at)?,
            layout: layout_from_wire(sn.layout.ok_or(bad("snapshot without layout"))?)?,
        },
    };
    Ok((from, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_wire() {
        let a = NodeId::new_random();
        let ring = RingId { counter: 7, rep: a };
        let entry = Entry {
            seq: 3,
            ring,
            body: Body::Update(vec![1, 2, 3]),
        };
        let msgs = vec![
            Message::Token(rondo_ring::Token {
                ring,
                rotation: 9,
                seq: 4,
                aru: 2,
                rot_min: 3,
                rtr: [3, 4].into_iter().collect(),
                down: [(a, NodeId::new_random())].into_iter().collect(),
                layout_seq: 5,
            }),
            Message::Mcast {
                ring,
                entry: entry.clone(),
            },
            Message::Join { proposed: ring },
            Message::Promise {
                proposed: ring,
                last: LogPos { ring, seq: 3 },
                applied: 1,
                unreachable: [NodeId::new_random()].into_iter().collect(),
                voters: [a, NodeId::new_random()].into_iter().collect(),
                nodes: [a].into_iter().collect(),
            },
            Message::Nack {
                promised: ring,
                excluded_at: Some(LogPos { ring, seq: 9 }),
            },
            Message::Install {
                ring,
                members: [a].into_iter().collect(),
                source: a,
                source_last: LogPos { ring, seq: 3 },
            },
            Message::Fetch { ring, after: 1 },
            Message::Entries {
                ring,
                after: 2,
                entries: vec![entry],
                more: true,
            },
            Message::Ready { ring, last: 3 },
            Message::Mcast {
                ring,
                entry: Entry {
                    seq: 1,
                    ring,
                    body: Body::RingStart {
                        members: [a].into_iter().collect(),
                        genesis: Some(Layout::genesis([(a, "http://a:7400".into())].into())),
                    },
                },
            },
        ];
        let ops = [
            LayoutOp::Add {
                node: a,
                addr: "http://a:7400".into(),
                voter: true,
            },
            LayoutOp::Remove { node: a },
            LayoutOp::SetVoter {
                node: a,
                voter: false,
            },
            LayoutOp::SetReplication { factor: 2 },
        ];
        let msgs = msgs
            .into_iter()
            .chain(ops.into_iter().map(|op| Message::Mcast {
                ring,
                entry: Entry {
                    seq: 5,
                    ring,
                    body: Body::Layout(LayoutChange {
                        expect_epoch: 4,
                        op,
                        proposal: "p".into(),
                    }),
                },
            }));
        for m in msgs {
            let (from, back) = message_from_wire(message_to_wire(a, &m)).unwrap();
            assert_eq!((from, back), (a, m));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        for e in [
            wire::Envelope {
                from: "not a uuid".into(),
                message: None,
            },
            wire::Envelope {
                from: NodeId::new_random().to_string(),
                message: None,
            },
            wire::Envelope {
                from: NodeId::new_random().to_string(),
                message: Some(W::Join(wire::Join { proposed: None })),
            },
        ] {
            assert!(message_from_wire(e).is_err());
        }
    }
}
