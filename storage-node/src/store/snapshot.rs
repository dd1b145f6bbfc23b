//! Snapshots of the applied state: exported by a node whose log a member
//! is too far behind (the member's entries were compacted away), and
//! installed by that member in one transaction that reconciles its blobs
//! and announces what changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use rondo_core::{ContentHash, NodeId};
use rondo_proto::ring::v1::SnapshotRow;
use rondo_proto::storage::v1::{self as pb, catalog_change::Change};

use super::outbox::push_outbox;
use super::ring_state::set_compacted;
use super::tables::*;
use super::{FetchTask, OutboxTask, Store};
use crate::error::{Error, Result};

/// Tables of the applied state keyed by id, with encoded values: they make
/// up a snapshot with the name tables below and `ring_meta`'s applied seq,
/// digest and layout.
const SNAPSHOT_BLOBS: [TableDefinition<u128, &[u8]>; 8] = [
    SONGS,
    ARTISTS,
    ALBUMS,
    USERS,
    PLAYLISTS,
    APP_PASSWORDS,
    ANNOTATIONS,
    PLAY_QUEUES,
];
/// Name tables (folded name → id) of a snapshot.
const SNAPSHOT_NAMES: [TableDefinition<&str, u128>; 3] = [ARTIST_NAMES, ALBUM_NAMES, USER_NAMES];
/// Counter tables of a snapshot.
const SNAPSHOT_REFS: TableDefinition<u128, u64> = REFS;
const SNAPSHOT_REVOKED: TableDefinition<&str, u64> = REVOKED;

fn snapshot_row(table: &str, key: &[u8], value: &[u8]) -> SnapshotRow {
    SnapshotRow {
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

/// The records of the applied state that are announced when they change,
/// by (table, id).
type Records = HashMap<(String, u128), Vec<u8>>;

/// What a snapshot brought: the announced records and the revocations.
#[derive(Default)]
struct Loaded {
    records: Vec<(String, u128, Vec<u8>)>,
    revoked: Vec<(String, u64)>,
}

/// Tables whose changes go on the change stream.
const ANNOUNCED: [TableDefinition<u128, &[u8]>; 7] = [
    SONGS,
    USERS,
    PLAYLISTS,
    ALBUMS,
    APP_PASSWORDS,
    ANNOTATIONS,
    PLAY_QUEUES,
];

impl Store {
    /// The applied state as of the applied entry `at`, as rows (see
    /// `SNAPSHOT_BLOBS`): refused if this node's applied entry is another.
    pub fn export_snapshot(&self, at: u64) -> Result<Vec<SnapshotRow>> {
        let txn = self.db.begin_read()?;
        let ring = txn.open_table(RING_META)?;
        let applied = applied_seq(&ring)?;
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
        for row in txn.open_table(DELETED_SONGS)?.iter()? {
            let (k, v) = row?;
            rows.push(snapshot_row(
                DELETED_SONGS.name(),
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
        rows: Vec<SnapshotRow>,
    ) -> Result<()> {
        let guard = self.lock_blobs();
        let txn = self.db.begin_write()?;
        if applied_seq(&txn.open_table(RING_META)?)? >= at.seq {
            return Ok(());
        }
        // What this node had, to announce the differences.
        let (before, old_revoked) = announced_state(&txn)?;
        reset_applied_state(&txn)?;
        let loaded = load_rows(&txn, rows)?;
        super::catalog::index_song_hashes(&txn, true)?;
        {
            let mut ring = txn.open_table(RING_META)?;
            ring.insert(RING_APPLIED, at.seq.to_be_bytes().as_slice())?;
            let compacted = rondo_ring::Compacted {
                last: at,
                layout: layout.clone(),
            };
            set_compacted(&mut ring, &compacted)?;
        }
        txn.open_table(RING_LOG)?
            .retain_in(..=at.seq, |_, _| false)?;
        let mut meta = txn.open_table(META)?;
        let (held, released) = reconcile_blobs(&txn, &mut meta, (self.id, layout), from)?;
        let changes =
            announce_differences(&txn, &mut meta, before, &old_revoked, loaded, &held, at.seq)?;
        drop(meta);
        txn.commit()?;
        self.announce(changes);
        // Blobs no song uses any more go through the outbox.
        drop(guard);
        for hash in released {
            self.release_blob(&hash)?;
        }
        Ok(())
    }
}

/// The announced records and the revoked sessions a node holds now.
fn announced_state(txn: &redb::WriteTransaction) -> Result<(Records, HashSet<String>)> {
    let mut before = Records::new();
    for def in ANNOUNCED {
        for row in txn.open_table(def)?.iter()? {
            let (k, v) = row?;
            before.insert((def.name().to_string(), k.value()), v.value().to_vec());
        }
    }
    let revoked = txn
        .open_table(REVOKED)?
        .iter()?
        .map(|r| r.map(|(k, _)| k.value().to_string()))
        .collect::<std::result::Result<_, _>>()?;
    Ok((before, revoked))
}

/// Empties the tables a snapshot replaces; every one exists again, empty,
/// even if the snapshot has no row for it (a later export reads them all).
fn reset_applied_state(txn: &redb::WriteTransaction) -> Result<()> {
    for def in SNAPSHOT_BLOBS {
        txn.delete_table(def)?;
        txn.open_table(def)?;
    }
    for def in SNAPSHOT_NAMES {
        txn.delete_table(def)?;
        txn.open_table(def)?;
    }
    txn.delete_table(REFS)?;
    txn.open_table(REFS)?;
    txn.delete_table(REVOKED)?;
    txn.open_table(REVOKED)?;
    txn.delete_table(DELETED_SONGS)?;
    txn.open_table(DELETED_SONGS)?;
    txn.delete_table(WANTED)?;
    txn.open_table(WANTED)?;
    let mut ring = txn.open_table(RING_META)?;
    ring.remove(RING_DIGEST)?;
    ring.remove(RING_LAYOUT)?;
    Ok(())
}

/// Writes a snapshot's rows into the emptied tables.
fn load_rows(txn: &redb::WriteTransaction, rows: Vec<SnapshotRow>) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut ring = txn.open_table(RING_META)?;
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
            if ANNOUNCED.iter().any(|d| d.name() == t) {
                loaded.records.push((t.to_string(), id, row.value));
            }
        } else if let Some(def) = SNAPSHOT_NAMES.iter().find(|d| d.name() == t) {
            txn.open_table(*def)?
                .insert(row_str(&row.key)?, row_u128(&row.value)?)?;
        } else if t == REFS.name() {
            txn.open_table(REFS)?
                .insert(row_u128(&row.key)?, be_u64(&row.value)?)?;
        } else if t == DELETED_SONGS.name() {
            txn.open_table(DELETED_SONGS)?
                .insert(row_u128(&row.key)?, be_u64(&row.value)?)?;
        } else if t == REVOKED.name() {
            let session = row_str(&row.key)?;
            let expires_at = be_u64(&row.value)?;
            txn.open_table(REVOKED)?.insert(session, expires_at)?;
            loaded.revoked.push((session.to_string(), expires_at));
        } else {
            return Err(Error::Invalid {
                what: "snapshot row of an unknown table",
            });
        }
    }
    Ok(loaded)
}

/// Sets the blob index's reference counts from the songs, wants the blobs
/// songs need that are not here (with a fetch from `from` for those this
/// node, `me`, owns under `layout`), and returns the blobs held and those
/// whose songs are gone (to release).
fn reconcile_blobs(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    (me, layout): (NodeId, &rondo_ring::Layout),
    from: NodeId,
) -> Result<(BTreeSet<[u8; 32]>, Vec<ContentHash>)> {
    let uses: BTreeMap<[u8; 32], u64> = catalog_blobs(&txn)?
        .into_iter()
        .map(|(hash, (_, n))| (hash, n))
        .collect();
    let mut blobs = txn.open_table(BLOBS)?;
    let held: Vec<([u8; 32], (u64, u64))> = blobs
        .iter()?
        .map(|r| r.map(|(k, v)| (*k.value(), v.value())))
        .collect::<std::result::Result<_, _>>()?;
    let mut released = Vec::new();
    for (hash, (size, refs)) in &held {
        let n = uses.get(hash).copied().unwrap_or(0);
        blobs.insert(hash, (*size, n))?;
        // Blobs whose songs are gone go; a copy taken ahead of a song (no
        // song yet) is left to its own release.
        if n == 0 && *refs > 0 {
            released.push(ContentHash(*hash));
        }
    }
    drop(blobs);
    let held: BTreeSet<[u8; 32]> = held.into_iter().map(|(h, _)| h).collect();
    let mut wanted = txn.open_table(WANTED)?;
    for (hash, n) in &uses {
        if !held.contains(hash) {
            wanted.insert(hash, *n)?;
            if !layout.should_hold(me, &ContentHash(*hash)) {
                continue;
            }
            let task = FetchTask {
                hash: ContentHash(*hash),
                from,
                push_expected: false,
            };
            push_outbox(txn, meta, OutboxTask::FetchBlob(task))?;
        }
    }
    Ok((held, released))
}

/// Puts on the change stream what the snapshot changed: songs this node
/// holds that it did not have (a song whose blob is missing is announced
/// once the blob is here), songs it had that are gone, accounts and
/// playlists that differ (those gone as tombstones at the snapshot's entry
/// `at`), new revocations.
fn announce_differences(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    mut before: Records,
    old_revoked: &HashSet<String>,
    loaded: Loaded,
    held: &BTreeSet<[u8; 32]>,
    at: u64,
) -> Result<Vec<pb::CatalogChange>> {
    let mut changes = Vec::new();
    for (table, id, value) in &loaded.records {
        let was = before.remove(&(table.clone(), *id));
        if was.as_deref() == Some(value.as_slice()) {
            continue;
        }
        // Albums are announced for their own image only (the rest of an
        // album travels with its songs).
        if table == ALBUMS.name() {
            let art = |bytes: &[u8]| -> Result<Option<pb::Art>> {
                Ok(decode::<pb::Album>("albums", bytes)?.art)
            };
            let old_art = was.as_deref().map(art).transpose()?.flatten();
            if art(value)? == old_art {
                continue;
            }
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
        } else if table == ALBUMS.name() {
            Change::Album(decode("albums", value)?)
        } else if table == APP_PASSWORDS.name() {
            Change::AppPassword(decode("app_passwords", value)?)
        } else if table == ANNOTATIONS.name() {
            Change::Annotation(decode("annotations", value)?)
        } else if table == PLAY_QUEUES.name() {
            Change::PlayQueue(decode("play_queues", value)?)
        } else {
            Change::Playlist(decode("playlists", value)?)
        };
        changes.push(push_change(txn, meta, change)?);
    }
    for ((table, id), value) in before {
        let gone = if table == ALBUMS.name() {
            // An album goes with its last song, which is announced gone.
            continue;
        } else if table == SONGS.name() {
            Change::DeleteSongId(uuid::Uuid::from_u128(id).to_string())
        } else if table == USERS.name() {
            let mut user: pb::User = decode("users", &value)?;
            user.deleted = true;
            user.password_hash.clear();
            user.version = at.max(user.version);
            Change::User(user)
        } else if table == APP_PASSWORDS.name() {
            let mut p: pb::AppPassword = decode("app_passwords", &value)?;
            p.deleted = true;
            p.sealed.clear();
            p.version = at.max(p.version);
            Change::AppPassword(p)
        } else if table == ANNOTATIONS.name() {
            // Marks of nothing: the gateways drop them.
            let old: pb::Annotation = decode("annotations", &value)?;
            Change::Annotation(pb::Annotation {
                user_id: old.user_id,
                item_id: old.item_id,
                kind: old.kind,
                version: at.max(old.version),
                ..Default::default()
            })
        } else if table == PLAY_QUEUES.name() {
            let old: pb::PlayQueue = decode("play_queues", &value)?;
            Change::PlayQueue(pb::PlayQueue {
                user_id: old.user_id,
                version: at.max(old.version),
                ..Default::default()
            })
        } else {
            let mut list: pb::Playlist = decode("playlists", &value)?;
            list.deleted = true;
            list.song_ids.clear();
            list.version = at.max(list.version);
            Change::Playlist(list)
        };
        changes.push(push_change(txn, meta, gone)?);
    }
    for (session, expires_at) in loaded.revoked {
        if !old_revoked.contains(&session) {
            let revoked = pb::RevokedSession {
                session_id: session,
                expires_at,
                at: 0,
            };
            changes.push(push_change(txn, meta, Change::Revoked(revoked))?);
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use crate::store::testutil::*;

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
                .apply_update(2, &upsert(song(s1), b"one", origin), None)
                .unwrap();
        }
        // b stops here; a goes on: a song, the delete of the first, a song.
        a.apply_update(3, &upsert(song(s2), b"two", origin), None)
            .unwrap();
        a.apply_update(4, &delete(s1), None).unwrap();
        a.apply_update(5, &upsert(song(s3), b"three", origin), None)
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
        // The tombstone of the deleted song came with the snapshot.
        assert!(b.song_deleted(s1).unwrap());
        assert_eq!(b.song(s2).unwrap(), a.song(s2).unwrap());
        assert_eq!(b.song(s3).unwrap(), a.song(s3).unwrap());
        assert_eq!(b.ring_layout().unwrap(), Some(layout.clone()));
        let durable = b.ring_load().unwrap();
        assert_eq!(durable.applied, 5);
        assert_eq!(durable.compacted.map(|c| c.last), Some(at));
        // The new songs' blobs are fetched at once, from the source.
        let fetches: Vec<(ContentHash, NodeId, bool)> = b
            .pending()
            .unwrap()
            .network
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
