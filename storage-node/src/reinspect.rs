//! Re-inspection: songs whose records an older media inspection made
//! (`Song.inspected` below `rondo_media::INSPECTION`, e.g. every song of a
//! store written before album artists and audio properties were read) are
//! read again from their bytes, and the new reading is ordered on the ring
//! (`CatalogUpdate.reinspected`), so that every node's record changes at
//! the same position of the log, whichever nodes hold the bytes.
//!
//! Of the nodes that may hold a song's bytes, the first owner in the
//! layout's order proposes (the others would propose the same reading:
//! applying a second is refused as not newer, harmlessly). A song whose
//! bytes no longer pass the inspection (refused by a newer check) keeps
//! its fields and only gains the version, so that it is not read again.

use std::sync::Arc;
use std::time::Duration;

use rondo_core::{AlbumId, ContentHash, SongId};
use rondo_proto::storage::v1 as pb;

use crate::error::Result;
use crate::state::NodeState;

/// Songs read per pass.
const BATCH: usize = 64;
/// How long the worker waits when nothing is left for it (songs it does
/// not hold yet come back when it does).
const IDLE: Duration = Duration::from_secs(600);

/// Runs until `stop` turns true: passes over the songs an older inspection
/// made, a batch at a time from a cursor, back to back while it finds
/// work, then every [`IDLE`]. The bytes are read at the scrub's rate.
pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut cursor: Option<SongId> = None;
    loop {
        let wait = match pass(&state, &mut cursor).await {
            // No operational, quorate ring with a layout yet.
            Ok(None) => Duration::from_secs(2),
            Ok(Some(0)) if cursor.is_none() => IDLE,
            Ok(Some(n)) => {
                if n > 0 {
                    tracing::info!(songs = n, "re-inspected songs");
                }
                Duration::ZERO
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-inspection pass failed; trying again");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One batch from `cursor` (which it moves on, to `None` at the end):
/// reads and proposes the songs this node should; returns how many it
/// proposed, or `None` while it cannot order anything.
async fn pass(state: &Arc<NodeState>, cursor: &mut Option<SongId>) -> Result<Option<usize>> {
    let status = state.ring.status();
    if status.phase != "operational" || !status.quorate {
        return Ok(None);
    }
    let st = state.clone();
    let Some(layout) = tokio::task::spawn_blocking(move || st.store.ring_layout()).await?? else {
        return Ok(None);
    };
    let (st, after, me) = (state.clone(), *cursor, state.node_id);
    // The first owner in the layout's order reads the song, if it holds it.
    let (mine, next) = tokio::task::spawn_blocking(move || {
        st.store
            .to_reinspect(rondo_media::INSPECTION, after, BATCH, |hash| {
                layout.owners_of(hash).first() == Some(&me)
            })
    })
    .await??;
    *cursor = next;
    let mut proposed = 0;
    for (song, hash) in mine {
        let path = state.store.blob_path(&hash);
        let size = song.size_bytes;
        state
            .scrub_limit
            .take(usize::try_from(size).unwrap_or(usize::MAX))
            .await;
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            // The reading counts only for the bytes the song names.
            let mut file = std::fs::File::open(&path)?;
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(&mut file)?;
            if ContentHash::from(hasher.finalize()) != hash {
                return Ok(None);
            }
            Ok(Some(rondo_media::inspect(&mut file)))
        })
        .await?;
        let mut picture = None;
        let reading = match read {
            Ok(Some(Ok(mut info))) => {
                picture = info.picture.take();
                fresh_ids(&song, rondo_media::reinspected(&song, info))
            }
            // Refused by the newer checks: the record keeps its fields
            // and gains the version, so that it is not read again.
            Ok(Some(Err(rondo_media::Error::Unsupported(why)))) => {
                tracing::warn!(song = %song.id, why, "stored bytes fail the newer inspection; keeping the record");
                pb::Song {
                    inspected: rondo_media::INSPECTION,
                    ..song.clone()
                }
            }
            // Gone, unreadable or not the song's bytes (the scrub deals
            // with the copy): another pass, or another owner, reads it.
            Ok(Some(Err(e))) => {
                tracing::debug!(song = %song.id, error = %e, "re-inspection skipped");
                continue;
            }
            Ok(None) | Err(_) => continue,
        };
        let mut reading = reading;
        // A picture found is stored and copied to W of its owners first,
        // as an upload's is; one already the record's is not copied again.
        let mut placement_epoch = 0;
        let mut pin = None;
        if let Some(p) = picture {
            let same = |a: &pb::Art| a.hash == ContentHash::of(&p.data).to_hex();
            if let Some(kept) = song.art.as_ref().filter(|a| same(a)) {
                reading.art = Some(kept.clone());
            } else {
                // A picture that cannot be stored or copied now waits for
                // another pass; the rest of the batch goes on.
                let (stored, held) = match crate::upload::put_picture(state, p).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::info!(song = %song.id, error = %e, "picture not stored; read again later");
                        continue;
                    }
                };
                let hash = held.hash();
                pin = Some(held);
                match crate::replication::quorum::replicate_to_owners(state, hash).await {
                    Ok(epoch) => placement_epoch = epoch,
                    Err(e) => {
                        tracing::info!(song = %song.id, error = %e, "picture not copied; read again later");
                        release(state, pin.take()).await;
                        continue;
                    }
                }
                reading.art = Some(stored);
            }
        }
        let update = pb::CatalogUpdate {
            origin: me.to_string(),
            change: Some(pb::catalog_update::Change::Reinspected(reading)),
            placement_epoch,
            ..Default::default()
        };
        // A refusal (a reading ordered first, the song deleted, a new
        // placement) is fine: another pass reads it again. A picture no
        // record took goes.
        let applied = state.ring.propose(update).await;
        if matches!(applied, Ok(crate::store::Applied::Stored { .. })) {
            proposed += 1;
        } else {
            release(state, pin.take()).await;
        }
        applied?;
    }
    Ok(Some(proposed))
}

/// Lets a picture no record took go (it is released unless another write
/// pinned it or a record uses it).
async fn release(state: &Arc<NodeState>, pin: Option<crate::store::BlobPin>) {
    let Some(pin) = pin else { return };
    match tokio::task::spawn_blocking(move || pin.release()).await {
        Ok(Ok(())) => state.outbox.notify_one(),
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing an unused picture failed"),
        Err(e) => tracing::warn!(error = %e, "releasing an unused picture failed"),
    }
}

/// The album a reading files the song under: unchanged (and the record's
/// album artist kept) when the album artist is, else a new album of the
/// same title under the new album artist, with a fresh id (the nodes take
/// the known one by name when they apply the reading).
fn fresh_ids(old: &pb::Song, mut new: pb::Song) -> pb::Song {
    let owner = |s: &pb::Song| {
        s.album_artist
            .as_ref()
            .map(|a| rondo_core::names::fold(&a.name))
    };
    if owner(old) == owner(&new) {
        new.album_artist = old.album_artist.clone();
        return new;
    }
    let owner_id = new
        .album_artist
        .as_ref()
        .or(new.artist.as_ref())
        .map(|a| a.id.clone())
        .unwrap_or_default();
    if let Some(album) = new.album.as_mut() {
        album.id = AlbumId::new_random().to_string();
        album.artist_id = owner_id;
    }
    new
}
