//! The cluster layout in the GraphQL schema: which storage nodes there are,
//! which vote, the replication factor, and the admin mutations that change
//! them. Every change names the layout epoch it was decided against
//! (`expectEpoch`; the newest known when left out) and is ordered by the
//! storage nodes' ring: of two changes decided against one epoch, the first
//! ordered applies and the other fails with `CONFLICT`
//! (storage-node/PROTOCOL.md, "Layout changes").

use std::time::Duration;

use async_graphql::{Context, ID, InputObject, Object, OneofObject, SimpleObject};
use rondo_core::NodeId;

use super::{UnsignedInt64, parse_id, require_admin, state};
use crate::cluster::{Layout, LayoutOp, LayoutPlan};
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
    /// The epochs of older placements still in force, oldest first: a
    /// transition under way. Empty once every owner of the newest
    /// placement holds everything it owns there.
    pub older_placements: Vec<i64>,
    /// The owners of the newest placement that do not hold everything
    /// they own there yet (the transition waits for them).
    pub unsynced_nodes: Vec<ID>,
    /// Where older placements left force, oldest first (the last 32).
    pub retirements: Vec<LayoutRetirement>,
}

/// Older placements leaving force, at the same position of the ordered
/// log on every node.
#[derive(SimpleObject, Clone, Debug)]
pub struct LayoutRetirement {
    /// The sequence number of the log entry at which they retired.
    pub seq: UnsignedInt64,
    /// Their epochs.
    pub placement_epochs: Vec<i64>,
    /// The placement in force alone from then on.
    pub placement: i64,
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
    /// Bytes it offers for audio (0: it stores none).
    pub capacity_bytes: UnsignedInt64,
    /// IN, OUT (by an operator) or OUT_AUTO (by the cluster, down too long).
    pub standing: Standing,
    /// Partitions it owns in the placement; null without one.
    pub partitions: Option<i32>,
    /// The newest placement epoch it holds everything it owns of; null
    /// if it never said so.
    pub synced_epoch: Option<i64>,
    /// The epochs of older placements still in force in which it owns
    /// partitions: removing it is refused (`CONFLICT`) until they retire.
    pub unretired_placements: Vec<i64>,
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
                    capacity_bytes: UnsignedInt64(m.capacity),
                    standing: match m.out {
                        None => Standing::In,
                        Some(false) => Standing::Out,
                        Some(true) => Standing::OutAuto,
                    },
                    partitions: m.partitions.map(|p| i32::try_from(p).unwrap_or(i32::MAX)),
                    synced_epoch: m.synced.map(big),
                    unretired_placements: m.unretired.iter().copied().map(big).collect(),
                })
                .collect(),
            placement: l.placement.as_ref().map(|p| LayoutPlacement {
                epoch: i64::try_from(p.epoch).unwrap_or(i64::MAX),
                partitions: i32::try_from(p.partitions).unwrap_or(i32::MAX),
                replicas: i32::try_from(p.replicas).unwrap_or(i32::MAX),
                write_quorum: i32::try_from(p.write_quorum).unwrap_or(i32::MAX),
            }),
            older_placements: l.previous.iter().copied().map(big).collect(),
            unsynced_nodes: l.unsynced.iter().map(|n| ID(n.clone())).collect(),
            retirements: l
                .retirements
                .iter()
                .map(|r| LayoutRetirement {
                    seq: UnsignedInt64(r.seq),
                    placement_epochs: r.epochs.iter().copied().map(big).collect(),
                    placement: big(r.placement),
                })
                .collect(),
        }
    }
}

/// A count or epoch as a GraphQL integer (saturating).
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A layout change to plan.
#[derive(OneofObject, Clone, Debug)]
pub enum LayoutChangeInput {
    /// How many nodes hold each song's audio.
    ReplicationFactor(i32),
    /// A node's zone and capacity.
    NodeStorage(NodeStorageInput),
    /// Capacity 0 for a node: its partitions go to the others.
    DrainNode(ID),
    /// A node leaves the layout.
    RemoveNode(ID),
}

/// A node's background byte rates in force, bytes per second (0: no
/// limit).
#[derive(SimpleObject)]
pub struct NodeRates {
    pub id: ID,
    pub resync_rate_bytes: UnsignedInt64,
    pub scrub_rate_bytes: UnsignedInt64,
}

/// A node's zone and capacity; a field left out stays as it is.
#[derive(InputObject, Clone, Debug)]
pub struct NodeStorageInput {
    pub id: ID,
    pub zone: Option<String>,
    /// Bytes it offers for audio (0: it stores none).
    pub capacity_bytes: Option<UnsignedInt64>,
}

/// What a layout change would do, before it is ordered.
#[derive(SimpleObject, Clone, Debug)]
pub struct LayoutPlanView {
    /// The epoch it was planned against: `expectEpoch` to apply exactly
    /// this plan (another change ordered first makes it `CONFLICT`).
    pub expect_epoch: i64,
    /// The layout it would make, with its placement.
    pub layout: ClusterLayout,
    /// Per node, what it would gain and lose.
    pub moves: Vec<NodeMoveView>,
    /// Bytes copied between nodes in all (the sum of `bytesIn`).
    pub bytes_to_move: UnsignedInt64,
}

/// What a layout change moves to and from one node.
#[derive(SimpleObject, Clone, Debug)]
pub struct NodeMoveView {
    pub id: ID,
    pub partitions_before: i32,
    pub partitions_after: i32,
    /// Partition replicas it would fetch and offload.
    pub gained: i32,
    pub lost: i32,
    /// Audio bytes it would receive and give away.
    pub bytes_in: UnsignedInt64,
    pub bytes_out: UnsignedInt64,
}

impl From<&LayoutPlan> for LayoutPlanView {
    fn from(p: &LayoutPlan) -> Self {
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let long = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        LayoutPlanView {
            expect_epoch: long(p.expect_epoch),
            layout: ClusterLayout::from(&p.layout),
            moves: p
                .moves
                .iter()
                .map(|m| NodeMoveView {
                    id: ID(m.id.clone()),
                    partitions_before: int(m.partitions_before),
                    partitions_after: int(m.partitions_after),
                    gained: int(m.gained),
                    lost: int(m.lost),
                    bytes_in: UnsignedInt64(m.bytes_in),
                    bytes_out: UnsignedInt64(m.bytes_out),
                })
                .collect(),
            bytes_to_move: UnsignedInt64(p.moves.iter().map(|m| m.bytes_in).sum()),
        }
    }
}

/// Layout queries (admins).
#[derive(Default)]
pub struct LayoutQuery;

#[Object]
impl LayoutQuery {
    /// What a layout change would do: the layout and placement it would
    /// make and the partitions and bytes each node would gain and lose,
    /// computed by a storage node as it would propose it. Orders nothing;
    /// apply it with the matching mutation and this plan's `expectEpoch`.
    async fn layout_plan(
        &self,
        ctx: &Context<'_>,
        change: LayoutChangeInput,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<LayoutPlanView> {
        require_admin(ctx).gql()?;
        let op = op_of(ctx, change).gql()?;
        let cluster = &state(ctx).cluster;
        let expect_epoch = expected(cluster, expect_epoch).gql()?;
        let (target, _) = cluster.pick_live(cluster.write_targets()).gql()?;
        let session = super::accounts::authority(ctx);
        let plan = cluster
            .plan_layout(target, op, expect_epoch, session)
            .await
            .gql()?;
        Ok(LayoutPlanView::from(&plan))
    }
}

/// The operation a planned change names.
fn op_of(ctx: &Context<'_>, change: LayoutChangeInput) -> Result<LayoutOp> {
    Ok(match change {
        LayoutChangeInput::ReplicationFactor(f) => LayoutOp::SetReplication(factor(f)?),
        LayoutChangeInput::NodeStorage(s) => {
            storage(ctx, &s.id, s.zone, s.capacity_bytes.map(|c| c.0))?
        }
        LayoutChangeInput::DrainNode(id) => storage(ctx, &id, None, Some(0))?,
        LayoutChangeInput::RemoveNode(id) => LayoutOp::Remove(parse_id(&id)?, false),
    })
}

fn factor(f: i32) -> Result<u32> {
    u32::try_from(f).map_err(|_| Error::BadUserInput(format!("replication factor {f} is negative")))
}

/// A node's new storage, the fields left out as the newest layout has them.
fn storage(
    ctx: &Context<'_>,
    id: &ID,
    zone: Option<String>,
    capacity: Option<u64>,
) -> Result<LayoutOp> {
    let node: NodeId = parse_id(id)?;
    let layout = state(ctx)
        .cluster
        .layout()
        .ok_or_else(|| Error::Unavailable("no node has reported a layout yet".into()))?;
    let member = layout
        .members
        .iter()
        .find(|m| m.id == node.to_string())
        .ok_or_else(|| Error::BadUserInput(format!("node {node} is not in the layout")))?;
    let capacity = capacity.unwrap_or(member.capacity);
    let zone = zone.unwrap_or_else(|| member.zone.clone());
    if zone.is_empty() || zone.len() > 64 {
        return Err(Error::BadUserInput(
            "a zone is a name of 1 to 64 bytes".into(),
        ));
    }
    Ok(LayoutOp::SetStorage {
        node,
        zone,
        capacity,
    })
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
    /// ring without it, and it serves nothing more. Refused with `CONFLICT`
    /// while it owns partitions of the placement: drain it first
    /// (`drainNode`).
    ///
    /// Also refused (`CONFLICT`) while it owns partitions of an older
    /// placement that has not retired (`ClusterLayout.olderPlacements`):
    /// until every owner of the newest placement holds what it owns, the
    /// node's copies may be the only ones. Every node decides this the
    /// same way, at the change's position in the ordered log. With
    /// `force: true` it goes anyway (a dead node whose data is held
    /// elsewhere, or lost).
    async fn remove_node(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expect_epoch: Option<i64>,
        #[graphql(default = false)] force: bool,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let id: NodeId = parse_id(&id).gql()?;
        let op = LayoutOp::Remove(id, force);
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

    /// Sets a node's zone (its failure domain: a partition's replicas go to
    /// distinct zones) and capacity in bytes (its share of the partitions;
    /// 0 stores none). Under a placement the ordering node computes the new
    /// table, moving as little as it can. A field left out stays.
    async fn set_node_storage(
        &self,
        ctx: &Context<'_>,
        id: ID,
        zone: Option<String>,
        capacity_bytes: Option<UnsignedInt64>,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let op = storage(ctx, &id, zone, capacity_bytes.map(|c| c.0)).gql()?;
        change(ctx, op, expect_epoch, None).await.gql()
    }

    /// Drains a node: capacity 0, so that its partitions go to the others.
    /// It keeps serving what it holds until the new owners hold it; then
    /// `removeNode` takes it out.
    async fn drain_node(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let op = storage(ctx, &id, None, Some(0)).gql()?;
        change(ctx, op, expect_epoch, None).await.gql()
    }

    /// Marks a node out of placement: its partitions go to the nodes still
    /// in, moving as little as it can, while it keeps serving what it holds
    /// until they do. Unlike a drain it keeps the node's capacity, so
    /// `markNodeIn` gives it its share back. The cluster marks a node out
    /// itself (`OUT_AUTO`) once it has been down for the down-out interval.
    async fn mark_node_out(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let op = LayoutOp::SetOut(parse_id(&id).gql()?, true);
        change(ctx, op, expect_epoch, None).await.gql()
    }

    /// Marks a node that is out (by an operator or by the cluster) in
    /// again: it gets its share of the partitions back.
    async fn mark_node_in(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let op = LayoutOp::SetOut(parse_id(&id).gql()?, false);
        change(ctx, op, expect_epoch, None).await.gql()
    }

    /// Sets a node's background byte rates, in bytes per second (0: no
    /// limit): what its resync worker fetches (moving partitions, repairs)
    /// and what its scrub reads. A rate left out stays. Takes effect at
    /// once and lasts until the node restarts (its configuration then
    /// applies again); not ordered on the ring, since it moves no data.
    async fn set_node_rates(
        &self,
        ctx: &Context<'_>,
        id: ID,
        resync_rate_bytes: Option<UnsignedInt64>,
        scrub_rate_bytes: Option<UnsignedInt64>,
    ) -> async_graphql::Result<NodeRates> {
        require_admin(ctx).gql()?;
        let node = parse_id(&id).gql()?;
        let session = super::accounts::authority(ctx);
        let (resync, scrub) = state(ctx)
            .cluster
            .set_rates(
                node,
                resync_rate_bytes.map(|r| r.0),
                scrub_rate_bytes.map(|r| r.0),
                session,
            )
            .await
            .gql()?;
        Ok(NodeRates {
            id,
            resync_rate_bytes: UnsignedInt64(resync),
            scrub_rate_bytes: UnsignedInt64(scrub),
        })
    }

    /// Sets how many nodes hold each song's audio (1 to the number of
    /// nodes with capacity). The ordering node computes the placement: each
    /// of 1024 partitions of the content-hash space gets that many owners,
    /// by capacity and zone, moving as little as it can; the first one ends
    /// full replication (nothing is copied; the other nodes give their
    /// copies up once the owners hold them).
    async fn set_replication_factor(
        &self,
        ctx: &Context<'_>,
        factor: i32,
        expect_epoch: Option<i64>,
    ) -> async_graphql::Result<ClusterLayout> {
        require_admin(ctx).gql()?;
        let op = LayoutOp::SetReplication(self::factor(factor).gql()?);
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
    let expect_epoch = expected(cluster, expect_epoch)?;
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

/// The epoch a change is decided against: the one given, or the newest
/// layout's the nodes reported.
fn expected(cluster: &crate::cluster::Cluster, expect_epoch: Option<i64>) -> Result<u64> {
    match expect_epoch {
        Some(e) => u64::try_from(e)
            .map_err(|_| Error::BadUserInput(format!("expectEpoch {e} is negative"))),
        None => Ok(cluster
            .layout()
            .ok_or_else(|| Error::Unavailable("no node has reported a layout yet".into()))?
            .epoch),
    }
}
