//! `stream`, `download` and `getCoverArt`: redirects to signed URLs on the
//! storage nodes, so audio and pictures never pass through a gateway.
//!
//! Rondo keeps one rendition of each song (no transcoding yet): `stream`
//! and `download` both lead to the original bytes, whatever `format` or
//! `maxBitRate` ask; the node answers range requests (`Range` is sent
//! again on the redirected request). Neither counts as a play: clients
//! call `scrobble`.

use rondo_core::{AlbumId, ArtistId, SongId};

use super::response::{Code, Failure};
use super::{Call, Reply, parse_id};
use crate::index::ArtRec;

/// The largest picture side a client may ask for.
pub const MAX_ART_SIZE: u32 = 4096;

pub fn stream(call: &Call<'_>) -> Result<Reply, Failure> {
    let id: SongId = parse_id(call.params.need("id")?, "song")?;
    let song = call
        .snap
        .song(id)
        .ok_or_else(|| Failure::not_found(&format!("song {id}")))?;
    let url = call.state.stream_url(song).ok_or_else(|| {
        Failure::new(
            Code::Generic,
            "no live storage node holds this song right now; try again shortly",
        )
    })?;
    Ok(Reply::Redirect(url))
}

/// The picture a `coverArt` id names: a picture's hash (what Rondo's
/// `coverArt` attributes carry), or a song, album or artist id (what
/// older clients send).
fn art_of<'a>(call: &'a Call<'_>, id: &str) -> Option<&'a ArtRec> {
    let snap = &call.snap;
    if let Ok(hash) = id.parse::<rondo_core::ContentHash>() {
        return snap.art(&hash);
    }
    let uuid: uuid::Uuid = id.trim().parse().ok()?;
    if let Some(s) = snap.song(SongId(uuid)) {
        return super::browse::song_art(snap, s);
    }
    if let Some(a) = snap.album(AlbumId(uuid)) {
        return a.art.as_ref();
    }
    snap.artist_albums(ArtistId(uuid))
        .find_map(|a| a.art.as_ref())
}

pub fn cover_art(call: &Call<'_>) -> Result<Reply, Failure> {
    let id = call.params.need("id")?;
    let size: u32 = call.params.num("size")?.unwrap_or(0);
    if size > MAX_ART_SIZE {
        return Err(Failure::bad(format!(
            "size {size} is over {MAX_ART_SIZE} pixels"
        )));
    }
    let art = art_of(call, id).ok_or_else(|| Failure::not_found(&format!("cover art {id:?}")))?;
    let url = call.state.art_url(art, size).ok_or_else(|| {
        Failure::new(
            Code::Generic,
            "no live storage node right now; try again shortly",
        )
    })?;
    Ok(Reply::Redirect(url))
}
