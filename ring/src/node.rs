//! One node's protocol state machine (PROTOCOL.md, "Phases"). One concern,
//! kept in one file on purpose: every transition of the token-ring protocol
//! (gather, recover, operational; joins, promises, installs, log fetches,
//! the token visit in numbered steps) reads and writes the same state, and
//! the model checker (`tests/model.rs`) explores it as one machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rondo_core::NodeId;

use crate::{
    Body, Config, Entry, Input, Layout, LogPos, Message, Output, RingId, Timer, Token, is_quorate,
};

/// State that survives a crash. The driver keeps it on disk; the core keeps
/// a copy that it changes exactly when it emits the matching output.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Durable<P> {
    /// Highest ring id promised or joined.
    pub promised: RingId,
    /// The log, contiguous from the entry after `compacted` (or from 1):
    /// entries are made durable only when they extend it without a gap.
    pub log: BTreeMap<u64, Entry<P>>,
    /// Seq of the last entry applied to the catalog.
    pub applied: u64,
    /// The prefix of the log folded into the applied state and dropped
    /// (log compaction, or a snapshot installed from another node).
    pub compacted: Option<Compacted>,
}

/// A log prefix folded into the applied state: its last entry's position
/// and the layout after it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Compacted {
    pub last: LogPos,
    pub layout: Layout,
}

impl<P> Default for Durable<P> {
    fn default() -> Self {
        Durable {
            promised: RingId::default(),
            log: BTreeMap::new(),
            applied: 0,
            compacted: None,
        }
    }
}

impl<P> Durable<P> {
    /// Position of the last log entry (compacted or not).
    pub fn last(&self) -> LogPos {
        self.log
            .last_key_value()
            .map(|(seq, e)| LogPos {
                ring: e.ring,
                seq: *seq,
            })
            .or(self.compacted.as_ref().map(|c| c.last))
            .unwrap_or_default()
    }

    /// Seq of the last compacted entry (0: none).
    pub fn compacted_seq(&self) -> u64 {
        self.compacted.as_ref().map_or(0, |c| c.last.seq)
    }

    /// Position of the entry at `seq`, if it is in the log or ends the
    /// compacted prefix.
    fn pos(&self, seq: u64) -> Option<LogPos> {
        match self.log.get(&seq) {
            Some(e) => Some(LogPos { ring: e.ring, seq }),
            None => self
                .compacted
                .as_ref()
                .map(|c| c.last)
                .filter(|l| l.seq == seq),
        }
    }
}

/// Where a node is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Looking for a ring: as a candidate, or having promised one.
    Gather,
    /// In a ring being installed: syncing the log from the source.
    Recover,
    /// In an installed ring, passing the token.
    Operational,
}

/// A candidate's collection of promises.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Candidacy {
    proposed: RingId,
    promises: BTreeMap<NodeId, LogPos>,
    /// What each promising node reported it cannot reach.
    unreachable: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// The nodes and the voters of the layout at the end of each promising
    /// node's log.
    layouts: BTreeMap<NodeId, (BTreeSet<NodeId>, BTreeSet<NodeId>)>,
}

/// The ring being installed or in operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Ring {
    id: RingId,
    members: BTreeSet<NodeId>,
    source: NodeId,
    source_last: LogPos,
    /// Members that reported `Ready` (the representative only).
    ready: BTreeSet<NodeId>,
    /// Last token rotation accepted.
    last_rotation: u64,
    /// The token last passed on, kept for retransmission.
    passed: Option<Token>,
    /// A token held back for `hold` on an idle ring.
    held: Option<Token>,
    /// Links the members found down, from the last token accepted.
    down: BTreeSet<(NodeId, NodeId)>,
    /// A change of the members or voters was applied: re-form the ring at
    /// the next visit of the token.
    reform_pending: bool,
    /// During recovery: the seq after which the next page of the source's
    /// log is expected.
    fetch_after: u64,
}

/// One node of the ring protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node<P> {
    id: NodeId,
    config: Config,
    /// The layout before the log has one: the genesis layout on a node of
    /// the initial cluster, the nodes to contact (no voters) on a node that
    /// joins a running one.
    base: Layout,
    /// The layout after each log entry that changed it (the genesis
    /// `RingStart` and every accepted layout change), by seq.
    layouts: BTreeMap<u64, Layout>,
    durable: Durable<P>,
    phase: Phase,
    candidacy: Option<Candidacy>,
    ring: Option<Ring>,
    /// Highest ring counter seen in any message.
    highest_seen: u64,
    /// Entries received on this ring, not yet durable.
    pending: BTreeMap<u64, Entry<P>>,
    /// Local proposals (updates and layout changes) waiting for the token.
    queue: VecDeque<Body<P>>,
    /// Peers the driver reports this node cannot send to.
    unreachable: BTreeSet<NodeId>,
    /// A log ahead of this node's leaves it out of the layout (as the best
    /// log of its candidacy, or in a refused Join): it tries again only
    /// after `2 × consensus_timeout`, so that nodes it would keep pulling
    /// out of their rings (stale ones that still promise to it) time out
    /// and form rings of their own. Cleared when it joins a ring.
    evicted: bool,
}

type Out<P> = Vec<Output<P>>;

impl<P: Clone> Node<P> {
    /// A node with its durable state, in `Gather` until [`Input::Start`].
    /// `base` is the layout to use while the log has none (see
    /// [`Node::layout`]).
    pub fn new(id: NodeId, config: Config, base: Layout, durable: Durable<P>) -> Node<P> {
        let mut node = Node {
            id,
            config,
            highest_seen: durable.promised.counter,
            base,
            layouts: BTreeMap::new(),
            durable: Durable {
                promised: durable.promised,
                log: BTreeMap::new(),
                applied: durable.applied,
                compacted: durable.compacted.clone(),
            },
            phase: Phase::Gather,
            candidacy: None,
            ring: None,
            pending: BTreeMap::new(),
            queue: VecDeque::new(),
            unreachable: BTreeSet::new(),
            evicted: false,
        };
        if let Some(c) = &durable.compacted {
            node.layouts.insert(c.last.seq, c.layout.clone());
        }
        let entries: Vec<Entry<P>> = durable.log.into_values().collect();
        node.log_extend(&entries);
        node
    }

    /// The layout at the end of this node's log (applied or not): the one
    /// its quorums are counted in. The genesis layout comes with the log's
    /// first entry; before that, the base layout given to [`Node::new`].
    pub fn layout(&self) -> &Layout {
        self.layouts.last_key_value().map_or(&self.base, |(_, l)| l)
    }

    /// The layout in force after log entry `seq`.
    pub fn layout_at(&self, seq: u64) -> &Layout {
        self.layouts
            .range(..=seq)
            .next_back()
            .map_or(&self.base, |(_, l)| l)
    }

    /// The layout as of the last applied entry (committed).
    pub fn applied_layout(&self) -> &Layout {
        self.layouts
            .range(..=self.durable.applied)
            .next_back()
            .map_or(&self.base, |(_, l)| l)
    }

    /// Whether this node's removal from the layout is committed: it no
    /// longer starts rings, only answers nodes of the layout (which may add
    /// it again).
    pub fn removed(&self) -> bool {
        // Only a committed removal counts (one still unsafe may yet be
        // replaced by another ring's log), and only if no later entry in
        // the log adds the node back.
        self.durable.last().seq > 0
            && !self.applied_layout().nodes.contains_key(&self.id)
            && !self.layout().nodes.contains_key(&self.id)
    }

    /// Adds entries that extend the log, keeping the layouts in step.
    fn log_extend(&mut self, entries: &[Entry<P>]) {
        for e in entries {
            self.durable.log.insert(e.seq, e.clone());
            let next = match &e.body {
                Body::RingStart {
                    genesis: Some(g), ..
                } => Some(g.clone()),
                Body::Layout(change) => self.layout().apply_at(e.seq, change).ok(),
                _ => None,
            };
            if let Some(next) = next {
                self.layouts.insert(e.seq, next);
            }
        }
    }

    /// Recomputes the layouts from the compacted prefix's (or the base)
    /// and the log.
    fn rebuild_layouts(&mut self) {
        self.layouts.clear();
        if let Some(c) = &self.durable.compacted {
            self.layouts.insert(c.last.seq, c.layout.clone());
        }
        let entries: Vec<Entry<P>> = std::mem::take(&mut self.durable.log)
            .into_values()
            .collect();
        self.log_extend(&entries);
    }

    /// Drops applied entries beyond the `keep_log` most recent, once twice
    /// as many are in the log (PROTOCOL.md, "Snapshots").
    fn maybe_compact(&mut self, out: &mut Out<P>) {
        let keep = self.config.keep_log as u64;
        let first = self.durable.compacted_seq();
        if keep == 0 || self.durable.applied.saturating_sub(first) <= 2 * keep {
            return;
        }
        let upto = self.durable.applied - keep;
        let Some(last) = self.durable.pos(upto) else {
            return;
        };
        let layout = self.layout_at(upto).clone();
        self.durable.log = self.durable.log.split_off(&(upto + 1));
        let later = self.layouts.split_off(&(upto + 1));
        self.layouts = later;
        self.layouts.insert(upto, layout.clone());
        let compacted = Compacted { last, layout };
        self.durable.compacted = Some(compacted.clone());
        out.push(Output::Compact(compacted));
    }

    /// Whether a snapshot asked for with `Output::InstallSnapshot` is still
    /// wanted: the driver installs it only then, right before it feeds
    /// [`Input::SnapshotInstalled`] (the ring may have moved on meanwhile).
    pub fn wants_snapshot(&self, ring_id: RingId, at: LogPos) -> bool {
        self.phase == Phase::Recover
            && self.ring.as_ref().is_some_and(|r| r.id == ring_id)
            && at.seq > self.durable.applied
    }

    /// The driver installed a snapshot asked for with
    /// `Output::InstallSnapshot`: go on fetching the entries after it.
    fn snapshot_installed(
        &mut self,
        ring_id: RingId,
        at: LogPos,
        layout: Layout,
        out: &mut Out<P>,
    ) {
        if !self.wants_snapshot(ring_id, at) {
            return;
        }
        let Some(source) = self.ring.as_ref().map(|r| r.source) else {
            return;
        };
        self.durable.applied = at.seq;
        self.durable.log = self.durable.log.split_off(&(at.seq + 1));
        self.durable.compacted = Some(Compacted { last: at, layout });
        self.rebuild_layouts();
        if let Some(r) = &mut self.ring {
            r.fetch_after = at.seq;
        }
        let fetch = Message::Fetch {
            ring: ring_id,
            after: at.seq,
        };
        self.send(source, fetch, out);
    }

    /// Removes the log entries after `after`.
    fn log_truncate(&mut self, after: u64) {
        self.durable.log.split_off(&(after + 1));
        self.layouts.split_off(&(after + 1));
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Replaces the timeouts (which depend on the number of nodes, known
    /// only once the log's layout is read); takes effect with the next
    /// timer set.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn durable(&self) -> &Durable<P> {
        &self.durable
    }

    /// The installed ring and its members, when operational.
    pub fn ring(&self) -> Option<(RingId, &BTreeSet<NodeId>)> {
        match (&self.ring, self.phase) {
            (Some(r), Phase::Operational) => Some((r.id, &r.members)),
            _ => None,
        }
    }

    /// Removes queued (not yet ordered) proposals that match; returns
    /// whether any did. A withdrawn proposal is never ordered.
    pub fn withdraw(&mut self, matches: impl Fn(&Body<P>) -> bool) -> bool {
        let before = self.queue.len();
        self.queue.retain(|p| !matches(p));
        self.queue.len() != before
    }

    /// Rotation number of the last token this node accepted on its ring.
    pub fn last_rotation(&self) -> u64 {
        self.ring.as_ref().map_or(0, |r| r.last_rotation)
    }

    /// Proposals not yet stamped.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Handles one input; the outputs must be carried out in order.
    pub fn handle(&mut self, input: Input<P>) -> Out<P> {
        let mut out = Vec::new();
        match input {
            Input::Start => self.gather(&mut out),
            Input::Propose(_) | Input::ProposeLayout(_) => {
                self.queue.push_back(match input {
                    Input::Propose(p) => Body::Update(p),
                    Input::ProposeLayout(c) => Body::Layout(c),
                    _ => return out,
                });
                // A held token is used at once.
                if let Some(ring) = &mut self.ring
                    && let Some(token) = ring.held.take()
                {
                    out.push(Output::CancelTimer(Timer::Hold));
                    self.process(token, &mut out);
                }
            }
            Input::Fired(timer) => self.fired(timer, &mut out),
            Input::Link { peer, up } => {
                if up {
                    self.unreachable.remove(&peer);
                } else if peer != self.id {
                    self.unreachable.insert(peer);
                }
            }
            Input::Receive { from, msg } => self.receive(from, msg, &mut out),
            Input::SnapshotInstalled { ring, at, layout } => {
                self.snapshot_installed(ring, at, layout, &mut out);
            }
        }
        out
    }

    fn send(&self, to: NodeId, msg: Message<P>, out: &mut Out<P>) {
        out.push(Output::Send { to, msg });
    }

    fn others<'a>(&'a self, set: &'a BTreeSet<NodeId>) -> impl Iterator<Item = NodeId> + 'a {
        set.iter().copied().filter(move |n| *n != self.id)
    }

    /// Tells a candidate where this node's log stands.
    fn send_promise(&self, to: NodeId, proposed: RingId, out: &mut Out<P>) {
        let msg = Message::Promise {
            proposed,
            last: self.durable.last(),
            applied: self.durable.applied,
            unreachable: self.unreachable.clone(),
            nodes: self.layout().ids(),
            voters: self.layout().voters(),
        };
        self.send(to, msg, out);
    }

    fn promise(&mut self, ring: RingId, out: &mut Out<P>) {
        self.durable.promised = ring;
        self.highest_seen = self.highest_seen.max(ring.counter);
        out.push(Output::PersistPromise(ring));
    }

    /// Leaves any ring and proposes a new one.
    fn gather(&mut self, out: &mut Out<P>) {
        self.leave_ring(out);
        // A node whose removal is committed starts no ring of its own (the
        // nodes of its layout refuse its Join, so it retries only slowly),
        // but keeps asking: if it was added back while it could not be
        // reached, the first node that knows answers, and it rejoins.
        if self.removed() {
            self.evicted = true;
        }
        let proposed = RingId {
            counter: self.highest_seen.max(self.durable.promised.counter) + 1,
            rep: self.id,
        };
        self.promise(proposed, out);
        let mut promises = BTreeMap::new();
        promises.insert(self.id, self.durable.last());
        let unreachable = BTreeMap::from([(self.id, self.unreachable.clone())]);
        let layouts = BTreeMap::from([(self.id, (self.layout().ids(), self.layout().voters()))]);
        self.candidacy = Some(Candidacy {
            proposed,
            promises,
            unreachable,
            layouts,
        });
        // The nodes of the layout at the end of the log and of the one
        // committed: the ring may have to form under either.
        let mut nodes = self.layout().ids();
        nodes.extend(self.applied_layout().ids());
        let targets: Vec<NodeId> = self.others(&nodes).collect();
        for to in targets {
            self.send(to, Message::Join { proposed }, out);
        }
        out.push(Output::SetTimer {
            timer: Timer::JoinWindow,
            after: self.config.join_window,
        });
    }

    fn leave_ring(&mut self, out: &mut Out<P>) {
        self.phase = Phase::Gather;
        self.ring = None;
        self.candidacy = None;
        self.pending.clear();
        for t in [Timer::TokenLoss, Timer::TokenRetransmit, Timer::Hold] {
            out.push(Output::CancelTimer(t));
        }
    }

    fn fired(&mut self, timer: Timer, out: &mut Out<P>) {
        match timer {
            Timer::TokenLoss => {
                if self.phase != Phase::Gather {
                    self.gather(out);
                }
            }
            Timer::Consensus => {
                if self.phase != Phase::Operational {
                    self.gather(out);
                }
            }
            Timer::JoinWindow => self.close_window(out),
            Timer::TokenRetransmit => {
                if let Some(ring) = &self.ring
                    && let Some(token) = ring.passed.clone()
                {
                    let to = successor(&ring.members, self.id);
                    self.send(to, Message::Token(token), out);
                    out.push(Output::SetTimer {
                        timer: Timer::TokenRetransmit,
                        after: self.config.token_retransmit,
                    });
                }
            }
            Timer::Hold => {
                if let Some(ring) = &mut self.ring
                    && let Some(token) = ring.held.take()
                {
                    self.process(token, out);
                }
            }
        }
    }

    /// End of the candidate's window: install a ring if the promises are
    /// quorate, otherwise try again later.
    fn close_window(&mut self, out: &mut Out<P>) {
        let Some(c) = self.candidacy.take() else {
            return;
        };
        if self.phase != Phase::Gather || self.durable.promised != c.proposed {
            return;
        }
        // Nodes that cannot reach each other never share a ring (its token
        // would be lost at their link, again and again): drop the node in
        // the most such conflicts (ties: the greater id), never this one,
        // until none is left. The source is chosen among the members, which
        // is safe because they must still be a majority of the voters.
        let promises: BTreeMap<NodeId, LogPos> = {
            let mut kept = c.promises.clone();
            let conflict = |a: &NodeId, b: &NodeId| {
                c.unreachable.get(a).is_some_and(|u| u.contains(b))
                    || c.unreachable.get(b).is_some_and(|u| u.contains(a))
            };
            loop {
                let worst = kept
                    .keys()
                    .filter(|m| **m != self.id)
                    .map(|m| (kept.keys().filter(|o| conflict(m, o)).count(), *m))
                    .filter(|(n, _)| *n > 0)
                    .max();
                match worst {
                    Some((_, m)) => {
                        kept.remove(&m);
                    }
                    None => break kept,
                }
            }
        };
        // The best log: greatest (ring, seq); ties to the lower node id
        // (iteration is in id order and `max_by` keeps the last maximum, so
        // compare with the id reversed). The ring will run on the source's
        // log, so its quorum is counted in the layout at the end of that log
        // and only nodes of that layout are members (PROTOCOL.md, "Layout
        // changes"). The source itself may be left out: a node whose own log
        // removes it still serves its log to the ring that commits that.
        let best = promises
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(n, l)| (*n, *l));
        let (nodes, voters) = match best {
            // No log anywhere: the first bootstrap. It waits for every
            // initial voter (a node with no voters, one that joins a running
            // cluster, never bootstraps).
            Some((_, last)) if last.seq == 0 => (self.base.ids(), self.base.voters()),
            Some((source, _)) => c.layouts.get(&source).cloned().unwrap_or_default(),
            None => Default::default(),
        };
        let members: BTreeSet<NodeId> = promises
            .keys()
            .filter(|n| nodes.contains(n))
            .copied()
            .collect();
        let ok = match best {
            _ if !members.contains(&self.id) => false,
            Some((_, last)) if last.seq == 0 => {
                !voters.is_empty() && voters.iter().all(|v| members.contains(v))
            }
            Some(_) => is_quorate(&members, &voters),
            None => false,
        };
        if best.is_some_and(|(_, last)| last.seq > 0) && !nodes.contains(&self.id) {
            self.evicted = true;
        }
        if !ok {
            // Retry after a while (the driver adds jitter to this timer).
            let after = if self.evicted {
                self.config.consensus_timeout * 2
            } else {
                self.config.join_window * 2
            };
            out.push(Output::SetTimer {
                timer: Timer::Consensus,
                after,
            });
            return;
        }
        let Some((source, source_last)) = best else {
            return;
        };
        let install = Message::Install {
            ring: c.proposed,
            members: members.clone(),
            source,
            source_last,
        };
        for to in self.others(&members).collect::<Vec<_>>() {
            self.send(to, install.clone(), out);
        }
        self.install(c.proposed, members, source, source_last, out);
    }

    fn install(
        &mut self,
        id: RingId,
        members: BTreeSet<NodeId>,
        source: NodeId,
        source_last: LogPos,
        out: &mut Out<P>,
    ) {
        self.phase = Phase::Recover;
        self.evicted = false;
        self.pending.clear();
        self.ring = Some(Ring {
            id,
            members,
            source,
            source_last,
            ready: BTreeSet::new(),
            last_rotation: 0,
            passed: None,
            held: None,
            down: BTreeSet::new(),
            reform_pending: false,
            fetch_after: self.durable.applied,
        });
        out.push(Output::SetTimer {
            timer: Timer::Consensus,
            after: self.config.consensus_timeout,
        });
        if source == self.id {
            let last = self.durable.last().seq;
            self.ready(id, last, out);
        } else {
            self.send(
                source,
                Message::Fetch {
                    ring: id,
                    after: self.durable.applied,
                },
                out,
            );
        }
    }

    /// Reports this member ready to the representative (or counts itself).
    fn ready(&mut self, ring: RingId, last: u64, out: &mut Out<P>) {
        if ring.rep == self.id {
            self.on_ready(self.id, ring, out);
        } else {
            self.send(ring.rep, Message::Ready { ring, last }, out);
        }
    }

    fn on_ready(&mut self, from: NodeId, ring_id: RingId, out: &mut Out<P>) {
        let Some(ring) = &mut self.ring else { return };
        if ring.id != ring_id || self.phase != Phase::Recover || ring_id.rep != self.id {
            return;
        }
        if !ring.members.contains(&from) {
            return;
        }
        ring.ready.insert(from);
        if ring.ready != ring.members {
            return;
        }
        // Everyone holds the source's log: order RingStart and start the token.
        let seq = ring.source_last.seq + 1;
        let entry = Entry {
            seq,
            ring: ring.id,
            body: Body::RingStart {
                members: ring.members.clone(),
                // The first entry of the log fixes the genesis layout.
                genesis: (seq == 1).then(|| self.base.clone()),
            },
        };
        let members = ring.members.clone();
        for to in self.others(&members).collect::<Vec<_>>() {
            self.send(
                to,
                Message::Mcast {
                    ring: ring_id,
                    entry: entry.clone(),
                },
                out,
            );
        }
        self.pending.insert(seq, entry);
        let token = Token {
            ring: ring_id,
            rotation: 1,
            seq,
            aru: self.durable.applied,
            rot_min: u64::MAX,
            rtr: BTreeSet::new(),
            down: BTreeSet::new(),
            layout_seq: 0,
        };
        self.on_token(token, out);
    }

    fn receive(&mut self, from: NodeId, msg: Message<P>, out: &mut Out<P>) {
        // Only nodes of the layout take part: a node whose removal is
        // committed, or one never added, is answered only with the refusal
        // of its Join (which tells it it is out). Its other messages are
        // dropped: it fetches no log, casts no entry, passes no token and
        // joins no candidacy. A member of this node's ring still counts
        // until that ring dissolves (a removed member passes the token for
        // one more rotation), and a node with an empty log knows no layout
        // yet and hears everyone.
        if !matches!(msg, Message::Join { .. }) && !self.knows(from) {
            return;
        }
        match msg {
            Message::Join { proposed } => self.on_join(from, proposed, out),
            Message::Promise {
                proposed,
                last,
                unreachable,
                nodes,
                voters,
                ..
            } => {
                if let Some(c) = &mut self.candidacy
                    && c.proposed == proposed
                {
                    c.promises.insert(from, last);
                    c.unreachable.insert(from, unreachable);
                    c.layouts.insert(from, (nodes, voters));
                }
            }
            Message::Nack {
                promised,
                excluded_at,
            } => {
                self.highest_seen = self.highest_seen.max(promised.counter);
                if excluded_at.is_some_and(|at| at > self.durable.last()) {
                    self.evicted = true;
                }
            }
            Message::Install {
                ring,
                members,
                source,
                source_last,
            } => {
                if ring == self.durable.promised
                    && self.phase == Phase::Gather
                    && members.contains(&self.id)
                {
                    self.install(ring, members, source, source_last, out);
                }
            }
            Message::Fetch { ring, after } => self.on_fetch(from, ring, after, out),
            Message::Entries {
                ring,
                after,
                entries,
                more,
            } => self.on_entries(from, ring, after, entries, more, out),
            Message::Snapshot {
                ring,
                after,
                at,
                layout,
            } => {
                let expected = self.phase == Phase::Recover
                    && self.ring.as_ref().is_some_and(|r| {
                        r.id == ring && r.source == from && r.fetch_after == after
                    });
                if expected && at.seq > self.durable.applied {
                    out.push(Output::InstallSnapshot {
                        from,
                        ring,
                        at,
                        layout,
                    });
                }
            }
            Message::Ready { ring, .. } => self.on_ready(from, ring, out),
            Message::Mcast { ring, entry } => {
                let current = self.ring.as_ref().is_some_and(|r| {
                    r.id == ring && ring == self.durable.promised && r.members.contains(&from)
                });
                if current
                    && self.phase != Phase::Gather
                    && entry.seq > self.durable.applied
                    && !self.durable.log.contains_key(&entry.seq)
                {
                    self.pending.insert(entry.seq, entry);
                }
            }
            Message::Token(token) => {
                // Passed on by a member of the ring it names.
                if self
                    .ring
                    .as_ref()
                    .is_some_and(|r| r.id == token.ring && r.members.contains(&from))
                {
                    self.on_token(token, out);
                }
            }
        }
    }

    /// A Join: promise the proposed ring if it is newer and its
    /// candidate may form one, repeat a promise, or refuse.
    fn on_join(&mut self, from: NodeId, proposed: RingId, out: &mut Out<P>) {
        // Only nodes of the layout can pull this one into a ring: a
        // node whose removal is committed, or one not added yet,
        // cannot disturb it (an uncommitted change may yet be undone,
        // so the committed layout and the latest are both heeded).
        // The refusal says how far this log goes: a candidate that
        // finds a log ahead of its own leaving it out stops trying.
        if self.durable.last().seq > 0
            && !self.applied_layout().nodes.contains_key(&from)
            && !self.layout().nodes.contains_key(&from)
        {
            let nack = Message::Nack {
                promised: self.durable.promised,
                excluded_at: Some(self.durable.last()),
            };
            self.send(from, nack, out);
            return;
        }
        self.highest_seen = self.highest_seen.max(proposed.counter);
        if proposed > self.durable.promised && self.cut_off(from) {
            // Check-quorum: a working ring is not pulled apart by a
            // node that some member cannot reach (it would only
            // form a ring that loses its token at that link). It is
            // admitted once every link to it works again.
            return;
        }
        if proposed > self.durable.promised {
            self.leave_ring(out);
            self.promise(proposed, out);
            self.send_promise(from, proposed, out);
            out.push(Output::SetTimer {
                timer: Timer::Consensus,
                after: self.config.consensus_timeout,
            });
        } else if proposed == self.durable.promised && self.phase == Phase::Gather {
            // A repeated Join: repeat the promise.
            self.send_promise(from, proposed, out);
        } else if proposed < self.durable.promised {
            self.send(
                from,
                Message::Nack {
                    promised: self.durable.promised,
                    excluded_at: None,
                },
                out,
            );
        }
    }

    /// A Fetch from a member recovering from this node's log: a page of
    /// entries, or the applied state if they are compacted here.
    fn on_fetch(&mut self, from: NodeId, ring: RingId, after: u64, out: &mut Out<P>) {
        // Only for a node of the layout at the end of this log, or of the
        // ring: one whose removal is in the log gets none of it.
        let member = self
            .ring
            .as_ref()
            .is_some_and(|r| r.members.contains(&from));
        if !member && !self.layout().nodes.contains_key(&from) {
            return;
        }
        // Only the log this node promised with is served: it is
        // frozen from the promise until the ring it promised runs.
        if ring == self.durable.promised && after < self.durable.compacted_seq() {
            // Entries after `after` are compacted here: the member
            // takes this node's applied state instead.
            let applied = self.durable.applied;
            if let Some(at) = self.durable.pos(applied) {
                let layout = self.applied_layout().clone();
                let msg = Message::Snapshot {
                    ring,
                    after,
                    at,
                    layout,
                };
                self.send(from, msg, out);
            }
        } else if ring == self.durable.promised {
            let entries: Vec<Entry<P>> = self
                .durable
                .log
                .range(after + 1..)
                .take(self.config.max_fetch.max(1))
                .map(|(_, e)| e.clone())
                .collect();
            let end = entries.last().map_or(after, |e| e.seq);
            let more = self.durable.log.range(end + 1..).next().is_some();
            let page = Message::Entries {
                ring,
                after,
                entries,
                more,
            };
            self.send(from, page, out);
        }
    }

    /// A page of the source's log during recovery.
    fn on_entries(
        &mut self,
        from: NodeId,
        ring: RingId,
        after: u64,
        entries: Vec<Entry<P>>,
        more: bool,
        out: &mut Out<P>,
    ) {
        // The page asked for last, from this ring's source; a
        // duplicate or late page is ignored.
        let expected = self.phase == Phase::Recover
            && self
                .ring
                .as_ref()
                .is_some_and(|r| r.id == ring && r.source == from && r.fetch_after == after);
        if !expected || after < self.durable.applied {
            return;
        }
        // Raft's rule: keep what agrees with the source (same seq,
        // same ring: by log matching the same entry and prefix),
        // replace from the first entry that differs or is missing.
        // A page never drops a durable entry the source also has,
        // so an interrupted recovery loses no committed entry.
        let page: Vec<Entry<P>> = entries.into_iter().filter(|e| e.seq > after).collect();
        let end = page.last().map(|e| e.seq);
        let differs = page.iter().position(|e| {
            self.durable
                .log
                .get(&e.seq)
                .is_none_or(|x| x.ring != e.ring)
        });
        if let Some(i) = differs {
            let replace = page[i..].to_vec();
            let from = replace[0].seq;
            self.log_truncate(from - 1);
            out.push(Output::Truncate { after: from - 1 });
            self.log_extend(&replace);
            out.push(Output::PersistEntries(replace));
        }
        if !more {
            // Past the source's last entry nothing is committed.
            let last = end.unwrap_or(after);
            if self.durable.last().seq > last {
                self.log_truncate(last);
                out.push(Output::Truncate { after: last });
            }
        }
        match end {
            Some(end) if more => {
                if let Some(r) = &mut self.ring {
                    r.fetch_after = end;
                }
                let fetch = Message::Fetch { ring, after: end };
                self.send(from, fetch, out);
            }
            _ => {
                let last = self.durable.last().seq;
                self.ready(ring, last, out);
            }
        }
    }

    /// The token visits this node (PROTOCOL.md, "Operational").
    fn on_token(&mut self, token: Token, out: &mut Out<P>) {
        let Some(ring) = &mut self.ring else { return };
        if token.ring != ring.id
            || token.ring != self.durable.promised
            || self.phase == Phase::Gather
            || token.rotation <= ring.last_rotation
        {
            return;
        }
        // Accepted: later copies of this rotation are duplicates.
        ring.last_rotation = token.rotation;
        ring.down = token.down.clone();
        self.phase = Phase::Operational;
        out.push(Output::SetTimer {
            timer: Timer::TokenLoss,
            after: self.config.token_timeout,
        });
        // An idle ring turns slowly: with nothing to send, retransmit or
        // make safe, keep the token for `hold` (or until a proposal comes).
        let idle = self.queue.is_empty()
            && self.pending.is_empty()
            && token.rtr.is_empty()
            && token.aru >= token.seq;
        if idle {
            ring.held = Some(token);
            out.push(Output::SetTimer {
                timer: Timer::Hold,
                after: self.config.hold,
            });
            return;
        }
        self.process(token, out);
    }

    /// One visit of the token: retransmit, stamp, persist, measure, apply,
    /// pass on.
    fn process(&mut self, mut token: Token, out: &mut Out<P>) {
        let Some(ring) = &self.ring else { return };
        let members = ring.members.clone();
        let ring_start = ring.source_last.seq + 1;
        let is_rep = token.ring.rep == self.id;

        self.retransmit(&mut token, &members, out);
        self.stamp(&mut token, &members, ring_start, out);
        let durable = self.make_durable(&mut token, out);

        // 4. The safe point: the representative closes each rotation.
        if is_rep {
            if token.rot_min != u64::MAX {
                let closed = token.rot_min.min(durable);
                token.aru = token.aru.max(closed);
            }
            token.rot_min = durable;
        } else {
            token.rot_min = token.rot_min.min(durable);
        }

        let reform = self.apply_safe(token.aru, durable, ring_start, out);

        // 6. Report this node's links, and pass it on.
        token.down.retain(|(from, _)| *from != self.id);
        token
            .down
            .extend(self.unreachable.iter().map(|to| (self.id, *to)));
        if let Some(ring) = &mut self.ring {
            ring.down = token.down.clone();
        }
        token.rotation += 1;

        // 7. A change of who is in the cluster or who votes is safe: the
        // lowest member still in the layout forms the next ring (adding a
        // node, dropping a removed one; ring members then agree again with
        // the voters), one rotation later, so that every member applied
        // the change first (a removed member then knows it is removed; it
        // keeps passing the token until the ring dissolves, then retires).
        let layout = self.layout();
        let first = members
            .iter()
            .find(|m| layout.nodes.contains_key(m))
            .copied();
        if first == Some(self.id)
            && let Some(ring) = &mut self.ring
        {
            if ring.reform_pending {
                self.gather(out);
                return;
            }
            ring.reform_pending = reform;
        }
        self.pass(token, &members, out);
    }

    /// Step 1 of a token visit: retransmits what others miss and this
    /// node has.
    fn retransmit(&mut self, token: &mut Token, members: &BTreeSet<NodeId>, out: &mut Out<P>) {
        let mut resent = BTreeSet::new();
        for &seq in &token.rtr {
            let entry = self
                .durable
                .log
                .get(&seq)
                .or_else(|| self.pending.get(&seq))
                .cloned();
            if let Some(entry) = entry {
                for to in self.others(members).collect::<Vec<_>>() {
                    self.send(
                        to,
                        Message::Mcast {
                            ring: token.ring,
                            entry: entry.clone(),
                        },
                        out,
                    );
                }
                resent.insert(seq);
            }
        }
        token.rtr.retain(|s| !resent.contains(s));
    }

    /// Step 2: stamps queued proposals, in order.
    fn stamp(
        &mut self,
        token: &mut Token,
        members: &BTreeSet<NodeId>,
        ring_start: u64,
        out: &mut Out<P>,
    ) {
        // 2. Stamp queued proposals, in order. A layout change waits until
        // this ring's RingStart and the ring's previous layout change are
        // safe (so at most one change is ever uncommitted), and until the
        // members are a majority of the voters of the layout it changes
        // (PROTOCOL.md, "Layout changes").
        let quorate_now = is_quorate(members, &self.layout().voters());
        let mut stamped = 0;
        while stamped < self.config.max_messages {
            match self.queue.front() {
                None => break,
                Some(Body::Layout(_))
                    if token.aru < ring_start.max(token.layout_seq) || !quorate_now =>
                {
                    break;
                }
                Some(Body::Layout(_)) => token.layout_seq = token.seq + 1,
                Some(_) => {}
            }
            let Some(body) = self.queue.pop_front() else {
                break;
            };
            stamped += 1;
            token.seq += 1;
            let entry = Entry {
                seq: token.seq,
                ring: token.ring,
                body,
            };
            for to in self.others(members).collect::<Vec<_>>() {
                self.send(
                    to,
                    Message::Mcast {
                        ring: token.ring,
                        entry: entry.clone(),
                    },
                    out,
                );
            }
            self.pending.insert(entry.seq, entry);
        }
    }

    /// Step 3: makes durable what extends the log; returns the last
    /// durable seq.
    fn make_durable(&mut self, token: &mut Token, out: &mut Out<P>) -> u64 {
        // 3. Make durable what extends the log without a gap (the durable
        // log is always contiguous; the rest waits for retransmission).
        let mut next = self.durable.last().seq.max(self.durable.applied) + 1;
        self.pending.retain(|seq, _| *seq >= next);
        let mut entries = Vec::new();
        while let Some(e) = self.pending.remove(&next) {
            entries.push(e);
            next += 1;
        }
        if !entries.is_empty() {
            self.log_extend(&entries);
            out.push(Output::PersistEntries(entries));
        }
        let durable = next - 1;
        for seq in durable + 1..=token.seq {
            if !self.durable.log.contains_key(&seq) {
                token.rtr.insert(seq);
            }
        }
        durable
    }

    /// Step 5: applies what is safe; returns whether an applied change
    /// of membership calls for a new ring.
    fn apply_safe(&mut self, aru: u64, durable: u64, ring_start: u64, out: &mut Out<P>) -> bool {
        // 5. Apply what is safe, once this ring's RingStart (stamped right
        // after the source's last entry) is.
        let mut reform = false;
        if aru >= ring_start {
            let upto = aru.min(durable);
            while self.durable.applied < upto {
                let seq = self.durable.applied + 1;
                let Some(entry) = self.durable.log.get(&seq).cloned() else {
                    break;
                };
                if let (Body::Layout(_), Some(after)) = (&entry.body, self.layouts.get(&seq)) {
                    let before = self
                        .layouts
                        .range(..seq)
                        .next_back()
                        .map_or(&self.base, |(_, l)| l);
                    reform |= before.membership_differs(after);
                }
                self.durable.applied = seq;
                out.push(Output::Apply(entry));
            }
            self.maybe_compact(out);
        }
        reform
    }

    fn pass(&mut self, token: Token, members: &BTreeSet<NodeId>, out: &mut Out<P>) {
        let to = successor(members, self.id);
        if let Some(ring) = &mut self.ring {
            ring.passed = Some(token.clone());
        }
        if to == self.id {
            // A ring of one: the token comes straight back.
            self.on_token(token, out);
            return;
        }
        self.send(to, Message::Token(token), out);
        out.push(Output::SetTimer {
            timer: Timer::TokenRetransmit,
            after: self.config.token_retransmit,
        });
    }
}

impl<P: Clone> Node<P> {
    /// Whether `from` is a node of this node's layout (as applied or as at
    /// the end of its log), a member of its ring, or the ring's source (a
    /// node whose own log removes it still serves that log to the ring
    /// that commits the removal).
    fn knows(&self, from: NodeId) -> bool {
        self.durable.last().seq == 0
            || self.applied_layout().nodes.contains_key(&from)
            || self.layout().nodes.contains_key(&from)
            || self
                .ring
                .as_ref()
                .is_some_and(|r| r.members.contains(&from) || r.source == from)
    }

    /// Whether `from`, not a member of this node's operational ring, has a
    /// link that is down to or from a member, as far as this node knows.
    fn cut_off(&self, from: NodeId) -> bool {
        let Some(ring) = &self.ring else { return false };
        if self.phase != Phase::Operational || ring.members.contains(&from) {
            return false;
        }
        self.unreachable.contains(&from)
            || ring.down.iter().any(|(a, b)| {
                (*a == from && ring.members.contains(b)) || (*b == from && ring.members.contains(a))
            })
    }
}

/// The member after `me` in id order, wrapping around.
fn successor(members: &BTreeSet<NodeId>, me: NodeId) -> NodeId {
    use std::ops::Bound::{Excluded, Unbounded};
    members
        .range((Excluded(me), Unbounded))
        .next()
        .or_else(|| members.iter().next())
        .copied()
        .unwrap_or(me)
}
