//! The outbox and the inbox: the storage side of the relay.
//!
//! An outbox row is a side effect written in the transaction that causes
//! it (remove a blob file, fetch a blob this node lacks, push a blob to
//! another node) and carried out afterwards, at least once, by the relay
//! (`crate::replication::relay`). An inbox row records, by (origin, outbox
//! seq), an effect that another node's outbox asked of this one, in the
//! transaction that carries it out, so that a row delivered again is a
//! no-op.

use redb::{ReadableDatabase, ReadableTable};
use rondo_core::{ContentHash, NodeId};

use super::Store;
use super::tables::*;
use crate::error::{Error, Result};

/// Appends a task to the outbox.
pub(super) fn push_outbox(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    task: OutboxTask,
) -> Result<()> {
    let n = meta.get(LAST_OUTBOX)?.map_or(0, |g| g.value()) + 1;
    meta.insert(LAST_OUTBOX, n)?;
    txn.open_table(OUTBOX)?
        .insert(n, task.encode().as_slice())?;
    Ok(())
}

/// A task in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxTask {
    /// Remove a blob file whose last song was deleted.
    DeleteBlob(ContentHash),
    /// Fetch a blob this node lacks, from the node that proposed the song
    /// first. When that node will push it here (`push_expected`), the fetch
    /// is a repair, tried only if the push has not come in a while.
    FetchBlob(FetchTask),
    /// Tell another node to hold a blob of a song this node proposed (it
    /// pulls the bytes it lacks): a delivery deduplicated by its inbox.
    PushBlob(PushTask),
}

/// A blob fetch waiting in the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchTask {
    pub hash: ContentHash,
    pub from: NodeId,
    pub push_expected: bool,
}

/// A blob push waiting in the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushTask {
    pub hash: ContentHash,
    pub to: NodeId,
    /// The ring entry of the song that uses the blob.
    pub entry_seq: u64,
}

impl OutboxTask {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(57);
        match self {
            OutboxTask::DeleteBlob(h) => {
                v.push(1u8);
                v.extend_from_slice(h.as_bytes());
            }
            OutboxTask::FetchBlob(t) => {
                v.push(if t.push_expected { 3 } else { 2 });
                v.extend_from_slice(t.hash.as_bytes());
                v.extend_from_slice(t.from.0.as_bytes());
            }
            OutboxTask::PushBlob(t) => {
                v.push(4);
                v.extend_from_slice(t.hash.as_bytes());
                v.extend_from_slice(t.to.0.as_bytes());
                v.extend_from_slice(&t.entry_seq.to_be_bytes());
            }
        }
        v
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let node = |b: &[u8]| uuid::Uuid::from_slice(b).ok().map(NodeId);
        match bytes.split_first() {
            Some((1, rest)) => Some(OutboxTask::DeleteBlob(ContentHash(rest.try_into().ok()?))),
            Some((tag @ (2 | 3), rest)) if rest.len() == 48 => {
                let (h, n) = rest.split_at(32);
                Some(OutboxTask::FetchBlob(FetchTask {
                    hash: ContentHash(h.try_into().ok()?),
                    from: node(n)?,
                    push_expected: *tag == 3,
                }))
            }
            Some((4, rest)) if rest.len() == 56 => {
                let (h, rest) = rest.split_at(32);
                let (n, seq) = rest.split_at(16);
                Some(OutboxTask::PushBlob(PushTask {
                    hash: ContentHash(h.try_into().ok()?),
                    to: node(n)?,
                    entry_seq: u64::from_be_bytes(seq.try_into().ok()?),
                }))
            }
            _ => None,
        }
    }
}

/// An outbox row of another node, delivered here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub origin: NodeId,
    pub outbox_seq: u64,
    /// The origin's lowest pending outbox seq: its rows below are never
    /// sent again.
    pub low_water: u64,
}

/// What a delivery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The blob was stored (with the inbox row).
    Stored,
    /// The blob was here already, or nothing wants it: only the inbox row
    /// was written.
    Held,
    /// Delivered before: nothing was done.
    Duplicate,
}

/// Records a delivery in the inbox, forgetting the origin's rows it will
/// never send again; false if it was there already.
pub(super) fn record_delivery(txn: &redb::WriteTransaction, d: &Delivery) -> Result<bool> {
    let origin = d.origin.0.as_u128();
    let mut inbox = txn.open_table(INBOX)?;
    if inbox.get((origin, d.outbox_seq))?.is_some() {
        return Ok(false);
    }
    if d.low_water > 0 {
        inbox.retain_in(
            (origin, 0)..(origin, d.low_water.min(d.outbox_seq)),
            |_, ()| false,
        )?;
    }
    inbox.insert((origin, d.outbox_seq), ())?;
    Ok(true)
}

/// The outbox as one pass of the relay sees it, read in one scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Blob files to remove, by outbox seq (`None`: an undecodable row, to
    /// drop); carried out by [`Store::run_local`].
    pub local: Vec<(u64, Option<ContentHash>)>,
    /// Blob fetches and pushes, by outbox seq.
    pub network: Vec<(u64, OutboxTask)>,
    /// The lowest seq in the outbox (0 if it is empty): the origin's rows
    /// below it will never be sent again.
    pub low_water: u64,
}

impl Store {
    /// Records a delivery whose effect is done already (the blob is here)
    /// or moot (nothing wants it).
    pub(super) fn note_delivery(&self, delivery: Option<&Delivery>) -> Result<Delivered> {
        let Some(d) = delivery else {
            return Ok(Delivered::Held);
        };
        let txn = self.db.begin_write()?;
        let fresh = record_delivery(&txn, d)?;
        txn.commit()?;
        Ok(if fresh {
            Delivered::Held
        } else {
            Delivered::Duplicate
        })
    }

    /// Sorts a batch of deliveries from one origin, in one transaction:
    /// rows seen before are `Duplicate`; rows whose blob is here or no
    /// longer wanted are recorded in the inbox (`Held`); the rest (`None`)
    /// need the blob pulled, then [`Store::put_wanted`] with the delivery.
    pub fn deliver_batch(
        &self,
        origin: NodeId,
        low_water: u64,
        rows: &[(u64, ContentHash)],
    ) -> Result<Vec<Option<Delivered>>> {
        let _guard = self.lock_blobs();
        let mut txn = self.db.begin_write()?;
        // Only rows whose effect is done already or moot are written here:
        // if a crash loses them, the origin sends them again and they are
        // found done again. Not fsync'd (a later durable commit persists
        // them), so pushes cost the disk nothing while the ring writes.
        txn.set_durability(redb::Durability::None)
            .map_err(redb::Error::from)?;
        let mut out = Vec::with_capacity(rows.len());
        {
            let blobs = txn.open_table(BLOBS)?;
            let wanted = txn.open_table(WANTED)?;
            let key = origin.0.as_u128();
            for (seq, hash) in rows {
                let seen = txn.open_table(INBOX)?.get((key, *seq))?.is_some();
                let decided = if seen {
                    Some(Delivered::Duplicate)
                } else if blobs.get(hash.as_bytes())?.is_some()
                    || wanted.get(hash.as_bytes())?.is_none()
                {
                    let d = Delivery {
                        origin,
                        outbox_seq: *seq,
                        low_water,
                    };
                    record_delivery(&txn, &d)?;
                    Some(Delivered::Held)
                } else {
                    None
                };
                out.push(decided);
            }
        }
        txn.commit()?;
        Ok(out)
    }

    /// Every task waiting in the outbox, in one scan.
    pub fn pending(&self) -> Result<Pending> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut pending = Pending {
            low_water: table.first()?.map_or(0, |(k, _)| k.value()),
            ..Pending::default()
        };
        for row in table.iter()? {
            let (k, v) = row?;
            match OutboxTask::decode(v.value()) {
                Some(OutboxTask::DeleteBlob(hash)) => pending.local.push((k.value(), Some(hash))),
                Some(t) => pending.network.push((k.value(), t)),
                None => pending.local.push((k.value(), None)),
            }
        }
        Ok(pending)
    }

    /// Removes done outbox tasks, in one transaction.
    pub fn finish_tasks(&self, done: &[u64]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        // A done row that a crash brings back is carried out again, which
        // finds it done (a blob here, a delivery answered as a duplicate):
        // no fsync needed.
        txn.set_durability(redb::Durability::None)
            .map_err(redb::Error::from)?;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            for n in done {
                outbox.remove(*n)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Carries out pending local outbox tasks (blob fetches and pushes are
    /// left to the relay); returns how many were done.
    pub fn run_outbox(&self) -> Result<usize> {
        let pending = self.pending()?;
        self.run_local(&pending.local)
    }

    /// Carries out local outbox tasks (see [`Pending::local`]), each in its
    /// own transaction that removes its row; returns how many were done.
    pub fn run_local(&self, tasks: &[(u64, Option<ContentHash>)]) -> Result<usize> {
        let mut done = 0;
        for &(n, task) in tasks {
            let _guard = self.lock_blobs();
            let txn = self.db.begin_write()?;
            match task {
                Some(hash) => {
                    // A later upload of the same bytes may have brought the
                    // blob back: then it stays.
                    if txn.open_table(BLOBS)?.get(hash.as_bytes())?.is_none() {
                        self.forget_sizes(&hash);
                        match std::fs::remove_file(self.blob_path(&hash)) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(Error::io("remove blob")(e)),
                        }
                    }
                }
                None => tracing::error!(outbox = n, "dropping undecodable outbox task"),
            }
            txn.open_table(OUTBOX)?.remove(n)?;
            txn.commit()?;
            done += 1;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testutil::*;

    #[tokio::test]
    async fn the_proposer_pushes_to_the_layout_and_the_others_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, stranger) = (
            NodeId::new_random(),
            NodeId::new_random(),
            NodeId::new_random(),
        );
        let layout = in_layout(&store, &[a, b]);
        let me = store.node_id();
        // Its own song, blob here: a push to each other node of the layout.
        store.put_blob(staged(&store, b"mine").await).unwrap();
        store
            .apply_update(
                2,
                &upsert(song(SongId::new_random()), b"mine", me),
                Some(&layout),
            )
            .unwrap();
        // Songs of others, blob missing: a fetch that waits for the push
        // when the proposer is in the layout, and one that does not when
        // it is not (the push will never come).
        store
            .apply_update(
                3,
                &upsert(song(SongId::new_random()), b"from a", a),
                Some(&layout),
            )
            .unwrap();
        store
            .apply_update(
                4,
                &upsert(song(SongId::new_random()), b"far", stranger),
                Some(&layout),
            )
            .unwrap();
        let pending = store.pending().unwrap();
        let (tasks, low) = (pending.network, pending.low_water);
        let mine = ContentHash::of(b"mine");
        let mut pushes: Vec<NodeId> = tasks
            .iter()
            .filter_map(|(_, t)| match t {
                OutboxTask::PushBlob(p) if p.hash == mine && p.entry_seq == 2 => Some(p.to),
                _ => None,
            })
            .collect();
        pushes.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(pushes, expected);
        let fetches: Vec<(ContentHash, NodeId, bool)> = tasks
            .iter()
            .filter_map(|(_, t)| match t {
                OutboxTask::FetchBlob(f) => Some((f.hash, f.from, f.push_expected)),
                _ => None,
            })
            .collect();
        assert_eq!(
            fetches,
            vec![
                (ContentHash::of(b"from a"), a, true),
                (ContentHash::of(b"far"), stranger, false)
            ]
        );
        assert_eq!(low, tasks[0].0);
        assert_eq!(tasks.len(), 4);
    }

    #[tokio::test]
    async fn a_delivery_is_carried_out_once_and_forgotten_below_the_low_water() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = NodeId::new_random();
        let layout = in_layout(&store, &[a]);
        store
            .apply_update(
                2,
                &upsert(song(SongId::new_random()), b"pushed", a),
                Some(&layout),
            )
            .unwrap();
        let hash = ContentHash::of(b"pushed");
        let d = |outbox_seq, low_water| Delivery {
            origin: a,
            outbox_seq,
            low_water,
        };
        assert_eq!(
            store
                .put_wanted(staged(&store, b"pushed").await, Some(d(7, 5)))
                .unwrap(),
            Delivered::Stored
        );
        assert!(!store.wants_blob(&hash).unwrap());
        assert!(delivered(&store, a, 7));
        // Sent again (the answer was lost): nothing happens.
        assert_eq!(
            store
                .put_wanted(staged(&store, b"pushed").await, Some(d(7, 5)))
                .unwrap(),
            Delivered::Duplicate
        );
        assert_eq!(deliver_held(&store, d(7, 5), hash), Delivered::Duplicate);
        let st = store.stats().unwrap();
        assert_eq!((st.blob_count, st.inbox_len), (1, 1));
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
        // The origin reports it will never send rows below 9 again: row 7
        // is forgotten.
        assert_eq!(deliver_held(&store, d(9, 9), hash), Delivered::Held);
        assert!(!delivered(&store, a, 7));
        assert!(delivered(&store, a, 9));
        assert_eq!(store.stats().unwrap().inbox_len, 1);
        // A batch sorts its rows in one transaction: seen before, here
        // already (recorded), still to fetch (not recorded yet).
        store
            .apply_update(
                3,
                &upsert(song(SongId::new_random()), b"later", a),
                Some(&layout),
            )
            .unwrap();
        let sorted = store
            .deliver_batch(
                a,
                9,
                &[(9, hash), (11, hash), (12, ContentHash::of(b"later"))],
            )
            .unwrap();
        assert_eq!(
            sorted,
            vec![Some(Delivered::Duplicate), Some(Delivered::Held), None]
        );
        assert!(delivered(&store, a, 11));
        assert!(!delivered(&store, a, 12));
        // A blob nothing wants is not stored by a delivery: no orphan.
        assert_eq!(
            store
                .put_wanted(staged(&store, b"nobody").await, Some(d(13, 9)))
                .unwrap(),
            Delivered::Held
        );
        assert!(
            store
                .blob_size(&ContentHash::of(b"nobody"))
                .unwrap()
                .is_none()
        );
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
    }
}
