//! VRRP for IPv4, wire-compatible with keepalived.
//!
//! Three layers: [`packet`], the codec of VRRPv3 (RFC 5798) and VRRPv2
//! (RFC 3768) advertisements with both VRRPv3 checksum forms and the
//! gratuitous ARP frame; [`machine`], the RFC 5798 §6.4 state machine as a
//! sans-IO core (events and time in, actions out), with health tracking
//! (fault and weight modes); [`driver`], the thin tokio driver (raw socket
//! for multicast or unicast peers, rtnetlink for the virtual addresses,
//! `AF_PACKET` for gratuitous ARP, the health check in its own task).
//!
//! What it does not know: anything about Rondo's gateway. The embedding
//! program supplies health and reacts to state changes.

pub mod driver;
mod error;
pub mod machine;
pub mod packet;

pub use driver::{HealthCheck, HealthConfig, HealthMode, Router, RouterConfig, Status, Vip};
pub use error::Error;
pub use machine::{Action, Machine, State};
pub use packet::{Advert, ChecksumKind, DecodeError, Version};
