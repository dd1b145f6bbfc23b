//! How a Rondo process reaches a storage node over gRPC: the one place
//! that builds a channel's endpoint, for every kind of link, with its
//! timeouts, keepalive and flow-control windows.

use std::time::Duration;

use tonic::transport::Endpoint;

/// What a channel is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Node to node, control-plane messages: a short connect timeout, no
    /// Nagle delay, keepalive.
    Ring,
    /// Node to node, blob copies, fetches and snapshots: wide windows,
    /// keepalive.
    Bulk,
    /// Gateway to node: uploads (wide windows), long-lived change streams
    /// (a slower keepalive), no Nagle delay.
    Client,
    /// One question (a seed's or a new node's id): connect within
    /// `connect`, answer within `answer`, no keepalive.
    Probe { connect: Duration, answer: Duration },
}

/// HTTP/2 flow-control windows of bulk channels and of the node's gRPC
/// server: uploads and blob copies would otherwise wait for a window update
/// every 64 KiB (HTTP/2's default).
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// The largest storage message taken or read (a blob chunk, a catalog
/// change).
pub const MAX_STORAGE_MESSAGE: usize = 8 * 1024 * 1024;

/// The largest ring message taken or read (a snapshot chunk, a page of log
/// entries).
pub const MAX_RING_MESSAGE: usize = 64 * 1024 * 1024;

/// The endpoint of the node at `url`, set up for `link`. Kept channels use
/// HTTP/2 keepalive: a connection that stalled (a partition, a peer that
/// froze) fails its calls and is made again, instead of hanging until TCP
/// gives up.
pub fn endpoint(url: &str, link: Link) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url.to_string())?;
    let keepalive = |e: Endpoint, every: u64, timeout: u64| {
        e.http2_keep_alive_interval(Duration::from_secs(every))
            .keep_alive_timeout(Duration::from_secs(timeout))
    };
    let windows = |e: Endpoint| {
        e.initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
    };
    Ok(match link {
        // A peer cut off mid-call (partition, SIGSTOP) fails the call
        // within about three seconds.
        Link::Ring => keepalive(endpoint, 1, 2)
            .keep_alive_while_idle(true)
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true),
        Link::Bulk => windows(keepalive(endpoint, 1, 2))
            .keep_alive_while_idle(true)
            .connect_timeout(Duration::from_secs(2)),
        Link::Client => windows(keepalive(endpoint, 10, 5))
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true),
        Link::Probe { connect, answer } => endpoint.connect_timeout(connect).timeout(answer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_an_error_not_a_panic() {
        assert!(endpoint("not a url", Link::Bulk).is_err());
        assert!(endpoint("http://10.0.0.1:7400", Link::Ring).is_ok());
    }
}
