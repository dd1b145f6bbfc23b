//! VRRP for IPv4, wire-compatible with keepalived.
//!
//! This crate is being built in layers (issue 4). Present: [`packet`], the
//! codec of VRRPv3 (RFC 5798) and VRRPv2 (RFC 3768) advertisements with
//! both VRRPv3 checksum forms; [`machine`], the RFC 5798 §6.4 state machine
//! as a sans-IO core (events and time in, actions out). To come: a thin
//! tokio driver (raw sockets, netlink for the virtual address, gratuitous
//! ARP), unicast peers, health tracking.
//!
//! What it does not know: anything about Rondo's gateway. The embedding
//! program supplies health and reacts to state changes.

pub mod machine;
pub mod packet;

pub use machine::{Action, Machine, State};
pub use packet::{Advert, ChecksumKind, DecodeError, Version};
