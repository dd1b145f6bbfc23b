//! Conversions between the control plane's types (`rondo-ring`) and the
//! wire types of `rondo.ring.v1`, both ways.
//!
//! This is a leaf: it imports nothing else of the crate but the error type,
//! and it is the only place that knows both ring and proto types. Every
//! field that comes off the network is checked: a malformed message is
//! refused with an error, never a panic.

use std::collections::BTreeSet;

use rondo_core::NodeId;
use rondo_core::partitions::Assignment;
use rondo_proto::ring::v1::{self as wire, envelope::Message as W};
use rondo_ring::{
    Body, Compacted, DEFAULT_CAPACITY, DEFAULT_ZONE, Entry, Layout, LayoutChange, LayoutOp, LogPos,
    Member, Message, Placement, RingId, Standing,
};

use crate::error::{Error, Result};

/// What the ring orders: an encoded catalog update.
pub type Payload = Vec<u8>;

fn bad(what: &'static str) -> Error {
    Error::Invalid { what }
}

pub fn ring_id_to_wire(id: RingId) -> wire::RingId {
    wire::RingId {
        counter: id.counter,
        rep: id.rep.to_string(),
    }
}

pub fn ring_id_from_wire(id: Option<wire::RingId>) -> Result<RingId> {
    let id = id.ok_or(bad("ring id missing"))?;
    Ok(RingId {
        counter: id.counter,
        rep: id.rep.parse()?,
    })
}

pub fn pos_to_wire(p: LogPos) -> wire::LogPos {
    wire::LogPos {
        ring: Some(ring_id_to_wire(p.ring)),
        seq: p.seq,
    }
}

pub fn pos_from_wire(p: Option<wire::LogPos>) -> Result<LogPos> {
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

pub fn placement_to_wire(p: &Placement) -> wire::Placement {
    let a = &p.assignment;
    wire::Placement {
        epoch: p.epoch,
        write_quorum: p.write_quorum,
        bits: u32::from(a.bits),
        replicas: u32::try_from(a.replicas).unwrap_or(u32::MAX),
        nodes: a.nodes.iter().map(ToString::to_string).collect(),
        table: a.table.iter().flat_map(|i| i.to_le_bytes()).collect(),
    }
}

/// A placement off the wire: well formed (its rules are the layout's to
/// check, when it is applied).
pub fn placement_from_wire(p: wire::Placement) -> Result<Placement> {
    let bits = u8::try_from(p.bits)
        .ok()
        .filter(|b| (1..=16).contains(b))
        .ok_or(bad("placement bits out of range"))?;
    let replicas = usize::try_from(p.replicas).map_err(|_| bad("placement replicas"))?;
    let slots = (1usize << bits)
        .checked_mul(replicas)
        .ok_or(bad("placement too large"))?;
    if p.table.len() != slots * 2 {
        return Err(bad("placement table of the wrong size"));
    }
    let table = p
        .table
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let nodes = p
        .nodes
        .iter()
        .map(|n| Ok(n.parse::<NodeId>()?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Placement {
        epoch: p.epoch,
        write_quorum: p.write_quorum,
        assignment: Assignment {
            bits,
            replicas,
            nodes,
            table,
        },
    })
}

pub fn layout_to_wire(l: &Layout) -> wire::Layout {
    wire::Layout {
        epoch: l.epoch,
        nodes: l
            .nodes
            .iter()
            .map(|(id, m)| wire::LayoutMember {
                id: id.to_string(),
                addr: m.addr.clone(),
                voter: m.voter,
                zone: m.zone.clone(),
                capacity: Some(m.capacity),
                out: m.standing != Standing::In,
                out_auto: m.standing == Standing::Out { auto: true },
            })
            .collect(),
        replication: l.replication,
        placement: l.placement.as_deref().map(placement_to_wire),
        previous: l.previous.iter().map(|p| placement_to_wire(p)).collect(),
        synced: l
            .synced
            .iter()
            .map(|(id, epoch)| wire::NodeSynced {
                id: id.to_string(),
                epoch: *epoch,
            })
            .collect(),
        retirements: l
            .retirements
            .iter()
            .map(|r| wire::Retirement {
                seq: r.seq,
                epochs: r.epochs.clone(),
                placement: r.placement,
            })
            .collect(),
    }
}

/// A layout off the wire or the disk. Members of a layout from before
/// zones and capacities get the defaults.
pub fn layout_from_wire(l: wire::Layout) -> Result<Layout> {
    Ok(Layout {
        epoch: l.epoch,
        nodes: l
            .nodes
            .into_iter()
            .map(|m| {
                let member = Member {
                    addr: m.addr,
                    voter: m.voter,
                    zone: if m.zone.is_empty() {
                        DEFAULT_ZONE.into()
                    } else {
                        m.zone
                    },
                    capacity: m.capacity.unwrap_or(DEFAULT_CAPACITY),
                    standing: if m.out {
                        Standing::Out { auto: m.out_auto }
                    } else {
                        Standing::In
                    },
                };
                Ok((m.id.parse::<NodeId>()?, member))
            })
            .collect::<Result<_>>()?,
        replication: l.replication,
        placement: l
            .placement
            .map(placement_from_wire)
            .transpose()?
            .map(std::sync::Arc::new),
        previous: l
            .previous
            .into_iter()
            .map(|p| Ok(std::sync::Arc::new(placement_from_wire(p)?)))
            .collect::<Result<_>>()?,
        synced: l
            .synced
            .into_iter()
            .map(|s| Ok((s.id.parse::<NodeId>()?, s.epoch)))
            .collect::<Result<_>>()?,
        retirements: l
            .retirements
            .into_iter()
            .map(|r| rondo_ring::Retirement {
                seq: r.seq,
                epochs: r.epochs,
                placement: r.placement,
            })
            .collect(),
    })
}

pub fn change_to_wire(c: &LayoutChange) -> wire::LayoutChange {
    use wire::layout_change::Op;
    wire::LayoutChange {
        expect_epoch: c.expect_epoch,
        op: Some(match &c.op {
            LayoutOp::Add { node, addr, voter } => Op::Add(wire::AddNode {
                id: node.to_string(),
                addr: addr.clone(),
                voter: *voter,
            }),
            LayoutOp::Remove { node, force } => Op::Remove(wire::RemoveNode {
                id: node.to_string(),
                force: *force,
            }),
            LayoutOp::SetVoter { node, voter } => Op::SetVoter(wire::SetVoter {
                id: node.to_string(),
                voter: *voter,
            }),
            LayoutOp::SetReplication { factor, placement } => {
                Op::SetReplication(wire::SetReplication {
                    factor: *factor,
                    placement: placement.as_ref().map(placement_to_wire),
                })
            }
            LayoutOp::SetStorage {
                node,
                zone,
                capacity,
                placement,
            } => Op::SetStorage(wire::SetStorage {
                id: node.to_string(),
                zone: zone.clone(),
                capacity: *capacity,
                placement: placement.as_ref().map(placement_to_wire),
            }),
            LayoutOp::SetStanding {
                node,
                standing,
                placement,
            } => Op::SetStanding(wire::SetStanding {
                id: node.to_string(),
                out: *standing != Standing::In,
                auto: *standing == Standing::Out { auto: true },
                placement: placement.as_ref().map(placement_to_wire),
            }),
            LayoutOp::Synced { node, epoch } => Op::Synced(wire::Synced {
                id: node.to_string(),
                epoch: *epoch,
            }),
        }),
        proposal: c.proposal.clone(),
    }
}

pub fn change_from_wire(c: wire::LayoutChange) -> Result<LayoutChange> {
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
            force: r.force,
        },
        Op::Synced(s) => LayoutOp::Synced {
            node: s.id.parse()?,
            epoch: s.epoch,
        },
        Op::SetVoter(v) => LayoutOp::SetVoter {
            node: v.id.parse()?,
            voter: v.voter,
        },
        Op::SetReplication(r) => LayoutOp::SetReplication {
            factor: r.factor,
            placement: r.placement.map(placement_from_wire).transpose()?,
        },
        Op::SetStorage(s) => LayoutOp::SetStorage {
            node: s.id.parse()?,
            zone: s.zone,
            capacity: s.capacity,
            placement: s.placement.map(placement_from_wire).transpose()?,
        },
        Op::SetStanding(s) => LayoutOp::SetStanding {
            node: s.id.parse()?,
            standing: if s.out {
                Standing::Out { auto: s.auto }
            } else {
                Standing::In
            },
            placement: s.placement.map(placement_from_wire).transpose()?,
        },
    };
    Ok(LayoutChange {
        expect_epoch: c.expect_epoch,
        op,
        proposal: c.proposal,
    })
}

pub fn entry_to_wire(e: &Entry<Payload>) -> wire::Entry {
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

pub fn entry_from_wire(e: wire::Entry) -> Result<Entry<Payload>> {
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

/// The compacted log prefix, as stored in `ring_meta`.
pub fn compacted_to_wire(c: &Compacted) -> wire::Compacted {
    wire::Compacted {
        last: Some(pos_to_wire(c.last)),
        layout: Some(layout_to_wire(&c.layout)),
    }
}

pub fn compacted_from_wire(c: wire::Compacted) -> Result<Compacted> {
    Ok(Compacted {
        last: pos_from_wire(c.last)?,
        layout: layout_from_wire(c.layout.ok_or(bad("compacted prefix without layout"))?)?,
    })
}

pub fn message_to_wire(from: NodeId, msg: &Message<Payload>) -> wire::Envelope {
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

pub fn message_from_wire(e: wire::Envelope) -> Result<(NodeId, Message<Payload>)> {
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
            LayoutOp::Remove {
                node: a,
                force: false,
            },
            LayoutOp::Remove {
                node: a,
                force: true,
            },
            LayoutOp::Synced { node: a, epoch: 5 },
            LayoutOp::SetVoter {
                node: a,
                voter: false,
            },
            LayoutOp::SetReplication {
                factor: 2,
                placement: None,
            },
            LayoutOp::SetReplication {
                factor: 1,
                placement: Some(placement(a, 5)),
            },
            LayoutOp::SetStorage {
                node: a,
                zone: "rack-2".into(),
                capacity: 3 << 40,
                placement: Some(placement(a, 5)),
            },
            LayoutOp::SetStanding {
                node: a,
                standing: Standing::Out { auto: true },
                placement: Some(placement(a, 5)),
            },
            LayoutOp::SetStanding {
                node: a,
                standing: Standing::Out { auto: false },
                placement: None,
            },
            LayoutOp::SetStanding {
                node: a,
                standing: Standing::In,
                placement: Some(placement(a, 5)),
            },
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

    /// A one-node placement of 16 partitions, made for `epoch`.
    fn placement(a: NodeId, epoch: u64) -> Placement {
        let candidates = [rondo_core::partitions::Candidate {
            id: a,
            zone: "rack-2".into(),
            capacity: 1,
        }];
        Placement {
            epoch,
            write_quorum: 1,
            assignment: rondo_core::partitions::assign(&candidates, 1, 4, None).unwrap(),
        }
    }

    /// A layout with zones, capacities, standings and a placement goes
    /// and comes back whole; one stored before zones and capacities reads
    /// with the defaults.
    #[test]
    fn layouts_round_trip_and_old_ones_get_defaults() {
        let a = NodeId::new_random();
        let b = NodeId::new_random();
        let mut layout = Layout::genesis([(a, "http://a".into()), (b, "http://b".into())].into());
        layout.epoch = 5;
        layout.replication = 1;
        if let Some(m) = layout.nodes.get_mut(&a) {
            m.zone = "rack-2".into();
            m.capacity = 7;
        }
        if let Some(m) = layout.nodes.get_mut(&b) {
            m.standing = Standing::Out { auto: true };
            m.capacity = 0;
        }
        layout.placement = Some(std::sync::Arc::new(placement(a, 5)));
        layout.previous = vec![std::sync::Arc::new(placement(a, 3))];
        layout.synced = [(a, 5), (b, 3)].into();
        layout.retirements = vec![rondo_ring::Retirement {
            seq: 17,
            epochs: vec![1, 2],
            placement: 3,
        }];
        assert_eq!(layout_from_wire(layout_to_wire(&layout)).unwrap(), layout);

        let old = wire::Layout {
            epoch: 1,
            nodes: vec![wire::LayoutMember {
                id: a.to_string(),
                addr: "http://a".into(),
                voter: true,
                ..Default::default()
            }],
            replication: 1,
            ..Default::default()
        };
        let m = layout_from_wire(old).unwrap().nodes[&a].clone();
        assert_eq!(
            (m.zone.as_str(), m.capacity, m.standing),
            (DEFAULT_ZONE, DEFAULT_CAPACITY, Standing::In)
        );

        // A table of the wrong size, or bits out of range, is refused.
        let mut p = placement_to_wire(&placement(a, 5));
        p.table.pop();
        assert!(placement_from_wire(p).is_err());
        let mut p = placement_to_wire(&placement(a, 5));
        p.bits = 17;
        assert!(placement_from_wire(p).is_err());
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
