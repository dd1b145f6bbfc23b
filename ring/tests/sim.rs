//! A deterministic in-memory network for the ring core: messages are
//! delivered in FIFO order (or dropped by a filter), timers fire only when a
//! test fires them. The model checker explores the rest; these tests pin
//! down the happy paths and a token loss.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rondo_core::NodeId;
use rondo_ring::{
    Body, Config, Durable, Input, Layout, LayoutChange, LayoutOp, Member, Message, Node, Output,
    Phase, Timer,
};

type Msg = Message<u32>;

struct Net {
    nodes: BTreeMap<NodeId, Node<u32>>,
    /// Durable state as the driver persisted it.
    disk: BTreeMap<NodeId, Durable<u32>>,
    applied: BTreeMap<NodeId, Vec<(u64, u32)>>,
    queue: VecDeque<(NodeId, NodeId, Msg)>,
    timers: BTreeMap<NodeId, BTreeSet<Timer>>,
    down: BTreeSet<NodeId>,
    /// Links that lose every message, as (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Snapshots installed.
    snapshots: usize,
}

fn id(n: u128) -> NodeId {
    NodeId(uuid::Uuid::from_u128(n))
}

impl Net {
    fn new(n: u128) -> Net {
        let ids: BTreeSet<NodeId> = (1..=n).map(id).collect();
        let mut net = Net {
            nodes: BTreeMap::new(),
            disk: BTreeMap::new(),
            applied: BTreeMap::new(),
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            down: BTreeSet::new(),
            blocked: BTreeSet::new(),
            snapshots: 0,
        };
        for &i in &ids {
            let genesis = Layout::genesis(ids.iter().map(|n| (*n, n.to_string())).collect());
            // Pages of two entries: catching up takes several.
            let config = Config {
                max_fetch: 2,
                ..Config::fast(ids.len())
            };
            let node = Node::new(i, config, genesis, Durable::default());
            net.nodes.insert(i, node);
            net.disk.insert(i, Durable::default());
            net.applied.insert(i, Vec::new());
        }
        net
    }

    /// A node that joins the running cluster: it knows the nodes to
    /// contact, none of them a voter, and has no log.
    fn add_joiner(&mut self, n: u128) -> NodeId {
        let me = id(n);
        let mut nodes: BTreeMap<NodeId, Member> = self
            .nodes
            .keys()
            .map(|k| {
                let member = Member {
                    addr: k.to_string(),
                    voter: false,
                    ..Member::default()
                };
                (*k, member)
            })
            .collect();
        nodes.insert(
            me,
            Member {
                addr: me.to_string(),
                voter: false,
                ..Member::default()
            },
        );
        let base = Layout {
            epoch: 0,
            nodes,
            replication: 0,
            ..Layout::default()
        };
        let node = Node::new(me, Config::fast(4), base, Durable::default());
        self.nodes.insert(me, node);
        self.disk.insert(me, Durable::default());
        self.applied.insert(me, Vec::new());
        self.input(me, Input::Start);
        me
    }

    fn input(&mut self, at: NodeId, input: Input<u32>) {
        if self.down.contains(&at) {
            return;
        }
        let Some(node) = self.nodes.get_mut(&at) else {
            return;
        };
        let outputs = node.handle(input);
        let disk = node.durable().clone();
        let mut installed = Vec::new();
        for o in outputs {
            match o {
                Output::Send { to, msg } => self.queue.push_back((at, to, msg)),
                Output::SetTimer { timer, .. } => {
                    self.timers.entry(at).or_default().insert(timer);
                }
                Output::CancelTimer(timer) => {
                    self.timers.entry(at).or_default().remove(&timer);
                }
                Output::Apply(e) => {
                    if let Body::Update(v) = e.body {
                        self.applied.entry(at).or_default().push((e.seq, v));
                    }
                }
                Output::InstallSnapshot {
                    from,
                    ring,
                    at: pos,
                    layout,
                } => {
                    // The state of `from` as of `pos`: its applied prefix.
                    let state: Vec<(u64, u32)> = self.applied[&from]
                        .iter()
                        .filter(|(seq, _)| *seq <= pos.seq)
                        .copied()
                        .collect();
                    self.applied.insert(at, state);
                    self.snapshots += 1;
                    installed.push(Input::SnapshotInstalled {
                        ring,
                        at: pos,
                        layout,
                    });
                }
                Output::PersistPromise(_)
                | Output::PersistEntries(_)
                | Output::Truncate { .. }
                | Output::Compact(_) => {}
            }
        }
        self.disk.insert(at, disk);
        for input in installed {
            self.input(at, input);
        }
    }

    /// Delivers messages until none are left (at most `limit`).
    fn run(&mut self, limit: usize) {
        for _ in 0..limit {
            let Some((from, to, msg)) = self.queue.pop_front() else {
                return;
            };
            if self.down.contains(&to)
                || self.down.contains(&from)
                || self.blocked.contains(&(from, to))
            {
                continue;
            }
            self.input(to, Input::Receive { from, msg });
        }
    }

    fn fire(&mut self, at: NodeId, timer: Timer) {
        if self.timers.get_mut(&at).is_some_and(|t| t.remove(&timer)) {
            self.input(at, Input::Fired(timer));
        }
    }

    /// Fires every pending timer of one kind on every node.
    fn fire_all(&mut self, timer: Timer) {
        for n in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.fire(n, timer);
        }
    }

    /// Runs the network, firing hold timers, until `done` or a step bound.
    fn settle(&mut self, done: impl Fn(&Net) -> bool) -> bool {
        for _ in 0..200 {
            if done(self) {
                return true;
            }
            self.run(10_000);
            self.fire_all(Timer::Hold);
        }
        done(self)
    }
}

fn start(n: u128) -> Net {
    let mut net = Net::new(n);
    for i in net.nodes.keys().copied().collect::<Vec<_>>() {
        net.input(i, Input::Start);
    }
    net.run(10_000);
    net.fire_all(Timer::JoinWindow);
    net.run(10_000);
    net
}

#[test]
fn three_nodes_form_one_ring_and_apply_in_one_order() {
    let mut net = start(3);
    assert!(
        net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)),
        "every node operational"
    );
    let rings: BTreeSet<_> = net
        .nodes
        .values()
        .filter_map(|n| n.ring().map(|r| r.0))
        .collect();
    assert_eq!(rings.len(), 1, "one ring: {rings:?}");
    for (k, i) in net
        .nodes
        .keys()
        .copied()
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
    {
        for v in 0..5 {
            net.input(i, Input::Propose(k as u32 * 100 + v));
        }
    }
    assert!(
        net.settle(|n| n.applied.values().all(|a| a.len() == 15)),
        "all 15 applied everywhere: {:?}",
        net.applied
    );
    let logs: BTreeSet<_> = net.applied.values().cloned().collect();
    assert_eq!(logs.len(), 1, "the same order everywhere");
}

#[test]
fn token_loss_forms_a_new_ring_that_keeps_every_applied_entry() {
    let mut net = start(3);
    assert!(net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)));
    let first = net
        .nodes
        .values()
        .find_map(|n| n.ring().map(|r| r.0))
        .unwrap();
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    net.input(ids[0], Input::Propose(1));
    assert!(net.settle(|n| n.applied.values().all(|a| a.len() == 1)));

    // Node 3 dies; the others lose the token and gather.
    net.down.insert(ids[2]);
    net.queue.clear();
    net.fire_all(Timer::TokenLoss);
    net.run(10_000);
    net.fire_all(Timer::JoinWindow);
    net.run(10_000);
    assert!(net.settle(|n| {
        ids[..2]
            .iter()
            .all(|i| n.nodes[i].phase() == Phase::Operational)
    }));
    let second = net.nodes[&ids[0]].ring().unwrap().0;
    assert!(second > first, "ring ids grow: {first:?} then {second:?}");
    assert_eq!(net.nodes[&ids[0]].ring().unwrap().1.len(), 2);

    // The majority keeps ordering writes.
    net.input(ids[1], Input::Propose(2));
    assert!(net.settle(|n| ids[..2].iter().all(|i| n.applied[i].len() == 2)));
    assert_eq!(net.applied[&ids[0]], net.applied[&ids[1]]);
}

#[test]
fn a_lone_node_of_three_never_applies_anything() {
    let mut net = Net::new(3);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    net.down.insert(ids[1]);
    net.down.insert(ids[2]);
    net.input(ids[0], Input::Start);
    net.input(ids[0], Input::Propose(7));
    for _ in 0..5 {
        net.run(1000);
        net.fire_all(Timer::JoinWindow);
        net.fire_all(Timer::Consensus);
    }
    assert_eq!(net.nodes[&ids[0]].phase(), Phase::Gather);
    assert!(net.applied[&ids[0]].is_empty());
    assert!(
        net.disk[&ids[0]].promised.counter >= 2,
        "it kept trying with growing ids"
    );
}

#[test]
fn formation_settles_when_messages_arrive_out_of_order() {
    // Deliver each batch of messages in reverse order (newest first; every
    // message of a batch is delivered before the next batch, so no message
    // starves) and check that the ring forms and goes idle.
    let mut net = Net::new(3);
    for i in net.nodes.keys().copied().collect::<Vec<_>>() {
        net.input(i, Input::Start);
    }
    let mut steps = 0;
    for _ in 0..50 {
        while !net.queue.is_empty() {
            let batch = std::mem::take(&mut net.queue);
            for (from, to, msg) in batch.into_iter().rev() {
                steps += 1;
                assert!(
                    steps < 5000,
                    "no quiescence; last message {from:?} -> {to:?}: {msg:?}"
                );
                net.input(to, Input::Receive { from, msg });
            }
        }
        net.fire_all(Timer::JoinWindow);
        net.fire_all(Timer::Hold);
        if net.queue.is_empty() && net.nodes.values().all(|n| n.phase() == Phase::Operational) {
            break;
        }
    }
    assert!(net.nodes.values().all(|n| n.phase() == Phase::Operational));
}

#[test]
fn nodes_that_cannot_reach_each_other_are_never_put_in_one_ring() {
    let mut net = start(3);
    assert!(net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)));
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    // a and b lose each other (both directions, as over TCP); both still
    // reach c. Their drivers notice and report it.
    net.blocked.extend([(a, b), (b, a)]);
    net.input(a, Input::Link { peer: b, up: false });
    net.input(b, Input::Link { peer: a, up: false });
    net.queue.clear();
    net.fire_all(Timer::TokenLoss);
    net.run(10_000);
    net.fire_all(Timer::JoinWindow);
    net.run(10_000);
    let in_ring = |n: &Net, x: NodeId| n.nodes[&x].phase() == Phase::Operational;
    assert!(
        net.settle(|n| in_ring(n, c) && n.nodes[&c].ring().is_some_and(|r| r.1.len() == 2)),
        "a ring of two forms"
    );
    let (ring, members) = net.nodes[&c].ring().map(|(r, m)| (r, m.clone())).unwrap();
    assert!(
        !(members.contains(&a) && members.contains(&b)),
        "never both: {members:?}"
    );
    let out = if members.contains(&a) { b } else { a };
    // The node left out keeps trying; the ring ignores it and stays.
    for _ in 0..10 {
        net.fire(out, Timer::Consensus);
        net.fire(out, Timer::TokenLoss);
        net.run(10_000);
        net.fire_all(Timer::JoinWindow);
        net.run(10_000);
        net.fire_all(Timer::Hold);
        net.run(10_000);
    }
    assert_eq!(
        net.nodes[&c].ring().map(|r| r.0),
        Some(ring),
        "the ring was not pulled apart"
    );
    net.input(c, Input::Propose(9));
    assert!(net.settle(|n| n.applied[&c].len() == 1), "and takes writes");
    // The link heals and the drivers' probes say so: the next Join is
    // admitted and the three form one ring.
    net.blocked.clear();
    net.input(a, Input::Link { peer: b, up: true });
    net.input(b, Input::Link { peer: a, up: true });
    // One rotation carries the cleared reports in the token.
    net.settle(|n| n.nodes[&c].ring().is_some_and(|r| r.0 == ring) && n.queue.is_empty());
    for _ in 0..4 {
        net.fire_all(Timer::Hold);
        net.run(10_000);
    }
    net.fire(out, Timer::Consensus);
    net.run(10_000);
    net.fire_all(Timer::JoinWindow);
    net.run(10_000);
    assert!(
        net.settle(|n| n
            .nodes
            .values()
            .all(|x| x.ring().is_some_and(|r| r.1.len() == 3))),
        "one ring of three after healing"
    );
}

/// Runs rounds of delivery and of every timer until `done` or a bound:
/// enough for rings to re-form after layout changes.
fn churn(net: &mut Net, done: impl Fn(&Net) -> bool) -> bool {
    for round in 0..100 {
        if net.settle(|n| done(n)) {
            return true;
        }
        net.fire_all(Timer::JoinWindow);
        net.run(10_000);
        // One node's timers at a time, as jittered timers would fire.
        let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
        let at = ids[round % ids.len()];
        for t in [Timer::Consensus, Timer::TokenLoss] {
            net.fire(at, t);
            net.run(10_000);
        }
        net.fire_all(Timer::JoinWindow);
        net.run(10_000);
    }
    done(net)
}

fn add(node: NodeId, expect_epoch: u64) -> LayoutChange {
    LayoutChange {
        expect_epoch,
        proposal: String::new(),
        op: LayoutOp::Add {
            node,
            addr: node.to_string(),
            voter: true,
        },
    }
}

fn one_ring_of(n: &Net, size: usize, of: &[NodeId]) -> bool {
    let rings: BTreeSet<_> = of
        .iter()
        .map(|i| n.nodes[i].ring().map(|(r, m)| (r, m.len())))
        .collect();
    rings.len() == 1 && rings.iter().all(|r| r.is_some_and(|(_, m)| m == size))
}

#[test]
fn an_added_node_catches_up_joins_the_ring_and_votes() {
    let mut net = start(3);
    assert!(net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)));
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    for v in 1..=3 {
        net.input(ids[0], Input::Propose(v));
    }
    assert!(net.settle(|n| n.applied.values().all(|a| a.len() == 3)));
    let first = net.nodes[&ids[0]].ring().unwrap().0;

    // A fourth node starts; until it is added, its Joins are ignored.
    let d = net.add_joiner(4);
    for _ in 0..5 {
        net.run(10_000);
        net.fire(d, Timer::JoinWindow);
        net.fire(d, Timer::Consensus);
        net.fire_all(Timer::Hold);
    }
    net.run(10_000);
    assert_eq!(net.nodes[&ids[0]].ring().map(|r| r.0), Some(first));
    assert!(net.applied[&d].is_empty(), "not in the cluster yet");

    net.input(ids[1], Input::ProposeLayout(add(d, 0)));
    let mut all = ids.clone();
    all.push(d);
    assert!(
        churn(&mut net, |n| one_ring_of(n, 4, &all)
            && all.iter().all(|i| n.applied[i].len() == 3)),
        "one ring of four, the new node with every entry: {:?} {:#?}",
        net.applied,
        net.nodes
            .values()
            .map(|n| (n.phase(), n.ring(), n.layout().epoch, n.queued()))
            .collect::<Vec<_>>()
    );
    for i in &all {
        let layout = net.nodes[i].layout();
        assert_eq!((layout.epoch, layout.voters().len()), (1, 4));
    }
    let later = net.nodes[&d].ring().unwrap().0;
    assert!(later > first);
    // Writes go on, applied in one order on all four.
    net.input(d, Input::Propose(4));
    assert!(net.settle(|n| all.iter().all(|i| n.applied[i].len() == 4)));
    let logs: BTreeSet<_> = all.iter().map(|i| net.applied[i].clone()).collect();
    assert_eq!(logs.len(), 1);
}

#[test]
fn of_two_changes_decided_at_one_epoch_only_the_first_ordered_applies() {
    let mut net = start(3);
    assert!(net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)));
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    // Two operators, each having read epoch 0, add a different node.
    net.input(ids[0], Input::ProposeLayout(add(id(8), 0)));
    net.input(ids[2], Input::ProposeLayout(add(id(9), 0)));
    assert!(churn(&mut net, |n| ids.iter().all(|i| {
        let l = n.nodes[i].durable();
        l.applied >= 1
            && l.log
                .range(..=l.applied)
                .filter(|(_, e)| matches!(e.body, Body::Layout(_)))
                .count()
                == 2
    })));
    let layouts: BTreeSet<_> = ids.iter().map(|i| net.nodes[i].layout().clone()).collect();
    assert_eq!(layouts.len(), 1, "every node has the same layout");
    let layout = layouts.into_iter().next().unwrap();
    assert_eq!(layout.epoch, 1, "one change applied, the other refused");
    assert!(
        layout.nodes.contains_key(&id(8)) != layout.nodes.contains_key(&id(9)),
        "exactly one of the two nodes was added: {layout:?}"
    );
}

#[test]
fn a_removed_node_retires_and_the_others_go_on_without_it() {
    let mut net = start(3);
    assert!(net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)));
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let gone = ids[0];
    let change = LayoutChange {
        expect_epoch: 0,
        proposal: String::new(),
        op: LayoutOp::Remove {
            node: gone,
            force: false,
        },
    };
    net.input(ids[2], Input::ProposeLayout(change));
    assert!(
        churn(&mut net, |n| one_ring_of(n, 2, &ids[1..])),
        "the two others form a ring"
    );
    assert!(net.nodes[&gone].removed());
    assert!(net.nodes[&gone].ring().is_none());
    // The removed node keeps asking (it might have been added back), but
    // the others refuse it: it never disturbs their ring nor forms one.
    let ring = net.nodes[&ids[1]].ring().unwrap().0;
    for _ in 0..5 {
        net.fire(gone, Timer::TokenLoss);
        net.fire(gone, Timer::Consensus);
        net.run(10_000);
        net.fire(gone, Timer::JoinWindow);
        net.run(10_000);
        net.fire_all(Timer::Hold);
        net.run(10_000);
    }
    assert_eq!(net.nodes[&ids[1]].ring().map(|r| r.0), Some(ring));
    assert!(net.nodes[&gone].ring().is_none());
    assert!(net.nodes[&gone].removed());
    // Its certificate is still valid, so its messages reach the others;
    // sent on purpose (knowing the ring's id), none of them works: no page
    // of the log or snapshot comes back, no entry is cast, no token taken.
    let seq = net.nodes[&ids[1]].durable().last().seq;
    let forged: [Msg; 4] = [
        Message::Fetch { ring, after: 0 },
        Message::Mcast {
            ring,
            entry: rondo_ring::Entry {
                seq: seq + 1,
                ring,
                body: Body::Update(666),
            },
        },
        Message::Token(rondo_ring::Token {
            ring,
            rotation: u64::MAX / 2,
            seq: seq + 1,
            aru: seq + 1,
            rot_min: seq + 1,
            rtr: BTreeSet::new(),
            down: BTreeSet::new(),
            layout_seq: 0,
        }),
        Message::Ready { ring, last: seq },
    ];
    for msg in forged {
        for &to in &ids[1..] {
            net.input(
                to,
                Input::Receive {
                    from: gone,
                    msg: msg.clone(),
                },
            );
        }
        assert!(
            !net.queue.iter().any(|(_, to, _)| *to == gone),
            "a member answered a removed node's {msg:?}"
        );
        net.run(10_000);
    }
    assert_eq!(net.nodes[&ids[1]].ring().map(|r| r.0), Some(ring));
    // The two are now the whole quorum: they take writes.
    net.input(ids[1], Input::Propose(5));
    assert!(net.settle(|n| {
        ids[1..]
            .iter()
            .all(|i| n.applied[i].iter().map(|(_, v)| *v).eq([5]))
    }));
    assert!(net.applied[&gone].is_empty());
    assert!(
        net.applied.values().flatten().all(|(_, v)| *v != 666),
        "a removed node's forged entry was applied"
    );
}

/// A node that applied its own removal and is added back while it cannot be
/// reached learns of it once it can: its slow retries reach nodes whose
/// layout lists it again, and it rejoins with every entry it missed.
#[test]
fn a_removed_node_added_back_while_cut_off_rejoins_once_reachable() {
    let mut net = start(3);
    assert!(net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)));
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let gone = ids[0];
    let remove = LayoutChange {
        expect_epoch: 0,
        proposal: String::new(),
        op: LayoutOp::Remove {
            node: gone,
            force: false,
        },
    };
    net.input(ids[2], Input::ProposeLayout(remove));
    assert!(churn(&mut net, |n| one_ring_of(n, 2, &ids[1..])
        && n.nodes[&gone].removed()));
    // Cut off, it is added back and misses the re-formation that invites it.
    for &other in &ids[1..] {
        net.blocked.insert((gone, other));
        net.blocked.insert((other, gone));
    }
    net.input(ids[1], Input::ProposeLayout(add(gone, 1)));
    net.input(ids[1], Input::Propose(7));
    assert!(churn(&mut net, |n| ids[1..].iter().all(|i| n.nodes[i]
        .applied_layout()
        .nodes
        .contains_key(&gone)
        && n.applied[i].iter().any(|(_, v)| *v == 7))));
    assert!(net.nodes[&gone].removed(), "it could not learn of it yet");
    net.blocked.clear();
    // The running ring's tokens are not lost: only the removed node's own
    // timers fire (and the holds that turn the token).
    let rejoined =
        |n: &Net| one_ring_of(n, 3, &ids) && n.applied[&gone].iter().any(|(_, v)| *v == 7);
    for _ in 0..20 {
        if rejoined(&net) {
            break;
        }
        net.fire(gone, Timer::Consensus);
        net.run(10_000);
        net.fire_all(Timer::JoinWindow);
        assert!(net.settle(|n| rejoined(n) || n.nodes[&gone].phase() == Phase::Gather));
    }
    assert!(
        rejoined(&net),
        "the node rejoined with what it missed: {:#?}",
        net.nodes
            .values()
            .map(|n| (n.phase(), n.ring(), n.layout().epoch, n.removed()))
            .collect::<Vec<_>>()
    );
    assert_eq!(net.nodes[&gone].layout().epoch, 2);
}

/// With a short log (two applied entries kept), a node that was down while
/// the others ordered many entries finds them compacted at the source: it
/// takes the source's applied state as a snapshot, then the entries after
/// it, and ends with the same applied sequence as the others.
#[test]
fn a_node_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let mut net = start(3);
    for n in net.nodes.values_mut() {
        n.set_config(Config {
            keep_log: 2,
            max_fetch: 2,
            ..Config::fast(3)
        });
    }
    assert!(net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)));
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let late = ids[2];
    net.input(ids[0], Input::Propose(1));
    assert!(net.settle(|n| n.applied.values().all(|a| a.len() == 1)));
    // The third node goes down; the other two order 20 more entries.
    net.down.insert(late);
    for v in 2..=21 {
        net.input(ids[0], Input::Propose(v));
    }
    assert!(churn(&mut net, |n| ids[..2]
        .iter()
        .all(|i| n.applied[i].len() == 21)));
    let d = &net.disk[&ids[0]];
    assert!(
        d.compacted_seq() > 10,
        "the log was compacted: {:?}",
        d.compacted
    );
    assert!(d.log.len() <= 5, "only the newest entries are kept");
    assert_eq!(net.applied[&late].len(), 1);
    // It comes back with its own disk state.
    net.down.remove(&late);
    let durable = net.disk[&late].clone();
    let config = Config {
        keep_log: 2,
        max_fetch: 2,
        ..Config::fast(3)
    };
    let base = net.nodes[&late].layout().clone();
    net.nodes
        .insert(late, Node::new(late, config, base, durable));
    net.input(late, Input::Start);
    assert!(
        churn(&mut net, |n| one_ring_of(n, 3, &ids)
            && ids.iter().all(|i| n.applied[i].len() == 21)),
        "the late node caught up: {:?}",
        net.applied[&late]
    );
    assert!(net.snapshots >= 1, "it took a snapshot");
    let logs: BTreeSet<_> = ids.iter().map(|i| net.applied[i].clone()).collect();
    assert_eq!(logs.len(), 1, "one applied sequence");
    // And it goes on with the others.
    net.input(late, Input::Propose(22));
    assert!(net.settle(|n| ids.iter().all(|i| n.applied[i].len() == 22)));
}

/// Under a placement, a layout change proposed after a new node joined
/// the ring is ordered and applied (the core's side of a bug found with
/// `auto_join`, whose cause was in the node: see
/// `membership::a_node_with_auto_join_is_added_by_the_cluster_and_takes_a_share`).
#[test]
fn under_a_placement_a_change_after_a_join_is_applied() {
    let mut net = start(3);
    assert!(net.settle(|n| n.nodes.values().all(|x| x.phase() == Phase::Operational)));
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let plan = |net: &Net, op: LayoutOp| {
        let layout = net.nodes[&ids[0]].layout().clone();
        LayoutChange {
            expect_epoch: layout.epoch,
            proposal: String::new(),
            op: layout.plan(op).unwrap(),
        }
    };
    let rf = plan(
        &net,
        LayoutOp::SetReplication {
            factor: 2,
            placement: None,
        },
    );
    net.input(ids[0], Input::ProposeLayout(rf));
    assert!(net.settle(|n| ids.iter().all(|i| n.nodes[i].applied_layout().epoch == 1)));

    let d = net.add_joiner(4);
    let mut add = add(d, 1);
    if let LayoutOp::Add { voter, .. } = &mut add.op {
        *voter = false;
    }
    net.input(ids[1], Input::ProposeLayout(add));
    let mut all = ids.clone();
    all.push(d);
    assert!(
        churn(&mut net, |n| one_ring_of(n, 4, &all)
            && all.iter().all(|i| n.nodes[i].applied_layout().epoch == 2)),
        "one ring of four at epoch 2"
    );
    let storage = plan(
        &net,
        LayoutOp::SetStorage {
            node: d,
            zone: "default".into(),
            capacity: 3 << 40,
            placement: None,
        },
    );
    net.input(ids[2], Input::ProposeLayout(storage));
    assert!(
        net.settle(|n| all.iter().all(|i| n.nodes[i].applied_layout().epoch == 3)),
        "the change after the join is applied: {:#?}",
        net.nodes
            .values()
            .map(|n| (n.phase(), n.ring(), n.applied_layout().epoch, n.queued()))
            .collect::<Vec<_>>()
    );
}
