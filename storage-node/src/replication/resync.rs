//! The resync worker: brings this node's holdings to what the placement in
//! force asks of it. Its work is derived each pass from the store and the
//! applied layout (nothing is queued for it), so a restart loses nothing:
//!
//! - **gain**: blobs songs use that this node owns and lacks, with no
//!   outbox fetch queued for them (those wait for a push, see
//!   [`super::relay`]): fetched, those with the fewest other owners in the
//!   ring first, from another owner first, hash checked, at the node's
//!   resync rate, and not at all above its disk limit;
//! - **give up**: blobs this node holds but does not own. Their owners are
//!   asked (`HasBlobs`); a copy goes only once every owner of its partition
//!   confirms it holds the blob for a song, as an owner under the same
//!   placement (an owner never gives up what it owns while that placement
//!   is in force, so the confirmations stay true), and then in two steps: released at once (gateways stop
//!   signing its URLs here), the file removed after `release_linger`, so
//!   that streams already signed finish. An owner that is down never
//!   answers, so the copy stays. A node the cluster marked out itself
//!   (down too long, see [`crate::ring::standing`]) gives nothing up: it
//!   is marked in again once it is back, and its copies are spares.
//!
//! Without a placement every node of the layout owns every blob: there is
//! nothing to give up, and a gain is a blob the outbox lost track of.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

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

/// Blobs whose fetch failed: when to try again, and the wait after that
/// (60 s, doubling up to 64 min, as Garage's resync does).
type Backoff = HashMap<ContentHash, (Instant, Duration)>;

const FIRST_RETRY: Duration = Duration::from_secs(60);
const LAST_RETRY: Duration = Duration::from_secs(64 * 60);

/// Runs the worker until `stop` turns true: a pass every
/// `resync_interval`, and at once after a layout change is applied (a
/// new placement, a node marked out: work that should not wait for the
/// next pass), and the files of released copies removed when their
/// linger ends.
pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval = state.config.resync_interval();
    let mut lingering: Lingering = Vec::new();
    let mut backoff: Backoff = HashMap::new();
    loop {
        if let Err(e) = pass(&state, &mut lingering, &mut backoff).await {
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
            () = state.layout_changed.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// One pass: fetch what this node owns and lacks, and give up what it
/// holds and does not own once the owners hold it (a fetch that fails
/// holds up no give-up).
async fn pass(
    state: &Arc<NodeState>,
    lingering: &mut Lingering,
    backoff: &mut Backoff,
) -> Result<()> {
    let st = state.clone();
    let Some(layout) = tokio::task::spawn_blocking(move || st.store.ring_layout()).await?? else {
        return Ok(());
    };
    let layout = Arc::new(layout);
    let gained = gain(state, &layout, backoff).await;
    let given = give_up(state, &layout, lingering).await;
    let synced = claim_sync(state).await;
    gained.and(given).and(synced)
}

/// Orders this node's `Synced` for the newest placement once it holds
/// every blob it owns there: when every owner has, the older placements
/// retire (PROTOCOL.md, "Retirement"). Only through a quorate ring: a
/// minority orders nothing.
async fn claim_sync(state: &Arc<NodeState>) -> Result<()> {
    let status = state.ring.status();
    if status.phase != "operational" || !status.quorate {
        return Ok(());
    }
    let st = state.clone();
    let Some(epoch) = tokio::task::spawn_blocking(move || st.store.sync_due()).await?? else {
        return Ok(());
    };
    let change = rondo_ring::LayoutChange {
        expect_epoch: 0,
        op: rondo_ring::LayoutOp::Synced {
            node: state.node_id,
            epoch,
        },
        proposal: String::new(),
    };
    match state.ring.propose_layout(change).await {
        Ok((layout, seq)) => {
            let retired = layout.retirements.last().filter(|r| r.seq == seq);
            tracing::info!(epoch, seq, retired = ?retired.map(|r| &r.epochs), "holds everything it owns in the newest placement");
            Ok(())
        }
        // Another change came first (a newer placement, the same Synced
        // replayed): the next pass looks again.
        Err(Error::LayoutRefused(refusal)) => {
            tracing::debug!(%refusal, "Synced not ordered");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Fetches the blobs this node owns and lacks, several at once; one whose
/// fetch failed waits its backoff before it is tried again.
async fn gain(
    state: &Arc<NodeState>,
    layout: &Arc<rondo_ring::Layout>,
    backoff: &mut Backoff,
) -> Result<()> {
    let st = state.clone();
    let l = layout.clone();
    let (missing, bytes) = tokio::task::spawn_blocking(move || {
        let missing = st.store.owned_missing(&l)?;
        let bytes = st.store.wanted_bytes(&missing)?;
        Ok::<_, Error>((missing, bytes))
    })
    .await??;
    set(&state.metrics.resync_to_fetch, missing.len());
    state
        .metrics
        .resync_bytes_to_fetch
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    let bits = layout
        .placement
        .as_ref()
        .map_or(rondo_core::partitions::PARTITION_BITS, |p| {
            p.assignment.bits
        });
    let lacking: std::collections::BTreeSet<u32> = missing
        .iter()
        .filter_map(|h| u32::try_from(rondo_core::partitions::partition_of(h, bits)).ok())
        .collect();
    if let Ok(mut l) = state.lacking.lock() {
        *l = lacking.into_iter().collect();
    }
    let now = Instant::now();
    backoff.retain(|h, _| missing.contains(h));
    let mut missing: Vec<ContentHash> = missing
        .into_iter()
        .filter(|h| backoff.get(h).is_none_or(|(at, _)| *at <= now))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // The least replicated first: blobs with the fewest other owners in
    // this node's ring (the others are down, or cut off) are the ones a
    // further failure would lose.
    let members: std::collections::HashSet<NodeId> = state
        .ring
        .status()
        .members
        .iter()
        .filter_map(|m| m.parse().ok())
        .collect();
    let me = state.node_id;
    missing.sort_by_cached_key(|h| {
        let live = layout
            .owners_of(h)
            .iter()
            .filter(|o| **o != me && members.contains(o))
            .count();
        (live, *h)
    });
    let limit = state.config.resync_max_disk_percent.unwrap_or(90);
    if let Some(used) = disk_used_percent(&state.config.data_dir)
        && used >= f64::from(limit)
    {
        // Filling the disk would stop uploads and the catalog too: the
        // operator adds capacity or drains this node first.
        tracing::warn!(
            blobs = missing.len(),
            used_percent = used.round(),
            limit_percent = limit,
            "resync: the disk is too full to fetch the blobs this node owns"
        );
        return Err(Error::Unavailable(format!(
            "disk {used:.0} % full (resync stops at {limit} %)"
        )));
    }
    tracing::info!(
        blobs = missing.len(),
        "resync: fetching blobs this node owns"
    );
    let results: Vec<(ContentHash, Result<()>)> = futures::stream::iter(missing)
        .map(|hash| {
            // Another owner first; `pull` then tries every other node.
            let first = layout
                .owners_of(&hash)
                .into_iter()
                .find(|n| *n != me)
                .unwrap_or(me);
            async move {
                let fetched = async {
                    let (peer, _) =
                        pull(state, &hash, first, None, Some(&state.resync_limit)).await?;
                    let st = state.clone();
                    let size =
                        tokio::task::spawn_blocking(move || st.store.blob_size(&hash)).await??;
                    state
                        .metrics
                        .resync_received_bytes
                        .inc_by(size.unwrap_or(0));
                    tracing::debug!(%hash, %peer, "resync: fetched blob");
                    Ok::<_, Error>(())
                };
                (hash, fetched.await)
            }
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;
    state.refresh_gauges();
    let mut failed = None;
    for (hash, result) in results {
        match result {
            Ok(()) => {
                backoff.remove(&hash);
            }
            Err(e) => {
                let wait = backoff
                    .get(&hash)
                    .map_or(FIRST_RETRY, |(_, w)| (*w * 2).min(LAST_RETRY));
                backoff.insert(hash, (Instant::now() + wait, wait));
                tracing::warn!(%hash, error = %e, retry_in = ?wait, "resync: fetch failed");
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
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
    set(&state.metrics.resync_to_give_up, misplaced.len());
    if misplaced.is_empty() || layout.auto_out() == Some(state.node_id) {
        // Out automatically (it was down too long) and back: it is marked
        // in again soon, and its copies are spares until then.
        return Ok(());
    }
    let hashes: Vec<ContentHash> = misplaced.iter().map(|(h, _)| *h).collect();
    let held = confirmed_by_owners(state, layout, &hashes).await;
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
    set(
        &state.metrics.resync_to_give_up,
        misplaced.len().saturating_sub(released.len()),
    );
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

/// How full the file system holding `dir` is, in percent of the space an
/// unprivileged writer may use (as `df` counts it).
fn disk_used_percent(dir: &std::path::Path) -> Option<f64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let used = st.f_blocks.checked_sub(st.f_bfree)? as f64;
    let usable = used + st.f_bavail as f64;
    (usable > 0.0).then(|| 100.0 * used / usable)
}

/// Sets a gauge to a count.
fn set(gauge: &prometheus_client::metrics::gauge::Gauge, n: usize) {
    gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// Asks each owner of `hashes` which of them it holds as an owner under
/// this node's placement (an owner that applied another one confirms
/// nothing). An owner that cannot be asked holds nothing, as far as this
/// node knows.
async fn confirmed_by_owners(
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
        match confirmed(state, &url, layout.placement_epoch(), &wanted).await {
            Ok(set) => {
                held.insert(owner, set);
            }
            Err(e) => tracing::debug!(%owner, error = %e, "resync: owner not asked"),
        }
    }
    held
}

/// Which of `hashes` the node at `url` holds as an owner under placement
/// `epoch`, in batches.
async fn confirmed(
    state: &Arc<NodeState>,
    url: &str,
    epoch: u64,
    hashes: &[ContentHash],
) -> Result<HashSet<ContentHash>> {
    let mut held = HashSet::new();
    for batch in hashes.chunks(HAS_BLOBS_BATCH) {
        let request = pb::HasBlobsRequest {
            content_hashes: batch.iter().map(ContentHash::to_hex).collect(),
            placement_epoch: epoch,
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
                .zip(reply.confirmed)
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
    let failed = tokio::task::spawn_blocking(move || {
        let mut failed = Vec::new();
        for (at, hash) in due {
            if let Err(e) = st.store.remove_released(&hash) {
                tracing::warn!(%hash, error = %e, "resync: removing a released copy failed");
                failed.push((at, hash));
            }
        }
        failed
    })
    .await;
    match failed {
        // Tried again at the next pass (the start-up sweep removes them too).
        Ok(failed) => lingering.extend(failed),
        Err(e) => tracing::warn!(error = %e, "resync: removing released copies failed"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn disk_use_is_a_percentage_of_a_real_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let used = super::disk_used_percent(dir.path()).unwrap();
        assert!(used > 0.0 && used <= 100.0, "{used}");
        assert!(super::disk_used_percent(std::path::Path::new("/nonexistent/rondo")).is_none());
    }
}
