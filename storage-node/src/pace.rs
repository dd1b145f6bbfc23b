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
    /// them off.
    pub async fn take(&self, n: usize) {
        let wait = self.charge(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Charges `n` bytes at `now`; returns how long to wait.
    fn charge(&self, n: usize, now: Instant) -> Duration {
        let rate = self.rate() as f64;
        if rate <= 0.0 {
            return Duration::ZERO;
        }
        let Ok(mut bucket) = self.bucket.lock() else {
            return Duration::ZERO;
        };
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
