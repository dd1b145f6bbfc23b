//! The driver's error type. Per-packet refusals are [`crate::DecodeError`]s,
//! counted rather than returned.

/// Why the router could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error("interface {0} has no IPv4 address to send from")]
    NoAddress(String),
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink {op} {addr}: {message}")]
    Netlink {
        op: &'static str,
        addr: std::net::Ipv4Addr,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}
