//! Songs into the catalog: the one commit path of every upload, and the
//! direct upload endpoint `PUT /upload/{song_id}?{grant}`.
//!
//! A direct upload is how bulk clients (`rondo upload`) send audio: the
//! gateway authorises it (`createUpload`) and signs a short-lived grant for
//! one node, and the bytes go from the client to that node once, hashed and
//! written in one pass, instead of through the gateway. The node checks the
//! grant before it reads a byte, then the audio (the gateway's checks, from
//! `rondo-media`), and commits the song like any other: bytes on W owners,
//! then one ring entry. Every refusal leaves nothing behind: the staged file
//! is removed when its handle drops, whatever the exit.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rondo_core::signing::UploadGrant;
use rondo_core::{AlbumId, ArtistId, ContentHash, ErrorCode, SongId};
use rondo_proto::storage::v1 as pb;
use serde_json::json;

use crate::error::Error;
use crate::state::NodeState;
use crate::store::{Applied, StagedBlob};

/// What committing an upload did.
#[derive(Debug)]
pub enum Committed {
    /// A new song, as applied (filed under the artist and album of its
    /// names), at `seq` on this node's change stream.
    New { song: Box<pb::Song>, seq: u64 },
    /// The bytes are already this song's: nothing was added.
    Duplicate { song: Box<pb::Song> },
}

/// Puts a received, fsync'd blob in place, copies it onto `W` of its owners
/// and commits the song through the ring. If a new placement was ordered
/// between the copy and the entry (`StalePlacement`), the bytes are copied
/// to the new owners and the song proposed again, within the write
/// timeout. Bytes that are already a song's are that song, as the ring
/// orders it: when this node's catalog has them the song is proposed
/// without copying them first (as that duplicate only; copied and proposed
/// again if a delete was ordered first). On any failure the blob is
/// released unless a song uses it.
pub async fn commit_song(
    state: &Arc<NodeState>,
    mut song: pb::Song,
    staged: StagedBlob,
    picture: Option<rondo_media::Picture>,
) -> Result<Committed, Error> {
    // Only a picture this node found in the bytes is the song's.
    song.art = None;
    song.size_bytes = staged.size;
    song.content_hash = staged.hash.to_hex();
    song.created_at_ms = i64::try_from(crate::clock::unix_now_ms()).unwrap_or(i64::MAX);
    let hash = staged.hash;
    let st = state.clone();
    // Bytes this node's catalog has as a song are proposed without being
    // copied, as that duplicate only: the ring's order says whether the
    // song still has them (a delete may be ordered first).
    let mut maybe_duplicate = tokio::task::spawn_blocking(move || st.store.song_with_hash(&hash))
        .await??
        .is_some();
    // The staged file is put in place only for a new song (kept aside
    // meanwhile: a delete ordered first may remove the blob it would have
    // joined).
    let mut staged = Some(staged);
    let mut picture = picture;
    let mut placed = false;
    // While this upload may still need them, its blobs are pinned: another
    // upload of the same bytes (an album's tracks share a picture) that
    // fails meanwhile does not release them from under it.
    let audio_pin = state.store.pin(hash);
    let mut art_pin: Option<crate::store::BlobPin> = None;
    let release = |pins: Vec<crate::store::BlobPin>| async move {
        let _ = tokio::task::spawn_blocking(move || {
            pins.into_iter()
                .try_for_each(crate::store::BlobPin::release)
        })
        .await;
        state.outbox.notify_one();
    };
    let deadline = tokio::time::Instant::now() + state.ring.write_timeout();
    let outcome = loop {
        if !maybe_duplicate && let Some(staged) = staged.take() {
            let st = state.clone();
            tokio::task::spawn_blocking(move || st.store.put_blob(staged)).await??;
            placed = true;
            if let Some(p) = picture.take() {
                match put_picture(state, p).await {
                    Ok((a, pin)) => {
                        art_pin = Some(pin);
                        song.art = Some(a);
                    }
                    // A picture that cannot be kept leaves the song without art.
                    Err(e) => tracing::warn!(%hash, error = %e, "the song's picture was not kept"),
                }
            }
        }
        // A new song is proposed only once its bytes (and its picture's)
        // are on W owners, under one placement.
        let epoch = if maybe_duplicate {
            0
        } else {
            match copy_to_owners(state, hash, art_pin.as_ref().map(|p| p.hash())).await {
                Ok(epoch) => epoch,
                Err(e) => break Err(e),
            }
        };
        let update = pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::Upsert(song.clone())),
            placement_epoch: epoch,
            only_if_duplicate: maybe_duplicate,
            ..Default::default()
        };
        match state.ring.propose(update).await {
            Ok(Applied::Rejected(Error::StalePlacement { copied, applied }))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::info!(%hash, copied, applied, "placement changed under an upload: copying again");
            }
            Ok(Applied::Rejected(Error::NotDuplicate))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::info!(%hash, "the song with these bytes was deleted: storing them anew");
                maybe_duplicate = false;
            }
            other => break other,
        }
    };
    match outcome {
        Ok(Applied::Stored {
            song,
            change_seq: Some(seq),
        }) => {
            state.metrics.uploads.inc();
            state.refresh_gauges();
            tracing::info!(song = %song.id, hash = %song.content_hash, bytes = song.size_bytes, seq, "stored song");
            Ok(Committed::New { song, seq })
        }
        Ok(Applied::Duplicate { song }) => {
            // The first song's blob stays: only a copy no song uses goes.
            if placed {
                release([Some(audio_pin), art_pin].into_iter().flatten().collect()).await;
            }
            tracing::info!(song = %song.id, %hash, "upload ordered after the same bytes: already a song");
            Ok(Committed::Duplicate { song })
        }
        other => {
            // Refused or not ordered: the blob goes unless a song uses it.
            if placed {
                release([Some(audio_pin), art_pin].into_iter().flatten().collect()).await;
            }
            Err(match other {
                Ok(Applied::Rejected(e)) | Err(e) => e,
                Ok(applied) => Error::Unavailable(format!("unexpected outcome {applied:?}")),
            })
        }
    }
}

/// Copies a song's bytes, and its picture's, onto W of their owners;
/// the placement epoch both copies were made under (made again if a new
/// placement came between them).
async fn copy_to_owners(
    state: &Arc<NodeState>,
    hash: ContentHash,
    art: Option<ContentHash>,
) -> Result<u64, Error> {
    use crate::replication::quorum::replicate_to_owners;
    loop {
        let epoch = replicate_to_owners(state, hash).await?;
        let Some(art) = art else { return Ok(epoch) };
        if replicate_to_owners(state, art).await? == epoch {
            return Ok(epoch);
        }
    }
}

/// Stores a picture as a blob of this node (content-addressed: one kept
/// already is not stored again) and describes it for a record; pinned
/// until the caller lets it go (released, if no record took it, or
/// dropped).
pub async fn put_picture(
    state: &Arc<NodeState>,
    picture: rondo_media::Picture,
) -> Result<(pb::Art, crate::store::BlobPin), Error> {
    let hash = ContentHash::of(&picture.data);
    let pin = state.store.pin(hash);
    let mut staging = state.store.stage(picture.data.len() as u64).await?;
    staging.write(&picture.data).await?;
    let staged = staging.seal().await?;
    let art = pb::Art {
        hash: staged.hash.to_hex(),
        size: staged.size,
        mime: picture.mime.to_string(),
        width: picture.width,
        height: picture.height,
    };
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.store.put_blob(staged)).await??;
    Ok((art, pin))
}

/// Sets (or, with no bytes, removes) an album's own image for an admin:
/// the picture checked, stored here and copied onto W of its owners, then
/// the change ordered (copied again if a new placement came first).
/// Returns the album and the change's seq on this node's stream; a picture
/// the ring refused is released.
pub async fn set_album_art(
    state: &Arc<NodeState>,
    album: AlbumId,
    image: Vec<u8>,
    authority: pb::Authority,
) -> Result<(pb::Album, u64), Error> {
    let (art, pin) = if image.is_empty() {
        (None, None)
    } else {
        let picture = tokio::task::spawn_blocking(move || rondo_media::art::check_picture(image))
            .await?
            .map_err(|e| Error::Media(e.to_string()))?;
        let (art, pin) = put_picture(state, picture).await?;
        (Some(art), Some(pin))
    };
    let hash: Option<ContentHash> = pin.as_ref().map(crate::store::BlobPin::hash);
    let deadline = tokio::time::Instant::now() + state.ring.write_timeout();
    let outcome = loop {
        let epoch = match hash {
            Some(h) => match crate::replication::quorum::replicate_to_owners(state, h).await {
                Ok(epoch) => epoch,
                Err(e) => break Err(e),
            },
            None => 0,
        };
        let update = pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::AlbumArt(pb::AlbumArt {
                album_id: album.to_string(),
                art: art.clone(),
            })),
            authority: Some(authority.clone()),
            placement_epoch: epoch,
            ..Default::default()
        };
        match state.ring.propose(update).await {
            Ok(Applied::Rejected(Error::StalePlacement { .. }))
                if tokio::time::Instant::now() < deadline => {}
            other => break other,
        }
    };
    match outcome {
        Ok(Applied::AlbumChanged { album, change_seq }) => Ok((*album, change_seq)),
        other => {
            if let Some(pin) = pin {
                let _ = tokio::task::spawn_blocking(move || pin.release()).await;
                state.outbox.notify_one();
            }
            Err(match other {
                Ok(Applied::Rejected(e)) | Err(e) => e,
                Ok(applied) => Error::Unavailable(format!("unexpected outcome {applied:?}")),
            })
        }
    }
}

/// A refusal as the client sees it: an HTTP status and a JSON body
/// `{"error": {"code", "message"}}` with the codes of the GraphQL API.
fn refuse(code: ErrorCode, message: impl std::fmt::Display) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({ "error": { "code": code.as_str(), "message": message.to_string() } })),
    )
        .into_response()
}

fn refuse_error(e: &Error) -> Response {
    let code = match e {
        Error::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        Error::SongExists(_) | Error::SongDeleted(_) => ErrorCode::Conflict,
        Error::Unavailable(_) | Error::StalePlacement { .. } | Error::NotDuplicate => {
            ErrorCode::Unavailable
        }
        Error::Invalid { .. } | Error::Domain(_) | Error::HashMismatch { .. } => {
            ErrorCode::BadUserInput
        }
        Error::Media(_) => ErrorCode::UnsupportedMedia,
        _ => {
            tracing::error!(error = %e, "upload failed");
            ErrorCode::InternalServerError
        }
    };
    refuse(code, e)
}

/// The song as the upload's answer (the GraphQL field names).
pub fn song_json(song: &pb::Song) -> serde_json::Value {
    let artist = song.artist.clone().unwrap_or_default();
    let album = song.album.clone().unwrap_or_default();
    json!({
        "id": song.id,
        "title": song.title,
        "artist": { "id": artist.id, "name": artist.name },
        "album": { "id": album.id, "title": album.title },
        "trackNumber": song.track_number,
        "year": song.year,
        "genre": song.genre,
        "durationMs": song.duration_ms,
        "mimeType": song.mime_type,
        // A 64-bit count, as the API's UnsignedInt64: a string.
        "sizeBytes": song.size_bytes.to_string(),
        "contentHash": song.content_hash,
    })
}

/// `PUT /upload/{song_id}?{grant}`: the body is the audio file.
/// How long after its grant's expiry an upload may still be sending.
pub const UPLOAD_GRACE_SECS: u64 = 10;

pub async fn put(
    State(state): State<Arc<NodeState>>,
    Path(song_id): Path<String>,
    query: Result<Query<UploadGrant>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = receive(&state, &song_id, query.ok().map(|q| q.0), &headers, body).await;
    state
        .metrics
        .upload_responses
        .get_or_create(&crate::metrics::StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn receive(
    state: &Arc<NodeState>,
    song_id: &str,
    grant: Option<UploadGrant>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    // The grant first: nothing is read or looked up for a request without one.
    let forbidden = |why: &str| refuse(ErrorCode::Forbidden, why);
    let (Some(grant), Ok(song)) = (grant, song_id.parse::<SongId>()) else {
        return forbidden("bad upload grant");
    };
    let now = crate::clock::unix_now();
    if let Err(e) = state.signer.verify_upload(song, state.node_id, &grant, now) {
        tracing::debug!(%song, error = %e, "refused upload");
        return forbidden(match e {
            rondo_core::Error::Expired { .. } => "upload grant expired",
            _ => "bad upload grant",
        });
    }
    let overrides = rondo_media::Overrides {
        title: grant.title.clone(),
        artist: grant.artist.clone(),
        album: grant.album.clone(),
    };
    let overrides = match overrides.checked() {
        Ok(o) => o,
        Err(e) => return refuse(ErrorCode::BadUserInput, e),
    };
    let limit = grant.max.min(state.config.max_upload_bytes);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return refuse_error(&Error::TooLarge { limit });
    }
    let st = state.clone();
    match tokio::task::spawn_blocking(move || {
        Ok::<_, Error>((st.store.song(song)?, st.store.song_deleted(song)?))
    })
    .await
    {
        Ok(Ok((None, false))) => {}
        Ok(Ok((Some(_), _))) => return refuse_error(&Error::SongExists(song)),
        Ok(Ok((None, true))) => return refuse_error(&Error::SongDeleted(song)),
        Ok(Err(e)) => return refuse_error(&e),
        Err(e) => return refuse_error(&Error::Join(e)),
    }

    let mut staging = match state.store.stage(limit).await {
        Ok(s) => s,
        Err(e) => return refuse_error(&e),
    };
    // The grant holds until the last byte: the body must be in by its
    // expiry plus a grace (a grant cannot keep a slow upload open for
    // ever; a stalled one is also cut by the router's body timeout).
    let left = grant
        .exp
        .saturating_add(UPLOAD_GRACE_SECS)
        .saturating_sub(now);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(left);
    let mut chunks = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, chunks.next()).await {
            Err(_) => {
                return refuse(
                    ErrorCode::RequestTimeout,
                    "the upload grant expired before the last byte",
                );
            }
            Ok(None) => break,
            Ok(Some(Ok(c))) => c,
            Ok(Some(Err(e))) => {
                return refuse(ErrorCode::BadUserInput, format!("reading the body: {e}"));
            }
        };
        if let Err(e) = staging.write(&chunk).await {
            return refuse_error(&e);
        }
    }
    let staged = match staging.seal().await {
        Ok(s) => s,
        Err(e) => return refuse_error(&e),
    };
    let info = match inspect(&staged).await {
        Ok(info) => info,
        Err(refused) => return *refused,
    };
    let names = rondo_media::names(&info.tags, overrides, grant.name.as_deref());
    // Fresh ids: the names decide when the song is applied.
    let filing = rondo_media::Filing {
        artist: (ArtistId::new_random(), names.artist),
        album: (AlbumId::new_random(), names.album),
        album_artist: names.album_artist.map(|a| (ArtistId::new_random(), a)),
    };
    let mut info = info;
    let picture = info.picture.take();
    let song = rondo_media::song_record(song, names.title, filing, info);
    match commit_song(state, song, staged, picture).await {
        Ok(Committed::New { song, seq }) => (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({ "song": song_json(&song), "seq": seq, "duplicate": false })),
        )
            .into_response(),
        // Nothing was created: the answer names the song these bytes are.
        Ok(Committed::Duplicate { song }) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({ "song": song_json(&song), "duplicate": true })),
        )
            .into_response(),
        Err(e) => refuse_error(&e),
    }
}

/// The media check of a staged direct upload (the gateway's, from
/// `rondo-media`): what the file is, or the refusal to answer.
async fn inspect(staged: &StagedBlob) -> Result<rondo_media::MediaInfo, Box<Response>> {
    let path = staged.path().to_path_buf();
    let inspected = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        Ok::<_, std::io::Error>(rondo_media::inspect(&mut file))
    })
    .await;
    let refused = match inspected {
        Ok(Ok(Ok(info))) => return Ok(info),
        Ok(Ok(Err(rondo_media::Error::Unsupported(m)))) => refuse(
            ErrorCode::UnsupportedMedia,
            format!("unsupported media: {m}"),
        ),
        Ok(Ok(Err(rondo_media::Error::Io { context, source }))) => {
            let context = context.to_string();
            refuse_error(&Error::Io { context, source })
        }
        Ok(Ok(Err(e @ rondo_media::Error::BadName(_)))) => refuse(ErrorCode::BadUserInput, e),
        Ok(Err(e)) => refuse_error(&Error::io("open staged upload")(e)),
        Err(e) => refuse_error(&Error::Join(e)),
    };
    Err(Box::new(refused))
}
