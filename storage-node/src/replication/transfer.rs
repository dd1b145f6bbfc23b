//! Moving blobs between nodes: reading a blob from a peer into a staged,
//! hash-checked file, and putting it in this node's store as a copy ahead
//! of its song or as a blob songs wait for.

use std::sync::Arc;

use rondo_core::NodeId;

use crate::error::{Error, Result};
use crate::pace::RateLimit;
use crate::state::NodeState;
use crate::store::{Delivered, Delivery, StagedBlob};

/// Pulls a blob that songs wait for into this node's store, from `first`
/// then from any other node, as a delivery from another node's outbox
/// when `delivery` is set, at most at `limit`'s rate if one is given.
/// Returns the node it came from.
pub async fn pull(
    state: &Arc<NodeState>,
    hash: &rondo_core::ContentHash,
    first: NodeId,
    delivery: Option<Delivery>,
    limit: Option<&RateLimit>,
) -> Result<(NodeId, Delivered)> {
    let peers = state.ring.peers();
    let mut order: Vec<(NodeId, String)> = peers
        .iter()
        .filter(|(id, _)| **id == first)
        .chain(peers.iter().filter(|(id, _)| **id != first))
        .map(|(id, url)| (*id, url.clone()))
        .collect();
    order.dedup_by_key(|(id, _)| *id);
    for (peer, url) in order {
        match download(state, &url, hash, limit).await {
            Ok(staged) => {
                let st = state.clone();
                let done =
                    tokio::task::spawn_blocking(move || st.store.put_wanted(staged, delivery))
                        .await??;
                return Ok((peer, done));
            }
            Err(e) => tracing::debug!(%hash, %peer, error = %e, "blob fetch failed"),
        }
    }
    Err(Error::Unavailable(format!(
        "no node could provide blob {hash}"
    )))
}

/// Copies one blob from the node at `url` into this node's store (hash
/// checked, fsync'd, indexed), as a copy ahead of its song.
pub async fn fetch_one(
    state: &Arc<NodeState>,
    url: &str,
    hash: &rondo_core::ContentHash,
) -> Result<()> {
    let staged = download(state, url, hash, None).await?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.store.put_blob(staged)).await??;
    Ok(())
}

/// Reads one blob from the node at `url` into a staged file (hash checked,
/// fsync'd), at most at `limit`'s rate if one is given.
async fn download(
    state: &Arc<NodeState>,
    url: &str,
    hash: &rondo_core::ContentHash,
    limit: Option<&RateLimit>,
) -> Result<StagedBlob> {
    use futures::StreamExt;
    use rondo_proto::storage::v1 as pb;
    let unavailable = |e: String| Error::Unavailable(e);
    let mut client = state.peer(url)?;
    let mut stream = client
        .read_blob(pb::ReadBlobRequest {
            content_hash: hash.to_hex(),
            offset: 0,
            length: 0,
        })
        .await
        .map_err(|e| unavailable(format!("read blob from {url}: {e}")))?
        .into_inner();
    let mut staging = state.store.stage(u64::MAX).await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unavailable(format!("read blob from {url}: {e}")))?;
        if let Some(limit) = limit {
            limit.take(chunk.chunk.len()).await;
        }
        staging.write(&chunk.chunk).await?;
    }
    let staged = staging.finish(&hash.to_hex()).await;
    if let Err(e @ Error::HashMismatch { .. }) = &staged {
        // The source's copy may be bad: it re-hashes it (PROTOCOL.md,
        // "Scrub"). This node tries another source.
        state.metrics.corrupt_reads.inc();
        tracing::warn!(%hash, source = url, error = %e, "a blob read from a peer failed the hash check; reporting it");
        let report = pb::ReportCorruptRequest {
            content_hash: hash.to_hex(),
        };
        if let Err(e) = client.report_corrupt(report).await {
            tracing::debug!(%hash, source = url, error = %e, "corruption report not delivered");
        }
    }
    staged
}

/// Reads a small blob (a picture) this node does not hold from another
/// node into memory, hash checked: from its owners under the applied
/// layout first, then from any node. At most `max` bytes.
pub async fn read_small(
    state: &Arc<NodeState>,
    hash: &rondo_core::ContentHash,
    max: usize,
) -> Result<Vec<u8>> {
    use futures::StreamExt;
    use rondo_proto::storage::v1 as pb;
    let st = state.clone();
    let owners = tokio::task::spawn_blocking(move || st.store.ring_layout())
        .await??
        .map(|l| l.owners_of(hash))
        .unwrap_or_default();
    let peers = state.ring.peers();
    let order = owners
        .iter()
        .filter_map(|o| peers.get(o).map(|u| (*o, u.clone())))
        .chain(
            peers
                .iter()
                .filter(|(id, _)| !owners.contains(id))
                .map(|(id, u)| (*id, u.clone())),
        )
        .filter(|(id, _)| *id != state.node_id);
    for (peer, url) in order {
        let read = async {
            let mut stream = state
                .peer(&url)?
                .read_blob(pb::ReadBlobRequest {
                    content_hash: hash.to_hex(),
                    offset: 0,
                    length: 0,
                })
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| Error::Unavailable(e.to_string()))?;
                if bytes.len() + chunk.chunk.len() > max {
                    return Err(Error::TooLarge { limit: max as u64 });
                }
                bytes.extend_from_slice(&chunk.chunk);
            }
            let actual = rondo_core::ContentHash::of(&bytes);
            if actual != *hash {
                return Err(Error::HashMismatch {
                    claimed: hash.to_hex(),
                    actual,
                });
            }
            Ok(bytes)
        };
        match read.await {
            Ok(bytes) => return Ok(bytes),
            Err(e) => tracing::debug!(%hash, %peer, error = %e, "picture read failed"),
        }
    }
    Err(Error::Unavailable(format!(
        "no node could provide picture {hash}"
    )))
}
