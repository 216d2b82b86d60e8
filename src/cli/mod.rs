//! Command implementations behind the `effnet` binary.

pub mod profile;
pub mod train;
