//! Moving blobs between nodes: reading a blob from a peer into a staged,
//! hash-checked file, and putting it in this node's store as a copy ahead
//! of its song or as a blob songs wait for.

use std::sync::Arc;

use rondo_core::NodeId;

use crate::error::{Error, Result};
use crate::state::NodeState;
use crate::store::{Delivered, Delivery, StagedBlob};

/// Pulls a blob that songs wait for into this node's store, from `first`
/// then from any other node, as a delivery from another node's outbox
/// when `delivery` is set. Returns the node it came from.
pub async fn pull(
    state: &Arc<NodeState>,
    hash: &rondo_core::ContentHash,
    first: NodeId,
    delivery: Option<Delivery>,
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
        match download(state, &url, hash).await {
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
    let staged = download(state, url, hash).await?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.store.put_blob(staged)).await??;
    Ok(())
}

/// Reads one blob from the node at `url` into a staged file (hash checked,
/// fsync'd).
async fn download(
    state: &Arc<NodeState>,
    url: &str,
    hash: &rondo_core::ContentHash,
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
        staging.write(&chunk.chunk).await?;
    }
    staging.finish(&hash.to_hex()).await
}
