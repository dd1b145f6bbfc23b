//! The cluster layout: which nodes there are, where they listen, which of
//! them vote, and the replication factor. It changes only through ordered
//! [`LayoutChange`]s, each naming the epoch it expects: the first one
//! ordered wins, a stale one is refused the same way on every node
//! (PROTOCOL.md, "Layout changes").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rondo_core::NodeId;

/// One node of the layout.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// Where its peers reach it (the node's internal gRPC URL); opaque here.
    pub addr: String,
    /// Whether it counts towards quorums.
    pub voter: bool,
}

/// The layout in force after some prefix of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layout {
    /// Incremented by every accepted change; 0 for the genesis layout.
    pub epoch: u64,
    pub nodes: BTreeMap<NodeId, Member>,
    /// How many nodes hold each song's audio.
    pub replication: u32,
}

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
    Remove {
        node: NodeId,
    },
    SetVoter {
        node: NodeId,
        voter: bool,
    },
    SetReplication {
        factor: u32,
    },
}

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
        }
    }
}

impl std::error::Error for Refusal {}

impl Layout {
    /// A genesis layout: every node a voter, full replication.
    pub fn genesis(nodes: BTreeMap<NodeId, String>) -> Layout {
        let replication = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
        Layout {
            epoch: 0,
            nodes: nodes
                .into_iter()
                .map(|(id, addr)| (id, Member { addr, voter: true }))
                .collect(),
            replication,
        }
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

    /// The layout after `change`, or why it is refused.
    pub fn apply(&self, change: &LayoutChange) -> Result<Layout, Refusal> {
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
                next.nodes.insert(
                    *node,
                    Member {
                        addr: addr.clone(),
                        voter: *voter,
                    },
                );
            }
            LayoutOp::Remove { node } => {
                if !self.nodes.contains_key(node) {
                    return Err(Refusal::NotMember(*node));
                }
                if voters.len() == 1 && voters.contains(node) {
                    return Err(Refusal::LastVoter(*node));
                }
                next.nodes.remove(node);
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
            LayoutOp::SetReplication { factor } => {
                if *factor == 0 || *factor as usize > self.nodes.len() {
                    return Err(Refusal::BadFactor {
                        factor: *factor,
                        nodes: self.nodes.len(),
                    });
                }
                next.replication = *factor;
            }
        }
        Ok(next)
    }

    /// Whether going from `self` to `next` changes who is in the cluster or
    /// who votes (a ring then re-forms).
    pub fn membership_differs(&self, next: &Layout) -> bool {
        self.ids() != next.ids() || self.voters() != next.voters()
    }
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
            op: LayoutOp::Remove { node: id(n) },
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
            op: LayoutOp::SetReplication { factor },
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
            op: LayoutOp::Remove { node: id(1) },
        };
        assert_eq!(two.apply(&remove), Err(Refusal::LastVoter(id(1))));
        let remove_other = LayoutChange {
            expect_epoch: 1,
            proposal: String::new(),
            op: LayoutOp::Remove { node: id(2) },
        };
        assert_eq!(two.apply(&remove_other).unwrap().ids().len(), 1);
    }
}
