//! Command implementations behind the `effnet` binary.

pub mod bench_train;
pub mod profile;
pub mod train;
