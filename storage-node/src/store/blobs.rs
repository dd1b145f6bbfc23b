//! Blob files and their index: staging an upload (hashed while written),
//! putting a blob in place, the blob index with reference counts, the
//! blobs the catalog waits for (`wanted`), releasing unused blobs, and the
//! start-up sweep of files the index does not know.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};
use rondo_core::ContentHash;
use rondo_proto::storage::v1::{self as pb, catalog_change::Change};
use tokio::io::AsyncWriteExt;

use super::outbox::{push_outbox, record_delivery};
use super::tables::*;
use super::{Delivered, Delivery, OutboxTask, Store};
use crate::error::{Error, Result};

/// An upload being written to a temporary file and hashed on the way.
pub struct Staging {
    file: tokio::fs::File,
    path: TempPath,
    hasher: blake3::Hasher,
    size: u64,
    limit: u64,
}

/// A fully received, fsync'd upload not yet in the catalog.
#[derive(Debug)]
pub struct StagedBlob {
    path: TempPath,
    pub hash: ContentHash,
    pub size: u64,
}

impl StagedBlob {
    /// The staged file, for checks before it is put in place.
    pub fn path(&self) -> &Path {
        self.path.path()
    }
}

/// A path removed on drop unless disarmed.
#[derive(Debug)]
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Staging {
    /// Appends a chunk; fails once the upload passes the size limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(Error::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(Error::io("write upload"))
    }

    /// Flushes and fsyncs the file and checks the sender's hash.
    pub async fn finish(self, claimed: &str) -> Result<StagedBlob> {
        let hash = ContentHash::from(self.hasher.finalize());
        if hash.to_hex() != claimed.to_ascii_lowercase() {
            return Err(Error::HashMismatch {
                claimed: claimed.chars().take(80).collect(),
                actual: hash,
            });
        }
        self.seal().await
    }

    /// Flushes and fsyncs the file; its hash is what was written.
    pub async fn seal(mut self) -> Result<StagedBlob> {
        let hash = ContentHash::from(self.hasher.finalize());
        self.file.flush().await.map_err(Error::io("flush upload"))?;
        self.file
            .sync_all()
            .await
            .map_err(Error::io("fsync upload"))?;
        Ok(StagedBlob {
            path: self.path,
            hash,
            size: self.size,
        })
    }
}

pub(super) fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(format!("fsync {}", dir.display())))
}

impl Store {
    /// Empties `tmp/` and removes blob files the index does not know.
    pub(super) fn sweep(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.tmp_dir).map_err(Error::io("list tmp"))? {
            let entry = entry.map_err(Error::io("list tmp"))?;
            let _ = std::fs::remove_file(entry.path());
        }
        // Sizes of pictures left half-written by a crash.
        if let Ok(shards) = std::fs::read_dir(&self.art_cache) {
            for file in shards
                .flatten()
                .filter_map(|s| std::fs::read_dir(s.path()).ok())
                .flatten()
                .flatten()
            {
                if file
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.contains(".tmp"))
                {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
        let txn = self.db.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        for shard in std::fs::read_dir(&self.blob_dir).map_err(Error::io("list blobs"))? {
            let shard = shard.map_err(Error::io("list blobs"))?.path();
            let Ok(files) = std::fs::read_dir(&shard) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let known = match name.to_str().and_then(|n| n.parse::<ContentHash>().ok()) {
                    Some(h) => blobs.get(h.as_bytes())?.is_some(),
                    None => false,
                };
                if !known {
                    tracing::warn!(path = %file.path().display(), "removing blob file missing from the index");
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
        Ok(())
    }

    /// Releases every blob no song uses: copies taken for uploads that were
    /// still in flight when the node stopped (see `ReplicateBlob`).
    pub(super) fn release_unused_blobs(&self) -> Result<()> {
        let unused: Vec<ContentHash> = {
            let txn = self.db.begin_read()?;
            let blobs = txn.open_table(BLOBS)?;
            let mut unused = Vec::new();
            for row in blobs.iter()? {
                let (k, v) = row?;
                if v.value().1 == 0 {
                    unused.push(ContentHash::from(blake3::Hash::from_bytes(*k.value())));
                }
            }
            unused
        };
        for hash in unused {
            tracing::info!(%hash, "releasing a blob no song uses");
            self.release_blob(&hash)?;
        }
        Ok(())
    }

    /// Where the size `size` of the picture `hash` is cached.
    pub fn art_size_path(&self, hash: &ContentHash, size: u32) -> PathBuf {
        let hex = hash.to_hex();
        self.art_cache
            .join(&hex[..2])
            .join(format!("{hex}-{size}.jpg"))
    }

    /// Removes the cached sizes of a picture whose blob goes.
    pub(super) fn forget_sizes(&self, hash: &ContentHash) {
        for size in rondo_media::art::ART_SIZES {
            let _ = std::fs::remove_file(self.art_size_path(hash, size));
        }
    }

    /// Where the blob with this hash lives.
    pub fn blob_path(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.to_hex();
        self.blob_dir.join(&hex[..2]).join(hex)
    }

    /// Starts receiving an upload of at most `limit` bytes.
    pub async fn stage(&self, limit: u64) -> Result<Staging> {
        let path = self.tmp_dir.join(uuid::Uuid::new_v4().to_string());
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(Error::io("create upload file"))?;
        Ok(Staging {
            file,
            path: TempPath(Some(path)),
            hasher: blake3::Hasher::new(),
            size: 0,
            limit,
        })
    }

    /// Moves a staged blob into place (or drops it if the blob is here
    /// already) and indexes it, in one transaction after the file and its
    /// directory are fsync'd. Songs of the catalog that were waiting for
    /// this blob (ordered while this node lacked it) are announced on the
    /// change stream in the same transaction.
    pub fn put_blob(&self, staged: StagedBlob) -> Result<()> {
        let _guard = self.lock_blobs();
        let hash = *staged.hash.as_bytes();
        if self
            .db
            .begin_read()?
            .open_table(BLOBS)?
            .get(&hash)?
            .is_some()
        {
            return Ok(()); // the staged copy is removed on drop
        }
        self.place(staged, None)
    }

    /// Puts a blob that songs of the catalog wait for, fetched by this
    /// node's outbox or delivered by another's (`delivery`, recorded in the
    /// inbox in the same transaction). A blob nothing wants any more (its
    /// songs were deleted meanwhile) or one already here is not stored
    /// again; a delivery seen before does nothing.
    pub fn put_wanted(&self, staged: StagedBlob, delivery: Option<Delivery>) -> Result<Delivered> {
        let _guard = self.lock_blobs();
        let hash = *staged.hash.as_bytes();
        let (held, wanted, seen) = {
            let txn = self.db.begin_read()?;
            let seen = match &delivery {
                Some(d) => txn
                    .open_table(INBOX)?
                    .get((d.origin.0.as_u128(), d.outbox_seq))?
                    .is_some(),
                None => false,
            };
            (
                txn.open_table(BLOBS)?.get(&hash)?.is_some(),
                txn.open_table(WANTED)?.get(&hash)?.is_some(),
                seen,
            )
        };
        if seen {
            return Ok(Delivered::Duplicate);
        }
        if held || !wanted {
            return self.note_delivery(delivery.as_ref());
        }
        self.place(staged, delivery.as_ref())?;
        Ok(Delivered::Stored)
    }

    /// Moves a staged blob into place and indexes it (see `put_blob`); the
    /// caller holds `blob_lock` and checked the blob is not indexed.
    fn place(&self, mut staged: StagedBlob, delivery: Option<&Delivery>) -> Result<()> {
        let hash = *staged.hash.as_bytes();
        let dest = self.blob_path(&staged.hash);
        let parent = dest.parent().unwrap_or(&self.blob_dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(Error::io("create blob shard"))?;
        std::fs::rename(staged.path.path(), &dest).map_err(Error::io("move blob into place"))?;
        staged.path.disarm();
        let result = (|| -> Result<Vec<pb::CatalogChange>> {
            fsync_dir(&parent)?;
            let txn = self.db.begin_write()?;
            let mut changes = Vec::new();
            if let Some(d) = delivery {
                record_delivery(&txn, d)?;
            }
            {
                let mut wanted = txn.open_table(WANTED)?;
                let refs = wanted.remove(&hash)?.map_or(0, |g| g.value());
                txn.open_table(BLOBS)?.insert(&hash, (staged.size, refs))?;
                let mut meta = txn.open_table(META)?;
                add_bytes_stored(&mut meta, i128::from(staged.size))?;
                if refs > 0 {
                    let hex = staged.hash.to_hex();
                    let songs = txn.open_table(SONGS)?;
                    for row in songs.iter()? {
                        let (_, v) = row?;
                        let song: pb::Song = decode("songs", v.value())?;
                        if song.content_hash == hex {
                            changes.push(push_change(&txn, &mut meta, Change::Upsert(song))?);
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(changes)
        })();
        match result {
            Ok(changes) => {
                self.announce(changes);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&dest);
                Err(e)
            }
        }
    }

    /// Pins a blob while a write of this node may still need it (a copy
    /// ahead of its record): [`Store::release_blob`] leaves a pinned blob.
    /// Pin before putting the blob, so that no release comes between.
    pub fn pin(self: &std::sync::Arc<Self>, hash: ContentHash) -> BlobPin {
        let mut pins = self
            .pins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *pins.entry(hash).or_default() += 1;
        BlobPin {
            store: self.clone(),
            hash,
            held: true,
        }
    }

    /// Removes a blob that no song uses and none is waiting for (an upload
    /// whose catalog update was refused or never ordered), through the
    /// outbox; not while a write of this node has it pinned.
    pub fn release_blob(&self, hash: &ContentHash) -> Result<()> {
        let pins = self
            .pins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pins.get(hash).is_some_and(|n| *n > 0) {
            return Ok(());
        }
        self.release_unpinned(hash)
    }

    /// [`Store::release_blob`] once the caller knows no pin holds it.
    fn release_unpinned(&self, hash: &ContentHash) -> Result<()> {
        let _guard = self.lock_blobs();
        let txn = self.db.begin_write()?;
        {
            let mut blobs = txn.open_table(BLOBS)?;
            let entry = blobs.get(hash.as_bytes())?.map(|g| g.value());
            if let Some((size, 0)) = entry {
                blobs.remove(hash.as_bytes())?;
                let mut meta = txn.open_table(META)?;
                add_bytes_stored(&mut meta, -i128::from(size))?;
                push_outbox(&txn, &mut meta, OutboxTask::DeleteBlob(*hash))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether this node still waits for the blob (some song needs it).
    pub fn wants_blob(&self, hash: &ContentHash) -> Result<bool> {
        Ok(self
            .db
            .begin_read()?
            .open_table(WANTED)?
            .get(hash.as_bytes())?
            .is_some())
    }

    /// The bytes of the catalog's blobs (audio and pictures) in each of
    /// the `1 << bits` partitions (each blob counted once, however many
    /// records use it): what a node gaining or losing a partition moves. A
    /// scan of the catalog.
    pub fn partition_bytes(&self, bits: u8) -> Result<Vec<u64>> {
        let txn = self.db.begin_read()?;
        let mut bytes = vec![0u64; 1 << bits.clamp(1, 16)];
        for (hash, (size, _)) in catalog_blobs(&txn)? {
            let p = rondo_core::partitions::partition_of(&ContentHash(hash), bits);
            bytes[p] += size;
        }
        Ok(bytes)
    }

    /// Size of a blob, if the index has it.
    pub fn blob_size(&self, hash: &ContentHash) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(BLOBS)?
            .get(hash.as_bytes())?
            .map(|g| g.value().0))
    }
}

/// A blob pinned by a write in flight (see [`Store::pin`]). Dropped, it
/// lets the blob go with nothing else; [`BlobPin::release`] also releases
/// the blob if it was the last pin and no record uses it.
pub struct BlobPin {
    store: std::sync::Arc<Store>,
    hash: ContentHash,
    held: bool,
}

impl std::fmt::Debug for BlobPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BlobPin").field(&self.hash).finish()
    }
}

impl BlobPin {
    /// The pinned blob.
    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    /// Unpins, and releases the blob if this was its last pin (a write
    /// that failed): it goes unless a record uses it.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        let mut pins = self
            .store
            .pins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if unpin(&mut pins, &self.hash) {
            // Under the pins' lock: a pin taken now waits, then finds the
            // blob gone and puts it again.
            self.store.release_unpinned(&self.hash)?;
        }
        Ok(())
    }
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        if self.held {
            let mut pins = self
                .store
                .pins
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            unpin(&mut pins, &self.hash);
        }
    }
}

/// Takes one pin off; true if it was the last.
fn unpin(pins: &mut std::collections::HashMap<ContentHash, usize>, hash: &ContentHash) -> bool {
    match pins.get_mut(hash) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            pins.remove(hash);
            true
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testutil::*;

    #[test]
    fn the_data_directory_and_database_are_the_nodes_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        drop(Store::open(&data).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("node.redb")), 0o600);
    }

    #[tokio::test]
    async fn blobs_no_song_uses_are_released_when_the_node_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            // A copy taken ahead of a song (ReplicateBlob) whose song never
            // came, and one whose song did.
            store.put_blob(staged(&store, b"orphan").await).unwrap();
            store.put_blob(staged(&store, b"kept").await).unwrap();
            store
                .apply_update(
                    1,
                    &upsert(song(SongId::new_random()), b"kept", NodeId::new_random()),
                    None,
                )
                .unwrap();
            assert_eq!(store.stats().unwrap().blob_count, 2);
        }
        let store = Store::open(dir.path()).unwrap();
        store.run_outbox().unwrap();
        let st = store.stats().unwrap();
        assert_eq!((st.blob_count, st.bytes_stored), (1, 4));
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        assert!(
            store
                .blob_size(&ContentHash::of(b"kept"))
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .blob_size(&ContentHash::of(b"orphan"))
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_song_without_its_blob_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let origin = NodeId::new_random();
        let id = SongId::new_random();
        let out = store
            .apply_update(1, &upsert(song(id), b"far away", origin), None)
            .unwrap();
        assert!(
            matches!(
                out,
                Applied::Stored {
                    change_seq: None,
                    ..
                }
            ),
            "{out:?}"
        );
        let hash = ContentHash::of(b"far away");
        assert!(store.wants_blob(&hash).unwrap());
        assert_eq!(
            store.pending().unwrap().network,
            vec![(
                1,
                OutboxTask::FetchBlob(FetchTask {
                    hash,
                    from: origin,
                    push_expected: false
                })
            )],
            "no layout: no push to wait for"
        );
        assert_eq!(
            store.stats().unwrap().last_seq,
            0,
            "not announced without the blob"
        );
        let mut changes = store.subscribe();
        store.put_blob(staged(&store, b"far away").await).unwrap();
        assert!(!store.wants_blob(&hash).unwrap());
        let c = changes.try_recv().unwrap();
        assert!(matches!(c.change, Some(Change::Upsert(s)) if s.id == id.to_string()));
        assert_eq!(store.stats().unwrap().blob_count, 1);
    }

    #[tokio::test]
    async fn a_pinned_copy_stays_until_its_last_pin_lets_it_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        let hash = ContentHash::of(b"shared cover");
        // Two writes count on one copy (an album's tracks share a picture).
        let first = store.pin(hash);
        store
            .put_blob(staged(&store, b"shared cover").await)
            .unwrap();
        let second = store.pin(hash);
        assert_eq!(second.hash(), hash);
        // Any other release leaves a pinned copy.
        store.release_blob(&hash).unwrap();
        store.run_outbox().unwrap();
        assert_eq!(store.blob_size(&hash).unwrap(), Some(12));
        // The first fails: the second still counts on it.
        first.release().unwrap();
        store.run_outbox().unwrap();
        assert_eq!(store.blob_size(&hash).unwrap(), Some(12));
        // The last lets it go: no record uses it, it goes.
        second.release().unwrap();
        store.run_outbox().unwrap();
        assert_eq!(store.blob_size(&hash).unwrap(), None);
        assert_eq!(files_in(&dir.path().join("blobs")), 0);
        // A pin dropped (a write that succeeded) releases nothing.
        let kept = store.pin(hash);
        store
            .put_blob(staged(&store, b"shared cover").await)
            .unwrap();
        drop(kept);
        assert_eq!(store.blob_size(&hash).unwrap(), Some(12));
    }

    #[tokio::test]
    async fn bad_hash_and_oversize_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = store.stage(1 << 20).await.unwrap();
        s.write(b"abc").await.unwrap();
        let err = s
            .finish(&ContentHash::of(b"abd").to_hex())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }));
        let mut s = store.stage(4).await.unwrap();
        assert!(matches!(
            s.write(b"12345").await,
            Err(Error::TooLarge { limit: 4 })
        ));
        drop(s);
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
    }

    #[tokio::test]
    async fn open_removes_stray_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let stray = {
            let store = Store::open(dir.path()).unwrap();
            let p = store.blob_path(&ContentHash::of(b"stray"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"stray").unwrap();
            std::fs::write(dir.path().join("tmp/partial"), b"x").unwrap();
            p
        };
        let _store = Store::open(dir.path()).unwrap();
        assert!(!stray.exists());
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
    }
}
