//! The control plane's durable state: the promise, the ordered log, the
//! compacted prefix, the applied seq with the catalog digest, and the
//! layout as applied (`ring_meta` and `ring_log`).

use prost::Message;
use redb::{ReadableDatabase, ReadableTable};
use rondo_ring::{Durable, Layout, LayoutChange, Output, Refusal};

use super::Store;
use super::tables::*;
use crate::error::Result;
use crate::ring::wire;

/// Key in `ring_meta`: the promised ring id (a `ring.v1.RingId`).
const RING_PROMISED: &str = "promised";

impl Store {
    /// Records a ring start (no catalog update); the log's first one
    /// carries the genesis layout, recorded as the applied layout.
    pub fn apply_marker(&self, seq: u64, genesis: Option<&Layout>) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut ring = txn.open_table(RING_META)?;
            if seq > applied_seq(&ring)? {
                ring.insert(RING_APPLIED, seq.to_be_bytes().as_slice())?;
                if let Some(layout) = genesis {
                    set_applied_layout(&mut ring, layout)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Applies one ordered layout change (ring entry `seq`) in one
    /// transaction with `last_applied` and the digest: the layout after it,
    /// or why it was refused (the same on every node, since every node
    /// applies the same changes in the same order). `before` is the layout
    /// to change when none is recorded (a log from before layouts).
    pub fn apply_layout(
        &self,
        seq: u64,
        change: &LayoutChange,
        before: &Layout,
    ) -> Result<std::result::Result<Layout, Refusal>> {
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut ring = txn.open_table(RING_META)?;
            let current = applied_layout(&ring)?.unwrap_or_else(|| before.clone());
            let outcome = current.apply_at(seq, change);
            if seq <= applied_seq(&ring)? {
                return Ok(outcome);
            }
            // The digest covers the decision, not the proposal's name.
            let mut decided = wire::change_to_wire(change);
            decided.proposal.clear();
            fold_applied(&mut ring, seq, &decided.encode_to_vec())?;
            if let Ok(layout) = &outcome {
                set_applied_layout(&mut ring, layout)?;
            }
            outcome
        };
        txn.commit()?;
        Ok(outcome)
    }

    /// The layout as last applied, if any was.
    pub fn ring_layout(&self) -> Result<Option<Layout>> {
        let txn = self.db.begin_read()?;
        applied_layout(&txn.open_table(RING_META)?)
    }

    /// The last applied ring seq and the catalog digest (hex).
    pub fn ring_applied(&self) -> Result<(u64, String)> {
        let txn = self.db.begin_read()?;
        let ring = txn.open_table(RING_META)?;
        let digest = ring
            .get(RING_DIGEST)?
            .map(|g| hex::encode(g.value()))
            .unwrap_or_default();
        Ok((applied_seq(&ring)?, digest))
    }

    /// The last applied ring seq and the layout as applied, read in one
    /// transaction (so they belong together).
    pub fn ring_applied_layout(&self) -> Result<(u64, Option<Layout>)> {
        let txn = self.db.begin_read()?;
        let ring = txn.open_table(RING_META)?;
        Ok((applied_seq(&ring)?, applied_layout(&ring)?))
    }

    /// The control plane's durable state, as last persisted.
    pub fn ring_load(&self) -> Result<Durable<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(RING_META)?;
        let mut durable = Durable::default();
        if let Some(bytes) = meta.get(RING_PROMISED)? {
            let id: rondo_proto::ring::v1::RingId = decode("ring_meta", bytes.value())?;
            durable.promised = wire::ring_id_from_wire(Some(id))?;
        }
        durable.applied = applied_seq(&meta)?;
        if let Some(bytes) = meta.get(RING_COMPACTED)? {
            let c: rondo_proto::ring::v1::Compacted = decode("ring_meta", bytes.value())?;
            durable.compacted = Some(wire::compacted_from_wire(c)?);
        }
        for row in txn.open_table(RING_LOG)?.iter()? {
            let (seq, bytes) = row?;
            let entry: rondo_proto::ring::v1::Entry = decode("ring_log", bytes.value())?;
            durable
                .log
                .insert(seq.value(), wire::entry_from_wire(entry)?);
        }
        Ok(durable)
    }

    /// Carries out the control plane's persistence outputs in one durable
    /// transaction: promises, truncations, appends and compactions, in the
    /// order given.
    pub fn ring_persist(&self, outputs: &[&Output<Vec<u8>>]) -> Result<()> {
        if outputs.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(RING_META)?;
            let mut log = txn.open_table(RING_LOG)?;
            for o in outputs {
                match o {
                    Output::PersistPromise(id) => {
                        let id = wire::ring_id_to_wire(*id);
                        meta.insert(RING_PROMISED, id.encode_to_vec().as_slice())?;
                    }
                    Output::Truncate { after } => {
                        log.retain_in(after.saturating_add(1).., |_, _| false)?;
                    }
                    Output::PersistEntries(entries) => {
                        for e in entries {
                            let entry = wire::entry_to_wire(e);
                            log.insert(e.seq, entry.encode_to_vec().as_slice())?;
                        }
                    }
                    Output::Compact(c) => {
                        log.retain_in(..=c.last.seq, |_, _| false)?;
                        set_compacted(&mut meta, c)?;
                    }
                    _ => {}
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// Records the compacted log prefix.
pub(super) fn set_compacted(ring: &mut RingMeta<'_>, c: &rondo_ring::Compacted) -> Result<()> {
    let bytes = wire::compacted_to_wire(c).encode_to_vec();
    ring.insert(RING_COMPACTED, bytes.as_slice())?;
    Ok(())
}
