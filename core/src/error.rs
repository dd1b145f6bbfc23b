/// Errors from parsing or checking domain values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A string that should be a UUID is not one.
    #[error("invalid {kind} id {value:?}: expected a UUID")]
    InvalidId { kind: &'static str, value: String },
    /// A string that should be a 64-digit hex BLAKE3 hash is not one.
    #[error("invalid content hash {0:?}: expected 64 hex digits")]
    InvalidHash(String),
    /// The signature of a stream URL does not match.
    #[error("bad signature")]
    BadSignature,
    /// The stream URL expired.
    #[error("stream url expired at {expired_at}")]
    Expired { expired_at: u64 },
    /// A string that should be a public error code is not one.
    #[error("unknown error code {0:?}")]
    BadErrorCode(String),
    /// A certificate or key does not load.
    #[error("tls: {0}")]
    Tls(String),
    /// A partition assignment that cannot be made, or a table that breaks
    /// the placement rules.
    #[error("placement: {0}")]
    Placement(String),
}
