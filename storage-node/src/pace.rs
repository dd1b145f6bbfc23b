//! A token bucket for background byte flows (the scrub's reads, the resync
//! worker's fetches), so that they leave the disk and the network to
//! streams. Its rate can change at runtime; 0 means no limit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket of bytes: at most `rate` bytes per second on average,
/// with bursts of up to one second's worth.
#[derive(Debug)]
pub struct RateLimit {
    rate: AtomicU64,
    /// Tokens at the given instant (may be negative: a debt to wait off).
    bucket: Mutex<(Instant, f64)>,
}

impl RateLimit {
    /// A bucket of `rate` bytes per second (0: unlimited), full.
    pub fn new(rate: u64) -> RateLimit {
        RateLimit {
            rate: AtomicU64::new(rate),
            bucket: Mutex::new((Instant::now(), rate as f64)),
        }
    }

    /// The rate in bytes per second (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate; what is already owed is not forgiven.
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// Takes `n` bytes' worth of tokens, waiting until the bucket has paid
    /// them off. The wait is slept in slices, each against the rate then in
    /// force, so that a new rate applies to a waiter at once.
    pub async fn take(&self, n: usize) {
        let mut wait = self.settle(n, Instant::now());
        while !wait.is_zero() {
            tokio::time::sleep(wait.min(SLICE)).await;
            wait = self.settle(0, Instant::now());
        }
    }

    /// [`RateLimit::take`] on a blocking thread (the scrub's workers).
    // The sleep is the rate limit itself, not a wait for a condition.
    #[allow(clippy::disallowed_methods)]
    pub fn take_blocking(&self, n: usize) {
        let mut wait = self.settle(n, Instant::now());
        while !wait.is_zero() {
            std::thread::sleep(wait.min(SLICE));
            wait = self.settle(0, Instant::now());
        }
    }

    /// Refills the bucket at the rate in force up to `now`, charges `n`
    /// bytes, and says how long until it is out of debt. Unlimited: no
    /// debt is kept.
    fn settle(&self, n: usize, now: Instant) -> Duration {
        let rate = self.rate() as f64;
        let Ok(mut bucket) = self.bucket.lock() else {
            return Duration::ZERO;
        };
        if rate <= 0.0 {
            *bucket = (now, 0.0);
            return Duration::ZERO;
        }
        let (at, tokens) = *bucket;
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(rate);
        let left = refilled - n as f64;
        *bucket = (now, left);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / rate)
        }
    }
}

/// The longest a waiter sleeps before it looks at the rate again.
const SLICE: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_rate_after_its_burst() {
        let limit = RateLimit::new(1000);
        let start = Instant::now();
        // One second's burst, then five more seconds' worth.
        for _ in 0..6 {
            limit.take(1000).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_millis(5100),
            "{took:?}"
        );
        // Unlimited: no wait at all; a new rate applies at once.
        limit.set_rate(0);
        let t = Instant::now();
        limit.take(1 << 30).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
        limit.set_rate(2000);
        assert_eq!(limit.rate(), 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_applies_to_a_waiter_at_once() {
        let limit = std::sync::Arc::new(RateLimit::new(1));
        limit.take(1).await; // empty the burst
        let start = Instant::now();
        let l = limit.clone();
        // A million bytes at 1 B/s: days, unless the rate changes.
        let waiter = tokio::spawn(async move { l.take(1_000_000).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        limit.set_rate(0);
        waiter.await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn takers_at_once_share_the_rate() {
        let limit = std::sync::Arc::new(RateLimit::new(1000));
        limit.take(1000).await; // empty the burst
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let l = limit.clone();
                tokio::spawn(async move { l.take(500).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }
}
