//! The data plane's replication: how a blob gets from one node to others.
//!
//! - [`majority`]: the copy onto a majority before a song is proposed,
//!   both the copier and the node taking a copy;
//! - [`relay`]: the worker that carries out the outbox (blob fetches,
//!   pushes, removals) with retries, where the resync worker lives;
//! - [`inbox`]: the receiving side of pushes;
//! - [`transfer`]: reading a blob from a peer into this node's store.
//!
//! The gRPC service only decodes requests and calls in here; the store
//! decides in its transactions what is wanted, held and delivered.

pub mod inbox;
pub mod majority;
pub mod relay;
pub mod transfer;
