//! Model check of the ring core with stateright (PROTOCOL.md, "How it is
//! checked"): 3 nodes; messages lost, duplicated and delivered in any order;
//! any timer may fire at any time (which covers slow nodes and partitions:
//! a partition is a run in which some messages are lost); one crash and
//! restart (volatile state lost, durable state kept); two client writes.
//!
//! Two searches, both exhaustive up to a depth bound (`RONDO_MODEL_DEPTH`;
//! stateright counts an initial state as depth 1 and does not check states
//! at the bound, so depth d explores d - 2 actions after each initial
//! state):
//! - `ring_core_keeps_its_invariants`: from every state of one fault-free
//!   "golden" run (formation, two writes proposed on different nodes, both
//!   acknowledged), so faults are injected at every point of it; depth 5
//!   (three actions), about 1.7 million states, 10 s with the optimised
//!   test profile.
//! - `link_reports_keep_the_invariants`: from the golden run's last state
//!   with the ring running, once per ordered pair of nodes with the first
//!   node's driver reporting its link to the second down, rightly or not
//!   (PROTOCOL.md, "Links"); depth 7 (five actions, enough for a ring to
//!   form from the report), about 2 million states, 16 s, 4 GB.
//!
//! - `random_walks_keep_the_invariants_and_heal`: not exhaustive but deep:
//!   200 seeded walks of up to 400 weighted random actions from random
//!   states of the golden run, with up to eight writes and three crashes
//!   and restarts, then a heal in simulated time after which every node
//!   must be in one ring with every acknowledged write applied once (T-LOST
//!   in full, not only its safety form). The 200 walks install about 1,500
//!   rings; 5,000 walks of 1,500 actions (`RONDO_WALK_SEEDS`,
//!   `RONDO_WALK_STEPS`) install 143,000 and pass, in two minutes.
//!
//! Checked to fail when the core is broken on purpose: installing a ring
//! without a quorum (T-SPLIT), a safe point taken from one node instead of
//! a full rotation (SAFE), and counting the quorum before the nodes in link
//! conflicts are left out (T-SPLIT, second search); a quorum of one (the
//! walks, T-ORDER at seed 1). Not caught by any of them: applying inherited
//! entries before the new ring's `RingStart` is ordered (Raft's figure 8),
//! even by 5,000 deep walks. Recovery gives every member the source's log
//! before the first token, so the guard may be redundant; it stays, and
//! this is not proven either way.
//!
//! Invariants checked in every reachable state:
//! - T-ORDER: the applied logs of all nodes are prefixes of one sequence.
//! - T-SPLIT: every ring that reached operation holds a majority of the
//!   voters, and no ring id is installed with two different member sets.
//! - SAFE: an entry applied in ring R is held durably, at the same
//!   position, by every member of R (safe delivery).
//! - T-LOST (safety form): every acknowledged write (applied by the node it
//!   was proposed to) is held durably by a majority of the voters, so every
//!   later ring recovers it.

use std::collections::{BTreeMap, BTreeSet};

use rondo_core::NodeId;
use rondo_ring::{
    Body, Config, Durable, Entry, Input, Layout, LayoutChange, LayoutOp, Message, Node, Output,
    RingId, Timer, is_quorate,
};
use stateright::{Checker, Model, Property};

const NODES: usize = 3;

/// How far a search may go: writes proposed, crashes (each restart counts
/// one more), ring id counters, token rotations, messages in flight.
#[derive(Clone, Copy)]
struct Bounds {
    writes: u32,
    /// Layout changes proposed (add, remove, voter flips).
    layout_changes: u32,
    crashes: u8,
    max_counter: u64,
    max_rotation: u64,
    max_in_flight: usize,
}

/// Writes proposed and acknowledged in the golden run.
const GOLDEN_WRITES: u32 = 2;

/// The exhaustive searches' bounds.
const EXHAUSTIVE: Bounds = Bounds {
    writes: 2,
    layout_changes: 0,
    crashes: 1,
    max_counter: 3,
    max_rotation: 8,
    max_in_flight: 8,
};

fn id(i: usize) -> NodeId {
    NodeId(uuid::Uuid::from_u128(i as u128 + 1))
}

fn ids() -> BTreeSet<NodeId> {
    (0..NODES).map(id).collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    nodes: Vec<Node<u32>>,
    up: Vec<bool>,
    timers: Vec<BTreeSet<Timer>>,
    net: BTreeSet<(usize, usize, Message<u32>)>,
    proposed: u32,
    /// Which node each write was proposed to.
    proposer: BTreeMap<u32, usize>,
    acked: BTreeSet<u32>,
    crashes: u8,
    /// Entries applied, by the ring in which they were applied.
    delivered: BTreeMap<(RingId, u64), Entry<u32>>,
    /// Member sets of every ring that reached operation.
    installed: BTreeMap<RingId, BTreeSet<NodeId>>,
    /// The voters each of those rings counted its quorum in (the layout at
    /// the end of its log when it began to operate).
    installed_voters: BTreeMap<RingId, BTreeSet<NodeId>>,
    layout_proposed: u32,
    split: bool,
    /// Each node's applied state (what its store holds): the entries it
    /// applied, or took with a snapshot, in order. Survives crashes.
    state: Vec<Vec<Entry<u32>>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Deliver(usize, usize, Message<u32>),
    Duplicate(usize, usize, Message<u32>),
    Lose(usize, usize, Message<u32>),
    Fire(usize, Timer),
    Propose(usize),
    ProposeLayout(usize, LayoutOp),
    Crash(usize),
    Restart(usize),
}

/// Which initial states the search starts from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seeds {
    /// Every state of the golden run.
    Golden,
    /// One state of the golden run with the ring running, once per ordered
    /// pair of nodes with the first node's driver reporting its link to the
    /// second down (rightly or not: messages are lost independently).
    LinkReports,
}

struct RingModel(Seeds, Bounds);

fn new_node(i: usize, durable: Durable<u32>) -> Node<u32> {
    let genesis = Layout::genesis(ids().into_iter().map(|n| (n, String::new())).collect());
    // Pages of two entries: recovery fetches longer logs in several.
    // Two applied entries kept in the log: members that fall behind take
    // snapshots.
    let config = Config {
        max_fetch: 2,
        keep_log: 2,
        ..Config::fast(NODES)
    };
    Node::new(id(i), config, genesis, durable)
}

thread_local! {
    /// Snapshots installed on this thread (each test runs on its own).
    static SNAPSHOTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn index(n: NodeId) -> usize {
    (0..NODES).find(|&i| id(i) == n).unwrap_or(0)
}

impl State {
    /// Feeds an input to node `i`; returns the timers it set, with their
    /// durations (the timed simulation keeps their deadlines).
    fn input(&mut self, i: usize, input: Input<u32>) -> Vec<(Timer, std::time::Duration)> {
        let outputs = self.nodes[i].handle(input);
        let mut set = Vec::new();
        let mut installed = Vec::new();
        for o in outputs {
            match o {
                Output::Send { to, msg } => {
                    self.net.insert((i, index(to), msg));
                }
                Output::SetTimer { timer, after } => {
                    self.timers[i].insert(timer);
                    set.push((timer, after));
                }
                Output::CancelTimer(timer) => {
                    self.timers[i].remove(&timer);
                }
                Output::InstallSnapshot {
                    from,
                    ring,
                    at,
                    layout,
                } => {
                    // The source's store as of `at` (it applied `at` when it
                    // answered, and a store only grows).
                    let from = index(from);
                    let prefix: Vec<Entry<u32>> = self.state[from]
                        .iter()
                        .filter(|e| e.seq <= at.seq)
                        .cloned()
                        .collect();
                    if prefix.last().map(|e| e.seq) == Some(at.seq) {
                        SNAPSHOTS.with(|n| n.set(n.get() + 1));
                        self.state[i] = prefix;
                        installed.push(Input::SnapshotInstalled { ring, at, layout });
                    }
                }
                Output::Apply(entry) => {
                    if let Some((ring, _)) = self.nodes[i].ring() {
                        self.delivered.insert((ring, entry.seq), entry.clone());
                    }
                    self.state[i].push(entry.clone());
                    if let Body::Update(v) = entry.body
                        && self.proposer.get(&v) == Some(&i)
                    {
                        self.acked.insert(v);
                    }
                }
                _ => {}
            }
        }
        if let Some((ring, members)) = self.nodes[i].ring() {
            let members = members.clone();
            match self.installed.get(&ring) {
                Some(m) if *m != members => self.split = true,
                Some(_) => {}
                None => {
                    self.installed.insert(ring, members);
                }
            }
            // The voters the ring was formed under: the layout at its
            // RingStart, which ends the source's log (read as soon as a
            // member holds it; a ring of one may run several rotations,
            // and change the layout, within one input).
            if !self.installed_voters.contains_key(&ring) {
                let node = &self.nodes[i];
                let start = node
                    .durable()
                    .log
                    .values()
                    .find(|e| e.ring == ring && matches!(e.body, Body::RingStart { .. }));
                if let Some(e) = start {
                    let voters = node.layout_at(e.seq).voters();
                    self.installed_voters.insert(ring, voters);
                }
            }
        }
        for input in installed {
            set.extend(self.input(i, input));
        }
        set
    }

    fn applied(&self, i: usize) -> Vec<&Entry<u32>> {
        self.state[i].iter().collect()
    }

    /// Whether node `i` holds the entry durably: in its log, or applied in
    /// its store (compaction drops only applied entries).
    fn holds(&self, i: usize, seq: u64, entry: &Entry<u32>) -> bool {
        self.nodes[i].durable().log.get(&seq) == Some(entry)
            || self.state[i]
                .binary_search_by_key(&seq, |e| e.seq)
                .is_ok_and(|k| self.state[i][k] == *entry)
    }
}

impl Model for RingModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut s = State {
            nodes: (0..NODES)
                .map(|i| new_node(i, Durable::default()))
                .collect(),
            up: vec![true; NODES],
            timers: vec![BTreeSet::new(); NODES],
            net: BTreeSet::new(),
            proposed: 0,
            proposer: BTreeMap::new(),
            acked: BTreeSet::new(),
            crashes: 0,
            delivered: BTreeMap::new(),
            installed: BTreeMap::new(),
            installed_voters: BTreeMap::new(),
            layout_proposed: 0,
            split: false,
            state: vec![Vec::new(); NODES],
        };
        for i in 0..NODES {
            s.input(i, Input::Start);
        }
        let writes = GOLDEN_WRITES.min(self.1.writes);
        // Fault injection around a golden run: every state of one
        // fault-free run (formation, then both writes proposed and
        // acknowledged) is an initial state, so the bounded search injects
        // loss, duplication, reordering, timer firings and a crash at every
        // point of it, not only near the start.
        let mut states = vec![s.clone()];
        let mut run = s;
        let step = |run: &mut State, states: &mut Vec<State>| {
            if !states.contains(run) {
                states.push(run.clone());
            }
        };
        for round in 0..200 {
            if round == 1 {
                // The ring is forming; propose the writes.
                for w in 0..writes {
                    let at = w as usize % NODES;
                    run.proposed += 1;
                    run.proposer.insert(run.proposed, at);
                    let v = run.proposed;
                    let _ = run.input(at, Input::Propose(v));
                    step(&mut run, &mut states);
                }
            }
            // Until quiet, in batches, so that no message starves behind
            // newer ones.
            while !run.net.is_empty() {
                for (from, to, msg) in std::mem::take(&mut run.net) {
                    let from = id(from);
                    let _ = run.input(to, Input::Receive { from, msg });
                    step(&mut run, &mut states);
                }
            }
            for i in 0..NODES {
                for t in [Timer::JoinWindow, Timer::Hold] {
                    if run.timers[i].remove(&t) {
                        let _ = run.input(i, Input::Fired(t));
                        step(&mut run, &mut states);
                    }
                }
            }
            if run.acked.len() == writes as usize && run.net.is_empty() {
                break;
            }
        }
        assert_eq!(
            run.acked.len(),
            writes as usize,
            "the golden run acknowledges every write: {run:#?}"
        );
        if self.0 == Seeds::Golden {
            eprintln!("model: {} initial states from the golden run", states.len());
            return states;
        }
        let seed = (0..states.len()).rev().find(|&g| {
            self.within_boundary(&states[g]) && states[g].nodes.iter().all(|n| n.ring().is_some())
        });
        let mut seeded = Vec::new();
        if let Some(g) = seed {
            for i in 0..NODES {
                for j in (0..NODES).filter(|&j| j != i) {
                    let mut s = states[g].clone();
                    let _ = s.input(
                        i,
                        Input::Link {
                            peer: id(j),
                            up: false,
                        },
                    );
                    seeded.push(s);
                }
            }
        }
        eprintln!("model: {} initial states with a link report", seeded.len());
        seeded
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for (from, to, msg) in &s.net {
            actions.push(Action::Deliver(*from, *to, msg.clone()));
            actions.push(Action::Duplicate(*from, *to, msg.clone()));
            actions.push(Action::Lose(*from, *to, msg.clone()));
        }
        for i in 0..NODES {
            if !s.up[i] {
                if s.crashes <= self.1.crashes {
                    actions.push(Action::Restart(i));
                }
                continue;
            }
            for t in &s.timers[i] {
                actions.push(Action::Fire(i, *t));
            }
            if s.proposed < self.1.writes {
                actions.push(Action::Propose(i));
            }
            if s.layout_proposed < self.1.layout_changes {
                // Every single-voter change of the layout this node knows:
                // remove or flip the vote of a member, add back a node
                // that is not one.
                let layout = s.nodes[i].layout();
                for k in 0..NODES {
                    let node = id(k);
                    match layout.nodes.get(&node) {
                        Some(m) => {
                            actions.push(Action::ProposeLayout(
                                i,
                                LayoutOp::Remove { node, force: false },
                            ));
                            let voter = !m.voter;
                            let op = LayoutOp::SetVoter { node, voter };
                            actions.push(Action::ProposeLayout(i, op));
                        }
                        None => {
                            let addr = String::new();
                            let op = LayoutOp::Add {
                                node,
                                addr,
                                voter: true,
                            };
                            actions.push(Action::ProposeLayout(i, op));
                        }
                    }
                }
            }
            if s.crashes < self.1.crashes {
                actions.push(Action::Crash(i));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Deliver(from, to, msg) => {
                s.net.remove(&(from, to, msg.clone()));
                if s.up[to] {
                    let _ = s.input(
                        to,
                        Input::Receive {
                            from: id(from),
                            msg,
                        },
                    );
                }
            }
            Action::Duplicate(from, to, msg) => {
                if s.up[to] {
                    let _ = s.input(
                        to,
                        Input::Receive {
                            from: id(from),
                            msg,
                        },
                    );
                }
            }
            Action::Lose(from, to, msg) => {
                s.net.remove(&(from, to, msg));
            }
            Action::Fire(i, t) => {
                s.timers[i].remove(&t);
                let _ = s.input(i, Input::Fired(t));
            }
            Action::Propose(i) => {
                s.proposed += 1;
                let v = s.proposed;
                s.proposer.insert(v, i);
                let _ = s.input(i, Input::Propose(v));
            }
            Action::ProposeLayout(i, op) => {
                s.layout_proposed += 1;
                let change = LayoutChange {
                    expect_epoch: s.nodes[i].layout().epoch,
                    op,
                    proposal: String::new(),
                };
                let _ = s.input(i, Input::ProposeLayout(change));
            }
            Action::Crash(i) => {
                s.crashes += 1;
                s.up[i] = false;
                s.timers[i].clear();
                s.net.retain(|(_, to, _)| *to != i);
                let durable = s.nodes[i].durable().clone();
                s.nodes[i] = new_node(i, durable);
            }
            Action::Restart(i) => {
                s.up[i] = true;
                s.crashes += 1; // one restart per crash
                let _ = s.input(i, Input::Start);
            }
        }
        Some(s)
    }

    fn within_boundary(&self, s: &State) -> bool {
        s.net.len() <= self.1.max_in_flight
            && s.nodes
                .iter()
                .all(|n| n.durable().promised.counter <= self.1.max_counter)
            && s.net.iter().all(|(_, _, m)| match m {
                Message::Token(t) => t.rotation <= self.1.max_rotation,
                _ => true,
            })
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("T-ORDER", |_, s: &State| {
                let logs: Vec<Vec<&Entry<u32>>> = (0..NODES).map(|i| s.applied(i)).collect();
                logs.iter().all(|a| {
                    logs.iter().all(|b| {
                        let n = a.len().min(b.len());
                        a[..n] == b[..n]
                    })
                })
            }),
            Property::always("T-SPLIT", |_, s: &State| {
                !s.split
                    && s.installed.iter().all(|(ring, m)| {
                        s.installed_voters
                            .get(ring)
                            .is_none_or(|voters| is_quorate(m, voters))
                    })
            }),
            Property::always("SAFE", |_, s: &State| {
                // Safe delivery: an entry applied in ring R is held durably,
                // at the same position, by every member of R.
                s.delivered.iter().all(|((ring, seq), entry)| {
                    s.installed.get(ring).is_some_and(|members| {
                        members.iter().all(|m| s.holds(index(*m), *seq, entry))
                    })
                })
            }),
            Property::sometimes("a write is acknowledged", |_, s: &State| {
                !s.acked.is_empty()
            }),
            Property::always("T-LOST", |_, s: &State| {
                // No majority of the committed layout's voters (the layout
                // as applied by the most advanced node) lacks an
                // acknowledged write, so every later ring recovers it.
                let voters = committed_layout(s).voters();
                s.acked.iter().all(|v| {
                    let lacking = voters
                        .iter()
                        .filter(|n| {
                            let i = index(**n);
                            !s.nodes[i]
                                .durable()
                                .log
                                .values()
                                .chain(s.state[i].iter())
                                .any(|e| e.body == Body::Update(*v))
                        })
                        .count();
                    lacking * 2 <= voters.len()
                })
            }),
        ]
    }
}

/// The layout as applied by the node that applied the most.
fn committed_layout(s: &State) -> Layout {
    s.nodes
        .iter()
        .max_by_key(|n| n.durable().applied)
        .map(|n| n.applied_layout().clone())
        .unwrap_or_default()
}

fn check(seeds: Seeds, default_depth: usize) {
    let depth: usize = std::env::var("RONDO_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(default_depth);
    let checker = RingModel(seeds, EXHAUSTIVE)
        .checker()
        .threads(2)
        .target_max_depth(depth)
        .spawn_bfs()
        .join();
    eprintln!(
        "model: {} states ({} unique) to depth {depth}",
        checker.state_count(),
        checker.unique_state_count()
    );
    checker.assert_properties();
}

/// Faults injected at every point of the golden run. (stateright counts the
/// initial state as depth 1 and checks states above the bound only, so depth
/// 5 explores three actions after each initial state.)
#[test]
fn ring_core_keeps_its_invariants() {
    check(Seeds::Golden, 5);
}

/// A link reported down while the ring runs: the candidate leaves out
/// nodes in conflict and check-quorum ignores some Joins (PROTOCOL.md,
/// "Links"); five actions after the report, which is enough for a new ring
/// to form from the report.
#[test]
fn link_reports_keep_the_invariants() {
    check(Seeds::LinkReports, 7);
}

/// The random walks' bounds: far deeper than the exhaustive searches reach
/// (several ring changes, crashes and restarts, eight writes).
const WALK: Bounds = Bounds {
    writes: 8,
    layout_changes: 0,
    crashes: 6,
    max_counter: 1_000,
    max_rotation: 100_000,
    max_in_flight: 48,
};

/// splitmix64: a seeded generator that no crate update can change.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// How likely each action is in a walk: the network mostly delivers, so
/// that rings form and operate between faults.
fn weight(a: &Action) -> usize {
    match a {
        Action::Deliver(..) => 30,
        Action::Duplicate(..) => 1,
        Action::Lose(..) => 3,
        Action::Fire(_, Timer::TokenLoss | Timer::Consensus) => 1,
        Action::Fire(..) => 6,
        Action::Propose(_) => 2,
        Action::ProposeLayout(..) => 1,
        Action::Crash(_) => 1,
        Action::Restart(_) => 4,
    }
}

fn timer_duration(t: Timer) -> std::time::Duration {
    let c = Config::fast(NODES);
    match t {
        Timer::TokenLoss => c.token_timeout,
        Timer::TokenRetransmit => c.token_retransmit,
        Timer::Hold => c.hold,
        Timer::JoinWindow => c.join_window,
        Timer::Consensus => c.consensus_timeout,
    }
}

/// Whether every node runs in one ring of all nodes, all applied logs are
/// the same, and every acknowledged write is in them exactly once.
fn converged(s: &State) -> Result<(), String> {
    // Every node of the layout (a removed node stays out).
    let layout = committed_layout(s).ids();
    let members: Vec<usize> = (0..NODES).filter(|i| layout.contains(&id(*i))).collect();
    let rings: BTreeSet<_> = members
        .iter()
        .map(|&i| s.nodes[i].ring().map(|(r, m)| (r, m.clone())))
        .collect();
    if rings.len() != 1
        || rings
            .iter()
            .any(|r| r.as_ref().is_none_or(|(_, m)| *m != layout))
    {
        return Err(format!("rings {rings:?} for layout {layout:?}"));
    }
    let logs: Vec<Vec<&Entry<u32>>> = members.iter().map(|&i| s.applied(i)).collect();
    if logs.iter().any(|l| *l != logs[0]) {
        return Err("applied logs differ".into());
    }
    for v in &s.acked {
        let n = logs[0]
            .iter()
            .filter(|e| e.body == Body::Update(*v))
            .count();
        if n != 1 {
            return Err(format!("acknowledged write {v} applied {n} times"));
        }
    }
    Ok(())
}

/// Heals everything (restarts crashed nodes, stops losing messages) and
/// runs the nodes in simulated time, every message delivered after 1 ms and
/// every timer at its deadline, until they converge (T-LOST: every
/// acknowledged write applied everywhere, once); fails after 60 simulated
/// seconds.
fn heal(model: &RingModel, s: &mut State) -> Result<(), String> {
    use std::collections::VecDeque;
    use std::time::Duration;
    let mut now = Duration::ZERO;
    let mut deadlines: Vec<BTreeMap<Timer, Duration>> = s
        .timers
        .iter()
        .map(|ts| ts.iter().map(|t| (*t, timer_duration(*t))).collect())
        .collect();
    let mut queue: VecDeque<(Duration, usize, usize, Message<u32>)> = VecDeque::new();
    let take_net = |s: &mut State, queue: &mut VecDeque<_>, now: Duration| {
        for (from, to, msg) in std::mem::take(&mut s.net) {
            queue.push_back((now + Duration::from_millis(1), from, to, msg));
        }
    };
    for (i, timers) in deadlines.iter_mut().enumerate() {
        if !s.up[i] {
            s.up[i] = true;
            for (t, after) in s.input(i, Input::Start) {
                timers.insert(t, now + after);
            }
        }
    }
    take_net(s, &mut queue, now);
    while now < Duration::from_secs(60) {
        if queue.is_empty() && converged(s).is_ok() {
            return Ok(());
        }
        let timer = (0..NODES)
            .flat_map(|i| {
                let d = &deadlines[i];
                s.timers[i]
                    .iter()
                    .map(move |t| (d.get(t).copied().unwrap_or_default(), i, *t))
            })
            .min();
        let message = queue.front().map(|(at, ..)| *at);
        match (message, timer) {
            (Some(at), t) if t.is_none_or(|(tat, ..)| at <= tat) => {
                let Some((at, from, to, msg)) = queue.pop_front() else {
                    break;
                };
                now = now.max(at);
                for (t, after) in s.input(
                    to,
                    Input::Receive {
                        from: id(from),
                        msg,
                    },
                ) {
                    deadlines[to].insert(t, now + after);
                }
            }
            (_, Some((at, i, t))) => {
                now = now.max(at);
                s.timers[i].remove(&t);
                for (t, after) in s.input(i, Input::Fired(t)) {
                    deadlines[i].insert(t, now + after);
                }
            }
            _ => break,
        }
        take_net(s, &mut queue, now);
        if let Some(p) = broken(model, s) {
            return Err(format!("{p} broken while healing"));
        }
    }
    converged(s).map_err(|e| {
        format!(
            "not converged after 60 simulated seconds: {e}; nodes: {:#?}",
            summary(s)
        )
    })
}

/// What each node thinks, for failure messages.
fn summary(s: &State) -> Vec<String> {
    s.nodes
        .iter()
        .map(|n| {
            let d = n.durable();
            format!(
                "{}: {:?} ring {:?} removed {} promised {} last {:?} applied {} layout e{} {:?} voters {:?}; applied layout e{} {:?} voters {:?}",
                n.id(),
                n.phase(),
                n.ring().map(|(r, m)| (r.counter, m.len())),
                n.removed(),
                d.promised.counter,
                d.last().seq,
                d.applied,
                n.layout().epoch,
                n.layout().ids(),
                n.layout().voters(),
                n.applied_layout().epoch,
                n.applied_layout().ids(),
                n.applied_layout().voters(),
            )
        })
        .collect()
}

/// The first `always` property that does not hold.
fn broken(model: &RingModel, s: &State) -> Option<&'static str> {
    model
        .properties()
        .into_iter()
        .filter(|p| p.name != "a write is acknowledged")
        .find(|p| !(p.condition)(model, s))
        .map(|p| p.name)
}

/// Deterministic random walks, far deeper than the exhaustive searches:
/// each seed starts at a random state of the golden run and takes up to
/// `RONDO_WALK_STEPS` (default 400) random actions (loss, duplication,
/// reordering, timers, crashes and restarts, more writes), checking every
/// invariant after each; then everything heals and the nodes must converge
/// with every acknowledged write applied everywhere exactly once. Several
/// ring changes in one walk reach what the bounded searches cannot, such as
/// entries inherited across two ring changes (Raft's figure 8). Seeds
/// 0..`RONDO_WALK_SEEDS` (default 200); a failure names its seed.
#[test]
fn random_walks_keep_the_invariants_and_heal() {
    walk(WALK);
}

/// The same walks with up to four layout changes proposed at random nodes
/// against the epoch each knows (so some are stale): members removed,
/// added back, their votes taken and given (PROTOCOL.md, "Layout
/// changes"). T-SPLIT then counts each ring's quorum in the layout it
/// formed under, T-LOST in the committed layout, and healing must bring
/// every node of the final layout into one ring.
#[test]
fn layout_change_walks_keep_the_invariants_and_heal() {
    let changes = walk(Bounds {
        layout_changes: 4,
        ..WALK
    });
    assert!(changes > 0, "the walks apply layout changes");
}

/// Runs the seeded walks; returns how many layout changes the final states
/// applied in all.
fn walk(bounds: Bounds) -> u64 {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (seeds, steps) = (env("RONDO_WALK_SEEDS", 200), env("RONDO_WALK_STEPS", 400));
    let first = env("RONDO_WALK_FROM", 0);
    let model = RingModel(Seeds::Golden, bounds);
    let mut layout_changes = 0;
    let inits = model.init_states();
    let (mut ring_changes, mut crashes, mut acked) = (0usize, 0usize, 0usize);
    for seed in first..seeds {
        let mut rng = Rng(seed);
        let mut s = inits[rng.below(inits.len())].clone();
        let mut trace: Vec<Action> = Vec::new();
        for _ in 0..steps {
            let mut actions = Vec::new();
            model.actions(&s, &mut actions);
            let total: usize = actions.iter().map(weight).sum();
            if total == 0 {
                break;
            }
            let mut pick = rng.below(total);
            let Some(action) = actions.into_iter().find(|a| {
                let w = weight(a);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            }) else {
                break;
            };
            let Some(next) = model.next_state(&s, action.clone()) else {
                continue;
            };
            if !model.within_boundary(&next) {
                continue;
            }
            s = next;
            trace.push(action);
            if let Some(p) = broken(&model, &s) {
                panic!(
                    "seed {seed}: {p} broken after {} actions; rings {:?}; voters {:?}; nodes {:#?}; last ones: {:#?}",
                    trace.len(),
                    s.installed,
                    s.installed_voters,
                    summary(&s),
                    &trace[trace.len().saturating_sub(30)..]
                );
            }
        }
        ring_changes += s.installed.len();
        crashes += usize::from(s.crashes);
        if let Err(e) = heal(&model, &mut s) {
            panic!(
                "seed {seed}: {e}; the walk's last actions: {:#?}",
                &trace[trace.len().saturating_sub(12)..]
            );
        }
        acked += s.acked.len();
        layout_changes += committed_layout(&s).epoch;
    }
    let snapshots = SNAPSHOTS.with(std::cell::Cell::get);
    eprintln!(
        "walks: {seeds} seeds of up to {steps} actions; {ring_changes} rings installed, \
         {crashes} crashes and restarts, {snapshots} snapshots installed, {acked} writes \
         acknowledged and then applied everywhere"
    );
    assert!(
        snapshots * 20 > seeds as usize,
        "members behind the compacted log take snapshots"
    );
    assert!(ring_changes > 2 * seeds as usize, "the walks change rings");
    assert!(
        acked > 2 * seeds as usize,
        "the walks acknowledge more than the golden run"
    );
    eprintln!("walks: {layout_changes} layout changes applied");
    layout_changes
}
