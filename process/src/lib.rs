//! What every Rondo process shares, so that the binaries do not each write
//! it again: when to stop ([`shutdown`]), and the one read of the wall
//! clock ([`unix_now`], [`unix_now_ms`]); `rondo-core` takes the time as an
//! argument instead; and how a public HTTPS listener is served, with its
//! limits ([`https`]); how configuration is loaded, from TOML and
//! `RONDO_*` variables ([`config`]); how logs are written ([`logging`]);
//! and the version the binaries print ([`VERSION`]).
//!
//! It holds no process-global state of its own: each binary's `main.rs`
//! calls [`logging::init`] and [`config::load`].

pub mod config;
pub mod https;
pub mod logging;

/// The crate version and the commit built from, for `--version`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RONDO_COMMIT"),
    ")"
);

use std::time::Duration;

/// Resolves when the process should stop: on Ctrl-C or SIGTERM, or, under
/// `rondo dev` (which sets `RONDO_EXIT_WITH_PARENT` for its children), once
/// the parent process is gone, even if it was killed too hard to stop them.
pub async fn shutdown() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = parent_gone() => tracing::warn!("the parent process is gone: stopping"),
    }
}

/// Resolves once the parent process is gone when `RONDO_EXIT_WITH_PARENT`
/// is set; otherwise never.
async fn parent_gone() {
    if std::env::var_os("RONDO_EXIT_WITH_PARENT").is_none() {
        return std::future::pending().await;
    }
    let parent = std::os::unix::process::parent_id();
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_reads_now_in_both_units() {
        let (s, ms) = (super::unix_now(), super::unix_now_ms());
        // 2020-01-01 as a floor: a clock read of 0 (an error) fails.
        assert!(s > 1_577_836_800, "{s}");
        assert!(ms / 1000 >= s && ms / 1000 - s <= 1, "{ms} {s}");
    }
}
