//! The data plane's replication: how a blob gets from one node to others.
//!
//! - [`quorum`]: the copy onto `W` of the blob's owners before a song is
//!   proposed, both the copier and the node taking a copy;
//! - [`relay`]: the worker that carries out the outbox (blob fetches,
//!   pushes, removals) with retries;
//! - [`resync`]: the worker that brings this node's holdings to what the
//!   placement asks: fetches what it owns and lacks, gives up what it
//!   holds and does not own once the owners hold it;
//! - [`inbox`]: the receiving side of pushes;
//! - [`transfer`]: reading a blob from a peer into this node's store.
//!
//! The gRPC service only decodes requests and calls in here; the store
//! decides in its transactions what is wanted, held and delivered.

pub mod inbox;
pub mod quorum;
pub mod relay;
pub mod resync;
pub mod transfer;
