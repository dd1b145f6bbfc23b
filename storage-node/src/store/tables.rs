//! The tables of `node.redb` and the helpers every table family shares:
//! the applied ring seq, the applied layout, the catalog digest, the change
//! log, the stored-bytes counter, record decoding.
//!
//! Every table of the node is defined here, so that one file shows the
//! whole schema; each family's file (`blobs.rs`, `catalog.rs`, ...) reads
//! and writes its own.

use prost::Message;
use redb::{MultimapTableDefinition, ReadableTable, TableDefinition};
use rondo_core::SongId;
use rondo_proto::storage::v1::{self as pb, catalog_change::Change};

use crate::error::{Error, Result};
use crate::ring::wire;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const SONGS: TableDefinition<u128, &[u8]> = TableDefinition::new("songs");
pub(super) const ARTISTS: TableDefinition<u128, &[u8]> = TableDefinition::new("artists");
pub(super) const ALBUMS: TableDefinition<u128, &[u8]> = TableDefinition::new("albums");
/// Artists by name folded to lower case (→ artist id). A song names its
/// artist and album; applying it files it under the artist and album already
/// known by those names, so every node, in the one order of the ring, agrees
/// on them whichever gateway or node proposed the song.
pub(super) const ARTIST_NAMES: TableDefinition<&str, u128> = TableDefinition::new("artist_names");
/// Albums by artist and folded title (`{artist id:032x}/{title}` → album id).
pub(super) const ALBUM_NAMES: TableDefinition<&str, u128> = TableDefinition::new("album_names");
/// Songs by content hash (hash → song ids): a file whose bytes are
/// already a song is that song, not a new one. Derived from `songs` (built
/// at open when missing, rebuilt when a snapshot is installed), never sent.
pub(super) const SONG_HASHES: MultimapTableDefinition<&[u8; 32], u128> =
    MultimapTableDefinition::new("song_hashes");
/// Number of songs that refer to an artist or album (key: id), so that an
/// artist or album disappears with its last song.
pub(super) const REFS: TableDefinition<u128, u64> = TableDefinition::new("refs");
/// Blob index: content hash → (size in bytes, number of songs using it).
pub(super) const BLOBS: TableDefinition<&[u8; 32], (u64, u64)> = TableDefinition::new("blobs");
/// Catalog change log: sequence → encoded `CatalogChange`.
pub(super) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// Side effects to carry out after commit: outbox sequence → encoded task.
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Outbox rows of other nodes carried out here: (origin node, outbox seq).
/// Written in the transaction of the effect, so a row delivered again is a
/// no-op; forgotten once the origin reports it will never send them again.
pub(super) const INBOX: TableDefinition<(u128, u64), ()> = TableDefinition::new("inbox");

/// The control plane's durable state: `promised` (encoded ring id) and
/// `applied` (8 bytes, big endian).
pub(super) const RING_META: TableDefinition<&str, &[u8]> = TableDefinition::new("ring_meta");
/// The ordered log: seq → encoded `rondo.ring.v1.Entry`.
pub(super) const RING_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("ring_log");

/// Blobs this node lacks that catalog songs use: hash → number of songs.
pub(super) const WANTED: TableDefinition<&[u8; 32], u64> = TableDefinition::new("wanted");
/// Accounts (id → `pb::User`).
pub(super) const USERS: TableDefinition<u128, &[u8]> = TableDefinition::new("users");
/// Account names, folded to lower case (→ account id).
pub(super) const USER_NAMES: TableDefinition<&str, u128> = TableDefinition::new("user_names");
/// Playlists (id → `pb::Playlist`); deleted ones are removed.
pub(super) const PLAYLISTS: TableDefinition<u128, &[u8]> = TableDefinition::new("playlists");
/// Sessions ended by logout (id → expiry, Unix seconds), until they expire.
pub(super) const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");
/// App passwords by id (`pb::AppPassword`, sealed).
pub(super) const APP_PASSWORDS: TableDefinition<u128, &[u8]> =
    TableDefinition::new("app_passwords");
/// An account's marks on an item (`pb::Annotation`), by
/// `listening::mark_key(user, item)`.
pub(super) const ANNOTATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("annotations");
/// Saved play queues by account (`pb::PlayQueue`).
pub(super) const PLAY_QUEUES: TableDefinition<u128, &[u8]> = TableDefinition::new("play_queues");
/// Deleted song id → the seq of its deletion: a tombstone, so that the id
/// is never a song again (a replayed upload grant, a stale proposal).
pub(super) const DELETED_SONGS: TableDefinition<u128, u64> = TableDefinition::new("deleted_songs");

/// The scrub's own state (node-local, never in a snapshot): its cursor.
pub(super) const SCRUB: TableDefinition<&str, &[u8]> = TableDefinition::new("scrub");

pub(super) const RING_APPLIED: &str = "applied";
/// Key in `ring_meta`: the compacted log prefix (a `ring.v1.Compacted`).
pub(super) const RING_COMPACTED: &str = "compacted";
/// Key in `ring_meta`: the layout as applied (a `ring.v1.Layout`).
pub(super) const RING_LAYOUT: &str = "layout";
pub(super) const RING_DIGEST: &str = "digest";
pub(super) const LAST_SEQ: &str = "last_seq";
pub(super) const LAST_OUTBOX: &str = "last_outbox";
pub(super) const BYTES_STORED: &str = "bytes_stored";

/// The open `ring_meta` table of a transaction.
pub(super) type RingMeta<'txn> = redb::Table<'txn, &'static str, &'static [u8]>;
/// The open `meta` table of a transaction.
pub(super) type Meta<'txn> = redb::Table<'txn, &'static str, u64>;

pub(super) fn be_u64(bytes: &[u8]) -> Result<u64> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| Error::Invalid {
        what: "ring_meta value is not 8 bytes",
    })?;
    Ok(u64::from_be_bytes(raw))
}

/// The last ring entry applied (0 before any).
pub(super) fn applied_seq(ring: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    ring.get(RING_APPLIED)?.map_or(Ok(0), |g| be_u64(g.value()))
}

/// The layout as applied, if one was.
pub(super) fn applied_layout(
    ring: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<rondo_ring::Layout>> {
    match ring.get(RING_LAYOUT)? {
        Some(bytes) => {
            let layout: rondo_proto::ring::v1::Layout = decode("ring_meta", bytes.value())?;
            Ok(Some(wire::layout_from_wire(layout)?))
        }
        None => Ok(None),
    }
}

/// Records the layout as applied.
pub(super) fn set_applied_layout(
    ring: &mut RingMeta<'_>,
    layout: &rondo_ring::Layout,
) -> Result<()> {
    let bytes = wire::layout_to_wire(layout).encode_to_vec();
    ring.insert(RING_LAYOUT, bytes.as_slice())?;
    Ok(())
}

/// Records entry `seq` as applied and folds it (`what` it decided) into
/// the catalog digest, which every node computes alike over the same log.
pub(super) fn fold_applied(ring: &mut RingMeta<'_>, seq: u64, what: &[u8]) -> Result<()> {
    let digest = ring
        .get(RING_DIGEST)?
        .map(|g| g.value().to_vec())
        .unwrap_or_default();
    let mut h = blake3::Hasher::new();
    h.update(&digest);
    h.update(&seq.to_be_bytes());
    h.update(what);
    ring.insert(RING_DIGEST, h.finalize().as_bytes().as_slice())?;
    ring.insert(RING_APPLIED, seq.to_be_bytes().as_slice())?;
    Ok(())
}

/// Adds `delta` bytes to (or, negative, takes them from) the stored-bytes
/// counter.
pub(super) fn add_bytes_stored(meta: &mut Meta<'_>, delta: i128) -> Result<()> {
    let stored = meta.get(BYTES_STORED)?.map_or(0, |g| g.value());
    let next = (i128::from(stored) + delta).clamp(0, i128::from(u64::MAX));
    meta.insert(BYTES_STORED, u64::try_from(next).unwrap_or(u64::MAX))?;
    Ok(())
}

/// Appends a change to the node's change log.
pub(super) fn push_change(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
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

/// Announces, on the change log, every song whose blob is one of `gone`
/// (hex hashes) as released by this node: gateways stop signing its URLs
/// here. In id order, so that the log reads the same on every run.
pub(super) fn release_songs(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    gone: &std::collections::HashSet<String>,
) -> Result<Vec<pb::CatalogChange>> {
    let mut songs = std::collections::BTreeMap::new();
    for row in txn.open_table(SONGS)?.iter()? {
        let (k, v) = row?;
        let song: pb::Song = decode("songs", v.value())?;
        if gone.contains(&song.content_hash) {
            songs.insert(k.value(), song.id);
        }
    }
    songs
        .into_values()
        .map(|id| push_change(txn, meta, Change::ReleasedSongId(id)))
        .collect()
}

/// Every blob the catalog uses (songs' audio and pictures, albums' own
/// images), with its size and the number of records using it: what the
/// blob index's reference counts are. A scan of the songs and albums.
pub(super) fn catalog_blobs(
    txn: &impl CatalogTables,
) -> Result<std::collections::BTreeMap<[u8; 32], (u64, u64)>> {
    let mut uses: std::collections::BTreeMap<[u8; 32], (u64, u64)> = Default::default();
    let mut count = |hash: &str, size: u64| -> Result<()> {
        let hash: rondo_core::ContentHash = hash.parse()?;
        let entry = uses.entry(*hash.as_bytes()).or_insert((size, 0));
        entry.1 += 1;
        Ok(())
    };
    for row in txn.songs()?.iter()? {
        let (_, v) = row?;
        let song: pb::Song = decode("songs", v.value())?;
        count(&song.content_hash, song.size_bytes)?;
        if let Some(art) = &song.art {
            count(&art.hash, art.size)?;
        }
    }
    for row in txn.albums()?.iter()? {
        let (_, v) = row?;
        let album: pb::Album = decode("albums", v.value())?;
        if let Some(art) = &album.art {
            count(&art.hash, art.size)?;
        }
    }
    Ok(uses)
}

/// Read or write transactions, for [`catalog_blobs`].
pub(super) trait CatalogTables {
    type Table: ReadableTable<u128, &'static [u8]>;
    fn songs(&self) -> Result<Self::Table>;
    fn albums(&self) -> Result<Self::Table>;
}

impl CatalogTables for redb::ReadTransaction {
    type Table = redb::ReadOnlyTable<u128, &'static [u8]>;
    fn songs(&self) -> Result<Self::Table> {
        Ok(self.open_table(SONGS)?)
    }
    fn albums(&self) -> Result<Self::Table> {
        Ok(self.open_table(ALBUMS)?)
    }
}

impl<'t> CatalogTables for &'t redb::WriteTransaction {
    type Table = redb::Table<'t, u128, &'static [u8]>;
    fn songs(&self) -> Result<Self::Table> {
        Ok(self.open_table(SONGS)?)
    }
    fn albums(&self) -> Result<Self::Table> {
        Ok(self.open_table(ALBUMS)?)
    }
}

/// Decodes a stored record of `table`.
pub(super) fn decode<M: Message + Default>(table: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|source| Error::Corrupt { table, source })
}

/// The table key of a UUID in text form.
pub(super) fn uuid_key(s: &str) -> Result<u128> {
    Ok(s.parse::<SongId>()?.0.as_u128())
}

/// Creates every table that does not exist yet (a later read of a table
/// that was never written must not fail).
pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<()> {
    txn.open_table(META)?;
    txn.open_table(SONGS)?;
    txn.open_table(ARTISTS)?;
    txn.open_table(ALBUMS)?;
    txn.open_multimap_table(SONG_HASHES)?;
    txn.open_table(ARTIST_NAMES)?;
    txn.open_table(ALBUM_NAMES)?;
    txn.open_table(REFS)?;
    txn.open_table(BLOBS)?;
    txn.open_table(CHANGES)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(INBOX)?;
    txn.open_table(USERS)?;
    txn.open_table(USER_NAMES)?;
    txn.open_table(PLAYLISTS)?;
    txn.open_table(REVOKED)?;
    txn.open_table(APP_PASSWORDS)?;
    txn.open_table(ANNOTATIONS)?;
    txn.open_table(PLAY_QUEUES)?;
    txn.open_table(DELETED_SONGS)?;
    txn.open_table(RING_META)?;
    txn.open_table(RING_LOG)?;
    txn.open_table(WANTED)?;
    txn.open_table(SCRUB)?;
    Ok(())
}

/// Removes the rows of a table of records whose owner (`owner` of the
/// decoded record) is `user_id`: an account's records, at its deletion.
pub(super) fn remove_owned<M: prost::Message + Default>(
    txn: &redb::WriteTransaction,
    (table, what): (TableDefinition<u128, &[u8]>, &'static str),
    user_id: &str,
    owner: impl Fn(&M) -> &str,
) -> Result<()> {
    let mut t = txn.open_table(table)?;
    let mut gone = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        let record: M = decode(what, v.value())?;
        if owner(&record) == user_id {
            gone.push(k.value());
        }
    }
    for k in gone {
        t.remove(k)?;
    }
    Ok(())
}
