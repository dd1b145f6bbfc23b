//! Playlists: the account's own, edited through the ring like the web
//! app's (the nodes check owner and songs again in the total order).

use rondo_core::session::Role;
use rondo_core::{PlaylistId, SongId};

use super::browse::{child, iso, song_art};
use super::response::{Code, El, Failure};
use super::{Call, parse_id};
use crate::accounts::PlaylistRec;
use crate::cluster::{AccountUpdate, PlaylistEdit};

/// The most songs one request adds (a node keeps at most 10,000 in a
/// playlist).
pub const MAX_ADD: usize = 10_000;
/// The longest playlist name (the nodes' limit).
const MAX_NAME: usize = 100;

fn playlist_el(call: &Call<'_>, p: &PlaylistRec) -> El {
    let snap = &call.snap;
    let songs: Vec<_> = p.songs.iter().filter_map(|id| snap.song(*id)).collect();
    let owner = snap
        .accounts
        .user(p.owner)
        .map_or(String::new(), |u| u.name.clone());
    let mine = call.caller.is_some_and(|c| c.user.id == p.owner);
    El::new("playlist")
        .attr("id", p.id.to_string())
        .attr("name", p.name.as_str())
        .attr("comment", "")
        .attr("owner", owner)
        .attr("public", false)
        .attr("songCount", songs.len())
        .attr(
            "duration",
            songs.iter().map(|s| s.duration_ms / 1000).sum::<u64>(),
        )
        .attr("created", iso(p.created_at_ms))
        .attr("changed", iso(p.updated_at_ms))
        .opt(
            "coverArt",
            songs
                .iter()
                .find_map(|s| song_art(snap, s))
                .map(|a| a.hash.to_hex()),
        )
        .attr("readonly", !mine)
}

/// The playlist `id` if the caller may see it (its owner, or an admin).
fn visible<'a>(call: &'a Call<'_>, raw: &str) -> Result<&'a PlaylistRec, Failure> {
    let caller = call.caller()?;
    let id: PlaylistId = parse_id(raw, "playlist")?;
    match call.snap.accounts.playlist(id) {
        Some(p) if p.owner == caller.user.id || caller.user.role == Role::Admin => Ok(p),
        _ => Err(Failure::not_found(&format!("playlist {raw}"))),
    }
}

pub fn list(call: &Call<'_>) -> Result<El, Failure> {
    let caller = call.caller()?;
    let owner = match call.params.get("username") {
        Some(name)
            if rondo_core::names::login_key(name)
                != rondo_core::names::login_key(&caller.user.name) =>
        {
            if caller.user.role != Role::Admin {
                return Err(Failure::new(
                    Code::NotAuthorized,
                    "only an admin may list another account's playlists",
                ));
            }
            call.snap
                .accounts
                .user_by_name(name)
                .ok_or_else(|| Failure::not_found(&format!("user {name:?}")))?
                .id
        }
        _ => caller.user.id,
    };
    Ok(El::new("playlists").list(
        "playlist",
        call.snap
            .accounts
            .playlists_of(owner)
            .into_iter()
            .map(|p| playlist_el(call, p)),
    ))
}

pub fn get(call: &Call<'_>) -> Result<El, Failure> {
    let p = visible(call, call.params.need("id")?)?;
    get_by_id(call, p.id)
}

/// Song ids of `key`, each known.
fn songs(call: &Call<'_>, key: &str) -> Result<Vec<SongId>, Failure> {
    let ids = call.params.all(key);
    if ids.len() > MAX_ADD {
        return Err(Failure::bad(format!("at most {MAX_ADD} songs at once")));
    }
    ids.into_iter()
        .map(|raw| {
            let id: SongId = parse_id(raw, "song")?;
            match call.snap.song(id) {
                Some(_) => Ok(id),
                None => Err(Failure::not_found(&format!("song {raw}"))),
            }
        })
        .collect()
}

async fn edit(call: &Call<'_>, playlist: PlaylistId, edit: PlaylistEdit) -> Result<(), Failure> {
    let caller = call.caller()?;
    let update = AccountUpdate::Playlist {
        playlist,
        actor: caller.user.id,
        at_ms: crate::clock::unix_now_ms(),
        edit,
    };
    let session = call.state.sessions.sign(&caller.session);
    call.state
        .cluster
        .propose(update, session)
        .await
        .map_err(Failure::from)
}

/// Appends songs to a playlist.
async fn append(call: &Call<'_>, id: PlaylistId, songs: Vec<SongId>) -> Result<(), Failure> {
    edit(
        call,
        id,
        PlaylistEdit::AddSongs {
            songs,
            position: None,
        },
    )
    .await
}

fn check_name(name: &str) -> Result<String, Failure> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(Failure::bad(format!(
            "a playlist's name is 1 to {MAX_NAME} characters"
        )));
    }
    Ok(name.to_string())
}

/// `createPlaylist`: a new playlist (`name`), or (`playlistId`) an
/// existing one's songs replaced; answers the playlist. Everything is
/// checked before anything is ordered; a replacement adds the new songs
/// before it removes the old ones, so a failure halfway loses none.
pub async fn create(call: &Call<'_>) -> Result<El, Failure> {
    let songs = songs(call, "songId")?;
    let name = call.params.get("name").map(check_name).transpose()?;
    let id = match call.params.get("playlistId") {
        Some(raw) => {
            let p = visible(call, raw)?;
            let (id, old) = (p.id, p.songs.len());
            if old + songs.len() > MAX_ADD {
                return Err(Failure::bad(format!(
                    "a playlist holds at most {MAX_ADD} songs"
                )));
            }
            if let Some(name) = name {
                edit(call, id, PlaylistEdit::Rename(name)).await?;
            }
            if !songs.is_empty() {
                append(call, id, songs).await?;
            }
            if old > 0 {
                let all = (0..u32::try_from(old).unwrap_or(u32::MAX)).collect();
                edit(call, id, PlaylistEdit::RemoveSongs(all)).await?;
            }
            id
        }
        None => {
            let name = name.ok_or_else(|| Failure::missing("name or playlistId"))?;
            let id = PlaylistId(uuid::Uuid::new_v4());
            edit(call, id, PlaylistEdit::Create(name)).await?;
            if !songs.is_empty() {
                append(call, id, songs).await?;
            }
            id
        }
    };
    let fresh = Call {
        state: call.state,
        snap: call.state.cluster.snapshot(),
        caller: call.caller,
        params: call.params,
    };
    get_by_id(&fresh, id)
}

fn get_by_id(call: &Call<'_>, id: PlaylistId) -> Result<El, Failure> {
    let p = call
        .snap
        .accounts
        .playlist(id)
        .ok_or_else(|| Failure::not_found(&format!("playlist {id}")))?;
    let snap = &call.snap;
    Ok(playlist_el(call, p).list(
        "entry",
        p.songs
            .iter()
            .filter_map(|id| snap.song(*id))
            .map(|s| child(call, s)),
    ))
}

/// `updatePlaylist`: rename, remove songs by index (0-based), add songs.
/// `comment` and `public` are not kept (playlists are private).
pub async fn update(call: &Call<'_>) -> Result<(), Failure> {
    let p = visible(call, call.params.need("playlistId")?)?;
    let id = p.id;
    let add = songs(call, "songIdToAdd")?;
    let remove = call
        .params
        .all("songIndexToRemove")
        .into_iter()
        .map(|i| {
            i.trim()
                .parse::<u32>()
                .ok()
                .filter(|&i| (i as usize) < p.songs.len())
                .ok_or_else(|| {
                    Failure::bad(format!("songIndexToRemove={i:?} is not in the playlist"))
                })
        })
        .collect::<Result<Vec<u32>, Failure>>()?;
    if let Some(name) = call.params.get("name") {
        edit(call, id, PlaylistEdit::Rename(check_name(name)?)).await?;
    }
    if !remove.is_empty() {
        edit(call, id, PlaylistEdit::RemoveSongs(remove)).await?;
    }
    if !add.is_empty() {
        append(call, id, add).await?;
    }
    Ok(())
}

pub async fn delete(call: &Call<'_>) -> Result<(), Failure> {
    let p = visible(call, call.params.need("id")?)?;
    edit(call, p.id, PlaylistEdit::Delete).await
}
