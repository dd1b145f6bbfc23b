//! The relay: carries out the outbox's tasks after each commit that queues
//! some, and retries failures with backoff. Local tasks (removing blob
//! files) run in the store; network tasks run here, several at once: blob
//! fetches (each from the node that proposed the song first, then from any
//! other node) and blob pushes, in batches of one call per node. Moving
//! whole partitions when the placement changes is the resync worker's
//! ([`super::resync`]); the outbox carries the effects of single entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rondo_core::NodeId;
use rondo_proto::storage::v1::{self as pb, deliver_blob_reply::Outcome};

use super::transfer::pull;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::state::NodeState;
use crate::store::{FetchTask, OutboxTask, PushTask};

/// Network tasks the outbox runs at once (a node that joins fetches every
/// blob of the catalog: one at a time, each waits for its fsyncs).
const NETWORK_CONCURRENCY: usize = 8;

/// Rows sent in one `DeliverBlob` call.
const PUSH_BATCH: usize = 256;

/// Runs the relay until `stop` turns true: one pass after each wake-up
/// (a commit that queued work), when a waiting fetch is due, or after a
/// backoff when a pass failed.
pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    // When each repair fetch was first seen (it waits for a push first).
    let mut seen = HashMap::new();
    loop {
        let Some((result, next)) = pass(&state, &mut seen).await else {
            return;
        };
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        match result {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    () = state.outbox.notified() => {}
                    () = due => {}
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "outbox task failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = state.outbox.notified() => {}
                    () = due => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// One pass over the outbox, read in one scan: the local tasks, then the
/// due network tasks, several at once (a failed local task holds up no
/// network task). A fetch of a blob whose proposer will push it is due only
/// after `blob_repair_after`. Returns the first failure, and when the next
/// waiting fetch is due; `None` if the relay must stop (a panic).
async fn pass(
    state: &Arc<NodeState>,
    seen: &mut HashMap<u64, tokio::time::Instant>,
) -> Option<(Result<()>, Option<tokio::time::Instant>)> {
    let st = state.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        let pending = st.store.pending()?;
        let local = st.store.run_local(&pending.local).map(|_| ());
        Ok::<_, Error>((pending, local))
    })
    .await;
    let (pending, local) = match scanned {
        Ok(Ok(scanned)) => scanned,
        Ok(Err(e)) => return Some((Err(e), None)),
        Err(e) => {
            tracing::error!(error = %e, "outbox relay task panicked");
            return None;
        }
    };
    let mut next = None;
    let network = network_tasks(state, pending.network, pending.low_water, seen, &mut next).await;
    Some((local.and(network), next))
}

async fn network_tasks(
    state: &Arc<NodeState>,
    tasks: Vec<(u64, OutboxTask)>,
    low_water: u64,
    seen: &mut HashMap<u64, tokio::time::Instant>,
    next: &mut Option<tokio::time::Instant>,
) -> Result<()> {
    use futures::StreamExt;
    let now = tokio::time::Instant::now();
    let repair_after = state.config.blob_repair_after();
    seen.retain(|n, _| tasks.iter().any(|(m, _)| m == n));
    let mut fetches = Vec::new();
    let mut pushes: BTreeMap<NodeId, Vec<(u64, PushTask)>> = BTreeMap::new();
    for (n, task) in tasks {
        if let OutboxTask::FetchBlob(f) = &task
            && f.push_expected
        {
            let at = *seen.entry(n).or_insert(now) + repair_after;
            let st = state.clone();
            let hash = f.hash;
            // A pushed blob settles its fetch at once.
            let wanted = tokio::task::spawn_blocking(move || st.store.wants_blob(&hash)).await??;
            if at > now && wanted {
                *next = Some(next.map_or(at, |x| x.min(at)));
                continue;
            }
        }
        match task {
            OutboxTask::FetchBlob(f) => fetches.push((n, f)),
            OutboxTask::PushBlob(p) => pushes.entry(p.to).or_default().push((n, p)),
            OutboxTask::DeleteBlob(_) => {}
        }
    }
    let mut jobs: Vec<futures::future::BoxFuture<'_, Result<()>>> = Vec::new();
    for (n, f) in fetches {
        jobs.push(Box::pin(fetch_task(state, n, f)));
    }
    for (to, rows) in pushes {
        jobs.push(Box::pin(push_rows(state, to, rows, low_water)));
    }
    let results: Vec<Result<()>> = futures::stream::iter(jobs)
        .buffer_unordered(NETWORK_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

/// One fetch task of the outbox: done (and its row removed) once the blob is
/// here, or at once if no song wants it any more or this node no longer
/// owns it (a placement ordered since).
async fn fetch_task(state: &Arc<NodeState>, n: u64, task: FetchTask) -> Result<()> {
    let hash = task.hash;
    let st = state.clone();
    let me = state.node_id;
    let wanted = tokio::task::spawn_blocking(move || {
        let owner = st
            .store
            .ring_layout()?
            .is_none_or(|l| l.should_hold(me, &hash));
        Ok::<_, Error>(owner && st.store.wants_blob(&hash)?)
    })
    .await??;
    if !wanted {
        let st = state.clone();
        tokio::task::spawn_blocking(move || st.store.finish_tasks(&[n])).await??;
        return Ok(());
    }
    if task.push_expected {
        tracing::info!(%hash, from = %task.from, "no push came: fetching the blob");
    }
    let (peer, _) = pull(state, &hash, task.from, None, None).await?;
    tracing::info!(%hash, %peer, "fetched blob");
    failpoint("fetch-before-finish");
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.store.finish_tasks(&[n])).await??;
    state.refresh_gauges();
    Ok(())
}

/// The push rows of the outbox for one node: tells it to hold the blobs of
/// songs this node proposed, in batches. A row is done (and removed) once
/// the node answered it stored, held or duplicate, or at once if the node
/// left the layout, no longer owns the blob, or this node lost the blob;
/// rows the node could not take yet stay, and the relay tries again with
/// backoff.
async fn push_rows(
    state: &Arc<NodeState>,
    to: NodeId,
    rows: Vec<(u64, PushTask)>,
    low_water: u64,
) -> Result<()> {
    failpoint("push-before-send");
    let st = state.clone();
    let layout = tokio::task::spawn_blocking(move || st.store.ring_layout()).await??;
    let url = layout
        .as_ref()
        .and_then(|l| l.nodes.get(&to).map(|m| m.addr.clone()));
    let st = state.clone();
    let (live, moot) = tokio::task::spawn_blocking(move || {
        let mut live = Vec::new();
        let mut moot = Vec::new();
        for (n, p) in rows {
            let owner = layout.as_ref().is_some_and(|l| l.should_hold(to, &p.hash));
            match st.store.blob_size(&p.hash)? {
                Some(_) if owner => live.push((n, p)),
                _ => moot.push(n),
            }
        }
        st.store.finish_tasks(&moot)?;
        Ok::<_, Error>((live, moot.len()))
    })
    .await??;
    if moot > 0 {
        tracing::debug!(%to, rows = moot, "pushes dropped: node, ownership or blob gone");
    }
    let Some(url) = url else {
        return Ok(());
    };
    let mut pending = 0;
    for batch in live.chunks(PUSH_BATCH) {
        let request = pb::DeliverBlobRequest {
            origin: state.node_id.to_string(),
            low_water,
            rows: batch
                .iter()
                .map(|(n, p)| pb::BlobDelivery {
                    outbox_seq: *n,
                    content_hash: p.hash.to_hex(),
                    entry_seq: p.entry_seq,
                })
                .collect(),
        };
        let reply = state
            .peer(&url)?
            .deliver_blob(request)
            .await
            .map_err(|e| Error::Unavailable(format!("push blobs to {to}: {}", e.message())))?
            .into_inner();
        let outcomes = reply.outcomes();
        let done: Vec<u64> = batch
            .iter()
            .zip(outcomes.chain(std::iter::repeat(Outcome::Unspecified)))
            .filter(|(_, o)| matches!(o, Outcome::Stored | Outcome::Held | Outcome::Duplicate))
            .map(|((n, _), _)| *n)
            .collect();
        pending += batch.len() - done.len();
        let st = state.clone();
        tokio::task::spawn_blocking(move || st.store.finish_tasks(&done)).await??;
    }
    state.refresh_gauges();
    if pending > 0 {
        return Err(Error::Unavailable(format!(
            "{pending} pushes to {to} not taken yet"
        )));
    }
    Ok(())
}
