//! The catalog: songs, artists and albums, and applying the ring's ordered
//! catalog updates to them.
//!
//! An update is applied in one transaction that also records its ring seq
//! as applied and folds it into the catalog digest; every node applies the
//! same updates in the same order and refuses the same ones. Account and
//! playlist updates are applied by [`super::accounts`].

use prost::Message;
use redb::{
    ReadableMultimapTable, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};
use rondo_core::names::fold;
use rondo_core::{AlbumId, ArtistId, ContentHash, NodeId, SongId};
use rondo_proto::storage::v1::{self as pb, catalog_change::Change};

use super::accounts;
use super::outbox::push_outbox;
use super::tables::*;
use super::{Applied, FetchTask, OutboxTask, PushTask, Store};
use crate::error::{Error, Result};

/// An update's outcome and the change it puts on this node's stream.
type Outcome = (Applied, Option<pb::CatalogChange>);

fn album_name_key(artist: u128, title: &str) -> String {
    format!("{artist:032x}/{}", fold(title))
}

/// Builds the name tables from the artists and albums when they are missing
/// (stores written before they existed); the first of equal names wins.
pub(super) fn index_names(txn: &redb::WriteTransaction) -> Result<()> {
    let mut artist_names = txn.open_table(ARTIST_NAMES)?;
    let mut album_names = txn.open_table(ALBUM_NAMES)?;
    if !artist_names.is_empty()? {
        return Ok(());
    }
    let artists = txn.open_table(ARTISTS)?;
    for row in artists.iter()? {
        let (k, v) = row?;
        let artist: pb::Artist = decode("artists", v.value())?;
        let folded = fold(&artist.name);
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

/// Builds the content-hash index of the songs: at open when it is missing
/// (stores written before it existed), always after a snapshot replaced
/// the songs.
pub(super) fn index_song_hashes(txn: &redb::WriteTransaction, rebuild: bool) -> Result<()> {
    let hashes = txn.open_multimap_table(SONG_HASHES)?;
    let songs = txn.open_table(SONGS)?;
    if !rebuild && (!hashes.is_empty()? || songs.is_empty()?) {
        return Ok(());
    }
    drop(hashes);
    txn.delete_multimap_table(SONG_HASHES)?;
    let mut hashes = txn.open_multimap_table(SONG_HASHES)?;
    for row in songs.iter()? {
        let (k, v) = row?;
        let song: pb::Song = decode("songs", v.value())?;
        if let Ok(hash) = song.content_hash.parse::<ContentHash>() {
            hashes.insert(hash.as_bytes(), k.value())?;
        }
    }
    Ok(())
}

/// The song whose bytes these are, if any (the first by id when a store
/// written before duplicates were refused holds several).
pub(super) fn song_with_hash(
    hashes: &impl ReadableMultimapTable<&'static [u8; 32], u128>,
    songs: &impl ReadableTable<u128, &'static [u8]>,
    hash: &ContentHash,
) -> Result<Option<pb::Song>> {
    let Some(first) = hashes.get(hash.as_bytes())?.next() else {
        return Ok(None);
    };
    match songs.get(first?.value())? {
        Some(v) => Ok(Some(decode("songs", v.value())?)),
        None => Ok(None),
    }
}

/// The artist known by this name (folded), taking its record, or this one
/// registered under its own id. Returns the artist's key.
fn artist_by_name(txn: &redb::WriteTransaction, artist: &mut pb::Artist) -> Result<u128> {
    let mut artist_names = txn.open_table(ARTIST_NAMES)?;
    let folded = fold(&artist.name);
    let known = artist_names.get(folded.as_str())?.map(|g| g.value());
    match known {
        Some(id) => {
            if let Some(record) = txn.open_table(ARTISTS)?.get(id)? {
                *artist = decode("artists", record.value())?;
            }
            Ok(id)
        }
        None => {
            let id = uuid_key(&artist.id)?;
            artist_names.insert(folded.as_str(), id)?;
            Ok(id)
        }
    }
}

/// The keys a song is filed under: its track artist, the album's artist
/// when it is another, and the album.
struct Filed {
    artist: u128,
    album_artist: Option<u128>,
    album: u128,
}

impl Filed {
    /// Every artist and album key the song counts as a reference of.
    fn keys(&self) -> impl Iterator<Item = u128> + use<> {
        [Some(self.artist), self.album_artist, Some(self.album)]
            .into_iter()
            .flatten()
    }
}

/// Files a song under the artists and album already known by its names
/// (case-insensitively), taking their records, or registers its own: the
/// track artist, the album artist (when the song names one), and the album
/// under the album artist (else the track artist). An album artist that
/// turns out to be the track artist is dropped.
fn file_by_name(txn: &redb::WriteTransaction, song: &mut pb::Song) -> Result<Filed> {
    let (Some(artist), Some(_)) = (song.artist.as_mut(), song.album.as_ref()) else {
        return Err(Error::Invalid {
            what: "song has no artist or album",
        });
    };
    let artist_id = artist_by_name(txn, artist)?;
    let artist_text = artist.id.clone();
    let mut album_artist = None;
    if let Some(owner) = song.album_artist.as_mut() {
        let id = artist_by_name(txn, owner)?;
        if id == artist_id {
            song.album_artist = None;
        } else {
            album_artist = Some((id, owner.id.clone()));
        }
    }
    let (owner_id, owner_text) = album_artist.clone().unwrap_or((artist_id, artist_text));
    let Some(album) = song.album.as_mut() else {
        return Err(Error::Invalid {
            what: "song has no album",
        });
    };
    album.artist_id = owner_text;
    let mut album_names = txn.open_table(ALBUM_NAMES)?;
    let key = album_name_key(owner_id, &album.title);
    let known = album_names.get(key.as_str())?.map(|g| g.value());
    let album_id = match known {
        Some(id) => {
            if let Some(record) = txn.open_table(ALBUMS)?.get(id)? {
                *album = decode("albums", record.value())?;
                // A song's copy of its album never carries the album's
                // own image (it is counted once, on the album record).
                album.art = None;
            }
            id
        }
        None => {
            let id = uuid_key(&album.id)?;
            album_names.insert(key.as_str(), id)?;
            id
        }
    };
    Ok(Filed {
        artist: artist_id,
        album_artist: album_artist.map(|(id, _)| id),
        album: album_id,
    })
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

impl Store {
    /// Applies one ordered catalog update (ring entry `seq`) in one
    /// transaction that also records `seq` as applied and folds the entry
    /// into the catalog digest. An entry at or below the applied seq is a
    /// no-op. `layout` is the layout as applied at this entry (the driver
    /// holds it): a song this node proposed is pushed to its other nodes; a
    /// song whose blob this node lacks is recorded as wanted, with an
    /// outbox task to fetch the blob from the node that proposed it.
    pub fn apply_update(
        &self,
        seq: u64,
        payload: &[u8],
        layout: Option<&rondo_ring::Layout>,
    ) -> Result<Applied> {
        let _guard = self.lock_blobs();
        let txn = self.db.begin_write()?;
        let (outcome, change) = {
            let mut ring = txn.open_table(RING_META)?;
            if seq <= applied_seq(&ring)? {
                return Ok(Applied::Replay);
            }
            fold_applied(&mut ring, seq, payload)?;
            drop(ring);
            match pb::CatalogUpdate::decode(payload) {
                Ok(update) => self.apply_catalog(&txn, seq, update, layout)?,
                Err(e) => {
                    // Every node decodes the same bytes the same way: skip.
                    tracing::error!(seq, error = %e, "undecodable catalog update skipped");
                    let refused = Error::Invalid {
                        what: "undecodable catalog update",
                    };
                    (Applied::Rejected(refused), None)
                }
            }
        };
        txn.commit()?;
        self.announce(change);
        Ok(outcome)
    }

    /// Applies one decoded update, by kind of change.
    fn apply_catalog(
        &self,
        txn: &redb::WriteTransaction,
        seq: u64,
        update: pb::CatalogUpdate,
        layout: Option<&rondo_ring::Layout>,
    ) -> Result<Outcome> {
        use pb::catalog_update::Change as U;
        if let Some(refused) = super::authority::refusal(txn, &update)? {
            tracing::info!(seq, error = %refused, "ordered update refused: its authority no longer stands");
            return Ok((Applied::Rejected(refused), None));
        }
        let mut meta = txn.open_table(META)?;
        match update.change {
            Some(U::Upsert(song)) => {
                let placed = Placed {
                    origin: &update.origin,
                    epoch: update.placement_epoch,
                    only_if_duplicate: update.only_if_duplicate,
                };
                self.upsert_song(txn, &mut meta, seq, song, placed, layout)
            }
            Some(U::DeleteSongId(id)) => delete_song(txn, &mut meta, seq, &id),
            Some(U::Reinspected(song)) => {
                let placed = (update.origin.parse()?, update.placement_epoch);
                self.reinspect_song(txn, &mut meta, seq, song, placed, layout)
            }
            Some(U::AlbumArt(art)) => {
                let placed = (update.origin.parse()?, update.placement_epoch);
                self.set_album_art(txn, &mut meta, seq, art, placed, layout)
            }
            Some(U::RegisterUser(user)) => {
                let outcome = accounts::register_user(txn, seq, user)?;
                accounts::finish(txn, &mut meta, outcome.map(Change::User))
            }
            Some(U::Playlist(op)) => {
                let outcome = accounts::apply_playlist(txn, seq, op)?;
                accounts::finish(txn, &mut meta, outcome.map(Change::Playlist))
            }
            Some(U::Listening(op)) => {
                let outcome = super::listening::apply_listening(txn, seq, op)?;
                accounts::finish_many(txn, &mut meta, outcome)
            }
            Some(U::Plays(plays)) => {
                let outcome = super::listening::apply_plays(txn, seq, plays)?;
                accounts::finish_many(txn, &mut meta, outcome)
            }
            Some(U::AppPassword(op)) => {
                let outcome = accounts::apply_app_password(txn, seq, op)?;
                accounts::finish(txn, &mut meta, outcome.map(Change::AppPassword))
            }
            Some(U::RevokeSession(r)) => {
                let outcome = accounts::revoke_session(txn, r)?;
                accounts::finish(txn, &mut meta, outcome.map(Change::Revoked))
            }
            Some(U::UserChange(change)) => {
                let outcome = accounts::change_user(txn, seq, change)?;
                accounts::finish_user_change(txn, &mut meta, outcome)
            }
            None => {
                let refused = Error::Invalid {
                    what: "empty catalog update",
                };
                Ok((Applied::Rejected(refused), None))
            }
        }
    }

    /// Adds a song: filed under the artist and album of its names, its
    /// blob referenced (or wanted, with a fetch if this node owns it),
    /// pushed to the blob's other owners if this node proposed it.
    /// Announced on the change stream once this node can stream it. Refused
    /// if its bytes were copied under another placement than the one in
    /// force at this entry (their owners may not hold them).
    fn upsert_song(
        &self,
        txn: &redb::WriteTransaction,
        meta: &mut Meta<'_>,
        seq: u64,
        mut song: pb::Song,
        placed: Placed<'_>,
        layout: Option<&rondo_ring::Layout>,
    ) -> Result<Outcome> {
        let (song_id, hash) = match check_song(&song) {
            Ok(c) => c,
            Err(e) => return Ok((Applied::Rejected(e), None)),
        };
        let songs = txn.open_table(SONGS)?;
        if songs.get(song_id)?.is_some() {
            let id = song.id.parse()?;
            return Ok((Applied::Rejected(Error::SongExists(id)), None));
        }
        if txn.open_table(DELETED_SONGS)?.get(song_id)?.is_some() {
            let id = song.id.parse()?;
            return Ok((Applied::Rejected(Error::SongDeleted(id)), None));
        }
        // The same bytes are the same song: the first ordered stays, this
        // one is answered with it (wherever its copies went, the first's
        // bytes are placed already).
        let hashes = txn.open_multimap_table(SONG_HASHES)?;
        if let Some(existing) = song_with_hash(&hashes, &songs, &hash)? {
            // The proposed id is spent all the same, as a deleted one is:
            // a direct upload's grant names it, and is good for one song.
            txn.open_table(DELETED_SONGS)?.insert(song_id, seq)?;
            return Ok((
                Applied::Duplicate {
                    song: Box::new(existing),
                },
                None,
            ));
        }
        if placed.only_if_duplicate {
            // Its bytes were never copied: it can only be that duplicate.
            return Ok((Applied::Rejected(Error::NotDuplicate), None));
        }
        if let Some(stale) = stale_placement(placed.epoch, layout) {
            return Ok((Applied::Rejected(stale), None));
        }
        drop(songs);
        let filed = file_by_name(txn, &mut song)?;
        let origin: NodeId = placed.origin.parse()?;
        let held = self.reference_blob(txn, meta, seq, hash, origin, layout)?;
        if let Some(art) = art_hash(song.art.as_ref())? {
            self.reference_blob(txn, meta, seq, art, origin, layout)?;
        }
        count_filing(txn, &song, &filed)?;
        let mut songs = txn.open_table(SONGS)?;
        songs.insert(song_id, song.encode_to_vec().as_slice())?;
        drop(hashes);
        txn.open_multimap_table(SONG_HASHES)?
            .insert(hash.as_bytes(), song_id)?;
        stored(txn, meta, song, held)
    }

    /// Counts one more song using the blob. If the blob is here and this
    /// node proposed the song, the song's origin pushes it to each other
    /// owner of the blob (every other node of the layout without a
    /// placement; the layout as applied at this entry: the same on every
    /// node), and each of them expects that push. If the blob is not here,
    /// it is wanted; an owner fetches it (a repair, if a push is expected),
    /// a node that does not own it only counts the reference. Returns
    /// whether the blob is here.
    fn reference_blob(
        &self,
        txn: &redb::WriteTransaction,
        meta: &mut Meta<'_>,
        seq: u64,
        hash: ContentHash,
        origin: NodeId,
        layout: Option<&rondo_ring::Layout>,
    ) -> Result<bool> {
        let in_layout = |n: &NodeId| layout.is_some_and(|l| l.nodes.contains_key(n));
        let owners = layout.map(|l| l.owners_of(&hash));
        let mut blobs = txn.open_table(BLOBS)?;
        let key = *hash.as_bytes();
        let present = blobs.get(&key)?.map(|g| g.value());
        if let Some((size, refs)) = present {
            blobs.insert(&key, (size, refs + 1))?;
            if origin == self.id {
                let others = owners.iter().flatten();
                for &to in others.filter(|n| **n != self.id) {
                    let task = PushTask {
                        hash,
                        to,
                        entry_seq: seq,
                    };
                    push_outbox(txn, meta, OutboxTask::PushBlob(task))?;
                }
            }
            return Ok(true);
        }
        let mut wanted = txn.open_table(WANTED)?;
        let refs = wanted.get(&key)?.map_or(0, |g| g.value());
        wanted.insert(&key, refs + 1)?;
        let owner = layout.is_none_or(|l| l.should_hold(self.id, &hash));
        if refs == 0 && owner {
            let push_expected = origin != self.id && in_layout(&self.id) && in_layout(&origin);
            let task = FetchTask {
                hash,
                from: origin,
                push_expected,
            };
            push_outbox(txn, meta, OutboxTask::FetchBlob(task))?;
        }
        Ok(false)
    }
}

/// Counts the song as a reference of each artist and album it is filed
/// under, and records the ones new to the catalog.
fn count_filing(txn: &redb::WriteTransaction, song: &pb::Song, filed: &Filed) -> Result<()> {
    let mut refs = txn.open_table(REFS)?;
    for key in filed.keys() {
        let n = refs.get(key)?.map_or(0, |g| g.value());
        refs.insert(key, n + 1)?;
    }
    let mut artists = txn.open_table(ARTISTS)?;
    let owner = song.album_artist.clone().zip(filed.album_artist);
    let track = song.artist.clone().map(|a| (a, filed.artist));
    for (artist, key) in [track, owner].into_iter().flatten() {
        if artists.get(key)?.is_none() {
            artists.insert(key, artist.encode_to_vec().as_slice())?;
        }
    }
    let album = song.album.clone().unwrap_or_default();
    let mut albums = txn.open_table(ALBUMS)?;
    if albums.get(filed.album)?.is_none() {
        albums.insert(filed.album, album.encode_to_vec().as_slice())?;
    }
    Ok(())
}

impl Store {
    /// Takes a newer inspection's reading of a song's bytes: the fields it
    /// fills replace the record's, the rest stays; a new album artist
    /// moves the song to that artist's album of the same title (the
    /// proposer's ids for whatever is new); newly found art is referenced
    /// (the proposer copied it to W of its owners under the placement
    /// `reading.placement`, as an upload does). Refused, the same way
    /// everywhere, for a song gone, other bytes, or a reading no newer than
    /// the record's.
    fn reinspect_song(
        &self,
        txn: &redb::WriteTransaction,
        meta: &mut Meta<'_>,
        seq: u64,
        new: pb::Song,
        (origin, epoch): (NodeId, u64),
        layout: Option<&rondo_ring::Layout>,
    ) -> Result<Outcome> {
        let (song_id, hash) = match check_song(&new) {
            Ok(c) => c,
            Err(e) => return Ok((Applied::Rejected(e), None)),
        };
        let old: pb::Song = match txn.open_table(SONGS)?.get(song_id)? {
            Some(v) => decode("songs", v.value())?,
            None => {
                let id = new.id.parse()?;
                return Ok((Applied::Rejected(Error::SongNotFound(id)), None));
            }
        };
        if old.inspected >= new.inspected || old.content_hash != new.content_hash {
            let refused = Error::Invalid {
                what: "a re-inspection no newer than the record, or of other bytes",
            };
            return Ok((Applied::Rejected(refused), None));
        }
        let mut song = rondo_media::with_inspection(old.clone(), &new);
        let (old_art, new_art) = (art_hash(old.art.as_ref())?, art_hash(song.art.as_ref())?);
        if old_art != new_art {
            if let Some(art) = new_art {
                // The reader copied the picture to W of its owners under the
                // placement it read; a newer one may leave it short: the
                // reading is refused, and made again.
                if let Some(stale) = stale_placement(epoch, layout) {
                    return Ok((Applied::Rejected(stale), None));
                }
                self.reference_blob(txn, meta, seq, art, origin, layout)?;
            }
            if let Some(art) = old_art {
                dereference_blob(txn, meta, art)?;
            }
        }
        let owner = |s: &pb::Song| s.album_artist.as_ref().map(|a| fold(&a.name));
        if owner(&old) != owner(&song) {
            song.album = new.album.clone();
            release_names(txn, meta, &old)?;
            let filed = file_by_name(txn, &mut song)?;
            count_filing(txn, &song, &filed)?;
        }
        txn.open_table(SONGS)?
            .insert(song_id, song.encode_to_vec().as_slice())?;
        // Holders announce the new record (gateways replace theirs).
        let held = txn.open_table(BLOBS)?.get(hash.as_bytes())?.is_some();
        stored(txn, meta, song, held)
    }
}

impl Store {
    /// Sets or removes an album's own image: the new picture referenced
    /// (its proposer copied it to W of its owners under placement `epoch`),
    /// the old one released; announced as the album record. Refused the
    /// same way everywhere for an album that does not exist (any more).
    fn set_album_art(
        &self,
        txn: &redb::WriteTransaction,
        meta: &mut Meta<'_>,
        seq: u64,
        change: pb::AlbumArt,
        (origin, epoch): (NodeId, u64),
        layout: Option<&rondo_ring::Layout>,
    ) -> Result<Outcome> {
        let Ok(id) = change.album_id.parse::<AlbumId>() else {
            let refused = Error::Invalid {
                what: "bad album id",
            };
            return Ok((Applied::Rejected(refused), None));
        };
        let key = id.0.as_u128();
        let mut album: pb::Album = match txn.open_table(ALBUMS)?.get(key)? {
            Some(v) => decode("albums", v.value())?,
            None => {
                let refused = Error::NotFound {
                    kind: "album",
                    id: id.to_string(),
                };
                return Ok((Applied::Rejected(refused), None));
            }
        };
        let new = match art_hash(change.art.as_ref()) {
            Ok(h) => h,
            Err(e) => return Ok((Applied::Rejected(e), None)),
        };
        let old = art_hash(album.art.as_ref())?;
        if new != old {
            if let Some(art) = new {
                if let Some(stale) = stale_placement(epoch, layout) {
                    return Ok((Applied::Rejected(stale), None));
                }
                self.reference_blob(txn, meta, seq, art, origin, layout)?;
            }
            if let Some(art) = old {
                dereference_blob(txn, meta, art)?;
            }
        }
        album.art = change.art;
        txn.open_table(ALBUMS)?
            .insert(key, album.encode_to_vec().as_slice())?;
        let announced = push_change(txn, meta, Change::Album(album.clone()))?;
        let applied = Applied::AlbumChanged {
            album: Box::new(album),
            change_seq: announced.seq,
        };
        Ok((applied, Some(announced)))
    }
}

/// Refusal of a copy made under placement `copied` if another is in force
/// at this entry (its owners may not hold it).
fn stale_placement(copied: u64, layout: Option<&rondo_ring::Layout>) -> Option<Error> {
    let applied = layout.map_or(0, rondo_ring::Layout::placement_epoch);
    (copied != applied).then_some(Error::StalePlacement { copied, applied })
}

/// The blob of a picture, if there is one; refused if its hash is not one.
pub(crate) fn art_hash(art: Option<&pb::Art>) -> Result<Option<ContentHash>> {
    art.map(|a| a.hash.parse::<ContentHash>())
        .transpose()
        .map_err(Error::from)
}

/// A song stored as `Applied::Stored`, announced on the change stream if
/// this node holds its bytes (it can stream it).
fn stored(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    song: pb::Song,
    held: bool,
) -> Result<Outcome> {
    let change = match held {
        true => Some(push_change(txn, meta, Change::Upsert(song.clone()))?),
        false => None,
    };
    let stored = Applied::Stored {
        song: Box::new(song),
        change_seq: change.as_ref().map(|c| c.seq),
    };
    Ok((stored, change))
}

/// Where a song's bytes were put before it was proposed: the node that
/// proposed it (it holds them) and the placement epoch of the copies.
#[derive(Clone, Copy)]
struct Placed<'a> {
    origin: &'a str,
    epoch: u64,
    /// Not copied at all: the proposer expects a duplicate.
    only_if_duplicate: bool,
}

/// A song update's ids, checked: the song's key and its content hash.
fn check_song(song: &pb::Song) -> Result<(u128, ContentHash)> {
    let song_id = uuid_key(&song.id)?;
    let artist = song.artist.as_ref().ok_or(Error::Invalid {
        what: "song has no artist",
    })?;
    let album = song.album.as_ref().ok_or(Error::Invalid {
        what: "song has no album",
    })?;
    artist.id.parse::<ArtistId>()?;
    album.id.parse::<AlbumId>()?;
    let owner = match &song.album_artist {
        Some(a) => {
            a.id.parse::<ArtistId>()?;
            &a.id
        }
        None => &artist.id,
    };
    art_hash(song.art.as_ref())?;
    if album.art.is_some() {
        return Err(Error::Invalid {
            what: "a song's album carries no image (an album's own is set apart)",
        });
    }
    if album.artist_id != *owner {
        return Err(Error::Invalid {
            what: "the album's artist is neither the album artist nor the song's",
        });
    }
    Ok((song_id, song.content_hash.parse()?))
}

/// Removes a song: its artist and album go with their last song, its blob
/// with its last song (through the outbox), and it leaves every playlist.
fn delete_song(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    seq: u64,
    id_text: &str,
) -> Result<Outcome> {
    let Ok(id) = id_text.parse::<SongId>() else {
        let refused = Error::Invalid {
            what: "bad song id",
        };
        return Ok((Applied::Rejected(refused), None));
    };
    let song: pb::Song = match txn.open_table(SONGS)?.remove(id.0.as_u128())? {
        Some(bytes) => decode("songs", bytes.value())?,
        None => return Ok((Applied::Rejected(Error::SongNotFound(id)), None)),
    };
    txn.open_table(DELETED_SONGS)?.insert(id.0.as_u128(), seq)?;
    release_names(txn, meta, &song)?;
    if let Ok(hash) = song.content_hash.parse::<ContentHash>() {
        txn.open_multimap_table(SONG_HASHES)?
            .remove(hash.as_bytes(), id.0.as_u128())?;
        dereference_blob(txn, meta, hash)?;
    }
    if let Some(art) = art_hash(song.art.as_ref())? {
        dereference_blob(txn, meta, art)?;
    }
    let change = push_change(txn, meta, Change::DeleteSongId(id.to_string()))?;
    // The song leaves every playlist too (a scan: playlists are few next
    // to songs, deletes rare).
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
    // Followers read the log on a gap: announcing the last of these
    // changes makes them read all of them.
    let mut announce = change.clone();
    for (k, list) in touched {
        playlists.insert(k, list.encode_to_vec().as_slice())?;
        announce = push_change(txn, meta, Change::Playlist(list))?;
    }
    let deleted = Applied::Deleted {
        change_seq: change.seq,
    };
    Ok((deleted, Some(announce)))
}

/// Counts one song less on the song's album and artist; each goes, with
/// its name entry, when its last song does.
fn release_names(txn: &redb::WriteTransaction, meta: &mut Meta<'_>, song: &pb::Song) -> Result<()> {
    let artist = song.artist.clone().unwrap_or_default();
    let album = song.album.clone().unwrap_or_default();
    let owner_key = uuid_key(&album.artist_id).unwrap_or_default();
    let mut records = vec![
        (
            album.id,
            ALBUMS,
            ALBUM_NAMES,
            album_name_key(owner_key, &album.title),
        ),
        (artist.id, ARTISTS, ARTIST_NAMES, fold(&artist.name)),
    ];
    if let Some(owner) = song.album_artist.clone() {
        let name = fold(&owner.name);
        records.push((owner.id, ARTISTS, ARTIST_NAMES, name));
    }
    let mut refs = txn.open_table(REFS)?;
    for (id, table, names, name) in records {
        let Ok(k) = uuid_key(&id) else { continue };
        let n = refs.get(k)?.map_or(0, |g| g.value());
        if n <= 1 {
            refs.remove(k)?;
            let gone = txn
                .open_table(table)?
                .remove(k)?
                .map(|g| g.value().to_vec());
            forget_name(txn, names, &name, k)?;
            // An album's own image goes with the album.
            if table.name() == ALBUMS.name()
                && let Some(bytes) = gone
            {
                let album: pb::Album = decode("albums", &bytes)?;
                if let Some(art) = art_hash(album.art.as_ref())? {
                    dereference_blob(txn, meta, art)?;
                }
            }
        } else {
            refs.insert(k, n - 1)?;
        }
    }
    Ok(())
}

/// Counts one song less using the blob: its last song removes it (the
/// file through the outbox); one this node still waited for is wanted
/// less.
fn dereference_blob(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    hash: ContentHash,
) -> Result<()> {
    let mut blobs = txn.open_table(BLOBS)?;
    let entry = blobs.get(hash.as_bytes())?.map(|g| g.value());
    match entry {
        Some((size, refs)) if refs > 1 => {
            blobs.insert(hash.as_bytes(), (size, refs - 1))?;
        }
        Some((size, _)) => {
            blobs.remove(hash.as_bytes())?;
            add_bytes_stored(meta, -i128::from(size))?;
            push_outbox(txn, meta, OutboxTask::DeleteBlob(hash))?;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::testutil::*;

    #[tokio::test]
    async fn apply_dedupe_delete_replay_and_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = NodeId::new_random();
        let (a, b) = (SongId::new_random(), SongId::new_random());
        store.put_blob(staged(&store, b"same bytes").await).unwrap();
        let first = store
            .apply_update(1, &upsert(song(a), b"same bytes", me), None)
            .unwrap();
        let Applied::Stored {
            song: sa,
            change_seq: Some(seq_a),
        } = first
        else {
            panic!("stored with a change: {first:?}");
        };
        assert_eq!(sa.size_bytes, 10);
        // The same bytes under another id, ordered after: that song.
        store.put_blob(staged(&store, b"same bytes").await).unwrap();
        let dup = store
            .apply_update(2, &upsert(song(b), b"same bytes", me), None)
            .unwrap();
        let Applied::Duplicate { song: named } = dup else {
            panic!("a duplicate: {dup:?}");
        };
        assert_eq!(named.id, a.to_string());
        assert_eq!(
            store
                .song_with_hash(&ContentHash::of(b"same bytes"))
                .unwrap()
                .map(|s| s.id),
            Some(a.to_string())
        );
        // The second copy went with its handle's release, not the song's.
        store.release_blob(&ContentHash::of(b"same bytes")).unwrap();
        let st = store.stats().unwrap();
        assert_eq!(
            (st.song_count, st.blob_count, st.bytes_stored, st.last_seq),
            (1, 1, 10, 1)
        );
        assert_eq!(files_in(&dir.path().join("blobs")), 1);
        assert_eq!(files_in(&dir.path().join("tmp")), 0);
        // A replayed entry changes nothing; the same id twice is refused.
        assert!(matches!(
            store
                .apply_update(2, &upsert(song(b), b"same bytes", me), None)
                .unwrap(),
            Applied::Replay
        ));
        let again = store
            .apply_update(3, &upsert(song(a), b"same bytes", me), None)
            .unwrap();
        assert!(
            matches!(again, Applied::Rejected(Error::SongExists(_))),
            "{again:?}"
        );
        assert_eq!(store.stats().unwrap().song_count, 1);
        // Deleting the song removes its blob via the outbox.
        store.apply_update(4, &delete(a), None).unwrap();
        assert_eq!(store.stats().unwrap().outbox_len, 1);
        assert_eq!(store.run_outbox().unwrap(), 1);
        assert_eq!(files_in(&dir.path().join("blobs")), 0);
        let st = store.stats().unwrap();
        assert_eq!(
            (st.song_count, st.blob_count, st.bytes_stored, st.outbox_len),
            (0, 0, 0, 0)
        );
        let gone = store.apply_update(5, &delete(a), None).unwrap();
        assert!(
            matches!(gone, Applied::Rejected(Error::SongNotFound(_))),
            "{gone:?}"
        );
        // A deleted id is never a song again (a replayed grant, a stale
        // proposal): refused, and nothing changes.
        assert!(store.song_deleted(a).unwrap());
        let ghost = store
            .apply_update(6, &upsert(song(a), b"ghost bytes", me), None)
            .unwrap();
        assert!(
            matches!(ghost, Applied::Rejected(Error::SongDeleted(_))),
            "{ghost:?}"
        );
        // The id answered with a duplicate is spent, like a deleted one.
        assert!(store.song_deleted(b).unwrap());
        // The deleted song's bytes are a new song when they come back.
        store.put_blob(staged(&store, b"same bytes").await).unwrap();
        let back = store
            .apply_update(
                7,
                &upsert(song(SongId::new_random()), b"same bytes", me),
                None,
            )
            .unwrap();
        assert!(matches!(back, Applied::Stored { .. }), "{back:?}");
        assert_eq!(store.stats().unwrap().song_count, 1);
        let changes = store.changes_after(seq_a, 10).unwrap();
        assert_eq!(
            changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(store.ring_applied().unwrap().0, 7);
    }

    #[tokio::test]
    async fn pictures_are_blobs_their_songs_and_albums_hold_until_the_last_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = NodeId::new_random();
        let art = |bytes: &[u8]| pb::Art {
            hash: ContentHash::of(bytes).to_hex(),
            size: bytes.len() as u64,
            mime: "image/png".into(),
            width: 1,
            height: 1,
        };
        let with_art = |id: SongId, album: Option<&pb::Song>| {
            let mut s = song(id);
            if let Some(other) = album {
                s.artist = other.artist.clone();
                s.album = other.album.clone();
            }
            s.art = Some(art(b"cover"));
            s
        };
        let (a, b) = (SongId::new_random(), SongId::new_random());
        for bytes in [&b"audio a"[..], b"audio b", b"cover", b"own image"] {
            store.put_blob(staged(&store, bytes).await).unwrap();
        }
        let first = with_art(a, None);
        store
            .apply_update(1, &upsert(first.clone(), b"audio a", me), None)
            .unwrap();
        store
            .apply_update(2, &upsert(with_art(b, Some(&first)), b"audio b", me), None)
            .unwrap();
        let refs = |bytes: &[u8]| {
            let txn = store.db.begin_read().unwrap();
            let blobs = txn.open_table(BLOBS).unwrap();
            blobs
                .get(ContentHash::of(bytes).as_bytes())
                .unwrap()
                .map(|g| g.value().1)
        };
        assert_eq!(
            refs(b"cover"),
            Some(2),
            "one picture, kept once, used twice"
        );
        // An album's own image: refused for an album that is not one,
        // referenced for one that is, announced as the album.
        let album_id = first.album.clone().unwrap().id;
        let set = |album: &str, image: Option<pb::Art>| {
            pb::CatalogUpdate {
                origin: me.to_string(),
                change: Some(pb::catalog_update::Change::AlbumArt(pb::AlbumArt {
                    album_id: album.to_string(),
                    art: image,
                })),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let missing = store
            .apply_update(
                3,
                &set(&AlbumId::new_random().to_string(), Some(art(b"own image"))),
                None,
            )
            .unwrap();
        assert!(
            matches!(
                missing,
                Applied::Rejected(Error::NotFound { kind: "album", .. })
            ),
            "{missing:?}"
        );
        let set_own = store
            .apply_update(4, &set(&album_id, Some(art(b"own image"))), None)
            .unwrap();
        let Applied::AlbumChanged { album, .. } = set_own else {
            panic!("the album changed: {set_own:?}");
        };
        assert_eq!(album.art, Some(art(b"own image")));
        assert_eq!(refs(b"own image"), Some(1));
        // The songs go one by one: the picture with the last, the album's
        // own image with the album.
        store.apply_update(5, &delete(a), None).unwrap();
        assert_eq!(refs(b"cover"), Some(1));
        store.apply_update(6, &delete(b), None).unwrap();
        store.run_outbox().unwrap();
        assert_eq!(refs(b"cover"), None);
        assert_eq!(refs(b"own image"), None);
        assert_eq!(store.stats().unwrap().blob_count, 0);
        assert_eq!(files_in(&dir.path().join("blobs")), 0);
    }

    #[tokio::test]
    async fn an_upload_proposed_as_a_duplicate_is_refused_once_the_song_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = NodeId::new_random();
        let a = SongId::new_random();
        store.put_blob(staged(&store, b"kept").await).unwrap();
        store
            .apply_update(1, &upsert(song(a), b"kept", me), None)
            .unwrap();
        let as_duplicate = |id: SongId| {
            let mut u =
                pb::CatalogUpdate::decode(upsert(song(id), b"kept", me).as_slice()).unwrap();
            u.only_if_duplicate = true;
            u.encode_to_vec()
        };
        let dup = store
            .apply_update(2, &as_duplicate(SongId::new_random()), None)
            .unwrap();
        assert!(matches!(dup, Applied::Duplicate { .. }), "{dup:?}");
        store.apply_update(3, &delete(a), None).unwrap();
        let gone = store
            .apply_update(4, &as_duplicate(SongId::new_random()), None)
            .unwrap();
        assert!(
            matches!(gone, Applied::Rejected(Error::NotDuplicate)),
            "{gone:?}"
        );
        assert_eq!(store.stats().unwrap().song_count, 0, "nothing was added");
    }

    #[tokio::test]
    async fn the_hash_index_is_built_for_a_store_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let me = NodeId::new_random();
        let a = SongId::new_random();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_blob(staged(&store, b"old bytes").await).unwrap();
            store
                .apply_update(1, &upsert(song(a), b"old bytes", me), None)
                .unwrap();
            // As a store of the previous release: no hash index.
            let txn = store.db.begin_write().unwrap();
            txn.delete_multimap_table(SONG_HASHES).unwrap();
            txn.commit().unwrap();
            assert_eq!(
                store
                    .song_with_hash(&ContentHash::of(b"old bytes"))
                    .ok()
                    .flatten(),
                None
            );
        }
        let store = Store::open(dir.path()).unwrap();
        let found = store
            .song_with_hash(&ContentHash::of(b"old bytes"))
            .unwrap();
        assert_eq!(found.map(|s| s.id), Some(a.to_string()));
        let dup = store
            .apply_update(
                2,
                &upsert(song(SongId::new_random()), b"old bytes", me),
                None,
            )
            .unwrap();
        assert!(matches!(dup, Applied::Duplicate { .. }), "{dup:?}");
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
        for b in [&b"x0"[..], b"x1", b"x2", b"x3", b"x4"] {
            store.put_blob(staged(&store, b).await).unwrap();
        }
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
                .apply_update(
                    seq as u64 + 1,
                    &upsert(s.clone(), format!("x{seq}").as_bytes(), me),
                    None,
                )
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
                .apply_update(seq as u64 + 10, &delete(s.id.parse().unwrap()), None)
                .unwrap();
        }
        let again = named("ADA LOVELACE", "Notes");
        store
            .apply_update(20, &upsert(again.clone(), b"x4", me), None)
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
            .apply_update(21, &upsert(late.clone(), b"x", me), None)
            .unwrap();
        assert_eq!(filed(&store, &late.id), g);
    }
}
