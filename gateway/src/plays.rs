//! Plays, gathered: every play a listener reports (Subsonic `scrobble`,
//! the web app's `recordPlay`) waits here for up to [`GATHER`], and the
//! plays of every listener gathered meanwhile are ordered as one ring
//! entry (`Plays`), so a busy cluster orders about one entry a second per
//! gateway, not one per song played. Each report is answered once its
//! entry is applied: an acknowledged play is counted, as any write.
//!
//! "Now playing" is soft state of the gateway that heard it (clients
//! reach one gateway, the floating address's holder); it fades after
//! [`NOW_PLAYING_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rondo_core::{SongId, UserId};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::{AccountUpdate, Cluster};
use crate::error::{Error, Result};

/// How long a play waits for others to share its ring entry.
pub const GATHER: Duration = Duration::from_millis(500);
/// The most plays in one entry.
pub const MAX_BATCH: usize = 1000;
/// How long a "now playing" report lasts.
pub const NOW_PLAYING_TTL: Duration = Duration::from_secs(15 * 60);
/// Reports waiting at once (more are refused as unavailable).
const QUEUE: usize = 10_000;

type Report = (
    (UserId, SongId, u64),
    oneshot::Sender<std::result::Result<(), String>>,
);

/// What a listener is playing, as its client said.
#[derive(Clone, Debug)]
pub struct NowPlaying {
    pub user: UserId,
    pub song: SongId,
    pub client: String,
    pub since: Instant,
}

/// The gateway's plays: the gathering queue and "now playing".
#[derive(Debug)]
pub struct Plays {
    tx: mpsc::Sender<Report>,
    rx: Mutex<Option<mpsc::Receiver<Report>>>,
    /// One entry per listener: its latest report.
    now: Mutex<HashMap<UserId, NowPlaying>>,
}

impl Default for Plays {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Plays {
            tx,
            rx: Mutex::new(Some(rx)),
            now: Mutex::default(),
        }
    }
}

impl Plays {
    /// Counts a play of `song` by `user` at `at_ms`; answers once it is
    /// ordered and applied.
    pub async fn record(&self, user: UserId, song: SongId, at_ms: u64) -> Result<()> {
        self.record_many(user, &[(song, at_ms)]).await
    }

    /// Counts several plays of one listener: all are queued at once (so
    /// they share an entry), then awaited together.
    pub async fn record_many(&self, user: UserId, plays: &[(SongId, u64)]) -> Result<()> {
        let mut waits = Vec::with_capacity(plays.len());
        for &(song, at_ms) in plays {
            let (done, wait) = oneshot::channel();
            self.tx
                .try_send(((user, song, at_ms), done))
                .map_err(|_| Error::Unavailable("too many plays waiting; try again".into()))?;
            waits.push(wait);
        }
        for wait in waits {
            match wait.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::Unavailable(e)),
                Err(_) => return Err(Error::Unavailable("the gateway is stopping".into())),
            }
        }
        Ok(())
    }

    /// Records what a listener's client is playing now.
    pub fn now_playing(&self, user: UserId, song: SongId, client: &str) {
        if let Ok(mut now) = self.now.lock() {
            now.retain(|_, n| n.since.elapsed() < NOW_PLAYING_TTL);
            let client: String = client.chars().take(100).collect();
            now.insert(
                user,
                NowPlaying {
                    user,
                    song,
                    client,
                    since: Instant::now(),
                },
            );
        }
    }

    /// What is playing now, most recent first.
    pub fn playing(&self) -> Vec<NowPlaying> {
        let mut v: Vec<NowPlaying> = self
            .now
            .lock()
            .map(|n| {
                n.values()
                    .filter(|n| n.since.elapsed() < NOW_PLAYING_TTL)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|n| std::cmp::Reverse(n.since));
        v
    }

    /// Runs the gathering loop until the queue closes (the gateway stops).
    /// `session` signs the operator session each entry is ordered with.
    pub async fn run(self: Arc<Self>, cluster: Arc<Cluster>, session: impl Fn() -> String) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + GATHER;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    _ => break,
                }
            }
            let (plays, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let n = plays.len();
            let outcome = cluster
                .propose(AccountUpdate::Plays(plays), session())
                .await
                .map_err(|e| e.to_string());
            if let Err(e) = &outcome {
                tracing::warn!(plays = n, error = %e, "plays not counted");
            }
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }
}
