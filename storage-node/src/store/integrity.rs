//! The storage side of scrubbing: walking the blob index in hash order
//! from a persisted cursor, and taking a bad copy out of service.
//!
//! A copy whose file is missing, shorter or longer than its index entry,
//! unreadable, or whose bytes no longer hash to its name is quarantined:
//! the file moves to `quarantine/` (so no stream or peer reads it again,
//! from that instant), and in one transaction the blob leaves the index
//! (its song references move to `wanted`, as on a node that never held
//! it) and every song using it is announced released, so gateways stop
//! signing URLs for this node. An owner then finds the blob in its
//! resync work (owned and missing) and fetches a verified copy; a node
//! that does not own it is done.

use std::collections::HashSet;
use std::path::PathBuf;

use redb::ReadableDatabase;
use rondo_core::ContentHash;

use super::Store;
use super::tables::*;
use crate::error::{Error, Result};

/// Files kept in `quarantine/` for an operator to look at; older ones go.
const QUARANTINE_KEEP: usize = 64;

/// Key in `scrub`: the last blob the scrub checked, so that a restarted
/// node resumes its pass. Absent: no pass under way.
const SCRUB_CURSOR: &str = "cursor";

/// Why a copy was taken out of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The file is gone, or its length is not the indexed size.
    Missing,
    /// The bytes do not hash to the blob's name, or cannot be read.
    Corrupt,
}

impl Fault {
    /// How the fault reads in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Missing => "missing",
            Fault::Corrupt => "corrupt",
        }
    }
}

/// What a check saw of a copy, re-checked under the blob lock before the
/// copy is quarantined: a copy placed again meanwhile (released and
/// fetched back, deleted and uploaded again) is a new file, not condemned
/// by what was seen of the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The file was not there, or not of its indexed length.
    Missing,
    /// The file with this (device, inode) did not hash to its name.
    Corrupt { dev: u64, ino: u64 },
}

/// Where the scrub stands: the last blob it checked in the pass under way
/// (none: no pass under way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubCursor {
    pub after: Option<ContentHash>,
}

impl Store {
    /// Up to `limit` indexed blobs in hash order, with their sizes,
    /// starting after `cursor` (`None`: from the start).
    pub fn indexed_blobs(
        &self,
        cursor: Option<ContentHash>,
        limit: usize,
    ) -> Result<Vec<(ContentHash, u64)>> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        let key = cursor.map(|c| *c.as_bytes());
        let start = match &key {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(limit);
        for row in blobs.range::<&[u8; 32]>((start, Bound::Unbounded))? {
            let (k, v) = row?;
            out.push((ContentHash(*k.value()), v.value().0));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// The scrub's persisted position.
    pub fn scrub_cursor(&self) -> Result<ScrubCursor> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SCRUB)?;
        let after = table
            .get(SCRUB_CURSOR)?
            .and_then(|g| <[u8; 32]>::try_from(g.value()).ok())
            .map(ContentHash);
        Ok(ScrubCursor { after })
    }

    /// Records the scrub's position (`after`: the last blob checked; none
    /// ends the pass).
    pub fn set_scrub_cursor(&self, cursor: ScrubCursor) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SCRUB)?;
            match cursor.after {
                Some(c) => table.insert(SCRUB_CURSOR, c.as_bytes().as_slice())?,
                None => table.remove(SCRUB_CURSOR)?,
            };
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether the file of an indexed blob is there with its indexed
    /// length (`None`: the blob is not indexed).
    pub fn blob_file_intact(&self, hash: &ContentHash) -> Result<Option<bool>> {
        let Some(size) = self.blob_size(hash)? else {
            return Ok(None);
        };
        Ok(Some(
            std::fs::metadata(self.blob_path(hash)).is_ok_and(|m| m.is_file() && m.len() == size),
        ))
    }

    /// Takes this node's copy of `hash` out of service (see the module
    /// documentation), if what `evidence` says still holds under the blob
    /// lock: the file to `quarantine/`, the blob out of the index with its
    /// songs announced released. Returns whether it did (false: the copy
    /// is no longer indexed, or it is a new file).
    pub fn quarantine(&self, hash: &ContentHash, evidence: Evidence) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let _guard = self.lock_blobs();
        let Some(size) = self.blob_size(hash)? else {
            return Ok(false);
        };
        let path = self.blob_path(hash);
        let now = std::fs::metadata(&path).ok();
        let fault = match evidence {
            Evidence::Missing => {
                if now.as_ref().is_some_and(|m| m.is_file() && m.len() == size) {
                    return Ok(false);
                }
                Fault::Missing
            }
            Evidence::Corrupt { dev, ino } => {
                if now
                    .as_ref()
                    .is_none_or(|m| m.dev() != dev || m.ino() != ino)
                {
                    return Ok(false);
                }
                Fault::Corrupt
            }
        };
        let kept = self.quarantine_dir().join(format!(
            "{}.{}.{}",
            hash.to_hex(),
            fault.name(),
            crate::clock::unix_now()
        ));
        std::fs::create_dir_all(self.quarantine_dir()).map_err(Error::io("create quarantine"))?;
        match std::fs::rename(&path, &kept) {
            Ok(()) => {
                // Dated now, so that trimming keeps the newest finds.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&kept)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                tracing::warn!(%hash, fault = fault.name(), kept = %kept.display(), "blob quarantined");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(%hash, fault = fault.name(), "blob file gone; index entry dropped");
            }
            Err(e) => return Err(Error::io("quarantine blob")(e)),
        }
        let txn = self.db.begin_write()?;
        let changes = {
            let mut blobs = txn.open_table(BLOBS)?;
            let mut meta = txn.open_table(META)?;
            let Some((size, refs)) = blobs.remove(hash.as_bytes())?.map(|g| g.value()) else {
                return Ok(false);
            };
            add_bytes_stored(&mut meta, -i128::from(size))?;
            if refs > 0 {
                txn.open_table(WANTED)?.insert(hash.as_bytes(), refs)?;
                let gone = HashSet::from([hash.to_hex()]);
                release_songs(&txn, &mut meta, &gone)?
            } else {
                Vec::new()
            }
        };
        txn.commit()?;
        self.announce(changes);
        self.trim_quarantine();
        Ok(true)
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.blob_dir
            .parent()
            .unwrap_or(&self.blob_dir)
            .join("quarantine")
    }

    /// Keeps the newest [`QUARANTINE_KEEP`] quarantined files.
    fn trim_quarantine(&self) {
        let Ok(dir) = std::fs::read_dir(self.quarantine_dir()) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = dir
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() <= QUARANTINE_KEEP {
            return;
        }
        files.sort();
        for (_, path) in &files[..files.len() - QUARANTINE_KEEP] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a check saw of a file that did not hash to its name: its
/// identity, for [`Store::quarantine`].
pub fn corrupt_evidence(meta: &std::fs::Metadata) -> Evidence {
    use std::os::unix::fs::MetadataExt;
    Evidence::Corrupt {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::*;

    #[tokio::test]
    async fn a_quarantined_copy_leaves_the_index_its_songs_are_released_and_it_is_wanted_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = store.node_id();
        let layout = in_layout(&store, &[me]);
        let bytes = b"some audio".to_vec();
        let id = SongId::new_random();
        store.put_blob(staged(&store, &bytes).await).unwrap();
        let out = store
            .apply_update(10, &upsert_placed(song(id), &bytes, me, 0), Some(&layout))
            .unwrap();
        assert!(matches!(out, Applied::Stored { .. }), "{out:?}");
        let hash = ContentHash::of(&bytes);
        assert_eq!(store.blob_file_intact(&hash).unwrap(), Some(true));
        assert_eq!(store.indexed_blobs(None, 10).unwrap(), vec![(hash, 10)]);
        assert!(store.indexed_blobs(Some(hash), 10).unwrap().is_empty());
        let mut changes = store.subscribe();
        let before = store.stats().unwrap();

        // Evidence that no longer holds condemns nothing: the file is there
        // with its length, or it is another file than the one hashed.
        assert!(!store.quarantine(&hash, Evidence::Missing).unwrap());
        let other = Evidence::Corrupt { dev: 0, ino: 0 };
        assert!(!store.quarantine(&hash, other).unwrap());
        assert_eq!(store.blob_file_intact(&hash).unwrap(), Some(true));

        let meta = std::fs::metadata(store.blob_path(&hash)).unwrap();
        assert!(store.quarantine(&hash, corrupt_evidence(&meta)).unwrap());
        assert!(!store.blob_path(&hash).exists(), "no stream reads it");
        assert_eq!(
            std::fs::read_dir(dir.path().join("quarantine"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(store.blob_size(&hash).unwrap(), None);
        assert!(
            store.wants_blob(&hash).unwrap(),
            "an owner fetches it again"
        );
        assert_eq!(store.owned_missing(&layout).unwrap(), vec![hash]);
        let after = store.stats().unwrap();
        assert_eq!(after.bytes_stored, before.bytes_stored - 10);
        assert_eq!(after.song_count, before.song_count, "the catalog keeps it");
        let released = changes.try_recv().unwrap();
        assert!(
            matches!(&released.change, Some(Change::ReleasedSongId(s)) if *s == id.to_string()),
            "{released:?}"
        );
        // A second report finds nothing to do.
        assert!(!store.quarantine(&hash, Evidence::Missing).unwrap());

        // A verified copy comes back: indexed, and the song announced.
        let st = staged(&store, &bytes).await;
        store.put_wanted(st, None).unwrap();
        assert_eq!(store.blob_file_intact(&hash).unwrap(), Some(true));
        assert!(!store.wants_blob(&hash).unwrap());
    }

    #[test]
    fn the_scrub_cursor_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cursor = ScrubCursor {
            after: Some(ContentHash::of(b"x")),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.scrub_cursor().unwrap(), ScrubCursor::default());
            store.set_scrub_cursor(cursor).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.scrub_cursor().unwrap(), cursor);
        store.set_scrub_cursor(ScrubCursor::default()).unwrap();
        assert_eq!(store.scrub_cursor().unwrap(), ScrubCursor::default());
    }
}
