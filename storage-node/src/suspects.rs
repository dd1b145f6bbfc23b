//! Blobs to re-hash at once: a whole-file stream that did not hash to its
//! name, or a peer's `ReportCorrupt`, notes one here; the scrub worker
//! ([`crate::scrub`]) takes them. A hint, never a verdict.

use std::collections::BTreeSet;
use std::sync::Mutex;

use rondo_core::ContentHash;

/// Suspects held at once; more are dropped (the scrub finds them).
const MAX_SUSPECTS: usize = 1024;

/// Blobs to re-hash at once, reported by peers or by streams.
#[derive(Debug, Default)]
pub struct Suspects {
    set: Mutex<BTreeSet<ContentHash>>,
    pub(crate) wake: tokio::sync::Notify,
}

impl Suspects {
    /// Notes a blob to re-hash and wakes the worker.
    pub fn report(&self, hash: ContentHash) {
        if let Ok(mut set) = self.set.lock()
            && set.len() < MAX_SUSPECTS
        {
            set.insert(hash);
        }
        self.wake.notify_one();
    }

    /// Takes every suspect noted so far.
    pub fn take(&self) -> Vec<ContentHash> {
        self.set
            .lock()
            .map(|mut s| std::mem::take(&mut *s).into_iter().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_are_bounded_and_taken_once() {
        let s = Suspects::default();
        for i in 0..(MAX_SUSPECTS as u32 + 10) {
            s.report(ContentHash::of(&i.to_be_bytes()));
        }
        assert_eq!(s.take().len(), MAX_SUSPECTS);
        assert!(s.take().is_empty());
    }
}
