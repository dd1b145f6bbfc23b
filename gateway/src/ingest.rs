//! Uploads and deletions: the write path from a GraphQL mutation to a
//! storage node and back into the index.
//!
//! An upload is inspected (format, tags, duration, integrity) and hashed on
//! the gateway, then streamed in chunks to the node chosen by placement, which
//! verifies the hash and commits blob and catalog entry atomically. The
//! mutation answers once the node's change stream has brought the song into
//! the index, so a client reads its own write.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use async_graphql::UploadValue;
use futures::StreamExt;
use rondo_core::{AlbumId, ArtistId, ContentHash, SongId, placement};

use crate::AppState;
use crate::error::{Error, Result};
use crate::index::SongRec;
pub use rondo_media::Overrides;

/// Size of the chunks sent to the node.
const CHUNK: usize = 1024 * 1024;
/// Artist and album ids handed out by this gateway for names the index does
/// not know yet, so that concurrent uploads by a new artist agree on its id.
#[derive(Debug, Default)]
pub struct Names {
    artists: HashMap<String, ArtistId>,
    albums: HashMap<(ArtistId, String), AlbumId>,
}

fn hash_file(file: &mut std::fs::File) -> Result<ContentHash> {
    file.seek(SeekFrom::Start(0))
        .map_err(Error::io("rewind upload"))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(Error::io("read upload"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    file.seek(SeekFrom::Start(0))
        .map_err(Error::io("rewind upload"))?;
    Ok(hasher.finalize().into())
}

/// The answer to an upload: the song as indexed, and whether the bytes
/// were already that song (nothing was added).
#[derive(Debug)]
pub struct Uploaded {
    pub song: Arc<SongRec>,
    pub duplicate: bool,
}

/// Stores an uploaded file as a song and returns it as indexed; a file
/// that is already a song is answered with that song. The index answers
/// at once for a song it has; the ring decides for two uploads of one file
/// at once (the first ordered is the song, the other is told so).
pub async fn upload(
    state: &Arc<AppState>,
    upload: UploadValue,
    overrides: Overrides,
) -> Result<Uploaded> {
    let overrides = overrides.checked()?;
    let limit = state.config.max_upload_bytes;
    let mut file = upload.content;
    let size = file.metadata().map_err(Error::io("stat upload"))?.len();
    if size > limit {
        return Err(Error::PayloadTooLarge { limit });
    }
    let (file, info, hash) = tokio::task::spawn_blocking(move || -> Result<_> {
        let info = rondo_media::inspect(&mut file)?;
        let hash = hash_file(&mut file)?;
        Ok((file, info, hash))
    })
    .await??;
    if let Some(song) = state.cluster.snapshot().song_with_hash(&hash) {
        tracing::info!(song = %song.id, %hash, "upload is already a song");
        return Ok(Uploaded {
            song: song.clone(),
            duplicate: true,
        });
    }

    let rondo_media::Names {
        title,
        artist: artist_name,
        album: album_title,
        album_artist,
    } = rondo_media::names(&info.tags, overrides, Some(&upload.filename));

    // Matched names take the spelling already in the catalog; the album is
    // the album artist's when there is one.
    let filing = {
        let snap = state.cluster.snapshot();
        let mut names = state.names.lock().await;
        let mut artist = |name: String| match snap.artist_named(&name) {
            Some(a) => (a.id, a.name.clone()),
            None => (
                *names
                    .artists
                    .entry(rondo_core::names::fold(&name))
                    .or_insert_with(ArtistId::new_random),
                name,
            ),
        };
        let track_artist = artist(artist_name);
        let album_artist = album_artist.map(&mut artist);
        let owner = album_artist.as_ref().unwrap_or(&track_artist).0;
        let album = match snap.album_named(owner, &album_title) {
            Some(a) => (a.id, a.title.clone()),
            None => (
                *names
                    .albums
                    .entry((owner, rondo_core::names::fold(&album_title)))
                    .or_insert_with(AlbumId::new_random),
                album_title,
            ),
        };
        rondo_media::Filing {
            artist: track_artist,
            album,
            album_artist,
        }
    };

    let live = state.cluster.write_targets();
    let target = placement::place(&hash, &live, 1)
        .into_iter()
        .next()
        .ok_or_else(|| Error::Unavailable("no storage node is up".into()))?;
    let song_id = SongId::new_random();
    let song = rondo_media::song_record(song_id, title, filing, info);
    // A read error ends the stream without `finish`, which the node refuses.
    let chunks = file_chunks(file)
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| std::future::ready(r.ok()));
    let reply = state
        .cluster
        .upload_song(target, song, hash, chunks)
        .await?;
    if reply.duplicate {
        let existing: SongId = reply
            .song
            .map(|s| s.id)
            .unwrap_or_default()
            .parse()
            .map_err(|_| Error::Unavailable("a node named no song for a duplicate".into()))?;
        tracing::info!(song = %existing, node = %target, %hash, "upload ordered after the same bytes: already a song");
        return Ok(Uploaded {
            song: state.cluster.wait_song(existing).await?,
            duplicate: true,
        });
    }
    state.metrics.uploads.inc();
    tracing::info!(song = %song_id, node = %target, %hash, bytes = size, "uploaded song");
    state.cluster.wait_applied(target, reply.seq).await?;
    let song = state
        .cluster
        .snapshot()
        .song(song_id)
        .cloned()
        .ok_or_else(|| {
            Error::Unavailable(format!("song {song_id} was stored but is not indexed yet"))
        })?;
    Ok(Uploaded {
        song,
        duplicate: false,
    })
}

/// A signed direct upload: the client sends the file with `PUT url` to the
/// node it names, before `expires_at` (Unix seconds), at most `max_bytes`.
#[derive(Debug)]
pub struct Grant {
    pub song: SongId,
    pub url: String,
    pub expires_at: u64,
    pub max_bytes: u64,
}

/// Authorises one direct upload (see `rondo-node`'s `upload.rs`): checks
/// what can be checked before the bytes exist (names, declared size), picks
/// a node that can take writes, in turn, and signs a grant for it with a new
/// song id.
pub fn grant(
    state: &Arc<AppState>,
    size: Option<u64>,
    file_name: Option<String>,
    overrides: Overrides,
) -> Result<Grant> {
    let overrides = overrides.checked()?;
    let limit = state.config.max_upload_bytes;
    let max_bytes = match size {
        None => limit,
        Some(n) if n > limit => return Err(Error::PayloadTooLarge { limit }),
        Some(n) => n,
    };
    let name = match file_name.map(|n| n.trim().to_string()) {
        Some(n) if n.chars().count() > rondo_media::MAX_NAME => {
            return Err(Error::BadUserInput(format!(
                "fileName must be at most {} characters",
                rondo_media::MAX_NAME
            )));
        }
        Some(n) if !n.is_empty() => Some(n),
        _ => None,
    };
    let live = state.cluster.write_targets();
    if live.is_empty() {
        return Err(Error::Unavailable("no storage node is up".into()));
    }
    let turn = state
        .upload_turn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let target = live[turn % live.len()];
    let node = state.cluster.known_node(target)?;
    let base = node.info().stream_base_url;
    let song = SongId::new_random();
    let expires_at = crate::clock::unix_now() + state.config.upload_url_ttl_secs;
    let mut grant = rondo_core::signing::UploadGrant {
        exp: expires_at,
        max: max_bytes,
        name,
        title: overrides.title,
        artist: overrides.artist,
        album: overrides.album,
        sig: String::new(),
    };
    state.signer.sign_upload(song, target, &mut grant);
    let query = serde_urlencoded::to_string(&grant)
        .map_err(|e| Error::BadUserInput(format!("cannot encode the upload grant: {e}")))?;
    tracing::info!(%song, node = %target, max_bytes, "granted a direct upload");
    Ok(Grant {
        song,
        url: format!("{base}/upload/{song}?{query}"),
        expires_at,
        max_bytes,
    })
}

/// Reads a file as a stream of chunks.
fn file_chunks(file: std::fs::File) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let result = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, file))
        })
        .await;
        match result {
            Ok(Ok((buf, _))) if buf.is_empty() => None,
            Ok(Ok((buf, file))) => Some((Ok(buf), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    })
}

/// Largest album image an admin may upload (a gRPC message carries it to
/// a node whole).
pub const MAX_ALBUM_IMAGE_BYTES: usize = 6 * 1024 * 1024;

/// Sets (or, with `None`, removes) an album's own image: checked here
/// (a picture Rondo keeps, within [`MAX_ALBUM_IMAGE_BYTES`]), then stored
/// by a node holding one of the album's songs and ordered on the ring.
pub async fn set_album_art(
    state: &Arc<AppState>,
    album: AlbumId,
    image: Option<Vec<u8>>,
    session: String,
) -> Result<()> {
    let snap = state.cluster.snapshot();
    if snap.album(album).is_none() {
        return Err(Error::NotFound {
            kind: "album",
            id: album.to_string(),
        });
    }
    let holders: Vec<rondo_core::NodeId> = snap
        .album_songs(album)
        .flat_map(|s| s.replicas.iter().copied())
        .collect();
    let image = match image {
        None => Vec::new(),
        Some(bytes) if bytes.len() > MAX_ALBUM_IMAGE_BYTES => {
            return Err(Error::PayloadTooLarge {
                limit: MAX_ALBUM_IMAGE_BYTES as u64,
            });
        }
        Some(bytes) => {
            let checked =
                tokio::task::spawn_blocking(move || rondo_media::art::check_picture(bytes))
                    .await
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
            checked
                .map_err(|e| Error::UnsupportedMedia(e.to_string()))?
                .data
        }
    };
    state
        .cluster
        .set_album_art(holders, album, image, session)
        .await?;
    tracing::info!(%album, "album image changed");
    Ok(())
}

/// Deletes a song from every node that holds it, with the admin authority
/// `session` (a signed session token, checked by the node).
pub async fn delete(state: &Arc<AppState>, id: SongId, session: String) -> Result<()> {
    let song = state
        .cluster
        .snapshot()
        .song(id)
        .cloned()
        .ok_or(Error::NotFound {
            kind: "song",
            id: id.to_string(),
        })?;
    // The delete is ordered by the storage nodes' ring: one live node is
    // enough, and every node applies it.
    state
        .cluster
        .delete_song(song.replicas.iter().copied(), id, session)
        .await?;
    tracing::info!(song = %id, "deleted song");
    Ok(())
}
