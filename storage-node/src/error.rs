//! The storage node's error type and its mapping to gRPC statuses.

use rondo_core::{ContentHash, SongId};

/// Everything that can go wrong inside a storage node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded database failed.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes received do not hash to what the sender claimed.
    #[error("content hash mismatch: sender said {claimed}, bytes hash to {actual}")]
    HashMismatch {
        claimed: String,
        actual: ContentHash,
    },
    /// The upload is over the configured limit.
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// No such song.
    #[error("song {0} not found")]
    SongNotFound(SongId),
    /// No such blob.
    #[error("blob {0} not found")]
    BlobNotFound(ContentHash),
    /// A song with this id exists already.
    #[error("song {0} exists already")]
    SongExists(SongId),
    /// The song id was deleted; it is never a song again.
    #[error("song {0} was deleted; its id is not used again")]
    SongDeleted(SongId),
    /// An account with this name exists.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// No such account or playlist.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// The actor may not do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The request is malformed.
    #[error("invalid request: {what}")]
    Invalid { what: &'static str },
    /// A stored record does not decode.
    #[error("corrupt record in table {table}: {source}")]
    Corrupt {
        table: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// A stored or requested identifier does not parse.
    #[error(transparent)]
    Domain(#[from] rondo_core::Error),
    /// A layout change was refused because another was ordered first.
    #[error("layout change refused: {0}")]
    StaleLayout(rondo_ring::Refusal),
    /// A layout change was refused (not a member, last voter, bad factor).
    #[error("layout change refused: {0}")]
    LayoutRefused(rondo_ring::Refusal),
    /// A snapshot was asked for at an entry this node no longer (or not
    /// yet) has as its applied one.
    #[error("no snapshot at entry {asked}: this node's applied entry is {applied}")]
    SnapshotMoved { asked: u64, applied: u64 },
    /// A song's bytes were copied under a placement that is no longer the
    /// one in force where its entry was ordered: its owners changed.
    #[error("the song was copied under placement {copied}, but placement {applied} is in force")]
    StalePlacement { copied: u64, applied: u64 },
    /// An upsert proposed as a duplicate without its bytes copied found no
    /// song with its bytes when it was applied (deleted meanwhile).
    #[error("no song has these bytes any more")]
    NotDuplicate,
    /// The node cannot take writes now (the reason says why).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot be used (a certificate that does not load
    /// or names another node).
    #[error("configuration: {0}")]
    Config(String),
    /// The request's session is missing, invalid or expired.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The bytes are not audio of the type they were sent as.
    #[error("unsupported media: {0}")]
    Media(String),
    /// The caller's certificate does not allow this call.
    #[error("{0}")]
    NotAllowed(String),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<rondo_ring::Refusal> for Error {
    /// A refused layout change: lost to another ordered first (`Stale`,
    /// `CONFLICT`), or invalid.
    fn from(r: rondo_ring::Refusal) -> Self {
        match r {
            r @ rondo_ring::Refusal::Stale { .. } => Error::StaleLayout(r),
            r => Error::LayoutRefused(r),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::HashMismatch { .. }
            | Error::Invalid { .. }
            | Error::Domain(_)
            | Error::Media(_) => Code::InvalidArgument,
            Error::TooLarge { .. } => Code::ResourceExhausted,
            Error::SongNotFound(_) | Error::BlobNotFound(_) | Error::NotFound { .. } => {
                Code::NotFound
            }
            Error::SongExists(_) | Error::SongDeleted(_) | Error::NameTaken(_) => {
                Code::AlreadyExists
            }
            Error::SnapshotMoved { .. } => Code::FailedPrecondition,
            Error::Forbidden(_) | Error::NotAllowed(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::StaleLayout(_) => Code::Aborted,
            // The node still owns data: the change conflicts with the
            // cluster's state until a drain moves it (CONFLICT).
            Error::LayoutRefused(
                rondo_ring::Refusal::StillOwns(_) | rondo_ring::Refusal::NotRetired { .. },
            ) => Code::AlreadyExists,
            Error::LayoutRefused(_) => Code::FailedPrecondition,
            Error::Unavailable(_) | Error::StalePlacement { .. } | Error::NotDuplicate => {
                Code::Unavailable
            }
            Error::Db(_)
            | Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::Join(_)
            | Error::Config(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// Result alias for the storage node.
pub type Result<T, E = Error> = std::result::Result<T, E>;
