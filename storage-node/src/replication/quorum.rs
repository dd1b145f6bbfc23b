//! The write quorum copy: before a song is proposed, its bytes go from the
//! node that received them onto enough of the blob's owners that `W` of
//! them hold it durably (the placement's write quorum; without a placement
//! every node owns every blob and `W` is a majority of the cluster, so
//! every song survives the loss of any minority). Both sides: the copier
//! ([`replicate_to_owners`]) and the node that takes a copy
//! ([`take_copy`]).

use std::sync::Arc;

use futures::StreamExt;
use rondo_core::{ContentHash, NodeId};
use rondo_proto::storage::v1 as pb;

use super::transfer::fetch_one;
use crate::error::{Error, Result};
use crate::state::NodeState;

/// Copies a blob this node holds onto enough of its owners under the
/// applied layout that `W` of them hold it durably (this node counts if it
/// is one). Every other owner is asked at once, again and again with
/// backoff while it cannot be reached, for up to the write timeout; the
/// answer comes with the `W`th copy, and the calls still running go on in
/// the background (the owners would fetch the blob after the song commits
/// anyway). Returns the placement epoch the copies were made under, which
/// the song's entry carries. Fails with `UNAVAILABLE` naming the owners
/// that could not take a copy.
pub async fn replicate_to_owners(state: &Arc<NodeState>, hash: ContentHash) -> Result<u64> {
    let ring = &state.ring;
    let st = state.clone();
    let layout = tokio::task::spawn_blocking(move || st.store.ring_layout()).await??;
    let me = state.node_id;
    let (epoch, targets, needed) = match &layout {
        Some(l) => {
            let owners = l.owners_of(&hash);
            let mine = usize::from(owners.contains(&me));
            let targets: Vec<(NodeId, String)> = owners
                .iter()
                .filter(|n| **n != me)
                .filter_map(|n| l.nodes.get(n).map(|m| (*n, m.addr.clone())))
                .collect();
            (
                l.placement_epoch(),
                targets,
                l.write_quorum().saturating_sub(mine),
            )
        }
        // No layout applied yet: a majority of the peers known.
        None => {
            let peers: Vec<(NodeId, String)> = ring.peers().into_iter().collect();
            let needed = peers.len().div_ceil(2);
            (0, peers, needed)
        }
    };
    if needed == 0 {
        return Ok(epoch);
    }
    let deadline = tokio::time::Instant::now() + ring.write_timeout();
    let mut calls: futures::stream::FuturesUnordered<_> = targets
        .into_iter()
        .map(|(peer, url)| {
            let request = pb::ReplicateBlobRequest {
                content_hash: hash.to_hex(),
                source_node: me.to_string(),
            };
            let state = state.clone();
            async move {
                let mut backoff = std::time::Duration::from_millis(50);
                loop {
                    let result = replicate_once(&state, &url, request.clone()).await;
                    if result.is_ok() || tokio::time::Instant::now() + backoff >= deadline {
                        return (peer, result);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
                }
            }
        })
        .collect();
    let mut copies = 0;
    let mut failures = Vec::new();
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some((peer, result)) = calls.next().await {
            match result {
                Ok(()) => {
                    copies += 1;
                    if copies >= needed {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(%hash, %peer, error = %e, "blob replication failed");
                    failures.push(format!("{peer}: {e}"));
                }
            }
        }
    })
    .await;
    tokio::spawn(async move { while calls.next().await.is_some() {} });
    if copies >= needed {
        return Ok(epoch);
    }
    let partition = layout
        .as_ref()
        .and_then(|l| l.placement.as_ref())
        .map(|p| {
            format!(
                " (partition {} of placement {})",
                rondo_core::partitions::partition_of(&hash, p.assignment.bits),
                p.epoch
            )
        })
        .unwrap_or_default();
    let reached = format!(
        "the song's bytes reached {} of the {} more owners the write quorum needs{partition} ({})",
        copies,
        needed,
        if failures.is_empty() {
            "timed out".to_string()
        } else {
            failures.join("; ")
        }
    );
    Err(Error::Unavailable(if ring.quorate() {
        reached
    } else {
        format!("{}; {reached}", ring.no_quorum())
    }))
}

/// One `ReplicateBlob` call to the node at `url`.
async fn replicate_once(
    state: &NodeState,
    url: &str,
    request: pb::ReplicateBlobRequest,
) -> Result<(), String> {
    state
        .peer(url)
        .map_err(|e| e.to_string())?
        .replicate_blob(request)
        .await
        .map(|_| ())
        .map_err(|s| s.message().to_string())
}

/// Takes a copy of a blob from `source` ahead of its song (`ReplicateBlob`).
/// The copy is held for the record its source is about to propose; if no
/// record uses it a grace after the latest take (two uploads may count on
/// one copy: an album's tracks share a picture), it goes.
pub async fn take_copy(state: &Arc<NodeState>, hash: ContentHash, source: NodeId) -> Result<()> {
    let grace = 2 * state.ring.write_timeout();
    if let Ok(mut taken) = state.copies_taken.lock() {
        taken.insert(hash, tokio::time::Instant::now() + grace);
    }
    let st = state.clone();
    if tokio::task::spawn_blocking(move || st.store.blob_size(&hash))
        .await??
        .is_some()
    {
        release_after(state, hash, grace);
        return Ok(());
    }
    let url = state
        .ring
        .peers()
        .get(&source)
        .cloned()
        .ok_or(Error::Invalid {
            what: "source_node is not a node of this cluster",
        })?;
    fetch_one(state, &url, &hash).await?;
    crate::failpoint("replicate-before-ack");
    release_after(state, hash, grace);
    tracing::debug!(%hash, %source, "replicated blob ahead of its song");
    Ok(())
}

/// Releases a copy taken ahead of its record once `grace` has passed since
/// the latest take, unless a record uses it by then.
fn release_after(state: &Arc<NodeState>, hash: ContentHash, grace: std::time::Duration) {
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        // A later take of the same blob has its own, later, release.
        let due = match state.copies_taken.lock() {
            Ok(mut taken) => match taken.get(&hash) {
                Some(at) if *at > tokio::time::Instant::now() => false,
                _ => {
                    taken.remove(&hash);
                    true
                }
            },
            Err(_) => true,
        };
        if !due {
            return;
        }
        let st = state.clone();
        let released = tokio::task::spawn_blocking(move || st.store.release_blob(&hash))
            .await
            .map_err(Error::from)
            .and_then(|r| r);
        match released {
            Ok(()) => state.outbox.notify_one(),
            Err(e) => tracing::warn!(%hash, error = %e, "releasing an unused replica failed"),
        }
    });
}
