//! The node's one read of the wall clock (stream-URL and upload-grant
//! expiry, a song's upload time); everything below takes the time as an
//! argument.

pub use rondo_process::{unix_now, unix_now_ms};
