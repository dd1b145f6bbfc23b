//! Durable state of a storage node: the redb catalog and the content-addressed
//! blob files beside it.
//!
//! Layout of a data directory:
//! - `node-id`: this node's id, made on first start.
//! - `node.redb`: catalog tables (songs, artists, albums), accounts and
//!   playlists, the blob index with reference counts, the catalog change log,
//!   the outbox and inbox, and the control plane's log and state
//!   ([`tables`] lists them all).
//! - `blobs/<first two hex digits>/<64 hex digits>`: audio bytes, one file per
//!   distinct BLAKE3 hash, written once and never modified.
//! - `tmp/`: uploads in progress; emptied at start-up.
//! - `quarantine/`: copies the scrub found bad, kept for an operator (the
//!   newest 64), never read by the node.
//!
//! One file per table family, each with its own `impl Store` block and its
//! own tests: [`blobs`] (files, index, staging), [`catalog`] (songs, artists,
//! albums, applying ordered updates), [`accounts`] (users, playlists,
//! revocations), [`authority`] (who may order which update, checked again
//! at apply), [`outbox`] (outbox and inbox: the storage side of the
//! relay), [`placement`] (what to fetch and give up), [`integrity`] (the
//! scrub's cursor and quarantine), [`ring_state`] (the control plane's log and applied layout),
//! [`snapshot`] (export and install of the applied state).
//!
//! Invariants, kept across crashes:
//! - A blob file exists under `blobs/` only if the blob index names it, except
//!   briefly during a commit, and [`Store::open`] removes such strays.
//! - A song is in the catalog only if its blob is in the index and on disk
//!   (fsync'd before the catalog transaction commits).
//! - Every catalog change has a sequence number in the change log, written in
//!   the same transaction as the change.
//! - Side effects of a transaction (deleting a blob file, fetching a blob,
//!   pushing one to another node) are outbox rows written in that
//!   transaction and carried out afterwards, at least once.
//! - An effect another node's outbox asked for is recorded in the inbox, by
//!   (origin, outbox seq), in the transaction that carries it out: once.
//!
//! redb is synchronous: async callers use `spawn_blocking`.

mod accounts;
mod authority;
mod blobs;
mod catalog;
mod integrity;
mod listening;
mod outbox;
mod placement;
mod ring_state;
mod snapshot;
mod tables;
#[cfg(test)]
mod testutil;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTableMetadata};
use rondo_core::{ContentHash, NodeId, SongId};
use rondo_proto::storage::v1 as pb;
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use tables::*;

pub use accounts::{MAX_NAME, MAX_PLAYLIST};
pub use authority::{Acting, permits};
pub use blobs::{BlobPin, StagedBlob, Staging};
pub use integrity::{Evidence, Fault, ScrubCursor, corrupt_evidence};
pub use outbox::{Delivered, Delivery, FetchTask, OutboxTask, Pending, PushTask};

/// What applying one ordered catalog update did on this node.
#[derive(Debug)]
pub enum Applied {
    /// The entry was applied before (a replay).
    Replay,
    /// The song is in the catalog; `change_seq` is its change on this
    /// node's stream if this node holds the blob.
    Stored {
        song: Box<pb::Song>,
        change_seq: Option<u64>,
    },
    /// The song is gone; its change on this node's stream.
    Deleted { change_seq: u64 },
    /// An account or playlist changed; its change on this node's stream.
    Changed { change_seq: u64 },
    /// The song's bytes are already this song's (the first ordered): no
    /// song is added, the same way on every node (the proposed id is spent,
    /// as a deleted one is).
    Duplicate { song: Box<pb::Song> },
    /// An album's own image was set or removed; the album record as it is
    /// now, and its change on this node's stream.
    AlbumChanged {
        album: Box<pb::Album>,
        change_seq: u64,
    },
    /// Refused, the same way on every node (the catalog is unchanged).
    Rejected(Error),
}

/// Where a scan of the songs goes on from: after this id, or (`None`) it
/// reached the end.
pub type Cursor = Option<SongId>;

/// Figures about what a node stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub song_count: u64,
    pub blob_count: u64,
    pub bytes_stored: u64,
    pub last_seq: u64,
    pub outbox_len: u64,
    pub inbox_len: u64,
}

/// The node's database and blob directory.
pub struct Store {
    /// This node (the origin of the songs it proposes).
    id: NodeId,
    db: Database,
    blob_dir: PathBuf,
    tmp_dir: PathBuf,
    /// Pictures resized for serving (a cache: anything in it can go).
    art_cache: PathBuf,
    /// Blobs pinned by writes in flight (see [`Store::pin`]).
    pins: std::sync::Mutex<std::collections::HashMap<ContentHash, usize>>,
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

/// Reads the node's id from `dir/node-id`, creating it on first start.
pub fn node_identity(dir: &Path) -> Result<NodeId> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(Error::io("create data dir"))?;
            let id = NodeId::new_random();
            let tmp = dir.join("node-id.tmp");
            std::fs::write(&tmp, id.to_string()).map_err(Error::io("write node id"))?;
            std::fs::rename(&tmp, &path).map_err(Error::io("write node id"))?;
            Ok(id)
        }
        Err(e) => Err(Error::io("read node id")(e)),
    }
}

/// Makes `id` (the one this node's certificate names) the id of the data
/// directory `dir`: written on first start, checked afterwards, so that a
/// node cannot start on another node's data.
pub fn claim_node_id(dir: &Path, id: NodeId) -> Result<()> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let held: NodeId = text.trim().parse()?;
            if held != id {
                return Err(Error::Config(format!(
                    "{} belongs to node {held}, but this node's certificate names node {id}",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(Error::io("create data dir"))?;
            let tmp = dir.join("node-id.tmp");
            std::fs::write(&tmp, id.to_string()).map_err(Error::io("write node id"))?;
            std::fs::rename(&tmp, &path).map_err(Error::io("write node id"))?;
            Ok(())
        }
        Err(e) => Err(Error::io("read node id")(e)),
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, clears unfinished uploads and
    /// removes blob files the index does not know (left by a crash between
    /// moving a file in and committing), then returns it.
    pub fn open(dir: &Path) -> Result<Store> {
        let blob_dir = dir.join("blobs");
        let tmp_dir = dir.join("tmp");
        let art_cache = dir.join("art-cache");
        for d in [dir, &blob_dir, &tmp_dir, &art_cache] {
            std::fs::create_dir_all(d).map_err(Error::io(format!("create {}", d.display())))?;
        }
        let id = node_identity(dir)?;
        // The database holds every account's password hash: the data
        // directory is the node's alone, and so is the database file.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("restrict {}", dir.display())))?;
        let db_path = dir.join("node.redb");
        let db = Database::create(&db_path)?;
        std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::io(format!("restrict {}", db_path.display())))?;
        {
            let txn = db.begin_write()?;
            create_tables(&txn)?;
            catalog::index_names(&txn)?;
            catalog::index_song_hashes(&txn, false)?;
            accounts::index_user_names(&txn)?;
            txn.commit()?;
        }
        let (changes, _) = broadcast::channel(1024);
        let store = Store {
            id,
            db,
            blob_dir,
            tmp_dir,
            art_cache,
            pins: Default::default(),
            blob_lock: Mutex::new(()),
            changes,
        };
        store.sweep()?;
        store.release_unused_blobs()?;
        Ok(store)
    }

    /// Takes the lock that serialises the steps moving files in or out of
    /// `blobs/` with the index update that accounts for them.
    fn lock_blobs(&self) -> MutexGuard<'_, ()> {
        self.blob_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces committed changes to the subscribers.
    fn announce(&self, changes: impl IntoIterator<Item = pb::CatalogChange>) {
        for c in changes {
            let _ = self.changes.send(c);
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// Subscribes to catalog changes committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::CatalogChange> {
        self.changes.subscribe()
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

    /// Up to `limit` songs after the id `after` (in id order) whose
    /// records an older media inspection than `version` made and that
    /// `take` accepts (with their content hash), and the last id looked at
    /// (`None` once the scan reached the end).
    pub fn to_reinspect(
        &self,
        version: u32,
        after: Option<SongId>,
        limit: usize,
        take: impl Fn(&ContentHash) -> bool,
    ) -> Result<(Vec<(pb::Song, ContentHash)>, Cursor)> {
        let txn = self.db.begin_read()?;
        let songs = txn.open_table(SONGS)?;
        let blobs = txn.open_table(BLOBS)?;
        let from = after.map_or(0, |id| id.0.as_u128().saturating_add(1));
        let mut out = Vec::new();
        for row in songs.range(from..)? {
            let (k, v) = row?;
            let last = SongId(uuid::Uuid::from_u128(k.value()));
            let song: pb::Song = decode("songs", v.value())?;
            if song.inspected >= version {
                continue;
            }
            let Ok(hash) = song.content_hash.parse::<ContentHash>() else {
                continue;
            };
            // Only songs whose bytes are here.
            if take(&hash) && blobs.get(hash.as_bytes())?.is_some() {
                out.push((song, hash));
                if out.len() == limit {
                    return Ok((out, Some(last)));
                }
            }
        }
        Ok((out, None))
    }

    /// The song whose bytes have this content hash, if any.
    pub fn song_with_hash(&self, hash: &ContentHash) -> Result<Option<pb::Song>> {
        let txn = self.db.begin_read()?;
        let hashes = txn.open_multimap_table(SONG_HASHES)?;
        catalog::song_with_hash(&hashes, &txn.open_table(SONGS)?, hash)
    }

    /// Whether the song id `id` was deleted (it is never a song again).
    pub fn song_deleted(&self, id: SongId) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(DELETED_SONGS)?
            .get(id.0.as_u128())?
            .is_some())
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
            inbox_len: txn.open_table(INBOX)?.len()?,
        })
    }
}
