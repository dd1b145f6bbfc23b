//! The CLI library's error type.

/// Errors of the CLI library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request failed.
    #[error("request to {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered with GraphQL errors.
    #[error("{message} ({code})")]
    GraphQl { code: String, message: String },
    /// The gateway answered something that is not a GraphQL response.
    #[error("unexpected answer from {url}: HTTP {status}: {body}")]
    Unexpected {
        url: String,
        status: u16,
        body: String,
    },
    /// A certificate could not be made or loaded.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A JSON document did not parse.
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// Audio could not be generated or tagged.
    #[error("demo audio: {0}")]
    Audio(String),
}

impl Error {
    /// The public error code the gateway or a node answered, if any.
    pub fn code(&self) -> Option<rondo_core::ErrorCode> {
        match self {
            Error::GraphQl { code, .. } => code.parse().ok(),
            _ => None,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Result alias for the CLI library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
