//! The gateway's error type and its one mapping to GraphQL error codes.

use async_graphql::ErrorExtensions;
use rondo_core::ErrorCode;

/// Everything a gateway operation can fail with. [`Error::code`] is the
/// GraphQL `extensions.code` clients see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not audio in a supported format, or truncated or corrupt audio.
    #[error("unsupported media: {0}")]
    UnsupportedMedia(String),
    /// The upload is over the configured limit.
    #[error("upload exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// The named resource does not exist.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// An argument is malformed or out of range.
    #[error("{0}")]
    BadUserInput(String),
    /// The operation needs credentials that were missing or wrong.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A storage node refused the change for this caller (its reason).
    #[error("{0}")]
    Refused(String),
    /// The name is taken.
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts; the message says of what and when to retry.
    #[error("{0}")]
    RateLimited(String),
    /// No storage node can take the request now.
    #[error("no storage node available: {0}")]
    Unavailable(String),
    /// A storage node refused or failed the request (its message; the
    /// code comes from its gRPC status).
    #[error("storage node {node}: {}", status.message())]
    Node {
        node: String,
        status: Box<tonic::Status>,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A domain value did not parse.
    #[error(transparent)]
    Domain(#[from] rondo_core::Error),
    /// A blocking task failed.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The VRRP router could not start or stopped.
    #[error("floating address: {0}")]
    Vrrp(#[from] vrrp::Error),
    /// The `[vrrp] interface` names a network no interface is on.
    #[error("floating address: {0}")]
    Interface(String),
}

impl Error {
    /// The GraphQL `extensions.code` of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::UnsupportedMedia(_) => ErrorCode::UnsupportedMedia,
            Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::BadUserInput(_) | Error::Domain(_) => ErrorCode::BadUserInput,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::Forbidden(_) | Error::Refused(_) => ErrorCode::Forbidden,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::RateLimited(_) => ErrorCode::RateLimited,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Node { status, .. } => match status.code() {
                tonic::Code::ResourceExhausted => ErrorCode::PayloadTooLarge,
                tonic::Code::NotFound => ErrorCode::NotFound,
                tonic::Code::Unavailable => ErrorCode::Unavailable,
                tonic::Code::AlreadyExists | tonic::Code::Aborted => ErrorCode::Conflict,
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                    ErrorCode::BadUserInput
                }
                tonic::Code::PermissionDenied => ErrorCode::Forbidden,
                _ => ErrorCode::InternalServerError,
            },
            Error::Io { .. } | Error::Join(_) | Error::Vrrp(_) | Error::Interface(_) => {
                ErrorCode::InternalServerError
            }
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}

impl From<rondo_media::Error> for Error {
    fn from(e: rondo_media::Error) -> Self {
        match e {
            rondo_media::Error::Unsupported(m) => Error::UnsupportedMedia(m),
            rondo_media::Error::BadName(m) => Error::BadUserInput(m),
            rondo_media::Error::Io { context, source } => Error::Io { context, source },
        }
    }
}

impl ErrorExtensions for Error {
    fn extend(&self) -> async_graphql::Error {
        let code = self.code();
        if code == ErrorCode::InternalServerError {
            tracing::error!(error = %self, "internal error");
        }
        async_graphql::Error::new(self.to_string())
            .extend_with(|_, ext| ext.set("code", code.as_str()))
    }
}

/// Converts a gateway result into a GraphQL one, with `extensions.code`.
/// (async-graphql's blanket `From<Display>` would drop the code, so resolvers
/// call this instead of `?` on a gateway error.)
pub trait GqlResult<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResult<T> for Result<T, Error> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| e.extend())
    }
}

/// Result alias for the gateway.
pub type Result<T, E = Error> = std::result::Result<T, E>;
