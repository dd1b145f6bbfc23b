//! Library side of the `rondo` admin CLI, shared with the test harness.
//!
//! - [`api`]: typed answers of the GraphQL API.
//! - [`client`]: a GraphQL client for the gateway over HTTPS (queries and
//!   multipart uploads), trusting a given CA certificate.
//! - [`devenv`]: the files of a local deployment (dev CA, certificates,
//!   secrets, configs) and the `dev.json` that describes it.
//! - [`demo`]: playable, tagged demo audio synthesised in Rust.

pub mod api;
pub mod client;
pub mod demo;
pub mod devenv;
pub mod error;

pub use error::{Error, Result};
