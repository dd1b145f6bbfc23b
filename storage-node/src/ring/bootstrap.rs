//! The layout a node starts its control plane with, before its log has one
//! (PROTOCOL.md, "Layout changes"), and the protocol timeouts for it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rondo_core::NodeId;
use rondo_proto::storage::v1 as pb;
use rondo_ring::{Config, Layout};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{Cmd, Context, Shared, wire};

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
pub(super) async fn base_layout(
    ctx: &Context,
    log_empty: bool,
    rx: &mut UnboundedReceiver<Cmd>,
    shared: &Shared,
) -> (Layout, Vec<Cmd>) {
    let me = ctx.me;
    if let Some(path) = &ctx.config.ring.peers_file {
        let (peers, kept) = wait_for_peers(path, me, rx).await;
        return (Layout::genesis(peers), kept);
    }
    let seeds = &ctx.config.ring.seeds;
    if seeds.is_empty() {
        let url = format!("http://{}", ctx.config.grpc_addr);
        return (Layout::genesis([(me, url)].into()), Vec::new());
    }
    if !log_empty {
        // The log carries the genesis layout and every change since.
        return (Layout::default(), Vec::new());
    }
    if let Ok(mut s) = shared.status.lock() {
        s.phase = "joining".into();
    }
    let mut auto = ctx.config.ring.auto_join;
    tracing::info!(
        ?seeds,
        auto_join = auto,
        "waiting to be added to the cluster's layout"
    );
    let mut kept = Vec::new();
    let mut asked: Option<std::time::Instant> = None;
    loop {
        for seed in seeds {
            if let Some(layout) = seed_layout(ctx, seed).await
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
        if auto && asked.is_none_or(|t| t.elapsed() >= super::join::ASK_AGAIN) {
            asked = Some(std::time::Instant::now());
            if super::join::ask(&ctx.net, &ctx.config).await == super::join::Asked::Refused {
                // Refused for good: wait for an operator, as without auto_join.
                auto = false;
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
async fn seed_layout(ctx: &Context, url: &str) -> Option<Layout> {
    let endpoint = crate::net::endpoint(
        url,
        crate::net::Link::Probe {
            connect: Duration::from_secs(1),
            answer: Duration::from_secs(2),
        },
    )
    .ok()?;
    let channel = ctx
        .net
        .connect(endpoint, crate::net::Expect::AnyNode)
        .await
        .ok()?;
    let mut client = pb::storage_node_client::StorageNodeClient::new(channel);
    let health = client
        .health(pb::HealthRequest::default())
        .await
        .ok()?
        .into_inner();
    wire::layout_from_wire(health.ring?.layout?).ok()
}

/// One node of the cluster, as listed in the peers file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub id: NodeId,
    pub grpc_url: String,
}

/// The peers file: every node of the cluster (the initial voters).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
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

/// Protocol timeouts: corosync's defaults for `nodes` nodes, all scaled so
/// that the token timeout is `token_timeout_ms` when that is set.
pub(super) fn protocol_config(nodes: usize, token_timeout_ms: Option<u64>) -> Config {
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
