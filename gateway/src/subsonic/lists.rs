//! Lists: genres, album lists, random songs, songs by genre, search.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;

use super::Call;
use super::browse::{album_el, artist_el, child};
use super::response::{El, Failure};
use crate::index::{AlbumRec, Kind, Snapshot, SongRec};

/// The most items one list answers.
pub const MAX_LIST: usize = 500;
/// The most items of one kind one search answers (an empty query pages
/// through the whole library, as clients sync it).
pub const MAX_SEARCH: usize = 1000;

fn size(call: &Call<'_>, key: &str, default: usize, max: usize) -> Result<usize, Failure> {
    Ok(call.params.num::<usize>(key)?.unwrap_or(default).min(max))
}

fn offset(call: &Call<'_>, key: &str) -> Result<usize, Failure> {
    Ok(call.params.num::<usize>(key)?.unwrap_or(0))
}

pub fn genres(call: &Call<'_>) -> El {
    let mut by: BTreeMap<&str, (usize, BTreeSet<rondo_core::AlbumId>)> = BTreeMap::new();
    for s in &call.snap.songs {
        if let Some(g) = s.genre.as_deref() {
            let e = by.entry(g).or_default();
            e.0 += 1;
            e.1.insert(s.album.id);
        }
    }
    El::new("genres").list(
        "genre",
        by.into_iter().map(|(name, (songs, albums))| {
            El::new("genre")
                .attr("songCount", songs)
                .attr("albumCount", albums.len())
                .text(name)
        }),
    )
}

/// The earliest time one of an album's songs was added.
fn album_created(snap: &Snapshot, a: &AlbumRec) -> i64 {
    snap.album_songs(a.id)
        .map(|s| s.created_at_ms)
        .min()
        .unwrap_or(0)
}

fn album_genre<'a>(snap: &'a Snapshot, a: &AlbumRec) -> Option<&'a str> {
    snap.album_songs(a.id).find_map(|s| s.genre.as_deref())
}

pub fn album_list2(call: &Call<'_>) -> Result<El, Failure> {
    let snap = &call.snap;
    let kind = call.params.need("type")?;
    let size = size(call, "size", 10, MAX_LIST)?;
    let offset = offset(call, "offset")?;
    let mut albums: Vec<&AlbumRec> = snap.albums.iter().collect();
    match kind {
        // The albums are kept sorted by title.
        "alphabeticalByName" => {}
        "alphabeticalByArtist" => {
            let artist = |a: &AlbumRec| {
                snap.artist(a.artist_id)
                    .map(|x| rondo_core::names::fold(&x.name))
                    .unwrap_or_default()
            };
            albums.sort_by_cached_key(|a| (artist(a), rondo_core::names::fold(&a.title)));
        }
        "newest" => {
            albums.sort_by_cached_key(|a| std::cmp::Reverse((album_created(snap, a), a.id.0)));
        }
        "random" => albums.shuffle(&mut rand::rng()),
        "byYear" => {
            let from: u32 = call
                .params
                .num("fromYear")?
                .ok_or_else(|| Failure::missing("fromYear"))?;
            let to: u32 = call
                .params
                .num("toYear")?
                .ok_or_else(|| Failure::missing("toYear"))?;
            let (lo, hi) = (from.min(to), from.max(to));
            albums.retain(|a| a.year.is_some_and(|y| (lo..=hi).contains(&y)));
            albums.sort_by_key(|a| a.year);
            if from > to {
                albums.reverse();
            }
        }
        "byGenre" => {
            let genre = call.params.need("genre")?;
            albums.retain(|a| album_genre(snap, a).is_some_and(|g| g.eq_ignore_ascii_case(genre)));
        }
        // The caller's own marks.
        "recent" | "frequent" | "highest" | "starred" => {
            let user = call.caller()?.user.id;
            let a = &snap.accounts;
            let plays = |al: &AlbumRec| {
                snap.album_songs(al.id).fold((0u64, 0u64), |(n, last), s| {
                    let m = a.marks(user, s.id.0);
                    (
                        n + m.map_or(0, |m| m.play_count),
                        last.max(m.and_then(|m| m.last_played_ms).unwrap_or(0)),
                    )
                })
            };
            let own = |al: &AlbumRec| a.marks(user, al.id.0).cloned().unwrap_or_default();
            let mut keyed: Vec<(u64, &AlbumRec)> = albums
                .into_iter()
                .map(|al| {
                    let key = match kind {
                        "recent" => plays(al).1,
                        "frequent" => plays(al).0,
                        "highest" => u64::from(own(al).rating.unwrap_or(0)),
                        _ => own(al).starred_at_ms.unwrap_or(0),
                    };
                    (key, al)
                })
                .filter(|(key, _)| *key > 0)
                .collect();
            keyed.sort_by_key(|(key, al)| std::cmp::Reverse((*key, al.id.0)));
            albums = keyed.into_iter().map(|(_, al)| al).collect();
        }
        other => {
            return Err(Failure::bad(format!(
                "type {other:?} is not one of random, newest, highest, frequent, recent, \
                 alphabeticalByName, alphabeticalByArtist, starred, byYear, byGenre"
            )));
        }
    }
    Ok(El::new("albumList2").list(
        "album",
        albums
            .into_iter()
            .skip(offset)
            .take(size)
            .map(|a| album_el(call, a)),
    ))
}

/// Songs matching the optional `genre`, `fromYear` and `toYear`.
fn song_filter(call: &Call<'_>) -> Result<impl Fn(&SongRec) -> bool + use<>, Failure> {
    let genre = call.params.get("genre").map(str::to_string);
    let from: Option<u32> = call.params.num("fromYear")?;
    let to: Option<u32> = call.params.num("toYear")?;
    Ok(move |s: &SongRec| {
        let year = s.year.or(s.album.year);
        genre.as_deref().is_none_or(|g| {
            s.genre
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(g))
        }) && from.is_none_or(|f| year.is_some_and(|y| y >= f))
            && to.is_none_or(|t| year.is_some_and(|y| y <= t))
    })
}

pub fn random_songs(call: &Call<'_>) -> Result<El, Failure> {
    let snap = &call.snap;
    let size = size(call, "size", 10, MAX_LIST)?;
    let keep = song_filter(call)?;
    let mut songs: Vec<&SongRec> = snap
        .songs
        .iter()
        .map(|s| &**s)
        .filter(|s| keep(s))
        .collect();
    let (picked, _) = songs.partial_shuffle(&mut rand::rng(), size);
    Ok(El::new("randomSongs").list("song", picked.iter().map(|s| child(call, s))))
}

pub fn songs_by_genre(call: &Call<'_>) -> Result<El, Failure> {
    let snap = &call.snap;
    let genre = call.params.need("genre")?;
    let count = size(call, "count", 10, MAX_LIST)?;
    let offset = offset(call, "offset")?;
    Ok(El::new("songsByGenre").list(
        "song",
        snap.songs
            .iter()
            .filter(|s| {
                s.genre
                    .as_deref()
                    .is_some_and(|g| g.eq_ignore_ascii_case(genre))
            })
            .skip(offset)
            .take(count)
            .map(|s| child(call, s)),
    ))
}

/// Positions of `kind` matching `query` from `offset`, at most `count`.
fn matching(
    snap: &Snapshot,
    kind: Kind,
    query: Option<&str>,
    offset: usize,
    count: usize,
) -> Result<Vec<usize>, Failure> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let len = match kind {
        Kind::Songs => snap.songs.len(),
        Kind::Artists => snap.artists.len(),
        Kind::Albums => snap.albums.len(),
    };
    // Past the end there is nothing (and no huge page is ever asked for).
    let offset = offset.min(len);
    let Some(q) = query else {
        return Ok((offset..offset.saturating_add(count).min(len)).collect());
    };
    let page = snap
        .page(kind, Some(q), None, offset.saturating_add(count).min(len))
        .map_err(Failure::from)?;
    Ok(page
        .items
        .into_iter()
        .skip(offset)
        .map(|(p, _)| p)
        .collect())
}

/// `search3`: artists, albums and songs whose words begin with the
/// query's (as the web app's search); an empty query (or `""`) lists
/// everything, paged, as OpenSubsonic asks.
pub fn search3(call: &Call<'_>) -> Result<El, Failure> {
    let snap = &call.snap;
    let raw = call.params.get("query").unwrap_or("").trim();
    let raw = raw.trim_matches('"').trim_end_matches('*').trim();
    let query = (!raw.is_empty()).then_some(raw);
    let artists = matching(
        snap,
        Kind::Artists,
        query,
        offset(call, "artistOffset")?,
        size(call, "artistCount", 20, MAX_SEARCH)?,
    )?;
    let albums = matching(
        snap,
        Kind::Albums,
        query,
        offset(call, "albumOffset")?,
        size(call, "albumCount", 20, MAX_SEARCH)?,
    )?;
    let songs = matching(
        snap,
        Kind::Songs,
        query,
        offset(call, "songOffset")?,
        size(call, "songCount", 20, MAX_SEARCH)?,
    )?;
    Ok(El::new("searchResult3")
        .list(
            "artist",
            artists
                .into_iter()
                .map(|i| artist_el(call, &snap.artists[i])),
        )
        .list(
            "album",
            albums.into_iter().map(|i| album_el(call, &snap.albums[i])),
        )
        .list(
            "song",
            songs.into_iter().map(|i| child(call, &snap.songs[i])),
        ))
}
