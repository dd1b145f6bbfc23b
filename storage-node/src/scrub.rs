//! Keeping this node's copies sound: three checks, one worker.
//!
//! - **Inventory** (every `check_interval_ms`, 10 min by default): every
//!   indexed blob's file is there with its indexed length (a `stat` each,
//!   no read). A file deleted or truncated under the node is found here.
//! - **Scrub** (a pass every `scrub_interval_ms`, 7 days by default, at
//!   most `scrub_rate_bytes` per second, 32 MiB/s by default): every
//!   indexed blob is read and re-hashed, in hash order from a cursor kept
//!   in the store, so a restarted node resumes its pass. A flipped bit is
//!   found here.
//! - **Suspects**: a blob a peer could not verify after reading it from
//!   this node (`ReportCorrupt`), or whose whole-file stream did not hash
//!   to its name, is re-hashed as soon as the batch under way (64 blobs)
//!   is done. The report is a hint, never a
//!   verdict: only this node's own hash of its own file quarantines it.
//!
//! A bad copy is quarantined ([`crate::store::Store::quarantine`]): out
//! of the index and out of reach of streams at once, its songs announced
//! released; the resync worker fetches a verified copy if this node owns
//! the blob. Metrics: `rondo_node_scrub_bytes`, `rondo_node_scrub_blobs`,
//! `rondo_node_scrub_passes`, `rondo_node_blob_faults{fault}`.

use std::cell::RefCell;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rondo_core::ContentHash;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::state::NodeState;
use crate::store::{Evidence, Fault, ScrubCursor};

/// Blobs read from the index at a time.
const BATCH: usize = 64;
/// Bytes read and hashed in one call on the blocking pool, between two
/// looks at the pacer.
const PIECE: usize = 8 << 20;
/// Bytes read at a time within a piece: small enough that the hasher
/// reads them back from the CPU cache, not from memory.
const READ: usize = 256 << 10;
/// Blobs of a batch checked at once, at most: one per core, so that with
/// its limit lifted the scrub hashes as fast as the machine can (each
/// blob is read and hashed on one blocking thread; reads stay plain
/// `read` calls, never a memory map, whose faults on a failing disk would
/// kill the process instead of returning `EIO`).
const MAX_PARALLEL: usize = 4;

/// How long the worker waits after a step that failed (a disk or database
/// error) before it tries again.
const RETRY: Duration = Duration::from_secs(10);

/// Runs the worker until `stop` turns true.
pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let check_every = state.config.check_interval();
    let scrub_every = state.config.scrub_interval();
    let mut next_check = Instant::now() + check_every;
    // A pass starts at once on a node that never finished one since it
    // started; then every `scrub_every`.
    let mut next_pass = Instant::now();
    loop {
        suspects(&state).await;
        let now = Instant::now();
        if now >= next_check {
            if let Err(e) = inventory(&state).await {
                tracing::warn!(error = %e, "scrub: inventory check failed");
            }
            next_check = Instant::now() + check_every;
        }
        let mut busy = false;
        let under_way = state.store.scrub_cursor().is_ok_and(|c| c.after.is_some());
        if now >= next_pass || under_way {
            // A batch runs on blocking threads: told to stop, they stop
            // between pieces.
            let halt = Arc::new(AtomicBool::new(false));
            let stepped = tokio::select! {
                r = step(&state, &halt) => r,
                _ = stop.wait_for(|s| *s) => {
                    halt.store(true, Ordering::Relaxed);
                    return;
                }
            };
            match stepped {
                Ok(true) => busy = true,
                Ok(false) => next_pass = Instant::now() + scrub_every,
                Err(e) => {
                    tracing::warn!(error = %e, "scrub: step failed; trying again later");
                    next_pass = Instant::now() + RETRY.min(scrub_every);
                }
            }
        }
        let wait = if busy {
            Duration::ZERO
        } else {
            next_check
                .min(next_pass)
                .saturating_duration_since(Instant::now())
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = state.suspects.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Re-hashes the blobs reported since the last look.
async fn suspects(state: &Arc<NodeState>) {
    for hash in state.suspects.take() {
        if let Err(e) = verify(state, &hash).await {
            tracing::warn!(%hash, error = %e, "scrub: checking a reported blob failed");
        }
    }
}

/// Checks every indexed blob's file for presence and length.
async fn inventory(state: &Arc<NodeState>) -> Result<()> {
    let st = state.clone();
    let gone = tokio::task::spawn_blocking(move || -> Result<Vec<ContentHash>> {
        let mut gone = Vec::new();
        let mut cursor = None;
        loop {
            let batch = st.store.indexed_blobs(cursor, 1024)?;
            let Some((last, _)) = batch.last() else {
                return Ok(gone);
            };
            cursor = Some(*last);
            for (hash, _) in batch {
                if st.store.blob_file_intact(&hash)? == Some(false) {
                    gone.push(hash);
                }
            }
        }
    })
    .await??;
    for hash in gone {
        // Checked again under the blob lock: a copy placed meanwhile stays.
        fault(state, &hash, Evidence::Missing).await?;
    }
    Ok(())
}

/// Scrubs the next batch of blobs after the cursor, then the suspects;
/// false once the pass is over (the cursor is then cleared). A blob whose
/// check fails (not a verdict: the disk or the database erred) is logged
/// and passed; the next pass checks it again. The batch is checked on the
/// blocking pool, one blob per core at once, each worker taking the next
/// blob itself: no hand-off to the async runtime between blobs (with two
/// busy cores, each hand-off waited for a core and cost a quarter of the
/// rate). `halt` stops the workers between pieces.
async fn step(state: &Arc<NodeState>, halt: &Arc<AtomicBool>) -> Result<bool> {
    let st = state.clone();
    let (cursor, batch) = tokio::task::spawn_blocking(move || -> Result<_> {
        let cursor = st.store.scrub_cursor()?;
        let batch = st.store.indexed_blobs(cursor.after, BATCH)?;
        Ok((cursor, batch))
    })
    .await??;
    if batch.is_empty() {
        if cursor.after.is_some() {
            state.metrics.scrub_passes.inc();
            tracing::info!("scrub: pass complete");
        }
        let st = state.clone();
        tokio::task::spawn_blocking(move || st.store.set_scrub_cursor(ScrubCursor::default()))
            .await??;
        return Ok(false);
    }
    let parallel = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_PARALLEL);
    let hashes: Arc<Vec<ContentHash>> = Arc::new(batch.iter().map(|(h, _)| *h).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..parallel).map(|_| {
        let (st, hashes, next, halt) = (state.clone(), hashes.clone(), next.clone(), halt.clone());
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            while !halt.load(Ordering::Relaxed) {
                let Some(hash) = hashes.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                // A bad copy leaves service as soon as it is found.
                let done = match check(&st, hash, &halt) {
                    Ok(Verdict::Bad(evidence)) => fault_blocking(&st, hash, evidence),
                    Ok(Verdict::Sound | Verdict::Halted) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    found.push((*hash, e));
                }
            }
            found
        })
    });
    for worker in futures::future::join_all(workers).await {
        for (hash, e) in worker? {
            tracing::warn!(%hash, error = %e, "scrub: blob not checked");
        }
    }
    if halt.load(Ordering::Relaxed) {
        return Ok(true);
    }
    suspects(state).await;
    let after = batch.last().map(|(h, _)| *h);
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.store.set_scrub_cursor(ScrubCursor { after })).await??;
    Ok(true)
}

/// What re-hashing a copy found.
enum Verdict {
    /// Sound, or not held here (nothing to check).
    Sound,
    /// Missing, of another length, or not hashing to its name.
    Bad(Evidence),
    /// Stopped before the end (the node is shutting down).
    Halted,
}

/// Re-hashes this node's copy of `hash` at once (a suspect), and
/// quarantines it if it is bad.
async fn verify(state: &Arc<NodeState>, hash: &ContentHash) -> Result<()> {
    let (st, h) = (state.clone(), *hash);
    let halt = AtomicBool::new(false);
    let verdict = tokio::task::spawn_blocking(move || check(&st, &h, &halt)).await?;
    match verdict? {
        Verdict::Bad(evidence) => fault(state, hash, evidence).await,
        Verdict::Sound | Verdict::Halted => Ok(()),
    }
}

/// Re-hashes this node's copy of `hash`, if it holds one: bad if it is
/// missing, of another length, or does not hash to its name (or cannot
/// be read, twice, with an I/O error of the disk). Any other error (out
/// of file descriptors, permissions, memory) is no verdict on the copy:
/// it is returned, and the copy stays. Blocking.
fn check(state: &NodeState, hash: &ContentHash, halt: &AtomicBool) -> Result<Verdict> {
    let Some(size) = state.store.blob_size(hash)? else {
        return Ok(Verdict::Sound);
    };
    let mut outcome = read_hash(state, hash, size, halt);
    if matches!(outcome, Err(Unread::Failed(ref e)) if is_media_error(e)) {
        outcome = read_hash(state, hash, size, halt);
    }
    let evidence = match outcome {
        Err(Unread::Halted) => return Ok(Verdict::Halted),
        Ok((actual, _)) if actual == *hash => {
            state.metrics.scrub_blobs.inc();
            return Ok(Verdict::Sound);
        }
        Ok((_, meta)) => crate::store::corrupt_evidence(&meta),
        Err(Unread::Missing) => Evidence::Missing,
        Err(Unread::Failed(e)) if is_media_error(&e) => {
            tracing::warn!(%hash, error = %e, "scrub: blob unreadable twice");
            match std::fs::metadata(state.store.blob_path(hash)) {
                Ok(meta) => crate::store::corrupt_evidence(&meta),
                Err(_) => Evidence::Missing,
            }
        }
        Err(Unread::Failed(e)) => return Err(Error::io(format!("scrub {hash}"))(e)),
    };
    state.metrics.scrub_blobs.inc();
    Ok(Verdict::Bad(evidence))
}

/// An I/O error that says the disk could not give the bytes back.
fn is_media_error(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error())
}

/// Why a copy was not hashed.
enum Unread {
    /// Not there, or not of its indexed length.
    Missing,
    /// Opening or reading it failed.
    Failed(std::io::Error),
    /// The worker was told to stop.
    Halted,
}

thread_local! {
    /// Each blocking thread's read buffer ([`READ`] bytes), kept between
    /// blobs.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The hash of the blob's file, read at the scrub's rate, and the file's
/// metadata (its identity); the file must be `size` bytes long. Read and
/// hashed in pieces of [`PIECE`] bytes, each paid for at the pacer first,
/// [`READ`] bytes at a time. Blocking.
fn read_hash(
    state: &NodeState,
    hash: &ContentHash,
    size: u64,
    halt: &AtomicBool,
) -> std::result::Result<(ContentHash, std::fs::Metadata), Unread> {
    let mut file = match std::fs::File::open(state.store.blob_path(hash)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unread::Missing),
        Err(e) => return Err(Unread::Failed(e)),
    };
    let meta = file.metadata().map_err(Unread::Failed)?;
    if meta.len() != size {
        return Err(Unread::Missing);
    }
    let mut hasher = blake3::Hasher::new();
    let mut left = size;
    BUF.with_borrow_mut(|buf| {
        buf.resize(READ, 0);
        while left > 0 {
            if halt.load(Ordering::Relaxed) {
                return Err(Unread::Halted);
            }
            let want = usize::try_from(left).unwrap_or(PIECE).min(PIECE);
            state.scrub_limit.take_blocking(want);
            let mut n = 0;
            'piece: while n < want {
                // Read a cache-sized part and hash it while it is still
                // in the cache.
                let part = READ.min(want - n);
                let mut got = 0;
                while got < part {
                    match file.read(&mut buf[got..part]) {
                        Ok(0) => {
                            hasher.update(&buf[..got]);
                            n += got;
                            break 'piece;
                        }
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Unread::Failed(e)),
                    }
                }
                hasher.update(&buf[..got]);
                n += got;
            }
            state.metrics.scrub_bytes.inc_by(n as u64);
            if n < want {
                // Shorter than its length a moment ago: cut short under us.
                return Err(Unread::Missing);
            }
            left -= n as u64;
        }
        Ok(())
    })?;
    Ok((ContentHash::from(hasher.finalize()), meta))
}

/// Takes a bad copy out of service, if the evidence still holds, and
/// counts it.
async fn fault(state: &Arc<NodeState>, hash: &ContentHash, evidence: Evidence) -> Result<()> {
    let (st, h) = (state.clone(), *hash);
    tokio::task::spawn_blocking(move || fault_blocking(&st, &h, evidence)).await?
}

/// [`fault`] on a blocking thread.
fn fault_blocking(state: &NodeState, hash: &ContentHash, evidence: Evidence) -> Result<()> {
    if state.store.quarantine(hash, evidence)? {
        let f = match evidence {
            Evidence::Missing => Fault::Missing,
            Evidence::Corrupt { .. } => Fault::Corrupt,
        };
        state
            .metrics
            .blob_faults
            .get_or_create(&crate::metrics::FaultLabel {
                fault: f.name().into(),
            })
            .inc();
        state.refresh_gauges();
    }
    Ok::<(), Error>(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_io_error_of_the_disk_is_a_media_error() {
        let eio = std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error());
        assert!(is_media_error(&eio));
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(!is_media_error(&emfile));
    }
}
