//! The storage side of placement: which blobs this node should hold and
//! lacks (the resync worker fetches them), which it holds and should not
//! (it gives them up once their owners hold them), and giving a copy up.
//!
//! Every answer is derived from the tables and the applied layout, so the
//! worker persists nothing: a restart finds the same work again.
//!
//! Giving a copy up is two steps. First, in one transaction, the blob
//! leaves the index (its references move to `wanted`, as on a node that
//! never held it) and every song using it is announced `released` on the
//! change stream, so gateways stop signing URLs for this node. Then, after
//! a linger that lets streams already signed finish, the file goes, unless
//! the index took the blob back meanwhile. A crash in between leaves a file
//! the index does not know, which the start-up sweep removes.

use redb::{ReadableDatabase, ReadableTable};
use rondo_core::ContentHash;

use super::tables::*;
use super::{OutboxTask, Store};
use crate::error::{Error, Result};

impl Store {
    /// Blobs songs use that this node should hold under `layout` and lacks,
    /// less those an outbox fetch is already queued for (it may be waiting
    /// for a push): read in one transaction.
    pub fn owned_missing(&self, layout: &rondo_ring::Layout) -> Result<Vec<ContentHash>> {
        let txn = self.db.begin_read()?;
        let mut queued = std::collections::HashSet::new();
        for row in txn.open_table(OUTBOX)?.iter()? {
            let (_, v) = row?;
            if let Some(OutboxTask::FetchBlob(f)) = OutboxTask::decode(v.value()) {
                queued.insert(f.hash);
            }
        }
        let mut out = Vec::new();
        for row in txn.open_table(WANTED)?.iter()? {
            let (k, v) = row?;
            let hash = ContentHash(*k.value());
            if v.value() > 0 && layout.should_hold(self.id, &hash) && !queued.contains(&hash) {
                out.push(hash);
            }
        }
        Ok(out)
    }

    /// The epoch of the newest placement if this node owns partitions of
    /// it, has not synced it yet, and holds every blob it owns there that a
    /// song uses (fetches queued or not): the `Synced` it may order now.
    /// Read in one transaction with the layout it is checked against.
    pub fn sync_due(&self) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let Some(layout) = applied_layout(&txn.open_table(RING_META)?)? else {
            return Ok(None);
        };
        let Some(epoch) = layout.placement.as_ref().map(|p| p.epoch) else {
            return Ok(None);
        };
        if !layout.owns(self.id) || layout.synced.get(&self.id).is_some_and(|s| *s >= epoch) {
            return Ok(None);
        }
        for row in txn.open_table(WANTED)?.iter()? {
            let (k, v) = row?;
            if v.value() > 0 && layout.should_hold(self.id, &ContentHash(*k.value())) {
                return Ok(None);
            }
        }
        Ok(Some(epoch))
    }

    /// The bytes of the blobs `hashes` (as the songs using them record
    /// them, each blob once): what the resync worker has to fetch. A scan
    /// of the songs, made only while it has work.
    pub fn wanted_bytes(&self, hashes: &[ContentHash]) -> Result<u64> {
        if hashes.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_read()?;
        let all = catalog_blobs(&txn)?;
        Ok(hashes
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .filter_map(|h| all.get(h.as_bytes()).map(|(size, _)| *size))
            .sum())
    }

    /// Blobs this node holds for songs that it should not hold under
    /// `layout`, with their sizes. Copies taken ahead of a song (no song
    /// uses them yet) are left to their own release.
    pub fn misplaced(&self, layout: &rondo_ring::Layout) -> Result<Vec<(ContentHash, u64)>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(BLOBS)?.iter()? {
            let (k, v) = row?;
            let hash = ContentHash(*k.value());
            let (size, refs) = v.value();
            if refs > 0 && !layout.should_hold(self.id, &hash) {
                out.push((hash, size));
            }
        }
        Ok(out)
    }

    /// Which of `hashes` this node holds (indexed).
    pub fn holds(&self, hashes: &[ContentHash]) -> Result<Vec<bool>> {
        Ok(self.holdings(hashes, None)?.0)
    }

    /// Which of `hashes` this node holds (indexed), and which it holds for
    /// a song as an owner under placement `epoch`, if that is the
    /// placement it applied (read in one transaction): what a node giving
    /// its copy up may count on, since an owner never gives up what it
    /// owns while its placement is in force.
    pub fn holdings(
        &self,
        hashes: &[ContentHash],
        epoch: Option<u64>,
    ) -> Result<(Vec<bool>, Vec<bool>)> {
        let txn = self.db.begin_read()?;
        let layout = applied_layout(&txn.open_table(RING_META)?)?
            .filter(|l| Some(l.placement_epoch()) == epoch);
        let blobs = txn.open_table(BLOBS)?;
        let mut held = Vec::with_capacity(hashes.len());
        let mut confirmed = Vec::with_capacity(hashes.len());
        for h in hashes {
            let entry = blobs.get(h.as_bytes())?.map(|g| g.value());
            held.push(entry.is_some());
            confirmed.push(
                entry.is_some_and(|(_, refs)| refs > 0)
                    && layout.as_ref().is_some_and(|l| l.should_hold(self.id, h)),
            );
        }
        Ok((held, confirmed))
    }

    /// Gives up this node's copies of `hashes`, whose owners under `layout`
    /// were all seen holding them: in one transaction, each leaves the
    /// index (its references stay, as wanted) and the songs using it are
    /// announced released. Skipped, and nothing changes, if the applied
    /// layout is no longer `layout`'s placement (the owners may differ), or
    /// for a blob this node should hold again or no song uses. Returns the
    /// blobs given up: their files go with [`Store::remove_released`].
    pub fn release_copies(
        &self,
        layout: &rondo_ring::Layout,
        hashes: &[ContentHash],
    ) -> Result<Vec<ContentHash>> {
        let _guard = self.lock_blobs();
        let txn = self.db.begin_write()?;
        let applied = applied_layout(&txn.open_table(RING_META)?)?;
        if applied.map(|l| l.placement_epoch()) != Some(layout.placement_epoch()) {
            return Ok(Vec::new());
        }
        let mut released = Vec::new();
        let mut changes = Vec::new();
        {
            let mut blobs = txn.open_table(BLOBS)?;
            let mut wanted = txn.open_table(WANTED)?;
            let mut meta = txn.open_table(META)?;
            let mut freed = 0u64;
            for hash in hashes {
                if layout.should_hold(self.id, hash) {
                    continue;
                }
                let Some((size, refs)) = blobs.get(hash.as_bytes())?.map(|g| g.value()) else {
                    continue;
                };
                if refs == 0 {
                    continue;
                }
                blobs.remove(hash.as_bytes())?;
                wanted.insert(hash.as_bytes(), refs)?;
                freed += size;
                released.push(*hash);
            }
            add_bytes_stored(&mut meta, -i128::from(freed))?;
            if !released.is_empty() {
                let gone: std::collections::HashSet<String> =
                    released.iter().map(ContentHash::to_hex).collect();
                changes = release_songs(&txn, &mut meta, &gone)?;
            }
        }
        txn.commit()?;
        self.announce(changes);
        Ok(released)
    }

    /// Removes the file of a blob given up by [`Store::release_copies`],
    /// unless the index has the blob again (fetched back meanwhile).
    pub fn remove_released(&self, hash: &ContentHash) -> Result<()> {
        let _guard = self.lock_blobs();
        let indexed = self
            .db
            .begin_read()?
            .open_table(BLOBS)?
            .get(hash.as_bytes())?
            .is_some();
        if !indexed {
            match std::fs::remove_file(self.blob_path(hash)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove released blob")(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testutil::*;

    #[tokio::test]
    async fn only_owners_fetch_and_a_copy_is_given_up_with_its_songs_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = store.node_id();
        let (b, c) = (NodeId::new_random(), NodeId::new_random());
        let full = in_layout(&store, &[me, b, c]);
        // Under full replication every node owns every blob.
        assert!(full.should_hold(me, &ContentHash::of(b"x")));
        let placed = with_placement(&store, &full, 1);
        // Find a blob this node owns under R=1 and one it does not.
        let (mine, theirs) = owned_and_not(&placed, me);
        let (s1, s2) = (SongId::new_random(), SongId::new_random());
        let up = |seq, id, bytes: &[u8]| {
            let out = store
                .apply_update(seq, &upsert_placed(song(id), bytes, b, 1), Some(&placed))
                .unwrap();
            assert!(matches!(out, Applied::Stored { .. }), "{out:?}");
        };
        up(10, s1, &mine);
        up(11, s2, &theirs);
        // The owner wants its blob with a fetch; the other is only counted.
        let fetches: Vec<ContentHash> = store
            .pending()
            .unwrap()
            .network
            .iter()
            .filter_map(|(_, t)| match t {
                OutboxTask::FetchBlob(f) => Some(f.hash),
                _ => None,
            })
            .collect();
        assert_eq!(fetches, vec![ContentHash::of(&mine)]);
        assert!(store.wants_blob(&ContentHash::of(&theirs)).unwrap());
        assert!(
            store.owned_missing(&placed).unwrap().is_empty(),
            "its fetch is queued already"
        );
        store.run_outbox().unwrap();
        let queued: Vec<u64> = store
            .pending()
            .unwrap()
            .network
            .iter()
            .map(|(n, _)| *n)
            .collect();
        store.finish_tasks(&queued).unwrap();
        assert_eq!(
            store.owned_missing(&placed).unwrap(),
            vec![ContentHash::of(&mine)],
            "without a queued fetch, the resync worker's work"
        );
        assert_eq!(store.sync_due().unwrap(), None, "it lacks a blob it owns");
        // Both arrive (say, from before the placement): the one it does not
        // own is misplaced, and given up with its song announced released.
        store.put_blob(staged(&store, &mine).await).unwrap();
        // It holds all it owns (lacking one it does not own): its Synced
        // is due, and once ordered, no more.
        let epoch = placed.placement_epoch();
        assert_eq!(store.sync_due().unwrap(), Some(epoch));
        let synced = rondo_ring::LayoutChange {
            expect_epoch: 0,
            op: rondo_ring::LayoutOp::Synced { node: me, epoch },
            proposal: String::new(),
        };
        let after = store.apply_layout(12, &synced, &placed).unwrap().unwrap();
        assert_eq!(after.synced.get(&me), Some(&epoch));
        assert_eq!(after.epoch, placed.epoch);
        assert_eq!(store.sync_due().unwrap(), None);
        store.put_blob(staged(&store, &theirs).await).unwrap();
        assert_eq!(
            store
                .holds(&[ContentHash::of(&mine), ContentHash::of(&theirs)])
                .unwrap(),
            vec![true, true]
        );
        // An owner confirms only what it holds for a song, as an owner,
        // under the placement the asker names (the one it applied).
        let epoch = placed.placement_epoch();
        let (mine_h, theirs_h) = (ContentHash::of(&mine), ContentHash::of(&theirs));
        let ahead = ContentHash::of(b"ahead of its song");
        store
            .put_blob(staged(&store, b"ahead of its song").await)
            .unwrap();
        let owned_ahead = placed.should_hold(me, &ahead);
        let (held, confirmed) = store
            .holdings(&[mine_h, theirs_h, ahead], Some(epoch))
            .unwrap();
        assert_eq!(held, vec![true, true, true]);
        assert_eq!(
            confirmed,
            vec![true, false, false],
            "ahead owned: {owned_ahead}"
        );
        let (_, other_epoch) = store.holdings(&[mine_h], Some(epoch + 1)).unwrap();
        assert_eq!(other_epoch, vec![false]);
        store.release_blob(&ahead).unwrap();
        store.run_outbox().unwrap();
        let misplaced = store.misplaced(&placed).unwrap();
        assert_eq!(
            misplaced,
            vec![(ContentHash::of(&theirs), theirs.len() as u64)]
        );
        let mut changes = store.subscribe();
        let hashes: Vec<ContentHash> = misplaced.iter().map(|(h, _)| *h).collect();
        // Against a layout whose placement is not the applied one: nothing.
        assert!(store.release_copies(&full, &hashes).unwrap().is_empty());
        let released = store.release_copies(&placed, &hashes).unwrap();
        assert_eq!(released, hashes);
        let c1 = changes.try_recv().unwrap();
        assert_eq!(c1.change, Some(Change::ReleasedSongId(s2.to_string())));
        assert!(changes.try_recv().is_err(), "one song uses the blob");
        assert_eq!(store.holds(&hashes).unwrap(), vec![false]);
        assert!(store.wants_blob(&hashes[0]).unwrap(), "still referenced");
        assert!(store.misplaced(&placed).unwrap().is_empty());
        // The file stays for the linger, then goes.
        assert!(store.blob_path(&hashes[0]).exists());
        store.remove_released(&hashes[0]).unwrap();
        assert!(!store.blob_path(&hashes[0]).exists());
        assert_eq!(store.stats().unwrap().blob_count, 1);
        assert_eq!(store.stats().unwrap().bytes_stored, mine.len() as u64);
        let _ = c;
    }

    #[tokio::test]
    async fn a_song_copied_under_another_placement_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = store.node_id();
        let b = NodeId::new_random();
        let full = in_layout(&store, &[me, b]);
        let placed = with_placement(&store, &full, 1);
        let id = SongId::new_random();
        // Copied under full replication (epoch 0), ordered under epoch 2.
        let out = store
            .apply_update(10, &upsert_placed(song(id), b"late", b, 0), Some(&placed))
            .unwrap();
        match out {
            Applied::Rejected(Error::StalePlacement { copied, applied }) => {
                assert_eq!((copied, applied), (0, placed.placement_epoch()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.stats().unwrap().song_count, 0);
        assert!(!store.wants_blob(&ContentHash::of(b"late")).unwrap());
        assert!(store.pending().unwrap().network.is_empty());
    }
}
