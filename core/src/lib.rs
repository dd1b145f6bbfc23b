//! Rondo's domain types, shared by every crate.
//!
//! Identifiers ([`SongId`], [`ArtistId`], [`AlbumId`], [`NodeId`]), the
//! content address of audio bytes ([`ContentHash`]), HTTP byte ranges
//! ([`range`]), placement of blobs on nodes ([`placement`]) and the signed
//! stream URL codec ([`signing`]), the public error codes ([`ErrorCode`])
//! and the name folding rule ([`names`]).
//!
//! This crate does no I/O (TLS configs are built from PEM bytes the caller read): no sockets, no files, no clocks (callers pass the
//! current time in). Everything here is deterministic and unit-tested.

mod code;
mod error;
mod hash;
mod id;
pub mod keys;
pub mod names;
pub mod partitions;
pub mod placement;
pub mod range;
pub mod sealing;
pub mod session;
pub mod signing;
pub mod tls;

pub use code::ErrorCode;
pub use error::Error;
pub use hash::ContentHash;
pub use id::{AlbumId, ArtistId, NodeId, PlaylistId, SongId, UserId};
