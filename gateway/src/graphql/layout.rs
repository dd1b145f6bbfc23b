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

use super::{parse_id, require_admin, state};
use crate::cluster::{Layout, LayoutOp};
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
    /// Which nodes own each audio partition; null while every node holds
    /// every song's audio (full replication).
    pub placement: Option<LayoutPlacement>,
}

/// A storage node of the layout.
#[derive(SimpleObject, Clone, Debug)]
pub struct LayoutNode {
    pub id: ID,
    /// The node's internal gRPC URL.
    pub address: String,
    /// Whether it counts towards the majority a ring needs to take writes.
    pub is_voter: bool,
    /// Its failure domain: replicas of a partition go to distinct zones.
    pub zone: String,
    /// Bytes it offers for audio (0: it stores none). A 64-bit integer.
    pub capacity_bytes: i64,
    /// IN, OUT (by an operator) or OUT_AUTO (by the cluster, down too long).
    pub standing: Standing,
    /// Partitions it owns in the placement; null without one.
    pub partitions: Option<i32>,
}

/// Whether a node takes placement.
#[derive(async_graphql::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    In,
    Out,
    OutAuto,
}

/// The placement of audio partitions on nodes.
#[derive(SimpleObject, Clone, Debug)]
pub struct LayoutPlacement {
    /// The layout epoch it was installed at.
    pub epoch: i64,
    /// Partitions of the content-hash space.
    pub partitions: i32,
    /// Owners per partition.
    pub replicas: i32,
    /// Copies an upload makes before it is acknowledged.
    pub write_quorum: i32,
}

impl From<&Layout> for ClusterLayout {
    fn from(l: &Layout) -> Self {
        ClusterLayout {
            epoch: i64::try_from(l.epoch).unwrap_or(i64::MAX),
            replication_factor: i32::try_from(l.replication).unwrap_or(i32::MAX),
            nodes: l
                .members
                .iter()
                .map(|m| LayoutNode {
                    id: ID(m.id.clone()),
                    address: m.address.clone(),
                    is_voter: m.voter,
                    zone: m.zone.clone(),
                    capacity_bytes: i64::try_from(m.capacity).unwrap_or(i64::MAX),
                    standing: match m.out {
                        None => Standing::In,
                        Some(false) => Standing::Out,
                        Some(true) => Standing::OutAuto,
                    },
                    partitions: m.partitions.map(|p| i32::try_from(p).unwrap_or(i32::MAX)),
                })
                .collect(),
            placement: l.placement.as_ref().map(|p| LayoutPlacement {
                epoch: i64::try_from(p.epoch).unwrap_or(i64::MAX),
                partitions: i32::try_from(p.partitions).unwrap_or(i32::MAX),
                replicas: i32::try_from(p.replicas).unwrap_or(i32::MAX),
                write_quorum: i32::try_from(p.write_quorum).unwrap_or(i32::MAX),
            }),
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
        let id = probe(&state(ctx).cluster, &address).await.gql()?;
        let op = LayoutOp::Add {
            node: id,
            address,
            voter,
        };
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
        let op = LayoutOp::Remove(id);
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
        let op = LayoutOp::SetVoter(id, voter);
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
        let op = LayoutOp::SetReplication(factor);
        change(ctx, op, expect_epoch, None).await.gql()
    }
}

/// Asks the node at `address` its id.
async fn probe(cluster: &crate::cluster::Cluster, address: &str) -> Result<NodeId> {
    let crate::cluster::Probed { id, phase } =
        crate::cluster::probe(cluster, address, ADD_PROBE_TIMEOUT).await?;
    if !matches!(phase.as_str(), "joining" | "removed") {
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
    op: LayoutOp,
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
    let (target, _) = cluster.pick_live(targets)?;
    let session = super::accounts::authority(ctx);
    let layout = cluster
        .change_layout(target, op, expect_epoch, session)
        .await?;
    Ok(ClusterLayout::from(&layout))
}
