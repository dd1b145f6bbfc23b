//! The cluster layout: which nodes there are, where they listen, which of
//! them vote, the replication factor, each node's zone and capacity, and
//! the placement of audio partitions on them. It changes only through
//! ordered [`LayoutChange`]s, each naming the epoch it expects: the first
//! one ordered wins, a stale one is refused the same way on every node
//! (PROTOCOL.md, "Layout changes").
//!
//! A placement is data: the node that proposes a change computes the table
//! ([`rondo_core::partitions::assign`]) and every node only checks it
//! ([`Layout::apply`]), so two binary versions, or a later fix of the
//! algorithm, never disagree about who owns what. Every layout's placement
//! is valid for its nodes: a change that would break it without a new one
//! is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use rondo_core::NodeId;
use rondo_core::partitions::{Assignment, Candidate, PARTITION_BITS};

pub use rondo_core::partitions::{DEFAULT_CAPACITY, DEFAULT_ZONE};

/// Whether a node takes placement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Standing {
    /// It may own partitions (if it has capacity).
    #[default]
    In,
    /// It owns none; `auto` when the cluster marked it out itself (down
    /// for too long), not an operator.
    Out { auto: bool },
}

/// One node of the layout.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// Where its peers reach it (the node's internal gRPC URL); opaque here.
    pub addr: String,
    /// Whether it counts towards quorums.
    pub voter: bool,
    /// Its failure domain: replicas of a partition go to distinct zones.
    pub zone: String,
    /// Bytes it offers for audio (0: it stores none, e.g. a witness voter
    /// or a drained node).
    pub capacity: u64,
    pub standing: Standing,
}

impl Default for Member {
    fn default() -> Self {
        Member {
            addr: String::new(),
            voter: false,
            zone: DEFAULT_ZONE.into(),
            capacity: DEFAULT_CAPACITY,
            standing: Standing::In,
        }
    }
}

/// A placement version: the owners of each audio partition, from layout
/// epoch `epoch` on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Placement {
    /// The layout epoch it was installed at.
    pub epoch: u64,
    /// Copies an upload makes on owners before it is acknowledged.
    pub write_quorum: u32,
    pub assignment: Assignment,
}

/// The layout in force after some prefix of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layout {
    /// Incremented by every accepted change; 0 for the genesis layout.
    pub epoch: u64,
    pub nodes: BTreeMap<NodeId, Member>,
    /// How many nodes hold each song's audio.
    pub replication: u32,
    /// The newest placement; none: every node holds every blob (full
    /// replication, as before sharding).
    pub placement: Option<Arc<Placement>>,
    /// The placements before the newest that are still in force, oldest
    /// first: their owners may hold what the newest's owners do not yet.
    /// They retire together once every owner of the newest placement has
    /// ordered a `Synced` for it (PROTOCOL.md, "Retirement").
    pub previous: Vec<Arc<Placement>>,
    /// Per node, the epoch of the newest placement it holds everything it
    /// owns of, as its ordered `Synced` said (or carried over: see
    /// [`Layout::apply_at`]).
    pub synced: BTreeMap<NodeId, u64>,
    /// The last [`RETIREMENTS_KEPT`] retirements, oldest first: where in
    /// the log older placements stopped being in force.
    pub retirements: Vec<Retirement>,
}

/// Older placements leaving force, at one position of the log, the same on
/// every node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Retirement {
    /// The log seq of the entry at which they retired.
    pub seq: u64,
    /// Their epochs.
    pub epochs: Vec<u64>,
    /// The epoch of the placement in force alone from then on.
    pub placement: u64,
}

/// How many retirements a layout remembers.
pub const RETIREMENTS_KEPT: usize = 32;

/// One change of the layout; each changes the voter set by at most one
/// node, so that any majority of the voters before it and any majority of
/// the voters after it share a node (PROTOCOL.md, "Layout changes").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayoutOp {
    Add {
        node: NodeId,
        addr: String,
        voter: bool,
    },
    /// Removes a node. Refused while it owns partitions of the newest
    /// placement; also, unless `force`, while it owns partitions of an
    /// older one not retired yet (its copies may be the only ones).
    Remove {
        node: NodeId,
        force: bool,
    },
    SetVoter {
        node: NodeId,
        voter: bool,
    },
    /// A new replication factor, with the placement for it (none: only
    /// without a placement, i.e. full replication).
    SetReplication {
        factor: u32,
        placement: Option<Placement>,
    },
    /// A node's zone and capacity, with the placement for them (none:
    /// the current placement must stay valid).
    SetStorage {
        node: NodeId,
        zone: String,
        capacity: u64,
        placement: Option<Placement>,
    },
    /// Marks a node in or out of placement, with the placement without (or
    /// with) it. `Out { auto: true }` is the cluster's own doing for a node
    /// down too long, and only passes the guards of
    /// [`Layout::check_auto_out`]; an operator's out has none.
    SetStanding {
        node: NodeId,
        standing: Standing,
        placement: Option<Placement>,
    },
    /// A node holds everything it owns in placement `epoch`. Only the node
    /// itself orders it (its resync worker); it is decided against no
    /// epoch and does not move the layout's epoch, so it never makes an
    /// operator's change stale.
    Synced {
        node: NodeId,
        epoch: u64,
    },
}

/// The guards of an automatic out (PROTOCOL.md, "Down is not out").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Guard {
    /// Another node is out automatically already.
    OneAtATime,
    /// Fewer than R nodes with capacity would stay in.
    Replicas,
    /// Less than [`AUTO_OUT_KEEP_CAPACITY`] of the capacity would stay in.
    Capacity,
    /// The replicas would span fewer zones.
    Zones,
    /// The node is not one the cluster marks out (not in, no capacity, or
    /// it owns nothing).
    NotEligible,
}

impl Guard {
    /// The guard's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Guard::OneAtATime => "one_at_a_time",
            Guard::Replicas => "replicas",
            Guard::Capacity => "capacity",
            Guard::Zones => "zones",
            Guard::NotEligible => "not_eligible",
        }
    }
}

/// What an automatic out must leave standing (PROTOCOL.md, "Down is not
/// out"): at least this share of the capacity stays in.
pub const AUTO_OUT_KEEP_CAPACITY: f64 = 0.75;

/// A change and the epoch of the layout it was decided against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayoutChange {
    pub expect_epoch: u64,
    pub op: LayoutOp,
    /// Names the proposal for the driver that answers its client; opaque
    /// here and no part of the decision.
    pub proposal: String,
}

/// Why a change was refused; every node that applies it refuses it the
/// same way.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Another change was ordered first.
    Stale {
        expected: u64,
        current: u64,
    },
    AlreadyMember(NodeId),
    NotMember(NodeId),
    /// The change would leave the cluster without a voter.
    LastVoter(NodeId),
    /// The replication factor must be between 1 and the number of nodes.
    BadFactor {
        factor: u32,
        nodes: usize,
    },
    /// The node still owns partitions of the placement: drain it first.
    StillOwns(NodeId),
    /// The node owns partitions of older placements not retired yet: the
    /// owners of the newest (`waiting`) have not all synced.
    NotRetired {
        node: NodeId,
        epochs: Vec<u64>,
        waiting: Vec<NodeId>,
    },
    /// A `Synced` that says nothing new (or of a placement not installed).
    Sync(String),
    /// The placement does not fit the layout it would be part of.
    BadPlacement(String),
    /// No placement fits the layout the change would make (too few nodes
    /// with capacity, or zones that cannot hold the replicas).
    Unplaceable(String),
    /// A node's standing cannot change that way (already in, already out).
    Standing(String),
    /// An automatic out would leave too little standing (PROTOCOL.md,
    /// "Down is not out"): which guard, and why.
    Guarded(Guard, String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stale { expected, current } => write!(
                f,
                "the change expected layout epoch {expected}, but the layout is at epoch {current}: another change was ordered first"
            ),
            Refusal::AlreadyMember(n) => write!(f, "node {n} is already in the layout"),
            Refusal::NotMember(n) => write!(f, "node {n} is not in the layout"),
            Refusal::LastVoter(n) => {
                write!(f, "node {n} is the last voter; the cluster needs one")
            }
            Refusal::BadFactor { factor, nodes } => write!(
                f,
                "replication factor {factor} is not between 1 and the {nodes} nodes of the layout"
            ),
            Refusal::StillOwns(n) => write!(
                f,
                "node {n} still owns partitions of the placement: drain it (capacity 0) first"
            ),
            Refusal::NotRetired {
                node,
                epochs,
                waiting,
            } => {
                let list = |v: Vec<String>| v.join(", ");
                write!(
                    f,
                    "node {node} owns partitions of placement version(s) {} that are not retired yet: owner(s) {} of the newest placement have not synced; wait, or force the removal of a dead node whose data is held elsewhere",
                    list(epochs.iter().map(u64::to_string).collect()),
                    list(waiting.iter().map(NodeId::to_string).collect())
                )
            }
            Refusal::Sync(why) => write!(f, "{why}"),
            Refusal::BadPlacement(why) => write!(f, "invalid placement: {why}"),
            Refusal::Unplaceable(why) => write!(f, "no placement fits: {why}"),
            Refusal::Standing(why) => write!(f, "{why}"),
            Refusal::Guarded(_, why) => write!(f, "no automatic out: {why}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// How a standing reads in messages: "in", "out", "out (automatic)".
pub fn standing_name(s: Standing) -> &'static str {
    match s {
        Standing::In => "in",
        Standing::Out { auto: false } => "out",
        Standing::Out { auto: true } => "out (automatic)",
    }
}

impl Layout {
    /// A genesis layout: every node a voter, full replication.
    pub fn genesis(nodes: BTreeMap<NodeId, String>) -> Layout {
        let replication = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
        Layout {
            epoch: 0,
            nodes: nodes
                .into_iter()
                .map(|(id, addr)| {
                    let member = Member {
                        addr,
                        voter: true,
                        ..Member::default()
                    };
                    (id, member)
                })
                .collect(),
            replication,
            ..Layout::default()
        }
    }

    /// The nodes that may own partitions: in, with their zones and
    /// capacities (those of capacity 0 own none).
    pub fn candidates(&self) -> Vec<Candidate> {
        self.nodes
            .iter()
            .filter(|(_, m)| m.standing == Standing::In)
            .map(|(id, m)| Candidate {
                id: *id,
                zone: m.zone.clone(),
                capacity: m.capacity,
            })
            .collect()
    }

    /// Whether `node` owns partitions in the placement.
    pub fn owns(&self, node: NodeId) -> bool {
        self.placement
            .as_ref()
            .is_some_and(|p| Self::owns_in(p, node))
    }

    /// The nodes that should hold the blob with this hash: its
    /// partition's owners in the placement, or, without one (full
    /// replication), every node of the layout.
    pub fn owners_of(&self, hash: &rondo_core::ContentHash) -> Vec<NodeId> {
        match &self.placement {
            Some(p) => p.assignment.owners_of(hash).collect(),
            None => self.nodes.keys().copied().collect(),
        }
    }

    /// Whether `node` should hold the blob with this hash.
    pub fn should_hold(&self, node: NodeId, hash: &rondo_core::ContentHash) -> bool {
        match &self.placement {
            Some(p) => p.assignment.owners_of(hash).any(|n| n == node),
            None => self.nodes.contains_key(&node),
        }
    }

    /// The copies an upload makes before it is acknowledged, the uploading
    /// node's own included if it is an owner: the placement's write quorum,
    /// or, without one, a majority of the nodes.
    pub fn write_quorum(&self) -> usize {
        match &self.placement {
            Some(p) => p.write_quorum as usize,
            None => self.nodes.len() / 2 + 1,
        }
    }

    /// The epoch of the placement in force (0: none, full replication).
    pub fn placement_epoch(&self) -> u64 {
        self.placement.as_ref().map_or(0, |p| p.epoch)
    }

    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The layout after `change` as a preview, at no position of the log
    /// (a retirement it causes is dated 0): see [`Layout::apply_at`].
    pub fn apply(&self, change: &LayoutChange) -> Result<Layout, Refusal> {
        self.apply_at(0, change)
    }

    /// The layout after `change`, ordered at log seq `seq`, or why it is
    /// refused.
    ///
    /// A new placement keeps the one it replaces in force (`previous`).
    /// A node synced to the replaced placement stays synced if it owns no
    /// partition in the new one that it did not own before (it lost some,
    /// or kept them all), so a join only waits for the joiner. Once every
    /// owner of the newest placement is synced, the older ones retire,
    /// at this entry.
    pub fn apply_at(&self, seq: u64, change: &LayoutChange) -> Result<Layout, Refusal> {
        if let LayoutOp::Synced { node, epoch } = &change.op {
            let mut next = self.clone();
            next.sync(*node, *epoch)?;
            next.retire(seq);
            return Ok(next);
        }
        if change.expect_epoch != self.epoch {
            return Err(Refusal::Stale {
                expected: change.expect_epoch,
                current: self.epoch,
            });
        }
        let mut next = self.clone();
        next.epoch += 1;
        let voters = self.voters();
        match &change.op {
            LayoutOp::Add { node, addr, voter } => {
                if self.nodes.contains_key(node) {
                    return Err(Refusal::AlreadyMember(*node));
                }
                // Under a placement a new node stores nothing until a table
                // gives it a share (`SetStorage`): its default zone could
                // otherwise break the table's zone rule.
                let capacity = if self.placement.is_some() {
                    0
                } else {
                    DEFAULT_CAPACITY
                };
                next.nodes.insert(
                    *node,
                    Member {
                        addr: addr.clone(),
                        voter: *voter,
                        capacity,
                        ..Member::default()
                    },
                );
            }
            LayoutOp::Remove { node, force } => {
                if !self.nodes.contains_key(node) {
                    return Err(Refusal::NotMember(*node));
                }
                if voters.len() == 1 && voters.contains(node) {
                    return Err(Refusal::LastVoter(*node));
                }
                if self.owns(*node) {
                    return Err(Refusal::StillOwns(*node));
                }
                let epochs = self.owned_unretired(*node);
                if !force && !epochs.is_empty() {
                    return Err(Refusal::NotRetired {
                        node: *node,
                        epochs,
                        waiting: self.unsynced_owners(),
                    });
                }
                next.nodes.remove(node);
                next.synced.remove(node);
                if next.replication as usize > next.nodes.len() {
                    next.replication = u32::try_from(next.nodes.len()).unwrap_or(u32::MAX);
                }
            }
            LayoutOp::SetVoter { node, voter } => {
                let Some(member) = next.nodes.get_mut(node) else {
                    return Err(Refusal::NotMember(*node));
                };
                if !*voter && voters.len() == 1 && voters.contains(node) {
                    return Err(Refusal::LastVoter(*node));
                }
                member.voter = *voter;
            }
            LayoutOp::SetReplication { factor, placement } => {
                if *factor == 0 || *factor as usize > self.nodes.len() {
                    return Err(Refusal::BadFactor {
                        factor: *factor,
                        nodes: self.nodes.len(),
                    });
                }
                next.replication = *factor;
                next.place(placement.as_ref())?;
            }
            LayoutOp::SetStorage {
                node,
                zone,
                capacity,
                placement,
            } => {
                let Some(member) = next.nodes.get_mut(node) else {
                    return Err(Refusal::NotMember(*node));
                };
                if zone.is_empty() || zone.len() > 64 {
                    return Err(Refusal::BadPlacement(
                        "a zone is a name of 1 to 64 bytes".into(),
                    ));
                }
                member.zone = zone.clone();
                member.capacity = *capacity;
                next.place(placement.as_ref())?;
            }
            LayoutOp::SetStanding {
                node,
                standing,
                placement,
            } => {
                self.check_standing(*node, *standing)?;
                if let Some(member) = next.nodes.get_mut(node) {
                    member.standing = *standing;
                }
                next.place(placement.as_ref())?;
                if *standing == (Standing::Out { auto: true }) {
                    self.check_auto_out(*node, &next)?;
                }
            }
            LayoutOp::Synced { .. } => {}
        }
        next.check_placement()?;
        next.retire(seq);
        Ok(next)
    }

    /// Whether `node` owns partitions of placement `p`.
    fn owns_in(p: &Placement, node: NodeId) -> bool {
        let a = &p.assignment;
        a.nodes
            .iter()
            .position(|n| *n == node)
            .is_some_and(|i| a.table.iter().any(|&t| usize::from(t) == i))
    }

    /// The epochs of the older placements still in force in which `node`
    /// owns partitions.
    pub fn owned_unretired(&self, node: NodeId) -> Vec<u64> {
        self.previous
            .iter()
            .filter(|p| Self::owns_in(p, node))
            .map(|p| p.epoch)
            .collect()
    }

    /// Whether `node` owns partitions of any placement in force, the
    /// newest or an older one not retired.
    pub fn owns_any(&self, node: NodeId) -> bool {
        self.owns(node) || !self.owned_unretired(node).is_empty()
    }

    /// The owners of the newest placement that have not synced it yet
    /// (none without a placement).
    pub fn unsynced_owners(&self) -> Vec<NodeId> {
        let Some(p) = &self.placement else {
            return Vec::new();
        };
        p.assignment
            .nodes
            .iter()
            .copied()
            .filter(|n| Self::owns_in(p, *n))
            .filter(|n| self.synced.get(n).is_none_or(|s| *s < p.epoch))
            .collect()
    }

    /// The log seq at which placement `epoch` retired, if it did and the
    /// layout still remembers it.
    pub fn retired_at(&self, epoch: u64) -> Option<u64> {
        self.retirements
            .iter()
            .find(|r| r.epochs.contains(&epoch))
            .map(|r| r.seq)
    }

    /// Records that `node` holds everything it owns in placement `epoch`.
    fn sync(&mut self, node: NodeId, epoch: u64) -> Result<(), Refusal> {
        if !self.nodes.contains_key(&node) {
            return Err(Refusal::NotMember(node));
        }
        let Some(p) = &self.placement else {
            return Err(Refusal::Sync(
                "no placement to sync: every node holds every blob".into(),
            ));
        };
        if epoch > p.epoch || (epoch == p.epoch && !Self::owns_in(p, node)) {
            return Err(Refusal::Sync(format!(
                "node {node} owns nothing in placement {epoch} (the newest is {})",
                p.epoch
            )));
        }
        let was = self.synced.get(&node).copied().unwrap_or(0);
        if epoch <= was {
            return Err(Refusal::Sync(format!(
                "node {node} had synced placement {was} already"
            )));
        }
        self.synced.insert(node, epoch);
        Ok(())
    }

    /// Retires the older placements at log seq `seq` if every owner of the
    /// newest has synced it.
    fn retire(&mut self, seq: u64) {
        let Some(p) = &self.placement else {
            return;
        };
        if self.previous.is_empty() || !self.unsynced_owners().is_empty() {
            return;
        }
        let epochs = self.previous.drain(..).map(|o| o.epoch).collect();
        self.retirements.push(Retirement {
            seq,
            epochs,
            placement: p.epoch,
        });
        if self.retirements.len() > RETIREMENTS_KEPT {
            self.retirements.remove(0);
        }
    }

    /// That `node` may take `standing`: a member, under a placement (full
    /// replication has every node hold every blob), not already so; an
    /// automatic in only ends an automatic out (an operator's out stays
    /// until an operator ends it).
    fn check_standing(&self, node: NodeId, standing: Standing) -> Result<(), Refusal> {
        let member = self.nodes.get(&node).ok_or(Refusal::NotMember(node))?;
        if self.placement.is_none() {
            return Err(Refusal::Unplaceable(
                "without a placement every node holds every blob: set a replication factor first"
                    .into(),
            ));
        }
        match (member.standing, standing) {
            (a, b) if a == b => Err(Refusal::Standing(format!(
                "node {node} is already {}",
                standing_name(b)
            ))),
            (Standing::Out { auto: false }, Standing::Out { auto: true }) => Err(
                Refusal::Standing(format!("node {node} is already out (by an operator)")),
            ),
            _ => Ok(()),
        }
    }

    /// The guards of an automatic out, from this layout to `next`: no
    /// other node is out automatically; `next` keeps at least R nodes in
    /// with capacity, at least [`AUTO_OUT_KEEP_CAPACITY`] of the capacity
    /// in, and as many zones in as the replicas could span before.
    /// Checked in `apply`, so every node refuses the same out.
    fn check_auto_out(&self, node: NodeId, next: &Layout) -> Result<(), Refusal> {
        let guarded = |guard: Guard, why: String| Err(Refusal::Guarded(guard, why));
        if !self.may_auto_out(node) {
            return guarded(
                Guard::NotEligible,
                format!("node {node} is not in with capacity and partitions"),
            );
        }
        if let Some((other, _)) = self
            .nodes
            .iter()
            .find(|(_, m)| m.standing == Standing::Out { auto: true })
        {
            return guarded(
                Guard::OneAtATime,
                format!("node {other} is already out automatically"),
            );
        }
        let r = self.replication as usize;
        let holders = |l: &Layout| -> Vec<Candidate> {
            l.candidates()
                .into_iter()
                .filter(|c| c.capacity > 0)
                .collect()
        };
        let (before, after) = (holders(self), holders(next));
        if after.len() < r {
            return guarded(
                Guard::Replicas,
                format!(
                    "{} nodes with capacity would stay in, fewer than the {r} replicas",
                    after.len()
                ),
            );
        }
        let total: u128 = self.nodes.values().map(|m| u128::from(m.capacity)).sum();
        let kept: u128 = after.iter().map(|c| u128::from(c.capacity)).sum();
        #[allow(clippy::cast_precision_loss)]
        if total > 0 && (kept as f64) < AUTO_OUT_KEEP_CAPACITY * total as f64 {
            return guarded(
                Guard::Capacity,
                format!(
                    "{kept} of {total} bytes of capacity would stay in, under {} %",
                    (AUTO_OUT_KEEP_CAPACITY * 100.0).round()
                ),
            );
        }
        let zones = |c: &[Candidate]| c.iter().map(|c| c.zone.clone()).collect::<BTreeSet<_>>();
        let (spread_before, spread_after) = (zones(&before).len().min(r), zones(&after).len());
        if spread_after < spread_before {
            return guarded(
                Guard::Zones,
                format!(
                    "the replicas span {spread_before} zones, and only {spread_after} would stay in"
                ),
            );
        }
        Ok(())
    }

    /// Completes `op` with the placement the layout after it needs,
    /// computed from this layout (the one it is decided against) with
    /// [`rondo_core::partitions::assign`], which keeps as many of this
    /// placement's owners as it can. A new replication factor always gets a
    /// table (the first one ends full replication); a node's new zone or
    /// capacity gets one under a placement. Other operations, and ones that
    /// already carry a placement, come back as they are. Deterministic: the
    /// same layout and operation give the same table on every node and
    /// every run, so a plan shown before it is applied is the one applied.
    pub fn plan(&self, op: LayoutOp) -> Result<LayoutOp, Refusal> {
        Ok(match op {
            LayoutOp::SetReplication {
                factor,
                placement: None,
            } => {
                if factor == 0 || factor as usize > self.nodes.len() {
                    return Err(Refusal::BadFactor {
                        factor,
                        nodes: self.nodes.len(),
                    });
                }
                let mut next = self.clone();
                next.replication = factor;
                LayoutOp::SetReplication {
                    factor,
                    placement: Some(self.placement_for(&next)?),
                }
            }
            LayoutOp::SetStorage {
                node,
                zone,
                capacity,
                placement: None,
            } if self.placement.is_some() => {
                let mut next = self.clone();
                let member = next.nodes.get_mut(&node).ok_or(Refusal::NotMember(node))?;
                member.zone = zone.clone();
                member.capacity = capacity;
                LayoutOp::SetStorage {
                    node,
                    zone,
                    capacity,
                    placement: Some(self.placement_for(&next)?),
                }
            }
            LayoutOp::SetStanding {
                node,
                standing,
                placement: None,
            } => {
                self.check_standing(node, standing)?;
                let mut next = self.clone();
                if let Some(member) = next.nodes.get_mut(&node) {
                    member.standing = standing;
                }
                if standing == (Standing::Out { auto: true }) {
                    self.check_auto_out(node, &next)?;
                }
                LayoutOp::SetStanding {
                    node,
                    standing,
                    placement: Some(self.placement_for(&next)?),
                }
            }
            op => op,
        })
    }

    /// Whether `node`, once down long enough, is one to mark out
    /// automatically: a member in, with capacity, that owns partitions.
    pub fn may_auto_out(&self, node: NodeId) -> bool {
        self.placement.is_some()
            && self
                .nodes
                .get(&node)
                .is_some_and(|m| m.standing == Standing::In && m.capacity > 0)
            && self.owns(node)
    }

    /// The node that is out automatically, if any (at most one is).
    pub fn auto_out(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, m)| m.standing == Standing::Out { auto: true })
            .map(|(id, _)| *id)
    }

    /// The placement for `next`, the layout one change after this one:
    /// its replication factor over its candidates, moving as little as it
    /// can from this placement; a write quorum of a majority of owners.
    fn placement_for(&self, next: &Layout) -> Result<Placement, Refusal> {
        let replicas = next.replication as usize;
        let previous = self.placement.as_ref().map(|p| &p.assignment);
        let bits = previous.map_or(PARTITION_BITS, |a| a.bits);
        let assignment =
            rondo_core::partitions::assign(&next.candidates(), replicas, bits, previous)
                .map_err(|e| Refusal::Unplaceable(e.to_string()))?;
        Ok(Placement {
            epoch: self.epoch + 1,
            write_quorum: majority(next.replication),
            assignment,
        })
    }

    /// Installs `placement` (proposed for this layout's epoch), if any.
    fn place(&mut self, placement: Option<&Placement>) -> Result<(), Refusal> {
        if let Some(p) = placement {
            if p.epoch != self.epoch {
                return Err(Refusal::BadPlacement(format!(
                    "made for epoch {}, installed at {}",
                    p.epoch, self.epoch
                )));
            }
            let new = Arc::new(p.clone());
            match self.placement.take() {
                Some(old) => {
                    // Synced to the old one, and every partition it owns in
                    // the new one kept all its owners: still synced (no
                    // copy it could be the last holder of moves away).
                    for (node, epoch) in &mut self.synced {
                        if *epoch >= old.epoch && keeps_holding(&old, &new, *node) {
                            *epoch = new.epoch;
                        }
                    }
                    if old.assignment.table != new.assignment.table
                        || old.assignment.nodes != new.assignment.nodes
                        || !self.previous.is_empty()
                    {
                        self.previous.push(old);
                    }
                }
                None => {
                    // The first placement ends full replication: until its
                    // owners hold their share, every node may hold copies
                    // that are the only ones, so full replication stays in
                    // force as placement 0 (every node an owner).
                    let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
                    let replicas = nodes.len();
                    let per = u16::try_from(replicas).unwrap_or(u16::MAX);
                    let bits = new.assignment.bits;
                    let table = (0..1usize << bits).flat_map(|_| 0..per).collect();
                    self.previous.push(Arc::new(Placement {
                        epoch: 0,
                        write_quorum: majority(u32::try_from(replicas).unwrap_or(u32::MAX)),
                        assignment: Assignment {
                            bits,
                            replicas,
                            nodes,
                            table,
                        },
                    }));
                }
            }
            self.placement = Some(new);
        }
        Ok(())
    }

    /// That the placement, if any, fits this layout: its table obeys the
    /// rules for the layout's candidates, holds `replication` replicas,
    /// and its write quorum is between 1 and R.
    fn check_placement(&self) -> Result<(), Refusal> {
        let Some(p) = &self.placement else {
            return Ok(());
        };
        let a = &p.assignment;
        if a.replicas != self.replication as usize {
            return Err(Refusal::BadPlacement(format!(
                "{} replicas for a replication factor of {}",
                a.replicas, self.replication
            )));
        }
        if p.write_quorum == 0 || p.write_quorum as usize > a.replicas {
            return Err(Refusal::BadPlacement(format!(
                "a write quorum of {} for {} replicas",
                p.write_quorum, a.replicas
            )));
        }
        a.validate(&self.candidates())
            .map_err(|e| Refusal::BadPlacement(e.to_string()))
    }

    /// Whether going from `self` to `next` changes who is in the cluster or
    /// who votes (a ring then re-forms).
    pub fn membership_differs(&self, next: &Layout) -> bool {
        self.ids() != next.ids() || self.voters() != next.voters()
    }
}

/// What a layout change moves to and from one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMove {
    pub node: NodeId,
    /// Partition replicas it owns before and after.
    pub before: usize,
    pub after: usize,
    /// Replicas it gains (fetches) and loses (offloads).
    pub gained: usize,
    pub lost: usize,
    /// The audio bytes of the partitions it gains and loses.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Layout {
    /// The owners of partition `p` of `1 << bits`: the placement's, or,
    /// without one, every node (which then holds every blob).
    fn partition_owners(&self, p: usize, bits: u8) -> BTreeSet<NodeId> {
        match &self.placement {
            Some(pl) if pl.assignment.bits == bits => pl.assignment.owners(p).collect(),
            Some(pl) => {
                // Another partition size: the owners of the partition
                // holding this one's first hash.
                let shift = i32::from(pl.assignment.bits) - i32::from(bits);
                let q = if shift >= 0 { p << shift } else { p >> -shift };
                pl.assignment.owners(q).collect()
            }
            None => self.ids(),
        }
    }

    /// What going from this layout to `after` moves, per node of either:
    /// partitions gained and lost, and their bytes (`bytes[p]`: the audio
    /// bytes of partition p of `bytes.len()`, a power of two).
    pub fn moves(&self, after: &Layout, bytes: &[u64]) -> Vec<NodeMove> {
        let bits = u8::try_from(bytes.len().trailing_zeros()).unwrap_or(0);
        let mut out: BTreeMap<NodeId, NodeMove> = self
            .ids()
            .union(&after.ids())
            .map(|&node| {
                let m = NodeMove {
                    node,
                    before: 0,
                    after: 0,
                    gained: 0,
                    lost: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                };
                (node, m)
            })
            .collect();
        for (p, &b) in bytes.iter().enumerate() {
            let was = self.partition_owners(p, bits);
            let will = after.partition_owners(p, bits);
            for n in &was {
                if let Some(m) = out.get_mut(n) {
                    m.before += 1;
                    if !will.contains(n) {
                        m.lost += 1;
                        m.bytes_out += b;
                    }
                }
            }
            for n in &will {
                if let Some(m) = out.get_mut(n) {
                    m.after += 1;
                    if !was.contains(n) {
                        m.gained += 1;
                        m.bytes_in += b;
                    }
                }
            }
        }
        out.into_values().collect()
    }
}

/// Whether every partition `node` owns in `new` it owned in `old` too,
/// and kept all its old owners (both of the same partition size;
/// otherwise not). A node synced to `old` then holds all it owns in `new`,
/// and songs applied after its `Synced` keep every copy they had.
fn keeps_holding(old: &Placement, new: &Placement, node: NodeId) -> bool {
    let (a, b) = (&old.assignment, &new.assignment);
    if a.bits != b.bits {
        return false;
    }
    (0..b.partitions()).all(|p| {
        !b.owners(p).any(|n| n == node)
            || (a.owners(p).any(|n| n == node) && a.owners(p).all(|o| b.owners(p).any(|n| n == o)))
    })
}

/// The write quorum of `replicas` owners: a majority of them.
pub fn majority(replicas: u32) -> u32 {
    replicas / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u128) -> NodeId {
        NodeId(uuid::Uuid::from_u128(i))
    }

    fn three() -> Layout {
        Layout::genesis((1..=3).map(|i| (id(i), format!("n{i}"))).collect())
    }

    #[test]
    fn changes_apply_once_in_epoch_order_and_stale_ones_are_refused() {
        let l0 = three();
        assert_eq!((l0.epoch, l0.replication, l0.voters().len()), (0, 3, 3));
        let add = LayoutChange {
            expect_epoch: 0,
            proposal: String::new(),
            op: LayoutOp::Add {
                node: id(4),
                addr: "n4".into(),
                voter: true,
            },
        };
        let l1 = l0.apply(&add).unwrap();
        assert_eq!((l1.epoch, l1.voters().len()), (1, 4));
        assert!(l0.membership_differs(&l1));
        // The same change again, or a racing one decided at epoch 0: stale.
        assert_eq!(
            l1.apply(&add),
            Err(Refusal::Stale {
                expected: 0,
                current: 1
            })
        );
        let remove = |n, e| LayoutChange {
            expect_epoch: e,
            proposal: String::new(),
            op: LayoutOp::Remove {
                node: id(n),
                force: false,
            },
        };
        assert_eq!(l1.apply(&remove(9, 1)), Err(Refusal::NotMember(id(9))));
        let l2 = l1.apply(&remove(1, 1)).unwrap();
        assert_eq!((l2.epoch, l2.ids().len(), l2.replication), (2, 3, 3));
        let again = LayoutChange {
            expect_epoch: 2,
            proposal: String::new(),
            op: LayoutOp::Add {
                node: id(2),
                addr: "x".into(),
                voter: false,
            },
        };
        assert_eq!(l2.apply(&again), Err(Refusal::AlreadyMember(id(2))));
        let rf = |factor, e| LayoutChange {
            expect_epoch: e,
            proposal: String::new(),
            op: LayoutOp::SetReplication {
                factor,
                placement: None,
            },
        };
        assert_eq!(
            l2.apply(&rf(4, 2)),
            Err(Refusal::BadFactor {
                factor: 4,
                nodes: 3
            })
        );
        assert!(l2.apply(&rf(0, 2)).is_err());
        let l3 = l2.apply(&rf(2, 2)).unwrap();
        assert!(!l2.membership_differs(&l3));
        assert_eq!(l3.replication, 2);
    }

    #[test]
    fn the_last_voter_stays() {
        let one = Layout::genesis([(id(1), "n1".to_string())].into());
        let add = LayoutChange {
            expect_epoch: 0,
            proposal: String::new(),
            op: LayoutOp::Add {
                node: id(2),
                addr: "n2".into(),
                voter: false,
            },
        };
        let two = one.apply(&add).unwrap();
        let demote = LayoutChange {
            expect_epoch: 1,
            proposal: String::new(),
            op: LayoutOp::SetVoter {
                node: id(1),
                voter: false,
            },
        };
        assert_eq!(two.apply(&demote), Err(Refusal::LastVoter(id(1))));
        let remove = LayoutChange {
            expect_epoch: 1,
            proposal: String::new(),
            op: LayoutOp::Remove {
                node: id(1),
                force: false,
            },
        };
        assert_eq!(two.apply(&remove), Err(Refusal::LastVoter(id(1))));
        let remove_other = LayoutChange {
            expect_epoch: 1,
            proposal: String::new(),
            op: LayoutOp::Remove {
                node: id(2),
                force: false,
            },
        };
        assert_eq!(two.apply(&remove_other).unwrap().ids().len(), 1);
    }

    /// A placement of 16 partitions over the layout's candidates, made for
    /// the epoch after `l`'s.
    fn placed(l: &Layout, r: usize) -> Placement {
        Placement {
            epoch: l.epoch + 1,
            write_quorum: (r / 2 + 1) as u32,
            assignment: rondo_core::partitions::assign(&l.candidates(), r, 4, None).unwrap(),
        }
    }

    fn change(l: &Layout, op: LayoutOp) -> LayoutChange {
        LayoutChange {
            expect_epoch: l.epoch,
            proposal: String::new(),
            op,
        }
    }

    #[test]
    fn the_proposer_plans_the_table_the_layout_then_accepts() {
        let l0 = three();
        assert_eq!(l0.write_quorum(), 2);
        assert!(l0.should_hold(id(2), &rondo_core::ContentHash::of(b"x")));
        // A factor gets a table made for the next epoch, the same every time.
        let op = LayoutOp::SetReplication {
            factor: 2,
            placement: None,
        };
        let planned = l0.plan(op.clone()).unwrap();
        assert_eq!(planned, l0.plan(op).unwrap());
        let l1 = l0.apply(&change(&l0, planned)).unwrap();
        let p = l1.placement.clone().unwrap();
        assert_eq!((p.epoch, p.write_quorum, p.assignment.replicas), (1, 2, 2));
        assert_eq!(l1.placement_epoch(), 1);
        let hash = rondo_core::ContentHash::of(b"some audio");
        let owners = l1.owners_of(&hash);
        assert_eq!(owners.len(), 2);
        assert!(owners.iter().all(|n| l1.should_hold(*n, &hash)));
        // Draining a node plans a table without it, which moves only its
        // replicas; then it may be removed.
        let drain = LayoutOp::SetStorage {
            node: id(3),
            zone: DEFAULT_ZONE.into(),
            capacity: 0,
            placement: None,
        };
        let l2 = l1.apply(&change(&l1, l1.plan(drain).unwrap())).unwrap();
        assert!(l1.owns(id(3)) && !l2.owns(id(3)));
        let a2 = &l2.placement.as_ref().unwrap().assignment;
        let owned_by_3 = a2.counts().get(&id(3)).copied().unwrap_or(0);
        assert_eq!(owned_by_3, 0);
        assert_eq!(
            a2.moved_from(Some(&p.assignment)),
            p.assignment.counts()[&id(3)]
        );
        let remove3 = change(
            &l2,
            LayoutOp::Remove {
                node: id(3),
                force: false,
            },
        );
        assert!(matches!(
            l2.apply(&remove3),
            Err(Refusal::NotRetired { .. })
        ));
        let l2 = synced(&synced(&l2, 1), 2);
        l2.apply(&remove3).unwrap();
        // The moves: from full replication nothing is fetched; a drain
        // moves the drained node's bytes out and as many in elsewhere.
        let bytes: Vec<u64> = (0..16).map(|p| 100 + p).collect();
        let total: u64 = bytes.iter().sum();
        let first = l0.moves(&l1, &bytes);
        assert!(first.iter().all(|m| m.bytes_in == 0 && m.before == 16));
        assert_eq!(first.iter().map(|m| m.after).sum::<usize>(), 32);
        assert_eq!(first.iter().map(|m| m.bytes_out).sum::<u64>(), total);
        let drained = l1.moves(&l2, &bytes);
        let out3 = drained.iter().find(|m| m.node == id(3)).unwrap();
        assert_eq!((out3.after, out3.gained), (0, 0));
        assert!(out3.bytes_out > 0);
        let moved_in: u64 = drained.iter().map(|m| m.bytes_in).sum();
        assert_eq!(moved_in, out3.bytes_out);
        // Refusals come before anything is proposed.
        let too_many = LayoutOp::SetReplication {
            factor: 3,
            placement: None,
        };
        assert!(matches!(l2.plan(too_many), Err(Refusal::Unplaceable(_))));
        let stranger = LayoutOp::SetStorage {
            node: id(9),
            zone: "z".into(),
            capacity: 1,
            placement: None,
        };
        assert_eq!(l2.plan(stranger), Err(Refusal::NotMember(id(9))));
        // Without a placement, a node's storage needs no table.
        let bare = LayoutOp::SetStorage {
            node: id(1),
            zone: "a".into(),
            capacity: 5,
            placement: None,
        };
        assert_eq!(l0.plan(bare.clone()), Ok(bare));
    }

    #[test]
    fn a_placement_is_checked_and_kept_valid_by_every_change() {
        let l0 = three();
        assert!(l0.placement.is_none() && !l0.owns(id(1)));
        // Replication 2 with a table for it: installed at the new epoch.
        let p = placed(&l0, 2);
        let set_rf = |l: &Layout, p: Option<Placement>| {
            change(
                l,
                LayoutOp::SetReplication {
                    factor: 2,
                    placement: p,
                },
            )
        };
        let l1 = l0.apply(&set_rf(&l0, Some(p.clone()))).unwrap();
        assert_eq!(l1.placement.as_deref(), Some(&p));
        assert!(l1.owns(id(1)));
        // A table made for another epoch, for another factor, or breaking
        // the rules is refused, the same way on every node.
        let mut wrong_epoch = p.clone();
        wrong_epoch.epoch = 7;
        assert!(matches!(
            l0.apply(&set_rf(&l0, Some(wrong_epoch))),
            Err(Refusal::BadPlacement(_))
        ));
        let three_copies = placed(&l0, 3);
        assert!(matches!(
            l0.apply(&set_rf(&l0, Some(three_copies))),
            Err(Refusal::BadPlacement(_))
        ));
        let mut twice = p.clone();
        twice.assignment.table[1] = twice.assignment.table[0];
        assert!(matches!(
            l0.apply(&set_rf(&l0, Some(twice))),
            Err(Refusal::BadPlacement(_))
        ));
        let mut no_quorum = p.clone();
        no_quorum.write_quorum = 0;
        assert!(matches!(
            l0.apply(&set_rf(&l0, Some(no_quorum))),
            Err(Refusal::BadPlacement(_))
        ));
        // A factor change without a table, once there is one: refused.
        let rf1 = change(
            &l1,
            LayoutOp::SetReplication {
                factor: 1,
                placement: None,
            },
        );
        assert!(matches!(l1.apply(&rf1), Err(Refusal::BadPlacement(_))));
        // An owner is neither removed nor drained without a new table.
        assert_eq!(
            l1.apply(&change(
                &l1,
                LayoutOp::Remove {
                    node: id(1),
                    force: false
                }
            )),
            Err(Refusal::StillOwns(id(1)))
        );
        let drain = |l: &Layout, p: Option<Placement>| {
            change(
                l,
                LayoutOp::SetStorage {
                    node: id(1),
                    zone: DEFAULT_ZONE.into(),
                    capacity: 0,
                    placement: p,
                },
            )
        };
        assert!(matches!(
            l1.apply(&drain(&l1, None)),
            Err(Refusal::BadPlacement(_))
        ));
        // Drained with a table that leaves it out: then it may go.
        let mut drained = l1.clone();
        drained.epoch += 1;
        if let Some(m) = drained.nodes.get_mut(&id(1)) {
            m.capacity = 0;
        }
        let without = Placement {
            epoch: l1.epoch + 1,
            write_quorum: 2,
            assignment: rondo_core::partitions::assign(
                &drained.candidates(),
                2,
                4,
                l1.placement.as_ref().map(|p| &p.assignment),
            )
            .unwrap(),
        };
        let l2 = l1.apply(&drain(&l1, Some(without))).unwrap();
        assert!(!l2.owns(id(1)));
        assert_eq!(l2.nodes[&id(1)].capacity, 0);
        // It owned partitions of the placement before, which stays in
        // force until the new owners hold theirs.
        let remove1 = change(
            &l2,
            LayoutOp::Remove {
                node: id(1),
                force: false,
            },
        );
        assert!(matches!(
            l2.apply(&remove1),
            Err(Refusal::NotRetired { .. })
        ));
        let l2 = synced(&synced(&l2, 2), 3);
        assert!(l2.previous.is_empty());
        let l3 = l2.apply(&remove1).unwrap();
        assert_eq!(l3.ids().len(), 2);
        // A node added later owns nothing until a new table gives it a
        // share; the current one stays valid.
        let add = LayoutOp::Add {
            node: id(4),
            addr: "n4".into(),
            voter: false,
        };
        let l4 = l3.apply(&change(&l3, add)).unwrap();
        assert!(!l4.owns(id(4)));
        assert_eq!(l4.nodes[&id(4)].capacity, 0);
        assert_eq!(l4.placement, l3.placement);
        // A zone is named.
        let unnamed = LayoutOp::SetStorage {
            node: id(4),
            zone: String::new(),
            capacity: 1,
            placement: None,
        };
        assert!(matches!(
            l4.apply(&change(&l4, unnamed)),
            Err(Refusal::BadPlacement(_))
        ));
    }

    /// `n` nodes, in `zones` zones round-robin, with equal capacity, under
    /// a placement of factor `r` planned the way a proposer plans it.
    fn placed_cluster(n: u128, zones: u128, r: u32) -> Layout {
        let mut l = Layout::genesis((1..=n).map(|i| (id(i), format!("n{i}"))).collect());
        for i in 1..=n {
            l.nodes.get_mut(&id(i)).unwrap().zone = format!("z{}", i % zones);
        }
        let op = l
            .plan(LayoutOp::SetReplication {
                factor: r,
                placement: None,
            })
            .unwrap();
        l.apply(&change(&l, op)).unwrap()
    }

    fn standing(l: &Layout, node: NodeId, standing: Standing) -> Result<Layout, Refusal> {
        let op = l.plan(LayoutOp::SetStanding {
            node,
            standing,
            placement: None,
        })?;
        l.apply(&change(l, op))
    }

    const AUTO: Standing = Standing::Out { auto: true };

    #[test]
    fn fewer_replicas_keep_the_old_placement_until_the_owners_hold_theirs() {
        // R = 3 of 3 to R = 1: every node only loses partitions, but a
        // song may have had its W = 2 copies only on the nodes that leave
        // a partition: no node stays synced, and the old placement stays
        // in force until every owner syncs again.
        let mut l = placed_cluster(3, 1, 3);
        for n in 1..=3 {
            l = synced(&l, n);
        }
        let v1 = l.placement_epoch();
        let op = l
            .plan(LayoutOp::SetReplication {
                factor: 1,
                placement: None,
            })
            .unwrap();
        let l2 = l.apply_at(70, &change(&l, op)).unwrap();
        assert_eq!(
            l2.previous.iter().map(|p| p.epoch).collect::<Vec<_>>(),
            vec![v1]
        );
        let waiting = l2.unsynced_owners();
        assert_eq!(waiting.len(), 3, "every owner syncs again: {waiting:?}");
        let mut l3 = l2.clone();
        for n in &waiting {
            assert_eq!(l3.retired_at(v1), None);
            l3 = synced(&l3, n.0.as_u128());
        }
        assert!(l3.retired_at(v1).is_some());
    }

    /// `l` after node `n` ordered `Synced` for its newest placement, at
    /// log seq 100 + n.
    fn synced(l: &Layout, n: u128) -> Layout {
        let epoch = l.placement_epoch();
        let op = LayoutOp::Synced { node: id(n), epoch };
        // Decided against no epoch: any expected epoch passes.
        let c = LayoutChange {
            expect_epoch: 7777,
            op,
            proposal: String::new(),
        };
        l.apply_at(100 + n as u64, &c).unwrap()
    }

    #[test]
    fn older_placements_retire_once_every_new_owner_synced() {
        // Four nodes, R = 2; all four sync the first placement.
        let mut l = placed_cluster(4, 1, 2);
        // Full replication stays in force, as placement 0 (every node an
        // owner), until the first placement's owners hold their share.
        let p0 = &l.previous[0];
        assert_eq!(
            (l.previous.len(), p0.epoch, p0.assignment.replicas),
            (1, 0, 4)
        );
        assert_eq!(l.owned_unretired(id(3)), vec![0]);
        for n in 1..=4 {
            assert!(!l.previous.is_empty());
            l = synced(&l, n);
        }
        assert!(l.previous.is_empty());
        assert_eq!(
            l.retirements.last().map(|r| r.epochs.clone()),
            Some(vec![0])
        );
        let v1 = l.placement_epoch();
        // A Synced moves no epoch and says nothing twice.
        assert_eq!(l.epoch, v1);
        let again = LayoutChange {
            expect_epoch: 0,
            op: LayoutOp::Synced {
                node: id(1),
                epoch: v1,
            },
            proposal: String::new(),
        };
        assert!(matches!(l.apply(&again), Err(Refusal::Sync(_))));
        let ahead = LayoutChange {
            op: LayoutOp::Synced {
                node: id(1),
                epoch: v1 + 1,
            },
            ..again.clone()
        };
        assert!(matches!(l.apply(&ahead), Err(Refusal::Sync(_))));

        // A fifth node joins with capacity: the old nodes only give
        // partitions away; the placement before stays in force until the
        // joiner holds its share.
        let add = LayoutOp::Add {
            node: id(5),
            addr: "n5".into(),
            voter: false,
        };
        l = l.apply(&change(&l, add)).unwrap();
        let op = l
            .plan(LayoutOp::SetStorage {
                node: id(5),
                zone: "z0".into(),
                capacity: DEFAULT_CAPACITY,
                placement: None,
            })
            .unwrap();
        let l2 = l.apply_at(50, &change(&l, op)).unwrap();
        let v2 = l2.placement_epoch();
        assert_eq!(
            l2.previous.iter().map(|p| p.epoch).collect::<Vec<_>>(),
            vec![v1]
        );
        // Synced stays only with a node whose partitions all kept their
        // owners; one sharing a partition with a node that gave it to the
        // joiner syncs again (a song applied after its Synced may have had
        // a copy only there).
        let waiting = l2.unsynced_owners();
        assert!(waiting.contains(&id(5)), "{waiting:?}");
        let (pa, pb) = (
            l.placement.as_ref().unwrap(),
            l2.placement.as_ref().unwrap(),
        );
        for n in 1..=4 {
            let keeps = keeps_holding(pa, pb, id(n));
            assert_eq!(l2.synced[&id(n)] == v2, keeps, "node {n}");
            assert_eq!(waiting.contains(&id(n)), !keeps, "node {n}");
        }
        assert_eq!(l2.retired_at(v1), None);

        // Node 1 drains meanwhile: it owned partitions of both; the
        // owners that gain its share must sync the third placement.
        let op = l2
            .plan(LayoutOp::SetStorage {
                node: id(1),
                zone: "z0".into(),
                capacity: 0,
                placement: None,
            })
            .unwrap();
        let l3 = l2.apply_at(60, &change(&l2, op)).unwrap();
        let v3 = l3.placement_epoch();
        assert_eq!(
            l3.previous.iter().map(|p| p.epoch).collect::<Vec<_>>(),
            vec![v1, v2]
        );
        assert_eq!(l3.owned_unretired(id(1)), vec![v1, v2]);
        assert!(!l3.owns(id(1)) && l3.owns_any(id(1)));
        let remove = change(
            &l3,
            LayoutOp::Remove {
                node: id(1),
                force: false,
            },
        );
        let Err(Refusal::NotRetired { waiting, .. }) = l3.apply(&remove) else {
            panic!("removed before retirement");
        };
        assert_eq!(waiting, l3.unsynced_owners());
        assert!(waiting.contains(&id(5)));
        // Forced (a dead node whose data is elsewhere): it goes.
        let forced = LayoutChange {
            op: LayoutOp::Remove {
                node: id(1),
                force: true,
            },
            ..remove.clone()
        };
        assert!(l3.apply(&forced).is_ok());

        // Each waiting owner syncs; the last one retires both older
        // placements at its entry, the same on every node.
        let mut l4 = l3.clone();
        let last = *waiting.last().unwrap();
        for n in &waiting {
            assert!(!l4.previous.is_empty());
            l4 = synced(&l4, n.0.as_u128());
        }
        assert!(l4.previous.is_empty());
        let r = l4.retirements.last().unwrap();
        assert_eq!(
            (r.seq, r.epochs.clone(), r.placement),
            (100 + last.0.as_u128() as u64, vec![v1, v2], v3)
        );
        assert_eq!(l4.retired_at(v2), Some(r.seq));
        assert_eq!(l4.epoch, l3.epoch, "syncs move no epoch");
        // Now the drained node may go, and a stale change still loses.
        let l5 = l4.apply(&remove).unwrap();
        assert!(!l5.nodes.contains_key(&id(1)) && !l5.synced.contains_key(&id(1)));
        assert!(matches!(l5.apply(&remove), Err(Refusal::Stale { .. })));
    }

    #[test]
    fn a_placement_that_moves_nothing_retires_nothing_and_retirements_are_bounded() {
        let mut l = placed_cluster(3, 1, 2);
        for n in 1..=3 {
            l = synced(&l, n);
        }
        assert!(l.previous.is_empty());
        // The same zone and capacity again: the same table, nothing to
        // wait for.
        let same = l
            .plan(LayoutOp::SetStorage {
                node: id(1),
                zone: "z0".into(),
                capacity: DEFAULT_CAPACITY,
                placement: None,
            })
            .unwrap();
        l = l.apply(&change(&l, same)).unwrap();
        assert!(l.previous.is_empty() && l.unsynced_owners().is_empty());
        // Capacities that move partitions back and forth, each transition
        // completed: one retirement each, the oldest forgotten.
        for i in 0..(RETIREMENTS_KEPT + 3) {
            let capacity = if i % 2 == 0 {
                DEFAULT_CAPACITY / 4
            } else {
                DEFAULT_CAPACITY
            };
            let op = l
                .plan(LayoutOp::SetStorage {
                    node: id(1),
                    zone: "z0".into(),
                    capacity,
                    placement: None,
                })
                .unwrap();
            l = l.apply(&change(&l, op)).unwrap();
            assert_eq!(l.previous.len(), 1);
            for n in l.unsynced_owners() {
                l = synced(&l, n.0.as_u128());
            }
            assert!(l.previous.is_empty());
        }
        assert_eq!(l.retirements.len(), RETIREMENTS_KEPT);
    }

    #[test]
    fn an_automatic_out_passes_its_guards_or_is_refused_everywhere() {
        // Five nodes, R = 3: one automatic out, not two.
        let l = placed_cluster(5, 1, 3);
        assert!(l.may_auto_out(id(2)));
        let out = standing(&l, id(2), AUTO).unwrap();
        assert_eq!(out.auto_out(), Some(id(2)));
        assert!(!out.owns(id(2)), "its partitions went to the others");
        assert!(
            out.candidates().iter().all(|c| c.id != id(2)),
            "no longer a candidate"
        );
        assert_eq!(out.voters(), l.voters(), "votes unchanged");
        let second = standing(&out, id(3), AUTO);
        assert!(
            matches!(&second, Err(Refusal::Guarded(Guard::OneAtATime, why)) if why.contains("already out")),
            "{second:?}"
        );
        // A table carried by a change is checked in apply, not trusted:
        // the guard holds even for a change planned elsewhere.
        let carried = LayoutOp::SetStanding {
            node: id(3),
            standing: AUTO,
            placement: Some(out.placement_for(&out).unwrap()),
        };
        assert!(matches!(
            out.apply(&change(&out, carried)),
            Err(Refusal::Guarded(..))
        ));
        // Marked in again: it owns a share again, and no node is out.
        let back = standing(&out, id(2), Standing::In).unwrap();
        assert!(back.owns(id(2)) && back.auto_out().is_none());
        assert!(matches!(
            standing(&back, id(2), Standing::In),
            Err(Refusal::Standing(_))
        ));

        // R = 3 on three nodes: none may go (too few would stay in).
        let l3 = placed_cluster(3, 1, 3);
        let r = standing(&l3, id(1), AUTO);
        assert!(
            matches!(&r, Err(Refusal::Guarded(Guard::Replicas, why)) if why.contains("fewer than the 3")),
            "{r:?}"
        );
        // Four nodes of R = 2: 75 % of the capacity stays in, so one may
        // go; with one of the four drained, an out keeps 2 of 3 (67 %).
        let l4 = placed_cluster(4, 1, 2);
        assert!(standing(&l4, id(1), AUTO).is_ok());
        let drain = l4
            .plan(LayoutOp::SetStorage {
                node: id(4),
                zone: "z0".into(),
                capacity: 0,
                placement: None,
            })
            .unwrap();
        let drained = l4.apply(&change(&l4, drain)).unwrap();
        let r = standing(&drained, id(1), AUTO);
        assert!(
            matches!(&r, Err(Refusal::Guarded(Guard::Capacity, why)) if why.contains("capacity")),
            "{r:?}"
        );
        // Three zones of two nodes, R = 3 spread over all three; an out
        // leaves every zone with a node, so it goes.
        let zoned = placed_cluster(6, 3, 3);
        assert!(standing(&zoned, id(1), AUTO).is_ok());
        // Three zones of one node and a fourth node in one of them: the
        // only node of a zone may not go (two zones would stay).
        let mut l = placed_cluster(4, 3, 3);
        l.nodes.get_mut(&id(4)).unwrap().capacity = DEFAULT_CAPACITY;
        let lonely = (1..=4)
            .map(id)
            .find(|n| {
                let z = &l.nodes[n].zone;
                l.nodes.values().filter(|m| &m.zone == z).count() == 1
            })
            .unwrap();
        let r = standing(&l, lonely, AUTO);
        assert!(
            matches!(&r, Err(Refusal::Guarded(Guard::Zones, why)) if why.contains("zones")),
            "{r:?}"
        );

        // A node without capacity (drained) is never marked out
        // automatically, even by a change carried on the wire.
        let drained_auto = LayoutOp::SetStanding {
            node: id(4),
            standing: AUTO,
            placement: Some(drained.placement_for(&drained).unwrap()),
        };
        assert!(matches!(
            drained.apply(&change(&drained, drained_auto)),
            Err(Refusal::Guarded(Guard::NotEligible, _))
        ));

        // An operator's out has no guards but the placement's; an
        // automatic in never ends it; without a placement there is none.
        let op_out = standing(&out, id(3), Standing::Out { auto: false }).unwrap();
        assert_eq!(op_out.auto_out(), Some(id(2)));
        assert!(matches!(
            standing(&op_out, id(3), AUTO),
            Err(Refusal::Standing(_))
        ));
        assert!(matches!(
            standing(&three(), id(1), AUTO),
            Err(Refusal::Unplaceable(_))
        ));
    }
}
