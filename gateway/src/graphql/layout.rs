//! The cluster layout in the GraphQL schema: which storage nodes there are,
//! which vote, the replication factor, and the admin mutations that change
//! them. Every change names the layout epoch it was decided against
//! (`expectEpoch`; the newest known when left out) and is ordered by the
//! storage nodes' ring: of two changes decided against one epoch, the first
//! ordered applies and the other fails with `CONFLICT`
//! (storage-node/PROTOCOL.md, "Layout changes").

use std::time::Duration;

use async_graphql::{Context, ID, Object, SimpleObject};
use rondo_core::NodeId;
use rondo_proto::ring::v1 as ring;
use rondo_proto::storage::v1 as pb;

use super::{parse_id, require_admin, state};
use crate::error::{Error, GqlResult, Result};

/// How long the gateway waits for a node it is asked to add to say its id.
const ADD_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The cluster layout, as ordered by the ring.
#[derive(SimpleObject, Clone, Debug)]
pub struct ClusterLayout {
    /// Grows by one with every change applied.
    pub epoch: i64,
    /// How many nodes hold each song's audio.
    pub replication_factor: i32,
    pub nodes: Vec<LayoutNode>,
}

/// A storage node of the layout.
#[derive(SimpleObject, Clone, Debug)]
pub struct LayoutNode {
    pub id: ID,
    /// The node's internal gRPC URL.
    pub address: String,
    /// Whether it counts towards the majority a ring needs to take writes.
    pub is_voter: bool,
}

impl From<&ring::Layout> for ClusterLayout {
    fn from(l: &ring::Layout) -> Self {
        ClusterLayout {
            epoch: i64::try_from(l.epoch).unwrap_or(i64::MAX),
            replication_factor: i32::try_from(l.replication).unwrap_or(i32::MAX),
            nodes: l
                .nodes
                .iter()
                .map(|m| LayoutNode {
                    id: ID(m.id.clone()),
                    address: m.addr.clone(),
                    is_voter: m.voter,
                })
                .collect(),
        }
    }
}

/// Layout mutations (admins).
#[derive(Default)]
pub struct LayoutMutation;

#[Object]
impl LayoutMutation {
    /// Adds a storage node to the cluster. Start it first with `ring.seeds`
    /// (the gRPC URLs of running nodes) instead of a peers file; `address`
    /// is its internal gRPC URL, through which the gateway asks its id and
    /// the other nodes reach it. Once the change is ordered the node joins
    /// the ring, catches up on the log and fetches the audio it should
    /// hold. `voter: false` adds it without a vote.
    async fn add_node(
        &self,
        ctx: &Context<'_>,
        address: String,
        #[graphql(default = true)] voter: bool,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let id = probe(&address).await.gql()?;
        let op = ring::layout_change::Op::Add(ring::AddNode {
            id: id.to_string(),
            addr: address,
            voter,
        });
        change(ctx, op, expect_epoch, None).await.gql()
    }

    /// Removes a storage node from the cluster. The others re-form their
    /// ring without it, and it serves nothing more; with full replication
    /// every other node already holds its audio.
    async fn remove_node(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let id: NodeId = parse_id(&id).gql()?;
        let op = ring::layout_change::Op::Remove(ring::RemoveNode { id: id.to_string() });
        change(ctx, op, expect_epoch, Some(id)).await.gql()
    }

    /// Gives a node a vote, or takes it away.
    async fn set_node_voter(
        &self,
        ctx: &Context<'_>,
        id: ID,
        voter: bool,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let id: NodeId = parse_id(&id).gql()?;
        let op = ring::layout_change::Op::SetVoter(ring::SetVoter {
            id: id.to_string(),
            voter,
        });
        change(ctx, op, expect_epoch, None).await.gql()
    }

    /// Sets how many nodes hold each song's audio (1 to the number of
    /// nodes). Recorded in the layout; placement by it comes with sharding.
    async fn set_replication_factor(
        &self,
        ctx: &Context<'_>,
        factor: i32,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let factor = u32::try_from(factor)
            .map_err(|_| Error::BadUserInput(format!("replication factor {factor} is negative")))
            .gql()?;
        let op = ring::layout_change::Op::SetReplication(ring::SetReplication { factor });
        change(ctx, op, expect_epoch, None).await.gql()
    }
}

/// Asks the node at `address` its id.
async fn probe(address: &str) -> Result<NodeId> {
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_string())
        .map_err(|e| Error::BadUserInput(format!("node address {address:?}: {e}")))?
        .connect_timeout(ADD_PROBE_TIMEOUT)
        .timeout(ADD_PROBE_TIMEOUT);
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::Unavailable(format!(
            "cannot reach the node at {address} to learn its id ({e}); start it first"
        ))
    };
    let channel = endpoint.connect().await.map_err(|e| unreachable(&e))?;
    let reply = pb::storage_node_client::StorageNodeClient::new(channel)
        .health(pb::HealthRequest::default())
        .await
        .map_err(|e| unreachable(&e))?
        .into_inner();
    let phase = reply.ring.as_ref().map(|r| r.phase.as_str()).unwrap_or("");
    let id: NodeId = reply.node_id.parse()?;
    if !matches!(phase, "joining" | "removed") {
        return Err(Error::BadUserInput(format!(
            "node {id} at {address} is not waiting to join (its control plane is in phase \
             {phase:?}): it is already in a cluster; start a new node with `ring.seeds`"
        )));
    }
    Ok(id)
}

/// Has a node of the primary ring order `op`, decided against
/// `expect_epoch` (the newest known layout's when `None`), and answers the
/// layout after it. `avoid` is a node not to ask (the one being removed).
async fn change(
    ctx: &Context<'_>,
    op: ring::layout_change::Op,
    expect_epoch: Option<i64>,
    avoid: Option<NodeId>,
) -> Result<ClusterLayout> {
    let cluster = &state(ctx).cluster;
    let expect_epoch = match expect_epoch {
        Some(e) => u64::try_from(e)
            .map_err(|_| Error::BadUserInput(format!("expectEpoch {e} is negative")))?,
        None => {
            cluster
                .layout()
                .ok_or_else(|| Error::Unavailable("no node has reported a layout yet".into()))?
                .epoch
        }
    };
    let targets: Vec<NodeId> = cluster
        .write_targets()
        .into_iter()
        .filter(|n| Some(*n) != avoid)
        .collect();
    let (target, node) = cluster.pick_live(targets)?;
    let request = pb::ChangeLayoutRequest {
        change: Some(ring::LayoutChange {
            expect_epoch,
            op: Some(op),
            proposal: String::new(),
        }),
    };
    let reply = node
        .client
        .clone()
        .change_layout(request)
        .await
        .map_err(|status| Error::Node {
            node: target.to_string(),
            status: Box::new(status),
        })?
        .into_inner();
    let layout = reply
        .layout
        .ok_or_else(|| Error::Unavailable(format!("node {target} answered no layout")))?;
    Ok(ClusterLayout::from(&layout))
}
