//! Rate limits on what costs a password check (`login`, `register`) and a
//! bound on the password hashing running at once.
//!
//! - Per client address: a burst of [`PER_IP_BURST`] attempts, then one
//!   every two seconds (30 a minute).
//! - Per account name (folded), for `login`: a burst of [`PER_NAME_BURST`]
//!   guesses, then one every 12 seconds, whoever asks: a password cannot
//!   be guessed faster from many addresses.
//! - Argon2 (about 19 MiB and tens of milliseconds each) runs at most
//!   once per core at a time; further checks wait their turn, so a batch
//!   of logins costs time, not memory.
//!
//! Limiters are `governor`'s keyed GCRA; idle keys are dropped every
//! minute ([`Limits::forget_idle`]).

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};

/// The address a request came from, for rate limits (none when the server
/// was built without connection info, as in unit tests); the HTTP layer
/// puts it in each GraphQL request's data.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

/// Attempts one address may make at once.
pub const PER_IP_BURST: u32 = 30;
/// Login guesses one account name takes at once.
pub const PER_NAME_BURST: u32 = 5;

/// The limiters of one gateway.
pub struct Limits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_name: DefaultKeyedRateLimiter<String>,
    hashing: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

fn quota(burst: u32, per_minute: u32) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(burst)
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(PER_NAME_BURST)
    }
}

impl Limits {
    /// Limits with `per_name` password checks an account takes a minute
    /// (and at once).
    pub fn new(per_name: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Limits {
            per_ip: RateLimiter::keyed(quota(PER_IP_BURST, 30)),
            per_name: RateLimiter::keyed(quota(per_name, per_name)),
            hashing: tokio::sync::Semaphore::new(cores),
        }
    }
}

impl Limits {
    /// One attempt from `ip` (none known: not limited by address).
    pub fn attempt_from(&self, ip: Option<IpAddr>) -> Result<()> {
        let Some(ip) = ip else { return Ok(()) };
        self.per_ip.check_key(&ip).map_err(|_| {
            Error::RateLimited(format!(
                "too many logins and registrations from {ip}; try again in a few seconds"
            ))
        })
    }

    /// One login guess at the account `name`.
    pub fn guess_at(&self, name: &str) -> Result<()> {
        self.per_name
            .check_key(&rondo_core::names::login_key(name))
            .map_err(|_| {
                Error::RateLimited(
                    "too many login attempts for this account; try again in a minute".into(),
                )
            })
    }

    /// A turn at password hashing; hold it while hashing.
    pub async fn hashing_turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.hashing
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the gateway is stopping".into()))
    }

    /// Drops the state of keys that have been idle (bounded memory).
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_name.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_name.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_per_key() {
        let limits = Limits::default();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..PER_IP_BURST {
            limits.attempt_from(a).unwrap();
        }
        assert!(matches!(limits.attempt_from(a), Err(Error::RateLimited(_))));
        // Another address, and no address, are not affected.
        limits
            .attempt_from(Some(IpAddr::from([10, 0, 0, 2])))
            .unwrap();
        limits.attempt_from(None).unwrap();
        for _ in 0..PER_NAME_BURST {
            limits.guess_at("Alice").unwrap();
        }
        // The same name folded or in full-width forms is the same account.
        for same in ["ALICE", "ａｌｉｃｅ"] {
            assert!(matches!(limits.guess_at(same), Err(Error::RateLimited(_))));
        }
        limits.guess_at("bob").unwrap();
        limits.forget_idle();
    }
}
