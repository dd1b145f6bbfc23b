//! Durable state of a storage node: the redb catalog and the content-addressed
//! blob files beside it.
//!
//! Layout of a data directory:
//! - `node.redb`: catalog tables (songs, artists, albums), the blob index with
//!   reference counts, the catalog change log and the outbox.
//! - `blobs/<first two hex digits>/<64 hex digits>`: audio bytes, one file per
//!   distinct BLAKE3 hash, written once and never modified.
//! - `tmp/`: uploads in progress; emptied at start-up.
//!
//! Invariants, kept across crashes:
//! - A blob file exists under `blobs/` only if the blob index names it, except
//!   briefly during a commit, and [`Store::open`] removes such strays.
//! - A song is in the catalog only if its blob is in the index and on disk
//!   (fsync'd before the catalog transaction commits).
//! - Every catalog change has a sequence number in the change log, written in
//!   the same transaction as the change.
//! - Side effects of a transaction (deleting a blob file) are outbox rows
//!   written in that transaction and carried out afterwards, at least once.
//!
//! redb is synchronous: async callers use `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use rondo_core::{AlbumId, ArtistId, ContentHash, SongId};
use rondo_proto::storage::v1::{self as pb, catalog_change::Change};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use crate::error::{Error, Result};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SONGS: TableDefinition<u128, &[u8]> = TableDefinition::new("songs");
const ARTISTS: TableDefinition<u128, &[u8]> = TableDefinition::new("artists");
const ALBUMS: TableDefinition<u128, &[u8]> = TableDefinition::new("albums");
/// Number of songs that refer to an artist or album (key: id), so that an
/// artist or album disappears with its last song.
const REFS: TableDefinition<u128, u64> = TableDefinition::new("refs");
/// Blob index: content hash → (size in bytes, number of songs using it).
const BLOBS: TableDefinition<&[u8; 32], (u64, u64)> = TableDefinition::new("blobs");
/// Catalog change log: sequence → encoded `CatalogChange`.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// Side effects to carry out after commit: outbox sequence → encoded task.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// The control plane's durable state: `promised` (encoded ring id) and
/// `applied` (8 bytes, big endian).
const RING_META: TableDefinition<&str, &[u8]> = TableDefinition::new("ring_meta");
/// The ordered log: seq → encoded `rondo.ring.v1.Entry`.
const RING_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("ring_log");

const LAST_SEQ: &str = "last_seq";
const LAST_OUTBOX: &str = "last_outbox";
const BYTES_STORED: &str = "bytes_stored";

/// Figures about what a node stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub song_count: u64,
    pub blob_count: u64,
    pub bytes_stored: u64,
    pub last_seq: u64,
    pub outbox_len: u64,
}

/// A task in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OutboxTask {
    /// Remove a blob file whose last song was deleted.
    DeleteBlob(ContentHash),
}

impl OutboxTask {
    fn encode(&self) -> Vec<u8> {
        match self {
            OutboxTask::DeleteBlob(h) => {
                let mut v = vec![1u8];
                v.extend_from_slice(h.as_bytes());
                v
            }
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((1, rest)) => Some(OutboxTask::DeleteBlob(ContentHash(rest.try_into().ok()?))),
            _ => None,
        }
    }
}

/// The node's database and blob directory.
pub struct Store {
    db: Database,
    blob_dir: PathBuf,
    tmp_dir: PathBuf,
    /// Serialises the steps that move files in or out of `blobs/` together
    /// with the index update that accounts for them.
    blob_lock: Mutex<()>,
    changes: broadcast::Sender<pb::CatalogChange>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("blob_dir", &self.blob_dir)
            .finish()
    }
}

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
    pub async fn finish(mut self, claimed: &str) -> Result<StagedBlob> {
        let hash = ContentHash::from(self.hasher.finalize());
        if hash.to_hex() != claimed.to_ascii_lowercase() {
            return Err(Error::HashMismatch {
                claimed: claimed.chars().take(80).collect(),
                actual: hash,
            });
        }
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

fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(format!("fsync {}", dir.display())))
}

fn decode<M: Message + Default>(table: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|source| Error::Corrupt { table, source })
}

fn uuid_key(s: &str) -> Result<u128> {
    Ok(s.parse::<SongId>()?.0.as_u128())
}

impl Store {
    /// Opens (or creates) the store in `dir`, clears unfinished uploads and
    /// removes blob files the index does not know (left by a crash between
    /// moving a file in and committing), then returns it.
    pub fn open(dir: &Path) -> Result<Store> {
        let blob_dir = dir.join("blobs");
        let tmp_dir = dir.join("tmp");
        for d in [dir, &blob_dir, &tmp_dir] {
            std::fs::create_dir_all(d).map_err(Error::io(format!("create {}", d.display())))?;
        }
        let db = Database::create(dir.join("node.redb"))?;
        {
            let txn = db.begin_write()?;
            txn.open_table(META)?;
            txn.open_table(SONGS)?;
            txn.open_table(ARTISTS)?;
            txn.open_table(ALBUMS)?;
            txn.open_table(REFS)?;
            txn.open_table(BLOBS)?;
            txn.open_table(CHANGES)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(RING_META)?;
            txn.open_table(RING_LOG)?;
            txn.commit()?;
        }
        let (changes, _) = broadcast::channel(1024);
        let store = Store {
            db,
            blob_dir,
            tmp_dir,
            blob_lock: Mutex::new(()),
            changes,
        };
        store.sweep()?;
        Ok(store)
    }

    fn sweep(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.tmp_dir).map_err(Error::io("list tmp"))? {
            let entry = entry.map_err(Error::io("list tmp"))?;
            let _ = std::fs::remove_file(entry.path());
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

    /// Subscribes to catalog changes committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::CatalogChange> {
        self.changes.subscribe()
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

    /// Moves a staged blob into place and commits the song that uses it, in
    /// one transaction. The song's size and hash are taken from the blob.
    /// Returns the stored song and its change sequence number.
    pub fn commit_song(
        &self,
        mut staged: StagedBlob,
        mut song: pb::Song,
        now_ms: i64,
    ) -> Result<(pb::Song, u64)> {
        let song_id = uuid_key(&song.id)?;
        let artist = song.artist.clone().ok_or(Error::Invalid {
            what: "song has no artist",
        })?;
        let album = song.album.clone().ok_or(Error::Invalid {
            what: "song has no album",
        })?;
        let artist_id = artist.id.parse::<ArtistId>()?.0.as_u128();
        let album_id = album.id.parse::<AlbumId>()?.0.as_u128();
        if album.artist_id != artist.id {
            return Err(Error::Invalid {
                what: "album artist differs from song artist",
            });
        }
        song.size_bytes = staged.size;
        song.content_hash = staged.hash.to_hex();
        song.created_at_ms = now_ms;

        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write()?;
        let mut moved_in = None;
        let result = (|| -> Result<(pb::Song, u64, pb::CatalogChange)> {
            let mut songs = txn.open_table(SONGS)?;
            if songs.get(song_id)?.is_some() {
                return Err(Error::SongExists(song.id.parse()?));
            }
            let mut blobs = txn.open_table(BLOBS)?;
            let hash = *staged.hash.as_bytes();
            let existing = blobs.get(&hash)?.map(|g| g.value());
            let refs_now = match existing {
                Some((size, refs)) => (size, refs + 1),
                None => {
                    let dest = self.blob_path(&staged.hash);
                    let parent = dest.parent().unwrap_or(&self.blob_dir).to_path_buf();
                    std::fs::create_dir_all(&parent).map_err(Error::io("create blob shard"))?;
                    std::fs::rename(staged.path.path(), &dest)
                        .map_err(Error::io("move blob into place"))?;
                    staged.path.disarm();
                    moved_in = Some(dest);
                    fsync_dir(&parent)?;
                    (staged.size, 1)
                }
            };
            blobs.insert(&hash, refs_now)?;
            let mut meta = txn.open_table(META)?;
            if existing.is_none() {
                let stored = meta.get(BYTES_STORED)?.map_or(0, |g| g.value());
                meta.insert(BYTES_STORED, stored + staged.size)?;
            }
            let mut refs = txn.open_table(REFS)?;
            for key in [artist_id, album_id] {
                let n = refs.get(key)?.map_or(0, |g| g.value());
                refs.insert(key, n + 1)?;
            }
            let mut artists = txn.open_table(ARTISTS)?;
            if artists.get(artist_id)?.is_none() {
                artists.insert(artist_id, artist.encode_to_vec().as_slice())?;
            }
            let mut albums = txn.open_table(ALBUMS)?;
            if albums.get(album_id)?.is_none() {
                albums.insert(album_id, album.encode_to_vec().as_slice())?;
            }
            songs.insert(song_id, song.encode_to_vec().as_slice())?;
            let seq = meta.get(LAST_SEQ)?.map_or(0, |g| g.value()) + 1;
            meta.insert(LAST_SEQ, seq)?;
            let change = pb::CatalogChange {
                seq,
                change: Some(Change::Upsert(song.clone())),
            };
            txn.open_table(CHANGES)?
                .insert(seq, change.encode_to_vec().as_slice())?;
            Ok((song, seq, change))
        })();
        let committed = result.and_then(|r| {
            txn.commit()?;
            Ok(r)
        });
        match committed {
            Ok((song, seq, change)) => {
                let _ = self.changes.send(change);
                Ok((song, seq))
            }
            Err(e) => {
                if let Some(dest) = moved_in {
                    let _ = std::fs::remove_file(dest);
                }
                Err(e)
            }
        }
    }

    /// Deletes a song. Its artist and album go with their last song; its blob
    /// goes, through the outbox, with the last song that uses it.
    pub fn delete_song(&self, id: SongId) -> Result<u64> {
        let key = id.0.as_u128();
        let txn = self.db.begin_write()?;
        let change = {
            let mut songs = txn.open_table(SONGS)?;
            let song: pb::Song = match songs.remove(key)? {
                Some(bytes) => decode("songs", bytes.value())?,
                None => return Err(Error::SongNotFound(id)),
            };
            let mut refs = txn.open_table(REFS)?;
            let artist_id = song
                .artist
                .as_ref()
                .map(|a| a.id.as_str())
                .unwrap_or_default();
            let album_id = song
                .album
                .as_ref()
                .map(|a| a.id.as_str())
                .unwrap_or_default();
            for (k, table) in [(album_id, ALBUMS), (artist_id, ARTISTS)] {
                let Ok(k) = uuid_key(k) else { continue };
                let n = refs.get(k)?.map_or(0, |g| g.value());
                if n <= 1 {
                    refs.remove(k)?;
                    txn.open_table(table)?.remove(k)?;
                } else {
                    refs.insert(k, n - 1)?;
                }
            }
            let hash: ContentHash = song.content_hash.parse()?;
            let mut blobs = txn.open_table(BLOBS)?;
            let mut meta = txn.open_table(META)?;
            let entry = blobs.get(hash.as_bytes())?.map(|g| g.value());
            match entry {
                Some((size, refs)) if refs > 1 => {
                    blobs.insert(hash.as_bytes(), (size, refs - 1))?;
                }
                Some((size, _)) => {
                    blobs.remove(hash.as_bytes())?;
                    let stored = meta.get(BYTES_STORED)?.map_or(0, |g| g.value());
                    meta.insert(BYTES_STORED, stored.saturating_sub(size))?;
                    let n = meta.get(LAST_OUTBOX)?.map_or(0, |g| g.value()) + 1;
                    meta.insert(LAST_OUTBOX, n)?;
                    txn.open_table(OUTBOX)?
                        .insert(n, OutboxTask::DeleteBlob(hash).encode().as_slice())?;
                }
                None => {}
            }
            let seq = meta.get(LAST_SEQ)?.map_or(0, |g| g.value()) + 1;
            meta.insert(LAST_SEQ, seq)?;
            let change = pb::CatalogChange {
                seq,
                change: Some(Change::DeleteSongId(id.to_string())),
            };
            txn.open_table(CHANGES)?
                .insert(seq, change.encode_to_vec().as_slice())?;
            change
        };
        txn.commit()?;
        let seq = change.seq;
        let _ = self.changes.send(change);
        Ok(seq)
    }

    /// Carries out pending outbox tasks; returns how many were done.
    pub fn run_outbox(&self) -> Result<usize> {
        let pending: Vec<(u64, Vec<u8>)> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(OUTBOX)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                out.push((k.value(), v.value().to_vec()));
            }
            out
        };
        let mut done = 0;
        for (n, bytes) in pending {
            let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
            let txn = self.db.begin_write()?;
            match OutboxTask::decode(&bytes) {
                Some(OutboxTask::DeleteBlob(hash)) => {
                    // A later upload of the same bytes may have brought the
                    // blob back: then it stays.
                    if txn.open_table(BLOBS)?.get(hash.as_bytes())?.is_none() {
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

    /// The control plane's durable state, as last persisted.
    pub fn ring_load(&self) -> Result<rondo_ring::Durable<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(RING_META)?;
        let mut durable = rondo_ring::Durable::default();
        if let Some(bytes) = meta.get("promised")? {
            let id: rondo_proto::ring::v1::RingId = decode("ring_meta", bytes.value())?;
            durable.promised = crate::ring::ring_id_from_wire(Some(id))?;
        }
        if let Some(bytes) = meta.get("applied")? {
            let raw: [u8; 8] = bytes.value().try_into().map_err(|_| Error::Invalid {
                what: "ring_meta.applied is not 8 bytes",
            })?;
            durable.applied = u64::from_be_bytes(raw);
        }
        for row in txn.open_table(RING_LOG)?.iter()? {
            let (seq, bytes) = row?;
            let entry: rondo_proto::ring::v1::Entry = decode("ring_log", bytes.value())?;
            durable
                .log
                .insert(seq.value(), crate::ring::entry_from_wire(entry)?);
        }
        Ok(durable)
    }

    /// Carries out the control plane's persistence outputs in one durable
    /// transaction: promises, truncations, appends and applications, in
    /// the order given.
    pub fn ring_persist(&self, outputs: &[&rondo_ring::Output<Vec<u8>>]) -> Result<()> {
        use rondo_ring::Output;
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
                        let wire = crate::ring::ring_id_to_wire(*id);
                        meta.insert("promised", wire.encode_to_vec().as_slice())?;
                    }
                    Output::Truncate { after } => {
                        let doomed: Vec<u64> = log
                            .range(after.saturating_add(1)..)?
                            .map(|r| r.map(|(k, _)| k.value()))
                            .collect::<std::result::Result<_, _>>()?;
                        for k in doomed {
                            log.remove(k)?;
                        }
                    }
                    Output::PersistEntries(entries) => {
                        for e in entries {
                            let wire = crate::ring::entry_to_wire(e);
                            log.insert(e.seq, wire.encode_to_vec().as_slice())?;
                        }
                    }
                    Output::Apply(e) => {
                        meta.insert("applied", e.seq.to_be_bytes().as_slice())?;
                    }
                    _ => {}
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// One song by id.
    pub fn song(&self, id: SongId) -> Result<Option<pb::Song>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SONGS)?;
        match table.get(id.0.as_u128())? {
            Some(bytes) => Ok(Some(decode("songs", bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Size of a blob, if the index has it.
    pub fn blob_size(&self, hash: &ContentHash) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(BLOBS)?
            .get(hash.as_bytes())?
            .map(|g| g.value().0))
    }

    /// Up to `limit` catalog changes with sequence numbers above `after`.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<pb::CatalogChange>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHANGES)?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..)?.take(limit) {
            let (_, v) = row?;
            out.push(decode("changes", v.value())?);
        }
        Ok(out)
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Result<Stats> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get = |k: &str| -> Result<u64> { Ok(meta.get(k)?.map_or(0, |g| g.value())) };
        Ok(Stats {
            song_count: txn.open_table(SONGS)?.len()?,
            blob_count: txn.open_table(BLOBS)?.len()?,
            bytes_stored: get(BYTES_STORED)?,
            last_seq: get(LAST_SEQ)?,
            outbox_len: txn.open_table(OUTBOX)?.len()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn song(id: SongId) -> pb::Song {
        let artist = ArtistId::new_random().to_string();
        pb::Song {
            id: id.to_string(),
            title: "t".into(),
            artist: Some(pb::Artist {
                id: artist.clone(),
                name: "a".into(),
            }),
            album: Some(pb::Album {
                id: AlbumId::new_random().to_string(),
                title: "b".into(),
                artist_id: artist,
                year: None,
            }),
            ..Default::default()
        }
    }

    async fn staged(store: &Store, bytes: &[u8]) -> StagedBlob {
        let mut s = store.stage(1 << 20).await.unwrap();
        s.write(bytes).await.unwrap();
        s.finish(&ContentHash::of(bytes).to_hex()).await.unwrap()
    }

    fn files_in(dir: &Path) -> usize {
        walk(dir).len()
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[tokio::test]
    async fn commit_dedupe_delete_and_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (SongId::new_random(), SongId::new_random());
        let (sa, seq_a) = store
            .commit_song(staged(&store, b"same bytes").await, song(a), 1)
            .unwrap();
        assert_eq!(sa.size_bytes, 10);
        store
            .commit_song(staged(&store, b"same bytes").await, song(b), 2)
            .unwrap();
        let st = store.stats().unwrap();
        assert_eq!(
            (st.song_count, st.blob_count, st.bytes_stored, st.last_seq),
            (2, 1, 10, 2)
        );
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
        // The same id twice is refused and leaves nothing behind.
        let err = store
            .commit_song(staged(&store, b"other").await, song(a), 3)
            .unwrap_err();
        assert!(matches!(err, Error::SongExists(_)));
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
        // Deleting one keeps the shared blob; deleting both removes it via the outbox.
        store.delete_song(a).unwrap();
        assert_eq!(store.run_outbox().unwrap(), 0);
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        store.delete_song(b).unwrap();
        assert_eq!(store.stats().unwrap().outbox_len, 1);
        assert_eq!(store.run_outbox().unwrap(), 1);
        assert_eq!(files_in(&dir.path().join("blobs")), 0);
        let st = store.stats().unwrap();
        assert_eq!(
            (st.song_count, st.blob_count, st.bytes_stored, st.outbox_len),
            (0, 0, 0, 0)
        );
        assert!(matches!(store.delete_song(a), Err(Error::SongNotFound(_))));
        let changes = store.changes_after(seq_a, 10).unwrap();
        assert_eq!(
            changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
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
