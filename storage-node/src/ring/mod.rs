//! The control plane: runs the sans-IO token-ring core (`rondo-ring`,
//! protocol in `storage-node/PROTOCOL.md`), persists its state in the node's
//! redb database, and carries its messages over gRPC (`rondo.ring.v1.Ring`).
//!
//! Shaped like `vrrp`: [`wire`] is the codec (every conversion between ring
//! and proto types), the core is the sans-IO state machine, and
//! [`driver`] is the thin driver that owns it. [`bootstrap`] settles the
//! layout a node starts with, [`peers`] carries messages to the other
//! nodes, [`service`] receives them. This file is the handle the rest of
//! the node holds: propose, ask for the status, know the peers.
//!
//! The driver runs on a dedicated thread (its redb commits block) or, under
//! the simulator, as a task ([`crate::net::Net::Sim`]). A sender that
//! cannot reach its peer drops the message: to the protocol the network is
//! lossy, and it recovers by retransmission and by forming a new ring.
//! Applied entries go to the store (`Store::apply_update`), and a
//! proposal's waiter is answered when its entry is applied here.

mod bootstrap;
mod driver;
mod join;
mod peers;
mod service;
pub mod standing;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rondo_core::NodeId;
use rondo_proto::ring::v1 as proto;
use rondo_proto::storage::v1 as pb;
use rondo_ring::{Layout, LayoutChange, LogPos, Message, RingId};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::net::Net;
use crate::store::{Applied, Store};

pub use bootstrap::{PeerEntry, PeersFile};
pub use join::join;
pub use service::Service;
pub use wire::Payload;

pub use rondo_proto::channel::MAX_RING_MESSAGE;
/// What the control plane needs of its node, handed over when it starts.
#[derive(Debug)]
pub struct Context {
    pub me: NodeId,
    pub config: crate::Config,
    pub store: Arc<Store>,
    pub net: Net,
    /// Wakes the outbox relay after an entry is applied.
    pub outbox: Arc<tokio::sync::Notify>,
    /// Wakes the resync worker after a layout change is applied (a new
    /// placement is work for it at once, not at its next pass).
    pub layout_changed: Arc<tokio::sync::Notify>,
    pub metrics: Metrics,
}

/// What the driver is told.
enum Cmd {
    Receive(NodeId, Message<Payload>),
    Propose {
        id: String,
        payload: Payload,
        reply: tokio::sync::oneshot::Sender<Result<Applied>>,
    },
    ProposeLayout {
        change: LayoutChange,
        reply: tokio::sync::oneshot::Sender<Result<(Layout, u64)>>,
    },
    /// The newest layout of the log, against which a change proposed now
    /// is decided (its placement is computed off the driver's thread: an
    /// assignment can take long, and the driver passes the token).
    Newest {
        reply: tokio::sync::oneshot::Sender<Layout>,
    },
    /// Give up on a proposal that is not ordered yet.
    Withdraw(String),
    /// Messages to a peer fail (`false`) or go through again (`true`).
    Link(NodeId, bool),
    /// A snapshot the core asked for is here, to install if it still
    /// wants it.
    SnapshotReady {
        from: NodeId,
        ring: RingId,
        at: LogPos,
        layout: Layout,
        rows: Vec<proto::SnapshotRow>,
    },
}

/// Proposals of this node waiting to be applied, by proposal id.
#[derive(Default)]
struct Waiters {
    /// Catalog updates: (payload, reply).
    updates: BTreeMap<String, (Payload, tokio::sync::oneshot::Sender<Result<Applied>>)>,
    /// Layout changes: the layout after the change and the entry's seq.
    layouts: BTreeMap<String, tokio::sync::oneshot::Sender<Result<(Layout, u64)>>>,
}

/// What the driver publishes and the handles read.
#[derive(Debug, Default)]
struct Shared {
    status: Mutex<pb::RingStatus>,
    /// The other nodes of the layout with their gRPC URLs.
    peers: Mutex<BTreeMap<NodeId, String>>,
}

/// The largest catalog update a node orders: far below the decode limit of
/// every reader of the change stream
/// ([`rondo_proto::channel::MAX_STORAGE_MESSAGE`], 8 MiB), so that no
/// change can be written that a gateway cannot read (it would retry that
/// change forever and follow nothing after it).
pub const MAX_UPDATE: usize = 1 << 20;

const _: () = assert!(MAX_UPDATE * 4 <= rondo_proto::channel::MAX_STORAGE_MESSAGE);

/// The running control plane of one node (clones share it).
#[derive(Clone, Debug)]
pub struct RingHandle {
    me: NodeId,
    cmds: UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    write_timeout: Duration,
    /// Under the simulator: plan on the calling task (deterministic),
    /// not on the blocking pool.
    sim: bool,
}

/// Starts the control plane: the driver and the peer senders. Must be
/// called inside a tokio runtime (the senders run on it). The driver runs
/// on a thread of its own (its redb commits block), or as a task of the
/// simulator's runtime ([`crate::net::Net::Sim`]).
pub fn start(ctx: Context) -> Result<RingHandle> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        status: Mutex::new(pb::RingStatus {
            phase: "starting".into(),
            ..Default::default()
        }),
        peers: Mutex::default(),
    });
    let handle = RingHandle {
        me: ctx.me,
        cmds: tx.clone(),
        shared: shared.clone(),
        write_timeout: Duration::from_millis(ctx.config.ring.write_timeout_ms.unwrap_or(10_000)),
        sim: ctx.net.is_sim(),
    };
    let runtime = tokio::runtime::Handle::current();
    let sim = ctx.net.is_sim();
    let run = async move {
        if let Err(e) = driver::Driver::run(ctx, rx, tx, shared, runtime).await {
            // The protocol assumes crash-recovery: a node that cannot
            // persist or apply (a storage error) stops as a whole and
            // comes back from its durable state, rather than serving on
            // without a control plane.
            tracing::error!(error = %e, "control plane failed; stopping the node");
            if sim {
                panic!("control plane failed: {e}");
            }
            std::process::exit(70);
        }
    };
    if sim {
        tokio::spawn(run);
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("start ring runtime"))?;
        std::thread::Builder::new()
            .name("ring".into())
            .spawn(move || rt.block_on(run))
            .map_err(Error::io("start ring thread"))?;
    }
    Ok(handle)
}

impl RingHandle {
    /// The other nodes of the cluster with their gRPC URLs (empty until
    /// the peers file is complete).
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.shared
            .peers
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// How long a write may wait to be ordered and applied.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// The ring as this node sees it now.
    pub fn status(&self) -> pb::RingStatus {
        self.shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Orders a catalog update through the ring and waits until this node
    /// has applied it (so every member of the ring holds it durably). If it
    /// is not applied within the write timeout it is withdrawn, if still
    /// possible, and the error names the reason (typically: no quorum).
    pub async fn propose(&self, mut update: pb::CatalogUpdate) -> Result<Applied> {
        use prost::Message as _;
        let id = uuid::Uuid::new_v4().to_string();
        update.origin = self.me.to_string();
        update.proposal = id.clone();
        let payload = update.encode_to_vec();
        if payload.len() > MAX_UPDATE {
            return Err(Error::Invalid {
                what: "a catalog update is limited to 1 MiB",
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cmd = Cmd::Propose {
            id: id.clone(),
            payload,
            reply: tx,
        };
        self.order(cmd, id, rx, "write").await
    }

    /// Hands a proposal to the driver and waits for its outcome for up to
    /// the write timeout; then withdraws it, if it is not ordered yet, and
    /// says why (typically: no quorum).
    async fn order<T>(
        &self,
        cmd: Cmd,
        id: String,
        rx: tokio::sync::oneshot::Receiver<Result<T>>,
        what: &str,
    ) -> Result<T> {
        let stopped = || Error::Unavailable("the control plane has stopped".into());
        self.cmds.send(cmd).map_err(|_| stopped())?;
        match tokio::time::timeout(self.write_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => {
                let _ = self.cmds.send(Cmd::Withdraw(id));
                Err(Error::Unavailable(format!(
                    "{what} not committed within {:?}: {}",
                    self.write_timeout,
                    self.no_quorum()
                )))
            }
        }
    }

    /// Orders a layout change and waits until this node applied it: the
    /// layout after it and the seq of its entry, or why it was refused
    /// (`StaleLayout` when another change was ordered first).
    pub async fn propose_layout(&self, change: LayoutChange) -> Result<(Layout, u64)> {
        let (_, mut change) = self.plan_layout(change).await?;
        let id = uuid::Uuid::new_v4().to_string();
        change.proposal = id.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.order(
            Cmd::ProposeLayout { change, reply: tx },
            id,
            rx,
            "layout change",
        )
        .await
    }

    /// The newest layout of this node's log and `change` as this node would
    /// propose it against it (with the placement it computes), without
    /// ordering anything.
    ///
    /// The placement is computed here, on the blocking pool, never on the
    /// driver's thread: an assignment may take long (seconds, unoptimised,
    /// for a node that takes a replica of every partition), and a driver
    /// that holds the token that long is dropped from its ring.
    pub async fn plan_layout(&self, change: LayoutChange) -> Result<(Layout, LayoutChange)> {
        let stopped = || Error::Unavailable("the control plane has stopped".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cmds
            .send(Cmd::Newest { reply: tx })
            .map_err(|_| stopped())?;
        let newest = rx.await.map_err(|_| stopped())?;
        if newest.epoch != change.expect_epoch {
            // Refused as stale when ordered, whatever it carries.
            return Ok((newest, change));
        }
        let LayoutChange {
            expect_epoch,
            proposal,
            op,
        } = change;
        let op = if self.sim {
            newest.plan(op)?
        } else {
            let layout = newest.clone();
            tokio::task::spawn_blocking(move || layout.plan(op))
                .await
                .map_err(|e| Error::Unavailable(format!("planning failed: {e}")))??
        };
        let change = LayoutChange {
            expect_epoch,
            proposal,
            op,
        };
        Ok((newest, change))
    }

    /// Hands a message from a peer to the driver.
    pub(crate) fn receive(&self, from: NodeId, msg: Message<Payload>) -> Result<()> {
        self.cmds
            .send(Cmd::Receive(from, msg))
            .map_err(|_| Error::Unavailable("the control plane has stopped".into()))
    }

    /// Why this node's ring cannot commit now, as users see it.
    pub fn no_quorum(&self) -> String {
        let s = self.status();
        format!(
            "no quorum: this node's control plane is in phase {} with {} of {} voters in its ring",
            s.phase,
            s.members.len(),
            s.voters
        )
    }

    /// Whether this node is operational in a ring of a majority of voters.
    pub fn quorate(&self) -> bool {
        self.status().quorate
    }
}
