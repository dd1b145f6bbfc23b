//! A listener's own marks through Subsonic: `star`, `unstar`,
//! `getStarred2`, `setRating`, `scrobble`, `getNowPlaying`,
//! `getPlayQueue`, `savePlayQueue`. Stars, ratings and queues are ordered
//! on the ring like playlists; plays are gathered ([`crate::plays`]).

use rondo_core::{AlbumId, ArtistId, SongId};

use super::browse::{album_el, artist_el, child, iso};
use super::response::{El, Failure};
use super::{Call, parse_id};
use crate::cluster::{AccountUpdate, ListeningEdit};

/// How far ahead of the gateway's clock a scrobble's time may be (beyond
/// it, the gateway's clock is used).
const SKEW_MS: u64 = 5 * 60 * 1000;

async fn propose(call: &Call<'_>, edit: ListeningEdit) -> Result<(), Failure> {
    let caller = call.caller()?;
    let update = AccountUpdate::Listening {
        user: caller.user.id,
        at_ms: crate::clock::unix_now_ms(),
        edit,
    };
    call.state
        .cluster
        .propose(update, call.state.sessions.sign(&caller.session))
        .await
        .map_err(Failure::from)
}

/// The items named by `id`, `albumId` and `artistId`, each known.
fn items(call: &Call<'_>) -> Result<Vec<uuid::Uuid>, Failure> {
    let snap = &call.snap;
    let mut out = Vec::new();
    for raw in call.params.all("id") {
        let id: uuid::Uuid = parse_id(raw, "item")?;
        let known = snap.song(SongId(id)).is_some()
            || snap.album(AlbumId(id)).is_some()
            || snap.artist(ArtistId(id)).is_some();
        if !known {
            return Err(Failure::not_found(&format!("song, album or artist {raw}")));
        }
        out.push(id);
    }
    for raw in call.params.all("albumId") {
        let id: AlbumId = parse_id(raw, "album")?;
        snap.album(id)
            .ok_or_else(|| Failure::not_found(&format!("album {raw}")))?;
        out.push(id.0);
    }
    for raw in call.params.all("artistId") {
        let id: ArtistId = parse_id(raw, "artist")?;
        snap.artist(id)
            .ok_or_else(|| Failure::not_found(&format!("artist {raw}")))?;
        out.push(id.0);
    }
    out.dedup();
    if out.len() > 500 {
        return Err(Failure::bad("at most 500 items at once"));
    }
    Ok(out)
}

pub async fn star(call: &Call<'_>, starred: bool) -> Result<(), Failure> {
    let items = items(call)?;
    if items.is_empty() {
        return Err(Failure::missing("id, albumId or artistId"));
    }
    propose(call, ListeningEdit::Stars { items, starred }).await
}

pub fn starred2(call: &Call<'_>) -> Result<El, Failure> {
    let user = call.caller()?.user.id;
    let snap = &call.snap;
    let a = &snap.accounts;
    Ok(El::new("starred2")
        .list(
            "artist",
            a.starred(user, 3)
                .into_iter()
                .filter_map(|id| snap.artist(ArtistId(id)))
                .map(|x| artist_el(call, x)),
        )
        .list(
            "album",
            a.starred(user, 2)
                .into_iter()
                .filter_map(|id| snap.album(AlbumId(id)))
                .map(|x| album_el(call, x)),
        )
        .list(
            "song",
            a.starred(user, 1)
                .into_iter()
                .filter_map(|id| snap.song(SongId(id)))
                .map(|s| child(call, s)),
        ))
}

pub async fn set_rating(call: &Call<'_>) -> Result<(), Failure> {
    let raw = call.params.need("id")?;
    let rating: u32 = call
        .params
        .num("rating")?
        .ok_or_else(|| Failure::missing("rating"))?;
    if rating > 5 {
        return Err(Failure::bad("a rating is 0 (none) to 5"));
    }
    let item: uuid::Uuid = parse_id(raw, "item")?;
    let snap = &call.snap;
    if snap.song(SongId(item)).is_none()
        && snap.album(AlbumId(item)).is_none()
        && snap.artist(ArtistId(item)).is_none()
    {
        return Err(Failure::not_found(&format!("song, album or artist {raw}")));
    }
    propose(call, ListeningEdit::Rating { item, rating }).await
}

/// `scrobble`: a play (counted once it is ordered), or with
/// `submission=false` what the client is playing now.
pub async fn scrobble(call: &Call<'_>) -> Result<(), Failure> {
    let caller = call.caller()?;
    let ids = call.params.all("id");
    if ids.is_empty() {
        return Err(Failure::missing("id"));
    }
    if ids.len() > 500 {
        return Err(Failure::bad("at most 500 plays at once"));
    }
    let times = call.params.all("time");
    let now = crate::clock::unix_now_ms();
    let mut songs = Vec::with_capacity(ids.len());
    for (i, raw) in ids.iter().enumerate() {
        let id: SongId = parse_id(raw, "song")?;
        call.snap
            .song(id)
            .ok_or_else(|| Failure::not_found(&format!("song {raw}")))?;
        let at = match times.get(i) {
            Some(t) => t
                .trim()
                .parse::<u64>()
                .map_err(|_| Failure::bad(format!("time={t:?} is not milliseconds")))?,
            None => now,
        };
        songs.push((id, if at > now + SKEW_MS { now } else { at }));
    }
    if call.params.flag("submission")? == Some(false) {
        let client = call.params.get("c").unwrap_or("");
        if let Some((song, _)) = songs.last() {
            call.state.plays.now_playing(caller.user.id, *song, client);
        }
        return Ok(());
    }
    call.state
        .plays
        .record_many(caller.user.id, &songs)
        .await
        .map_err(Failure::from)
}

pub fn now_playing(call: &Call<'_>) -> Result<El, Failure> {
    let snap = &call.snap;
    Ok(El::new("nowPlaying").list(
        "entry",
        call.state.plays.playing().into_iter().filter_map(|n| {
            let song = snap.song(n.song)?;
            let user = snap.accounts.user(n.user)?;
            Some(
                child(call, song)
                    .attr("username", user.name.as_str())
                    .attr("minutesAgo", n.since.elapsed().as_secs() / 60)
                    .attr("playerId", 0)
                    .attr("playerName", n.client.as_str()),
            )
        }),
    ))
}

/// `getPlayQueue`: the saved queue, or an empty answer without one.
pub fn play_queue(call: &Call<'_>) -> Result<Option<El>, Failure> {
    let caller = call.caller()?;
    let snap = &call.snap;
    let Some(q) = snap.accounts.play_queue(caller.user.id) else {
        return Ok(None);
    };
    Ok(Some(
        El::new("playQueue")
            .opt("current", q.current.map(|c| c.to_string()))
            .attr("position", q.position_ms)
            .attr("username", caller.user.name.as_str())
            .attr("changed", iso(q.changed_ms))
            .attr("changedBy", q.changed_by.as_str())
            .list(
                "entry",
                q.songs
                    .iter()
                    .filter_map(|id| snap.song(*id))
                    .map(|s| child(call, s)),
            ),
    ))
}

/// `savePlayQueue`: no `id` clears the queue.
pub async fn save_play_queue(call: &Call<'_>) -> Result<(), Failure> {
    let ids = call.params.all("id");
    if ids.len() > 5000 {
        return Err(Failure::bad("a play queue holds at most 5000 songs"));
    }
    let songs = ids
        .into_iter()
        .map(|raw| {
            let id: SongId = parse_id(raw, "song")?;
            call.snap
                .song(id)
                .map(|_| id)
                .ok_or_else(|| Failure::not_found(&format!("song {raw}")))
        })
        .collect::<Result<Vec<SongId>, Failure>>()?;
    let current = match call.params.get("current") {
        Some(raw) if !raw.is_empty() => {
            let id: SongId = parse_id(raw, "song")?;
            if !songs.contains(&id) {
                return Err(Failure::bad("current is not one of the queue's songs"));
            }
            Some(id)
        }
        _ if !songs.is_empty() => return Err(Failure::missing("current")),
        _ => None,
    };
    let position_ms = call.params.num("position")?.unwrap_or(0);
    let client: String = call
        .params
        .get("c")
        .unwrap_or("")
        .chars()
        .take(100)
        .collect();
    propose(
        call,
        ListeningEdit::SaveQueue {
            songs,
            current,
            position_ms,
            client,
        },
    )
    .await
}
