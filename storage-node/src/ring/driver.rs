//! The driver: one owned [`Driver`] that runs the sans-IO token-ring core
//! (`rondo-ring`), the way `vrrp`'s driver runs its state machine. It takes
//! commands (a message from a peer, a local proposal) from a channel, fires
//! the core's timers itself, carries out every output in order (persistence
//! in one durable transaction before any send that follows it), applies
//! safe entries to the store and answers the proposals waiting for them,
//! and publishes the ring's status to the handle.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rondo_proto::ring::v1 as proto;
use rondo_proto::storage::v1 as pb;
use rondo_ring::{Body, Config, Entry, Input, Layout, LogPos, Node, Output, Phase, RingId, Timer};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::bootstrap::{base_layout, protocol_config};
use super::peers::{Senders, fetch_snapshot};
use super::{Cmd, Context, Payload, Shared, Waiters, wire};
use crate::error::{Error, Result};
use crate::store::Applied;

/// The control plane of one node while it runs.
pub(super) struct Driver {
    ctx: Context,
    node: Node<Payload>,
    /// The layout the node started with (PROTOCOL.md, "Layout changes").
    base: Layout,
    /// The layout as applied (the store's), once one was.
    applied_layout: Option<Layout>,
    senders: Senders,
    timers: BTreeMap<Timer, Instant>,
    waiters: Waiters,
    rng: rand::rngs::StdRng,
    /// The runtime the peer senders and snapshot fetches run on.
    runtime: tokio::runtime::Handle,
    /// Commands to the driver itself (links, snapshots).
    cmds: UnboundedSender<Cmd>,
    shared: std::sync::Arc<Shared>,
    /// A snapshot was installed: the digest changed without an `Apply`.
    installed: bool,
}

impl Driver {
    /// Loads the durable state, settles the base layout and runs until the
    /// handle and every sender are gone.
    pub(super) async fn run(
        ctx: Context,
        mut rx: UnboundedReceiver<Cmd>,
        cmds: UnboundedSender<Cmd>,
        shared: std::sync::Arc<Shared>,
        runtime: tokio::runtime::Handle,
    ) -> Result<()> {
        let durable = ctx.store.ring_load()?;
        let log_empty = durable.last().seq == 0;
        let (base, deferred) = base_layout(&ctx, log_empty, &mut rx, &shared).await;
        if log_empty && ctx.config.ring.auto_join && !ctx.config.ring.seeds.is_empty() {
            runtime.spawn(super::join::settle(
                ctx.net.clone(),
                ctx.config.clone(),
                ctx.me,
                shared.clone(),
            ));
        }
        let mut node = Node::new(ctx.me, Config::for_nodes(1), base.clone(), durable);
        let ring = &ctx.config.ring;
        let mut config = protocol_config(node.layout().nodes.len().max(1), ring.token_timeout_ms);
        if let Some(n) = ring.fetch_entries {
            config.max_fetch = n.max(1);
        }
        if let Some(n) = ring.keep_entries {
            config.keep_log = n;
        }
        node.set_config(config);
        tracing::info!(node = %ctx.me, nodes = node.layout().nodes.len(), epoch = node.layout().epoch, promised = ?node.durable().promised, applied = node.durable().applied, "control plane starting");
        let mut driver = Driver {
            applied_layout: ctx.store.ring_layout()?,
            rng: ctx.net.rng(),
            ctx,
            node,
            base,
            senders: Senders::default(),
            timers: BTreeMap::new(),
            waiters: Waiters::default(),
            runtime,
            cmds,
            shared,
            installed: false,
        };
        let mut outputs = driver.node.handle(Input::Start);
        for cmd in deferred {
            outputs.extend(driver.take(cmd));
        }
        driver.serve(rx, outputs).await
    }

    /// The loop: carry out the outputs, publish, wait for a command or the
    /// next timer, hand it to the core.
    async fn serve(
        mut self,
        mut rx: UnboundedReceiver<Cmd>,
        mut outputs: Vec<Output<Payload>>,
    ) -> Result<()> {
        loop {
            self.senders.sync(
                self.node.layout(),
                self.ctx.me,
                &self.ctx.net,
                &self.runtime,
                &self.cmds,
                &self.shared,
            );
            self.carry_out(&outputs)?;
            let applied = self.installed || outputs.iter().any(|o| matches!(o, Output::Apply(_)));
            self.installed = false;
            self.publish(applied);
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let cmd = match next {
                Some((timer, at)) if at <= Instant::now() => {
                    self.timers.remove(&timer);
                    outputs = self.node.handle(Input::Fired(timer));
                    continue;
                }
                Some((timer, at)) => tokio::select! {
                    biased;
                    cmd = rx.recv() => match cmd {
                        Some(cmd) => cmd,
                        None => return Ok(()),
                    },
                    () = tokio::time::sleep_until(at) => {
                        self.timers.remove(&timer);
                        outputs = self.node.handle(Input::Fired(timer));
                        continue;
                    }
                },
                None => match rx.recv().await {
                    Some(cmd) => cmd,
                    None => return Ok(()),
                },
            };
            outputs = match cmd {
                Cmd::SnapshotReady {
                    from,
                    ring,
                    at,
                    layout,
                    rows,
                } => self.install_snapshot(from, ring, at, layout, rows)?,
                cmd => self.take(cmd),
            };
        }
    }

    /// Hands one command to the core.
    fn take(&mut self, cmd: Cmd) -> Vec<Output<Payload>> {
        let node = &mut self.node;
        match cmd {
            Cmd::Receive(from, msg) => node.handle(Input::Receive { from, msg }),
            Cmd::Propose { id, payload, reply } => {
                self.waiters.updates.insert(id, (payload.clone(), reply));
                node.handle(Input::Propose(payload))
            }
            Cmd::ProposeLayout { change, reply } => {
                // Planned by the caller, off this thread (RingHandle::
                // plan_layout): one that still lacks its table was planned
                // against an older layout than this node has now.
                if node.layout().epoch == change.expect_epoch
                    && unplanned(node.layout(), &change.op)
                {
                    let _ = reply.send(Err(Error::Unavailable(
                        "this node caught up while the change was planned; try again".into(),
                    )));
                    Vec::new()
                } else {
                    self.waiters.layouts.insert(change.proposal.clone(), reply);
                    node.handle(Input::ProposeLayout(change))
                }
            }
            Cmd::Newest { reply } => {
                let _ = reply.send(node.layout().clone());
                Vec::new()
            }
            Cmd::Withdraw(id) => {
                if let Some((payload, _)) = self.waiters.updates.remove(&id) {
                    node.withdraw(|b| matches!(b, Body::Update(p) if *p == payload));
                }
                if self.waiters.layouts.remove(&id).is_some() {
                    node.withdraw(|b| matches!(b, Body::Layout(c) if c.proposal == id));
                }
                Vec::new()
            }
            Cmd::Link(peer, up) => {
                tracing::info!(%peer, up, "link to peer");
                node.handle(Input::Link { peer, up })
            }
            Cmd::SnapshotReady { .. } => Vec::new(),
        }
    }

    /// Installs a snapshot the core asked for, if it still wants it.
    fn install_snapshot(
        &mut self,
        from: rondo_core::NodeId,
        ring: RingId,
        at: LogPos,
        layout: Layout,
        rows: Vec<proto::SnapshotRow>,
    ) -> Result<Vec<Output<Payload>>> {
        if !self.node.wants_snapshot(ring, at) {
            return Ok(Vec::new());
        }
        let n = rows.len();
        self.ctx.store.install_snapshot(at, &layout, from, rows)?;
        tracing::info!(%from, at = at.seq, rows = n, "snapshot installed");
        self.ctx.outbox.notify_one();
        self.ctx.metrics.refresh(&self.ctx.store);
        self.applied_layout = self.ctx.store.ring_layout()?;
        self.installed = true;
        Ok(self
            .node
            .handle(Input::SnapshotInstalled { ring, at, layout }))
    }

    /// Carries out the core's outputs in order: consecutive persistence
    /// outputs go in one transaction, before the sends that follow them.
    fn carry_out(&mut self, outputs: &[Output<Payload>]) -> Result<()> {
        let mut batch: Vec<&Output<Payload>> = Vec::new();
        for o in outputs {
            match o {
                Output::PersistPromise(_)
                | Output::Truncate { .. }
                | Output::PersistEntries(_)
                | Output::Compact(_) => batch.push(o),
                Output::Apply(entry) => {
                    self.ctx.store.ring_persist(&batch)?;
                    batch.clear();
                    self.apply(entry)?;
                }
                Output::InstallSnapshot {
                    from,
                    ring,
                    at,
                    layout,
                } => {
                    self.ctx.store.ring_persist(&batch)?;
                    batch.clear();
                    self.fetch_snapshot(*from, *ring, *at, layout.clone());
                }
                Output::Send { to, msg } => {
                    self.ctx.store.ring_persist(&batch)?;
                    batch.clear();
                    if let Some(tx) = self.senders.get(to) {
                        let envelope = wire::message_to_wire(self.ctx.me, msg);
                        if tx.try_send(envelope).is_err() {
                            tracing::debug!(peer = %to, "ring send queue full; message dropped");
                        }
                    }
                }
                Output::SetTimer { timer, after } => {
                    let jitter = match timer {
                        // Spread competing candidates (PROTOCOL.md, "Gather").
                        Timer::JoinWindow | Timer::Consensus => {
                            after.mul_f64(self.rng.random_range(0.0..0.5))
                        }
                        _ => Duration::ZERO,
                    };
                    self.timers.insert(*timer, Instant::now() + *after + jitter);
                }
                Output::CancelTimer(timer) => {
                    self.timers.remove(timer);
                }
            }
        }
        self.ctx.store.ring_persist(&batch)
    }

    /// Starts fetching the snapshot of `from` (it comes back as
    /// `Cmd::SnapshotReady`).
    fn fetch_snapshot(&self, from: rondo_core::NodeId, ring: RingId, at: LogPos, layout: Layout) {
        let url = self
            .shared
            .peers
            .lock()
            .ok()
            .and_then(|p| p.get(&from).cloned());
        let Some(url) = url else {
            tracing::warn!(%from, "snapshot source has no address");
            return;
        };
        tracing::info!(%from, at = at.seq, "behind the source's compacted log: taking its snapshot");
        let task = fetch_snapshot(
            self.ctx.net.clone(),
            url,
            from,
            ring,
            at,
            layout,
            self.cmds.clone(),
        );
        self.runtime.spawn(async move {
            if let Err(e) = task.await {
                // The ring times out and forms again.
                tracing::warn!(error = %e, "snapshot not installed");
            }
        });
    }

    /// Applies one safe entry (one transaction with `last_applied`) and
    /// answers the client if this node proposed it.
    fn apply(&mut self, entry: &Entry<Payload>) -> Result<()> {
        let store = &self.ctx.store;
        match &entry.body {
            Body::RingStart { genesis, .. } => {
                store.apply_marker(entry.seq, genesis.as_ref())?;
                if genesis.is_some() {
                    self.applied_layout = store.ring_layout()?;
                }
            }
            Body::Layout(change) => {
                let before = self.applied_layout.as_ref().unwrap_or(&self.base);
                let outcome = store.apply_layout(entry.seq, change, before)?;
                match &outcome {
                    Ok(layout) => {
                        tracing::info!(seq = entry.seq, epoch = layout.epoch, op = ?change.op, "layout changed");
                        self.ctx.layout_changed.notify_one();
                    }
                    Err(refusal) => {
                        tracing::info!(seq = entry.seq, op = ?change.op, %refusal, "layout change refused")
                    }
                }
                // The store's, which a replayed entry does not change.
                self.applied_layout = store.ring_layout()?;
                if let Some(reply) = self.waiters.layouts.remove(&change.proposal) {
                    // `Health` shows the new layout before the proposer's
                    // client hears of it, so that its next change is
                    // decided against this one.
                    self.publish(true);
                    let _ = reply.send(
                        outcome
                            .map(|layout| (layout, entry.seq))
                            .map_err(Error::from),
                    );
                }
            }
            Body::Update(payload) => {
                let applied =
                    store.apply_update(entry.seq, payload, self.applied_layout.as_ref())?;
                if matches!(
                    applied,
                    Applied::Stored {
                        change_seq: None,
                        ..
                    }
                ) {
                    // The fetch task is committed with the entry; not yet run.
                    crate::failpoint("apply-before-fetch");
                }
                self.ctx.outbox.notify_one();
                use prost::Message as _;
                let proposal = pb::CatalogUpdate::decode(payload.as_slice())
                    .map(|u| u.proposal)
                    .unwrap_or_default();
                if let Some((_, reply)) = self.waiters.updates.remove(&proposal) {
                    let _ = reply.send(Ok(applied));
                }
            }
        }
        Ok(())
    }

    /// Publishes the ring as this node sees it to the handle (`Health`).
    fn publish(&self, applied: bool) {
        let node = &self.node;
        let layout = self
            .applied_layout
            .as_ref()
            .unwrap_or_else(|| node.layout());
        // The digest is read from the store only when something was applied,
        // not on every token pass.
        let previous = self
            .shared
            .status
            .lock()
            .map(|s| s.catalog_digest.clone())
            .unwrap_or_default();
        let digest = if applied || previous.is_empty() {
            self.ctx
                .store
                .ring_applied()
                .map(|(_, d)| d)
                .unwrap_or_default()
        } else {
            previous
        };
        let d = node.durable();
        let (ring, members) = match node.ring() {
            Some((id, m)) => (id, m.clone()),
            None => (d.promised, Default::default()),
        };
        let phase = match node.phase() {
            _ if node.removed() => "removed",
            Phase::Gather => "gather",
            Phase::Recover => "recover",
            Phase::Operational => "operational",
        };
        let voters = layout.voters();
        let quorate = matches!(node.phase(), Phase::Operational)
            && !node.removed()
            && rondo_ring::is_quorate(&members, &voters);
        let s = pb::RingStatus {
            phase: phase.into(),
            ring_counter: ring.counter,
            ring_rep: ring.rep.to_string(),
            members: members.iter().map(ToString::to_string).collect(),
            last_applied_seq: d.applied,
            last_log_seq: d.last().seq,
            compacted_seq: d.compacted_seq(),
            rotations: node.last_rotation(),
            catalog_digest: digest,
            voters: u32::try_from(voters.len()).unwrap_or(u32::MAX),
            is_voter: voters.contains(&self.ctx.me),
            layout: Some(wire::layout_to_wire(layout)),
            quorate,
        };
        if let Ok(mut guard) = self.shared.status.lock() {
            *guard = s;
        }
    }
}

/// Whether `op`, decided against `newest`, still needs the table
/// `Layout::plan` would give it (which this thread never computes).
fn unplanned(newest: &Layout, op: &rondo_ring::LayoutOp) -> bool {
    use rondo_ring::LayoutOp;
    match op {
        LayoutOp::SetReplication { placement, .. } | LayoutOp::SetStanding { placement, .. } => {
            placement.is_none()
        }
        LayoutOp::SetStorage { placement, .. } => placement.is_none() && newest.placement.is_some(),
        _ => false,
    }
}
