//! The gateway's one read of the wall clock (session, upload-grant and
//! stream-URL expiry); everything below takes the time as an argument.

pub use rondo_process::{unix_now, unix_now_ms};
