//! Browsing: folders, indexes, directories, artists, albums, songs, the
//! account; and the elements (Child, AlbumID3, ArtistID3) every list uses.
//!
//! Rondo is tag-based: the one music folder holds the album artists; an
//! artist's "directory" holds its albums and an album's its songs, as
//! tag-based servers (Navidrome, gonic) emulate folder browsing. Ids are
//! Rondo's UUIDs (songs, albums and artists never share one); a `coverArt`
//! id is the picture's content hash.

use std::collections::BTreeMap;

use rondo_core::{AlbumId, ArtistId, SongId};

use super::response::{El, Failure, Value};
use super::{Call, parse_id};
use crate::index::{AlbumRec, ArtistRec, Snapshot, SongRec};

/// The one music folder's id.
pub const FOLDER_ID: i64 = 1;
/// Articles left out when artists are indexed by letter.
pub const IGNORED_ARTICLES: &str = "The El La Los Las Le Les Die Das Der A An";

/// An instant as ISO 8601 in UTC, to the second.
pub fn iso(ms: u64) -> String {
    let t = crate::graphql::scalars::DateTime::from_unix_ms(ms - ms % 1000).0;
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The file name suffix of an audio type.
pub fn suffix(mime: &str) -> &'static str {
    match mime.split(';').next().unwrap_or("").trim() {
        "audio/mpeg" => "mp3",
        "audio/flac" => "flac",
        "audio/ogg" if mime.contains("opus") => "opus",
        "audio/ogg" => "ogg",
        "audio/mp4" => "m4a",
        "audio/aac" => "aac",
        "audio/wav" => "wav",
        "audio/aiff" => "aiff",
        _ => "bin",
    }
}

fn id_name(tag: &str, a: &ArtistRec) -> El {
    El::new(tag)
        .attr("id", a.id.to_string())
        .attr("name", a.name.as_str())
}

/// The picture a song shows: its own, else its album's.
pub fn song_art<'a>(snap: &'a Snapshot, s: &'a SongRec) -> Option<&'a crate::index::ArtRec> {
    s.art
        .as_ref()
        .or_else(|| snap.album(s.album.id).and_then(|a| a.art.as_ref()))
}

/// A song as a Subsonic `Child`, with the OpenSubsonic fields Rondo has.
pub fn child(call: &Call<'_>, s: &SongRec) -> El {
    let snap = &call.snap;
    let album_artist = s.album_artist.as_ref().unwrap_or(&s.artist);
    let ext = suffix(&s.mime_type);
    let audio = s.audio.as_ref();
    let disc = s.disc_number.map(|d| format!("{d}-")).unwrap_or_default();
    let track = s
        .track_number
        .map(|t| format!("{t:02} "))
        .unwrap_or_default();
    let el = El::new("song")
        .attr("id", s.id.to_string())
        .attr("parent", s.album.id.to_string())
        .attr("isDir", false)
        .attr("title", s.title.as_str())
        .attr("album", s.album.title.as_str())
        .attr("artist", s.artist.name.as_str())
        .opt("track", s.track_number)
        .opt("year", s.year.or(s.album.year))
        .opt("genre", s.genre.as_deref())
        .opt("coverArt", song_art(snap, s).map(|a| a.hash.to_hex()))
        .attr("size", s.size_bytes)
        .attr(
            "contentType",
            s.mime_type.split(';').next().unwrap_or("").trim(),
        )
        .attr("suffix", ext)
        .attr("duration", s.duration_ms / 1000)
        .opt("bitRate", audio.map(|a| a.bitrate_kbps).filter(|b| *b > 0))
        .attr(
            "path",
            format!(
                "{}/{}/{disc}{track}{}.{ext}",
                path_part(&album_artist.name),
                path_part(&s.album.title),
                path_part(&s.title)
            ),
        )
        .attr("isVideo", false)
        .opt("discNumber", s.disc_number)
        .attr("created", iso(u64::try_from(s.created_at_ms).unwrap_or(0)))
        .attr("albumId", s.album.id.to_string())
        .attr("artistId", s.artist.id.to_string())
        .attr("type", "music")
        .attr("mediaType", "song")
        .attr("sortName", s.title_sort.as_deref().unwrap_or(""))
        .attr("displayArtist", s.artist.name.as_str())
        .attr("displayAlbumArtist", album_artist.name.as_str())
        .opt("bitDepth", audio.and_then(|a| a.bit_depth))
        .opt(
            "samplingRate",
            audio.map(|a| a.sample_rate).filter(|r| *r > 0),
        )
        .opt("channelCount", audio.map(|a| a.channels).filter(|c| *c > 0));
    with_marks(call, s.id.0, el, true)
        .list(
            "genres",
            s.genre
                .iter()
                .map(|g| El::new("genre").attr("name", g.as_str())),
        )
        .list("artists", [id_name("artist", &s.artist)])
        .list("albumArtists", [id_name("artist", album_artist)])
}

/// The caller's marks on an item: `starred`, `userRating`, `played`
/// (when there are some) and, for songs and albums, `playCount`.
fn with_marks(call: &Call<'_>, item: uuid::Uuid, el: El, counts_plays: bool) -> El {
    let Some(user) = call.caller.map(|c| c.user.id) else {
        return el;
    };
    let m = call.snap.accounts.marks(user, item);
    let el = el
        .opt("starred", m.and_then(|m| m.starred_at_ms).map(iso))
        .opt("userRating", m.and_then(|m| m.rating));
    if counts_plays {
        el.attr("playCount", m.map_or(0, |m| m.play_count))
            .opt("played", m.and_then(|m| m.last_played_ms).map(iso))
    } else {
        el
    }
}

/// A name as one part of a song's virtual path.
fn path_part(name: &str) -> String {
    name.replace(['/', '\\'], "_")
}

/// What an album's songs add up to.
struct AlbumStats {
    songs: usize,
    duration_s: u64,
    created_ms: u64,
    genre: Option<String>,
    compilation: bool,
}

fn album_stats(snap: &Snapshot, a: &AlbumRec) -> AlbumStats {
    let mut st = AlbumStats {
        songs: 0,
        duration_s: 0,
        created_ms: u64::MAX,
        genre: None,
        compilation: false,
    };
    for s in snap.album_songs(a.id) {
        st.songs += 1;
        st.duration_s += s.duration_ms / 1000;
        st.created_ms = st
            .created_ms
            .min(u64::try_from(s.created_at_ms).unwrap_or(0));
        st.compilation |= s.compilation;
        if st.genre.is_none() {
            st.genre = s.genre.clone();
        }
    }
    if st.created_ms == u64::MAX {
        st.created_ms = 0;
    }
    st
}

/// An album as an `AlbumID3`.
pub fn album_el(call: &Call<'_>, a: &AlbumRec) -> El {
    let snap = &call.snap;
    let st = album_stats(snap, a);
    let artist = snap.artist(a.artist_id);
    let artist_name = artist.map_or("", |x| x.name.as_str());
    let (plays, played) = match call.caller {
        Some(c) => snap
            .album_songs(a.id)
            .fold((0u64, None::<u64>), |(n, last), s| {
                let m = snap.accounts.marks(c.user.id, s.id.0);
                (
                    n + m.map_or(0, |m| m.play_count),
                    last.max(m.and_then(|m| m.last_played_ms)),
                )
            }),
        None => (0, None),
    };
    let el = El::new("album")
        .attr("id", a.id.to_string())
        .attr("parent", a.artist_id.to_string())
        .attr("isDir", true)
        .attr("title", a.title.as_str())
        .attr("name", a.title.as_str())
        .attr("album", a.title.as_str())
        .attr("artist", artist_name)
        .attr("artistId", a.artist_id.to_string())
        .opt("coverArt", a.art.as_ref().map(|x| x.hash.to_hex()))
        .attr("songCount", st.songs)
        .attr("duration", st.duration_s)
        .attr("created", iso(st.created_ms))
        .opt("year", a.year)
        .opt("genre", st.genre.as_deref())
        .attr("mediaType", "album")
        .attr("isCompilation", st.compilation)
        .attr("displayArtist", artist_name)
        .attr("sortName", "");
    let el = with_marks(call, a.id.0, el, false);
    let el = match call.caller {
        Some(_) => el.attr("playCount", plays).opt("played", played.map(iso)),
        None => el,
    };
    el.list(
        "genres",
        st.genre
            .iter()
            .map(|g| El::new("genre").attr("name", g.as_str())),
    )
    .list("artists", artist.map(|x| id_name("artist", x)))
}

/// An artist as an `ArtistID3`.
pub fn artist_el(call: &Call<'_>, a: &ArtistRec) -> El {
    let snap = &call.snap;
    let albums: Vec<&AlbumRec> = snap.artist_albums(a.id).collect();
    let el = El::new("artist")
        .attr("id", a.id.to_string())
        .attr("name", a.name.as_str())
        .attr("albumCount", albums.len())
        .opt(
            "coverArt",
            albums
                .iter()
                .find_map(|al| al.art.as_ref())
                .map(|x| x.hash.to_hex()),
        )
        .attr("mediaType", "artist")
        .attr("sortName", "");
    with_marks(call, a.id.0, el, false)
}

/// The extensions Rondo supports.
pub fn extensions() -> El {
    let ext = |name: &str| {
        El::new("openSubsonicExtensions")
            .attr("name", name)
            .values("versions", [Value::Int(1)])
    };
    // Unnamed: the list sits directly under the envelope.
    El::new("").list(
        "openSubsonicExtensions",
        [ext("formPost"), ext("apiKeyAuthentication")],
    )
}

pub fn music_folders() -> El {
    El::new("musicFolders").list(
        "musicFolder",
        [El::new("musicFolder")
            .attr("id", FOLDER_ID)
            .attr("name", "Music")],
    )
}

/// Checks a `musicFolderId`: only the one folder exists.
fn check_folder(call: &Call<'_>) -> Result<(), Failure> {
    match call.params.num::<i64>("musicFolderId")? {
        None | Some(FOLDER_ID) => Ok(()),
        Some(other) => Err(Failure::not_found(&format!("music folder {other}"))),
    }
}

/// The index letter of an artist's name (articles left out).
fn index_letter(name: &str) -> String {
    let mut rest = name.trim();
    for article in IGNORED_ARTICLES.split(' ') {
        if let Some(r) = rest.strip_prefix(article)
            && r.starts_with(' ')
        {
            rest = r.trim_start();
            break;
        }
    }
    use unicode_script::{Script, UnicodeScript};
    match rest.chars().next() {
        // A Latin letter under its base letter (Ä under A).
        Some(c) if c.is_alphabetic() && c.script() == Script::Latin => {
            match deunicode::deunicode_char(c).and_then(|s| s.chars().next()) {
                Some(base) if base.is_ascii_alphabetic() => base.to_ascii_uppercase().to_string(),
                _ => c.to_uppercase().collect(),
            }
        }
        Some(c) if c.is_alphabetic() => c.to_uppercase().collect(),
        _ => "#".into(),
    }
}

/// The album artists (artists with at least one album), by index letter.
fn by_letter(snap: &Snapshot) -> BTreeMap<String, Vec<&ArtistRec>> {
    let mut letters: BTreeMap<String, Vec<&ArtistRec>> = BTreeMap::new();
    for a in &snap.artists {
        if snap.artist_albums(a.id).next().is_some() {
            letters.entry(index_letter(&a.name)).or_default().push(a);
        }
    }
    letters
}

pub fn indexes(call: &Call<'_>) -> Result<El, Failure> {
    check_folder(call)?;
    let snap = &call.snap;
    // Always the whole index, as of now: deletions leave no date to
    // compare `ifModifiedSince` with, and the answer is small.
    let modified = crate::clock::unix_now_ms();
    let el = El::new("indexes")
        .attr("lastModified", modified)
        .attr("ignoredArticles", IGNORED_ARTICLES);
    Ok(el.list(
        "index",
        by_letter(snap).into_iter().map(|(letter, artists)| {
            El::new("index").attr("name", letter).list(
                "artist",
                artists.into_iter().map(|a| {
                    El::new("artist")
                        .attr("id", a.id.to_string())
                        .attr("name", a.name.as_str())
                }),
            )
        }),
    ))
}

pub fn artists(call: &Call<'_>) -> Result<El, Failure> {
    check_folder(call)?;
    let snap = &call.snap;
    Ok(El::new("artists")
        .attr("ignoredArticles", IGNORED_ARTICLES)
        .list(
            "index",
            by_letter(snap).into_iter().map(|(letter, artists)| {
                El::new("index")
                    .attr("name", letter)
                    .list("artist", artists.into_iter().map(|a| artist_el(call, a)))
            }),
        ))
}

pub fn artist(call: &Call<'_>) -> Result<El, Failure> {
    let id: ArtistId = parse_id(call.params.need("id")?, "artist")?;
    let snap = &call.snap;
    let a = snap
        .artist(id)
        .ok_or_else(|| Failure::not_found(&format!("artist {id}")))?;
    Ok(artist_el(call, a).list("album", snap.artist_albums(id).map(|al| album_el(call, al))))
}

pub fn album(call: &Call<'_>) -> Result<El, Failure> {
    let id: AlbumId = parse_id(call.params.need("id")?, "album")?;
    let snap = &call.snap;
    let a = snap
        .album(id)
        .ok_or_else(|| Failure::not_found(&format!("album {id}")))?;
    Ok(album_el(call, a).list("song", snap.album_songs(id).map(|s| child(call, s))))
}

pub fn song(call: &Call<'_>) -> Result<El, Failure> {
    let id: SongId = parse_id(call.params.need("id")?, "song")?;
    let snap = &call.snap;
    let s = snap
        .song(id)
        .ok_or_else(|| Failure::not_found(&format!("song {id}")))?;
    Ok(child(call, s))
}

/// `getMusicDirectory`: an artist's albums, or an album's songs.
pub fn music_directory(call: &Call<'_>) -> Result<El, Failure> {
    let raw = call.params.need("id")?;
    let snap = &call.snap;
    let id: uuid::Uuid = parse_id(raw, "directory")?;
    if let Some(a) = snap.artist(ArtistId(id)) {
        return Ok(El::new("directory")
            .attr("id", a.id.to_string())
            .attr("parent", FOLDER_ID.to_string())
            .attr("name", a.name.as_str())
            .list(
                "child",
                snap.artist_albums(a.id).map(|al| album_el(call, al)),
            ));
    }
    if let Some(al) = snap.album(AlbumId(id)) {
        return Ok(El::new("directory")
            .attr("id", al.id.to_string())
            .attr("parent", al.artist_id.to_string())
            .attr("name", al.title.as_str())
            .list("child", snap.album_songs(al.id).map(|s| child(call, s))));
    }
    Err(Failure::not_found(&format!("directory {raw}")))
}

/// `getUser`: the caller (or, for an admin, any account).
pub fn user(call: &Call<'_>) -> Result<El, Failure> {
    let caller = call.caller()?;
    let user = match call.params.get("username") {
        Some(name)
            if !rondo_core::names::login_key(name)
                .eq(&rondo_core::names::login_key(&caller.user.name)) =>
        {
            if caller.user.role != rondo_core::session::Role::Admin {
                return Err(Failure::new(
                    super::response::Code::NotAuthorized,
                    "only an admin may see another account",
                ));
            }
            call.snap
                .accounts
                .user_by_name(name)
                .cloned()
                .ok_or_else(|| Failure::not_found(&format!("user {name:?}")))?
        }
        _ => caller.user.clone(),
    };
    let admin = user.role == rondo_core::session::Role::Admin;
    Ok(El::new("user")
        .attr("username", user.name.as_str())
        .attr("scrobblingEnabled", true)
        .attr("adminRole", admin)
        .attr("settingsRole", true)
        .attr("downloadRole", true)
        .attr("uploadRole", admin)
        .attr("playlistRole", true)
        .attr("coverArtRole", admin)
        .attr("commentRole", false)
        .attr("podcastRole", false)
        .attr("streamRole", true)
        .attr("jukeboxRole", false)
        .attr("shareRole", false)
        .attr("videoConversionRole", false)
        .values("folder", [Value::Int(FOLDER_ID)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artists_are_indexed_by_letter_without_articles() {
        assert_eq!(index_letter("The Beatles"), "B");
        assert_eq!(index_letter("Théo"), "T");
        assert_eq!(index_letter("Ärzte"), "A");
        assert_eq!(index_letter("2Pac"), "#");
        assert_eq!(index_letter("Theremin"), "T");
        assert_eq!(index_letter("坂本龍一"), "坂");
    }

    #[test]
    fn suffixes_and_dates() {
        assert_eq!(suffix("audio/ogg; codecs=opus"), "opus");
        assert_eq!(suffix("audio/mpeg"), "mp3");
        assert_eq!(iso(1_678_816_282_123), "2023-03-14T17:51:22Z");
    }
}
