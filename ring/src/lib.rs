//! Sans-IO core of Rondo's control plane: a token ring that totally orders
//! catalog and layout updates and delivers them only when every member of
//! the ring holds them durably. The protocol, its invariants and the argument
//! for them are in `storage-node/PROTOCOL.md`.
//!
//! [`Node`] is a state machine: the driver feeds it [`Input`]s (a message
//! from a peer, a timer that fired, a local proposal) and carries out the
//! [`Output`]s it returns, **in order**: persist before the sends that
//! follow, apply in the order given. There are no sockets, clocks, threads or
//! randomness inside, so a model checker can explore every interleaving and a
//! simulator can replay any schedule.
//!
//! What it does not do: transport (gRPC in `rondo-node`), storage (redb in
//! `rondo-node`), catalog semantics (payloads are opaque here).

mod layout;
mod node;

pub use layout::{
    AUTO_OUT_KEEP_CAPACITY, DEFAULT_CAPACITY, DEFAULT_ZONE, Guard, Layout, LayoutChange, LayoutOp,
    Member, NodeMove, Placement, RETIREMENTS_KEPT, Refusal, Retirement, Standing, majority,
    standing_name,
};
pub use node::{Compacted, Durable, Node, Phase};

use std::collections::BTreeSet;
use std::time::Duration;

use rondo_core::NodeId;

/// Names a ring: the representative that formed it and a counter. Ordered by
/// counter, then representative; a node never promises a lower one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingId {
    pub counter: u64,
    pub rep: NodeId,
}

impl Default for RingId {
    /// Below every real ring: counter 0, the nil node id.
    fn default() -> Self {
        RingId {
            counter: 0,
            rep: NodeId(uuid::Uuid::nil()),
        }
    }
}

/// An ordered update: its position in the one log, the ring that ordered it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry<P> {
    pub seq: u64,
    pub ring: RingId,
    pub body: Body<P>,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Body<P> {
    /// The first entry every ring orders; entries inherited from earlier
    /// rings become safe together with it. The first entry of the log
    /// carries the genesis layout (the initial voters).
    RingStart {
        members: BTreeSet<NodeId>,
        genesis: Option<Layout>,
    },
    /// A change of the layout, applied only if its epoch is still current.
    Layout(LayoutChange),
    /// An update from the layer above (the catalog).
    Update(P),
}

/// `(ring, seq)` of a log's last entry; compared ring first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPos {
    pub ring: RingId,
    pub seq: u64,
}

/// The token.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token {
    pub ring: RingId,
    /// Increments at every pass; a node drops a token that is not newer than
    /// the last one it accepted.
    pub rotation: u64,
    /// Highest seq stamped on this ring.
    pub seq: u64,
    /// Safe point: every member held every entry up to here durably, as
    /// measured over the last complete rotation.
    pub aru: u64,
    /// Running minimum of `durable` over the rotation in progress.
    pub rot_min: u64,
    /// Seqs some member is missing.
    pub rtr: BTreeSet<u64>,
    /// Links the members found down, as (from, to): each holder replaces
    /// its own with what its driver reports (see `Input::Link`).
    pub down: BTreeSet<(NodeId, NodeId)>,
    /// Seq of the last layout change stamped on this ring (0: none). The
    /// next may be stamped only once it is safe (PROTOCOL.md, "Layout
    /// changes").
    pub layout_seq: u64,
}

/// A protocol message between nodes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Message<P> {
    Token(Token),
    Mcast {
        ring: RingId,
        entry: Entry<P>,
    },
    Join {
        proposed: RingId,
    },
    Promise {
        proposed: RingId,
        last: LogPos,
        applied: u64,
        /// Nodes the promising node cannot reach now.
        unreachable: BTreeSet<NodeId>,
        /// The nodes and the voters of the layout at the end of the
        /// promising node's log.
        nodes: BTreeSet<NodeId>,
        voters: BTreeSet<NodeId>,
    },
    Nack {
        promised: RingId,
        /// Set when the Join came from a node outside the refusing node's
        /// layout: the refusing node's last entry.
        excluded_at: Option<LogPos>,
    },
    Install {
        ring: RingId,
        members: BTreeSet<NodeId>,
        source: NodeId,
        source_last: LogPos,
    },
    /// Asks the source for its entries after `after`.
    Fetch {
        ring: RingId,
        after: u64,
    },
    /// One page of the source's log after `after`: at most
    /// `Config::max_fetch` entries; `more` when the log goes on (the member
    /// asks for the next page).
    Entries {
        ring: RingId,
        after: u64,
        entries: Vec<Entry<P>>,
        more: bool,
    },
    Ready {
        ring: RingId,
        last: u64,
    },
    /// The answer to a `Fetch` whose entries the source compacted: take my
    /// applied state as of my entry `at` (the layout after it: `layout`),
    /// then fetch the entries after it.
    Snapshot {
        ring: RingId,
        after: u64,
        at: LogPos,
        layout: Layout,
    },
}

/// Timers the core asks the driver to run. Setting a timer again replaces
/// the pending one of the same kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// No token of my ring for this long: gather a new ring.
    TokenLoss,
    /// Resend the token I passed on.
    TokenRetransmit,
    /// Pass an idle token on.
    Hold,
    /// End of a candidate's window for promises.
    JoinWindow,
    /// A node that promised gives up waiting for `Install` or recovery.
    Consensus,
}

/// What the driver must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Output<P> {
    /// Persist `promised` (fsync) before anything that follows.
    PersistPromise(RingId),
    /// Remove log entries above `seq` (never at or below `last_applied`).
    Truncate {
        after: u64,
    },
    /// Append entries to the durable log (fsync) before anything that follows.
    PersistEntries(Vec<Entry<P>>),
    /// Apply the entry to the catalog, recording `last_applied`, in one
    /// transaction.
    Apply(Entry<P>),
    Send {
        to: NodeId,
        msg: Message<P>,
    },
    SetTimer {
        timer: Timer,
        after: Duration,
    },
    CancelTimer(Timer),
    /// Log compaction: the entries up to `last` are applied; drop them and
    /// record the compacted prefix (with the layout after it).
    Compact(Compacted),
    /// Fetch `from`'s applied state as of its entry `at`. Once it is here,
    /// and only if [`Node::wants_snapshot`] still holds, replace the
    /// applied state with it, in the same transaction record `at` as
    /// applied and as the compacted prefix (with `layout`) and drop the
    /// log entries up to it; then feed [`Input::SnapshotInstalled`].
    /// Nothing to do if the transfer fails: the ring times out and forms
    /// again.
    InstallSnapshot {
        from: NodeId,
        ring: RingId,
        at: LogPos,
        layout: Layout,
    },
}

/// What the driver feeds in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input<P> {
    /// The node (re)started with its durable state; begin gathering.
    Start,
    Receive {
        from: NodeId,
        msg: Message<P>,
    },
    Fired(Timer),
    /// A local update to order.
    Propose(P),
    /// A layout change to order.
    ProposeLayout(LayoutChange),
    /// The driver found that messages to `peer` fail (`up: false`: a
    /// delivery timed out or was refused) or go through again (`up: true`).
    /// Connectivity need not be symmetric or transitive: the core keeps
    /// nodes whose link is down out of one ring (PROTOCOL.md, "Links").
    Link {
        peer: NodeId,
        up: bool,
    },
    /// The driver carried out [`Output::InstallSnapshot`].
    SnapshotInstalled {
        ring: RingId,
        at: LogPos,
        layout: Layout,
    },
}

/// Timeouts and flow control (PROTOCOL.md, "Timeouts").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Config {
    pub token_timeout: Duration,
    pub token_retransmit: Duration,
    pub hold: Duration,
    pub join_window: Duration,
    pub consensus_timeout: Duration,
    pub max_messages: usize,
    /// Entries per `Entries` page during recovery (bounds the message size
    /// when a node catches up on a long log).
    pub max_fetch: usize,
    /// Applied entries kept in the log (0: the log is never compacted).
    /// Once twice as many are there, the older ones are dropped; a node
    /// that falls further behind catches up from a snapshot.
    pub keep_log: usize,
}

impl Config {
    /// corosync's defaults for a ring of `nodes` nodes.
    pub fn for_nodes(nodes: usize) -> Config {
        let token = Duration::from_millis(3000 + 650 * nodes.saturating_sub(2) as u64);
        Config {
            token_timeout: token,
            token_retransmit: token / 5,
            hold: Duration::from_millis(50),
            join_window: Duration::from_millis(100),
            consensus_timeout: token * 6 / 5,
            max_messages: 17,
            max_fetch: 1024,
            keep_log: 10_000,
        }
    }

    /// Timeouts ten times shorter, for tests.
    pub fn fast(nodes: usize) -> Config {
        let c = Config::for_nodes(nodes);
        Config {
            token_timeout: c.token_timeout / 10,
            token_retransmit: c.token_retransmit / 10,
            hold: c.hold / 10,
            join_window: c.join_window / 10,
            consensus_timeout: c.consensus_timeout / 10,
            max_messages: c.max_messages,
            max_fetch: c.max_fetch,
            keep_log: c.keep_log,
        }
    }
}

/// Whether `members` hold a strict majority of `voters`.
pub fn is_quorate(members: &BTreeSet<NodeId>, voters: &BTreeSet<NodeId>) -> bool {
    let present = voters.iter().filter(|v| members.contains(v)).count();
    present * 2 > voters.len()
}
