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
//! - Side effects of a transaction (deleting a blob file, fetching a blob,
//!   pushing one to another node) are outbox rows written in that
//!   transaction and carried out afterwards, at least once.
//! - An effect another node's outbox asked for is recorded in the inbox, by
//!   (origin, outbox seq), in the transaction that carries it out: once.
//!
//! redb is synchronous: async callers use `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use rondo_core::{AlbumId, ArtistId, ContentHash, NodeId, SongId};
use rondo_proto::storage::v1::{self as pb, catalog_change::Change};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use crate::error::{Error, Result};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SONGS: TableDefinition<u128, &[u8]> = TableDefinition::new("songs");
const ARTISTS: TableDefinition<u128, &[u8]> = TableDefinition::new("artists");
const ALBUMS: TableDefinition<u128, &[u8]> = TableDefinition::new("albums");
/// Artists by name folded to lower case (→ artist id). A song names its
/// artist and album; applying it files it under the artist and album already
/// known by those names, so every node, in the one order of the ring, agrees
/// on them whichever gateway or node proposed the song.
const ARTIST_NAMES: TableDefinition<&str, u128> = TableDefinition::new("artist_names");
/// Albums by artist and folded title (`{artist id:032x}/{title}` → album id).
const ALBUM_NAMES: TableDefinition<&str, u128> = TableDefinition::new("album_names");
/// Number of songs that refer to an artist or album (key: id), so that an
/// artist or album disappears with its last song.
const REFS: TableDefinition<u128, u64> = TableDefinition::new("refs");
/// Blob index: content hash → (size in bytes, number of songs using it).
const BLOBS: TableDefinition<&[u8; 32], (u64, u64)> = TableDefinition::new("blobs");
/// Catalog change log: sequence → encoded `CatalogChange`.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// Side effects to carry out after commit: outbox sequence → encoded task.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Outbox rows of other nodes carried out here: (origin node, outbox seq).
/// Written in the transaction of the effect, so a row delivered again is a
/// no-op; forgotten once the origin reports it will never send them again.
const INBOX: TableDefinition<(u128, u64), ()> = TableDefinition::new("inbox");

/// The control plane's durable state: `promised` (encoded ring id) and
/// `applied` (8 bytes, big endian).
const RING_META: TableDefinition<&str, &[u8]> = TableDefinition::new("ring_meta");
/// The ordered log: seq → encoded `rondo.ring.v1.Entry`.
const RING_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("ring_log");

/// Blobs this node lacks that catalog songs use: hash → number of songs.
const WANTED: TableDefinition<&[u8; 32], u64> = TableDefinition::new("wanted");
/// Accounts (id → `pb::User`).
const USERS: TableDefinition<u128, &[u8]> = TableDefinition::new("users");
/// Account names, folded to lower case (→ account id).
const USER_NAMES: TableDefinition<&str, u128> = TableDefinition::new("user_names");
/// Playlists (id → `pb::Playlist`); deleted ones are removed.
const PLAYLISTS: TableDefinition<u128, &[u8]> = TableDefinition::new("playlists");
/// Sessions ended by logout (id → expiry, Unix seconds), until they expire.
const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");

const RING_APPLIED: &str = "applied";
/// Key in `ring_meta`: the compacted log prefix (a `ring.v1.Compacted`).
const RING_COMPACTED: &str = "compacted";
/// Key in `ring_meta`: the layout as applied (a `ring.v1.Layout`).
const RING_LAYOUT: &str = "layout";
const RING_DIGEST: &str = "digest";
const LAST_SEQ: &str = "last_seq";
const LAST_OUTBOX: &str = "last_outbox";
const BYTES_STORED: &str = "bytes_stored";

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
    /// Refused, the same way on every node (the catalog is unchanged).
    Rejected(Error),
}

fn be_u64(bytes: &[u8]) -> Result<u64> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| Error::Invalid {
        what: "ring_meta value is not 8 bytes",
    })?;
    Ok(u64::from_be_bytes(raw))
}

/// Appends a change to the node's change log.
fn push_change(
    txn: &redb::WriteTransaction,
    meta: &mut redb::Table<&str, u64>,
    change: Change,
) -> Result<pb::CatalogChange> {
    let seq = meta.get(LAST_SEQ)?.map_or(0, |g| g.value()) + 1;
    meta.insert(LAST_SEQ, seq)?;
    let change = pb::CatalogChange {
        seq,
        change: Some(change),
    };
    txn.open_table(CHANGES)?
        .insert(seq, change.encode_to_vec().as_slice())?;
    Ok(change)
}

/// A refused account or playlist update changes nothing; an accepted one
/// goes on this node's change stream.
fn finish_account(
    txn: &redb::WriteTransaction,
    meta: &mut redb::Table<&str, u64>,
    outcome: std::result::Result<Change, Error>,
) -> Result<(Applied, Option<pb::CatalogChange>)> {
    match outcome {
        Ok(change) => {
            let change = push_change(txn, meta, change)?;
            Ok((
                Applied::Changed {
                    change_seq: change.seq,
                },
                Some(change),
            ))
        }
        Err(e) => Ok((Applied::Rejected(e), None)),
    }
}

/// The longest account or playlist name accepted, in characters.
pub const MAX_NAME: usize = 100;
/// The most songs a playlist holds.
pub const MAX_PLAYLIST: usize = 10_000;

fn album_name_key(artist: u128, title: &str) -> String {
    format!("{artist:032x}/{}", title.trim().to_lowercase())
}

/// Builds the name tables from the artists and albums when they are missing
/// (stores written before they existed); the first of equal names wins.
fn index_names(txn: &redb::WriteTransaction) -> Result<()> {
    let mut artist_names = txn.open_table(ARTIST_NAMES)?;
    let mut album_names = txn.open_table(ALBUM_NAMES)?;
    if !artist_names.is_empty()? {
        return Ok(());
    }
    let artists = txn.open_table(ARTISTS)?;
    for row in artists.iter()? {
        let (k, v) = row?;
        let artist: pb::Artist = decode("artists", v.value())?;
        let folded = artist.name.trim().to_lowercase();
        if artist_names.get(folded.as_str())?.is_none() {
            artist_names.insert(folded.as_str(), k.value())?;
        }
    }
    let albums = txn.open_table(ALBUMS)?;
    for row in albums.iter()? {
        let (k, v) = row?;
        let album: pb::Album = decode("albums", v.value())?;
        let Ok(artist) = uuid_key(&album.artist_id) else {
            continue;
        };
        let key = album_name_key(artist, &album.title);
        if album_names.get(key.as_str())?.is_none() {
            album_names.insert(key.as_str(), k.value())?;
        }
    }
    Ok(())
}

/// Files a song under the artist and album already known by its names
/// (case-insensitively), taking their records; or registers its own.
/// Returns the artist and album ids it is filed under.
fn file_by_name(txn: &redb::WriteTransaction, song: &mut pb::Song) -> Result<(u128, u128)> {
    let (Some(artist), Some(album)) = (song.artist.as_mut(), song.album.as_mut()) else {
        return Err(Error::Invalid {
            what: "song has no artist or album",
        });
    };
    let mut artist_names = txn.open_table(ARTIST_NAMES)?;
    let folded = artist.name.trim().to_lowercase();
    let known = artist_names.get(folded.as_str())?.map(|g| g.value());
    let artist_id = match known {
        Some(id) => {
            if let Some(record) = txn.open_table(ARTISTS)?.get(id)? {
                *artist = decode("artists", record.value())?;
            }
            id
        }
        None => {
            let id = uuid_key(&artist.id)?;
            artist_names.insert(folded.as_str(), id)?;
            id
        }
    };
    album.artist_id = artist.id.clone();
    let mut album_names = txn.open_table(ALBUM_NAMES)?;
    let key = album_name_key(artist_id, &album.title);
    let known = album_names.get(key.as_str())?.map(|g| g.value());
    let album_id = match known {
        Some(id) => {
            if let Some(record) = txn.open_table(ALBUMS)?.get(id)? {
                *album = decode("albums", record.value())?;
            }
            id
        }
        None => {
            let id = uuid_key(&album.id)?;
            album_names.insert(key.as_str(), id)?;
            id
        }
    };
    Ok((artist_id, album_id))
}

/// Removes a name entry if it still names `id`.
fn forget_name(
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, u128>,
    key: &str,
    id: u128,
) -> Result<()> {
    let mut names = txn.open_table(table)?;
    if names.get(key)?.map(|g| g.value()) == Some(id) {
        names.remove(key)?;
    }
    Ok(())
}

/// Registers an account: the name must be free (case-insensitively); the
/// first account ever is an admin. Outer error: storage; inner: refusal.
fn register_user(
    txn: &redb::WriteTransaction,
    seq: u64,
    mut user: pb::User,
) -> Result<std::result::Result<pb::User, Error>> {
    let Ok(id) = uuid_key(&user.id) else {
        return Ok(Err(Error::Invalid {
            what: "bad user id",
        }));
    };
    let name = user.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME || user.password_hash.is_empty() {
        return Ok(Err(Error::Invalid {
            what: "account name must be 1-100 characters, with a password",
        }));
    }
    let folded = name.to_lowercase();
    let mut names = txn.open_table(USER_NAMES)?;
    if names.get(folded.as_str())?.is_some() {
        return Ok(Err(Error::NameTaken(name)));
    }
    let mut users = txn.open_table(USERS)?;
    if users.get(id)?.is_some() {
        return Ok(Err(Error::Invalid {
            what: "user id exists",
        }));
    }
    user.role = if users.is_empty()? || user.role == "admin" {
        "admin".into()
    } else {
        "listener".into()
    };
    user.name = name;
    user.version = seq;
    names.insert(folded.as_str(), id)?;
    users.insert(id, user.encode_to_vec().as_slice())?;
    Ok(Ok(user))
}

/// Records an ended session until it expires, dropping those expired by
/// the proposer's clock (carried in the update, so every node drops the
/// same ones).
fn revoke_session(
    txn: &redb::WriteTransaction,
    r: pb::RevokedSession,
) -> Result<std::result::Result<pb::RevokedSession, Error>> {
    if r.session_id.is_empty() || r.session_id.len() > 64 {
        return Ok(Err(Error::Invalid {
            what: "bad session id",
        }));
    }
    let mut revoked = txn.open_table(REVOKED)?;
    let expired: Vec<String> = revoked
        .iter()?
        .filter_map(|row| row.ok())
        .filter(|(_, exp)| exp.value() <= r.at)
        .map(|(id, _)| id.value().to_owned())
        .collect();
    for id in expired {
        revoked.remove(id.as_str())?;
    }
    revoked.insert(r.session_id.as_str(), r.expires_at)?;
    Ok(Ok(r))
}

/// Applies a playlist operation for its actor.
fn apply_playlist(
    txn: &redb::WriteTransaction,
    seq: u64,
    op: pb::PlaylistOp,
) -> Result<std::result::Result<pb::Playlist, Error>> {
    use pb::playlist_op::Op;
    let (Ok(id), Ok(actor)) = (uuid_key(&op.playlist_id), uuid_key(&op.actor_id)) else {
        return Ok(Err(Error::Invalid {
            what: "bad playlist or user id",
        }));
    };
    let users = txn.open_table(USERS)?;
    let Some(actor_rec) = users.get(actor)?.map(|g| g.value().to_vec()) else {
        return Ok(Err(Error::NotFound {
            kind: "user",
            id: op.actor_id,
        }));
    };
    let actor_rec: pb::User = decode("users", &actor_rec)?;
    let mut playlists = txn.open_table(PLAYLISTS)?;
    let existing: Option<pb::Playlist> = match playlists.get(id)? {
        Some(g) => Some(decode("playlists", g.value())?),
        None => None,
    };
    let name_ok = |n: &str| !n.trim().is_empty() && n.trim().chars().count() <= MAX_NAME;
    let Some(kind) = op.op else {
        return Ok(Err(Error::Invalid {
            what: "empty playlist operation",
        }));
    };
    let mut list = match (kind.clone(), existing) {
        (Op::Create(name), None) => {
            if !name_ok(&name) {
                return Ok(Err(Error::Invalid {
                    what: "playlist name must be 1-100 characters",
                }));
            }
            pb::Playlist {
                id: op.playlist_id.clone(),
                owner_id: op.actor_id.clone(),
                name: name.trim().to_owned(),
                song_ids: Vec::new(),
                created_at_ms: op.at_ms,
                updated_at_ms: op.at_ms,
                version: seq,
                deleted: false,
            }
        }
        (Op::Create(_), Some(_)) => {
            return Ok(Err(Error::Invalid {
                what: "playlist id exists",
            }));
        }
        (_, None) => {
            return Ok(Err(Error::NotFound {
                kind: "playlist",
                id: op.playlist_id,
            }));
        }
        (_, Some(list)) => {
            if list.owner_id != op.actor_id && actor_rec.role != "admin" {
                return Ok(Err(Error::Forbidden(
                    "only its owner may change a playlist",
                )));
            }
            list
        }
    };
    match kind {
        Op::Create(_) => {}
        Op::Rename(name) => {
            if !name_ok(&name) {
                return Ok(Err(Error::Invalid {
                    what: "playlist name must be 1-100 characters",
                }));
            }
            list.name = name.trim().to_owned();
        }
        Op::Delete(_) => {
            playlists.remove(id)?;
            list.deleted = true;
            list.song_ids.clear();
            list.version = seq;
            list.updated_at_ms = op.at_ms;
            return Ok(Ok(list));
        }
        Op::AddSongs(add) => {
            let songs = txn.open_table(SONGS)?;
            for s in &add.song_ids {
                let Ok(k) = uuid_key(s) else {
                    return Ok(Err(Error::Invalid {
                        what: "bad song id",
                    }));
                };
                if songs.get(k)?.is_none() {
                    return Ok(Err(Error::NotFound {
                        kind: "song",
                        id: s.clone(),
                    }));
                }
            }
            if list.song_ids.len() + add.song_ids.len() > MAX_PLAYLIST {
                return Ok(Err(Error::Invalid {
                    what: "a playlist holds at most 10000 songs",
                }));
            }
            let at = add.position.map_or(list.song_ids.len(), |p| {
                (p as usize).min(list.song_ids.len())
            });
            list.song_ids.splice(at..at, add.song_ids);
        }
        Op::RemoveSongs(rm) => {
            let n = list.song_ids.len();
            if rm.positions.iter().any(|&p| p as usize >= n) {
                return Ok(Err(Error::Invalid {
                    what: "position out of range",
                }));
            }
            let drop: std::collections::BTreeSet<usize> =
                rm.positions.iter().map(|&p| p as usize).collect();
            let mut i = 0;
            list.song_ids.retain(|_| {
                let keep = !drop.contains(&i);
                i += 1;
                keep
            });
        }
        Op::MoveSong(mv) => {
            let n = list.song_ids.len();
            let (from, to) = (mv.from as usize, mv.to as usize);
            if from >= n || to >= n {
                return Ok(Err(Error::Invalid {
                    what: "position out of range",
                }));
            }
            let song = list.song_ids.remove(from);
            list.song_ids.insert(to, song);
        }
    }
    list.version = seq;
    list.updated_at_ms = op.at_ms.max(list.created_at_ms);
    playlists.insert(id, list.encode_to_vec().as_slice())?;
    Ok(Ok(list))
}

fn compacted_to_wire(c: &rondo_ring::Compacted) -> Vec<u8> {
    rondo_proto::ring::v1::Compacted {
        last: Some(crate::ring::pos_to_wire(c.last)),
        layout: Some(crate::ring::layout_to_wire(&c.layout)),
    }
    .encode_to_vec()
}

/// Tables of the applied state keyed by id, with encoded values: they make
/// up a snapshot with the name tables below and `ring_meta`'s applied seq,
/// digest and layout.
const SNAPSHOT_BLOBS: [TableDefinition<u128, &[u8]>; 5] =
    [SONGS, ARTISTS, ALBUMS, USERS, PLAYLISTS];
/// Name tables (folded name → id) of a snapshot.
const SNAPSHOT_NAMES: [TableDefinition<&str, u128>; 3] = [ARTIST_NAMES, ALBUM_NAMES, USER_NAMES];
/// Counter tables of a snapshot.
const SNAPSHOT_REFS: TableDefinition<u128, u64> = REFS;
const SNAPSHOT_REVOKED: TableDefinition<&str, u64> = REVOKED;

fn snapshot_row(table: &str, key: &[u8], value: &[u8]) -> rondo_proto::ring::v1::SnapshotRow {
    rondo_proto::ring::v1::SnapshotRow {
        table: table.to_string(),
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn row_u128(bytes: &[u8]) -> Result<u128> {
    let raw: [u8; 16] = bytes.try_into().map_err(|_| Error::Invalid {
        what: "snapshot row key is not 16 bytes",
    })?;
    Ok(u128::from_be_bytes(raw))
}

fn row_str(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| Error::Invalid {
        what: "snapshot row key is not UTF-8",
    })
}

/// Appends a task to the outbox.
fn push_outbox(
    txn: &redb::WriteTransaction,
    meta: &mut redb::Table<&str, u64>,
    task: OutboxTask,
) -> Result<()> {
    let n = meta.get(LAST_OUTBOX)?.map_or(0, |g| g.value()) + 1;
    meta.insert(LAST_OUTBOX, n)?;
    txn.open_table(OUTBOX)?
        .insert(n, task.encode().as_slice())?;
    Ok(())
}

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
    fn encode(&self) -> Vec<u8> {
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

    fn decode(bytes: &[u8]) -> Option<Self> {
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
fn record_delivery(txn: &redb::WriteTransaction, d: &Delivery) -> Result<bool> {
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

/// The node's database and blob directory.
pub struct Store {
    /// This node (the origin of the songs it proposes).
    id: NodeId,
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
        let id = crate::node_identity(dir)?;
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
            txn.open_table(INBOX)?;
            txn.open_table(USERS)?;
            txn.open_table(USER_NAMES)?;
            txn.open_table(PLAYLISTS)?;
            txn.open_table(REVOKED)?;
            txn.open_table(RING_META)?;
            txn.open_table(RING_LOG)?;
            txn.open_table(WANTED)?;
            index_names(&txn)?;
            txn.commit()?;
        }
        let (changes, _) = broadcast::channel(1024);
        let store = Store {
            id,
            db,
            blob_dir,
            tmp_dir,
            blob_lock: Mutex::new(()),
            changes,
        };
        store.sweep()?;
        store.release_unused_blobs()?;
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

    /// Releases every blob no song uses: copies taken for uploads that were
    /// still in flight when the node stopped (see `ReplicateBlob`).
    fn release_unused_blobs(&self) -> Result<()> {
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

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
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

    /// Moves a staged blob into place (or drops it if the blob is here
    /// already) and indexes it, in one transaction after the file and its
    /// directory are fsync'd. Songs of the catalog that were waiting for
    /// this blob (ordered while this node lacked it) are announced on the
    /// change stream in the same transaction.
    pub fn put_blob(&self, staged: StagedBlob) -> Result<()> {
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
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
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Records a delivery whose effect is done already (the blob is here)
    /// or moot (nothing wants it).
    fn note_delivery(&self, delivery: Option<&Delivery>) -> Result<Delivered> {
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

    /// Records a delivery of a blob this node holds or no longer wants,
    /// unless it was delivered before (then `Duplicate`).
    pub fn deliver_held(&self, delivery: Delivery) -> Result<Delivered> {
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.note_delivery(Some(&delivery))
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
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Whether a delivery was carried out here before.
    pub fn delivered(&self, origin: NodeId, outbox_seq: u64) -> Result<bool> {
        Ok(self
            .db
            .begin_read()?
            .open_table(INBOX)?
            .get((origin.0.as_u128(), outbox_seq))?
            .is_some())
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
                let stored = meta.get(BYTES_STORED)?.map_or(0, |g| g.value());
                meta.insert(BYTES_STORED, stored + staged.size)?;
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
                for c in changes {
                    let _ = self.changes.send(c);
                }
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&dest);
                Err(e)
            }
        }
    }

    /// Applies one ordered catalog update (ring entry `seq`) in one
    /// transaction that also records `seq` as applied and folds the entry
    /// into the catalog digest. An entry at or below the applied seq is a
    /// no-op. A song whose blob this node lacks is recorded as wanted, with
    /// an outbox task to fetch the blob from the node that proposed it.
    pub fn apply_update(&self, seq: u64, payload: &[u8]) -> Result<Applied> {
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write()?;
        let (outcome, change) = {
            let mut ring = txn.open_table(RING_META)?;
            let applied = ring
                .get(RING_APPLIED)?
                .map_or(Ok(0), |g| be_u64(g.value()))?;
            if seq <= applied {
                return Ok(Applied::Replay);
            }
            let digest = ring
                .get(RING_DIGEST)?
                .map(|g| g.value().to_vec())
                .unwrap_or_default();
            let mut h = blake3::Hasher::new();
            h.update(&digest);
            h.update(&seq.to_be_bytes());
            h.update(payload);
            ring.insert(RING_DIGEST, h.finalize().as_bytes().as_slice())?;
            ring.insert(RING_APPLIED, seq.to_be_bytes().as_slice())?;
            drop(ring);
            match pb::CatalogUpdate::decode(payload) {
                Ok(update) => self.apply_catalog(&txn, seq, update)?,
                Err(e) => {
                    // Every node decodes the same bytes the same way: skip.
                    tracing::error!(seq, error = %e, "undecodable catalog update skipped");
                    (
                        Applied::Rejected(Error::Invalid {
                            what: "undecodable catalog update",
                        }),
                        None,
                    )
                }
            }
        };
        txn.commit()?;
        if let Some(c) = change {
            let _ = self.changes.send(c);
        }
        Ok(outcome)
    }

    /// Records a ring start (no catalog update); the log's first one
    /// carries the genesis layout, recorded as the applied layout.
    pub fn apply_marker(&self, seq: u64, genesis: Option<&rondo_ring::Layout>) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut ring = txn.open_table(RING_META)?;
            let applied = ring
                .get(RING_APPLIED)?
                .map_or(Ok(0), |g| be_u64(g.value()))?;
            if seq > applied {
                ring.insert(RING_APPLIED, seq.to_be_bytes().as_slice())?;
                if let Some(layout) = genesis {
                    let wire = crate::ring::layout_to_wire(layout);
                    ring.insert(RING_LAYOUT, wire.encode_to_vec().as_slice())?;
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
        change: &rondo_ring::LayoutChange,
        before: &rondo_ring::Layout,
    ) -> Result<std::result::Result<rondo_ring::Layout, rondo_ring::Refusal>> {
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut ring = txn.open_table(RING_META)?;
            let applied = ring
                .get(RING_APPLIED)?
                .map_or(Ok(0), |g| be_u64(g.value()))?;
            let current = match ring.get(RING_LAYOUT)? {
                Some(bytes) => {
                    let wire: rondo_proto::ring::v1::Layout = decode("ring_meta", bytes.value())?;
                    crate::ring::layout_from_wire(wire)?
                }
                None => before.clone(),
            };
            let outcome = current.apply(change);
            if seq <= applied {
                return Ok(outcome);
            }
            // The digest covers the decision, not the proposal's name.
            let mut decided = crate::ring::change_to_wire(change);
            decided.proposal.clear();
            let digest = ring
                .get(RING_DIGEST)?
                .map(|g| g.value().to_vec())
                .unwrap_or_default();
            let mut h = blake3::Hasher::new();
            h.update(&digest);
            h.update(&seq.to_be_bytes());
            h.update(&decided.encode_to_vec());
            ring.insert(RING_DIGEST, h.finalize().as_bytes().as_slice())?;
            ring.insert(RING_APPLIED, seq.to_be_bytes().as_slice())?;
            if let Ok(layout) = &outcome {
                let wire = crate::ring::layout_to_wire(layout);
                ring.insert(RING_LAYOUT, wire.encode_to_vec().as_slice())?;
            }
            outcome
        };
        txn.commit()?;
        Ok(outcome)
    }

    /// The layout as last applied, if any was.
    pub fn ring_layout(&self) -> Result<Option<rondo_ring::Layout>> {
        let txn = self.db.begin_read()?;
        let ring = txn.open_table(RING_META)?;
        match ring.get(RING_LAYOUT)? {
            Some(bytes) => {
                let wire: rondo_proto::ring::v1::Layout = decode("ring_meta", bytes.value())?;
                Ok(Some(crate::ring::layout_from_wire(wire)?))
            }
            None => Ok(None),
        }
    }

    fn apply_catalog(
        &self,
        txn: &redb::WriteTransaction,
        seq: u64,
        update: pb::CatalogUpdate,
    ) -> Result<(Applied, Option<pb::CatalogChange>)> {
        use pb::catalog_update::Change as U;
        let mut meta = txn.open_table(META)?;
        match update.change {
            Some(U::Upsert(mut song)) => {
                let checked = (|| -> Result<_> {
                    let song_id = uuid_key(&song.id)?;
                    let artist = song.artist.clone().ok_or(Error::Invalid {
                        what: "song has no artist",
                    })?;
                    let album = song.album.clone().ok_or(Error::Invalid {
                        what: "song has no album",
                    })?;
                    artist.id.parse::<ArtistId>()?;
                    album.id.parse::<AlbumId>()?;
                    if album.artist_id != artist.id {
                        return Err(Error::Invalid {
                            what: "album artist differs from song artist",
                        });
                    }
                    let hash: ContentHash = song.content_hash.parse()?;
                    Ok((song_id, hash))
                })();
                let (song_id, hash) = match checked {
                    Ok(c) => c,
                    Err(e) => return Ok((Applied::Rejected(e), None)),
                };
                let mut songs = txn.open_table(SONGS)?;
                if songs.get(song_id)?.is_some() {
                    let id = song.id.parse()?;
                    return Ok((Applied::Rejected(Error::SongExists(id)), None));
                }
                let (artist_id, album_id) = file_by_name(txn, &mut song)?;
                let (artist, album) = (
                    song.artist.clone().unwrap_or_default(),
                    song.album.clone().unwrap_or_default(),
                );
                // The nodes of the layout as applied: the same on every
                // node at this entry. The song's origin pushes the blob to
                // each of them; each expects that push.
                let layout: Vec<NodeId> = match txn.open_table(RING_META)?.get(RING_LAYOUT)? {
                    Some(bytes) => {
                        let wire: rondo_proto::ring::v1::Layout =
                            decode("ring_meta", bytes.value())?;
                        crate::ring::layout_from_wire(wire)?
                            .nodes
                            .into_keys()
                            .collect()
                    }
                    None => Vec::new(),
                };
                let origin: NodeId = update.origin.parse()?;
                let mut blobs = txn.open_table(BLOBS)?;
                let key = *hash.as_bytes();
                let present = blobs.get(&key)?.map(|g| g.value());
                match present {
                    Some((size, refs)) => {
                        blobs.insert(&key, (size, refs + 1))?;
                        if origin == self.id {
                            for &to in layout.iter().filter(|n| **n != self.id) {
                                let task = PushTask {
                                    hash,
                                    to,
                                    entry_seq: seq,
                                };
                                push_outbox(txn, &mut meta, OutboxTask::PushBlob(task))?;
                            }
                        }
                    }
                    None => {
                        let mut wanted = txn.open_table(WANTED)?;
                        let refs = wanted.get(&key)?.map_or(0, |g| g.value());
                        wanted.insert(&key, refs + 1)?;
                        if refs == 0 {
                            let push_expected = origin != self.id
                                && layout.contains(&self.id)
                                && layout.contains(&origin);
                            let task = FetchTask {
                                hash,
                                from: origin,
                                push_expected,
                            };
                            push_outbox(txn, &mut meta, OutboxTask::FetchBlob(task))?;
                        }
                    }
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
                // The change stream announces a song once this node can
                // stream it.
                let change = match present {
                    Some(_) => Some(push_change(txn, &mut meta, Change::Upsert(song.clone()))?),
                    None => None,
                };
                let seq = change.as_ref().map(|c| c.seq);
                Ok((
                    Applied::Stored {
                        song: Box::new(song),
                        change_seq: seq,
                    },
                    change,
                ))
            }
            Some(U::DeleteSongId(id_text)) => {
                let Ok(id) = id_text.parse::<SongId>() else {
                    return Ok((
                        Applied::Rejected(Error::Invalid {
                            what: "bad song id",
                        }),
                        None,
                    ));
                };
                let key = id.0.as_u128();
                let mut songs = txn.open_table(SONGS)?;
                let song: pb::Song = match songs.remove(key)? {
                    Some(bytes) => decode("songs", bytes.value())?,
                    None => return Ok((Applied::Rejected(Error::SongNotFound(id)), None)),
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
                let artist_key = uuid_key(artist_id).unwrap_or_default();
                let names = [
                    (
                        ALBUM_NAMES,
                        album_name_key(
                            artist_key,
                            song.album
                                .as_ref()
                                .map(|a| a.title.as_str())
                                .unwrap_or_default(),
                        ),
                    ),
                    (
                        ARTIST_NAMES,
                        song.artist
                            .as_ref()
                            .map(|a| a.name.trim().to_lowercase())
                            .unwrap_or_default(),
                    ),
                ];
                for ((k, table), (names, name)) in [(album_id, ALBUMS), (artist_id, ARTISTS)]
                    .into_iter()
                    .zip(names)
                {
                    let Ok(k) = uuid_key(k) else { continue };
                    let n = refs.get(k)?.map_or(0, |g| g.value());
                    if n <= 1 {
                        refs.remove(k)?;
                        txn.open_table(table)?.remove(k)?;
                        forget_name(txn, names, &name, k)?;
                    } else {
                        refs.insert(k, n - 1)?;
                    }
                }
                if let Ok(hash) = song.content_hash.parse::<ContentHash>() {
                    let mut blobs = txn.open_table(BLOBS)?;
                    let entry = blobs.get(hash.as_bytes())?.map(|g| g.value());
                    match entry {
                        Some((size, refs)) if refs > 1 => {
                            blobs.insert(hash.as_bytes(), (size, refs - 1))?;
                        }
                        Some((size, _)) => {
                            blobs.remove(hash.as_bytes())?;
                            let stored = meta.get(BYTES_STORED)?.map_or(0, |g| g.value());
                            meta.insert(BYTES_STORED, stored.saturating_sub(size))?;
                            push_outbox(txn, &mut meta, OutboxTask::DeleteBlob(hash))?;
                        }
                        None => {
                            let mut wanted = txn.open_table(WANTED)?;
                            let n = wanted.get(hash.as_bytes())?.map_or(0, |g| g.value());
                            if n <= 1 {
                                wanted.remove(hash.as_bytes())?;
                            } else {
                                wanted.insert(hash.as_bytes(), n - 1)?;
                            }
                        }
                    }
                }
                let change = push_change(txn, &mut meta, Change::DeleteSongId(id.to_string()))?;
                // The song leaves every playlist too (a scan: playlists are
                // few next to songs, deletes rare).
                let id_text = id.to_string();
                let mut playlists = txn.open_table(PLAYLISTS)?;
                let mut touched = Vec::new();
                for row in playlists.iter()? {
                    let (k, v) = row?;
                    let mut list: pb::Playlist = decode("playlists", v.value())?;
                    if list.song_ids.contains(&id_text) {
                        list.song_ids.retain(|s| *s != id_text);
                        list.version = seq;
                        touched.push((k.value(), list));
                    }
                }
                // Followers read the log on a gap: announcing the last of
                // these changes makes them read all of them.
                let mut announce = change.clone();
                for (k, list) in touched {
                    playlists.insert(k, list.encode_to_vec().as_slice())?;
                    announce = push_change(txn, &mut meta, Change::Playlist(list))?;
                }
                Ok((
                    Applied::Deleted {
                        change_seq: change.seq,
                    },
                    Some(announce),
                ))
            }
            Some(U::RegisterUser(user)) => {
                let outcome = register_user(txn, seq, user)?;
                finish_account(txn, &mut meta, outcome.map(Change::User))
            }
            Some(U::Playlist(op)) => {
                let outcome = apply_playlist(txn, seq, op)?;
                finish_account(txn, &mut meta, outcome.map(Change::Playlist))
            }
            Some(U::RevokeSession(r)) => {
                let outcome = revoke_session(txn, r)?;
                finish_account(txn, &mut meta, outcome.map(Change::Revoked))
            }
            None => Ok((
                Applied::Rejected(Error::Invalid {
                    what: "empty catalog update",
                }),
                None,
            )),
        }
    }

    /// Removes a blob that no song uses and none is waiting for (an upload
    /// whose catalog update was refused or never ordered), through the
    /// outbox.
    pub fn release_blob(&self, hash: &ContentHash) -> Result<()> {
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write()?;
        {
            let mut blobs = txn.open_table(BLOBS)?;
            let entry = blobs.get(hash.as_bytes())?.map(|g| g.value());
            if let Some((size, 0)) = entry {
                blobs.remove(hash.as_bytes())?;
                let mut meta = txn.open_table(META)?;
                let stored = meta.get(BYTES_STORED)?.map_or(0, |g| g.value());
                meta.insert(BYTES_STORED, stored.saturating_sub(size))?;
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

    /// The catalog digest and the last applied ring seq.
    pub fn ring_applied(&self) -> Result<(u64, String)> {
        let txn = self.db.begin_read()?;
        let ring = txn.open_table(RING_META)?;
        let applied = ring
            .get(RING_APPLIED)?
            .map_or(Ok(0), |g| be_u64(g.value()))?;
        let digest = ring
            .get(RING_DIGEST)?
            .map(|g| hex::encode(g.value()))
            .unwrap_or_default();
        Ok((applied, digest))
    }

    /// Network tasks waiting in the outbox (blob fetches and pushes), by
    /// outbox seq, and the lowest seq in the outbox (0 if it is empty).
    pub fn network_tasks(&self) -> Result<(Vec<(u64, OutboxTask)>, u64)> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let low = table.first()?.map_or(0, |(k, _)| k.value());
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            if let Some(t @ (OutboxTask::FetchBlob(_) | OutboxTask::PushBlob(_))) =
                OutboxTask::decode(v.value())
            {
                out.push((k.value(), t));
            }
        }
        Ok((out, low))
    }

    /// Removes a done outbox task.
    pub fn finish_task(&self, n: u64) -> Result<()> {
        self.finish_tasks(&[n])
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

    /// Carries out pending local outbox tasks (blob fetches are left to the
    /// network relay); returns how many were done.
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
                Some(OutboxTask::FetchBlob(_) | OutboxTask::PushBlob(_)) => continue,
                None => tracing::error!(outbox = n, "dropping undecodable outbox task"),
            }
            txn.open_table(OUTBOX)?.remove(n)?;
            txn.commit()?;
            done += 1;
        }
        Ok(done)
    }

    /// The applied state as of the applied entry `at`, as rows (see
    /// `SNAPSHOT_BLOBS`): refused if this node's applied entry is another.
    pub fn export_snapshot(&self, at: u64) -> Result<Vec<rondo_proto::ring::v1::SnapshotRow>> {
        use redb::TableHandle;
        let txn = self.db.begin_read()?;
        let ring = txn.open_table(RING_META)?;
        let applied = ring
            .get(RING_APPLIED)?
            .map_or(Ok(0), |g| be_u64(g.value()))?;
        if applied != at {
            return Err(Error::SnapshotMoved { asked: at, applied });
        }
        let mut rows = Vec::new();
        for key in [RING_APPLIED, RING_DIGEST, RING_LAYOUT] {
            if let Some(v) = ring.get(key)? {
                rows.push(snapshot_row(RING_META.name(), key.as_bytes(), v.value()));
            }
        }
        for def in SNAPSHOT_BLOBS {
            for row in txn.open_table(def)?.iter()? {
                let (k, v) = row?;
                rows.push(snapshot_row(
                    def.name(),
                    &k.value().to_be_bytes(),
                    v.value(),
                ));
            }
        }
        for def in SNAPSHOT_NAMES {
            for row in txn.open_table(def)?.iter()? {
                let (k, v) = row?;
                rows.push(snapshot_row(
                    def.name(),
                    k.value().as_bytes(),
                    &v.value().to_be_bytes(),
                ));
            }
        }
        for row in txn.open_table(SNAPSHOT_REFS)?.iter()? {
            let (k, v) = row?;
            rows.push(snapshot_row(
                REFS.name(),
                &k.value().to_be_bytes(),
                &v.value().to_be_bytes(),
            ));
        }
        for row in txn.open_table(SNAPSHOT_REVOKED)?.iter()? {
            let (k, v) = row?;
            rows.push(snapshot_row(
                REVOKED.name(),
                k.value().as_bytes(),
                &v.value().to_be_bytes(),
            ));
        }
        Ok(rows)
    }

    /// Replaces the applied state with a snapshot taken at the entry `at`
    /// (rows from [`Store::export_snapshot`] of node `from`), in one
    /// transaction that also records `at` as applied and as the compacted
    /// log prefix (with `layout`) and drops the log entries up to it.
    /// Blobs are reconciled: those no song uses any more are released,
    /// those songs need and this node lacks are fetched (from `from`
    /// first). The change stream announces songs this node holds that it
    /// did not have, songs it had that are gone, and accounts, playlists
    /// and revocations that differ. Does nothing if this node applied `at`
    /// already.
    pub fn install_snapshot(
        &self,
        at: rondo_ring::LogPos,
        layout: &rondo_ring::Layout,
        from: NodeId,
        rows: Vec<rondo_proto::ring::v1::SnapshotRow>,
    ) -> Result<()> {
        use redb::TableHandle;
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write()?;
        let mut changes = Vec::new();
        let mut released = Vec::new();
        {
            let mut ring = txn.open_table(RING_META)?;
            let applied = ring
                .get(RING_APPLIED)?
                .map_or(Ok(0), |g| be_u64(g.value()))?;
            if applied >= at.seq {
                return Ok(());
            }
            // What this node had, to announce the differences.
            let mut before: std::collections::HashMap<(String, u128), Vec<u8>> =
                std::collections::HashMap::new();
            for def in [SONGS, USERS, PLAYLISTS] {
                let table = txn.open_table(def)?;
                for row in table.iter()? {
                    let (k, v) = row?;
                    before.insert((def.name().to_string(), k.value()), v.value().to_vec());
                }
            }
            let old_revoked: std::collections::HashSet<String> = txn
                .open_table(REVOKED)?
                .iter()?
                .map(|r| r.map(|(k, _)| k.value().to_string()))
                .collect::<std::result::Result<_, _>>()?;
            for def in SNAPSHOT_BLOBS {
                txn.delete_table(def)?;
            }
            for def in SNAPSHOT_NAMES {
                txn.delete_table(def)?;
            }
            txn.delete_table(REFS)?;
            txn.delete_table(REVOKED)?;
            txn.delete_table(WANTED)?;
            // Every table exists again, empty, even if the snapshot has no
            // row for it (a later export reads them all).
            for def in SNAPSHOT_BLOBS {
                txn.open_table(def)?;
            }
            for def in SNAPSHOT_NAMES {
                txn.open_table(def)?;
            }
            txn.open_table(REFS)?;
            txn.open_table(REVOKED)?;
            txn.open_table(WANTED)?;
            ring.remove(RING_DIGEST)?;
            ring.remove(RING_LAYOUT)?;
            let mut new_revoked = Vec::new();
            let mut after: Vec<(String, u128, Vec<u8>)> = Vec::new();
            for row in rows {
                let t = row.table.as_str();
                if t == RING_META.name() {
                    let key = row_str(&row.key)?;
                    if [RING_DIGEST, RING_LAYOUT].contains(&key) {
                        ring.insert(key, row.value.as_slice())?;
                    }
                } else if let Some(def) = SNAPSHOT_BLOBS.iter().find(|d| d.name() == t) {
                    let id = row_u128(&row.key)?;
                    txn.open_table(*def)?.insert(id, row.value.as_slice())?;
                    if [SONGS.name(), USERS.name(), PLAYLISTS.name()].contains(&t) {
                        after.push((t.to_string(), id, row.value));
                    }
                } else if let Some(def) = SNAPSHOT_NAMES.iter().find(|d| d.name() == t) {
                    txn.open_table(*def)?
                        .insert(row_str(&row.key)?, row_u128(&row.value)?)?;
                } else if t == REFS.name() {
                    txn.open_table(REFS)?
                        .insert(row_u128(&row.key)?, be_u64(&row.value)?)?;
                } else if t == REVOKED.name() {
                    let session = row_str(&row.key)?;
                    txn.open_table(REVOKED)?
                        .insert(session, be_u64(&row.value)?)?;
                    new_revoked.push((session.to_string(), be_u64(&row.value)?));
                } else {
                    return Err(Error::Invalid {
                        what: "snapshot row of an unknown table",
                    });
                }
            }
            ring.insert(RING_APPLIED, at.seq.to_be_bytes().as_slice())?;
            let compacted = rondo_ring::Compacted {
                last: at,
                layout: layout.clone(),
            };
            ring.insert(RING_COMPACTED, compacted_to_wire(&compacted).as_slice())?;
            drop(ring);
            txn.open_table(RING_LOG)?
                .retain_in(..=at.seq, |_, _| false)?;

            // Blobs: reference counts from the songs, and what to fetch.
            let mut uses: std::collections::BTreeMap<[u8; 32], u64> =
                std::collections::BTreeMap::new();
            for row in txn.open_table(SONGS)?.iter()? {
                let (_, song) = row?;
                let song: pb::Song = decode("songs", song.value())?;
                let hash: ContentHash = song.content_hash.parse()?;
                *uses.entry(*hash.as_bytes()).or_default() += 1;
            }
            let mut meta = txn.open_table(META)?;
            let mut blobs = txn.open_table(BLOBS)?;
            let held: Vec<([u8; 32], (u64, u64))> = blobs
                .iter()?
                .map(|r| r.map(|(k, v)| (*k.value(), v.value())))
                .collect::<std::result::Result<_, _>>()?;
            for (hash, (size, refs)) in &held {
                let n = uses.get(hash).copied().unwrap_or(0);
                blobs.insert(hash, (*size, n))?;
                // Blobs whose songs are gone go; a copy taken ahead of a
                // song (no song yet) is left to its own release.
                if n == 0 && *refs > 0 {
                    released.push(ContentHash(*hash));
                }
            }
            drop(blobs);
            let held: std::collections::BTreeSet<[u8; 32]> =
                held.into_iter().map(|(h, _)| h).collect();
            let mut wanted = txn.open_table(WANTED)?;
            for (hash, n) in &uses {
                if !held.contains(hash) {
                    wanted.insert(hash, *n)?;
                    let task = FetchTask {
                        hash: ContentHash(*hash),
                        from,
                        push_expected: false,
                    };
                    push_outbox(&txn, &mut meta, OutboxTask::FetchBlob(task))?;
                }
            }
            drop(wanted);

            // Announcements.
            for (table, id, value) in &after {
                if before.remove(&(table.clone(), *id)).as_deref() == Some(value.as_slice()) {
                    continue;
                }
                let change = if table == SONGS.name() {
                    let song: pb::Song = decode("songs", value)?;
                    let hash: ContentHash = song.content_hash.parse()?;
                    if !held.contains(hash.as_bytes()) {
                        continue; // announced once its blob is here
                    }
                    Change::Upsert(song)
                } else if table == USERS.name() {
                    Change::User(decode("users", value)?)
                } else {
                    Change::Playlist(decode("playlists", value)?)
                };
                changes.push(push_change(&txn, &mut meta, change)?);
            }
            for ((table, id), _) in before {
                if table == SONGS.name() {
                    let song = uuid::Uuid::from_u128(id).to_string();
                    changes.push(push_change(&txn, &mut meta, Change::DeleteSongId(song))?);
                }
            }
            for (session, expires_at) in new_revoked {
                if !old_revoked.contains(&session) {
                    let revoked = pb::RevokedSession {
                        session_id: session,
                        expires_at,
                        at: 0,
                    };
                    changes.push(push_change(&txn, &mut meta, Change::Revoked(revoked))?);
                }
            }
        }
        txn.commit()?;
        for c in changes {
            let _ = self.changes.send(c);
        }
        // Blobs no song uses any more go through the outbox.
        drop(_guard);
        for hash in released {
            self.release_blob(&hash)?;
        }
        Ok(())
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
        if let Some(bytes) = meta.get(RING_APPLIED)? {
            durable.applied = be_u64(bytes.value())?;
        }
        if let Some(bytes) = meta.get(RING_COMPACTED)? {
            let c: rondo_proto::ring::v1::Compacted = decode("ring_meta", bytes.value())?;
            durable.compacted = Some(rondo_ring::Compacted {
                last: crate::ring::pos_from_wire(c.last)?,
                layout: crate::ring::layout_from_wire(c.layout.ok_or(Error::Invalid {
                    what: "compacted prefix without layout",
                })?)?,
            });
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
                    Output::Compact(c) => {
                        log.retain_in(..=c.last.seq, |_, _| false)?;
                        meta.insert(RING_COMPACTED, compacted_to_wire(c).as_slice())?;
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
            inbox_len: txn.open_table(INBOX)?.len()?,
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

    fn upsert(song: pb::Song, bytes: &[u8], origin: NodeId) -> Vec<u8> {
        let mut song = song;
        song.content_hash = ContentHash::of(bytes).to_hex();
        song.size_bytes = bytes.len() as u64;
        pb::CatalogUpdate {
            origin: origin.to_string(),
            change: Some(pb::catalog_update::Change::Upsert(song)),
            proposal: String::new(),
        }
        .encode_to_vec()
    }

    fn delete(id: SongId) -> Vec<u8> {
        pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::DeleteSongId(id.to_string())),
            ..Default::default()
        }
        .encode_to_vec()
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
    async fn apply_dedupe_delete_replay_and_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = NodeId::new_random();
        let (a, b) = (SongId::new_random(), SongId::new_random());
        store.put_blob(staged(&store, b"same bytes").await).unwrap();
        let first = store
            .apply_update(1, &upsert(song(a), b"same bytes", me))
            .unwrap();
        let Applied::Stored {
            song: sa,
            change_seq: Some(seq_a),
        } = first
        else {
            panic!("stored with a change: {first:?}");
        };
        assert_eq!(sa.size_bytes, 10);
        store.put_blob(staged(&store, b"same bytes").await).unwrap();
        store
            .apply_update(2, &upsert(song(b), b"same bytes", me))
            .unwrap();
        let st = store.stats().unwrap();
        assert_eq!(
            (st.song_count, st.blob_count, st.bytes_stored, st.last_seq),
            (2, 1, 10, 2)
        );
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
        // A replayed entry changes nothing; the same id twice is refused.
        assert!(matches!(
            store
                .apply_update(2, &upsert(song(b), b"same bytes", me))
                .unwrap(),
            Applied::Replay
        ));
        let again = store
            .apply_update(3, &upsert(song(a), b"same bytes", me))
            .unwrap();
        assert!(
            matches!(again, Applied::Rejected(Error::SongExists(_))),
            "{again:?}"
        );
        assert_eq!(store.stats().unwrap().song_count, 2);
        // Deleting one keeps the shared blob; deleting both removes it via the outbox.
        store.apply_update(4, &delete(a)).unwrap();
        assert_eq!(store.run_outbox().unwrap(), 0);
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        store.apply_update(5, &delete(b)).unwrap();
        assert_eq!(store.stats().unwrap().outbox_len, 1);
        assert_eq!(store.run_outbox().unwrap(), 1);
        assert_eq!(files_in(&dir.path().join("blobs")), 0);
        let st = store.stats().unwrap();
        assert_eq!(
            (st.song_count, st.blob_count, st.bytes_stored, st.outbox_len),
            (0, 0, 0, 0)
        );
        let gone = store.apply_update(6, &delete(a)).unwrap();
        assert!(
            matches!(gone, Applied::Rejected(Error::SongNotFound(_))),
            "{gone:?}"
        );
        let changes = store.changes_after(seq_a, 10).unwrap();
        assert_eq!(
            changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(store.ring_applied().unwrap().0, 6);
    }

    fn named(artist: &str, album: &str) -> pb::Song {
        let mut s = song(SongId::new_random());
        if let (Some(a), Some(b)) = (s.artist.as_mut(), s.album.as_mut()) {
            a.name = artist.into();
            b.title = album.into();
        }
        s
    }

    fn filed(store: &Store, id: &str) -> (String, String, String, String) {
        let s = store.song(id.parse().unwrap()).unwrap().unwrap();
        let (a, b) = (s.artist.unwrap(), s.album.unwrap());
        assert_eq!(b.artist_id, a.id, "album and song agree on the artist");
        (a.id, a.name, b.id, b.title)
    }

    #[tokio::test]
    async fn songs_are_filed_under_the_artist_and_album_of_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = NodeId::new_random();
        store.put_blob(staged(&store, b"x").await).unwrap();
        let (first, same, other_album, other_artist) = (
            named("Ada Lovelace", "Notes"),
            named("  ada LOVELACE ", "NOTES"),
            named("Ada Lovelace", "Letters"),
            named("Babbage", "Notes"),
        );
        for (seq, s) in [&first, &same, &other_album, &other_artist]
            .into_iter()
            .enumerate()
        {
            store
                .apply_update(seq as u64 + 1, &upsert(s.clone(), b"x", me))
                .unwrap();
        }
        let f = filed(&store, &first.id);
        assert_eq!(f.1, "Ada Lovelace");
        // Other ids and spellings, same names: the first song's records.
        assert_eq!(filed(&store, &same.id), f);
        let o = filed(&store, &other_album.id);
        assert_eq!((&o.0, &o.1), (&f.0, &f.1));
        assert_ne!(o.2, f.2, "another album of the same artist");
        let b = filed(&store, &other_artist.id);
        assert_ne!(b.0, f.0);
        assert_ne!(
            b.2, f.2,
            "the same title by another artist is another album"
        );
        // Once the artist's last song goes, its name is free for a new one.
        for (seq, s) in [&first, &same, &other_album].into_iter().enumerate() {
            store
                .apply_update(seq as u64 + 10, &delete(s.id.parse().unwrap()))
                .unwrap();
        }
        let again = named("ADA LOVELACE", "Notes");
        store
            .apply_update(20, &upsert(again.clone(), b"x", me))
            .unwrap();
        let g = filed(&store, &again.id);
        assert_eq!(g.0, again.artist.as_ref().unwrap().id);
        assert_eq!(g.1, "ADA LOVELACE");
        // The name tables are rebuilt for a store that lacks them.
        drop(store);
        {
            let db = Database::create(dir.path().join("node.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(ARTIST_NAMES).unwrap();
            txn.delete_table(ALBUM_NAMES).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let late = named("ada lovelace", "notes");
        store
            .apply_update(21, &upsert(late.clone(), b"x", me))
            .unwrap();
        assert_eq!(filed(&store, &late.id), g);
    }

    #[tokio::test]
    async fn a_song_without_its_blob_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let origin = NodeId::new_random();
        let id = SongId::new_random();
        let out = store
            .apply_update(1, &upsert(song(id), b"far away", origin))
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
            store.network_tasks().unwrap().0,
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

    fn user(name: &str, role: &str) -> (String, Vec<u8>) {
        let id = uuid::Uuid::new_v4().to_string();
        let u = pb::User {
            id: id.clone(),
            name: name.into(),
            password_hash: "$argon2id$x".into(),
            role: role.into(),
            ..Default::default()
        };
        (
            id,
            pb::CatalogUpdate {
                change: Some(pb::catalog_update::Change::RegisterUser(u)),
                ..Default::default()
            }
            .encode_to_vec(),
        )
    }

    fn op(list: &str, actor: &str, op: pb::playlist_op::Op) -> Vec<u8> {
        pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::Playlist(pb::PlaylistOp {
                playlist_id: list.into(),
                actor_id: actor.into(),
                at_ms: 5,
                op: Some(op),
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn last_playlist(store: &Store) -> pb::Playlist {
        store
            .changes_after(0, 10_000)
            .unwrap()
            .into_iter()
            .rev()
            .find_map(|c| match c.change {
                Some(Change::Playlist(p)) => Some(p),
                _ => None,
            })
            .unwrap()
    }

    #[tokio::test]
    async fn accounts_first_is_admin_names_unique_playlists_checked_in_order() {
        use pb::playlist_op::Op;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (alice, reg) = user("Alice", "listener");
        assert!(matches!(
            store.apply_update(1, &reg).unwrap(),
            Applied::Changed { .. }
        ));
        let (bob, reg) = user("bob", "listener");
        store.apply_update(2, &reg).unwrap();
        let roles: Vec<(String, String)> = store
            .changes_after(0, 10)
            .unwrap()
            .into_iter()
            .filter_map(|c| match c.change {
                Some(Change::User(u)) => Some((u.name, u.role)),
                _ => None,
            })
            .collect();
        assert_eq!(
            roles,
            [
                ("Alice".into(), "admin".into()),
                ("bob".into(), "listener".into())
            ]
        );
        // Names are unique case-insensitively; nothing changes.
        let (_, dup) = user("ALICE", "listener");
        let before = store.stats().unwrap().last_seq;
        assert!(matches!(
            store.apply_update(3, &dup).unwrap(),
            Applied::Rejected(Error::NameTaken(_))
        ));
        assert_eq!(store.stats().unwrap().last_seq, before);

        // Bob's playlist: create, add two songs, move, remove.
        let me = NodeId::new_random();
        let (s1, s2) = (SongId::new_random(), SongId::new_random());
        store.put_blob(staged(&store, b"one").await).unwrap();
        store
            .apply_update(4, &upsert(song(s1), b"one", me))
            .unwrap();
        store.put_blob(staged(&store, b"two").await).unwrap();
        store
            .apply_update(5, &upsert(song(s2), b"two", me))
            .unwrap();
        let list = uuid::Uuid::new_v4().to_string();
        store
            .apply_update(6, &op(&list, &bob, Op::Create(" Road trip ".into())))
            .unwrap();
        let add = Op::AddSongs(pb::AddSongs {
            song_ids: vec![s1.to_string(), s2.to_string()],
            position: None,
        });
        store.apply_update(7, &op(&list, &bob, add)).unwrap();
        store
            .apply_update(
                8,
                &op(&list, &bob, Op::MoveSong(pb::MoveSong { from: 1, to: 0 })),
            )
            .unwrap();
        let p = last_playlist(&store);
        assert_eq!(p.name, "Road trip");
        assert_eq!(p.song_ids, [s2.to_string(), s1.to_string()]);
        assert_eq!(p.version, 8);
        // Someone else's playlist is refused (Alice is admin: allowed).
        let (carol, reg) = user("carol", "listener");
        store.apply_update(9, &reg).unwrap();
        assert!(matches!(
            store
                .apply_update(10, &op(&list, &carol, Op::Rename("mine".into())))
                .unwrap(),
            Applied::Rejected(Error::Forbidden(_))
        ));
        assert!(matches!(
            store
                .apply_update(11, &op(&list, &alice, Op::Rename("Trip".into())))
                .unwrap(),
            Applied::Changed { .. }
        ));
        // Unknown songs and bad positions are refused.
        let ghost = Op::AddSongs(pb::AddSongs {
            song_ids: vec![SongId::new_random().to_string()],
            position: Some(0),
        });
        assert!(matches!(
            store.apply_update(12, &op(&list, &bob, ghost)).unwrap(),
            Applied::Rejected(Error::NotFound { .. })
        ));
        let bad = Op::RemoveSongs(pb::RemoveSongs { positions: vec![7] });
        assert!(matches!(
            store.apply_update(13, &op(&list, &bob, bad)).unwrap(),
            Applied::Rejected(Error::Invalid { .. })
        ));
        // Deleting a song takes it out of the playlist, in the same order.
        store.apply_update(14, &delete(s2)).unwrap();
        let p = last_playlist(&store);
        assert_eq!((p.song_ids, p.version), (vec![s1.to_string()], 14));
        // Delete: a tombstone.
        store
            .apply_update(15, &op(&list, &bob, Op::Delete(true)))
            .unwrap();
        assert!(last_playlist(&store).deleted);
        assert!(matches!(
            store
                .apply_update(16, &op(&list, &bob, Op::Rename("x".into())))
                .unwrap(),
            Applied::Rejected(Error::NotFound { .. })
        ));
        // Revocations are kept until they expire (by the proposer's clock).
        let revoke = |id: &str, expires_at: u64, at: u64| {
            pb::CatalogUpdate {
                change: Some(pb::catalog_update::Change::RevokeSession(
                    pb::RevokedSession {
                        session_id: id.into(),
                        expires_at,
                        at,
                    },
                )),
                ..Default::default()
            }
            .encode_to_vec()
        };
        store.apply_update(17, &revoke("s1", 50, 10)).unwrap();
        store.apply_update(18, &revoke("s2", 500, 60)).unwrap();
        let txn = store.db.begin_read().unwrap();
        let ids: Vec<String> = txn
            .open_table(REVOKED)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().to_owned())
            .collect();
        assert_eq!(ids, ["s2"]);
    }

    /// A store whose applied layout is itself and `others`.
    fn in_layout(store: &Store, others: &[NodeId]) {
        let mut nodes: std::collections::BTreeMap<NodeId, String> =
            others.iter().map(|n| (*n, n.to_string())).collect();
        nodes.insert(store.node_id(), "me".into());
        store
            .apply_marker(1, Some(&rondo_ring::Layout::genesis(nodes)))
            .unwrap();
    }

    #[tokio::test]
    async fn the_proposer_pushes_to_the_layout_and_the_others_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, stranger) = (
            NodeId::new_random(),
            NodeId::new_random(),
            NodeId::new_random(),
        );
        in_layout(&store, &[a, b]);
        let me = store.node_id();
        // Its own song, blob here: a push to each other node of the layout.
        store.put_blob(staged(&store, b"mine").await).unwrap();
        store
            .apply_update(2, &upsert(song(SongId::new_random()), b"mine", me))
            .unwrap();
        // Songs of others, blob missing: a fetch that waits for the push
        // when the proposer is in the layout, and one that does not when
        // it is not (the push will never come).
        store
            .apply_update(3, &upsert(song(SongId::new_random()), b"from a", a))
            .unwrap();
        store
            .apply_update(4, &upsert(song(SongId::new_random()), b"far", stranger))
            .unwrap();
        let (tasks, low) = store.network_tasks().unwrap();
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
        in_layout(&store, &[a]);
        store
            .apply_update(2, &upsert(song(SongId::new_random()), b"pushed", a))
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
        assert!(store.delivered(a, 7).unwrap());
        // Sent again (the answer was lost): nothing happens.
        assert_eq!(
            store
                .put_wanted(staged(&store, b"pushed").await, Some(d(7, 5)))
                .unwrap(),
            Delivered::Duplicate
        );
        assert_eq!(store.deliver_held(d(7, 5)).unwrap(), Delivered::Duplicate);
        let st = store.stats().unwrap();
        assert_eq!((st.blob_count, st.inbox_len), (1, 1));
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
        // The origin reports it will never send rows below 9 again: row 7
        // is forgotten.
        assert_eq!(store.deliver_held(d(9, 9)).unwrap(), Delivered::Held);
        assert!(!store.delivered(a, 7).unwrap());
        assert!(store.delivered(a, 9).unwrap());
        assert_eq!(store.stats().unwrap().inbox_len, 1);
        // A batch sorts its rows in one transaction: seen before, here
        // already (recorded), still to fetch (not recorded yet).
        store
            .apply_update(3, &upsert(song(SongId::new_random()), b"later", a))
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
        assert!(store.delivered(a, 11).unwrap());
        assert!(!store.delivered(a, 12).unwrap());
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

    #[tokio::test]
    async fn a_snapshot_carries_the_applied_state_and_reconciles_blobs() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Store::open(da.path()).unwrap();
        let b = Store::open(db.path()).unwrap();
        in_layout(&a, &[b.node_id()]);
        in_layout(&b, &[a.node_id()]);
        let (s1, s2, s3) = (
            SongId::new_random(),
            SongId::new_random(),
            SongId::new_random(),
        );
        let origin = NodeId::new_random();
        for store in [&a, &b] {
            store.put_blob(staged(store, b"one").await).unwrap();
            store
                .apply_update(2, &upsert(song(s1), b"one", origin))
                .unwrap();
        }
        // b stops here; a goes on: a song, the delete of the first, a song.
        a.apply_update(3, &upsert(song(s2), b"two", origin))
            .unwrap();
        a.apply_update(4, &delete(s1)).unwrap();
        a.apply_update(5, &upsert(song(s3), b"three", origin))
            .unwrap();
        assert!(matches!(
            a.export_snapshot(4),
            Err(Error::SnapshotMoved {
                asked: 4,
                applied: 5
            })
        ));
        let rows = a.export_snapshot(5).unwrap();
        let mut changes = b.subscribe();
        let at = rondo_ring::LogPos {
            ring: rondo_ring::RingId::default(),
            seq: 5,
        };
        let layout = a.ring_layout().unwrap().unwrap();
        b.install_snapshot(at, &layout, a.node_id(), rows.clone())
            .unwrap();

        assert_eq!(
            b.ring_applied().unwrap(),
            a.ring_applied().unwrap(),
            "one digest"
        );
        assert!(b.song(s1).unwrap().is_none());
        assert_eq!(b.song(s2).unwrap(), a.song(s2).unwrap());
        assert_eq!(b.song(s3).unwrap(), a.song(s3).unwrap());
        assert_eq!(b.ring_layout().unwrap(), Some(layout.clone()));
        let durable = b.ring_load().unwrap();
        assert_eq!(durable.applied, 5);
        assert_eq!(durable.compacted.map(|c| c.last), Some(at));
        // The new songs' blobs are fetched at once, from the source.
        let fetches: Vec<(ContentHash, NodeId, bool)> = b
            .network_tasks()
            .unwrap()
            .0
            .into_iter()
            .filter_map(|(_, t)| match t {
                OutboxTask::FetchBlob(f) => Some((f.hash, f.from, f.push_expected)),
                _ => None,
            })
            .collect();
        assert_eq!(fetches.len(), 2);
        for h in [&b"two"[..], b"three"] {
            assert!(fetches.contains(&(ContentHash::of(h), a.node_id(), false)));
            assert!(b.wants_blob(&ContentHash::of(h)).unwrap());
        }
        // The deleted song is announced gone; its blob goes.
        let c = changes.try_recv().unwrap();
        assert_eq!(c.change, Some(Change::DeleteSongId(s1.to_string())));
        assert!(changes.try_recv().is_err(), "nothing else to announce yet");
        b.run_outbox().unwrap();
        assert_eq!(b.stats().unwrap().blob_count, 0);
        assert_eq!(files_in(&db.path().join("blobs")), 0);
        // A fetched blob announces its song.
        b.put_wanted(staged(&b, b"two").await, None).unwrap();
        let c = changes.try_recv().unwrap();
        assert!(matches!(c.change, Some(Change::Upsert(s)) if s.id == s2.to_string()));
        // A node that took a snapshot serves one in turn (every table is
        // there, even those the snapshot had no row for).
        assert_eq!(b.export_snapshot(5).unwrap().len(), rows.len());
        // The same snapshot again does nothing.
        b.install_snapshot(at, &layout, a.node_id(), rows).unwrap();
        assert!(b.song(s2).unwrap().is_some());
        assert_eq!(b.stats().unwrap().blob_count, 1);
    }
}
