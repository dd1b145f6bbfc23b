//! The gateway's in-memory catalog index, fed by the nodes' ordered change
//! streams and read through immutable snapshots.
//!
//! Writers apply changes to a [`Catalog`]; a rebuild turns it into a
//! [`Snapshot`] (sorted lists, lookup maps and an inverted word index) that readers
//! share through an `Arc`, so queries never wait for writers. Rebuilds are
//! coalesced: a burst of changes costs one rebuild.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rondo_core::names::fold;
use rondo_core::{AlbumId, ArtistId, NodeId, SongId};
use rondo_proto::storage::v1 as pb;

use crate::error::{Error, Result};

/// An artist as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtistRec {
    pub id: ArtistId,
    pub name: String,
}

/// An album as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlbumRec {
    pub id: AlbumId,
    pub title: String,
    pub artist_id: ArtistId,
    pub year: Option<u32>,
    /// The album's own image if an admin set one, else the picture of its
    /// first track (disc, then track order) that has one.
    pub art: Option<ArtRec>,
    /// `art` is the album's own image.
    pub own_art: bool,
}

/// A picture kept on the nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtRec {
    pub hash: rondo_core::ContentHash,
    pub mime: String,
    pub width: u32,
    pub height: u32,
}

impl ArtRec {
    /// A picture of a record; `None` for none, or for one whose hash is
    /// not one (never from a node that checked it).
    pub fn from_proto(art: Option<pb::Art>) -> Option<ArtRec> {
        let art = art?;
        Some(ArtRec {
            hash: art.hash.parse().ok()?,
            mime: art.mime,
            width: art.width,
            height: art.height,
        })
    }
}

/// A song as the index knows it, with the nodes that hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SongRec {
    pub id: SongId,
    pub title: String,
    pub artist: ArtistRec,
    pub album: AlbumRec,
    /// The album's artist when it is not the track artist.
    pub album_artist: Option<ArtistRec>,
    pub track_number: Option<u32>,
    pub track_total: Option<u32>,
    pub disc_number: Option<u32>,
    pub disc_total: Option<u32>,
    pub compilation: bool,
    pub title_sort: Option<String>,
    pub artist_sort: Option<String>,
    pub album_artist_sort: Option<String>,
    pub album_sort: Option<String>,
    pub audio: Option<pb::AudioProperties>,
    /// The picture embedded in the song's file.
    pub art: Option<ArtRec>,
    pub year: Option<u32>,
    pub genre: Option<String>,
    pub duration_ms: u64,
    pub mime_type: String,
    pub size_bytes: u64,
    pub content_hash: rondo_core::ContentHash,
    pub created_at_ms: i64,
    pub replicas: BTreeSet<NodeId>,
}

impl SongRec {
    /// Converts a song from a node's change stream.
    pub fn from_proto(song: pb::Song) -> Result<SongRec> {
        let artist = song
            .artist
            .ok_or_else(|| Error::BadUserInput("song without artist".into()))?;
        let album = song
            .album
            .ok_or_else(|| Error::BadUserInput("song without album".into()))?;
        let artist = ArtistRec {
            id: artist.id.parse()?,
            name: artist.name,
        };
        let album_artist = match song.album_artist {
            Some(a) => Some(ArtistRec {
                id: a.id.parse()?,
                name: a.name,
            }),
            None => None,
        };
        Ok(SongRec {
            id: song.id.parse()?,
            title: song.title,
            album: AlbumRec {
                id: album.id.parse()?,
                title: album.title,
                artist_id: album_artist.as_ref().map_or(artist.id, |a| a.id),
                year: album.year,
                art: None,
                own_art: false,
            },
            artist,
            album_artist,
            track_total: song.track_total,
            disc_number: song.disc_number,
            disc_total: song.disc_total,
            compilation: song.compilation,
            title_sort: song.title_sort,
            artist_sort: song.artist_sort,
            album_artist_sort: song.album_artist_sort,
            album_sort: song.album_sort,
            audio: song.audio,
            art: ArtRec::from_proto(song.art),
            track_number: song.track_number,
            year: song.year,
            genre: song.genre,
            duration_ms: song.duration_ms,
            mime_type: song.mime_type,
            size_bytes: song.size_bytes,
            content_hash: song.content_hash.parse()?,
            created_at_ms: song.created_at_ms,
            replicas: BTreeSet::new(),
        })
    }
}

/// The mutable catalog: every song with the nodes that reported it.
#[derive(Debug, Default)]
pub struct Catalog {
    songs: HashMap<SongId, SongRec>,
    /// Songs deleted (ids are never reused).
    deleted: std::collections::HashSet<SongId>,
    /// Albums' own images, as the nodes last announced them (`None`:
    /// removed).
    album_art: HashMap<AlbumId, Option<ArtRec>>,
    /// Accounts and playlists.
    accounts: crate::accounts::Accounts,
    /// Opens app passwords (none: they are ignored, as in unit tests).
    sealer: Option<Arc<rondo_core::sealing::Sealer>>,
}

impl Catalog {
    /// A catalog that opens app passwords with `sealer`.
    pub fn with_sealer(sealer: Arc<rondo_core::sealing::Sealer>) -> Catalog {
        Catalog {
            sealer: Some(sealer),
            ..Default::default()
        }
    }

    /// Applies one change reported by `node`.
    pub fn apply(&mut self, node: NodeId, change: pb::catalog_change::Change) -> Result<()> {
        use pb::catalog_change::Change;
        match change {
            Change::Upsert(song) => {
                let mut rec = SongRec::from_proto(song)?;
                // Deletes are ordered by the ring and song ids are never
                // reused: a late announcement of a deleted song is stale.
                if self.deleted.contains(&rec.id) {
                    return Ok(());
                }
                if let Some(old) = self.songs.remove(&rec.id) {
                    rec.replicas = old.replicas;
                }
                rec.replicas.insert(node);
                self.songs.insert(rec.id, rec);
            }
            Change::DeleteSongId(id) => {
                // Any node's report of an ordered delete removes the song
                // everywhere: every node applies the same delete.
                let _ = node;
                let id: SongId = id.parse()?;
                self.songs.remove(&id);
                self.deleted.insert(id);
            }
            Change::ReleasedSongId(id) => {
                // The node gave its copy up (the song's owners hold it):
                // no more stream URLs for it there, until it announces the
                // song again.
                let id: SongId = id.parse()?;
                if let Some(rec) = self.songs.get_mut(&id) {
                    rec.replicas.remove(&node);
                }
            }
            Change::Album(album) => {
                let id: AlbumId = album.id.parse()?;
                self.album_art.insert(id, ArtRec::from_proto(album.art));
            }
            Change::User(user) => self.accounts.apply_user(user)?,
            Change::Playlist(playlist) => self.accounts.apply_playlist(playlist)?,
            Change::Revoked(r) => self.accounts.apply_revoked(r),
            Change::Annotation(a) => self.accounts.apply_annotation(a)?,
            Change::PlayQueue(q) => self.accounts.apply_play_queue(q)?,
            Change::AppPassword(p) => {
                if let Some(sealer) = &self.sealer {
                    self.accounts.apply_app_password(p, sealer)?;
                }
            }
        }
        Ok(())
    }

    /// Builds an immutable snapshot.
    pub fn snapshot(&self, applied: HashMap<NodeId, u64>) -> Snapshot {
        let mut snap = Snapshot::build(
            self.songs.values().cloned().collect(),
            &self.album_art,
            applied,
        );
        snap.accounts = Arc::new(self.accounts.clone());
        snap
    }
}

/// A searchable, sorted list of one kind of item.
///
/// Search is by word prefix, as listeners type: every query word must begin
/// a word of the item's text (title, artist, album), after folding
/// ([`crate::fold`]: case, accents, "ß" as "ss"; CJK text as bigrams). It runs on an inverted index: the sorted vocabulary of the
/// listing, each word with the sorted positions of the items that contain it.
#[derive(Debug, Default)]
pub struct Listing {
    /// Sort keys (`lower(name) \0 id`), ascending.
    keys: Vec<String>,
    /// Distinct folded words of all items, ascending.
    words: Vec<String>,
    /// For each word, the positions of the items containing it, ascending.
    postings: Vec<Vec<u32>>,
}

impl Listing {
    fn build(mut items: Vec<(String, String)>) -> (Listing, Vec<usize>) {
        // items: (sort key, search text); returns the listing and the
        // permutation from sorted position to input position.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|a, b| items[*a].0.cmp(&items[*b].0));
        let mut listing = Listing::default();
        let mut index: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
        for (pos, &i) in order.iter().enumerate() {
            let (key, text) = std::mem::take(&mut items[i]);
            listing.keys.push(key);
            let pos = u32::try_from(pos).unwrap_or(u32::MAX);
            for word in crate::fold::index_words(&text) {
                let list = index.entry(word).or_default();
                if list.last() != Some(&pos) {
                    list.push(pos);
                }
            }
        }
        (listing.words, listing.postings) = index.into_iter().unzip();
        (listing, order)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// Position of the first item after the cursor.
    fn position_after(&self, cursor: Option<&str>) -> Result<usize> {
        let Some(cursor) = cursor else { return Ok(0) };
        let key = decode_cursor(cursor)?;
        Ok(self.keys.partition_point(|k| k.as_str() <= key.as_str()))
    }

    /// The range of vocabulary words that start with `prefix`.
    fn words_with_prefix(&self, prefix: &str) -> std::ops::Range<usize> {
        let lo = self.words.partition_point(|w| w.as_str() < prefix);
        let hi = lo + self.words[lo..].partition_point(|w| w.starts_with(prefix));
        lo..hi
    }

    /// The items matching every token.
    fn matches(&self, tokens: &[String]) -> Matches<'_> {
        let ranges: Vec<std::ops::Range<usize>> =
            tokens.iter().map(|t| self.words_with_prefix(t)).collect();
        // A whole word typed alone: its posting list is the answer.
        if let [range] = ranges.as_slice()
            && range.len() == 1
        {
            return Matches::List(&self.postings[range.start]);
        }
        // Otherwise one bit per item for each token, ORed over its words and
        // ANDed across tokens.
        let mut acc: Option<Vec<u64>> = None;
        for range in ranges {
            if range.is_empty() {
                return Matches::List(&[]);
            }
            let mut bits = vec![0u64; self.len().div_ceil(64)];
            for list in &self.postings[range] {
                for &p in list {
                    let p = p as usize;
                    if let Some(word) = bits.get_mut(p / 64) {
                        *word |= 1 << (p % 64);
                    }
                }
            }
            acc = Some(match acc {
                None => bits,
                Some(mut a) => {
                    a.iter_mut().zip(&bits).for_each(|(x, y)| *x &= y);
                    a
                }
            });
        }
        Matches::Bits(acc.unwrap_or_default())
    }

    fn cursor(&self, pos: usize) -> String {
        hex::encode(self.keys[pos].as_bytes())
    }
}

/// The positions matching a search, as a posting list or a bit set.
enum Matches<'a> {
    List(&'a [u32]),
    Bits(Vec<u64>),
}

impl Matches<'_> {
    fn total(&self) -> usize {
        match self {
            Matches::List(l) => l.len(),
            Matches::Bits(b) => b.iter().map(|w| w.count_ones() as usize).sum(),
        }
    }

    /// Up to `n` positions at or after `from`, and whether more follow.
    fn page(&self, from: usize, n: usize) -> (Vec<usize>, bool) {
        match self {
            Matches::List(l) => {
                let start = l.partition_point(|&p| (p as usize) < from);
                let end = start.saturating_add(n).min(l.len());
                let items = l[start..end].iter().map(|&p| p as usize).collect();
                (items, end < l.len())
            }
            Matches::Bits(bits) => {
                // Never more than the bits hold, whatever `n` a caller asks.
                let mut out = Vec::with_capacity(n.min(bits.len() * 64));
                for (i, &word) in bits.iter().enumerate().skip(from / 64) {
                    // Bits below `from` in its own word are masked off.
                    let mut w = if i == from / 64 {
                        word & (!0u64 << (from % 64))
                    } else {
                        word
                    };
                    while w != 0 {
                        if out.len() == n {
                            return (out, true);
                        }
                        out.push(i * 64 + w.trailing_zeros() as usize);
                        w &= w - 1;
                    }
                }
                (out, false)
            }
        }
    }
}

fn decode_cursor(cursor: &str) -> Result<String> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Error::BadUserInput(format!(
                "invalid cursor {:?}",
                cursor.chars().take(40).collect::<String>()
            ))
        })
}

/// The tokens of a query (see [`crate::fold`]).
pub fn tokens(search: Option<&str>) -> Vec<String> {
    search.map(crate::fold::query_words).unwrap_or_default()
}

fn sort_key(name: &str, id: impl std::fmt::Display) -> String {
    format!("{}\0{id}", fold(name))
}

/// A page of positions into a listing.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// (position, cursor) of each item on the page.
    pub items: Vec<(usize, String)>,
    pub has_next: bool,
    pub total: usize,
}

/// An immutable view of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub songs: Vec<Arc<SongRec>>,
    pub artists: Vec<ArtistRec>,
    pub albums: Vec<AlbumRec>,
    song_listing: Listing,
    artist_listing: Listing,
    album_listing: Listing,
    song_pos: HashMap<SongId, usize>,
    /// Song positions, most recently added first.
    pub recent: Vec<usize>,
    artist_pos: HashMap<ArtistId, usize>,
    album_pos: HashMap<AlbumId, usize>,
    /// Song positions of each artist, in title order.
    artist_songs: HashMap<ArtistId, Vec<usize>>,
    /// Album positions of each artist, in title order.
    artist_albums: HashMap<ArtistId, Vec<usize>>,
    /// Song positions of each album, in track order.
    album_songs: HashMap<AlbumId, Vec<usize>>,
    /// Song positions by content hash (the lowest id where a store from
    /// before duplicates were refused holds several, as on the nodes).
    by_hash: HashMap<rondo_core::ContentHash, usize>,
    /// Every picture by its hash (songs' and albums').
    arts: HashMap<rondo_core::ContentHash, ArtRec>,
    /// Highest change sequence applied from each node.
    pub applied: HashMap<NodeId, u64>,
    /// Accounts and playlists.
    pub accounts: Arc<crate::accounts::Accounts>,
}

/// Which listing a page is taken from.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Songs,
    Artists,
    Albums,
}

impl Snapshot {
    fn build(
        songs: Vec<SongRec>,
        album_art: &HashMap<AlbumId, Option<ArtRec>>,
        applied: HashMap<NodeId, u64>,
    ) -> Snapshot {
        let mut artists: HashMap<ArtistId, ArtistRec> = HashMap::new();
        let mut albums: HashMap<AlbumId, AlbumRec> = HashMap::new();
        for s in &songs {
            for a in std::iter::once(&s.artist).chain(&s.album_artist) {
                artists.entry(a.id).or_insert_with(|| a.clone());
            }
            albums.entry(s.album.id).or_insert_with(|| s.album.clone());
        }
        let (song_listing, order) = Listing::build(
            songs
                .iter()
                .map(|s| {
                    let owner = s.album_artist.as_ref().map_or("", |a| a.name.as_str());
                    let text = format!("{} {} {} {owner}", s.title, s.artist.name, s.album.title);
                    (sort_key(&s.title, s.id), text)
                })
                .collect(),
        );
        let mut by_input: Vec<Option<SongRec>> = songs.into_iter().map(Some).collect();
        let songs: Vec<Arc<SongRec>> = order
            .iter()
            .filter_map(|&i| by_input[i].take().map(Arc::new))
            .collect();

        let artists: Vec<ArtistRec> = artists.into_values().collect();
        let (artist_listing, order) = Listing::build(
            artists
                .iter()
                .map(|a| (sort_key(&a.name, a.id), a.name.clone()))
                .collect(),
        );
        let artists: Vec<ArtistRec> = order.iter().map(|&i| artists[i].clone()).collect();

        let albums: Vec<AlbumRec> = albums.into_values().collect();
        let (album_listing, order) = Listing::build(
            albums
                .iter()
                .map(|a| {
                    let artist = artists_name(&artists, a.artist_id);
                    (sort_key(&a.title, a.id), format!("{} {artist}", a.title))
                })
                .collect(),
        );
        let albums: Vec<AlbumRec> = order.iter().map(|&i| albums[i].clone()).collect();

        let song_pos: HashMap<SongId, usize> =
            songs.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let mut by_hash: HashMap<rondo_core::ContentHash, usize> = HashMap::new();
        for (i, s) in songs.iter().enumerate() {
            let first = by_hash.entry(s.content_hash).or_insert(i);
            if songs[*first].id.0 > s.id.0 {
                *first = i;
            }
        }
        let mut recent: Vec<usize> = (0..songs.len()).collect();
        recent.sort_by_key(|&i| std::cmp::Reverse((songs[i].created_at_ms, songs[i].id.0)));
        let artist_pos = artists.iter().enumerate().map(|(i, a)| (a.id, i)).collect();
        let album_pos = albums.iter().enumerate().map(|(i, a)| (a.id, i)).collect();
        let mut artist_songs: HashMap<ArtistId, Vec<usize>> = HashMap::new();
        let mut album_songs: HashMap<AlbumId, Vec<usize>> = HashMap::new();
        for (i, s) in songs.iter().enumerate() {
            artist_songs.entry(s.artist.id).or_default().push(i);
            album_songs.entry(s.album.id).or_default().push(i);
        }
        for list in album_songs.values_mut() {
            // Disc, then track: a disc missing its number counts as the first.
            list.sort_by_key(|&i| {
                let s = &songs[i];
                (
                    s.disc_number.unwrap_or(1),
                    s.track_number.unwrap_or(u32::MAX),
                    i,
                )
            });
        }
        let mut albums = albums;
        for a in &mut albums {
            a.own_art = matches!(album_art.get(&a.id), Some(Some(_)));
            a.art = match album_art.get(&a.id) {
                Some(Some(own)) => Some(own.clone()),
                _ => album_songs
                    .get(&a.id)
                    .into_iter()
                    .flatten()
                    .find_map(|&i| songs[i].art.clone()),
            };
        }
        let mut artist_albums: HashMap<ArtistId, Vec<usize>> = HashMap::new();
        for (i, a) in albums.iter().enumerate() {
            artist_albums.entry(a.artist_id).or_default().push(i);
        }
        let arts = songs
            .iter()
            .filter_map(|s| s.art.as_ref())
            .chain(albums.iter().filter_map(|a| a.art.as_ref()))
            .map(|a| (a.hash, a.clone()))
            .collect();
        Snapshot {
            songs,
            artists,
            albums,
            song_listing,
            artist_listing,
            album_listing,
            song_pos,
            recent,
            artist_pos,
            album_pos,
            artist_songs,
            artist_albums,
            album_songs,
            by_hash,
            arts,
            applied,
            accounts: Arc::default(),
        }
    }

    /// The song whose bytes have this content hash, if any.
    pub fn song_with_hash(&self, hash: &rondo_core::ContentHash) -> Option<&Arc<SongRec>> {
        self.by_hash.get(hash).map(|&i| &self.songs[i])
    }

    fn listing(&self, kind: Kind) -> &Listing {
        match kind {
            Kind::Songs => &self.song_listing,
            Kind::Artists => &self.artist_listing,
            Kind::Albums => &self.album_listing,
        }
    }

    /// A page of `kind` matching `search`, after `after`, of at most `first`.
    pub fn page(
        &self,
        kind: Kind,
        search: Option<&str>,
        after: Option<&str>,
        first: usize,
    ) -> Result<Page> {
        let listing = self.listing(kind);
        let from = listing.position_after(after)?;
        let toks = tokens(search);
        let (items, has_next, total) = if toks.is_empty() {
            let end = (from + first).min(listing.len());
            (
                (from..end).collect::<Vec<_>>(),
                end < listing.len(),
                listing.len(),
            )
        } else {
            let matches = listing.matches(&toks);
            let (items, has_next) = matches.page(from, first);
            (items, has_next, matches.total())
        };
        Ok(Page {
            items: items.into_iter().map(|p| (p, listing.cursor(p))).collect(),
            has_next,
            total,
        })
    }

    /// A picture of a song or an album, by its hash.
    pub fn art(&self, hash: &rondo_core::ContentHash) -> Option<&ArtRec> {
        self.arts.get(hash)
    }

    pub fn song(&self, id: SongId) -> Option<&Arc<SongRec>> {
        self.song_pos.get(&id).map(|&i| &self.songs[i])
    }

    pub fn artist(&self, id: ArtistId) -> Option<&ArtistRec> {
        self.artist_pos.get(&id).map(|&i| &self.artists[i])
    }

    pub fn album(&self, id: AlbumId) -> Option<&AlbumRec> {
        self.album_pos.get(&id).map(|&i| &self.albums[i])
    }

    pub fn artist_songs(&self, id: ArtistId) -> impl Iterator<Item = &Arc<SongRec>> + Clone {
        self.artist_songs
            .get(&id)
            .into_iter()
            .flatten()
            .map(|&i| &self.songs[i])
    }

    pub fn artist_albums(&self, id: ArtistId) -> impl Iterator<Item = &AlbumRec> + Clone {
        self.artist_albums
            .get(&id)
            .into_iter()
            .flatten()
            .map(|&i| &self.albums[i])
    }

    pub fn album_songs(&self, id: AlbumId) -> impl Iterator<Item = &Arc<SongRec>> + Clone {
        self.album_songs
            .get(&id)
            .into_iter()
            .flatten()
            .map(|&i| &self.songs[i])
    }

    /// An artist with this name (`rondo_core::names::fold`).
    pub fn artist_named(&self, name: &str) -> Option<&ArtistRec> {
        let lower = fold(name);
        let from = self
            .artist_listing
            .keys
            .partition_point(|k| k.as_str() < lower.as_str());
        (from..self.artists.len())
            .take_while(|&i| self.artist_listing.keys[i].split('\0').next() == Some(lower.as_str()))
            .map(|i| &self.artists[i])
            .next()
    }

    /// An album of this artist with this title, compared case-insensitively.
    pub fn album_named(&self, artist: ArtistId, title: &str) -> Option<&AlbumRec> {
        let lower = fold(title);
        self.artist_albums(artist).find(|a| fold(&a.title) == lower)
    }
}

fn artists_name(artists: &[ArtistRec], id: ArtistId) -> &str {
    artists
        .iter()
        .find(|a| a.id == id)
        .map_or("", |a| a.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::catalog_change::Change;

    fn song(title: &str, artist: (&str, ArtistId), album: (&str, AlbumId), track: u32) -> pb::Song {
        pb::Song {
            id: SongId::new_random().to_string(),
            title: title.into(),
            artist: Some(pb::Artist {
                id: artist.1.to_string(),
                name: artist.0.into(),
            }),
            album: Some(pb::Album {
                id: album.1.to_string(),
                title: album.0.into(),
                artist_id: artist.1.to_string(),
                year: Some(2001),
                art: None,
            }),
            track_number: Some(track),
            content_hash: rondo_core::ContentHash::of(title.as_bytes()).to_hex(),
            ..Default::default()
        }
    }

    fn catalog() -> (Snapshot, NodeId) {
        let node = NodeId::new_random();
        let (a, b) = (ArtistId::new_random(), ArtistId::new_random());
        let (x, y) = (AlbumId::new_random(), AlbumId::new_random());
        let mut c = Catalog::default();
        for s in [
            song("Zebra Song", ("The Beatles", a), ("Abbey Road", x), 2),
            song("Come Together", ("The Beatles", a), ("Abbey Road", x), 1),
            song("alpha", ("Björk", b), ("Homogenic", y), 1),
        ] {
            c.apply(node, Change::Upsert(s)).unwrap();
        }
        (c.snapshot(HashMap::new()), node)
    }

    #[test]
    fn sorted_searchable_pages() {
        let (snap, _) = catalog();
        let titles = |p: &Page| {
            p.items
                .iter()
                .map(|(i, _)| snap.songs[*i].title.clone())
                .collect::<Vec<_>>()
        };
        let all = snap.page(Kind::Songs, None, None, 10).unwrap();
        assert_eq!(titles(&all), ["alpha", "Come Together", "Zebra Song"]);
        assert_eq!((all.total, all.has_next), (3, false));
        let first = snap.page(Kind::Songs, None, None, 2).unwrap();
        assert!(first.has_next);
        let rest = snap
            .page(Kind::Songs, None, Some(&first.items[1].1), 2)
            .unwrap();
        assert_eq!(titles(&rest), ["Zebra Song"]);
        // Case-insensitive, over title, artist and album, all tokens.
        assert_eq!(
            titles(&snap.page(Kind::Songs, Some("BEATLES"), None, 10).unwrap()),
            ["Come Together", "Zebra Song"]
        );
        assert_eq!(
            titles(&snap.page(Kind::Songs, Some("abbey zeb"), None, 10).unwrap()),
            ["Zebra Song"]
        );
        assert_eq!(
            titles(&snap.page(Kind::Songs, Some("BJÖRK"), None, 10).unwrap()),
            ["alpha"]
        );
        assert_eq!(
            snap.page(Kind::Songs, Some("nothing"), None, 10)
                .unwrap()
                .total,
            0
        );
        assert!(snap.page(Kind::Songs, None, Some("zz"), 10).is_err());
        // Albums in track order, artists matched by name.
        let artist = snap.artist_named("the beatles").unwrap().clone();
        assert_eq!(snap.artist_albums(artist.id).count(), 1);
        let album = snap.album_named(artist.id, "ABBEY ROAD").unwrap();
        let tracks: Vec<_> = snap
            .album_songs(album.id)
            .map(|s| s.title.as_str())
            .collect();
        assert_eq!(tracks, ["Come Together", "Zebra Song"]);
        assert_eq!(snap.page(Kind::Artists, None, None, 10).unwrap().total, 2);
        assert_eq!(
            snap.page(Kind::Albums, Some("björk"), None, 10)
                .unwrap()
                .total,
            1
        );
    }

    #[test]
    fn search_is_by_folded_word_prefix() {
        let node = NodeId::new_random();
        let (a, b) = (ArtistId::new_random(), ArtistId::new_random());
        let (x, y) = (AlbumId::new_random(), AlbumId::new_random());
        let mut c = Catalog::default();
        for s in [
            song("Don't Stop", ("AC/DC", a), ("Café Révolution", x), 1),
            song("Hyperballad", ("Björk", b), ("Post", y), 1),
        ] {
            c.apply(node, Change::Upsert(s)).unwrap();
        }
        let snap = c.snapshot(HashMap::new());
        let hits = |q: &str| snap.page(Kind::Songs, Some(q), None, 10).unwrap().total;
        assert_eq!(hits("bjork"), 1, "accents fold away");
        assert_eq!(hits("BJÖ hyper"), 1, "prefixes, any field, any case");
        assert_eq!(hits("dont"), 1, "apostrophes vanish");
        assert_eq!(hits("don't st"), 1);
        assert_eq!(hits("ac/dc"), 1);
        assert_eq!(hits("dc cafe revol"), 1);
        assert_eq!(hits("ballad"), 0, "a query word must begin a word");
        assert_eq!(hits("post stop"), 0, "every query word must match");
        assert_eq!(hits("   "), 2, "no words is no filter");
    }

    #[test]
    fn search_folds_sharp_s_and_finds_words_inside_cjk_titles() {
        let node = NodeId::new_random();
        let (a, b) = (ArtistId::new_random(), ArtistId::new_random());
        let (x, y) = (AlbumId::new_random(), AlbumId::new_random());
        let mut c = Catalog::default();
        for s in [
            song("Straße nach Süden", ("Die Ärzte", a), ("Ænima", x), 1),
            song("東京タワーの夜", ("宇多田ヒカル", b), ("初恋", y), 1),
            song("千と千尋の神隠し", ("宇多田ヒカル", b), ("初恋", y), 2),
        ] {
            c.apply(node, Change::Upsert(s)).unwrap();
        }
        let snap = c.snapshot(HashMap::new());
        let hits = |q: &str| snap.page(Kind::Songs, Some(q), None, 10).unwrap().total;
        assert_eq!(hits("strasse"), 1);
        assert_eq!(hits("STRASSE sud"), 1);
        assert_eq!(hits("straße"), 1);
        assert_eq!(hits("arzte aenima"), 1);
        assert_eq!(hits("タワー"), 1, "a word inside a title");
        assert_eq!(hits("夜"), 1, "its last character");
        assert_eq!(hits("神隠"), 1);
        assert_eq!(hits("ヒカル"), 2, "inside the artist's name");
        assert_eq!(hits("ヒカル 東京"), 1);
        assert_eq!(hits("神様"), 0);
    }

    proptest::proptest! {
        /// The inverted index agrees with a plain scan of every item.
        #[test]
        fn index_agrees_with_a_scan(
            titles in proptest::collection::vec("[a-c]{1,3}( [a-c]{1,3}){0,2}", 0..150),
            query in "[a-c]{1,2}( [a-c]{1,2})?",
            first in 1usize..8,
        ) {
            let node = NodeId::new_random();
            let (a, x) = (ArtistId::new_random(), AlbumId::new_random());
            let mut c = Catalog::default();
            for (i, t) in titles.iter().enumerate() {
                c.apply(node, Change::Upsert(song(t, ("zz", a), ("yy", x), i as u32))).unwrap();
            }
            let snap = c.snapshot(HashMap::new());
            let q = tokens(Some(&query));
            let expected: Vec<usize> = (0..snap.songs.len())
                .filter(|&i| {
                    let words = crate::fold::index_words(&snap.songs[i].title);
                    q.iter().all(|t| words.iter().any(|w| w.starts_with(t.as_str())))
                })
                .collect();
            // Walk every page and compare with the scan.
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = snap.page(Kind::Songs, Some(&query), after.as_deref(), first).unwrap();
                proptest::prop_assert_eq!(page.total, expected.len());
                seen.extend(page.items.iter().map(|(p, _)| *p));
                after = page.items.last().map(|(_, c)| c.clone());
                if !page.has_next {
                    break;
                }
            }
            proptest::prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn a_node_that_released_a_song_is_no_replica_until_it_announces_it_again() {
        let (snap, a) = catalog();
        let b = NodeId::new_random();
        let s = &snap.songs[0];
        let mut p = song(
            &s.title,
            (&s.artist.name, s.artist.id),
            (&s.album.title, s.album.id),
            1,
        );
        p.id = s.id.to_string();
        let mut c = Catalog::default();
        c.apply(a, Change::Upsert(p.clone())).unwrap();
        c.apply(b, Change::Upsert(p.clone())).unwrap();
        let replicas = |c: &Catalog| {
            c.snapshot(HashMap::new())
                .song(s.id)
                .unwrap()
                .replicas
                .clone()
        };
        assert_eq!(replicas(&c), BTreeSet::from([a, b]));
        c.apply(a, Change::ReleasedSongId(s.id.to_string()))
            .unwrap();
        assert_eq!(
            replicas(&c),
            BTreeSet::from([b]),
            "the song stays, a is no replica"
        );
        c.apply(a, Change::Upsert(p)).unwrap();
        assert_eq!(replicas(&c), BTreeSet::from([a, b]));
        // An unknown song's release changes nothing; a bad id is an error.
        c.apply(a, Change::ReleasedSongId(SongId::new_random().to_string()))
            .unwrap();
        assert!(c.apply(a, Change::ReleasedSongId("x".into())).is_err());
    }

    #[test]
    fn delete_removes_song_and_empty_artist() {
        let (snap, node) = catalog();
        let mut c = Catalog::default();
        for s in &snap.songs {
            let mut p = song(
                &s.title,
                (&s.artist.name, s.artist.id),
                (&s.album.title, s.album.id),
                1,
            );
            p.id = s.id.to_string();
            c.apply(node, Change::Upsert(p)).unwrap();
        }
        let bjork = snap.artist_named("björk").unwrap().id;
        let alpha = snap.artist_songs(bjork).next().unwrap().id;
        c.apply(node, Change::DeleteSongId(alpha.to_string()))
            .unwrap();
        let after = c.snapshot(HashMap::new());
        assert!(after.song(alpha).is_none());
        assert!(after.artist(bjork).is_none());
        assert_eq!(after.songs.len(), 2);
    }
}
