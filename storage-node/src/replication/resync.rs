//! The resync worker: brings this node's holdings to what the placement in
//! force asks of it. Its work is derived each pass from the store and the
//! applied layout (nothing is queued for it), so a restart loses nothing:
//!
//! - **gain**: blobs songs use that this node owns and lacks, with no
//!   outbox fetch queued for them (those wait for a push, see
//!   [`super::relay`]): fetched, owners first, hash checked;
//! - **give up**: blobs this node holds but does not own. Their owners are
//!   asked (`HasBlobs`); a copy goes only once every owner of its partition
//!   holds the blob, and then in two steps: released at once (gateways stop
//!   signing its URLs here), the file removed after `release_linger`, so
//!   that streams already signed finish. An owner that is down never
//!   answers, so the copy stays.
//!
//! Without a placement every node of the layout owns every blob: there is
//! nothing to give up, and a gain is a blob the outbox lost track of.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use rondo_core::{ContentHash, NodeId};
use rondo_proto::storage::v1 as pb;
use tokio::time::Instant;

use super::transfer::pull;
use crate::error::{Error, Result};
use crate::state::NodeState;

/// Hashes asked in one `HasBlobs` call (the most a node answers).
pub const HAS_BLOBS_BATCH: usize = 1024;

/// Blobs fetched at once.
const FETCH_CONCURRENCY: usize = 4;

/// Copies given up, waiting for their linger to end: (due, hash).
type Lingering = Vec<(Instant, ContentHash)>;

/// Runs the worker until `stop` turns true: a pass every
/// `resync_interval`, and the files of released copies removed when
/// their linger ends.
pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval = state.config.resync_interval();
    let mut lingering: Lingering = Vec::new();
    loop {
        if let Err(e) = pass(&state, &mut lingering).await {
            tracing::warn!(error = %e, "resync pass failed; trying again");
        }
        remove_lingered(&state, &mut lingering).await;
        let now = Instant::now();
        let next = lingering
            .iter()
            .map(|(at, _)| *at)
            .fold(now + interval, Instant::min);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One pass: fetch what this node owns and lacks, then give up what it
/// holds and does not own once the owners hold it.
async fn pass(state: &Arc<NodeState>, lingering: &mut Lingering) -> Result<()> {
    let st = state.clone();
    let Some(layout) = tokio::task::spawn_blocking(move || st.store.ring_layout()).await?? else {
        return Ok(());
    };
    let layout = Arc::new(layout);
    gain(state, &layout).await?;
    give_up(state, &layout, lingering).await
}

/// Fetches the blobs this node owns and lacks, several at once.
async fn gain(state: &Arc<NodeState>, layout: &Arc<rondo_ring::Layout>) -> Result<()> {
    let st = state.clone();
    let l = layout.clone();
    let missing = tokio::task::spawn_blocking(move || st.store.owned_missing(&l)).await??;
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(
        blobs = missing.len(),
        "resync: fetching blobs this node owns"
    );
    let me = state.node_id;
    let results: Vec<Result<()>> = futures::stream::iter(missing)
        .map(|hash| {
            // Another owner first; `pull` then tries every other node.
            let first = layout
                .owners_of(&hash)
                .into_iter()
                .find(|n| *n != me)
                .unwrap_or(me);
            async move {
                let (peer, _) = pull(state, &hash, first, None).await?;
                let st = state.clone();
                let size = tokio::task::spawn_blocking(move || st.store.blob_size(&hash)).await??;
                state
                    .metrics
                    .resync_received_bytes
                    .inc_by(size.unwrap_or(0));
                tracing::debug!(%hash, %peer, "resync: fetched blob");
                Ok(())
            }
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;
    state.refresh_gauges();
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

/// Gives up the copies this node holds and does not own, of which every
/// owner holds the blob: released now, the files removed after the linger.
async fn give_up(
    state: &Arc<NodeState>,
    layout: &Arc<rondo_ring::Layout>,
    lingering: &mut Lingering,
) -> Result<()> {
    let st = state.clone();
    let l = layout.clone();
    let misplaced = tokio::task::spawn_blocking(move || st.store.misplaced(&l)).await??;
    if misplaced.is_empty() {
        return Ok(());
    }
    let hashes: Vec<ContentHash> = misplaced.iter().map(|(h, _)| *h).collect();
    let held = held_by_owners(state, layout, &hashes).await;
    let confirmed: Vec<ContentHash> = hashes
        .into_iter()
        .filter(|h| {
            layout
                .owners_of(h)
                .iter()
                .all(|o| held.get(o).is_some_and(|set| set.contains(h)))
        })
        .collect();
    if confirmed.is_empty() {
        return Ok(());
    }
    let st = state.clone();
    let l = layout.clone();
    let released =
        tokio::task::spawn_blocking(move || st.store.release_copies(&l, &confirmed)).await??;
    let due = Instant::now() + state.config.release_linger();
    state.metrics.released_blobs.inc_by(released.len() as u64);
    tracing::info!(
        blobs = released.len(),
        "resync: gave up copies every owner holds"
    );
    lingering.extend(released.into_iter().map(|h| (due, h)));
    state.refresh_gauges();
    Ok(())
}

/// Asks each owner of `hashes` which of them it holds. An owner that
/// cannot be asked holds nothing, as far as this node knows.
async fn held_by_owners(
    state: &Arc<NodeState>,
    layout: &rondo_ring::Layout,
    hashes: &[ContentHash],
) -> BTreeMap<NodeId, HashSet<ContentHash>> {
    let mut asks: BTreeMap<NodeId, Vec<ContentHash>> = BTreeMap::new();
    for h in hashes {
        for owner in layout.owners_of(h) {
            asks.entry(owner).or_default().push(*h);
        }
    }
    let mut held = BTreeMap::new();
    for (owner, wanted) in asks {
        let Some(url) = layout.nodes.get(&owner).map(|m| m.addr.clone()) else {
            continue;
        };
        match has_blobs(state, &url, &wanted).await {
            Ok(set) => {
                held.insert(owner, set);
            }
            Err(e) => tracing::debug!(%owner, error = %e, "resync: owner not asked"),
        }
    }
    held
}

/// Which of `hashes` the node at `url` holds, in batches.
async fn has_blobs(
    state: &Arc<NodeState>,
    url: &str,
    hashes: &[ContentHash],
) -> Result<HashSet<ContentHash>> {
    let mut held = HashSet::new();
    for batch in hashes.chunks(HAS_BLOBS_BATCH) {
        let request = pb::HasBlobsRequest {
            content_hashes: batch.iter().map(ContentHash::to_hex).collect(),
        };
        let reply = state
            .peer(url)?
            .has_blobs(request)
            .await
            .map_err(|e| Error::Unavailable(format!("HasBlobs at {url}: {}", e.message())))?
            .into_inner();
        held.extend(
            batch
                .iter()
                .zip(reply.held)
                .filter(|(_, held)| *held)
                .map(|(h, _)| *h),
        );
    }
    Ok(held)
}

/// Removes the files of released copies whose linger has ended.
async fn remove_lingered(state: &Arc<NodeState>, lingering: &mut Lingering) {
    let now = Instant::now();
    let (due, waiting): (Lingering, Lingering) =
        lingering.drain(..).partition(|(at, _)| *at <= now);
    *lingering = waiting;
    if due.is_empty() {
        return;
    }
    let st = state.clone();
    let removed = tokio::task::spawn_blocking(move || {
        for (_, hash) in &due {
            st.store.remove_released(hash)?;
        }
        Ok::<_, Error>(due.len())
    })
    .await
    .map_err(Error::from)
    .and_then(|r| r);
    match removed {
        Ok(n) => tracing::debug!(files = n, "resync: removed released copies"),
        Err(e) => tracing::warn!(error = %e, "resync: removing released copies failed"),
    }
}
